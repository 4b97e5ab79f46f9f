//! NEON version of [`im2col::interleave`] for int8: gathered rows `[k][pixel]` to the panel
//! `[tile][k / kb][8 px][kb]` with byte transposes (`ST4` for kb 4, a `ZIP` network for 8 and 16) instead of
//! one load and store per byte. Shared by the three int8 tiers.

use crate::kernels::im2col::{self, TILE};
use core::arch::aarch64::*;

/// Interleaves gathered int8 rows for k block `kb` (4, 8 or 16; other sizes take the generic path).
pub fn interleave_i8(rows: &[i8], k_pad: usize, kb: usize, panel: &mut [i8]) {
    if !matches!(kb, 4 | 8 | 16) {
        return im2col::interleave(rows, k_pad, kb, panel);
    }
    // SAFETY: NEON is part of every AArch64 target this module is built for.
    unsafe { interleave_neon(rows, k_pad, kb, panel) }
}

/// 8 rows of 8 bytes to 4 vectors of two pixels each (pixel-major, 8 values per pixel).
#[inline]
#[target_feature(enable = "neon")]
fn transpose8x8(row: impl Fn(usize) -> int8x8_t) -> [int8x16_t; 4] {
    let z = vdup_n_s8(0);
    let r = |j: usize| vcombine_s8(row(j), z);
    // Pairs of rows per pixel, then fours, then eights.
    let (a01, a23, a45, a67) =
        (vzip1q_s8(r(0), r(1)), vzip1q_s8(r(2), r(3)), vzip1q_s8(r(4), r(5)), vzip1q_s8(r(6), r(7)));
    let s16 = vreinterpretq_s16_s8;
    let b0 = vreinterpretq_s32_s16(vzip1q_s16(s16(a01), s16(a23)));
    let b1 = vreinterpretq_s32_s16(vzip2q_s16(s16(a01), s16(a23)));
    let b2 = vreinterpretq_s32_s16(vzip1q_s16(s16(a45), s16(a67)));
    let b3 = vreinterpretq_s32_s16(vzip2q_s16(s16(a45), s16(a67)));
    let s8 = vreinterpretq_s8_s32;
    [s8(vzip1q_s32(b0, b2)), s8(vzip2q_s32(b0, b2)), s8(vzip1q_s32(b1, b3)), s8(vzip2q_s32(b1, b3))]
}

#[target_feature(enable = "neon")]
fn interleave_neon(rows: &[i8], k_pad: usize, kb: usize, panel: &mut [i8]) {
    let pb = rows.len() / k_pad;
    assert!(pb.is_multiple_of(TILE) && k_pad.is_multiple_of(kb) && panel.len() >= rows.len());
    let mut at = 0;
    for t in 0..pb / TILE {
        for blk in 0..k_pad / kb {
            let row = |j: usize| {
                let r = &rows[(blk * kb + j) * pb + t * TILE..][..TILE];
                // SAFETY: `r` holds 8 bytes.
                unsafe { vld1_s8(r.as_ptr()) }
            };
            let out = &mut panel[at..at + TILE * kb];
            // SAFETY: `out` holds TILE * kb bytes, exactly what each arm stores.
            unsafe {
                match kb {
                    4 => vst4_s8(out.as_mut_ptr(), int8x8x4_t(row(0), row(1), row(2), row(3))),
                    8 => {
                        for (i, v) in transpose8x8(row).into_iter().enumerate() {
                            vst1q_s8(out.as_mut_ptr().add(16 * i), v);
                        }
                    }
                    _ => {
                        let lo = transpose8x8(row);
                        let hi = transpose8x8(|j| row(j + 8));
                        let s64 = vreinterpretq_s64_s8;
                        for (i, (c, d)) in lo.into_iter().zip(hi).enumerate() {
                            let p = out.as_mut_ptr().add(32 * i);
                            vst1q_s8(p, vreinterpretq_s8_s64(vzip1q_s64(s64(c), s64(d))));
                            vst1q_s8(p.add(16), vreinterpretq_s8_s64(vzip2q_s64(s64(c), s64(d))));
                        }
                    }
                }
            }
            at += TILE * kb;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::prelude::v1::*;

    #[test]
    fn neon_interleave_matches_generic() {
        for kb in [4, 8, 16] {
            let (k_pad, pb) = (3 * kb, 24);
            let rows: Vec<i8> = (0..k_pad * pb).map(|i| (i * 37 % 251) as u8 as i8).collect();
            let (mut want, mut got) = (vec![0; rows.len()], vec![1; rows.len()]);
            im2col::interleave(&rows, k_pad, kb, &mut want);
            interleave_i8(&rows, k_pad, kb, &mut got);
            assert_eq!(got, want, "kb {kb}");
        }
    }
}
