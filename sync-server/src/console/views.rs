//! The console's pages: view models built from the store's answers, rendered by askama templates
//! compiled into the binary (`sync-server/templates/console/`).

use askama::Template;
use gridwork_model::catalog::{Catalog, Role};
use gridwork_model::doc::keys;
use gridwork_model::ids::DepartmentId;
use gridwork_model::lifecycle::{self, EventKind, Level, RejectReason, StatusView, Verdict};
use gridwork_model::time::DistrictCalendar;

use super::i18n::Lang;
use super::map;
use crate::store::console::{CaseFilter, CaseQueue, CaseView, ConsoleUser};

/// What every page shows around its content.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub lang: Lang,
    pub title: String,
    pub user: Option<String>,
    pub csrf: String,
    pub notice: Option<String>,
    pub error: Option<String>,
    /// Show the administration link.
    pub admin: bool,
    /// The district whose cases the pages show, in a city of districts.
    pub district: Option<String>,
    /// A city-level person: show the districts link.
    pub city: bool,
}

#[derive(Debug, Template)]
#[template(path = "console/login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    pub user: String,
}

#[derive(Debug, Template)]
#[template(path = "console/districts.html")]
pub struct DistrictsPage {
    pub chrome: Chrome,
    pub districts: Vec<String>,
}

#[derive(Debug, Template)]
#[template(path = "console/message.html")]
pub struct MessagePage {
    pub chrome: Chrome,
    pub heading: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Debug, Clone)]
pub struct StatusCount {
    pub status: String,
    pub label: String,
    pub count: i64,
    pub href: String,
    pub on: bool,
}

#[derive(Debug, Clone)]
pub struct RowView {
    pub id: String,
    pub code: String,
    pub title: String,
    pub status: String,
    pub status_label: String,
    pub overdue: bool,
    pub deadline: String,
    pub grid: String,
    pub category: String,
    pub departments: String,
    pub reported: String,
    pub flags: Vec<String>,
}

#[derive(Debug, Template)]
#[template(path = "console/queue.html")]
pub struct QueuePage {
    pub chrome: Chrome,
    pub filter: CaseFilter,
    pub total: i64,
    pub all_count: i64,
    pub status_href_all: String,
    pub counts: Vec<StatusCount>,
    pub areas: Vec<Choice>,
    pub categories: Vec<Choice>,
    pub departments: Vec<Choice>,
    pub rows: Vec<RowView>,
    pub page: u32,
    pub pages: u32,
    pub prev_href: Option<String>,
    pub next_href: Option<String>,
    pub csv_href: String,
    /// The filter as hidden fields of the "go to page" form.
    pub page_jump_fields: Vec<(&'static str, String)>,
    /// Supervisors and administrators triage several cases at once (each case is still checked
    /// against the role table on its own).
    pub can_triage: bool,
    /// Where the bulk form comes back to: this queue, as filtered.
    pub back: String,
    /// What the last bulk action did: (cases done, codes refused).
    pub bulk: Option<(u32, String)>,
    /// "Needs you today": (key, label, count, href).
    pub needs: Vec<(&'static str, String, i64, String)>,
    /// A search ran while the index had not seen this many changes (their cases may be missing).
    pub index_behind: i64,
}

#[derive(Debug, Clone)]
pub struct OptionView {
    pub index: usize,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct ConflictView {
    pub field: String,
    pub label: String,
    pub options: Vec<OptionView>,
}

#[derive(Debug, Clone)]
pub struct CandidateView {
    pub event: String,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct PhotoItem {
    pub sha256: String,
    pub thumb: Option<String>,
    pub on_server: bool,
    /// "read", "partly_read", "unreadable", "absent" or "not_recorded".
    pub metadata: &'static str,
    /// What the photo's metadata says, or says it lacks, one line each.
    pub facts: Vec<String>,
    /// Taken more than a kilometre from where the case was reported.
    pub far: bool,
}

/// A photo on the case page: its capture time, or that it has none; how much of its metadata
/// could be read; and how far its own position is from the report's.
fn photo_item(lang: Lang, p: &crate::store::console::PhotoView) -> PhotoItem {
    use gridwork_model::evidence::{PhotoMetadata as M, EXIF_GPS_FAR_M};
    let mut facts = vec![];
    match &p.capture_time {
        Some(t) => facts.push(format!("{} {t}", lang.t("photo_taken"))),
        None if p.metadata.is_some() => facts.push(lang.t("photo_no_time").to_owned()),
        None => {}
    }
    let metadata = match p.metadata {
        Some(M::Read) => "read",
        Some(M::PartlyRead) => "partly_read",
        Some(M::Unreadable) => "unreadable",
        Some(M::Absent) => "absent",
        None => "not_recorded",
    };
    if matches!(p.metadata, Some(M::PartlyRead | M::Unreadable | M::Absent)) {
        facts.push(lang.t(&format!("photo_meta_{metadata}")).to_owned());
    }
    let far = p.gps_off_m.is_some_and(|m| m > EXIF_GPS_FAR_M);
    if let Some(m) = p.gps_off_m.filter(|_| far) {
        facts.push(format!("{} {:.1} km", lang.t("photo_far"), f64::from(m) / 1000.0));
    }
    PhotoItem { sha256: p.sha256.clone(), thumb: p.thumb_sha256.clone(), on_server: p.on_server, metadata, facts, far }
}

#[derive(Debug, Clone)]
pub struct TimelineRow {
    pub kind: String,
    pub when: String,
    pub who: String,
    pub device: String,
    pub event: String,
    pub verdict: String,
    /// Made on a device that signs: its signature was checked when the server received it.
    pub verified: bool,
    /// "" or how far the wall clock that stamped it was from the true time ("−2 h 03 min").
    pub clock_off: String,
    /// Taken by the server's escalation rules (`rules::escalation::SYSTEM_USER`).
    pub automatic: bool,
}

#[derive(Debug, Clone)]
pub struct ActionView {
    pub kind: String,
    pub label: String,
}

#[derive(Debug, Template)]
#[template(path = "console/case.html")]
pub struct CasePage {
    pub chrome: Chrome,
    pub id: String,
    pub code: String,
    pub title: String,
    pub status: String,
    pub status_label: String,
    pub overdue: bool,
    pub flags: Vec<String>,
    pub fields: Vec<(String, String)>,
    pub conflicts: Vec<ConflictView>,
    pub contest: Vec<CandidateView>,
    pub photos: Vec<PhotoItem>,
    pub timeline: Vec<TimelineRow>,
    pub map_svg: String,
    pub actions: Vec<ActionView>,
    pub departments: Vec<Choice>,
    pub default_hours: i64,
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The query string of a filter, with `status` and `page` replaced (and no page position).
pub fn filter_query(f: &CaseFilter, status: &str, page: u32) -> String {
    let mut q = vec![];
    for (k, v) in [
        ("status", status),
        ("area", f.area.as_str()),
        ("category", f.category.as_str()),
        ("department", f.department.as_str()),
        ("overdue", f.overdue.as_str()),
        ("from", f.from.as_str()),
        ("to", f.to.as_str()),
        ("q", f.q.as_str()),
    ] {
        if !v.is_empty() {
            q.push(format!("{k}={}", enc(v)));
        }
    }
    if page > 1 {
        q.push(format!("page={page}"));
    }
    q.join("&")
}

pub fn status_label(lang: Lang, status: &str) -> String {
    lang.t(&format!("st_{status}")).to_owned()
}

fn flag_label(lang: Lang, flag: &str) -> String {
    lang.t(&format!("fl_{flag}")).to_owned()
}

pub(super) fn category_name(catalog: &Catalog, lang: Lang, id: &str) -> String {
    catalog
        .categories
        .iter()
        .find(|c| c.id.0 == id)
        .and_then(|c| c.names.get(lang.code()).or_else(|| c.names.values().next()).cloned())
        .unwrap_or_else(|| id.to_owned())
}

pub(super) fn department_name(catalog: &Catalog, id: &str) -> String {
    catalog.departments.iter().find(|d| d.id.0 == id).map(|d| d.name.clone()).unwrap_or_else(|| id.to_owned())
}

fn grid_name(catalog: &Catalog, id: &str) -> String {
    catalog.grids.iter().find(|g| g.id.0 == id).map(|g| g.name.clone()).unwrap_or_else(|| id.to_owned())
}

fn minute(calendar: &DistrictCalendar, ms: Option<i64>) -> String {
    ms.map(|m| calendar.minute_of(m)).unwrap_or_default()
}

/// The areas a person may filter by: the grids they see, with those grids' communities and
/// streets (administrators: all).
fn area_choices(catalog: &Catalog, user: &ConsoleUser, selected: &str) -> Vec<Choice> {
    let mut streets = std::collections::BTreeSet::new();
    let mut communities = std::collections::BTreeSet::new();
    let mut grids = vec![];
    for g in catalog.grids.iter().filter(|g| user.sees_grid(g)) {
        streets.insert(g.street.clone());
        communities.insert(g.community.clone());
        grids.push((format!("grid:{}", g.id), g.name.clone()));
    }
    let mut out = vec![];
    out.extend(streets.into_iter().map(|s| (format!("street:{s}"), s)));
    out.extend(communities.into_iter().map(|c| (format!("community:{c}"), format!("· {c}"))));
    out.extend(grids.into_iter().map(|(v, n)| (v, format!("· · {n}"))));
    out.into_iter().map(|(value, label)| Choice { selected: value == selected, value, label }).collect()
}

/// What the queue page says above its rows besides the queue itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueNotes<'a> {
    /// What the last bulk action did: (cases done, codes refused).
    pub bulk: Option<(u32, &'a str)>,
    /// "Needs you today" (on the page a person lands on).
    pub needs: &'a [crate::store::console::NeedsYou],
    /// A search ran while the index had not seen this many changes.
    pub index_behind: i64,
}

pub fn queue_page(
    chrome: Chrome,
    catalog: &Catalog,
    user: &ConsoleUser,
    filter: CaseFilter,
    queue: CaseQueue,
    notes: QueueNotes<'_>,
) -> QueuePage {
    let QueueNotes { bulk, needs, index_behind } = notes;
    let lang = chrome.lang;
    let calendar = DistrictCalendar::default();
    let counts = queue
        .counts
        .iter()
        .map(|(s, n)| StatusCount {
            status: s.clone(),
            label: status_label(lang, s),
            count: *n,
            href: format!("/console/cases?{}", filter_query(&filter, s, 1)),
            on: filter.status == *s,
        })
        .collect();
    let rows = queue
        .rows
        .iter()
        .map(|r| RowView {
            id: r.id.clone(),
            code: r.code.clone(),
            title: r.title.clone(),
            status: r.status.clone(),
            status_label: status_label(lang, &r.status),
            overdue: r.overdue,
            deadline: minute(&calendar, r.deadline_ms),
            grid: grid_name(catalog, &r.grid),
            category: category_name(catalog, lang, &r.category),
            departments: r.departments.iter().map(|d| department_name(catalog, d)).collect::<Vec<_>>().join("、"),
            reported: minute(&calendar, r.reported_ms),
            flags: r.flags.iter().map(|f| flag_label(lang, f)).collect(),
        })
        .collect();
    let page = queue.page;
    QueuePage {
        all_count: queue.counts.iter().map(|(_, n)| n).sum(),
        status_href_all: format!("/console/cases?{}", filter_query(&filter, "", 1)),
        counts,
        areas: area_choices(catalog, user, &filter.area),
        categories: catalog
            .categories
            .iter()
            .map(|c| Choice {
                value: c.id.0.clone(),
                label: category_name(catalog, lang, &c.id.0),
                selected: c.id.0 == filter.category,
            })
            .collect(),
        departments: catalog
            .departments
            .iter()
            .map(|d| Choice { value: d.id.0.clone(), label: d.name.clone(), selected: d.id.0 == filter.department })
            .collect(),
        rows,
        total: queue.total,
        page,
        pages: queue.pages,
        prev_href: queue.first_key.as_ref().filter(|_| queue.has_prev).map(|k| {
            format!(
                "/console/cases?{}&before={}",
                filter_query(&filter, &filter.status, page.saturating_sub(1).max(1)),
                enc(k)
            )
        }),
        next_href: queue
            .last_key
            .as_ref()
            .filter(|_| queue.has_next)
            .map(|k| format!("/console/cases?{}&after={}", filter_query(&filter, &filter.status, page + 1), enc(k))),
        csv_href: format!("/console/cases.csv?{}", filter_query(&filter, &filter.status, 1)),
        can_triage: matches!(
            user.role,
            gridwork_model::catalog::Role::Supervisor | gridwork_model::catalog::Role::Administrator
        ),
        back: filter_query(&filter, &filter.status, page),
        bulk: bulk.map(|(n, refused)| (n, refused.to_owned())),
        index_behind,
        needs: needs
            .iter()
            .map(|n| (n.what, lang.t(n.what).to_owned(), n.count, format!("/console/cases?{}", n.query)))
            .collect(),
        page_jump_fields: [
            ("status", &filter.status),
            ("area", &filter.area),
            ("category", &filter.category),
            ("department", &filter.department),
            ("overdue", &filter.overdue),
            ("from", &filter.from),
            ("to", &filter.to),
            ("q", &filter.q),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.clone()))
        .collect(),
        filter,
        chrome,
    }
}

fn describe(kind: &EventKind, lang: Lang, catalog: &Catalog, calendar: &DistrictCalendar) -> String {
    let name = lang.t(&format!("ev_{}", kind.name())).to_owned();
    let detail = match kind {
        EventKind::Dispatch { departments, deadline_ms } => format!(
            "{} · {} {}",
            departments.iter().map(|d| department_name(catalog, &d.0)).collect::<Vec<_>>().join("、"),
            lang.t("deadline"),
            calendar.minute_of(*deadline_ms)
        ),
        EventKind::Reject { reason, note, .. } => {
            let r = match reason {
                RejectReason::Duplicate => lang.t("rr_duplicate"),
                RejectReason::OutOfScope => lang.t("rr_out_of_scope"),
            };
            if note.is_empty() {
                r.to_owned()
            } else {
                format!("{r} · {note}")
            }
        }
        EventKind::Escalate { to, note } => {
            let l = match to {
                Level::Community => lang.t("lv_community"),
                Level::Street => lang.t("lv_street"),
                Level::District => lang.t("lv_district"),
            };
            format!("{l} {note}")
        }
        EventKind::FollowUp { satisfaction, note } => format!("{} {satisfaction}/5 {note}", lang.t("satisfaction")),
        EventKind::HandlerReport { department, note, .. } => {
            format!("{} {note}", department_name(catalog, &department.0))
        }
        EventKind::Start { department } => department_name(catalog, &department.0),
        EventKind::Accept { note } | EventKind::Close { note } | EventKind::Urge { note } => note.clone(),
        EventKind::Note { text } => text.clone(),
        EventKind::Return { reason } => reason.clone(),
        EventKind::Assign { user } | EventKind::Unassign { user } => user.0.clone(),
        EventKind::Settle { chosen } => chosen.to_string(),
        EventKind::Report | EventKind::Unknown => String::new(),
    };
    if detail.trim().is_empty() {
        name
    } else {
        format!("{name}: {}", detail.trim())
    }
}

fn role_label(role: Role, lang: Lang) -> &'static str {
    match (role, lang) {
        (Role::Worker, Lang::Zh) => "网格员",
        (Role::Supervisor, Lang::Zh) => "督导",
        (Role::DepartmentHandler, Lang::Zh) => "部门处置人员",
        (Role::Administrator, Lang::Zh) => "管理员",
        (Role::Worker, Lang::En) => "worker",
        (Role::Supervisor, Lang::En) => "supervisor",
        (Role::DepartmentHandler, Lang::En) => "department handler",
        (Role::Administrator, Lang::En) => "administrator",
    }
}

/// The actions this person may take on the case as the server sees it: the lifecycle's role
/// table decides, as it will again when the action is posted.
fn allowed_actions(user: &ConsoleUser, view: &CaseView, lang: Lang, catalog: &Catalog, now_ms: i64) -> Vec<ActionView> {
    let actor = user.actor();
    let dept = DepartmentId::from(user.department.clone().unwrap_or_default().as_str());
    let candidates = [
        EventKind::Accept { note: String::new() },
        EventKind::Reject { reason: RejectReason::Duplicate, duplicate_of: None, note: String::new() },
        // A dispatch the check can judge: a real department, a deadline ahead.
        EventKind::Dispatch {
            departments: catalog.departments.iter().take(1).map(|d| d.id.clone()).collect(),
            deadline_ms: now_ms + 3_600_000,
        },
        EventKind::Start { department: dept.clone() },
        EventKind::HandlerReport { department: dept, note: String::new(), evidence: vec![] },
        EventKind::Urge { note: String::new() },
        EventKind::Escalate { to: Level::Street, note: String::new() },
        EventKind::Return { reason: "-".into() },
        EventKind::Close { note: String::new() },
        EventKind::Note { text: "-".into() },
    ];
    candidates
        .iter()
        .filter(|k| lifecycle::check(k, &actor, &view.case.timeline.state).is_ok())
        .map(|k| ActionView { kind: k.name().to_owned(), label: lang.t(&format!("ev_{}", k.name())).to_owned() })
        .collect()
}

pub fn case_page(chrome: Chrome, catalog: &Catalog, user: &ConsoleUser, view: &CaseView, now_ms: i64) -> CasePage {
    let lang = chrome.lang;
    let calendar = DistrictCalendar::default();
    let case = &view.case;
    let state = &case.timeline.state;
    let loc = &case.location.value;
    let mut fields = vec![
        (lang.t("description").to_owned(), case.description.clone()),
        (lang.t("category").to_owned(), category_name(catalog, lang, &case.category.value.0)),
        (lang.t("grid").to_owned(), grid_name(catalog, &case.grid.value.0)),
        (
            lang.t("location").to_owned(),
            format!(
                "{:.6}, {:.6} · {} ±{:.0} m{}",
                loc.lat,
                loc.lon,
                lang.t("accuracy"),
                loc.accuracy_m,
                if loc.mock { format!(" · {}", lang.t("mock_location")) } else { String::new() }
            ),
        ),
        (lang.t("reporter").to_owned(), case.reporter.0.clone()),
        (lang.t("reported").to_owned(), calendar.minute_of(case.created_ms)),
        (lang.t("received").to_owned(), minute(&calendar, view.received_ms)),
    ];
    if !state.dispatched.is_empty() {
        fields.push((
            lang.t("departments").to_owned(),
            state.dispatched.keys().map(|d| department_name(catalog, &d.0)).collect::<Vec<_>>().join("、"),
        ));
    }
    if let Some(d) = state.deadline_ms {
        fields.push((lang.t("deadline").to_owned(), calendar.minute_of(d)));
    }
    if let Some(n) = &case.official_number {
        fields.push((lang.t("official_number").to_owned(), n.clone()));
    }
    let mut conflicts = vec![];
    let mut push_conflict = |field: &str, label: &str, options: Vec<String>| {
        if !options.is_empty() {
            conflicts.push(ConflictView {
                field: field.to_owned(),
                label: label.to_owned(),
                options: options.into_iter().enumerate().map(|(index, text)| OptionView { index, text }).collect(),
            });
        }
    };
    push_conflict(keys::TITLE, lang.t("title"), case.title.conflicts.clone());
    push_conflict(
        keys::CATEGORY,
        lang.t("category"),
        case.category.conflicts.iter().map(|c| category_name(catalog, lang, &c.0)).collect(),
    );
    push_conflict(keys::GRID, lang.t("grid"), case.grid.conflicts.iter().map(|g| grid_name(catalog, &g.0)).collect());
    push_conflict(
        keys::LOCATION,
        lang.t("location"),
        case.location.conflicts.iter().map(|l| format!("{:.6}, {:.6} ±{:.0} m", l.lat, l.lon, l.accuracy_m)).collect(),
    );
    let contest = match &state.status {
        StatusView::Contested { candidates } if user.role == Role::Supervisor => candidates
            .iter()
            .map(|c| {
                let who = case
                    .timeline
                    .entries
                    .iter()
                    .find(|e| e.event.id == c.event)
                    .map(|e| format!("{} · {}", e.event.actor.user, describe(&e.event.kind, lang, catalog, &calendar)))
                    .unwrap_or_default();
                CandidateView {
                    event: c.event.to_string(),
                    label: format!("{} — {}", status_label(lang, c.status.as_str()), who),
                }
            })
            .collect(),
        _ => vec![],
    };
    let timeline = case
        .timeline
        .entries
        .iter()
        .map(|e| TimelineRow {
            kind: e.event.kind.name().to_owned(),
            when: calendar.minute_of(e.event.clock.estimated_ms()),
            who: format!("{} ({})", e.event.actor.user, role_label(e.event.actor.role, lang)),
            device: e.event.actor.device.0.clone(),
            automatic: e.event.actor.user.0 == crate::rules::escalation::SYSTEM_USER,
            verified: view.signing_devices.contains(&e.event.actor.device.0),
            clock_off: view.clock_off.get(&e.event.id.to_string()).map(|ms| signed_duration(*ms)).unwrap_or_default(),
            event: describe(&e.event.kind, lang, catalog, &calendar),
            verdict: match &e.verdict {
                Verdict::Applied => lang.t("applied").to_owned(),
                Verdict::Invalid { reason } => format!("{}: {reason}", lang.t("invalid")),
                other => format!("{other:?}"),
            },
        })
        .collect();
    let grid = catalog.grids.iter().find(|g| g.id == case.grid.value);
    let default_hours = catalog
        .categories
        .iter()
        .find(|c| c.id == case.category.value)
        .map(|c| i64::from(c.default_deadline_hours))
        .unwrap_or(72);
    CasePage {
        id: case.id.to_string(),
        code: case.code.clone(),
        title: case.title.value.clone(),
        status: state.status.label().to_owned(),
        status_label: status_label(lang, state.status.label()),
        overdue: state.is_overdue(now_ms),
        flags: view.flags.iter().map(|f| flag_label(lang, f)).collect(),
        fields,
        conflicts,
        contest,
        photos: view.photos.iter().map(|p| photo_item(lang, p)).collect(),
        timeline,
        map_svg: map::case_map(grid.map(|g| &g.boundary), loc.lat, loc.lon, state.status.label()),
        actions: allowed_actions(user, view, lang, catalog, now_ms),
        departments: catalog
            .departments
            .iter()
            .map(|d| Choice { value: d.id.0.clone(), label: d.name.clone(), selected: false })
            .collect(),
        default_hours,
        chrome,
    }
}

/// The queue as CSV (every matching case), in the page's language. Cells that a spreadsheet
/// would run as a formula are prefixed with `'`.
pub fn queue_csv(queue: &CaseQueue, catalog: &Catalog, lang: Lang) -> Result<Vec<u8>, crate::error::ServerError> {
    let calendar = DistrictCalendar::default();
    let rows: Vec<Vec<String>> = queue
        .rows
        .iter()
        .map(|r| {
            vec![
                r.code.clone(),
                r.title.clone(),
                status_label(lang, &r.status),
                grid_name(catalog, &r.grid),
                category_name(catalog, lang, &r.category),
                r.departments.iter().map(|d| department_name(catalog, d)).collect::<Vec<_>>().join(" "),
                minute(&calendar, r.reported_ms),
                minute(&calendar, r.deadline_ms),
                if r.overdue { "1".into() } else { String::new() },
                r.flags.join(" "),
                r.id.clone(),
            ]
        })
        .collect();
    let header = [
        "code",
        "title",
        "status",
        "grid",
        "category",
        "departments",
        "reported",
        "deadline",
        "overdue",
        "flags",
        "id",
    ];
    table_csv(lang, &header, &rows)
}

/// Most pins one map draws.
pub const MAX_PINS: u32 = 3000;

#[derive(Debug, Template)]
#[template(path = "console/map.html")]
pub struct MapPage {
    pub chrome: Chrome,
    pub statuses: Vec<Choice>,
    pub areas: Vec<Choice>,
    pub legend: Vec<(String, &'static str)>,
    pub shown: usize,
    pub truncated: bool,
    pub svg: String,
    /// Cases whose position lies outside the drawn grids (not drawn; see `map::DistrictMap`).
    pub outside: usize,
}

pub fn map_page(
    chrome: Chrome,
    catalog: &Catalog,
    user: &ConsoleUser,
    filter: &CaseFilter,
    pins: &[crate::store::console::MapPin],
) -> MapPage {
    let lang = chrome.lang;
    let grids: Vec<(&str, &gridwork_model::geo::Polygon)> = catalog
        .grids
        .iter()
        .filter(|g| user.sees_grid(g))
        .filter(|g| {
            // An area filter draws that area's grids only.
            filter.area.is_empty()
                || filter.area == format!("grid:{}", g.id)
                || filter.area == format!("community:{}", g.community)
                || filter.area == format!("street:{}", g.street)
        })
        .map(|g| (g.name.as_str(), &g.boundary))
        .collect();
    let drawn = map::district_map(&grids, pins);
    MapPage {
        statuses: map::LEGEND
            .iter()
            .map(|s| Choice { value: (*s).to_owned(), label: status_label(lang, s), selected: filter.status == *s })
            .collect(),
        areas: area_choices(catalog, user, &filter.area),
        legend: map::LEGEND.iter().map(|s| (status_label(lang, s), map::status_colour(s))).collect(),
        shown: pins.len(),
        truncated: pins.len() as u32 >= MAX_PINS,
        svg: drawn.svg,
        outside: drawn.outside,
        chrome,
    }
}

#[derive(Debug, Clone)]
pub struct CoverageRow {
    pub id: String,
    pub name: String,
    pub points: usize,
    pub covered: usize,
    pub missed: usize,
    pub check_ins: usize,
    pub outside: usize,
    /// Check-ins whose fix the phone's OS marked mock: counted apart, and a point visited only
    /// with mock fixes is not covered.
    pub mock: usize,
}

#[derive(Debug, Clone)]
pub struct CoverageDetail {
    pub id: String,
    pub name: String,
    /// (point name, "who hh:mm (distance), …" or empty when missed)
    pub rows: Vec<(String, String)>,
    /// Check-ins outside the grid, as text.
    pub outside: String,
}

#[derive(Debug, Template)]
#[template(path = "console/coverage.html")]
pub struct CoveragePage {
    pub chrome: Chrome,
    pub day: String,
    pub grids: Vec<CoverageRow>,
    pub details: Vec<CoverageDetail>,
}

fn check_in_text(c: &crate::store::console::CheckInView, calendar: &DistrictCalendar) -> String {
    let time = calendar.minute_of(c.at_ms);
    let time = time.split(' ').nth(1).unwrap_or(&time).to_owned();
    let mock = if c.mock { " ⚠mock" } else { "" };
    match c.distance_m {
        Some(d) => format!("{} {time} ({d:.0} m){mock}", c.user),
        None => format!("{} {time}{mock}", c.user),
    }
}

pub fn coverage_rows(catalog: &Catalog, coverage: &[crate::store::console::GridCoverage]) -> Vec<CoverageRow> {
    coverage
        .iter()
        .map(|g| {
            let covered = g.points.iter().filter(|(_, _, c)| c.iter().any(|c| !c.mock)).count();
            CoverageRow {
                id: g.grid.clone(),
                name: grid_name(catalog, &g.grid),
                points: g.points.len(),
                covered,
                missed: g.points.len() - covered,
                check_ins: g.check_ins.len(),
                outside: g.check_ins.iter().filter(|c| !c.inside_grid).count(),
                mock: g.check_ins.iter().filter(|c| c.mock).count(),
            }
        })
        .collect()
}

pub fn coverage_page(
    chrome: Chrome,
    catalog: &Catalog,
    day: String,
    coverage: &[crate::store::console::GridCoverage],
    selected: Option<&str>,
) -> CoveragePage {
    let calendar = DistrictCalendar::default();
    // Detail for the chosen grid, or for every grid when there are only a few.
    let details = coverage
        .iter()
        .filter(|g| selected.map_or(coverage.len() <= 3, |s| s == g.grid))
        .map(|g| CoverageDetail {
            id: g.grid.clone(),
            name: grid_name(catalog, &g.grid),
            rows: g
                .points
                .iter()
                .map(|(_, name, at)| {
                    (name.clone(), at.iter().map(|c| check_in_text(c, &calendar)).collect::<Vec<_>>().join("、"))
                })
                .collect(),
            outside: g
                .check_ins
                .iter()
                .filter(|c| !c.inside_grid)
                .map(|c| check_in_text(c, &calendar))
                .collect::<Vec<_>>()
                .join("、"),
        })
        .collect();
    CoveragePage { grids: coverage_rows(catalog, coverage), details, day, chrome }
}

#[derive(Debug, Template)]
#[template(path = "console/assessment.html")]
pub struct AssessmentPage {
    pub chrome: Chrome,
    pub from: String,
    pub to: String,
    /// (user, cells in column order)
    pub rows: Vec<(String, Vec<String>)>,
}

/// A worker's figures as the table's and the CSV's cells.
pub fn score_cells(s: &crate::store::console::WorkerScore, catalog: &Catalog) -> Vec<String> {
    vec![
        s.user.clone(),
        s.grids.iter().map(|g| grid_name(catalog, g)).collect::<Vec<_>>().join(" "),
        s.reported.to_string(),
        s.accepted.to_string(),
        s.rejected.to_string(),
        s.handled_on_time.to_string(),
        s.handled_late.to_string(),
        s.overdue.to_string(),
        s.check_ins.to_string(),
        s.satisfaction.map(|v| format!("{v:.2} ({})", s.follow_ups)).unwrap_or_default(),
        s.clock_flags.to_string(),
    ]
}

/// The header of the assessment's table and CSV.
pub const SCORE_COLUMNS: [&str; 11] = [
    "worker",
    "grid",
    "reported_n",
    "accepted_n",
    "rejected_n",
    "on_time",
    "late",
    "overdue",
    "check_ins",
    "satisfaction",
    "clock_flags",
];

/// Any table as CSV, header translated; formula-like cells defused.
pub fn table_csv(lang: Lang, header: &[&str], rows: &[Vec<String>]) -> Result<Vec<u8>, crate::error::ServerError> {
    let fail = |e: csv::Error| crate::error::ServerError::Internal(format!("writing CSV: {e}"));
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record(header.iter().map(|h| lang.t(h))).map_err(fail)?;
    for r in rows {
        w.write_record(r.iter().map(|c| defuse(c))).map_err(fail)?;
    }
    w.into_inner().map_err(|e| crate::error::ServerError::Internal(format!("writing CSV: {e}")))
}

/// A cell a spreadsheet would run as a formula gets a leading `'`.
fn defuse(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub id: String,
    pub code: String,
    pub user: String,
    pub status: String,
    pub unsynced: String,
    /// Oldest unsynced work over a day old.
    pub stale: bool,
    pub outbox: String,
    pub photos: String,
    pub last_seen: String,
    pub can_retire: bool,
    pub can_revoke: bool,
    /// Not yet ordered wiped, and reachable (a revoked phone never hears the order).
    pub can_wipe: bool,
    /// (links, holes, forks) of its signed chain; None for an app older than signing.
    pub chain: Option<(i64, i64, i64)>,
}

#[derive(Debug, Clone)]
pub struct PersonRow {
    pub id: String,
    pub role: String,
    pub department: String,
    pub scopes: String,
    pub has_password: bool,
}

#[derive(Debug, Clone)]
pub struct CategoryRow {
    pub value: String,
    pub label: String,
    pub hours: u32,
    pub retired: bool,
}

#[derive(Debug, Template)]
#[template(path = "console/admin.html")]
pub struct AdminPage {
    pub chrome: Chrome,
    pub devices: Vec<DeviceRow>,
    pub quarantine: Vec<crate::store::QuarantinedItem>,
    pub people: Vec<PersonRow>,
    pub categories: Vec<CategoryRow>,
    pub catalog_version: u64,
    pub escalation: EscalationView,
}

/// The escalation policy as the administration form shows it.
#[derive(Debug, Clone)]
pub struct EscalationView {
    /// ISO weekdays, space-separated ("1 2 3 4 5").
    pub weekdays: String,
    pub start: String,
    pub end: String,
    pub holidays: String,
    pub extra_workdays: String,
    pub default_rules: String,
    /// (category id, name, its own rules' text or "" for the default, "none" for no rules).
    pub categories: Vec<(String, String, String)>,
}

pub fn escalation_view(policy: &crate::rules::escalation::Policy, catalog: &Catalog, lang: Lang) -> EscalationView {
    use crate::rules::escalation::rules_text;
    let h = &policy.working_hours;
    EscalationView {
        weekdays: h.weekdays.iter().map(u8::to_string).collect::<Vec<_>>().join(" "),
        start: gridwork_model::time::hhmm(h.start_minute),
        end: gridwork_model::time::hhmm(h.end_minute),
        holidays: h.holidays.join(" "),
        extra_workdays: h.extra_workdays.join(" "),
        default_rules: rules_text(&policy.default_rules),
        categories: catalog
            .categories
            .iter()
            .filter(|c| !c.retired)
            .map(|c| {
                let own = match policy.by_category.get(&c.id.0) {
                    None => String::new(),
                    Some(r) if r.is_empty() => "none".to_owned(),
                    Some(r) => rules_text(r),
                };
                (c.id.0.clone(), category_name(catalog, lang, &c.id.0), own)
            })
            .collect(),
    }
}

/// "+1 h 05 min" / "−2 h 03 min" / "−12 min".
pub fn signed_duration(ms: i64) -> String {
    let sign = if ms < 0 { "−" } else { "+" };
    let minutes = ms.unsigned_abs() / 60_000;
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{sign}{m} min"),
        (h, m) if h < 48 => format!("{sign}{h} h {m:02} min"),
        (h, _) => format!("{sign}{} d {} h", h / 24, h % 24),
    }
}

fn age_text(ms: i64) -> String {
    let minutes = ms / 60_000;
    match minutes {
        m if m < 60 => format!("{m} min"),
        m if m < 48 * 60 => format!("{} h", m / 60),
        m => format!("{} d", m / (24 * 60)),
    }
}

pub fn admin_page(
    chrome: Chrome,
    catalog: &Catalog,
    devices: &[crate::store::DeviceInfo],
    quarantine: Vec<crate::store::QuarantinedItem>,
    people: &[crate::store::console::PersonView],
    policy: &crate::rules::escalation::Policy,
) -> AdminPage {
    let lang = chrome.lang;
    let calendar = DistrictCalendar::default();
    let state_u64 = |d: &crate::store::DeviceInfo, k: &str| {
        d.last_state.as_ref().and_then(|s| s.get(k)).and_then(|v| v.as_u64()).unwrap_or(0).to_string()
    };
    AdminPage {
        devices: devices
            .iter()
            .map(|d| DeviceRow {
                id: d.id.clone(),
                code: d.code.clone(),
                user: d.user.clone(),
                status: d.status.clone(),
                unsynced: d.unsynced_age_ms.map(age_text).unwrap_or_default(),
                stale: d.unsynced_age_ms.is_some_and(|a| a > 24 * 3_600_000),
                outbox: state_u64(d, "outbox_items"),
                photos: state_u64(d, "photos_pending"),
                last_seen: minute(&calendar, d.last_seen_ms),
                can_retire: d.status == "active",
                can_revoke: d.status != "revoked",
                can_wipe: matches!(d.status.as_str(), "active" | "retired" | "retired_drained"),
                chain: d.chain.as_ref().map(|c| (c.links, c.holes, c.forks)),
            })
            .collect(),
        quarantine,
        people: people
            .iter()
            .map(|p| PersonRow {
                id: p.id.clone(),
                role: role_label(p.role, lang).to_owned(),
                department: p.department.clone().unwrap_or_default(),
                scopes: p.scopes.join(" "),
                has_password: p.has_password,
            })
            .collect(),
        categories: catalog
            .categories
            .iter()
            .map(|c| CategoryRow {
                value: c.id.0.clone(),
                label: category_name(catalog, lang, &c.id.0),
                hours: c.default_deadline_hours,
                retired: c.retired,
            })
            .collect(),
        catalog_version: catalog.version,
        escalation: escalation_view(policy, catalog, lang),
        chrome,
    }
}

#[derive(Debug, Template)]
#[template(path = "console/enrolled.html")]
pub struct EnrolledPage {
    pub chrome: Chrome,
    pub user: String,
    pub device: String,
    pub code: String,
    pub uri: String,
    pub qr_svg: String,
}

/// The enrolment URI as an SVG QR code, for the phone's camera.
pub fn qr_svg(text: &str) -> Result<String, crate::error::ServerError> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| crate::error::ServerError::Internal(format!("QR code: {e}")))?;
    Ok(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(240, 240).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_a_spreadsheet_would_run_are_defused_and_quotes_escaped() {
        let rows = vec![vec!["=HYPERLINK(\"x\")".to_owned(), "楼道, 三楼".to_owned(), "-5".to_owned()]];
        let text = String::from_utf8(table_csv(Lang::En, &["title", "note", "id"], &rows).expect("csv")).expect("utf8");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("Title,Note,id"));
        assert_eq!(lines.next(), Some("\"'=HYPERLINK(\"\"x\"\")\",\"楼道, 三楼\",'-5"));
    }
}
