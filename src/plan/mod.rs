//! The planner: validates a model, runs the graph passes, infers every shape for a batch size, picks one
//! kernel per node (logged at info level), prepares weights once, and lays all activations out in one
//! arena by liveness. [`Executor::run`] then only calls kernels: it allocates nothing.

#[cfg(feature = "std")]
pub mod cores;
mod exec;
pub mod memory;
pub mod passes;
mod steps;
#[cfg(feature = "std")]
pub mod threads;

pub use exec::{Executor, ValueRef};
pub use steps::{QOut, StepKind};

use crate::error::{Error, Result};
use crate::graph::{Model, QParams};
use crate::kernels::Isa;
use std::prelude::v1::*;

/// Planner settings.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// Batch size the plan is built for.
    pub batch: usize,
    /// Run the fold / fuse passes (on by default; off to execute the graph exactly as stored).
    pub optimize: bool,
    /// Highest instruction-set tier kernels may use. Default: [`Isa::configured`] (`RESEDGE_ISA` or the
    /// detected CPU). With std a tier the CPU lacks is capped to [`Isa::detect`]; without std the caller
    /// vouches for it.
    pub max_isa: Isa,
    /// Refuse plans whose arena would exceed this many bytes (hostile or absurd shapes).
    pub max_arena_bytes: usize,
    /// Threads each executor runs kernels on (a persistent pool per executor; 1 without `std`).
    pub threads: usize,
    /// Cores the threads run on, worker i on entry i ([`cores::choose`]); empty: the fastest cores first
    /// where they differ (big.LITTLE), else wherever the OS puts them. Workers 1.. are pinned by the pool;
    /// worker 0 is the thread that calls `run`, which the caller places ([`cores::pin_current`], as the
    /// CLI does). Ignored without `std`.
    pub cores: Vec<usize>,
    /// Keep each conv's OIHW weights in its step even when the kernel packed its own copy (offload
    /// backends upload them); off by default, which halves resident weight memory.
    pub keep_weights: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            batch: 1,
            optimize: true,
            max_isa: Isa::configured(),
            max_arena_bytes: 1 << 31,
            threads: 1,
            cores: Vec::new(),
            keep_weights: false,
        }
    }
}

/// Element type of an activation value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueType {
    F32,
    /// Quantized, as stored in the file (the kernels see the internal int8 form, see `quant::internal_i8`).
    Q(QParams),
}

impl ValueType {
    pub fn elem_size(&self) -> usize {
        match self {
            ValueType::F32 => 4,
            ValueType::Q(_) => 1,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            ValueType::F32 => "f32",
            ValueType::Q(q) => match q.dtype {
                crate::graph::QType::I8 => "i8",
                crate::graph::QType::U8 => "u8",
            },
        }
    }
}

/// One activation tensor in the arena.
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    /// Shape including the batch dimension ([N, C, H, W] or [N, F]).
    pub shape: Vec<usize>,
    pub ty: ValueType,
    pub offset: usize,
    pub bytes: usize,
}

impl Value {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One planned node.
pub struct Step<'a> {
    pub name: String,
    pub op: &'static str,
    /// Registry name of the chosen kernel.
    pub kernel: &'static str,
    pub isa: Isa,
    /// Indices into [`Plan::values`].
    pub inputs: Vec<usize>,
    pub output: usize,
    /// Multiply-accumulates for the whole batch (convolutions and linear layers; 0 elsewhere).
    pub macs: u64,
    /// Learnable parameters the node holds.
    pub params: u64,
    pub(crate) kind: StepKind<'a>,
}

/// A model ready to run: steps, values and arena size. Weights borrow from the model file where possible.
pub struct Plan<'a> {
    pub name: String,
    pub steps: Vec<Step<'a>>,
    pub values: Vec<Value>,
    pub input: usize,
    pub output: usize,
    pub arena_bytes: usize,
    pub batch: usize,
    /// Worker threads of each executor.
    pub threads: usize,
    /// The core of each worker (empty: not pinned), see [`PlanOptions::cores`].
    pub cores: Vec<usize>,
    /// Scratch bytes the blocked kernels need (one buffer per executor, reused by every step).
    pub scratch_bytes: usize,
}

impl<'a> Plan<'a> {
    /// Builds the plan. Every check that can fail happens here, never in `run`.
    pub fn new(model: &Model<'a>, opts: &PlanOptions) -> Result<Plan<'a>> {
        if opts.batch == 0 {
            return Err(Error::Input("batch size must be at least 1".into()));
        }
        if !(1..=256).contains(&opts.threads) {
            return Err(Error::Input(format!("threads must be in 1..=256, got {}", opts.threads)));
        }
        let optimized;
        let model = if opts.optimize {
            optimized = passes::optimize(model)?;
            &optimized
        } else {
            model
        };
        steps::build(model, opts)
    }

    /// Total multiply-accumulates of one run (whole batch).
    pub fn macs(&self) -> u64 {
        self.steps.iter().map(|s| s.macs).sum()
    }

    /// Window taps of the pooling steps (output elements x window size): the work [`Plan::macs`] leaves out.
    pub fn pool_taps(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| match &s.kind {
                StepKind::MaxPool { geom, .. }
                | StepKind::QMaxPool { geom, .. }
                | StepKind::AvgPool { geom, .. }
                | StepKind::QAvgPool { geom, .. } => {
                    (geom.output_len() as u64).saturating_mul((geom.kh * geom.kw) as u64)
                }
                _ => 0,
            })
            .fold(0, u64::saturating_add)
    }

    /// A fresh executor with its own arena (the only allocation; reuse it across runs).
    pub fn executor(&self) -> Executor<'_, 'a> {
        Executor::new(self)
    }

    /// The input value ([N, C, H, W], f32).
    pub fn input_value(&self) -> &Value {
        &self.values[self.input]
    }
    /// The output value.
    pub fn output_value(&self) -> &Value {
        &self.values[self.output]
    }
}
