//! The server's rules, written once above the storage port (`store::port`): what a push stores,
//! parks, quarantines or refuses ([`push`]), and what a pull sends ([`pull`]); `SyncStore` and `AdminStore` for every backend
//! ([`service`]); the console's sign-in, pages and actions ([`console`]); its case search index ([`search`]); the escalation rules ([`escalation`]). A backend implements the port's primitives and
//! calls these; it decides nothing itself (ADR 20).

pub mod bundle;
pub mod console;
pub mod escalation;
pub mod overview;
pub mod pull;
pub mod push;
pub mod search;
pub mod service;
pub mod wipe;
