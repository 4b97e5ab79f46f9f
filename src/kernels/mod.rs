//! Kernels: the contracts shared by every implementation (geometry, int8 parameter blocks), the scalar
//! reference in [`generic`], and the [`registry`] the planner picks from once per node.

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
pub mod generic;
pub mod im2col;
mod isa;
pub mod packed;
pub mod registry;
#[cfg(target_arch = "x86_64")]
pub mod x86;

pub(crate) use isa::splits_512;
pub use registry::{Arch, Isa, Kernel, KernelFn};

/// Geometry of a 2-D convolution (or a pooling window, with c_out = c_in = groups) over NCHW tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConvGeom {
    pub n: usize,
    pub c_in: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub c_out: usize,
    pub h_out: usize,
    pub w_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_t: usize,
    pub pad_l: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    pub groups: usize,
}

impl ConvGeom {
    /// Input row read by output row `oy` at kernel row `ky`, or None if it falls in the padding.
    #[inline(always)]
    pub fn in_y(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride_h + ky * self.dil_h).checked_sub(self.pad_t).filter(|&y| y < self.h_in)
    }
    /// Input column read by output column `ox` at kernel column `kx`, or None if it falls in the padding.
    #[inline(always)]
    pub fn in_x(&self, ox: usize, kx: usize) -> Option<usize> {
        (ox * self.stride_w + kx * self.dil_w).checked_sub(self.pad_l).filter(|&x| x < self.w_in)
    }
    /// The output columns whose kernel column `kx` falls inside the input (the others read padding).
    pub fn valid_ox(&self, kx: usize) -> core::ops::Range<usize> {
        let offset = kx * self.dil_w;
        let (first, end) = match self.stride_w {
            // Stride 1 (most layers) without the divisions: this runs once per kernel tap and output row.
            1 => (self.pad_l.saturating_sub(offset), (self.w_in + self.pad_l).saturating_sub(offset)),
            s => (
                self.pad_l.saturating_sub(offset).div_ceil(s),
                (self.w_in + self.pad_l).checked_sub(offset + 1).map_or(0, |last| last / s + 1),
            ),
        };
        let end = end.min(self.w_out);
        first.min(end)..end
    }
    pub fn input_len(&self) -> usize {
        self.n * self.c_in * self.h_in * self.w_in
    }
    pub fn output_len(&self) -> usize {
        self.n * self.c_out * self.h_out * self.w_out
    }
    /// Multiply-accumulates per inference of this batch.
    pub fn macs(&self) -> u64 {
        (self.output_len() as u64) * (self.c_in / self.groups.max(1) * self.kh * self.kw) as u64
    }
    /// Reduction length of one output: (c_in / groups) * kh * kw.
    pub fn k(&self) -> usize {
        self.c_in / self.groups.max(1) * self.kh * self.kw
    }
}

/// Requantization of an int8 op's output: per-channel (or single) multiplier and shift, output zero
/// point and the clamp range (storage range narrowed by the fused activation), all in the int8 domain.
#[derive(Clone, Copy, Debug)]
pub struct Requant<'p> {
    pub multiplier: &'p [i32],
    pub shift: &'p [i32],
    pub zero_point: i32,
    pub lo: i32,
    pub hi: i32,
}

impl Requant<'_> {
    /// (multiplier, shift) of channel `c` (a single pair applies to every channel).
    #[inline(always)]
    pub fn channel(&self, c: usize) -> (i32, i32) {
        if self.multiplier.len() == 1 {
            (self.multiplier[0], self.shift[0])
        } else {
            (self.multiplier[c], self.shift[c])
        }
    }
}

/// How a fused residual input is brought to the output scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResidualRequant {
    pub zero_point: i32,
    pub multiplier: i32,
    pub shift: i32,
}

/// Everything an f32 convolution needs besides its activations and the kernel's [`packed::ConvPack`].
#[derive(Clone, Copy, Debug)]
pub struct F32ConvParams<'p> {
    /// OIHW weights (empty at run time when the kernel's pack holds them: [`packed::ConvPack::holds_weights`]).
    pub weight: &'p [f32],
    pub bias: &'p [f32],
    /// Clamp range of the fused activation, applied after the residual add.
    pub clamp: (f32, f32),
}

/// Everything an int8 convolution needs besides its activations and the kernel's [`packed::ConvPack`].
#[derive(Clone, Copy, Debug)]
pub struct QConvParams<'p> {
    pub x_zero_point: i32,
    /// OIHW weights, symmetric per output channel, in [-127, 127] (empty at run time when the kernel's pack
    /// holds them: [`packed::ConvPack::holds_weights`]).
    pub weight: &'p [i8],
    pub bias: &'p [i32],
    pub requant: Requant<'p>,
    pub residual: Option<ResidualRequant>,
}

/// Parameters of the int8 residual add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddParams {
    pub a_zero_point: i32,
    pub a_multiplier: i32,
    pub a_shift: i32,
    pub b_zero_point: i32,
    pub b_multiplier: i32,
    pub b_shift: i32,
    pub zero_point: i32,
    pub lo: i32,
    pub hi: i32,
}
