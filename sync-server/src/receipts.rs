//! The server's receipts for the changes it accepts (`gridwork_model::wire::Receipt`).
//!
//! A receipt is an HMAC-SHA256, under a key only the server holds (in its store, so a backup
//! carries it), of a change's document, hash and owner device, cut to 16 bytes. Phones keep the
//! receipts of the changes they hold. After a restore from a backup, the server lost what it
//! received since; phones offer everything again, and a change that another device made (or the
//! console) comes with its receipt. The receipt is the server's own word that it once accepted
//! those exact bytes from that owner, so the change goes back in as the owner's, without
//! trusting the device that relays it. A device cannot make a receipt for bytes the server never
//! accepted. Issue 18's device signatures will let a relay be checked without the server's key.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use gridwork_model::wire::Receipt;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The MAC's length in bytes: 128 bits.
const MAC_BYTES: usize = 16;

/// The server's receipt key.
#[derive(Clone)]
pub struct ReceiptKey {
    key: [u8; 32],
}

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptKey(..)")
    }
}

impl ReceiptKey {
    pub fn new(key: [u8; 32]) -> ReceiptKey {
        ReceiptKey { key }
    }

    /// The keyed hash over the document, the change hash and the owner, each length-prefixed so
    /// that no two inputs read alike. None only for a key HMAC cannot take (never 32 bytes).
    fn keyed(&self, doc: &str, hash: &str, owner: &str) -> Option<HmacSha256> {
        let mut m = HmacSha256::new_from_slice(&self.key).ok()?;
        for part in [doc, hash, owner] {
            m.update(&(part.len() as u64).to_be_bytes());
            m.update(part.as_bytes());
        }
        Some(m)
    }

    /// The receipt for `hash` of `doc`, owned by device `owner`.
    pub fn issue(&self, doc: &str, hash: &str, owner: &str) -> String {
        let mac = self.keyed(doc, hash, owner).map(|m| hex::encode(&m.finalize().into_bytes()[..MAC_BYTES]));
        Receipt { hash: hash.to_owned(), owner: owner.to_owned(), mac: mac.unwrap_or_default() }.to_string()
    }

    /// The receipt in `text` if it is this server's for `hash` of `doc` (the MAC compared in
    /// constant time).
    pub fn verify(&self, doc: &str, hash: &str, text: &str) -> Option<Receipt> {
        let r = Receipt::parse(text).filter(|r| r.hash == hash)?;
        let mac = hex::decode(&r.mac).ok()?;
        self.keyed(doc, hash, &r.owner)?.verify_truncated_left(&mac).ok().map(|()| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn a_receipt_verifies_for_its_document_hash_and_owner_only() {
        let key = ReceiptKey::new([7; 32]);
        let r = key.issue("doc-1", HASH, "dev-a");
        assert_eq!(key.verify("doc-1", HASH, &r).map(|r| r.owner), Some("dev-a".to_owned()));
        // Another document, another change, another key: refused.
        assert!(key.verify("doc-2", HASH, &r).is_none());
        assert!(key.verify("doc-1", &HASH.replace('0', "1"), &r).is_none());
        assert!(ReceiptKey::new([8; 32]).verify("doc-1", HASH, &r).is_none());
        // Another owner written into the receipt, or one MAC digit changed: refused.
        assert!(key.verify("doc-1", HASH, &r.replace(":dev-a:", ":dev-b:")).is_none());
        let last = r.chars().last().unwrap_or('0');
        let flipped = format!("{}{}", &r[..r.len() - 1], if last == '0' { '1' } else { '0' });
        assert!(key.verify("doc-1", HASH, &flipped).is_none());
        assert!(key.verify("doc-1", HASH, "not a receipt").is_none());
    }
}
