//! Calibration: the activation range of every value of an f32 model (already folded and fused), chosen
//! by one of four methods over observed data.
//!
//! Pass 1 records min / max per value. The other methods then build a 2048-bin histogram of |x| over
//! [0, max |x|] in a second pass and pick a clipping threshold T from it:
//! - percentile: the P-th percentile of |x|;
//! - entropy: TensorRT's method, the T whose quantized distribution has the least KL divergence from the
//!   observed one;
//! - mse: the T with the least expected squared quantization error (clipping + rounding noise).
//!
//! The range is then [max(min, -T), min(max, T)]. The graph output (the logits) always keeps min / max.

use crate::parallel::for_each_input;
use crate::samples::Samples;
use anyhow::Result;
use resedge::graph::Model;
use resedge::plan::{Plan, PlanOptions, ValueRef};
use resedge::quant::Ranges;
use std::collections::BTreeMap;

/// Histogram resolution (TensorRT uses 2048 too).
const BINS: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum Method {
    Minmax,
    Percentile,
    Entropy,
    Mse,
}

/// A value's |x| histogram over [0, amax].
#[derive(Clone, Debug)]
struct Histogram {
    amax: f32,
    counts: Vec<u64>,
}

impl Histogram {
    fn new(amax: f32) -> Self {
        Histogram { amax, counts: vec![0; BINS] }
    }
    fn add(&mut self, v: &[f32]) {
        if self.amax <= 0.0 {
            return;
        }
        let k = BINS as f32 / self.amax;
        for &x in v {
            let b = ((x.abs() * k) as usize).min(BINS - 1);
            self.counts[b] += 1;
        }
    }
    fn merge(&mut self, o: &Histogram) {
        self.counts.iter_mut().zip(&o.counts).for_each(|(a, b)| *a += b);
    }
    fn bin_width(&self) -> f64 {
        self.amax as f64 / BINS as f64
    }
    /// The smallest threshold below which `p` percent of |x| lies.
    fn percentile(&self, p: f64) -> f32 {
        let total: u64 = self.counts.iter().sum();
        let want = (total as f64 * p / 100.0).ceil() as u64;
        let mut acc = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= want {
                return ((i + 1) as f64 * self.bin_width()) as f32;
            }
        }
        self.amax
    }
    /// TensorRT's entropy calibration with `levels` quantization bins.
    fn entropy(&self, levels: usize) -> f32 {
        // The first bin holds ReLU's exact zeros, representable at any threshold; left in, its spike makes
        // every merge look costly and drives the search to the smallest thresholds.
        let mut h: Vec<f64> = self.counts.iter().map(|&c| c as f64).collect();
        h[0] = 0.0;
        let mut best = (f64::INFINITY, BINS);
        for i in (levels..=BINS).step_by(16) {
            // Reference distribution: the first i bins, everything beyond folded into the last.
            let mut p = h[..i].to_vec();
            p[i - 1] += h[i..].iter().sum::<f64>();
            // Candidate: the first i bins merged into `levels` groups, spread back over their non-empty bins.
            let mut q = vec![0f64; i];
            for g in 0..levels {
                let (s, e) = (g * i / levels, ((g + 1) * i / levels).max(g * i / levels + 1));
                let sum: f64 = h[s..e].iter().sum();
                let nonzero = h[s..e].iter().filter(|&&x| x > 0.0).count();
                if nonzero > 0 {
                    for j in s..e {
                        if h[j] > 0.0 {
                            q[j] = sum / nonzero as f64;
                        }
                    }
                }
            }
            let kl = kl_divergence(&p, &q);
            if kl < best.0 {
                best = (kl, i);
            }
        }
        (best.1 as f64 * self.bin_width()) as f32
    }
    /// The threshold with the least expected squared error for a quantizer of `levels` steps over [0, T].
    fn mse(&self, levels: usize) -> f32 {
        let w = self.bin_width();
        let mut best = (f64::INFINITY, self.amax);
        for i in (8..=BINS).step_by(8) {
            let t = i as f64 * w;
            let step = t / levels as f64;
            let mut err = 0.0;
            for (b, &c) in self.counts.iter().enumerate() {
                if c == 0 {
                    continue;
                }
                let x = (b as f64 + 0.5) * w;
                err += c as f64 * if x > t { (x - t) * (x - t) } else { step * step / 12.0 };
            }
            if err < best.0 {
                best = (err, t as f32);
            }
        }
        best.1
    }
}

/// KL(p || q) over normalized distributions; bins where p > 0 and q == 0 get a small floor.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if sp == 0.0 || sq == 0.0 {
        return f64::INFINITY;
    }
    p.iter()
        .zip(q)
        .filter(|(&a, _)| a > 0.0)
        .map(|(&a, &b)| {
            let (a, b) = (a / sp, (b / sq).max(1e-12));
            a * (a / b).ln()
        })
        .sum()
}

/// Per-thread observations: (min, max) or histograms per value name.
type MinMax = BTreeMap<String, (f32, f32)>;

/// Calibrated ranges of the input and of every node output of `model` (folded, f32) over `idx` samples.
pub fn calibrate(
    model: &Model<'_>,
    samples: &Samples,
    idx: &[usize],
    method: Method,
    percentile: f64,
) -> Result<Ranges> {
    // Scalar f32 kernels: SIMD sums differ in the last bits, and the int8 file must not depend on the CPU
    // that calibrated it.
    let opts = PlanOptions { optimize: false, max_isa: resedge::kernels::Isa::Scalar, ..Default::default() };
    let plan = Plan::new(model, &opts)?;
    let input_name = plan.values[plan.input].name.clone();
    let names: Vec<String> = plan.steps.iter().map(|s| s.name.clone()).collect();
    // Pass 1: min / max.
    let minmax = for_each_input(
        samples,
        idx,
        || (plan.executor(), MinMax::new()),
        |(exec, acc), x| {
            widen(acc, &input_name, x);
            Ok(exec.run_observed(x, &mut |i, v| {
                if let ValueRef::F32(v) = v {
                    widen(acc, &names[i], v);
                }
            })?)
        },
    )?;
    let mut ranges = Ranges::new();
    for (_, m) in minmax {
        for (k, (lo, hi)) in m {
            let e = ranges.entry(k).or_insert((f32::INFINITY, f32::NEG_INFINITY));
            *e = (e.0.min(lo), e.1.max(hi));
        }
    }
    if method == Method::Minmax {
        return Ok(ranges);
    }
    // Pass 2: |x| histograms over [0, max |x|].
    let empty: BTreeMap<String, Histogram> =
        ranges.iter().map(|(k, &(lo, hi))| (k.clone(), Histogram::new(lo.abs().max(hi.abs())))).collect();
    let hists = for_each_input(
        samples,
        idx,
        || (plan.executor(), empty.clone()),
        |(exec, acc), x| {
            acc.get_mut(&input_name).expect("input observed").add(x);
            Ok(exec.run_observed(x, &mut |i, v| {
                if let (ValueRef::F32(v), Some(h)) = (v, acc.get_mut(&names[i])) {
                    h.add(v);
                }
            })?)
        },
    )?;
    let mut total = empty;
    for (_, h) in hists {
        for (k, v) in h {
            total.get_mut(&k).expect("same keys").merge(&v);
        }
    }
    for (k, h) in total {
        // The logits keep their full range: clipping the largest ones could change the top-1 class.
        if k == model.graph.output {
            continue;
        }
        let (lo, hi) = ranges[&k];
        // MSE models the real quantizer: a one-signed value uses all 255 steps over [0, T], a signed one 128
        // per side. Entropy keeps TensorRT's 128 target bins.
        let levels = if lo >= 0.0 || hi <= 0.0 { 255 } else { 128 };
        let t = match method {
            Method::Percentile => h.percentile(percentile),
            Method::Entropy => h.entropy(128),
            Method::Mse => h.mse(levels),
            Method::Minmax => unreachable!("returned above"),
        };
        if t > 0.0 {
            ranges.insert(k, (lo.max(-t), hi.min(t)));
        }
    }
    Ok(ranges)
}

fn widen(acc: &mut MinMax, name: &str, v: &[f32]) {
    let e = acc.entry(name.to_string()).or_insert((f32::INFINITY, f32::NEG_INFINITY));
    for &x in v {
        e.0 = e.0.min(x);
        e.1 = e.1.max(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_of(v: &[f32]) -> Histogram {
        let mut h = Histogram::new(v.iter().fold(0f32, |m, x| m.max(x.abs())));
        h.add(v);
        h
    }

    #[test]
    fn percentile_cuts_the_tail() {
        // 999 values in [0, 1) and one outlier at 100: the 99.9th percentile ignores the outlier.
        let mut v: Vec<f32> = (0..999).map(|i| i as f32 / 999.0).collect();
        v.push(100.0);
        let t = hist_of(&v).percentile(99.9);
        assert!((0.95..1.2).contains(&t), "{t}");
        assert_eq!(hist_of(&v).percentile(100.0), 100.0);
    }

    #[test]
    fn entropy_clips_rare_outliers_and_mse_keeps_the_bulk() {
        // A Gaussian-ish bulk within ±3 and a few far outliers at 60.
        let mut state = 1u64;
        let mut v: Vec<f32> = (0..200_000)
            .map(|_| {
                let mut s = 0.0;
                for _ in 0..12 {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    s += (state >> 40) as f32 / (1u64 << 24) as f32;
                }
                s - 6.0
            })
            .collect();
        v.extend([60.0, -60.0, 59.0]);
        let h = hist_of(&v);
        let t = h.entropy(128);
        assert!((2.0..20.0).contains(&t), "entropy: threshold {t}");
        // MSE weighs each outlier's squared clipping error: with outliers at 60 it keeps most of the
        // range, but never clips the bulk.
        let t = h.mse(128);
        assert!((5.0..60.0).contains(&t), "mse: threshold {t}");
        // Without outliers, MSE keeps nearly the whole (bounded) range of a uniform distribution.
        let u: Vec<f32> = (0..100_000).map(|i| i as f32 / 100_000.0).collect();
        let t = hist_of(&u).mse(255);
        assert!(t > 0.97, "{t}");
    }

    #[test]
    fn kl_is_zero_for_equal_and_positive_otherwise() {
        assert!(kl_divergence(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).abs() < 1e-12);
        assert!(kl_divergence(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) > 0.1);
    }
}
