//! Our fused resize + crop + normalize against the image crate (Triangle: antialiased, whole image, then
//! crop) and fast_image_resize 5 (Convolution Bilinear = the Pillow algorithm, SIMD; crop given as its
//! source box) in U8x3 (fixed point, rounds to 8 bits like Pillow's uint8 path) and F32x3, on the photos
//! in ../shared/data/photos. Prints median microseconds of 50 runs and the max |difference| from ours
//! (normalized units; one 8-bit level is about 0.017). Its own workspace so the main build never compiles
//! fast_image_resize. Run: `cargo run --release --manifest-path benches/resize-compare/Cargo.toml`.
use fast_image_resize::{images::Image, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use resedge::graph::Preprocess;
use resedge::preprocess::{decode, Preprocessor};
use std::time::Instant;

fn median_us(mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..50)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[25]
}

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/photos/");
    let spec = Preprocess::imagenet();
    let names = ["camera.png", "chelsea.png", "coffee.png", "china.jpg", "grace_hopper.jpg", "rocket.jpg"];
    println!(
        "{:<18} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "photo", "decode", "ours", "image", "fir u8", "fir f32", "d image", "d fir u8", "d fir f32"
    );
    for name in names {
        let bytes = std::fs::read(format!("{dir}{name}")).unwrap();
        let t_decode = median_us(|| {
            decode(&bytes).unwrap();
        });
        let img = decode(&bytes).unwrap();
        let mut p = Preprocessor::new(&spec, &[3, 224, 224]).unwrap();
        let mut ours = vec![0.0; p.output_len()];
        let t_ours = median_us(|| p.run(&img, &mut ours).unwrap());
        let g = p.geometry(img.width() as usize, img.height() as usize);
        let s = [img.width() as f64 / g.resized[0] as f64, img.height() as f64 / g.resized[1] as f64];
        let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(
            g.origin[0] as f64 * s[0],
            g.origin[1] as f64 * s[1],
            224.0 * s[0],
            224.0 * s[1],
        );
        let mut resizer = Resizer::new();
        let normalize = |px: &[f32], scale: f32, out: &mut Vec<f32>| {
            out.resize(3 * 224 * 224, 0.0);
            for (i, rgb) in px.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * 224 * 224 + i] = (rgb[c] * scale - spec.mean[c]) / spec.std[c];
                }
            }
        };
        // U8x3: the whole pipeline fir users would write (RGB8 in, u8 out, normalize).
        let rgb8 = img.to_rgb8();
        let src8 = Image::from_vec_u8(img.width(), img.height(), rgb8.into_raw(), PixelType::U8x3).unwrap();
        let mut dst8 = Image::new(224, 224, PixelType::U8x3);
        let mut fir8 = Vec::new();
        let t_u8 = median_us(|| {
            resizer.resize(&src8, &mut dst8, &opts).unwrap();
            let f: Vec<f32> = dst8.buffer().iter().map(|&b| f32::from(b)).collect();
            normalize(&f, 1.0 / 255.0, &mut fir8);
        });
        let rgbf = img.to_rgb32f();
        let fbytes: Vec<u8> = rgbf.as_raw().iter().flat_map(|v| v.to_ne_bytes()).collect();
        let srcf = Image::from_vec_u8(img.width(), img.height(), fbytes, PixelType::F32x3).unwrap();
        let mut dstf = Image::new(224, 224, PixelType::F32x3);
        let mut firf = Vec::new();
        let t_f32 = median_us(|| {
            resizer.resize(&srcf, &mut dstf, &opts).unwrap();
            let f: Vec<f32> =
                dstf.buffer().chunks_exact(4).map(|b| f32::from_ne_bytes(b.try_into().unwrap())).collect();
            normalize(&f, 1.0, &mut firf);
        });
        // The image crate: its own antialiased Triangle resize of the whole image, then crop + normalize.
        let mut imgc = vec![0.0; 3 * 224 * 224];
        let t_image = median_us(|| {
            let r = image::imageops::resize(
                &img.to_rgb32f(),
                g.resized[0] as u32,
                g.resized[1] as u32,
                image::imageops::FilterType::Triangle,
            );
            for y in 0..224 {
                for x in 0..224 {
                    let px = r.get_pixel((x + g.origin[0]) as u32, (y + g.origin[1]) as u32);
                    for c in 0..3 {
                        imgc[c * 224 * 224 + y * 224 + x] = (px[c] - spec.mean[c]) / spec.std[c];
                    }
                }
            }
        });
        let maxd = |a: &[f32]| a.iter().zip(&ours).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        println!(
            "{name:<18} {:>7.0}us {:>7.0}us {:>8.0}us {:>8.0}us {:>8.0}us {:>10.4} {:>10.4} {:>10.6}",
            t_decode,
            t_ours,
            t_image,
            t_u8,
            t_f32,
            maxd(&imgc),
            maxd(&fir8),
            maxd(&firf)
        );
    }
}
