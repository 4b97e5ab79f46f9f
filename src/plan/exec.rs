//! The executor: one arena, the steps in order, no allocation and no unsafe. Each step borrows its inputs
//! and its output as disjoint slices of the arena (the memory plan guarantees they never overlap).

use super::memory::ALIGN;
use super::{Plan, StepKind, Value, ValueType};
use crate::error::{Error, Result};
use crate::graph::QParams;
use crate::kernels::packed::{share, Parallel, Scratch, Shared};
use crate::kernels::{ConvGeom, F32ConvParams, QConvParams, Requant};
use core::ops::Range;
use std::prelude::v1::*;

/// A read-only view of one activation, handed to observers (calibration, reports, debugging).
pub enum ValueRef<'v> {
    F32(&'v [f32]),
    /// Quantized values in the internal int8 domain, with the value's stored quantization.
    I8(&'v [i8], QParams),
}

/// Runs a [`Plan`]. Holds the arena, the kernels' scratch and the worker threads; build once, call
/// [`Executor::run`] many times.
pub struct Executor<'p, 'a> {
    plan: &'p Plan<'a>,
    arena: Vec<u8>,
    base: usize,
    /// The convolution kernels' scratch, sized for the largest step (steps run one at a time).
    scratch: Scratch,
    #[cfg(feature = "std")]
    pool: super::threads::Pool,
}

fn range(v: &Value) -> Range<usize> {
    v.offset..v.offset + v.bytes
}

/// Splits the arena into the output (mutable) and up to two inputs (shared). Ranges are disjoint by plan.
fn borrow<'s>(arena: &'s mut [u8], out: Range<usize>, ins: [Range<usize>; 2]) -> (&'s mut [u8], [&'s [u8]; 2]) {
    let (left, rest) = arena.split_at_mut(out.start);
    let (out_buf, right) = rest.split_at_mut(out.end - out.start);
    let (left, right): (&[u8], &[u8]) = (left, right);
    let pick = |r: Range<usize>| -> &'s [u8] {
        if r.end <= out.start {
            &left[r]
        } else {
            &right[r.start - out.end..r.end - out.end]
        }
    };
    let [a, b] = ins;
    (out_buf, [pick(a), pick(b)])
}

fn f32s(b: &[u8]) -> &[f32] {
    bytemuck::cast_slice(b)
}
fn f32s_mut(b: &mut [u8]) -> &mut [f32] {
    bytemuck::cast_slice_mut(b)
}
fn i8s(b: &[u8]) -> &[i8] {
    bytemuck::cast_slice(b)
}
fn i8s_mut(b: &mut [u8]) -> &mut [i8] {
    bytemuck::cast_slice_mut(b)
}

impl<'p, 'a> Executor<'p, 'a> {
    pub(super) fn new(plan: &'p Plan<'a>) -> Self {
        let arena = vec![0u8; plan.arena_bytes + ALIGN];
        let base = arena.as_ptr().align_offset(ALIGN).min(ALIGN);
        Executor {
            plan,
            arena,
            base,
            scratch: Scratch::new(plan.scratch_bytes),
            #[cfg(feature = "std")]
            pool: super::threads::Pool::on_cores(plan.threads, &plan.cores),
        }
    }

    /// The plan this executor runs.
    pub fn plan(&self) -> &'p Plan<'a> {
        self.plan
    }

    fn arena(&mut self) -> &mut [u8] {
        let len = self.plan.arena_bytes;
        &mut self.arena[self.base..self.base + len]
    }

    /// Runs one inference on `input` (f32, the plan's input shape, batch included) and returns the output
    /// (f32 for f32 outputs; for a quantized output use [`Executor::output_ref`]). Allocates nothing.
    pub fn run(&mut self, input: &[f32]) -> Result<&[f32]> {
        self.run_observed(input, &mut |_, _| {})?;
        match self.output_ref() {
            ValueRef::F32(v) => Ok(v),
            ValueRef::I8(..) => Err(Error::Input("the model's output is quantized; read it with output_ref()".into())),
        }
    }

    /// The graph output of the last run.
    pub fn output_ref(&self) -> ValueRef<'_> {
        self.value_ref(self.plan.output)
    }

    /// A view of value `index` (into `plan.values`) as left by the last run.
    pub fn value_ref(&self, index: usize) -> ValueRef<'_> {
        let v = &self.plan.values[index];
        value_view(v, &self.arena[self.base + v.offset..][..v.bytes])
    }

    /// Runs like [`Executor::run`] and calls `observer(step_index, output)` after every step.
    ///
    /// The steps read `input` in place: it is not copied into the arena (ResNet-18's 600 KB image took
    /// 0.047 ms to copy on Zen 4, on one thread), so [`Executor::value_ref`] of the input value does not show it.
    pub fn run_observed(&mut self, input: &[f32], observer: &mut dyn FnMut(usize, ValueRef<'_>)) -> Result<()> {
        self.check_input(input)?;
        self.run_with(0..self.plan.steps.len(), Some(bytemuck::cast_slice(input)), observer);
        Ok(())
    }

    /// Copies `input` (f32, the plan's input shape, batch included) into the input value. Offload executors
    /// call this, then [`Executor::run_steps`] for the parts the CPU runs.
    pub fn load_input(&mut self, input: &[f32]) -> Result<()> {
        self.check_input(input)?;
        let r = range(&self.plan.values[self.plan.input]);
        f32s_mut(&mut self.arena()[r]).copy_from_slice(input);
        Ok(())
    }

    /// An error unless `input` has the plan input's size.
    fn check_input(&self, input: &[f32]) -> Result<()> {
        let iv = &self.plan.values[self.plan.input];
        if input.len() != iv.numel() {
            return Err(Error::Input(format!(
                "input has {} values, the plan expects {} (shape {:?})",
                input.len(),
                iv.numel(),
                iv.shape
            )));
        }
        Ok(())
    }

    /// Runs the steps `steps` (indices into `plan.steps`, in order) on the CPU, calling `observer` after each.
    /// Their inputs must already be in the arena. Out-of-range indices are ignored.
    pub fn run_steps(&mut self, steps: Range<usize>, observer: &mut dyn FnMut(usize, ValueRef<'_>)) {
        self.run_with(steps, None, observer)
    }

    /// [`Executor::run_steps`], reading the plan's input value from `input` (its bytes) where given.
    fn run_with(&mut self, steps: Range<usize>, input: Option<&[u8]>, observer: &mut dyn FnMut(usize, ValueRef<'_>)) {
        let plan = self.plan;
        #[cfg(feature = "std")]
        let par: &dyn Parallel = &self.pool;
        #[cfg(not(feature = "std"))]
        let par: &dyn Parallel = &crate::kernels::packed::Serial;
        let arena = &mut self.arena[self.base..self.base + plan.arena_bytes];
        let scratch = self.scratch.bytes();
        let end = steps.end.min(plan.steps.len());
        for i in steps.start.min(end)..end {
            let step = &plan.steps[i];
            let out = range(&plan.values[step.output]);
            let in0 = range(&plan.values[step.inputs[0]]);
            let in1 = step.inputs.get(1).map_or(in0.clone(), |&v| range(&plan.values[v]));
            let (y, [x, r]) = borrow(arena, out, [in0, in1]);
            let read = |v: Option<&usize>, bytes| if v == Some(&plan.input) { input.unwrap_or(bytes) } else { bytes };
            let (x, r) = (read(step.inputs.first(), x), read(step.inputs.get(1), r));
            run_step(&step.kind, x, r, y, step.inputs.len() == 2, scratch, par);
            let v = &plan.values[step.output];
            observer(i, value_view(v, &arena[v.offset..][..v.bytes]));
        }
    }

    /// The arena bytes of value `index` (the layout offload devices mirror).
    pub fn value_bytes(&self, index: usize) -> &[u8] {
        let v = &self.plan.values[index];
        &self.arena[self.base + v.offset..][..v.bytes]
    }

    /// Mutable arena bytes of value `index`, for results computed elsewhere (an offload device).
    pub fn value_bytes_mut(&mut self, index: usize) -> &mut [u8] {
        let v = &self.plan.values[index];
        &mut self.arena[self.base + v.offset..][..v.bytes]
    }
}

fn value_view<'v>(v: &Value, bytes: &'v [u8]) -> ValueRef<'v> {
    match v.ty {
        ValueType::F32 => ValueRef::F32(f32s(bytes)),
        ValueType::Q(q) => ValueRef::I8(i8s(bytes), q),
    }
}

fn requant<'q>(o: &'q super::steps::QOut) -> Requant<'q> {
    Requant { multiplier: &o.multiplier, shift: &o.shift, zero_point: o.zero_point, lo: o.lo, hi: o.hi }
}

/// Outputs below this many elements are pooled by the calling thread alone.
const PARALLEL_POOL: usize = 1 << 15;

/// Runs a pooling kernel, whose planes are independent, on a share of the `n · c` planes per worker (each
/// share as one image of its channels): the same kernel computes every output, so the bits do not depend on
/// the worker count. ResNet's stem pool took 3.5% of ResNet-18 on two threads when it ran on one.
fn by_planes<T: Copy + Sync>(
    g: &ConvGeom,
    x: &[T],
    y: &mut [T],
    par: &dyn Parallel,
    f: &fn(&ConvGeom, &[T], &mut [T]),
) {
    let planes = g.n * g.c_in;
    let parts = if y.len() < PARALLEL_POOL { 1 } else { planes.min(par.workers()) };
    if parts <= 1 {
        return f(g, x, y);
    }
    let (hw_in, hw_out) = (g.h_in * g.w_in, g.h_out * g.w_out);
    let out = Shared(y.as_mut_ptr());
    par.run(parts, &|_, i| {
        let ch = share(planes, parts, i);
        let sub = ConvGeom { n: 1, c_in: ch.len(), c_out: ch.len(), groups: ch.len(), ..*g };
        // SAFETY: the parts' plane ranges are disjoint and inside y.
        let ys = unsafe { core::slice::from_raw_parts_mut(out.get().add(ch.start * hw_out), ch.len() * hw_out) };
        f(&sub, &x[ch.start * hw_in..ch.end * hw_in], ys)
    });
}

/// Runs an elementwise kernel on a contiguous share of the elements per worker (for outputs of at least
/// [`PARALLEL_POOL`] elements): each element is computed alone, so the bits do not depend on the worker
/// count. ResNet-18's input quantization (150K values) took 0.092 ms on one of two threads, 0.071 ms on both
/// (Zen 4).
fn by_elements<T: Sync, U: Copy>(x: &[T], y: &mut [U], par: &dyn Parallel, f: &(dyn Fn(&[T], &mut [U]) + Sync)) {
    let n = x.len().min(y.len());
    let parts = if n < PARALLEL_POOL { 1 } else { par.workers() };
    if parts <= 1 {
        return f(x, y);
    }
    let out = Shared(y.as_mut_ptr());
    par.run(parts, &|_, i| {
        let part = share(n, parts, i);
        // SAFETY: the parts are disjoint and inside y.
        let ys = unsafe { core::slice::from_raw_parts_mut(out.get().add(part.start), part.len()) };
        f(&x[part], ys)
    });
}

fn run_step(
    kind: &StepKind<'_>,
    x: &[u8],
    r: &[u8],
    y: &mut [u8],
    has_second: bool,
    scratch: &mut [u8],
    par: &dyn Parallel,
) {
    match kind {
        StepKind::Conv { f, geom, weight, bias, pack, clamp } => {
            let p = F32ConvParams { weight, bias, clamp: *clamp };
            let res = has_second.then(|| f32s(r));
            (f.run)(geom, pack, &p, f32s(x), res, f32s_mut(y), scratch, par)
        }
        StepKind::QConv { f, geom, x_zp, weight, bias, pack, out, residual } => {
            let p = QConvParams { x_zero_point: *x_zp, weight, bias, requant: requant(out), residual: *residual };
            let res = has_second.then(|| i8s(r));
            (f.run)(geom, pack, &p, i8s(x), res, i8s_mut(y), scratch, par)
        }
        StepKind::MaxPool { f, geom } => by_planes(geom, f32s(x), f32s_mut(y), par, f),
        StepKind::QMaxPool { f, geom } => by_planes(geom, i8s(x), i8s_mut(y), par, f),
        StepKind::AvgPool { f, geom, count_include_pad } => f(geom, *count_include_pad, f32s(x), f32s_mut(y)),
        StepKind::QAvgPool { f, geom, x_zp, out } => f(geom, *x_zp, &requant(out), i8s(x), i8s_mut(y)),
        StepKind::Gap { f, hw } => f(*hw, f32s(x), f32s_mut(y)),
        StepKind::QGap { f, hw, x_zp, out } => f(*hw, *x_zp, &requant(out), i8s(x), i8s_mut(y)),
        StepKind::Add { f, clamp } => f(f32s(x), f32s(r), *clamp, f32s_mut(y)),
        StepKind::QAdd { f, params } => f(params, i8s(x), i8s(r), i8s_mut(y)),
        StepKind::Clamp { f, clamp } => f(f32s(x), *clamp, f32s_mut(y)),
        StepKind::QClamp { f, lo, hi } => f(i8s(x), *lo, *hi, i8s_mut(y)),
        StepKind::Affine { f, hw, scale, shift } => f(*hw, scale, shift, f32s(x), f32s_mut(y)),
        StepKind::Shortcut { f, geom } => f(geom, 0.0, f32s(x), f32s_mut(y), par),
        StepKind::QShortcut { f, geom, zero } => f(geom, *zero, i8s(x), i8s_mut(y), par),
        StepKind::Quantize { f, scale, zp, lo, hi } => {
            by_elements(f32s(x), i8s_mut(y), par, &|x, y| f(*scale, *zp, *lo, *hi, x, y))
        }
        StepKind::Dequantize { f, scale, zp } => f(*scale, *zp, i8s(x), f32s_mut(y)),
        StepKind::Softmax { f, cols } => f(*cols, f32s(x), f32s_mut(y)),
        StepKind::Copy { f } => f(f32s(x), f32s_mut(y)),
        StepKind::QCopy { f } => f(i8s(x), i8s_mut(y)),
    }
}
