//! Helpers the end-to-end test binaries share: a district's server on a random loopback port
//! and phones enrolled with one-time codes, as the app does it.
// Each test binary compiles this module and uses its own subset of it.
#![allow(dead_code, unused_macros)]

use gridwork_model::access::Scope;
use gridwork_sync_server::AdminStore;
use std::sync::Arc;

use gridwork_core::model::catalog::Role;
use gridwork_core::model::ids::{CaseId, UserId};
use gridwork_core::sync::{enrol, SyncConfig, SyncReport};
use gridwork_core::{CoreError, Store};
use gridwork_sync_server::store::ConsoleStore;
use gridwork_sync_server::{PgStore, RunningServer, SqliteStore, SyncStore};
use gridwork_tests::{district, identity_from_enrolment, open_device, random_case, Rng};

/// Everything a test does to a server's store: what the HTTP layer, the console and the
/// administrators use.
pub trait ServerStore: AdminStore + SyncStore + ConsoleStore {}
impl<T: AdminStore + SyncStore + ConsoleStore> ServerStore for T {}

/// Which store a district's server runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// A database of its own on the test PostgreSQL server.
    Postgres(String),
}

impl Backend {
    pub fn postgres() -> Backend {
        Backend::Postgres(gridwork_tests::pg::fresh_database().expect("a PostgreSQL database"))
    }

    fn open(&self, dir: &std::path::Path) -> Arc<dyn ServerStore> {
        match self {
            Backend::Sqlite => Arc::new(SqliteStore::open(dir).expect("server store")),
            Backend::Postgres(url) => Arc::new(PgStore::open(url, dir).expect("server store")),
        }
    }
}

pub struct District {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn ServerStore>,
    pub server: Option<RunningServer>,
    pub backend: Backend,
}

impl District {
    pub fn new() -> District {
        District::on(Backend::Sqlite)
    }

    pub fn on(backend: Backend) -> District {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = backend.open(dir.path());
        store.import_catalog(&district(4)).expect("catalog");
        store.set_user("w1", Role::Worker, None, &[Scope::Grid("g0".into())]).expect("w1");
        store.set_user("w2", Role::Worker, None, &[Scope::Grid("g1".into())]).expect("w2");
        store.set_user("s1", Role::Supervisor, None, &[Scope::Community("Community 0".into())]).expect("s1");
        store
            .set_user("h1", Role::DepartmentHandler, Some("police"), &[Scope::Department("police".into())])
            .expect("h1");
        let server =
            gridwork_sync_server::start(store.clone() as Arc<dyn SyncStore>, "127.0.0.1:0".parse().expect("addr"))
                .expect("server starts");
        District { dir, store, server: Some(server), backend }
    }

    pub fn url(&self) -> String {
        self.server.as_ref().map(|s| s.url()).expect("running")
    }

    /// Stops the server and starts a new one on the same data directory.
    pub fn restart(&mut self) {
        self.server = None;
        self.store = self.backend.open(self.dir.path());
        self.server = Some(
            gridwork_sync_server::start(self.store.clone() as Arc<dyn SyncStore>, "127.0.0.1:0".parse().expect("addr"))
                .expect("restart"),
        );
    }
}

pub struct Phone {
    pub _dir: tempfile::TempDir,
    pub store: Store,
    pub config: SyncConfig,
    /// The device's signing key and id: what a compromised phone signs forgeries with.
    pub key: Option<std::sync::Arc<gridwork_core::signing::DeviceKey>>,
    pub device: String,
    /// Places for hand-made links, far above the store's own (holes below them are counted,
    /// not flagged).
    pub forged_places: std::cell::Cell<u64>,
}

impl Phone {
    /// `bytes` as a change of `doc` this device signed, as a phone with its key would (a
    /// compromised one included): the deeper rules judge it, not the signature. Bytes that are
    /// not a change go unsigned (the server refuses them before any signature).
    pub fn signed(&self, doc: &CaseId, bytes: &[u8]) -> gridwork_core::model::wire::PushedChange {
        use base64::Engine;
        let link = match (&self.key, automerge::Change::from_bytes(bytes.to_vec())) {
            (Some(key), Ok(change)) => {
                Some(self.link(key, gridwork_model::signing::LinkKind::Change, &change.hash().to_string(), bytes))
            }
            _ => None,
        };
        gridwork_core::model::wire::PushedChange {
            doc: doc.to_string(),
            bytes: base64::engine::general_purpose::STANDARD.encode(bytes),
            receipt: None,
            link,
        }
    }

    /// `body` (JSON) as a record this device signed.
    pub fn signed_record(&self, id: &str, body: String) -> gridwork_core::model::wire::PushedRecord {
        let link =
            self.key.as_ref().map(|k| self.link(k, gridwork_model::signing::LinkKind::Record, id, body.as_bytes()));
        gridwork_core::model::wire::PushedRecord {
            id: id.to_owned(),
            body: serde_json::value::RawValue::from_string(body).expect("json"),
            link,
        }
    }

    /// A link of this device's chain for `key` and `content`, at the next hand-made place.
    pub fn link(
        &self,
        key: &gridwork_core::signing::DeviceKey,
        kind: gridwork_model::signing::LinkKind,
        item: &str,
        content: &[u8],
    ) -> gridwork_model::signing::Link {
        let seq = self.forged_places.get() + 1;
        self.forged_places.set(seq);
        let st = gridwork_model::signing::statement(&self.device, seq, "", kind, item, content);
        gridwork_model::signing::Link { seq, prev: String::new(), sig: key.sign_b64(&st) }
    }

    pub fn sync(&mut self, url: &str) -> Result<SyncReport, CoreError> {
        self.config.server = url.to_owned();
        self.store.sync(&self.config, &mut |_| {})
    }
}

/// Enrols a device for `user` with the one-time code, as the app would. `claim` overrides the
/// identity the store writes into events (to forge a role or a user).
pub fn phone(d: &District, user: &str, claim: Option<(&str, Role)>) -> Phone {
    let (_, code) = d.store.enrol_device(user, 0).expect("enrol");
    let e = enrol(&d.url(), &code, None, "0.1.0").expect("redeem code");
    let mut identity = identity_from_enrolment(&e);
    if let Some((claimed_user, claimed_role)) = claim {
        identity.user = UserId::from(claimed_user);
        identity.role = claimed_role;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let key = identity.signing_key.clone();
    let store = open_device(dir.path(), identity, &district(4), None).expect("device store");
    Phone {
        _dir: dir,
        store,
        config: SyncConfig::new(d.url(), e.token),
        key,
        device: e.device_id,
        forged_places: std::cell::Cell::new(1_000_000),
    }
}

pub fn capture(p: &Phone, grid: usize, n: usize, seed: u64) -> Vec<CaseId> {
    let catalog = district(4);
    let mut rng = Rng::new(seed);
    (0..n).map(|_| p.store.capture_case(random_case(&mut rng, &catalog, grid, 0)).expect("capture").id).collect()
}

/// Instantiates each scenario `fn NAME(d: District)` of a test file on every store: a `sqlite`
/// and a `postgres` module with one test each (the rules are the same on both, ADR 20).
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                crate::$name(crate::common::District::on(crate::common::Backend::Sqlite));
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                crate::$name(crate::common::District::on(crate::common::Backend::postgres()));
            })*
        }
    };
}
