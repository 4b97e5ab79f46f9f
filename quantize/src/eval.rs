//! Accuracy of a model on labeled samples (top-1, top-5, per class) and its raw predictions.

use crate::parallel::for_each_input;
use crate::samples::Samples;
use anyhow::{ensure, Result};
use resedge::graph::Model;
use resedge::Plan;
use serde::Serialize;
use std::time::Instant;

/// Evaluation result; accuracies in percent.
#[derive(Clone, Debug, Serialize)]
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
    pub images: usize,
    pub images_per_s: f64,
    /// (class, correct top-1, total).
    pub per_class: Vec<(String, usize, usize)>,
}

/// Indices of the `k` largest logits, largest first (ties: lower index first).
pub fn top_k(logits: &[f32], k: usize) -> Vec<usize> {
    let mut i: Vec<usize> = (0..logits.len()).collect();
    i.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    i.truncate(k);
    i
}

/// Logits of every sample in `idx`, in that order.
pub fn logits(model: &Model<'_>, samples: &Samples, idx: &[usize]) -> Result<Vec<Vec<f32>>> {
    let plan = Plan::new(model, &Default::default())?;
    let parts = for_each_input(
        samples,
        idx,
        || (plan.executor(), vec![]),
        |(exec, out), x| {
            out.push(exec.run(x)?.to_vec());
            Ok(())
        },
    )?;
    Ok(parts.into_iter().flat_map(|(_, v)| v).collect())
}

/// Top-1 / top-5 accuracy over the labeled samples in `idx`.
pub fn accuracy(model: &Model<'_>, samples: &Samples, idx: &[usize]) -> Result<Accuracy> {
    ensure!(
        idx.iter().all(|&i| samples.label(i).is_some()),
        "accuracy needs labeled data (class folders or CIFAR .bin)"
    );
    let t = Instant::now();
    let all = logits(model, samples, idx)?;
    let secs = t.elapsed().as_secs_f64();
    let classes = samples.classes();
    let mut per_class: Vec<(String, usize, usize)> = classes.iter().map(|c| (c.clone(), 0, 0)).collect();
    let (mut c1, mut c5) = (0, 0);
    for (&i, l) in idx.iter().zip(&all) {
        let label = samples.label(i).expect("checked");
        let top = top_k(l, 5);
        c1 += usize::from(top[0] == label);
        c5 += usize::from(top.contains(&label));
        if let Some(pc) = per_class.get_mut(label) {
            pc.1 += usize::from(top[0] == label);
            pc.2 += 1;
        }
    }
    let n = idx.len().max(1) as f64;
    Ok(Accuracy {
        top1: 100.0 * c1 as f64 / n,
        top5: 100.0 * c5 as f64 / n,
        images: idx.len(),
        images_per_s: idx.len() as f64 / secs.max(1e-9),
        per_class,
    })
}
