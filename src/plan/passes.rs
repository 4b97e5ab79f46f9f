//! Graph rewrites applied before planning (f32 graphs): fold batchnorm into the preceding convolution,
//! fuse activations and residual adds into conv / add epilogues. The quantizer runs the same passes
//! before lowering to int8, so the fused forms are what the int8 spec sees.

use crate::error::{Error, Result};
use crate::graph::{Activation, Model, Op};
use crate::tensor::Tensor;
use std::prelude::v1::*;

/// Runs every pass to a fixed point.
pub fn optimize<'a>(model: &Model<'a>) -> Result<Model<'a>> {
    let mut m = model.clone();
    fold_batchnorm(&mut m)?;
    fuse_residual_add(&mut m);
    fuse_activation(&mut m);
    Ok(m)
}

/// Renames every use of value `from` to `to`, including the graph output.
fn rename_uses(m: &mut Model<'_>, from: &str, to: &str) {
    for n in &mut m.graph.nodes {
        for i in &mut n.inputs {
            if i == from {
                *i = to.to_string();
            }
        }
    }
    if m.graph.output == from {
        m.graph.output = to.to_string();
    }
}

/// Whether `value` has exactly one reader and is not the graph output.
fn single_use(m: &Model<'_>, value: &str) -> bool {
    m.graph.output != value && m.graph.consumers(value).len() == 1
}

/// Folds `BatchNorm(Conv(x))` into the conv: w' = w * g / sqrt(v + eps), b' = (b - mean) * g / sqrt(v + eps) + beta.
pub fn fold_batchnorm(m: &mut Model<'_>) -> Result<()> {
    let mut i = 0;
    while i < m.graph.nodes.len() {
        let bn = &m.graph.nodes[i];
        let (Op::BatchNorm { eps }, [src]) = (&bn.op, bn.inputs.as_slice()) else {
            i += 1;
            continue;
        };
        let (eps, bn_name, src) = (*eps, bn.name.clone(), src.clone());
        let Some(ci) = m.graph.producer(&src) else {
            i += 1;
            continue;
        };
        let conv = &m.graph.nodes[ci];
        let foldable = matches!(conv.op, Op::Conv { residual: false, activation: Activation::None, .. })
            && conv.output_q.is_none()
            && single_use(m, &src);
        if !foldable {
            i += 1;
            continue;
        }
        let Op::Conv { out_channels, .. } = conv.op else { unreachable!("checked by `foldable`") };
        let cname = conv.name.clone();
        let get = |role: &str, owner: &str| -> Result<Vec<f32>> {
            let name = format!("{owner}.{role}");
            let t = m.tensors.get(&name).ok_or_else(|| Error::tensor(&name, "missing"))?;
            t.to_f32(&name)
        };
        let (gamma, beta, mean, var) =
            (get("gamma", &bn_name)?, get("beta", &bn_name)?, get("mean", &bn_name)?, get("var", &bn_name)?);
        let mut w = get("weight", &cname)?;
        let mismatch = || Error::node(&bn_name, format!("batchnorm parameters do not match {out_channels} channels"));
        // Checked before `out_channels` (from the file) sizes any allocation.
        if [gamma.len(), beta.len(), mean.len(), var.len()].iter().any(|&l| l != out_channels)
            || out_channels == 0
            || w.len() % out_channels != 0
        {
            return Err(mismatch());
        }
        let bias = if m.tensors.contains_key(&format!("{cname}.bias")) {
            get("bias", &cname)?
        } else {
            vec![0.0; out_channels]
        };
        if bias.len() != out_channels {
            return Err(mismatch());
        }
        let per = w.len() / out_channels;
        let mut new_bias = vec![0.0; out_channels];
        for c in 0..out_channels {
            let s = gamma[c] / libm::sqrtf(var[c] + eps);
            w[c * per..][..per].iter_mut().for_each(|v| *v *= s);
            new_bias[c] = (bias[c] - mean[c]) * s + beta[c];
        }
        let wshape = m.tensors[&format!("{cname}.weight")].shape.clone();
        m.tensors.insert(format!("{cname}.weight"), Tensor::from_f32(wshape, &w));
        m.tensors.insert(format!("{cname}.bias"), Tensor::from_f32(vec![out_channels], &new_bias));
        for role in ["gamma", "beta", "mean", "var"] {
            m.tensors.remove(&format!("{bn_name}.{role}"));
        }
        if let Op::Conv { bias, .. } = &mut m.graph.nodes[ci].op {
            *bias = true;
        }
        m.graph.nodes.remove(i);
        rename_uses(m, &bn_name, &cname);
    }
    Ok(())
}

/// Fuses `Add(Conv(x), r)` into the conv as a residual input, when the conv output has no other reader
/// and the conv is not yet activated. The other input must be produced before the conv runs.
pub fn fuse_residual_add(m: &mut Model<'_>) {
    let mut i = 0;
    while i < m.graph.nodes.len() {
        let add = &m.graph.nodes[i];
        let (Op::Add { activation }, [a, b]) = (&add.op, add.inputs.as_slice()) else {
            i += 1;
            continue;
        };
        if add.output_q.is_some() {
            i += 1;
            continue;
        }
        let (activation, add_name) = (*activation, add.name.clone());
        // Prefer the later-produced conv: the residual then is already computed when the conv runs.
        let pos = |m: &Model<'_>, v: &str| m.graph.producer(v).map_or(-1, |p| p as isize);
        let (first, second) = if pos(m, a) >= pos(m, b) { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
        let mut fused = false;
        for (conv_v, res_v) in [(&first, &second), (&second, &first)] {
            let Some(ci) = m.graph.producer(conv_v) else { continue };
            let fusable =
                matches!(m.graph.nodes[ci].op, Op::Conv { residual: false, activation: Activation::None, .. })
                    && m.graph.nodes[ci].output_q.is_none()
                    && single_use(m, conv_v);
            if !fusable {
                continue;
            }
            // The conv moves one place down if the residual's producer moves ahead of it.
            let ci = if hoist_before(m, res_v, ci) { ci + 1 } else { ci };
            if pos(m, res_v) >= ci as isize {
                continue;
            }
            let conv = &mut m.graph.nodes[ci];
            if let Op::Conv { residual, activation: act, .. } = &mut conv.op {
                *residual = true;
                *act = activation;
            }
            conv.inputs.push(res_v.clone());
            let cname = conv.name.clone();
            m.graph.nodes.remove(i);
            rename_uses(m, &add_name, &cname);
            fused = true;
            break;
        }
        if !fused {
            i += 1;
        }
    }
}

/// Moves the producer of `value` to just before node `at` when it comes after it but all its own inputs
/// come before: ONNX exports put a ResNet's option-A shortcut (slice + pad) after the block's second conv, and
/// the residual must exist when the conv runs for the add to fuse into it.
/// Returns whether it moved.
fn hoist_before(m: &mut Model<'_>, value: &str, at: usize) -> bool {
    let Some(p) = m.graph.producer(value).filter(|&p| p > at) else { return false };
    let ready = m.graph.nodes[p].inputs.iter().all(|v| m.graph.producer(v).is_none_or(|q| q < at));
    if ready {
        let node = m.graph.nodes.remove(p);
        m.graph.nodes.insert(at, node);
    }
    ready
}

/// Fuses a standalone activation into the conv / add / linear that feeds it (sole reader, no activation yet).
pub fn fuse_activation(m: &mut Model<'_>) {
    let mut i = 0;
    while i < m.graph.nodes.len() {
        let node = &m.graph.nodes[i];
        let (Op::Act { activation }, [src]) = (&node.op, node.inputs.as_slice()) else {
            i += 1;
            continue;
        };
        let (activation, name, src) = (*activation, node.name.clone(), src.clone());
        let Some(pi) = m.graph.producer(&src) else {
            i += 1;
            continue;
        };
        if !single_use(m, &src) || m.graph.nodes[pi].output_q.is_some() || node.output_q.is_some() {
            i += 1;
            continue;
        }
        let slot = match &mut m.graph.nodes[pi].op {
            Op::Conv { activation: a, .. } | Op::Add { activation: a } | Op::Linear { activation: a, .. }
                if a.is_none() =>
            {
                a
            }
            _ => {
                i += 1;
                continue;
            }
        };
        *slot = activation;
        m.graph.nodes.remove(i);
        rename_uses(m, &name, &src);
    }
}
