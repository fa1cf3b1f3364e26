//! `ConsoleStore` for every backend (ADR 12, 20): who may sign in, what a person's queue, map,
//! coverage and assessment hold, whether they may open a case or a photo, and their actions —
//! decided here, once, over the storage port; a backend holds the SQL.
//!
//! A console action is written the way a phone writes one: the case's document is loaded from
//! its stored changes, the lifecycle's role table is checked against it, the event is put with
//! the person's own actor, and the resulting change goes through the same push path, write rule
//! and checks as a device's (attribution, sequence number, scopes). The person's actor is
//! derived from their user id and the store's epoch and registered to a console pseudo-device
//! `console-<user>` that has no token, so every change stays attributable and nothing can sync
//! as it.

use std::collections::BTreeSet;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use automerge::{ActorId, Automerge};
use gridwork_model::access::Scope;
use gridwork_model::catalog::{Catalog, Role};
use gridwork_model::doc::{self, read_case, CaseDoc};
use gridwork_model::ids::EventId;
use gridwork_model::lifecycle::{self, Event, EventKind};
use gridwork_model::time::{ClockStamp, DistrictCalendar};
use gridwork_model::wire::{DeviceState, Outcome, SyncRequest, PROTOCOL_VERSION};
use sha2::{Digest, Sha256};

use super::push::{PushJob, Pushed};
use crate::error::{Result, ServerError};
use crate::store::console::{
    queue_key, CaseFilter, CaseQueue, CaseRow, CaseView, ConsoleAction, ConsoleStore, ConsoleUser, GridCoverage,
    MapPin, PersonView, PhotoView, Session, WorkerScore, LOCKOUT_MS, MAX_EXPORT, MAX_FAILED_SIGN_INS, SESSION_MS,
};
use crate::store::port::{read, write, Backend, QueuePage, QueueQuery, ReadTx, WriteTx};
use crate::store::values::{random_hex, sha256_hex, stored_role};
use crate::store::{AdminStore, Device, DeviceInfo, QuarantinedItem};

/// Rows per queue page.
pub const PAGE_SIZE: u32 = 50;

/// The console person's Automerge actor: the same across restarts, so it stays registered to
/// their console pseudo-device, and another in each epoch. A restored store has lost the
/// person's console changes since its backup (phones may bring them back later, with receipts):
/// the same actor would make its next change with a sequence number one of those already has,
/// and a case holding two changes of one actor and number no longer loads (chaos seed 2).
fn console_actor(epoch: &str, user: &str) -> ActorId {
    let digest = Sha256::digest(format!("gridwork-console:{epoch}:{user}").as_bytes());
    ActorId::from(&digest[..16])
}

/// The console's device for a person (`console-USER`) and its one actor, made on their first
/// action (or when their password is set): their console changes are attributed to it like a
/// phone's to its device.
fn register_console_device(tx: &dyn WriteTx, epoch: &str, user: &ConsoleUser, now_ms: i64) -> Result<Device> {
    let id = user.console_device_id();
    let actor = console_actor(epoch, &user.id).to_hex_string();
    tx.register_console_device(&id, &format!("console:{}", user.id), &user.id, &actor, now_ms)?;
    Ok(Device {
        id,
        user: user.id.clone(),
        role: user.role,
        department: user.department.clone(),
        retired: false,
        district: None,
        public_key: None,
        wipe: false,
    })
}

/// The console device `device_id` names (`console-USER`), made again if the store lost it (a
/// restore from a backup taken before the person's first console action); None when it names no
/// console person.
pub(crate) fn console_device_again(
    tx: &dyn WriteTx,
    epoch: &str,
    device_id: &str,
    now_ms: i64,
) -> Result<Option<Device>> {
    let Some(user_id) = device_id.strip_prefix("console-") else { return Ok(None) };
    let Some((role, department)) = tx.person(user_id)? else { return Ok(None) };
    let role = stored_role(&role)?;
    if role == Role::Worker {
        return Ok(None);
    }
    let user = ConsoleUser::new(user_id.to_owned(), role, department, vec![]);
    register_console_device(tx, epoch, &user, now_ms).map(Some)
}

fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ServerError::Internal(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ServerError::Internal(format!("salt: {e}")))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| ServerError::Internal(format!("hashing a password: {e}")))?
        .to_string())
}

fn password_matches(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash of no one's password: checked when the user is unknown, so a wrong user name takes as
/// long to refuse as a wrong password and names cannot be probed by timing.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("no one's password").unwrap_or_default())
}

fn console_user(tx: &dyn ReadTx, user: &str) -> Result<ConsoleUser> {
    let (role, department) = tx.person(user)?.ok_or(ServerError::Unauthenticated)?;
    let scopes: Vec<String> = tx.granted_scopes(user)?.into_iter().collect();
    Ok(ConsoleUser::new(user.to_owned(), stored_role(&role)?, department, scopes))
}

/// The scopes a console person's queue and actions are limited to (None: everything), with
/// their communities and streets read as the grids placed in them.
fn visible_scopes(tx: &dyn ReadTx, user: &ConsoleUser) -> Result<Option<Vec<String>>> {
    if user.sees_everything() {
        return Ok(None);
    }
    let mut scopes: Vec<String> = tx.user_scopes(&user.id)?.into_keys().collect();
    let own = format!("user:{}", user.id);
    if !scopes.contains(&own) {
        scopes.push(own);
    }
    Ok(Some(scopes))
}

fn can_see_case(tx: &dyn ReadTx, user: &ConsoleUser, case_id: &str) -> Result<bool> {
    if !tx.case_reported(case_id)? {
        return Ok(false);
    }
    let Some(scopes) = visible_scopes(tx, user)? else { return Ok(true) };
    Ok(tx.memberships(case_id)?.iter().any(|(s, _)| scopes.contains(s)))
}

/// A stored case, loaded and read. A document the server cannot read (whatever slipped past
/// ingest, or a store damaged on disk) is `DamagedDocument`, naming the devices that sent it:
/// the console shows it as damaged instead of failing.
pub(crate) fn load_case(tx: &dyn ReadTx, case_id: &str) -> Result<(Automerge, CaseDoc)> {
    let history = tx.history_upto(case_id, i64::MAX)?;
    let senders: BTreeSet<String> = history.iter().map(|c| c.device_id.clone()).collect();
    let changes: Vec<automerge::Change> =
        history.into_iter().filter_map(|c| automerge::Change::from_bytes(c.bytes).ok()).collect();
    // Fenced: a history Automerge panics on is a damaged case, not a failed page.
    let loaded = gridwork_model::fence::fenced(move || {
        let mut doc = Automerge::new();
        doc.apply_changes(changes).map_err(|e| e.to_string())?;
        let case = read_case(&doc).map_err(|e| e.to_string())?;
        Ok::<_, String>((doc, case))
    })
    .and_then(|r| r);
    loaded.map_err(|reason| ServerError::DamagedDocument {
        case_id: case_id.to_owned(),
        senders: senders.into_iter().collect::<Vec<_>>().join(", "),
        reason,
    })
}

/// The queue's filters within the person's area, as the store's SQL tests them.
fn queue_query(tx: &dyn ReadTx, user: &ConsoleUser, filter: &CaseFilter, now_ms: i64) -> Result<QueueQuery> {
    let calendar = DistrictCalendar::default();
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let area = match filter.area.as_str() {
        "" => None,
        a if a.starts_with("community:") || a.starts_with("street:") => Some(tx.grids_placed_in(a)?),
        a => Some(vec![a.to_owned()]),
    };
    let day = |d: &str, start: bool| -> Result<Option<i64>> {
        if d.is_empty() {
            return Ok(None);
        }
        let (s, e) = calendar
            .day_bounds(d)
            .ok_or_else(|| ServerError::BadRequest(format!("{d:?} is not a date: use YYYY-MM-DD")))?;
        Ok(Some(if start { s } else { e }))
    };
    Ok(QueueQuery {
        visible: visible_scopes(tx, user)?,
        area,
        category: some(&filter.category),
        department: some(&filter.department),
        // A deadline before now, as a queue key range (keys start with the deadline).
        overdue_below: (filter.overdue == "1").then(|| queue_key(Some(now_ms), Some(i64::MAX), "")),
        reported_from_ms: day(&filter.from, true)?,
        reported_before_ms: day(&filter.to, false)?,
        status: some(&filter.status),
        terms: gridwork_model::search::query_terms(&filter.q),
    })
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

impl<B: Backend> ConsoleStore for B {
    fn sign_in(&self, user: &str, password: &str, now_ms: i64) -> Result<(String, Session)> {
        let account = read(self, |tx: &dyn ReadTx| tx.console_account(user))?;
        let Some(account) = account else {
            let _ = password_matches(password, decoy_hash());
            return Err(ServerError::BadCredentials);
        };
        if account.locked_until_ms > now_ms {
            return Err(ServerError::AccountLocked { minutes: (account.locked_until_ms - now_ms + 59_999) / 60_000 });
        }
        // Hashing takes tens of milliseconds by design; no transaction is held meanwhile.
        if !password_matches(password, &account.password_hash) {
            let failed = account.failed_attempts + 1;
            let locked = if failed >= MAX_FAILED_SIGN_INS { now_ms + LOCKOUT_MS } else { 0 };
            write(self, |tx: &dyn WriteTx| {
                tx.console_sign_in_failed(user, if locked > 0 { 0 } else { failed }, locked)
            })?;
            tracing::warn!(failed, locked = locked > 0, "console sign-in refused");
            return Err(if locked > 0 {
                ServerError::AccountLocked { minutes: LOCKOUT_MS / 60_000 }
            } else {
                ServerError::BadCredentials
            });
        }
        let token = random_hex(32)?;
        let csrf = random_hex(16)?;
        let person = write(self, |tx: &dyn WriteTx| {
            tx.open_console_session(&sha256_hex(&token), user, &csrf, now_ms, now_ms + SESSION_MS)?;
            console_user(tx, user)
        })?;
        Ok((token, Session { user: person, csrf }))
    }

    fn session(&self, token: &str, now_ms: i64) -> Result<Session> {
        read(self, |tx: &dyn ReadTx| match tx.console_session(&sha256_hex(token), now_ms)? {
            Some((user, csrf)) => console_user(tx, &user).map(|user| Session { user, csrf }),
            None => Err(ServerError::Unauthenticated),
        })
    }

    fn sign_out(&self, token: &str) -> Result<()> {
        write(self, |tx: &dyn WriteTx| tx.close_console_session(&sha256_hex(token)))
    }

    fn set_password(&self, user: &str, password: &str, now_ms: i64) -> Result<()> {
        if password.chars().count() < 10 {
            return Err(ServerError::BadRequest("a console password needs at least 10 characters".into()));
        }
        match read(self, |tx: &dyn ReadTx| tx.person(user))? {
            None => return Err(ServerError::NotFound(format!("user {user}: add them with `admin set-user` first"))),
            Some((role, _)) if role == "worker" => {
                return Err(ServerError::BadRequest(format!(
                    "{user} is a worker: the console is for supervisors, department handlers and administrators"
                )))
            }
            Some(_) => {}
        }
        let hash = hash_password(password)?;
        let epoch = self.rules().epoch.to_owned();
        write(self, |tx: &dyn WriteTx| {
            tx.set_console_password(user, &hash, now_ms)?;
            // The person's console actor is registered to their console device now, before
            // their first action: a phone that pushed a change with that (derivable) actor first
            // would otherwise own it, and every console action would be quarantined.
            let person = console_user(tx, user)?;
            register_console_device(tx, &epoch, &person, now_ms).map(|_| ())
        })
    }

    fn needs_you(
        &self,
        user: &ConsoleUser,
        area_counts: Option<&[(String, i64)]>,
        now_ms: i64,
    ) -> Result<Vec<crate::store::console::NeedsYou>> {
        use crate::store::console::NeedsYou;
        read(self, |tx: &dyn ReadTx| {
            let counts = match area_counts {
                Some(c) => c.to_vec(),
                None => tx.queue_counts(&queue_query(tx, user, &CaseFilter::default(), now_ms)?)?,
            };
            let of = |s: &str| counts.iter().filter(|(x, _)| x == s).map(|(_, n)| *n).sum::<i64>();
            // What the role table lets this role do next, by the state it does it from, and what
            // is overdue at the person's level: their department's, or their area's. Overdue is
            // counted from the overview's facts (a partial index of waiting cases by deadline,
            // trailing the log by one upkeep pass), not the queue: counting it there doubled the
            // cost of a community supervisor's landing page (`gridwork-bench console`).
            let overdue = match (&user.department, user.role) {
                (Some(d), Role::DepartmentHandler) => tx.overdue_count(None, Some(d), now_ms)?,
                _ => match super::overview::person_grids(tx, user)? {
                    None => tx.overdue_count(None, None, now_ms)?,
                    Some(grids) if grids.is_empty() => 0,
                    Some(grids) => tx.overdue_count(Some(&grids.into_iter().collect::<Vec<_>>()), None, now_ms)?,
                },
            };
            let overdue = NeedsYou { what: "needs_overdue", count: overdue, query: "overdue=1" };
            let needs = match user.role {
                Role::DepartmentHandler => vec![
                    NeedsYou { what: "needs_start", count: of("dispatched"), query: "status=dispatched" },
                    NeedsYou { what: "needs_handler_report", count: of("in_progress"), query: "status=in_progress" },
                    overdue,
                ],
                _ => vec![
                    NeedsYou { what: "needs_triage", count: of("reported"), query: "status=reported" },
                    NeedsYou { what: "needs_dispatch", count: of("accepted"), query: "status=accepted" },
                    NeedsYou { what: "needs_close", count: of("followed_up"), query: "status=followed_up" },
                    NeedsYou { what: "needs_resolve", count: of("contested"), query: "status=contested" },
                    overdue,
                ],
            };
            Ok(needs)
        })
    }

    fn case_queue(&self, user: &ConsoleUser, filter: &CaseFilter, now_ms: i64) -> Result<CaseQueue> {
        let size = if filter.all { MAX_EXPORT } else { PAGE_SIZE };
        read(self, |tx: &dyn ReadTx| {
            let q = queue_query(tx, user, filter, now_ms)?;
            let counts = tx.queue_counts(&q)?;
            let total: i64 = match &q.status {
                None => counts.iter().map(|(_, n)| n).sum(),
                Some(status) => counts.iter().filter(|(s, _)| s == status).map(|(_, n)| n).sum(),
            };
            let pages = u32::try_from((total + i64::from(size) - 1) / i64::from(size)).unwrap_or(1).max(1);
            let some = |s: &str| (!s.is_empty() && !filter.all).then(|| s.to_owned());
            // A page number typed in (no key of a neighbouring page): that page, by offset.
            let jumped = !filter.all && filter.after.is_empty() && filter.before.is_empty();
            let number = filter.page.clamp(1, pages);
            let page = QueuePage {
                before: some(&filter.before),
                after: if filter.before.is_empty() { some(&filter.after) } else { None },
                limit: size + 1,
                matching: total,
                skip: if jumped { (number - 1).saturating_mul(size) } else { 0 },
            };
            let backwards = page.before.is_some();
            let mut rows = tx.queue_rows(&q, &page)?;
            let more = rows.len() > size as usize;
            rows.truncate(size as usize);
            if backwards {
                rows.reverse();
            }
            let (has_prev, has_next) =
                if backwards { (more, true) } else { (page.after.is_some() || page.skip > 0, more) };
            Ok(CaseQueue {
                first_key: rows.first().map(|r| r.queue_key.clone()),
                last_key: rows.last().map(|r| r.queue_key.clone()),
                rows: rows
                    .into_iter()
                    .map(|r| CaseRow {
                        overdue: r.deadline_ms.is_some_and(|d| d < now_ms)
                            && matches!(r.status.as_str(), "dispatched" | "in_progress"),
                        id: r.doc_id,
                        code: r.code,
                        title: r.title,
                        status: r.status,
                        grid: r.grid_id,
                        category: r.category_id,
                        reporter: r.reporter,
                        reported_ms: r.reported_ms,
                        deadline_ms: r.deadline_ms,
                        departments: split_list(&r.departments),
                        flags: split_list(&r.flags),
                    })
                    .collect(),
                total,
                counts,
                page: filter.page.clamp(1, pages),
                pages,
                has_prev,
                has_next,
            })
        })
    }

    fn case_view(&self, user: &ConsoleUser, case_id: &str) -> Result<CaseView> {
        read(self, |tx: &dyn ReadTx| {
            if !can_see_case(tx, user, case_id)? {
                // The same answer whether the case exists or not.
                return Err(ServerError::NotInScope(format!("case {case_id} is not in your area")));
            }
            let (_, case) = load_case(tx, case_id)?;
            let (flags, received_ms) = tx.case_flags_and_received(case_id)?;
            let mut photos = vec![];
            for e in &case.evidence {
                photos.push(PhotoView {
                    sha256: e.sha256.clone(),
                    thumb_sha256: e.thumb_sha256.clone(),
                    on_server: tx.blob_held(&e.sha256)?,
                    capture_time: e.exif_time.clone(),
                    metadata: e.metadata,
                    gps_off_m: e.exif_gps_off_m,
                });
            }
            let mut signing_devices = BTreeSet::new();
            let devices: BTreeSet<&str> =
                case.timeline.entries.iter().map(|e| e.event.actor.device.0.as_str()).collect();
            for d in devices {
                if tx.device(d)?.is_some_and(|d| d.public_key.is_some()) {
                    signing_devices.insert(d.to_owned());
                }
            }
            let clock_off = tx.clock_flags_of_case(case_id)?.into_iter().collect();
            Ok(CaseView { case, flags: split_list(&flags), photos, received_ms, signing_devices, clock_off })
        })
    }

    fn act(&self, user: &ConsoleUser, case_id: &str, action: ConsoleAction, now_ms: i64) -> Result<()> {
        // One console change at a time: two from the same person's actor, built on the same
        // document, would both claim the actor's next sequence number.
        let _one_at_a_time = self.console_writes().lock().unwrap_or_else(|p| p.into_inner());
        let (doc, case) = read(self, |tx: &dyn ReadTx| {
            if !can_see_case(tx, user, case_id)? {
                return Err(ServerError::NotInScope(format!("case {case_id} is not in your area")));
            }
            load_case(tx, case_id)
        })?;
        let rules = self.rules();
        let mut doc = doc.with_actor(console_actor(rules.epoch, &user.id));
        let epoch = rules.epoch.to_owned();
        let catalog = Arc::clone(rules.places.catalog());
        let device = write(self, |tx: &dyn WriteTx| register_console_device(tx, &epoch, user, now_ms))?;
        let (kind, id) = match &action {
            ConsoleAction::Event(kind) => (Some(kind), EventId::generate()),
            ConsoleAction::Automatic { id, kind } => {
                if user.id != super::escalation::SYSTEM_USER {
                    return Err(ServerError::Forbidden("only the server's own person takes automatic steps".into()));
                }
                // Taken already (another run, another instance): nothing to write.
                if case.timeline.entries.iter().any(|e| e.event.id == *id) {
                    return Ok(());
                }
                (Some(kind), *id)
            }
            ConsoleAction::Keep(_) => (None, EventId::generate()),
        };
        match (&action, kind) {
            (_, Some(kind)) => {
                if let EventKind::Dispatch { departments, .. } = kind {
                    for d in departments {
                        if !catalog.departments.iter().any(|x| x.id == *d) {
                            return Err(ServerError::BadRequest(format!("unknown department {d}")));
                        }
                    }
                }
                let actor = user.actor();
                lifecycle::check(kind, &actor, &case.timeline.state)
                    .map_err(|r| ServerError::Forbidden(format!("{} from {}: {}", r.kind, r.from, r.reason)))?;
                let (parents, lamport) =
                    doc::next_event_position(&doc).map_err(|e| ServerError::Internal(e.to_string()))?;
                let clock = ClockStamp {
                    device_ms: now_ms,
                    since_boot_ms: 0,
                    boot_id: "server".into(),
                    server_offset_ms: Some(0),
                };
                let event = Event { id, parents, lamport, actor, clock, kind: kind.clone() };
                doc.transact::<_, _, gridwork_model::error::ModelError>(|t| doc::put_event(t, &event))
                    .map_err(|f| ServerError::BadRequest(f.error.to_string()))?;
            }
            (ConsoleAction::Keep(patch), None) => {
                if user.role == Role::DepartmentHandler {
                    return Err(ServerError::Forbidden("department handlers do not edit case fields".into()));
                }
                let written = doc
                    .transact::<_, _, gridwork_model::error::ModelError>(|t| doc::apply_patch(t, patch))
                    .map_err(|f| ServerError::BadRequest(f.error.to_string()))?
                    .result;
                if written == 0 {
                    return Err(ServerError::BadRequest("that value is already the case's only value".into()));
                }
            }
            (_, None) => return Err(ServerError::Internal("an action with nothing to write".into())),
        }
        let bytes = doc
            .get_last_local_change()
            .map(|mut c| c.bytes().into_owned())
            .ok_or_else(|| ServerError::Internal("the action wrote no change".into()))?;
        let req = SyncRequest {
            protocol: PROTOCOL_VERSION,
            app_version: "console".into(),
            doc_schema: doc::SCHEMA_VERSION,
            cursor: None,
            state: DeviceState { device_time_ms: now_ms, ..Default::default() },
            changes: vec![],
            records: vec![],
            max_pull_bytes: 0,
            want_full: vec![],
            accept_compacted: false,
        };
        let pushed = vec![Pushed::read(case_id.to_owned(), bytes, None, &mut crate::ingest::MAX_CHANGE_BYTES.clone())];
        let results = self.push(PushJob { device, req, pushed, now_ms, signatures: None })?;
        match results.first() {
            Some(r) if r.outcome == Outcome::Accepted => {
                tracing::info!(case = %case_id, "console action stored");
                Ok(())
            }
            Some(r) if r.outcome == Outcome::Quarantined => Err(ServerError::Forbidden(format!(
                "you may not change this case: {}",
                r.reason.clone().unwrap_or_default()
            ))),
            Some(r) => Err(ServerError::Internal(format!(
                "the console's change was not accepted: {}",
                r.reason.clone().unwrap_or_default()
            ))),
            None => Err(ServerError::Internal("the writer did not answer".into())),
        }
    }

    fn case_by_code(&self, user: &ConsoleUser, code: &str) -> Result<Option<String>> {
        let term = gridwork_model::search::code_term(code);
        read(self, |tx: &dyn ReadTx| {
            let query = QueueQuery {
                visible: visible_scopes(tx, user)?,
                terms: vec![gridwork_model::search::TermMatch::Exact(term)],
                ..QueueQuery::default()
            };
            let rows = tx.queue_rows(&query, &QueuePage { limit: 1, ..QueuePage::default() })?;
            Ok(rows.into_iter().next().map(|r| r.doc_id))
        })
    }

    fn overview(
        &self,
        user: &ConsoleUser,
        area: Option<super::overview::Area>,
        days: (&str, &str),
        now_ms: i64,
    ) -> Result<super::overview::Overview> {
        let catalog = Arc::clone(self.rules().places.catalog());
        super::overview::overview(self, &catalog, user, area, days, now_ms)
    }

    fn index_for_search(&self, max_changes: usize) -> Result<crate::rules::search::IndexProgress> {
        let catalog = Arc::clone(self.rules().places.catalog());
        crate::rules::search::index_some(self, &catalog, max_changes)
    }

    fn run_escalations(&self, instance: &str, now_ms: i64) -> Result<super::escalation::Ran> {
        super::escalation::run_due(self, instance, now_ms)
    }

    fn escalation_policy(&self, _user: &ConsoleUser) -> Result<super::escalation::Policy> {
        read(self, |tx: &dyn ReadTx| {
            super::escalation::Policy::from_meta(tx.meta(super::escalation::POLICY_KEY)?.as_deref())
        })
    }

    fn set_escalation_policy(&self, user: &ConsoleUser, policy: &super::escalation::Policy) -> Result<()> {
        user.must_administer()?;
        policy.validate()?;
        let catalog = Arc::clone(self.rules().places.catalog());
        if let Some(c) = policy.by_category.keys().find(|c| !catalog.categories.iter().any(|k| &k.id.0 == *c)) {
            return Err(ServerError::BadRequest(format!("unknown category {c}")));
        }
        let json = serde_json::to_string(policy).map_err(|e| ServerError::Internal(e.to_string()))?;
        write(self, |tx: &dyn WriteTx| {
            tx.set_meta(super::escalation::POLICY_KEY, &json)?;
            tx.recheck_waiting_cases()
        })
    }

    fn catalog(&self, _user: &ConsoleUser) -> Arc<Catalog> {
        Arc::clone(self.rules().places.catalog())
    }

    fn photo(&self, user: &ConsoleUser, sha256: &str) -> Result<Vec<u8>> {
        let visible = read(self, |tx: &dyn ReadTx| {
            for owner in tx.blob_owners(sha256)? {
                if let crate::store::port::BlobLinkOwner::Case(doc) = owner {
                    if can_see_case(tx, user, &doc)? {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        })?;
        if !visible {
            return Err(ServerError::NotInScope(format!("photo {sha256} belongs to nothing you can see")));
        }
        self.blobs().read(sha256)
    }

    fn bundle(&self, user: &ConsoleUser, case_id: &str, now_ms: i64) -> Result<Vec<u8>> {
        let blobs = Arc::clone(self.blobs());
        read(self, |tx: &dyn ReadTx| {
            if !can_see_case(tx, user, case_id)? {
                // The same answer as for a case that does not exist.
                return Err(ServerError::NotFound(format!("case {case_id}")));
            }
            super::bundle::export(tx, &blobs, case_id, &user.id, now_ms)
        })
    }

    fn map_pins(&self, user: &ConsoleUser, filter: &CaseFilter, limit: u32, now_ms: i64) -> Result<Vec<MapPin>> {
        read(self, |tx: &dyn ReadTx| {
            let q = queue_query(tx, user, filter, now_ms)?;
            tx.map_pins(&q, limit)
        })
    }

    fn coverage(&self, user: &ConsoleUser, day: &str) -> Result<Vec<GridCoverage>> {
        if DistrictCalendar::default().day_bounds(day).is_none() {
            return Err(ServerError::BadRequest(format!("{day:?} is not a date: use YYYY-MM-DD")));
        }
        let catalog = Arc::clone(self.rules().places.catalog());
        read(self, |tx: &dyn ReadTx| {
            let mut out = vec![];
            for g in catalog.grids.iter().filter(|g| user.sees_grid(g)) {
                let check_ins = tx.check_ins_on(&g.id.0, day)?;
                let points = g
                    .points
                    .iter()
                    .map(|p| {
                        let at =
                            check_ins.iter().filter(|c| c.point.as_deref() == Some(p.id.0.as_str())).cloned().collect();
                        (p.id.0.clone(), p.name.clone(), at)
                    })
                    .collect();
                out.push(GridCoverage { grid: g.id.0.clone(), points, check_ins });
            }
            Ok(out)
        })
    }

    fn assessment(&self, user: &ConsoleUser, from_ms: i64, to_ms: i64, now_ms: i64) -> Result<Vec<WorkerScore>> {
        let catalog = Arc::clone(self.rules().places.catalog());
        let visible: BTreeSet<String> =
            catalog.grids.iter().filter(|g| user.sees_grid(g)).map(|g| g.id.0.clone()).collect();
        read(self, |tx: &dyn ReadTx| {
            let mut out = vec![];
            for (worker, scopes) in tx.workers()? {
                let grids: Vec<String> =
                    scopes.iter().filter_map(|s| s.strip_prefix("grid:")).map(str::to_owned).collect();
                if !user.sees_everything() && !grids.iter().any(|g| visible.contains(g)) {
                    continue;
                }
                let mut score = WorkerScore { user: worker.clone(), grids, ..Default::default() };
                let reported = tx.reported_by(&worker, from_ms, to_ms)?;
                for case in &reported {
                    score.reported += 1;
                    match case.status.as_str() {
                        "rejected" => score.rejected += 1,
                        "reported" | "empty" => {}
                        _ => score.accepted += 1,
                    }
                    if case.deadline_ms.is_some_and(|d| d < now_ms)
                        && matches!(case.status.as_str(), "dispatched" | "in_progress")
                    {
                        score.overdue += 1;
                    }
                }
                score.check_ins = tx.check_in_count(&worker, from_ms, to_ms)?;
                score.clock_flags = tx.clock_flag_count(&worker, from_ms, to_ms)?;
                // Handling and visits come from the cases' events.
                let mut satisfaction = 0i64;
                for case in &reported {
                    let events: Vec<Event> =
                        tx.case_events(&case.doc_id)?.iter().filter_map(|j| serde_json::from_str(j).ok()).collect();
                    let deadline = events
                        .iter()
                        .filter_map(|e| match &e.kind {
                            EventKind::Dispatch { deadline_ms, .. } => Some((e.lamport, *deadline_ms)),
                            _ => None,
                        })
                        .max()
                        .map(|(_, d)| d);
                    let handled = events
                        .iter()
                        .filter(|e| matches!(e.kind, EventKind::HandlerReport { .. }))
                        .map(|e| e.clock.estimated_ms())
                        .max();
                    if let (Some(d), Some(h)) = (deadline, handled) {
                        if h <= d {
                            score.handled_on_time += 1;
                        } else {
                            score.handled_late += 1;
                        }
                    }
                    for e in &events {
                        if let EventKind::FollowUp { satisfaction: s, .. } = e.kind {
                            if e.actor.user.0 == worker {
                                score.follow_ups += 1;
                                satisfaction += i64::from(s);
                            }
                        }
                    }
                }
                score.satisfaction = (score.follow_ups > 0).then(|| satisfaction as f64 / score.follow_ups as f64);
                out.push(score);
            }
            Ok(out)
        })
    }

    fn devices(&self, user: &ConsoleUser, now_ms: i64) -> Result<Vec<DeviceInfo>> {
        user.must_administer()?;
        self.list_devices(now_ms)
    }

    fn enrol(&self, user: &ConsoleUser, for_user: &str, now_ms: i64) -> Result<(String, String)> {
        user.must_administer()?;
        self.enrol_device(for_user, now_ms)
    }

    fn retire(&self, user: &ConsoleUser, device: &str, now_ms: i64) -> Result<()> {
        user.must_administer()?;
        self.retire_device(device, now_ms)
    }

    fn wipe(&self, user: &ConsoleUser, device: &str, now_ms: i64) -> Result<()> {
        user.must_administer()?;
        self.wipe_device(device, now_ms)
    }

    fn revoke(&self, user: &ConsoleUser, device: &str) -> Result<()> {
        user.must_administer()?;
        self.revoke_device(device)
    }

    fn quarantine(&self, user: &ConsoleUser) -> Result<Vec<QuarantinedItem>> {
        user.must_administer()?;
        self.quarantined()
    }

    fn release(&self, user: &ConsoleUser, key: &str, now_ms: i64) -> Result<()> {
        user.must_administer()?;
        self.release_quarantined(key, now_ms)
    }

    fn reject(&self, user: &ConsoleUser, key: &str) -> Result<()> {
        user.must_administer()?;
        self.reject_quarantined(key)
    }

    fn people(&self, user: &ConsoleUser) -> Result<Vec<PersonView>> {
        user.must_administer()?;
        read(self, |tx: &dyn ReadTx| {
            let mut out = vec![];
            for p in tx.people()? {
                let scopes = tx.granted_scopes(&p.id)?.into_iter().collect();
                let role = stored_role(&p.role)?;
                out.push(PersonView { id: p.id, role, department: p.department, scopes, has_password: p.has_password });
            }
            Ok(out)
        })
    }

    fn set_person(&self, user: &ConsoleUser, person: &PersonView) -> Result<()> {
        user.must_administer()?;
        if person.id.trim().is_empty() || person.id.len() > 64 || person.id.contains(char::is_whitespace) {
            return Err(ServerError::BadRequest("a user id is 1 to 64 characters without spaces".into()));
        }
        let scopes = person
            .scopes
            .iter()
            .map(|s| Scope::parse(s).map_err(|e| ServerError::BadRequest(e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        self.set_user(&person.id, person.role, person.department.as_deref(), &scopes)
    }

    fn ca_fingerprint(&self) -> Option<String> {
        let files = self.tls_files()?;
        files.exists().then(|| files.ca_fingerprint().ok()).flatten()
    }

    fn set_catalog(&self, user: &ConsoleUser, catalog: &Catalog) -> Result<u64> {
        user.must_administer()?;
        self.import_catalog(catalog)
    }
}
