//! int8 3x3 stride-2 convolution with 16 output positions in the lanes (AVX-512 VNNI + VBMI), reading the
//! planar input in place: for outputs 8 or 16 wide, a vector's 16 positions (two output rows, or one) read,
//! per row of taps and group of 4 input channels, 32 bytes of each channel's input rows; one `vpermt2b` per
//! column of taps picks every other byte of the four channels into the `vpdpbusd` operand (16 positions x 4
//! channels, `x + 128` as in the planes; padding columns blended in, the padding row read from a row of zero
//! points). There is no phase-plane fill: ResNet-20's two stride-2 layers spent 2.9 µs of their 10-11 µs
//! filling on Zen 4. The epilogue is the row kernels' (positions in the lanes, one channel's scalar
//! parameters) and stores whole 16-byte pieces.

use super::requant::Epilogue;
use crate::kernels::packed::{corrected_bias, share, ConvPack, InPlace, Parallel};
use crate::kernels::{ConvGeom, QConvParams};
use core::arch::x86_64::*;
use std::prelude::v1::*;

/// Output positions per vector.
const LANES: usize = 16;
/// Output channels per pass (the accumulators).
const OB: usize = 16;

/// 3x3 stride 2 with padding 1 before (rows and columns), outputs 8 or 16 wide from inputs twice their size,
/// in whole vectors, input channels in fours and output channels in sixteens. Needs VBMI.
pub(super) fn suits(g: &ConvGeom) -> bool {
    let shape = (g.kh, g.kw, g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.pad_t, g.pad_l) == (3, 3, 2, 2, 1, 1, 1, 1);
    shape
        && g.groups == 1
        && matches!(g.w_out, 8 | 16)
        && (g.h_in, g.w_in) == (2 * g.h_out, 2 * g.w_out)
        && (g.h_out * g.w_out).is_multiple_of(LANES)
        && g.c_in.is_multiple_of(4)
        && g.c_out.is_multiple_of(OB)
        && crate::kernels::isa::has_vbmi()
}

/// Weights as `[m/16][ky][c/4][kx][16][4]` (a dword of 4 input channels per output channel) and the
/// corrected bias.
pub(super) fn pack(g: &ConvGeom, p: &QConvParams<'_>) -> ConvPack {
    let (c, m) = (g.c_in, g.c_out);
    let mut w = vec![0i8; m * c * 9];
    for oc in 0..m {
        for ic in 0..c {
            for ky in 0..3 {
                for kx in 0..3 {
                    let at = ((((oc / OB * 3 + ky) * (c / 4) + ic / 4) * 3 + kx) * OB + oc % OB) * 4 + ic % 4;
                    w[at] = p.weight[((oc * c + ic) * 3 + ky) * 3 + kx];
                }
            }
        }
    }
    let vectors = g.h_out * g.w_out / LANES;
    ConvPack {
        mr: OB,
        nr: LANES,
        k: c * 9,
        kp: c * 9,
        q: vectors,
        tiles: vectors,
        w_out: g.w_out,
        wq: w,
        bq: corrected_bias(p.weight, c * 9, p.bias, p.x_zero_point),
        elem: 1,
        in_place: InPlace::Stride2,
        ..ConvPack::default()
    }
}

/// Per column of taps: the `vpermt2b` indices from a group's rows ([`Ctx::rows`]) to 16 positions x 4
/// channels, and the bytes that fall on the padding column.
struct Tables {
    gather: [[u8; 64]; 3],
    pad_cols: [u64; 3],
}

/// [`Tables`] for outputs `w` wide (lane `l`: output row `l / w` of the vector, column `l % w`).
const fn tables(w: usize) -> Tables {
    let mut t = Tables { gather: [[0; 64]; 3], pad_cols: [0; 3] };
    let mut b = 0;
    while b < 64 {
        let (l, ch) = (b / 4, b % 4);
        let (r, ox) = (l / w, l % w);
        let mut kx = 0;
        while kx < 3 {
            // Input column 2·ox + kx - 1 of output row r's input row, in channel ch's 32 bytes.
            if 2 * ox + kx == 0 {
                t.pad_cols[kx] |= 1 << b;
            } else {
                t.gather[kx][b] = (ch * 32 + r * 2 * w + 2 * ox + kx - 1) as u8;
            }
            kx += 1;
        }
        b += 1;
    }
    t
}

/// Tables for outputs 8 and 16 wide.
static TABLES: [Tables; 2] = [tables(8), tables(16)];

/// What one task needs, for one image.
struct Ctx<'p> {
    pack: &'p ConvPack,
    p: &'p QConvParams<'p>,
    t: &'static Tables,
    x: *const i8,
    y: *mut i8,
    res: Option<*const i8>,
    c: usize,
    h_in: usize,
    w_in: usize,
    w_out: usize,
    hw_out: usize,
    /// A row of the input's zero point: the padding row.
    pad_row: [i8; 32],
}
// SAFETY: tasks only read the input and write disjoint outputs.
unsafe impl Sync for Ctx<'_> {}

impl Ctx<'_> {
    /// Channels `ch .. ch + 4`'s 32 bytes of input rows for the taps of row `ky` of the vector whose first
    /// output row is `oy`: `[ch, ch + 1]` and `[ch + 2, ch + 3]`, each input row `2·oy' + ky - 1` for the
    /// vector's output rows `oy'` (the padding row above the image), as `x + 128`.
    ///
    /// # Safety
    /// AVX-512 F available; `ctx.x` is the current image; `ch + 4 <= c`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows(&self, ch: usize, oy: usize, ky: usize) -> (__m512i, __m512i) {
        let row = |c: usize, r: usize| match (2 * (oy + r) + ky).checked_sub(1) {
            Some(iy) => self.x.wrapping_add((c * self.h_in + iy) * self.w_in),
            None => self.pad_row.as_ptr(),
        };
        // SAFETY: each pointer has w_in bytes (a row of the image, or the padding row of 32 ≥ w_in).
        let channel = |c: usize| unsafe {
            if self.w_out == 16 {
                _mm256_loadu_si256(row(c, 0) as *const _)
            } else {
                let lo = _mm_loadu_si128(row(c, 0) as *const _);
                _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), _mm_loadu_si128(row(c, 1) as *const _))
            }
        };
        let two = |c: usize| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(channel(c)), channel(c + 1));
        let flip = _mm512_set1_epi8(-128);
        (_mm512_xor_si512(two(ch), flip), _mm512_xor_si512(two(ch + 2), flip))
    }
}

/// Runs the convolution (the pack is [`pack`]'s; tier `avx512vnni` with VBMI).
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    g: &ConvGeom,
    pack: &ConvPack,
    p: &QConvParams<'_>,
    x: &[i8],
    residual: Option<&[i8]>,
    y: &mut [i8],
    _scratch: &mut [u8],
    par: &dyn Parallel,
) {
    let (hw_in, hw_out) = (g.h_in * g.w_in, g.h_out * g.w_out);
    let mut ctx = Ctx {
        pack,
        p,
        t: &TABLES[g.w_out / 16],
        x: core::ptr::null(),
        y: core::ptr::null_mut(),
        res: None,
        c: g.c_in,
        h_in: g.h_in,
        w_in: g.w_in,
        w_out: g.w_out,
        hw_out,
        pad_row: [p.x_zero_point as i8; 32],
    };
    let (vectors, obs) = (pack.tiles, g.c_out / OB);
    let tasks = vectors * obs;
    let chunks = tasks.min(par.workers());
    for n in 0..g.n {
        ctx.x = x[n * g.c_in * hw_in..].as_ptr();
        ctx.y = y[n * g.c_out * hw_out..].as_mut_ptr();
        ctx.res = residual.map(|r| r[n * g.c_out * hw_out..].as_ptr());
        let ctx = &ctx;
        // Contiguous shares of the (vector, channel block) tasks, vector-major: each worker's output rows.
        par.run(chunks, &|_, chunk| {
            for i in share(tasks, chunks, chunk) {
                // SAFETY: the registry lists this kernel under the avx512vnni tier and `suits` checked VBMI;
                // tasks write disjoint outputs.
                unsafe { vector(ctx, i / obs, i % obs) };
            }
        });
    }
}

/// Output channels `16·ob ..` at the 16 positions of vector `v`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI/VBMI available; `v` < vectors, `ob` < `m / 16`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn vector(ctx: &Ctx<'_>, v: usize, ob: usize) {
    let groups = ctx.c / 4;
    let oy = v * LANES / ctx.w_out;
    let pad = _mm512_set1_epi8(ctx.p.x_zero_point as i8 ^ -128);
    // SAFETY: the tables are 64 bytes.
    let gather = ctx.t.gather.map(|g| unsafe { _mm512_loadu_si512(g.as_ptr() as *const _) });
    let mut acc = [_mm512_setzero_si512(); OB];
    // SAFETY: the weight block holds 3 · c/4 · 3 · 16 dwords; rows() reads inside the image.
    unsafe {
        let wb = (ctx.pack.wq.as_ptr() as *const i32).add(ob * 9 * groups * OB);
        for ky in 0..3 {
            for cg in 0..groups {
                let (z0, z1) = ctx.rows(4 * cg, oy, ky);
                let wk = wb.add((ky * groups + cg) * 3 * OB);
                for (kx, idx) in gather.iter().enumerate() {
                    let x = _mm512_mask_blend_epi8(ctx.t.pad_cols[kx], _mm512_permutex2var_epi8(z0, *idx, z1), pad);
                    for (o, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_dpbusd_epi32(*a, x, _mm512_set1_epi32(wk.add(kx * OB + o).read_unaligned()));
                    }
                }
            }
        }
    }
    let rq = &ctx.p.requant;
    let epi = Epilogue::new(rq, ctx.p.residual, ctx.pack.residual_line);
    for (o, a) in acc.into_iter().enumerate() {
        let oc = ob * OB + o;
        let at = oc * ctx.hw_out + v * LANES;
        let acc = _mm512_add_epi32(a, _mm512_set1_epi32(ctx.pack.bq[oc]));
        // SAFETY: the residual has the output's shape; 16 positions from `at` lie inside channel oc.
        let res = ctx.res.map(|r| unsafe { _mm512_cvtepi8_epi32(_mm_loadu_si128(r.add(at) as *const _)) });
        let (mq, s) = rq.channel(oc);
        let out = epi.channel(epi.hi_shift(mq, s).as_ref(), (mq, s), acc, res);
        // SAFETY: as for the residual.
        unsafe { _mm_storeu_si128(ctx.y.add(at) as *mut _, out) };
    }
}
