//! Evidence references. The bytes live outside the document (on the device in encrypted files,
//! on the server in a blob store); the document only carries this small, immutable description,
//! content-addressed by the SHA-256 of the stored file.

use serde::{Deserialize, Serialize};

/// What kind of evidence; photos come first, the shape leaves room for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    Photo,
    VoiceNote,
    Document,
}

/// One piece of evidence, as recorded in a case document or a check-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceRef {
    pub kind: EvidenceKind,
    pub mime: String,
    /// SHA-256 (hex) of the stored, processed file: its name everywhere.
    pub sha256: String,
    /// Size of the stored file in bytes.
    pub size: u64,
    /// SHA-256 of the bytes the camera produced, before processing — proof of the original.
    pub original_sha256: String,
    /// The thumbnail, a blob of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumb_sha256: Option<String>,
    pub width: u32,
    pub height: u32,
    /// EXIF capture time as written by the camera (local time, no zone), if present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exif_time: Option<String>,
    /// EXIF GPS position (lat, lon) if present — compared with the reported fix to spot fakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exif_gps: Option<(f64, f64)>,
}
