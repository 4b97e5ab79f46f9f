//! The scalar reference kernels (`kernels::generic`, the oracle every optimized kernel is tested
//! against) checked against independent textbook implementations written differently:
//!
//! - convolution: an explicitly padded input copy (zeros for f32, the input zero point for int8),
//!   im2col and a plain matrix multiply; f32 accumulates in f64 (tolerance), int8 accumulates in i64
//!   and requantizes with the exact rational formula in i128 (bit-exact);
//! - pooling over the same padded copies (`Option` padding for max, a validity mask for average);
//! - elementwise ops, quantize / dequantize and softmax against f64 or exact integer arithmetic.
//!
//! Geometry comes from proptest (so failures shrink); data and quantization parameters come from a
//! seeded SplitMix64, so every case is reproducible from the parameters a failure prints. Hand-picked
//! cases cover saturation, i32 accumulator limits at the largest ResNet reductions and huge logits.
//!
//! One deliberate limit: the exact int8 reference does not model the spec's i32 saturation of
//! intermediate sums, which only differs from exact arithmetic when two terms both exceed i32 in
//! opposite directions (real multipliers above about 2^23). Parameters here stay below that; the
//! saturating corner is covered by the unit tests of `quant::requantize`.

use core::fmt::Debug;
use core::ops::{Add, Mul};

use proptest::prelude::*;
use resedge::kernels::generic::{self, ShortcutGeom};
use resedge::kernels::packed::{Parallel, Serial};
use resedge::kernels::registry::{self, F32Conv, QConv as QConvKernel};
use resedge::kernels::{AddParams, ConvGeom, F32ConvParams, Isa, KernelFn, QConvParams, Requant, ResidualRequant};
use resedge::plan::threads::Pool;
use resedge::quant;

mod common;
use common::Rng;

// ------------------------------------------------------------------------------------------------
// Deterministic randomness
// ------------------------------------------------------------------------------------------------

// ------------------------------------------------------------------------------------------------
// Exact int8 arithmetic
// ------------------------------------------------------------------------------------------------

/// round_half_up(acc * m / 2^shift) exactly: floor((acc*m + 2^(shift-1)) / 2^shift) in i128.
fn rq_exact(acc: i64, m: i32, shift: i32) -> i128 {
    assert!((1..=62).contains(&shift), "test bug: shift {shift} outside the spec range");
    let den = 1i128 << shift;
    (acc as i128 * m as i128 + den / 2).div_euclid(den)
}

/// Output zero point, then the clamp, on an exact value.
fn out_i8(v: i128, zp: i32, lo: i32, hi: i32) -> i8 {
    (v + zp as i128).clamp(lo as i128, hi as i128) as i8
}

/// `(m, shift)` with m in [2^30, 2^31) and m * 2^-shift ≈ real, found with an f64 log2 (independent of
/// `quant::quantize_multiplier`). With `denorm`, m loses up to 24 low bits and the shift shrinks to match,
/// so multipliers with fewer significant bits are exercised too; a third of those are exact powers of two,
/// whose products often land exactly on a rounding tie.
fn requant_pair(rng: &mut Rng, real: f64, denorm: bool) -> (i32, i32) {
    let e = real.log2().floor() as i32;
    let m = ((real / 2f64.powi(e)) * (1u64 << 30) as f64) as i64;
    let mut m = m.clamp(1 << 30, (1 << 31) - 1);
    let mut shift = 30 - e;
    if denorm && shift > 1 {
        if rng.chance(1.0 / 3.0) {
            m = 1 << 30;
        }
        let d = rng.int(1, 24).min(shift as i64 - 1);
        m >>= d;
        shift -= d as i32;
    }
    assert!((1..=62).contains(&shift), "test bug: real multiplier {real} needs shift {shift}");
    (m as i32, shift)
}

/// Clamp range in the int8 domain. Mode 0: the storage range; 1: fused ReLU (lo = zero point);
/// 2: ReLU6-like [zp, zp + r]; 3: a random narrow range.
fn clamp_range(rng: &mut Rng, zp: i32, mode: u8) -> (i32, i32) {
    match mode {
        0 => (-128, 127),
        1 => (zp, 127),
        2 => (zp, (zp + rng.i32(0, 100)).min(127)),
        _ => {
            let (a, b) = (rng.i32(-128, 127), rng.i32(-128, 127));
            (a.min(b), a.max(b))
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Comparison with diagnosable failure messages
// ------------------------------------------------------------------------------------------------

/// (n, c, y, x) of flat index `i` in an NCHW tensor with `dims` = (c, h, w).
fn nchw(i: usize, (c, h, w): (usize, usize, usize)) -> (usize, usize, usize, usize) {
    (i / (c * h * w), i / (h * w) % c, i / w % h, i % w)
}

/// Bit-exact comparison. `detail(i)` explains the reference value at i; `ctx()` prints every parameter.
fn check_exact<T: PartialEq + Debug + Copy>(
    what: &str,
    got: &[T],
    want: &[T],
    dims: (usize, usize, usize),
    detail: impl Fn(usize) -> String,
    ctx: impl Fn() -> String,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: output length {} != reference {}\n{}", got.len(), want.len(), ctx()));
    }
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    let Some(&i) = bad.first() else { return Ok(()) };
    let (n, c, y, x) = nchw(i, dims);
    Err(format!(
        "{what}: {} of {} outputs differ; first at n={n} c={c} y={y} x={x} (flat {i}): got {:?}, want {:?}; {}\n{}",
        bad.len(),
        got.len(),
        got[i],
        want[i],
        detail(i),
        ctx()
    ))
}

/// |got - want| <= atol + rtol * max|want| everywhere (NaN or a missing output always fails; equal
/// infinities pass).
fn check_close(
    what: &str,
    got: &[f32],
    want: &[f64],
    dims: (usize, usize, usize),
    (atol, rtol): (f64, f64),
    ctx: impl Fn() -> String,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: output length {} != reference {}\n{}", got.len(), want.len(), ctx()));
    }
    let max = want.iter().filter(|v| v.is_finite()).fold(0f64, |m, v| m.max(v.abs()));
    let tol = atol + rtol * max;
    let ok = |i: usize| got[i] as f64 == want[i] || (got[i] as f64 - want[i]).abs() <= tol;
    let bad: Vec<usize> = (0..got.len()).filter(|&i| !ok(i)).collect();
    let Some(&i) = bad.first() else { return Ok(()) };
    let worst = bad.iter().copied().max_by(|&a, &b| {
        let d = |i: usize| (got[i] as f64 - want[i]).abs();
        d(a).partial_cmp(&d(b)).unwrap_or(core::cmp::Ordering::Greater)
    });
    let (n, c, y, x) = nchw(i, dims);
    Err(format!(
        "{what}: {} of {} outputs outside tolerance {tol:e} (atol {atol:e} + rtol {rtol:e} * max|ref| {max:e}); \
         first at n={n} c={c} y={y} x={x} (flat {i}): got {:e}, want {:e}; worst {:?}\n{}",
        bad.len(),
        got.len(),
        got[i],
        want[i],
        worst.map(|w| (w, got[w], want[w])),
        ctx()
    ))
}

// ------------------------------------------------------------------------------------------------
// Geometry and the textbook building blocks
// ------------------------------------------------------------------------------------------------

/// A convolution / pooling geometry plus the random bottom and right padding it was derived from
/// (the kernel sees those only through h_out / w_out).
#[derive(Clone, Copy, Debug)]
struct ConvCase {
    g: ConvGeom,
    pad_b: usize,
    pad_r: usize,
}

impl ConvCase {
    /// Builds the geometry; bottom/right padding grows if the dilated kernel would not fit at all.
    #[allow(clippy::too_many_arguments)]
    fn new(
        n: usize,
        groups: usize,
        (icg, ocg): (usize, usize),
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
        (dh, dw): (usize, usize),
        (pt, pb, pl, pr): (usize, usize, usize, usize),
    ) -> ConvCase {
        let (eh, ew) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
        let pb = pb.max(eh.saturating_sub(h + pt));
        let pr = pr.max(ew.saturating_sub(w + pl));
        let g = ConvGeom {
            n,
            c_in: groups * icg,
            h_in: h,
            w_in: w,
            c_out: groups * ocg,
            h_out: (h + pt + pb - eh) / sh + 1,
            w_out: (w + pl + pr - ew) / sw + 1,
            kh,
            kw,
            stride_h: sh,
            stride_w: sw,
            pad_t: pt,
            pad_l: pl,
            dil_h: dh,
            dil_w: dw,
            groups,
        };
        ConvCase { g, pad_b: pb, pad_r: pr }
    }
    fn pads(&self) -> (usize, usize, usize, usize) {
        (self.g.pad_t, self.pad_b, self.g.pad_l, self.pad_r)
    }
    fn padded_hw(&self) -> (usize, usize) {
        (self.g.h_in + self.g.pad_t + self.pad_b, self.g.w_in + self.g.pad_l + self.pad_r)
    }
    fn in_len(&self) -> usize {
        self.g.n * self.g.c_in * self.g.h_in * self.g.w_in
    }
    fn out_len(&self) -> usize {
        self.g.n * self.g.c_out * self.g.h_out * self.g.w_out
    }
    fn out_dims(&self) -> (usize, usize, usize) {
        (self.g.c_out, self.g.h_out, self.g.w_out)
    }
    /// Reduction length of one output.
    fn k(&self) -> usize {
        self.g.c_in / self.g.groups * self.g.kh * self.g.kw
    }
    fn describe(&self) -> String {
        format!(
            "geometry {:?}\nbottom/right padding the output size was derived from: pad_b={} pad_r={}",
            self.g, self.pad_b, self.pad_r
        )
    }
}

/// Copies each of `planes` [h, w] planes into a larger buffer filled with `fill`.
fn pad<T: Copy>(
    x: &[T],
    planes: usize,
    (h, w): (usize, usize),
    (pt, pb, pl, pr): (usize, usize, usize, usize),
    fill: T,
) -> Vec<T> {
    let (hp, wp) = (h + pt + pb, w + pl + pr);
    let mut out = vec![fill; planes * hp * wp];
    for p in 0..planes {
        for y in 0..h {
            out[(p * hp + pt + y) * wp + pl..][..w].copy_from_slice(&x[(p * h + y) * w..][..w]);
        }
    }
    out
}

/// im2col of `c` padded [hp, wp] planes: a [c*kh*kw, h_out*w_out] matrix, row (c, ky, kx), column (oy, ox).
fn im2col<T: Copy>(xp: &[T], c: usize, (hp, wp): (usize, usize), g: &ConvGeom) -> Vec<T> {
    let mut cols = Vec::with_capacity(c * g.kh * g.kw * g.h_out * g.w_out);
    for ci in 0..c {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                for oy in 0..g.h_out {
                    for ox in 0..g.w_out {
                        cols.push(xp[(ci * hp + oy * g.stride_h + ky * g.dil_h) * wp + ox * g.stride_w + kx * g.dil_w]);
                    }
                }
            }
        }
    }
    cols
}

/// Plain [m, k] x [k, n] matrix multiply.
fn matmul<T: Copy + Default + Add<Output = T> + Mul<Output = T>>(
    a: &[T],
    b: &[T],
    m: usize,
    k: usize,
    n: usize,
) -> Vec<T> {
    assert_eq!((a.len(), b.len()), (m * k, k * n));
    let mut c = vec![T::default(); m * n];
    for i in 0..m {
        for kk in 0..k {
            let av = a[i * k + kk];
            for j in 0..n {
                c[i * n + j] = c[i * n + j] + av * b[kk * n + j];
            }
        }
    }
    c
}

/// Grouped convolution by padding + im2col + matmul, bias added; [N, C_out, H_out, W_out].
fn conv_ref<T: Copy + Default + Add<Output = T> + Mul<Output = T> + core::ops::Sub<Output = T>>(
    case: &ConvCase,
    x: &[T],
    pad_value: T,
    w: &[T],
    bias: &[T],
) -> Vec<T> {
    let g = &case.g;
    let (icg, ocg) = (g.c_in / g.groups, g.c_out / g.groups);
    let (hp, wp) = case.padded_hw();
    let xp = pad(x, g.n * g.c_in, (g.h_in, g.w_in), case.pads(), pad_value);
    let (k, p) = (case.k(), g.h_out * g.w_out);
    let mut out = vec![T::default(); case.out_len()];
    for n in 0..g.n {
        for grp in 0..g.groups {
            let planes = &xp[(n * g.c_in + grp * icg) * hp * wp..][..icg * hp * wp];
            // The input zero point (int8) or 0 (f32) is subtracted after the copy, so padding adds nothing.
            let cols: Vec<T> = im2col(planes, icg, (hp, wp), g).into_iter().map(|v| v - pad_value).collect();
            let prod = matmul(&w[grp * ocg * k..][..ocg * k], &cols, ocg, k, p);
            for o in 0..ocg {
                let oc = grp * ocg + o;
                for q in 0..p {
                    out[(n * g.c_out + oc) * p + q] = prod[o * p + q] + bias[oc];
                }
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// int8 convolution
// ------------------------------------------------------------------------------------------------

/// Everything of an int8 convolution besides the tensors (printed on failure).
#[derive(Clone, Debug)]
struct QConv {
    x_zp: i32,
    multiplier: Vec<i32>,
    shift: Vec<i32>,
    zp: i32,
    lo: i32,
    hi: i32,
    residual: Option<ResidualRequant>,
}

impl QConv {
    fn channel(&self, c: usize) -> (i32, i32) {
        if self.multiplier.len() == 1 {
            (self.multiplier[0], self.shift[0])
        } else {
            (self.multiplier[c], self.shift[c])
        }
    }
}

/// Exact accumulators (i64, bias included) of an int8 convolution.
fn qconv_acc(case: &ConvCase, x_zp: i32, x: &[i8], w: &[i8], bias: &[i32]) -> Vec<i64> {
    let wide = |v: &[i8]| v.iter().map(|&v| v as i64).collect::<Vec<_>>();
    let bias: Vec<i64> = bias.iter().map(|&b| b as i64).collect();
    conv_ref(case, &wide(x), x_zp as i64, &wide(w), &bias)
}

/// Every int8 convolution kernel of the tiers under test (the scalar reference among them); callers skip the
/// ones whose `supports` refuses a geometry (the x86 blocked kernels take no groups).
fn qconv_kernels() -> Vec<(&'static str, QConvKernel)> {
    let ks = registry::available(Isa::configured()).filter_map(|k| match k.func {
        KernelFn::QConv(f) => Some((k.name, f)),
        _ => None,
    });
    ks.collect()
}

/// Every f32 convolution kernel this CPU runs.
fn fconv_kernels() -> Vec<(&'static str, F32Conv)> {
    let ks = registry::available(Isa::configured()).filter_map(|k| match k.func {
        KernelFn::F32Conv(f) => Some((k.name, f)),
        _ => None,
    });
    ks.collect()
}

/// Names the tier under test and every kernel this CPU cannot run (a missing tier never passes silently).
#[test]
fn kernel_tiers_under_test() {
    // Kernels are tested up to the configured tier (RESEDGE_ISA forces a lower one).
    let best = Isa::configured();
    println!("kernel tier: detected {}, configured {}", Isa::detect().name(), best.name());
    let scalar = registry::KERNELS.iter().filter(|k| k.isa == Isa::Scalar).count();
    println!("tested: {scalar} scalar reference kernels");
    for k in registry::KERNELS.iter().filter(|k| k.isa != Isa::Scalar) {
        if best.allows(k.isa) {
            println!("tested: {} ({})", k.name, k.isa.name());
        } else {
            println!("skipped: {} needs {} (above the configured tier)", k.name, k.isa.name());
        }
    }
    assert!(qconv_kernels().len() >= 2 || best == Isa::Scalar, "an ISA tier without its int8 convolution");
}

/// Runs every int8 convolution kernel and compares it bit for bit with the exact reference. Returns the number of
/// outputs whose exact pre-clamp value lay outside [lo, hi] (saturated).
fn check_qconv(
    case: &ConvCase,
    q: &QConv,
    x: &[i8],
    w: &[i8],
    bias: &[i32],
    res: Option<&[i8]>,
    extra: &str,
) -> Result<usize, String> {
    let g = &case.g;
    let p = g.h_out * g.w_out;
    let acc = qconv_acc(case, q.x_zp, x, w, bias);
    let res_term = |i: usize| match (res, q.residual) {
        (Some(r), Some(rr)) => rq_exact(r[i] as i64 - rr.zero_point as i64, rr.multiplier, rr.shift),
        _ => 0,
    };
    let exact = |i: usize| {
        let (m, s) = q.channel(i / p % g.c_out);
        rq_exact(acc[i], m, s) + res_term(i) + q.zp as i128
    };
    let want: Vec<i8> = (0..acc.len()).map(|i| out_i8(exact(i) - q.zp as i128, q.zp, q.lo, q.hi)).collect();
    let saturated = (0..acc.len()).filter(|&i| !(q.lo as i128..=q.hi as i128).contains(&exact(i))).count();
    let params = QConvParams {
        x_zero_point: q.x_zp,
        weight: w,
        bias,
        requant: Requant { multiplier: &q.multiplier, shift: &q.shift, zero_point: q.zp, lo: q.lo, hi: q.hi },
        residual: q.residual,
    };
    for (name, kernel) in qconv_kernels().into_iter().filter(|(_, k)| (k.supports)(g)) {
        // Start from the complement of the answer so an output the kernel never writes cannot pass.
        let mut got: Vec<i8> = want.iter().map(|&v| !v).collect();
        kernel.call(g, &params, x, res, &mut got);
        check_exact(
            name,
            &got,
            &want,
            case.out_dims(),
            |i| {
                let oc = i / p % g.c_out;
                format!(
                "exact accumulator (bias {} included) {}, channel multiplier/shift {:?}, requantized {}, residual term {}{}",
                bias[oc],
                acc[i],
                q.channel(oc),
                rq_exact(acc[i], q.channel(oc).0, q.channel(oc).1),
                res_term(i),
                res.map(|r| format!(" (residual input {})", r[i])).unwrap_or_default()
            )
            },
            || format!("{}\nint8 parameters {q:?}\nK={}\n{extra}", case.describe(), case.k()),
        )?;
    }
    Ok(saturated)
}

/// A random int8 convolution on `case`: random data, multipliers scaled from the actual accumulator range
/// so most outputs land inside the clamp range and some saturate.
fn random_qconv(case: &ConvCase, seed: u64, per_channel: bool, residual: bool, clamp: u8) -> Result<(), String> {
    let g = &case.g;
    let mut rng = Rng::new(seed);
    let x_zp = if rng.chance(0.2) { 0 } else { rng.i32(-128, 127) };
    let x = rng.i8s(case.in_len(), -128, 127);
    let w = rng.i8s(g.c_out * case.k(), -127, 127);
    let bias: Vec<i32> = (0..g.c_out).map(|_| rng.i32(-(1 << 16), 1 << 16)).collect();
    let acc = qconv_acc(case, x_zp, &x, &w, &bias);
    let p = g.h_out * g.w_out;
    let span = |c: Option<usize>| {
        let in_c = |i: &usize| c.is_none_or(|c| i / p % g.c_out == c);
        (0..acc.len()).filter(in_c).map(|i| acc[i].unsigned_abs()).max().unwrap_or(0).max(1) as f64
    };
    let channels: Vec<Option<usize>> = if per_channel { (0..g.c_out).map(Some).collect() } else { vec![None] };
    let (multiplier, shift) = channels
        .into_iter()
        .map(|c| {
            let real = 2f64.powf(rng.uniform(4.0, 8.0)) / span(c);
            let denorm = rng.chance(0.15);
            requant_pair(&mut rng, real, denorm)
        })
        .unzip();
    let zp = rng.i32(-128, 127);
    let (lo, hi) = clamp_range(&mut rng, zp, clamp);
    let (res, residual) = if residual {
        let real = 2f64.powf(rng.uniform(-2.0, 1.0));
        let denorm = rng.chance(0.15);
        let (m, s) = requant_pair(&mut rng, real, denorm);
        let rzp = rng.i32(-128, 127);
        (Some(rng.i8s(case.out_len(), -128, 127)), Some(ResidualRequant { zero_point: rzp, multiplier: m, shift: s }))
    } else {
        (None, None)
    };
    let q = QConv { x_zp, multiplier, shift, zp, lo, hi, residual };
    check_qconv(case, &q, &x, &w, &bias, res.as_deref(), &format!("data seed {seed}")).map(|_| ())
}

// ------------------------------------------------------------------------------------------------
// f32 convolution
// ------------------------------------------------------------------------------------------------

/// Runs every f32 convolution kernel against the f64 im2col reference.
#[allow(clippy::too_many_arguments)]
fn check_fconv(
    case: &ConvCase,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    res: Option<&[f32]>,
    (lo, hi): (f32, f32),
    tol: (f64, f64),
    extra: &str,
) -> Result<(), String> {
    let g = &case.g;
    let wide = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let mut want = conv_ref(case, &wide(x), 0.0, &wide(w), &wide(bias));
    for (i, v) in want.iter_mut().enumerate() {
        if let Some(r) = res {
            *v += r[i] as f64;
        }
        *v = if *v < lo as f64 {
            lo as f64
        } else if *v > hi as f64 {
            hi as f64
        } else {
            *v
        };
    }
    let p = F32ConvParams { weight: w, bias, clamp: (lo, hi) };
    for (name, kernel) in fconv_kernels().into_iter().filter(|(_, k)| (k.supports)(g)) {
        let mut got = vec![f32::NAN; case.out_len()];
        kernel.call(g, &p, x, res, &mut got);
        check_close(name, &got, &want, case.out_dims(), tol, || {
            format!("{}\nK={} clamp=({lo}, {hi}) residual={}\n{extra}", case.describe(), case.k(), res.is_some())
        })?;
    }
    Ok(())
}

fn random_fconv(case: &ConvCase, seed: u64, residual: bool, clamp: u8) -> Result<(), String> {
    let g = &case.g;
    let mut rng = Rng::new(seed);
    let x = rng.f32s(case.in_len(), -1.0, 1.0);
    let w = rng.f32s(g.c_out * case.k(), -1.0, 1.0);
    let bias = rng.f32s(g.c_out, -1.0, 1.0);
    let res = residual.then(|| rng.f32s(case.out_len(), -2.0, 2.0));
    let range = match clamp {
        0 => (f32::NEG_INFINITY, f32::INFINITY),
        1 => (0.0, f32::INFINITY),
        2 => (0.0, 6.0),
        _ => (rng.uniform(-2.0, 0.0) as f32, rng.uniform(0.0, 2.0) as f32),
    };
    check_fconv(case, &x, &w, &bias, res.as_deref(), range, (1e-4, 5e-4), &format!("data seed {seed}"))
}

// ------------------------------------------------------------------------------------------------
// Strategies
// ------------------------------------------------------------------------------------------------

/// proptest settings: `cases` random cases (PROPTEST_CASES overrides), no regression files (a failure
/// prints every parameter, including the data seed; PROPTEST_RNG_SEED replays a whole run).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(3), Just(7), Just(13), 1usize..=16]
}

fn kernel_size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(3), Just(5), Just(7), 1usize..=7]
}

type Pads = (usize, usize, usize, usize);

#[allow(clippy::type_complexity)]
fn window() -> impl Strategy<Value = ((usize, usize), (usize, usize), (usize, usize), (usize, usize), Pads)> {
    (
        (size(), size()),
        (kernel_size(), kernel_size()),
        (1usize..=3, 1usize..=3),
        (1usize..=2, 1usize..=2),
        (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
    )
}

/// Random convolution: dense, grouped, depthwise and depthwise with a channel multiplier.
fn conv_case() -> impl Strategy<Value = ConvCase> {
    // (groups, input channels per group, output channels per group)
    let grouping = prop_oneof![
        (Just(1usize), 1usize..=8, 1usize..=8),
        (2usize..=4, 1usize..=4, 1usize..=4),
        (1usize..=8).prop_map(|c| (c, 1, 1)),
        (1usize..=4, Just(1usize), 2usize..=3),
    ];
    (1usize..=3, grouping, window()).prop_map(|(n, (groups, icg, ocg), (hw, k, s, d, pads))| {
        ConvCase::new(n, groups, (icg, ocg), hw, k, s, d, pads)
    })
}

/// Random pooling window (c_out = c_in = groups).
fn pool_case() -> impl Strategy<Value = ConvCase> {
    (1usize..=3, 1usize..=5, window())
        .prop_map(|(n, c, (hw, k, s, d, pads))| ConvCase::new(n, c, (1, 1), hw, k, s, d, pads))
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn qs8_conv_matches_im2col_reference(
        case in conv_case(), seed: u64, per_channel: bool, residual: bool, clamp in 0u8..4,
    ) {
        random_qconv(&case, seed, per_channel, residual, clamp).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn f32_conv_matches_im2col_reference(case in conv_case(), seed: u64, residual: bool, clamp in 0u8..4) {
        random_fconv(&case, seed, residual, clamp).map_err(TestCaseError::fail)?;
    }
}

// ------------------------------------------------------------------------------------------------
// Hand-picked convolutions: ResNet layers, extremes, the largest reductions
// ------------------------------------------------------------------------------------------------

/// The layer shapes a ResNet actually uses (small spatial sizes to stay fast).
fn resnet_layers() -> Vec<ConvCase> {
    vec![
        // stem: 7x7 stride 2 pad 3 over RGB
        ConvCase::new(1, 1, (3, 8), (17, 17), (7, 7), (2, 2), (1, 1), (3, 3, 3, 3)),
        // basic block 3x3 stride 1 and 2
        ConvCase::new(2, 1, (16, 16), (7, 7), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        ConvCase::new(1, 1, (16, 32), (8, 8), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
        // bottleneck 1x1 reduce / expand and the 1x1 stride-2 projection shortcut
        ConvCase::new(1, 1, (64, 16), (4, 4), (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
        ConvCase::new(1, 1, (16, 64), (4, 4), (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
        ConvCase::new(1, 1, (32, 64), (7, 7), (1, 1), (2, 2), (1, 1), (0, 0, 0, 0)),
        // ResNeXt grouped 3x3, depthwise
        ConvCase::new(1, 8, (4, 4), (6, 6), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        ConvCase::new(1, 16, (1, 1), (9, 9), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
    ]
}

#[test]
fn resnet_layer_shapes_match_reference() {
    for (i, case) in resnet_layers().iter().enumerate() {
        for seed in 0..4u64 {
            let seed = seed * 1000 + i as u64;
            random_qconv(case, seed, seed.is_multiple_of(2), seed.is_multiple_of(3), (seed % 4) as u8)
                .unwrap_or_else(|e| panic!("{e}"));
            random_fconv(case, seed, seed.is_multiple_of(2), (seed % 4) as u8).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Whether the VNNI kernel of the tiers under test packs `case` (random weights `w`) as Winograd F(4x4, 3x3);
/// `None` where that tier is not under test.
fn vnni_winograd(case: &ConvCase, w: &[i8]) -> Option<bool> {
    let (_, kernel) = qconv_kernels().into_iter().find(|(name, _)| name.ends_with("avx512vnni"))?;
    let bias = vec![0; case.g.c_out];
    let rq = Requant { multiplier: &[1 << 30], shift: &[40], zero_point: 0, lo: -128, hi: 127 };
    let p = QConvParams { x_zero_point: 0, weight: w, bias: &bias, requant: rq, residual: None };
    Some((kernel.pack)(&case.g, &p).winograd)
}

/// The 3x3 layers the VNNI tier computes by exact integer Winograd (tile groups of 7, 8 and 4): random data,
/// per-tensor and per-channel requantization, residuals, batches, all bit-exact with the reference.
#[test]
fn qs8_winograd_layers_match_reference() {
    let cases = [
        ConvCase::new(1, 1, (32, 32), (28, 28), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        ConvCase::new(2, 1, (64, 32), (28, 32), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        ConvCase::new(1, 1, (96, 64), (36, 24), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        // Groups of 4 tiles (one), and of 8 with a partial last one.
        ConvCase::new(1, 1, (64, 32), (8, 8), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        ConvCase::new(2, 1, (32, 64), (12, 20), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        // Outputs in partial tiles (ResNet-18's 14x14), and odd sizes.
        ConvCase::new(1, 1, (64, 32), (14, 14), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        ConvCase::new(2, 1, (32, 64), (10, 7), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        ConvCase::new(1, 1, (32, 32), (13, 11), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        // Weight transforms over 1 MB: tasks of several tile groups (4 + 3 groups of 7; one set of 8 + 7).
        ConvCase::new(1, 1, (128, 128), (28, 28), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        ConvCase::new(1, 1, (128, 160), (12, 20), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    ];
    for (i, case) in cases.iter().enumerate() {
        let w = Rng::new(1).i8s(case.g.c_out * case.k(), -127, 127);
        assert_ne!(vnni_winograd(case, &w), Some(false), "{} is not taken by Winograd", case.describe());
        for seed in 0..4u64 {
            let seed = seed * 1000 + 77 + i as u64;
            random_qconv(case, seed, seed.is_multiple_of(2), seed % 4 < 2, (seed % 4) as u8)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Winograd's exactness bound (every channel's `255 · Σ|w|` below 2^25): sums just inside it come out exact
/// at both extremes; one unit more and the layer keeps the direct kernel.
#[test]
fn qs8_winograd_exact_at_its_bound() {
    let case = ConvCase::new(1, 1, (128, 32), (28, 28), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1));
    let k = case.k();
    let limit = ((1i64 << 25) - 1) / 255; // largest Σ|w| inside the bound: 131586
    for (extra, winograd) in [(0, true), (1, false)] {
        // Every weight 114 or 115 (Σ = limit + extra), channels alternately positive and negative.
        let row = |sign: i8| -> Vec<i8> {
            let over = (limit + extra) as usize - 114 * k;
            (0..k).map(|j| sign * if j < over { 115 } else { 114 }).collect()
        };
        let w: Vec<i8> = (0..case.g.c_out).flat_map(|oc| row(if oc % 2 == 0 { 1 } else { -1 })).collect();
        assert_ne!(vnni_winograd(&case, &w), Some(!winograd), "Σ|w| = {}", limit + extra);
        let mut rng = Rng::new(5);
        for (xv, x_zp) in [(127i8, -128), (-128, 127), (127, 0)] {
            // Interior outputs reach ±255 · Σ|w| (u = x + 128 = 255 everywhere for xv = 127).
            let x = vec![xv; case.in_len()];
            let bias: Vec<i32> = (0..case.g.c_out).map(|_| rng.i32(-1000, 1000)).collect();
            let (m, s) = requant_pair(&mut rng, 100.0 / (255.0 * limit as f64), false);
            let q = QConv { x_zp, multiplier: vec![m], shift: vec![s], zp: 3, lo: -128, hi: 127, residual: None };
            check_qconv(&case, &q, &x, &w, &bias, None, "Winograd bound").unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn qs8_conv_extreme_values_saturate_exactly() {
    let cases = [
        ConvCase::new(1, 1, (8, 4), (5, 5), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        ConvCase::new(2, 1, (3, 4), (9, 9), (7, 7), (2, 2), (1, 1), (3, 2, 3, 2)),
        ConvCase::new(1, 1, (16, 4), (4, 4), (1, 1), (2, 2), (1, 1), (0, 0, 0, 0)),
        ConvCase::new(1, 6, (1, 1), (7, 5), (3, 3), (1, 2), (2, 1), (2, 0, 1, 1)),
        ConvCase::new(3, 2, (2, 3), (3, 3), (5, 3), (1, 1), (1, 1), (2, 2, 1, 1)),
    ];
    let mut rng = Rng::new(0xE7);
    let (mut saturated, mut total) = (0, 0);
    for case in &cases {
        let g = &case.g;
        let k = case.k();
        let max_acc = (k * 255 * 127) as f64;
        for x_pattern in 0..3 {
            let x: Vec<i8> = (0..case.in_len())
                .map(|_| match x_pattern {
                    0 => -128,
                    1 => 127,
                    _ => [-128, 127][rng.int(0, 1) as usize],
                })
                .collect();
            for x_zp in [-128, 0, 127] {
                for w_pattern in 0..3 {
                    let w: Vec<i8> = (0..g.c_out * k)
                        .map(|_| match w_pattern {
                            0 => 127,
                            1 => -127,
                            _ => [-127, 127][rng.int(0, 1) as usize],
                        })
                        .collect();
                    for scheme in 0..4 {
                        // 0: full range maps to about ±200 (saturates); 1: huge (shift 1); 2: tiny (shift 62);
                        // 3: a different one per channel.
                        let pick = |rng: &mut Rng, s: i64| match s {
                            0 => requant_pair(rng, 200.0 / max_acc, false),
                            1 => (i32::MAX, 1),
                            2 => (rng.i32(1 << 30, i32::MAX), 62),
                            _ => {
                                let real = 2f64.powf(rng.uniform(-24.0, 0.0));
                                requant_pair(rng, real, true)
                            }
                        };
                        let (multiplier, shift): (Vec<i32>, Vec<i32>) = if scheme == 3 {
                            (0..g.c_out)
                                .map(|_| {
                                    let which = rng.int(0, 3);
                                    pick(&mut rng, which)
                                })
                                .unzip()
                        } else {
                            let (m, s) = pick(&mut rng, scheme);
                            (vec![m], vec![s])
                        };
                        for residual in [false, true] {
                            let bias: Vec<i32> =
                                (0..g.c_out).map(|_| [0, 1 << 20, -(1 << 20)][rng.int(0, 2) as usize]).collect();
                            let zp = [-128, 0, 127, rng.i32(-128, 127)][rng.int(0, 3) as usize];
                            let mode = rng.int(0, 3) as u8;
                            let (lo, hi) = clamp_range(&mut rng, zp, mode);
                            let res = residual.then(|| vec![[-128i8, 127][rng.int(0, 1) as usize]; case.out_len()]);
                            let rq = residual.then(|| {
                                let (m, s) = requant_pair(&mut rng, 2f64.powf(0.9), false);
                                ResidualRequant {
                                    zero_point: [-128, 127][rng.int(0, 1) as usize],
                                    multiplier: m,
                                    shift: s,
                                }
                            });
                            let q = QConv {
                                x_zp,
                                multiplier: multiplier.clone(),
                                shift: shift.clone(),
                                zp,
                                lo,
                                hi,
                                residual: rq,
                            };
                            let ctx = format!("x pattern {x_pattern}, weight pattern {w_pattern}, scheme {scheme}");
                            saturated += check_qconv(case, &q, &x, &w, &bias, res.as_deref(), &ctx)
                                .unwrap_or_else(|e| panic!("{e}"));
                            total += case.out_len();
                        }
                    }
                }
            }
        }
    }
    // The sweep must actually have driven outputs into the clamp on both sides of the check.
    assert!(saturated > total / 4 && saturated < total, "{saturated} of {total} outputs saturated");
}

/// The largest reductions a ResNet performs (3x3x512 = 4608 and 1x1x2048) with every product at its
/// extreme and the bias pushing the sum to exactly i32::MAX / i32::MIN: the i32 accumulator must not
/// overflow (the dev profile keeps overflow checks on, so an overflow panics).
#[test]
fn qs8_conv_largest_resnet_reductions_do_not_overflow() {
    for (icg, k, hw) in [(512usize, 3usize, 3usize), (2048, 1, 2)] {
        let case = ConvCase::new(1, 1, (icg, 4), (hw, hw), (k, k), (1, 1), (1, 1), (k / 2, k / 2, k / 2, k / 2));
        let big_k = case.k() as i64;
        let full = big_k * 255 * 127;
        // Center output (all taps inside the input).
        let center = (hw / 2) * hw + hw / 2;
        for (xv, x_zp) in [(-128i8, 127), (127i8, -128)] {
            let x = vec![xv; case.in_len()];
            let sign_x = (xv as i64 - x_zp as i64).signum();
            // Channel 0 all +127, channel 1 all -127, channels 2 and 3 alternate (partial sums stay small).
            let w: Vec<i8> = (0..4 * big_k as usize)
                .map(|i| match i / big_k as usize {
                    0 => 127,
                    1 => -127,
                    _ => [127, -127][i % 2],
                })
                .collect();
            for edge_bias in [false, true] {
                let bias: Vec<i32> = (0..4)
                    .map(|c| {
                        let sign = sign_x * if c == 1 { -1 } else { 1 };
                        match (edge_bias, c) {
                            (false, _) => 0,
                            (true, 0 | 1) if sign > 0 => (i32::MAX as i64 - full) as i32,
                            (true, 0 | 1) => (i32::MIN as i64 + full) as i32,
                            (true, _) => (1 << 30) * sign as i32,
                        }
                    })
                    .collect();
                let acc = qconv_acc(&case, x_zp, &x, &w, &bias);
                // The reference itself: the center of channels 0 and 1 is the full extreme product sum.
                let p = hw * hw;
                for c in 0..2 {
                    let sign = sign_x * if c == 1 { -1 } else { 1 };
                    let want = match edge_bias {
                        false => sign * full,
                        true if sign > 0 => i32::MAX as i64,
                        true => i32::MIN as i64,
                    };
                    assert_eq!(acc[c * p + center], want, "reference accumulator, K={big_k} channel {c}");
                }
                // A multiplier that maps the full range to ±100, so the result is checked unsaturated too.
                let mut rng = Rng::new(big_k as u64);
                let (m, s) = requant_pair(&mut rng, 100.0 / i32::MAX as f64, false);
                for per_channel in [false, true] {
                    let n = if per_channel { 4 } else { 1 };
                    let q = QConv {
                        x_zp,
                        multiplier: vec![m; n],
                        shift: vec![s; n],
                        zp: 3,
                        lo: -128,
                        hi: 127,
                        residual: None,
                    };
                    let ctx = format!("x={xv} everywhere, edge bias {edge_bias}, bias {bias:?}");
                    check_qconv(&case, &q, &x, &w, &bias, None, &ctx).unwrap_or_else(|e| panic!("{e}"));
                }
                // And the f32 kernel on the same extremes (scaled to ±1), against f64.
                let xf: Vec<f32> = x.iter().map(|&v| (v as f32 - x_zp as f32) / 255.0).collect();
                let wf: Vec<f32> = w.iter().map(|&v| v as f32 / 127.0).collect();
                let bf: Vec<f32> = bias.iter().map(|&b| b as f32 / (255.0 * 127.0)).collect();
                check_fconv(
                    &case,
                    &xf,
                    &wf,
                    &bf,
                    None,
                    (f32::NEG_INFINITY, f32::INFINITY),
                    (1e-4, 5e-4),
                    "extreme f32",
                )
                .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Pooling
// ------------------------------------------------------------------------------------------------

/// Max over each window of an `Option`-padded copy; a window with no input tap yields `min`.
fn maxpool_ref<T: Copy + PartialOrd>(case: &ConvCase, x: &[T], min: T) -> Vec<T> {
    let g = &case.g;
    let (hp, wp) = case.padded_hw();
    let some: Vec<Option<T>> = x.iter().map(|&v| Some(v)).collect();
    let xp = pad(&some, g.n * g.c_in, (g.h_in, g.w_in), case.pads(), None);
    let (k, p) = (g.kh * g.kw, g.h_out * g.w_out);
    let mut out = Vec::with_capacity(case.out_len());
    for plane in 0..g.n * g.c_in {
        let cols = im2col(&xp[plane * hp * wp..][..hp * wp], 1, (hp, wp), g);
        for q in 0..p {
            let mut best: Option<T> = None;
            for v in (0..k).filter_map(|r| cols[r * p + q]) {
                if best.is_none_or(|b| v > b) {
                    best = Some(v);
                }
            }
            out.push(best.unwrap_or(min));
        }
    }
    out
}

/// Every int8 max-pool kernel this CPU runs against the padded-copy reference.
fn check_qmaxpool(case: &ConvCase, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let x = rng.i8s(case.in_len(), -128, 127);
    let want = maxpool_ref(case, &x, i8::MIN);
    for k in registry::available(Isa::configured()) {
        let KernelFn::QMaxPool(f) = k.func else { continue };
        let mut got: Vec<i8> = want.iter().map(|&v| !v).collect();
        f(&case.g, &x, &mut got);
        check_exact(
            k.name,
            &got,
            &want,
            case.out_dims(),
            |_| String::new(),
            || format!("{}\ndata seed {seed}", case.describe()),
        )?;
    }
    Ok(())
}

/// The ResNet stem's pool (3x3, stride 2) over odd and even sizes and every padding, where SIMD kernels
/// specialize; random windows rarely hit it.
#[test]
fn qs8_maxpool_stem_windows_match_reference() {
    for (i, &(h, w)) in [(1, 1), (3, 3), (7, 5), (8, 8), (17, 33), (56, 61), (112, 112)].iter().enumerate() {
        for (t, l, b, r) in [(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 0, 1), (2, 2, 1, 2), (0, 1, 2, 0)] {
            if h + t + b < 3 || w + l + r < 3 {
                continue;
            }
            let case = ConvCase::new(2, 3, (1, 1), (h, w), (3, 3), (2, 2), (1, 1), (t, l, b, r));
            check_qmaxpool(&case, i as u64 * 31 + t as u64).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// (sum over inputs of `f(x)`, number of input taps) for each window of a padded copy.
fn window_sums<T: Copy>(case: &ConvCase, x: &[T], f: impl Fn(T) -> f64) -> Vec<(f64, usize)> {
    let g = &case.g;
    let (hp, wp) = case.padded_hw();
    let some: Vec<Option<T>> = x.iter().map(|&v| Some(v)).collect();
    let xp = pad(&some, g.n * g.c_in, (g.h_in, g.w_in), case.pads(), None);
    let (k, p) = (g.kh * g.kw, g.h_out * g.w_out);
    let mut out = Vec::with_capacity(case.out_len());
    for plane in 0..g.n * g.c_in {
        let cols = im2col(&xp[plane * hp * wp..][..hp * wp], 1, (hp, wp), g);
        for q in 0..p {
            let taps: Vec<T> = (0..k).filter_map(|r| cols[r * p + q]).collect();
            out.push((taps.iter().map(|&v| f(v)).sum(), taps.len()));
        }
    }
    out
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn f32_maxpool_matches_reference(case in pool_case(), seed: u64) {
        let mut rng = Rng::new(seed);
        let x = rng.f32s(case.in_len(), -10.0, 10.0);
        let want = maxpool_ref(&case, &x, f32::NEG_INFINITY);
        let mut got = vec![f32::NAN; case.out_len()];
        generic::f32_maxpool_scalar(&case.g, &x, &mut got);
        let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        check_close("f32_maxpool_scalar", &got, &want, case.out_dims(), (0.0, 0.0), || {
            format!("{}\ndata seed {seed}", case.describe())
        }).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn qs8_maxpool_matches_reference(case in pool_case(), seed: u64) {
        check_qmaxpool(&case, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn f32_avgpool_matches_reference(case in pool_case(), seed: u64, count_include_pad: bool) {
        let mut rng = Rng::new(seed);
        // A mean far from zero, so a wrong divisor shows.
        let x = rng.f32s(case.in_len(), -1.0, 3.0);
        let taps = case.g.kh * case.g.kw;
        let want: Vec<f64> = window_sums(&case, &x, |v| v as f64)
            .into_iter()
            .map(|(sum, inside)| match (count_include_pad, inside) {
                (true, _) => sum / taps as f64,
                (false, 0) => 0.0,
                (false, c) => sum / c as f64,
            })
            .collect();
        let mut got = vec![f32::NAN; case.out_len()];
        generic::f32_avgpool_scalar(&case.g, count_include_pad, &x, &mut got);
        check_close("f32_avgpool_scalar", &got, &want, case.out_dims(), (1e-5, 1e-5), || {
            format!("{}\ncount_include_pad={count_include_pad} data seed {seed}", case.describe())
        }).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn qs8_avgpool_matches_reference(case in pool_case(), seed: u64, clamp in 0u8..4) {
        let mut rng = Rng::new(seed);
        let x = rng.i8s(case.in_len(), -128, 127);
        let x_zp = rng.i32(-128, 127);
        let zp = rng.i32(-128, 127);
        let (lo, hi) = clamp_range(&mut rng, zp, clamp);
        let taps = (case.g.kh * case.g.kw) as f64;
        let denorm = rng.chance(0.15);
        let real = 2f64.powf(rng.uniform(-1.5, 1.5)) / taps;
        let (m, s) = requant_pair(&mut rng, real, denorm);
        // Only count_include_pad semantics exist in int8: padding is the zero point and adds 0.
        let want: Vec<i8> = window_sums(&case, &x, |v| (v as i32 - x_zp) as f64)
            .into_iter()
            .map(|(sum, _)| out_i8(rq_exact(sum as i64, m, s), zp, lo, hi))
            .collect();
        let mut got: Vec<i8> = want.iter().map(|&v| !v).collect();
        let rq = Requant { multiplier: &[m], shift: &[s], zero_point: zp, lo, hi };
        generic::qs8_avgpool_scalar(&case.g, x_zp, &rq, &x, &mut got);
        check_exact("qs8_avgpool_scalar", &got, &want, case.out_dims(), |_| String::new(), || {
            format!(
                "{}\nx_zero_point={x_zp} multiplier={m} shift={s} zero_point={zp} clamp=[{lo}, {hi}] data seed {seed}",
                case.describe()
            )
        }).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn global_average_pool_matches_reference() {
    let mut rng = Rng::new(0x6A9);
    for hw in [1usize, 3, 7, 49, 64, 196, 3136] {
        for round in 0..6 {
            let nc = rng.int(1, 12) as usize;
            // f32: mean far from zero so a wrong divisor shows.
            let x = rng.f32s(nc * hw, -1.0, 3.0);
            let want: Vec<f64> = x.chunks(hw).map(|c| c.iter().map(|&v| v as f64).sum::<f64>() / hw as f64).collect();
            let mut got = vec![f32::NAN; nc];
            generic::f32_gap_scalar(hw, &x, &mut got);
            check_close("f32_gap_scalar", &got, &want, (nc, 1, 1), (1e-5, 1e-4), || {
                format!("hw={hw} nc={nc} round {round}")
            })
            .unwrap_or_else(|e| panic!("{e}"));

            // int8, including all-extreme inputs in the last rounds.
            let x = match round {
                4 => vec![127i8; nc * hw],
                5 => vec![-128i8; nc * hw],
                _ => rng.i8s(nc * hw, -128, 127),
            };
            let x_zp = match round {
                4 => -128,
                5 => 127,
                _ => rng.i32(-128, 127),
            };
            let zp = rng.i32(-128, 127);
            let (lo, hi) = clamp_range(&mut rng, zp, (round % 3) as u8);
            let denorm = rng.chance(0.2);
            let real = 2f64.powf(rng.uniform(-1.0, 1.0)) / hw as f64;
            let (m, s) = match round {
                // An exact power of two, 1 / 2^ceil(log2(2 hw)): many sums land exactly on a tie.
                3 => (1 << 30, 31 + hw.next_power_of_two().trailing_zeros() as i32),
                _ => requant_pair(&mut rng, real, denorm),
            };
            let want: Vec<i8> = x
                .chunks(hw)
                .map(|c| out_i8(rq_exact(c.iter().map(|&v| v as i64 - x_zp as i64).sum(), m, s), zp, lo, hi))
                .collect();
            let mut got: Vec<i8> = want.iter().map(|&v| !v).collect();
            let rq = Requant { multiplier: &[m], shift: &[s], zero_point: zp, lo, hi };
            generic::qs8_gap_scalar(hw, x_zp, &rq, &x, &mut got);
            check_exact(
                "qs8_gap_scalar",
                &got,
                &want,
                (nc, 1, 1),
                |_| String::new(),
                || format!("hw={hw} nc={nc} x_zero_point={x_zp} multiplier={m} shift={s} zero_point={zp} clamp=[{lo}, {hi}]"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Elementwise
// ------------------------------------------------------------------------------------------------

/// The int8 add for every (a, b) pair of int8 values, bit-exact against the rational formula.
#[test]
fn qs8_add_exhaustive_matches_rational_formula() {
    let a: Vec<i8> = (0..65536).map(|i| (i % 256) as u8 as i8).collect();
    let b: Vec<i8> = (0..65536).map(|i| (i / 256) as u8 as i8).collect();
    let mut rng = Rng::new(0xADD);
    // (a real multiplier, b real multiplier, zero points forced to extremes)
    let mut sets: Vec<(f64, f64, bool)> =
        (0..24).map(|_| (2f64.powf(rng.uniform(-2.0, 1.5)), 2f64.powf(rng.uniform(-2.0, 1.5)), false)).collect();
    sets.extend([
        (1.0, 1.0, true),
        (2.0, 2.0, true),
        (2f64.powi(20), 2f64.powi(-20), true),
        (2f64.powi(-29), 0.75, false),
    ]);
    for (i, &(ra, rb, extreme)) in sets.iter().enumerate() {
        let (da, db) = (rng.chance(0.2), rng.chance(0.2));
        let (a_multiplier, a_shift) = requant_pair(&mut rng, ra, da);
        let (b_multiplier, b_shift) = requant_pair(&mut rng, rb, db);
        let zp_pick = |rng: &mut Rng| if extreme { [-128, 127][rng.int(0, 1) as usize] } else { rng.i32(-128, 127) };
        let (a_zero_point, b_zero_point, zero_point) = (zp_pick(&mut rng), zp_pick(&mut rng), zp_pick(&mut rng));
        let (lo, hi) = clamp_range(&mut rng, zero_point, (i % 4) as u8);
        let p =
            AddParams { a_zero_point, a_multiplier, a_shift, b_zero_point, b_multiplier, b_shift, zero_point, lo, hi };
        let term = |v: i8, zp: i32, m: i32, s: i32| rq_exact(v as i64 - zp as i64, m, s);
        let want: Vec<i8> = a
            .iter()
            .zip(&b)
            .map(|(&a, &b)| {
                out_i8(
                    term(a, a_zero_point, a_multiplier, a_shift) + term(b, b_zero_point, b_multiplier, b_shift),
                    zero_point,
                    lo,
                    hi,
                )
            })
            .collect();
        let mut got: Vec<i8> = want.iter().map(|&v| !v).collect();
        generic::qs8_add_scalar(&p, &a, &b, &mut got);
        check_exact(
            "qs8_add_scalar",
            &got,
            &want,
            (1, 256, 256),
            |i| format!("a={} b={}", a[i], b[i]),
            || format!("{p:?} (real multipliers a {ra:e}, b {rb:e})"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn f32_add_and_clamp_match_reference() {
    let mut rng = Rng::new(0xF32);
    for round in 0..50 {
        let len = rng.int(1, 300) as usize;
        let a = rng.f32s(len, -10.0, 10.0);
        let b = rng.f32s(len, -10.0, 10.0);
        let range = match round % 4 {
            0 => (f32::NEG_INFINITY, f32::INFINITY),
            1 => (0.0, f32::INFINITY),
            2 => (0.0, 6.0),
            _ => (rng.uniform(-5.0, 0.0) as f32, rng.uniform(0.0, 5.0) as f32),
        };
        let clip = |v: f32| {
            if v < range.0 {
                range.0
            } else if v > range.1 {
                range.1
            } else {
                v
            }
        };
        // The f64 sum of two f32 in this range is exact, so its rounding is the correctly rounded f32 sum.
        let want: Vec<f32> = a.iter().zip(&b).map(|(&a, &b)| clip((a as f64 + b as f64) as f32)).collect();
        let mut got = vec![f32::NAN; len];
        generic::f32_add_scalar(&a, &b, range, &mut got);
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        check_exact(
            "f32_add_scalar (bits)",
            &bits(&got),
            &bits(&want),
            (1, 1, len),
            |i| format!("a={} b={} got {} want {}", a[i], b[i], got[i], want[i]),
            || format!("clamp {range:?} len {len}"),
        )
        .unwrap_or_else(|e| panic!("{e}"));

        let want: Vec<f32> = a.iter().map(|&v| clip(v)).collect();
        let mut got = vec![f32::NAN; len];
        generic::f32_clamp_scalar(&a, range, &mut got);
        check_exact(
            "f32_clamp_scalar (bits)",
            &bits(&got),
            &bits(&want),
            (1, 1, len),
            |i| format!("x={}", a[i]),
            || format!("clamp {range:?}"),
        )
        .unwrap_or_else(|e| panic!("{e}"));

        let x = rng.i8s(len, -128, 127);
        let zp = rng.i32(-128, 127);
        let (lo, hi) = clamp_range(&mut rng, zp, (round % 4) as u8);
        let want: Vec<i8> = x.iter().map(|&v| (v as i32).max(lo).min(hi) as i8).collect();
        let mut got: Vec<i8> = want.iter().map(|&v| !v).collect();
        generic::qs8_clamp_scalar(&x, lo, hi, &mut got);
        check_exact(
            "qs8_clamp_scalar",
            &got,
            &want,
            (1, 1, len),
            |i| format!("x={}", x[i]),
            || format!("clamp [{lo}, {hi}]"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn f32_affine_matches_reference() {
    let mut rng = Rng::new(0xAFF);
    for _ in 0..60 {
        let (n, c, hw) = (rng.int(1, 3) as usize, rng.int(1, 17) as usize, rng.int(1, 50) as usize);
        let scale = rng.f32s(c, -3.0, 3.0);
        let shift = rng.f32s(c, -3.0, 3.0);
        let x = rng.f32s(n * c * hw, -5.0, 5.0);
        let mut got = vec![f32::NAN; x.len()];
        generic::f32_affine_scalar(hw, &scale, &shift, &x, &mut got);
        for b in 0..n {
            for ch in 0..c {
                for i in 0..hw {
                    let idx = (b * c + ch) * hw + i;
                    let (xv, a, s) = (x[idx] as f64, scale[ch] as f64, shift[ch] as f64);
                    let want = xv * a + s;
                    // Two f32 roundings: at most about 1.2e-7 * (|x a| + |b|).
                    let tol = 3e-7 * ((xv * a).abs() + s.abs()) + 1e-30;
                    assert!(
                        (got[idx] as f64 - want).abs() <= tol,
                        "f32_affine_scalar at n={b} c={ch} i={i}: got {}, want {want} (x={xv} scale={a} shift={s}); n={n} c={c} hw={hw}",
                        got[idx]
                    );
                }
            }
        }
    }
}

#[test]
fn shortcut_a_matches_reference() {
    let mut rng = Rng::new(0x5A);
    // Split by output rows across 1, 2 and 3 workers (more workers than rows included).
    let pools: [&dyn Parallel; 3] = [&Serial, &Pool::new(2), &Pool::new(3)];
    for i in 0..200 {
        let par = pools[i % 3];
        let g = ShortcutGeom {
            n: rng.int(1, 3) as usize,
            c: rng.int(1, 8) as usize,
            h: rng.int(1, 13) as usize,
            w: rng.int(1, 13) as usize,
            stride: rng.int(1, 3) as usize,
            pad_before: rng.int(0, 8) as usize,
            pad_after: rng.int(0, 8) as usize,
        };
        let rows: Vec<usize> = (0..g.h).step_by(g.stride).collect();
        let cols: Vec<usize> = (0..g.w).step_by(g.stride).collect();
        assert_eq!(g.out_hw(), (rows.len(), cols.len()), "{g:?}");
        let oc = g.pad_before + g.c + g.pad_after;
        let x = rng.i8s(g.n * g.c * g.h * g.w, -128, 127);
        let zp = rng.i32(-128, 127) as i8;
        let mut want = Vec::new();
        for n in 0..g.n {
            for c in 0..oc {
                for &y in &rows {
                    for &xx in &cols {
                        let inside = c >= g.pad_before && c - g.pad_before < g.c;
                        want.push(if inside { x[((n * g.c + c - g.pad_before) * g.h + y) * g.w + xx] } else { zp });
                    }
                }
            }
        }
        let dims = (oc, rows.len(), cols.len());
        let mut got: Vec<i8> = want.iter().map(|&v| !v).collect();
        generic::shortcut_a(&g, zp, &x, &mut got, par);
        check_exact(
            "shortcut_a::<i8>",
            &got,
            &want,
            dims,
            |_| String::new(),
            || format!("{g:?} zero {zp}, {} workers", par.workers()),
        )
        .unwrap_or_else(|e| panic!("{e}"));

        let xf: Vec<f32> = x.iter().map(|&v| v as f32 * 0.37).collect();
        let mut wantf = Vec::new();
        for n in 0..g.n {
            for c in 0..oc {
                for &y in &rows {
                    for &xx in &cols {
                        let inside = c >= g.pad_before && c - g.pad_before < g.c;
                        wantf.push(if inside { xf[((n * g.c + c - g.pad_before) * g.h + y) * g.w + xx] } else { 0.0 });
                    }
                }
            }
        }
        let mut gotf = vec![f32::NAN; wantf.len()];
        generic::shortcut_a(&g, 0.0f32, &xf, &mut gotf, par);
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        check_exact(
            "shortcut_a::<f32> (bits)",
            &bits(&gotf),
            &bits(&wantf),
            dims,
            |_| String::new(),
            || format!("{g:?} on {} workers", par.workers()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

// ------------------------------------------------------------------------------------------------
// Quantize / dequantize / softmax
// ------------------------------------------------------------------------------------------------

/// Reference quantization in f64: round half away from zero of x / scale, plus zero point, clamped.
fn quantize_ref(x: f32, scale: f32, zp: i32, lo: i32, hi: i32) -> i8 {
    if x.is_nan() {
        return zp.clamp(lo, hi) as i8;
    }
    let r = (x as f64 / scale as f64).round();
    (r + zp as f64).clamp(lo as f64, hi as f64) as i8
}

#[test]
fn quantize_matches_f64_round_half_away() {
    let mut rng = Rng::new(0x0AA);
    let (mut checked, mut skipped) = (0usize, 0usize);
    for round in 0..200 {
        let scale = 2f64.powf(rng.uniform(-12.0, 3.0)) as f32;
        let zp = rng.i32(-128, 127);
        let (lo, hi) = clamp_range(&mut rng, zp, (round % 4) as u8);
        let spread = [150.0, 400.0, 1e6][round % 3] as f32;
        let mut x = rng.f32s(500, -spread * scale, spread * scale);
        x.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            -f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
        ]);
        let mut got: Vec<i8> = vec![0; x.len()];
        quant_fill(scale, zp, lo, hi, &x, &mut got);
        for (i, &v) in x.iter().enumerate() {
            let q = v as f64 / scale as f64;
            // The kernel divides in f32 (relative error 2^-24): skip values that close to a tie (beyond
            // |q| = 300 the clamp decides whatever the rounding).
            if q.abs() < 300.0 && (q.abs().fract() - 0.5).abs() < 1e-6 * (1.0 + q.abs()) {
                skipped += 1;
                continue;
            }
            checked += 1;
            let want = quantize_ref(v, scale, zp, lo, hi);
            assert_eq!(
                got[i], want,
                "quantize_scalar x={v:e} (x/scale={q}) scale={scale:e} zero_point={zp} clamp=[{lo}, {hi}]"
            );
        }
    }
    assert!(skipped * 100 < checked, "skipped {skipped} of {checked}");

    // Exact ties (power-of-two scales divide exactly) round away from zero.
    for scale in [1.0f32, 0.5, 0.25, 2.0, 1.0 / 128.0] {
        for k in -100..100 {
            let x = (k as f32 + 0.5) * scale;
            let want = if k >= 0 { k + 1 } else { k };
            let mut got = [0i8];
            quant_fill(scale, 0, -128, 127, &[x], &mut got);
            assert_eq!(got[0] as i32, want, "quantize_scalar tie x={x} scale={scale}: half must round away from zero");
            assert_eq!(quantize_ref(x, scale, 0, -128, 127) as i32, want, "reference tie x={x} scale={scale}");
        }
    }
}

fn quant_fill(scale: f32, zp: i32, lo: i32, hi: i32, x: &[f32], y: &mut [i8]) {
    generic::quantize_scalar(scale, zp, lo, hi, x, y);
}

#[test]
fn dequantize_exhaustive_is_exact() {
    let mut rng = Rng::new(0xDE);
    let q: Vec<i8> = (-128..=127).collect();
    for _ in 0..100 {
        let scale = 2f64.powf(rng.uniform(-20.0, 4.0)) as f32;
        let zp = rng.i32(-128, 127);
        // One f32 product of an exact integer: the f64 product is exact, so its rounding is the answer.
        let want: Vec<u32> = q.iter().map(|&v| (((v as i32 - zp) as f64 * scale as f64) as f32).to_bits()).collect();
        let mut got = vec![f32::NAN; 256];
        generic::dequantize_scalar(scale, zp, &q, &mut got);
        let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
        check_exact(
            "dequantize_scalar (bits)",
            &got,
            &want,
            (1, 1, 256),
            |i| format!("q={}", q[i]),
            || format!("scale={scale:e} zero_point={zp}"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // And quantize inverts it on the grid.
        let back: Vec<f32> = got.iter().map(|&b| f32::from_bits(b)).collect();
        let mut requant = vec![0i8; 256];
        generic::quantize_scalar(scale, zp, -128, 127, &back, &mut requant);
        assert_eq!(requant, q, "quantize(dequantize(q)) != q for scale={scale:e} zero_point={zp}");
    }
}

fn softmax_ref(row: &[f32]) -> Vec<f64> {
    let max = row.iter().map(|&v| v as f64).fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

#[test]
fn softmax_matches_f64_and_survives_large_logits() {
    let mut rng = Rng::new(0x50F7);
    let mut rows: Vec<Vec<f32>> = vec![
        vec![1000.0, 1000.0],
        vec![1000.0, -1000.0],
        vec![-1000.0, -1000.0, -1000.0],
        vec![1000.0, 999.0, 998.0, 0.0],
        vec![f32::MAX, 0.0, -f32::MAX],
        vec![88.8, 89.0, -103.0, 0.0],
        vec![42.0],
        vec![1e4; 1000],
    ];
    for round in 0..60 {
        let cols = [1usize, 2, 3, 10, 100, 1000][round % 6];
        let spread = [1.0f32, 10.0, 100.0][round / 6 % 3];
        let offset = [0.0f32, 1000.0, -1000.0, 500.0][round % 4];
        rows.push(rng.f32s(cols, -spread, spread).into_iter().map(|v| v + offset).collect());
    }
    for row in &rows {
        let cols = row.len();
        // Two copies of the row exercise the row stride.
        let x: Vec<f32> = row.iter().chain(row).copied().collect();
        let mut got = vec![f32::NAN; x.len()];
        generic::f32_softmax_scalar(cols, &x, &mut got);
        let want = softmax_ref(row);
        for (r, out) in got.chunks(cols).enumerate() {
            let desc = || format!("row {r} of cols={cols}, logits (first 8) {:?}", &row[..cols.min(8)]);
            assert!(
                out.iter().all(|v| v.is_finite() && *v >= 0.0),
                "non-finite or negative output {:?}; {}",
                &out[..cols.min(8)],
                desc()
            );
            let sum: f64 = out.iter().map(|&v| v as f64).sum();
            assert!((sum - 1.0).abs() <= 1e-5, "row sums to {sum}; {}", desc());
            for (j, (&g, &w)) in out.iter().zip(&want).enumerate() {
                assert!((g as f64 - w).abs() <= 1e-6, "column {j}: got {g}, want {w}; {}", desc());
            }
        }
    }
}

/// The spec functions the kernels call, against the exact formulas used above (non-saturating range).
#[test]
fn spec_functions_agree_with_exact_formulas() {
    let mut rng = Rng::new(0x5EC);
    for _ in 0..100_000 {
        let acc = rng.i32(-(1 << 28), 1 << 28) >> rng.int(0, 28);
        let denorm = rng.chance(0.2);
        let real = 2f64.powf(rng.uniform(-30.0, 2.0));
        let (m, s) = requant_pair(&mut rng, real, denorm);
        let want = rq_exact(acc as i64, m, s);
        assert_eq!(quant::requantize(acc, m, s) as i128, want, "requantize(acc={acc}, m={m}, shift={s})");
        let (zp, lo, hi) = (rng.i32(-128, 127), rng.i32(-128, 0), rng.i32(0, 127));
        assert_eq!(
            quant::saturate(want as i32, zp, lo, hi),
            out_i8(want, zp, lo, hi),
            "saturate({want}, {zp}, {lo}, {hi})"
        );
    }
}
