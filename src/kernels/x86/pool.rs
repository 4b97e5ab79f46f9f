//! Max pooling, f32 and int8, separable: per output row, the valid input rows are reduced column-wise into
//! a row buffer (contiguous, vectorized by the compiler inside the AVX2 / AVX-512 target-feature wrappers),
//! then each output takes the max of its kw row-buffer entries. Comparisons are the reference's
//! (`v > best`, starting from the type's minimum), so NaNs are skipped the same way and int8 is exact.

use crate::kernels::generic;
use crate::kernels::ConvGeom;
use core::arch::x86_64::*;

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

/// `out[i] = max(b[2i], b[2i + 1], b[2i + 2])`: the interior of a 3-wide stride-2 row, portable version.
#[inline(always)]
fn max3s2<T: Copy + PartialOrd>(b: &[T], out: &mut [T]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = vmax(vmax(b[2 * i], b[2 * i + 1]), b[2 * i + 2]);
    }
}

/// [`max3s2`] for int8, 16 outputs per step: byte pairs as i16 lanes give the even and odd taps.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
unsafe fn max3s2_i8(b: &[i8], out: &mut [i8]) {
    let mut i = 0;
    // A step reads b[2i .. 2i + 34].
    while i + 16 <= out.len() && 2 * i + 34 <= b.len() {
        // SAFETY: the loads stay inside b (checked above), the store inside out.
        unsafe {
            let v = _mm256_loadu_si256(b.as_ptr().add(2 * i) as *const __m256i);
            let next = _mm256_loadu_si256(b.as_ptr().add(2 * i + 2) as *const __m256i);
            let even = |v: __m256i| _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8);
            let m = _mm256_max_epi16(_mm256_max_epi16(even(v), _mm256_srai_epi16(v, 8)), even(next));
            let packed = _mm256_permute4x64_epi64(_mm256_packs_epi16(m, m), 0b1000);
            _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, _mm256_castsi256_si128(packed));
        }
        i += 16;
    }
    max3s2(&b[2 * i..], &mut out[i..]);
}

/// `acc[i] = max(acc[i], row[i])`, portable version.
#[inline(always)]
fn max_into<T: Copy + PartialOrd>(acc: &mut [T], row: &[T]) {
    for (b, &v) in acc.iter_mut().zip(row) {
        *b = vmax(*b, v);
    }
}

/// [`max_into`] for int8, 32 bytes per step.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
unsafe fn max_into_i8(acc: &mut [i8], row: &[i8]) {
    let n = acc.len().min(row.len());
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: i + 32 <= both lengths.
        unsafe {
            let a = acc.as_mut_ptr().add(i) as *mut __m256i;
            let v = _mm256_loadu_si256(row.as_ptr().add(i) as *const __m256i);
            _mm256_storeu_si256(a, _mm256_max_epi8(_mm256_loadu_si256(a), v));
        }
        i += 32;
    }
    max_into(&mut acc[i..n], &row[i..n]);
}

/// [`max_into`] for f32, 8 lanes per step (`vmax(acc, v)` = `_mm256_max_ps(v, acc)`, NaNs included): the
/// compiler's version of the portable loop ran ResNet-18's stem pool at 0.63 ms on Zen 4.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
unsafe fn max_into_f32(acc: &mut [f32], row: &[f32]) {
    let n = acc.len().min(row.len());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= both lengths.
        unsafe {
            let a = acc.as_mut_ptr().add(i);
            _mm256_storeu_ps(a, _mm256_max_ps(_mm256_loadu_ps(row.as_ptr().add(i)), _mm256_loadu_ps(a)));
        }
        i += 8;
    }
    max_into(&mut acc[i..n], &row[i..n]);
}

/// The separable max pool; `max_into` and `row3s2` are [`max_into`] and [`max3s2`] or faster equivalents.
#[inline(always)]
fn max_pool_rows<T: Copy + PartialOrd>(
    g: &ConvGeom,
    x: &[T],
    min: T,
    y: &mut [T],
    max_into: impl Fn(&mut [T], &[T]),
    row3s2: impl Fn(&[T], &mut [T]),
) {
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
                    max_into(buf, &xc[iy * g.w_in + lo..iy * g.w_in + hi]);
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
                    if in0 < in1 {
                        row3s2(&buf[taps(in0)..], &mut yr[in0..in1]);
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
    // SAFETY: this function's own target features.
    max_pool_rows(g, x, f32::NEG_INFINITY, y, |a, r| unsafe { max_into_f32(a, r) }, max3s2)
}

/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
unsafe fn qs8_avx2(g: &ConvGeom, x: &[i8], y: &mut [i8]) {
    // SAFETY: this function's own target features.
    max_pool_rows(g, x, i8::MIN, y, |a, r| unsafe { max_into_i8(a, r) }, |b, out| unsafe { max3s2_i8(b, out) })
}

/// The lanes `l` of a 64-byte load from input column `c0` with `0 <= c0 + l < w`.
fn row_mask(c0: isize, w: usize) -> u64 {
    let below = |n: isize| {
        if n <= 0 {
            0
        } else if n >= 64 {
            u64::MAX
        } else {
            (1u64 << n) - 1
        }
    };
    below(w as isize - c0) & !below(-c0)
}

/// int8 3x3 stride-2 max pooling (ResNet's stem pool) with AVX-512 BW, no scalar tails and no buffer: 32
/// outputs per step from two vertical maxima of 64 input columns, from columns `2 · ox0 - pad_l` and two
/// further on (masked loads fill the padding with -128), whose even and odd bytes as sign-extended 16-bit
/// lanes give `max(taps 0, 1, 2)`. The AVX2 kernel (scalar row tails) and a version through a row buffer
/// (its unaligned reloads miss store forwarding) both took 0.15 ms on ResNet-18's pool, Zen 4.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL; `g` is 3x3, stride 2, dilation 1; `x` and `y` hold `g`'s input and output.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn qs8_3x3s2_avx512(g: &ConvGeom, x: &[i8], y: &mut [i8]) {
    let (hw_in, hw_out) = (g.h_in * g.w_in, g.h_out * g.w_out);
    let min = _mm512_set1_epi8(i8::MIN);
    let even = |v: __m512i| _mm512_srai_epi16::<8>(_mm512_slli_epi16::<8>(v));
    for (xc, yc) in x.chunks_exact(hw_in).zip(y.chunks_exact_mut(hw_out)) {
        for (oy, yr) in yc.chunks_exact_mut(g.w_out).enumerate() {
            let row = |ky| g.in_y(oy, ky).map(|iy| xc[iy * g.w_in..].as_ptr());
            let rows = [row(0), row(1), row(2)];
            for ox0 in (0..g.w_out).step_by(32) {
                let c0 = (2 * ox0) as isize - g.pad_l as isize;
                let (ka, kb) = (row_mask(c0, g.w_in), row_mask(c0 + 2, g.w_in));
                let (mut a, mut b) = (min, min);
                for row in rows.iter().flatten() {
                    // SAFETY: only the lanes of columns inside the row are read (masked lanes never fault).
                    unsafe {
                        a = _mm512_max_epi8(a, _mm512_mask_loadu_epi8(min, ka, row.wrapping_offset(c0)));
                        b = _mm512_max_epi8(b, _mm512_mask_loadu_epi8(min, kb, row.wrapping_offset(c0 + 2)));
                    }
                }
                let m = _mm512_max_epi16(_mm512_max_epi16(even(a), _mm512_srai_epi16::<8>(a)), even(b));
                let keep = u32::MAX >> (32 - (g.w_out - ox0).min(32));
                // SAFETY: the `keep` bytes from ox0 are this row's outputs.
                unsafe { _mm256_mask_storeu_epi8(yr.as_mut_ptr().add(ox0), keep, _mm512_cvtepi16_epi8(m)) };
            }
        }
    }
}

/// int8 max pooling (tier `avx512`): the 3x3 stride-2 windows of ResNet's stem by [`qs8_3x3s2_avx512`],
/// others by the AVX2 kernel.
pub fn qs8_maxpool_avx512(g: &ConvGeom, x: &[i8], y: &mut [i8]) {
    let fits = (g.kh, g.kw, g.stride_h, g.stride_w, g.dil_h, g.dil_w) == (3, 3, 2, 2, 1, 1);
    // SAFETY: the registry lists this kernel under the avx512 tier, picked only when the CPU has it (which
    // includes AVX2).
    unsafe {
        if fits && g.w_out > 0 && g.h_in * g.w_in > 0 {
            qs8_3x3s2_avx512(g, x, y)
        } else {
            qs8_avx2(g, x, y)
        }
    }
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
