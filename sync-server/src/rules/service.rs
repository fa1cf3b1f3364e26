//! `SyncStore` and `AdminStore` for every backend: enrolment and tokens, a sync (its pushed
//! changes read before the writer, judged by [`super::push`], its pull planned by
//! [`super::pull`] on one snapshot), who may upload and download evidence, and administration.
//! A backend provides transactions over the storage port ([`Backend`]) and nothing else.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine;
use gridwork_model::access::{may_change, Scope};
use gridwork_model::catalog::{Catalog, Role};
use gridwork_model::wire::{
    BlobOwner, BlobStatus, EnrolRequest, EnrolResponse, SyncRequest, SyncResponse, PROTOCOL_VERSION,
};

use super::pull::{add_whole_documents, parse_cursor, pull, told_scopes};
use super::push::{case_access, device_scopes, subject, PushJob, Pushed};
use crate::blobs::{Begun, Writer};
use crate::error::{Result, ServerError};
use crate::store::port::{read, read_keyed, read_one, write, Backend, BlobLinkOwner, ReadTx, WriteTx};
use crate::store::values::{random_hex, sha256_hex};
use crate::store::{AdminStore, Device, DeviceInfo, OperatorStats, QuarantinedItem, SyncStore};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Six characters of Crockford base32 (no I, L, O, U): about a billion codes, easy to read aloud.
fn short_code() -> Result<String> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).map_err(|e| ServerError::Internal(format!("no randomness: {e}")))?;
    Ok(b.iter().map(|x| ALPHABET[(*x & 31) as usize] as char).collect())
}

/// Dotted version compare: is `a` older than `b`?
fn older(a: &str, b: &str) -> bool {
    let parse = |s: &str| s.split('.').map(|p| p.parse::<u64>().unwrap_or(0)).collect::<Vec<_>>();
    parse(a) < parse(b)
}

/// The age now of a device's oldest unsynced work, from its last reported state.
fn unsynced_age_ms(last_seen_ms: Option<i64>, last_state: Option<&serde_json::Value>, now_ms: i64) -> Option<i64> {
    let (seen, state) = (last_seen_ms?, last_state?.get("state")?);
    let n = |k: &str| state.get(k).and_then(|v| v.as_i64()).unwrap_or(0);
    if n("outbox_items") == 0 && n("photos_pending") == 0 {
        return None;
    }
    Some(n("oldest_unsynced_age_ms") + (now_ms - seen).max(0))
}

/// Whether `device` may see a blob: it is linked to a case in its user's scopes or to a
/// check-in one of its user's devices recorded.
fn sees_blob(tx: &dyn ReadTx, device: &Device, sha256: &str) -> Result<bool> {
    let owners = tx.blob_owners(sha256)?;
    if owners.is_empty() {
        return Ok(false);
    }
    let scopes = device_scopes(tx, device)?;
    for owner in owners {
        let sees = match owner {
            BlobLinkOwner::Case(doc) => tx.memberships(&doc)?.iter().any(|(s, _)| scopes.contains_key(s)),
            BlobLinkOwner::CheckIn(id) => tx.record_user(&id)?.is_some_and(|u| u == device.user),
        };
        if sees {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `device` may upload evidence for `owner`: a case it may change (the one write rule,
/// `model::access::may_change`), or a check-in one of its user's devices recorded.
fn may_upload_for(tx: &dyn ReadTx, device: &Device, owner: &BlobOwner) -> Result<bool> {
    Ok(match owner {
        BlobOwner::Case(id) => match case_access(tx, id)? {
            Some(access) => may_change(&subject(tx, device)?, &access).is_ok(),
            None => false,
        },
        BlobOwner::CheckIn(id) => tx.record_user(id)?.is_some_and(|u| u == device.user),
    })
}

fn link_owner(owner: &BlobOwner) -> BlobLinkOwner {
    match owner {
        BlobOwner::Case(id) => BlobLinkOwner::Case(id.clone()),
        BlobOwner::CheckIn(id) => BlobLinkOwner::CheckIn(id.clone()),
    }
}

/// Records where each grid of `catalog` lies: a grid placed in a community or street from now
/// on, a grid no longer in one since now (a sequence number, so cursors tell which devices have
/// yet to hear). Unchanged placements keep their moment.
fn place_grids(tx: &dyn WriteTx, catalog: &Catalog) -> Result<()> {
    let wanted: BTreeSet<(String, String)> = catalog
        .grids
        .iter()
        .flat_map(|g| [(Scope::Community(g.community.clone()), g), (Scope::Street(g.street.clone()), g)])
        .filter(|(scope, _)| !matches!(scope, Scope::Community(n) | Scope::Street(n) if n.is_empty()))
        .map(|(scope, g)| (scope.to_string(), g.id.0.clone()))
        .collect();
    let current = tx.placements()?;
    if wanted == current {
        return Ok(());
    }
    let seq = tx.next_seq()?;
    for (scope, grid) in current.difference(&wanted) {
        tx.end_placement(scope, grid, seq)?;
    }
    for (scope, grid) in wanted.difference(&current) {
        tx.add_placement(scope, grid, seq)?;
    }
    Ok(())
}

impl<B: Backend> SyncStore for B {
    fn console(&self) -> Option<&dyn crate::store::ConsoleStore> {
        Some(self)
    }

    fn redeem(&self, req: &EnrolRequest, now_ms: i64) -> Result<EnrolResponse> {
        let token = random_hex(32)?;
        write(self, |tx| {
            let id = tx.pending_device(&sha256_hex(&req.code))?.ok_or(ServerError::BadEnrolmentCode)?;
            // A public key must be one a signature can be checked with: a malformed one would
            // leave the device unable to send anything.
            if let Some(k) = &req.public_key {
                if gridwork_model::signing::decode_b64(k).map(|b| b.len()) != Some(32) {
                    return Err(ServerError::BadRequest(
                        "public_key is not an Ed25519 public key (base64 of 32 bytes)".into(),
                    ));
                }
            }
            tx.activate_device(&id, &sha256_hex(&token), req.public_key.as_deref(), now_ms)?;
            let device = tx.device(&id)?.ok_or(ServerError::BadEnrolmentCode)?;
            let code = tx.device_row(&id)?.map(|d| d.code).ok_or(ServerError::BadEnrolmentCode)?;
            Ok(EnrolResponse {
                device_id: id,
                device_code: code,
                token: token.clone(),
                user: device.user,
                role: device.role,
                department: device.department,
                device_key: None,
            })
        })
    }

    fn authenticate(&self, token: &str) -> Result<Device> {
        // On a snapshot: a request is not held behind the writer just to learn who sent it. A
        // revocation is committed before it is acknowledged, so a snapshot taken after sees it.
        match read_one(self, |tx| tx.device_by_token_hash(&sha256_hex(token)))? {
            Some((status, device)) if status == "active" => Ok(device),
            Some((status, _)) if status == "wiped" => Err(ServerError::DeviceWiped),
            Some(_) => Err(ServerError::DeviceRevoked),
            None => Err(ServerError::Unauthenticated),
        }
    }

    fn sync(&self, device: &Device, mut req: SyncRequest, now_ms: i64) -> Result<SyncResponse> {
        if req.protocol > PROTOCOL_VERSION {
            return Err(ServerError::ProtocolFromFuture { got: req.protocol, supported: PROTOCOL_VERSION });
        }
        let epoch = self.rules().epoch.to_owned();
        let (cursor, reoffer) =
            parse_cursor(&epoch, req.cursor.as_deref(), || read_one(self, |tx: &dyn ReadTx| tx.last_seq()))?;
        // Decode and parse every pushed change before queueing for the writer: parsing is a fifth
        // of the push's CPU, and here it runs beside other requests instead of inside the one writer.
        // Bytes are bounded per change (`ingest::MAX_CHANGE_BYTES`) and per request: changes past
        // the request's budget are refused, stay in the phone's outbox and go in its next request.
        let mut pushed = Vec::with_capacity(req.changes.len());
        let mut decoded = crate::limits::MAX_DECODED_BYTES_PER_REQUEST;
        for c in &req.changes {
            let bytes = B64.decode(&c.bytes).map_err(|_| {
                ServerError::BadRequest(format!(
                    "change for {} is not base64",
                    c.doc.chars().take(60).collect::<String>()
                ))
            })?;
            pushed.push(Pushed::read(c.doc.clone(), bytes, c.receipt.clone(), &mut decoded));
        }
        let (app_version, catalog_version, budget) = (
            req.app_version.clone(),
            req.state.catalog_version,
            req.max_pull_bytes.clamp(1, crate::limits::MAX_PULL_BYTES),
        );
        let want_full = std::mem::take(&mut req.want_full);
        let (req_state, nothing_sent) = (req.state.clone(), req.changes.is_empty() && req.records.is_empty());
        let accept_compacted = req.accept_compacted;
        let results = if pushed.is_empty() && req.records.is_empty() && !device.retired {
            self.note_seen(&device.id, now_ms, super::push::seen_state(&req)?)?;
            vec![]
        } else {
            // Signatures are checked here, beside other requests, not inside the one writer.
            let signatures = Some(super::push::check_signatures(&self.rules(), device, &req, &pushed));
            self.push(PushJob { device: device.clone(), req, pushed, now_ms, signatures })?
        };
        // The pull reads one snapshot, beside the writer.
        let rules = self.rules();
        let (docs, left_scope, new_cursor, more, scopes, min_version) = read_keyed(self, |view| {
            // A retired device receives nothing new: its cursor stays where it was.
            let scopes = device_scopes(view, device)?;
            let (docs, left, new_cursor, more) = if device.retired {
                (vec![], vec![], cursor.clone(), false)
            } else {
                let (mut docs, left, new_cursor, more) =
                    pull(&rules, view, device, &scopes, &cursor, budget, accept_compacted)?;
                add_whole_documents(&rules, view, &scopes, &want_full, budget, &mut docs)?;
                (docs, left, new_cursor, more)
            };
            Ok((docs, left, new_cursor, more, told_scopes(&scopes), view.meta("min_app_version")?))
        })?;
        gridwork_model::crash_points::reached("pull");
        let wipe_now = super::wipe::may_go_ahead(self, device, &req_state, nothing_sent, now_ms)?;
        let catalog = rules.places.catalog();
        Ok(SyncResponse {
            protocol: PROTOCOL_VERSION,
            server_time_ms: now_ms,
            upgrade_required: min_version.is_some_and(|m| older(&app_version, &m)),
            results,
            docs,
            left_scope,
            catalog: (catalog.version > catalog_version).then(|| Catalog::clone(catalog)),
            cursor: new_cursor.cursor(&epoch),
            reoffer,
            retired: device.retired,
            wipe: device.wipe,
            wipe_now,
            more,
            scopes,
        })
    }

    fn report_wiped(&self, token: &str, now_ms: i64) -> Result<()> {
        let Some((status, device)) = read_one(self, |tx| tx.device_by_token_hash(&sha256_hex(token)))? else {
            return Err(ServerError::Unauthenticated);
        };
        if status != "active" && status != "wiped" {
            return Err(ServerError::DeviceRevoked);
        }
        if !write(self, |tx| tx.device_wiped(&device.id, now_ms))? {
            return Err(ServerError::NotAllowed(
                "this phone was not told to wipe: keep its store, and sync (a wipe ordered by an administrator goes through a sync first)".into(),
            ));
        }
        tracing::warn!(device = %device.id, "device reported it destroyed its store (ordered wipe)");
        Ok(())
    }

    fn blob_status(&self, device: &Device, sha256: &str, owner: Option<&BlobOwner>) -> Result<BlobStatus> {
        // Without an owner it is a download's question, and a retired device downloads nothing.
        if owner.is_none() && device.retired {
            return Err(ServerError::DeviceRetired);
        }
        let allowed = read(self, |tx| match owner {
            Some(o) if may_upload_for(tx, device, o)? => Ok(true),
            _ => sees_blob(tx, device, sha256),
        })?;
        if !allowed {
            // The same answer as a download's: an outsider learns nothing of whether it exists.
            return Err(ServerError::NotInScope(format!("blob {sha256} belongs to nothing you can see")));
        }
        self.blobs().status(sha256)
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
        if !read(self, |tx| may_upload_for(tx, device, owner))? {
            return Err(ServerError::NotInScope(format!(
                "{} is not one of yours: sync it before its photos, or check the owner",
                owner.to_query()
            )));
        }
        let begun = self.blobs().begin(sha256, offset, total, len)?;
        if let Begun::Complete(status) = &begun {
            let size = status.offset;
            write(self, |tx| tx.link_blob(sha256, size, &link_owner(owner), &device.id, now_ms))?;
        }
        Ok(begun)
    }

    fn end_blob(&self, device: &Device, owner: &BlobOwner, writer: Writer, now_ms: i64) -> Result<BlobStatus> {
        let sha256 = writer.sha256().to_owned();
        let status = writer.finish()?;
        if status.complete {
            write(self, |tx| tx.link_blob(&sha256, status.offset, &link_owner(owner), &device.id, now_ms))?;
        }
        Ok(status)
    }

    fn operator_stats(&self, now_ms: i64) -> Result<OperatorStats> {
        let quarantine_pending = read(self, |tx| tx.pending_quarantine())?;
        const HOUR: i64 = 3_600_000;
        let mut buckets: Vec<(&'static str, i64)> =
            ["never_synced", "nothing_pending", "under_1h", "1h_to_1d", "1d_to_7d", "over_7d"]
                .into_iter()
                .map(|b| (b, 0))
                .collect();
        for d in self.list_devices(now_ms)?.into_iter().filter(|d| d.status == "active") {
            let bucket = match (d.last_seen_ms, d.unsynced_age_ms) {
                (None, _) => "never_synced",
                (Some(_), None) => "nothing_pending",
                (Some(_), Some(a)) if a < HOUR => "under_1h",
                (Some(_), Some(a)) if a < 24 * HOUR => "1h_to_1d",
                (Some(_), Some(a)) if a < 7 * 24 * HOUR => "1d_to_7d",
                _ => "over_7d",
            };
            if let Some(b) = buckets.iter_mut().find(|(name, _)| *name == bucket) {
                b.1 += 1;
            }
        }
        Ok(OperatorStats { quarantine_pending, devices_by_unsynced_age: buckets })
    }

    fn get_blob(&self, device: &Device, sha256: &str) -> Result<Vec<u8>> {
        if device.retired {
            return Err(ServerError::DeviceRetired);
        }
        if !read(self, |tx| sees_blob(tx, device, sha256))? {
            // The same answer whether the blob exists or not: a device learns nothing of others' evidence.
            return Err(ServerError::NotInScope(format!("blob {sha256} belongs to nothing you can see")));
        }
        self.blobs().read(sha256)
    }
}

impl<B: Backend> AdminStore for B {
    fn current_catalog(&self) -> Arc<Catalog> {
        Arc::clone(self.rules().places.catalog())
    }

    fn import_catalog(&self, catalog: &Catalog) -> Result<u64> {
        let version = write(self, |tx| {
            let version = tx.meta("catalog_version")?.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
            tx.replace_catalog(catalog)?;
            place_grids(tx, catalog)?;
            tx.set_meta("catalog_version", &version.to_string())?;
            Ok(version)
        })?;
        let mut new = catalog.clone();
        new.version = version;
        self.catalog_changed(new);
        Ok(version)
    }

    fn set_user(&self, user: &str, role: Role, department: Option<&str>, scopes: &[Scope]) -> Result<()> {
        // `@` separates a person from their district at sign-in (`city`): a name holding one
        // could be read as another district's person.
        if user.is_empty()
            || user.len() > 64
            || user.contains(|c: char| c == '@' || c.is_whitespace())
            || user.chars().any(char::is_control)
        {
            return Err(ServerError::BadRequest(format!(
                "{user:?} is not a user id: 1 to 64 characters, no spaces and no @"
            )));
        }
        // A user's own scope (`user:ID`, their reports) is everyone's and never granted.
        if let Some(own) = scopes.iter().find(|s| matches!(s, Scope::User(_))) {
            return Err(ServerError::BadRequest(format!(
                "scope {own}: use grid:ID, community:NAME, street:NAME or department:ID"
            )));
        }
        if user == super::escalation::SYSTEM_USER {
            return Err(ServerError::BadRequest(format!(
                "{user:?} is the server's own person (automatic escalations): choose another id"
            )));
        }
        put_user(self, user, role, department, scopes)
    }

    fn enrol_device(&self, user: &str, now_ms: i64) -> Result<(String, String)> {
        if user == super::escalation::SYSTEM_USER {
            return Err(ServerError::BadRequest(format!("{user:?} is the server's own person: no phone is theirs")));
        }
        let id = format!("dev-{}", random_hex(6)?);
        let secret = random_hex(10)?;
        write(self, |tx| {
            if !tx.user_exists(user)? {
                return Err(ServerError::NotFound(format!("user {user}: add the user first")));
            }
            // The short code prefixes readable case codes, so it is kept to 6 characters and
            // drawn again on the rare collision rather than made longer.
            for _ in 0..16 {
                let code = short_code()?;
                if tx.code_taken(&code)? {
                    continue;
                }
                tx.insert_device(&id, &code, user, &sha256_hex(&secret), now_ms)?;
                return Ok((id.clone(), secret.clone()));
            }
            Err(ServerError::Internal("could not find a free device code".into()))
        })
    }

    fn retire_device(&self, device: &str, now_ms: i64) -> Result<()> {
        if !write(self, |tx| tx.retire_device(device, now_ms))? {
            return Err(ServerError::NotFound(format!("active device {device}")));
        }
        Ok(())
    }

    fn revoke_device(&self, device: &str) -> Result<()> {
        if !write(self, |tx| tx.revoke_device(device))? {
            return Err(ServerError::NotFound(format!("device {device}")));
        }
        Ok(())
    }

    fn wipe_device(&self, device: &str, now_ms: i64) -> Result<()> {
        if !write(self, |tx| tx.order_wipe(device, now_ms))? {
            return Err(ServerError::NotFound(format!(
                "active device {device} (a revoked device cannot be reached: wipe before revoking)"
            )));
        }
        tracing::warn!(device = %device, "wipe ordered");
        Ok(())
    }

    fn list_devices(&self, now_ms: i64) -> Result<Vec<DeviceInfo>> {
        self.flush_seen()?;
        let (rows, chains) = read(self, |tx| Ok((tx.devices()?, tx.chain_summaries()?)))?;
        let chains: std::collections::HashMap<String, crate::store::port::ChainSummary> =
            chains.into_iter().map(|c| (c.device_id.clone(), c)).collect();
        let mut devices: Vec<DeviceInfo> = rows
            .into_iter()
            .map(|r| {
                let last_state: Option<serde_json::Value> =
                    r.last_state.as_deref().and_then(|s| serde_json::from_str(s).ok());
                DeviceInfo {
                    unsynced_age_ms: unsynced_age_ms(r.last_seen_ms, last_state.as_ref(), now_ms),
                    chain: r.signs.then(|| {
                        chains
                            .get(&r.id)
                            .map(|c| crate::store::ChainState { links: c.links, holes: c.holes(), forks: c.forks })
                            .unwrap_or_default()
                    }),
                    // A retired device is still allowed in; it shows as retired, then drained. One
                    // ordered wiped shows where its wipe stands until it reports (then `wiped`).
                    status: match (r.status.as_str(), r.retired_ms, r.drained_ms) {
                        ("active", _, _) if r.wipe_confirmed_ms.is_some() => "wipe_confirmed".to_owned(),
                        ("active", _, _) if r.wipe_ordered_ms.is_some() => "wipe_ordered".to_owned(),
                        ("active", Some(_), Some(_)) => "retired_drained".to_owned(),
                        ("active", Some(_), None) => "retired".to_owned(),
                        (other, _, _) => other.to_owned(),
                    },
                    id: r.id,
                    code: r.code,
                    user: r.user,
                    last_seen_ms: r.last_seen_ms,
                    last_state,
                }
            })
            .collect();
        devices.sort_by_key(|d| std::cmp::Reverse(d.unsynced_age_ms));
        Ok(devices)
    }

    fn quarantined(&self) -> Result<Vec<QuarantinedItem>> {
        read(self, |tx| tx.quarantine_list())
    }

    fn release_quarantined(&self, key: &str, now_ms: i64) -> Result<()> {
        let rules = self.rules();
        write(self, |tx| super::push::release(&rules, tx, key, now_ms))
    }

    fn reject_quarantined(&self, key: &str) -> Result<()> {
        if !write(self, |tx| tx.reject_quarantined(key))? {
            return Err(ServerError::NotFound(format!("pending quarantined item {key}")));
        }
        Ok(())
    }

    fn set_min_app_version(&self, version: &str) -> Result<()> {
        write(self, |tx| tx.set_meta("min_app_version", version))
    }

    fn counts(&self) -> Result<(i64, i64, i64)> {
        read(self, |tx| tx.counts())
    }

    fn doc_heads(&self, doc_id: &str) -> Result<Vec<String>> {
        let changes = read(self, |tx| tx.history_upto(doc_id, i64::MAX))?
            .into_iter()
            .filter_map(|c| automerge::Change::from_bytes(c.bytes).ok())
            .collect::<Vec<_>>();
        let heads = gridwork_model::fence::fenced(move || {
            let mut doc = automerge::Automerge::new();
            doc.apply_changes(changes).map(|()| doc.get_heads())
        })
        .map_err(ServerError::Internal)?
        .map_err(|e| ServerError::Internal(e.to_string()))?;
        let mut heads: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
        heads.sort();
        Ok(heads)
    }

    fn docs_in_scope(&self, user: &str) -> Result<Vec<String>> {
        read(self, |tx| {
            let mut scopes: Vec<String> = tx.user_scopes(user)?.into_keys().collect();
            scopes.push(Scope::User(user.into()).to_string());
            let mut docs = BTreeSet::new();
            for s in scopes {
                docs.extend(tx.docs_in_scope(&s)?);
            }
            Ok(docs.into_iter().collect())
        })
    }

    fn doc_flags(&self, doc_id: &str) -> Result<Vec<String>> {
        let row = read(self, |tx| tx.case_row(doc_id))?;
        Ok(row.map(|r| r.flags).unwrap_or_default().split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect())
    }

    fn export_case(&self, case_id: &str, by: &str, now_ms: i64) -> Result<Vec<u8>> {
        let blobs = Arc::clone(self.blobs());
        read(self, |tx| super::bundle::export(tx, &blobs, case_id, by, now_ms))
    }

    fn blob_count(&self) -> Result<i64> {
        read(self, |tx| tx.blob_count())
    }

    fn blob_bytes_received(&self, sha256: &str) -> u64 {
        self.blobs().bytes_received(sha256)
    }
}

/// Stores a person with their role and granted scopes (scopes they lose are removed at a new
/// sequence number), without `set_user`'s checks: the server's own person is made here.
pub(crate) fn put_user<B: Backend + ?Sized>(
    b: &B,
    user: &str,
    role: Role,
    department: Option<&str>,
    scopes: &[Scope],
) -> Result<()> {
    write(b, |tx| {
        tx.upsert_user(user, Role::as_str(role), department)?;
        let current = tx.granted_scopes(user)?;
        let wanted: BTreeSet<String> = scopes.iter().map(Scope::to_string).collect();
        if current != wanted {
            // A sequence number marks the moment, so devices' cursors can tell what is new to them.
            let seq = tx.next_seq()?;
            for s in wanted.difference(&current) {
                tx.grant_scope(user, s, seq)?;
            }
            for s in current.difference(&wanted) {
                tx.remove_scope(user, s, seq)?;
            }
        }
        Ok(())
    })
}
