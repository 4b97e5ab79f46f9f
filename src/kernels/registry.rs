//! The single list of kernels. The planner asks [`pick`] once per node; the chosen entry's name is logged
//! and shown by `resedge inspect`. Optimized ISA modules add their entries here, ahead of the scalar ones.

use super::generic;
use super::packed::{ConvPack, Parallel};
use super::{AddParams, ConvGeom, QConvParams, Requant};

/// Instruction-set tier a kernel needs. Within one architecture the tiers are ordered and nested (each
/// includes the features of the ones below), so a CPU at tier T runs every kernel of tier <= T.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    /// x86_64 AVX2 + FMA.
    Avx2,
    /// x86_64 AVX-512 F/BW/VL/DQ.
    Avx512,
    /// x86_64 AVX-512 + VNNI.
    Avx512Vnni,
}

impl Isa {
    /// Every tier, lowest first.
    pub const ALL: &'static [Isa] = &[Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    /// The tier named `name` (as [`Isa::name`] spells it).
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.iter().copied().find(|i| i.name() == name)
    }

    /// The best tier this CPU supports (feature detection needs `std`; without it, scalar).
    pub fn detect() -> Isa {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        {
            super::x86::detect()
        }
        #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
        {
            Isa::Scalar
        }
    }

    /// The tier plans use by default: [`Isa::detect`], lowered by `RESEDGE_ISA=<name>` (std only). A forced
    /// tier above the detected one is refused with a warning (its instructions would fault).
    pub fn host() -> Isa {
        let best = Isa::detect();
        #[cfg(feature = "std")]
        if let Ok(name) = std::env::var("RESEDGE_ISA") {
            match Isa::from_name(name.trim()) {
                Some(isa) if isa <= best => return isa,
                Some(isa) => {
                    log::warn!("RESEDGE_ISA={} is above this CPU's {}; using {}", isa.name(), best.name(), best.name())
                }
                None => log::warn!("RESEDGE_ISA={name:?} is not a tier ({:?}); using {}", Isa::ALL, best.name()),
            }
        }
        best
    }
}

/// f32 convolution: geometry, input, weights (OIHW), bias, residual, clamp, output.
pub type F32ConvFn = fn(&ConvGeom, &[f32], &[f32], &[f32], Option<&[f32]>, (f32, f32), &mut [f32]);
/// int8 convolution: geometry, parameters, input, residual, output.
pub type QConvFn = fn(&ConvGeom, &QConvParams<'_>, &[i8], Option<&[i8]>, &mut [i8]);

/// A blocked convolution: `supports` the geometry, `pack` weights once at plan time, `run` with a scratch
/// of `ConvPack::scratch_bytes(workers)` bytes (64-byte aligned) on the given workers.
#[derive(Clone, Copy)]
pub struct F32ConvPacked {
    pub supports: fn(&ConvGeom) -> bool,
    /// Geometry, OIHW weights, bias.
    pub pack: fn(&ConvGeom, &[f32], &[f32]) -> ConvPack,
    /// Geometry, pack, input, residual, clamp, output, scratch, workers.
    #[allow(clippy::type_complexity)]
    pub run: fn(&ConvGeom, &ConvPack, &[f32], Option<&[f32]>, (f32, f32), &mut [f32], &mut [u8], &dyn Parallel),
}

/// The int8 blocked convolution; `pack` reads the weights, bias and input zero point of the parameters,
/// `run` their requantization and residual.
#[derive(Clone, Copy)]
pub struct QConvPacked {
    pub supports: fn(&ConvGeom) -> bool,
    pub pack: fn(&ConvGeom, &QConvParams<'_>) -> ConvPack,
    /// Geometry, pack, parameters, input, residual, output, scratch, workers.
    #[allow(clippy::type_complexity)]
    pub run: fn(&ConvGeom, &ConvPack, &QConvParams<'_>, &[i8], Option<&[i8]>, &mut [i8], &mut [u8], &dyn Parallel),
}

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
    F32ConvPacked(F32ConvPacked),
    QConvPacked(QConvPacked),
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
    ($(#[$attr:meta])* $list:ident; $($name:ident: $isa:ident, $variant:ident($f:expr);)*) => {
        $(#[$attr])*
        pub static $list: &[Kernel] = &[
            $(Kernel { name: stringify!($name), isa: Isa::$isa, func: KernelFn::$variant($f) },)*
        ];
    };
}

kernels! {
    /// The portable kernels: the scalar reference for every family.
    KERNELS;
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

#[cfg(target_arch = "x86_64")]
use super::x86;

#[cfg(target_arch = "x86_64")]
kernels! {
    /// x86_64 kernels (AVX2 + FMA, AVX-512, AVX-512 VNNI).
    ARCH_KERNELS;
    f32_conv2d_blocked_avx512: Avx512, F32ConvPacked(x86::F32_CONV_AVX512);
    f32_conv2d_blocked_avx2: Avx2, F32ConvPacked(x86::F32_CONV_AVX2);
    qs8_conv2d_requant_vnni: Avx512Vnni, QConvPacked(x86::QS8_CONV_VNNI);
    qs8_conv2d_requant_avx2: Avx2, QConvPacked(x86::QS8_CONV_AVX2);
    f32_maxpool_avx2: Avx2, F32MaxPool(x86::f32_maxpool_avx2);
    qs8_maxpool_avx2: Avx2, QMaxPool(x86::qs8_maxpool_avx2);
    qs8_quantize_avx512: Avx512, Quantize(x86::quantize_avx512);
    qs8_add_requant_avx512: Avx512, QAdd(x86::qs8_add_avx512);
}

#[cfg(not(target_arch = "x86_64"))]
static ARCH_KERNELS: &[Kernel] = &[];

/// Every kernel this build contains: this architecture's, then the portable ones.
pub fn all() -> impl Iterator<Item = &'static Kernel> {
    ARCH_KERNELS.iter().chain(KERNELS)
}

/// The best kernel of the family `matches` selects that the allowed tier (`max_isa`) permits.
pub fn pick(max_isa: Isa, matches: impl Fn(&KernelFn) -> bool) -> Option<&'static Kernel> {
    all().filter(|k| k.isa <= max_isa && matches(&k.func)).max_by_key(|k| k.isa)
}
