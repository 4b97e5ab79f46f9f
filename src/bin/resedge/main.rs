//! `resedge`: the command-line tool. `zoo`, `inspect`, `run`, `bench`, `classify` and `camera`; see
//! `resedge --help`.

mod backend;
mod bench;
mod camera;
mod classify;
mod predict;
mod source;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use resedge::plan::{Plan, PlanOptions};
use resedge_data::npy;
use source::ModelArgs;
use std::io::Write;

#[derive(Parser)]
#[command(name = "resedge", version, about = "Lean ResNet inference runtime: inspect, run and benchmark models")]
struct Cli {
    /// Log kernel choices and planning decisions (info level); RUST_LOG overrides.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every network of the zoo with its parameters and multiply-accumulates.
    Zoo,
    /// Show a model's nodes: op, kernel, output shape, parameters, MACs; and its arena size.
    Inspect(ModelArgs),
    /// Run a model on a NumPy input ([N, C, H, W] or [C, H, W] f32) and write the output as .npy.
    Run {
        /// Model file (.rsm).
        model: std::path::PathBuf,
        #[arg(long)]
        input: std::path::PathBuf,
        #[arg(long)]
        output: std::path::PathBuf,
        #[command(flatten)]
        backend: backend::BackendArgs,
    },
    /// Check a backend against the CPU on seeded random inputs: int8 outputs must be byte-identical, f32
    /// within 1e-4 + 5e-4 * |cpu| (with --gpu-f16: within 1e-2 of the largest |cpu| output). Exits 1 on a
    /// mismatch or when nothing ran on the device.
    Verify {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        backend: backend::BackendArgs,
        /// How many inputs to compare.
        #[arg(long, default_value_t = 3)]
        inputs: u64,
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Measure latency: min / median / p90 / p99 / max, images/s, memory, per-layer profile.
    Bench(bench::BenchArgs),
    /// Classify image files: top-k labels and probabilities, decode / preprocess / inference times.
    Classify(classify::ClassifyArgs),
    /// Classify a live stream: V4L2 camera, MJPEG on stdin, or a directory of images.
    Camera(camera::CameraArgs),
}

/// Exit status of a command that ran but did not fully succeed (an image failed, a camera source was lost);
/// errors that stop a command exit with 1.
const EXIT_PARTIAL: u8 = camera::EXIT_SOURCE_FAILED;

fn main() -> std::process::ExitCode {
    match dispatch() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(EXIT_PARTIAL),
        // `resedge zoo | head` closes the pipe early: that is not an error.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the command; `Ok(false)` when it finished but something it was asked to do failed.
fn dispatch() -> Result<bool> {
    let cli = Cli::parse();
    let level = if cli.verbose { "info" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    match cli.cmd {
        Cmd::Zoo => zoo().map(|()| true),
        Cmd::Inspect(args) => args.with_model(|model| inspect(model, &args)).map(|()| true),
        Cmd::Run { model, input, output, backend } => run(&model, &input, &output, &backend).map(|()| true),
        Cmd::Verify { model, backend, inputs, batch } => verify(&model, &backend, inputs, batch).map(|()| true),
        Cmd::Bench(args) => bench::bench(&args).map(|()| true),
        Cmd::Classify(args) => classify::classify(&args),
        Cmd::Camera(args) => camera::camera(&args),
    }
}

fn zoo() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<12} {:<9} {:<11} {:<9} {:<16} {:>14} {:>10}",
        "name", "family", "block", "shortcut", "layers", "params", "GMACs"
    )?;
    for arch in resedge::zoo::list()? {
        let model = resedge::zoo::build(&arch, 0)?;
        let plan = Plan::new(&model, &PlanOptions::default()).with_context(|| format!("planning {}", arch.name))?;
        writeln!(
            out,
            "{:<12} {:<9} {:<11} {:<9} {:<16} {:>14} {:>10.3}",
            arch.name,
            format!("{:?}", arch.family).to_lowercase(),
            format!("{:?}", arch.block).to_lowercase(),
            format!("{:?}", arch.shortcut),
            format!("{:?}", arch.layers),
            group_digits(model.parameter_count()),
            plan.macs() as f64 / 1e9
        )?;
    }
    Ok(())
}

/// 11689512 -> "11,689,512".
fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn inspect(model: &resedge::Model<'_>, args: &ModelArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let plan = Plan::new(model, &PlanOptions::default())?;
    writeln!(out, "model {} ({}), input {:?}", model.name, args.describe(model), plan.input_value().shape)?;
    if let Some(p) = &model.preprocess {
        writeln!(out, "preprocess: resize {} crop {:?} mean {:?} std {:?}", p.resize, p.crop, p.mean, p.std)?;
    }
    if let (Some(first), Some(last)) = (model.labels.first(), model.labels.last()) {
        writeln!(out, "labels: {} ({first} ... {last})", model.labels.len())?;
    }
    writeln!(
        out,
        "\n{:<28} {:<14} {:<28} {:<5} {:<18} {:>10} {:>12}",
        "node", "op", "kernel", "type", "output", "params", "MACs"
    )?;
    for s in &plan.steps {
        let v = &plan.values[s.output];
        writeln!(
            out,
            "{:<28} {:<14} {:<28} {:<5} {:<18} {:>10} {:>12}",
            s.name,
            s.op,
            s.kernel,
            v.ty.name(),
            format!("{:?}", v.shape),
            group_digits(s.params),
            group_digits(s.macs)
        )?;
    }
    writeln!(out,
        "\n{} nodes, {} parameters (stored: {} learnable before folding {}), {:.3} GMACs, weights {:.2} MB, arena {:.2} MB",
        plan.steps.len(),
        group_digits(plan.steps.iter().map(|s| s.params).sum()),
        model.tensors.len(),
        group_digits(model.parameter_count()),
        plan.macs() as f64 / 1e9,
        model.weight_bytes() as f64 / 1e6,
        plan.arena_bytes as f64 / 1e6
    )?;
    writeln!(out, "arena bytes: {}", plan.arena_bytes)?;
    Ok(())
}

fn run(
    model_path: &std::path::Path,
    input: &std::path::Path,
    output: &std::path::Path,
    backend: &backend::BackendArgs,
) -> Result<()> {
    let file =
        resedge::format::ModelFile::open(model_path).with_context(|| format!("opening {}", model_path.display()))?;
    let model = file.model().with_context(|| format!("loading {}", model_path.display()))?;
    let (shape, data) = npy::read_f32(input)?;
    let expect = &model.graph.input.shape;
    let batch = match shape.len() {
        n if n == expect.len() => 1,
        n if n == expect.len() + 1 => shape[0],
        _ => anyhow::bail!("input {} has shape {shape:?}; the model expects [N, {expect:?}]", input.display()),
    };
    if shape[shape.len() - expect.len()..] != expect[..] {
        anyhow::bail!("input {} has shape {shape:?}; the model expects [N, {:?}]", input.display(), expect);
    }
    let plan = Plan::new(&model, &backend.plan_options(batch, 1))?;
    let mut exec = backend::Runner::new(&plan, backend, Some(model_path))?;
    let out = exec.run(&data)?;
    npy::write_f32(output, &plan.output_value().shape, out)?;
    eprintln!("wrote {} {:?}", output.display(), plan.output_value().shape);
    Ok(())
}

/// `verify`'s bound on |cpu - device| for f16 convolutions, relative to the largest |cpu| output of the
/// input (tests/gpu.rs measures the actual error).
const F16_TOLERANCE: f32 = 1e-2;

fn verify(args: &ModelArgs, backend: &backend::BackendArgs, inputs: u64, batch: usize) -> Result<()> {
    args.with_model(|model| {
        let plan = Plan::new(model, &backend.plan_options(batch, 1))?;
        let mut cpu = plan.executor();
        let mut dev = backend::Runner::new(&plan, backend, args.model.as_deref())?;
        if matches!(dev, backend::Runner::Cpu(_)) {
            anyhow::bail!("nothing to verify: the model runs on the CPU");
        }
        let int8 = model.graph.is_quantized();
        let f16 = !int8 && dev.reduced_f32_precision();
        let name = dev.name();
        let mut worst = 0f32;
        for seed in 0..inputs {
            let input = resedge::zoo::random_input(plan.input_value().numel(), 7 + seed);
            let want = cpu.run(&input)?.to_vec();
            let largest = want.iter().fold(0f32, |m, w| m.max(w.abs()));
            let got = dev.run(&input)?;
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                let d = (w - g).abs();
                worst = worst.max(d);
                let ok = if int8 {
                    w.to_bits() == g.to_bits()
                } else if f16 {
                    d <= F16_TOLERANCE * largest
                } else {
                    d <= 1e-4 + 5e-4 * w.abs()
                };
                if !ok {
                    anyhow::bail!("{} input {seed} output {i}: cpu {w} {name} {g}", model.name);
                }
            }
        }
        println!(
            "verify {} ({}) on {} [{}]: {inputs} inputs, batch {batch}, {} outputs each, max |cpu - {}| = {worst:e} ({})",
            model.name,
            args.describe(model),
            dev.name(),
            dev.device(),
            plan.output_value().numel(),
            dev.name(),
            if int8 {
                "int8: byte-identical"
            } else if f16 {
                "f32 with f16 convolutions: within 1e-2 of the largest |cpu|"
            } else {
                "f32: within 1e-4 + 5e-4 |cpu|"
            }
        );
        Ok(())
    })
}
