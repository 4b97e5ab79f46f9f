//! `--backend cpu|gpu|npu|auto` for `run`, `bench`, `classify` and `camera`: builds the executor that runs
//! a plan there. A backend this build or this machine lacks, or a device that cannot prepare the plan, is
//! reported on stderr and the command falls back to the CPU (never silently: the warning names the backend
//! and why).

use anyhow::Result;
use clap::{Args, ValueEnum};
use resedge::backend::{BackendKind, BackendOptions, OffloadExecutor, Timings};
use resedge::plan::{Executor, Plan, PlanOptions};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Which {
    Cpu,
    Gpu,
    Npu,
    Auto,
}

#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Where to run: cpu, gpu (wgpu/Vulkan, feature `gpu`), npu (Rockchip, feature `npu-rknn`, runs the
    /// `.rknn` file), auto (the GPU if one is found, else the CPU). Unsupported nodes and missing devices
    /// fall back to the CPU with a message.
    #[arg(long, value_enum, default_value_t = Which::Cpu)]
    pub backend: Which,
    /// The `.rknn` model for `--backend npu` (default: the model file with the extension .rknn).
    #[arg(long)]
    pub rknn: Option<PathBuf>,
    /// GPU: run f32 convolutions with f16 weights and products (f32 accumulation) where the device has
    /// shader-f16, else in f32 with a warning (also `RESEDGE_GPU_F16=1`). Logits then differ from the CPU's
    /// by about 1e-3 of the largest; int8 models are unaffected.
    #[arg(long)]
    pub gpu_f16: bool,
}

impl BackendArgs {
    /// Planner settings for this backend: offloaded convs upload the OIHW weights, so the plan keeps them
    /// next to the CPU kernels' packed copies.
    pub fn plan_options(&self, batch: usize, threads: usize) -> PlanOptions {
        PlanOptions { batch, threads, keep_weights: self.backend != Which::Cpu, ..Default::default() }
    }
}

/// An executor on the chosen backend.
pub enum Runner<'p, 'a> {
    Cpu(Executor<'p, 'a>),
    Offload(Box<OffloadExecutor<'p, 'a>>),
    #[cfg(feature = "npu-rknn")]
    Npu(resedge::backend::npu::Rknn, Vec<f32>),
}

impl<'p, 'a> Runner<'p, 'a> {
    /// Creates the executor for `plan` on `args.backend`, falling back to the CPU with a warning.
    /// `model_path` locates the default `.rknn` file.
    pub fn new(plan: &'p Plan<'a>, args: &BackendArgs, model_path: Option<&Path>) -> Result<Runner<'p, 'a>> {
        if args.gpu_f16 && !matches!(args.backend, Which::Gpu | Which::Auto) {
            eprintln!("warning: --gpu-f16 applies to --backend gpu or auto; ignored");
        }
        let kind = match args.backend {
            Which::Cpu => return Ok(Runner::Cpu(plan.executor())),
            Which::Npu => return npu(plan, args, model_path),
            Which::Gpu => BackendKind::Gpu,
            Which::Auto => BackendKind::Auto,
        };
        let backend = match kind.create_with(&BackendOptions { gpu_f16: args.gpu_f16 }) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("warning: {e}; running on the CPU");
                return Ok(Runner::Cpu(plan.executor()));
            }
        };
        // A device that exists but cannot take this plan (arena over its buffer limit, lost device) is
        // a fallback like a missing one, not a failed command.
        let exec = match OffloadExecutor::new(plan, backend.as_ref()) {
            Ok(exec) => exec,
            Err(e) => {
                eprintln!("warning: preparing the plan on {} failed: {e}; running on the CPU", backend.device_name());
                return Ok(Runner::Cpu(plan.executor()));
            }
        };
        let part = exec.partition();
        if part.offloaded() > 0 {
            let cpu: Vec<&str> =
                plan.steps.iter().zip(&part.assigned).filter(|(_, &a)| !a).map(|(s, _)| s.op).collect();
            eprintln!(
                "backend {} [{}]: {} of {} nodes on the device; on the CPU: {}",
                exec.backend(),
                exec.device_name(),
                part.offloaded(),
                plan.steps.len(),
                if cpu.is_empty() { "none".to_string() } else { cpu.join(", ") }
            );
        }
        Ok(Runner::Offload(Box::new(exec)))
    }

    /// Runs one inference and returns the f32 output.
    pub fn run(&mut self, input: &[f32]) -> Result<&[f32]> {
        Ok(match self {
            Runner::Cpu(e) => e.run(input)?,
            Runner::Offload(e) => e.run(input)?,
            #[cfg(feature = "npu-rknn")]
            Runner::Npu(n, out) => {
                *out = n.run(input)?;
                out
            }
        })
    }

    /// Stage times of the last run, for offloaded runs.
    pub fn timings(&self) -> Option<Timings> {
        match self {
            Runner::Offload(e) => Some(e.last),
            _ => None,
        }
    }

    /// Whether f32 steps run in less than f32 precision (`--gpu-f16` on a device that has it).
    pub fn reduced_f32_precision(&self) -> bool {
        matches!(self, Runner::Offload(e) if e.reduced_f32_precision())
    }

    /// "cpu", "gpu", "npu".
    pub fn name(&self) -> &'static str {
        match self {
            Runner::Cpu(_) => "cpu",
            Runner::Offload(e) => e.backend(),
            #[cfg(feature = "npu-rknn")]
            Runner::Npu(..) => "npu",
        }
    }

    /// The device, for reports.
    pub fn device(&self) -> String {
        match self {
            Runner::Offload(e) => e.device_name().to_string(),
            r => r.name().to_string(),
        }
    }
}

#[cfg(feature = "npu-rknn")]
fn npu<'p, 'a>(plan: &'p Plan<'a>, args: &BackendArgs, model_path: Option<&Path>) -> Result<Runner<'p, 'a>> {
    use anyhow::Context;
    use resedge::backend::npu::{rknn_path, Rknn};
    let Some(path) = args.rknn.clone().or_else(|| model_path.map(|m| rknn_path(m, None))) else {
        eprintln!("warning: --backend npu needs --rknn FILE for a zoo model; running on the CPU");
        return Ok(Runner::Cpu(plan.executor()));
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading the NPU model {}", path.display()))?;
    match Rknn::open(&bytes) {
        Ok(n) if n.input_len() == plan.input_value().numel() => {
            eprintln!("backend npu: {}", path.display());
            Ok(Runner::Npu(n, Vec::new()))
        }
        Ok(n) => anyhow::bail!(
            "{} takes {} input values; the plan's input has {}",
            path.display(),
            n.input_len(),
            plan.input_value().numel()
        ),
        Err(e) => {
            eprintln!("warning: {e}; running on the CPU");
            Ok(Runner::Cpu(plan.executor()))
        }
    }
}

#[cfg(not(feature = "npu-rknn"))]
fn npu<'p, 'a>(plan: &'p Plan<'a>, _: &BackendArgs, _: Option<&Path>) -> Result<Runner<'p, 'a>> {
    eprintln!("warning: backend npu unavailable: this build has no `npu-rknn` feature; running on the CPU");
    Ok(Runner::Cpu(plan.executor()))
}
