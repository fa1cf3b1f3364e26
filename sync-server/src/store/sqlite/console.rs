//! [`ConsoleStore`] for the embedded SQLite store.
//!
//! A console action is written the way a phone writes one: the case's document is loaded from
//! its stored changes, the lifecycle's role table is checked against it, the event is put with the
//! person's own actor, and the resulting change goes through the same writer and checks as a
//! device's push (attribution, sequence number, scopes). The person's actor is derived from their
//! user id and registered to a console pseudo-device `console-<user>` that has no token, so every
//! change stays attributable and nothing can sync as it.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use automerge::{ActorId, Automerge};
use gridwork_model::doc::{self, read_case, CaseDoc};
use gridwork_model::ids::EventId;
use gridwork_model::lifecycle::{self, Event, EventKind};
use gridwork_model::time::{ClockStamp, DistrictCalendar};
use gridwork_model::wire::{DeviceState, Outcome, SyncRequest, PROTOCOL_VERSION};

use super::*;
use crate::ingest::read_change;
use crate::rules::push::Pushed;
use crate::store::console::{
    departments_column, queue_key, CaseFilter, CaseQueue, CaseRow, CaseView, CheckInView, ConsoleAction, ConsoleStore,
    ConsoleUser, GridCoverage, MapPin, PersonView, PhotoView, Session, WorkerScore, LOCKOUT_MS, MAX_EXPORT,
    MAX_FAILED_SIGN_INS, SESSION_MS,
};
use crate::store::AdminStore;
use gridwork_model::access::Scope;

/// Rows per queue page.
pub const PAGE_SIZE: u32 = 50;

/// Fills the console's case columns of schema 4 from the changes already stored (run once, by
/// the migration).
pub(super) fn fill_case_columns(tx: &Transaction<'_>) -> Result<()> {
    let docs: Vec<String> =
        tx.prepare("SELECT doc_id FROM docs")?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    for doc_id in docs {
        let changes: Vec<Vec<u8>> = tx
            .prepare_cached("SELECT bytes FROM changes WHERE doc_id = ?1 ORDER BY seq")?
            .query_map([&doc_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for bytes in changes {
            let Ok((_, facts)) = read_change(&bytes) else { continue };
            for (k, v) in &facts.root_puts {
                let column = match k.as_str() {
                    keys::TITLE => "title",
                    keys::CODE => "code",
                    keys::REPORTER => "reporter",
                    keys::LOCATION => {
                        set_location(tx, &doc_id, v)?;
                        continue;
                    }
                    _ => continue,
                };
                exec(tx, &format!("UPDATE docs SET {column} = ?2 WHERE doc_id = ?1"), params![doc_id, v])?;
            }
        }
        let events: Vec<Event> = tx
            .prepare_cached("SELECT json FROM doc_events WHERE doc_id = ?1")?
            .query_map([&doc_id], |r| r.get::<_, String>(0))?
            .filter_map(|j| j.ok().and_then(|j| serde_json::from_str(&j).ok()))
            .collect();
        let reported = events.iter().find(|e| matches!(e.kind, EventKind::Report)).map(|e| e.clock.estimated_ms());
        let state = lifecycle::fold(events).state;
        exec(
            tx,
            "UPDATE docs SET reported_ms = ?2, departments = ?3 WHERE doc_id = ?1",
            params![doc_id, reported, departments_column(state.dispatched.keys().map(|d| d.0.as_str()))],
        )?;
        refresh_queue_key(tx, &doc_id)?;
    }
    exec(tx, "UPDATE membership SET status = (SELECT d.status FROM docs d WHERE d.doc_id = membership.doc_id)", [])?;
    let records: Vec<(String, String, String)> = tx
        .prepare("SELECT id, device_id, body FROM records")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, device, body) in records {
        super::records::file_check_in_before_7(tx, &id, &device, &body)?;
    }
    Ok(())
}

/// The case's position for the map, from a `location` put (JSON of a `Location`); used by the
/// schema 4 backfill (the sync path writes it with the rest of the case in `refresh_doc`).
fn set_location(tx: &Connection, doc_id: &str, json: &str) -> Result<()> {
    if let Ok(loc) = serde_json::from_str::<Location>(json) {
        exec(tx, "UPDATE docs SET lat = ?2, lon = ?3 WHERE doc_id = ?1", params![doc_id, loc.lat, loc.lon])?;
    }
    Ok(())
}

/// Recomputes a case's queue key from its stored deadline and report time.
fn refresh_queue_key(tx: &Connection, doc_id: &str) -> Result<()> {
    let (deadline, reported): (Option<i64>, Option<i64>) =
        q1(tx, "SELECT deadline_ms, reported_ms FROM docs WHERE doc_id = ?1", [doc_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    exec(
        tx,
        "UPDATE docs SET queue_key = ?2 WHERE doc_id = ?1",
        params![doc_id, queue_key(deadline, reported, doc_id)],
    )?;
    Ok(())
}

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
/// action: their console changes are attributed to it like a phone's to its device.
fn register_console_device(conn: &Connection, epoch: &str, user: &ConsoleUser, now_ms: i64) -> Result<Device> {
    let id = user.console_device_id();
    exec(
        conn,
        "INSERT INTO devices (id, code, user_id, status, created_ms) VALUES (?1, ?2, ?3, 'active', ?4)
         ON CONFLICT (id) DO NOTHING",
        params![id, format!("console:{}", user.id), user.id, now_ms],
    )?;
    exec(
        conn,
        "INSERT INTO actors (actor, device_id, first_seen_ms) VALUES (?1, ?2, ?3) ON CONFLICT (actor) DO NOTHING",
        params![console_actor(epoch, &user.id).to_hex_string(), id, now_ms],
    )?;
    Ok(Device {
        id,
        user: user.id.clone(),
        role: user.role,
        department: user.department.clone(),
        retired: false,
        district: None,
    })
}

/// The console device `device_id` names (`console-USER`), made again if the store lost it (a
/// restore from a backup taken before the person's first console action); None when it names no
/// console user.
pub(super) fn console_device_again(
    conn: &Connection,
    epoch: &str,
    device_id: &str,
    now_ms: i64,
) -> Result<Option<Device>> {
    let Some(user_id) = device_id.strip_prefix("console-") else { return Ok(None) };
    let user: Option<(String, Option<String>)> =
        q1(conn, "SELECT role, department FROM users WHERE id = ?1 AND role != 'worker'", [user_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((role, department)) = user else { return Ok(None) };
    let user = ConsoleUser::new(user_id.to_owned(), parse_role(&role)?, department, vec![]);
    register_console_device(conn, epoch, &user, now_ms).map(Some)
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

/// The WHERE clauses of a queue filter within a person's area, with and without its status
/// (the counts per status ignore it), and their arguments.
struct FilterSql {
    /// Only the person's area limits the cases (no other filter but the status): counts per
    /// status can come from the membership rows alone. The area's arguments are the first ones.
    area_only: Option<usize>,
    without_status: String,
    with_status: String,
    args: Vec<Box<dyn rusqlite::ToSql>>,
    args_without_status: usize,
    /// `with_status` with the area tests written as per-row lookups: a page walks the queue's
    /// order and stops after a page of matches, where the `IN` form would first collect every
    /// case of the area (right for counting them, wrong for 50 rows).
    per_row: String,
}

/// The membership scopes an area filter stands for: a community or street is the grids placed in
/// it now (schema 6); a grid, a department or a person is itself.
fn area_scopes(conn: &Connection, area: &str) -> Result<Vec<String>> {
    if !(area.starts_with("community:") || area.starts_with("street:")) {
        return Ok(vec![area.to_owned()]);
    }
    Ok(conn
        .prepare_cached("SELECT 'grid:' || grid_id FROM grid_placements WHERE scope = ?1 AND to_seq IS NULL")?
        .query_map([area], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

fn filter_sql(conn: &Connection, user: &ConsoleUser, filter: &CaseFilter, now_ms: i64) -> Result<FilterSql> {
    let calendar = DistrictCalendar::default();
    // A document whose report has not arrived yet (status "empty") is not a case to list.
    let mut clauses = vec!["d.status != 'empty'".to_owned()];
    // (IN form, per-row form) of the area tests, substituted into `per_row` below.
    let mut area_forms: Vec<(String, String)> = vec![];
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![];
    let arg = |v: Box<dyn rusqlite::ToSql>, args: &mut Vec<Box<dyn rusqlite::ToSql>>| {
        args.push(v);
        format!("?{}", args.len())
    };
    let visible = SqliteStore::visible_scopes(conn, user)?;
    if let Some(scopes) = visible.clone() {
        let marks: Vec<String> = scopes.into_iter().map(|s| arg(Box::new(s), &mut args)).collect();
        // Driven from the membership index: a community's cases, not every case checked.
        let marks = marks.join(",");
        let in_form = format!("d.doc_id IN (SELECT m.doc_id FROM membership m WHERE m.scope IN ({marks}))");
        let per_row = format!("EXISTS (SELECT 1 FROM membership m WHERE m.doc_id = d.doc_id AND m.scope IN ({marks}))");
        clauses.push(in_form.clone());
        area_forms.push((in_form, per_row));
    }
    if !filter.area.is_empty() {
        let marks: Vec<String> =
            area_scopes(conn, &filter.area)?.into_iter().map(|s| arg(Box::new(s), &mut args)).collect();
        let marks = marks.join(",");
        let in_form = format!("d.doc_id IN (SELECT m2.doc_id FROM membership m2 WHERE m2.scope IN ({marks}))");
        let per_row =
            format!("EXISTS (SELECT 1 FROM membership m2 WHERE m2.doc_id = d.doc_id AND m2.scope IN ({marks}))");
        clauses.push(in_form.clone());
        area_forms.push((in_form, per_row));
    }
    if !filter.category.is_empty() {
        let a = arg(Box::new(filter.category.clone()), &mut args);
        clauses.push(format!("d.category_id = {a}"));
    }
    if !filter.department.is_empty() {
        let a = arg(Box::new(format!("%,{},%", filter.department)), &mut args);
        clauses.push(format!("d.departments LIKE {a}"));
    }
    if filter.overdue == "1" {
        // A deadline before now, as a queue key range (keys start with the deadline): the
        // (status, queue_key) index answers it without reading a case.
        let a = arg(Box::new(queue_key(Some(now_ms), Some(i64::MAX), "")), &mut args);
        clauses.push(format!("d.status IN ('dispatched', 'in_progress') AND d.queue_key < {a}"));
    }
    for (day, start) in [(&filter.from, true), (&filter.to, false)] {
        if day.is_empty() {
            continue;
        }
        let (s, e) = calendar
            .day_bounds(day)
            .ok_or_else(|| ServerError::BadRequest(format!("{day:?} is not a date: use YYYY-MM-DD")))?;
        let a = arg(Box::new(if start { s } else { e }), &mut args);
        clauses.push(if start { format!("d.reported_ms >= {a}") } else { format!("d.reported_ms < {a}") });
    }
    let without_status = clauses.join(" AND ");
    let args_without_status = args.len();
    if !filter.status.is_empty() {
        let a = arg(Box::new(filter.status.clone()), &mut args);
        clauses.push(format!("d.status = {a}"));
    }
    let area_only = match visible {
        Some(scopes)
            if filter.area.is_empty()
                && filter.category.is_empty()
                && filter.department.is_empty()
                && filter.overdue != "1"
                && filter.from.is_empty()
                && filter.to.is_empty() =>
        {
            Some(scopes.len())
        }
        _ => None,
    };
    let with_status = clauses.join(" AND ");
    let mut per_row = with_status.clone();
    for (in_form, row_form) in area_forms {
        per_row = per_row.replace(&in_form, &row_form);
    }
    Ok(FilterSql { area_only, without_status, with_status, args, args_without_status, per_row })
}

impl SqliteStore {
    fn console_user(conn: &Connection, user: &str) -> Result<ConsoleUser> {
        let (role, department): (String, Option<String>) =
            q1(conn, "SELECT role, department FROM users WHERE id = ?1", [user], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .ok_or(ServerError::Unauthenticated)?;
        let scopes: Vec<String> = conn
            .prepare_cached("SELECT scope FROM user_scopes WHERE user_id = ?1 ORDER BY scope")?
            .query_map([user], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ConsoleUser::new(user.to_owned(), parse_role(&role)?, department, scopes))
    }

    /// The scopes a console person's queue and actions are limited to (None: everything), with
    /// their communities and streets read as the grids placed in them.
    fn visible_scopes(conn: &Connection, user: &ConsoleUser) -> Result<Option<Vec<String>>> {
        if user.sees_everything() {
            return Ok(None);
        }
        let mut scopes: Vec<String> = conn
            .prepare_cached("SELECT DISTINCT scope FROM user_areas WHERE user_id = ?1")?
            .query_map([&user.id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        scopes.push(format!("user:{}", user.id));
        Ok(Some(scopes))
    }

    fn can_see_case(conn: &Connection, user: &ConsoleUser, case_id: &str) -> Result<bool> {
        let exists =
            q1(conn, "SELECT 1 FROM docs WHERE doc_id = ?1 AND title IS NOT NULL", [case_id], |_| Ok(())).optional()?;
        if exists.is_none() {
            return Ok(false);
        }
        let Some(scopes) = Self::visible_scopes(conn, user)? else { return Ok(true) };
        let joined: Vec<String> = conn
            .prepare_cached("SELECT scope FROM membership WHERE doc_id = ?1")?
            .query_map([case_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for s in &joined {
            if scopes.contains(s) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A stored case, loaded and read. A document the server cannot read (whatever slipped past
    /// ingest, or a store damaged on disk) is `DamagedDocument`, naming the devices that sent it:
    /// the console shows it as damaged instead of failing.
    fn load_case(conn: &Connection, case_id: &str) -> Result<(Automerge, CaseDoc)> {
        let changes: Vec<automerge::Change> = conn
            .prepare_cached("SELECT bytes FROM changes WHERE doc_id = ?1 ORDER BY seq")?
            .query_map([case_id], |r| r.get::<_, Vec<u8>>(0))?
            .filter_map(|b| b.ok().and_then(|b| automerge::Change::from_bytes(b).ok()))
            .collect();
        // Fenced: a history Automerge panics on is a damaged case, not a failed page.
        let read = gridwork_model::fence::fenced(move || {
            let mut doc = Automerge::new();
            doc.apply_changes(changes).map_err(|e| e.to_string())?;
            let case = read_case(&doc).map_err(|e| e.to_string())?;
            Ok::<_, String>((doc, case))
        })
        .and_then(|r| r);
        match read {
            Ok(loaded) => Ok(loaded),
            Err(reason) => {
                let senders: Vec<String> = conn
                    .prepare_cached("SELECT DISTINCT device_id FROM changes WHERE doc_id = ?1 ORDER BY device_id")?
                    .query_map([case_id], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                Err(ServerError::DamagedDocument { case_id: case_id.to_owned(), senders: senders.join(", "), reason })
            }
        }
    }

    /// The console pseudo-device of `user`, registered on first use.
    fn console_device(&self, user: &ConsoleUser, now_ms: i64) -> Result<Device> {
        register_console_device(&self.conn(), &self.epoch, user, now_ms)
    }
}

impl ConsoleStore for SqliteStore {
    fn sign_in(&self, user: &str, password: &str, now_ms: i64) -> Result<(String, Session)> {
        let account: Option<(String, i64, i64)> = {
            let conn = self.conn();
            q1(
                &conn,
                "SELECT a.password_hash, a.failed_attempts, a.locked_until_ms FROM console_accounts a
                 JOIN users u ON u.id = a.user_id WHERE a.user_id = ?1 AND u.role != 'worker'",
                [user],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
        };
        let Some((stored, failed, locked_until)) = account else {
            let _ = password_matches(password, decoy_hash());
            return Err(ServerError::BadCredentials);
        };
        if locked_until > now_ms {
            return Err(ServerError::AccountLocked { minutes: (locked_until - now_ms + 59_999) / 60_000 });
        }
        // Hashing takes tens of milliseconds by design; the writer is not held meanwhile.
        if !password_matches(password, &stored) {
            let failed = failed + 1;
            let locked = if failed >= MAX_FAILED_SIGN_INS { now_ms + LOCKOUT_MS } else { 0 };
            exec(
                &self.conn(),
                "UPDATE console_accounts SET failed_attempts = ?2, locked_until_ms = ?3 WHERE user_id = ?1",
                params![user, if locked > 0 { 0 } else { failed }, locked],
            )?;
            tracing::warn!(failed, locked = locked > 0, "console sign-in refused");
            return Err(if locked > 0 {
                ServerError::AccountLocked { minutes: LOCKOUT_MS / 60_000 }
            } else {
                ServerError::BadCredentials
            });
        }
        let token = random_hex(32)?;
        let csrf = random_hex(16)?;
        let conn = self.conn();
        exec(&conn, "UPDATE console_accounts SET failed_attempts = 0, locked_until_ms = 0 WHERE user_id = ?1", [user])?;
        exec(&conn, "DELETE FROM console_sessions WHERE expires_ms < ?1", [now_ms])?;
        exec(
            &conn,
            "INSERT INTO console_sessions (token_hash, user_id, csrf, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![sha256_hex(&token), user, csrf, now_ms, now_ms + SESSION_MS],
        )?;
        let user = Self::console_user(&conn, user)?;
        Ok((token, Session { user, csrf }))
    }

    fn session(&self, token: &str, now_ms: i64) -> Result<Session> {
        let reader = self.reader()?;
        let found: Option<(String, String)> = q1(
            &reader,
            "SELECT user_id, csrf FROM console_sessions WHERE token_hash = ?1 AND expires_ms > ?2",
            params![sha256_hex(token), now_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
        let result = match found {
            Some((user, csrf)) => Self::console_user(&reader, &user).map(|user| Session { user, csrf }),
            None => Err(ServerError::Unauthenticated),
        };
        self.give_back(reader);
        result
    }

    fn sign_out(&self, token: &str) -> Result<()> {
        exec(&self.conn(), "DELETE FROM console_sessions WHERE token_hash = ?1", [sha256_hex(token)])?;
        Ok(())
    }

    fn set_password(&self, user: &str, password: &str, now_ms: i64) -> Result<()> {
        if password.chars().count() < 10 {
            return Err(ServerError::BadRequest("a console password needs at least 10 characters".into()));
        }
        let role: Option<String> =
            q1(&self.conn(), "SELECT role FROM users WHERE id = ?1", [user], |r| r.get(0)).optional()?;
        match role.as_deref() {
            None => return Err(ServerError::NotFound(format!("user {user}: add them with `admin set-user` first"))),
            Some("worker") => {
                return Err(ServerError::BadRequest(format!(
                    "{user} is a worker: the console is for supervisors, department handlers and administrators"
                )))
            }
            Some(_) => {}
        }
        let hash = hash_password(password)?;
        exec(
            &self.conn(),
            "INSERT INTO console_accounts (user_id, password_hash, failed_attempts, locked_until_ms, updated_ms)
             VALUES (?1, ?2, 0, 0, ?3)
             ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, failed_attempts = 0,
                locked_until_ms = 0, updated_ms = excluded.updated_ms",
            params![user, hash, now_ms],
        )?;
        // The person's console actor is registered to their console device now, before their
        // first action: a phone that pushed a change with that (derivable) actor first would
        // otherwise own it, and every console action would be quarantined.
        let person = Self::console_user(&self.conn(), user)?;
        self.console_device(&person, now_ms)?;
        Ok(())
    }

    fn case_queue(&self, user: &ConsoleUser, filter: &CaseFilter, now_ms: i64) -> Result<CaseQueue> {
        let reader = self.reader()?;
        let FilterSql { area_only, without_status, with_status, mut args, args_without_status, per_row } =
            filter_sql(&reader, user, filter, now_ms)?;
        let size = if filter.all { MAX_EXPORT } else { PAGE_SIZE };
        let result = (|| -> Result<CaseQueue> {
            let counts: Vec<(String, i64)> = match area_only {
                // A case in two of the person's scopes (their community, and assigned to them)
                // has a row in each: counted once.
                Some(n) => reader
                    .prepare(&format!(
                        "SELECT m.status, count(DISTINCT m.doc_id) FROM membership m
                         WHERE m.scope IN ({}) AND m.status != 'empty' GROUP BY m.status ORDER BY m.status",
                        (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(",")
                    ))?
                    .query_map(rusqlite::params_from_iter(args[..n].iter().map(|b| b.as_ref())), |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?,
                None => reader
                    .prepare(&format!(
                        "SELECT d.status, count(*) FROM docs d WHERE {without_status} GROUP BY d.status ORDER BY d.status"
                    ))?
                    .query_map(
                        rusqlite::params_from_iter(args[..args_without_status].iter().map(|b| b.as_ref())),
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?
                    .collect::<rusqlite::Result<_>>()?,
            };
            let total: i64 = if filter.status.is_empty() {
                counts.iter().map(|(_, n)| n).sum()
            } else {
                counts.iter().filter(|(s, _)| *s == filter.status).map(|(_, n)| n).sum()
            };
            let pages = u32::try_from((total + i64::from(size) - 1) / i64::from(size)).unwrap_or(1).max(1);
            // Two ways to a page, chosen by how many cases match (known from the counts): walk
            // the queue order (of the district, or of one status) testing each case until a
            // page is full, or collect the matching cases and sort them. Collecting a few
            // thousand costs a few milliseconds; walking costs PAGE_SIZE divided by how dense
            // the matches are, which is low once there are many.
            let walk = !filter.all && total > i64::from(PAGE_SIZE) * 100;
            let base = if walk { per_row.as_str() } else { with_status.as_str() };
            // Keyset paging: a page starts after the last key of the one before (or ends before
            // the first key of the one after), found by one index seek however deep it is.
            let (condition, order, backwards) = if filter.all {
                (base.to_owned(), "ASC", false)
            } else if !filter.before.is_empty() {
                args.push(Box::new(filter.before.clone()));
                (format!("{base} AND d.queue_key < ?{}", args.len()), "DESC", true)
            } else if !filter.after.is_empty() {
                args.push(Box::new(filter.after.clone()));
                (format!("{base} AND d.queue_key > ?{}", args.len()), "ASC", false)
            } else {
                (base.to_owned(), "ASC", false)
            };
            let mut rows: Vec<(CaseRow, String)> = reader
                .prepare(&format!(
                    "SELECT d.doc_id, coalesce(d.code, ''), d.title, d.status, coalesce(d.grid_id, ''),
                            coalesce(d.category_id, ''), coalesce(d.reporter, ''), d.reported_ms, d.deadline_ms,
                            d.departments, d.flags, coalesce(d.queue_key, '')
                     FROM docs d WHERE {condition}
                     ORDER BY d.queue_key {order} LIMIT {}",
                    size + 1
                ))?
                .query_map(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())), |r| {
                    let status: String = r.get(3)?;
                    let deadline_ms: Option<i64> = r.get(8)?;
                    Ok((
                        CaseRow {
                            id: r.get(0)?,
                            code: r.get(1)?,
                            title: r.get(2)?,
                            overdue: deadline_ms.is_some_and(|d| d < now_ms)
                                && matches!(status.as_str(), "dispatched" | "in_progress"),
                            status,
                            grid: r.get(4)?,
                            category: r.get(5)?,
                            reporter: r.get(6)?,
                            reported_ms: r.get(7)?,
                            deadline_ms,
                            departments: r
                                .get::<_, String>(9)?
                                .split(',')
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned)
                                .collect(),
                            flags: r
                                .get::<_, String>(10)?
                                .split(',')
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned)
                                .collect(),
                        },
                        r.get(11)?,
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let more = rows.len() > size as usize;
            rows.truncate(size as usize);
            if backwards {
                rows.reverse();
            }
            let (has_prev, has_next) = if backwards { (more, true) } else { (!filter.after.is_empty(), more) };
            Ok(CaseQueue {
                first_key: rows.first().map(|(_, k)| k.clone()),
                last_key: rows.last().map(|(_, k)| k.clone()),
                rows: rows.into_iter().map(|(r, _)| r).collect(),
                total,
                counts,
                page: filter.page.clamp(1, pages),
                pages,
                has_prev,
                has_next,
            })
        })();
        self.give_back(reader);
        result
    }

    fn case_view(&self, user: &ConsoleUser, case_id: &str) -> Result<CaseView> {
        let reader = self.reader()?;
        let result = (|| -> Result<CaseView> {
            if !Self::can_see_case(&reader, user, case_id)? {
                // The same answer whether the case exists or not.
                return Err(ServerError::NotInScope(format!("case {case_id} is not in your area")));
            }
            let (_, case) = Self::load_case(&reader, case_id)?;
            let flags: String = q1(&reader, "SELECT flags FROM docs WHERE doc_id = ?1", [case_id], |r| r.get(0))?;
            let received_ms: Option<i64> =
                q1(&reader, "SELECT min(received_ms) FROM changes WHERE doc_id = ?1", [case_id], |r| r.get(0))?;
            let mut photos = vec![];
            let mut held = reader.prepare_cached("SELECT 1 FROM blobs WHERE sha256 = ?1")?;
            for e in &case.evidence {
                photos.push(PhotoView {
                    sha256: e.sha256.clone(),
                    thumb_sha256: e.thumb_sha256.clone(),
                    on_server: held.exists([&e.sha256])?,
                });
            }
            Ok(CaseView {
                case,
                flags: flags.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
                photos,
                received_ms,
            })
        })();
        self.give_back(reader);
        result
    }

    fn act(&self, user: &ConsoleUser, case_id: &str, action: ConsoleAction, now_ms: i64) -> Result<()> {
        // One console change at a time: two from the same person's actor, built on the same
        // document, would both claim the actor's next sequence number.
        let _one_at_a_time = self.console_writes.lock().unwrap_or_else(|p| p.into_inner());
        let reader = self.reader()?;
        let loaded = (|| -> Result<(Automerge, CaseDoc)> {
            if !Self::can_see_case(&reader, user, case_id)? {
                return Err(ServerError::NotInScope(format!("case {case_id} is not in your area")));
            }
            Self::load_case(&reader, case_id)
        })();
        self.give_back(reader);
        let (doc, case) = loaded?;
        let mut doc = doc.with_actor(console_actor(&self.epoch, &user.id));
        let device = self.console_device(user, now_ms)?;
        let catalog = self.catalog();
        match &action {
            ConsoleAction::Event(kind) => {
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
                let event = Event { id: EventId::generate(), parents, lamport, actor, clock, kind: kind.clone() };
                doc.transact::<_, _, gridwork_model::error::ModelError>(|t| doc::put_event(t, &event))
                    .map_err(|f| ServerError::BadRequest(f.error.to_string()))?;
            }
            ConsoleAction::Keep(patch) => {
                if user.role == gridwork_model::catalog::Role::DepartmentHandler {
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
        let results = self.write_push(PushJob { device, req, pushed, now_ms })?;
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

    fn catalog(&self, _user: &ConsoleUser) -> Arc<Catalog> {
        SqliteStore::catalog(self)
    }

    fn map_pins(&self, user: &ConsoleUser, filter: &CaseFilter, limit: u32, now_ms: i64) -> Result<Vec<MapPin>> {
        let reader = self.reader()?;
        let FilterSql { with_status, args, .. } = filter_sql(&reader, user, filter, now_ms)?;
        let pins = reader
            .prepare(&format!(
                "SELECT d.doc_id, coalesce(d.code, ''), d.status, d.lat, d.lon FROM docs d
                 WHERE {with_status} AND d.lat IS NOT NULL
                 ORDER BY d.status IN ('closed', 'rejected'), d.reported_ms DESC LIMIT {limit}"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())), |r| {
                    Ok(MapPin { id: r.get(0)?, code: r.get(1)?, status: r.get(2)?, lat: r.get(3)?, lon: r.get(4)? })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            });
        self.give_back(reader);
        Ok(pins?)
    }

    fn coverage(&self, user: &ConsoleUser, day: &str) -> Result<Vec<GridCoverage>> {
        if DistrictCalendar::default().day_bounds(day).is_none() {
            return Err(ServerError::BadRequest(format!("{day:?} is not a date: use YYYY-MM-DD")));
        }
        let catalog = SqliteStore::catalog(self);
        let reader = self.reader()?;
        let result = (|| -> Result<Vec<GridCoverage>> {
            let mut out = vec![];
            let mut stmt = reader.prepare_cached(
                "SELECT user_id, at_ms, point_id, inside_grid, distance_m FROM check_ins
                 WHERE grid_id = ?1 AND day = ?2 ORDER BY at_ms",
            )?;
            for g in catalog.grids.iter().filter(|g| user.sees_grid(g)) {
                let check_ins: Vec<CheckInView> = stmt
                    .query_map(params![g.id.0, day], |r| {
                        Ok(CheckInView {
                            user: r.get(0)?,
                            at_ms: r.get(1)?,
                            point: r.get(2)?,
                            inside_grid: r.get(3)?,
                            distance_m: r.get(4)?,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                let points = g
                    .points
                    .iter()
                    .map(|p| {
                        let at: Vec<CheckInView> =
                            check_ins.iter().filter(|c| c.point.as_deref() == Some(p.id.0.as_str())).cloned().collect();
                        (p.id.0.clone(), p.name.clone(), at)
                    })
                    .collect();
                out.push(GridCoverage { grid: g.id.0.clone(), points, check_ins });
            }
            Ok(out)
        })();
        self.give_back(reader);
        result
    }

    fn assessment(&self, user: &ConsoleUser, from_ms: i64, to_ms: i64, now_ms: i64) -> Result<Vec<WorkerScore>> {
        let catalog = SqliteStore::catalog(self);
        let visible: BTreeSet<String> =
            catalog.grids.iter().filter(|g| user.sees_grid(g)).map(|g| g.id.0.clone()).collect();
        let reader = self.reader()?;
        let result = (|| -> Result<Vec<WorkerScore>> {
            let workers: Vec<(String, String)> = reader
                .prepare(
                    "SELECT u.id, coalesce(group_concat(s.scope), '') FROM users u
                     LEFT JOIN user_scopes s ON s.user_id = u.id WHERE u.role = 'worker' GROUP BY u.id ORDER BY u.id",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut out = vec![];
            for (worker, scopes) in workers {
                let grids: Vec<String> =
                    scopes.split(',').filter_map(|s| s.strip_prefix("grid:")).map(str::to_owned).collect();
                if !user.sees_everything() && !grids.iter().any(|g| visible.contains(g)) {
                    continue;
                }
                let mut score = WorkerScore { user: worker.clone(), grids, ..Default::default() };
                let by_status: Vec<(String, i64)> = reader
                    .prepare_cached(
                        "SELECT status, count(*) FROM docs WHERE reporter = ?1 AND reported_ms >= ?2 AND reported_ms < ?3
                         GROUP BY status",
                    )?
                    .query_map(params![worker, from_ms, to_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                for (status, n) in by_status {
                    score.reported += n;
                    match status.as_str() {
                        "rejected" => score.rejected += n,
                        "reported" | "empty" => {}
                        _ => score.accepted += n,
                    }
                }
                score.overdue = reader
                    .prepare_cached(
                        "SELECT count(*) FROM docs WHERE reporter = ?1 AND reported_ms >= ?2 AND reported_ms < ?3
                         AND deadline_ms < ?4 AND status IN ('dispatched', 'in_progress')",
                    )?
                    .query_row(params![worker, from_ms, to_ms, now_ms], |r| r.get(0))?;
                score.check_ins = reader
                    .prepare_cached("SELECT count(*) FROM check_ins WHERE user_id = ?1 AND at_ms >= ?2 AND at_ms < ?3")?
                    .query_row(params![worker, from_ms, to_ms], |r| r.get(0))?;
                // Handling and visits come from the cases' events.
                let docs: Vec<String> = reader
                    .prepare_cached(
                        "SELECT doc_id FROM docs WHERE reporter = ?1 AND reported_ms >= ?2 AND reported_ms < ?3",
                    )?
                    .query_map(params![worker, from_ms, to_ms], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut satisfaction = 0i64;
                for doc in docs {
                    let events: Vec<Event> = reader
                        .prepare_cached("SELECT json FROM doc_events WHERE doc_id = ?1")?
                        .query_map([&doc], |r| r.get::<_, String>(0))?
                        .filter_map(|j| j.ok().and_then(|j| serde_json::from_str(&j).ok()))
                        .collect();
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
        })();
        self.give_back(reader);
        result
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
        let conn = self.conn();
        let rows: Vec<(String, String, Option<String>, bool)> = conn
            .prepare(
                "SELECT u.id, u.role, u.department, EXISTS (SELECT 1 FROM console_accounts a WHERE a.user_id = u.id)
                 FROM users u ORDER BY u.role, u.id",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = vec![];
        for (id, role, department, has_password) in rows {
            let scopes: Vec<String> = conn
                .prepare_cached("SELECT scope FROM user_scopes WHERE user_id = ?1 ORDER BY scope")?
                .query_map([&id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            out.push(PersonView { id, role: parse_role(&role)?, department, scopes, has_password });
        }
        Ok(out)
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
        let files = crate::tls::TlsFiles::in_data_dir(self.path.parent()?);
        files.exists().then(|| files.ca_fingerprint().ok()).flatten()
    }

    fn set_catalog(&self, user: &ConsoleUser, catalog: &Catalog) -> Result<u64> {
        user.must_administer()?;
        self.import_catalog(catalog)
    }

    fn photo(&self, user: &ConsoleUser, sha256: &str) -> Result<Vec<u8>> {
        let reader = self.reader()?;
        let owners: rusqlite::Result<Vec<String>> = reader
            .prepare_cached("SELECT owner_id FROM blob_links WHERE sha256 = ?1 AND owner_kind = 'case'")
            .and_then(|mut s| s.query_map([sha256], |r| r.get(0))?.collect());
        let visible = match owners {
            Ok(owners) => {
                let mut any = false;
                for o in owners {
                    if Self::can_see_case(&reader, user, &o)? {
                        any = true;
                        break;
                    }
                }
                any
            }
            Err(e) => {
                self.give_back(reader);
                return Err(e.into());
            }
        };
        self.give_back(reader);
        if !visible {
            return Err(ServerError::NotInScope(format!("photo {sha256} belongs to nothing you can see")));
        }
        self.blobs.read(sha256)
    }
}
