//! ARMv8.0 NEON convolutions: f32 by FMA-by-lane (k block 1) and int8 by `SMULL`+`SMLAL2` pairs widened with
//! `SADALP` (k block 16). The int16 pair sums are exact because weights lie in [-127, 127] and activations
//! are raw int8: 2 * 128 * 127 = 32512 (spec 2, 11.3).

use super::epilogue::{store_f32, FAcc, QAcc};
use crate::kernels::im2col::{self, for_each_tile, interleave, Operands, Output, Packing, TILE};
use crate::kernels::packed::{ConvPack, Parallel};
use crate::kernels::registry::{F32Conv, QConv};
use crate::kernels::{ConvGeom, F32ConvParams};
use core::arch::aarch64::*;

/// k block of the int8 NEON kernel.
const QKB: usize = 16;

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
fn f32_conv_neon(
    g: &ConvGeom,
    pack: &ConvPack,
    p: &F32ConvParams<'_>,
    x: &[f32],
    r: Option<&[f32]>,
    y: &mut [f32],
    s: &mut [u8],
    par: &dyn Parallel,
) {
    let packing = Packing { kb: 1, pad: 0.0, interleave: interleave::<f32> };
    let out = Output::new(y);
    for_each_tile(g, &packing, x, &pack.wf, pack.panel_bytes, s, par, &|t, ops| {
        let mut acc = [[0.0; TILE]; TILE];
        f32_micro(ops, &mut acc);
        store_f32(g, p, t, &acc, r, &out);
    });
}

/// 8 channels x 8 pixels: per reduction step two pixel vectors, two weight vectors, 16 FMAs by lane.
#[inline]
#[target_feature(enable = "neon")]
fn f32_micro(o: &Operands<'_, f32>, acc: &mut FAcc) {
    debug_assert!(o.x.len() >= (o.k_blocks - 1) * o.stride + TILE && o.w.len() >= o.k_blocks * TILE);
    let z = vdupq_n_f32(0.0);
    let mut c = [[z; 2]; TILE];
    let (xp, wp) = (o.x.as_ptr(), o.w.as_ptr());
    for k in 0..o.k_blocks {
        // SAFETY: in bounds by the frame's layout (asserted above).
        let (x0, x1, w0, w1) = unsafe {
            let xk = xp.add(k * o.stride);
            let wk = wp.add(k * TILE);
            (vld1q_f32(xk), vld1q_f32(xk.add(4)), vld1q_f32(wk), vld1q_f32(wk.add(4)))
        };
        macro_rules! fma {
            ($($oc:literal: $w:ident[$l:literal]),*) => {$(
                c[$oc][0] = vfmaq_laneq_f32::<$l>(c[$oc][0], x0, $w);
                c[$oc][1] = vfmaq_laneq_f32::<$l>(c[$oc][1], x1, $w);
            )*};
        }
        fma!(0: w0[0], 1: w0[1], 2: w0[2], 3: w0[3], 4: w1[0], 5: w1[1], 6: w1[2], 7: w1[3]);
    }
    for (row, v) in acc.iter_mut().zip(c) {
        // SAFETY: `row` holds 8 f32.
        unsafe {
            vst1q_f32(row.as_mut_ptr(), v[0]);
            vst1q_f32(row.as_mut_ptr().add(4), v[1]);
        }
    }
}

/// 8 channels x 8 pixels as four 4x4 sub-tiles; each (channel, pixel) pair accumulates 16 products per
/// k block in one i32x4 (`SMULL`, `SMLAL2`, `SADALP`), summed across lanes at the end.
#[inline]
#[target_feature(enable = "neon")]
fn qs8_micro(o: &Operands<'_, i8>, acc: &mut QAcc) {
    let step = TILE * QKB;
    debug_assert!(o.x.len() >= o.k_blocks * step && o.w.len() >= o.k_blocks * step);
    for ph in 0..2 {
        for oh in 0..2 {
            let mut c = [[vdupq_n_s32(0); 4]; 4];
            for k in 0..o.k_blocks {
                // SAFETY: in bounds by the frame's layout (asserted above).
                let (xv, wv) = unsafe {
                    let xk = o.x.as_ptr().add(k * step + ph * 4 * QKB);
                    let wk = o.w.as_ptr().add(k * step + oh * 4 * QKB);
                    let ld =
                        |p: *const i8| [vld1q_s8(p), vld1q_s8(p.add(16)), vld1q_s8(p.add(32)), vld1q_s8(p.add(48))];
                    (ld(xk), ld(wk))
                };
                for (co, w) in c.iter_mut().zip(wv) {
                    for (cp, x) in co.iter_mut().zip(xv) {
                        let pair = vmlal_high_s8(vmull_s8(vget_low_s8(x), vget_low_s8(w)), x, w);
                        *cp = vpadalq_s16(*cp, pair);
                    }
                }
            }
            for (j, co) in c.iter().enumerate() {
                let sums = vpaddq_s32(vpaddq_s32(co[0], co[1]), vpaddq_s32(co[2], co[3]));
                // SAFETY: 4 i32 fit at pixel offset ph * 4 of an 8-wide row.
                unsafe { vst1q_s32(acc[oh * 4 + j].as_mut_ptr().add(ph * 4), sums) };
            }
        }
    }
}

pub(super) fn any_geometry(_: &ConvGeom) -> bool {
    true
}

pub const F32_CONV_NEON: F32Conv = F32Conv {
    supports: any_geometry,
    pack: |g, p| im2col::pack_f32(g, p, 1),
    // SAFETY: NEON is part of every AArch64 target this module is built for.
    run: |g, pack, p, x, r, y, s, par| unsafe { f32_conv_neon(g, pack, p, x, r, y, s, par) },
};

// SAFETY: NEON is part of every AArch64 target this module is built for.
pub const QS8_CONV_NEON: QConv = qs8_conv!(QKB, qs8_micro);
