//! x86_64 kernels: AVX2 + FMA, AVX-512 and AVX-512 VNNI tiers of the blocked convolution
//! ([`super::packed`]), f32 and int8, max pooling, quantization and the int8 residual add. Each entry point is a
//! plain fn that the registry lists under the tier it needs; the planner only picks it when the CPU has that
//! tier ([`super::Isa::detect`], `RESEDGE_ISA`), which is what makes the `#[target_feature]` calls inside sound. Callers
//! outside the planner (tests, benches) must likewise only call kernels with `isa <= Isa::detect()`.
//!
//! Work split: per image, the phase planes are filled (split by input channel when large), then the
//! (tile, weight block) pairs, tile-major, are cut into one or two contiguous chunks per worker. Every
//! output element is computed by the same code whatever the worker count, so results (f32 included) do not
//! depend on the number of threads.

mod avx2;
mod conv_f32;
mod conv_i8;
mod eltwise;
mod fill;
mod pool;
mod quantize;
mod winograd;

pub use conv_f32::{F32_CONV_AVX2, F32_CONV_AVX512};
pub use conv_i8::{QS8_CONV_AVX2, QS8_CONV_VNNI};
pub use eltwise::{qs8_add_avx2, qs8_add_avx512};
pub use pool::{f32_maxpool_avx2, qs8_maxpool_avx2};
pub use quantize::quantize_avx512;

pub(crate) use super::packed::Shared;
use super::packed::{share, ConvPack, Parallel};
use super::ConvGeom;

/// Convolutions the blocked kernels handle: no groups, and outputs that fit u32 indices.
pub(crate) fn supports(g: &ConvGeom) -> bool {
    g.groups == 1 && g.input_len().max(g.output_len()) < u32::MAX as usize / 4
}

/// Planes below this many elements are filled by the calling thread alone (a wake-up costs more). The
/// workers spin between layers, so splitting pays early: at 2^15 the CIFAR nets' 32x32 Winograd planes
/// (18.5K elements) were filled serially, and ResNet-20 f32 on 2 threads took 0.750 ms against 0.681 now
/// (Zen 3).
const PARALLEL_FILL: usize = 1 << 12;

/// Layers below this many multiply-accumulates take one chunk of tasks per worker ([`drive`]).
const SMALL_LAYER_MACS: u64 = 1 << 25;

/// The blocked convolution loop of one image: fill the planes (`fill(channel groups)`), then run the tasks of
/// each worker: `tile(worker, t)` once per tile before its blocks, `block(worker, t, b)` per task.
/// Tasks go tile-major (a tile's input stays in cache across the weight blocks) unless `weights_first`
/// and either the tiles are few (large weight sets, 7x7x512 layers, then stream only once) or rereading
/// the planes once per block moves fewer bytes than rereading the weights once per tile (ResNet's 7x7
/// stem: 37 KB of weights over 805 tiles; block-major took it from 4.1 to 3.4 ms on Zen 3).
pub(crate) fn drive(
    g: &ConvGeom,
    pack: &ConvPack,
    weights_first: bool,
    par: &dyn Parallel,
    fill: &(dyn Fn(core::ops::Range<usize>) + Sync),
    tile: &(dyn Fn(usize, usize) + Sync),
    block: &(dyn Fn(usize, usize, usize) + Sync),
) {
    let workers = par.workers();
    let plane_elems = pack.planes.map_or(0, |p| p.len);
    let groups = pack.planes.map_or(g.c_in, |p| p.groups(g.c_in));
    if workers == 1 || plane_elems < PARALLEL_FILL {
        fill(0..groups);
    } else {
        // One part per worker, as for the tasks below (Zen 4, 2 threads: ResNet-20 int8 0.220 -> 0.213 ms).
        let parts = groups.min(workers);
        par.run(parts, &|_, i| fill(share(groups, parts, i)));
    }
    let blocks = pack.blocks(g.c_out);
    let tiles = pack.tiles;
    // Each order rereads one operand from L2 per pass: tile-major all weights per tile, block-major all
    // planes per block. Take the smaller traffic.
    let weight_bytes = pack.wf.len() * 4 + pack.wq.len() + pack.wq16.len() * 2;
    let block_major = weights_first && (tiles <= 4 || blocks * plane_elems * pack.elem < tiles * weight_bytes);
    // Chunks per worker: every claim and completion bounces the pool's counters between cores, and a worker
    // that moves to another chunk leaves the data it just touched, so small layers (the CIFAR nets': 10-40
    // µs) take one chunk per worker, larger ones two to balance. On Zen 4 with 2 threads, one chunk per
    // worker instead of four took ResNet-20 f32 from 0.509 to 0.485 ms and int8 from 0.237 to 0.216; two
    // took ResNet-18 f32 from 15.1 to 14.4 ms.
    let per_worker = if g.macs() / (g.n.max(1) as u64) < SMALL_LAYER_MACS { 1 } else { 2 };
    let chunks = if workers == 1 { 1 } else { (tiles * blocks).min(per_worker * workers) };
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

/// Splits the scratch into the planes (as `T`) and the per-worker panels.
pub(crate) fn split_scratch<T: bytemuck::Pod>(pack: &ConvPack, scratch: &mut [u8]) -> (Shared<T>, Shared<u8>) {
    let planes_bytes = pack.planes.map_or(0, |p| p.len * pack.elem).next_multiple_of(64);
    let (planes, panels) = scratch.split_at_mut(planes_bytes);
    let planes: &mut [T] = bytemuck::cast_slice_mut(planes);
    (Shared(planes.as_mut_ptr()), Shared(panels.as_mut_ptr()))
}

/// Stride between two workers' panels in the scratch.
pub(crate) fn panel_stride(pack: &ConvPack) -> usize {
    pack.panel_bytes.next_multiple_of(64)
}

/// Output channels per task of the row kernels (channels in the lanes, two vectors).
pub(crate) const ROW_MR: usize = 32;

/// The row kernels' (positions per run, runs per task) for outputs they suit: narrow outputs, where the
/// grid tiles waste many padding lanes (7 wide: 49 of 64 real). None: the grid tile kernel, also for 1x1
/// kernels, whose grid has no padding columns: their short reductions made the row kernel's per-channel
/// output scatter the larger cost (ResNet-18's downsamples on Zen 4: int8 0.315 -> 0.233 ms, f32 0.666 ->
/// 0.557 ms).
pub(crate) fn row_shape(g: &ConvGeom) -> Option<(usize, usize)> {
    if g.kh * g.kw == 1 {
        return None;
    }
    match g.w_out {
        7 => Some((7, 2)),
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
