//! The GPU backend against the CPU reference executor, on whole ResNets: int8 outputs byte-identical, f32
//! within 1e-4 (plus 5e-4 relative, STYLE's f32 tolerance). Runs on any Vulkan device; in CI that is Mesa's
//! lavapipe. Without a Vulkan adapter the test fails (set RESEDGE_GPU_TESTS=skip to skip it loudly).
//!
//! Models: the shipped ResNet-20 (f32, and lowered to int8 here with the library's min/max calibration),
//! the zoo's ResNet-18 with seeded random weights (f32 and int8), and every file listed in
//! `RESEDGE_GPU_MODELS` (colon-separated; CI passes the ResNet-18 imported from ../shared/models/resnet18.onnx
//! and the quantizer's int8 ResNet-20 and ResNet-18).
//!
//! f16 convolutions (`GpuOptions::f16`, where the adapter has shader-f16, as lavapipe does) are compared
//! with the CPU's f32 by a looser bound, relative to the largest logit, and must pick the same class.

mod common;

use resedge::backend::gpu::{Gpu, GpuOptions};
use resedge::backend::{partition, partition_with, Backend, OffloadExecutor};
use resedge::format::ModelFile;
use resedge::plan::{Plan, PlanOptions, ValueRef};
use resedge::quant::{lower_to_int8, qparams_from_ranges, ActivationScheme};
use resedge::zoo;
use resedge::Model;
use std::path::PathBuf;

/// The GPU with the dot product chosen by `dot4`, or None when tests are told to skip.
fn gpu(dot4: bool) -> Option<Gpu> {
    gpu_with(GpuOptions { dot4, ..GpuOptions::default() })
}

fn gpu_with(opts: GpuOptions) -> Option<Gpu> {
    match Gpu::with_options(opts) {
        Ok(g) => Some(g),
        Err(e) if std::env::var("RESEDGE_GPU_TESTS").is_ok_and(|v| v == "skip") => {
            println!("skipped: no GPU ({e})");
            None
        }
        Err(e) => panic!("no GPU: {e} (install mesa-vulkan-drivers libvulkan1, or RESEDGE_GPU_TESTS=skip)"),
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `model` lowered to int8 with min/max ranges from a few seeded inputs (the zoo's recipe).
fn int8_of(model: &Model<'_>) -> Model<'static> {
    let f = resedge::plan::passes::optimize(model).unwrap();
    let len: usize = model.graph.input.shape.iter().product();
    let inputs: Vec<Vec<f32>> = (0..4).map(|i| zoo::random_input(len, 1000 + i)).collect();
    let ranges = zoo::calibrate_minmax(&f, &inputs).unwrap();
    lower_to_int8(&f, &qparams_from_ranges(&ranges, ActivationScheme::AsymmetricI8), &Default::default()).unwrap()
}

/// Output bytes of the CPU and of the GPU (full offload where supported) for `inputs` seeded inputs; asserts
/// the comparison and returns the largest absolute f32 difference. ResNet-18s take one input: on lavapipe
/// one run costs ~10 s, and its 1000 logits already cover every layer's shapes.
fn compare(gpu: &Gpu, model: &Model<'_>, label: &str, batch: usize, inputs: u64) -> f32 {
    let plan = Plan::new(model, &PlanOptions { batch, keep_weights: true, ..Default::default() }).unwrap();
    let mut cpu = plan.executor();
    let mut dev = OffloadExecutor::new(&plan, gpu).unwrap();
    assert!(dev.partition().offloaded() > 0, "{label}: nothing offloaded");
    let int8 = model.graph.is_quantized();
    let mut worst = 0f32;
    for seed in 0..inputs {
        let input = zoo::random_input(plan.input_value().numel(), 7 + seed);
        cpu.run_observed(&input, &mut |_, _| {}).unwrap();
        dev.run_all(&input).unwrap();
        let (want, got) = match (cpu.output_ref(), dev.output_ref()) {
            (ValueRef::F32(a), ValueRef::F32(b)) => (a.to_vec(), b.to_vec()),
            _ => panic!("{label}: expected f32 logits"),
        };
        assert_eq!(want.len(), got.len());
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            let d = (w - g).abs();
            worst = worst.max(d);
            if int8 {
                assert_eq!(
                    w.to_bits(),
                    g.to_bits(),
                    "{label} seed {seed} logit {i}: cpu {w} gpu {g} (int8 must be bit-exact)"
                );
            } else {
                assert!(d <= 1e-4 + 5e-4 * w.abs(), "{label} seed {seed} logit {i}: cpu {w} gpu {g} (|d| = {d:e})");
            }
        }
    }
    println!(
        "{label}: batch {batch}, {} of {} steps on the GPU, max |cpu - gpu| = {worst:e}",
        dev.partition().offloaded(),
        plan.steps.len()
    );
    worst
}

fn shipped_resnet20() -> ModelFile {
    ModelFile::open(root().join("models/cifar10/resnet20.rsm")).unwrap()
}

#[test]
fn resnet20_f32_and_int8_match_the_cpu() {
    let Some(g) = gpu(true) else { return };
    println!("device: {}, dot4I8Packed: {}", g.device_name(), g.uses_dot4());
    let file = shipped_resnet20();
    let f32_model = file.model().unwrap();
    compare(&g, &f32_model, "resnet20 f32", 1, 3);
    compare(&g, &f32_model, "resnet20 f32", 3, 3);
    let q = int8_of(&f32_model);
    compare(&g, &q, "resnet20 int8", 1, 3);
    compare(&g, &q, "resnet20 int8", 2, 3);
    let random = ModelFile::open(root().join("models/resnet20-random-int8.rsm")).unwrap();
    compare(&g, &random.model().unwrap(), "resnet20-random-int8.rsm", 1, 3);
}

#[test]
fn int8_without_dot4_matches_the_cpu() {
    let Some(g) = gpu(false) else { return };
    assert!(!g.uses_dot4());
    let file = shipped_resnet20();
    compare(&g, &int8_of(&file.model().unwrap()), "resnet20 int8, unpacked dot product", 1, 3);
}

#[test]
fn resnet18_f32_and_int8_match_the_cpu() {
    let Some(g) = gpu(true) else { return };
    let arch = zoo::arch("resnet18").unwrap();
    compare(&g, &zoo::build(&arch, 3).unwrap(), "zoo resnet18 f32", 1, 1);
    compare(&g, &zoo::build_int8(&arch, 3, ActivationScheme::AsymmetricI8).unwrap(), "zoo resnet18 int8", 1, 1);
    compare(&g, &zoo::build_int8(&arch, 4, ActivationScheme::AsymmetricU8).unwrap(), "zoo resnet18 int8 (u8)", 1, 1);
}

#[test]
fn model_files_from_the_environment_match_the_cpu() {
    let Some(list) = std::env::var_os("RESEDGE_GPU_MODELS") else {
        println!("skipped: RESEDGE_GPU_MODELS not set (CI sets it to the imported ResNet-18 and quantized files)");
        return;
    };
    let Some(g) = gpu(true) else { return };
    for path in std::env::split_paths(&list) {
        let file = ModelFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let model = file.model().unwrap();
        let inputs = if model.graph.input.shape.iter().product::<usize>() > 3 * 64 * 64 { 1 } else { 3 };
        compare(&g, &model, &path.display().to_string(), 1, inputs);
    }
}

/// Every other supported step on the GPU: values cross between CPU and GPU at every boundary, and those
/// produced on the GPU stay resident for later GPU steps (residual inputs skip a segment).
#[test]
fn mixed_partitions_give_the_same_bits() {
    let Some(g) = gpu(true) else { return };
    let file = shipped_resnet20();
    let f32_model = file.model().unwrap();
    let q = int8_of(&f32_model);
    for (model, label) in [(&f32_model, "f32"), (&q, "int8")] {
        let plan = Plan::new(model, &PlanOptions { keep_weights: true, ..Default::default() }).unwrap();
        let full = partition(&plan, &g);
        for phase in 0..2 {
            let assigned: Vec<bool> = full.assigned.iter().enumerate().map(|(i, &a)| a && i % 2 == phase).collect();
            let part = partition_with(&plan, assigned);
            assert!(part.segments.len() > 10, "{label}: expected many segments");
            let mut dev = OffloadExecutor::with_partition(&plan, &g, part).unwrap();
            let mut cpu = plan.executor();
            let input = zoo::random_input(plan.input_value().numel(), 99);
            let want = cpu.run(&input).unwrap().to_vec();
            let got = dev.run(&input).unwrap();
            for (w, x) in want.iter().zip(got) {
                if model.graph.is_quantized() {
                    assert_eq!(w.to_bits(), x.to_bits(), "{label} phase {phase}");
                } else {
                    assert!((w - x).abs() <= 1e-4 + 5e-4 * w.abs(), "{label} phase {phase}: {w} vs {x}");
                }
            }
        }
    }
}

/// Quantize, Dequantize and Softmax stay on the CPU; the partition says so, and conv/pool/add do not.
#[test]
fn partition_keeps_boundary_ops_on_the_cpu() {
    let Some(g) = gpu(true) else { return };
    let file = shipped_resnet20();
    let q = int8_of(&file.model().unwrap());
    let plan = Plan::new(&q, &PlanOptions { keep_weights: true, ..Default::default() }).unwrap();
    let part = partition(&plan, &g);
    for (s, &on_gpu) in plan.steps.iter().zip(&part.assigned) {
        let boundary = matches!(s.op, "Quantize" | "Dequantize" | "Softmax");
        assert_eq!(on_gpu, !boundary, "{} ({})", s.name, s.op);
    }
    // The graph input is uploaded once (by the Quantize step's output), and only the output comes back.
    let dev_segments: Vec<_> = part.segments.iter().filter(|s| s.on_device).collect();
    assert_eq!(dev_segments.len(), 1);
    assert_eq!(dev_segments[0].uploads.len(), 1);
    assert_eq!(dev_segments[0].downloads.len(), 1);
}

/// A device that cannot take the plan is a CPU fallback with a warning, not a failed command: with the
/// device's buffers capped below ResNet-20's arena, `bench --backend gpu` warns and runs on the CPU; without
/// the cap the same command runs on the GPU.
#[cfg(feature = "cli")]
#[test]
fn cli_falls_back_to_the_cpu_when_the_plan_does_not_fit_the_device() {
    if gpu(true).is_none() {
        return;
    }
    let bench = |cap: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_resedge"));
        cmd.args(["bench", "models/cifar10/resnet20.rsm", "--backend", "gpu", "--warmup", "0", "--iters", "1"]);
        cmd.current_dir(root()).env_remove("RESEDGE_GPU_MAX_BUFFER");
        if let Some(c) = cap {
            cmd.env("RESEDGE_GPU_MAX_BUFFER", c);
        }
        let o = cmd.output().expect("resedge runs");
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "cap {cap:?}: exit {:?}\n{out}\n{err}", o.status);
        (out.into_owned(), err.into_owned())
    };
    let (out, err) = bench(Some("4096"));
    let warning = err.lines().find(|l| l.starts_with("warning: preparing the plan on")).unwrap_or_else(|| {
        panic!("no fallback warning:\n{err}");
    });
    assert!(
        warning.contains("exceeds the device's storage buffer limit of 4096 bytes")
            && warning.ends_with("; running on the CPU"),
        "{warning}"
    );
    assert!(out.lines().any(|l| l.starts_with("backend    cpu")), "{out}");
    let (out, err) = bench(None);
    assert!(!err.contains("warning:"), "{err}");
    assert!(out.lines().any(|l| l.starts_with("backend    gpu")), "{out}");
}

/// Bound on max |cpu - gpu| / max |cpu| for f16 convolutions. Measured on lavapipe: 1.2e-3 for the trained
/// ResNet-20 on 32 CIFAR test images, 4.6e-4 for the zoo ResNet-18 on 3 seeded inputs (the test now runs one).
const F16_TOLERANCE: f32 = 1e-2;

/// The GPU with f16 convolutions, or None (printed) where there is no GPU to test or no shader-f16.
fn gpu_f16() -> Option<Gpu> {
    let g = gpu_with(GpuOptions { f16: true, ..GpuOptions::default() })?;
    if !g.uses_f16() {
        println!("skipped: {} has no shader-f16", g.device_name());
        return None;
    }
    Some(g)
}

/// The first `n` CIFAR-10 test images, normalized like the shipped ResNet-20's training data (NCHW).
fn cifar_test_images(n: usize) -> Vec<Vec<f32>> {
    let batch = std::fs::read(common::shared_data("cifar10/test_batch.bin")).unwrap();
    let p = resedge::graph::Preprocess::cifar10();
    batch
        .chunks_exact(3073)
        .take(n)
        .map(|rec| {
            rec[1..].iter().enumerate().map(|(i, &v)| (v as f32 / 255.0 - p.mean[i / 1024]) / p.std[i / 1024]).collect()
        })
        .collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

/// f16 convolutions against the CPU in f32 on `inputs`: every logit within F16_TOLERANCE of the largest, the
/// same top-1 class. Also checks that f16 really ran: every f32 convolution was prepared in f16, the weight
/// buffer is half the f32 one's (plus the f32 biases), and the logits are not the f32 GPU's bits. Returns the
/// largest relative error.
fn compare_f16(g16: &Gpu, g32: &Gpu, model: &Model<'_>, label: &str, inputs: &[Vec<f32>]) -> f32 {
    let plan = Plan::new(model, &PlanOptions { keep_weights: true, ..Default::default() }).unwrap();
    let part = partition(&plan, g16);
    let (w16, w32) = (g16.weights(&plan, &part.assigned).unwrap(), g32.weights(&plan, &part.assigned).unwrap());
    assert!(w32.f32_convs > 0 && w32.f16_convs == 0, "{label}: {w32:?}");
    assert_eq!((w16.f16_convs, w16.f32_convs), (w32.f32_convs, 0), "{label}: every conv in f16");
    let ratio = w16.bytes as f64 / w32.bytes as f64;
    assert!((0.5..0.51).contains(&ratio), "{label}: f16 weights {} bytes, f32 {} bytes", w16.bytes, w32.bytes);
    let mut cpu = plan.executor();
    let mut dev16 = OffloadExecutor::new(&plan, g16).unwrap();
    let mut dev32 = OffloadExecutor::new(&plan, g32).unwrap();
    assert!(dev16.reduced_f32_precision() && !dev32.reduced_f32_precision());
    let (mut worst, mut differs) = (0f32, false);
    for (k, input) in inputs.iter().enumerate() {
        let want = cpu.run(input).unwrap().to_vec();
        let got = dev16.run(input).unwrap().to_vec();
        differs |= dev32.run(input).unwrap().iter().zip(&got).any(|(a, b)| a.to_bits() != b.to_bits());
        let largest = want.iter().fold(0f32, |m, w| m.max(w.abs()));
        let err = want.iter().zip(&got).map(|(w, g)| (w - g).abs()).fold(0f32, f32::max) / largest;
        worst = worst.max(err);
        assert!(
            err <= F16_TOLERANCE,
            "{label} input {k}: max |cpu - gpu f16| = {err:e} of the largest logit {largest}"
        );
        let (top_cpu, top_gpu) = (argmax(&want), argmax(&got));
        assert_eq!(
            top_cpu, top_gpu,
            "{label} input {k}: top-1 cpu {top_cpu} ({}) gpu f16 {top_gpu} ({}), cpu logits {want:?}",
            want[top_cpu], want[top_gpu]
        );
    }
    assert!(differs, "{label}: f16 logits are bit-identical to the f32 GPU's; did conv_f16 run?");
    println!(
        "{label}: {} inputs, {} convs in f16, weights {} -> {} bytes, max |cpu - gpu f16| / max |cpu| = {worst:e}",
        inputs.len(),
        w16.f16_convs,
        w32.bytes,
        w16.bytes
    );
    worst
}

#[test]
fn resnet20_f16_is_close_to_the_cpu_on_cifar_test_images() {
    let (Some(g16), Some(g32)) = (gpu_f16(), gpu(true)) else { return };
    println!("device: {}", g16.device_name());
    let file = shipped_resnet20();
    compare_f16(&g16, &g32, &file.model().unwrap(), "resnet20 f16", &cifar_test_images(32));
}

#[test]
fn resnet18_f16_is_close_to_the_cpu() {
    let (Some(g16), Some(g32)) = (gpu_f16(), gpu(true)) else { return };
    let model = zoo::build(&zoo::arch("resnet18").unwrap(), 3).unwrap();
    let inputs = [zoo::random_input(3 * 224 * 224, 7)];
    compare_f16(&g16, &g32, &model, "zoo resnet18 f16", &inputs);
}

/// int8 models are untouched by the f16 option: still byte-identical to the CPU.
#[test]
fn int8_with_the_f16_option_matches_the_cpu() {
    let Some(g) = gpu_f16() else { return };
    let file = shipped_resnet20();
    compare(&g, &int8_of(&file.model().unwrap()), "resnet20 int8, f16 option on", 1, 3);
}
