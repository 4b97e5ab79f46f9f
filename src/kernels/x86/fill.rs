//! The f32 phase-plane fill of the x86 kernels ([`crate::kernels::packed`] describes the planes), for both
//! tiers (AVX-512 CPUs have AVX2). On small layers it costs as much as the padding lanes: the generic
//! [`crate::kernels::packed::fill_planes_with`] (per row: the padding logic, an indirect call and a `memcpy`,
//! after a zero pass over the whole plane) took 12% of ResNet-20 on Zen 3, 3.5 to 7 µs a layer for 6K to 18K
//! elements. Here each plane row is a few vector stores whose lanes are an input element or padding by a load
//! mask (masked-off lanes read as zero and touch no memory), and the masks, the same for every row and channel
//! of a column phase, are made once per call (made per plane, they cost ResNet-20 f32 2% on Zen 4: 0.683 ms
//! against 0.669). A row's last store may spill into the next row, which is written after it.

use super::avx2::store_first;
use crate::kernels::packed::{fill_planes, Planes};
use crate::kernels::ConvGeom;
use core::arch::x86_64::*;
use core::ops::Range;

/// Vectors per plane row the fast path handles (rows up to 256 elements; ResNet's widest is 115).
const MAX_VECS: usize = 32;

/// Fills rows `rows` of the planes of input channels `ch` of one image `x` into `out` (from channel
/// `ch.start`'s planes).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn fill_f32(
    g: &ConvGeom,
    pl: &Planes,
    x: &[f32],
    ch: Range<usize>,
    rows: Range<usize>,
    out: &mut [f32],
) {
    debug_assert_eq!(pl.cgroup, 1, "f32 planes hold one channel each");
    let (hw, plane, wg) = (g.h_in * g.w_in, pl.plane(), pl.wg);
    if pl.sw > 2 || wg > 8 * MAX_VECS {
        return fill_planes(g, pl, x, ch, rows, |v| v, 0.0, out);
    }
    let rows = rows.start.min(pl.hg)..rows.end.min(pl.hg);
    assert!(x.len() >= ch.end * hw && out.len() >= ch.len() * pl.per_channel());
    let vecs = wg.div_ceil(8);
    // Element i of the 8 (stride 2: 16) loaded for a vector maps to its lane `idx[i]`; -8 never loads.
    let idx: [__m256i; 2] = if pl.sw == 1 {
        [_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); 2]
    } else {
        [_mm256_setr_epi32(0, -8, 1, -8, 2, -8, 3, -8), _mm256_setr_epi32(4, -8, 5, -8, 6, -8, 7, -8)]
    };
    // The masks of column phase b (pb <= sw <= 2), the same for every row and channel.
    let mut phase_masks = [[_mm256_setzero_si256(); 2 * MAX_VECS]; 2];
    for (b, masks) in phase_masks.iter_mut().enumerate().take(pl.pb) {
        let cols = pl.valid_cols(g, b);
        let (first, end) = (cols.start as i32, cols.end as i32);
        for (k, m) in masks[..pl.sw * vecs].iter_mut().enumerate() {
            let lane = _mm256_add_epi32(_mm256_set1_epi32((k / pl.sw * 8) as i32), idx[k % pl.sw]);
            let ge = _mm256_cmpgt_epi32(lane, _mm256_set1_epi32(first - 1));
            *m = _mm256_and_si256(ge, _mm256_cmpgt_epi32(_mm256_set1_epi32(end), lane));
        }
    }
    for (i, c) in ch.enumerate() {
        for a in 0..pl.pa {
            // Rows [rows.start, r0) and [r1, rows.end) are padding.
            let valid = pl.valid_rows(g, a);
            let (r0, r1) = (valid.start.clamp(rows.start, rows.end), valid.end.clamp(rows.start, rows.end));
            for (b, masks) in phase_masks.iter().enumerate().take(pl.pb) {
                // SAFETY: the plane lies in `out` (asserted above). Row r's loads read, in the lanes its masks
                // keep, input columns [0, w_in) of input row r·sh + a - pad_t of channel c, inside `x`; the
                // address of a masked-off lane is never dereferenced (wrapping arithmetic: it may lie outside).
                unsafe {
                    let dst = out.as_mut_ptr().add(((i * pl.pa + a) * pl.pb + b) * plane);
                    zero(dst.add(rows.start * wg), (r0 - rows.start) * wg);
                    // Plane column j of row r reads x[row + j·sw].
                    let row0 = (c * hw + b) as isize - g.pad_l as isize + (r0 * pl.sh + a) as isize * g.w_in as isize
                        - (g.pad_t * g.w_in) as isize;
                    for r in r0..r1 {
                        let src = x.as_ptr().wrapping_offset(row0 + ((r - r0) * pl.sh * g.w_in) as isize);
                        let row = dst.add(r * wg);
                        for j in 0..vecs {
                            let v = if pl.sw == 1 {
                                _mm256_maskload_ps(src.wrapping_add(8 * j), masks[j])
                            } else {
                                let lo = _mm256_maskload_ps(src.wrapping_add(16 * j), masks[2 * j]);
                                let hi = _mm256_maskload_ps(src.wrapping_add(16 * j + 8), masks[2 * j + 1]);
                                // Lanes lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6, then the 64-bit pairs in order.
                                let even = _mm256_castps_pd(_mm256_shuffle_ps::<0x88>(lo, hi));
                                _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(even))
                            };
                            // A row's last store may spill into the rows after it (written next), but not
                            // past the plane: another worker may be filling the next one.
                            if r * wg + 8 * (j + 1) <= plane {
                                _mm256_storeu_ps(row.add(8 * j), v);
                            } else {
                                store_first(row.add(8 * j), v, wg - 8 * j);
                            }
                        }
                    }
                    zero(dst.add(r1 * wg), (rows.end - r1) * wg);
                }
            }
        }
    }
}

/// Zeroes `n` elements from `dst`.
///
/// # Safety
/// AVX2; `dst..dst + n` writable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn zero(dst: *mut f32, n: usize) {
    for j in (0..n).step_by(8) {
        // SAFETY: the store stays below dst + n.
        unsafe { store_first(dst.add(j), _mm256_setzero_ps(), (n - j).min(8)) };
    }
}
