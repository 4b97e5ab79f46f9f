//! int8 residual add with AVX-512 and AVX2, bit-exact with `generic::qs8_add_scalar`: both inputs requantized in
//! 64-bit lanes, each saturated to i32, summed exactly, zero point added and clamped (clamping the exact
//! sum equals the spec's saturating steps because lo and hi lie in i8).

use super::avx2;
use super::requant::{requant64, sat32};
use crate::kernels::generic;
use crate::kernels::AddParams;
use core::arch::x86_64::*;

/// # Safety
/// The CPU has AVX-512 F/BW/VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn run(p: &AddParams, a: &[i8], b: &[i8], y: &mut [i8]) {
    let n = a.len().min(b.len()).min(y.len());
    let zp = _mm512_set1_epi64(p.zero_point as i64);
    let (lo, hi) = (_mm512_set1_epi64(p.lo as i64), _mm512_set1_epi64(p.hi as i64));
    let (za, zb) = (_mm512_set1_epi32(p.a_zero_point), _mm512_set1_epi32(p.b_zero_point));
    for i in (0..n).step_by(16) {
        let keep = if n - i >= 16 { u16::MAX } else { ((1u32 << (n - i)) - 1) as u16 };
        // SAFETY: `keep` covers only elements below n (masked lanes never fault).
        let (va, vb) =
            unsafe { (_mm_maskz_loadu_epi8(keep, a.as_ptr().add(i)), _mm_maskz_loadu_epi8(keep, b.as_ptr().add(i))) };
        let (ae, ao) = requant64(_mm512_sub_epi32(_mm512_cvtepi8_epi32(va), za), p.a_multiplier, p.a_shift);
        let (be, bo) = requant64(_mm512_sub_epi32(_mm512_cvtepi8_epi32(vb), zb), p.b_multiplier, p.b_shift);
        let fin = |u: __m512i, v: __m512i| {
            let s = _mm512_add_epi64(_mm512_add_epi64(sat32(u), sat32(v)), zp);
            _mm512_min_epi64(_mm512_max_epi64(s, lo), hi)
        };
        let out = _mm512_mask_blend_epi32(0xAAAA, fin(ae, be), _mm512_slli_epi64(fin(ao, bo), 32));
        // SAFETY: as above.
        unsafe { _mm_mask_storeu_epi8(y.as_mut_ptr().add(i), keep, _mm512_cvtepi32_epi8(out)) };
    }
}

/// int8 residual add (tier `avx512`).
pub fn qs8_add_avx512(p: &AddParams, a: &[i8], b: &[i8], y: &mut [i8]) {
    // SAFETY: the registry lists this kernel under the avx512 tier, picked only when the CPU has it.
    unsafe { run(p, a, b, y) }
}

/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
unsafe fn run_avx2(p: &AddParams, a: &[i8], b: &[i8], y: &mut [i8]) {
    let n = a.len().min(b.len()).min(y.len());
    let body = n / 8 * 8;
    let eight = |x: &[i8], i: usize| -> [u8; 8] { core::array::from_fn(|j| x[i + j] as u8) };
    for i in (0..body).step_by(8) {
        let (ae, ao) = avx2::requant_i8(eight(a, i), p.a_zero_point, p.a_multiplier, p.a_shift);
        let (be, bo) = avx2::requant_i8(eight(b, i), p.b_zero_point, p.b_multiplier, p.b_shift);
        let out = avx2::narrow(_mm256_add_epi64(ae, be), _mm256_add_epi64(ao, bo), p.zero_point, p.lo, p.hi);
        for (y, o) in y[i..i + 8].iter_mut().zip(out) {
            *y = o as i8;
        }
    }
    generic::qs8_add_scalar(p, &a[body..n], &b[body..n], &mut y[body..n]);
}

/// int8 residual add (tier `avx2`).
pub fn qs8_add_avx2(p: &AddParams, a: &[i8], b: &[i8], y: &mut [i8]) {
    // SAFETY: the registry lists this kernel under the avx2 tier, picked only when the CPU has it.
    unsafe { run_avx2(p, a, b, y) }
}
