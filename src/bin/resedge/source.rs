//! Where a command's model comes from: a model file, or a zoo architecture with seeded random weights.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use resedge::quant::ActivationScheme;
use resedge::Model;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    F32,
    Int8,
}

/// `MODEL | --arch NAME [--precision f32|int8] [--seed N]`.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Model file (.rsm). Give this or --arch.
    #[arg(required_unless_present = "arch", conflicts_with = "arch")]
    pub model: Option<PathBuf>,
    /// A zoo architecture (see `resedge zoo`), built with seeded random weights.
    #[arg(long)]
    pub arch: Option<String>,
    /// Precision of a zoo architecture (int8: folded, min/max-calibrated on random inputs, quantized).
    /// For a model file it must match the file.
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// Seed of the random weights of a zoo architecture.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl ModelArgs {
    /// Loads the model (zero copy from an mmap for files) and hands it to `f`.
    pub fn with_model<T>(&self, f: impl FnOnce(&Model<'_>) -> Result<T>) -> Result<T> {
        if let Some(path) = &self.model {
            if path.extension().is_some_and(|e| e == "onnx") {
                bail!(
                    "{} is an ONNX file: convert it with `resedge-quantize import` first, or benchmark the same \
                     architecture with --arch NAME",
                    path.display()
                );
            }
            let file = resedge::format::ModelFile::open(path).with_context(|| format!("opening {}", path.display()))?;
            let model = file.model().with_context(|| format!("loading {}", path.display()))?;
            let is_int8 = model.graph.is_quantized();
            match (self.precision, is_int8) {
                (Some(Precision::Int8), false) => {
                    bail!("{} is an f32 model; quantize it with resedge-quantize", path.display())
                }
                (Some(Precision::F32), true) => bail!("{} is an int8 model", path.display()),
                _ => {}
            }
            return f(&model);
        }
        let name = self.arch.as_deref().context("give a model file or --arch NAME")?;
        let arch = resedge::zoo::arch(name)?;
        let model = match self.precision.unwrap_or(Precision::F32) {
            Precision::F32 => resedge::zoo::build(&arch, self.seed)?,
            Precision::Int8 => resedge::zoo::build_int8(&arch, self.seed, ActivationScheme::AsymmetricI8)?,
        };
        f(&model)
    }

    /// "file" or "zoo, random weights, seed N".
    pub fn describe(&self, model: &Model<'_>) -> String {
        let precision = if model.graph.is_quantized() { "int8" } else { "f32" };
        match &self.model {
            Some(p) => format!("{precision}, {}", p.display()),
            None => format!("{precision}, zoo architecture with random weights, seed {}", self.seed),
        }
    }
}
