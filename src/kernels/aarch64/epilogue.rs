//! The fused epilogues of the packed convolutions, in NEON: an 8x8 accumulator tile (`[oc][pixel]`) to
//! NCHW outputs. int8 follows spec 7.1 exactly: bias, requantization in 64 bits (11.3), residual requantized
//! separately and added with saturation, zero point, clamp.

use super::pack::interleave_i8;
use crate::kernels::im2col::{for_each_tile, Operands, Output, Packing, Tile, TILE};
use crate::kernels::packed::{ConvPack, Parallel};
use crate::kernels::{ConvGeom, F32ConvParams, QConvParams};
use core::arch::aarch64::*;

/// Raw int8 accumulators of one tile: `[output channel][pixel]`, bias not included.
pub type QAcc = [[i32; TILE]; TILE];
/// f32 accumulators of one tile: `[output channel][pixel]`, bias not included.
pub type FAcc = [[f32; TILE]; TILE];

/// `requantize` (spec 3.1) on four lanes: 64-bit product, rounding shift right, saturating narrow.
#[inline]
#[target_feature(enable = "neon")]
fn requant4(a: int32x4_t, m: i32, shift: i32) -> int32x4_t {
    let (mv, sh) = (vdupq_n_s32(m), vdupq_n_s64(-(shift as i64)));
    let lo = vrshlq_s64(vmull_s32(vget_low_s32(a), vget_low_s32(mv)), sh);
    let hi = vrshlq_s64(vmull_high_s32(a, mv), sh);
    vcombine_s32(vqmovn_s64(lo), vqmovn_s64(hi))
}

/// Loads up to 8 bytes (`src.len()` of them) into the low lanes of a vector.
#[inline]
#[target_feature(enable = "neon")]
fn load8(src: &[i8]) -> int8x8_t {
    let mut b = [0i8; TILE];
    let b = if src.len() == TILE {
        src
    } else {
        b[..src.len()].copy_from_slice(src);
        &b[..]
    };
    // SAFETY: `b` holds at least 8 readable bytes.
    unsafe { vld1_s8(b.as_ptr()) }
}

/// Stores the first `dst.len()` (at most 8) lanes.
#[inline]
#[target_feature(enable = "neon")]
fn store8(dst: &mut [i8], v: int8x8_t) {
    if dst.len() == TILE {
        // SAFETY: `dst` has room for 8 bytes.
        return unsafe { vst1_s8(dst.as_mut_ptr(), v) };
    }
    let mut b = [0i8; TILE];
    // SAFETY: `b` has room for 8 bytes.
    unsafe { vst1_s8(b.as_mut_ptr(), v) };
    dst.copy_from_slice(&b[..dst.len()]);
}

/// Requantizes one int8 tile and stores its real channels and pixels.
#[target_feature(enable = "neon")]
fn store_q(
    g: &ConvGeom,
    p: &QConvParams<'_>,
    bias: &[i32],
    t: &Tile,
    acc: &QAcc,
    res: Option<&[i8]>,
    y: &Output<'_, i8>,
) {
    let hw = g.h_out * g.w_out;
    let rq = p.requant;
    let (zp, lo, hi) = (vdupq_n_s32(rq.zero_point), vdupq_n_s32(rq.lo), vdupq_n_s32(rq.hi));
    for (o, row) in acc.iter().enumerate().take(t.noc) {
        let oc = t.oc0 + o;
        let (m, s) = rq.channel(oc);
        let bias = vdupq_n_s32(bias[t.packed + o]);
        let at = (t.n * g.c_out + oc) * hw + t.p0;
        // SAFETY: `row` holds 8 i32.
        let (a0, a1) = unsafe { (vld1q_s32(row.as_ptr()), vld1q_s32(row.as_ptr().add(4))) };
        let mut v0 = requant4(vaddq_s32(a0, bias), m, s);
        let mut v1 = requant4(vaddq_s32(a1, bias), m, s);
        if let (Some(r), Some(rr)) = (res, p.residual) {
            let r16 = vmovl_s8(load8(&r[at..at + t.npx]));
            let rzp = vdupq_n_s32(rr.zero_point);
            let r0 = vsubq_s32(vmovl_s16(vget_low_s16(r16)), rzp);
            let r1 = vsubq_s32(vmovl_high_s16(r16), rzp);
            v0 = vqaddq_s32(v0, requant4(r0, rr.multiplier, rr.shift));
            v1 = vqaddq_s32(v1, requant4(r1, rr.multiplier, rr.shift));
        }
        let v0 = vminq_s32(vmaxq_s32(vqaddq_s32(v0, zp), lo), hi);
        let v1 = vminq_s32(vmaxq_s32(vqaddq_s32(v1, zp), lo), hi);
        let v = vmovn_s16(vcombine_s16(vmovn_s32(v0), vmovn_s32(v1)));
        // SAFETY: channel `oc`, pixels `t.p0..` of image `t.n` belong to this tile alone.
        store8(unsafe { y.slice(at, t.npx) }, v);
    }
}

/// Runs an int8 packed convolution with k-block `kb`: `micro` fills each tile's raw accumulators.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
pub fn run_q(
    g: &ConvGeom,
    pack: &ConvPack,
    p: &QConvParams<'_>,
    x: &[i8],
    res: Option<&[i8]>,
    y: &mut [i8],
    scratch: &mut [u8],
    par: &dyn Parallel,
    kb: usize,
    micro: impl Fn(&Operands<'_, i8>, &mut QAcc) + Sync,
) {
    let packing = Packing { kb, pad: p.x_zero_point as i8, interleave: interleave_i8 };
    let out = Output::new(y);
    for_each_tile(g, &packing, x, &pack.wq, pack.panel_bytes, scratch, par, &|t, ops| {
        let mut acc = [[0; TILE]; TILE];
        micro(ops, &mut acc);
        store_q(g, p, &pack.bq, t, &acc, res, &out);
    });
}

/// Adds bias and residual, clamps and stores one f32 tile.
#[target_feature(enable = "neon")]
pub fn store_f32(g: &ConvGeom, p: &F32ConvParams<'_>, t: &Tile, acc: &FAcc, res: Option<&[f32]>, y: &Output<'_, f32>) {
    let hw = g.h_out * g.w_out;
    let (lo, hi) = (vdupq_n_f32(p.clamp.0), vdupq_n_f32(p.clamp.1));
    for (o, row) in acc.iter().enumerate().take(t.noc) {
        let oc = t.oc0 + o;
        let at = (t.n * g.c_out + oc) * hw + t.p0;
        let mut rrow = [0f32; TILE];
        if let Some(r) = res {
            rrow[..t.npx].copy_from_slice(&r[at..at + t.npx]);
        }
        let mut v = [0f32; TILE];
        for (h, half) in v.chunks_exact_mut(4).enumerate() {
            // SAFETY: `row`, `rrow` and `half` hold 4 f32 at these offsets.
            unsafe {
                let mut a = vaddq_f32(vld1q_f32(row.as_ptr().add(4 * h)), vdupq_n_f32(p.bias[oc]));
                if res.is_some() {
                    a = vaddq_f32(a, vld1q_f32(rrow.as_ptr().add(4 * h)));
                }
                vst1q_f32(half.as_mut_ptr(), vminnmq_f32(vmaxnmq_f32(a, lo), hi));
            }
        }
        // SAFETY: channel `oc`, pixels `t.p0..` of image `t.n` belong to this tile alone.
        unsafe { y.slice(at, t.npx) }.copy_from_slice(&v[..t.npx]);
    }
}
