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
    let spec = ExifSpec {
        orientation: Some(6),
        time: Some("2026:11:26 09:15:00".into()),
        gps: Some((31.2304, 121.4737)),
        ..Default::default()
    };
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

/// Where the sensor frame's red top-left quadrant must be once EXIF orientation `o` is applied
/// (as fractions of the upright image): 1 and 5 leave it top-left, 2 and 6 move it top-right,
/// 3 and 7 bottom-right, 4 and 8 bottom-left.
fn red_quadrant(o: u16) -> (f64, f64) {
    match o {
        1 | 5 => (0.25, 0.25),
        2 | 6 => (0.75, 0.25),
        3 | 7 => (0.75, 0.75),
        _ => (0.25, 0.75),
    }
}

#[test]
fn exif_as_every_writer_lays_it_out_is_read_in_all_eight_orientations() {
    use synthetic::ExifLayout;
    for layout in [ExifLayout::Camera, ExifLayout::PillowPiexif, ExifLayout::AndroidExifInterface, ExifLayout::Ios] {
        for o in 1..=8u16 {
            let spec = ExifSpec {
                orientation: Some(o),
                time: Some("2026:11:26 09:15:00".into()),
                gps: Some((31.2304, 121.4737)),
                layout,
            };
            let p = process_photo(&camera_like_jpeg(400, 200, &spec, 3))
                .unwrap_or_else(|e| panic!("{layout:?} orientation {o}: {e}"));
            let e = &p.evidence;
            let what = format!("{layout:?}, orientation {o}");
            assert_eq!(e.orientation, Some(o as u8), "{what}");
            let upright = if o >= 5 { (200, 400) } else { (400, 200) };
            assert_eq!((e.width, e.height), upright, "{what}: width and height follow the rotation");
            let img = decode_rgb(&p.stored);
            let (fx, fy) = red_quadrant(o);
            let px = img.get_pixel((fx * f64::from(e.width)) as u32, (fy * f64::from(e.height)) as u32);
            assert!(px[0] > 180 && px[1] < 80, "{what}: the red quadrant should be at {fx},{fy}, found {px:?}");
            assert_eq!(e.exif_time.as_deref(), Some("2026:11:26 09:15:00"), "{what}");
            let (lat, lon) = e.exif_gps.unwrap_or_else(|| panic!("{what}: GPS read"));
            assert!((lat - 31.2304).abs() < 1e-4 && (lon - 121.4737).abs() < 1e-4, "{what}: {lat},{lon}");
            // A strict parser refuses the Pillow layout: read all the same, and said so.
            let expected =
                if layout == ExifLayout::PillowPiexif { PhotoMetadata::PartlyRead } else { PhotoMetadata::Read };
            assert_eq!(e.metadata, Some(expected), "{what}");
        }
    }
}

#[test]
fn what_the_metadata_yielded_is_recorded_never_guessed() {
    let absent = process_photo(&camera_like_jpeg(64, 64, &ExifSpec::default(), 1)).expect("accepted");
    assert_eq!(absent.evidence.metadata, Some(PhotoMetadata::Absent));
    assert_eq!((absent.evidence.exif_time.as_ref(), absent.evidence.orientation), (None, None));

    // An APP1 "Exif" segment of garbage: present, unreadable, and the photo still evidence.
    let px = synthetic::camera_like_rgb(64, 64, 1);
    let mut garbage = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut garbage, 90);
    enc.add_app_segment(1, b"Exif\0\0MM\0\x2a\xff\xff\xff\xf0garbage".to_vec()).expect("segment");
    enc.encode(&px, 64, 64, jpeg_encoder::ColorType::Rgb).expect("encode");
    let p = process_photo(&garbage).expect("a photo with broken EXIF is still evidence");
    assert_eq!(p.evidence.metadata, Some(PhotoMetadata::Unreadable));
    assert_eq!((p.evidence.width, p.evidence.height), (64, 64));

    // PNG carries no EXIF here.
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image::RgbImage::new(8, 8))
        .write_to(&mut png, image::ImageFormat::Png)
        .expect("png");
    assert_eq!(process_photo(png.get_ref()).expect("png").evidence.metadata, Some(PhotoMetadata::Absent));
}

#[test]
fn an_empty_file_is_its_own_error() {
    assert_eq!(process_photo(&[]).err(), Some(EvidenceError::Empty));
}

/// A 96×64 CMYK JPEG: left half white (no ink), right half red (magenta and yellow, K = 0).
/// `adobe`: as Adobe's writers store it (inverted, APP14 marker; YCCK when `ycck`); otherwise
/// plain ink amounts and no marker.
fn cmyk_jpeg(adobe: bool, ycck: bool) -> Vec<u8> {
    let (w, h) = (96u16, 64u16);
    let mut ink = Vec::new();
    for _ in 0..h {
        for x in 0..w {
            ink.extend(if x < w / 2 { [0u8, 0, 0, 0] } else { [0, 255, 255, 0] });
        }
    }
    // jpeg-encoder takes ink amounts and stores them inverted, with Adobe's marker; for a file
    // without it, hand it inverted ink (so that ink is what is stored) and cut the marker out.
    let input: Vec<u8> = if adobe { ink } else { ink.iter().map(|v| 255 - v).collect() };
    let color = if ycck { jpeg_encoder::ColorType::CmykAsYcck } else { jpeg_encoder::ColorType::Cmyk };
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 95).encode(&input, w, h, color).expect("encode");
    if !adobe {
        let at = out.windows(7).position(|s| s[..2] == [0xFF, 0xEE] && &s[4..] == b"Ado").expect("APP14");
        let len = usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]]));
        out.drain(at..at + 2 + len);
    }
    out
}

#[test]
fn cmyk_photos_keep_their_colours() {
    for (adobe, ycck, what) in [(true, false, "Adobe CMYK"), (true, true, "Adobe YCCK"), (false, false, "plain CMYK")] {
        let p = process_photo(&cmyk_jpeg(adobe, ycck)).unwrap_or_else(|e| panic!("{what}: {e}"));
        let img = decode_rgb(&p.stored);
        let white = img.get_pixel(10, 32);
        let red = img.get_pixel(86, 32);
        assert!(white.0.iter().all(|v| *v > 225), "{what}: no ink is white, got {white:?}");
        assert!(red[0] > 200 && red[1] < 60 && red[2] < 60, "{what}: magenta and yellow are red, got {red:?}");
    }
}

#[test]
fn sixteen_bit_and_grey_with_alpha_pngs_are_accepted() {
    let mut wide = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::new(40, 30);
    for (x, _, px) in wide.enumerate_pixels_mut() {
        *px = if x < 20 { image::Rgb([65_535, 0, 0]) } else { image::Rgb([0, 0, 65_535]) };
    }
    let mut grey = image::GrayAlphaImage::new(40, 30);
    for (x, _, px) in grey.enumerate_pixels_mut() {
        *px = image::LumaA([if x < 20 { 20 } else { 230 }, 255]);
    }
    for (img, left, right) in [
        (image::DynamicImage::ImageRgb16(wide), [255u8, 0, 0], [0u8, 0, 255]),
        (image::DynamicImage::ImageLumaA8(grey), [20, 20, 20], [230, 230, 230]),
    ] {
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).expect("png");
        let p = process_photo(png.get_ref()).expect("accepted");
        let stored = decode_rgb(&p.stored);
        let close = |a: &image::Rgb<u8>, b: [u8; 3]| a.0.iter().zip(b).all(|(x, y)| x.abs_diff(y) < 30);
        assert!(close(stored.get_pixel(5, 15), left), "{:?}", stored.get_pixel(5, 15));
        assert!(close(stored.get_pixel(35, 15), right), "{:?}", stored.get_pixel(35, 15));
    }
}

#[test]
fn a_photo_file_is_read_whole_and_bad_files_are_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = camera_like_jpeg(320, 240, &ExifSpec::default(), 2);
    let path = dir.path().join("IMG_0001.jpg");
    std::fs::write(&path, &original).expect("write");
    assert_eq!(read_photo_file(&path).expect("read"), original);
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").expect("write");
    assert_eq!(read_photo_file(&empty), Err(EvidenceError::Empty));
    let missing = dir.path().join("missing.jpg");
    assert!(
        matches!(read_photo_file(&missing), Err(EvidenceError::File { path, .. }) if path.ends_with("missing.jpg"))
    );
    // Past the cap: refused from its size, before a byte is read (a sparse file costs no disk).
    let huge = dir.path().join("huge.jpg");
    std::fs::File::create(&huge).and_then(|f| f.set_len(MAX_PHOTO_FILE_BYTES + 1)).expect("sparse file");
    assert!(matches!(read_photo_file(&huge), Err(EvidenceError::File { reason, .. }) if reason.contains("at most")));
}
