//! `resedge-quantize` writes model files the runtime loads and runs.

use std::process::Command;

#[test]
fn quantize_writes_models_the_runtime_runs() {
    let out = std::env::temp_dir().join(format!("resedge-quantize-{}-r20-f16.rsm", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_resedge-quantize"))
        .args(["zoo", "resnet20", "--precision", "f16", "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let f16 = resedge::format::load(&bytes).unwrap();
    assert!(f16.tensors.values().any(|t| t.dtype == resedge::tensor::DType::F16));
    // f16 storage computes in f32: close to the f32 model.
    let f32m = resedge::zoo::build(&resedge::zoo::arch("resnet20").unwrap(), 0).unwrap();
    let x = resedge::zoo::random_input(3 * 32 * 32, 2);
    let a = resedge::Plan::new(&f32m, &Default::default()).unwrap().executor().run(&x).unwrap().to_vec();
    let b = resedge::Plan::new(&f16, &Default::default()).unwrap().executor().run(&x).unwrap().to_vec();
    let max = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (u, v) in a.iter().zip(&b) {
        assert!((u - v).abs() < 1e-2 * max, "{u} vs {v}");
    }
}
