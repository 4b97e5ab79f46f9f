//! What every convolution kernel shares, whatever its ISA: the [`ConvPack`] its registry entry prepares at
//! plan time (packed weights, bias, lane tables, scratch size), the executor's 64-byte aligned [`Scratch`],
//! and the [`Parallel`] workers it may split its work across. Plus the phase-plane frame of the x86 blocked
//! kernels, described below; the AArch64 kernels gather with [`super::im2col`] instead and keep only their
//! packed weights and scratch size here.
//!
//! Phase planes: the input image is rewritten once per run into padded **phase planes**: for stride (sh, sw), input channel
//! `c` becomes up to sh·sw planes of `hg × wg` elements, plane (a, b) holding padded rows `a, a+sh, …` and
//! columns `b, b+sw, …` (padding = 0.0 in f32, the zero point in int8). Only the phases some tap reads are
//! built: a 1x1 stride-2 convolution (a ResNet downsample) needs one plane per channel, not four. Every kernel tap (c, ky, kx) is then a
//! constant element offset from the output position on a grid `q = oy·wg + ox` (stride and dilation
//! included), so a run of grid positions reads contiguous memory: one vector load per tap, no im2col copy,
//! no bounds checks. The grid is `wg - w_out` columns wider than the output; those lanes are computed and
//! dropped ([`ConvPack::chunks`] lists which lanes are real and where they go), or the AVX2 kernels skip
//! them by tiling runs within rows ([`ConvPack::row_runs`]).
//!
//! Weights are packed once into blocks of `mr` output channels (zero rows pad the last block) and the
//! reduction is padded to a multiple of `kgroup` with zero weights (pointing at offset 0).

use super::ConvGeom;
use core::ops::Range;
use std::prelude::v1::*;

/// Runs work on a fixed set of workers: the executor's thread pool, or [`Serial`].
pub trait Parallel: Sync {
    /// Number of workers (>= 1).
    fn workers(&self) -> usize;
    /// Calls `f(worker, task)` exactly once for every task in `0..tasks`, on any workers (the calling thread
    /// is worker 0; no two concurrent calls share a worker index), and returns when all calls have returned.
    /// Tasks are claimed one by one, so a worker the OS does not schedule never delays the others.
    fn run(&self, tasks: usize, f: &(dyn Fn(usize, usize) + Sync));
}

/// One worker: the calling thread.
pub struct Serial;

impl Parallel for Serial {
    fn workers(&self) -> usize {
        1
    }
    fn run(&self, tasks: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        (0..tasks).for_each(|t| f(0, t))
    }
}

/// A raw pointer shared by the workers of one kernel call, each touching a disjoint part.
#[derive(Clone, Copy)]
pub(crate) struct Shared<T>(pub *mut T);
// SAFETY: only used to hand disjoint output / scratch regions to the tasks of one `Parallel::run`, which
// returns before the borrowed buffers do.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer (a method, so closures capture the Sync wrapper rather than its field).
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// Worker `w`'s share of `0..n` (contiguous, sizes differ by at most one).
pub fn share(n: usize, workers: usize, w: usize) -> Range<usize> {
    n * w / workers..n * (w + 1) / workers
}

/// Geometry of the phase planes of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planes {
    pub sh: usize,
    pub sw: usize,
    /// Phases built per axis: rows `a < pa`, columns `b < pb` (the ones the kernel's taps read).
    pub pa: usize,
    pub pb: usize,
    pub hg: usize,
    pub wg: usize,
    /// Channels interleaved per element ([`ConvPack::interleaved`]; 1 = one channel per plane).
    pub cgroup: usize,
    /// Elements of all planes of one image, plus slack so that whole tiles can be read past the grid end.
    pub len: usize,
}

impl Planes {
    /// Rows of row phase `a` that read input rows (`r·sh + a - pad_t`); the others are padding.
    pub fn valid_rows(&self, g: &ConvGeom, a: usize) -> Range<usize> {
        let r0 = g.pad_t.saturating_sub(a).div_ceil(self.sh).min(self.hg);
        r0..(g.h_in + g.pad_t).saturating_sub(a).div_ceil(self.sh).clamp(r0, self.hg)
    }
    /// Columns of column phase `b` that read input columns (`j·sw + b - pad_l`); the others are padding.
    pub fn valid_cols(&self, g: &ConvGeom, b: usize) -> Range<usize> {
        let first = g.pad_l.saturating_sub(b).div_ceil(self.sw).min(self.wg);
        first..(g.w_in + g.pad_l).saturating_sub(b).div_ceil(self.sw).clamp(first, self.wg)
    }
    /// Elements per plane.
    pub fn plane(&self) -> usize {
        self.hg * self.wg
    }
    /// Elements of one channel group's planes (one input channel's unless interleaved).
    pub fn per_channel(&self) -> usize {
        self.pa * self.pb * self.plane() * self.cgroup
    }
    /// Channel groups of `c` input channels: the units the planes are filled in.
    pub fn groups(&self, c: usize) -> usize {
        c.div_ceil(self.cgroup)
    }
}

/// Output lanes of 16 consecutive grid positions: which are real (bit i = position 16j + i) and the output
/// index (within one channel) of the first real one. Real lanes map to consecutive output indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Chunk {
    pub mask: u16,
    pub start: u32,
}

/// Everything a convolution kernel prepared at plan time. The weight fields hold whatever layout their
/// kernel documents (the x86 layouts are given below; AArch64: [`super::im2col::pack_weights`] in `wf` / `wq`
/// and [`super::im2col::pack_qbias`] in `bq`); the scalar reference packs nothing.
#[derive(Clone, Debug, Default)]
pub struct ConvPack {
    /// Output channels per weight block and grid positions per tile.
    pub mr: usize,
    pub nr: usize,
    /// Reduction length and its padded length (a multiple of the kernel's group of reduction steps).
    pub k: usize,
    pub kp: usize,
    pub planes: Option<Planes>,
    /// Grid positions of one image (`h_out · wg`) and tiles covering them.
    pub q: usize,
    pub tiles: usize,
    /// Output columns.
    pub w_out: usize,
    /// Set for the x86 row kernels: each tile is `s` runs of `w` consecutive outputs of a row (`(w, s)`),
    /// not grid positions.
    pub row_tiles: Option<(usize, usize)>,
    /// Each worker fills its own copy of the planes, only the rows its tiles read, in the same parallel
    /// call as its tiles (x86 `drive`, small layers): the scratch holds one copy per worker.
    pub band: bool,
    /// Element offset of reduction index k (order c, ky, kx) from a grid position, `kp` entries.
    pub offsets: Vec<u32>,
    /// One entry per 16 grid positions, `tiles · nr / 16` entries.
    pub chunks: Vec<Chunk>,
    /// Grid position of each 8-lane run, `nr / 8` per tile, when the tiles are runs within output rows
    /// ([`ConvPack::row_runs`]); empty: run `v` of tile `t` starts at position `nr · t + 8v`.
    pub starts: Vec<u32>,
    /// f32 weights `[m/mr][kp][mr]` and bias `[m]`.
    pub wf: Vec<f32>,
    pub bf: Vec<f32>,
    /// int8 weights `[m/mr][kp/4][mr][4]` (VNNI) and the bias with the zero-point correction folded in.
    pub wq: Vec<i8>,
    /// int8 weights widened to i16, `[m/mr][kp/2][mr][2]` (AVX2 `vpmaddwd`).
    pub wq16: Vec<i16>,
    pub bq: Vec<i32>,
    /// The fused residual's requantization as one i32 line, where [`crate::quant::ResidualLine::fit`] finds
    /// one (x86 AVX-512 int8 kernels).
    pub residual_line: Option<crate::quant::ResidualLine>,
    /// Scratch bytes each worker needs besides the planes (its packed input tile; AArch64: its im2col
    /// rows, panel and padded row).
    pub panel_bytes: usize,
    /// Bytes per plane element (4 for f32, 1 for int8).
    pub elem: usize,
    /// `wf` holds Winograd F(2x2, 3x3) weight transforms and the planes are those of the tile grid
    /// (x86 AVX-512 and AVX2 f32, `x86::winograd`).
    pub winograd: bool,
    /// Set for the x86 int8 kernels that read the planar input in place with byte permutes (AVX-512 VBMI):
    /// no planes, `tiles` counts their blocks of 16 lanes.
    pub in_place: InPlace,
}

/// Which kernel reads the input in place ([`ConvPack::in_place`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InPlace {
    /// None: the kernel reads planes.
    #[default]
    No,
    /// Winograd with 16 tiles in the lanes: int8 F(4x4, 3x3) (`x86::winograd_lanes_i8`), f32 F(2x2, 3x3)
    /// (`x86::winograd_lanes_f32`).
    Winograd,
    /// 3x3 stride 2 with 16 output positions in the lanes (`x86::stride2_i8`).
    Stride2,
}

impl ConvPack {
    /// Geometry, offsets and lane tables for `g` (groups must be 1). `nr` must be a multiple of 16.
    pub fn new(g: &ConvGeom, mr: usize, nr: usize, kgroup: usize, elem: usize) -> ConvPack {
        let mut pack = ConvPack::with_groups(g, mr, nr, 1, elem);
        pack.kp = pack.k.next_multiple_of(kgroup);
        pack.offsets.resize(pack.kp, 0);
        pack
    }

    /// Like [`ConvPack::new`] for byte planes that interleave `cgroup` channels per element (channel `c` is
    /// byte `c % cgroup` of group `c / cgroup`; missing channels of the last group hold padding): a tile's
    /// `cgroup` reduction steps of one tap are then one contiguous run of `nr · cgroup` bytes, what
    /// `vpdpbusd` reads, with no panel copy. `offsets` holds one byte offset per (group, ky, kx) and `kp`
    /// counts `cgroup` reduction steps per entry.
    pub fn interleaved(g: &ConvGeom, mr: usize, nr: usize, cgroup: usize) -> ConvPack {
        let mut pack = ConvPack::with_groups(g, mr, nr, cgroup, 1);
        pack.kp = pack.offsets.len() * cgroup;
        pack
    }

    fn with_groups(g: &ConvGeom, mr: usize, nr: usize, cgroup: usize, elem: usize) -> ConvPack {
        debug_assert!(g.groups == 1 && nr.is_multiple_of(16));
        let (sh, sw) = (g.stride_h, g.stride_w);
        let (max_ry, max_rx) = ((g.kh - 1) * g.dil_h / sh, (g.kw - 1) * g.dil_w / sw);
        let (hg, wg) = (g.h_out + max_ry, g.w_out + max_rx);
        // Phases read by some tap: `(k · dil) % s` for every k, at most the largest of them + 1.
        let phases = |k: usize, dil: usize, s: usize| (0..k).map(|i| i * dil % s).max().unwrap_or(0) + 1;
        let (pa, pb) = (phases(g.kh, g.dil_h, sh), phases(g.kw, g.dil_w, sw));
        let plane = hg * wg;
        let cgroups = g.c_in.div_ceil(cgroup);
        let mut offsets = Vec::with_capacity(cgroups * g.kh * g.kw);
        for c in 0..cgroups {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let (a, ry) = ((ky * g.dil_h) % sh, (ky * g.dil_h) / sh);
                    let (b, rx) = ((kx * g.dil_w) % sw, (kx * g.dil_w) / sw);
                    offsets.push(((((c * pa + a) * pb + b) * plane + ry * wg + rx) * cgroup) as u32);
                }
            }
        }
        let q = g.h_out * wg;
        let tiles = q.div_ceil(nr);
        let max_off = offsets.iter().copied().max().unwrap_or(0) as usize;
        let len = (cgroups * pa * pb * plane * cgroup).max(max_off + tiles * nr * cgroup);
        let chunks = (0..tiles * nr / 16)
            .map(|j| {
                let mut chunk = Chunk::default();
                for i in (0..16).rev() {
                    let p = 16 * j + i;
                    if p < q && p % wg < g.w_out {
                        chunk.mask |= 1 << i;
                        chunk.start = ((p / wg) * g.w_out + p % wg) as u32;
                    }
                }
                chunk
            })
            .collect();
        ConvPack {
            mr,
            nr,
            k: g.k(),
            kp: 0,
            planes: Some(Planes { sh, sw, pa, pb, hg, wg, cgroup, len }),
            q,
            tiles,
            w_out: g.w_out,
            offsets,
            chunks,
            elem,
            ..ConvPack::default()
        }
    }

    /// Re-tiles a pack as runs of 8 lanes that each hold one run of at most 8 outputs of a row (rows split
    /// evenly: 14 = 7 + 7), `nr / 8` runs per tile, where that takes fewer tiles than the contiguous grid,
    /// whose runs of `nr` carry the grid's padding columns: an 8x8 output of a 3x3 convolution is 64 real
    /// lanes of 80 on its 10-wide grid with 16-position tiles (96 with 32), and of 64 in rows. A tile's real
    /// lanes still map to consecutive outputs. `read`: positions the kernel loads from a run's start, 8 (each
    /// run alone) or 16 (a pair of runs as one: only outputs 16k wide, whose pairs are whole row pieces).
    pub fn row_runs(&mut self, g: &ConvGeom, read: usize) {
        let Some(pl) = self.planes.as_mut() else { return };
        let per_tile = self.nr / 8;
        let per_row = g.w_out.div_ceil(8);
        let vectors = g.h_out * per_row;
        let whole = read == 8 || g.w_out.is_multiple_of(16);
        if !matches!(self.nr, 16 | 32) || !whole || vectors.div_ceil(per_tile) >= self.tiles {
            return;
        }
        // (grid position, output index, length) of each run, in output order; the last tile is completed
        // with empty runs that read the last real one's memory.
        let mut runs: Vec<(usize, usize, usize)> = (0..vectors)
            .map(|v| {
                let (oy, j) = (v / per_row, v % per_row);
                let (ox, end) = (g.w_out * j / per_row, g.w_out * (j + 1) / per_row);
                (oy * pl.wg + ox, oy * g.w_out + ox, end - ox)
            })
            .collect();
        runs.resize(vectors.next_multiple_of(per_tile), (runs[vectors - 1].0, 0, 0));
        let lanes = |n: usize| (1u16 << n) - 1;
        self.chunks = runs
            .chunks_exact(2)
            .map(|r| Chunk { mask: lanes(r[0].2) | lanes(r[1].2) << 8, start: r[0].1 as u32 })
            .collect();
        self.starts = runs.iter().map(|r| r.0 as u32).collect();
        self.tiles = runs.len() / per_tile;
        // A filler run reads from the last real run's start.
        let max_off = self.offsets.iter().copied().max().unwrap_or(0) as usize;
        let last = self.starts.iter().copied().max().unwrap_or(0) as usize;
        pl.len = pl.len.max(max_off + (last + read) * pl.cgroup);
    }

    /// Re-tiles a pack for the x86 row kernels: tile `t` is runs `s·t .. s·t + s` of `w` consecutive outputs
    /// of a row ([`ConvPack::row_tiles`]); the grid lane tables are dropped.
    pub fn tile_by_rows(&mut self, g: &ConvGeom, w: usize, s: usize) {
        self.tiles = (g.h_out * g.w_out / w).div_ceil(s);
        self.row_tiles = Some((w, s));
        self.chunks.clear();
    }

    /// Grid position of 8-lane run `v` (below `nr / 8`) of tile `t`.
    pub fn run_start(&self, t: usize, v: usize) -> usize {
        let per_tile = self.nr / 8;
        self.starts.get(per_tile * t + v).map_or(self.nr * t + 8 * v, |&s| s as usize)
    }

    /// Whether the packed weights replace the OIHW ones: the planner then drops those, and the kernel must
    /// not read `weight` from its parameters.
    pub fn holds_weights(&self) -> bool {
        !(self.wf.is_empty() && self.wq.is_empty() && self.wq16.is_empty())
    }

    /// Weight blocks of `mr` output channels.
    pub fn blocks(&self, m: usize) -> usize {
        m.div_ceil(self.mr)
    }

    /// Scratch bytes for `workers` workers: the planes (64-byte aligned; one copy per worker when
    /// [`ConvPack::band`]) and one panel per worker.
    pub fn scratch_bytes(&self, workers: usize) -> usize {
        let copies = if self.band { workers } else { 1 };
        copies * self.plane_bytes() + workers * self.panel_bytes.next_multiple_of(64)
    }

    /// Bytes of one copy of the planes, 64-byte aligned.
    pub fn plane_bytes(&self) -> usize {
        self.planes.map_or(0, |p| p.len * self.elem).next_multiple_of(64)
    }

    /// The plane rows (of every phase plane) that the real lanes of tiles `tiles` read: their output rows and
    /// the rows below that the kernel reaches. Not empty for a non-empty range of tiles.
    pub fn tile_rows(&self, tiles: Range<usize>) -> Range<usize> {
        let Some(pl) = self.planes else { return 0..0 };
        if tiles.is_empty() || self.q == 0 {
            return 0..0;
        }
        let h_out = self.q / pl.wg;
        let (first, last) = match self.row_tiles {
            Some((w, s)) => (tiles.start * w * s / self.w_out, (tiles.end * w * s - 1) / self.w_out),
            None => {
                let runs = self.nr / 8;
                (self.run_start(tiles.start, 0) / pl.wg, (self.run_start(tiles.end - 1, runs - 1) + 7) / pl.wg)
            }
        };
        first.min(h_out - 1)..(last.min(h_out - 1) + 1 + pl.hg - h_out).min(pl.hg)
    }

    /// f32 weights (OIHW, `m` rows of `k`) into `[m/mr][kp][mr]`, and the bias.
    pub fn pack_f32(&mut self, m: usize, w: &[f32], bias: &[f32]) {
        let (mr, kp) = (self.mr, self.kp);
        self.wf = vec![0.0; self.blocks(m) * kp * mr];
        for (oc, row) in w.chunks_exact(self.k).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                self.wf[(oc / mr * kp + k) * mr + oc % mr] = v;
            }
        }
        self.bf = bias.to_vec();
    }

    /// int8 weights into groups of `kgroup` reduction steps per row, `[m/mr][kp/kgroup][mr][kgroup]`, as
    /// `T`, and the bias corrected for activations fed as `x + 128` (docs/int8-spec.md, section 11.2):
    /// `bias - (x_zp + 128) · Σ w`. It fits i32 because the planner bounds `|bias| + K · 255 · 127`.
    pub fn pack_i8<T: Copy + Default + From<i8>>(
        &mut self,
        m: usize,
        kgroup: usize,
        w: &[i8],
        bias: &[i32],
        x_zp: i32,
    ) -> Vec<T> {
        let (mr, kp) = (self.mr, self.kp);
        let mut out = vec![T::default(); self.blocks(m) * kp * mr];
        for (oc, row) in w.chunks_exact(self.k).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                out[((oc / mr * kp + k / kgroup * kgroup) * mr) + (oc % mr) * kgroup + k % kgroup] = T::from(v);
            }
        }
        self.bq = corrected_bias(w, self.k, bias, x_zp);
        out
    }
}

impl ConvPack {
    /// int8 weights for [`ConvPack::interleaved`] planes, `[m/mr][kp/g][mr][g]` with `g = cgroup` and the
    /// reduction entry order of `offsets` (channel group, ky, kx; byte j = channel `g·group + j`, zero past
    /// `c_in`), plus the corrected bias as in [`ConvPack::pack_i8`].
    pub fn pack_i8_interleaved(&mut self, g: &ConvGeom, w: &[i8], bias: &[i32], x_zp: i32) -> Vec<i8> {
        let cg = self.planes.map_or(1, |p| p.cgroup);
        let (mr, kp, taps) = (self.mr, self.kp, g.kh * g.kw);
        let mut out = vec![0i8; self.blocks(g.c_out) * kp * mr];
        for (oc, row) in w.chunks_exact(self.k).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                let (c, tap) = (k / taps, k % taps);
                let entry = c / cg * taps + tap;
                out[(oc / mr * kp / cg + entry) * mr * cg + (oc % mr) * cg + c % cg] = v;
            }
        }
        self.bq = corrected_bias(w, self.k, bias, x_zp);
        out
    }
}

/// `bias - (x_zp + 128) · Σ w` per output channel (docs/int8-spec.md, section 11.2).
pub(crate) fn corrected_bias(w: &[i8], k: usize, bias: &[i32], x_zp: i32) -> Vec<i32> {
    w.chunks_exact(k)
        .zip(bias)
        .map(|(row, &b)| {
            let sum: i64 = row.iter().map(|&v| v as i64).sum();
            (b as i64 - (x_zp as i64 + 128) * sum) as i32
        })
        .collect()
}

/// A zeroed byte buffer whose usable part starts 64-byte aligned: the executor's kernel scratch (one per
/// executor, sized for the largest step) and the one-shot calls of tests and benches.
#[derive(Default)]
pub struct Scratch {
    buf: Vec<u8>,
    base: usize,
    len: usize,
}

impl Scratch {
    pub fn new(len: usize) -> Scratch {
        let buf = vec![0u8; len + 64];
        let base = buf.as_ptr().align_offset(64).min(64);
        Scratch { buf, base, len }
    }

    /// The `len` aligned bytes.
    pub fn bytes(&mut self) -> &mut [u8] {
        &mut self.buf[self.base..self.base + self.len]
    }
}

/// Writes rows `rows` of the phase planes of one image's channels `chans` (`x` = that image, NCHW) into
/// `out`, which starts at channel `chans.start`'s first plane, mapping each value with `map` and padding
/// with `pad`.
#[allow(clippy::too_many_arguments)]
pub fn fill_planes<T: Copy, U: Copy>(
    g: &ConvGeom,
    p: &Planes,
    x: &[T],
    chans: Range<usize>,
    rows: Range<usize>,
    map: impl Fn(T) -> U,
    pad: U,
    out: &mut [U],
) {
    debug_assert_eq!(p.cgroup, 1);
    fill_planes_with(g, p, x, chans, rows, pad, out, |dst, src, sw| {
        let src = src[0].expect("channel groups of one hold their channel");
        if sw == 1 {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = map(s);
            }
        } else {
            for (d, &s) in dst.iter_mut().zip(src.iter().step_by(sw)) {
                *d = map(s);
            }
        }
    });
}

/// The plane frame of [`fill_planes`] for any channel grouping: rows `rows` of the planes of the channel
/// groups `groups` of one image go to `out` (starting at the first group's planes), padding elements get
/// `pad`, and `row(dst, src, sw)` writes the inside of one plane row: `dst` = its valid columns (`cgroup`
/// elements each), `src[j]` = channel j of the group's input row from the first valid column on (None past
/// the last channel), read every `sw`-th element.
#[allow(clippy::too_many_arguments)]
#[inline(always)] // with its row function: out of line, the int8 fill cost ResNet-20 2% more (Zen 4)
pub fn fill_planes_with<T: Copy, U: Copy>(
    g: &ConvGeom,
    p: &Planes,
    x: &[T],
    groups: Range<usize>,
    rows: Range<usize>,
    pad: U,
    out: &mut [U],
    row: impl Fn(&mut [U], &[Option<&[T]>], usize),
) {
    let (cg, hw) = (p.cgroup, g.h_in * g.w_in);
    let (plane, row_len) = (p.plane() * cg, p.wg * cg);
    let rows = rows.start.min(p.hg)..rows.end.min(p.hg);
    if rows.is_empty() {
        return;
    }
    let g0 = groups.start;
    for grp in groups {
        for a in 0..p.pa {
            for b in 0..p.pb {
                let plane = &mut out[(((grp - g0) * p.pa + a) * p.pb + b) * plane..][..plane];
                let dst = &mut plane[rows.start * row_len..rows.end * row_len];
                let Range { start: first, end } = p.valid_cols(g, b);
                let row_of = |r: usize| (r * p.sh + a).checked_sub(g.pad_t).filter(|&y| y < g.h_in);
                // Padding first, in one pass over the rows (per-row fills of one or two elements cost more
                // than the copy on small layers); the rows' valid columns are overwritten below.
                if first > 0 || end < p.wg || row_of(rows.start).is_none() || row_of(rows.end - 1).is_none() {
                    dst.fill(pad);
                }
                for (r, dst_row) in rows.clone().zip(dst.chunks_exact_mut(row_len)) {
                    let Some(iy) = row_of(r) else { continue };
                    if first == end {
                        // A phase column with no input column in it (stride wider than the padded row).
                        continue;
                    }
                    let x0 = first * p.sw + b - g.pad_l;
                    let mut src = [None; 4];
                    for (j, s) in src.iter_mut().enumerate().take(cg) {
                        let c = grp * cg + j;
                        *s = (c < g.c_in).then(|| &x[c * hw + iy * g.w_in + x0..(c + 1) * hw]);
                    }
                    row(&mut dst_row[first * cg..end * cg], &src[..cg], p.sw);
                }
            }
        }
    }
}
