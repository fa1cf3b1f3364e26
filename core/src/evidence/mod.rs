//! The photo pipeline: what happens between the camera and the evidence store.
//!
//! A phone camera produces 12 MP or more; a supervisor needs enough to judge a fire exit, not a
//! print. Every photo is stored as a JPEG of at most [`STORED_LONG_EDGE`] px (quality 80) plus a
//! thumbnail of at most [`THUMB_LONG_EDGE`] px, with EXIF orientation applied and every other
//! piece of metadata stripped (re-encoding writes none). The original's hash, EXIF capture time
//! and EXIF GPS are kept in the [`EvidenceRef`] as evidence of provenance.
//!
//! JPEGs are decoded straight at reduced size in the DCT domain (`jpeg-decoder`'s `scale`), which
//! skips most of the work of a full decode; see docs/adr/0004-photo-pipeline.md for the figures.
//! PNG and WebP go through the `image` crate with allocation limits. Decompression bombs and
//! truncated files are refused before anything is stored.

use std::io::Cursor;

use fast_image_resize as fir;
use gridwork_model::evidence::{EvidenceKind, EvidenceRef, PhotoMetadata};
use sha2::{Digest, Sha256};

/// Longest edge of the stored photo.
pub const STORED_LONG_EDGE: u32 = 1600;
/// Longest edge of the thumbnail.
pub const THUMB_LONG_EDGE: u32 = 320;
/// JPEG quality of the stored photo.
pub const STORED_QUALITY: u8 = 80;
const THUMB_QUALITY: u8 = 70;
/// Refuse images with more pixels than this (decompression bombs).
pub const MAX_PIXELS: u64 = 50_000_000;
/// Refuse photo files larger than this before reading them: a 48 MP phone JPEG is about 25 MB,
/// the largest PNG within [`MAX_PIXELS`] rarely over 100 MB.
pub const MAX_PHOTO_FILE_BYTES: u64 = 128 * 1024 * 1024;
/// Refuse images whose decode would need more memory than this.
pub const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// Why a photo was refused. Nothing is stored when any of these is returned.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EvidenceError {
    #[error("{format} photos are not supported: convert to JPEG (on iOS, set Camera → Formats → Most Compatible)")]
    Unsupported { format: &'static str },
    #[error("not a JPEG, PNG or WebP image")]
    UnknownFormat,
    #[error("the photo is empty (0 bytes): take it again")]
    Empty,
    #[error("image is {width}×{height} ({megapixels} MP); at most {max_megapixels} MP are accepted")]
    TooManyPixels { width: u32, height: u32, megapixels: u64, max_megapixels: u64 },
    #[error("decoding would need {needed_mb} MB; at most {max_mb} MB are allowed")]
    DecodeTooLarge { needed_mb: u64, max_mb: u64 },
    #[error("the image is truncated or corrupt ({reason}): take the photo again")]
    Corrupt { reason: String },
    #[error("could not encode the stored photo: {reason}")]
    Encode { reason: String },
    #[error("cannot use the photo file {path}: {reason}")]
    File { path: String, reason: String },
}

/// A processed photo: the bytes to store and the reference to record.
#[derive(Debug, Clone)]
pub struct ProcessedPhoto {
    pub stored: Vec<u8>,
    pub thumb: Vec<u8>,
    pub evidence: EvidenceRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jpeg,
    Png,
    WebP,
}

fn sniff(bytes: &[u8]) -> Result<Format, EvidenceError> {
    if bytes.is_empty() {
        return Err(EvidenceError::Empty);
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Ok(Format::WebP);
    }
    // ISO-BMFF: a `ftyp` box whose brand says HEIF/HEIC (what iPhones shoot by default).
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        let brand = &bytes[8..12];
        if [b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"].iter().any(|b| brand == *b) {
            return Err(EvidenceError::Unsupported { format: "HEIC" });
        }
        if brand == b"avif" {
            return Err(EvidenceError::Unsupported { format: "AVIF" });
        }
    }
    Err(EvidenceError::UnknownFormat)
}

/// What EXIF says about the capture.
#[derive(Debug, Clone, PartialEq)]
struct ExifFacts {
    /// As named (1–8), or `None`: the pixels are stored as decoded.
    orientation: Option<u8>,
    time: Option<String>,
    gps: Option<(f64, f64)>,
    status: PhotoMetadata,
}

/// Reads what EXIF can give, leniently: many writers lay EXIF out against the standard (a
/// sub-IFD without its next-IFD pointer, a broken thumbnail directory), and readers such as
/// exiftool and Pillow read them. Whatever can be read is kept and the status says how much;
/// a photo without readable EXIF is still evidence, never refused for it.
fn read_exif(bytes: &[u8]) -> ExifFacts {
    use exif::{In, Tag, Value};
    let mut facts = ExifFacts { orientation: None, time: None, gps: None, status: PhotoMetadata::Read };
    let exif = match exif::Reader::new().continue_on_error(true).read_from_container(&mut Cursor::new(bytes)) {
        Ok(exif) => exif,
        Err(exif::Error::NotFound(_)) => return ExifFacts { status: PhotoMetadata::Absent, ..facts },
        Err(e) => match e.distill_partial_result(|_| ()) {
            Ok(exif) => {
                facts.status = PhotoMetadata::PartlyRead;
                exif
            }
            Err(_) => return ExifFacts { status: PhotoMetadata::Unreadable, ..facts },
        },
    };
    if let Some(o) = exif.get_field(Tag::Orientation, In::PRIMARY).and_then(|f| f.value.get_uint(0)) {
        facts.orientation = u8::try_from(o).ok().filter(|o| (1..=8).contains(o));
    }
    let time =
        exif.get_field(Tag::DateTimeOriginal, In::PRIMARY).or_else(|| exif.get_field(Tag::DateTime, In::PRIMARY));
    if let Some(Value::Ascii(v)) = time.map(|f| &f.value) {
        facts.time = v
            .first()
            .map(|s| String::from_utf8_lossy(s).trim_end_matches(['\0', ' ']).to_owned())
            .filter(|s| !s.is_empty());
    }
    let coord = |tag: Tag, ref_tag: Tag, negative: u8| -> Option<f64> {
        let f = exif.get_field(tag, In::PRIMARY)?;
        let Value::Rational(r) = &f.value else { return None };
        if r.len() < 3 || r.iter().take(3).any(|r| r.denom == 0) {
            return None;
        }
        let v = r[0].to_f64() + r[1].to_f64() / 60.0 + r[2].to_f64() / 3600.0;
        let sign = match exif.get_field(ref_tag, In::PRIMARY).map(|f| &f.value) {
            Some(Value::Ascii(a)) if a.first().and_then(|s| s.first()) == Some(&negative) => -1.0,
            _ => 1.0,
        };
        v.is_finite().then_some(sign * v)
    };
    if let (Some(lat), Some(lon)) =
        (coord(Tag::GPSLatitude, Tag::GPSLatitudeRef, b'S'), coord(Tag::GPSLongitude, Tag::GPSLongitudeRef, b'W'))
    {
        if gridwork_model::geo::check_coordinates(lat, lon).is_ok() {
            facts.gps = Some((lat, lon));
        }
    }
    // Parsed, yet holding nothing a reader could use: a block of garbage that looked like one.
    if facts.status == PhotoMetadata::PartlyRead && exif.fields().next().is_none() {
        facts.status = PhotoMetadata::Unreadable;
    }
    facts
}

fn check_pixels(width: u32, height: u32, max_pixels: u64) -> Result<(), EvidenceError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(EvidenceError::TooManyPixels {
            width,
            height,
            megapixels: pixels / 1_000_000,
            max_megapixels: max_pixels / 1_000_000,
        });
    }
    // A decoder holds the RGBA frame at worst; component planes and buffers add about as much.
    let needed = pixels * 4 * 2;
    if needed > MAX_DECODE_BYTES {
        return Err(EvidenceError::DecodeTooLarge { needed_mb: needed >> 20, max_mb: MAX_DECODE_BYTES >> 20 });
    }
    Ok(())
}

/// An RGB8 frame.
struct Rgb {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

fn corrupt(reason: impl std::fmt::Display) -> EvidenceError {
    EvidenceError::Corrupt { reason: reason.to_string() }
}

/// Target size fitting `long_edge`, never upscaling.
fn fit(width: u32, height: u32, long_edge: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= long_edge {
        return (width, height);
    }
    let scale = f64::from(long_edge) / f64::from(long);
    let w = ((f64::from(width) * scale).round() as u32).max(1);
    let h = ((f64::from(height) * scale).round() as u32).max(1);
    (w, h)
}

fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<Rgb, EvidenceError> {
    // A JPEG must end with an EOI marker (cameras sometimes append data after it, so look for
    // it near the end rather than exactly at it). jpeg-decoder pads a cut-off scan with grey
    // rather than failing, which would store a half photo as evidence.
    let tail = &bytes[bytes.len().saturating_sub(64 * 1024)..];
    if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(corrupt("no end-of-image marker"));
    }
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(usize::try_from(MAX_DECODE_BYTES).unwrap_or(usize::MAX));
    decoder.read_info().map_err(corrupt)?;
    let info = decoder.info().ok_or_else(|| corrupt("no frame header"))?;
    check_pixels(u32::from(info.width), u32::from(info.height), max_pixels)?;
    let (tw, th) = fit(u32::from(info.width), u32::from(info.height), STORED_LONG_EDGE);
    // Decode at the smallest DCT scale (1/8 … 1) that is still at least the target size.
    let (w, h) =
        decoder.scale(u16::try_from(tw).unwrap_or(u16::MAX), u16::try_from(th).unwrap_or(u16::MAX)).map_err(corrupt)?;
    let raw = decoder.decode().map_err(corrupt)?;
    let info = decoder.info().ok_or_else(|| corrupt("no frame header"))?;
    let (width, height) = (u32::from(w), u32::from(h));
    let n = (width * height) as usize;
    let pixels = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => raw,
        jpeg_decoder::PixelFormat::L8 => raw.iter().flat_map(|&l| [l, l, l]).collect(),
        jpeg_decoder::PixelFormat::L16 => raw.chunks_exact(2).flat_map(|c| [c[0], c[0], c[0]]).collect(),
        jpeg_decoder::PixelFormat::CMYK32 => {
            // The decoder inverts every four-channel frame, as Adobe's writers store CMYK
            // inverted (their APP14 marker says so): for those it yields ink amounts. A CMYK
            // JPEG without the marker stored ink amounts, so the decoder's output is inverted.
            let ink = has_adobe_marker(bytes);
            raw.chunks_exact(4)
                .flat_map(|c| {
                    let (k, cmy) = if ink {
                        (255 - u16::from(c[3]), [c[0], c[1], c[2]].map(|v| 255 - u16::from(v)))
                    } else {
                        (u16::from(c[3]), [c[0], c[1], c[2]].map(u16::from))
                    };
                    cmy.map(|v| (v * k / 255) as u8)
                })
                .collect()
        }
    };
    if pixels.len() != n * 3 {
        return Err(corrupt("decoded size does not match the header"));
    }
    Ok(Rgb { width, height, pixels })
}

/// Whether a JPEG carries Adobe's APP14 marker (before its first scan).
fn has_adobe_marker(bytes: &[u8]) -> bool {
    let mut at = 2; // after SOI
    while at + 4 <= bytes.len() && bytes[at] == 0xFF {
        let marker = bytes[at + 1];
        if marker == 0xDA || marker == 0xD9 {
            return false; // start of scan, end of image
        }
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        if marker == 0xEE && bytes.get(at + 4..at + 9) == Some(b"Adobe".as_slice()) {
            return true;
        }
        if len < 2 {
            return false;
        }
        at += 2 + len;
    }
    false
}

fn decode_with_image(bytes: &[u8], format: image::ImageFormat, max_pixels: u64) -> Result<Rgb, EvidenceError> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let (w, h) = image::ImageReader::with_format(Cursor::new(bytes), format).into_dimensions().map_err(corrupt)?;
    check_pixels(w, h, max_pixels)?;
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => EvidenceError::DecodeTooLarge {
            needed_mb: (u64::from(w) * u64::from(h) * 8) >> 20,
            max_mb: MAX_DECODE_BYTES >> 20,
        },
        other => corrupt(other),
    })?;
    let rgb = img.into_rgb8();
    Ok(Rgb { width: rgb.width(), height: rgb.height(), pixels: rgb.into_raw() })
}

fn resize(src: Rgb, long_edge: u32) -> Result<Rgb, EvidenceError> {
    let (tw, th) = fit(src.width, src.height, long_edge);
    if (tw, th) == (src.width, src.height) {
        return Ok(src);
    }
    let src_img = fir::images::Image::from_vec_u8(src.width, src.height, src.pixels, fir::PixelType::U8x3)
        .map_err(|e| EvidenceError::Encode { reason: e.to_string() })?;
    let mut dst = fir::images::Image::new(tw, th, fir::PixelType::U8x3);
    // A bilinear convolution averages over the whole reduction (no aliasing on the ≥5× thumbnail)
    // and is the cheapest filter that does.
    let options = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
    fir::Resizer::new()
        .resize(&src_img, &mut dst, &options)
        .map_err(|e| EvidenceError::Encode { reason: e.to_string() })?;
    Ok(Rgb { width: tw, height: th, pixels: dst.into_vec() })
}

/// Applies an EXIF orientation (1–8) so the stored pixels are upright.
fn orient(src: Rgb, orientation: u8) -> Rgb {
    if orientation <= 1 || orientation > 8 {
        return src;
    }
    let (w, h) = (src.width as usize, src.height as usize);
    let transposed = orientation >= 5;
    let (ow, oh) = if transposed { (h, w) } else { (w, h) };
    let mut out = vec![0u8; src.pixels.len()];
    for y in 0..h {
        for x in 0..w {
            // Where source pixel (x, y) lands in the upright image.
            let (dx, dy) = match orientation {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (h - 1 - y, x),
                7 => (h - 1 - y, w - 1 - x),
                _ => (y, w - 1 - x), // 8
            };
            let s = (y * w + x) * 3;
            let d = (dy * ow + dx) * 3;
            out[d..d + 3].copy_from_slice(&src.pixels[s..s + 3]);
        }
    }
    Rgb { width: ow as u32, height: oh as u32, pixels: out }
}

fn encode_jpeg(img: &Rgb, quality: u8) -> Result<Vec<u8>, EvidenceError> {
    let mut out = Vec::with_capacity(img.pixels.len() / 8);
    let w = u16::try_from(img.width).map_err(|_| EvidenceError::Encode { reason: "too wide".into() })?;
    let h = u16::try_from(img.height).map_err(|_| EvidenceError::Encode { reason: "too tall".into() })?;
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(&img.pixels, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| EvidenceError::Encode { reason: e.to_string() })?;
    Ok(out)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads a photo file as the camera app wrote it, in native memory (never through the app's
/// heap: a 12 MP JPEG as a `ByteArray` on a low-end phone's JVM heap risks an
/// OutOfMemoryError), refusing an empty one and one past [`MAX_PHOTO_FILE_BYTES`] before reading.
pub fn read_photo_file(path: &std::path::Path) -> Result<Vec<u8>, EvidenceError> {
    use std::io::Read;
    let file_error = |reason: String| EvidenceError::File { path: path.display().to_string(), reason };
    let file = std::fs::File::open(path).map_err(|e| file_error(e.to_string()))?;
    let len = file.metadata().map_err(|e| file_error(e.to_string()))?.len();
    if len == 0 {
        return Err(EvidenceError::Empty);
    }
    if len > MAX_PHOTO_FILE_BYTES {
        return Err(file_error(format!("it is {} MB; at most {} MB are read", len >> 20, MAX_PHOTO_FILE_BYTES >> 20)));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // `take`: a file still being written cannot grow past the cap while it is read.
    file.take(MAX_PHOTO_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| file_error(e.to_string()))?;
    if bytes.len() as u64 > MAX_PHOTO_FILE_BYTES {
        return Err(file_error(format!("it grew past {} MB while being read", MAX_PHOTO_FILE_BYTES >> 20)));
    }
    Ok(bytes)
}

/// Runs the whole pipeline on the bytes a camera or gallery produced.
pub fn process_photo(original: &[u8]) -> Result<ProcessedPhoto, EvidenceError> {
    process_photo_within(original, MAX_PIXELS)
}

/// [`process_photo`] with another pixel cap than [`MAX_PIXELS`] (at most it): the fuzz target
/// runs the pipeline with a small one, so that inputs of a few hundred bytes declaring tens of
/// megapixels (each a 2 s decode, within the real cap) do not take the fuzzer's whole time.
pub fn process_photo_within(original: &[u8], max_pixels: u64) -> Result<ProcessedPhoto, EvidenceError> {
    let max_pixels = max_pixels.min(MAX_PIXELS);
    let format = sniff(original)?;
    let exif = read_exif(original);
    let decoded = match format {
        Format::Jpeg => decode_jpeg(original, max_pixels)?,
        Format::Png => decode_with_image(original, image::ImageFormat::Png, max_pixels)?,
        Format::WebP => decode_with_image(original, image::ImageFormat::WebP, max_pixels)?,
    };
    let stored_img = orient(resize(decoded, STORED_LONG_EDGE)?, exif.orientation.unwrap_or(1));
    let (width, height) = (stored_img.width, stored_img.height);
    let stored = encode_jpeg(&stored_img, STORED_QUALITY)?;
    let thumb_img = resize(stored_img, THUMB_LONG_EDGE)?;
    let thumb = encode_jpeg(&thumb_img, THUMB_QUALITY)?;
    let sha = sha256_hex(&stored);
    let evidence = EvidenceRef {
        kind: EvidenceKind::Photo,
        mime: "image/jpeg".into(),
        size: stored.len() as u64,
        original_sha256: sha256_hex(original),
        thumb_sha256: Some(sha256_hex(&thumb)),
        width,
        height,
        exif_time: exif.time,
        exif_gps: exif.gps,
        metadata: Some(exif.status),
        orientation: exif.orientation,
        exif_gps_off_m: None,
        sha256: sha,
    };
    Ok(ProcessedPhoto { stored, thumb, evidence })
}

/// Reads a JPEG's dimensions from its header.
pub fn jpeg_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let mut d = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    d.read_info().ok()?;
    d.info().map(|i| (u32::from(i.width), u32::from(i.height)))
}

pub mod synthetic;

#[cfg(test)]
mod tests;
