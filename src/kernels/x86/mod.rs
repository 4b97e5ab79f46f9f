//! x86_64 kernels: AVX2 + FMA, AVX-512 and AVX-512 VNNI tiers of the blocked convolution
//! ([`super::packed`]), f32 and int8, max pooling, quantization and the int8 residual add. Each entry point is
//! a plain fn that the registry lists under the tier it needs; the planner only picks it when the CPU has
//! that tier ([`super::Isa::detect`], `RESEDGE_ISA`), which is what makes the `#[target_feature]` calls
//! inside sound. Callers outside the planner (tests, benches) must likewise only call kernels with
//! `isa <= Isa::detect()`.
//!
//! Work split ([`drive`]), per image: small layers give each worker one chunk of tiles, whose plane rows it
//! fills into its own copy; larger ones fill the planes once (split by input channel), then cut the (tile,
//! weight block) pairs into two contiguous chunks per worker. Every output element is computed by the same
//! code whatever the worker count, so results (f32 included) do not depend on the number of threads.

mod avx2;
mod conv_f32;
mod conv_i8;
mod eltwise;
mod fill;
mod pool;
mod quantize;
mod requant;
mod stride2_i8;
mod winograd;
mod winograd_i8;
mod winograd_lanes_f32;
mod winograd_lanes_i8;

pub use conv_f32::{F32_CONV_AVX2, F32_CONV_AVX512};
pub use conv_i8::{QS8_CONV_AVX2, QS8_CONV_VNNI};
pub use eltwise::{qs8_add_avx2, qs8_add_avx512};
pub use pool::{f32_maxpool_avx2, qs8_maxpool_avx2, qs8_maxpool_avx512};
pub use quantize::quantize_avx512;

pub(crate) use super::packed::Shared;
use super::packed::{share, ConvPack, Parallel};
use super::ConvGeom;
use core::ops::Range;

/// Convolutions the blocked kernels handle: no groups, and outputs that fit u32 indices.
pub(crate) fn supports(g: &ConvGeom) -> bool {
    g.groups == 1 && g.input_len().max(g.output_len()) < u32::MAX as usize / 4
}

/// Shared planes (layers too large for bands, [`set_band`]) below this many elements are filled by the
/// calling thread alone (a wake-up costs more). The workers spin between layers, so splitting pays early:
/// before the bands, at 2^15 the CIFAR nets' 32x32 Winograd planes (18.5K elements) were filled serially,
/// and ResNet-20 f32 on 2 threads took 0.750 ms against 0.681 at 2^12 (Zen 3).
const PARALLEL_FILL: usize = 1 << 12;

/// Layers below this many multiply-accumulates per image are small: one chunk of tasks per worker, each
/// filling the planes it reads ([`drive`]).
const SMALL_LAYER_MACS: u64 = 1 << 25;

/// Marks the pack of geometry `g` (the one [`drive`] gets) as filling its planes in bands when it is small
/// ([`ConvPack::band`]).
pub(crate) fn set_band(pack: &mut ConvPack, g: &ConvGeom) {
    pack.band = pack.planes.is_some() && g.macs() / (g.n.max(1) as u64) < SMALL_LAYER_MACS;
}

/// Whether [`drive`] fills the planes in bands, one copy per worker: small layers with a tile per worker
/// (bands split tiles only; a linear layer's one tile is split by weight blocks instead).
pub(crate) fn banded(pack: &ConvPack, workers: usize) -> bool {
    pack.band && workers > 1 && pack.tiles >= workers
}

/// The blocked convolution loop of one image: fill the planes (`fill(worker, channel groups, rows)` writes
/// those rows of those groups into worker `worker`'s copy), then run the tasks of each worker:
/// `tile(worker, t)` once per tile before its blocks, `block(worker, t, b)` per task.
///
/// - Small layers ([`banded`]): one call; each worker takes one chunk of tiles, fills the plane rows its
///   tiles read into its own copy, and runs them. No wait between fill and tasks, and each worker reads
///   the rows it wrote (mostly from its own outputs of the layer before, split the same way): on Zen 4 with
///   2 threads, ResNet-20 f32 went from 0.458 to 0.425 ms (int8 unchanged, 0.22 ms).
/// - Otherwise the planes are filled once (split by channel when large), then the tasks run.
///
/// Tasks go tile-major (a tile's input stays in cache across the weight blocks) unless `weights_first`
/// and either the tiles are few (large weight sets, 7x7x512 layers, then stream only once) or rereading
/// the planes once per block moves fewer bytes than rereading the weights once per tile (ResNet's 7x7
/// stem: 37 KB of weights over 805 tiles; block-major took it from 4.1 to 3.4 ms on Zen 3).
pub(crate) fn drive(
    g: &ConvGeom,
    pack: &ConvPack,
    weights_first: bool,
    par: &dyn Parallel,
    fill: &(dyn Fn(usize, Range<usize>, Range<usize>) + Sync),
    tile: &(dyn Fn(usize, usize) + Sync),
    block: &(dyn Fn(usize, usize, usize) + Sync),
) {
    let workers = par.workers();
    let plane_elems = pack.planes.map_or(0, |p| p.len);
    let groups = pack.planes.map_or(g.c_in, |p| p.groups(g.c_in));
    let all_rows = 0..pack.planes.map_or(0, |p| p.hg);
    let blocks = pack.blocks(g.c_out);
    let tiles = pack.tiles;
    if banded(pack, workers) {
        let chunks = tiles.min(workers);
        return par.run(chunks, &|w, chunk| {
            let mine = share(tiles, chunks, chunk);
            fill(w, 0..groups, pack.tile_rows(mine.clone()));
            for t in mine {
                tile(w, t);
                (0..blocks).for_each(|b| block(w, t, b));
            }
        });
    }
    if workers == 1 || plane_elems < PARALLEL_FILL {
        fill(0, 0..groups, all_rows);
    } else {
        // One part per worker, as for the tasks below (Zen 4, 2 threads: ResNet-20 int8 0.220 -> 0.213 ms):
        // by channel group, or by row where the groups are fewer (channels-last planes have one).
        if groups >= workers {
            par.run(workers, &|_, i| fill(0, share(groups, workers, i), all_rows.clone()));
        } else {
            par.run(workers, &|_, i| fill(0, 0..groups, share(all_rows.len(), workers, i)));
        }
    }
    // Each order rereads one operand from L2 per pass: tile-major all weights per tile, block-major all
    // planes per block. Take the smaller traffic.
    let weight_bytes = pack.wf.len() * 4 + pack.wq.len() + pack.wq16.len() * 2;
    let block_major = weights_first && (tiles <= 4 || blocks * plane_elems * pack.elem < tiles * weight_bytes);
    // Two chunks per worker balance the load; more cost more than they gain: every claim and completion
    // bounces the pool's counters between cores, and a worker that moves to another chunk leaves the data
    // it just touched (two instead of four took ResNet-18 f32 from 15.1 to 14.4 ms on Zen 4, 2 threads).
    let chunks = if workers == 1 { 1 } else { (tiles * blocks).min(2 * workers) };
    par.run(chunks, &|w, chunk| {
        let mut current = usize::MAX;
        for t in share(tiles * blocks, chunks, chunk) {
            let (ti, bi) = if block_major { (t % tiles, t / tiles) } else { (t / blocks, t % blocks) };
            if ti != current {
                tile(w, ti);
                current = ti;
            }
            block(w, ti, bi);
        }
    });
}

/// The tasks of the lane-Winograd kernels: `blocks x groups` (block-major) in one contiguous share per worker.
/// A worker builds each block's transformed input once, `prep(worker, block)`, before the first of that
/// block's groups it meets, then runs `group(worker, block, group)`; a block split between workers is
/// transformed by both.
pub(crate) fn lane_blocks(
    par: &dyn Parallel,
    blocks: usize,
    groups: usize,
    prep: &(dyn Fn(usize, usize) + Sync),
    group: &(dyn Fn(usize, usize, usize) + Sync),
) {
    let tasks = blocks * groups;
    let chunks = tasks.min(par.workers());
    par.run(chunks, &|w, chunk| {
        let mut current = usize::MAX;
        for i in share(tasks, chunks, chunk) {
            let (b, g) = (i / groups, i % groups);
            if b != current {
                prep(w, b);
                current = b;
            }
            group(w, b, g);
        }
    });
}

/// The planes of `workers` workers in the scratch: one copy, or one per worker ([`banded`]).
#[derive(Clone, Copy)]
pub(crate) struct PlaneCopies<T> {
    base: Shared<T>,
    /// Elements between two workers' copies (0: one shared copy).
    stride: usize,
}

impl<T> PlaneCopies<T> {
    /// Worker `w`'s planes.
    #[inline(always)]
    pub fn of(self, w: usize) -> *mut T {
        self.base.get().wrapping_add(w * self.stride)
    }
}

/// Splits the scratch into the planes (as `T`) and the per-worker panels.
pub(crate) fn split_scratch<T: bytemuck::Pod>(
    pack: &ConvPack,
    workers: usize,
    scratch: &mut [u8],
) -> (PlaneCopies<T>, Shared<u8>) {
    let copies = if banded(pack, workers) { workers } else { 1 };
    let (planes, panels) = scratch.split_at_mut(copies * pack.plane_bytes());
    let planes: &mut [T] = bytemuck::cast_slice_mut(planes);
    let stride = if copies > 1 { pack.plane_bytes() / size_of::<T>() } else { 0 };
    (PlaneCopies { base: Shared(planes.as_mut_ptr()), stride }, Shared(panels.as_mut_ptr()))
}

/// Stride between two workers' panels in the scratch.
pub(crate) fn panel_stride(pack: &ConvPack) -> usize {
    pack.panel_bytes.next_multiple_of(64)
}

/// Output channels per task of the row kernels (channels in the lanes, two vectors).
pub(crate) const ROW_MR: usize = 32;

/// The row kernels' (positions per run, runs per task) for outputs they suit: narrow outputs, where the
/// grid tiles waste many padding lanes (7 wide: 49 of 64 real), and single positions (a linear layer:
/// the grid used 1 lane of 32, and ResNet-18's classifier took 0.297 ms in f32 and 0.085 ms in int8 on
/// Zen 4, against 0.089 and 0.031 ms as rows). None: the grid tile kernel, also for other 1x1 kernels,
/// whose grid has no padding columns: their short reductions made the row kernel's per-channel output
/// scatter the larger cost (ResNet-18's downsamples on Zen 4: int8 0.315 -> 0.233 ms, f32 0.666 -> 0.557
/// ms).
pub(crate) fn row_shape(g: &ConvGeom) -> Option<(usize, usize)> {
    if g.h_out * g.w_out == 1 {
        return Some((1, 1));
    }
    if g.kh * g.kw == 1 {
        return None;
    }
    match g.w_out {
        7 => Some((7, 1)),
        8 => Some((8, 1)),
        14 | 28 => Some((14, 1)),
        _ => None,
    }
}

/// The runs of one image for a row kernel: `W` consecutive outputs of one row each.
pub(crate) struct Runs {
    per_row: usize,
    pub count: usize,
    w: usize,
    wg: usize,
    w_out: usize,
}

impl Runs {
    pub fn new(w: usize, hw: usize, w_out: usize, wg: usize) -> Runs {
        Runs { per_row: w_out / w, count: hw / w, w, wg, w_out }
    }
    /// Grid position and output index of run `i`'s first output (past the last run: the last run's).
    pub fn start(&self, i: usize) -> (usize, usize) {
        let i = i.min(self.count - 1);
        let (oy, ox) = (i / self.per_row, i % self.per_row * self.w);
        (oy * self.wg + ox, oy * self.w_out + ox)
    }
}

/// Lane mask of the channels below `m` in the 16 from `oc`.
#[inline(always)]
pub(crate) fn live(m: usize, oc: usize) -> u16 {
    ((1u32 << m.saturating_sub(oc).min(16)) - 1) as u16
}
