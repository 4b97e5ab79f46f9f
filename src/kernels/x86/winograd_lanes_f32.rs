//! f32 3x3 stride-1 convolution by Winograd F(2x2, 3x3) with the tiles in the lanes (AVX-512), for outputs 8,
//! 16 or 32 wide (ResNet-20's three stages and its stem) and 7x7 (ResNet-18's last stage). A block is 16
//! tiles, one vector: 4, 2 or 1 tile rows, the 64 outputs of a channel that lie contiguous in the output (7x7:
//! the 8x8 block with column and row 7 outside). [`super::winograd`] puts 32 grid positions in a tile, so an
//! 8x8 output (16 tiles on a 5-wide grid) left half its lanes idle, and it fills phase planes first. The
//! transforms are that module's, so the rounding is too.
//!
//! - The input transform reads the planar input rows in place: tap `(i, j)` of the 16 tiles is one
//!   `vpermt2ps` from two registers holding the input rows of the block's tile rows (padding rows read from
//!   zeros), padding columns masked ([`Tables`]). `V` is `[16][c][16]`, a channel per vector.
//! - Products broadcast a weight (`U`: `[m/16][16][c][16]`) against the 16 tiles, 16 output channels at a
//!   time ([`OB`]), 16 independent accumulators: `M` is `[16][OB][16]`.
//! - The output transform runs per output channel on the 16 tiles; one `vpermt2ps` per 16 outputs of a row
//!   parity interleaves the tiles' two columns (8 wide: `vshuff32x4` then pairs the rows), so the block's 64
//!   outputs go out as four whole vectors, residual and clamp included (7x7: compressed to 14 per row pair).
//!
//! On Zen 4, 1 thread (`bench --profile`):
//! - ResNet-20: the 8x8x64 layers went from 46 µs (the direct row kernel, about 85% of the FMA peak) to
//!   22.5 µs, the 16x16x32 ones from 31 to 25 µs and the 32x32x16 ones from 38 to 29 µs ([`super::winograd`]),
//!   the stem from 13.9 to 10.1 µs; the net from 0.658 to about 0.44-0.49 ms.
//! - ResNet-18's 7x7x512 layers: 2.59 -> 1.59 ms (the net 27.1 -> 24.6 ms, 2 threads 14.4 -> 13.0). Their
//!   weight transforms are 16.8 MB a layer against 9.4 MB of weights, streamed once per layer (a single
//!   block); the process's peak RSS grows from 113 to 135 MB.
//!
//! Zen 5 (full-width AVX-512) is unmeasured.

use super::winograd::{input_transform, output_transform, weight_transform};
use super::winograd_i8::same_3x3;
use super::{lane_blocks, panel_stride, Shared};
use crate::kernels::packed::{ConvPack, InPlace, Parallel};
use crate::kernels::{ConvGeom, F32ConvParams};
use core::arch::x86_64::*;
use std::prelude::v1::*;

/// Tiles per block (a block is 8 output rows of an 8-wide output: 4x4 tiles).
const LANES: usize = 16;
/// Output channels per task.
const OB: usize = 16;
/// Transformed positions of a 4x4 input tile.
const XI: usize = 16;

/// Layers this kernel takes: 3x3 stride 1 "same", outputs 8, 16 or 32 wide in whole blocks with weight
/// transforms of at most 4 MB (as [`super::winograd`]), or 7x7 outputs of any channel count (one block, so
/// the transforms stream once per layer).
pub(super) fn suits(g: &ConvGeom) -> bool {
    let whole_blocks = matches!(g.w_out, 8 | 16 | 32) && g.h_out.is_multiple_of(64 / g.w_out);
    same_3x3(g) && (whole_blocks && g.c_in * g.c_out <= 256 * 256 || (g.h_out, g.w_out) == (7, 7))
}

/// The weight transforms, `[m/OB][16][c][OB]` (output channels past `m` zero), and the bias.
pub(super) fn pack(g: &ConvGeom, p: &F32ConvParams<'_>) -> ConvPack {
    let (c, m) = (g.c_in, g.c_out);
    let mut wf = vec![0.0; m.div_ceil(OB) * XI * c * OB];
    for (oc, kernel) in p.weight.chunks_exact(c * 9).enumerate() {
        for (ic, k) in kernel.chunks_exact(9).enumerate() {
            for (xi, u) in weight_transform(k).into_iter().enumerate() {
                wf[((oc / OB * XI + xi) * c + ic) * OB + oc % OB] = u;
            }
        }
    }
    ConvPack {
        mr: OB,
        nr: LANES,
        k: c * 9,
        kp: c * 9,
        q: g.h_out * g.w_out / 4,
        tiles: (g.h_out * g.w_out).div_ceil(64),
        w_out: g.w_out,
        wf,
        bf: p.bias.to_vec(),
        panel_bytes: (XI * c * LANES + XI * OB * LANES) * 4,
        elem: 4,
        in_place: InPlace::Winograd,
        ..ConvPack::default()
    }
}

/// The lane tables of a block of outputs `w` wide: lane `l` is tile `(l / (w/2), l % (w/2))`, and the
/// block is `32 / w` tile rows, 64 outputs of a channel, contiguous in the output.
struct Tables {
    /// Per column tap `j`: the `vpermt2ps` indices that gather tap `(i, j)` of the 16 tiles from the input
    /// rows of their tile rows (row `ty` at `ty·w`, two registers), and the lanes whose column lies in the
    /// padding (column -1 or `w`), which stay zero.
    gather: [([i32; 16], u16); 4],
    /// Per 16 outputs `s` of the rows of one parity `i` (rows `2·ty + i` side by side): the `vpermt2ps`
    /// indices from the tiles' two columns (`y[i][0]`, `y[i][1]`).
    to_rows: [[i32; 16]; 2],
}

/// [`Tables`] for outputs `w` wide.
const fn tables(w: usize) -> Tables {
    // 7 wide: as 8 wide, column 7 (padded 8) outside.
    let (tx_n, rs) = (w.div_ceil(2), w.next_multiple_of(2));
    let mut t = Tables { gather: [([0; 16], 0); 4], to_rows: [[0; 16]; 2] };
    let mut l = 0;
    while l < 16 {
        let (ty, tx) = (l / tx_n, l % tx_n);
        let mut j = 0;
        while j < 4 {
            // Padded column 2tx + j is input column 2tx + j - 1.
            let col = 2 * tx + j;
            if col >= 1 && col <= w {
                t.gather[j].0[l] = (ty * rs + col - 1) as i32;
                t.gather[j].1 |= 1 << l;
            }
            j += 1;
        }
        let mut s = 0;
        while s < 2 {
            let (ty, col) = ((16 * s + l) / rs, (16 * s + l) % rs);
            t.to_rows[s][l] = (ty * tx_n + col / 2 + 16 * (col % 2)) as i32;
            s += 1;
        }
        l += 1;
    }
    t
}

/// Tables for outputs 8, 16, 32 and 7 wide.
static TABLES: [Tables; 4] = [tables(8), tables(16), tables(32), tables(7)];

/// What one task needs, for one image.
struct Ctx<'p> {
    pack: &'p ConvPack,
    x: *const f32,
    panels: Shared<u8>,
    y: Shared<f32>,
    res: Option<Shared<f32>>,
    t: &'static Tables,
    c: usize,
    m: usize,
    h: usize,
    w: usize,
    lo: f32,
    hi: f32,
}
// SAFETY: tasks only read the input and write disjoint outputs and their own panel.
unsafe impl Sync for Ctx<'_> {}

/// A row of zeros: the padding rows.
static ZERO_ROW: [f32; 32] = [0.0; 32];

impl Ctx<'_> {
    /// Worker `w`'s `V` (`[16][c][16]`) and `M` (`[16][OB][16]`).
    fn panel(&self, w: usize) -> (*mut f32, *mut f32) {
        let v = self.panels.get().wrapping_add(w * panel_stride(self.pack)) as *mut f32;
        (v, v.wrapping_add(XI * self.c * LANES))
    }

    /// Row `r` of channel `ch` of the input (`w` floats), or zeros outside it.
    fn row(&self, ch: usize, r: isize) -> *const f32 {
        if (0..self.h as isize).contains(&r) {
            self.x.wrapping_add((ch * self.h + r as usize) * self.w)
        } else {
            ZERO_ROW.as_ptr()
        }
    }
}

/// Runs the convolution (the pack is [`pack`]'s; tier `avx512`).
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    g: &ConvGeom,
    pack: &ConvPack,
    p: &F32ConvParams<'_>,
    x: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [u8],
    par: &dyn Parallel,
) {
    debug_assert!(scratch.len() >= pack.scratch_bytes(par.workers()));
    debug_assert!(x.len() == g.input_len() && y.len() == g.output_len());
    let hw = g.h_out * g.w_out;
    let (blocks, obs) = (pack.tiles, pack.blocks(g.c_out));
    for n in 0..g.n {
        let ctx = Ctx {
            pack,
            x: x[n * g.c_in * hw..].as_ptr(),
            panels: Shared(scratch.as_mut_ptr()),
            y: Shared(y[n * g.c_out * hw..].as_mut_ptr()),
            res: residual.map(|r| Shared(r[n * g.c_out * hw..].as_ptr() as *mut f32)),
            t: &TABLES[match g.w_out {
                8 => 0,
                16 => 1,
                32 => 2,
                _ => 3,
            }],
            c: g.c_in,
            m: g.c_out,
            h: g.h_out,
            w: g.w_out,
            lo: p.clamp.0,
            hi: p.clamp.1,
        };
        // SAFETY (both): the registry lists this kernel under the avx512 tier (F and DQ); worker w only
        // touches panel w, and tasks write disjoint outputs.
        lane_blocks(par, blocks, obs, &|w, b| unsafe { input_tiles(&ctx, w, b) }, &|w, b, ob| unsafe {
            products(&ctx, w, ob);
            outputs(&ctx, w, b, ob);
        });
    }
}

/// Builds `V = Bᵀ d B` of block `b` into worker `w`'s panel.
///
/// # Safety
/// AVX-512 F/DQ available; `ctx.x` is the current image; `b` < blocks.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn input_tiles(ctx: &Ctx<'_>, w: usize, b: usize) {
    let (v, _) = ctx.panel(w);
    let c = ctx.c;
    // SAFETY: the tables are 16 lanes.
    let gather = ctx.t.gather.map(|(idx, keep)| (unsafe { _mm512_loadu_si512(idx.as_ptr() as *const _) }, keep));
    let row0 = (b * 64 / ctx.w) as isize - 1;
    for ch in 0..c {
        // Tap row i of tile row ty reads input row row0 + i + 2·ty: the tile rows' input rows side by side in
        // two registers (8 wide: two per register; 16 wide: one; 32 wide: halves of one).
        let taps = core::array::from_fn::<_, 4, _>(|i| {
            let r = row0 + i as isize;
            // SAFETY: each row pointer has w floats (a row of the image, or the zero row).
            let (lo, hi) = unsafe {
                match ctx.w {
                    7 | 8 => {
                        // 7 wide: the rows' 7 floats (the last row of the image has no eighth).
                        let keep = if ctx.w == 7 { 0x7f } else { 0xff };
                        let two = |r: isize| {
                            _mm512_insertf32x8::<1>(
                                _mm512_castps256_ps512(_mm256_maskz_loadu_ps(keep, ctx.row(ch, r))),
                                _mm256_maskz_loadu_ps(keep, ctx.row(ch, r + 2)),
                            )
                        };
                        (two(r), two(r + 4))
                    }
                    16 => (_mm512_loadu_ps(ctx.row(ch, r)), _mm512_loadu_ps(ctx.row(ch, r + 2))),
                    _ => (_mm512_loadu_ps(ctx.row(ch, r)), _mm512_loadu_ps(ctx.row(ch, r).add(16))),
                }
            };
            gather.map(|(idx, keep)| _mm512_maskz_permutex2var_ps(keep, lo, idx, hi))
        });
        let put = |xi: usize, val| {
            // SAFETY: V holds 16 · c · 16 floats.
            unsafe { _mm512_storeu_ps(v.add((xi * c + ch) * LANES), val) }
        };
        input_transform(|k| taps[k / 4][k % 4], |a, b| _mm512_add_ps(a, b), |a, b| _mm512_sub_ps(a, b), put);
    }
}

/// `M[ξ] = Σ_c U[ξ] V[ξ]` for output channels `OB·ob ..` in worker `w`'s panel.
///
/// # Safety
/// AVX-512 F available; [`input_tiles`] ran on this worker for the block; `ob` < blocks of `m`.
#[target_feature(enable = "avx512f")]
unsafe fn products(ctx: &Ctx<'_>, w: usize, ob: usize) {
    let (v, m) = ctx.panel(w);
    let c = ctx.c;
    // SAFETY: the weight block holds 16 · c · OB floats; V and M are the worker's.
    unsafe {
        let u = ctx.pack.wf.as_ptr().add(ob * XI * c * OB);
        for xi in 0..XI {
            let mut acc = [_mm512_setzero_ps(); OB];
            let (vx, ux) = (v.add(xi * c * LANES), u.add(xi * c * OB));
            for ch in 0..c {
                let x = _mm512_loadu_ps(vx.add(ch * LANES));
                for (o, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(*ux.add(ch * OB + o)), x, *a);
                }
            }
            for (o, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(m.add((xi * OB + o) * LANES), *a);
            }
        }
    }
}

/// `Y = Aᵀ M A + bias`, the residual, the clamp and the stores for output channels `OB·ob ..` of block `b`.
///
/// # Safety
/// AVX-512 F available; [`products`] ran on this worker for `ob`.
#[target_feature(enable = "avx512f")]
unsafe fn outputs(ctx: &Ctx<'_>, w: usize, b: usize, ob: usize) {
    let (_, m) = ctx.panel(w);
    // SAFETY: the tables are 16 lanes.
    let to_rows = ctx.t.to_rows.map(|t| unsafe { _mm512_loadu_si512(t.as_ptr() as *const _) });
    let (lo, hi) = (_mm512_set1_ps(ctx.lo), _mm512_set1_ps(ctx.hi));
    for o in 0..OB.min(ctx.m - ob * OB) {
        let oc = ob * OB + o;
        // SAFETY: M holds 16 · OB · 16 floats.
        let mm = |xi: usize| unsafe { _mm512_loadu_ps(m.add((xi * OB + o) * LANES)) };
        let bias = _mm512_set1_ps(ctx.pack.bf[oc]);
        let y = output_transform(mm, bias, |a, b| _mm512_add_ps(a, b), |a, b| _mm512_sub_ps(a, b));
        // The rows of each parity side by side, 16 outputs at a time; then the block's 64 outputs in order.
        let [even, odd] = y.map(|[c0, c1]| to_rows.map(|t| _mm512_permutex2var_ps(c0, t, c1)));
        let rows = match ctx.w {
            // Rows 2ty, 2ty + 1 per vector, 8 each.
            7 | 8 => [
                _mm512_shuffle_f32x4::<0x44>(even[0], odd[0]),
                _mm512_shuffle_f32x4::<0xEE>(even[0], odd[0]),
                _mm512_shuffle_f32x4::<0x44>(even[1], odd[1]),
                _mm512_shuffle_f32x4::<0xEE>(even[1], odd[1]),
            ],
            // A row per vector: 2ty + i.
            16 => [even[0], odd[0], even[1], odd[1]],
            // Two vectors per row.
            _ => [even[0], even[1], odd[0], odd[1]],
        };
        if ctx.w == 7 {
            // SAFETY: as in `row_pairs_7`.
            unsafe { row_pairs_7(ctx, oc, rows, (lo, hi)) };
            continue;
        }
        let at = oc * ctx.h * ctx.w + b * 64;
        for (k, mut val) in rows.into_iter().enumerate() {
            // SAFETY: the block's 64 outputs of channel oc lie inside the image (whole blocks), as do the
            // residual's.
            unsafe {
                if let Some(res) = ctx.res {
                    val = _mm512_add_ps(val, _mm512_loadu_ps(res.get().add(at + 16 * k)));
                }
                _mm512_storeu_ps(ctx.y.get().add(at + 16 * k), _mm512_min_ps(_mm512_max_ps(val, lo), hi));
            }
        }
    }
}

/// Stores a 7x7 output channel `oc` from the 8-wide rows pairs of `rows` (rows 2k, 2k + 1 in vector k,
/// column 7 and row 7 outside): each pair's 14 real lanes compressed to the front are 14 consecutive outputs.
///
/// # Safety
/// AVX-512 F available; the output (and residual) is 7x7 with at least `oc + 1` channels.
#[target_feature(enable = "avx512f")]
unsafe fn row_pairs_7(ctx: &Ctx<'_>, oc: usize, rows: [__m512; 4], (lo, hi): (__m512, __m512)) {
    for (k, val) in rows.into_iter().enumerate() {
        let (at, keep) = (oc * 49 + 14 * k, if k < 3 { 0x3fff } else { 0x7f });
        let mut val = _mm512_maskz_compress_ps(0x7f7f, val);
        // SAFETY: the `keep` lanes from `at` are rows 2k, 2k + 1 (row 6 alone for k = 3) of channel oc.
        unsafe {
            if let Some(res) = ctx.res {
                val = _mm512_add_ps(val, _mm512_maskz_loadu_ps(keep, res.get().add(at)));
            }
            _mm512_mask_storeu_ps(ctx.y.get().add(at), keep, _mm512_min_ps(_mm512_max_ps(val, lo), hi));
        }
    }
}
