//! The int8 arithmetic specification (docs/int8-spec.md), as code. Every backend must reproduce these
//! functions bit for bit; the scalar kernels call them directly.

mod lower;

pub use lower::{lower_to_int8, qparams_from_ranges, quantize_weight_row, ActivationScheme, QParamMap, Ranges};

use crate::graph::QParams;

/// Largest and smallest allowed total right shift of a requantization multiplier.
pub const SHIFT_RANGE: core::ops::RangeInclusive<i32> = 1..=62;

/// Splits a positive real multiplier into `(m, shift)` with `m` in [2^30, 2^31) and
/// `real ≈ m * 2^-shift`. Returns None if `real` is not finite and positive or needs a shift outside
/// [`SHIFT_RANGE`] (real multipliers from 2^-32 up to just under 2^30).
pub fn quantize_multiplier(real: f64) -> Option<(i32, i32)> {
    if !(real.is_finite() && real > 0.0) {
        return None;
    }
    // real = frac * 2^exp with frac in [0.5, 1), computed exactly by repeated scaling by two.
    let (mut frac, mut exp) = (real, 0i32);
    while frac >= 1.0 {
        frac /= 2.0;
        exp += 1;
    }
    while frac < 0.5 {
        frac *= 2.0;
        exp -= 1;
    }
    let mut m = libm::round(frac * (1u64 << 31) as f64) as i64;
    if m == 1 << 31 {
        m /= 2;
        exp += 1;
    }
    let shift = 31 - exp;
    SHIFT_RANGE.contains(&shift).then_some((m as i32, shift))
}

/// The requantization rule: `round_half_up(acc * m / 2^shift)`, computed exactly in 64 bits and saturated to
/// i32. `shift` must lie in [`SHIFT_RANGE`] (checked when the plan is built).
#[inline(always)]
pub fn requantize(acc: i32, m: i32, shift: i32) -> i32 {
    let prod = acc as i64 * m as i64;
    let rounded = (prod + (1i64 << (shift - 1))) >> shift;
    rounded.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// `requantize(q - zp, m, s)` of every int8 `q` (a residual's term, spec section 7.1) as one line in i32:
/// `(q · mul + add) >> shift`, neither step overflowing. [`ResidualLine::fit`] checks all 256 values, so a
/// kernel may use the line in place of the 64-bit product: three instructions instead of seven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResidualLine {
    pub mul: i32,
    pub add: i32,
    pub shift: u32,
}

impl ResidualLine {
    /// The line with the largest shift (the finest slope) that gives `requantize(q - zp, m, s)` for every
    /// int8 `q`, each value below 2^29 in magnitude; `None` if no shift in [0, 30] has one.
    pub fn fit(zero_point: i32, multiplier: i32, shift: i32) -> Option<Self> {
        if !SHIFT_RANGE.contains(&shift) || !(-128..=127).contains(&zero_point) {
            return None;
        }
        let want: [i64; 256] =
            core::array::from_fn(|i| requantize(i as i32 - 128 - zero_point, multiplier, shift) as i64);
        if want.iter().any(|v| v.abs() >= 1 << 29) {
            return None;
        }
        let q = |i: usize| i as i64 - 128;
        (0..=30u32).rev().find_map(|sh| {
            // The slope's floor at this shift, and one above: the exact slope lies between.
            let base = ((multiplier as i128) << sh >> shift) as i64;
            [base, base + 1].into_iter().find_map(|mul| {
                // want[i] · 2^sh ≤ q·mul + add < (want[i] + 1) · 2^sh for every q bounds add from both sides.
                let lo = (0..256).map(|i| (want[i] << sh) - q(i) * mul).max()?;
                let hi = (0..256).map(|i| ((want[i] + 1) << sh) - 1 - q(i) * mul).min()?;
                let fits = |v: i64| (i32::MIN as i64..=i32::MAX as i64).contains(&v);
                (lo <= hi && fits(mul) && fits(lo) && (0..256).all(|i| fits(q(i) * mul + lo))).then_some(Self {
                    mul: mul as i32,
                    add: lo as i32,
                    shift: sh,
                })
            })
        })
    }

    /// The line at `q` (reference form of what kernels compute in i32 lanes).
    pub fn at(&self, q: i8) -> i32 {
        (q as i32 * self.mul + self.add) >> self.shift
    }
}

/// Final step of every int8 op: add the output zero point and clamp to [lo, hi] (the storage range
/// narrowed by the fused activation).
#[inline(always)]
pub fn saturate(v: i32, zero_point: i32, lo: i32, hi: i32) -> i8 {
    v.saturating_add(zero_point).clamp(lo, hi) as i8
}

/// Quantizes one f32: `clamp(round_half_away(x / scale) + zero_point)`. NaN maps to the zero point.
#[inline]
pub fn quantize_f32(x: f32, scale: f32, zero_point: i32, lo: i32, hi: i32) -> i8 {
    let r = libm::roundf(x / scale);
    // `as` saturates in Rust, so huge values clamp instead of wrapping; NaN becomes 0.
    saturate(r as i32, zero_point, lo, hi)
}

/// Dequantizes one value: `(q - zero_point) * scale`.
#[inline]
pub fn dequantize(q: i8, scale: f32, zero_point: i32) -> f32 {
    (q as i32 - zero_point) as f32 * scale
}

/// The internal int8 view of a quantized value: uint8 storage becomes int8 with the zero point moved by -128.
/// Returns (zero_point, qmin, qmax) in the int8 domain.
pub fn internal_i8(q: &QParams) -> (i32, i32, i32) {
    let (lo, hi) = q.range();
    let off = lo + 128;
    (q.zero_point - off, lo - off, hi - off)
}

/// The int8 clamp bounds of an activation on a value quantized with `q` (internal int8 domain).
pub fn activation_bounds(act: crate::graph::Activation, q: &QParams) -> (i32, i32) {
    let (zp, qmin, qmax) = internal_i8(q);
    let (lo, hi) = act.bounds();
    let to_q = |v: f32| -> i32 {
        if v.is_infinite() {
            if v > 0.0 {
                qmax
            } else {
                qmin
            }
        } else {
            (libm::roundf(v / q.scale) as i32).saturating_add(zp).clamp(qmin, qmax)
        }
    };
    (to_q(lo).max(qmin), to_q(hi).min(qmax))
}

/// Quantization parameters covering [min, max] (always widened to include 0, so zero padding is exact).
pub fn qparams_for_range(min: f32, max: f32, scheme: ActivationScheme) -> QParams {
    use crate::graph::QType;
    let (min, max) = (min.min(0.0), max.max(0.0));
    let span_ok = |s: f32| if s > 0.0 && s.is_finite() { s } else { 1.0 };
    match scheme {
        ActivationScheme::SymmetricI8 => {
            let scale = span_ok(min.abs().max(max) / 127.0);
            QParams { dtype: QType::I8, scale, zero_point: 0 }
        }
        ActivationScheme::AsymmetricI8 | ActivationScheme::AsymmetricU8 => {
            let (dtype, qmin) = match scheme {
                ActivationScheme::AsymmetricU8 => (QType::U8, 0),
                _ => (QType::I8, -128),
            };
            let scale = span_ok((max - min) / 255.0);
            let zero_point = (qmin as f32 - libm::roundf(min / scale)).clamp(qmin as f32, (qmin + 255) as f32) as i32;
            QParams { dtype, scale, zero_point }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplier_reconstructs_real() {
        for &real in &[1e-9, 3.3e-5, 0.00123, 0.25, 0.5, 0.7123, 0.99999999, 1.0, 1.5, 37.0, 1e6] {
            let (m, s) = quantize_multiplier(real).unwrap();
            assert!((1 << 30..=i32::MAX).contains(&m), "m={m} for {real}");
            let back = m as f64 / 2f64.powi(s);
            assert!((back - real).abs() <= real * 1e-9, "{real} -> {m}, {s} -> {back}");
        }
        assert!(quantize_multiplier(0.0).is_none());
        assert!(quantize_multiplier(f64::NAN).is_none());
        assert!(quantize_multiplier(1e-30).is_none());
    }

    #[test]
    fn requantize_rounds_half_up_exactly() {
        // m = 2^30, shift = 31 is an exact multiply by 1/2: ties go up (towards +inf).
        let (m, s) = (1 << 30, 31);
        assert_eq!(requantize(3, m, s), 2);
        assert_eq!(requantize(-3, m, s), -1);
        assert_eq!(requantize(5, m, s), 3);
        assert_eq!(requantize(-5, m, s), -2);
        assert_eq!(requantize(4, m, s), 2);
        // Saturation instead of wrapping for large multipliers.
        assert_eq!(requantize(i32::MAX, i32::MAX, 1), i32::MAX);
        assert_eq!(requantize(i32::MIN, i32::MAX, 1), i32::MIN);
        // Against an independent big-rational computation on random values.
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let acc = (x as i32) >> (x % 16);
            let m = ((x >> 32) as i32 & 0x3fff_ffff) | 0x4000_0000;
            let s = 31 + (x % 20) as i32;
            let num = acc as i128 * m as i128;
            let den = 1i128 << s;
            let floor = num.div_euclid(den);
            let expect = if (num - floor * den) * 2 >= den { floor + 1 } else { floor };
            assert_eq!(requantize(acc, m, s) as i128, expect, "acc={acc} m={m} s={s}");
        }
    }

    #[test]
    fn residual_line_matches_requantize_on_every_byte() {
        // Residual scales as nets have them (about 2^-6 to 2^6) take a line; each line found is checked here
        // against `requantize` itself on all 256 inputs, independently of `fit`'s own bounds.
        let (mut x, mut fitted) = (0x2545F4914F6CDD1Du64, 0);
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let real = 2f64.powf((x % 12_000) as f64 / 1000.0 - 6.0);
            let zp = (x >> 20) as u8 as i32 - 128;
            let (m, s) = quantize_multiplier(real).unwrap();
            if let Some(line) = ResidualLine::fit(zp, m, s) {
                fitted += 1;
                for q in -128..=127i32 {
                    assert_eq!(line.at(q as i8), requantize(q - zp, m, s), "q={q} zp={zp} m={m} s={s} {line:?}");
                }
            }
        }
        assert_eq!(fitted, 2_000, "residual pairs with a line");
        // Terms too large for the i32 form get none.
        let (m, s) = quantize_multiplier(2f64.powi(24)).unwrap();
        assert_eq!(ResidualLine::fit(0, m, s), None);
    }

    #[test]
    fn uint8_maps_to_int8_domain() {
        use crate::graph::QType;
        let q = QParams { dtype: QType::U8, scale: 0.1, zero_point: 3 };
        assert_eq!(internal_i8(&q), (3 - 128, -128, 127));
        let q = QParams { dtype: QType::I8, scale: 0.1, zero_point: -5 };
        assert_eq!(internal_i8(&q), (-5, -128, 127));
    }

    #[test]
    fn range_includes_zero_and_extremes() {
        let q = qparams_for_range(0.5, 6.0, ActivationScheme::AsymmetricI8);
        assert_eq!(q.zero_point, -128);
        let q = qparams_for_range(-1.0, 1.0, ActivationScheme::SymmetricI8);
        assert_eq!(q.zero_point, 0);
        assert!((q.scale - 1.0 / 127.0).abs() < 1e-9);
        let q = qparams_for_range(-2.0, 3.0, ActivationScheme::AsymmetricU8);
        let (zp, lo, hi) = internal_i8(&q);
        assert_eq!((lo, hi), (-128, 127));
        assert_eq!(quantize_f32(0.0, q.scale, zp, lo, hi) as i32, zp);
    }
}
