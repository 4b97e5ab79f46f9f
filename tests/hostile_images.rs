//! Hostile image files: seeded mutants of small valid JPEG (plain, progressive-free baseline with EXIF), PNG
//! (8-bit RGBA, 16-bit gray), BMP and WebP files (byte flips, interesting values in headers, truncation,
//! splices) go through `decode` and `Preprocessor::run` exactly as `resedge classify` uses them. Every
//! outcome must be an image or an `Error`: a panic fails the test with the seed and mutant index. The
//! cargo-fuzz counterpart is fuzz/image (`decode_image`). `HOSTILE_SEED` and `HOSTILE_SCALE` work as in
//! tests/hostile.rs.

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage, Rgba};
use resedge::graph::Preprocess;
use resedge::preprocess::{decode_with_limit, jpeg, Preprocessor};
use std::panic::{catch_unwind, AssertUnwindSafe};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let rgb =
        DynamicImage::ImageRgb8(RgbImage::from_fn(19, 13, |x, y| Rgb([(x * 13) as u8, (y * 19) as u8, (x * y) as u8])));
    let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_fn(9, 7, |x, y| {
        Rgba([(x * 28) as u8, (y * 36) as u8, 7, (x + y) as u8])
    }));
    let gray16 = DynamicImage::ImageLuma16(ImageBuffer::from_fn(8, 6, |x, y| Luma([(x * 8000 + y * 900) as u16])));
    let jpeg_plain = encode(&rgb, ImageFormat::Jpeg);
    // The same JPEG with an EXIF orientation segment (orientation 6).
    let mut exif = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00".to_vec();
    let mut jpeg_exif = jpeg_plain[..2].to_vec();
    jpeg_exif.extend_from_slice(&[0xFF, 0xE1]);
    jpeg_exif.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
    jpeg_exif.append(&mut exif);
    jpeg_exif.extend_from_slice(&jpeg_plain[2..]);
    vec![
        ("jpeg", jpeg_plain),
        ("jpeg+exif", jpeg_exif),
        ("png rgba8", encode(&rgba, ImageFormat::Png)),
        ("png gray16", encode(&gray16, ImageFormat::Png)),
        ("bmp", encode(&rgb, ImageFormat::Bmp)),
        ("webp lossless", encode(&rgba, ImageFormat::WebP)),
    ]
}

/// One to four mutations; returns what was done, for the failure message.
fn mutate(rng: &mut Rng, base: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut b = base.to_vec();
    let mut log = Vec::new();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break;
        }
        let at = rng.below(b.len());
        match rng.below(7) {
            0 => {
                let bit = rng.below(8);
                b[at] ^= 1 << bit;
                log.push(format!("flip bit {bit} of byte {at}"));
            }
            1 => {
                let v = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE][rng.below(6)];
                b[at] = v;
                log.push(format!("byte {at} = {v:#04x}"));
            }
            2 => {
                // Header fields (sizes, lengths) live in the first hundred bytes: big values there.
                let at = rng.below(b.len().min(100));
                let v = [0xFFFF_FFFFu32, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF, 0x4000, 0][rng.below(6)];
                for (i, byte) in v.to_be_bytes().iter().enumerate() {
                    if let Some(x) = b.get_mut(at + i) {
                        *x = *byte;
                    }
                }
                log.push(format!("u32 {v:#x} at {at}"));
            }
            3 => {
                b.truncate(at);
                log.push(format!("truncate to {at}"));
            }
            4 => {
                let n = 1 + rng.below(16);
                let end = (at + n).min(b.len());
                b.drain(at..end);
                log.push(format!("remove {at}..{end}"));
            }
            5 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(at..at, bytes);
                log.push(format!("insert {n} random bytes at {at}"));
            }
            _ => {
                let from = rng.below(b.len());
                let n = (1 + rng.below(32)).min(b.len() - from);
                let chunk = b[from..from + n].to_vec();
                b.splice(at..at, chunk);
                log.push(format!("copy {from}..{} to {at}", from + n));
            }
        }
    }
    (b, log)
}

#[derive(Default, Debug)]
struct Tally {
    decoded: usize,
    rejected: usize,
}

fn exercise(bytes: &[u8], pre: &mut [Preprocessor], t: &mut Tally) {
    let _ = jpeg::scan(bytes);
    match decode_with_limit(bytes, 16 << 20) {
        Ok(img) => {
            t.decoded += 1;
            for p in pre.iter_mut() {
                let mut out = vec![0.0; p.output_len()];
                if p.run(&img, &mut out).is_ok() {
                    assert!(out.iter().all(|v| v.is_finite()), "non-finite output");
                }
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            t.rejected += 1;
        }
    }
}

#[test]
fn mutated_images_decode_or_fail_cleanly() {
    let seed = 0x1A6E ^ env_u64("HOSTILE_SEED", 0);
    let per_seed = 2000 * env_u64("HOSTILE_SCALE", 1) as usize;
    let specs = [Preprocess { resize: 40, crop: [32, 24], mean: [0.5; 3], std: [0.25; 3] }, Preprocess::cifar10()];
    let mut pre: Vec<Preprocessor> =
        specs.iter().map(|s| Preprocessor::new(s, &[3, s.crop[0], s.crop[1]]).unwrap()).collect();
    let started = std::time::Instant::now();
    let mut total = Tally::default();
    for (label, base) in seeds() {
        let mut t = Tally::default();
        exercise(&base, &mut pre, &mut t);
        assert_eq!(t.decoded, 1, "seed {label} must decode");
        let mut rng = Rng(seed ^ base.len() as u64);
        for i in 0..per_seed {
            let (bytes, log) = mutate(&mut rng, &base);
            let r = catch_unwind(AssertUnwindSafe(|| exercise(&bytes, &mut pre, &mut t)));
            if let Err(p) = r {
                let msg =
                    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                panic!("{label} seed {seed} mutant {i}: {} -> panic {msg:?}", log.join(" | "));
            }
        }
        println!("{label}: {} mutants decoded, {} rejected", t.decoded - 1, t.rejected);
        total.decoded += t.decoded;
        total.rejected += t.rejected;
    }
    println!("{total:?} in {:.2} s", started.elapsed().as_secs_f64());
    assert!(total.rejected > 0 && total.decoded > 6, "the mutations should produce both outcomes: {total:?}");
}
