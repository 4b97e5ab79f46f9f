//! The classification step shared by `classify` and `camera`: decoded image -> preprocessed input ->
//! inference -> softmax -> top-k, with the time of each stage.

use crate::backend::{BackendArgs, Runner};
use anyhow::{bail, Context, Result};
use image::DynamicImage;
use resedge::graph::Op;
use resedge::plan::Plan;
use resedge::preprocess::Preprocessor;
use resedge::Model;
use std::time::{Duration, Instant};

/// One class of a prediction: output index, probability, label ("class N" without labels).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Class {
    pub index: usize,
    pub prob: f32,
    pub label: String,
}

/// A prediction and what its stages cost.
pub struct Prediction {
    pub top: Vec<Class>,
    pub preprocess: Duration,
    pub inference: Duration,
}

/// Plans `model` for batch 1 on `backend` and hands a [`Classifier`] over it to `f`. `path` is the model
/// file (it locates the default `.rknn` for the NPU).
pub fn with_classifier<T>(
    model: &Model<'_>,
    backend: &BackendArgs,
    path: &std::path::Path,
    f: impl FnOnce(&mut Classifier<'_, '_>) -> Result<T>,
) -> Result<T> {
    let spec = model.preprocess.as_ref().with_context(|| {
        format!("model {} has no preprocessing metadata (resize, crop, mean, std); image commands need it", model.name)
    })?;
    let pre = Preprocessor::new(spec, &model.graph.input.shape).with_context(|| format!("model {}", model.name))?;
    let plan = Plan::new(model, &backend.plan_options(1, 1))?;
    let classes = plan.output_value().numel();
    if !model.labels.is_empty() && model.labels.len() != classes {
        bail!("model {} has {} labels for {classes} outputs", model.name, model.labels.len());
    }
    let mut clf = Classifier {
        input: vec![0.0; pre.output_len()],
        pre,
        exec: Runner::new(&plan, backend, Some(path))?,
        labels: &model.labels,
        // A model that ends in Softmax already returns probabilities.
        outputs_probabilities: model.graph.nodes.last().is_some_and(|n| matches!(n.op, Op::Softmax)),
    };
    f(&mut clf)
}

pub struct Classifier<'p, 'a> {
    pre: Preprocessor,
    exec: Runner<'p, 'a>,
    input: Vec<f32>,
    labels: &'p [String],
    outputs_probabilities: bool,
}

impl Classifier<'_, '_> {
    /// Preprocesses `img`, runs the model and returns the `k` most probable classes.
    pub fn classify(&mut self, img: &DynamicImage, k: usize) -> Result<Prediction> {
        let t0 = Instant::now();
        self.pre.run(img, &mut self.input)?;
        let t1 = Instant::now();
        let logits = self.exec.run(&self.input)?;
        let t2 = Instant::now();
        let probs = if self.outputs_probabilities { logits.to_vec() } else { softmax(logits) };
        let top = top_k(&probs, k)
            .into_iter()
            .map(|i| Class {
                index: i,
                prob: probs[i],
                label: self.labels.get(i).cloned().unwrap_or_else(|| format!("class {i}")),
            })
            .collect();
        Ok(Prediction { top, preprocess: t1 - t0, inference: t2 - t1 })
    }
}

/// Numerically stable softmax (max subtracted first).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// Indices of the `k` largest values, largest first; ties keep the lower index first. NaN sorts last.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| {
        let (x, y) = (values[a], values[b]);
        y.partial_cmp(&x).unwrap_or_else(|| x.is_nan().cmp(&y.is_nan())).then(a.cmp(&b))
    });
    idx.truncate(k);
    idx
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_the_definition_and_survives_large_logits() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        let e = [1f64.exp(), 2f64.exp(), 3f64.exp()];
        let s: f64 = e.iter().sum();
        for (got, want) in p.iter().zip(e.iter().map(|v| v / s)) {
            assert!((f64::from(*got) - want).abs() < 1e-6);
        }
        let p = softmax(&[1000.0, 1000.0]);
        assert_eq!(p, [0.5, 0.5]);
    }

    #[test]
    fn top_k_orders_by_value_then_index() {
        assert_eq!(top_k(&[0.1, 0.5, 0.2, 0.5], 3), [1, 3, 2]);
        assert_eq!(top_k(&[0.1, f32::NAN, 0.2], 3), [2, 0, 1]);
        assert_eq!(top_k(&[1.0], 5), [0]);
    }
}
