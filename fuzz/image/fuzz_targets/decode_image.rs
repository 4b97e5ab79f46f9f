//! Any byte string as an image file or a camera buffer: `preprocess::decode` must return an image or an
//! `Error`; a decoded image must preprocess (ImageNet- and CIFAR-shaped parameters) into finite values; the
//! JPEG frame scanner and the YUYV converter must not fail other than by returning. Any panic, overflow
//! (debug assertions are on under cargo fuzz), out-of-bounds access or allocation failure is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resedge::graph::Preprocess;
use resedge::preprocess::{decode_with_limit, jpeg, yuyv_to_rgb, Preprocessor};

/// Decoder allocation budget: keeps every run fast.
const MAX_DECODE: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let _ = jpeg::scan(data);
    if data.len() >= 4 {
        // First bytes pick a YUYV geometry, the rest are pixels.
        let (w, h, stride) = (u32::from(data[0]) * 2, u32::from(data[1]), usize::from(data[2]) * 4);
        let _ = yuyv_to_rgb(&data[3..], w, h, stride);
    }
    let Ok(img) = decode_with_limit(data, MAX_DECODE) else { return };
    let small = Preprocess { resize: 40, crop: [32, 24], mean: [0.5; 3], std: [0.25; 3] };
    for spec in [small, Preprocess::cifar10()] {
        let mut p = Preprocessor::new(&spec, &[3, spec.crop[0], spec.crop[1]]).expect("valid spec");
        let mut out = vec![0.0; p.output_len()];
        // The enabled decoders produce 8- and 16-bit pixels, so every value is finite.
        if p.run(&img, &mut out).is_ok() {
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
});
