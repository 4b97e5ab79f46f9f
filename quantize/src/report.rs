//! Per-layer error of an int8 model against its float twin, measured on our own int8 kernels: both models
//! run on the same inputs and every value they share by name is compared after dequantization.

use crate::eval::top_k;
use crate::parallel::for_each_input;
use crate::samples::Samples;
use anyhow::{ensure, Result};
use resedge::graph::Model;
use resedge::plan::{PlanOptions, ValueRef};
use resedge::quant::internal_i8;
use resedge::Plan;
use serde::Serialize;
use std::collections::BTreeMap;

/// Error statistics of one layer over all samples.
#[derive(Clone, Debug, Serialize)]
pub struct LayerError {
    pub layer: String,
    pub op: String,
    pub int8: bool,
    pub cosine: f64,
    pub sqnr_db: f64,
    pub max_abs_err: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub layers: Vec<LayerError>,
    /// Percent of samples where both models' top-1 class agree.
    pub top1_agreement: f64,
    /// Cosine similarity of the logits, averaged over samples.
    pub logits_cosine: f64,
    pub samples: usize,
}

/// Running sums for the cosine, SQNR and max error of two series.
#[derive(Clone, Default)]
pub(crate) struct Sums {
    ab: f64,
    aa: f64,
    bb: f64,
    ee: f64,
    max: f64,
}

impl Sums {
    pub(crate) fn add(&mut self, a: &[f32], b: impl Iterator<Item = f32>) {
        for (&x, y) in a.iter().zip(b) {
            let (x, y) = (x as f64, y as f64);
            self.ab += x * y;
            self.aa += x * x;
            self.bb += y * y;
            self.ee += (x - y) * (x - y);
            self.max = self.max.max((x - y).abs());
        }
    }
    fn merge(&mut self, o: &Sums) {
        self.ab += o.ab;
        self.aa += o.aa;
        self.bb += o.bb;
        self.ee += o.ee;
        self.max = self.max.max(o.max);
    }
    pub(crate) fn cosine(&self) -> f64 {
        if self.aa == 0.0 && self.bb == 0.0 {
            1.0
        } else {
            self.ab / (self.aa.sqrt() * self.bb.sqrt()).max(f64::MIN_POSITIVE)
        }
    }
    fn sqnr_db(&self) -> f64 {
        10.0 * (self.aa / self.ee.max(f64::MIN_POSITIVE)).log10()
    }
}

/// Compares `int8` with `float` (both as stored: the float model should be the folded one the int8 model
/// was lowered from, so names match) on the samples in `idx`.
pub fn compare(float: &Model<'_>, int8: &Model<'_>, samples: &Samples, idx: &[usize]) -> Result<Report> {
    let opts = PlanOptions { optimize: false, ..Default::default() };
    let (fp, qp) = (Plan::new(float, &opts)?, Plan::new(int8, &opts)?);
    // Layers of the int8 model that have a float twin, in execution order.
    let fidx: BTreeMap<&str, usize> = fp.steps.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let pairs: Vec<(usize, usize)> =
        qp.steps.iter().enumerate().filter_map(|(qi, s)| fidx.get(s.name.as_str()).map(|&fi| (qi, fi))).collect();
    ensure!(
        !pairs.is_empty(),
        "the two models share no layer names: was the int8 model lowered from this float model?"
    );
    let n = pairs.len();
    // Step index → pair index, for each model. Values are compared while the models run: the arena
    // reuses a value's memory once it is dead.
    let (mut fk, mut qk) = (vec![None; fp.steps.len()], vec![None; qp.steps.len()]);
    for (k, &(qi, fi)) in pairs.iter().enumerate() {
        fk[fi] = Some(k);
        qk[qi] = Some(k);
    }
    let init = || (fp.executor(), qp.executor(), vec![vec![]; n], vec![Sums::default(); n], 0usize, 0f64);
    let parts = for_each_input(samples, idx, init, |(fe, qe, fbuf, sums, agree, cos), x| {
        fe.run_observed(x, &mut |i, v| {
            if let (Some(k), ValueRef::F32(v)) = (fk[i], v) {
                fbuf[k] = v.to_vec();
            }
        })?;
        qe.run_observed(x, &mut |i, v| {
            let Some(k) = qk[i] else { return };
            match v {
                ValueRef::F32(b) => sums[k].add(&fbuf[k], b.iter().copied()),
                ValueRef::I8(b, q) => {
                    let (zp, _, _) = internal_i8(&q);
                    sums[k].add(&fbuf[k], b.iter().map(|&v| (v as i32 - zp) as f32 * q.scale));
                }
            }
        })?;
        let (ValueRef::F32(f_out), ValueRef::F32(q_out)) = (fe.output_ref(), qe.output_ref()) else {
            anyhow::bail!("model outputs must be float (the int8 model ends in a Dequantize)");
        };
        let mut one = Sums::default();
        one.add(f_out, q_out.iter().copied());
        *cos += one.cosine();
        *agree += usize::from(top_k(f_out, 1) == top_k(q_out, 1));
        Ok(())
    })?;
    let mut total = vec![Sums::default(); n];
    let (mut agree, mut cos) = (0, 0.0);
    for (_, _, _, sums, a, c) in &parts {
        total.iter_mut().zip(sums).for_each(|(t, s)| t.merge(s));
        agree += a;
        cos += c;
    }
    let layers = pairs
        .iter()
        .zip(&total)
        .map(|(&(qi, _), s)| {
            let step = &qp.steps[qi];
            LayerError {
                layer: step.name.clone(),
                op: int8.graph.nodes.iter().find(|n| n.name == step.name).map_or("?", |n| n.op.name()).to_string(),
                int8: int8.graph.nodes.iter().any(|n| n.name == step.name && n.output_q.is_some()),
                cosine: s.cosine(),
                sqnr_db: s.sqnr_db(),
                max_abs_err: s.max,
            }
        })
        .collect();
    let m = idx.len().max(1) as f64;
    Ok(Report { layers, top1_agreement: 100.0 * agree as f64 / m, logits_cosine: cos / m, samples: idx.len() })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<28} {:<14} {:>5} {:>10} {:>9} {:>11}",
            "layer", "op", "int8", "cosine", "SQNR dB", "max |err|"
        )?;
        for l in &self.layers {
            let q = if l.int8 { "yes" } else { "f32" };
            writeln!(
                f,
                "{:<28} {:<14} {:>5} {:>10.6} {:>9.2} {:>11.4}",
                l.layer, l.op, q, l.cosine, l.sqnr_db, l.max_abs_err
            )?;
        }
        write!(
            f,
            "model: top-1 agreement {:.2}% over {} samples, mean logits cosine {:.6}",
            self.top1_agreement, self.samples, self.logits_cosine
        )
    }
}
