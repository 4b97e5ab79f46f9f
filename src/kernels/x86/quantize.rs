//! f32 -> int8 quantization with AVX-512, bit-exact with `quant::quantize_f32` (docs/int8-spec.md 11.6):
//! a true division, round half away from zero as `t = trunc(y); t += sign(y) if |y - t| >= 0.5` (`y - t`
//! is exact), NaN -> 0 and a clamp to ±512 before the conversion (same final byte: zp and the result lie
//! in [-128, 127]).

use core::arch::x86_64::*;

/// # Safety
/// The CPU has AVX-512 F/BW/VL/DQ.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn run(scale: f32, zero_point: i32, lo: i32, hi: i32, x: &[f32], y: &mut [i8]) {
    let n = x.len().min(y.len());
    let (s, zp) = (_mm512_set1_ps(scale), _mm512_set1_epi32(zero_point));
    let (lo, hi) = (_mm512_set1_epi32(lo), _mm512_set1_epi32(hi));
    let (half, one, lim) = (_mm512_set1_ps(0.5), _mm512_set1_ps(1.0), _mm512_set1_ps(512.0));
    let sign = _mm512_set1_ps(-0.0);
    for i in (0..n).step_by(16) {
        let keep = if n - i >= 16 { u16::MAX } else { ((1u32 << (n - i)) - 1) as u16 };
        // SAFETY: `keep` covers only elements below n (masked lanes never fault).
        let v = unsafe { _mm512_maskz_loadu_ps(keep, x.as_ptr().add(i)) };
        let q = _mm512_div_ps(v, s);
        let q = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(q, q), q);
        let q = _mm512_min_ps(_mm512_max_ps(q, _mm512_sub_ps(_mm512_setzero_ps(), lim)), lim);
        let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(q);
        let away = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(_mm512_sub_ps(q, t)), half);
        let step = _mm512_or_ps(_mm512_and_ps(q, sign), one);
        let r = _mm512_mask_add_ps(t, away, t, step);
        let out = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(r), zp), lo), hi);
        // SAFETY: as above.
        unsafe { _mm_mask_storeu_epi8(y.as_mut_ptr().add(i), keep, _mm512_cvtepi32_epi8(out)) };
    }
}

/// f32 -> int8 (tier `avx512`).
pub fn quantize_avx512(scale: f32, zero_point: i32, lo: i32, hi: i32, x: &[f32], y: &mut [i8]) {
    // SAFETY: the registry lists this kernel under the avx512 tier, picked only when the CPU has it.
    unsafe { run(scale, zero_point, lo, hi, x, y) }
}
