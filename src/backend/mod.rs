//! Offload backends: a [`Backend`] declares which planned steps it can run (op, dtype, shape); [`partition`]
//! assigns every step of a [`Plan`] to the device or to the CPU (logging each fallback); [`OffloadExecutor`]
//! then runs the plan segment by segment, moving a value across only where a CPU segment and a device
//! segment meet. Values stay resident on the device between consecutive offloaded steps.
//!
//! The device mirrors the CPU arena's layout (same offsets, same bytes, int8 values in the internal int8
//! domain), so a transfer is a plain byte copy and every backend must reproduce the int8 spec
//! (docs/int8-spec.md) to the bit. A backend that is not compiled in is reported by [`BackendKind::create`]
//! as [`Error::BackendUnavailable`], never a panic.
//!
//! | backend | feature | runs |
//! |---|---|---|
//! | `cpu` | (always) | everything: the plan's own kernels |
//! | `gpu` | `gpu` | conv / linear / pool / add / clamp / shortcut / flatten through wgpu (Vulkan) compute shaders |
//! | `npu` | `npu-rknn` | a whole `.rknn` model through `librknnrt.so` (see [`npu`]; not a partition of our plan) |

pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
#[cfg(feature = "npu-rknn")]
pub mod npu;

use crate::error::{Error, Result};
use crate::plan::{Executor, Plan, Step, Value, ValueRef};
use core::ops::Range;
use std::prelude::v1::*;
use std::time::{Duration, Instant};

/// The `--backend` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Cpu,
    Gpu,
    Npu,
    /// The GPU where one is compiled in and found, else the CPU.
    Auto,
}

impl BackendKind {
    /// Parses `cpu`, `gpu`, `npu` or `auto`.
    pub fn parse(s: &str) -> Option<BackendKind> {
        Some(match s {
            "cpu" => BackendKind::Cpu,
            "gpu" => BackendKind::Gpu,
            "npu" => BackendKind::Npu,
            "auto" => BackendKind::Auto,
            _ => return None,
        })
    }

    /// The partitioning backend this kind names. `Npu` is not one (it runs whole `.rknn` models, see
    /// [`npu`]): asking for it here is an error, as is a backend this build does not include.
    pub fn create(self) -> Result<Box<dyn Backend>> {
        self.create_with(&BackendOptions::default())
    }

    /// Like [`BackendKind::create`] with settings beyond the environment's.
    pub fn create_with(self, opts: &BackendOptions) -> Result<Box<dyn Backend>> {
        match self {
            BackendKind::Cpu => Ok(Box::new(cpu::Cpu)),
            BackendKind::Gpu => gpu_backend(opts),
            BackendKind::Npu => Err(Error::BackendUnavailable {
                backend: "npu",
                why: "the NPU runs a whole .rknn model (resedge ... --backend npu --rknn FILE), not a plan partition"
                    .into(),
            }),
            BackendKind::Auto => gpu_backend(opts).or_else(|e| {
                log::info!("backend auto: {e}; using the CPU");
                Ok(Box::new(cpu::Cpu))
            }),
        }
    }
}

/// Backend settings that the environment alone does not give.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendOptions {
    /// f32 convolutions in f16 on a GPU with shader-f16 (as `RESEDGE_GPU_F16=1`; see [`gpu`]).
    pub gpu_f16: bool,
}

#[cfg(feature = "gpu")]
fn gpu_backend(opts: &BackendOptions) -> Result<Box<dyn Backend>> {
    let mut o = gpu::GpuOptions::from_env()?;
    o.f16 |= opts.gpu_f16;
    Ok(Box::new(gpu::Gpu::with_options(o)?))
}

#[cfg(not(feature = "gpu"))]
fn gpu_backend(_: &BackendOptions) -> Result<Box<dyn Backend>> {
    Err(Error::BackendUnavailable { backend: "gpu", why: "this build has no `gpu` feature".into() })
}

/// A compute device that can take over steps of a plan.
pub trait Backend {
    /// Short name for logs and reports (`cpu`, `gpu`).
    fn name(&self) -> &'static str;
    /// A description of the device (adapter name, driver), for reports.
    fn device_name(&self) -> String {
        self.name().into()
    }
    /// False for the CPU itself: nothing to partition, nothing to log.
    fn offloads(&self) -> bool {
        true
    }
    /// True when some f32 steps compute in less than f32 precision (f16 products on the GPU): their outputs
    /// then differ from the CPU's beyond the f32 tolerance. int8 steps are never affected.
    fn reduced_f32_precision(&self) -> bool {
        false
    }
    /// `None` when the backend can run `step` of `plan`, else why not (op, dtype or shape it lacks).
    fn unsupported(&self, plan: &Plan<'_>, step: &Step<'_>) -> Option<String>;
    /// Builds everything the assigned steps need (pipelines, weights, buffers) once; `assigned[i]` says
    /// whether step `i` runs on the device.
    fn prepare<'p>(&self, plan: &'p Plan<'_>, assigned: &[bool]) -> Result<Box<dyn Device + 'p>>;
}

/// A prepared device: the plan's device-side arena and the assigned steps. Every call returns when its work
/// is complete, so the caller's timings are honest.
pub trait Device {
    /// Writes value `value`'s bytes (its CPU arena bytes) into the device arena.
    fn upload(&mut self, value: &Value, bytes: &[u8]) -> Result<()>;
    /// Runs the steps in `steps` (all assigned to the device) in order.
    fn run(&mut self, steps: Range<usize>) -> Result<()>;
    /// Reads value `value` from the device arena into `out` (`value.bytes` long).
    fn download(&mut self, value: &Value, out: &mut [u8]) -> Result<()>;
}

/// A maximal run of consecutive steps on one side, with the values that cross into and out of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub steps: Range<usize>,
    pub on_device: bool,
    /// Values the device segment reads that the CPU produced (or the graph input): uploaded before it.
    pub uploads: Vec<usize>,
    /// Values the device segment produces that a later CPU step or the caller reads: downloaded after it.
    pub downloads: Vec<usize>,
}

/// Where every step runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    pub assigned: Vec<bool>,
    pub segments: Vec<Segment>,
}

impl Partition {
    /// Steps assigned to the device.
    pub fn offloaded(&self) -> usize {
        self.assigned.iter().filter(|&&a| a).count()
    }
}

/// Assigns each step to `backend` where it supports it, else to the CPU with an info log line naming the
/// step and the reason.
pub fn partition(plan: &Plan<'_>, backend: &dyn Backend) -> Partition {
    if !backend.offloads() {
        return partition_with(plan, vec![false; plan.steps.len()]);
    }
    let assigned: Vec<bool> = plan
        .steps
        .iter()
        .map(|s| match backend.unsupported(plan, s) {
            None => true,
            Some(why) => {
                log::info!("{}: {} stays on the CPU ({}: {why})", s.name, s.op, backend.name());
                false
            }
        })
        .collect();
    partition_with(plan, assigned)
}

/// Builds segments and crossings for a given assignment.
pub fn partition_with(plan: &Plan<'_>, assigned: Vec<bool>) -> Partition {
    // producer[v] = Some(step) for values a step writes; None for the graph input.
    let mut producer = vec![None; plan.values.len()];
    for (i, s) in plan.steps.iter().enumerate() {
        producer[s.output] = Some(i);
    }
    let mut segments: Vec<Segment> = Vec::new();
    for (i, &dev) in assigned.iter().enumerate() {
        match segments.last_mut() {
            Some(seg) if seg.on_device == dev => seg.steps.end = i + 1,
            _ => segments.push(Segment { steps: i..i + 1, on_device: dev, uploads: vec![], downloads: vec![] }),
        }
    }
    let on_device = |v: usize| producer[v].is_some_and(|p| assigned[p]);
    for seg in segments.iter_mut().filter(|s| s.on_device) {
        for i in seg.steps.clone() {
            for &v in &plan.steps[i].inputs {
                if !on_device(v) && !seg.uploads.contains(&v) {
                    seg.uploads.push(v);
                }
            }
            let out = plan.steps[i].output;
            let read_on_cpu =
                plan.steps.iter().enumerate().skip(i + 1).any(|(j, s)| !assigned[j] && s.inputs.contains(&out));
            if read_on_cpu || out == plan.output {
                seg.downloads.push(out);
            }
        }
    }
    Partition { assigned, segments }
}

/// Where the time of one run went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub upload: Duration,
    pub compute: Duration,
    pub download: Duration,
    /// Steps the CPU ran (fallbacks: Quantize, Dequantize, Softmax, ...).
    pub cpu: Duration,
}

impl Timings {
    fn add(&mut self, o: &Timings) {
        self.upload += o.upload;
        self.compute += o.compute;
        self.download += o.download;
        self.cpu += o.cpu;
    }
}

/// Runs a plan across the CPU and one device. Build once (pipelines, weights and buffers are made here),
/// then call [`OffloadExecutor::run`] many times.
pub struct OffloadExecutor<'p, 'a> {
    cpu: Executor<'p, 'a>,
    device: Option<Box<dyn Device + 'p>>,
    partition: Partition,
    backend: &'static str,
    device_name: String,
    reduced_f32_precision: bool,
    /// Time of the last run, by stage.
    pub last: Timings,
    /// Sum over all runs since creation.
    pub total: Timings,
}

impl<'p, 'a> OffloadExecutor<'p, 'a> {
    /// Partitions `plan` for `backend` and prepares the device part.
    pub fn new(plan: &'p Plan<'a>, backend: &dyn Backend) -> Result<Self> {
        let partition = partition(plan, backend);
        Self::with_partition(plan, backend, partition)
    }

    /// Like [`OffloadExecutor::new`] with a given partition (tests force assignments with it).
    pub fn with_partition(plan: &'p Plan<'a>, backend: &dyn Backend, partition: Partition) -> Result<Self> {
        let device = if partition.offloaded() > 0 { Some(backend.prepare(plan, &partition.assigned)?) } else { None };
        log::info!(
            "backend {}: {} of {} steps offloaded in {} device segment(s)",
            backend.name(),
            partition.offloaded(),
            plan.steps.len(),
            partition.segments.iter().filter(|s| s.on_device).count()
        );
        let reduced_f32_precision = backend.reduced_f32_precision() && partition.offloaded() > 0;
        Ok(OffloadExecutor {
            cpu: plan.executor(),
            device,
            partition,
            backend: backend.name(),
            device_name: backend.device_name(),
            reduced_f32_precision,
            last: Timings::default(),
            total: Timings::default(),
        })
    }

    pub fn partition(&self) -> &Partition {
        &self.partition
    }
    pub fn backend(&self) -> &'static str {
        self.backend
    }
    pub fn device_name(&self) -> &str {
        &self.device_name
    }
    /// See [`Backend::reduced_f32_precision`] (false when nothing is offloaded).
    pub fn reduced_f32_precision(&self) -> bool {
        self.reduced_f32_precision
    }
    pub fn plan(&self) -> &'p Plan<'a> {
        self.cpu.plan()
    }

    /// Runs one inference (`input` as for [`Executor::run`]) and returns the f32 output.
    pub fn run(&mut self, input: &[f32]) -> Result<&[f32]> {
        self.run_all(input)?;
        match self.cpu.output_ref() {
            ValueRef::F32(v) => Ok(v),
            ValueRef::I8(..) => Err(Error::Input("the model's output is quantized; read it with output_ref()".into())),
        }
    }

    /// The graph output of the last run.
    pub fn output_ref(&self) -> ValueRef<'_> {
        self.cpu.output_ref()
    }

    /// Runs one inference, leaving the output in the CPU arena.
    pub fn run_all(&mut self, input: &[f32]) -> Result<()> {
        let mut t = Timings::default();
        let t0 = Instant::now();
        self.cpu.load_input(input)?;
        t.cpu += t0.elapsed();
        let plan = self.cpu.plan();
        for seg in &self.partition.segments {
            if !seg.on_device {
                let t0 = Instant::now();
                self.cpu.run_steps(seg.steps.clone(), &mut |_, _| {});
                t.cpu += t0.elapsed();
                continue;
            }
            let dev = self.device.as_mut().ok_or_else(|| Error::Input("device segment without a device".into()))?;
            let t0 = Instant::now();
            for &v in &seg.uploads {
                dev.upload(&plan.values[v], self.cpu.value_bytes(v))?;
            }
            let t1 = Instant::now();
            dev.run(seg.steps.clone())?;
            let t2 = Instant::now();
            for &v in &seg.downloads {
                dev.download(&plan.values[v], self.cpu.value_bytes_mut(v))?;
            }
            t.upload += t1 - t0;
            t.compute += t2 - t1;
            t.download += t2.elapsed();
        }
        self.last = t;
        self.total.add(&t);
        Ok(())
    }
}
