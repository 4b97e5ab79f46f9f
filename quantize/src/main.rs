//! `resedge-quantize`: the offline tool that writes ResEdge model files. Today: zoo architectures with
//! seeded random weights in f32, f16 storage or int8 (min/max calibrated on random inputs). ONNX import
//! and data calibration build on the same writer.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use resedge::graph::Model;
use resedge::plan::passes;
use resedge::quant::ActivationScheme;
use resedge::tensor::{DType, Tensor};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "resedge-quantize", version, about = "Build, fold and quantize ResEdge model files")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Storage {
    /// f32 weights, batchnorm kept as trained.
    F32,
    /// f32 weights with batchnorm folded and activations fused.
    F32Folded,
    /// Folded, weights stored as f16 (half the size; computed in f32).
    F16,
    /// Folded and quantized to int8 (asymmetric int8 activations).
    Int8,
    /// Folded and quantized with uint8 activations (ONNX Runtime's U8S8 layout).
    Uint8,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a zoo architecture (see `resedge zoo`) with seeded random weights.
    Zoo {
        /// Architecture name, e.g. resnet20 or resnet18.
        name: String,
        #[arg(long, value_enum, default_value_t = Storage::F32)]
        precision: Storage,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// Stores every f32 tensor of `model` as f16.
fn to_f16(model: Model<'static>) -> Result<Model<'static>> {
    let mut m = model;
    for (name, t) in m.tensors.iter_mut() {
        if t.dtype == DType::F32 {
            *t = Tensor::from_f16(t.shape.clone(), &t.to_f32(name)?);
        }
    }
    Ok(m)
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match Cli::parse().cmd {
        Cmd::Zoo { name, precision, seed, output } => {
            let arch = resedge::zoo::arch(&name)?;
            let model = match precision {
                Storage::F32 => resedge::zoo::build(&arch, seed)?,
                Storage::F32Folded => passes::optimize(&resedge::zoo::build(&arch, seed)?)?,
                Storage::F16 => to_f16(passes::optimize(&resedge::zoo::build(&arch, seed)?)?)?,
                Storage::Int8 => resedge::zoo::build_int8(&arch, seed, ActivationScheme::AsymmetricI8)?,
                Storage::Uint8 => resedge::zoo::build_int8(&arch, seed, ActivationScheme::AsymmetricU8)?,
            };
            let bytes = resedge::format::save(&model)?;
            std::fs::write(&output, &bytes).with_context(|| format!("writing {}", output.display()))?;
            eprintln!("wrote {} ({} bytes, {:?}, seed {seed})", output.display(), bytes.len(), precision);
        }
    }
    Ok(())
}
