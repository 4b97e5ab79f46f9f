//! Max pooling, f32 and int8, separable: per output row, the valid input rows are reduced column-wise into
//! a row buffer (contiguous, vectorized by the compiler inside the AVX2 / AVX-512 target-feature wrappers),
//! then each output takes the max of its kw row-buffer entries. Comparisons are the reference's
//! (`v > best`, starting from the type's minimum), so NaNs are skipped the same way and int8 is exact.

use crate::kernels::generic;
use crate::kernels::ConvGeom;

/// Input columns one row-buffer pass covers.
const SPAN: usize = 512;

/// `v` if it is greater than `best`, else `best`: the reference's comparison, written as a select (not a
/// conditional store) so that the loops below vectorize to max instructions.
#[inline(always)]
fn vmax<T: Copy + PartialOrd>(best: T, v: T) -> T {
    if v > best {
        v
    } else {
        best
    }
}

#[inline(always)]
fn max_pool_rows<T: Copy + PartialOrd>(g: &ConvGeom, x: &[T], min: T, y: &mut [T]) {
    let reach = (g.kw - 1) * g.dil_w + 1;
    if reach + g.stride_w > SPAN {
        return generic::max_pool(g, x, min, y);
    }
    // Output columns per pass, so that their input columns fit the buffer.
    let per_pass = (SPAN - reach) / g.stride_w + 1;
    // Output columns whose whole window lies inside the input: no per-tap checks there.
    let first_inside = g.pad_l.div_ceil(g.stride_w).min(g.w_out);
    let end_inside = if g.w_in + g.pad_l >= reach { (g.w_in + g.pad_l - reach) / g.stride_w + 1 } else { 0 };
    let end_inside = end_inside.clamp(first_inside, g.w_out);
    let mut row = [min; SPAN];
    for nc in 0..g.n * g.c_in {
        let xc = &x[nc * g.h_in * g.w_in..][..g.h_in * g.w_in];
        let yc = &mut y[nc * g.h_out * g.w_out..][..g.h_out * g.w_out];
        for oy in 0..g.h_out {
            let yr = &mut yc[oy * g.w_out..][..g.w_out];
            for ox0 in (0..g.w_out).step_by(per_pass) {
                let ox1 = (ox0 + per_pass).min(g.w_out);
                let lo = (ox0 * g.stride_w).saturating_sub(g.pad_l).min(g.w_in);
                let hi = ((ox1 - 1) * g.stride_w + reach).saturating_sub(g.pad_l).min(g.w_in).max(lo);
                let buf = &mut row[..hi - lo];
                buf.fill(min);
                for ky in 0..g.kh {
                    let Some(iy) = g.in_y(oy, ky) else { continue };
                    for (b, &v) in buf.iter_mut().zip(&xc[iy * g.w_in + lo..iy * g.w_in + hi]) {
                        *b = vmax(*b, v);
                    }
                }
                let (in0, in1) = (first_inside.clamp(ox0, ox1), end_inside.clamp(ox0, ox1));
                for ox in (ox0..in0).chain(in1..ox1) {
                    let mut best = min;
                    for kx in 0..g.kw {
                        if let Some(ix) = g.in_x(ox, kx) {
                            best = vmax(best, buf[ix - lo]);
                        }
                    }
                    yr[ox] = best;
                }
                // Interior windows, branch free. The buffer holds no NaN (they never win above), so starting
                // from the first tap equals the reference's start from `min`.
                let taps = |ox: usize| ox * g.stride_w - g.pad_l - lo;
                if g.kw == 3 && g.dil_w == 1 && g.stride_w == 2 {
                    for (ox, out) in (in0..in1).zip(&mut yr[in0..in1]) {
                        let b = &buf[taps(ox)..][..3];
                        *out = vmax(vmax(b[0], b[1]), b[2]);
                    }
                } else {
                    for (ox, out) in (in0..in1).zip(&mut yr[in0..in1]) {
                        let base = taps(ox);
                        *out = (1..g.kw).fold(buf[base], |best, kx| vmax(best, buf[base + kx * g.dil_w]));
                    }
                }
            }
        }
    }
}

/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
unsafe fn f32_avx2(g: &ConvGeom, x: &[f32], y: &mut [f32]) {
    max_pool_rows(g, x, f32::NEG_INFINITY, y)
}

/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
unsafe fn qs8_avx2(g: &ConvGeom, x: &[i8], y: &mut [i8]) {
    max_pool_rows(g, x, i8::MIN, y)
}

/// f32 max pooling (tier `avx2`; listed only for CPUs that have it).
pub fn f32_maxpool_avx2(g: &ConvGeom, x: &[f32], y: &mut [f32]) {
    // SAFETY: the registry lists this kernel under the avx2 tier, picked only when the CPU has it.
    unsafe { f32_avx2(g, x, y) }
}

/// int8 max pooling (tier `avx2`).
pub fn qs8_maxpool_avx2(g: &ConvGeom, x: &[i8], y: &mut [i8]) {
    // SAFETY: as above.
    unsafe { qs8_avx2(g, x, y) }
}
