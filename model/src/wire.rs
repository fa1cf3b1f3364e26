//! The sync protocol's wire types (docs/PROTOCOL.md). Shared by the device client and the server,
//! serialized as JSON; change bytes and record bodies travel as base64 / JSON.

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Role};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Changes, records and `want_full` ids one sync request may carry together; the server refuses
/// a request with more (413 `too_many_items`), and the phone pages its outbox below it.
pub const MAX_ITEMS_PER_REQUEST: usize = 2_000;

/// `POST /v1/enrol`: exchange a one-time code for a device token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrolRequest {
    pub code: String,
    pub app_version: String,
    /// The device's Ed25519 public key (base64 of its 32 bytes), made on the phone for this
    /// enrolment: every change and record it sends is then signed with it (docs/PROTOCOL.md,
    /// "Signatures"). Absent from apps older than signing: their devices send unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrolResponse {
    pub device_id: String,
    /// Short code prefixing readable case codes made on this device.
    pub device_code: String,
    /// Bearer token for every later request. The server keeps only its hash.
    pub token: String,
    pub user: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Never on the wire: the phone's new signing key (PKCS#8), made by the enrolment call and
    /// handed to whoever opens the store with this enrolment (then kept in the store).
    #[serde(skip)]
    pub device_key: Option<crate::signing::SecretBytes>,
}

/// What the device reports about itself on every sync, so operators can see a phone sitting on
/// old reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeviceState {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub outbox_items: u64,
    /// Age of the oldest unsynced change, in ms.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub oldest_unsynced_age_ms: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub photos_pending: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub catalog_version: u64,
    /// The device's wall clock when it sent the request.
    #[serde(default)]
    pub device_time_ms: i64,
    /// The device's boot and its time since boot when it sent the request: with the server's
    /// own clock, where that boot began in true time, against which every event and check-in of
    /// the boot is checked (`ClockStamp::wall_clock_error_ms`). Empty from older apps.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot_id: String,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub since_boot_ms: i64,
    /// The place of the last link this device signed (0: it signs nothing). A wipe waits until
    /// the server holds every place up to it.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub chain_head: i64,
}

/// One local change pushed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushedChange {
    pub doc: String,
    /// base64 of the Automerge change bytes.
    pub bytes: String,
    /// The server's receipt for this change, when the device holds one ([`Receipt`]): what lets
    /// a phone offer another device's change again after the server was restored from a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// The change's place in its author's signed chain ([`crate::signing`]); absent from
    /// unsigned apps and from relays of another device's change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<crate::signing::Link>,
}

/// The server's word that it accepted a change of a document from its owner device:
/// `HASH:OWNER:MAC`, the MAC a keyed hash (HMAC-SHA256, the server's key, first 16 bytes) of the
/// document id, the change hash and the owner. Sent with push results and with every pulled
/// change; a device keeps the receipts of the changes it holds. A server restored from a backup
/// has the same key, so it can tell a change it once accepted from its owner, offered again by
/// another device, from one a device made up (docs/PROTOCOL.md, "Restores").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub hash: String,
    pub owner: String,
    pub mac: String,
}

impl Receipt {
    /// Reads `HASH:OWNER:MAC`; None for anything else.
    pub fn parse(text: &str) -> Option<Receipt> {
        let (hash, rest) = text.split_once(':')?;
        let (owner, mac) = rest.rsplit_once(':')?;
        (is_sha256_hex(hash) && !owner.is_empty() && mac.len() == 32 && mac.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Receipt { hash: hash.to_owned(), owner: owner.to_owned(), mac: mac.to_owned() })
    }
}

impl std::fmt::Display for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.hash, self.owner, self.mac)
    }
}

/// One immutable record pushed (patrol start/finish, check-in). The body stays the JSON text the
/// device wrote: the server stores it as it came, without building and re-serialising a tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushedRecord {
    pub id: String,
    pub body: Box<serde_json::value::RawValue>,
    /// The record's place in its author's signed chain; the signature covers `body` exactly as
    /// sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<crate::signing::Link>,
}

impl PartialEq for PushedRecord {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.body.get() == other.body.get() && self.link == other.link
    }
}

/// `POST /v1/sync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub protocol: u32,
    pub app_version: String,
    pub doc_schema: i64,
    /// Opaque; `None` on a device that never synced.
    pub cursor: Option<String>,
    pub state: DeviceState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<PushedChange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<PushedRecord>,
    /// Upper bound the device wants for the pulled part of the response.
    pub max_pull_bytes: u64,
    /// Documents the device holds only in part (changes waiting for dependencies it lacks, e.g.
    /// a case it removed by retention that changed since): send their whole history, whatever
    /// the cursor. Documents outside the device's scope are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub want_full: Vec<String>,
    /// The device can take a document's history as one compacted document
    /// ([`PulledDoc::compacted`]). Older apps leave it out and receive change lists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_compacted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Stored (possibly waiting for its dependencies). The device may drop it from its outbox.
    Accepted,
    /// Stored, but outside every scope until an administrator releases or rejects it. The device
    /// drops it from its outbox too: it is not lost, and resending would not change the verdict.
    Quarantined,
    /// Not stored (malformed). The device keeps it and shows the reason.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    /// Change hash (hex) or record id.
    pub key: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For an accepted change: the server's [`Receipt`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}

/// Changes of one document the device should apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PulledDoc {
    pub doc: String,
    /// base64 Automerge change bytes, in server order.
    pub changes: Vec<String>,
    /// base64 of a saved Automerge document holding every change of the document's history up
    /// to its join (sent instead of those changes to a device far behind that accepts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted: Option<String>,
    /// A [`Receipt`] for each change sent (in `changes` or in `compacted`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receipts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub protocol: u32,
    pub server_time_ms: i64,
    /// The app is older than the district's minimum: what it pushed was still accepted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upgrade_required: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ItemResult>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docs: Vec<PulledDoc>,
    /// Documents the device no longer has in scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_scope: Vec<String>,
    /// The reference data, when the device's catalog version is older.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Catalog>,
    pub cursor: String,
    /// The device's cursor is from another epoch: this server was restored from a backup and may
    /// lack what it received after it. Push everything you hold again (changes by hash and records
    /// by id are stored once, so what the server kept is merely acknowledged).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reoffer: bool,
    /// This device was retired (its worker left): what it pushed was accepted; it receives
    /// nothing new. It should keep syncing until its outbox and photos are through.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
    /// An administrator ordered this phone wiped (it is retired too): send everything it holds,
    /// photos included, whatever the app's photo budget, and sync again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wipe: bool,
    /// The server holds everything this phone reported holding (its outbox and photos are
    /// through, and every link of its chain up to `state.chain_head` is here): destroy the
    /// store's keys and files now, then `POST /v1/wiped`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wipe_now: bool,
    /// More is waiting: sync again with the new cursor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// The scopes the device's user holds now (`grid:…`, `department:…`, `user:…`; areas spelled
    /// out as their grids): the phone makes a case read-only when the write rule
    /// (`access::may_change`) would refuse its changes. Empty from a server that predates it.
    /// Text, not [`crate::access::Scope`]: a kind of scope this app does not know is skipped, not
    /// a failed sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// `POST /v1/status`: where the device stands, for an app that must check in before it opens
/// its store (its offline limit passed). A revoked or wiped device hears 403 instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub device_id: String,
    /// `active`, `retired` (send what it holds; nothing new comes) or `wipe` (open the store and
    /// sync: the sync sends everything, then destroys the store).
    pub status: String,
    pub server_time_ms: i64,
}

/// Body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// Where the server stands on one evidence blob (a photo or a thumbnail), named by the SHA-256 of
/// its bytes: `GET /v1/blobs/{sha256}/status` and every `PUT` answer with it. `offset` is how many
/// bytes the server holds; a resumed upload starts there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStatus {
    pub sha256: String,
    pub offset: u64,
    /// The size announced by the upload in progress, or the stored size once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    pub complete: bool,
}

/// What a blob upload belongs to, sent as `?owner=case:<id>` or `?owner=check_in:<id>`: the server
/// lets devices and supervisors download a blob when they can see its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobOwner {
    Case(String),
    CheckIn(String),
}

impl BlobOwner {
    pub fn to_query(&self) -> String {
        match self {
            BlobOwner::Case(id) => format!("case:{id}"),
            BlobOwner::CheckIn(id) => format!("check_in:{id}"),
        }
    }

    pub fn parse(s: &str) -> Option<BlobOwner> {
        match s.split_once(':') {
            Some(("case", id)) if !id.is_empty() => Some(BlobOwner::Case(id.to_owned())),
            Some(("check_in", id)) if !id.is_empty() => Some(BlobOwner::CheckIn(id.to_owned())),
            _ => None,
        }
    }
}

/// A SHA-256 as the protocol names blobs: 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// Empty and zero fields are left out: an idle sync must fit in a few hundred bytes on 2G.
fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// What an enrolment QR code carries: where the district's server is, the one-time code, and the
/// SHA-256 fingerprint of the district CA the phone must trust (absent for a loopback demo).
///
/// Text form: `gridwork:enrol?server=https://sync.example:8443&code=K7M2QX&ca=<64 hex digits>`,
/// and `&also=URL` for each other address of the same server (more instances of it): a phone
/// that cannot reach `server` syncs with the next (docs/PROTOCOL.md, "Enrolment").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolmentCode {
    pub server: String,
    pub code: String,
    pub ca_fingerprint: Option<String>,
    /// Other addresses of the same server, tried in order when `server` cannot be reached.
    pub alternates: Vec<String>,
}

/// At most this many other addresses in one code (it must still fit a QR code).
pub const MAX_ALTERNATE_SERVERS: usize = 4;

impl EnrolmentCode {
    pub fn to_uri(&self) -> String {
        let mut s = format!("gridwork:enrol?server={}&code={}", self.server, self.code);
        if let Some(ca) = &self.ca_fingerprint {
            s.push_str("&ca=");
            s.push_str(ca);
        }
        for also in &self.alternates {
            s.push_str("&also=");
            s.push_str(also);
        }
        s
    }

    /// Parses the text of a scanned code; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let query = text
            .trim()
            .strip_prefix("gridwork:enrol?")
            .ok_or("not a Gridwork enrolment code (it should start with gridwork:enrol?)")?;
        let (mut server, mut code, mut ca) = (None, None, None);
        let mut alternates: Vec<String> = vec![];
        // Each value is trimmed: a code that ends in a space in the scanned text would otherwise
        // keep it, and lose it when written back as the last field (found by fuzzing).
        for pair in query.split('&') {
            match pair.split_once('=').map(|(k, v)| (k, v.trim())) {
                Some(("server", v)) => server = Some(v.to_owned()),
                Some(("code", v)) => code = Some(v.to_owned()),
                Some(("ca", v)) => ca = Some(v.to_ascii_lowercase()),
                Some(("also", v)) if !v.is_empty() => alternates.push(v.to_owned()),
                _ => {} // later versions may add fields
            }
        }
        let server = server.filter(|s| !s.is_empty()).ok_or("the enrolment code names no server")?;
        let code = code.filter(|s| !s.is_empty()).ok_or("the enrolment code has no one-time code")?;
        if let Some(c) = &ca {
            if c.len() != 64 || !c.chars().all(|x| x.is_ascii_hexdigit()) {
                return Err("the CA fingerprint in the enrolment code is damaged: scan it again".into());
            }
        }
        if alternates.len() > MAX_ALTERNATE_SERVERS {
            return Err(format!("the enrolment code names more than {MAX_ALTERNATE_SERVERS} other addresses"));
        }
        for address in std::iter::once(&server).chain(&alternates) {
            if address.starts_with("https://") && ca.is_none() {
                return Err("an https server needs the CA fingerprint in the enrolment code".into());
            }
            if !address.starts_with("https://") && !address.starts_with("http://") {
                return Err(format!("{address:?} in the enrolment code is not an http(s) address"));
            }
        }
        Ok(EnrolmentCode { server, code, ca_fingerprint: ca, alternates })
    }
}

#[cfg(test)]
mod enrolment_code_tests {
    use super::{EnrolmentCode, MAX_ALTERNATE_SERVERS};

    #[test]
    fn round_trips_and_refuses_damaged_codes() {
        let c = EnrolmentCode {
            server: "https://sync.example:8443".into(),
            code: "K7M2QX".into(),
            ca_fingerprint: Some("ab".repeat(32)),
            alternates: vec!["https://sync2.example:8443".into()],
        };
        assert_eq!(EnrolmentCode::parse(&c.to_uri()), Ok(c.clone()));
        assert!(c.to_uri().ends_with("&also=https://sync2.example:8443"));
        let too_many = format!("{}{}", c.to_uri(), "&also=https://x.example".repeat(MAX_ALTERNATE_SERVERS));
        assert!(EnrolmentCode::parse(&too_many).is_err(), "a bounded list");
        assert!(EnrolmentCode::parse(&format!("{}&also=ftp://x", c.to_uri())).is_err(), "http(s) only");
        let without_ca = c.to_uri().replace(&format!("&ca={}", "ab".repeat(32)), "");
        assert!(EnrolmentCode::parse(&without_ca).is_err(), "https without a CA pin");
        assert!(EnrolmentCode::parse(&c.to_uri().replace("abab", "zzzz")).is_err());
        assert!(EnrolmentCode::parse("K7M2QX").is_err());
        let spaced = EnrolmentCode::parse("gridwork:enrol?code=K7M2QX &server=http://127.0.0.1:8080 ").expect("parses");
        assert_eq!(spaced.code, "K7M2QX");
        assert_eq!(EnrolmentCode::parse(&spaced.to_uri()), Ok(spaced));
        assert!(EnrolmentCode::parse("gridwork:enrol?code= &server=http://127.0.0.1:8080").is_err(), "a blank code");
        let local = EnrolmentCode {
            server: "http://127.0.0.1:8080".into(),
            code: "K7M2QX".into(),
            ca_fingerprint: None,
            alternates: vec![],
        };
        assert_eq!(EnrolmentCode::parse(&local.to_uri()), Ok(local));
    }
}
