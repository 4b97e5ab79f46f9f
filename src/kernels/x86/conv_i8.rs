//! int8 blocked convolution, AVX-512 VNNI and AVX2, bit-exact with the scalar reference
//! (docs/int8-spec.md). Activations enter the planes as `x + 128` (u8; padding = `x_zp + 128`, so every tap
//! is present) and the bias carries `-(x_zp + 128) · Σw` (section 11.2); sums wrap in i32, which is exact
//! because the true accumulator fits (section 4).
//!
//! - VNNI: when the input channels come in fours, the planes interleave four channels per element
//!   ([`ConvPack::interleaved`]), so a tap's 32 positions x 4 channels are 128 contiguous bytes, read in place;
//!   otherwise (the 3-channel stem) a tile's input is packed per worker as `[kp/4][32 positions][4 bytes]`.
//!   Weights `[m/8][kp/4][8][4]`; `vpdpbusd` (u8 x s8, 4 products per lane) into 8 x 2 accumulators. The
//!   epilogue ([`Epilogue`]) requantizes, adds the requantized residual, the zero point, clamps, and stores
//!   the real lanes; in i32 lanes for the shifts real nets have (`requant::HiShift`), else in 64-bit lanes.
//! - AVX2: input `[kp/2][16][2]` as i16 and weights `[m/8][kp/2][8][2]` as i16; `vpmaddwd` gives exact
//!   pair sums (no `vpmaddubsw`: it saturates, section 11.1). The epilogue is the VNNI one with AVX2 stand-ins
//!   ([`avx2`]): the real lanes are compressed to the front, requantized in i64 lanes and stored.

use super::avx2::{self, compress};
use super::requant::{ChannelLanes, Epilogue};
use super::{
    drive, live, panel_stride, row_shape, set_band, split_scratch, stride2_i8, supports, winograd_i8,
    winograd_lanes_i8, PlaneCopies, Runs, Shared, ROW_MR,
};
use crate::kernels::packed::{fill_planes, fill_planes_with, ConvPack, InPlace, Parallel, Planes};
use crate::kernels::registry::QConv;
use crate::kernels::{ConvGeom, QConvParams};
use core::arch::x86_64::*;

/// AVX-512 VNNI int8 convolution (tier `avx512vnni`).
pub const QS8_CONV_VNNI: QConv = QConv {
    supports,
    pack: pack_vnni,
    run: |g, pack, p, x, r, y, s, par| {
        match pack.in_place {
            InPlace::Winograd => return winograd_lanes_i8::run(g, pack, p, x, r, y, s, par),
            InPlace::Stride2 => return stride2_i8::run(g, pack, p, x, r, y, s, par),
            InPlace::No => {}
        }
        if pack.winograd {
            return winograd_i8::run(g, pack, p, x, r, y, s, par);
        }
        let kernels: (TileFn, BlockFn) = match (pack.mr, g.w_out, pack.planes.map_or(1, |p| p.cgroup)) {
            (ROW_MR, 1, _) => (|_, _, _| {}, rows_vnni::<1, 1>),
            (ROW_MR, 7, _) => (|_, _, _| {}, rows_vnni::<7, 1>),
            (ROW_MR, 8, _) => (|_, _, _| {}, rows_vnni::<8, 1>),
            (ROW_MR, _, _) => (|_, _, _| {}, rows_vnni::<14, 1>),
            (_, _, 1) => (panel_vnni, block_vnni::<false>),
            _ => (|_, _, _| {}, block_vnni::<true>),
        };
        run(kernels, g, pack, p, x, r, y, s, par)
    },
};
/// AVX2 int8 convolution (tier `avx2`).
pub const QS8_CONV_AVX2: QConv = QConv {
    supports,
    pack: pack_avx2,
    run: |g, pack, p, x, r, y, s, par| run((panel_avx2, block_avx2), g, pack, p, x, r, y, s, par),
};

const MR: usize = 8;

fn pack_vnni(g: &ConvGeom, p: &QConvParams<'_>) -> ConvPack {
    let residual_line = p.residual.and_then(|r| crate::quant::ResidualLine::fit(r.zero_point, r.multiplier, r.shift));
    ConvPack { residual_line, ..pack_vnni_weights(g, p) }
}

/// The kernel's choice of layout and its packed weights.
fn pack_vnni_weights(g: &ConvGeom, p: &QConvParams<'_>) -> ConvPack {
    if stride2_i8::suits(g) {
        return stride2_i8::pack(g, p);
    }
    if winograd_lanes_i8::suits(g, p) {
        return winograd_lanes_i8::pack(g, p);
    }
    if winograd_i8::suits(g, p.weight) {
        return winograd_i8::pack(g, p);
    }
    if let (true, Some((w, s))) = (g.c_in.is_multiple_of(4), row_shape(g)) {
        let mut pack = ConvPack::interleaved(g, ROW_MR, 16, 4);
        pack.wq = pack.pack_i8_interleaved(g, p.weight, p.bias, p.x_zero_point);
        pack.tile_by_rows(g, w, s);
        set_band(&mut pack, g);
        return pack;
    }
    let mut pack = if g.c_in.is_multiple_of(4) {
        let mut pack = ConvPack::interleaved(g, MR, 32, 4);
        pack.wq = pack.pack_i8_interleaved(g, p.weight, p.bias, p.x_zero_point);
        // Outputs 16k wide: tiles of whole row pieces, no padding lanes (ResNet-20's 32x32 layers: 32 tiles
        // instead of 34).
        pack.row_runs(g, 16);
        pack
    } else {
        let mut pack = ConvPack::new(g, MR, 32, 4, 1);
        pack.wq = pack.pack_i8(g.c_out, 4, p.weight, p.bias, p.x_zero_point);
        pack.panel_bytes = pack.kp * 32;
        pack.row_runs(g, 16);
        pack
    };
    pack.bq.resize(pack.blocks(g.c_out) * MR, 0);
    set_band(&mut pack, g);
    pack
}

fn pack_avx2(g: &ConvGeom, p: &QConvParams<'_>) -> ConvPack {
    let mut pack = ConvPack::new(g, MR, 16, 2, 1);
    pack.wq16 = pack.pack_i8(g.c_out, 2, p.weight, p.bias, p.x_zero_point);
    pack.panel_bytes = pack.kp * 16 * 2;
    pack.row_runs(g, 8);
    set_band(&mut pack, g);
    pack
}

/// What one task needs, for one image.
struct Ctx<'p> {
    pack: &'p ConvPack,
    p: &'p QConvParams<'p>,
    planes: PlaneCopies<u8>,
    panels: Shared<u8>,
    y: Shared<i8>,
    res: Option<Shared<i8>>,
    m: usize,
    hw: usize,
    /// Output columns and grid row length.
    w_out: usize,
    wg: usize,
}

type TileFn = unsafe fn(&Ctx<'_>, usize, usize);
type BlockFn = unsafe fn(&Ctx<'_>, usize, usize, usize);

#[allow(clippy::too_many_arguments)]
fn run(
    (tile, block): (TileFn, BlockFn),
    g: &ConvGeom,
    pack: &ConvPack,
    p: &QConvParams<'_>,
    x: &[i8],
    residual: Option<&[i8]>,
    y: &mut [i8],
    scratch: &mut [u8],
    par: &dyn Parallel,
) {
    debug_assert!(scratch.len() >= pack.scratch_bytes(par.workers()));
    debug_assert!(x.len() == g.input_len() && y.len() == g.output_len());
    let (planes, panels) = split_scratch::<u8>(pack, par.workers(), scratch);
    let pl = pack.planes.expect("a packed convolution has planes");
    let (hw_in, hw) = (g.h_in * g.w_in, g.h_out * g.w_out);
    let pad = (p.x_zero_point + 128) as u8;
    for n in 0..g.n {
        let xn = &x[n * g.c_in * hw_in..][..g.c_in * hw_in];
        let ctx = Ctx {
            pack,
            p,
            planes,
            panels,
            y: Shared(y[n * g.c_out * hw..].as_mut_ptr()),
            res: residual.map(|r| Shared(r[n * g.c_out * hw..].as_ptr() as *mut i8)),
            m: g.c_out,
            hw,
            w_out: g.w_out,
            wg: pl.wg,
        };
        let fill = |w: usize, ch: core::ops::Range<usize>, rows: core::ops::Range<usize>| {
            // SAFETY: workers fill disjoint channel ranges of the planes, or their own copies, which
            // split_scratch sized.
            let out = unsafe {
                core::slice::from_raw_parts_mut(
                    planes.of(w).add(ch.start * pl.per_channel()),
                    ch.len() * pl.per_channel(),
                )
            };
            if pl.cgroup == 4 {
                // SAFETY: interleaved planes are only packed by the VNNI kernel, listed under its tier.
                unsafe { fill_interleaved(g, &pl, xn, ch, rows, pad, out) };
            } else {
                fill_planes(g, &pl, xn, ch, rows, |v: i8| (v as u8) ^ 0x80, pad, out);
            }
        };
        // Kernels that read the interleaved planes in place pack no panels, so the weight blocks may come
        // first (ResNet-18's 7x7 layers, 2.4 MB of weights each, then stream them once instead of per tile).
        // SAFETY: the registry lists each kernel under the tier that provides its features; worker w only
        // touches panel w.
        drive(g, pack, pl.cgroup == 4, par, &fill, &|w, t| unsafe { tile(&ctx, w, t) }, &|w, t, b| unsafe {
            block(&ctx, w, t, b)
        });
    }
}

/// Packs tile `t` into worker `w`'s panel: `[kp/4][32][4]`, byte j of a lane = reduction step 4g + j.
///
/// # Safety
/// AVX-512 BW/VL available; planes filled; `w` < workers.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn panel_vnni(c: &Ctx<'_>, w: usize, t: usize) {
    let p = c.pack;
    // SAFETY: rows are read inside the planes (ConvPack::new), the panel holds kp * 32 bytes.
    unsafe {
        // Each half's first position: 16 apart, or two row pieces ([`ConvPack::row_runs`]).
        let planes = c.planes.of(w) as *const u8;
        let halves = [planes.add(p.run_start(t, 0)), planes.add(p.run_start(t, 2))];
        let dst = c.panels.get().add(w * panel_stride(p));
        for g4 in 0..p.kp / 4 {
            let o = p.offsets.as_ptr().add(g4 * 4);
            for (v, src) in halves.iter().enumerate() {
                let ld = |j: usize| _mm_loadu_si128(src.add(*o.add(j) as usize) as *const __m128i);
                let (r0, r1, r2, r3) = (ld(0), ld(1), ld(2), ld(3));
                let (a, b) = (_mm_unpacklo_epi8(r0, r1), _mm_unpackhi_epi8(r0, r1));
                let (c2, d) = (_mm_unpacklo_epi8(r2, r3), _mm_unpackhi_epi8(r2, r3));
                let out = dst.add(g4 * 128 + v * 64) as *mut __m128i;
                _mm_storeu_si128(out, _mm_unpacklo_epi16(a, c2));
                _mm_storeu_si128(out.add(1), _mm_unpackhi_epi16(a, c2));
                _mm_storeu_si128(out.add(2), _mm_unpacklo_epi16(b, d));
                _mm_storeu_si128(out.add(3), _mm_unpackhi_epi16(b, d));
            }
        }
    }
}

/// [`fill_planes_with`] for the interleaved planes, compiled with the features of [`interleave4`] so that
/// it inlines into the row loop (a call per row of 34 positions cost as much as the row).
///
/// # Safety
/// AVX-512 F/BW/VL available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn fill_interleaved(
    g: &ConvGeom,
    pl: &Planes,
    x: &[i8],
    groups: core::ops::Range<usize>,
    rows: core::ops::Range<usize>,
    pad: u8,
    out: &mut [u8],
) {
    // SAFETY: the frame passes each row's source from its first valid column, holding the values read.
    let row = |dst: &mut [u8], src: &[Option<&[i8]>], sw| unsafe { interleave4(dst, src, sw, pad) };
    fill_planes_with(g, pl, x, groups, rows, pad, out, row);
}

/// One row of interleaved planes: `dst[4i + j] = src[j][i · sw] + 128` (as u8), `pad` for a missing channel.
/// Strides 1 ([`interleave4_unit`]) and 2 (the stride-2 layers' phase planes) are vectorized; stride 2 takes
/// 16 outputs per step, a row's even bytes taken by narrowing its 16-bit lanes (`vpmovwb`).
///
/// # Safety
/// AVX-512 BW/VL available; each source row holds the `(dst.len() / 4 - 1) · sw + 1` values read.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn interleave4(dst: &mut [u8], src: &[Option<&[i8]>], sw: usize, pad: u8) {
    let n = dst.len() / 4;
    if sw > 2 {
        for (i, out) in dst.chunks_exact_mut(4).enumerate() {
            for (d, s) in out.iter_mut().zip(src) {
                *d = s.map_or(pad, |s| (s[i * sw] as u8) ^ 0x80);
            }
        }
        return;
    }
    if sw == 1 {
        // SAFETY: as the caller's.
        return unsafe { interleave4_unit(dst, src, pad) };
    }
    let (flip, padv) = (_mm_set1_epi8(0x80u8 as i8), _mm_set1_epi8(pad as i8));
    for i in (0..n).step_by(16) {
        let len = (n - i).min(16);
        // SAFETY: masked loads read only the `2 · len - 1` values of outputs i .. i + len (masked lanes never
        // fault).
        let ld = |j: usize| match src[j] {
            Some(s) => unsafe {
                let row = _mm256_maskz_loadu_epi8((1u32 << (2 * len - 1)) - 1, s.as_ptr().add(2 * i));
                _mm_xor_si128(_mm256_cvtepi16_epi8(row), flip)
            },
            None => padv,
        };
        let (r0, r1, r2, r3) = (ld(0), ld(1), ld(2), ld(3));
        let (a, b) = (_mm_unpacklo_epi8(r0, r1), _mm_unpackhi_epi8(r0, r1));
        let (c, d) = (_mm_unpacklo_epi8(r2, r3), _mm_unpackhi_epi8(r2, r3));
        let quads =
            [_mm_unpacklo_epi16(a, c), _mm_unpackhi_epi16(a, c), _mm_unpacklo_epi16(b, d), _mm_unpackhi_epi16(b, d)];
        let out = &mut dst[4 * i..4 * (i + len)];
        for (q, chunk) in quads.iter().zip(out.chunks_mut(16)) {
            let keep = ((1u32 << chunk.len()) - 1) as u16;
            // SAFETY: the masked store writes `chunk.len()` bytes of `chunk`.
            unsafe { _mm_mask_storeu_epi8(chunk.as_mut_ptr() as *mut i8, keep, *q) };
        }
    }
}

/// One task: 8 output channels x 32 positions, from worker `w`'s panel or, when `IN_PLACE`, straight
/// from the interleaved planes.
///
/// # Safety
/// AVX-512 F/BW/VL + VNNI available; panel `w` holds tile `t` (or the planes are interleaved and filled).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,popcnt")]
unsafe fn block_vnni<const IN_PLACE: bool>(c: &Ctx<'_>, w: usize, t: usize, blk: usize) {
    let p = c.pack;
    let kp = p.kp;
    // The bias is padded to whole blocks (pack_vnni).
    let bias = &p.bq[blk * MR..][..MR];
    let mut acc = [[_mm512_setzero_si512(); 2]; MR];
    for (acc, &b) in acc.iter_mut().zip(bias) {
        *acc = [_mm512_set1_epi32(b); 2];
    }
    // SAFETY: the panel has kp * 32 bytes, the block kp * MR weights.
    unsafe {
        let panel = c.panels.get().add(w * panel_stride(p)) as *const u8;
        // The two halves' first positions: 16 apart, or two row pieces ([`ConvPack::row_runs`]).
        let planes = c.planes.of(w) as *const u8;
        let (h0, h1) = (planes.wrapping_add(p.run_start(t, 0) * 4), planes.wrapping_add(p.run_start(t, 2) * 4));
        let wt = p.wq.as_ptr().add(blk * kp * MR) as *const i32;
        for g4 in 0..kp / 4 {
            let (src0, src1) = if IN_PLACE {
                let off = *p.offsets.get_unchecked(g4) as usize;
                (h0.add(off), h1.add(off))
            } else {
                (panel.add(g4 * 128), panel.add(g4 * 128 + 64))
            };
            let b0 = _mm512_loadu_si512(src0 as *const _);
            let b1 = _mm512_loadu_si512(src1 as *const _);
            let wk = wt.add(g4 * MR);
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_epi32(wk.add(r).read_unaligned());
                acc[0] = _mm512_dpbusd_epi32(acc[0], b0, a);
                acc[1] = _mm512_dpbusd_epi32(acc[1], b1, a);
            }
        }
    }
    let rq = &c.p.requant;
    let epi = Epilogue::new(rq, c.p.residual, p.residual_line);
    // Each half's real lanes (a mask over the grid positions), how many there are, and the first one's index.
    let chunks = [0, 1].map(|v| {
        let ch = p.chunks[t * 2 + v];
        (ch.mask, ((1u32 << ch.mask.count_ones()) - 1) as u16, ch.start as usize)
    });
    for (r, acc) in acc.iter().enumerate() {
        let oc = blk * MR + r;
        if oc >= c.m {
            break;
        }
        let (m, s) = rq.channel(oc);
        let hi32 = epi.hi_shift(m, s);
        for (&acc, &(mask, keep, start)) in acc.iter().zip(&chunks) {
            if mask == 0 {
                continue;
            }
            let at = oc * c.hw + start;
            let acc = if mask == u16::MAX { acc } else { _mm512_maskz_compress_epi32(mask, acc) };
            // SAFETY: the `keep` lanes from `at` are this channel's outputs (masked lanes never fault).
            let res = c.res.map(|res| unsafe { _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(keep, res.get().add(at))) });
            let out = epi.channel(hi32.as_ref(), (m, s), acc, res);
            // SAFETY: as above.
            unsafe { _mm_mask_storeu_epi8(c.y.get().add(at), keep, out) };
        }
    }
}

/// Row kernel task (narrow outputs, [`row_shape`]): 32 output channels in the lanes x `S` runs of `W`
/// positions, each position's 4 interleaved input channels broadcast from the planes. The epilogue is the
/// grid kernel's with per-lane multipliers and shifts; each position's 32 results are then written out
/// channel by channel.
///
/// # Safety
/// AVX-512 F/BW/VL + VNNI available; the pack is the row layout for this `W`; `t` < tiles, `blk` < blocks;
/// the interleaved planes of the current image are filled.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_vnni<const W: usize, const S: usize>(c: &Ctx<'_>, w: usize, t: usize, blk: usize) {
    let p = c.pack;
    let runs = Runs::new(W, c.hw, c.w_out, c.wg);
    let first = t * S;
    let oc0 = blk * ROW_MR;
    let live = |v: usize| live(c.m, oc0 + 16 * v);
    let mut acc = [[_mm512_setzero_si512(); 2]; 14];
    // SAFETY: the bias has m entries (masked loads stay inside); real grid positions plus offsets stay
    // inside the planes (ConvPack::interleaved); the block has kp * 32 weights.
    unsafe {
        for v in 0..2 {
            let b = _mm512_maskz_loadu_epi32(live(v), p.bq.as_ptr().wrapping_add(oc0 + 16 * v));
            for a in acc.iter_mut().take(W * S) {
                a[v] = b;
            }
        }
        let mut base = [c.planes.of(w) as *const u8; S];
        for (r, b) in base.iter_mut().enumerate() {
            *b = b.add(runs.start(first + r).0 * 4);
        }
        let wt = p.wq.as_ptr().add(blk * p.kp * ROW_MR);
        for e in 0..p.kp / 4 {
            let off = *p.offsets.get_unchecked(e) as usize;
            let w0 = _mm512_loadu_si512(wt.add(e * 128) as *const _);
            let w1 = _mm512_loadu_si512(wt.add(e * 128 + 64) as *const _);
            for r in 0..S {
                let src = base[r].add(off);
                for j in 0..W {
                    let x = _mm512_set1_epi32((src.add(4 * j) as *const i32).read_unaligned());
                    let a = &mut acc[r * W + j];
                    a[0] = _mm512_dpbusd_epi32(a[0], x, w0);
                    a[1] = _mm512_dpbusd_epi32(a[1], x, w1);
                }
            }
        }
    }
    let epi = Epilogue::new(&c.p.requant, c.p.residual, p.residual_line);
    let lanes = [0, 1].map(|v| ChannelLanes::new(&epi, &c.p.requant, oc0 + 16 * v, live(v)));
    // Lane l is channel oc0 + 16v + l: hw bytes apart in the output.
    let stride = _mm512_mullo_epi32(
        _mm512_set1_epi32(c.hw as i32),
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    );
    for r in 0..S {
        if first + r >= runs.count {
            break;
        }
        let out = runs.start(first + r).1;
        let mut bytes = [[0i8; ROW_MR]; 14];
        for (j, row) in bytes.iter_mut().enumerate().take(W) {
            for (v, lanes) in lanes.iter().enumerate() {
                let a = acc[r * W + j][v];
                // Each channel's residual byte, sign-extended: gathered as the top (or, near a row start, the
                // bottom) byte of a dword that stays inside that channel's hw >= 7 bytes.
                let res = c.res.map(|res| {
                    let at = (oc0 + 16 * v) * c.hw + out + j;
                    let back = (out + j).min(3);
                    // SAFETY: the live lanes read bytes at - back .. at - back + 4 of live channels.
                    let g = unsafe {
                        _mm512_mask_i32gather_epi32::<1>(
                            _mm512_setzero_si512(),
                            live(v),
                            stride,
                            res.get().wrapping_add(at - back) as *const i32,
                        )
                    };
                    let sh = _mm_cvtsi32_si128(8 * (3 - back as i32));
                    _mm512_sra_epi32(_mm512_sll_epi32(g, sh), _mm_cvtsi32_si128(24))
                });
                let v32 = lanes.apply(&epi, a, res);
                // SAFETY: 16 bytes of this position's row.
                unsafe { _mm_storeu_si128(row.as_mut_ptr().add(16 * v) as *mut __m128i, v32) };
            }
        }
        let live_channels = ROW_MR.min(c.m - oc0);
        if W == 8 {
            // SAFETY: channels below m, the 8 outputs from `out` of a real run.
            unsafe { store_transposed8(c.y.get().add(oc0 * c.hw + out), c.hw, &bytes, live_channels) };
            continue;
        }
        for l in 0..live_channels {
            let dst = (oc0 + l) * c.hw + out;
            for (j, row) in bytes.iter().enumerate().take(W) {
                // SAFETY: channel oc0 + l < m, output index out + j of a real run.
                unsafe { *c.y.get().add(dst + j) = row[l] };
            }
        }
    }
}

/// Writes `rows[j][l]` (8 positions x 32 channels) to `dst[l · stride + j]` for the first `live` channels:
/// three rounds of unpacks turn each 16-channel half into 8-byte channel rows (one store each rather than
/// eight; ResNet-20's 8x8 layers write 256 outputs per task).
///
/// # Safety
/// SSE2 available; `dst + l · stride .. + 8` is writable for every `l` < `live`.
#[inline]
#[target_feature(enable = "sse2")]
unsafe fn store_transposed8(dst: *mut i8, stride: usize, rows: &[[i8; ROW_MR]; 14], live: usize) {
    for v in 0..2 {
        // SAFETY: 16 bytes of a 32-byte row.
        let x = |j: usize| unsafe { _mm_loadu_si128(rows[j].as_ptr().add(16 * v) as *const __m128i) };
        let (x0, x1, x2, x3, x4, x5, x6, x7) = (x(0), x(1), x(2), x(3), x(4), x(5), x(6), x(7));
        // Channels 0-7 / 8-15 of positions 2i, 2i+1.
        let (a0, a1) = (_mm_unpacklo_epi8(x0, x1), _mm_unpackhi_epi8(x0, x1));
        let (a2, a3) = (_mm_unpacklo_epi8(x2, x3), _mm_unpackhi_epi8(x2, x3));
        let (a4, a5) = (_mm_unpacklo_epi8(x4, x5), _mm_unpackhi_epi8(x4, x5));
        let (a6, a7) = (_mm_unpacklo_epi8(x6, x7), _mm_unpackhi_epi8(x6, x7));
        // Four channels each, positions 0-3 or 4-7.
        let b = [
            (_mm_unpacklo_epi16(a0, a2), _mm_unpacklo_epi16(a4, a6)),
            (_mm_unpackhi_epi16(a0, a2), _mm_unpackhi_epi16(a4, a6)),
            (_mm_unpacklo_epi16(a1, a3), _mm_unpacklo_epi16(a5, a7)),
            (_mm_unpackhi_epi16(a1, a3), _mm_unpackhi_epi16(a5, a7)),
        ];
        for (q, &(lo4, hi4)) in b.iter().enumerate() {
            // Two channels' 8 positions each.
            for (h, pair) in [_mm_unpacklo_epi32(lo4, hi4), _mm_unpackhi_epi32(lo4, hi4)].into_iter().enumerate() {
                let l = 16 * v + 4 * q + 2 * h;
                // SAFETY: channels l and l + 1 are written only when live.
                unsafe {
                    if l < live {
                        _mm_storel_epi64(dst.add(l * stride) as *mut __m128i, pair);
                    }
                    if l + 1 < live {
                        _mm_storeh_pd(dst.add((l + 1) * stride) as *mut f64, _mm_castsi128_pd(pair));
                    }
                }
            }
        }
    }
}

/// [`interleave4`] at stride 1, 64 outputs per step: the byte and 16-bit unpacks interleave each 128-bit
/// lane's 16 positions, then a 4x4 transpose of the lanes puts them in order. On ResNet-20's 34-wide rows
/// that is one step instead of three of 16 (ResNet-20 int8 on Zen 4: 0.328 -> 0.325 ms; the per-row
/// frame around it now costs as much as the interleaving).
///
/// # Safety
/// AVX-512 BW available; each source row holds `dst.len() / 4` values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn interleave4_unit(dst: &mut [u8], src: &[Option<&[i8]>], pad: u8) {
    let n = dst.len() / 4;
    let (flip, padv) = (_mm512_set1_epi8(0x80u8 as i8), _mm512_set1_epi8(pad as i8));
    for i in (0..n).step_by(64) {
        let len = (n - i).min(64);
        let ld = |j: usize| match src[j] {
            // SAFETY: the masked load reads the `len` values of outputs i .. i + len.
            Some(s) => unsafe {
                _mm512_xor_si512(_mm512_maskz_loadu_epi8(u64::MAX >> (64 - len), s.as_ptr().add(i)), flip)
            },
            None => padv,
        };
        let (r0, r1, r2, r3) = (ld(0), ld(1), ld(2), ld(3));
        let (a, b) = (_mm512_unpacklo_epi8(r0, r1), _mm512_unpackhi_epi8(r0, r1));
        let (c, d) = (_mm512_unpacklo_epi8(r2, r3), _mm512_unpackhi_epi8(r2, r3));
        // Lane l of q[k] holds the quads of positions 16l + 4k .. 16l + 4k + 4.
        let q = [
            _mm512_unpacklo_epi16(a, c),
            _mm512_unpackhi_epi16(a, c),
            _mm512_unpacklo_epi16(b, d),
            _mm512_unpackhi_epi16(b, d),
        ];
        let t0 = _mm512_shuffle_i32x4::<0b01_00_01_00>(q[0], q[1]);
        let t1 = _mm512_shuffle_i32x4::<0b01_00_01_00>(q[2], q[3]);
        let t2 = _mm512_shuffle_i32x4::<0b11_10_11_10>(q[0], q[1]);
        let t3 = _mm512_shuffle_i32x4::<0b11_10_11_10>(q[2], q[3]);
        let out = [
            _mm512_shuffle_i32x4::<0b10_00_10_00>(t0, t1),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(t0, t1),
            _mm512_shuffle_i32x4::<0b10_00_10_00>(t2, t3),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(t2, t3),
        ];
        for (v, chunk) in out.iter().zip(dst[4 * i..4 * (i + len)].chunks_mut(64)) {
            // SAFETY: the masked store writes `chunk.len()` bytes of `chunk`.
            unsafe { _mm512_mask_storeu_epi8(chunk.as_mut_ptr() as *mut i8, u64::MAX >> (64 - chunk.len()), *v) };
        }
    }
}

/// Packs tile `t` into worker `w`'s panel: `[kp/2][16][2]` i16, lane pair = reduction steps 2g, 2g + 1.
///
/// # Safety
/// AVX2 available; planes filled; `w` < workers.
#[target_feature(enable = "avx2")]
unsafe fn panel_avx2(c: &Ctx<'_>, w: usize, t: usize) {
    let p = c.pack;
    // SAFETY: rows are read inside the planes (ConvPack::new, or ConvPack::row_runs for two runs), the panel
    // holds kp * 32 bytes.
    unsafe {
        let planes = c.planes.of(w) as *const u8;
        let dst = c.panels.get().add(w * panel_stride(p)) as *mut __m256i;
        let (s0, s1) = (p.run_start(t, 0), p.run_start(t, 1));
        // Two runs, or one contiguous 16-byte load.
        let (a, b, split) = (planes.add(s0), planes.add(s1), s1 != s0 + 8);
        for g2 in 0..p.kp / 2 {
            let o = p.offsets.as_ptr().add(g2 * 2);
            let bytes = |j: usize| {
                let off = *o.add(j) as usize;
                if split {
                    let half = |s: *const u8| _mm_loadl_epi64(s.add(off) as *const __m128i);
                    _mm_unpacklo_epi64(half(a), half(b))
                } else {
                    _mm_loadu_si128(a.add(off) as *const __m128i)
                }
            };
            let ld = |j: usize| _mm256_cvtepu8_epi16(bytes(j));
            let (a, b) = (ld(0), ld(1));
            let (lo, hi) = (_mm256_unpacklo_epi16(a, b), _mm256_unpackhi_epi16(a, b));
            _mm256_storeu_si256(dst.add(g2 * 2), _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_storeu_si256(dst.add(g2 * 2 + 1), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
    }
}

/// One task: 8 output channels x 16 positions, in two halves of 4 rows.
///
/// # Safety
/// AVX2 available; panel `w` holds tile `t`.
#[target_feature(enable = "avx2")]
unsafe fn block_avx2(c: &Ctx<'_>, w: usize, t: usize, blk: usize) {
    let p = c.pack;
    let kp = p.kp;
    let ch = p.chunks[t];
    for half in 0..2 {
        let row0 = blk * MR + half * 4;
        if row0 >= c.m {
            break;
        }
        let mut acc = [[_mm256_setzero_si256(); 2]; 4];
        for (r, acc) in acc.iter_mut().enumerate() {
            if let Some(&b) = p.bq.get(row0 + r) {
                *acc = [_mm256_set1_epi32(b); 2];
            }
        }
        // SAFETY: the panel has kp * 16 i16 values, the block kp * MR weights.
        unsafe {
            let panel = c.panels.get().add(w * panel_stride(p)) as *const __m256i;
            let wt = p.wq16.as_ptr().add(blk * kp * MR + half * 4 * 2) as *const i32;
            for g2 in 0..kp / 2 {
                let (b0, b1) = (_mm256_loadu_si256(panel.add(g2 * 2)), _mm256_loadu_si256(panel.add(g2 * 2 + 1)));
                let wk = wt.add(g2 * MR);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = _mm256_set1_epi32(wk.add(r).read_unaligned());
                    acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(b0, a));
                    acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(b1, a));
                }
            }
        }
        for avx2::Half { r, v, real, at, n } in avx2::tile_halves(4, row0, c.m, c.hw, ch) {
            // SAFETY: the real lanes map to this channel's outputs from `at`.
            unsafe { store8_avx2(c, row0 + r, compress(acc[r][v], real), at, n) };
        }
    }
}

/// The spec's output stage (bias already in `acc`) for the first `n` lanes of `acc`, stored from output `at`:
/// the vector form of the scalar reference's requantize, residual add and saturate, as AVX-512's epilogue.
///
/// # Safety
/// AVX2 available; `at..at + n` indexes the current image's output (and residual).
#[target_feature(enable = "avx2")]
unsafe fn store8_avx2(c: &Ctx<'_>, oc: usize, acc: __m256i, at: usize, n: usize) {
    let rq = &c.p.requant;
    let (m, s) = rq.channel(oc);
    let (mut e, mut o) = avx2::requant64(acc, m, s);
    if let (Some(res), Some(rr)) = (c.res, c.p.residual) {
        let mut r = [0u8; 8];
        // SAFETY: the caller's contract; n ≤ 8.
        unsafe { core::ptr::copy_nonoverlapping(res.get().add(at) as *const u8, r.as_mut_ptr(), n) };
        let (re, ro) = avx2::requant_i8(r, rr.zero_point, rr.multiplier, rr.shift);
        e = _mm256_add_epi64(avx2::sat32(e), re);
        o = _mm256_add_epi64(avx2::sat32(o), ro);
    }
    let bytes = avx2::narrow(e, o, rq.zero_point, rq.lo, rq.hi);
    // SAFETY: the caller's contract.
    unsafe {
        if n == 8 {
            (c.y.get().add(at) as *mut [u8; 8]).write_unaligned(bytes);
        } else {
            core::ptr::copy_nonoverlapping(bytes.as_ptr() as *const i8, c.y.get().add(at), n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::interleave4;
    use crate::kernels::Isa;
    use std::prelude::v1::*;

    /// `interleave4` against its definition, `dst[4i + j] = src[j][i · sw] + 128` or `pad`, for every
    /// stride path, row lengths around each step width (16, 64), and a missing channel.
    #[test]
    fn interleave4_matches_its_definition() {
        if !Isa::detect().allows(Isa::Avx512) {
            return eprintln!("skipped: this CPU has no AVX-512 BW");
        }
        let pad = 77u8;
        for sw in 1..=3 {
            for n in [1, 2, 15, 16, 17, 33, 63, 64, 65, 130] {
                let rows: Vec<Vec<i8>> =
                    (0..3).map(|j| (0..(n - 1) * sw + 1).map(|i| (i * 37 + j * 11) as i8).collect()).collect();
                let src = [Some(&rows[0][..]), Some(&rows[1][..]), Some(&rows[2][..]), None];
                let mut dst = vec![0u8; 4 * n];
                // SAFETY: AVX-512 BW is present (checked above); each row holds (n - 1) · sw + 1 values.
                unsafe { interleave4(&mut dst, &src, sw, pad) };
                for i in 0..n {
                    for j in 0..4 {
                        let want = src[j].map_or(pad, |s| (s[i * sw] as u8) ^ 0x80);
                        assert_eq!(dst[4 * i + j], want, "sw {sw} n {n} position {i} channel {j}");
                    }
                }
            }
        }
    }
}
