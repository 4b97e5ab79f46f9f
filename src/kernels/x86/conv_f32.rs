//! f32 blocked convolution, AVX-512 and AVX2 + FMA. Weights `[m/mr][kp][mr]`; a task is `mr` output channels
//! x one tile of grid positions (AVX-512: 8 x 32, 16 accumulators, two vectors per row; AVX2: 6 x 16, 12
//! accumulators). Bias starts the sums; residual and clamp are applied to the real lanes before the store
//! (AVX2: compressed to the front with a lane permutation, then a masked store). AVX2 tiles are two 8-lane
//! runs within output rows instead where that wastes fewer lanes ([`ConvPack::row_runs`]: 8x8 outputs).
//!
//! Small outputs (7, 14 or 28 columns: ResNet stages 2-4 at 224x224) waste a tile's padding lanes, up to
//! a quarter of them at 7x7, so AVX-512 turns the tile around there ("row" kernel): output channels in the
//! lanes, weights `[m/32][kp][32]`, and a task is 32 channels x 14 real positions (one 14-wide run of a row,
//! or two 7-wide rows), each position's input broadcast from the planes. Outputs are scattered per position.
//! 3x3 stride-1 layers with outputs 8, 16 or 32 wide, or 7x7, go to [`super::winograd_lanes_f32`] instead.

use super::avx2::{compress, first, store_first, tile_halves, Half};
use super::{
    drive, fill, live, row_shape, set_band, split_scratch, supports, winograd, winograd_lanes_f32, PlaneCopies, Runs,
    Shared, ROW_MR,
};
use crate::kernels::packed::{ConvPack, InPlace, Parallel};
use crate::kernels::registry::F32Conv;
use crate::kernels::{ConvGeom, F32ConvParams};
use core::arch::x86_64::*;

/// AVX-512 f32 convolution (tier `avx512`).
pub const F32_CONV_AVX512: F32Conv = F32Conv {
    supports,
    pack: pack_avx512,
    run: |g, pack, p, x, r, y, s, par| {
        if pack.in_place == InPlace::Winograd {
            return winograd_lanes_f32::run(g, pack, p, x, r, y, s, par);
        }
        let (prep, task): (PrepFn, TaskFn) =
            if pack.winograd { (winograd::input_tile, winograd::task) } else { (no_prep, tile_avx512) };
        run((prep, task), g, pack, x, r, p.clamp, y, s, par)
    },
};
/// AVX2 + FMA f32 convolution (tier `avx2`).
pub const F32_CONV_AVX2: F32Conv = F32Conv {
    supports,
    pack: pack_avx2,
    run: |g, pack, p, x, r, y, s, par| {
        let (prep, task): (PrepFn, TaskFn) =
            if pack.winograd { (winograd::input_tile_avx2, winograd::task_avx2) } else { (no_prep, tile_avx2) };
        run((prep, task), g, pack, x, r, p.clamp, y, s, par)
    },
};

const MR: usize = 8;

fn pack(g: &ConvGeom, p: &F32ConvParams<'_>, nr: usize) -> ConvPack {
    let mut pack = ConvPack::new(g, MR, nr, 1, 4);
    pack.pack_f32(g.c_out, p.weight, p.bias);
    set_band(&mut pack, g);
    pack
}

fn pack_avx512(g: &ConvGeom, p: &F32ConvParams<'_>) -> ConvPack {
    if winograd_lanes_f32::suits(g) {
        return winograd_lanes_f32::pack(g, p);
    }
    if winograd::suits(g, winograd::min_hw_avx512()) {
        return winograd::pack(g, p);
    }
    let Some((w, s)) = row_shape(g) else { return pack(g, p, 32) };
    let mut pack = ConvPack::new(g, ROW_MR, 16, 1, 4);
    pack.pack_f32(g.c_out, p.weight, p.bias);
    pack.tile_by_rows(g, w, s);
    set_band(&mut pack, g);
    pack
}

fn tile_avx512(c: &Ctx<'_>, w: usize, t: usize, blk: usize) {
    // SAFETY: (all three) the registry lists this kernel under the avx512 tier; pack_avx512 chose the layout.
    match (c.pack.mr, c.w_out) {
        (ROW_MR, 1) => unsafe { rows_avx512::<1, 1>(c, w, t, blk) },
        (ROW_MR, 7) => unsafe { rows_avx512::<7, 1>(c, w, t, blk) },
        (ROW_MR, 8) => unsafe { rows_avx512::<8, 1>(c, w, t, blk) },
        (ROW_MR, _) => unsafe { rows_avx512::<14, 1>(c, w, t, blk) },
        _ => unsafe { grid_avx512(c, w, t, blk) },
    }
}

/// Output channels per AVX2 task: 6 x 2 accumulators, two position vectors and a broadcast fill the 16
/// registers (12 independent FMA chains cover the FMA latency on two pipes).
const MR_AVX2: usize = 6;

fn pack_avx2(g: &ConvGeom, p: &F32ConvParams<'_>) -> ConvPack {
    if winograd::suits(g, winograd::MIN_HW_AVX2) {
        return winograd::pack_avx2(g, p);
    }
    let mut pack = ConvPack::new(g, MR_AVX2, 16, 1, 4);
    pack.pack_f32(g.c_out, p.weight, p.bias);
    pack.row_runs(g, 8);
    set_band(&mut pack, g);
    pack
}

/// What one task needs, for one image.
pub(super) struct Ctx<'p> {
    pub pack: &'p ConvPack,
    pub planes: PlaneCopies<f32>,
    pub panels: Shared<u8>,
    pub y: Shared<f32>,
    pub res: Option<Shared<f32>>,
    pub lo: f32,
    pub hi: f32,
    pub m: usize,
    pub c_in: usize,
    pub hw: usize,
    /// Output rows and columns, and the grid row length.
    pub h_out: usize,
    pub w_out: usize,
    pub wg: usize,
}

/// Runs once per tile on the worker that takes it, before that tile's tasks (`ctx, worker, tile`).
type PrepFn = unsafe fn(&Ctx<'_>, usize, usize);
/// One task: `ctx, worker, tile, weight block`.
type TaskFn = unsafe fn(&Ctx<'_>, usize, usize, usize);

fn no_prep(_: &Ctx<'_>, _: usize, _: usize) {}

#[allow(clippy::too_many_arguments)]
fn run(
    (prep, task): (PrepFn, TaskFn),
    g: &ConvGeom,
    pack: &ConvPack,
    x: &[f32],
    residual: Option<&[f32]>,
    (lo, hi): (f32, f32),
    y: &mut [f32],
    scratch: &mut [u8],
    par: &dyn Parallel,
) {
    debug_assert!(scratch.len() >= pack.scratch_bytes(par.workers()));
    debug_assert!(x.len() == g.input_len() && y.len() == g.output_len());
    let (planes, panels) = split_scratch::<f32>(pack, par.workers(), scratch);
    let pl = pack.planes.expect("a packed convolution has planes");
    // The planes are those of the geometry the pack was made for (Winograd: its tile grid).
    let pg = if pack.winograd { winograd::tile_geom(g) } else { *g };
    let (hw_in, hw) = (g.h_in * g.w_in, g.h_out * g.w_out);
    for n in 0..g.n {
        let xn = &x[n * g.c_in * hw_in..][..g.c_in * hw_in];
        let ctx = Ctx {
            pack,
            planes,
            panels,
            y: Shared(y[n * g.c_out * hw..].as_mut_ptr()),
            res: residual.map(|r| Shared(r[n * g.c_out * hw..].as_ptr() as *mut f32)),
            lo,
            hi,
            m: g.c_out,
            c_in: g.c_in,
            hw,
            h_out: g.h_out,
            w_out: g.w_out,
            wg: pl.wg,
        };
        let fill = |w: usize, ch: core::ops::Range<usize>, rows| {
            // SAFETY: workers fill disjoint channel ranges of the planes, or their own copies, which
            // split_scratch sized.
            let out = unsafe {
                core::slice::from_raw_parts_mut(
                    planes.of(w).add(ch.start * pl.per_channel()),
                    ch.len() * pl.per_channel(),
                )
            };
            // SAFETY: both tiers have AVX2.
            unsafe { fill::fill_f32(&pg, &pl, xn, ch, rows, out) }
        };
        // SAFETY: the registry lists each kernel under the tier that provides its features; worker w only
        // touches panel w. Winograd tiles go tile-major: a tile's transformed input serves all blocks.
        drive(&pg, pack, !pack.winograd, par, &fill, &|w, t| unsafe { prep(&ctx, w, t) }, &|w, t, b| unsafe {
            task(&ctx, w, t, b)
        });
    }
}

/// # Safety
/// The CPU has AVX-512F; `t` < tiles, `blk` < blocks; the planes of the current image are filled.
#[target_feature(enable = "avx512f")]
unsafe fn grid_avx512(c: &Ctx<'_>, w: usize, t: usize, blk: usize) {
    let p = c.pack;
    let kp = p.kp;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for (r, acc) in acc.iter_mut().enumerate() {
        if let Some(&b) = p.bf.get(blk * MR + r) {
            *acc = [_mm512_set1_ps(b); 2];
        }
    }
    // SAFETY: ConvPack::new sized the planes so that offsets[k] + (t + 1) * nr stays inside; the block has
    // kp * MR weights.
    unsafe {
        let src = c.planes.of(w).add(t * 32) as *const f32;
        let wt = p.wf.as_ptr().add(blk * kp * MR);
        for k in 0..kp {
            let s = src.add(*p.offsets.get_unchecked(k) as usize);
            let (b0, b1) = (_mm512_loadu_ps(s), _mm512_loadu_ps(s.add(16)));
            let wk = wt.add(k * MR);
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*wk.add(r));
                acc[0] = _mm512_fmadd_ps(a, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(a, b1, acc[1]);
            }
        }
    }
    let (lo, hi) = (_mm512_set1_ps(c.lo), _mm512_set1_ps(c.hi));
    for (r, acc) in acc.iter().enumerate() {
        let oc = blk * MR + r;
        if oc >= c.m {
            break;
        }
        for (v, &acc) in acc.iter().enumerate() {
            let ch = p.chunks[t * 2 + v];
            if ch.mask == 0 {
                continue;
            }
            let keep = ((1u32 << ch.mask.count_ones()) - 1) as u16;
            let at = oc * c.hw + ch.start as usize;
            let mut val = _mm512_maskz_compress_ps(ch.mask, acc);
            // SAFETY: the `keep` lanes from `at` are this channel's real outputs (masked lanes never fault).
            unsafe {
                if let Some(res) = c.res {
                    val = _mm512_add_ps(val, _mm512_maskz_loadu_ps(keep, res.get().add(at)));
                }
                _mm512_mask_storeu_ps(c.y.get().add(at), keep, _mm512_min_ps(_mm512_max_ps(val, lo), hi));
            }
        }
    }
}

/// Row kernel task: 32 output channels x `S` runs of `W` positions (`W · S` <= 14: at most 28 accumulators).
///
/// # Safety
/// The CPU has AVX-512F; the pack is the row layout for this `W` (`row_shape`); `t` < tiles, `blk` < blocks;
/// the planes of the current image are filled.
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512<const W: usize, const S: usize>(c: &Ctx<'_>, w: usize, t: usize, blk: usize) {
    let p = c.pack;
    let runs = Runs::new(W, c.hw, c.w_out, c.wg);
    let first = t * S;
    let mut acc = [[_mm512_setzero_ps(); 2]; 14];
    let oc0 = blk * ROW_MR;
    let live = |v: usize| live(c.m, oc0 + 16 * v);
    // SAFETY: the bias has m entries (masked loads stay inside); grid positions of real runs plus offsets
    // stay inside the planes (ConvPack::new); the block has kp * 32 weights.
    unsafe {
        for v in 0..2 {
            let b = _mm512_maskz_loadu_ps(live(v), p.bf.as_ptr().wrapping_add(oc0 + 16 * v));
            for a in acc.iter_mut().take(W * S) {
                a[v] = b;
            }
        }
        let mut base = [c.planes.of(w) as *const f32; S];
        for (r, b) in base.iter_mut().enumerate() {
            *b = b.add(runs.start(first + r).0);
        }
        let wt = p.wf.as_ptr().add(blk * p.kp * ROW_MR);
        for k in 0..p.kp {
            let off = *p.offsets.get_unchecked(k) as usize;
            let (w0, w1) = (_mm512_loadu_ps(wt.add(k * ROW_MR)), _mm512_loadu_ps(wt.add(k * ROW_MR + 16)));
            for r in 0..S {
                let src = base[r].add(off);
                for j in 0..W {
                    let x = _mm512_set1_ps(*src.add(j));
                    let a = &mut acc[r * W + j];
                    a[0] = _mm512_fmadd_ps(w0, x, a[0]);
                    a[1] = _mm512_fmadd_ps(w1, x, a[1]);
                }
            }
        }
    }
    let (lo, hi) = (_mm512_set1_ps(c.lo), _mm512_set1_ps(c.hi));
    // Lane l of a vector is channel oc0 + 16v + l: hw elements apart in the output.
    let stride = _mm512_mullo_epi32(
        _mm512_set1_epi32(c.hw as i32),
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    );
    for r in 0..S {
        if first + r >= runs.count {
            break;
        }
        let out = runs.start(first + r).1;
        for j in 0..W {
            for (v, &sums) in acc[r * W + j].iter().enumerate() {
                let (mask, at) = (live(v), (oc0 + 16 * v) * c.hw + out + j);
                let mut val = sums;
                // SAFETY: the live lanes address channels < m at a real position of this image.
                unsafe {
                    if let Some(res) = c.res {
                        let rv = _mm512_mask_i32gather_ps::<4>(
                            _mm512_setzero_ps(),
                            mask,
                            stride,
                            res.get().wrapping_add(at) as *const f32,
                        );
                        val = _mm512_add_ps(val, rv);
                    }
                    let val = _mm512_min_ps(_mm512_max_ps(val, lo), hi);
                    _mm512_mask_i32scatter_ps::<4>(c.y.get().wrapping_add(at), mask, stride, val);
                }
            }
        }
    }
}

/// # Safety
/// The CPU has AVX2 and FMA; `t` < tiles, `blk` < blocks; the planes of the current image are filled.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(c: &Ctx<'_>, w: usize, t: usize, blk: usize) {
    let p = c.pack;
    let kp = p.kp;
    let row0 = blk * MR_AVX2;
    let mut acc = [[_mm256_setzero_ps(); 2]; MR_AVX2];
    for (r, acc) in acc.iter_mut().enumerate() {
        if let Some(&b) = p.bf.get(row0 + r) {
            *acc = [_mm256_set1_ps(b); 2];
        }
    }
    let (s0, s1) = (p.run_start(t, 0), p.run_start(t, 1));
    // SAFETY: as in tile_avx512, with 16 grid positions per tile, or two runs (ConvPack::row_runs sized the
    // planes for them).
    unsafe {
        let (src0, src1) = (c.planes.of(w).add(s0) as *const f32, c.planes.of(w).add(s1) as *const f32);
        let wt = p.wf.as_ptr().add(blk * kp * MR_AVX2);
        for k in 0..kp {
            let off = *p.offsets.get_unchecked(k) as usize;
            let (b0, b1) = (_mm256_loadu_ps(src0.add(off)), _mm256_loadu_ps(src1.add(off)));
            let wk = wt.add(k * MR_AVX2);
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm256_set1_ps(*wk.add(r));
                acc[0] = _mm256_fmadd_ps(a, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(a, b1, acc[1]);
            }
        }
    }
    let ch = p.chunks[t];
    let (lo, hi) = (_mm256_set1_ps(c.lo), _mm256_set1_ps(c.hi));
    for Half { r, v, real, at, n } in tile_halves(MR_AVX2, row0, c.m, c.hw, ch) {
        let keep = first(n as u32);
        let mut out = _mm256_castsi256_ps(compress(_mm256_castps_si256(acc[r][v]), real));
        // SAFETY: the `keep` lanes from `at` are this channel's outputs (masked lanes never fault).
        unsafe {
            if let Some(res) = c.res {
                out = _mm256_add_ps(out, _mm256_maskload_ps(res.get().add(at), keep));
            }
            store_first(c.y.get().add(at), _mm256_min_ps(_mm256_max_ps(out, lo), hi), n);
        }
    }
}
