//! The single list of kernels. The planner asks [`pick`] once per node; the chosen entry's name is logged
//! and shown by `resedge inspect`. ISA modules add their entries here (one line each, behind their
//! `target_arch`); [`pick`] takes the highest tier the plan allows, so order within a family is free.

use super::generic;
pub use super::isa::{Arch, Isa};
use super::packed::{ConvPack, Parallel, Scratch, Serial};
use super::{AddParams, ConvGeom, F32ConvParams, QConvParams, Requant};

/// f32 convolution: geometry, the kernel's pack, parameters, input, residual, output, scratch (64-byte
/// aligned, [`ConvPack::scratch_bytes`] for the workers), workers.
pub type F32ConvFn =
    fn(&ConvGeom, &ConvPack, &F32ConvParams<'_>, &[f32], Option<&[f32]>, &mut [f32], &mut [u8], &dyn Parallel);
/// int8 convolution: geometry, the kernel's pack, parameters, input, residual, output, scratch, workers.
pub type QConvFn =
    fn(&ConvGeom, &ConvPack, &QConvParams<'_>, &[i8], Option<&[i8]>, &mut [i8], &mut [u8], &dyn Parallel);

/// A convolution kernel of any ISA: the geometries it handles, the packing the planner runs once (weights,
/// bias, lane tables and the scratch size, all in a [`ConvPack`]; empty for the scalar reference), and its
/// entry point. The executor provides the scratch and the workers, so runs stay allocation free. A kernel
/// whose pack [holds the weights](ConvPack::holds_weights) must not read `weight` from its parameters: the
/// planner drops them.
#[derive(Clone, Copy)]
pub struct ConvKernel<F, P> {
    pub supports: fn(&ConvGeom) -> bool,
    pub pack: P,
    pub run: F,
}

/// f32: packs from the OIHW weights and bias of the parameters.
pub type F32Conv = ConvKernel<F32ConvFn, fn(&ConvGeom, &F32ConvParams<'_>) -> ConvPack>;
/// int8: packs from the weights, bias and input zero point of the parameters.
pub type QConv = ConvKernel<QConvFn, fn(&ConvGeom, &QConvParams<'_>) -> ConvPack>;

macro_rules! one_shot_calls {
    ($kernel:ty, $params:ty, $t:ty) => {
        impl $kernel {
            /// Packs, allocates scratch and runs once on one thread (tests, benches; the executor packs once
            /// per plan).
            pub fn call(&self, g: &ConvGeom, p: &$params, x: &[$t], r: Option<&[$t]>, y: &mut [$t]) {
                self.call_on(&Serial, g, p, x, r, y)
            }

            /// `call` on the workers of `par`.
            pub fn call_on(
                &self,
                par: &dyn Parallel,
                g: &ConvGeom,
                p: &$params,
                x: &[$t],
                r: Option<&[$t]>,
                y: &mut [$t],
            ) {
                let pack = (self.pack)(g, p);
                let mut scratch = Scratch::new(pack.scratch_bytes(par.workers()));
                (self.run)(g, &pack, p, x, r, y, scratch.bytes(), par)
            }
        }
    };
}

one_shot_calls!(F32Conv, F32ConvParams<'_>, f32);
one_shot_calls!(QConv, QConvParams<'_>, i8);

fn any_geometry(_: &ConvGeom) -> bool {
    true
}

const F32_CONV_SCALAR: F32Conv = ConvKernel {
    supports: any_geometry,
    pack: |_, _| ConvPack::default(),
    run: |g, _, p, x, r, y, _, _| generic::f32_conv2d_scalar(g, x, p.weight, p.bias, r, p.clamp, y),
};

const QS8_CONV_SCALAR: QConv = ConvKernel {
    supports: any_geometry,
    pack: |_, _| ConvPack::default(),
    run: |g, _, p, x, r, y, _, _| generic::qs8_conv2d_scalar(g, p, x, r, y),
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
pub type F32ShortcutFn = fn(&generic::ShortcutGeom, f32, &[f32], &mut [f32], &dyn Parallel);
pub type QShortcutFn = fn(&generic::ShortcutGeom, i8, &[i8], &mut [i8], &dyn Parallel);
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
    #[cfg(target_arch = "x86_64")]
    f32_conv2d_8x32_avx512: Avx512, F32Conv(super::x86::F32_CONV_AVX512);
    #[cfg(target_arch = "x86_64")]
    f32_conv2d_6x16_avx2: Avx2, F32Conv(super::x86::F32_CONV_AVX2);
    #[cfg(target_arch = "x86_64")]
    qs8_conv2d_requant_8x32c4_avx512vnni: Avx512Vnni, QConv(super::x86::QS8_CONV_VNNI);
    #[cfg(target_arch = "x86_64")]
    qs8_conv2d_requant_8x16c2_avx2: Avx2, QConv(super::x86::QS8_CONV_AVX2);
    f32_maxpool_scalar: Scalar, F32MaxPool(generic::f32_maxpool_scalar);
    qs8_maxpool_scalar: Scalar, QMaxPool(generic::qs8_maxpool_scalar);
    #[cfg(target_arch = "aarch64")]
    qs8_maxpool_3x3s2_neon: Neon, QMaxPool(super::aarch64::qs8_maxpool);
    #[cfg(target_arch = "x86_64")]
    f32_maxpool_avx2: Avx2, F32MaxPool(super::x86::f32_maxpool_avx2);
    #[cfg(target_arch = "x86_64")]
    qs8_maxpool_3x3s2_avx512: Avx512, QMaxPool(super::x86::qs8_maxpool_avx512);
    #[cfg(target_arch = "x86_64")]
    qs8_maxpool_avx2: Avx2, QMaxPool(super::x86::qs8_maxpool_avx2);
    f32_avgpool_scalar: Scalar, F32AvgPool(generic::f32_avgpool_scalar);
    qs8_avgpool_requant_scalar: Scalar, QAvgPool(generic::qs8_avgpool_scalar);
    f32_gap_scalar: Scalar, F32Gap(generic::f32_gap_scalar);
    qs8_gap_requant_scalar: Scalar, QGap(generic::qs8_gap_scalar);
    f32_add_scalar: Scalar, F32Add(generic::f32_add_scalar);
    qs8_add_requant_scalar: Scalar, QAdd(generic::qs8_add_scalar);
    #[cfg(target_arch = "x86_64")]
    qs8_add_requant_avx512: Avx512, QAdd(super::x86::qs8_add_avx512);
    #[cfg(target_arch = "x86_64")]
    qs8_add_requant_avx2: Avx2, QAdd(super::x86::qs8_add_avx2);
    f32_clamp_scalar: Scalar, F32Clamp(generic::f32_clamp_scalar);
    qs8_clamp_scalar: Scalar, QClamp(generic::qs8_clamp_scalar);
    f32_affine_scalar: Scalar, F32Affine(generic::f32_affine_scalar);
    f32_shortcut_a_scalar: Scalar, F32Shortcut(generic::shortcut_a::<f32>);
    qs8_shortcut_a_scalar: Scalar, QShortcut(generic::shortcut_a::<i8>);
    qs8_quantize_scalar: Scalar, Quantize(generic::quantize_scalar);
    #[cfg(target_arch = "x86_64")]
    qs8_quantize_avx512: Avx512, Quantize(super::x86::quantize_avx512);
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
