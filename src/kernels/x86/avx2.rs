//! AVX2 stand-ins for what AVX-512 has built in: lane compression (`vpcompressd`), first-n-lane masks, and the
//! spec's requantization (3.1) on i64 lanes without `vpsraq` or 64-bit min/max. The AVX2 kernels' epilogues use
//! them to store a tile's real lanes, which map to consecutive outputs, as vectors.

use crate::kernels::packed::Chunk;
use core::arch::x86_64::*;

/// For each 8-bit lane mask, the indices of its set lanes in order, one byte each (the rest 0).
static COMPRESS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut lane, mut n, mut idx) = (0, 0, 0u64);
        while lane < 8 {
            if mask >> lane & 1 == 1 {
                idx |= (lane as u64) << (8 * n);
                n += 1;
            }
            lane += 1;
        }
        t[mask] = idx;
        mask += 1;
    }
    t
};

/// The lanes of `v` selected by `mask`, moved to the front in order (what `_mm256_maskz_compress_epi32` does,
/// except that the tail holds copies of lane 0 instead of zeros).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn compress(v: __m256i, mask: u8) -> __m256i {
    let idx = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(COMPRESS[mask as usize] as i64));
    _mm256_permutevar8x32_epi32(v, idx)
}

/// All-ones in the first `n` i32 lanes (n ≤ 8), the mask `_mm256_maskload`/`maskstore` take.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn first(n: u32) -> __m256i {
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

/// Arithmetic right shift of i64 lanes by `s` in 1..=62: a logical shift of `x + 2^63`, less `2^(63 - s)`.
#[inline]
#[target_feature(enable = "avx2")]
fn sra64(x: __m256i, s: i32) -> __m256i {
    let biased = _mm256_xor_si256(x, _mm256_set1_epi64x(i64::MIN));
    _mm256_sub_epi64(_mm256_srl_epi64(biased, _mm_cvtsi32_si128(s)), _mm256_set1_epi64x(1i64 << (63 - s)))
}

/// `min(max(v, lo), hi)` on i64 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn clamp64(v: __m256i, lo: __m256i, hi: __m256i) -> __m256i {
    let v = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
    _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi))
}

/// `(acc · m + 2^(s-1)) >> s` on the even and the odd i32 lanes of `acc`, as i64 lanes (spec 3.1; the sum
/// cannot overflow: |acc · m| ≤ 2^62 and s ≤ 62).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn requant64(acc: __m256i, m: i32, s: i32) -> (__m256i, __m256i) {
    let mv = _mm256_set1_epi64x(m as i64);
    let rnd = _mm256_set1_epi64x(1i64 << (s - 1));
    let e = _mm256_mul_epi32(acc, mv);
    let o = _mm256_mul_epi32(_mm256_srli_epi64(acc, 32), mv);
    (sra64(_mm256_add_epi64(e, rnd), s), sra64(_mm256_add_epi64(o, rnd), s))
}

/// Saturation of i64 lanes to i32 (the requantize result is an i32).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn sat32(v: __m256i) -> __m256i {
    clamp64(v, _mm256_set1_epi64x(i32::MIN as i64), _mm256_set1_epi64x(i32::MAX as i64))
}

/// The spec's last step for 8 lanes held as even (`e`) and odd (`o`) i64 lanes: add the zero point, clamp to
/// `[lo, hi]` (clamping the exact sum equals the spec's i32-saturating steps: lo and hi lie in i8), and narrow
/// to 8 bytes in lane order.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn narrow(e: __m256i, o: __m256i, zero_point: i32, lo: i32, hi: i32) -> [u8; 8] {
    let (zp, lo, hi) =
        (_mm256_set1_epi64x(zero_point as i64), _mm256_set1_epi64x(lo as i64), _mm256_set1_epi64x(hi as i64));
    let fin = |v| clamp64(_mm256_add_epi64(v, zp), lo, hi);
    let out = _mm256_blend_epi32(fin(e), _mm256_slli_epi64(fin(o), 32), 0xAA);
    // Every lane lies in i8 now: the packs do not saturate.
    let w = _mm_packs_epi32(_mm256_castsi256_si128(out), _mm256_extracti128_si256(out, 1));
    (_mm_cvtsi128_si64(_mm_packs_epi16(w, w)) as u64).to_le_bytes()
}

/// `requantize(x - zero_point, m, s)` of 8 int8 values, saturated to i32, as even and odd i64 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn requant_i8(x: [u8; 8], zero_point: i32, m: i32, s: i32) -> (__m256i, __m256i) {
    let v = _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(x)));
    let (e, o) = requant64(_mm256_sub_epi32(v, _mm256_set1_epi32(zero_point)), m, s);
    (sat32(e), sat32(o))
}

/// Stores the first `n` (≤ 8) lanes of `v` at `dst` without touching the rest, in 4-, 2- and 1-lane pieces:
/// AMD's masked stores (`vmaskmovps`) are microcoded and cost more than the pieces.
///
/// # Safety
/// `dst..dst + n` is writable.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn store_first(dst: *mut f32, v: __m256, n: usize) {
    // SAFETY: (all) each piece stays below dst + n.
    unsafe {
        if n == 8 {
            return _mm256_storeu_ps(dst, v);
        }
        let (mut part, mut at) = (_mm256_castps256_ps128(v), 0);
        if n & 4 != 0 {
            _mm_storeu_ps(dst, part);
            part = _mm256_extractf128_ps(v, 1);
            at = 4;
        }
        if n & 2 != 0 {
            _mm_store_sd(dst.add(at) as *mut f64, _mm_castps_pd(part));
            part = _mm_movehl_ps(part, part);
            at += 2;
        }
        if n & 1 != 0 {
            _mm_store_ss(dst.add(at), part);
        }
    }
}

/// One 8-lane half of a tile row that holds real outputs: accumulator row `r`, half `v`, its real lanes
/// `real` (a bit each), which compressed to the front are the channel's `n` outputs from `at`.
pub(super) struct Half {
    pub r: usize,
    pub v: usize,
    pub real: u8,
    pub at: usize,
    pub n: usize,
}

/// The halves of a 16-position tile (positions `chunk`) over `rows` channel rows from `row0`, in store order,
/// skipping rows at or past `m` and halves without real lanes.
pub(super) fn tile_halves(rows: usize, row0: usize, m: usize, hw: usize, chunk: Chunk) -> impl Iterator<Item = Half> {
    let [lo, hi] = chunk.mask.to_le_bytes();
    (0..rows.min(m.saturating_sub(row0))).flat_map(move |r| {
        let at = (row0 + r) * hw + chunk.start as usize;
        [(0, lo, at), (1, hi, at + lo.count_ones() as usize)]
            .into_iter()
            .filter(|&(_, real, _)| real != 0)
            .map(move |(v, real, at)| Half { r, v, real, at, n: real.count_ones() as usize })
    })
}
