//! The single list of kernels. The planner asks [`pick`] once per node; the chosen entry's name is logged
//! and shown by `resedge inspect`. Optimized ISA modules add their entries here, ahead of the scalar ones.

use super::generic;
use super::{AddParams, ConvGeom, QConvParams, Requant};

/// Instruction-set tier a kernel needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
        }
    }
}

/// f32 convolution: geometry, input, weights (OIHW), bias, residual, clamp, output.
pub type F32ConvFn = fn(&ConvGeom, &[f32], &[f32], &[f32], Option<&[f32]>, (f32, f32), &mut [f32]);
/// int8 convolution: geometry, parameters, input, residual, output.
pub type QConvFn = fn(&ConvGeom, &QConvParams<'_>, &[i8], Option<&[i8]>, &mut [i8]);

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
    F32Conv(F32ConvFn),
    QConv(QConvFn),
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
    ($($name:ident: $isa:ident, $variant:ident($f:expr);)*) => {
        /// Every kernel this build contains, best tier first within each family.
        pub static KERNELS: &[Kernel] = &[
            $(Kernel { name: stringify!($name), isa: Isa::$isa, func: KernelFn::$variant($f) },)*
        ];
    };
}

kernels! {
    f32_conv2d_scalar: Scalar, F32Conv(generic::f32_conv2d_scalar);
    qs8_conv2d_requant_scalar: Scalar, QConv(generic::qs8_conv2d_scalar);
    f32_maxpool_scalar: Scalar, F32MaxPool(generic::f32_maxpool_scalar);
    qs8_maxpool_scalar: Scalar, QMaxPool(generic::qs8_maxpool_scalar);
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
    KERNELS.iter().filter(|k| k.isa <= max_isa && matches(&k.func)).max_by_key(|k| k.isa)
}
