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

/// A minimal big-endian EXIF (TIFF) block: IFD0 with Orientation, and pointers to an Exif IFD
/// (DateTimeOriginal) and a GPS IFD.
pub fn exif_block(spec: &ExifSpec) -> Vec<u8> {
    if spec.orientation.is_none() && spec.time.is_none() && spec.gps.is_none() {
        return vec![];
    }
    // Entries are (tag, type, count, inline value or data).
    struct Entry {
        tag: u16,
        typ: u16,
        count: u32,
        data: Vec<u8>,
    }
    fn ifd_len(entries: &[Entry]) -> usize {
        2 + entries.len() * 12 + 4
    }
    fn data_len(entries: &[Entry]) -> usize {
        entries.iter().filter(|e| e.data.len() > 4).map(|e| e.data.len()).sum()
    }
    fn write_ifd(out: &mut Vec<u8>, entries: &[Entry], start: usize) {
        // `start` is this IFD's offset from the TIFF header; data follows the IFD.
        let mut data_off = start + ifd_len(entries);
        out.extend((entries.len() as u16).to_be_bytes());
        let mut data: Vec<u8> = vec![];
        for e in entries {
            out.extend(e.tag.to_be_bytes());
            out.extend(e.typ.to_be_bytes());
            out.extend(e.count.to_be_bytes());
            if e.data.len() <= 4 {
                let mut v = e.data.clone();
                v.resize(4, 0);
                out.extend(v);
            } else {
                out.extend((data_off as u32).to_be_bytes());
                data_off += e.data.len();
                data.extend(&e.data);
            }
        }
        out.extend(0u32.to_be_bytes());
        out.extend(data);
    }
    fn rational(v: f64) -> Vec<u8> {
        let v = v.abs();
        let d = v.trunc();
        let m = ((v - d) * 60.0).trunc();
        let s = ((v - d) * 60.0 - m) * 60.0;
        let mut out = vec![];
        for (num, den) in [(d as u32, 1u32), (m as u32, 1), ((s * 10_000.0).round() as u32, 10_000)] {
            out.extend(num.to_be_bytes());
            out.extend(den.to_be_bytes());
        }
        out
    }

    let exif_ifd: Vec<Entry> = spec
        .time
        .iter()
        .map(|t| {
            let mut d = t.as_bytes().to_vec();
            d.push(0);
            Entry { tag: 0x9003, typ: 2, count: d.len() as u32, data: d }
        })
        .collect();
    let gps_ifd: Vec<Entry> = spec
        .gps
        .iter()
        .flat_map(|&(lat, lon)| {
            [
                Entry { tag: 1, typ: 2, count: 2, data: vec![if lat < 0.0 { b'S' } else { b'N' }, 0] },
                Entry { tag: 2, typ: 5, count: 3, data: rational(lat) },
                Entry { tag: 3, typ: 2, count: 2, data: vec![if lon < 0.0 { b'W' } else { b'E' }, 0] },
                Entry { tag: 4, typ: 5, count: 3, data: rational(lon) },
            ]
        })
        .collect();
    let mut ifd0 = vec![];
    if let Some(o) = spec.orientation {
        ifd0.push(Entry { tag: 0x0112, typ: 3, count: 1, data: o.to_be_bytes().to_vec() });
    }
    let ifd0_len = ifd_len(&ifd0) + if exif_ifd.is_empty() { 0 } else { 12 } + if gps_ifd.is_empty() { 0 } else { 12 };
    let ifd0_data = data_len(&ifd0);
    let exif_at = 8 + ifd0_len + ifd0_data;
    let gps_at = exif_at + if exif_ifd.is_empty() { 0 } else { ifd_len(&exif_ifd) + data_len(&exif_ifd) };
    if !exif_ifd.is_empty() {
        ifd0.push(Entry { tag: 0x8769, typ: 4, count: 1, data: (exif_at as u32).to_be_bytes().to_vec() });
    }
    if !gps_ifd.is_empty() {
        ifd0.push(Entry { tag: 0x8825, typ: 4, count: 1, data: (gps_at as u32).to_be_bytes().to_vec() });
    }
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    write_ifd(&mut tiff, &ifd0, 8);
    if !exif_ifd.is_empty() {
        write_ifd(&mut tiff, &exif_ifd, exif_at);
    }
    if !gps_ifd.is_empty() {
        write_ifd(&mut tiff, &gps_ifd, gps_at);
    }
    let mut out = b"Exif\x00\x00".to_vec();
    out.extend(tiff);
    out
}
