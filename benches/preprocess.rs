//! The image front end on the real photos (../shared/data/photos), ImageNet recipe (resize 256, crop 224):
//! `decode` alone, our fused resize + crop + normalize alone, and the image crate's own antialiased resize
//! (`resize_exact` with `FilterType::Triangle`, then crop and normalize) as the baseline. Before timing, it
//! prints how far the image crate's result is from ours (ours matches Pillow's float resize to ~1e-5, see
//! src/preprocess/resize.rs tests). Run: `cargo bench --bench preprocess`.

use criterion::{criterion_group, criterion_main, Criterion};
use image::imageops::FilterType;
use image::DynamicImage;
use resedge::graph::Preprocess;
use resedge::preprocess::{decode, Preprocessor};
use std::hint::black_box;

const PHOTOS: [&str; 6] = ["camera.png", "chelsea.png", "coffee.png", "china.jpg", "grace_hopper.jpg", "rocket.jpg"];

/// The image crate's resize, then torchvision's crop and normalization, into a planar tensor.
fn image_crate(p: &Preprocessor, img: &DynamicImage, out: &mut [f32]) {
    let g = p.geometry(img.width() as usize, img.height() as usize);
    let resized = img.to_rgb32f();
    let resized = image::imageops::resize(&resized, g.resized[0] as u32, g.resized[1] as u32, FilterType::Triangle);
    let spec = p.spec();
    let (cw, ch) = (g.crop[0], g.crop[1]);
    for y in 0..ch {
        for x in 0..cw {
            let px = resized.get_pixel((x + g.origin[0]) as u32, (y + g.origin[1]) as u32);
            for c in 0..3 {
                out[c * cw * ch + y * cw + x] = (px[c] - spec.mean[c]) / spec.std[c];
            }
        }
    }
}

fn preprocess(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/photos/");
    let mut g = c.benchmark_group("preprocess");
    g.sample_size(20);
    let spec = Preprocess::imagenet();
    for name in PHOTOS {
        let bytes = std::fs::read(format!("{dir}{name}")).unwrap();
        let img = decode(&bytes).unwrap();
        let mut p = Preprocessor::new(&spec, &[3, 224, 224]).unwrap();
        let mut ours = vec![0.0; p.output_len()];
        let mut theirs = vec![0.0; p.output_len()];
        p.run(&img, &mut ours).unwrap();
        image_crate(&p, &img, &mut theirs);
        let diff: Vec<f32> = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).collect();
        let max = diff.iter().copied().fold(0.0, f32::max);
        let mean = diff.iter().sum::<f32>() / diff.len() as f32;
        // In 8-bit levels: normalized difference * std * 255 (std ~0.226).
        println!(
            "{name}: image crate vs ours: max |diff| {max:.4} (~{:.1} levels), mean {mean:.5}",
            max * 0.226 * 255.0
        );
        g.bench_function(format!("decode/{name}"), |b| b.iter(|| decode(black_box(&bytes)).unwrap()));
        g.bench_function(format!("ours/{name}"), |b| b.iter(|| p.run(black_box(&img), &mut ours).unwrap()));
        g.bench_function(format!("image-crate/{name}"), |b| b.iter(|| image_crate(&p, black_box(&img), &mut theirs)));
    }
    g.finish();
}

criterion_group!(benches, preprocess);
criterion_main!(benches);
