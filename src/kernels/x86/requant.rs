//! AVX-512 requantization (docs/int8-spec.md section 3.1), exact for every input:
//!
//! - [`requant64`] is the general form, in 64-bit lanes: two half-width results per 16 accumulators, each
//!   saturated ([`sat32`]) before it is added to anything.
//! - [`HiShift`] keeps all 16 lanes in i32 for the convolution's parameters real nets have (shift ≥ 33):
//!   about half the instructions of the 64-bit form, which on short reductions (K = 144) is a third of a
//!   convolution's time. The identities it rests on: `floor((P + 2^32 R) / 2^32) = floor(P / 2^32) + R` and
//!   `floor(floor(X / 2^a) / 2^b) = floor(X / 2^(a+b))`.
//! - A residual's term takes 256 values, one per int8 input: the pack fits them with one i32 line
//!   ([`ResidualLine`], checked on all 256), three instructions per 16 lanes.

use crate::kernels::{Requant, ResidualRequant};
use crate::quant::ResidualLine;
use core::arch::x86_64::*;

/// `(acc · m + 2^(s-1)) >> s` on the even and the odd i32 lanes of `acc`, as i64 lanes (spec 3.1).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn requant64(acc: __m512i, m: i32, s: i32) -> (__m512i, __m512i) {
    let mv = _mm512_set1_epi64(m as i64);
    let rnd = _mm512_set1_epi64(1i64 << (s - 1));
    let sh = _mm_cvtsi32_si128(s);
    let e = _mm512_mul_epi32(acc, mv);
    let o = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), mv);
    (_mm512_sra_epi64(_mm512_add_epi64(e, rnd), sh), _mm512_sra_epi64(_mm512_add_epi64(o, rnd), sh))
}

/// Saturation of i64 lanes to i32 (the requantize result is an i32).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn sat32(v: __m512i) -> __m512i {
    _mm512_min_epi64(_mm512_max_epi64(v, _mm512_set1_epi64(i32::MIN as i64)), _mm512_set1_epi64(i32::MAX as i64))
}

/// `requantize(acc, m, s)` for shifts in [33, 62], per lane: the high half of the 64-bit product plus
/// `2^(s-33)`, shifted right by `s - 32`. The result lies within ±2^29 (|acc · m| < 2^62), so the spec's i32
/// clamp, and the saturation of any later add of a term below 2^30, never act.
#[derive(Clone, Copy)]
pub(super) struct HiShift {
    /// Each lane's multiplier in its low and its high i32 (`vpmuldq` reads the low one of each i64).
    m_even: __m512i,
    m_odd: __m512i,
    rnd: __m512i,
    shift: __m512i,
}

impl HiShift {
    /// One pair for all lanes, or `None` when the shift is below 33.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn uniform(m: i32, s: i32) -> Option<Self> {
        (33..=62).contains(&s).then(|| Self {
            m_even: _mm512_set1_epi32(m),
            m_odd: _mm512_set1_epi32(m),
            rnd: _mm512_set1_epi32(1 << (s - 33)),
            shift: _mm512_set1_epi32(s - 32),
        })
    }

    /// A pair per lane, or `None` when any shift is below 33.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn lanes(m: __m512i, s: __m512i) -> Option<Self> {
        let ok = _mm512_cmpge_epi32_mask(s, _mm512_set1_epi32(33)) & _mm512_cmple_epi32_mask(s, _mm512_set1_epi32(62));
        (ok == u16::MAX).then(|| Self {
            m_even: m,
            m_odd: _mm512_srli_epi64(m, 32),
            rnd: _mm512_sllv_epi32(_mm512_set1_epi32(1), _mm512_sub_epi32(s, _mm512_set1_epi32(33))),
            shift: _mm512_sub_epi32(s, _mm512_set1_epi32(32)),
        })
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn apply(&self, acc: __m512i) -> __m512i {
        // The products' high halves sit in the odd dwords: the odd lanes' in place, the even lanes' one up.
        let even = _mm512_mul_epi32(acc, self.m_even);
        let odd = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), self.m_odd);
        let hi = _mm512_mask_shuffle_epi32(odd, 0x5555, even, _MM_PERM_CDAB);
        _mm512_srav_epi32(_mm512_add_epi32(hi, self.rnd), self.shift)
    }
}

/// [`ResidualLine`] in i32 lanes.
#[derive(Clone, Copy)]
struct Line {
    mul: __m512i,
    add: __m512i,
    shift: __m128i,
}

impl Line {
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn new(l: &ResidualLine) -> Self {
        Self { mul: _mm512_set1_epi32(l.mul), add: _mm512_set1_epi32(l.add), shift: _mm_cvtsi32_si128(l.shift as i32) }
    }

    /// `q`: int8 values in i32 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn apply(&self, q: __m512i) -> __m512i {
        _mm512_sra_epi32(_mm512_add_epi32(_mm512_mullo_epi32(q, self.mul), self.add), self.shift)
    }
}

/// A convolution's epilogue after the accumulators, for 16 outputs: requantize, add the requantized
/// residual (if any), add the zero point, clamp. Lanes hold i32 results; `res` the residual's int8 values.
#[derive(Clone, Copy)]
pub(super) struct Epilogue {
    /// The output stage (spec 3.2) as i32 lanes: in the i32 form nothing overflows when `zp` is added.
    zp: __m512i,
    lo: __m512i,
    hi: __m512i,
    /// The same in the i16 and i8 lanes of [`Self::narrow`].
    zp16: __m512i,
    lo8: __m512i,
    hi8: __m512i,
    /// The residual's requantization in i32 form: its line, where the pack found one.
    line: Option<Line>,
    residual: Option<ResidualRequant>,
    /// Whether `lo` / `hi` bind inside i8 (a ReLU's zero point, a narrower range).
    clamp_lo: bool,
    clamp_hi: bool,
}

impl Epilogue {
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn new(rq: &Requant<'_>, residual: Option<ResidualRequant>, line: Option<ResidualLine>) -> Self {
        Self {
            line: line.filter(|_| residual.is_some()).map(|l| Line::new(&l)),
            zp: _mm512_set1_epi32(rq.zero_point),
            lo: _mm512_set1_epi32(rq.lo),
            hi: _mm512_set1_epi32(rq.hi),
            zp16: _mm512_set1_epi16(rq.zero_point as i16),
            lo8: _mm512_set1_epi8(rq.lo as i8),
            hi8: _mm512_set1_epi8(rq.hi as i8),
            residual,
            clamp_lo: rq.lo > i8::MIN as i32,
            clamp_hi: rq.hi < i8::MAX as i32,
        }
    }

    /// The i32 form's requantization for one pair `(m, s)` on all lanes, or `None` where only the general
    /// form serves: the shift is out of [`HiShift`]'s range, or the residual has no line.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn hi_shift(&self, m: i32, s: i32) -> Option<HiShift> {
        HiShift::uniform(m, s).filter(|_| self.i32_ready())
    }

    /// [`Self::hi_shift`] with a pair per lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn hi_shift_lanes(&self, m: __m512i, s: __m512i) -> Option<HiShift> {
        HiShift::lanes(m, s).filter(|_| self.i32_ready())
    }

    /// Whether the i32 form serves this node's residual (always, without one).
    fn i32_ready(&self) -> bool {
        self.residual.is_none() || self.line.is_some()
    }

    /// The i32 form before the output stage, with `h` from [`Self::hi_shift`] or [`Self::hi_shift_lanes`]:
    /// the requantized sum (|v| < 2³⁰, HiShift and the residual line bound the terms).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn pre_i32(&self, h: &HiShift, acc: __m512i, res: Option<__m512i>) -> __m512i {
        let v = h.apply(acc);
        match (res, &self.line) {
            (Some(res), Some(l)) => _mm512_add_epi32(v, l.apply(res)),
            _ => v,
        }
    }

    /// The i32 form, with `h` from [`Self::hi_shift`] or [`Self::hi_shift_lanes`]: the 16 output bytes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn i32(&self, h: &HiShift, acc: __m512i, res: Option<__m512i>) -> __m128i {
        // The narrowing saturates to [-128, 127], so a bound at either end needs no instruction of its own.
        let mut v = _mm512_add_epi32(self.pre_i32(h, acc, res), self.zp);
        if self.clamp_lo {
            v = _mm512_max_epi32(v, self.lo);
        }
        if self.clamp_hi {
            v = _mm512_min_epi32(v, self.hi);
        }
        _mm512_cvtsepi32_epi8(v)
    }

    /// Finished output bytes in [`Self::pre`]'s form: `bytes - zp`, which the output stage returns unchanged.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn unfinish(&self, bytes: __m128i) -> __m512i {
        _mm512_sub_epi32(_mm512_cvtepi8_epi32(bytes), self.zp)
    }

    /// The output bytes of 16 accumulators of one channel, pair `(m, s)` (positions in the lanes): the i32
    /// form with `h` from [`Self::hi_shift`] where it serves, else the general one.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn channel(
        &self,
        h: Option<&HiShift>,
        (m, s): (i32, i32),
        acc: __m512i,
        res: Option<__m512i>,
    ) -> __m128i {
        match h {
            Some(h) => self.i32(h, acc, res),
            None => {
                let (e, o) = requant64(acc, m, s);
                self.i64(e, o, res)
            }
        }
    }

    /// The epilogue up to its output stage, for [`Self::narrow`]: i32 lanes `v` whose output bytes are
    /// `clamp(sat8(v + zp), lo, hi)`. In the i32 form that is the requantized sum; the general form finishes
    /// the bytes ([`Self::unfinish`]).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn pre(&self, h: Option<&HiShift>, (m, s): (i32, i32), acc: __m512i, res: Option<__m512i>) -> __m512i {
        match h {
            Some(h) => self.pre_i32(h, acc, res),
            None => {
                let (e, o) = requant64(acc, m, s);
                self.unfinish(self.i64(e, o, res))
            }
        }
    }

    /// The output stage of four vectors of [`Self::pre`]: 64 bytes, 128-bit lane `l` holding lane `l`'s dwords
    /// of `v[0]`, `v[1]`, `v[2]`, `v[3]` in turn (the pack instructions' order). The zero point is added in
    /// saturating i16 between the two saturating packs, and the clamp acts on bytes: with `zp`, `lo` and `hi`
    /// in i8 that equals `clamp(sat8(v + zp), lo, hi)` (a lane saturated to i16 stays beyond i8 after `+ zp`),
    /// at a quarter of the per-vector narrowing's instructions.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn narrow(&self, v: [__m512i; 4]) -> __m512i {
        let a = _mm512_adds_epi16(_mm512_packs_epi32(v[0], v[1]), self.zp16);
        let b = _mm512_adds_epi16(_mm512_packs_epi32(v[2], v[3]), self.zp16);
        let mut bytes = _mm512_packs_epi16(a, b);
        if self.clamp_lo {
            bytes = _mm512_max_epi8(bytes, self.lo8);
        }
        if self.clamp_hi {
            bytes = _mm512_min_epi8(bytes, self.hi8);
        }
        bytes
    }

    /// The general form, from the requantized even and odd lanes in i64 ([`requant64`]): the 16 output bytes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn i64(&self, mut e: __m512i, mut o: __m512i, res: Option<__m512i>) -> __m128i {
        if let (Some(res), Some(rr)) = (res, self.residual) {
            let (re, ro) = requant64(_mm512_sub_epi32(res, _mm512_set1_epi32(rr.zero_point)), rr.multiplier, rr.shift);
            e = _mm512_add_epi64(sat32(e), sat32(re));
            o = _mm512_add_epi64(sat32(o), sat32(ro));
        }
        // Clamping the exact sum to [lo, hi] equals the spec's i32-saturating steps: lo and hi lie in i8.
        let (zp, lo, hi) = (
            _mm512_cvtepi32_epi64(_mm512_castsi512_si256(self.zp)),
            _mm512_cvtepi32_epi64(_mm512_castsi512_si256(self.lo)),
            _mm512_cvtepi32_epi64(_mm512_castsi512_si256(self.hi)),
        );
        let fin = |v: __m512i| _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(v, zp), lo), hi);
        _mm512_cvtepi32_epi8(_mm512_mask_blend_epi32(0xAAAA, fin(e), _mm512_slli_epi64(fin(o), 32)))
    }
}

/// The requantization of 16 output channels held in the lanes (the row and the Winograd kernels): each
/// lane's pair, in the i32 form where every lane's shift allows it, else in 64-bit lanes (even and odd
/// channels apart).
#[derive(Clone, Copy)]
pub(super) struct ChannelLanes {
    hi: Option<HiShift>,
    m: __m512i,
    /// Shifts and rounding terms of the even and the odd lanes, as i64.
    se: __m512i,
    so: __m512i,
    re: __m512i,
    ro: __m512i,
}

impl ChannelLanes {
    /// Channels `oc0 .. oc0 + 16` of `rq`, `live` marking those below the channel count: the others get a
    /// harmless pair that every form accepts.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn new(epi: &Epilogue, rq: &Requant<'_>, oc0: usize, live: u16) -> Self {
        let (m, s) = if rq.multiplier.len() == 1 {
            let (m, s) = rq.channel(0);
            (_mm512_maskz_set1_epi32(live, m), _mm512_mask_set1_epi32(_mm512_set1_epi32(33), live, s))
        } else {
            // SAFETY: the live lanes are channels below m, which per-channel pairs cover.
            unsafe {
                (
                    _mm512_maskz_loadu_epi32(live, rq.multiplier.as_ptr().wrapping_add(oc0)),
                    _mm512_mask_loadu_epi32(_mm512_set1_epi32(33), live, rq.shift.as_ptr().wrapping_add(oc0)),
                )
            }
        };
        let (se, so) = (_mm512_and_si512(s, _mm512_set1_epi64(0xffff_ffff)), _mm512_srli_epi64(s, 32));
        let one = _mm512_set1_epi64(1);
        let rnd = |s: __m512i| _mm512_sllv_epi64(one, _mm512_sub_epi64(s, one));
        Self { hi: epi.hi_shift_lanes(m, s), m, se, so, re: rnd(se), ro: rnd(so) }
    }

    /// The epilogue's output bytes for accumulators `acc` (and residual bytes `res`, sign-extended).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn apply(&self, epi: &Epilogue, acc: __m512i, res: Option<__m512i>) -> __m128i {
        match &self.hi {
            Some(h) => epi.i32(h, acc, res),
            None => {
                let e = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(acc, self.m), self.re), self.se);
                let o = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), _mm512_srli_epi64(self.m, 32));
                epi.i64(e, _mm512_srav_epi64(_mm512_add_epi64(o, self.ro), self.so), res)
            }
        }
    }

    /// [`Self::apply`] up to the output stage, in [`Epilogue::pre`]'s form (for [`Epilogue::narrow`]).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn pre(&self, epi: &Epilogue, acc: __m512i, res: Option<__m512i>) -> __m512i {
        match &self.hi {
            Some(h) => epi.pre_i32(h, acc, res),
            None => epi.unfinish(self.apply(epi, acc, res)),
        }
    }
}
