//! The packed-GEMM convolution frame shared by the SIMD convolution kernels (any ISA): weights packed once
//! at plan time, activations gathered per block of output pixels (im2col) into caller-provided scratch,
//! and a loop that hands the ISA's microkernel full 8x8 output tiles (8 output channels x 8 pixels).
//! Tails are padded inside the panels, so microkernels never see a partial tile; the tile's `noc`/`npx`
//! say which results are real.
//!
//! Reduction order k = (ic, ky, kx) within a group, as in OIHW weights. A microkernel with k-block size
//! `kb` reads kb consecutive reduction values of one pixel (or one output channel) as a unit: 1 for f32
//! FMA by lane, 4 for `SDOT` / `VPDPBUSD`, 8 for `SMMLA`, 16 for `SMULL`+`SMLAL2` pairs.

use super::packed::{ConvPack, Parallel, Shared};
use super::{ConvGeom, F32ConvParams, QConvParams};
use core::marker::PhantomData;
use std::prelude::v1::*;

/// Output channels and pixels per tile.
pub const TILE: usize = 8;

/// Target size (elements) of the gathered rows of one pixel block; bounds scratch for large layers.
const BLOCK_ELEMS: usize = 64 * 1024;

/// Reduction length of one group, padded to a multiple of `kb`.
pub fn k_padded(g: &ConvGeom, kb: usize) -> usize {
    g.k().div_ceil(kb) * kb
}

/// Output channel tiles per group.
pub fn oc_tiles(g: &ConvGeom) -> usize {
    (g.c_out / g.groups).div_ceil(TILE)
}

/// Pixels gathered per block: a multiple of [`TILE`], at most the image, about [`BLOCK_ELEMS`] of rows.
fn block_pixels(g: &ConvGeom, kb: usize) -> usize {
    let hw = (g.h_out * g.w_out).div_ceil(TILE) * TILE;
    let fit = BLOCK_ELEMS / k_padded(g, kb).max(1) / TILE * TILE;
    hw.min(fit.max(TILE))
}

/// Pixels per block when `workers` share a run: [`block_pixels`], shrunk (to whole tiles) until every worker
/// has about two blocks, so a batch-1 layer on a small feature map still splits. Each output element is
/// computed the same way whatever the block, so results do not depend on the worker count.
fn run_block_pixels(g: &ConvGeom, kb: usize, workers: usize) -> usize {
    let max = block_pixels(g, kb);
    if workers == 1 {
        return max;
    }
    let per_image = (2 * workers).div_ceil(g.n * g.groups);
    max.min((g.h_out * g.w_out).div_ceil(per_image).next_multiple_of(TILE))
}

/// Columns of one padded input row: every column a window reads, in padded coordinates (input column
/// `ix` sits at `ix + pad_l`).
fn padded_row_len(g: &ConvGeom) -> usize {
    let reach = (g.w_out.max(1) - 1) * g.stride_w + (g.kw - 1) * g.dil_w + 1;
    reach.max(g.pad_l + g.w_in)
}

/// Scratch elements a kernel with k-block `kb` needs: the gathered rows, the interleaved panel when
/// `kb > 1`, and one padded input row.
pub fn scratch_len(g: &ConvGeom, kb: usize) -> usize {
    let rows = k_padded(g, kb) * block_pixels(g, kb);
    rows * if kb == 1 { 1 } else { 2 } + padded_row_len(g)
}

/// Packs OIHW weights as `[group][oc tile][k / kb][8 oc][kb]`, zero padded to `k_padded` and to 8
/// channels per tile (zero weights make padded reduction entries and channels contribute nothing).
pub fn pack_weights<T: Copy + Default>(g: &ConvGeom, w: &[T], kb: usize) -> Vec<T> {
    let (ocg, k, kp, tiles) = (g.c_out / g.groups, g.k(), k_padded(g, kb), oc_tiles(g));
    let mut out = vec![T::default(); g.groups * tiles * TILE * kp];
    for grp in 0..g.groups {
        for o in 0..ocg {
            let (t, j) = (o / TILE, o % TILE);
            let tile = &mut out[(grp * tiles + t) * TILE * kp..][..TILE * kp];
            for (kk, &v) in w[(grp * ocg + o) * k..][..k].iter().enumerate() {
                tile[(kk / kb * TILE + j) * kb + kk % kb] = v;
            }
        }
    }
    out
}

/// int8 bias per packed channel `[group][oc tile][8]`: `bias[oc] - x_zp * sum_k w[oc, k]`, 0 for padding
/// channels. This zero-point correction lets kernels multiply raw int8 activations (spec 11.2, 11.3);
/// taps in the padding are gathered as `x_zp` so they cancel. Wrapping arithmetic: the true accumulator
/// fits i32 (planner bound), so any intermediate wrap cancels.
pub fn pack_qbias(g: &ConvGeom, w: &[i8], bias: &[i32], x_zp: i32) -> Vec<i32> {
    let (ocg, k, tiles) = (g.c_out / g.groups, g.k(), oc_tiles(g));
    let mut out = vec![0i32; g.groups * tiles * TILE];
    for grp in 0..g.groups {
        for o in 0..ocg {
            let oc = grp * ocg + o;
            let sum: i32 = w[oc * k..][..k].iter().map(|&v| v as i32).sum();
            out[grp * tiles * TILE + o] = bias[oc].wrapping_sub(x_zp.wrapping_mul(sum));
        }
    }
    out
}

/// The [`ConvPack`] of an f32 im2col kernel with k block `kb`: packed weights in `wf`, one scratch of
/// [`scratch_len`] f32 per worker.
pub fn pack_f32(g: &ConvGeom, p: &F32ConvParams<'_>, kb: usize) -> ConvPack {
    let panel_bytes = scratch_len(g, kb) * core::mem::size_of::<f32>();
    ConvPack { wf: pack_weights(g, p.weight, kb), panel_bytes, elem: 4, ..ConvPack::default() }
}

/// The [`ConvPack`] of an int8 im2col kernel with k block `kb`: packed weights in `wq`, the zero-point
/// corrected bias in `bq`, one scratch of [`scratch_len`] bytes per worker.
pub fn pack_i8(g: &ConvGeom, p: &QConvParams<'_>, kb: usize) -> ConvPack {
    ConvPack {
        wq: pack_weights(g, p.weight, kb),
        bq: pack_qbias(g, p.weight, p.bias, p.x_zero_point),
        panel_bytes: scratch_len(g, kb),
        elem: 1,
        ..ConvPack::default()
    }
}

/// The output tensor, written by the tiles of several workers at once. Every tile writes only its own
/// (channel, pixel) elements, so the slices handed out never overlap.
pub struct Output<'y, T> {
    ptr: Shared<T>,
    len: usize,
    _y: PhantomData<&'y mut [T]>,
}

impl<'y, T> Output<'y, T> {
    pub fn new(y: &'y mut [T]) -> Self {
        Output { ptr: Shared(y.as_mut_ptr()), len: y.len(), _y: PhantomData }
    }

    /// Elements `at..at + len`.
    ///
    /// # Safety
    /// No other live slice of this output overlaps them (each tile asks only for its own rows).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, at: usize, len: usize) -> &mut [T] {
        assert!(at + len <= self.len, "tile outside the output");
        // SAFETY: in bounds (asserted), borrowed from `y` for 'y, disjoint by the caller's contract.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.0.add(at), len) }
    }
}

/// Gathers rows `[k_pad][pb]` (`pb = rows.len() / k_pad`) for pixels `p0..p0 + npx` of image `n`, group
/// `grp`: `rows[k * pb + i]` = the input tap of reduction index k for pixel `p0 + i`. Taps in the padding,
/// rows past the reduction length and pixels past `npx` are `pad` (the zero point in int8, 0 in f32).
/// `prow` ([`padded_row_len`] elements) holds one input row with its padding, so every kernel column is a
/// plain (strided) copy from it.
#[allow(clippy::too_many_arguments)]
pub fn gather<T: Copy>(
    g: &ConvGeom,
    x: &[T],
    (n, grp): (usize, usize),
    p0: usize,
    npx: usize,
    pad: T,
    k_pad: usize,
    rows: &mut [T],
    prow: &mut [T],
) {
    let (icg, plane, pb, k) = (g.c_in / g.groups, g.h_in * g.w_in, rows.len() / k_pad, g.k());
    debug_assert_eq!(prow.len(), padded_row_len(g));
    prow.fill(pad);
    for ic in 0..icg {
        let xc = &x[(n * g.c_in + grp * icg + ic) * plane..][..plane];
        let (mut oy, mut ox, mut i) = (p0 / g.w_out, p0 % g.w_out, 0);
        while i < npx {
            let run = (g.w_out - ox).min(npx - i);
            for ky in 0..g.kh {
                let k0 = (ic * g.kh + ky) * g.kw;
                let Some(iy) = g.in_y(oy, ky) else {
                    for kx in 0..g.kw {
                        rows[(k0 + kx) * pb + i..][..run].fill(pad);
                    }
                    continue;
                };
                prow[g.pad_l..g.pad_l + g.w_in].copy_from_slice(&xc[iy * g.w_in..][..g.w_in]);
                for kx in 0..g.kw {
                    let src = &prow[ox * g.stride_w + kx * g.dil_w..];
                    let dst = &mut rows[(k0 + kx) * pb + i..][..run];
                    if g.stride_w == 1 {
                        dst.copy_from_slice(&src[..run]);
                    } else {
                        for (d, s) in dst.iter_mut().zip(src.iter().step_by(g.stride_w)) {
                            *d = *s;
                        }
                    }
                }
            }
            i += run;
            ox = 0;
            oy += 1;
        }
    }
    if npx < pb {
        for row in rows[..k * pb].chunks_exact_mut(pb) {
            row[npx..].fill(pad);
        }
    }
    rows[k * pb..].fill(pad);
}

/// Reorders gathered rows `[k_pad][pb]` into the microkernel panel `[pb / 8][k_pad / kb][8 px][kb]`: per
/// 8-pixel tile and k block, each pixel's kb consecutive reduction values contiguous.
pub fn interleave<T: Copy>(rows: &[T], k_pad: usize, kb: usize, panel: &mut [T]) {
    let pb = rows.len() / k_pad;
    for (t, tile) in panel.chunks_exact_mut(k_pad * TILE).enumerate() {
        for (kk, row) in rows.chunks_exact(pb).enumerate() {
            let dst = &mut tile[kk / kb * TILE * kb + kk % kb..];
            for (j, &v) in row[t * TILE..][..TILE].iter().enumerate() {
                dst[j * kb] = v;
            }
        }
    }
}

/// Where an 8x8 tile lands: output channels `oc0..oc0 + noc` and pixels `p0..p0 + npx` of image `n`.
#[derive(Clone, Copy, Debug)]
pub struct Tile {
    pub n: usize,
    pub oc0: usize,
    pub noc: usize,
    pub p0: usize,
    pub npx: usize,
    /// Index of the tile's first channel in the packed per-channel arrays (`[group][oc tile][8]`).
    pub packed: usize,
}

/// The microkernel operands of one tile: `x` holds k blocks `stride` elements apart, each block 8 pixels x kb
/// values (for kb = 1: 8 consecutive pixels); `w` holds k blocks of 8 channels x kb values, contiguous.
pub struct Operands<'t, T> {
    pub x: &'t [T],
    pub stride: usize,
    pub w: &'t [T],
    pub k_blocks: usize,
}

/// How a kernel wants its activations packed.
pub struct Packing<T> {
    /// k block size.
    pub kb: usize,
    /// Value of taps in the padding (the input zero point in int8, 0 in f32).
    pub pad: T,
    /// [`interleave`] or an ISA's faster equivalent (unused for kb = 1).
    pub interleave: fn(&[T], usize, usize, &mut [T]),
}

/// Runs a packed convolution on the workers of `par`: the (image, group, pixel block) units are handed out
/// one by one; each worker gathers (and for kb > 1 interleaves) its unit's activations into its own part of
/// `scratch` (`panel_bytes` = [`scratch_len`] elements each, 64-byte aligned, as [`ConvPack::scratch_bytes`]
/// lays out), then calls `tile` for each 8x8 tile with its operands. `wpack` comes from [`pack_weights`]
/// with the same `kb`.
#[allow(clippy::too_many_arguments)]
pub fn for_each_tile<T: bytemuck::Pod + Sync>(
    g: &ConvGeom,
    packing: &Packing<T>,
    x: &[T],
    wpack: &[T],
    panel_bytes: usize,
    scratch: &mut [u8],
    par: &dyn Parallel,
    tile: &(dyn Fn(&Tile, &Operands<'_, T>) + Sync),
) {
    let (kb, pad) = (packing.kb, packing.pad);
    let (kp, tiles) = (k_padded(g, kb), oc_tiles(g));
    let (pb_max, pb) = (block_pixels(g, kb), run_block_pixels(g, kb, par.workers()));
    let (ocg, hw) = (g.c_out / g.groups, g.h_out * g.w_out);
    let blocks = hw.div_ceil(pb);
    let stride = panel_bytes.next_multiple_of(64);
    assert!(panel_bytes >= scratch_len(g, kb) * size_of::<T>() && scratch.len() >= stride * par.workers());
    let base = Shared(scratch.as_mut_ptr());
    par.run(g.n * g.groups * blocks, &|w, unit| {
        let (n, grp, p0) = (unit / blocks / g.groups, unit / blocks % g.groups, unit % blocks * pb);
        // SAFETY: worker `w` alone uses bytes `w * stride..w * stride + panel_bytes` (in bounds, asserted;
        // 64-byte aligned, so aligned for T) while `par.run` lasts.
        let own = unsafe { core::slice::from_raw_parts_mut(base.get().add(w * stride), panel_bytes) };
        let own: &mut [T] = bytemuck::cast_slice_mut(own);
        let (rows, rest) = own.split_at_mut(kp * pb_max);
        let (panel, prow) = rest.split_at_mut(if kb == 1 { 0 } else { kp * pb_max });
        let (rows, prow) = (&mut rows[..kp * pb], &mut prow[..padded_row_len(g)]);
        let npx = pb.min(hw - p0);
        gather(g, x, (n, grp), p0, npx, pad, kp, rows, prow);
        let (xs, stride): (&[T], usize) = if kb == 1 {
            (rows, pb)
        } else {
            let panel = &mut panel[..kp * pb];
            (packing.interleave)(rows, kp, kb, panel);
            (panel, TILE * kb)
        };
        for t in 0..tiles {
            let w = &wpack[(grp * tiles + t) * TILE * kp..][..TILE * kp];
            let oc0 = grp * ocg + t * TILE;
            for q in (0..npx).step_by(TILE) {
                let xt = if kb == 1 { &xs[q..] } else { &xs[q * kp..][..TILE * kp] };
                let ops = Operands { x: xt, stride, w, k_blocks: kp / kb };
                let pos = Tile {
                    n,
                    oc0,
                    noc: TILE.min(ocg - t * TILE),
                    p0: p0 + q,
                    npx: TILE.min(npx - q),
                    packed: (grp * tiles + t) * TILE,
                };
                tile(&pos, &ops);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(c_in: usize, hw: (usize, usize), k: usize, s: usize, pad: usize, groups: usize) -> ConvGeom {
        let out = |l: usize| (l + 2 * pad - k) / s + 1;
        ConvGeom {
            n: 1,
            c_in,
            h_in: hw.0,
            w_in: hw.1,
            c_out: groups,
            h_out: out(hw.0),
            w_out: out(hw.1),
            kh: k,
            kw: k,
            stride_h: s,
            stride_w: s,
            pad_t: pad,
            pad_l: pad,
            dil_h: 1,
            dil_w: 1,
            groups,
        }
    }

    /// gather + interleave reproduce the textbook im2col, padding included, for odd shapes and strides, and
    /// every pixel is handed out exactly once, on one worker or split across three.
    #[test]
    fn panels_match_textbook_im2col() {
        let pool = crate::plan::threads::Pool::new(3);
        let workers: [&dyn Parallel; 2] = [&crate::kernels::packed::Serial, &pool];
        for &(c, hw, k, s, pad, kb) in
            &[(3, (5, 7), 3, 1, 1, 4), (2, (9, 4), 3, 2, 1, 8), (5, (3, 3), 1, 2, 0, 16), (1, (6, 11), 5, 3, 2, 1)]
        {
            for par in workers {
                let g = geom(c, hw, k, s, pad, 1);
                let x: Vec<i32> = (0..g.input_len() as i32).map(|v| v + 1).collect();
                let panel_bytes = scratch_len(&g, kb) * 4;
                let mut scratch =
                    crate::kernels::packed::Scratch::new(panel_bytes.next_multiple_of(64) * par.workers());
                let seen = std::sync::Mutex::new(vec![0; g.h_out * g.w_out]);
                let packing = Packing { kb, pad: -1, interleave: interleave::<i32> };
                let w = pack_weights(&g, &vec![0; g.c_out * g.k()], kb);
                for_each_tile(&g, &packing, &x, &w, panel_bytes, scratch.bytes(), par, &|t, o| {
                    for px in 0..t.npx {
                        let p = t.p0 + px;
                        let (oy, ox) = (p / g.w_out, p % g.w_out);
                        for kk in 0..g.k() {
                            let (ic, ky, kx) = (kk / (k * k), kk % (k * k) / k, kk % k);
                            let want = match (g.in_y(oy, ky), g.in_x(ox, kx)) {
                                (Some(iy), Some(ix)) => x[(ic * g.h_in + iy) * g.w_in + ix],
                                _ => -1,
                            };
                            let got = o.x[kk / kb * o.stride + px * kb + kk % kb];
                            assert_eq!(got, want, "kb {kb} pixel {p} k {kk} geometry {g:?}");
                        }
                        seen.lock().unwrap()[p] += 1;
                    }
                });
                assert!(seen.into_inner().unwrap().iter().all(|&n| n == 1), "{} workers", par.workers());
            }
        }
    }

    #[test]
    fn weights_and_bias_pack_by_channel_tile() {
        let mut g = geom(3, (4, 4), 3, 1, 1, 1);
        g.c_out = 10;
        let w: Vec<i8> = (0..g.c_out * g.k()).map(|v| ((v % 200) as i32 - 100) as i8).collect();
        let p = pack_weights(&g, &w, 4);
        assert_eq!(p.len(), 2 * TILE * 28);
        for oc in 0..10 {
            for kk in 0..27 {
                assert_eq!(p[(oc / 8) * TILE * 28 + (kk / 4 * TILE + oc % 8) * 4 + kk % 4], w[oc * 27 + kk]);
            }
        }
        let b = pack_qbias(&g, &w, &[7; 10], -3);
        let sum: i32 = w[..27].iter().map(|&v| v as i32).sum();
        assert_eq!(b[0], 7 + 3 * sum);
        assert_eq!(b[10..], [0; 6]);
    }
}
