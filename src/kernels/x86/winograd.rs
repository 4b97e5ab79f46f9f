//! f32 3x3 stride-1 convolution by Winograd F(2x2, 3x3) (Lavin & Gray, 2015), AVX-512 and AVX2 + FMA: a 2x2
//! output tile takes 16 multiplies per channel pair instead of 36, on transformed 4x4 input tiles and weights.
//!
//! - Tiles: output tile (ty, tx) reads the 4x4 input window at padded (2ty, 2tx). That is a 4x4 stride-2
//!   convolution over the tile grid ([`tile_geom`]), so its phase planes make tap (r, k) of 16 consecutive
//!   tiles one vector load, exactly as for the direct kernels, padding included.
//! - Per tile of 32 grid positions, the worker that takes it builds `V = Bᵀ d B` into its panel,
//!   `[16][c][32]` ([`input_tile`]). A task (tile, 32 output channels) runs the 16 products
//!   `M[ξ] = U[ξ] · V[ξ]` over the channels, four 8x32 register tiles per ξ (the direct kernel's tile), then
//!   `Y = Aᵀ M A`, adds bias and residual, clamps, and stores the real tiles row by row ([`task`]).
//! - Weights `U = G g Gᵀ` are transformed once at pack time, `[m/32][16][c][32]`.
//! - AVX2 is the same scheme at half the width: tiles of 16 grid positions, tasks of 24 output channels as
//!   four 6x16 register tiles (the direct AVX2 kernel's), transforms in 8-lane pieces.
//! - Both take tile rows that are whole runs of 8 as row runs ([`ConvPack::row_runs`]); the transforms
//!   read and write each run of 8 lanes at its own grid position ([`row_pieces`]).
//!
//! Rounding differs from direct summation by a few ulps of the partial sums: within the f32 tolerance.

use super::avx2::{first as first_lanes, store_first};
use super::conv_f32::Ctx;
use super::panel_stride;
use crate::kernels::packed::ConvPack;
use crate::kernels::{ConvGeom, F32ConvParams};
use core::arch::x86_64::*;
use std::prelude::v1::*;

/// Output channels per register tile, and per task: the task runs each ξ's product for its register tiles in
/// turn, so `V[ξ]` is reread from L1 rather than from L2.
const MR: usize = 8;
const MB: usize = 32;
/// Grid positions (tiles) per task.
const NR: usize = 32;
/// The same for AVX2.
const MR_AVX2: usize = 6;
const MB_AVX2: usize = 24;
const NR_AVX2: usize = 16;

/// Layers worth the transforms: 3x3 stride 1 with enough channels and at least `min_hw` output positions to
/// amortize them, and weights small enough that their 16/9 larger transform neither strains memory nor
/// outruns the memory bus. Where the transforms pay off depends on how fast the direct kernel is:
/// - AVX-512 ([`MIN_HW`], 28x28): below it the tile grid's fill and transforms cost more than they save
///   (CIFAR's 16x16 and 8x8 stages 20-35% slower on Zen 5, ResNet-18's 14x14 one even).
/// - AVX2 ([`MIN_HW_AVX2`], 14x14): the direct kernel does half the work per instruction, so on Zen 3
///   ResNet-18's 14x14x256 layers went from 3.0 to 2.05 ms and CIFAR's 16x16 stage from 0.070 to
///   0.053 ms a layer; the 8x8 stage gained nothing.
pub(super) fn suits(g: &ConvGeom, min_hw: usize) -> bool {
    (g.kh, g.kw, g.stride_h, g.stride_w, g.dil_h, g.dil_w) == (3, 3, 1, 1, 1, 1)
        && g.c_in >= 8
        && g.h_out * g.w_out >= min_hw
        && g.c_in * g.c_out <= 256 * 256
}

/// The smallest outputs [`suits`] takes, per tier.
pub(super) const MIN_HW: usize = 28 * 28;
pub(super) const MIN_HW_AVX2: usize = 14 * 14;

/// [`MIN_HW`], or where 512-bit instructions run as two halves (Zen 4: the direct AVX-512 kernel is no
/// faster than the AVX2 one) [`MIN_HW_AVX2`]: on Zen 4 that took ResNet-18's 14x14x256 layers from 2.05 to
/// 1.50 ms and CIFAR's 16x16 stage from 0.050 to 0.039 ms a layer.
pub(super) fn min_hw_avx512() -> usize {
    if crate::kernels::splits_512() {
        MIN_HW_AVX2
    } else {
        MIN_HW
    }
}

/// The tile grid as a 4x4 stride-2 convolution over the input: one "output" per 2x2 output tile.
pub(super) fn tile_geom(g: &ConvGeom) -> ConvGeom {
    ConvGeom { h_out: g.h_out.div_ceil(2), w_out: g.w_out.div_ceil(2), kh: 4, kw: 4, stride_h: 2, stride_w: 2, ..*g }
}

/// The AVX-512 pack ([`pack_with`]).
pub(super) fn pack(g: &ConvGeom, p: &F32ConvParams<'_>) -> ConvPack {
    pack_with(g, p, MB, NR)
}

/// The AVX2 pack ([`pack_with`]).
pub(super) fn pack_avx2(g: &ConvGeom, p: &F32ConvParams<'_>) -> ConvPack {
    pack_with(g, p, MB_AVX2, NR_AVX2)
}

/// Planes and lane tables of the tile grid, weights `U = G g Gᵀ` in blocks of `mb` channels, and per-worker
/// panels for `V` and `M` of `nr` grid positions. Tile rows that are whole runs of 8 (16x16 outputs: 8 tiles
/// on a 9-wide grid) go as row runs, 64 real lanes of 64 instead of 80 (AVX2) or 96 (AVX-512); a shorter
/// run's 8 lanes would cover tiles of the next row too.
fn pack_with(g: &ConvGeom, p: &F32ConvParams<'_>, mb: usize, nr: usize) -> ConvPack {
    let tg = tile_geom(g);
    let mut pack = ConvPack::new(&tg, mb, nr, 1, 4);
    if tg.w_out.is_multiple_of(8) {
        pack.row_runs(&tg, 8);
    }
    let c = g.c_in;
    pack.wf = vec![0.0; pack.blocks(g.c_out) * 16 * c * mb];
    for (oc, kernel) in p.weight.chunks_exact(c * 9).enumerate() {
        for (ic, k) in kernel.chunks_exact(9).enumerate() {
            for (xi, u) in weight_transform(k).into_iter().enumerate() {
                pack.wf[((oc / mb * 16 + xi) * c + ic) * mb + oc % mb] = u;
            }
        }
    }
    pack.bf = p.bias.to_vec();
    pack.panel_bytes = (16 * c * nr + 16 * mb * nr) * 4;
    pack.winograd = true;
    super::set_band(&mut pack, &tg);
    pack
}

/// `G g Gᵀ` for one 3x3 kernel (row major), in f64 and rounded once.
pub(super) fn weight_transform(k: &[f32]) -> [f32; 16] {
    const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
    let mut gg = [[0f64; 3]; 4];
    for (i, row) in gg.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|r| G[i][r] * k[r * 3 + j] as f64).sum();
        }
    }
    let mut u = [0f32; 16];
    for i in 0..4 {
        for j in 0..4 {
            u[i * 4 + j] = (0..3).map(|r| gg[i][r] * G[j][r]).sum::<f64>() as f32;
        }
    }
    u
}

/// `V = Bᵀ d B` of one 4x4 input tile, for any lane width (`add`, `sub` of its vectors): `d(i)` is element
/// `i` (row major), `put(ξ, V[ξ])` takes the results.
#[inline(always)]
pub(super) fn input_transform<V: Copy>(
    d: impl Fn(usize) -> V,
    add: impl Fn(V, V) -> V,
    sub: impl Fn(V, V) -> V,
    mut put: impl FnMut(usize, V),
) {
    // Bᵀ d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3, per column k.
    let mut bt = [[d(0); 4]; 4];
    #[allow(clippy::needless_range_loop)] // column k of all four rows
    for k in 0..4 {
        let (d0, d1, d2, d3) = (d(k), d(4 + k), d(8 + k), d(12 + k));
        (bt[0][k], bt[1][k], bt[2][k], bt[3][k]) = (sub(d0, d2), add(d1, d2), sub(d2, d1), sub(d1, d3));
    }
    // (Bᵀ d) B: the same combinations along each row.
    for (i, r) in bt.iter().enumerate() {
        put(4 * i, sub(r[0], r[2]));
        put(4 * i + 1, add(r[1], r[2]));
        put(4 * i + 2, sub(r[2], r[1]));
        put(4 * i + 3, sub(r[1], r[3]));
    }
}

/// `Y = Aᵀ M A + bias` of one tile's 16 products `m(ξ)`, for any lane width: the 2x2 outputs `y[i][j]`.
#[inline(always)]
pub(super) fn output_transform<V: Copy>(
    m: impl Fn(usize) -> V,
    bias: V,
    add: impl Fn(V, V) -> V,
    sub: impl Fn(V, V) -> V,
) -> [[V; 2]; 2] {
    // Aᵀ M: rows m0 + m1 + m2 and m1 - m2 - m3, per column; then the same along each row.
    let mut s = [[bias; 4]; 2];
    #[allow(clippy::needless_range_loop)] // column j of both rows
    for j in 0..4 {
        let (m0, m1, m2, m3) = (m(j), m(4 + j), m(8 + j), m(12 + j));
        (s[0][j], s[1][j]) = (add(add(m0, m1), m2), sub(sub(m1, m2), m3));
    }
    s.map(|s| [add(add(add(s[0], s[1]), s[2]), bias), add(sub(sub(s[1], s[2]), s[3]), bias)])
}

/// Worker `w`'s `V` and `M` areas.
fn panel(c: &Ctx<'_>, w: usize) -> (*mut f32, *mut f32) {
    // SAFETY: pack_with() sized each worker's panel as 16·c·nr floats of V, then 16·mb·nr of M.
    unsafe {
        let v = c.panels.get().add(w * panel_stride(c.pack)) as *mut f32;
        (v, v.add(16 * c.c_in * c.pack.nr))
    }
}

/// Builds `V = Bᵀ d B` of tile `t`'s 32 grid positions, every channel, into worker `w`'s panel. Each 16-lane
/// piece is one load, or two 8-lane ones where it holds two row runs.
///
/// # Safety
/// AVX-512 F and DQ available (`vinsertf32x8`: without DQ enabled here it would be an out-of-line call per
/// load); the pack is [`pack`]'s; the planes of the current image are filled; `w` < workers.
#[target_feature(enable = "avx512f,avx512dq")]
pub(super) unsafe fn input_tile(c: &Ctx<'_>, w: usize, t: usize) {
    let (v, _) = panel(c, w);
    let cin = c.c_in;
    let plane = c.planes.of(w) as *const f32;
    // SAFETY: ConvPack::new (or row_runs) sized the planes so that offsets + 8 past every run start stays
    // inside; V holds 16 · cin · NR floats.
    unsafe {
        for h in 0..NR / 16 {
            let (s0, s1) = (c.pack.run_start(t, 2 * h), c.pack.run_start(t, 2 * h + 1));
            let (src0, src1, split) = (plane.add(s0), plane.add(s1), s1 != s0 + 8);
            for ch in 0..cin {
                let off = c.pack.offsets.as_ptr().add(ch * 16);
                let d = |i: usize| {
                    let o = *off.add(i) as usize;
                    if split {
                        let lo = _mm512_castps256_ps512(_mm256_loadu_ps(src0.add(o)));
                        _mm512_insertf32x8::<1>(lo, _mm256_loadu_ps(src1.add(o)))
                    } else {
                        _mm512_loadu_ps(src0.add(o))
                    }
                };
                let put = |xi: usize, val| _mm512_storeu_ps(v.add((xi * cin + ch) * NR + 16 * h), val);
                input_transform(d, |a, b| _mm512_add_ps(a, b), |a, b| _mm512_sub_ps(a, b), put);
            }
        }
    }
}

/// One task: 32 output channels of tile `t` (32 grid positions), from worker `w`'s `V`.
///
/// # Safety
/// AVX-512F available; the pack is [`pack`]'s; worker `w`'s panel holds tile `t`'s `V`; `blk` < blocks.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn task(c: &Ctx<'_>, w: usize, t: usize, blk: usize) {
    let p = c.pack;
    let cin = c.c_in;
    let (v, m) = panel(c, w);
    let subs = (c.m - blk * MB).min(MB).div_ceil(MR);
    // SAFETY: the block has 16 · cin · MB weights; V and M are as panel() describes.
    unsafe {
        let u = p.wf.as_ptr().add(blk * 16 * cin * MB);
        for xi in 0..16 {
            let vx = v.add(xi * cin * NR) as *const f32;
            for sub in 0..subs {
                let mut acc = [[_mm512_setzero_ps(); 2]; MR];
                let ux = u.add(xi * cin * MB + sub * MR);
                for ch in 0..cin {
                    let (b0, b1) = (_mm512_loadu_ps(vx.add(ch * NR)), _mm512_loadu_ps(vx.add(ch * NR + 16)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let a = _mm512_set1_ps(*ux.add(ch * MB + r));
                        acc[0] = _mm512_fmadd_ps(a, b0, acc[0]);
                        acc[1] = _mm512_fmadd_ps(a, b1, acc[1]);
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let at = (xi * MB + sub * MR + r) * NR;
                    _mm512_storeu_ps(m.add(at), acc[0]);
                    _mm512_storeu_ps(m.add(at + 16), acc[1]);
                }
            }
        }
    }
    for r in 0..MB {
        let oc = blk * MB + r;
        if oc >= c.m {
            break;
        }
        let bias = _mm512_set1_ps(p.bf[oc]);
        for h in 0..NR / 16 {
            if p.chunks[t * NR / 16 + h].mask == 0 {
                continue;
            }
            // SAFETY: M holds 16 · MB · NR floats.
            let mx = |xi: usize| unsafe { _mm512_loadu_ps(m.add((xi * MB + r) * NR + 16 * h)) };
            let y = output_transform(mx, bias, |a, b| _mm512_add_ps(a, b), |a, b| _mm512_sub_ps(a, b));
            let firsts = [p.run_start(t, 2 * h), p.run_start(t, 2 * h + 1)];
            // SAFETY: the chunk's real lanes are tiles of this image; oc < m.
            unsafe { store(c, oc, firsts, y) };
        }
    }
}

/// Where the outputs of the 8 grid positions from `first` go: `put(i, base, k0, k1)` for each output row
/// `2·ty + i` with real tiles (`ty` the grid rows the 8 positions cross), where `k0..k1` are the real
/// elements of the row's interleaved pair (element `2l + j` = column `j` of lane `l`'s tile) and element `k`
/// belongs at output index `base + k` of the image (`base` may lie before the row, even before the image).
fn row_pieces(c: &Ctx<'_>, oc: usize, first: usize, mut put: impl FnMut(usize, isize, usize, usize)) {
    let (th, tw, wg) = (c.h_out.div_ceil(2), c.w_out.div_ceil(2), c.wg);
    for ty in first / wg..((first + 7) / wg + 1).min(th) {
        // Lanes [a, b) are tiles tx = first + lane - ty·wg < tw of grid row ty.
        let (a, end) = ((ty * wg).saturating_sub(first), (ty * wg + tw).saturating_sub(first));
        let b = end.min(8);
        if a >= b {
            continue;
        }
        // Interleaved elements [2a, e): the last tile of an odd-width row has one column.
        let e = 2 * b - usize::from(end == b && c.w_out % 2 == 1);
        for i in 0..2 {
            let oy = 2 * ty + i;
            if oy < c.h_out {
                // Element 2l belongs at column 2(first + l - ty·wg) of row oy.
                let base = (oc * c.hw + oy * c.w_out + 2 * first) as isize - (2 * ty * wg) as isize;
                put(i, base, 2 * a, e);
            }
        }
    }
}

/// Stores the 2x2 outputs `y[i][j]` of 16 grid positions, lanes 0-7 from `firsts[0]` and 8-15 from
/// `firsts[1]` (residual added, clamped): per output row, the two columns are interleaved in registers and
/// each piece of [`row_pieces`] is one masked store.
///
/// # Safety
/// AVX-512F available; `oc` < m; both runs lie inside the tile grid of the current image.
#[target_feature(enable = "avx512f")]
unsafe fn store(c: &Ctx<'_>, oc: usize, firsts: [usize; 2], y: [[__m512; 2]; 2]) {
    let (lo, hi) = (_mm512_set1_ps(c.lo), _mm512_set1_ps(c.hi));
    let idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    // pairs[i][half]: output row i of lanes 8·half .. 8·half + 8, interleaved.
    let pairs = y.map(|[y0, y1]| {
        [
            _mm512_permutex2var_ps(y0, idx, y1),
            _mm512_permutex2var_ps(y0, _mm512_add_epi32(idx, _mm512_set1_epi32(8)), y1),
        ]
    });
    for (half, &first) in firsts.iter().enumerate() {
        row_pieces(c, oc, first, |i, base, k0, k1| {
            let keep = ((1u32 << k1) - (1u32 << k0)) as u16;
            // SAFETY: the `keep` lanes are outputs of one row of this channel (masked lanes never fault), so
            // the pointers are only ever wrapped.
            unsafe {
                let mut val = pairs[i][half];
                if let Some(res) = c.res {
                    val = _mm512_add_ps(val, _mm512_maskz_loadu_ps(keep, res.get().wrapping_offset(base)));
                }
                let out = c.y.get().wrapping_offset(base);
                _mm512_mask_storeu_ps(out, keep, _mm512_min_ps(_mm512_max_ps(val, lo), hi));
            }
        });
    }
}

/// [`input_tile`] for AVX2: tile `t`'s 16 grid positions.
///
/// # Safety
/// AVX2 and FMA available; the pack is [`pack_avx2`]'s; the planes of the current image are filled;
/// `w` < workers.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn input_tile_avx2(c: &Ctx<'_>, w: usize, t: usize) {
    let (v, _) = panel(c, w);
    let cin = c.c_in;
    // SAFETY: as in input_tile, with NR_AVX2 positions per tile.
    unsafe {
        let src = [0, 1].map(|h| c.planes.of(w).add(c.pack.run_start(t, h)) as *const f32);
        for ch in 0..cin {
            let off = c.pack.offsets.as_ptr().add(ch * 16);
            for (h, &src) in src.iter().enumerate() {
                let d = |i: usize| _mm256_loadu_ps(src.add(*off.add(i) as usize));
                let put = |xi: usize, val| _mm256_storeu_ps(v.add((xi * cin + ch) * NR_AVX2 + 8 * h), val);
                input_transform(d, |a, b| _mm256_add_ps(a, b), |a, b| _mm256_sub_ps(a, b), put);
            }
        }
    }
}

/// [`task`] for AVX2: 24 output channels of tile `t` (16 grid positions).
///
/// # Safety
/// AVX2 and FMA available; the pack is [`pack_avx2`]'s; worker `w`'s panel holds tile `t`'s `V`;
/// `blk` < blocks.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn task_avx2(c: &Ctx<'_>, w: usize, t: usize, blk: usize) {
    let p = c.pack;
    let cin = c.c_in;
    let (v, m) = panel(c, w);
    let subs = (c.m - blk * MB_AVX2).min(MB_AVX2).div_ceil(MR_AVX2);
    // SAFETY: the block has 16 · cin · MB_AVX2 weights; V and M are as panel() describes.
    unsafe {
        let u = p.wf.as_ptr().add(blk * 16 * cin * MB_AVX2);
        for xi in 0..16 {
            let vx = v.add(xi * cin * NR_AVX2) as *const f32;
            for sub in 0..subs {
                let mut acc = [[_mm256_setzero_ps(); 2]; MR_AVX2];
                let ux = u.add(xi * cin * MB_AVX2 + sub * MR_AVX2);
                for ch in 0..cin {
                    let (b0, b1) = (_mm256_loadu_ps(vx.add(ch * NR_AVX2)), _mm256_loadu_ps(vx.add(ch * NR_AVX2 + 8)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let a = _mm256_set1_ps(*ux.add(ch * MB_AVX2 + r));
                        acc[0] = _mm256_fmadd_ps(a, b0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(a, b1, acc[1]);
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let at = (xi * MB_AVX2 + sub * MR_AVX2 + r) * NR_AVX2;
                    _mm256_storeu_ps(m.add(at), acc[0]);
                    _mm256_storeu_ps(m.add(at + 8), acc[1]);
                }
            }
        }
    }
    let real = p.chunks[t].mask.to_le_bytes();
    for r in 0..MB_AVX2 {
        let oc = blk * MB_AVX2 + r;
        if oc >= c.m {
            break;
        }
        let bias = _mm256_set1_ps(p.bf[oc]);
        for (h, &lanes) in real.iter().enumerate() {
            if lanes == 0 {
                continue;
            }
            // SAFETY: M holds 16 · MB_AVX2 · NR_AVX2 floats.
            let mx = |xi: usize| unsafe { _mm256_loadu_ps(m.add((xi * MB_AVX2 + r) * NR_AVX2 + 8 * h)) };
            let y = output_transform(mx, bias, |a, b| _mm256_add_ps(a, b), |a, b| _mm256_sub_ps(a, b));
            // SAFETY: the half's real lanes are tiles of this image; oc < m.
            unsafe { store_avx2(c, oc, p.run_start(t, h), y) };
        }
    }
}

/// [`store`] for AVX2, 8 grid positions from `first`: the interleaved pair of each output row is two vectors
/// (lanes 0-3 and 4-7 of the positions); a piece that starts mid-vector is rotated to the front, then
/// stored in pieces ([`store_first`]), as AVX2 has no masked store that AMD runs fast.
///
/// # Safety
/// AVX2 available; `oc` < m; `first` inside the tile grid of the current image.
#[target_feature(enable = "avx2")]
unsafe fn store_avx2(c: &Ctx<'_>, oc: usize, first: usize, y: [[__m256; 2]; 2]) {
    let (lo, hi) = (_mm256_set1_ps(c.lo), _mm256_set1_ps(c.hi));
    let pairs = y.map(|[y0, y1]| {
        // unpacklo: positions 0, 1 | 4, 5 interleaved; unpackhi: 2, 3 | 6, 7.
        let (a, b) = (_mm256_unpacklo_ps(y0, y1), _mm256_unpackhi_ps(y0, y1));
        [_mm256_permute2f128_ps::<0x20>(a, b), _mm256_permute2f128_ps::<0x31>(a, b)]
    });
    row_pieces(c, oc, first, |i, base, k0, k1| {
        for (half, &v) in pairs[i].iter().enumerate() {
            // This vector holds elements [8·half, 8·half + 8); the piece's part of it is [k, k + n).
            let (k, stop) = (k0.max(8 * half), k1.min(8 * half + 8));
            if k >= stop {
                continue;
            }
            let (s, n, at) = (k - 8 * half, stop - k, (base + k as isize) as usize);
            let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mut val = _mm256_permutevar8x32_ps(v, _mm256_add_epi32(_mm256_set1_epi32(s as i32), iota));
            // SAFETY: the n elements from `at` are outputs of one row of this channel.
            unsafe {
                if let Some(res) = c.res {
                    val = _mm256_add_ps(val, _mm256_maskload_ps(res.get().add(at), first_lanes(n as u32)));
                }
                store_first(c.y.get().add(at), _mm256_min_ps(_mm256_max_ps(val, lo), hi), n);
            }
        }
    });
}
