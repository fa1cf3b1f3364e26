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

/// A person signed in to the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleUser {
    pub id: String,
    pub role: Role,
    pub department: Option<String>,
    /// `grid:…`, `community:…`, `street:…`, `department:…`; administrators see every case.
    pub scopes: Vec<String>,
}

impl ConsoleUser {
    pub fn sees_everything(&self) -> bool {
        self.role == Role::Administrator
    }
}

/// A signed-in browser: who, and the token every form of the session must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: ConsoleUser,
    pub csrf: String,
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
    /// 1-based.
    pub page: u32,
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
}

/// One photo of a case, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoView {
    pub sha256: String,
    pub thumb_sha256: Option<String>,
    /// The server holds the full-size file.
    pub on_server: bool,
}

/// A case opened in the console.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseView {
    pub case: CaseDoc,
    pub flags: Vec<String>,
    pub photos: Vec<PhotoView>,
    /// When the server received the first change of the case.
    pub received_ms: Option<i64>,
}

/// A console action on a case.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsoleAction {
    Event(EventKind),
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
    fn case_view(&self, user: &ConsoleUser, case_id: &str) -> Result<CaseView>;
    /// Writes an action as an Automerge change by the person's server-side actor, stored and
    /// synced like any device's change. Refused (nothing written) if the role, scope or the
    /// case's state does not allow it.
    fn act(&self, user: &ConsoleUser, case_id: &str, action: ConsoleAction, now_ms: i64) -> Result<()>;
    /// The reference data (names of grids, categories, departments; grid polygons).
    fn catalog(&self) -> std::sync::Arc<gridwork_model::catalog::Catalog>;
    /// A photo or thumbnail of a case the person may see.
    fn photo(&self, user: &ConsoleUser, sha256: &str) -> Result<Vec<u8>>;
}
