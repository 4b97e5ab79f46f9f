//! Lowering of validated nodes to steps: shape inference, parameter checks, weight preparation and kernel
//! choice. Everything a kernel relies on (lengths, ranges, no i32 overflow) is established here.

use super::memory::{self, Lifetime};
use super::{Plan, PlanOptions, Step, Value, ValueType};
use crate::error::{Error, Result};
use crate::graph::{Activation, Model, Node, Op, QParams, Window};
use crate::kernels::generic::ShortcutGeom;
use crate::kernels::packed::ConvPack;
use crate::kernels::registry::{self, F32Conv, QConv};
use crate::kernels::{
    AddParams, ConvGeom, F32ConvParams, Isa, Kernel, KernelFn, QConvParams, Requant, ResidualRequant,
};
use crate::quant::{self, activation_bounds, internal_i8};
use crate::tensor::{DType, Tensor};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::prelude::v1::*;

/// Largest dimension accepted anywhere (guards against hostile files before any multiplication).
const MAX_DIM: usize = 1 << 24;

/// Int8 requantization of one output (per channel or single), in the internal int8 domain.
#[derive(Clone, Debug)]
pub struct QOut {
    pub multiplier: Vec<i32>,
    pub shift: Vec<i32>,
    pub zero_point: i32,
    pub lo: i32,
    pub hi: i32,
}

/// What a step does, with its prepared parameters and kernel entry point.
pub enum StepKind<'a> {
    Conv {
        f: F32Conv,
        geom: ConvGeom,
        /// OIHW weights; empty when the kernel's pack holds them.
        weight: Cow<'a, [f32]>,
        bias: Vec<f32>,
        /// What the kernel prepared once here (packed weights, lane tables, scratch size).
        pack: ConvPack,
        clamp: (f32, f32),
    },
    QConv {
        f: QConv,
        geom: ConvGeom,
        x_zp: i32,
        /// OIHW weights; empty when the kernel's pack holds them.
        weight: Cow<'a, [i8]>,
        bias: Vec<i32>,
        pack: ConvPack,
        out: QOut,
        residual: Option<ResidualRequant>,
    },
    MaxPool {
        f: registry::F32MaxPoolFn,
        geom: ConvGeom,
    },
    QMaxPool {
        f: registry::QMaxPoolFn,
        geom: ConvGeom,
    },
    AvgPool {
        f: registry::F32AvgPoolFn,
        geom: ConvGeom,
        count_include_pad: bool,
    },
    QAvgPool {
        f: registry::QAvgPoolFn,
        geom: ConvGeom,
        x_zp: i32,
        out: QOut,
    },
    Gap {
        f: registry::F32GapFn,
        hw: usize,
    },
    QGap {
        f: registry::QGapFn,
        hw: usize,
        x_zp: i32,
        out: QOut,
    },
    Add {
        f: registry::F32AddFn,
        clamp: (f32, f32),
    },
    QAdd {
        f: registry::QAddFn,
        params: AddParams,
    },
    Clamp {
        f: registry::F32ClampFn,
        clamp: (f32, f32),
    },
    QClamp {
        f: registry::QClampFn,
        lo: i32,
        hi: i32,
    },
    Affine {
        f: registry::F32AffineFn,
        hw: usize,
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    Shortcut {
        f: registry::F32ShortcutFn,
        geom: ShortcutGeom,
    },
    QShortcut {
        f: registry::QShortcutFn,
        geom: ShortcutGeom,
        zero: i8,
    },
    Quantize {
        f: registry::QuantizeFn,
        scale: f32,
        zp: i32,
        lo: i32,
        hi: i32,
    },
    Dequantize {
        f: registry::DequantizeFn,
        scale: f32,
        zp: i32,
    },
    Softmax {
        f: registry::F32GapFn,
        cols: usize,
    },
    Copy {
        f: registry::F32CopyFn,
    },
    QCopy {
        f: registry::QCopyFn,
    },
}

/// Picks the best kernel of a family, or fails naming the node.
macro_rules! pick {
    ($isa:expr, $node:expr, $variant:ident) => {
        pick!($isa, $node, $variant, _k if true)
    };
    // `$cond` filters the family's entries `$k` (convolutions check the geometry, e.g. groups).
    ($isa:expr, $node:expr, $variant:ident, $k:ident if $cond:expr) => {{
        let k: &'static Kernel = registry::pick($isa, |f| matches!(f, KernelFn::$variant($k) if $cond))
            .ok_or_else(|| Error::NoKernel { node: $node.name.clone(), what: stringify!($variant).into() })?;
        let KernelFn::$variant(f) = k.func else { unreachable!("registry::pick matched the variant") };
        (k, f)
    }};
}

struct Builder<'m, 'a> {
    model: &'m Model<'a>,
    isa: Isa,
    keep_weights: bool,
    values: Vec<Value>,
    by_name: BTreeMap<String, usize>,
}

fn node_err(node: &Node, what: impl Into<String>) -> Error {
    Error::node(&node.name, what)
}

fn checked_numel(shape: &[usize], what: &str) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| if d <= MAX_DIM { acc.checked_mul(d) } else { None })
        .ok_or_else(|| Error::TooLarge(format!("{what}: shape {shape:?}")))
}

/// Output extent of a window along one axis, or an error for windows that do not fit.
fn window_out(node: &Node, len: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize) -> Result<usize> {
    if k == 0 || s == 0 || d == 0 || k > MAX_DIM || s > MAX_DIM || d > MAX_DIM || p0 > MAX_DIM || p1 > MAX_DIM {
        return Err(node_err(node, format!("invalid window: kernel {k}, stride {s}, dilation {d}, padding {p0}/{p1}")));
    }
    // Checked: with dimensions up to MAX_DIM these products overflow a 32-bit usize.
    let eff = (k - 1).checked_mul(d).and_then(|e| e.checked_add(1));
    let padded = len.checked_add(p0).and_then(|p| p.checked_add(p1));
    let (Some(eff), Some(padded)) = (eff, padded) else {
        return Err(Error::TooLarge(format!("node `{}`: window of kernel {k}, dilation {d}", node.name)));
    };
    if eff > padded {
        return Err(node_err(node, format!("window {eff} larger than padded input {padded}")));
    }
    Ok((padded - eff) / s + 1)
}

impl<'a> Builder<'_, 'a> {
    fn tensor(&self, node: &Node, role: &str) -> Result<&Tensor<'a>> {
        let name = format!("{}.{role}", node.name);
        self.model.tensors.get(&name).ok_or_else(|| Error::tensor(&name, "missing"))
    }

    fn tensor_shaped(&self, node: &Node, role: &str, shape: &[usize]) -> Result<&Tensor<'a>> {
        let t = self.tensor(node, role)?;
        if t.shape != shape {
            return Err(Error::tensor(
                &format!("{}.{role}", node.name),
                format!("shape {:?}, expected {:?}", t.shape, shape),
            ));
        }
        Ok(t)
    }

    fn f32_of(&self, node: &Node, role: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.tensor_shaped(node, role, shape)?.to_f32(&format!("{}.{role}", node.name))
    }

    fn i32_of(&self, node: &Node, role: &str, shape: &[usize]) -> Result<Vec<i32>> {
        self.tensor_shaped(node, role, shape)?.to_i32(&format!("{}.{role}", node.name))
    }

    /// f32 weights, zero copy when the file bytes are suitably aligned.
    fn f32_weights(&self, node: &Node, shape: &[usize]) -> Result<Cow<'a, [f32]>> {
        let t = self.tensor_shaped(node, "weight", shape)?;
        if let (DType::F32, Cow::Borrowed(bytes)) = (t.dtype, &t.data) {
            if let Ok(s) = bytemuck::try_cast_slice::<u8, f32>(bytes) {
                return Ok(Cow::Borrowed(s));
            }
        }
        Ok(Cow::Owned(t.to_f32(&format!("{}.weight", node.name))?))
    }

    /// int8 weights (zero copy), checked to lie in [-127, 127] as the spec requires.
    fn i8_weights(&self, node: &Node, shape: &[usize]) -> Result<Cow<'a, [i8]>> {
        let t = self.tensor_shaped(node, "weight", shape)?;
        let name = format!("{}.weight", node.name);
        if t.as_i8(&name)?.contains(&i8::MIN) {
            return Err(Error::tensor(&name, "int8 weights must lie in [-127, 127]"));
        }
        Ok(match &t.data {
            Cow::Borrowed(b) => Cow::Borrowed(bytemuck::cast_slice(b)),
            Cow::Owned(v) => Cow::Owned(bytemuck::cast_slice(v).to_vec()),
        })
    }

    /// Per-channel (len `c`) or single requantization of a node's output.
    fn qout(&self, node: &Node, prefix: &str, c: usize, act: Activation, q: &QParams) -> Result<QOut> {
        let mult_role = format!("{prefix}multiplier");
        let len = self.tensor(node, &mult_role)?.shape.clone();
        if len != [c] && len != [1] {
            return Err(Error::tensor(
                &format!("{}.{mult_role}", node.name),
                format!("shape {len:?}, expected [{c}] or [1]"),
            ));
        }
        let multiplier = self.i32_of(node, &mult_role, &len)?;
        let shift = self.i32_of(node, &format!("{prefix}shift"), &len)?;
        check_requant(node, &multiplier, &shift)?;
        let (zero_point, _, _) = internal_i8(q);
        let (lo, hi) = activation_bounds(act, q);
        Ok(QOut { multiplier, shift, zero_point, lo, hi })
    }

    fn value(&self, node: &Node, name: &str) -> Result<usize> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| node_err(node, format!("input `{name}` is not defined before this node")))
    }

    fn add_value(&mut self, name: &str, shape: Vec<usize>, ty: ValueType) -> Result<usize> {
        let numel = checked_numel(&shape, name)?;
        let bytes = numel.checked_mul(ty.elem_size()).ok_or_else(|| Error::TooLarge(format!("value `{name}`")))?;
        if self.by_name.contains_key(name) {
            return Err(Error::Graph(format!("value `{name}` is defined twice")));
        }
        self.by_name.insert(name.to_string(), self.values.len());
        self.values.push(Value { name: name.to_string(), shape, ty, offset: 0, bytes });
        Ok(self.values.len() - 1)
    }
}

fn check_requant(node: &Node, multiplier: &[i32], shift: &[i32]) -> Result<()> {
    for (&m, &s) in multiplier.iter().zip(shift) {
        // Normalized multipliers only (as quantize_multiplier makes them): SIMD kernels may rely on it.
        if m < (1 << 30) || !quant::SHIFT_RANGE.contains(&s) {
            return Err(node_err(node, format!("requantization multiplier {m} / shift {s} out of range")));
        }
    }
    Ok(())
}

/// Multiply-accumulates of a conv-like step: `k` per output element, checked against overflow.
fn checked_macs(node: &Node, out_shape: &[usize], k: usize) -> Result<u64> {
    let out = checked_numel(out_shape, &node.name)?;
    (out as u64)
        .checked_mul(k as u64)
        .ok_or_else(|| Error::TooLarge(format!("node `{}`: {out} outputs of {k} multiply-accumulates", node.name)))
}

fn dims4(node: &Node, v: &Value) -> Result<[usize; 4]> {
    match v.shape.as_slice() {
        &[n, c, h, w] => Ok([n, c, h, w]),
        s => Err(node_err(node, format!("expects a 4-D input, got {s:?}"))),
    }
}

fn conv_geom(node: &Node, [n, c, h, w]: [usize; 4], oc: usize, win: &Window, groups: usize) -> Result<ConvGeom> {
    let [t, l, b, r] = win.padding;
    let h_out = window_out(node, h, win.kernel[0], win.stride[0], win.dilation[0], t, b)?;
    let w_out = window_out(node, w, win.kernel[1], win.stride[1], win.dilation[1], l, r)?;
    Ok(ConvGeom {
        n,
        c_in: c,
        h_in: h,
        w_in: w,
        c_out: oc,
        h_out,
        w_out,
        kh: win.kernel[0],
        kw: win.kernel[1],
        stride_h: win.stride[0],
        stride_w: win.stride[1],
        pad_t: t,
        pad_l: l,
        dil_h: win.dilation[0],
        dil_w: win.dilation[1],
        groups,
    })
}

/// The requested tier, capped at what this CPU runs (with std; without std the caller vouches for it).
fn usable_isa(want: Isa) -> Isa {
    #[cfg(feature = "std")]
    if !Isa::detect().allows(want) {
        log::warn!("kernel tier {} is not available on this CPU; using {}", want.name(), Isa::detect().name());
        return Isa::detect();
    }
    want
}

pub(super) fn build<'a>(model: &Model<'a>, opts: &PlanOptions) -> Result<Plan<'a>> {
    let g = &model.graph;
    if g.nodes.is_empty() {
        return Err(Error::Graph("no nodes".into()));
    }
    let isa = usable_isa(opts.max_isa);
    let threads = if cfg!(feature = "std") { opts.threads } else { 1 };
    #[cfg(feature = "std")]
    let cores = super::cores::choose(&opts.cores, threads, &super::cores::ranked(super::cores::SYSFS_CPUS.as_ref()))?;
    #[cfg(not(feature = "std"))]
    let cores = Vec::new();
    log::info!(
        "{}: kernel tier {} (this CPU: {}{}), {threads} thread(s){}",
        model.name,
        isa.name(),
        Isa::detect().name(),
        if isa >= Isa::Avx512 && crate::kernels::splits_512() { ", 512-bit ops run as two halves" } else { "" },
        if cores.is_empty() { String::new() } else { format!(" on cores {cores:?}") }
    );
    let mut b = Builder { model, isa, keep_weights: opts.keep_weights, values: Vec::new(), by_name: BTreeMap::new() };
    let mut in_shape = vec![opts.batch];
    in_shape.extend_from_slice(&g.input.shape);
    if !(2..=4).contains(&in_shape.len()) {
        return Err(Error::Graph(format!("input shape {:?} must be [C, H, W] or [F]", g.input.shape)));
    }
    let input = b.add_value(&g.input.name, in_shape, ValueType::F32)?;
    let mut steps = Vec::with_capacity(g.nodes.len());
    for node in &g.nodes {
        steps.push(build_step(&mut b, node)?);
        log::info!(
            "{}: {} -> {} ({})",
            node.name,
            node.op.name(),
            steps.last().map_or("", |s: &Step<'_>| s.kernel),
            b.isa.name()
        );
    }
    let output = *b
        .by_name
        .get(&g.output)
        .ok_or_else(|| Error::Graph(format!("output `{}` is not produced by any node", g.output)))?;

    // Liveness: a value lives from its producing step to its last reader; the input from step 0, the output to the end.
    let n_steps = steps.len();
    let mut life: Vec<Lifetime> = b.values.iter().map(|v| Lifetime { bytes: v.bytes, first: 0, last: 0 }).collect();
    for (i, s) in steps.iter().enumerate() {
        life[s.output].first = i;
        life[s.output].last = life[s.output].last.max(i);
        for &v in &s.inputs {
            life[v].last = life[v].last.max(i);
        }
    }
    life[input].first = 0;
    life[output].last = n_steps;
    // `assign` places every value below the sum of all (aligned) sizes, so that sum must fit a usize.
    let total =
        life.iter().try_fold(0usize, |acc, l| acc.checked_add(l.bytes.checked_next_multiple_of(memory::ALIGN)?));
    if total.is_none() {
        return Err(Error::TooLarge("activations exceed the address space".into()));
    }
    let (offsets, arena_bytes) = memory::assign(&life);
    if arena_bytes > opts.max_arena_bytes {
        return Err(Error::TooLarge(format!(
            "arena of {arena_bytes} bytes exceeds the limit of {}",
            opts.max_arena_bytes
        )));
    }
    for (v, off) in b.values.iter_mut().zip(offsets) {
        v.offset = off;
    }
    let scratch_bytes = steps
        .iter()
        .map(|s| match &s.kind {
            StepKind::Conv { pack, .. } | StepKind::QConv { pack, .. } => pack.scratch_bytes(threads),
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    Ok(Plan {
        name: model.name.clone(),
        steps,
        values: b.values,
        input,
        output,
        arena_bytes,
        batch: opts.batch,
        threads,
        cores,
        scratch_bytes,
    })
}

fn quantized(node: &Node, v: &Value) -> Result<QParams> {
    match v.ty {
        ValueType::Q(q) => Ok(q),
        ValueType::F32 => {
            Err(node_err(node, format!("int8 node reads f32 value `{}` (insert a Quantize node)", v.name)))
        }
    }
}

/// Layout-only int8 ops (activation clamp, max pool, shortcut) keep their input's quantization.
fn keep_quantization(node: &Node, x: &Value, q: &QParams) -> Result<()> {
    if quantized(node, x)? != *q {
        return Err(node_err(node, format!("int8 {} must keep its input's quantization", node.op.name())));
    }
    Ok(())
}

fn expect_f32(node: &Node, v: &Value) -> Result<()> {
    match v.ty {
        ValueType::F32 => Ok(()),
        ValueType::Q(_) => {
            Err(node_err(node, format!("f32 node reads quantized value `{}` (insert a Dequantize node)", v.name)))
        }
    }
}

fn check_qparams(node: &Node, q: &QParams) -> Result<()> {
    let (lo, hi) = q.range();
    if !(q.scale.is_finite() && q.scale > 0.0) || q.zero_point < lo || q.zero_point > hi {
        return Err(node_err(node, format!("invalid output quantization {q:?}")));
    }
    Ok(())
}

/// A clip range must be ordered: the int8 kernels clamp with it, and `i32::clamp` panics on min > max.
fn check_activation(node: &Node, act: Activation) -> Result<()> {
    let (lo, hi) = act.bounds();
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(node_err(node, format!("invalid activation {act:?}: min must not exceed max")));
    }
    Ok(())
}

fn build_step<'a>(b: &mut Builder<'_, 'a>, node: &Node) -> Result<Step<'a>> {
    if node.inputs.len() != node.op.arity() {
        return Err(node_err(
            node,
            format!("{} takes {} input(s), got {}", node.op.name(), node.op.arity(), node.inputs.len()),
        ));
    }
    let inputs: Vec<usize> = node.inputs.iter().map(|i| b.value(node, i)).collect::<Result<_>>()?;
    let x = b.values[inputs[0]].clone();
    if let Some(q) = &node.output_q {
        check_qparams(node, q)?;
    }
    if let Op::Conv { activation, .. }
    | Op::Linear { activation, .. }
    | Op::Act { activation }
    | Op::Add { activation } = &node.op
    {
        check_activation(node, *activation)?;
    }
    let q_out = node.output_q;
    let mut macs = 0u64;
    let mut params = 0u64;
    let (kernel, kind, out_shape, out_ty): (&'static Kernel, StepKind<'a>, Vec<usize>, ValueType) = match &node.op {
        Op::Conv { out_channels, window, groups, bias, residual, activation } => {
            let [n, c, h, w] = dims4(node, &x)?;
            let (oc, gr) = (*out_channels, *groups);
            if gr == 0 || c % gr != 0 || oc == 0 || oc % gr != 0 || oc > MAX_DIM {
                return Err(node_err(node, format!("{c} input / {oc} output channels do not divide into {gr} groups")));
            }
            let geom = conv_geom(node, [n, c, h, w], oc, window, gr)?;
            let out_shape = vec![n, oc, geom.h_out, geom.w_out];
            let wshape = [oc, c / gr, geom.kh, geom.kw];
            checked_numel(&wshape, &node.name)?;
            let residual = residual.then(|| b.values[inputs[1]].clone());
            if let Some(r) = residual.as_ref().filter(|r| r.shape != out_shape) {
                return Err(node_err(
                    node,
                    format!("residual shape {:?} differs from output {:?}", r.shape, out_shape),
                ));
            }
            let conv =
                ConvLike { geom, wshape: &wshape, bias: *bias, activation: *activation, residual: residual.as_ref() };
            (macs, params) = (checked_macs(node, &out_shape, geom.k())?, conv.params());
            let (k, kind, ty) = conv_step(b, node, &x, conv)?;
            (k, kind, out_shape, ty)
        }
        Op::Linear { out_features, bias, activation } => {
            let (n, f_in) = match x.shape.as_slice() {
                &[n, f] | &[n, f, 1, 1] => (n, f),
                s => return Err(node_err(node, format!("Linear expects [N, F] or [N, F, 1, 1], got {s:?}"))),
            };
            let of = *out_features;
            if of == 0 || of > MAX_DIM {
                return Err(node_err(node, format!("invalid out_features {of}")));
            }
            // A linear layer is a 1x1 convolution over a 1x1 image: one kernel family serves both.
            let geom = ConvGeom {
                n,
                c_in: f_in,
                h_in: 1,
                w_in: 1,
                c_out: of,
                h_out: 1,
                w_out: 1,
                kh: 1,
                kw: 1,
                stride_h: 1,
                stride_w: 1,
                dil_h: 1,
                dil_w: 1,
                groups: 1,
                ..ConvGeom::default()
            };
            let out_shape = vec![n, of];
            let conv = ConvLike { geom, wshape: &[of, f_in], bias: *bias, activation: *activation, residual: None };
            (macs, params) = (checked_macs(node, &out_shape, f_in)?, conv.params());
            let (k, kind, ty) = conv_step(b, node, &x, conv)?;
            (k, kind, out_shape, ty)
        }
        Op::BatchNorm { eps } => {
            expect_f32(node, &x)?;
            if q_out.is_some() {
                return Err(node_err(node, "BatchNorm must be folded before quantization"));
            }
            let (c, hw) = match x.shape.as_slice() {
                &[_, c, h, w] => (c, h * w),
                &[_, c] => (c, 1),
                s => return Err(node_err(node, format!("BatchNorm expects [N, C, H, W] or [N, C], got {s:?}"))),
            };
            if hw == 0 {
                return Err(node_err(node, "empty spatial extent"));
            }
            let (gamma, beta) = (b.f32_of(node, "gamma", &[c])?, b.f32_of(node, "beta", &[c])?);
            let (mean, var) = (b.f32_of(node, "mean", &[c])?, b.f32_of(node, "var", &[c])?);
            let scale: Vec<f32> = (0..c).map(|i| gamma[i] / libm::sqrtf(var[i] + eps)).collect();
            let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
            params = 2 * c as u64;
            let (k, f) = pick!(b.isa, node, F32Affine);
            (k, StepKind::Affine { f, hw, scale, shift }, x.shape.clone(), ValueType::F32)
        }
        Op::Act { activation } => match q_out {
            None => {
                expect_f32(node, &x)?;
                let (k, f) = pick!(b.isa, node, F32Clamp);
                (k, StepKind::Clamp { f, clamp: activation.bounds() }, x.shape.clone(), ValueType::F32)
            }
            Some(q) => {
                keep_quantization(node, &x, &q)?;
                let (lo, hi) = activation_bounds(*activation, &q);
                let (k, f) = pick!(b.isa, node, QClamp);
                (k, StepKind::QClamp { f, lo, hi }, x.shape.clone(), ValueType::Q(q))
            }
        },
        Op::Add { activation } => {
            let y = b.values[inputs[1]].clone();
            if x.shape != y.shape {
                return Err(node_err(node, format!("Add of different shapes {:?} and {:?}", x.shape, y.shape)));
            }
            match q_out {
                None => {
                    expect_f32(node, &x)?;
                    expect_f32(node, &y)?;
                    let (k, f) = pick!(b.isa, node, F32Add);
                    (k, StepKind::Add { f, clamp: activation.bounds() }, x.shape.clone(), ValueType::F32)
                }
                Some(q) => {
                    let (qa, qb) = (quantized(node, &x)?, quantized(node, &y)?);
                    let m = b.i32_of(node, "multiplier", &[2])?;
                    let s = b.i32_of(node, "shift", &[2])?;
                    check_requant(node, &m, &s)?;
                    let (lo, hi) = activation_bounds(*activation, &q);
                    let params = AddParams {
                        a_zero_point: internal_i8(&qa).0,
                        a_multiplier: m[0],
                        a_shift: s[0],
                        b_zero_point: internal_i8(&qb).0,
                        b_multiplier: m[1],
                        b_shift: s[1],
                        zero_point: internal_i8(&q).0,
                        lo,
                        hi,
                    };
                    let (k, f) = pick!(b.isa, node, QAdd);
                    (k, StepKind::QAdd { f, params }, x.shape.clone(), ValueType::Q(q))
                }
            }
        }
        Op::MaxPool { window } | Op::AvgPool { window, .. } => {
            let d = dims4(node, &x)?;
            // PyTorch's rule: no dilation, padding at most half the kernel. Every window then touches the
            // input, so max pooling never returns its "no value" minimum.
            let [t, l, bo, r] = window.padding;
            if window.dilation != [1, 1] || t.max(bo) > window.kernel[0] / 2 || l.max(r) > window.kernel[1] / 2 {
                return Err(node_err(
                    node,
                    format!("pooling needs dilation 1 and padding <= kernel/2, got {window:?}"),
                ));
            }
            let geom = conv_geom(node, d, d[1], window, d[1])?;
            let out_shape = vec![d[0], d[1], geom.h_out, geom.w_out];
            let is_max = matches!(node.op, Op::MaxPool { .. });
            let cip = matches!(node.op, Op::AvgPool { count_include_pad: true, .. });
            match (q_out, is_max) {
                (None, true) => {
                    expect_f32(node, &x)?;
                    let (k, f) = pick!(b.isa, node, F32MaxPool);
                    (k, StepKind::MaxPool { f, geom }, out_shape, ValueType::F32)
                }
                (None, false) => {
                    expect_f32(node, &x)?;
                    let (k, f) = pick!(b.isa, node, F32AvgPool);
                    (k, StepKind::AvgPool { f, geom, count_include_pad: cip }, out_shape, ValueType::F32)
                }
                (Some(q), true) => {
                    keep_quantization(node, &x, &q)?;
                    let (k, f) = pick!(b.isa, node, QMaxPool);
                    (k, StepKind::QMaxPool { f, geom }, out_shape, ValueType::Q(q))
                }
                (Some(q), false) => {
                    let xq = quantized(node, &x)?;
                    if !cip && window.padding != [0; 4] {
                        return Err(node_err(node, "int8 AvgPool with padding needs count_include_pad"));
                    }
                    if geom.kh as i64 * geom.kw as i64 * 255 > i32::MAX as i64 {
                        return Err(node_err(node, "pooling window too large for i32 sums"));
                    }
                    let out = b.qout(node, "", 1, Activation::None, &q)?;
                    let (k, f) = pick!(b.isa, node, QAvgPool);
                    (k, StepKind::QAvgPool { f, geom, x_zp: internal_i8(&xq).0, out }, out_shape, ValueType::Q(q))
                }
            }
        }
        Op::GlobalAvgPool => {
            let [n, c, h, w] = dims4(node, &x)?;
            let hw = h * w;
            if hw == 0 {
                return Err(node_err(node, "empty spatial extent"));
            }
            let out_shape = vec![n, c, 1, 1];
            match q_out {
                None => {
                    expect_f32(node, &x)?;
                    let (k, f) = pick!(b.isa, node, F32Gap);
                    (k, StepKind::Gap { f, hw }, out_shape, ValueType::F32)
                }
                Some(q) => {
                    let xq = quantized(node, &x)?;
                    if hw as i64 * 255 > i32::MAX as i64 {
                        return Err(node_err(node, "pooling window too large for i32 sums"));
                    }
                    let out = b.qout(node, "", 1, Activation::None, &q)?;
                    let (k, f) = pick!(b.isa, node, QGap);
                    (k, StepKind::QGap { f, hw, x_zp: internal_i8(&xq).0, out }, out_shape, ValueType::Q(q))
                }
            }
        }
        Op::Flatten => {
            let n = x.shape[0];
            let rest: usize = x.shape[1..].iter().product();
            copy_step(b, node, &x, vec![n, rest])?
        }
        Op::Softmax => {
            expect_f32(node, &x)?;
            if q_out.is_some() {
                return Err(node_err(node, "Softmax runs in f32 (dequantize first)"));
            }
            let cols = *x.shape.last().unwrap_or(&1);
            if cols == 0 {
                return Err(node_err(node, "Softmax over an empty axis"));
            }
            let (k, f) = pick!(b.isa, node, F32Softmax);
            (k, StepKind::Softmax { f, cols }, x.shape.clone(), ValueType::F32)
        }
        Op::ShortcutA { stride, pad_before, pad_after } => {
            let [n, c, h, w] = dims4(node, &x)?;
            if *stride == 0 || *stride > MAX_DIM || *pad_before > MAX_DIM || *pad_after > MAX_DIM {
                return Err(node_err(
                    node,
                    format!("invalid shortcut stride {stride} / padding {pad_before}+{pad_after}"),
                ));
            }
            let geom = ShortcutGeom { n, c, h, w, stride: *stride, pad_before: *pad_before, pad_after: *pad_after };
            let (oh, ow) = geom.out_hw();
            let out_shape = vec![n, pad_before + c + pad_after, oh, ow];
            match q_out {
                None => {
                    expect_f32(node, &x)?;
                    let (k, f) = pick!(b.isa, node, F32Shortcut);
                    (k, StepKind::Shortcut { f, geom }, out_shape, ValueType::F32)
                }
                Some(q) => {
                    keep_quantization(node, &x, &q)?;
                    let (k, f) = pick!(b.isa, node, QShortcut);
                    (k, StepKind::QShortcut { f, geom, zero: internal_i8(&q).0 as i8 }, out_shape, ValueType::Q(q))
                }
            }
        }
        Op::Quantize => {
            expect_f32(node, &x)?;
            let q = q_out.ok_or_else(|| node_err(node, "Quantize needs output_q"))?;
            let (zp, lo, hi) = internal_i8(&q);
            let (k, f) = pick!(b.isa, node, Quantize);
            (k, StepKind::Quantize { f, scale: q.scale, zp, lo, hi }, x.shape.clone(), ValueType::Q(q))
        }
        Op::Dequantize => {
            let xq = quantized(node, &x)?;
            if q_out.is_some() {
                return Err(node_err(node, "Dequantize produces f32 (no output_q)"));
            }
            let (k, f) = pick!(b.isa, node, Dequantize);
            (k, StepKind::Dequantize { f, scale: xq.scale, zp: internal_i8(&xq).0 }, x.shape.clone(), ValueType::F32)
        }
    };
    let output = b.add_value(&node.name, out_shape, out_ty)?;
    Ok(Step {
        name: node.name.clone(),
        op: node.op.name(),
        kernel: kernel.name,
        isa: kernel.isa,
        inputs,
        output,
        macs,
        params,
        kind,
    })
}

/// A convolution or linear layer, lowered to one geometry.
struct ConvLike<'v> {
    geom: ConvGeom,
    wshape: &'v [usize],
    bias: bool,
    activation: Activation,
    /// The fused residual input, if any.
    residual: Option<&'v Value>,
}

impl ConvLike<'_> {
    fn params(&self) -> u64 {
        let (oc, k) = (self.geom.c_out as u64, self.geom.k() as u64);
        oc * k + if self.bias { oc } else { 0 }
    }
}

/// Prepares the weights and picks the kernel of a conv-like node, in f32 or int8 by its `output_q`.
fn conv_step<'a>(
    b: &Builder<'_, 'a>,
    node: &Node,
    x: &Value,
    c: ConvLike<'_>,
) -> Result<(&'static Kernel, StepKind<'a>, ValueType)> {
    let (geom, oc) = (c.geom, c.geom.c_out);
    let Some(q) = node.output_q else {
        expect_f32(node, x)?;
        if let Some(r) = c.residual {
            expect_f32(node, r)?;
        }
        let weight = b.f32_weights(node, c.wshape)?;
        let bias = if c.bias { b.f32_of(node, "bias", &[oc])? } else { vec![0.0; oc] };
        let clamp = c.activation.bounds();
        let (k, f) = pick!(b.isa, node, F32Conv, f if (f.supports)(&geom));
        let pack = (f.pack)(&geom, &F32ConvParams { weight: &weight, bias: &bias, clamp });
        let weight = if pack.holds_weights() && !b.keep_weights { Cow::Borrowed(&[][..]) } else { weight };
        return Ok((k, StepKind::Conv { f, geom, weight, bias, pack, clamp }, ValueType::F32));
    };
    let xq = quantized(node, x)?;
    let weight = b.i8_weights(node, c.wshape)?;
    let bias = if c.bias { b.i32_of(node, "bias", &[oc])? } else { vec![0; oc] };
    // |acc| <= |bias| + K * 255 * 127 must fit in i32 (the spec forbids overflow).
    let worst = bias.iter().map(|v| (*v as i64).abs()).max().unwrap_or(0) + geom.k() as i64 * 255 * 127;
    if worst > i32::MAX as i64 {
        return Err(node_err(node, format!("reduction of {} terms could overflow the i32 accumulator", geom.k())));
    }
    let out = b.qout(node, "", oc, c.activation, &q)?;
    let residual = match c.residual {
        Some(r) => {
            let rq = quantized(node, r)?;
            let m = b.i32_of(node, "residual_multiplier", &[1])?;
            let s = b.i32_of(node, "residual_shift", &[1])?;
            check_requant(node, &m, &s)?;
            Some(ResidualRequant { zero_point: internal_i8(&rq).0, multiplier: m[0], shift: s[0] })
        }
        None => None,
    };
    let (k, f) = pick!(b.isa, node, QConv, f if (f.supports)(&geom));
    let x_zp = internal_i8(&xq).0;
    let rq =
        Requant { multiplier: &out.multiplier, shift: &out.shift, zero_point: out.zero_point, lo: out.lo, hi: out.hi };
    let pack =
        (f.pack)(&geom, &QConvParams { x_zero_point: x_zp, weight: &weight, bias: &bias, requant: rq, residual });
    let weight = if pack.holds_weights() && !b.keep_weights { Cow::Borrowed(&[][..]) } else { weight };
    Ok((k, StepKind::QConv { f, geom, x_zp, weight, bias, pack, out, residual }, ValueType::Q(q)))
}

/// A layout-only op (Flatten): same bytes, new shape.
fn copy_step<'a>(
    b: &Builder<'_, 'a>,
    node: &Node,
    x: &Value,
    shape: Vec<usize>,
) -> Result<(&'static Kernel, StepKind<'a>, Vec<usize>, ValueType)> {
    match (x.ty, node.output_q) {
        (ValueType::F32, None) => {
            let (k, f) = pick!(b.isa, node, F32Copy);
            Ok((k, StepKind::Copy { f }, shape, ValueType::F32))
        }
        (ValueType::Q(qx), Some(q)) if qx == q => {
            let (k, f) = pick!(b.isa, node, QCopy);
            Ok((k, StepKind::QCopy { f }, shape, ValueType::Q(q)))
        }
        _ => Err(node_err(node, "Flatten must keep its input's type and quantization")),
    }
}
