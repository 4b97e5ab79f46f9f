//! The GPU backend: wgpu (Vulkan) compute shaders for convolution / linear, pooling, add, clamp, the option-A
//! shortcut and flatten, in f32 and int8 (common.wgsl + kernels.wgsl), f32 convolutions optionally in f16.
//! Quantize stays on the CPU (a shader f32 division is not correctly rounded, spec 11.5), and so do
//! Dequantize and Softmax, so int8 logits leave the GPU as the same bytes the CPU would have computed.
//!
//! Device memory mirrors the plan: one storage buffer laid out exactly like the CPU arena (values at the same
//! offsets, liveness-shared), one read-only buffer with every offloaded step's prepared weights, and one
//! 256-byte argument slot per step. Pipelines are compiled when the backend is created; buffers, weights and
//! bind groups when a plan is prepared; a run only records dispatches.
//!
//! int8 convolutions use `dot4I8Packed` where wgpu reports the `packed_4x8_integer_dot_product` WGSL
//! extension, otherwise an unpacked loop over the same packed words (`RESEDGE_GPU_DOT4=0` forces it).
//!
//! f16 is opt-in ([`GpuOptions::f16`], `RESEDGE_GPU_F16=1`, the CLI's `--gpu-f16`) and needs the adapter's
//! `shader-f16` (without it: a warning, and f32). Then the f32 convolutions run `conv_f16` from a second
//! shader module (conv_f16.wgsl behind `enable f16;`, so adapters without the feature never compile it):
//! weights uploaded as f16, two per word (half the bytes, [`pack_f16_weights`]), activations rounded to f16
//! (saturating at +-65504), products in f16, the sum in f32, bias / residual / clamp and the stored output
//! in f32, so the arena stays the CPU's. Logits then differ from the CPU's by about 1e-3 of the largest
//! (tests/gpu.rs). Every other step, and every int8 step, is unchanged. A convolution with a weight beyond
//! f16's range stays in f32.

use super::{Backend, Device};
use crate::error::{Error, Result};
use crate::plan::{Plan, Step, StepKind, Value, ValueType};
use core::ops::Range;
use std::prelude::v1::*;
use std::sync::{Arc, Mutex};

const COMMON: &str = include_str!("common.wgsl");
const SHADER: &str = include_str!("kernels.wgsl");
const CONV_F16: &str = include_str!("conv_f16.wgsl");
const DOT4_NATIVE: &str = "fn dot4(a: u32, b: u32) -> i32 {\n    return dot4I8Packed(a, b);\n}";
const DOT4_LOOP: &str = "fn dot4(a: u32, b: u32) -> i32 {
    var s = 0;
    for (var k = 0u; k < 32u; k += 8u) {
        s += extractBits(bitcast<i32>(a), k, 8u) * extractBits(bitcast<i32>(b), k, 8u);
    }
    return s;
}";
const ENTRY_POINTS: [&str; 14] = [
    "conv_f32",
    "conv_q8",
    "maxpool_f32",
    "avgpool_f32",
    "pool_q8",
    "gap_f32",
    "gap_q8",
    "add_f32",
    "add_q8",
    "clamp_f32",
    "clamp_q8",
    "shortcut_f32",
    "shortcut_q8",
    "copy_words",
];
/// The pipeline index of `conv_f16`, compiled from its own module after ENTRY_POINTS.
const CONV_F16_PIPELINE: usize = ENTRY_POINTS.len();
/// Bytes of one step's argument slot (the largest `min_uniform_buffer_offset_alignment` Vulkan allows).
const SLOT: u64 = 256;
const WORKGROUP: u32 = 64;

/// Argument word indices (the constants at the top of kernels.wgsl).
mod a {
    pub const TOTAL: usize = 0;
    pub const X: usize = 1;
    pub const Y: usize = 2;
    pub const R: usize = 3;
    pub const W: usize = 4;
    pub const B: usize = 5;
    pub const M: usize = 6;
    pub const S: usize = 7;
    pub const N: usize = 8;
    pub const FLAGS: usize = 24;
    pub const X_ZP: usize = 25;
    pub const Y_ZP: usize = 26;
    pub const LO: usize = 27;
    pub const HI: usize = 28;
    pub const R_ZP: usize = 29;
    pub const R_M: usize = 30;
    pub const R_S: usize = 31;
    pub const KWORDS: usize = 32;
    pub const ZP4: usize = 33;
    pub const NUMEL: usize = 34;
    pub const A_M: usize = 35;
    pub const A_S: usize = 36;
    pub const STRIDE: usize = 37;
    pub const PAD_B: usize = 38;
    pub const HW: usize = 39;
}
const RESIDUAL: u32 = 1;
const PER_CHANNEL: u32 = 2;
const COUNT_INCLUDE_PAD: u32 = 4;
const IS_MAX: u32 = 8;

fn gpu_err(what: impl core::fmt::Display) -> Error {
    Error::Backend { backend: "gpu", what: what.to_string() }
}

/// How [`Gpu::with_options`] sets the device up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    /// Use `dot4I8Packed` for int8 convolutions where the adapter has it (else the unpacked loop).
    pub dot4: bool,
    /// Run f32 convolutions with f16 weights and products (f32 accumulation) where the adapter has
    /// `shader-f16`; elsewhere a warning is logged and they run in f32. Other steps are unaffected.
    pub f16: bool,
    /// Caps the largest buffer (and storage binding) the device may create, in bytes, below the adapter's
    /// own limit: keeps ResEdge inside a memory budget on boards whose GPU shares the RAM. A plan whose
    /// arena or weights exceed it fails to prepare (the CLI then runs on the CPU).
    pub max_buffer: Option<u64>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { dot4: true, f16: false, max_buffer: None }
    }
}

impl GpuOptions {
    /// The defaults, changed by `RESEDGE_GPU_DOT4=0` (unpacked int8 dot product), `RESEDGE_GPU_F16=1` (f16
    /// convolutions) and `RESEDGE_GPU_MAX_BUFFER=BYTES` ([`GpuOptions::max_buffer`]). A malformed byte count
    /// is an error.
    pub fn from_env() -> Result<GpuOptions> {
        let max_buffer = match std::env::var("RESEDGE_GPU_MAX_BUFFER") {
            Ok(v) => Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| Error::Input(format!("RESEDGE_GPU_MAX_BUFFER={v:?} is not a byte count")))?,
            ),
            Err(_) => None,
        };
        Ok(GpuOptions {
            dot4: std::env::var("RESEDGE_GPU_DOT4").map_or(true, |v| v != "0"),
            f16: std::env::var("RESEDGE_GPU_F16").is_ok_and(|v| v == "1"),
            max_buffer,
        })
    }
}

/// A wgpu device with the ResEdge pipelines compiled.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    dot4: bool,
    /// f32 convolutions run `conv_f16` (asked for and the device has SHADER_F16).
    f16: bool,
    layout: wgpu::BindGroupLayout,
    pipelines: Vec<wgpu::ComputePipeline>,
    /// The first error wgpu reported outside an error scope (a lost device, an out-of-memory).
    failure: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// Opens the first Vulkan adapter (`WGPU_BACKEND` / `WGPU_ADAPTER_NAME` may choose another) and compiles
    /// the shaders, with [`GpuOptions::from_env`]. No adapter is [`Error::BackendUnavailable`].
    pub fn new() -> Result<Gpu> {
        Gpu::with_options(GpuOptions::from_env()?)
    }

    /// Like [`Gpu::new`]; `dot4: false` uses the unpacked dot product even where `dot4I8Packed` exists.
    pub fn with_dot4(dot4: bool) -> Result<Gpu> {
        Gpu::with_options(GpuOptions { dot4, ..GpuOptions::default() })
    }

    /// Like [`Gpu::new`] with explicit options (the environment is not read).
    pub fn with_options(opts: GpuOptions) -> Result<Gpu> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if std::env::var_os("WGPU_BACKEND").is_none() {
            desc.backends = wgpu::Backends::VULKAN;
        }
        let instance = wgpu::Instance::new(desc);
        let adapter =
            pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(&instance, None)).map_err(|e| {
                Error::BackendUnavailable {
                    backend: "gpu",
                    why: format!(
                        "no Vulkan adapter ({e}); install a Vulkan driver (Debian: mesa-vulkan-drivers libvulkan1)"
                    ),
                }
            })?;
        let info = adapter.get_info();
        let mut limits = adapter.limits();
        if let Some(cap) = opts.max_buffer {
            limits.max_buffer_size = limits.max_buffer_size.min(cap);
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(cap);
        }
        let f16 = opts.f16 && adapter.features().contains(wgpu::Features::SHADER_F16);
        if opts.f16 && !f16 {
            log::warn!("gpu: f16 convolutions asked for, but {} lacks shader-f16: they run in f32", info.name);
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("resedge"),
            required_features: if f16 { wgpu::Features::SHADER_F16 } else { wgpu::Features::empty() },
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| gpu_err(format!("opening {}: {e}", info.name)))?;
        let failure = Arc::new(Mutex::new(None::<String>));
        let sink = failure.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            log::error!("gpu: {e}");
            if let Ok(mut f) = sink.lock() {
                f.get_or_insert_with(|| e.to_string());
            }
        }));
        let dot4 = instance.wgsl_language_features().contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct)
            && opts.dot4;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("resedge step"),
            entries: &[
                storage(0, false),
                storage(1, true),
                wgpu::BindGroupLayoutEntry {
                    binding: 2,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: wgpu::BufferSize::new(SLOT),
                    },
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("resedge"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let kernels = SHADER.replace("DOT4_DEFINITION", if dot4 { DOT4_NATIVE } else { DOT4_LOOP });
        let mut pipelines =
            compile(&device, &pipeline_layout, "resedge kernels", &format!("{COMMON}\n{kernels}"), &ENTRY_POINTS);
        if f16 {
            // `enable` must precede every declaration, so it heads the module.
            let source = format!("enable f16;\n{COMMON}\n{CONV_F16}");
            pipelines.extend(compile(&device, &pipeline_layout, "resedge f16", &source, &["conv_f16"]));
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu_err(format!("compiling the shaders on {}: {e}", info.name)));
        }
        log::info!(
            "gpu: {} ({:?}, {} {}), int8 dot product: {}, f32 convolutions in {}",
            info.name,
            info.device_type,
            info.driver,
            info.driver_info,
            if dot4 { "dot4I8Packed" } else { "unpacked loop" },
            if f16 { "f16" } else { "f32" }
        );
        Ok(Gpu { device, queue, info, dot4, f16, layout, pipelines, failure })
    }

    /// Whether f32 convolutions run with f16 weights and products ([`GpuOptions::f16`] on a device with
    /// shader-f16). A convolution whose weights overflow f16 still runs in f32 (logged at prepare).
    pub fn uses_f16(&self) -> bool {
        self.f16
    }

    /// Whether int8 convolutions use `dot4I8Packed`.
    pub fn uses_dot4(&self) -> bool {
        self.dot4
    }

    fn check(&self) -> Result<()> {
        match self.failure.lock().ok().and_then(|f| f.clone()) {
            Some(e) => Err(gpu_err(e)),
            None => Ok(()),
        }
    }
}

/// Compiles `source` and one compute pipeline per entry point (validation errors surface in the caller's
/// error scope).
fn compile(
    device: &wgpu::Device,
    layout: &wgpu::PipelineLayout,
    label: &str,
    source: &str,
    entry_points: &[&str],
) -> Vec<wgpu::ComputePipeline> {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    entry_points
        .iter()
        .map(|ep| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(ep),
                layout: Some(layout),
                module: &module,
                entry_point: Some(ep),
                compilation_options: Default::default(),
                cache: None,
            })
        })
        .collect()
}

/// Which pipeline (index into ENTRY_POINTS) runs a step kind, if the GPU has one.
fn entry(kind: &StepKind<'_>) -> Option<usize> {
    Some(match kind {
        StepKind::Conv { .. } => 0,
        StepKind::QConv { .. } => 1,
        StepKind::MaxPool { .. } => 2,
        StepKind::AvgPool { .. } => 3,
        StepKind::QMaxPool { .. } | StepKind::QAvgPool { .. } => 4,
        StepKind::Gap { .. } => 5,
        StepKind::QGap { .. } => 6,
        StepKind::Add { .. } => 7,
        StepKind::QAdd { .. } => 8,
        StepKind::Clamp { .. } => 9,
        StepKind::QClamp { .. } => 10,
        StepKind::Shortcut { .. } => 11,
        StepKind::QShortcut { .. } => 12,
        StepKind::Copy { .. } | StepKind::QCopy { .. } => 13,
        StepKind::Affine { .. } => return None,
        StepKind::Quantize { .. } | StepKind::Dequantize { .. } | StepKind::Softmax { .. } => return None,
    })
}

impl Backend for Gpu {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn device_name(&self) -> String {
        let conv = if self.f16 { "f16" } else { "f32" };
        format!("{} ({}, {:?}, f32 conv in {conv})", self.info.name, self.info.driver, self.info.device_type)
    }

    fn reduced_f32_precision(&self) -> bool {
        self.f16
    }

    fn unsupported(&self, plan: &Plan<'_>, step: &Step<'_>) -> Option<String> {
        if entry(&step.kind).is_none() {
            return Some(match step.kind {
                StepKind::Quantize { .. } => "f32 -> int8 needs a correctly rounded division (spec 11.5)".into(),
                StepKind::Dequantize { .. } => "int8 -> f32 output stays on the CPU".into(),
                _ => format!("no shader for {}", step.kernel),
            });
        }
        // Word indices are u32 in the shaders.
        if plan.arena_bytes as u64 >= 1 << 34 {
            return Some(format!("arena of {} bytes exceeds u32 word indexing", plan.arena_bytes));
        }
        None
    }

    fn prepare<'p>(&self, plan: &'p Plan<'_>, assigned: &[bool]) -> Result<Box<dyn Device + 'p>> {
        self.check()?;
        let limits = self.device.limits();
        let arena_bytes = (plan.arena_bytes as u64).next_multiple_of(4).max(4);
        if arena_bytes > limits.max_storage_buffer_binding_size || arena_bytes > limits.max_buffer_size {
            return Err(gpu_err(format!(
                "the plan's arena of {arena_bytes} bytes exceeds the device's storage buffer limit of {} bytes",
                limits.max_storage_buffer_binding_size
            )));
        }
        let (steps, mut params) = self.prepare_steps(plan, assigned, &limits)?;
        if self.f16 {
            let n = steps.iter().filter(|s| s.pipeline == CONV_F16_PIPELINE).count();
            log::info!("gpu: {n} f32 convolution(s) in f16, {} bytes of weights", params.len() * 4);
        }
        params.push(0); // never empty
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let arena = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("arena"),
            size: arena_bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let weights = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("weights"),
            size: params.len() as u64 * 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&weights, 0, bytemuck::cast_slice(&params));
        let uniforms = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("args"),
            size: SLOT * steps.len().max(1) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut bind_groups = Vec::with_capacity(steps.len());
        for (slot, s) in steps.iter().enumerate() {
            let off = slot as u64 * SLOT;
            self.queue.write_buffer(&uniforms, off, bytemuck::cast_slice(&s.args));
            bind_groups.push(self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&plan.steps[s.index].name),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: arena.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: weights.as_entire_binding() },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &uniforms,
                            offset: off,
                            size: wgpu::BufferSize::new(SLOT),
                        }),
                    },
                ],
            }));
        }
        let staging_bytes = plan.values.iter().map(|v| v.bytes as u64).max().unwrap_or(4).next_multiple_of(4).max(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download"),
            size: staging_bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu_err(format!("preparing the plan: {e}")));
        }
        let mut first = vec![usize::MAX; plan.steps.len()];
        for (k, s) in steps.iter().enumerate() {
            first[s.index] = k;
        }
        self.wait()?;
        Ok(Box::new(GpuPlan { gpu: self.clone_handles(), arena, staging, steps, bind_groups, by_step: first }))
    }
}

/// What [`Gpu::weights`] reports about a plan's weight buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightStats {
    /// Bytes of the weight buffer (weights, biases and requantization constants of every assigned step).
    pub bytes: usize,
    /// Assigned f32 convolutions that run `conv_f16` (f16 weights and products).
    pub f16_convs: usize,
    /// Assigned f32 convolutions that run in f32.
    pub f32_convs: usize,
}

impl Gpu {
    /// The weight buffer [`Backend::prepare`] would build for `plan` with `assigned`, and which precision each
    /// f32 convolution gets, without creating any buffer.
    pub fn weights(&self, plan: &Plan<'_>, assigned: &[bool]) -> Result<WeightStats> {
        let (steps, params) = self.prepare_steps(plan, assigned, &self.device.limits())?;
        let convs = steps.iter().filter(|s| matches!(plan.steps[s.index].kind, StepKind::Conv { .. }));
        let f16_convs = convs.clone().filter(|s| s.pipeline == CONV_F16_PIPELINE).count();
        Ok(WeightStats { bytes: params.len() * 4, f16_convs, f32_convs: convs.count() - f16_convs })
    }

    /// Arguments, pipeline and workgroups of every assigned step, and the weight words they index.
    fn prepare_steps(
        &self,
        plan: &Plan<'_>,
        assigned: &[bool],
        limits: &wgpu::Limits,
    ) -> Result<(Vec<Prepared>, Vec<u32>)> {
        let mut params: Vec<u32> = Vec::new();
        let mut steps = Vec::new();
        for (i, step) in plan.steps.iter().enumerate() {
            if !assigned.get(i).copied().unwrap_or(false) {
                continue;
            }
            let pipeline = entry(&step.kind)
                .ok_or_else(|| gpu_err(format!("step `{}` ({}) has no GPU kernel", step.name, step.op)))?;
            let (args, in_f16) = step_args(plan, step, self.f16, &mut params)?;
            let pipeline = if in_f16 { CONV_F16_PIPELINE } else { pipeline };
            let work = args[a::TOTAL];
            steps.push(Prepared { index: i, pipeline, args, groups: grid(work, limits)? });
        }
        if params.len() as u64 * 4 > limits.max_storage_buffer_binding_size.min(limits.max_buffer_size) {
            return Err(gpu_err(format!(
                "{} bytes of weights exceed the device's storage buffer limit",
                params.len() * 4
            )));
        }
        Ok((steps, params))
    }

    fn clone_handles(&self) -> Handles {
        Handles {
            device: self.device.clone(),
            queue: self.queue.clone(),
            pipelines: self.pipelines.clone(),
            failure: self.failure.clone(),
        }
    }

    fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(gpu_err)?;
        self.check()
    }
}

/// What a prepared plan keeps of its [`Gpu`] (wgpu handles are reference counted).
struct Handles {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipelines: Vec<wgpu::ComputePipeline>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Handles {
    fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(gpu_err)?;
        match self.failure.lock().ok().and_then(|f| f.clone()) {
            Some(e) => Err(gpu_err(e)),
            None => Ok(()),
        }
    }
}

struct Prepared {
    index: usize,
    pipeline: usize,
    args: [u32; 64],
    groups: (u32, u32),
}

/// A plan prepared on the GPU.
struct GpuPlan {
    gpu: Handles,
    arena: wgpu::Buffer,
    staging: wgpu::Buffer,
    steps: Vec<Prepared>,
    bind_groups: Vec<wgpu::BindGroup>,
    /// Plan step index -> index into `steps` (usize::MAX when on the CPU).
    by_step: Vec<usize>,
}

impl Device for GpuPlan {
    fn upload(&mut self, value: &Value, bytes: &[u8]) -> Result<()> {
        if bytes.len() != value.bytes {
            return Err(gpu_err(format!("upload of `{}`: {} bytes for {}", value.name, bytes.len(), value.bytes)));
        }
        // Copies must be whole words; the padding bytes up to the next word belong to no other value.
        if bytes.len().is_multiple_of(4) {
            self.gpu.queue.write_buffer(&self.arena, value.offset as u64, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            self.gpu.queue.write_buffer(&self.arena, value.offset as u64, &padded);
        }
        self.gpu.queue.submit([]);
        self.gpu.wait()
    }

    fn run(&mut self, steps: Range<usize>) -> Result<()> {
        let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run") });
        {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("steps"), timestamp_writes: None });
            for i in steps {
                let k = *self.by_step.get(i).unwrap_or(&usize::MAX);
                let s = self.steps.get(k).ok_or_else(|| gpu_err(format!("step {i} was not prepared on the GPU")))?;
                if s.groups.0 == 0 {
                    continue;
                }
                pass.set_pipeline(&self.gpu.pipelines[s.pipeline]);
                pass.set_bind_group(0, &self.bind_groups[k], &[]);
                pass.dispatch_workgroups(s.groups.0, s.groups.1, 1);
            }
        }
        self.gpu.queue.submit([enc.finish()]);
        self.gpu.wait()
    }

    fn download(&mut self, value: &Value, out: &mut [u8]) -> Result<()> {
        let size = (value.bytes as u64).next_multiple_of(4);
        if out.len() != value.bytes || size == 0 {
            return Err(gpu_err(format!("download of `{}`: {} bytes for {}", value.name, out.len(), value.bytes)));
        }
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&self.arena, value.offset as u64, &self.staging, 0, size);
        self.gpu.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        self.staging.map_async(wgpu::MapMode::Read, 0..size, move |r| {
            let _ = tx.send(r);
        });
        self.gpu.wait()?;
        rx.recv().map_err(gpu_err)?.map_err(|e| gpu_err(format!("reading `{}` back: {e}", value.name)))?;
        let copied = self.staging.get_mapped_range(0..size).map(|view| out.copy_from_slice(&view[..value.bytes]));
        self.staging.unmap();
        copied.map_err(|e| gpu_err(format!("reading `{}` back: {e}", value.name)))
    }
}

/// Workgroups for `work` invocations: x up to the per-dimension limit, y for the rest.
fn grid(work: u32, limits: &wgpu::Limits) -> Result<(u32, u32)> {
    let groups = work.div_ceil(WORKGROUP);
    let max = limits.max_compute_workgroups_per_dimension.max(1);
    let x = groups.min(max);
    let y = if x == 0 { 0 } else { groups.div_ceil(x) };
    if y > max {
        return Err(gpu_err(format!("{work} invocations exceed the dispatch limit")));
    }
    Ok((x, y))
}

fn u32_of(v: usize, what: &str, step: &Step<'_>) -> Result<u32> {
    u32::try_from(v).map_err(|_| gpu_err(format!("step `{}`: {what} {v} exceeds u32", step.name)))
}

/// Word offset of a value in the arena (offsets are 64-byte aligned by the memory plan).
fn word(v: &Value) -> u32 {
    (v.offset / 4) as u32
}

/// Appends `data` to the weight words and returns its word offset.
fn push(params: &mut Vec<u32>, data: impl IntoIterator<Item = u32>) -> u32 {
    let at = params.len() as u32;
    params.extend(data);
    at
}

/// Fills the argument words of `step` and appends its prepared weights to `params`; with `f16`, an f32
/// convolution's weights go in as f16 halves where they fit. Returns the words and whether they did.
fn step_args(plan: &Plan<'_>, step: &Step<'_>, f16: bool, params: &mut Vec<u32>) -> Result<([u32; 64], bool)> {
    let mut g = [0u32; 64];
    let mut in_f16 = false;
    let out = &plan.values[step.output];
    let x = &plan.values[step.inputs[0]];
    let numel = u32_of(out.numel(), "output size", step)?;
    let words = numel.div_ceil(4);
    g[a::X] = word(x);
    g[a::Y] = word(out);
    g[a::NUMEL] = numel;
    if let Some(&r) = step.inputs.get(1) {
        g[a::R] = word(&plan.values[r]);
        g[a::FLAGS] |= RESIDUAL;
    }
    let quantized = matches!(out.ty, ValueType::Q(_));
    g[a::TOTAL] = if quantized { words } else { numel };
    let f32_bounds = |g: &mut [u32; 64], (lo, hi): (f32, f32)| {
        g[a::LO] = lo.to_bits();
        g[a::HI] = hi.to_bits();
    };
    let geom = |g: &mut [u32; 64], c: &crate::kernels::ConvGeom| -> Result<()> {
        let dims = [
            c.n, c.c_in, c.h_in, c.w_in, c.c_out, c.h_out, c.w_out, c.kh, c.kw, c.stride_h, c.stride_w, c.pad_t,
            c.pad_l, c.dil_h, c.dil_w, c.groups,
        ];
        for (k, d) in dims.into_iter().enumerate() {
            g[a::N + k] = u32_of(d, "dimension", step)?;
        }
        Ok(())
    };
    let q_out = |g: &mut [u32; 64], o: &crate::plan::QOut, p: &mut Vec<u32>| {
        g[a::M] = push(p, o.multiplier.iter().map(|&m| m as u32));
        g[a::S] = push(p, o.shift.iter().map(|&s| s as u32));
        if o.multiplier.len() > 1 {
            g[a::FLAGS] |= PER_CHANNEL;
        }
        g[a::Y_ZP] = o.zero_point as u32;
        g[a::LO] = o.lo as u32;
        g[a::HI] = o.hi as u32;
    };
    // CPU kernels that pack their own weights leave the step's copy empty unless the plan keeps it.
    let unpacked = |len: usize, c: &crate::kernels::ConvGeom| -> Result<()> {
        if len != c.c_out * (c.c_in / c.groups.max(1)) * c.kh * c.kw {
            return Err(gpu_err(format!(
                "step `{}` has no OIHW weights: plan with PlanOptions::keep_weights for offload",
                step.name
            )));
        }
        Ok(())
    };
    match &step.kind {
        StepKind::Conv { geom: c, weight, bias, clamp, .. } => {
            unpacked(weight.len(), c)?;
            geom(&mut g, c)?;
            let halves = if f16 { pack_f16_weights(weight) } else { None };
            if f16 && halves.is_none() {
                log::info!("{}: a weight is beyond f16's range; this convolution runs in f32", step.name);
            }
            in_f16 = halves.is_some();
            g[a::W] = match halves {
                Some(h) => push(params, h),
                None => push(params, weight.iter().map(|w| w.to_bits())),
            };
            g[a::B] = push(params, bias.iter().map(|b| b.to_bits()));
            f32_bounds(&mut g, *clamp);
        }
        StepKind::QConv { geom: c, x_zp, weight, bias, out, residual, .. } => {
            unpacked(weight.len(), c)?;
            geom(&mut g, c)?;
            let (packed, bias_eff, kwords) = pack_q8_weights(c, weight, bias, *x_zp);
            g[a::W] = push(params, packed);
            g[a::B] = push(params, bias_eff.into_iter().map(|b| b as u32));
            g[a::KWORDS] = kwords as u32;
            g[a::ZP4] = u32::from_le_bytes([*x_zp as i8 as u8; 4]);
            q_out(&mut g, out, params);
            if let Some(r) = residual {
                g[a::R_ZP] = r.zero_point as u32;
                g[a::R_M] = r.multiplier as u32;
                g[a::R_S] = r.shift as u32;
            }
        }
        StepKind::MaxPool { geom: c, .. } => geom(&mut g, c)?,
        StepKind::AvgPool { geom: c, count_include_pad, .. } => {
            geom(&mut g, c)?;
            if *count_include_pad {
                g[a::FLAGS] |= COUNT_INCLUDE_PAD;
            }
        }
        StepKind::QMaxPool { geom: c, .. } => {
            geom(&mut g, c)?;
            g[a::FLAGS] |= IS_MAX;
        }
        StepKind::QAvgPool { geom: c, x_zp, out, .. } => {
            geom(&mut g, c)?;
            g[a::X_ZP] = *x_zp as u32;
            q_out(&mut g, out, params);
        }
        StepKind::Gap { hw, .. } => g[a::HW] = u32_of(*hw, "pool size", step)?,
        StepKind::QGap { hw, x_zp, out, .. } => {
            g[a::HW] = u32_of(*hw, "pool size", step)?;
            g[a::X_ZP] = *x_zp as u32;
            q_out(&mut g, out, params);
        }
        StepKind::Add { clamp, .. } | StepKind::Clamp { clamp, .. } => f32_bounds(&mut g, *clamp),
        StepKind::QAdd { params: p, .. } => {
            g[a::X_ZP] = p.a_zero_point as u32;
            g[a::A_M] = p.a_multiplier as u32;
            g[a::A_S] = p.a_shift as u32;
            g[a::R_ZP] = p.b_zero_point as u32;
            g[a::R_M] = p.b_multiplier as u32;
            g[a::R_S] = p.b_shift as u32;
            g[a::Y_ZP] = p.zero_point as u32;
            g[a::LO] = p.lo as u32;
            g[a::HI] = p.hi as u32;
        }
        StepKind::QClamp { lo, hi, .. } => {
            g[a::LO] = *lo as u32;
            g[a::HI] = *hi as u32;
        }
        StepKind::Shortcut { geom: s, .. } | StepKind::QShortcut { geom: s, .. } => {
            let (oh, ow) = s.out_hw();
            let oc = s.pad_before + s.c + s.pad_after;
            for (k, d) in [s.n, s.c, s.h, s.w, oc, oh, ow].into_iter().enumerate() {
                g[a::N + k] = u32_of(d, "dimension", step)?;
            }
            g[a::STRIDE] = u32_of(s.stride, "stride", step)?;
            g[a::PAD_B] = u32_of(s.pad_before, "padding", step)?;
            if let StepKind::QShortcut { zero, .. } = step.kind {
                g[a::Y_ZP] = zero as i32 as u32;
            }
        }
        StepKind::Copy { .. } | StepKind::QCopy { .. } => {
            g[a::TOTAL] = u32_of(out.bytes.div_ceil(4), "size", step)?;
        }
        StepKind::Affine { .. }
        | StepKind::Quantize { .. }
        | StepKind::Dequantize { .. }
        | StepKind::Softmax { .. } => {
            return Err(gpu_err(format!("step `{}` ({}) has no GPU kernel", step.name, step.op)));
        }
    }
    Ok((g, in_f16))
}

/// Packs f32 weights as f16 (round to nearest even), two per word in order: element 2k in the low half of
/// word k, 2k + 1 in the high half (the last high half 0 for an odd count), as conv_f16.wgsl reads them.
/// None when a finite weight overflows f16.
pub fn pack_f16_weights(w: &[f32]) -> Option<Vec<u32>> {
    let half = |v: f32| {
        let h = half::f16::from_f32(v);
        (!h.is_infinite() || v.is_infinite()).then_some(h.to_bits() as u32)
    };
    w.chunks(2).map(|p| Some(half(p[0])? | half(p.get(1).copied().unwrap_or(0.0))? << 16)).collect()
}

/// Packs OIHW int8 weights as [oc][ky][kx][ceil(icg / 4)] words, four input channels per word (byte k =
/// channel 4g + k, missing channels 0), and folds the input zero point into the bias:
/// `bias - x_zp * sum(w)` (exact in wrapping i32, spec 11.2). Returns (words, bias, words per tap).
pub fn pack_q8_weights(c: &crate::kernels::ConvGeom, w: &[i8], bias: &[i32], x_zp: i32) -> (Vec<u32>, Vec<i32>, usize) {
    let icg = c.c_in / c.groups.max(1);
    let kwords = icg.div_ceil(4);
    let taps = c.kh * c.kw;
    let mut packed = vec![0u32; c.c_out * taps * kwords];
    let mut bias_eff = Vec::with_capacity(c.c_out);
    for oc in 0..c.c_out {
        let mut sum = 0i32;
        for ic in 0..icg {
            for t in 0..taps {
                let v = w[(oc * icg + ic) * taps + t];
                sum = sum.wrapping_add(v as i32);
                let word = &mut packed[(oc * taps + t) * kwords + ic / 4];
                *word |= (v as u8 as u32) << (8 * (ic % 4));
            }
        }
        bias_eff.push(bias[oc].wrapping_sub(x_zp.wrapping_mul(sum)));
    }
    (packed, bias_eff, kwords)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::ConvGeom;

    #[test]
    fn f16_weights_pack_two_halves_per_word_and_refuse_overflow() {
        assert_eq!(pack_f16_weights(&[1.0, -2.0, 0.5]), Some(vec![0xc000_3c00, 0x0000_3800]));
        assert_eq!(pack_f16_weights(&[1.0, 65504.0]), Some(vec![0x7bff_3c00]));
        assert_eq!(pack_f16_weights(&[1.0, 70000.0]), None);
        assert_eq!(pack_f16_weights(&[f32::INFINITY]), Some(vec![0x7c00]));
    }

    /// The packed form times raw x, plus the folded bias, equals the spec's sum of (x - zp) * w.
    #[test]
    fn packed_weights_with_folded_bias_match_the_spec_sum() {
        let g = ConvGeom { n: 1, c_in: 6, c_out: 2, kh: 1, kw: 2, groups: 1, ..ConvGeom::default() };
        let w: Vec<i8> = (0..24).map(|i| (i * 37 % 255 - 127) as i8).collect();
        let x: Vec<i8> = (0..12).map(|i| (i * 53 % 256 - 128) as i8).collect(); // [ic][tap]
        let (zp, bias) = (-7, [1000, -5]);
        let (packed, b, kwords) = pack_q8_weights(&g, &w, &bias, zp);
        assert_eq!(kwords, 2);
        for oc in 0..2 {
            let want: i32 = bias[oc]
                + (0..6)
                    .flat_map(|ic| (0..2).map(move |t| (ic, t)))
                    .map(|(ic, t)| (x[ic * 2 + t] as i32 - zp) * w[(oc * 6 + ic) * 2 + t] as i32)
                    .sum::<i32>();
            let mut got = b[oc];
            for t in 0..2 {
                for k in 0..kwords {
                    let word = packed[(oc * 2 + t) * kwords + k];
                    for byte in 0..4 {
                        let ic = k * 4 + byte;
                        let xv = if ic < 6 { x[ic * 2 + t] as i32 } else { 0 };
                        got += xv * (word >> (8 * byte)) as u8 as i8 as i32;
                    }
                }
            }
            assert_eq!(got, want, "oc {oc}");
        }
    }
}
