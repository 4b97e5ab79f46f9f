//! Scalar reference elementwise and layout ops: residual add, activations, per-channel affine (unfolded
//! batchnorm), option-A shortcut, quantize / dequantize, softmax.

use crate::kernels::packed::{share, Parallel, Shared};
use crate::kernels::AddParams;
use crate::quant::{dequantize, quantize_f32, requantize, saturate};

/// f32 residual add with clamp.
pub fn f32_add_scalar(a: &[f32], b: &[f32], (lo, hi): (f32, f32), y: &mut [f32]) {
    for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
        *y = (a + b).max(lo).min(hi);
    }
}

/// int8 residual add: both inputs requantized to the output scale, summed, zero point added, clamped.
pub fn qs8_add_scalar(p: &AddParams, a: &[i8], b: &[i8], y: &mut [i8]) {
    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
        let va = requantize(a as i32 - p.a_zero_point, p.a_multiplier, p.a_shift);
        let vb = requantize(b as i32 - p.b_zero_point, p.b_multiplier, p.b_shift);
        *y = saturate(va.saturating_add(vb), p.zero_point, p.lo, p.hi);
    }
}

/// f32 clamp (ReLU, ReLU6, Clip).
pub fn f32_clamp_scalar(x: &[f32], (lo, hi): (f32, f32), y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = x.max(lo).min(hi);
    }
}

/// int8 clamp on an unchanged quantization.
pub fn qs8_clamp_scalar(x: &[i8], lo: i32, hi: i32, y: &mut [i8]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = (x as i32).clamp(lo, hi) as i8;
    }
}

/// Per-channel affine y = x * scale[c] + shift[c] over [N, C, HW] (an unfolded batchnorm).
pub fn f32_affine_scalar(hw: usize, scale: &[f32], shift: &[f32], x: &[f32], y: &mut [f32]) {
    let c = scale.len();
    for (i, (xs, ys)) in x.chunks_exact(hw).zip(y.chunks_exact_mut(hw)).enumerate() {
        let (a, b) = (scale[i % c], shift[i % c]);
        for (y, x) in ys.iter_mut().zip(xs) {
            *y = x * a + b;
        }
    }
}

/// Geometry of the option-A shortcut: [N, C, H, W] -> [N, pad_before + C + pad_after, ceil(H/s), ceil(W/s)].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortcutGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub stride: usize,
    pub pad_before: usize,
    pub pad_after: usize,
}

impl ShortcutGeom {
    pub fn out_hw(&self) -> (usize, usize) {
        (self.h.div_ceil(self.stride), self.w.div_ceil(self.stride))
    }
}

/// Option-A shortcut: strided subsample, channels padded with `zero` (0.0, or the zero point in int8).
/// Split by output rows across `par`'s workers (the same rows of every channel per worker): the blocked
/// convolutions split small layers by rows too, so each worker copies rows it wrote itself and the next
/// layer's worker reads them from its own cache (ResNet-20's shortcuts on Zen 4, 2 threads: 2.4-2.6 µs on
/// the calling thread alone, about a µs more than on 1 thread, since half their input came from the other
/// core).
///
/// # Panics
/// If `x` or `y` is shorter than the geometry needs (the planner sizes both).
pub fn shortcut_a<T: Copy + Send + Sync>(g: &ShortcutGeom, zero: T, x: &[T], y: &mut [T], par: &dyn Parallel) {
    let (oh, ow) = g.out_hw();
    let oc = g.pad_before + g.c + g.pad_after;
    assert!(x.len() >= g.n * g.c * g.h * g.w && y.len() >= g.n * oc * oh * ow, "shortcut buffers too short");
    let parts = par.workers().min(oh).max(1);
    let out = Shared(y.as_mut_ptr());
    par.run(parts, &|_, part| {
        let rows = share(oh, parts, part);
        for n in 0..g.n {
            for c in 0..oc {
                // SAFETY: rows `rows` of plane (n, c) lie inside y (asserted); the parts' rows are disjoint.
                let yc = unsafe {
                    core::slice::from_raw_parts_mut(
                        out.get().add(((n * oc + c) * oh + rows.start) * ow),
                        rows.len() * ow,
                    )
                };
                if c < g.pad_before || c >= g.pad_before + g.c {
                    yc.fill(zero);
                    continue;
                }
                let xc = &x[(n * g.c + c - g.pad_before) * g.h * g.w..][..g.h * g.w];
                let xc = &xc[(rows.start * g.stride * g.w).min(xc.len())..];
                // Row iterators rather than indices: no bounds checks in the loop (ResNet-20's first shortcut
                // took 2.5 µs in int8 on Zen 4 with indices, 1.9 µs so).
                for (yr, xr) in yc.chunks_exact_mut(ow).zip(xc.chunks(g.stride * g.w)) {
                    if g.stride == 2 && xr.len() >= 2 * ow {
                        // Pairs rather than a stepped iterator: LLVM vectorizes this (ResNet-20's first
                        // shortcut, int8 on Zen 4: 2.5 -> 1.6 µs).
                        for (y, pair) in yr.iter_mut().zip(xr.chunks_exact(2)) {
                            *y = pair[0];
                        }
                        continue;
                    }
                    for (y, &v) in yr.iter_mut().zip(xr.iter().step_by(g.stride)) {
                        *y = v;
                    }
                }
            }
        }
    });
}

/// f32 -> int8 per the spec.
pub fn quantize_scalar(scale: f32, zero_point: i32, lo: i32, hi: i32, x: &[f32], y: &mut [i8]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = quantize_f32(x, scale, zero_point, lo, hi);
    }
}

/// int8 -> f32.
pub fn dequantize_scalar(scale: f32, zero_point: i32, x: &[i8], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = dequantize(x, scale, zero_point);
    }
}

/// Numerically stable softmax over each row of `cols` values.
pub fn f32_softmax_scalar(cols: usize, x: &[f32], y: &mut [f32]) {
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for (y, &x) in yr.iter_mut().zip(xr) {
            *y = libm::expf(x - max);
            sum += *y;
        }
        for y in yr.iter_mut() {
            *y /= sum;
        }
    }
}
