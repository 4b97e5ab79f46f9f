//! Lowering an f32 graph (already folded and fused) to int8, given the quantization of every value.
//! Weights: symmetric per output channel in [-127, 127]. Activations: per tensor, chosen by the caller
//! (from calibrated ranges with [`qparams_from_ranges`], or taken from a QDQ ONNX file).
//! Requantization multipliers are computed here, once, and stored in the model file.

use super::{qparams_for_range, quantize_multiplier};
use crate::error::{Error, Result};
use crate::graph::{Model, Node, Op, QParams};
use crate::tensor::Tensor;
use std::collections::{BTreeMap, BTreeSet};
use std::prelude::v1::*;

/// How activations are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationScheme {
    /// int8, zero point 0.
    SymmetricI8,
    /// int8 with a zero point (uses the full range for ReLU outputs).
    AsymmetricI8,
    /// uint8 with a zero point (ONNX Runtime's U8S8 layout).
    AsymmetricU8,
}

/// Observed (min, max) of the graph input and of every node output, by value name.
pub type Ranges = BTreeMap<String, (f32, f32)>;

/// Quantization of the graph input and of every node output, by value name.
pub type QParamMap = BTreeMap<String, QParams>;

/// The quantization of every calibrated value under `scheme`.
pub fn qparams_from_ranges(ranges: &Ranges, scheme: ActivationScheme) -> QParamMap {
    ranges.iter().map(|(k, &(lo, hi))| (k.clone(), qparams_for_range(lo, hi, scheme))).collect()
}

fn mult(node: &Node, real: f64) -> Result<(i32, i32)> {
    quantize_multiplier(real)
        .ok_or_else(|| Error::node(&node.name, format!("requantization scale {real} is out of range")))
}

/// Returns the int8 model. Nodes that cannot run in int8 (Softmax, BatchNorm left unfolded) and the nodes
/// named in `keep_float` get a Dequantize in front and stay f32; an int8 node fed by an f32 value gets a
/// Quantize in front; the graph output is dequantized to f32.
pub fn lower_to_int8(model: &Model<'_>, qparams: &QParamMap, keep_float: &BTreeSet<String>) -> Result<Model<'static>> {
    let range_of = |v: &str| -> Result<QParams> {
        qparams.get(v).copied().ok_or_else(|| Error::Graph(format!("no calibration range for value `{v}`")))
    };
    let mut out = Model {
        name: model.name.clone(),
        graph: model.graph.clone(),
        tensors: BTreeMap::new(),
        preprocess: model.preprocess.clone(),
        labels: model.labels.clone(),
    };
    out.graph.nodes.clear();
    // Quantization of each value in the new graph (None = f32). Values keep their names: int8 nodes
    // produce int8 values, f32 nodes f32 ones.
    let mut qof: BTreeMap<String, Option<QParams>> = BTreeMap::new();
    qof.insert(model.graph.input.name.clone(), None);

    for node in &model.graph.nodes {
        let mut inputs = node.inputs.clone();
        let int8_capable = !keep_float.contains(&node.name)
            && match &node.op {
                Op::Conv { .. } | Op::Linear { .. } | Op::Add { .. } | Op::GlobalAvgPool => true,
                Op::AvgPool { .. } => !excludes_padding(&node.op),
                Op::MaxPool { .. } | Op::Flatten | Op::ShortcutA { .. } | Op::Act { .. } => true,
                _ => false,
            };
        if int8_capable {
            // An f32 input (after a layer kept in float) is quantized by its calibrated parameters.
            for (slot, orig) in inputs.iter_mut().zip(&node.inputs) {
                if let Some(None) = qof.get(slot.as_str()) {
                    let q = range_of(orig)?;
                    let qv = format!("{orig}.quantized");
                    if !qof.contains_key(&qv) {
                        let op = Op::Quantize;
                        out.graph.nodes.push(Node { name: qv.clone(), op, inputs: vec![slot.clone()], output_q: Some(q) });
                        qof.insert(qv.clone(), Some(q));
                    }
                    *slot = qv;
                }
            }
        }
        let in_q: Vec<QParams> = inputs.iter().filter_map(|i| qof.get(i).copied().flatten()).collect();
        let all_q = int8_capable && in_q.len() == inputs.len();
        let t = |role: &str| -> Result<&Tensor<'_>> {
            let name = format!("{}.{role}", node.name);
            model.tensors.get(&name).ok_or_else(|| Error::tensor(&name, "missing"))
        };
        let mut new = node.clone();
        new.inputs = inputs.clone();
        let passthrough = matches!(node.op, Op::MaxPool { .. } | Op::Flatten | Op::ShortcutA { .. } | Op::Act { .. });
        let conv_like = match &node.op {
            Op::Conv { out_channels, bias, residual, .. } => Some((*out_channels, *bias, *residual)),
            Op::Linear { out_features, bias, .. } => Some((*out_features, *bias, false)),
            _ => None,
        };
        match (&node.op, conv_like) {
            (_, Some((oc, bias, residual))) if all_q => {
                let (sx, qy) = (in_q[0].scale as f64, range_of(&node.name)?);
                let w = t("weight")?.to_f32(&format!("{}.weight", node.name))?;
                let b = if bias { t("bias")?.to_f32(&format!("{}.bias", node.name))? } else { vec![0.0; oc] };
                let per = w.len() / oc.max(1);
                let (mut wq, mut bq, mut ms, mut ss, mut wscale) =
                    (Vec::with_capacity(w.len()), vec![], vec![], vec![], vec![]);
                for c in 0..oc {
                    let row = &w[c * per..][..per];
                    let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
                    let sw = if amax > 0.0 { amax / 127.0 } else { 1.0 };
                    wq.extend(row.iter().map(|v| libm::roundf(v / sw).clamp(-127.0, 127.0) as i8));
                    let acc_scale = sx * sw as f64;
                    bq.push(
                        libm::round(b[c] as f64 / acc_scale).clamp(-(1i64 << 30) as f64, (1i64 << 30) as f64) as i32
                    );
                    let (m, s) = mult(node, acc_scale / qy.scale as f64)?;
                    ms.push(m);
                    ss.push(s);
                    wscale.push(sw);
                }
                let shape = t("weight")?.shape.clone();
                let n = &node.name;
                out.tensors.insert(format!("{n}.weight"), Tensor::from_i8(shape, &wq));
                out.tensors.insert(format!("{n}.bias"), Tensor::from_i32(vec![oc], &bq));
                out.tensors.insert(format!("{n}.multiplier"), Tensor::from_i32(vec![oc], &ms));
                out.tensors.insert(format!("{n}.shift"), Tensor::from_i32(vec![oc], &ss));
                out.tensors.insert(format!("{n}.weight_scale"), Tensor::from_f32(vec![oc], &wscale));
                if residual {
                    let (m, s) = mult(node, in_q[1].scale as f64 / qy.scale as f64)?;
                    out.tensors.insert(format!("{n}.residual_multiplier"), Tensor::from_i32(vec![1], &[m]));
                    out.tensors.insert(format!("{n}.residual_shift"), Tensor::from_i32(vec![1], &[s]));
                }
                match &mut new.op {
                    Op::Conv { bias, .. } | Op::Linear { bias, .. } => *bias = true,
                    _ => {}
                }
                new.output_q = Some(qy);
            }
            (Op::Add { .. }, _) if all_q => {
                let qy = range_of(&node.name)?;
                let (ma, sa) = mult(node, in_q[0].scale as f64 / qy.scale as f64)?;
                let (mb, sb) = mult(node, in_q[1].scale as f64 / qy.scale as f64)?;
                out.tensors.insert(format!("{}.multiplier", node.name), Tensor::from_i32(vec![2], &[ma, mb]));
                out.tensors.insert(format!("{}.shift", node.name), Tensor::from_i32(vec![2], &[sa, sb]));
                new.output_q = Some(qy);
            }
            // int8 average pooling divides by kh*kw everywhere, so a pool that excludes padding stays f32.
            (Op::GlobalAvgPool | Op::AvgPool { .. }, _) if all_q && !excludes_padding(&node.op) => {
                let qy = range_of(&node.name)?;
                let count = match &node.op {
                    Op::AvgPool { window, .. } => window.kernel[0] * window.kernel[1],
                    _ => model_hw(model, node)?,
                };
                let (m, s) = mult(node, in_q[0].scale as f64 / (qy.scale as f64 * count as f64))?;
                out.tensors.insert(format!("{}.multiplier", node.name), Tensor::from_i32(vec![1], &[m]));
                out.tensors.insert(format!("{}.shift", node.name), Tensor::from_i32(vec![1], &[s]));
                new.output_q = Some(qy);
            }
            _ if passthrough && all_q => new.output_q = Some(in_q[0]),
            _ => {
                // Stays f32: dequantize quantized inputs, copy tensors as they are.
                for (slot, name) in new.inputs.iter_mut().zip(&inputs) {
                    if let Some(Some(_)) = qof.get(name) {
                        let dq = format!("{name}.dequantized");
                        if !qof.contains_key(&dq) {
                            out.graph.nodes.push(Node {
                                name: dq.clone(),
                                op: Op::Dequantize,
                                inputs: vec![name.clone()],
                                output_q: None,
                            });
                            qof.insert(dq.clone(), None);
                        }
                        *slot = dq;
                    }
                }
                let prefix = format!("{}.", node.name);
                for (k, v) in model.tensors.range(prefix.clone()..) {
                    if !k.starts_with(&prefix) {
                        break;
                    }
                    out.tensors.insert(k.clone(), v.clone().into_owned());
                }
            }
        }
        qof.insert(new.name.clone(), new.output_q);
        out.graph.nodes.push(new);
    }
    let last = out.graph.output.clone();
    if let Some(Some(_)) = qof.get(&last) {
        let dq = format!("{last}.dequantized");
        out.graph.nodes.push(Node { name: dq.clone(), op: Op::Dequantize, inputs: vec![last], output_q: None });
        out.graph.output = dq;
    }
    Ok(out)
}

/// An average pool whose divisor excludes padded taps (not expressible in int8).
fn excludes_padding(op: &Op) -> bool {
    matches!(op, Op::AvgPool { window, count_include_pad: false } if window.padding != [0; 4])
}

/// Spatial size (H*W) of a GlobalAvgPool's input, from the shapes a plan of the f32 model infers.
fn model_hw(model: &Model<'_>, node: &Node) -> Result<usize> {
    let plan = crate::plan::Plan::new(model, &crate::plan::PlanOptions { optimize: false, ..Default::default() })?;
    let v = &plan.values[plan.steps.iter().find(|s| s.name == node.name).map(|s| s.inputs[0]).unwrap_or(plan.input)];
    Ok(v.shape.iter().skip(2).product())
}
