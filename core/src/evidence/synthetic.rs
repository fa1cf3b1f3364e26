//! Camera-like test photos, generated: the benchmark, the demo and the tests need realistic
//! JPEGs (noise and texture, so they compress like real photos) with real EXIF blocks, and no
//! binary fixtures in the repository.

/// EXIF facts to embed.
#[derive(Debug, Clone, Default)]
pub struct ExifSpec {
    pub orientation: Option<u16>,
    /// "YYYY:MM:DD HH:MM:SS"
    pub time: Option<String>,
    pub gps: Option<(f64, f64)>,
    pub layout: ExifLayout,
}

/// How a writer lays the same facts out: the byte order, the order of the directories, and
/// whether the Exif and GPS directories end with the next-directory pointer the standard asks
/// for. Each is how a family of real writers does it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExifLayout {
    /// A camera's: big-endian, IFD0 then Exif then GPS, every directory with its pointer, and a
    /// thumbnail directory (IFD1) after them.
    #[default]
    Camera,
    /// Pillow's and piexif's: little-endian, and the Exif and GPS directories *without* a
    /// next-directory pointer (a strict parser rejects them; exiftool and Pillow read them).
    PillowPiexif,
    /// Android's ExifInterface: big-endian, the GPS directory (with its version tag) before
    /// the Exif one.
    AndroidExifInterface,
    /// An iPhone's: big-endian, the Exif directory with sub-second and offset tags, the GPS one
    /// with reference, altitude and time stamps, and a thumbnail directory.
    Ios,
}

/// RGB pixels that look like a photo to a JPEG encoder: smooth gradients, edges and sensor noise.
/// The top-left quarter is red, so tests can see where orientation moved it.
pub fn camera_like_rgb(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut px = Vec::with_capacity((width * height * 3) as usize);
    let mut x = seed | 1;
    for j in 0..height {
        for i in 0..width {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x % 24) as i32 - 12;
            let stripe = if (i / 37 + j / 53) % 2 == 0 { 30 } else { 0 };
            let base_r = (i * 200 / width.max(1)) as i32 + stripe;
            let base_g = (j * 200 / height.max(1)) as i32;
            let base_b = (((i + j) % 256) as i32) / 2 + 60;
            let (r, g, b) = if i < width / 2 && j < height / 2 { (230, 20, 20) } else { (base_r, base_g, base_b) };
            px.push((r + noise).clamp(0, 255) as u8);
            px.push((g + noise).clamp(0, 255) as u8);
            px.push((b + noise).clamp(0, 255) as u8);
        }
    }
    px
}

/// A JPEG like a phone camera makes (quality 92), with an EXIF block when asked.
pub fn camera_like_jpeg(width: u16, height: u16, exif: &ExifSpec, seed: u64) -> Vec<u8> {
    let px = camera_like_rgb(u32::from(width), u32::from(height), seed);
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 92);
    let block = exif_block(exif);
    if !block.is_empty() {
        // An APP1 segment is at most 64 KiB; ours is a few hundred bytes.
        let _ = enc.add_app_segment(1, block);
    }
    let _ = enc.encode(&px, width, height, jpeg_encoder::ColorType::Rgb);
    out
}

/// An EXIF (TIFF) block as `spec.layout` lays it out: IFD0 with Orientation, and pointers to an
/// Exif IFD (DateTimeOriginal) and a GPS IFD.
pub fn exif_block(spec: &ExifSpec) -> Vec<u8> {
    if spec.orientation.is_none() && spec.time.is_none() && spec.gps.is_none() {
        return vec![];
    }
    let layout = spec.layout;
    let big = layout != ExifLayout::PillowPiexif;
    let u16b = |v: u16| if big { v.to_be_bytes() } else { v.to_le_bytes() };
    let u32b = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
    // Entries are (tag, type, count, value bytes in the block's byte order).
    struct Entry {
        tag: u16,
        typ: u16,
        count: u32,
        data: Vec<u8>,
    }
    struct Ifd {
        entries: Vec<Entry>,
        next_pointer: bool,
    }
    impl Ifd {
        fn len(&self) -> usize {
            let data: usize = self.entries.iter().filter(|e| e.data.len() > 4).map(|e| e.data.len()).sum();
            2 + self.entries.len() * 12 + if self.next_pointer { 4 } else { 0 } + data
        }
    }
    let ascii = |s: &str| {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        Entry { tag: 0, typ: 2, count: d.len() as u32, data: d }
    };
    let tagged = |tag: u16, e: Entry| Entry { tag, ..e };
    let short = |tag: u16, v: u16| {
        let mut d = u16b(v).to_vec();
        d.resize(4, 0);
        Entry { tag, typ: 3, count: 1, data: d }
    };
    let long = |tag: u16, v: u32| Entry { tag, typ: 4, count: 1, data: u32b(v).to_vec() };
    let rationals = |tag: u16, values: &[(u32, u32)]| {
        let data = values.iter().flat_map(|(n, d)| [u32b(*n), u32b(*d)].concat()).collect();
        Entry { tag, typ: 5, count: values.len() as u32, data }
    };
    let dms = |v: f64| {
        let v = v.abs();
        let d = v.trunc();
        let m = ((v - d) * 60.0).trunc();
        let s = ((v - d) * 60.0 - m) * 60.0;
        [(d as u32, 1u32), (m as u32, 1), ((s * 10_000.0).round() as u32, 10_000)]
    };

    let mut exif = vec![];
    if let Some(t) = &spec.time {
        exif.push(tagged(0x9003, ascii(t)));
        if layout == ExifLayout::Ios {
            exif.push(tagged(0x9004, ascii(t)));
            exif.push(tagged(0x9011, ascii("+08:00")));
            exif.push(tagged(0x9291, ascii("512")));
        }
    }
    let mut gps = vec![];
    if let Some((lat, lon)) = spec.gps {
        if layout == ExifLayout::AndroidExifInterface {
            gps.push(Entry { tag: 0, typ: 1, count: 4, data: vec![2, 2, 0, 0] });
        }
        gps.push(tagged(1, ascii(if lat < 0.0 { "S" } else { "N" })));
        gps.push(rationals(2, &dms(lat)));
        gps.push(tagged(3, ascii(if lon < 0.0 { "W" } else { "E" })));
        gps.push(rationals(4, &dms(lon)));
        if layout == ExifLayout::Ios {
            gps.push(Entry { tag: 5, typ: 1, count: 1, data: vec![0, 0, 0, 0] });
            gps.push(rationals(6, &[(12_345, 1_000)]));
            gps.push(rationals(7, &[(1, 1), (15, 1), (0, 1)]));
            gps.push(tagged(0x1d, ascii("2026:11:26")));
        }
    }
    let thumbnail: &[u8] =
        if matches!(layout, ExifLayout::Camera | ExifLayout::Ios) { b"\xFF\xD8\xFF\xD9" } else { b"" };
    let sub_pointer = layout != ExifLayout::PillowPiexif;
    let mut ifd0 = vec![];
    if let Some(o) = spec.orientation {
        ifd0.push(short(0x0112, o));
    }
    ifd0.push(tagged(0x0110, ascii("Gridwork test camera")));
    // Pointers, filled in once the offsets are known (their size does not depend on them).
    let exif_ptr = (!exif.is_empty()).then(|| {
        ifd0.push(long(0x8769, 0));
        ifd0.len() - 1
    });
    let gps_ptr = (!gps.is_empty()).then(|| {
        ifd0.push(long(0x8825, 0));
        ifd0.len() - 1
    });
    let mut ifd0 = Ifd { entries: ifd0, next_pointer: true };
    let exif = Ifd { entries: exif, next_pointer: sub_pointer };
    let gps = Ifd { entries: gps, next_pointer: sub_pointer };
    let ifd1 = (!thumbnail.is_empty())
        .then(|| Ifd { entries: vec![long(0x0201, 0), long(0x0202, thumbnail.len() as u32)], next_pointer: true });
    // Order: IFD0, then the sub-directories in the writer's order, then IFD1 and its thumbnail.
    let gps_first = layout == ExifLayout::AndroidExifInterface;
    let mut at = 8 + ifd0.len();
    let mut place = |ifd: &Ifd| {
        if ifd.entries.is_empty() {
            return 0;
        }
        let here = at;
        at += ifd.len();
        here
    };
    let (exif_at, gps_at) = if gps_first {
        let g = place(&gps);
        (place(&exif), g)
    } else {
        let e = place(&exif);
        (e, place(&gps))
    };
    let ifd1_at = ifd1.as_ref().map_or(0, &mut place);
    let thumb_at = at;
    if let Some(i) = exif_ptr {
        ifd0.entries[i].data = u32b(exif_at as u32).to_vec();
    }
    if let Some(i) = gps_ptr {
        ifd0.entries[i].data = u32b(gps_at as u32).to_vec();
    }
    let ifd1 = ifd1.map(|mut i| {
        i.entries[0].data = u32b(thumb_at as u32).to_vec();
        i
    });

    let mut tiff = if big { b"MM\x00\x2a".to_vec() } else { b"II\x2a\x00".to_vec() };
    tiff.extend(u32b(8));
    let write = |out: &mut Vec<u8>, ifd: &Ifd, start: usize, next: u32| {
        // Values longer than four bytes follow the directory.
        let mut data_off = start + 2 + ifd.entries.len() * 12 + if ifd.next_pointer { 4 } else { 0 };
        let mut data: Vec<u8> = vec![];
        out.extend(u16b(ifd.entries.len() as u16));
        for e in &ifd.entries {
            out.extend(u16b(e.tag));
            out.extend(u16b(e.typ));
            out.extend(u32b(e.count));
            if e.data.len() <= 4 {
                let mut v = e.data.clone();
                v.resize(4, 0);
                out.extend(v);
            } else {
                out.extend(u32b(data_off as u32));
                data_off += e.data.len();
                data.extend(&e.data);
            }
        }
        if ifd.next_pointer {
            out.extend(u32b(next));
        }
        out.extend(data);
    };
    write(&mut tiff, &ifd0, 8, ifd1_at as u32);
    let mut subs = [(exif_at, &exif), (gps_at, &gps)];
    subs.sort_by_key(|(at, _)| *at);
    for (at, ifd) in subs {
        if !ifd.entries.is_empty() {
            write(&mut tiff, ifd, at, 0);
        }
    }
    if let Some(i) = &ifd1 {
        write(&mut tiff, i, ifd1_at, 0);
        tiff.extend(thumbnail);
    }
    let mut out = b"Exif\x00\x00".to_vec();
    out.extend(tiff);
    out
}
