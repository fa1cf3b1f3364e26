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

/// What a photo's own metadata (EXIF) yielded, recorded with it so that the console and the apps
/// can say "no capture time in this photo" rather than show nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhotoMetadata {
    /// Read whole.
    Read,
    /// Damaged or laid out against the standard: what could be read was kept.
    PartlyRead,
    /// Present, and nothing of it could be read.
    Unreadable,
    /// The file carries none (a screenshot, a PNG, a camera that writes none).
    Absent,
}

/// Beyond this distance between a photo's own GPS and the fix its report was made with, the
/// photo is flagged: taken elsewhere, or its metadata is not the camera's.
pub const EXIF_GPS_FAR_M: u32 = 1_000;

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
    /// What the photo's metadata yielded; `None` for evidence recorded before this was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<PhotoMetadata>,
    /// The EXIF orientation (1–8) applied to the stored pixels, when the photo named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orientation: Option<u8>,
    /// Metres between `exif_gps` and the report's own fix, when the photo carries a position
    /// and was attached to a report with one (see [`EXIF_GPS_FAR_M`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exif_gps_off_m: Option<u32>,
}

impl EvidenceRef {
    /// The photo's own position is far from the report's fix (flagged, never refused).
    pub fn exif_gps_far(&self) -> bool {
        self.exif_gps_off_m.is_some_and(|m| m > EXIF_GPS_FAR_M)
    }

    /// Records how far the photo's own position is from the report's fix.
    pub fn compare_with_fix(&mut self, lat: f64, lon: f64) {
        self.exif_gps_off_m =
            self.exif_gps.map(|g| crate::geo::distance_m(g, (lat, lon)).round().min(f64::from(u32::MAX)) as u32);
    }
}
