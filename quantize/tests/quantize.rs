//! Calibration → int8 → QDQ export, on the shipped trained ResNet-20 and real CIFAR-10 images: the export
//! runs in tract and agrees with our int8 kernels; mixed precision runs; the CLI is deterministic.

use resedge::graph::Model;
use resedge::plan::passes;
use resedge::quant::{lower_to_int8, qparams_from_ranges, ActivationScheme};
use resedge_quantize::calib::{calibrate, Method};
use resedge_quantize::eval::top_k;
use resedge_quantize::onnx::ExportOptions;
use resedge_quantize::samples::Samples;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use tract_onnx::prelude::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cifar_test() -> String {
    let p = std::env::var_os("RESEDGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"))
        .join("data/cifar10/test_batch.bin");
    assert!(p.exists(), "CIFAR-10 test set missing: {} (set RESEDGE_SHARED)", p.display());
    p.to_string_lossy().into_owned()
}

fn trained() -> Model<'static> {
    let bytes = std::fs::read(root().join("models/cifar10/resnet20.rsm")).unwrap();
    passes::optimize(&resedge::format::load(&bytes).unwrap()).unwrap().into_owned()
}

fn run(model: &Model<'_>, x: &[f32]) -> Vec<f32> {
    resedge::Plan::new(model, &Default::default()).unwrap().executor().run(x).unwrap().to_vec()
}

fn int8_model(float: &Model<'_>, data: &Samples, keep: &BTreeSet<String>) -> Model<'static> {
    let idx: Vec<usize> = (0..16).collect();
    let ranges = calibrate(float, data, &idx, Method::Entropy, 99.99).unwrap();
    lower_to_int8(float, &qparams_from_ranges(&ranges, ActivationScheme::AsymmetricU8), keep).unwrap()
}

fn tract_run(onnx: &[u8], x: &[f32]) -> Vec<f32> {
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])
        .unwrap()
        .with_input_fact(0, f32::fact([1, 3, 32, 32]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = tract_ndarray::ArrayD::from_shape_vec(vec![1, 3, 32, 32], x.to_vec()).unwrap();
    let out = plan.run(tvec!(Tensor::from(input).into())).unwrap();
    out[0].to_array_view::<f32>().unwrap().iter().copied().collect()
}

#[test]
fn qdq_export_runs_in_tract_and_agrees_with_our_int8() {
    let float = trained();
    let data = Samples::load(&cifar_test(), &float, Some(48)).unwrap();
    let int8 = int8_model(&float, &data, &BTreeSet::new());
    // tract 0.22 applies only the first scale of a per-channel DequantizeLinear: weights go as f32.
    let opts = ExportOptions { float_weights: true };
    let qdq = resedge_quantize::onnx::export(&int8, opts).unwrap();
    let plain = resedge_quantize::onnx::export(&float, Default::default()).unwrap();
    let out_scale = int8.graph.nodes.iter().rev().find_map(|n| n.output_q).unwrap().scale;
    let (mut agree, mut worst, mut worst_f32, mut tie_gap) = (0, 0f32, 0f32, 0f32);
    let held_out = 16..48;
    for i in held_out.clone() {
        let x = data.input(i);
        let (ours, theirs) = (run(&int8, &x), tract_run(&qdq, &x));
        let (a, b) = (top_k(&ours, 1)[0], top_k(&theirs, 1)[0]);
        agree += usize::from(a == b);
        // Where the engines pick different classes, both must be a near tie in our logits.
        tie_gap = tie_gap.max(ours[a] - ours[b]);
        worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
        let (f, t) = (run(&float, &x), tract_run(&plain, &x));
        let scale = f.iter().fold(0f32, |m, v| m.max(v.abs()));
        worst_f32 = f.iter().zip(&t).map(|(a, b)| (a - b).abs() / scale).fold(worst_f32, f32::max);
    }
    eprintln!(
        "QDQ export in tract: top-1 agreement {agree}/{}, max |logit diff| {worst:.3} ({:.1} output steps), \
         widest gap between the two picks where they differ {tie_gap:.3}; float export: max relative diff \
         {worst_f32:.2e}",
        held_out.len(),
        worst / out_scale
    );
    // tract requantizes in float through the QDQ pairs; we round in fixed point and fuse the residual add:
    // logits differ by a few output steps, so a class can flip only where two logits are that close.
    assert!(worst <= 4.0 * out_scale, "{worst} ({} steps)", worst / out_scale);
    assert!(tie_gap <= worst, "tract picked a class {tie_gap} below ours, more than the logit difference {worst}");
    assert!(agree * 10 >= held_out.len() * 9, "top-1 agreement {agree}/{}", held_out.len());
    assert!(worst_f32 <= 1e-4, "float export differs by {worst_f32} of max |logit|");
}

#[test]
fn layers_kept_in_float_run_in_float_and_the_rest_in_int8() {
    let float = trained();
    let data = Samples::load(&cifar_test(), &float, Some(24)).unwrap();
    let first_conv = float.graph.nodes.iter().find(|n| n.op.name() == "Conv").unwrap().name.clone();
    let all = int8_model(&float, &data, &BTreeSet::new());
    let mixed = int8_model(&float, &data, &[first_conv.clone()].into_iter().collect());
    let node = mixed.graph.nodes.iter().find(|n| n.name == first_conv).unwrap();
    assert!(node.output_q.is_none(), "kept layer must be f32");
    assert!(mixed.graph.nodes.iter().filter(|n| n.output_q.is_some()).count() > 10, "the rest stays int8");
    // The float conv's output is quantized right after it, for the int8 layer that reads it.
    assert!(mixed.graph.nodes.iter().any(|n| n.op.name() == "Quantize" && n.inputs == [first_conv.clone()]));
    let (mut e_all, mut e_mixed) = (0f64, 0f64);
    for i in 16..24 {
        let x = data.input(i);
        let f = run(&float, &x);
        let d = |m: &Model<'_>| run(m, &x).iter().zip(&f).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>();
        e_all += d(&all);
        e_mixed += d(&mixed);
    }
    eprintln!("squared logit error: all int8 {e_all:.4}, first conv in float {e_mixed:.4}");
    assert!(e_mixed.is_finite() && e_all.is_finite());
}

fn quantize_cli(out: &std::path::Path, threads: &str) -> Vec<u8> {
    let o = Command::new(env!("CARGO_BIN_EXE_resedge-quantize"))
        .env("RESEDGE_TOOL_THREADS", threads)
        .args(["quantize", root().join("models/cifar10/resnet20.rsm").to_str().unwrap(), "--calib"])
        .arg(cifar_test())
        .args(["--samples", "12", "--method", "mse", "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

#[test]
fn quantize_is_deterministic_across_thread_counts_and_eval_prints_json() {
    let dir = std::env::temp_dir();
    let a = quantize_cli(&dir.join(format!("rq-{}-1.rsm", std::process::id())), "1");
    let b = quantize_cli(&dir.join(format!("rq-{}-2.rsm", std::process::id())), "2");
    assert!(a == b, "same inputs must give byte-identical files");
    let path = dir.join(format!("rq-{}-1.rsm", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_resedge-quantize"))
        .args(["eval", path.to_str().unwrap(), "--data", &cifar_test(), "--samples", "20", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let (t1, t5) = (last["top1"].as_f64().unwrap(), last["top5"].as_f64().unwrap());
    assert!((0.0..=100.0).contains(&t1) && t5 >= t1, "{last}");
    // A trained net classifies real images far above chance (10%) even from 20 samples.
    assert!(t1 >= 50.0, "top-1 {t1}");
    let o = Command::new(env!("CARGO_BIN_EXE_resedge-quantize"))
        .args(["report", root().join("models/cifar10/resnet20.rsm").to_str().unwrap(), path.to_str().unwrap()])
        .args(["--data", &cifar_test(), "--samples", "8", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let layers = report["layers"].as_array().unwrap();
    assert!(layers.len() >= 21, "one row per conv / linear at least: {}", layers.len());
    assert!(layers.iter().all(|l| l["cosine"].as_f64().unwrap() > 0.9), "{stdout}");
}
