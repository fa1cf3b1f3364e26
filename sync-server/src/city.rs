//! A city of districts (ADR 22): one deployment serves every district of a city.
//!
//! Each district is a store of its own: with the embedded store the directory
//! `DATA_DIR/districts/ID/` (its database, its blobs), on PostgreSQL the schema `district_ID` of
//! the one database (its blobs in the same directory). The deployment's own store — the data
//! directory itself, or the database's `public` schema — is the city centre's: its people,
//! and a single district's deployment as it always was.
//!
//! Every row of a district lives in that district's store, so nothing a district's phones or
//! people do can reach another's rows, and one district's storm takes another's writer or
//! sequence lock never. [`City`] routes each request to one store by what the request carries:
//! a device token or console session a district's store made is handed out as `ID.TOKEN`, an
//! enrolment code as `ID.CODE`, and a console sign-in names `user@ID`. The district's store then
//! applies its own rules, which know no other district. A prefix naming no district, or a
//! token made by another district's store, is refused like any unknown token.
//!
//! City-level people are the city centre's administrators: in the console they may look at any
//! district (the one they chose is [`ConsoleUser::district`]) and change none — actions on a
//! district's cases are its own people's, attributed in its own store. The command line acts
//! on one district at a time (`--district`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gridwork_model::catalog::{Catalog, Role};
use gridwork_model::wire::{BlobOwner, BlobStatus, EnrolRequest, EnrolResponse, SyncRequest, SyncResponse};

use crate::blobs::{Begun, Writer};
use crate::error::{Result, ServerError};
use crate::store::console::{
    CaseFilter, CaseQueue, CaseView, ConsoleAction, ConsoleStore, ConsoleUser, GridCoverage, MapPin, PersonView,
    Session, WorkerScore,
};
use crate::store::{AdminStore, Device, DeviceInfo, OperatorStats, PgStore, QuarantinedItem, SqliteStore, SyncStore};

/// Where a deployment's districts live under its data directory.
pub const DISTRICTS_DIR: &str = "districts";

/// A district's name in a city: 1–32 of `a-z`, `0-9` and `-`, not starting or ending with `-`.
/// It never holds `.` or `@`, which separate it from a token or a person's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DistrictId(String);

impl DistrictId {
    pub fn parse(text: &str) -> Result<DistrictId> {
        let ok = (1..=32).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !text.starts_with('-')
            && !text.ends_with('-');
        if ok {
            Ok(DistrictId(text.to_owned()))
        } else {
            Err(ServerError::BadRequest(format!(
                "{text:?} is not a district name: use 1–32 of a-z, 0-9 and -, e.g. `jing-an`"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The district's PostgreSQL schema (`-` becomes `_`, which a district's name never holds).
    pub fn schema(&self) -> String {
        format!("district_{}", self.0.replace('-', "_"))
    }

    fn from_schema(schema: &str) -> Option<DistrictId> {
        DistrictId::parse(&schema.strip_prefix("district_")?.replace('_', "-")).ok()
    }
}

impl std::fmt::Display for DistrictId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One store's two faces.
#[derive(Clone)]
pub struct Member {
    pub sync: Arc<dyn SyncStore>,
    pub admin: Arc<dyn AdminStore>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").finish_non_exhaustive()
    }
}

/// Which backend a deployment's stores use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded store, one directory per store.
    Sqlite,
    /// PostgreSQL at this URL, one schema per store.
    Postgres(String),
}

impl StoreKind {
    /// `None` or `sqlite`: the embedded store; `postgres://…`: PostgreSQL.
    pub fn parse(spec: Option<&str>) -> Result<StoreKind> {
        match spec {
            None | Some("sqlite") => Ok(StoreKind::Sqlite),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreKind::Postgres(url.to_owned()))
            }
            Some(other) => Err(ServerError::BadRequest(format!("store {other:?}: use `sqlite` or a postgres:// URL"))),
        }
    }

    /// The directory of a district's files (with the embedded store, its database too).
    pub fn dir(data_dir: &Path, district: Option<&DistrictId>) -> PathBuf {
        match district {
            None => data_dir.to_owned(),
            Some(d) => data_dir.join(DISTRICTS_DIR).join(d.as_str()),
        }
    }

    /// Opens the city centre's store (`None`) or a district's, which must have been added.
    pub fn open(&self, data_dir: &Path, district: Option<&DistrictId>) -> Result<Member> {
        let dir = Self::dir(data_dir, district);
        match self {
            StoreKind::Sqlite => {
                if let Some(d) = district {
                    if !dir.join(crate::store::SQLITE_FILE).exists() {
                        return Err(no_district(d));
                    }
                }
                let s = Arc::new(SqliteStore::open(&dir)?);
                Ok(Member { sync: s.clone(), admin: s })
            }
            StoreKind::Postgres(url) => {
                let schema = district.map(DistrictId::schema);
                let s = Arc::new(PgStore::open_in(url, schema.as_deref(), &dir).map_err(|e| match (e, district) {
                    (ServerError::NotFound(_), Some(d)) => no_district(d),
                    (e, _) => e,
                })?);
                Ok(Member { sync: s.clone(), admin: s })
            }
        }
    }

    /// Adds a district: its directory and store (and on PostgreSQL its schema). Adding one that
    /// exists changes nothing. Returns whether it was new.
    pub fn add_district(&self, data_dir: &Path, district: &DistrictId) -> Result<bool> {
        let existed = self.districts(data_dir)?.contains(district);
        let dir = Self::dir(data_dir, Some(district));
        std::fs::create_dir_all(&dir).map_err(|e| ServerError::io(&dir, e))?;
        match self {
            StoreKind::Sqlite => drop(SqliteStore::open(&dir)?),
            StoreKind::Postgres(url) => {
                PgStore::create_schema(url, &district.schema())?;
                drop(PgStore::open_in(url, Some(&district.schema()), &dir)?);
            }
        }
        Ok(!existed)
    }

    /// The deployment's districts, in order.
    pub fn districts(&self, data_dir: &Path) -> Result<Vec<DistrictId>> {
        let mut found: Vec<DistrictId> = match self {
            StoreKind::Sqlite => {
                let root = data_dir.join(DISTRICTS_DIR);
                let entries = match std::fs::read_dir(&root) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
                    Err(e) => return Err(ServerError::io(&root, e)),
                };
                let mut v = vec![];
                for entry in entries {
                    let entry = entry.map_err(|e| ServerError::io(&root, e))?;
                    let name = entry.file_name();
                    // Anything else in the directory (a district moved aside by hand) is not one.
                    let Some(d) = name.to_str().and_then(|n| DistrictId::parse(n).ok()) else { continue };
                    if entry.path().join(crate::store::SQLITE_FILE).exists() {
                        v.push(d);
                    }
                }
                v
            }
            StoreKind::Postgres(url) => {
                PgStore::schemas(url, "district_")?.iter().filter_map(|s| DistrictId::from_schema(s)).collect()
            }
        };
        found.sort();
        Ok(found)
    }
}

fn no_district(d: &DistrictId) -> ServerError {
    ServerError::NotFound(format!("this deployment has no district {d}: add it with `admin add-district {d}`"))
}

/// `ID.REST` → (Some(ID), REST); anything without a `.` is the city centre's.
fn split_token(token: &str) -> (Option<&str>, &str) {
    match token.split_once('.') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, token),
    }
}

fn prefixed(district: Option<&str>, token: String) -> String {
    match district {
        Some(d) => format!("{d}.{token}"),
        None => token,
    }
}

/// Every store of a deployment, and the routing between them.
pub struct City {
    home: Member,
    districts: BTreeMap<DistrictId, Member>,
}

impl std::fmt::Debug for City {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("City").field("districts", &self.districts.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl City {
    /// A city of the city centre's store and these districts' stores.
    pub fn new(home: Member, districts: impl IntoIterator<Item = (DistrictId, Member)>) -> City {
        City { home, districts: districts.into_iter().collect() }
    }

    /// Opens the city centre's store and every district's, saying which on the way (a city's
    /// stores take a while to open).
    pub fn open(kind: &StoreKind, data_dir: &Path) -> Result<City> {
        let home = kind.open(data_dir, None)?;
        let mut districts = BTreeMap::new();
        for d in kind.districts(data_dir)? {
            tracing::info!(district = %d, "opening district");
            let member = kind.open(data_dir, Some(&d))?;
            districts.insert(d, member);
        }
        Ok(City { home, districts })
    }

    pub fn district_ids(&self) -> Vec<String> {
        self.districts.keys().map(|d| d.0.clone()).collect()
    }

    /// The store a request names: the city centre's (`None`) or a district's.
    fn member(&self, district: Option<&str>) -> Option<&Member> {
        match district {
            None => Some(&self.home),
            Some(d) => self.districts.iter().find(|(id, _)| id.as_str() == d).map(|(_, m)| m),
        }
    }

    fn for_device(&self, device: &Device) -> Result<&Member> {
        self.member(device.district.as_deref()).ok_or(ServerError::Unauthenticated)
    }

    /// `user@ID` → (user, Some(ID)) when ID is one of the city's districts; else the city
    /// centre's person of that whole name.
    fn split_person<'a>(&self, user: &'a str) -> (&'a str, Option<&'a str>) {
        match user.rsplit_once('@') {
            Some((name, d)) if self.member(Some(d)).is_some() => (name, Some(d)),
            _ => (user, None),
        }
    }

    /// The person as this router hands them to pages: their district, and whether they are
    /// city-level (the city centre's administrators, in a deployment that has districts).
    fn tag(&self, user: &mut ConsoleUser, district: Option<&str>) {
        user.district = district.map(str::to_owned);
        user.city_level = district.is_none() && user.role == Role::Administrator && !self.districts.is_empty();
    }

    fn console_of(member: &Member) -> Result<&dyn ConsoleStore> {
        member.sync.console().ok_or_else(|| ServerError::NotFound("this store has no console yet (PostgreSQL)".into()))
    }

    /// The console store of the district the person is looking at.
    fn reading(&self, user: &ConsoleUser) -> Result<&dyn ConsoleStore> {
        let member = self.member(user.district.as_deref()).ok_or_else(|| {
            ServerError::NotFound(format!(
                "this deployment has no district {}: choose another on the districts page",
                user.district.as_deref().unwrap_or_default()
            ))
        })?;
        Self::console_of(member)
    }

    /// As [`City::reading`], for a change: refused to a city-level person in a district.
    fn changing(&self, user: &ConsoleUser) -> Result<&dyn ConsoleStore> {
        if user.city_level && user.district.is_some() {
            return Err(ServerError::Forbidden(
                "city-level people look at a district's cases; its own supervisors and administrators act on them"
                    .into(),
            ));
        }
        self.reading(user)
    }
}

impl SyncStore for City {
    fn redeem(&self, req: &EnrolRequest, now_ms: i64) -> Result<EnrolResponse> {
        let (district, code) = split_token(&req.code);
        let member = self.member(district).ok_or(ServerError::BadEnrolmentCode)?;
        let inner = EnrolRequest { code: code.to_owned(), ..req.clone() };
        let mut response = member.sync.redeem(&inner, now_ms)?;
        response.token = prefixed(district, response.token);
        Ok(response)
    }

    fn authenticate(&self, token: &str) -> Result<Device> {
        let (district, token) = split_token(token);
        let member = self.member(district).ok_or(ServerError::Unauthenticated)?;
        let mut device = member.sync.authenticate(token)?;
        device.district = district.map(str::to_owned);
        Ok(device)
    }

    fn sync(&self, device: &Device, req: SyncRequest, now_ms: i64) -> Result<SyncResponse> {
        self.for_device(device)?.sync.sync(device, req, now_ms)
    }

    fn report_wiped(&self, token: &str, now_ms: i64) -> Result<()> {
        let (district, token) = split_token(token);
        let member = self.member(district).ok_or(ServerError::Unauthenticated)?;
        member.sync.report_wiped(token, now_ms)
    }

    fn blob_status(&self, device: &Device, sha256: &str, owner: Option<&BlobOwner>) -> Result<BlobStatus> {
        self.for_device(device)?.sync.blob_status(device, sha256, owner)
    }

    fn begin_blob(
        &self,
        device: &Device,
        sha256: &str,
        owner: &BlobOwner,
        offset: u64,
        total: u64,
        len: Option<u64>,
        now_ms: i64,
    ) -> Result<Begun> {
        self.for_device(device)?.sync.begin_blob(device, sha256, owner, offset, total, len, now_ms)
    }

    fn end_blob(&self, device: &Device, owner: &BlobOwner, writer: Writer, now_ms: i64) -> Result<BlobStatus> {
        self.for_device(device)?.sync.end_blob(device, owner, writer, now_ms)
    }

    /// The figures of every store, added up.
    fn operator_stats(&self, now_ms: i64) -> Result<OperatorStats> {
        let mut total = self.home.sync.operator_stats(now_ms)?;
        for member in self.districts.values() {
            let s = member.sync.operator_stats(now_ms)?;
            total.quarantine_pending += s.quarantine_pending;
            for (bucket, n) in s.devices_by_unsynced_age {
                match total.devices_by_unsynced_age.iter_mut().find(|(b, _)| *b == bucket) {
                    Some((_, t)) => *t += n,
                    None => total.devices_by_unsynced_age.push((bucket, n)),
                }
            }
        }
        Ok(total)
    }

    fn get_blob(&self, device: &Device, sha256: &str) -> Result<Vec<u8>> {
        self.for_device(device)?.sync.get_blob(device, sha256)
    }

    fn console(&self) -> Option<&dyn ConsoleStore> {
        self.home.sync.console().map(|_| self as &dyn ConsoleStore)
    }
}

impl ConsoleStore for City {
    fn sign_in(&self, user: &str, password: &str, now_ms: i64) -> Result<(String, Session)> {
        let (name, district) = self.split_person(user);
        let member = self.member(district).ok_or(ServerError::BadCredentials)?;
        let (token, mut session) = Self::console_of(member)?.sign_in(name, password, now_ms)?;
        self.tag(&mut session.user, district);
        Ok((prefixed(district, token), session))
    }

    fn session(&self, token: &str, now_ms: i64) -> Result<Session> {
        let (district, token) = split_token(token);
        let member = self.member(district).ok_or(ServerError::Unauthenticated)?;
        let mut session = Self::console_of(member)?.session(token, now_ms)?;
        self.tag(&mut session.user, district);
        Ok(session)
    }

    fn sign_out(&self, token: &str) -> Result<()> {
        let (district, token) = split_token(token);
        match self.member(district) {
            Some(member) => Self::console_of(member)?.sign_out(token),
            None => Ok(()),
        }
    }

    fn set_password(&self, user: &str, password: &str, now_ms: i64) -> Result<()> {
        let (name, district) = self.split_person(user);
        let member = self.member(district).ok_or_else(|| ServerError::NotFound(format!("user {user}")))?;
        Self::console_of(member)?.set_password(name, password, now_ms)
    }

    fn case_queue(&self, user: &ConsoleUser, filter: &CaseFilter, now_ms: i64) -> Result<CaseQueue> {
        self.reading(user)?.case_queue(user, filter, now_ms)
    }

    fn case_view(&self, user: &ConsoleUser, case_id: &str) -> Result<CaseView> {
        self.reading(user)?.case_view(user, case_id)
    }

    /// Every store's rules, each under its own lease: the sums.
    fn run_escalations(&self, instance: &str, now_ms: i64) -> Result<crate::rules::escalation::Ran> {
        let mut sum = crate::rules::escalation::Ran::default();
        for member in std::iter::once(&self.home).chain(self.districts.values()) {
            if let Some(console) = member.sync.console() {
                let r = console.run_escalations(instance, now_ms)?;
                sum.skipped |= r.skipped;
                sum.checked += r.checked;
                sum.applied += r.applied;
                sum.failed += r.failed;
            }
        }
        Ok(sum)
    }

    fn escalation_policy(&self, user: &ConsoleUser) -> Result<crate::rules::escalation::Policy> {
        self.reading(user)?.escalation_policy(user)
    }

    fn set_escalation_policy(&self, user: &ConsoleUser, policy: &crate::rules::escalation::Policy) -> Result<()> {
        self.changing(user)?.set_escalation_policy(user, policy)
    }

    fn overview(
        &self,
        user: &ConsoleUser,
        area: Option<crate::rules::overview::Area>,
        days: (&str, &str),
        now_ms: i64,
    ) -> Result<crate::rules::overview::Overview> {
        self.reading(user)?.overview(user, area, days, now_ms)
    }

    fn case_by_code(&self, user: &ConsoleUser, code: &str) -> Result<Option<String>> {
        self.reading(user)?.case_by_code(user, code)
    }

    /// Every store's index, each by up to `max_changes`: the sums.
    fn index_for_search(&self, max_changes: usize) -> Result<crate::rules::search::IndexProgress> {
        let mut sum = crate::rules::search::IndexProgress::default();
        for member in std::iter::once(&self.home).chain(self.districts.values()) {
            if let Some(console) = member.sync.console() {
                let p = console.index_for_search(max_changes)?;
                sum.cases += p.cases;
                sum.behind += p.behind;
            }
        }
        Ok(sum)
    }

    fn needs_you(
        &self,
        user: &ConsoleUser,
        area_counts: Option<&[(String, i64)]>,
        now_ms: i64,
    ) -> Result<Vec<crate::store::console::NeedsYou>> {
        self.reading(user)?.needs_you(user, area_counts, now_ms)
    }

    fn act(&self, user: &ConsoleUser, case_id: &str, action: ConsoleAction, now_ms: i64) -> Result<()> {
        self.changing(user)?.act(user, case_id, action, now_ms)
    }

    fn catalog(&self, user: &ConsoleUser) -> Arc<Catalog> {
        match self.reading(user) {
            Ok(console) => console.catalog(user),
            // A district that is gone: nothing of it is shown (its pages answer "no district").
            Err(_) => Arc::new(Catalog::default()),
        }
    }

    fn photo(&self, user: &ConsoleUser, sha256: &str) -> Result<Vec<u8>> {
        self.reading(user)?.photo(user, sha256)
    }

    fn bundle(&self, user: &ConsoleUser, case_id: &str, now_ms: i64) -> Result<Vec<u8>> {
        self.reading(user)?.bundle(user, case_id, now_ms)
    }

    fn map_pins(&self, user: &ConsoleUser, filter: &CaseFilter, limit: u32, now_ms: i64) -> Result<Vec<MapPin>> {
        self.reading(user)?.map_pins(user, filter, limit, now_ms)
    }

    fn coverage(&self, user: &ConsoleUser, day: &str) -> Result<Vec<GridCoverage>> {
        self.reading(user)?.coverage(user, day)
    }

    fn assessment(&self, user: &ConsoleUser, from_ms: i64, to_ms: i64, now_ms: i64) -> Result<Vec<WorkerScore>> {
        self.reading(user)?.assessment(user, from_ms, to_ms, now_ms)
    }

    fn devices(&self, user: &ConsoleUser, now_ms: i64) -> Result<Vec<DeviceInfo>> {
        self.reading(user)?.devices(user, now_ms)
    }

    fn enrol(&self, user: &ConsoleUser, for_user: &str, now_ms: i64) -> Result<(String, String)> {
        let (device, code) = self.changing(user)?.enrol(user, for_user, now_ms)?;
        Ok((device, prefixed(user.district.as_deref(), code)))
    }

    fn retire(&self, user: &ConsoleUser, device: &str, now_ms: i64) -> Result<()> {
        self.changing(user)?.retire(user, device, now_ms)
    }

    fn revoke(&self, user: &ConsoleUser, device: &str) -> Result<()> {
        self.changing(user)?.revoke(user, device)
    }

    fn wipe(&self, user: &ConsoleUser, device: &str, now_ms: i64) -> Result<()> {
        self.changing(user)?.wipe(user, device, now_ms)
    }

    fn quarantine(&self, user: &ConsoleUser) -> Result<Vec<QuarantinedItem>> {
        self.reading(user)?.quarantine(user)
    }

    fn release(&self, user: &ConsoleUser, key: &str, now_ms: i64) -> Result<()> {
        self.changing(user)?.release(user, key, now_ms)
    }

    fn reject(&self, user: &ConsoleUser, key: &str) -> Result<()> {
        self.changing(user)?.reject(user, key)
    }

    fn people(&self, user: &ConsoleUser) -> Result<Vec<PersonView>> {
        self.reading(user)?.people(user)
    }

    fn set_person(&self, user: &ConsoleUser, person: &PersonView) -> Result<()> {
        self.changing(user)?.set_person(user, person)
    }

    /// Routed by the administrator's own session, like every change: a person's name in the
    /// form never chooses the district.
    fn set_person_password(&self, user: &ConsoleUser, person: &str, password: &str, now_ms: i64) -> Result<()> {
        self.changing(user)?.set_person_password(user, person, password, now_ms)
    }

    fn ca_fingerprint(&self) -> Option<String> {
        Self::console_of(&self.home).ok().and_then(|c| c.ca_fingerprint())
    }

    fn set_catalog(&self, user: &ConsoleUser, catalog: &Catalog) -> Result<u64> {
        self.changing(user)?.set_catalog(user, catalog)
    }

    fn districts(&self, user: &ConsoleUser) -> Result<Vec<String>> {
        if user.city_level {
            Ok(self.district_ids())
        } else {
            Err(ServerError::Forbidden("only the city centre's administrators look across districts".into()))
        }
    }
}

/// An administrator's view of one district's store from the command line: the store's own
/// [`AdminStore`], with enrolment codes given out as the city routes them (`ID.CODE`).
pub struct DistrictAdmin {
    pub district: Option<DistrictId>,
    pub store: Arc<dyn AdminStore>,
}

impl std::fmt::Debug for DistrictAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistrictAdmin").field("district", &self.district).finish_non_exhaustive()
    }
}

impl DistrictAdmin {
    /// A device for `user` in this district: (device id, the code a phone redeems).
    pub fn enrol_device(&self, user: &str, now_ms: i64) -> Result<(String, String)> {
        let (id, code) = self.store.enrol_device(user, now_ms)?;
        Ok((id, prefixed(self.district.as_ref().map(DistrictId::as_str), code)))
    }

    /// A person of this district as a console sign-in names them (`user@ID`).
    pub fn sign_in_name(&self, user: &str) -> String {
        match &self.district {
            Some(d) => format!("{user}@{d}"),
            None => user.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn district_names_are_checked_and_map_to_schemas_and_back() {
        for ok in ["a", "jing-an", "d07", "x1-2-3"] {
            let d = DistrictId::parse(ok).expect(ok);
            assert_eq!(DistrictId::from_schema(&d.schema()), Some(d));
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a@b", "a_b", "区", &"x".repeat(33)] {
            assert!(DistrictId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tokens_split_at_the_first_dot() {
        assert_eq!(split_token("d1.abc"), (Some("d1"), "abc"));
        assert_eq!(split_token("abc"), (None, "abc"));
        assert_eq!(split_token("d1.a.b"), (Some("d1"), "a.b"));
        assert_eq!(prefixed(Some("d1"), "abc".into()), "d1.abc");
        assert_eq!(prefixed(None, "abc".into()), "abc");
    }
}
