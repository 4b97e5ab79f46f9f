//! int8 3x3 stride-1 convolution by Winograd F(4x4, 3x3) with the tiles in the lanes (AVX-512 VNNI + VBMI),
//! for layers with too few channels to fill [`super::winograd_i8`]'s channel lanes (ResNet-20's 32x32x16
//! stage). The arithmetic is that module's, exact and bit for bit the direct kernel's; only the layout
//! differs:
//!
//! - A block is 16 tiles: whole tile rows of an output 16, 32 or 64 wide (4, 2 or 1 tile rows). The input
//!   transform reads the planar input rows in place, a channel pair at a time: one `vpermt2b` per pair of
//!   taps ([`PAIRS`]) sets their bytes side by side for the pair's 16 tiles (padding columns blended in,
//!   padding rows read from a row of zero points), so there is no plane fill, and `vpmaddubsw` makes the
//!   first pass of `Bᵀ d B` from them. `V` is `[36][c/2][16]` dwords, a channel pair per tile lane.
//! - Products broadcast a weight pair (`U`: `[m/8][36][c/2][8]` dwords) against the 16 tiles' pairs, 8
//!   output channels at a time ([`OB`]): `M` is `[36][8][16]` i32.
//! - The output transform runs per output channel on 16 tiles, so the requantization's parameters are
//!   scalars, the bias enters with the products (at ξ = (1, 1)), a tile row's four column vectors narrow
//!   at once, and one `vpermb` per output row turns their bytes into whole row stores (the residual
//!   likewise into four column vectors): no 16x16 transposes.

use super::requant::Epilogue;
use super::winograd_i8::{at, bt, exact_with_bias, nth, same_3x3, transforms, unscale, XI};
use super::{lane_blocks, panel_stride, Shared};
use crate::kernels::packed::{ConvPack, InPlace, Parallel};
use crate::kernels::{ConvGeom, QConvParams};
use core::arch::x86_64::*;
use std::prelude::v1::*;

/// Tiles per block (the i32 lanes).
const LANES: usize = 16;
/// Output channels per products pass.
const OB: usize = 8;

/// Layers this kernel takes: [`super::winograd_i8`]'s exact 3x3 "same" layers with at most 32 input
/// channels (in pairs), output channels in eights, and outputs 16, 32 or 64 wide whose height is whole
/// blocks; the bound of exactness includes the bias, which enters before the output transform. Needs VBMI.
pub(super) fn suits(g: &ConvGeom, p: &QConvParams<'_>) -> bool {
    same_3x3(g)
        && matches!(g.w_out, 16 | 32 | 64)
        && g.h_out.is_multiple_of(4 * tile_rows(g.w_out))
        && g.c_in.is_multiple_of(2)
        && g.c_in <= 32
        && g.c_out.is_multiple_of(OB)
        && exact_with_bias(g, p.weight, p.bias)
        && crate::kernels::isa::has_vbmi()
}

/// Tile rows per block for outputs `w` wide.
fn tile_rows(w: usize) -> usize {
    LANES / (w / 4)
}

/// The weight transforms as channel pairs and the corrected bias.
pub(super) fn pack(g: &ConvGeom, p: &QConvParams<'_>) -> ConvPack {
    let (c, m) = (g.c_in, g.c_out);
    let pairs = c / 2;
    ConvPack {
        mr: OB,
        nr: LANES,
        k: c * 9,
        kp: c * 9,
        q: g.h_out * g.w_out / 16,
        tiles: g.h_out * g.w_out / (16 * LANES),
        w_out: g.w_out,
        wq16: transforms(p.weight, c, m, OB),
        bq: crate::kernels::packed::corrected_bias(p.weight, c * 9, p.bias, p.x_zero_point),
        panel_bytes: XI * pairs * LANES * 4 + XI * OB * LANES * 4,
        elem: 1,
        winograd: true,
        in_place: InPlace::Winograd,
        ..ConvPack::default()
    }
}

/// The byte permutations of a block of outputs `w` wide.
struct Tables {
    /// Per tap pair of [`PAIRS`]: the `vpermt2b` indices gathering a channel pair's rows ([`Ctx::rows`])
    /// into the two taps' bytes side by side for each of the 16 tiles x 2 channels (the `vpmaddubsw`
    /// operand), and the bytes that fall on padding columns.
    gather: [[u8; 64]; 5],
    pad_cols: [u64; 5],
    /// `vpermb` indices from four column vectors (16 tiles each, as `Epilogue::narrow` packs them) to the
    /// block's output rows, and from the rows to the four columns.
    to_rows: [u8; 64],
    to_cols: [u8; 64],
}

/// The tap pairs whose weighted sums make `Bᵀ d` (`vpmaddubsw`, [`BT_PAIRS`]).
const PAIRS: [(usize, usize); 5] = [(0, 2), (4, 5), (1, 2), (3, 4), (1, 3)];

/// Row `i` of `Bᵀ` as two weighted tap pairs: (pair, its two weights) for each, over [`PAIRS`].
const BT_PAIRS: [[(usize, i8, i8); 2]; 6] = [
    [(0, 4, -5), (1, 1, 0)],
    [(2, -4, -4), (3, 1, 1)],
    [(2, 4, -4), (3, -1, 1)],
    [(2, -2, -1), (3, 2, 1)],
    [(2, 2, -1), (3, -2, 1)],
    [(4, 4, -5), (1, 0, 1)],
];

/// [`Tables`] for outputs `w` wide (lane `l` is tile `(l / (w/4), l % (w/4))` of the block).
const fn tables(w: usize) -> Tables {
    let mut t = Tables { gather: [[0; 64]; 5], pad_cols: [0; 5], to_rows: [0; 64], to_cols: [0; 64] };
    let tx_n = w / 4;
    let mut b = 0;
    while b < 64 {
        // Byte b of pair p: tap PAIRS[p].0 or .1 (b even or odd) of lane b / 4, channel b / 2 % 2 (a tile's
        // channel pair is then a dword of the i16 transform).
        let (ch, l) = (b / 2 % 2, b / 4);
        let (ty, tx) = (l / tx_n, l % tx_n);
        let mut p = 0;
        while p < 5 {
            let col = 4 * tx + if b % 2 == 0 { PAIRS[p].0 } else { PAIRS[p].1 };
            if col == 0 || col > w {
                t.pad_cols[p] |= 1 << b;
            } else {
                t.gather[p][b] = (ch * 64 + ty * w + col - 1) as u8;
            }
            p += 1;
        }
        // Byte b of the column vectors: column j = b / 16, lane l = b % 16; in `Epilogue::narrow`'s order
        // that byte lies at 16 (l / 4) + 4 j + l % 4.
        let (j, l) = (b / 16, b % 16);
        let (ty, tx) = (l / tx_n, l % tx_n);
        let row_byte = ty * w + 4 * tx + j;
        t.to_rows[row_byte] = (16 * (l / 4) + 4 * j + l % 4) as u8;
        t.to_cols[b] = row_byte as u8;
        b += 1;
    }
    t
}

/// Tables for outputs 16, 32 and 64 wide.
static TABLES: [Tables; 3] = [tables(16), tables(32), tables(64)];

/// What one task needs, for one image.
struct Ctx<'p> {
    pack: &'p ConvPack,
    p: &'p QConvParams<'p>,
    t: &'static Tables,
    x: *const i8,
    panels: Shared<u8>,
    y: Shared<i8>,
    res: Option<Shared<i8>>,
    c: usize,
    h: usize,
    w: usize,
    /// A row of the input's zero point: the padding rows.
    pad_row: [i8; 64],
}
// SAFETY: tasks only read the input and write disjoint outputs and their own panel.
unsafe impl Sync for Ctx<'_> {}

impl Ctx<'_> {
    /// Worker `w`'s `V` (`[36][c/2][16]` dwords) and `M` (`[36][OB][16]` i32).
    fn panel(&self, w: usize) -> (*mut i32, *mut i32) {
        let v = self.panels.get().wrapping_add(w * panel_stride(self.pack)) as *mut i32;
        (v, v.wrapping_add(XI * self.c / 2 * LANES))
    }

    /// Rows `row0 + 4·t` (t < the block's tile rows) of channel `ch` in one vector, each `w` bytes; rows outside
    /// the input read the zero points.
    ///
    /// # Safety
    /// AVX-512 F available; `src` is an image of `c` channels of `h x w`, `ch` < `c`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows(&self, src: *const i8, ch: usize, row0: isize) -> __m512i {
        let row = |t: usize| {
            let r = row0 + 4 * t as isize;
            if (0..self.h as isize).contains(&r) {
                src.wrapping_add((ch * self.h + r as usize) * self.w)
            } else {
                self.pad_row.as_ptr()
            }
        };
        // SAFETY: each pointer has w bytes (a row of the image, or the padding row of 64).
        unsafe {
            match self.w {
                64 => _mm512_loadu_si512(row(0) as *const _),
                32 => _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(row(0) as *const _)),
                    _mm256_loadu_si256(row(1) as *const _),
                ),
                _ => {
                    let q = |t: usize| _mm_loadu_si128(row(t) as *const _);
                    let lo = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(q(0)), q(1));
                    let hi = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(q(2)), q(3));
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
                }
            }
        }
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
    scratch: &mut [u8],
    par: &dyn Parallel,
) {
    let hw = g.h_out * g.w_out;
    let mut ctx = Ctx {
        pack,
        p,
        t: &TABLES[g.w_out.trailing_zeros() as usize - 4],
        x: core::ptr::null(),
        panels: Shared(scratch.as_mut_ptr()),
        y: Shared(core::ptr::null_mut()),
        res: None,
        c: g.c_in,
        h: g.h_out,
        w: g.w_out,
        pad_row: [p.x_zero_point as i8; 64],
    };
    let (blocks, obs) = (pack.tiles, g.c_out / OB);
    for n in 0..g.n {
        ctx.x = x[n * g.c_in * hw..].as_ptr();
        ctx.y = Shared(y[n * g.c_out * hw..].as_mut_ptr());
        ctx.res = residual.map(|r| Shared(r[n * g.c_out * hw..].as_ptr() as *mut i8));
        let ctx = &ctx;
        // SAFETY (both): the registry lists this kernel under the avx512vnni tier and `suits` checked VBMI;
        // worker w only touches panel w, and tasks write disjoint outputs.
        lane_blocks(par, blocks, obs, &|w, b| unsafe { input_tiles(ctx, w, b) }, &|w, b, ob| unsafe {
            products(ctx, w, ob);
            outputs(ctx, w, b, ob);
        });
    }
}

/// Builds `V` of block `b` into worker `w`'s panel.
///
/// # Safety
/// AVX-512 F/BW/VBMI available; `ctx.x` is the current image; `b` < blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn input_tiles(ctx: &Ctx<'_>, w: usize, b: usize) {
    let (v, m) = ctx.panel(w);
    let pairs = ctx.c / 2;
    let row0 = (4 * b * tile_rows(ctx.w)) as isize - 1;
    let flip = _mm512_set1_epi8(-128);
    let pad = _mm512_set1_epi8(ctx.p.x_zero_point as i8 ^ -128);
    // SAFETY: the tables are 64 bytes.
    let gather = ctx.t.gather.map(|g| unsafe { _mm512_loadu_si512(g.as_ptr() as *const _) });
    // The rows' transforms t[r][j] go through M's space (free until the products): kept in an array they
    // cost a memset per pair, or an outlined closure taking its vectors through memory.
    let t = m as *mut __m512i;
    for cp in 0..pairs {
        for r in 0..6 {
            // SAFETY: channels 2cp, 2cp + 1 < c of the current image.
            let (z0, z1) =
                unsafe { (ctx.rows(ctx.x, 2 * cp, row0 + r as isize), ctx.rows(ctx.x, 2 * cp + 1, row0 + r as isize)) };
            let (z0, z1) = (_mm512_xor_si512(z0, flip), _mm512_xor_si512(z1, flip));
            let pair =
                |k: usize| _mm512_mask_blend_epi8(ctx.t.pad_cols[k], _mm512_permutex2var_epi8(z0, gather[k], z1), pad);
            let taps = [pair(0), pair(1), pair(2), pair(3), pair(4)];
            // Bᵀ along the row on the bytes: two `vpmaddubsw` per output (u8 taps times i8 weights, at most
            // 255 · 9 in magnitude, so nothing saturates).
            let row = |i: usize| {
                let [(p, a, b), (q, c, d)] = BT_PAIRS[i];
                let w = |x: i8, y: i8| _mm512_set1_epi16(((y as u8 as i16) << 8) | x as u8 as i16);
                _mm512_add_epi16(_mm512_maddubs_epi16(taps[p], w(a, b)), _mm512_maddubs_epi16(taps[q], w(c, d)))
            };
            for (j, trj) in [row(0), row(1), row(2), row(3), row(4), row(5)].into_iter().enumerate() {
                // SAFETY: M holds 36 · OB · 16 dwords, more than 36 vectors.
                unsafe { t.add(r * 6 + j).write_unaligned(trj) };
            }
        }
        for j in 0..6 {
            // SAFETY: written above.
            let tr = |r: usize| unsafe { t.add(r * 6 + j).read_unaligned() };
            for (i, vij) in bt([tr(0), tr(1), tr(2), tr(3), tr(4), tr(5)]).iter().enumerate() {
                // SAFETY: V holds 36 · c/2 · 16 dwords.
                unsafe { _mm512_storeu_si512(v.add(((i * 6 + j) * pairs + cp) * LANES) as *mut _, *vij) };
            }
        }
    }
}

/// `M[ξ] = Σ_c U[ξ] ⊙ V[ξ]` for output channels `OB·ob ..` of the block in worker `w`'s panel.
///
/// # Safety
/// AVX-512 F + VNNI available; [`input_tiles`] ran on this worker for the block; `ob` < `m / OB`.
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn products(ctx: &Ctx<'_>, w: usize, ob: usize) {
    let (v, m) = ctx.panel(w);
    let pairs = ctx.c / 2;
    // SAFETY: the weight block holds 36 · c/2 · OB dwords; V and M are the worker's.
    unsafe {
        let u = (ctx.pack.wq16.as_ptr() as *const i32).add(ob * XI * pairs * OB);
        // The bias enters at ξ = (1, 1): column 1 of `A'ᵀ` is 4 in every row, so `A'ᵀ (36 b e₁e₁ᵀ) A'` is
        // `576 b` at every output (as `at` scales it), and unscaling leaves `acc + b` (`suits` bounds it).
        let bias = ctx.pack.bq[ob * OB..][..OB].iter().map(|&b| _mm512_set1_epi32(b.wrapping_mul(36)));
        let mut bias_acc = [_mm512_setzero_si512(); OB];
        for (a, b) in bias_acc.iter_mut().zip(bias) {
            *a = b;
        }
        for xi in 0..XI {
            let mut acc = if xi == 7 { bias_acc } else { [_mm512_setzero_si512(); OB] };
            for cp in 0..pairs {
                let x = _mm512_loadu_si512(v.add((xi * pairs + cp) * LANES) as *const _);
                let ux = u.add((xi * pairs + cp) * OB);
                for (o, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_dpwssd_epi32(*a, x, _mm512_set1_epi32(ux.add(o).read_unaligned()));
                }
            }
            for (o, a) in acc.iter().enumerate() {
                _mm512_storeu_si512(m.add((xi * OB + o) * LANES) as *mut _, *a);
            }
        }
    }
}

/// `Y = A'ᵀ M A' / 576` (exact, bias included), the epilogue and the row stores for output channels `OB·ob ..` of
/// block `b`.
///
/// # Safety
/// AVX-512 F/BW/VL/VBMI available; [`products`] ran on this worker for (`b`, `ob`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn outputs(ctx: &Ctx<'_>, w: usize, b: usize, ob: usize) {
    let (_, m) = ctx.panel(w);
    let (h, wd) = (ctx.h, ctx.w);
    let rq = &ctx.p.requant;
    let epi = Epilogue::new(rq, ctx.p.residual, ctx.pack.residual_line);
    // SAFETY: the tables are 64 bytes.
    let (to_rows, to_cols) = unsafe {
        (_mm512_loadu_si512(ctx.t.to_rows.as_ptr() as *const _), _mm512_loadu_si512(ctx.t.to_cols.as_ptr() as *const _))
    };
    let row0 = 4 * b * tile_rows(wd);
    for o in 0..OB {
        let oc = ob * OB + o;
        // SAFETY: M holds 36 · OB · 16 entries.
        let mm = |xi: usize| unsafe { _mm512_loadu_si512(m.add((xi * OB + o) * LANES) as *const _) };
        let col = |k: usize| at([mm(k), mm(6 + k), mm(12 + k), mm(18 + k), mm(24 + k), mm(30 + k)]);
        let cols = [col(0), col(1), col(2), col(3), col(4), col(5)];
        let (mq, s) = rq.channel(oc);
        let hi32 = epi.hi_shift(mq, s);
        for i in 0..4 {
            // The residual's four columns of 16 tiles, from its rows.
            // SAFETY: the residual has the output's shape; the rows lie inside it (whole blocks).
            let res = ctx
                .res
                .map(|r| unsafe { _mm512_permutexvar_epi8(to_cols, ctx.rows(r.get(), oc, (row0 + i) as isize)) });
            let y = at(nth(&cols, i));
            let pre = |j: usize| {
                let r = res.map(|r| _mm512_cvtepi8_epi32(lane128(r, j)));
                epi.pre(hi32.as_ref(), (mq, s), unscale(y[j], i, j), r)
            };
            let rows = _mm512_permutexvar_epi8(to_rows, epi.narrow([pre(0), pre(1), pre(2), pre(3)]));
            let at = ctx.y.get().wrapping_add((oc * h + row0 + i) * wd);
            // SAFETY: rows row0 + i + 4t of channel oc, inside the output (whole blocks).
            unsafe {
                match wd {
                    64 => _mm512_storeu_si512(at as *mut _, rows),
                    32 => {
                        _mm256_storeu_si256(at as *mut _, _mm512_castsi512_si256(rows));
                        _mm256_storeu_si256(at.add(4 * wd) as *mut _, _mm512_extracti64x4_epi64::<1>(rows));
                    }
                    _ => {
                        _mm_storeu_si128(at as *mut _, _mm512_castsi512_si128(rows));
                        _mm_storeu_si128(at.add(4 * wd) as *mut _, _mm512_extracti32x4_epi32::<1>(rows));
                        _mm_storeu_si128(at.add(8 * wd) as *mut _, _mm512_extracti32x4_epi32::<2>(rows));
                        _mm_storeu_si128(at.add(12 * wd) as *mut _, _mm512_extracti32x4_epi32::<3>(rows));
                    }
                }
            }
        }
    }
}

/// 128-bit lane `j` of `v`.
#[inline]
#[target_feature(enable = "avx512f")]
fn lane128(v: __m512i, j: usize) -> __m128i {
    match j {
        0 => _mm512_castsi512_si128(v),
        1 => _mm512_extracti32x4_epi32::<1>(v),
        2 => _mm512_extracti32x4_epi32::<2>(v),
        _ => _mm512_extracti32x4_epi32::<3>(v),
    }
}
