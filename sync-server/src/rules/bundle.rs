//! A case's evidence bundle (`gridwork_model::bundle`, ADR 25), as `admin export-case` and the
//! console's button write it: the case's changes as stored, each with its device's signed link;
//! every device that made one, with its public key; each signing device's chain across the case;
//! the photos the server holds. Read on one snapshot, so the bundle is one moment's truth.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use gridwork_model::bundle::{Bundle, BundleCase, BundleChange, BundleDevice, BundleLink, BundlePhoto, BUNDLE_FORMAT};
use gridwork_model::signing::{ChainFlag, Link, LinkKind};

use crate::blobs::BlobFiles;
use crate::error::{Result, ServerError};
use crate::store::port::ReadTx;

const B64: base64::engine::general_purpose::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The bundle of `case_id`, exported by `by` at `now_ms`: the file's bytes.
pub fn export(tx: &dyn ReadTx, blobs: &BlobFiles, case_id: &str, by: &str, now_ms: i64) -> Result<Vec<u8>> {
    let history = tx.history_upto(case_id, i64::MAX)?;
    if history.is_empty() {
        return Err(ServerError::NotFound(format!("case {case_id}")));
    }
    let (_, case) = super::console::load_case(tx, case_id)?;
    let mut devices = BTreeMap::new();
    let mut places: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut changes = Vec::with_capacity(history.len());
    for c in history {
        if !devices.contains_key(&c.device_id) {
            let device = tx.device(&c.device_id)?;
            let code = tx.device_row(&c.device_id)?.map(|r| r.code).unwrap_or_default();
            devices.insert(
                c.device_id.clone(),
                BundleDevice {
                    user: device.as_ref().map(|d| d.user.clone()).unwrap_or_default(),
                    code,
                    public_key: device.and_then(|d| d.public_key),
                },
            );
        }
        let link = tx.links_of(&c.hash)?.into_iter().find(|l| l.device_id == c.device_id);
        if let Some(l) = &link {
            let span = places.entry(c.device_id.clone()).or_insert((l.seq, l.seq));
            *span = (span.0.min(l.seq), span.1.max(l.seq));
        }
        changes.push(BundleChange {
            hash: c.hash,
            device: c.device_id,
            bytes: B64.encode(&c.bytes),
            link: link.map(|l| Link { seq: l.seq.unsigned_abs(), prev: l.prev, sig: l.sig }),
        });
    }
    let mut chains = BTreeMap::new();
    for (device, (lo, hi)) in places {
        let segment = tx
            .chain_segment(&device, lo, hi)?
            .into_iter()
            .map(|l| BundleLink {
                seq: l.seq.unsigned_abs(),
                prev: l.prev,
                sig: l.sig,
                kind: if l.kind == "record" { LinkKind::Record } else { LinkKind::Change },
                key: l.item_key,
                sha256: l.sha256,
                flag: l.flag.as_deref().and_then(ChainFlag::parse),
            })
            .collect();
        chains.insert(device, segment);
    }
    let mut photos = vec![];
    let mut taken = BTreeSet::new();
    for e in &case.evidence {
        for sha in std::iter::once(&e.sha256).chain(e.thumb_sha256.as_ref()) {
            if taken.insert(sha.clone()) && tx.blob_held(sha)? {
                photos.push(BundlePhoto { sha256: sha.clone(), bytes: B64.encode(blobs.read(sha)?) });
            }
        }
    }
    let bundle = Bundle {
        format: BUNDLE_FORMAT.to_owned(),
        case: BundleCase {
            id: case_id.to_owned(),
            code: case.code.clone(),
            exported_ms: now_ms,
            exported_by: by.to_owned(),
        },
        devices,
        changes,
        chains,
        photos,
    };
    gridwork_model::bundle::write(&bundle).map_err(|e| ServerError::Internal(format!("writing the bundle: {e}")))
}
