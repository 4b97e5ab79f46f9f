//! Preprocessing and labels recorded in a model file: from flags, else guessed from the input size.

use anyhow::{ensure, Context, Result};
use resedge::graph::{Model, Preprocess};
use std::path::PathBuf;

/// Flags that set the metadata of a written model.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MetaArgs {
    /// Preprocessing: `cifar10`, `imagenet`, or `none`; default: by input size (32x32 CIFAR, else ImageNet).
    #[arg(long)]
    pub preprocess: Option<String>,
    /// Per-channel mean (three values, comma-separated), overriding the preset.
    #[arg(long, value_delimiter = ',', num_args = 3)]
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation (three values), overriding the preset.
    #[arg(long, value_delimiter = ',', num_args = 3)]
    pub std: Option<Vec<f32>>,
    /// Class names, one per line.
    #[arg(long)]
    pub labels: Option<PathBuf>,
}

impl MetaArgs {
    /// Sets `model.preprocess` and `model.labels` (keeping what the model has when no flag is given).
    pub fn apply(&self, model: &mut Model<'_>) -> Result<()> {
        let [_, h, w] = <[usize; 3]>::try_from(model.graph.input.shape.as_slice()).context("input must be [C, H, W]")?;
        let preset = match self.preprocess.as_deref() {
            Some("cifar10") => Some(Preprocess::cifar10()),
            Some("imagenet") => Some(Preprocess { resize: h * 256 / 224, crop: [h, w], ..Preprocess::imagenet() }),
            Some("none") => None,
            Some(other) => anyhow::bail!("unknown --preprocess `{other}` (cifar10, imagenet, none)"),
            None if model.preprocess.is_some() => model.preprocess.clone(),
            None if (h, w) == (32, 32) => Some(Preprocess::cifar10()),
            None => Some(Preprocess { resize: h * 256 / 224, crop: [h, w], ..Preprocess::imagenet() }),
        };
        model.preprocess = preset.map(|mut p| {
            if let Some(m) = &self.mean {
                p.mean = [m[0], m[1], m[2]];
            }
            if let Some(s) = &self.std {
                p.std = [s[0], s[1], s[2]];
            }
            p
        });
        if let Some(p) = &model.preprocess {
            ensure!(p.std.iter().all(|&s| s > 0.0), "--std values must be positive");
        }
        if let Some(path) = &self.labels {
            model.labels = resedge_data::read_labels(path)?;
        }
        Ok(())
    }
}
