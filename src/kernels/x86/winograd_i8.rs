//! int8 3x3 stride-1 convolution by Winograd F(4x4, 3x3) in exact integer arithmetic (AVX-512 VNNI): a
//! 4x4 output tile takes 36 products per channel pair instead of 144. The products are 16-bit
//! (`vpdpwssd`, half the rate of the direct kernel's `vpdpbusd`), so they cost half as much; the results
//! are the direct kernel's bit for bit.
//!
//! Exactness. With `G' = D·G`, `D = diag(4, 6, 6, 24, 24, 1)`, and `A'ᵀ = 24·Aᵀ·D⁻¹`, every transform is an
//! integer matrix:
//! - weights `U = G' g G'ᵀ`: |U| ≤ 7 · 7 · 127, i16;
//! - inputs `V = Bᵀ u B` of the planes' u8 values `u = x + 128` (padding included): |V| ≤ 10 · 10 · 255, i16;
//! - `A'ᵀ (Σ_c U ⊙ V) A' = 576 · Σ u·w`, the direct kernel's sum (its bias carries the zero-point term).
//!
//! Products and sums wrap in i32, so that yields `576 · acc mod 2³²`; `576 = 2⁶ · 9`, so a multiply by
//! `9⁻¹ mod 2³²` leaves `64 · acc mod 2³²`, which is `64 · acc` itself when `|acc| < 2²⁵`, and an arithmetic
//! shift by 6 gives `acc` ([`at`] drops the powers of two its rows carry, so fewer: [`unscale`]). [`suits`] checks that bound per output channel (`255 · Σ|w|`) at pack time; layers
//! outside it keep the direct kernel.
//!
//! Layout. The input is rewritten once per image as a padded channels-last u8 image (`[h+2][w+2][c]`,
//! [`fill_rows`]). A task is a group of `tg` tiles ([`group_size`]) x [`MB`] output channels, output channels
//! in the lanes: the group's `V` is built once per worker (`[36][tg][c]` i16, [`input_tiles`]), then per ξ the
//! products broadcast a tile's channel pair against 32 channels' weight pairs (`U`: `[m/32][36][c/2][32][2]`),
//! 8 x 2 accumulators ([`products`]); `Y = A'ᵀ M A'` and the row kernels' epilogue follow per tile
//! ([`outputs`]).

use super::requant::{ChannelLanes, Epilogue};
use super::{drive, panel_stride, set_band, Shared};
use crate::kernels::packed::{share, ConvPack, Parallel, Planes};
use crate::kernels::{ConvGeom, QConvParams};
use core::arch::x86_64::*;
use core::ops::Range;
use std::prelude::v1::*;

// Tried, not faster on Zen 4: blocks of 16 output channels with 16-channel input tails, for ResNet-20's
// 32x32x16 stage (16.8 -> 19.4 µs a layer, 18.1 -> 22.6 with a residual: at 16 channels the transforms and the
// per-tile epilogue outweigh the products they save); the residual's tile rows as gathers (16x16 residual
// layers 13.3 -> 19.7 µs) or as dwords assembled on the stack (store-forwarding stalls); stores as dword rows
// from byte unpacks instead of the 16x16 transpose (no change).

/// Most tiles per task.
const TG: usize = 8;

/// Tiles per task for `tiles` tiles: 8, 7 or 4, whichever computes the fewest padding tiles (ResNet-18's
/// 14x14 and 7x7 tile grids: 7; CIFAR's 4x4 and 2x2: 8 and 4). Fewer tiles per task cost a little more
/// per product (the weight pair loads are shared by fewer broadcasts).
fn group_size(tiles: usize) -> usize {
    [TG, 7, 4].into_iter().min_by_key(|&tg| tiles.div_ceil(tg) * tg).unwrap_or(TG)
}

/// Weight transforms up to this size are reread per tile group (from L2); larger ones are streamed from L3
/// once per layer: a task then runs several tile groups, whose `V` it builds together.
const L2_WEIGHTS: usize = 1 << 20;
/// The most bytes of `V` a task builds for its tile groups (they stay in L2 with a block of weights).
const V_BUDGET: usize = 320 << 10;

/// Tile groups per task for `tiles` tiles in groups of `tg`, `c` input channels and `weight_bytes` of weight
/// transforms: one, or as many as [`V_BUDGET`] holds when the weights outgrow [`L2_WEIGHTS`]. ResNet-18's
/// 14x14x256 layers (4.7 MB of transforms, two groups of 8 tiles) read them once instead of twice.
fn groups_per_task(tiles: usize, tg: usize, c: usize, weight_bytes: usize) -> usize {
    if weight_bytes <= L2_WEIGHTS {
        return 1;
    }
    (V_BUDGET / (XI * tg * c * 2)).clamp(1, tiles.div_ceil(tg))
}
/// Output channels per task (two vectors).
const MB: usize = 32;
/// Transformed positions of a 6x6 input tile.
pub(super) const XI: usize = 36;

/// Outputs below this many positions keep the direct kernel. Even ResNet-20's 8x8x64 layers gain on Zen 4
/// (1 thread: 13.9 -> 12.7 µs; its 16x16x32 ones 15.5 -> 12.8 µs).
const MIN_HW: usize = 8 * 8;

/// Layers with more (input, output) channel pairs keep the direct kernel: their weight transforms (72 bytes
/// a pair) would stream more than 4.7 MB per layer, untried. ResNet-18's 14x14x256 layers, at that size, gain
/// a little with tasks of two tile groups (0.55-0.57 -> 0.50-0.53 ms on Zen 4; with one group each read the
/// transforms twice and ran no faster than direct).
const MAX_CHANNEL_PAIRS: usize = 256 * 256;

/// `9⁻¹ mod 2³²`.
const INV9: i32 = 0x38e3_8e39;

/// Layers the Winograd kernel computes exactly and faster: 3x3 stride 1 with "same" padding, channels in
/// whole vectors, and every output channel's `255 · Σ|w|` below 2²⁵ ([`exact`]). Outputs need not fill whole
/// 4x4 tiles: the planes are padded to whole tiles and the stores drop what lies outside.
pub(super) fn suits(g: &ConvGeom, weight: &[i8]) -> bool {
    same_3x3(g)
        && g.c_in.is_multiple_of(32)
        && g.c_out.is_multiple_of(MB)
        && g.h_out * g.w_out >= MIN_HW
        && g.c_in * g.c_out <= MAX_CHANNEL_PAIRS
        && exact(g, weight)
}

/// 3x3 stride 1, no dilation, one group, padding 1 on every side, outputs the size of the inputs.
pub(super) fn same_3x3(g: &ConvGeom) -> bool {
    let shape = (g.kh, g.kw, g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.pad_t, g.pad_l) == (3, 3, 1, 1, 1, 1, 1, 1);
    shape && g.groups == 1 && (g.h_out, g.w_out) == (g.h_in, g.w_in)
}

/// Whether every output channel's `255 · Σ|w|` lies below 2²⁵, the bound under which the transformed sums
/// are exact (module docs).
pub(super) fn exact(g: &ConvGeom, weight: &[i8]) -> bool {
    within_bound(g, weight, core::iter::repeat(0))
}

/// [`exact`] with the bias inside the bound: every output channel's `|bias| + 255 · Σ|w|` below 2²⁵, so the
/// transformed sums stay exact with the bias added before the output transform.
pub(super) fn exact_with_bias(g: &ConvGeom, weight: &[i8], bias: &[i32]) -> bool {
    bias.len() == g.c_out && within_bound(g, weight, bias.iter().map(|&b| b as i64))
}

/// Whether each output channel's `|bias| + 255 · Σ|w|` (biases from `bias`) lies below 2²⁵.
fn within_bound(g: &ConvGeom, weight: &[i8], bias: impl Iterator<Item = i64>) -> bool {
    weight.len() == g.c_out * g.c_in * 9
        && weight
            .chunks_exact(g.c_in * 9)
            .zip(bias)
            .all(|(w, b)| b.abs() + 255 * w.iter().map(|&v| (v as i64).abs()).sum::<i64>() < 1 << 25)
}

/// `G'` (rows scaled to integers).
const G: [[i32; 3]; 6] = [[1, 0, 0], [-1, -1, -1], [-1, 1, -1], [1, 2, 4], [1, -2, 4], [0, 0, 1]];

/// The weight transforms of `m x c` 3x3 kernels as `[m/block][36][c/2][block][2]` i16: per ξ, input channel
/// pairs of `block` output channels.
pub(super) fn transforms(weight: &[i8], c: usize, m: usize, block: usize) -> Vec<i16> {
    let mut u = vec![0i16; m * XI * c];
    for oc in 0..m {
        for ic in 0..c {
            for (xi, v) in transform(&weight[(oc * c + ic) * 9..][..9]).into_iter().enumerate() {
                u[((oc / block * XI + xi) * (c / 2) + ic / 2) * 2 * block + oc % block * 2 + ic % 2] = v;
            }
        }
    }
    u
}

/// `U = G' g G'ᵀ` of one 3x3 kernel `g` (row-major), at ξ = 6i + j.
fn transform(g: &[i8]) -> [i16; XI] {
    let k = |a: usize, b: usize| g[a * 3 + b] as i32;
    core::array::from_fn(|xi| {
        let (gi, gj) = (G[xi / 6], G[xi % 6]);
        (0..3).flat_map(|a| (0..3).map(move |b| (a, b))).map(|(a, b)| gi[a] * k(a, b) * gj[b]).sum::<i32>() as i16
    })
}

/// The weight transforms, the corrected bias and the channels-last planes.
pub(super) fn pack(g: &ConvGeom, p: &QConvParams<'_>) -> ConvPack {
    let (c, m) = (g.c_in, g.c_out);
    let u = transforms(p.weight, c, m, MB);
    let (hg, wg) = (4 * g.h_out.div_ceil(4) + 2, 4 * g.w_out.div_ceil(4) + 2);
    let tiles = g.h_out.div_ceil(4) * g.w_out.div_ceil(4);
    let tg = group_size(tiles);
    let sg = groups_per_task(tiles, tg, c, u.len() * 2);
    let mut pack = ConvPack {
        mr: MB,
        nr: tg,
        k: c * 9,
        kp: c * 9,
        planes: Some(Planes { sh: 1, sw: 1, pa: 1, pb: 1, hg, wg, cgroup: c, len: hg * wg * c }),
        q: tiles,
        // drive's tiles are the tasks' sets of tile groups.
        tiles: tiles.div_ceil(tg * sg),
        w_out: g.w_out,
        wq16: u,
        bq: crate::kernels::packed::corrected_bias(p.weight, c * 9, p.bias, p.x_zero_point),
        panel_bytes: XI * sg * tg * c * 2 + XI * tg * MB * 4,
        elem: 1,
        winograd: true,
        ..ConvPack::default()
    };
    set_band(&mut pack, g);
    pack
}

/// What one task needs, for one image.
struct Ctx<'p> {
    pack: &'p ConvPack,
    p: &'p QConvParams<'p>,
    planes: *const u8,
    /// Bytes between two workers' copies of the planes (0: one shared copy).
    plane_stride: usize,
    /// Tile groups per task ([`groups_per_task`]).
    sg: usize,
    panels: Shared<u8>,
    y: Shared<i8>,
    res: Option<Shared<i8>>,
    c: usize,
    h: usize,
    w: usize,
    /// The workers build one `V` together, in worker 0's panel ([`shares_v`]).
    shared_v: bool,
}
// SAFETY: tasks only read the planes (filled before them) and write disjoint outputs and their own panel.
unsafe impl Sync for Ctx<'_> {}

impl Ctx<'_> {
    /// Worker `w`'s `V` (`[36][sg·tg][c]` i16) and `M` (`[36][tg][MB]` i32), `tg` = the pack's `nr`.
    fn panel(&self, w: usize) -> (*mut i16, *mut i32) {
        let own = self.panels.get().wrapping_add(w * panel_stride(self.pack));
        let v = if self.shared_v { self.panels.get() } else { own };
        (v as *mut i16, own.wrapping_add(XI * self.sg * self.pack.nr * self.c * 2) as *mut i32)
    }
    /// Whether the output is 8x8, one group of its four tiles: [`outputs_8x8`] serves it.
    fn one_plane(&self) -> bool {
        (self.h, self.w, self.pack.nr) == (8, 8, 4)
    }
    /// The tiles of group `g` of task set `t` (`first..end`).
    fn group(&self, t: usize, g: usize) -> Range<usize> {
        let tg = self.pack.nr;
        let first = (t * self.sg + g) * tg;
        first.min(self.pack.q)..(first + tg).min(self.pack.q)
    }
    /// Worker `w`'s planes.
    fn planes(&self, w: usize) -> *const u8 {
        self.planes.wrapping_add(w * self.plane_stride)
    }
    /// The plane rows that the 6x6 windows of task sets `sets` read.
    fn plane_rows(&self, sets: Range<usize>) -> Range<usize> {
        let span = self.sg * self.pack.nr;
        let first = (sets.start * span).min(self.pack.q - 1);
        let last = (sets.end * span).min(self.pack.q) - 1;
        4 * (first / self.tiles_x())..4 * (last / self.tiles_x()) + 6
    }
    /// Tiles per row.
    fn tiles_x(&self) -> usize {
        self.w.div_ceil(4)
    }
}

/// Runs the convolution (the pack is [`pack`]'s; tier `avx512vnni`).
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    g: &ConvGeom,
    pack: &ConvPack,
    p: &QConvParams<'_>,
    x: &[i8],
    residual: Option<&[i8]>,
    y: &mut [i8],
    scratch: &mut [u8],
    par: &dyn Parallel,
) {
    let workers = par.workers();
    // Small layers: one copy of the planes per worker (`band`, sized by ConvPack::scratch_bytes).
    let copies = if pack.band { workers } else { 1 };
    let (planes, panels) = scratch.split_at_mut(copies * pack.plane_bytes());
    let (planes, panels) = (Shared(planes.as_mut_ptr()), Shared(panels.as_mut_ptr()));
    let hw = g.h_out * g.w_out;
    let pad = (p.x_zero_point + 128) as u8;
    for n in 0..g.n {
        let xn = &x[n * g.c_in * hw..][..g.c_in * hw];
        let ctx = Ctx {
            pack,
            p,
            planes: planes.get(),
            plane_stride: if copies > 1 { pack.plane_bytes() } else { 0 },
            sg: groups_per_task(pack.q, pack.nr, g.c_in, pack.wq16.len() * 2),
            panels,
            y: Shared(y[n * g.c_out * hw..].as_mut_ptr()),
            res: residual.map(|r| Shared(r[n * g.c_out * hw..].as_ptr() as *mut i8)),
            c: g.c_in,
            h: g.h_out,
            w: g.w_out,
            shared_v: copies == 1 && shares_v(pack, g.c_out, workers),
        };
        // SAFETY (all four): the registry lists this kernel under the avx512vnni tier; fills write disjoint
        // rows of the shared planes, or worker w's copy; worker w only touches panel w.
        let fill = |w: usize, _: Range<usize>, rows: Range<usize>| unsafe {
            fill_rows(g, xn, pad, rows, ctx.planes(w) as *mut u8)
        };
        let prep = |w: usize, t: usize| unsafe { input_tiles(&ctx, w, t, 0..g.c_in) };
        let task = |w: usize, t: usize, b: usize| {
            for grp in 0..ctx.sg {
                if ctx.group(t, grp).is_empty() {
                    break;
                }
                unsafe {
                    match pack.nr {
                        4 => products::<4>(&ctx, w, grp, b),
                        7 => products::<7>(&ctx, w, grp, b),
                        _ => products::<TG>(&ctx, w, grp, b),
                    }
                    if ctx.one_plane() {
                        outputs_8x8(&ctx, w, b);
                    } else {
                        outputs(&ctx, w, t, grp, b);
                    }
                }
            }
        };
        if ctx.shared_v {
            // Fewer task sets than workers: every worker would build the same `V`. Fill the planes (by rows),
            // build each set's `V` once, split by channels, then split its tasks by output channel block.
            let hg = pack.planes.map_or(0, |pl| pl.hg);
            par.run(workers, &|_, i| fill(0, 0..1, share(hg, workers, i)));
            let (blocks, slices) = (pack.blocks(g.c_out), g.c_in / 32);
            for t in 0..pack.tiles {
                // SAFETY: as above; workers write disjoint channels of the one V.
                par.run(workers, &|w, i| {
                    let mine = share(slices, workers, i);
                    unsafe { input_tiles(&ctx, w, t, 32 * mine.start..32 * mine.end) }
                });
                let chunks = blocks.min(workers);
                par.run(chunks, &|w, i| share(blocks, chunks, i).for_each(|b| task(w, t, b)));
            }
            continue;
        }
        if copies == 1 {
            drive(g, pack, false, par, &fill, &prep, &task);
            continue;
        }
        // One parallel call, no wait between the fill and the tasks: each worker fills all of its own copy
        // (a few KB) and runs a contiguous share of the (tile group, block) tasks. ResNet-20's 16x16 and 8x8
        // layers have two to four tasks; a separate parallel fill cost a second fork and join per layer.
        let (blocks, tasks) = (pack.blocks(g.c_out), pack.tiles * pack.blocks(g.c_out));
        let chunks = tasks.min(workers);
        par.run(chunks, &|w, chunk| {
            let mine = share(tasks, chunks, chunk);
            // Only the rows under this worker's tile groups: split by tiles, it then reads little of what
            // the other workers wrote in the layer before.
            fill(w, 0..1, ctx.plane_rows(mine.start / blocks..(mine.end - 1) / blocks + 1));
            let mut current = usize::MAX;
            for i in mine {
                let (t, b) = (i / blocks, i % blocks);
                if t != current {
                    prep(w, t);
                    current = t;
                }
                task(w, t, b);
            }
        });
    }
}

/// Whether the workers build one `V` together ([`Ctx::panel`]): more than one of them, fewer task sets than
/// workers (each would build the same `V`), at least as many channel blocks as workers, and the planes shared
/// (not banded). ResNet-18's 14x14x256 layers are one task set of two tile groups.
fn shares_v(pack: &ConvPack, m: usize, workers: usize) -> bool {
    workers > 1 && !pack.band && pack.tiles < workers && pack.blocks(m) >= workers
}

/// Writes padded rows `rows` of the channels-last planes (`[hg][wg][c]`, the tile grid's 4·n + 2 rows and
/// columns): `u8(x + 128)` inside, `pad` on the border and past the last whole tile's inputs.
///
/// # Safety
/// AVX-512 BW/VL available; `out` holds the pack's planes; `c` is a multiple of 16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn fill_rows(g: &ConvGeom, x: &[i8], pad: u8, rows: Range<usize>, out: *mut u8) {
    let (c, h, w) = (g.c_in, g.h_in, g.w_in);
    let wg = 4 * w.div_ceil(4) + 2;
    let flip = _mm_set1_epi8(-128);
    for r in rows {
        // SAFETY: row r of the planes; the loads read rows of the input (masked to its width).
        unsafe {
            let row = out.add(r * wg * c);
            if r == 0 || r > h {
                core::ptr::write_bytes(row, pad, wg * c);
                continue;
            }
            core::ptr::write_bytes(row, pad, c);
            core::ptr::write_bytes(row.add((w + 1) * c), pad, (wg - w - 1) * c);
            for c0 in (0..c).step_by(16) {
                for x0 in (0..w).step_by(16) {
                    let n = (w - x0).min(16);
                    let src = x.as_ptr().add(c0 * h * w + (r - 1) * w + x0);
                    let mask = ((1u32 << n) - 1) as u16;
                    let mut v: [__m128i; 16] = core::array::from_fn(|i| _mm_maskz_loadu_epi8(mask, src.add(i * h * w)));
                    transpose16(&mut v);
                    for (j, col) in v.iter().enumerate().take(n) {
                        _mm_storeu_si128(row.add((1 + x0 + j) * c + c0) as *mut __m128i, _mm_xor_si128(*col, flip));
                    }
                }
            }
        }
    }
}

/// [`outputs`] for an 8x8 output, whose four tiles are one group: a channel's plane is 64 contiguous bytes,
/// so the 16 channels of a vector leave as 16 whole-plane stores after one 16x16 dword transpose (the
/// residual's planes come in the same way), and the epilogue narrows a tile row's four vectors at once
/// ([`Epilogue::narrow`]). Dword `d = 2r + tx` of a plane is row `r`'s four bytes in tile column `tx`.
///
/// # Safety
/// As [`outputs`], with [`Ctx::one_plane`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn outputs_8x8(ctx: &Ctx<'_>, w: usize, b: usize) {
    let (_, m) = ctx.panel(w);
    let oc0 = b * MB;
    let rq = &ctx.p.requant;
    let epi = Epilogue::new(rq, ctx.p.residual, ctx.pack.residual_line);
    let lanes = [0, 1].map(|v| ChannelLanes::new(&epi, rq, oc0 + 16 * v, u16::MAX));
    // SAFETY: the bias has m entries, a multiple of MB (suits).
    let bias = [0, 1].map(|v| unsafe { _mm512_loadu_si512(ctx.pack.bq.as_ptr().add(oc0 + 16 * v) as *const _) });
    // Within each 128-bit lane, [`Epilogue::narrow`]'s (column, channel) bytes to (channel, column): a dword
    // per channel.
    // SAFETY: 64 bytes.
    let to_dwords = unsafe { _mm512_loadu_si512(TO_DWORDS.as_ptr() as *const _) };
    for v in 0..2 {
        let ch = oc0 + 16 * v;
        let res = ctx.res.map(|r| {
            let mut p = [_mm512_setzero_si512(); 16];
            for (k, pk) in p.iter_mut().enumerate() {
                // SAFETY: channels ch..ch + 16 < m of the 8x8 residual (and below, the output), 64 bytes each.
                *pk = unsafe { _mm512_loadu_si512(r.get().add((ch + k) * 64) as *const _) };
            }
            transpose_dwords(&mut p);
            p
        });
        let mut out = [_mm512_setzero_si512(); 16];
        for tile in 0..4 {
            // SAFETY: M holds 36 · 4 · MB entries.
            let mm = |xi: usize| unsafe { _mm512_loadu_si512(m.add((xi * 4 + tile) * MB + 16 * v) as *const _) };
            let col = |k: usize| at([mm(k), mm(6 + k), mm(12 + k), mm(18 + k), mm(24 + k), mm(30 + k)]);
            let cols = [col(0), col(1), col(2), col(3), col(4), col(5)];
            for i in 0..4 {
                let d = (4 * (tile / 2) + i) * 2 + tile % 2;
                let y = at(nth(&cols, i));
                let pre = |j: usize| {
                    let r = res.as_ref().map(|p| byte_of_dwords(p[d], j));
                    lanes[v].pre(&epi, _mm512_add_epi32(unscale(y[j], i, j), bias[v]), r)
                };
                out[d] = _mm512_shuffle_epi8(epi.narrow([pre(0), pre(1), pre(2), pre(3)]), to_dwords);
            }
        }
        transpose_dwords(&mut out);
        for (k, plane) in out.iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm512_storeu_si512(ctx.y.get().add((ch + k) * 64) as *mut _, *plane) };
        }
    }
}

/// `vpshufb` indices of a 4x4 byte transpose in each 128-bit lane.
const TO_DWORDS: [u8; 64] = {
    let mut t = [0; 64];
    let mut b = 0;
    while b < 64 {
        t[b] = (b % 16 % 4 * 4 + b % 16 / 4) as u8;
        b += 1;
    }
    t
};

/// Byte `j` of each dword, sign-extended.
#[inline]
#[target_feature(enable = "avx512f")]
fn byte_of_dwords(v: __m512i, j: usize) -> __m512i {
    match j {
        0 => _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(v)),
        1 => _mm512_srai_epi32::<24>(_mm512_slli_epi32::<16>(v)),
        2 => _mm512_srai_epi32::<24>(_mm512_slli_epi32::<8>(v)),
        _ => _mm512_srai_epi32::<24>(v),
    }
}

/// Transposes 16 rows of 16 dwords: dword j of row i goes to dword i of row j.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose_dwords(r: &mut [__m512i; 16]) {
    // t: per 128-bit lane l, rows 2i and 2i+1 interleaved at columns 4l, 4l+1 (t[2i]) and 4l+2, 4l+3 (t[2i+1]).
    let mut t = *r;
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + e]: per lane l, rows 4g..4g+4 at column 4l + e.
    let mut u = t;
    for g in 0..4 {
        u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    // Row 4l + e of the result: lane l of u[e], u[4 + e], u[8 + e], u[12 + e].
    for e in 0..4 {
        let (a0, a1) = (_mm512_shuffle_i32x4::<0x44>(u[e], u[4 + e]), _mm512_shuffle_i32x4::<0xEE>(u[e], u[4 + e]));
        let (b0, b1) =
            (_mm512_shuffle_i32x4::<0x44>(u[8 + e], u[12 + e]), _mm512_shuffle_i32x4::<0xEE>(u[8 + e], u[12 + e]));
        r[e] = _mm512_shuffle_i32x4::<0x88>(a0, b0);
        r[4 + e] = _mm512_shuffle_i32x4::<0xDD>(a0, b0);
        r[8 + e] = _mm512_shuffle_i32x4::<0x88>(a1, b1);
        r[12 + e] = _mm512_shuffle_i32x4::<0xDD>(a1, b1);
    }
}

/// Transposes 16 rows of 16 bytes: byte j of row i goes to byte i of row j.
#[inline]
#[target_feature(enable = "sse2")]
fn transpose16(r: &mut [__m128i; 16]) {
    let mut t = [_mm_setzero_si128(); 16];
    for i in 0..8 {
        t[i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
        t[i + 8] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
    }
    // u[h·8 + i] / u[h·8 + i + 4]: columns 8h..8h+4 / 8h+4..8h+8 of rows 4i..4i+4, a dword per column.
    let mut u = [_mm_setzero_si128(); 16];
    for h in 0..2 {
        for i in 0..4 {
            let (a, b) = (t[h * 8 + 2 * i], t[h * 8 + 2 * i + 1]);
            u[h * 8 + i] = _mm_unpacklo_epi16(a, b);
            u[h * 8 + i + 4] = _mm_unpackhi_epi16(a, b);
        }
    }
    // For the four columns c0.. of group q: pairs of columns, rows 0-7 and 8-15, then whole columns.
    for q in 0..4 {
        let u = &u[q * 4..q * 4 + 4];
        let (v0, v1) = (_mm_unpacklo_epi32(u[0], u[1]), _mm_unpackhi_epi32(u[0], u[1]));
        let (v2, v3) = (_mm_unpacklo_epi32(u[2], u[3]), _mm_unpackhi_epi32(u[2], u[3]));
        r[q * 4] = _mm_unpacklo_epi64(v0, v2);
        r[q * 4 + 1] = _mm_unpackhi_epi64(v0, v2);
        r[q * 4 + 2] = _mm_unpacklo_epi64(v1, v3);
        r[q * 4 + 3] = _mm_unpackhi_epi64(v1, v3);
    }
}

/// Entry `i` of each of six vector arrays: a row of a transform's first pass, made of its columns.
#[inline(always)]
pub(super) fn nth<const N: usize>(a: &[[__m512i; N]; 6], i: usize) -> [__m512i; 6] {
    [a[0][i], a[1][i], a[2][i], a[3][i], a[4][i], a[5][i]]
}

/// `Bᵀ d` for one column of six i16 vectors.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn bt(d: [__m512i; 6]) -> [__m512i; 6] {
    let (add, sub) = (_mm512_add_epi16, _mm512_sub_epi16);
    let x4 = |v| _mm512_slli_epi16::<2>(v);
    let x2 = |v| _mm512_slli_epi16::<1>(v);
    let (d42, d31) = (sub(d[4], d[2]), sub(d[3], d[1]));
    [
        add(sub(x4(sub(d[0], d[2])), d[2]), d[4]),
        sub(add(d[3], d[4]), x4(add(d[1], d[2]))),
        add(sub(d[4], d[3]), x4(sub(d[1], d[2]))),
        add(d42, x2(d31)),
        sub(d42, x2(d31)),
        add(sub(x4(sub(d[1], d[3])), d[3]), d[5]),
    ]
}

/// Builds `V` of task set `t` (its tile groups) into worker `w`'s panel (tiles past the last are left as they
/// are: their products are computed and dropped).
///
/// # Safety
/// AVX-512 F/BW available; the planes of the current image are filled; `w` < workers.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn input_tiles(ctx: &Ctx<'_>, w: usize, t: usize, chans: Range<usize>) {
    let (v, _) = ctx.panel(w);
    let (c, tx_n) = (ctx.c, ctx.tiles_x());
    let wg = 4 * tx_n + 2;
    let span = ctx.sg * ctx.pack.nr;
    let first = t * span;
    for ti in 0..span.min(ctx.pack.q - first) {
        let tile = first + ti;
        let (ty, tx) = (tile / tx_n, tile % tx_n);
        for c0 in chans.clone().step_by(32) {
            // SAFETY: the 6x6 window of a tile lies inside the padded planes; V has 36 · span · c entries.
            unsafe {
                let base = ctx.planes(w).add((4 * ty * wg + 4 * tx) * c + c0);
                let d = |r: usize, k: usize| {
                    _mm512_cvtepu8_epi16(_mm256_loadu_si256(base.add((r * wg + k) * c) as *const __m256i))
                };
                // Arrays built whole (zeroed ones cost a memset per tile).
                let col = |k: usize| bt([d(0, k), d(1, k), d(2, k), d(3, k), d(4, k), d(5, k)]);
                let cols = [col(0), col(1), col(2), col(3), col(4), col(5)];
                for i in 0..6 {
                    for (j, vij) in bt(nth(&cols, i)).iter().enumerate() {
                        _mm512_storeu_si512(v.add(((i * 6 + j) * span + ti) * c + c0) as *mut _, *vij);
                    }
                }
            }
        }
    }
}

/// `M[ξ] = Σ_c U[ξ] ⊙ V[ξ]` for output channel block `b` and tile group `grp` of the task set in worker `w`'s
/// panel.
///
/// # Safety
/// AVX-512 F + VNNI available; [`input_tiles`] ran on this worker for the task's group; `b` < blocks.
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn products<const TG: usize>(ctx: &Ctx<'_>, w: usize, grp: usize, b: usize) {
    let (v, m) = ctx.panel(w);
    let span = ctx.sg * TG;
    let pairs = ctx.c / 2;
    // SAFETY: the weight block holds 36 · c/2 · 64 entries; V and M are the worker's.
    unsafe {
        let u = ctx.pack.wq16.as_ptr().add(b * XI * pairs * 2 * MB);
        for xi in 0..XI {
            let mut acc = [[_mm512_setzero_si512(); 2]; TG];
            let vx = v.add((xi * span + grp * TG) * ctx.c) as *const i32;
            let ux = u.add(xi * pairs * 2 * MB);
            for cp in 0..pairs {
                let w0 = _mm512_loadu_si512(ux.add(cp * 2 * MB) as *const _);
                let w1 = _mm512_loadu_si512(ux.add(cp * 2 * MB + 32) as *const _);
                for (t, a) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_epi32(vx.add(t * pairs + cp).read_unaligned());
                    a[0] = _mm512_dpwssd_epi32(a[0], x, w0);
                    a[1] = _mm512_dpwssd_epi32(a[1], x, w1);
                }
            }
            for (t, a) in acc.iter().enumerate() {
                _mm512_storeu_si512(m.add((xi * TG + t) * MB) as *mut _, a[0]);
                _mm512_storeu_si512(m.add((xi * TG + t) * MB + 16) as *mut _, a[1]);
            }
        }
    }
}

/// `A'ᵀ m` for one column of six i32 vectors, wrapping, each row divided by the power of two it carries
/// ([`AT_SHIFT`]): rows `[6,4,4,1,1,0]`, `[0,4,-4,2,-2,0]`/2, `[0,4,4,4,4,0]`/4, `[0,4,-4,8,-8,24]`/4.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn at(m: [__m512i; 6]) -> [__m512i; 4] {
    let (add, sub, x2) = (_mm512_add_epi32, _mm512_sub_epi32, _mm512_slli_epi32::<1>);
    let (s12, d12, s34, d34) = (add(m[1], m[2]), sub(m[1], m[2]), add(m[3], m[4]), sub(m[3], m[4]));
    [
        add(x2(add(x2(add(m[0], s12)), m[0])), s34),
        add(x2(d12), d34),
        add(s12, s34),
        add(d12, x2(add(d34, add(x2(m[5]), m[5])))),
    ]
}

/// The power of two (log2) [`at`] drops from each output row.
pub(super) const AT_SHIFT: [u32; 4] = [0, 1, 2, 2];

/// `acc` from output `(i, j)` of `A'ᵀ M A'` as [`at`] leaves it, `576 · acc / 2^(AT_SHIFT[i] + AT_SHIFT[j])`
/// modulo 2³²: times `9⁻¹` that is `2^(6 - AT_SHIFT[i] - AT_SHIFT[j]) · acc` (mod 2³²), exact in i32 while
/// |acc| < 2²⁵, and an arithmetic shift leaves `acc`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn unscale(y: __m512i, i: usize, j: usize) -> __m512i {
    let v = _mm512_mullo_epi32(y, _mm512_set1_epi32(INV9));
    match 6 - AT_SHIFT[i] - AT_SHIFT[j] {
        6 => _mm512_srai_epi32::<6>(v),
        5 => _mm512_srai_epi32::<5>(v),
        4 => _mm512_srai_epi32::<4>(v),
        3 => _mm512_srai_epi32::<3>(v),
        _ => _mm512_srai_epi32::<2>(v),
    }
}

/// `Y = A'ᵀ M A' / 576` (exact, module docs), then bias, the epilogue and the stores, for the tiles of
/// group `t` and output channel block `b`.
///
/// # Safety
/// AVX-512 F/BW/VL available; [`products`] ran on this worker for (`t`, `b`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn outputs(ctx: &Ctx<'_>, w: usize, t: usize, grp: usize, b: usize) {
    let (_, m) = ctx.panel(w);
    let (hw, wo, tx_n) = (ctx.h * ctx.w, ctx.w, ctx.tiles_x());
    let oc0 = b * MB;
    let rq = &ctx.p.requant;
    let epi = Epilogue::new(rq, ctx.p.residual, ctx.pack.residual_line);
    let lanes = [0, 1].map(|v| ChannelLanes::new(&epi, rq, oc0 + 16 * v, u16::MAX));
    // SAFETY: the bias has m entries, a multiple of MB (suits).
    let bias = [0, 1].map(|v| unsafe { _mm512_loadu_si512(ctx.pack.bq.as_ptr().add(oc0 + 16 * v) as *const _) });
    let tg = ctx.pack.nr;
    for (ti, tile) in ctx.group(t, grp).enumerate() {
        let (ty, tx) = (tile / tx_n, tile % tx_n);
        let at_out = 4 * ty * wo + 4 * tx;
        // Rows and columns of this tile inside the output.
        let (rows_in, cols_in) = ((ctx.h - 4 * ty).min(4), (wo - 4 * tx).min(4));
        let whole = rows_in == 4 && cols_in == 4;
        for v in 0..2 {
            // SAFETY: M holds 36 · tg · MB entries.
            let mm = |xi: usize| unsafe { _mm512_loadu_si512(m.add((xi * tg + ti) * MB + 16 * v) as *const _) };
            let col = |k: usize| at([mm(k), mm(6 + k), mm(12 + k), mm(18 + k), mm(24 + k), mm(30 + k)]);
            let cols = [col(0), col(1), col(2), col(3), col(4), col(5)];
            let ch = oc0 + 16 * v;
            // The residual's 4x4 bytes per channel, turned into one vector of 16 channels per position.
            let res = ctx.res.map(|r| {
                let mut g: [__m128i; 16] = core::array::from_fn(|l| {
                    let at = r.get().wrapping_add((ch + l) * hw + at_out);
                    let row = |i: usize| {
                        if whole {
                            // SAFETY: 4 bytes of row i of this tile in channel ch + l < m.
                            unsafe { (at.add(i * wo) as *const i32).read_unaligned() }
                        } else if i < rows_in {
                            let mut b = [0u8; 4];
                            // SAFETY: the tile's first cols_in bytes of row i, inside the output.
                            unsafe {
                                core::ptr::copy_nonoverlapping(at.add(i * wo) as *const u8, b.as_mut_ptr(), cols_in)
                            };
                            i32::from_le_bytes(b)
                        } else {
                            0
                        }
                    };
                    _mm_setr_epi32(row(0), row(1), row(2), row(3))
                });
                transpose16(&mut g);
                g
            });
            let mut bytes = [_mm_setzero_si128(); 16];
            for i in 0..4 {
                for (j, y) in at(nth(&cols, i)).into_iter().enumerate() {
                    let r = res.as_ref().map(|g| _mm512_cvtepi8_epi32(g[i * 4 + j]));
                    bytes[i * 4 + j] = lanes[v].apply(&epi, _mm512_add_epi32(unscale(y, i, j), bias[v]), r);
                }
            }
            transpose16(&mut bytes);
            for (l, out) in bytes.iter().enumerate() {
                let mut rows = [0i32; 4];
                // SAFETY: 16 bytes into `rows`.
                unsafe { _mm_storeu_si128(rows.as_mut_ptr() as *mut __m128i, *out) };
                let at = ctx.y.get().wrapping_add((ch + l) * hw + at_out);
                for (i, &r) in rows.iter().enumerate().take(rows_in) {
                    if whole {
                        // SAFETY: row i of this tile in channel ch + l < m.
                        unsafe { (at.add(i * wo) as *mut i32).write_unaligned(r) };
                    } else {
                        // SAFETY: the tile's first cols_in bytes of row i, inside the output.
                        unsafe {
                            core::ptr::copy_nonoverlapping(r.to_le_bytes().as_ptr(), at.add(i * wo) as *mut u8, cols_in)
                        };
                    }
                }
            }
        }
    }
}
