//! `resedge-quantize`: the offline tool that writes ResEdge model files: ONNX import, zoo nets, data
//! calibration to int8, reports, evaluation and QDQ export. A thin CLI over the library modules.

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
    /// Import an ONNX file (float or QDQ int8): fold batchnorm, fuse ReLU and residual adds.
    Import {
        model: PathBuf,
        /// Keep batchnorm and activations as separate nodes (for checking the folding).
        #[arg(long)]
        no_fold: bool,
        #[command(flatten)]
        meta: resedge_quantize::meta::MetaArgs,
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn write(model: &Model<'_>, output: &std::path::Path) -> Result<usize> {
    let bytes = resedge::format::save(model)?;
    std::fs::write(output, &bytes).with_context(|| format!("writing {}", output.display()))?;
    Ok(bytes.len())
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
            let n = write(&model, &output)?;
            eprintln!("wrote {} ({n} bytes, {:?}, seed {seed})", output.display(), precision);
        }
        Cmd::Import { model, no_fold, meta, output } => {
            let m = resedge_quantize::import_onnx(&model, !no_fold, &meta)?;
            let n = write(&m, &output)?;
            let kind = if m.graph.is_quantized() { "int8 (QDQ)" } else { "f32" };
            eprintln!("wrote {} ({n} bytes, {kind}, {} nodes)", output.display(), m.graph.nodes.len());
        }
    }
    Ok(())
}
