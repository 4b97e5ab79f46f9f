//! Mixed precision: keep the fewest layers in float that bring the int8 model within an accuracy budget.
//!
//! Sensitivity pass: each conv / linear layer alone is reverted to float and the model is measured on a
//! held-out split (top-1 where labels exist, else top-1 agreement with the float model; mean logit cosine
//! breaks ties). Layers are then kept in float greedily, most helpful first, until the drop meets the budget.

use crate::eval::{logits, top_k};
use crate::report::Sums;
use crate::samples::Samples;
use anyhow::Result;
use resedge::graph::{Model, Op};
use resedge::quant::{lower_to_int8, QParamMap};
use std::collections::BTreeSet;

/// Score of a model on the held-out split: (top-1 percent, mean logit cosine with the float model).
struct Score {
    top1: f64,
    cosine: f64,
}

fn score(model: &Model<'_>, samples: &Samples, idx: &[usize], reference: &[Vec<f32>]) -> Result<Score> {
    let out = logits(model, samples, idx)?;
    let (mut hit, mut cos) = (0usize, 0f64);
    for ((&i, l), r) in idx.iter().zip(&out).zip(reference) {
        let truth = samples.label(i).unwrap_or_else(|| top_k(r, 1)[0]);
        hit += usize::from(top_k(l, 1)[0] == truth);
        let mut sums = Sums::default();
        sums.add(l, r.iter().copied());
        cos += sums.cosine();
    }
    let n = idx.len().max(1) as f64;
    Ok(Score { top1: 100.0 * hit as f64 / n, cosine: cos / n })
}

/// The layers to keep in float so the held-out drop is at most `max_drop` points, and the log of the search.
pub fn choose_float_layers(
    float: &Model<'_>,
    qparams: &QParamMap,
    forced: &BTreeSet<String>,
    samples: &Samples,
    held_out: &[usize],
    max_drop: f64,
) -> Result<BTreeSet<String>> {
    let reference = logits(float, samples, held_out)?;
    let base = score(float, samples, held_out, &reference)?;
    let all_int8 = score(&lower_to_int8(float, qparams, forced)?, samples, held_out, &reference)?;
    eprintln!(
        "mixed precision: held-out {} samples, float top-1 {:.2}%, int8 {:.2}% (drop {:.2}, budget {max_drop})",
        held_out.len(),
        base.top1,
        all_int8.top1,
        base.top1 - all_int8.top1
    );
    let mut keep = forced.clone();
    if base.top1 - all_int8.top1 <= max_drop {
        return Ok(keep);
    }
    let layers: Vec<String> = float
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv { .. } | Op::Linear { .. }) && !forced.contains(&n.name))
        .map(|n| n.name.clone())
        .collect();
    let mut gains = vec![];
    for l in &layers {
        let mut k = forced.clone();
        k.insert(l.clone());
        let s = score(&lower_to_int8(float, qparams, &k)?, samples, held_out, &reference)?;
        eprintln!("  {l:<28} in float: top-1 {:.2}% cosine {:.6}", s.top1, s.cosine);
        gains.push((s.top1 - all_int8.top1, s.cosine, l.clone()));
    }
    gains.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
    for (_, _, l) in gains {
        keep.insert(l);
        let s = score(&lower_to_int8(float, qparams, &keep)?, samples, held_out, &reference)?;
        eprintln!("  keep {} layer(s) in float: top-1 {:.2}% (drop {:.2})", keep.len(), s.top1, base.top1 - s.top1);
        if base.top1 - s.top1 <= max_drop {
            break;
        }
    }
    Ok(keep)
}
