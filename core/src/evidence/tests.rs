use super::synthetic::{camera_like_jpeg, ExifSpec};
use super::*;

fn decode_rgb(jpeg: &[u8]) -> image::RgbImage {
    image::load_from_memory(jpeg).expect("stored file decodes").into_rgb8()
}

#[test]
fn large_photo_is_stored_at_1600_with_thumbnail_and_hashes() {
    let original = camera_like_jpeg(4000, 3000, &ExifSpec::default(), 7);
    let p = process_photo(&original).expect("a camera JPEG is accepted");
    assert_eq!((p.evidence.width, p.evidence.height), (1600, 1200));
    assert_eq!(jpeg_dimensions(&p.stored), Some((1600, 1200)));
    assert_eq!(jpeg_dimensions(&p.thumb), Some((320, 240)));
    assert_eq!(p.evidence.sha256, sha256_hex(&p.stored));
    assert_eq!(p.evidence.original_sha256, sha256_hex(&original));
    assert_eq!(p.evidence.thumb_sha256.as_deref(), Some(sha256_hex(&p.thumb).as_str()));
    assert_eq!(p.evidence.size, p.stored.len() as u64);
    assert!(p.stored.len() < original.len() / 3, "stored {} vs original {}", p.stored.len(), original.len());
}

#[test]
fn exif_orientation_is_applied_and_metadata_recorded_then_stripped() {
    let spec =
        ExifSpec { orientation: Some(6), time: Some("2026:11:26 09:15:00".into()), gps: Some((31.2304, 121.4737)) };
    let original = camera_like_jpeg(400, 200, &spec, 3);
    let p = process_photo(&original).expect("accepted");
    // Orientation 6 = rotate 90° clockwise: a landscape sensor frame becomes portrait.
    assert_eq!((p.evidence.width, p.evidence.height), (200, 400));
    // The red top-left quadrant of the sensor frame ends up top-right.
    let img = decode_rgb(&p.stored);
    let tr = img.get_pixel(150, 50);
    let tl = img.get_pixel(50, 50);
    assert!(tr[0] > 180 && tr[1] < 80, "top-right should be red, got {tr:?}");
    assert!(tl[0] < 180 || tl[1] > 80, "top-left should not be red, got {tl:?}");
    assert_eq!(p.evidence.exif_time.as_deref(), Some("2026:11:26 09:15:00"));
    let (lat, lon) = p.evidence.exif_gps.expect("gps read");
    assert!((lat - 31.2304).abs() < 1e-4 && (lon - 121.4737).abs() < 1e-4, "{lat},{lon}");
    // Nothing of the EXIF survives in the stored files.
    for stored in [&p.stored, &p.thumb] {
        assert!(exif::Reader::new().read_from_container(&mut std::io::Cursor::new(stored.as_slice())).is_err());
        assert!(!stored.windows(4).any(|w| w == b"Exif"));
    }
}

#[test]
fn png_and_webp_are_accepted() {
    let px = synthetic::camera_like_rgb(300, 200, 1);
    let img = image::RgbImage::from_raw(300, 200, px).expect("sized");
    for format in [image::ImageFormat::Png, image::ImageFormat::WebP] {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img.clone()).write_to(&mut bytes, format).expect("encode");
        let p = process_photo(bytes.get_ref()).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!((p.evidence.width, p.evidence.height), (300, 200));
        assert_eq!(p.evidence.mime, "image/jpeg");
    }
}

#[test]
fn heic_is_refused_with_advice() {
    let mut heic = vec![0, 0, 0, 24];
    heic.extend(b"ftypheic\0\0\0\0mif1heic");
    let err = process_photo(&heic).expect_err("HEIC is refused");
    assert_eq!(err, EvidenceError::Unsupported { format: "HEIC" });
    assert!(err.to_string().contains("convert to JPEG"));
    assert_eq!(process_photo(b"GIF89a....").err(), Some(EvidenceError::UnknownFormat));
}

#[test]
fn truncated_and_corrupt_jpegs_are_refused() {
    let original = camera_like_jpeg(800, 600, &ExifSpec::default(), 9);
    let truncated = &original[..original.len() / 2];
    assert!(matches!(process_photo(truncated), Err(EvidenceError::Corrupt { .. })));
    let mut garbage = original.clone();
    for b in garbage.iter_mut().skip(600).take(4000) {
        *b = 0xFF;
    }
    assert!(
        matches!(process_photo(&garbage), Err(EvidenceError::Corrupt { .. })),
        "{:?}",
        process_photo(&garbage).err()
    );
}

#[test]
fn decompression_bombs_are_refused_before_decoding() {
    // A JPEG header claiming 10000×10000 (100 MP): patch the SOF0 dimensions of a small image.
    let mut bomb = camera_like_jpeg(64, 64, &ExifSpec::default(), 1);
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline SOF0");
    bomb[sof + 5..sof + 7].copy_from_slice(&10_000u16.to_be_bytes());
    bomb[sof + 7..sof + 9].copy_from_slice(&10_000u16.to_be_bytes());
    assert!(matches!(process_photo(&bomb), Err(EvidenceError::TooManyPixels { megapixels: 100, .. })));

    // A PNG header claiming 60000×1000 (60 MP).
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image::RgbImage::new(4, 4))
        .write_to(&mut png, image::ImageFormat::Png)
        .expect("png");
    let mut png = png.into_inner();
    png[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&1_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(process_photo(&png), Err(EvidenceError::TooManyPixels { .. })), "{:?}", process_photo(&png).err());
}

#[test]
fn a_smaller_pixel_cap_refuses_what_the_real_one_takes_and_never_raises_it() {
    // 2000×1500 declared (3 MP) in a small image's header: within the real cap, over 2 MP.
    let mut jpeg = camera_like_jpeg(64, 64, &ExifSpec::default(), 1);
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline SOF0");
    jpeg[sof + 5..sof + 7].copy_from_slice(&1_500u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&2_000u16.to_be_bytes());
    assert!(matches!(
        process_photo_within(&jpeg, 2_000_000),
        Err(EvidenceError::TooManyPixels { megapixels: 3, max_megapixels: 2, .. })
    ));
    assert!(!matches!(process_photo(&jpeg), Err(EvidenceError::TooManyPixels { .. })));
    // A cap above the real one is the real one.
    let mut bomb = jpeg.clone();
    bomb[sof + 5..sof + 7].copy_from_slice(&10_000u16.to_be_bytes());
    bomb[sof + 7..sof + 9].copy_from_slice(&10_000u16.to_be_bytes());
    assert!(matches!(process_photo_within(&bomb, u64::MAX), Err(EvidenceError::TooManyPixels { megapixels: 100, .. })));
}

/// PNG chunk CRC (the header must be valid for the size check to be what refuses it).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
