//! The single list of kernels. The planner asks [`pick`] once per node; the chosen entry's name is logged
//! and shown by `resedge inspect`. ISA modules add their entries here (one line each, behind their
//! `target_arch`); [`pick`] takes the highest tier the plan allows, so order within a family is free.

use super::generic;
pub use super::isa::{Arch, Isa};
use super::{AddParams, ConvGeom, F32ConvParams, QConvParams, QPacked, Requant};
use std::prelude::v1::*;

/// f32 convolution: geometry, parameters, input, residual, output, scratch.
pub type F32ConvFn = fn(&ConvGeom, &F32ConvParams<'_>, &[f32], Option<&[f32]>, &mut [f32], &mut [f32]);
/// int8 convolution: geometry, parameters, input, residual, output, scratch.
pub type QConvFn = fn(&ConvGeom, &QConvParams<'_>, &[i8], Option<&[i8]>, &mut [i8], &mut [i8]);

/// A convolution kernel: its entry point, the weight packing the planner runs once, and the scratch it
/// needs per call (elements, provided by the executor so runs stay allocation free).
#[derive(Clone, Copy)]
pub struct ConvKernel<F, P> {
    pub run: F,
    pub pack: P,
    pub scratch: fn(&ConvGeom) -> usize,
}

/// f32: packs OIHW weights into the kernel's format (empty when it reads OIHW directly).
pub type F32Conv = ConvKernel<F32ConvFn, fn(&ConvGeom, &[f32]) -> Vec<f32>>;
/// int8: packs OIHW weights and the bias for input zero point `x_zp`.
pub type QConv = ConvKernel<QConvFn, fn(&ConvGeom, &[i8], &[i32], i32) -> QPacked>;

impl F32Conv {
    /// Packs, allocates scratch and runs once (tests, benches; the executor packs once per plan).
    pub fn call(&self, g: &ConvGeom, p: &F32ConvParams<'_>, x: &[f32], r: Option<&[f32]>, y: &mut [f32]) {
        let packed = (self.pack)(g, p.weight);
        let mut scratch = vec![0.0; (self.scratch)(g)];
        (self.run)(g, &F32ConvParams { packed: &packed, ..*p }, x, r, y, &mut scratch)
    }
}

impl QConv {
    /// Packs, allocates scratch and runs once (tests, benches; the executor packs once per plan).
    pub fn call(&self, g: &ConvGeom, p: &QConvParams<'_>, x: &[i8], r: Option<&[i8]>, y: &mut [i8]) {
        let packed = (self.pack)(g, p.weight, p.bias, p.x_zero_point);
        let mut scratch = vec![0; (self.scratch)(g)];
        let p = QConvParams { packed_weight: &packed.weight, packed_bias: &packed.bias, ..*p };
        (self.run)(g, &p, x, r, y, &mut scratch)
    }
}

fn no_scratch(_: &ConvGeom) -> usize {
    0
}

const F32_CONV_SCALAR: F32Conv = ConvKernel {
    run: |g, p, x, r, y, _| generic::f32_conv2d_scalar(g, x, p.weight, p.bias, r, p.clamp, y),
    pack: |_, _| Vec::new(),
    scratch: no_scratch,
};

const QS8_CONV_SCALAR: QConv = ConvKernel {
    run: |g, p, x, r, y, _| generic::qs8_conv2d_scalar(g, p, x, r, y),
    pack: |_, _, _, _| QPacked::default(),
    scratch: no_scratch,
};

pub type F32MaxPoolFn = fn(&ConvGeom, &[f32], &mut [f32]);
pub type QMaxPoolFn = fn(&ConvGeom, &[i8], &mut [i8]);
pub type F32AvgPoolFn = fn(&ConvGeom, bool, &[f32], &mut [f32]);
pub type QAvgPoolFn = fn(&ConvGeom, i32, &Requant<'_>, &[i8], &mut [i8]);
pub type F32GapFn = fn(usize, &[f32], &mut [f32]);
pub type QGapFn = fn(usize, i32, &Requant<'_>, &[i8], &mut [i8]);
pub type F32AddFn = fn(&[f32], &[f32], (f32, f32), &mut [f32]);
pub type QAddFn = fn(&AddParams, &[i8], &[i8], &mut [i8]);
pub type F32ClampFn = fn(&[f32], (f32, f32), &mut [f32]);
pub type QClampFn = fn(&[i8], i32, i32, &mut [i8]);
pub type F32AffineFn = fn(usize, &[f32], &[f32], &[f32], &mut [f32]);
pub type F32ShortcutFn = fn(&generic::ShortcutGeom, f32, &[f32], &mut [f32]);
pub type QShortcutFn = fn(&generic::ShortcutGeom, i8, &[i8], &mut [i8]);
pub type QuantizeFn = fn(f32, i32, i32, i32, &[f32], &mut [i8]);
pub type DequantizeFn = fn(f32, i32, &[i8], &mut [f32]);
pub type F32SoftmaxFn = fn(usize, &[f32], &mut [f32]);
pub type F32CopyFn = fn(&[f32], &mut [f32]);
pub type QCopyFn = fn(&[i8], &mut [i8]);

/// A kernel's entry point, typed by op family.
#[derive(Clone, Copy)]
pub enum KernelFn {
    F32Conv(F32Conv),
    QConv(QConv),
    F32MaxPool(F32MaxPoolFn),
    QMaxPool(QMaxPoolFn),
    F32AvgPool(F32AvgPoolFn),
    QAvgPool(QAvgPoolFn),
    F32Gap(F32GapFn),
    QGap(QGapFn),
    F32Add(F32AddFn),
    QAdd(QAddFn),
    F32Clamp(F32ClampFn),
    QClamp(QClampFn),
    F32Affine(F32AffineFn),
    F32Shortcut(F32ShortcutFn),
    QShortcut(QShortcutFn),
    Quantize(QuantizeFn),
    Dequantize(DequantizeFn),
    F32Softmax(F32SoftmaxFn),
    F32Copy(F32CopyFn),
    QCopy(QCopyFn),
}

/// One registered kernel.
pub struct Kernel {
    /// Registry name, e.g. `f32_conv2d_scalar` (see STYLE naming).
    pub name: &'static str,
    pub isa: Isa,
    pub func: KernelFn,
}

fn copy<T: Copy>(x: &[T], y: &mut [T]) {
    y.copy_from_slice(x)
}

macro_rules! kernels {
    ($($(#[$cfg:meta])* $name:ident: $isa:ident, $variant:ident($f:expr);)*) => {
        /// Every kernel this build contains.
        pub static KERNELS: &[Kernel] = &[
            $($(#[$cfg])* Kernel { name: stringify!($name), isa: Isa::$isa, func: KernelFn::$variant($f) },)*
        ];
    };
}

kernels! {
    f32_conv2d_scalar: Scalar, F32Conv(F32_CONV_SCALAR);
    qs8_conv2d_requant_scalar: Scalar, QConv(QS8_CONV_SCALAR);
    #[cfg(target_arch = "aarch64")]
    f32_conv2d_8x8_neon: Neon, F32Conv(super::aarch64::F32_CONV_NEON);
    #[cfg(target_arch = "aarch64")]
    qs8_conv2d_requant_8x8c16_neon: Neon, QConv(super::aarch64::QS8_CONV_NEON);
    #[cfg(target_arch = "aarch64")]
    qs8_conv2d_requant_8x8c4_neondot: NeonDot, QConv(super::aarch64::QS8_CONV_NEONDOT);
    #[cfg(target_arch = "aarch64")]
    qs8_conv2d_requant_8x8c8_neoni8mm: NeonI8mm, QConv(super::aarch64::QS8_CONV_NEONI8MM);
    f32_maxpool_scalar: Scalar, F32MaxPool(generic::f32_maxpool_scalar);
    qs8_maxpool_scalar: Scalar, QMaxPool(generic::qs8_maxpool_scalar);
    #[cfg(target_arch = "aarch64")]
    qs8_maxpool_3x3s2_neon: Neon, QMaxPool(super::aarch64::qs8_maxpool);
    f32_avgpool_scalar: Scalar, F32AvgPool(generic::f32_avgpool_scalar);
    qs8_avgpool_requant_scalar: Scalar, QAvgPool(generic::qs8_avgpool_scalar);
    f32_gap_scalar: Scalar, F32Gap(generic::f32_gap_scalar);
    qs8_gap_requant_scalar: Scalar, QGap(generic::qs8_gap_scalar);
    f32_add_scalar: Scalar, F32Add(generic::f32_add_scalar);
    qs8_add_requant_scalar: Scalar, QAdd(generic::qs8_add_scalar);
    f32_clamp_scalar: Scalar, F32Clamp(generic::f32_clamp_scalar);
    qs8_clamp_scalar: Scalar, QClamp(generic::qs8_clamp_scalar);
    f32_affine_scalar: Scalar, F32Affine(generic::f32_affine_scalar);
    f32_shortcut_a_scalar: Scalar, F32Shortcut(generic::shortcut_a::<f32>);
    qs8_shortcut_a_scalar: Scalar, QShortcut(generic::shortcut_a::<i8>);
    qs8_quantize_scalar: Scalar, Quantize(generic::quantize_scalar);
    qs8_dequantize_scalar: Scalar, Dequantize(generic::dequantize_scalar);
    f32_softmax_scalar: Scalar, F32Softmax(generic::f32_softmax_scalar);
    f32_copy_scalar: Scalar, F32Copy(copy::<f32>);
    qs8_copy_scalar: Scalar, QCopy(copy::<i8>);
}

/// The best kernel of the family `matches` selects that the allowed tier (`max_isa`) permits.
pub fn pick(max_isa: Isa, matches: impl Fn(&KernelFn) -> bool) -> Option<&'static Kernel> {
    available(max_isa).filter(|k| matches(&k.func)).max_by_key(|k| k.isa)
}

/// Every kernel a plan capped at `max_isa` may use (tests run each against the scalar reference).
pub fn available(max_isa: Isa) -> impl Iterator<Item = &'static Kernel> {
    KERNELS.iter().filter(move |k| max_isa.allows(k.isa))
}
