//! Accuracy measured by the ResEdge runtime itself (its planner and kernels), never by libtorch: what a
//! shipped model file scores is what the runtime computes from it.

use crate::data::Dataset;
use anyhow::{ensure, Context, Result};
use resedge::graph::Model;
use resedge::plan::{Plan, PlanOptions};

/// The runtime's graph input for `ds[start..start + n]`: (pixel / 255 - mean) / std, center-cropped.
pub fn runtime_input(model: &Model<'_>, ds: &Dataset, start: usize, n: usize) -> Result<Vec<f32>> {
    let p = model.preprocess.as_ref().context("the model file has no preprocessing (mean / std)")?;
    let [c, h, w] = ds.shape;
    let [ch, cw] = p.crop;
    ensure!(c == 3 && h >= ch && w >= cw, "images {:?} cannot be cropped to {:?}", ds.shape, p.crop);
    let (oy, ox) = ((h - ch) / 2, (w - cw) / 2);
    let mut out = Vec::with_capacity(n * 3 * ch * cw);
    for i in start..start + n {
        let img = &ds.images[i * c * h * w..(i + 1) * c * h * w];
        for k in 0..3 {
            for y in 0..ch {
                for x in 0..cw {
                    let v = img[k * h * w + (y + oy) * w + x + ox] as f32 / 255.0;
                    out.push((v - p.mean[k]) / p.std[k]);
                }
            }
        }
    }
    Ok(out)
}

/// Top-1 accuracy of `model` on `ds`, computed by the runtime in batches of `batch`, the images split
/// over `threads` threads (one plan and executor each).
pub fn top1(model: &Model<'_>, ds: &Dataset, batch: usize, threads: usize) -> Result<f64> {
    ensure!(!ds.is_empty() && batch > 0, "empty dataset or zero batch");
    let threads = threads.clamp(1, ds.len());
    let chunk = ds.len().div_ceil(threads);
    let counts: Vec<Result<usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let range = t * chunk..((t + 1) * chunk).min(ds.len());
                s.spawn(move || correct_in(model, ds, range, batch))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("evaluation thread panicked"))))
            .collect()
    });
    let mut correct = 0;
    for c in counts {
        correct += c?;
    }
    Ok(correct as f64 / ds.len() as f64)
}

/// Correct top-1 predictions over `range` of `ds`.
fn correct_in(model: &Model<'_>, ds: &Dataset, range: std::ops::Range<usize>, batch: usize) -> Result<usize> {
    let mut correct = 0usize;
    let mut start = range.start;
    while start < range.end {
        let n = batch.min(range.end - start);
        let plan = Plan::new(model, &PlanOptions { batch: n, ..Default::default() })
            .with_context(|| format!("planning {} for batch {n}", model.name))?;
        let mut exec = plan.executor();
        while start + n <= range.end {
            let input = runtime_input(model, ds, start, n)?;
            let logits = exec.run(&input).with_context(|| format!("running {}", model.name))?;
            let classes = logits.len() / n;
            for (j, row) in logits.chunks_exact(classes).enumerate() {
                let pred = row.iter().enumerate().fold(0, |best, (k, &v)| if v > row[best] { k } else { best });
                correct += (pred as i64 == ds.labels[start + j]) as usize;
            }
            start += n;
        }
    }
    Ok(correct)
}
