//! Bias correction (Nagel et al. 2019, "Data-Free Quantization", empirical variant). Rounding a layer's
//! weights and quantizing its input (rounding, and clipping at the calibrated range) shift the mean of its
//! output. The shift per output channel is estimated from per-channel input means on the calibration data,
//! `E[ŷ - y] = Σ Ŵ·E[x̂] - W·E[x]`, and subtracted from the float bias before lowering, so each int8
//! layer's output mean matches the float layer's. First order only: border taps that read padding zeros
//! are counted with the channel mean.

use crate::parallel::for_each_input;
use crate::samples::Samples;
use anyhow::{anyhow, ensure, Result};
use resedge::graph::{Model, Op, QParams};
use resedge::kernels::Isa;
use resedge::plan::{PlanOptions, ValueRef};
use resedge::quant::{dequantize, internal_i8, quantize_f32, quantize_weight_row, QParamMap};
use resedge::tensor::Tensor;
use resedge::Plan;
use std::collections::{BTreeMap, BTreeSet};

/// Per-sample channel sums are added as fixed-point integers (this many fraction bits), so the totals do
/// not depend on how samples are split over threads.
const FRACTION_BITS: i32 = 32;

/// A value that feeds a corrected layer, and its per-channel sums of `x` and of quantized `x̂`.
struct Watched {
    name: String,
    channels: usize,
    /// Values of one channel in one sample (the plan's batch times H x W).
    per_channel: usize,
    q: QParams,
}

/// Returns `float` with the bias of every conv / linear layer not in `keep_float` corrected for the mean
/// shift its int8 lowering under `qparams` will introduce, measured on the samples in `idx`.
pub fn correct_biases(
    float: &Model<'_>,
    qparams: &QParamMap,
    keep_float: &BTreeSet<String>,
    samples: &Samples,
    idx: &[usize],
) -> Result<Model<'static>> {
    ensure!(!idx.is_empty(), "bias correction needs calibration samples");
    let layers: Vec<_> = float
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv { .. } | Op::Linear { .. }) && !keep_float.contains(&n.name))
        .collect();
    let opts = PlanOptions { optimize: false, max_isa: Isa::Scalar, ..Default::default() };
    let plan = Plan::new(float, &opts)?;
    let fed: BTreeSet<&str> = layers.iter().map(|n| n.inputs[0].as_str()).collect();
    let mut watched = vec![];
    for name in fed {
        let v = plan.values.iter().find(|v| v.name == name).ok_or_else(|| anyhow!("no value `{name}` in the plan"))?;
        let q = *qparams.get(name).ok_or_else(|| anyhow!("no quantization for value `{name}`"))?;
        let channels = v.shape.get(1).copied().unwrap_or(1).max(1);
        watched.push(Watched { name: name.to_string(), channels, per_channel: v.numel() / channels, q });
    }
    // Where each watched value shows up: the graph input, or the output of step i.
    let input_slot = watched.iter().position(|w| w.name == plan.values[plan.input].name);
    let step_slot: Vec<Option<usize>> =
        plan.steps.iter().map(|s| watched.iter().position(|w| w.name == s.name)).collect();

    type Sums = Vec<(Vec<i128>, Vec<i128>)>;
    let empty: Sums = watched.iter().map(|w| (vec![0; w.channels], vec![0; w.channels])).collect();
    let add = |acc: &mut Sums, k: usize, x: &[f32]| {
        let w = &watched[k];
        let (zp, lo, hi) = internal_i8(&w.q);
        let hw = x.len() / w.channels;
        for (c, plane) in x.chunks_exact(hw).enumerate() {
            let (mut s, mut sq) = (0f64, 0f64);
            for &v in plane {
                s += v as f64;
                sq += dequantize(quantize_f32(v, w.q.scale, zp, lo, hi), w.q.scale, zp) as f64;
            }
            let fixed = |v: f64| (v * 2f64.powi(FRACTION_BITS)).round() as i128;
            acc[k].0[c % w.channels] += fixed(s);
            acc[k].1[c % w.channels] += fixed(sq);
        }
    };
    let parts = for_each_input(
        samples,
        idx,
        || (plan.executor(), empty.clone()),
        |(exec, acc), x| {
            if let Some(k) = input_slot {
                add(acc, k, x);
            }
            Ok(exec.run_observed(x, &mut |i, v| {
                if let (Some(k), ValueRef::F32(v)) = (step_slot[i], v) {
                    add(acc, k, v);
                }
            })?)
        },
    )?;
    // Per-channel means of x and x̂ by value name.
    let mut means: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for (k, w) in watched.iter().enumerate() {
        let (mut s, mut sq) = (vec![0i128; w.channels], vec![0i128; w.channels]);
        for (_, acc) in &parts {
            s.iter_mut().zip(&acc[k].0).for_each(|(a, b)| *a += b);
            sq.iter_mut().zip(&acc[k].1).for_each(|(a, b)| *a += b);
        }
        let count = (idx.len() * w.per_channel) as f64 * 2f64.powi(FRACTION_BITS);
        let mean = |v: Vec<i128>| v.into_iter().map(|t| t as f64 / count).collect();
        means.insert(w.name.as_str(), (mean(s), mean(sq)));
    }

    let mut out = float.clone().into_owned();
    for node in layers {
        let (mx, mq) = &means[node.inputs[0].as_str()];
        let wname = format!("{}.weight", node.name);
        let wt = float.tensors.get(&wname).ok_or_else(|| anyhow!("missing tensor {wname}"))?;
        let w = wt.to_f32(&wname)?;
        let (oc, groups, has_bias) = match &node.op {
            Op::Conv { out_channels, groups, bias, .. } => (*out_channels, *groups, *bias),
            Op::Linear { out_features, bias, .. } => (*out_features, 1, *bias),
            _ => unreachable!("filtered above"),
        };
        // Weights are [oc, in/groups, kh, kw] or [out, in]: `per` values a row, `taps` per input channel.
        let per = w.len() / oc.max(1);
        let in_per_group = wt.shape.get(1).copied().unwrap_or(1).max(1);
        let taps = per / in_per_group;
        ensure!(
            per * oc == w.len() && taps * in_per_group == per && oc % groups == 0 && mx.len() >= groups * in_per_group,
            "layer {}: weight shape {:?} does not match its input",
            node.name,
            wt.shape
        );
        let mut b =
            if has_bias { float.tensors[&format!("{}.bias", node.name)].to_f32("bias")? } else { vec![0.0; oc] };
        let mut wq = Vec::with_capacity(per);
        for (c, bc) in b.iter_mut().enumerate() {
            wq.clear();
            let row = &w[c * per..][..per];
            let sw = quantize_weight_row(row, &mut wq);
            let first = c / (oc / groups) * in_per_group;
            let shift: f64 = row
                .iter()
                .zip(&wq)
                .enumerate()
                .map(|(j, (&wf, &q))| {
                    let ic = first + j / taps;
                    (q as f64 * sw as f64) * mq[ic] - wf as f64 * mx[ic]
                })
                .sum();
            *bc -= shift as f32;
        }
        out.tensors.insert(format!("{}.bias", node.name), Tensor::from_f32(vec![oc], &b));
        let n = out.graph.nodes.iter_mut().find(|n| n.name == node.name).expect("same graph");
        if let Op::Conv { bias, .. } | Op::Linear { bias, .. } = &mut n.op {
            *bias = true;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::{calibrate, Method};
    use resedge::graph::{Activation, Graph, Input, Node, Window};
    use resedge::quant::{lower_to_int8, qparams_from_ranges, ActivationScheme};

    /// Deterministic values in [0, 1) (xorshift).
    fn uniform(n: usize, mut s: u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect()
    }

    /// One 3x3 conv without padding on skewed inputs (clipped by a 90th-percentile range) with a coarse
    /// weight scale per channel (one large weight a row): int8 output means drift from the float ones.
    fn setup() -> (Model<'static>, Samples) {
        let (ic, oc) = (3, 8);
        let mut w: Vec<f32> = uniform(oc * ic * 9, 7).iter().map(|v| v * 0.4 - 0.15).collect();
        for c in 0..oc {
            w[c * ic * 9] = 3.0;
        }
        let conv = Op::Conv {
            out_channels: oc,
            window: Window { kernel: [3, 3], stride: [1, 1], padding: [0; 4], dilation: [1, 1] },
            groups: 1,
            bias: true,
            residual: false,
            activation: Activation::None,
        };
        let model = Model {
            name: "bias".into(),
            graph: Graph {
                input: Input { name: "input".into(), shape: vec![ic, 6, 6] },
                nodes: vec![Node { name: "conv".into(), op: conv, inputs: vec!["input".into()], output_q: None }],
                output: "conv".into(),
            },
            tensors: [
                ("conv.weight".to_string(), Tensor::from_f32(vec![oc, ic, 3, 3], &w)),
                ("conv.bias".to_string(), Tensor::from_f32(vec![oc], &uniform(oc, 9))),
            ]
            .into_iter()
            .collect(),
            preprocess: None,
            labels: vec![],
        };
        let data = (0..64).map(|i| uniform(ic * 36, 100 + i).iter().map(|v| v.powi(4) * 8.0).collect()).collect();
        (model, Samples::Tensors { data })
    }

    fn channel_means(model: &Model<'_>, samples: &Samples) -> Vec<f64> {
        let plan = Plan::new(model, &PlanOptions { max_isa: Isa::Scalar, ..Default::default() }).unwrap();
        let mut exec = plan.executor();
        let mut m = vec![0f64; 8];
        for i in 0..samples.len() {
            let y = exec.run(&samples.input(i)).unwrap();
            for (c, plane) in y.chunks_exact(16).enumerate() {
                m[c] += plane.iter().map(|&v| v as f64).sum::<f64>() / (16 * samples.len()) as f64;
            }
        }
        m
    }

    #[test]
    fn corrected_int8_output_means_match_the_float_ones() {
        let (float, samples) = setup();
        let idx: Vec<usize> = (0..samples.len()).collect();
        let ranges = calibrate(&float, &samples, &idx, Method::Percentile, 90.0).unwrap();
        let q = qparams_from_ranges(&ranges, ActivationScheme::AsymmetricU8);
        let keep = BTreeSet::new();
        let corrected = correct_biases(&float, &q, &keep, &samples, &idx).unwrap();
        let reference = channel_means(&float, &samples);
        let drift = |m: &Model<'_>| -> f64 {
            let int8 = lower_to_int8(m, &q, &keep).unwrap();
            channel_means(&int8, &samples).iter().zip(&reference).map(|(a, b)| (a - b).abs()).sum::<f64>() / 8.0
        };
        let (before, after) = (drift(&float), drift(&corrected));
        // The output step bounds what correction can reach (rounding of the i32 bias and of the output).
        let step = q["conv"].scale as f64;
        eprintln!("mean drift per channel: {before:.4} uncorrected, {after:.4} corrected (output step {step:.4})");
        assert!(before > 2.0 * step, "the setup should drift: {before} vs output step {step}");
        assert!(after < 0.25 * before && after < step, "drift {before} -> {after} (output step {step})");
    }

    #[test]
    fn layers_kept_in_float_are_left_alone() {
        let (float, samples) = setup();
        let idx: Vec<usize> = (0..8).collect();
        let ranges = calibrate(&float, &samples, &idx, Method::Minmax, 99.0).unwrap();
        let q = qparams_from_ranges(&ranges, ActivationScheme::AsymmetricU8);
        let keep: BTreeSet<String> = ["conv".to_string()].into();
        assert_eq!(correct_biases(&float, &q, &keep, &samples, &idx).unwrap(), float);
    }
}
