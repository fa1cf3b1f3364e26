//! What the supervisor console needs from storage (ADR 12): sign-in and sessions, the case queue
//! and a case's detail within the signed-in person's scope, and actions written as Automerge
//! changes by that person's server-side actor.

use gridwork_model::catalog::Role;
use gridwork_model::doc::{CaseDoc, CasePatch};
use gridwork_model::lifecycle::EventKind;

use crate::error::Result;

/// Failed sign-ins in a row before an account locks.
pub const MAX_FAILED_SIGN_INS: i64 = 5;
/// How long a locked account stays locked.
pub const LOCKOUT_MS: i64 = 15 * 60 * 1000;
/// How long a console session lasts without signing in again.
pub const SESSION_MS: i64 = 12 * 60 * 60 * 1000;

/// The queue's sort key: cases with a deadline first, soonest first; then the newest report;
/// the case id breaks ties. One text column, so that a page can start where the previous one
/// ended with one index seek.
pub fn queue_key(deadline_ms: Option<i64>, reported_ms: Option<i64>, doc_id: &str) -> String {
    const MAX: i64 = 9_999_999_999_999_999;
    let clamp = |v: i64| v.clamp(0, MAX);
    match deadline_ms {
        Some(d) => format!("0{:016}{:016}{doc_id}", clamp(d), MAX - clamp(reported_ms.unwrap_or(0))),
        None => format!("1{:016}{:016}{doc_id}", 0, MAX - clamp(reported_ms.unwrap_or(0))),
    }
}

/// A person signed in to the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleUser {
    pub id: String,
    pub role: Role,
    pub department: Option<String>,
    /// `grid:…`, `community:…`, `street:…`, `department:…`; administrators see every case.
    pub scopes: Vec<String>,
    /// In a city deployment (`crate::city`), the district whose cases this person is looking
    /// at: their own, fixed by their session; for a city-level person, the one they chose
    /// (None: the city centre's own store).
    pub district: Option<String>,
    /// An administrator of the city centre: may look at every district, and change none of
    /// them from the console (a district's own people act on its cases; ADR 22).
    pub city_level: bool,
}

impl ConsoleUser {
    /// A person of one store, as that store knows them (no district, not city-level: the city
    /// router adds those).
    pub fn new(id: String, role: Role, department: Option<String>, scopes: Vec<String>) -> ConsoleUser {
        ConsoleUser { id, role, department, scopes, district: None, city_level: false }
    }

    pub fn sees_everything(&self) -> bool {
        self.role == Role::Administrator
    }

    /// Whether the grid lies in this person's area (their grid, community or street).
    pub fn sees_grid(&self, g: &gridwork_model::catalog::Grid) -> bool {
        self.sees_everything()
            || self.scopes.iter().any(|s| {
                s.strip_prefix("grid:") == Some(g.id.0.as_str())
                    || s.strip_prefix("community:") == Some(g.community.as_str())
                    || s.strip_prefix("street:") == Some(g.street.as_str())
            })
    }

    /// The device a person's console changes are attributed to: a pseudo-device without a token.
    pub fn console_device_id(&self) -> String {
        format!("console-{}", self.id)
    }

    /// Who the person's lifecycle events say made them.
    pub fn actor(&self) -> gridwork_model::catalog::Actor {
        gridwork_model::catalog::Actor {
            user: gridwork_model::ids::UserId::from(self.id.as_str()),
            role: self.role,
            device: gridwork_model::ids::DeviceId::from(self.console_device_id().as_str()),
            department: self.department.as_deref().map(gridwork_model::ids::DepartmentId::from),
        }
    }

    /// Refuses anyone but an administrator.
    pub fn must_administer(&self) -> crate::error::Result<()> {
        if self.role == Role::Administrator {
            Ok(())
        } else {
            Err(crate::error::ServerError::Forbidden("only administrators manage the district".into()))
        }
    }
}

/// A signed-in browser: who, and the token every form of the session must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: ConsoleUser,
    pub csrf: String,
}

/// One line of "what needs you today": an i18n key, how many cases, and the queue's filter that
/// lists them (as a query string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedsYou {
    pub what: &'static str,
    pub count: i64,
    pub query: &'static str,
}

/// The queue's filters. Empty means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct CaseFilter {
    pub status: String,
    /// `grid:ID`, `community:NAME` or `street:NAME`.
    pub area: String,
    pub category: String,
    pub department: String,
    /// "1": only cases whose department deadline has passed.
    pub overdue: String,
    /// Reported on or after / before (YYYY-MM-DD, district time zone).
    pub from: String,
    pub to: String,
    /// Words to search for (title, description, code, reporter, place; `gridwork_model::search`).
    pub q: String,
    /// 1-based; shown, not used to find the rows (see `after` and `before`).
    pub page: u32,
    /// The queue key of the previous page's last case: this page starts after it.
    pub after: String,
    /// The queue key of the next page's first case: this page ends before it.
    pub before: String,
    /// Every matching case on one page (the CSV export), up to [`MAX_EXPORT`].
    #[serde(skip)]
    pub all: bool,
}

/// Most cases one CSV export holds.
pub const MAX_EXPORT: u32 = 100_000;

/// One line of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRow {
    pub id: String,
    pub code: String,
    pub title: String,
    pub status: String,
    pub grid: String,
    pub category: String,
    pub reporter: String,
    pub reported_ms: Option<i64>,
    pub deadline_ms: Option<i64>,
    pub departments: Vec<String>,
    pub flags: Vec<String>,
    pub overdue: bool,
}

/// A page of the queue, with counts per status over the whole filtered scope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaseQueue {
    pub rows: Vec<CaseRow>,
    /// Cases matching every filter.
    pub total: i64,
    /// (status, cases) matching every filter but the status.
    pub counts: Vec<(String, i64)>,
    pub page: u32,
    pub pages: u32,
    /// Queue keys of the page's first and last case, for the links to the pages around it.
    pub first_key: Option<String>,
    pub last_key: Option<String>,
    pub has_prev: bool,
    pub has_next: bool,
}

/// One photo of a case, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoView {
    pub sha256: String,
    pub thumb_sha256: Option<String>,
    /// The server holds the full-size file.
    pub on_server: bool,
    /// The camera's capture time, as it wrote it.
    pub capture_time: Option<String>,
    /// What the photo's metadata yielded (`None`: recorded by an app from before it was kept).
    pub metadata: Option<gridwork_model::evidence::PhotoMetadata>,
    /// Metres between the photo's own position and its report's fix.
    pub gps_off_m: Option<u32>,
}

/// A case opened in the console.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseView {
    pub case: CaseDoc,
    pub flags: Vec<String>,
    pub photos: Vec<PhotoView>,
    /// When the server received the first change of the case.
    pub received_ms: Option<i64>,
    /// The devices of the case's events that sign (ADR 24): every change of theirs the server
    /// holds had its signature checked when it arrived, so their events are verified.
    pub signing_devices: std::collections::BTreeSet<String>,
    /// Events whose wall clock was off, by event id: wall clock minus the true time.
    pub clock_off: std::collections::BTreeMap<String, i64>,
}

/// A case on the map.
#[derive(Debug, Clone, PartialEq)]
pub struct MapPin {
    pub id: String,
    pub code: String,
    pub status: String,
    pub lat: f64,
    pub lon: f64,
}

/// One check-in as coverage shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckInView {
    pub user: String,
    pub at_ms: i64,
    pub point: Option<String>,
    pub inside_grid: bool,
    pub distance_m: Option<f64>,
    /// The phone's OS marked the fix mock.
    pub mock: bool,
}

/// A grid's patrol coverage on one day.
#[derive(Debug, Clone, PartialEq)]
pub struct GridCoverage {
    pub grid: String,
    /// (point id, point name, its check-ins that day); a point without one was missed.
    pub points: Vec<(String, String, Vec<CheckInView>)>,
    /// Every check-in of the day in this grid, including those at no point or outside it.
    pub check_ins: Vec<CheckInView>,
}

/// One worker's figures over a period.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerScore {
    pub user: String,
    pub grids: Vec<String>,
    pub reported: i64,
    pub accepted: i64,
    pub rejected: i64,
    /// Dispatched cases of theirs handled by the deadline, and after it.
    pub handled_on_time: i64,
    pub handled_late: i64,
    /// Cases of theirs whose department deadline has passed with the work still owed.
    pub overdue: i64,
    pub check_ins: i64,
    pub follow_ups: i64,
    /// Mean of the residents' satisfaction (1–5) the worker recorded on follow-up visits.
    pub satisfaction: Option<f64>,
    /// Events and check-ins whose wall clock was more than 10 minutes from the true time.
    pub clock_flags: i64,
}

/// A person as the administration page lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonView {
    pub id: String,
    pub role: Role,
    pub department: Option<String>,
    pub scopes: Vec<String>,
    pub has_password: bool,
}

/// A console action on a case.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsoleAction {
    Event(EventKind),
    /// A step of the escalation rules, by the server's own person only, under the id the rule
    /// derives (`rules::escalation::step_id`): written once however often it is tried.
    Automatic {
        id: gridwork_model::ids::EventId,
        kind: EventKind,
    },
    /// "Keep this one": writes the chosen value of a conflicted field, which resolves it.
    Keep(CasePatch),
}

/// Storage for the console. Every method checks the person's role and scope itself: the pages
/// only hide what the store would refuse anyway.
pub trait ConsoleStore: Send + Sync {
    /// Checks a password; on success opens a session and returns its cookie token.
    fn sign_in(&self, user: &str, password: &str, now_ms: i64) -> Result<(String, Session)>;
    /// The session a cookie token stands for, if it is current.
    fn session(&self, token: &str, now_ms: i64) -> Result<Session>;
    fn sign_out(&self, token: &str) -> Result<()>;
    /// Sets (or resets) a person's console password; clears a lockout.
    fn set_password(&self, user: &str, password: &str, now_ms: i64) -> Result<()>;
    fn case_queue(&self, user: &ConsoleUser, filter: &CaseFilter, now_ms: i64) -> Result<CaseQueue>;
    /// What waits for this person in their whole area today, by what their role does next
    /// (`NeedsYou`). `area_counts`: the status counts of a queue filtered by nothing but status
    /// (counts ignore the status), when the caller has them; then nothing more is read.
    fn needs_you(
        &self,
        user: &ConsoleUser,
        area_counts: Option<&[(String, i64)]>,
        now_ms: i64,
    ) -> Result<Vec<NeedsYou>>;
    fn case_view(&self, user: &ConsoleUser, case_id: &str) -> Result<CaseView>;
    /// The case whose code this is, typed in full, if the person may see it (`None` otherwise,
    /// whether or not it exists: a code is no way to learn what is outside one's area).
    fn case_by_code(&self, user: &ConsoleUser, code: &str) -> Result<Option<String>>;
    /// Brings the search index (and the escalation schedule) up to at most `max_changes` more
    /// changes (`rules::search`).
    fn index_for_search(&self, max_changes: usize) -> Result<crate::rules::search::IndexProgress>;
    /// The district overview of `area` (the person's widest when `None`) over local days
    /// `from_day..=to_day` (`rules::overview`).
    fn overview(
        &self,
        user: &ConsoleUser,
        area: Option<crate::rules::overview::Area>,
        days: (&str, &str),
        now_ms: i64,
    ) -> Result<crate::rules::overview::Overview>;
    /// Applies the escalation rules due at `now_ms` (`rules::escalation`), unless another
    /// instance (`instance` names this one) holds the lease.
    fn run_escalations(&self, instance: &str, now_ms: i64) -> Result<crate::rules::escalation::Ran>;
    /// The district's escalation policy (anyone signed in may read it).
    fn escalation_policy(&self, user: &ConsoleUser) -> Result<crate::rules::escalation::Policy>;
    /// Replaces it (administrators only); every waiting case is looked at again by the next run.
    fn set_escalation_policy(&self, user: &ConsoleUser, policy: &crate::rules::escalation::Policy) -> Result<()>;
    /// Writes an action as an Automerge change by the person's server-side actor, stored and
    /// synced like any device's change. Refused (nothing written) if the role, scope or the
    /// case's state does not allow it.
    fn act(&self, user: &ConsoleUser, case_id: &str, action: ConsoleAction, now_ms: i64) -> Result<()>;
    /// The reference data of the person's district (names of grids, categories, departments;
    /// grid polygons).
    fn catalog(&self, user: &ConsoleUser) -> std::sync::Arc<gridwork_model::catalog::Catalog>;
    /// A photo or thumbnail of a case the person may see.
    fn photo(&self, user: &ConsoleUser, sha256: &str) -> Result<Vec<u8>>;
    /// The case's evidence bundle (`gridwork_model::bundle`), for a person who can see the case.
    fn bundle(&self, user: &ConsoleUser, case_id: &str, now_ms: i64) -> Result<Vec<u8>>;
    /// Cases with a position matching the queue's filters (at most `limit`, open ones first).
    fn map_pins(&self, user: &ConsoleUser, filter: &CaseFilter, limit: u32, now_ms: i64) -> Result<Vec<MapPin>>;
    /// Patrol coverage of the person's grids on a district day (YYYY-MM-DD).
    fn coverage(&self, user: &ConsoleUser, day: &str) -> Result<Vec<GridCoverage>>;
    /// Each worker of the person's area over [from_ms, to_ms).
    fn assessment(&self, user: &ConsoleUser, from_ms: i64, to_ms: i64, now_ms: i64) -> Result<Vec<WorkerScore>>;

    // Administration: every method refuses anyone but an administrator.
    fn devices(&self, user: &ConsoleUser, now_ms: i64) -> Result<Vec<crate::store::DeviceInfo>>;
    /// Enrols a device for `for_user`: (device id, one-time code).
    fn enrol(&self, user: &ConsoleUser, for_user: &str, now_ms: i64) -> Result<(String, String)>;
    fn retire(&self, user: &ConsoleUser, device: &str, now_ms: i64) -> Result<()>;
    fn revoke(&self, user: &ConsoleUser, device: &str) -> Result<()>;
    /// Orders a lost phone wiped (`AdminStore::wipe_device`).
    fn wipe(&self, user: &ConsoleUser, device: &str, now_ms: i64) -> Result<()>;
    fn quarantine(&self, user: &ConsoleUser) -> Result<Vec<crate::store::QuarantinedItem>>;
    fn release(&self, user: &ConsoleUser, key: &str, now_ms: i64) -> Result<()>;
    fn reject(&self, user: &ConsoleUser, key: &str) -> Result<()>;
    fn people(&self, user: &ConsoleUser) -> Result<Vec<PersonView>>;
    fn set_person(&self, user: &ConsoleUser, person: &PersonView) -> Result<()>;
    /// The district CA's fingerprint for enrolment codes, when the server has TLS files.
    fn ca_fingerprint(&self) -> Option<String>;
    /// Replaces the reference data (a new catalog version reaches every device on its next sync).
    fn set_catalog(&self, user: &ConsoleUser, catalog: &gridwork_model::catalog::Catalog) -> Result<u64>;
    /// An administrator sets a person's console password from the administration page.
    fn set_person_password(&self, user: &ConsoleUser, person: &str, password: &str, now_ms: i64) -> Result<()> {
        user.must_administer()?;
        self.set_password(person, password, now_ms)
    }
    /// The districts a city-level person may look at (empty outside a city deployment).
    fn districts(&self, user: &ConsoleUser) -> Result<Vec<String>> {
        let _ = user;
        Ok(vec![])
    }
}

/// `,a,b,`: every department between commas, so `LIKE '%,a,%'` finds one exactly.
pub fn departments_column<'a>(departments: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<&str> = departments.collect();
    if list.is_empty() {
        String::new()
    } else {
        format!(",{},", list.join(","))
    }
}
