//! The NPU backend up to the library boundary: `dlopen` of a stand-in `librknnrt.so` built here from
//! tests/fixtures/rknn_standin.c (host `cc`, or `aarch64-linux-gnu-gcc` when this test runs under
//! qemu-aarch64), then init / query / inputs_set / run / outputs_get / release / destroy through rknpu-sys's
//! types. No NPU is involved: the stand-in computes a known function of the input.

use resedge::backend::npu::{Rknn, RknnPaths};
use resedge::Error;
use std::path::PathBuf;
use std::process::Command;

/// Builds the stand-in library for this test binary's architecture (once per process); returns its path.
fn standin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("librknnrt-standin-{}.so", std::env::consts::ARCH));
            // An aarch64 binary under qemu on an x86 host still spawns host programs: use the cross compiler.
            let cross = cfg!(target_arch = "aarch64")
                && Command::new("aarch64-linux-gnu-gcc").arg("--version").output().is_ok();
            let cc = std::env::var("RKNN_STANDIN_CC")
                .unwrap_or_else(|_| (if cross { "aarch64-linux-gnu-gcc" } else { "cc" }).into());
            let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rknn_standin.c");
            let status = Command::new(&cc)
                .args(["-shared", "-fPIC", "-O1", "-std=c11", "-o"])
                .arg(&out)
                .arg(&src)
                .status()
                .unwrap_or_else(|e| panic!("running {cc}: {e}"));
            assert!(status.success(), "{cc} failed to build the stand-in library");
            out
        })
        .clone()
}

/// A device node that exists (the test does not need a real one: the stand-in never touches it).
fn fake_device() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fake-rknpu");
    std::fs::write(&p, b"").unwrap();
    p
}

fn model(n_in: u32, n_out: u32) -> Vec<u8> {
    let mut m = b"RKNN".to_vec();
    m.extend_from_slice(&n_in.to_le_bytes());
    m.extend_from_slice(&n_out.to_le_bytes());
    m
}

#[test]
fn standin_library_runs_through_the_boundary() {
    let paths = RknnPaths { library: standin(), devices: vec![fake_device()] };
    let mut npu = Rknn::open_with(&paths, &model(3 * 32 * 32, 10)).unwrap();
    assert_eq!((npu.input_len(), npu.output_len()), (3072, 10));
    for seed in 0..3 {
        let input: Vec<f32> = (0..3072).map(|i| ((i * 7 + seed * 13) % 17) as f32 / 16.0 - 0.5).collect();
        let sum: f64 = input.iter().map(|&v| v as f64).sum();
        let out = npu.run(&input).unwrap();
        let want: Vec<f32> = (0..10).map(|k| ((k + 1) as f64 * sum + k as f64) as f32).collect();
        assert_eq!(out, want, "seed {seed}");
    }
    // Wrong input size: refused before the library sees it.
    assert!(matches!(npu.run(&[0.0; 5]), Err(Error::Input(_))));
}

#[test]
fn library_errors_become_messages() {
    let paths = RknnPaths { library: standin(), devices: vec![fake_device()] };
    let e = Rknn::open_with(&paths, b"not a model").err().expect("a bad model must fail");
    assert!(e.to_string().contains("rknn_init returned -6 (RKNN_ERR_MODEL_INVALID)"), "{e}");
}

#[test]
fn missing_library_or_device_is_unavailable() {
    let no_lib = RknnPaths { library: "/nonexistent/librknnrt.so".into(), devices: vec![fake_device()] };
    let e = Rknn::open_with(&no_lib, &model(1, 1)).err().unwrap();
    assert!(matches!(e, Error::BackendUnavailable { backend: "npu", .. }), "{e}");
    assert!(e.to_string().contains("librknnrt.so"), "{e}");
    let no_dev = RknnPaths { library: standin(), devices: vec!["/nonexistent/rknpu".into()] };
    let e = Rknn::open_with(&no_dev, &model(1, 1)).err().unwrap();
    assert!(e.to_string().contains("/nonexistent/rknpu missing"), "{e}");
}
