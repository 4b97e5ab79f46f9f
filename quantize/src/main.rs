//! `resedge-quantize`: the offline tool that writes ResEdge model files: ONNX import, zoo nets, data
//! calibration to int8, reports, evaluation and QDQ export. A thin CLI over the library modules.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use resedge::graph::Model;
use resedge::plan::passes;
use resedge::quant::{lower_to_int8, qparams_from_ranges, ActivationScheme};
use resedge::tensor::{DType, Tensor};
use resedge_quantize::calib::{calibrate, Method};
use resedge_quantize::samples::Samples;
use std::collections::BTreeSet;
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
    /// Import a `resedge-train` checkpoint (run directory or .safetensors): fold batchnorm, fuse.
    ImportCheckpoint {
        checkpoint: PathBuf,
        /// Architecture (default: from checkpoint.json).
        #[arg(long)]
        arch: Option<String>,
        #[command(flatten)]
        meta: resedge_quantize::meta::MetaArgs,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Calibrate a float model (.rsm or .onnx) on data and write it in int8.
    Quantize {
        model: PathBuf,
        /// Calibration data (see `eval --help` for the forms).
        #[arg(long)]
        calib: String,
        #[arg(long, value_enum, default_value_t = Method::Entropy)]
        method: Method,
        /// Percentile of |x| kept by `--method percentile`.
        #[arg(long, default_value_t = 99.99)]
        percentile: f64,
        #[arg(long, value_enum, default_value_t = Activations::Uint8)]
        activations: Activations,
        /// Calibration samples, spread evenly over the data.
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// Layers to keep in float (comma-separated node names, see `resedge inspect`).
        #[arg(long, value_delimiter = ',')]
        keep_float: Vec<String>,
        /// Keep the fewest layers in float that bring the held-out top-1 drop to at most this many points.
        #[arg(long)]
        max_drop: Option<f64>,
        /// Correct each layer's bias for the mean shift that quantizing its weights and input introduces.
        #[arg(long)]
        bias_correction: bool,
        /// Held-out share of the calibration samples for `--max-drop` (one in K).
        #[arg(long, default_value_t = 5)]
        holdout_every: usize,
        #[command(flatten)]
        meta: resedge_quantize::meta::MetaArgs,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Write a model as ONNX: plain for float models, standard QDQ for int8 models.
    ExportOnnx {
        model: PathBuf,
        /// Store int8 weights as their exact f32 values (activations stay QDQ), for engines whose
        /// DequantizeLinear is per-tensor only (tract 0.22).
        #[arg(long)]
        float_weights: bool,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Top-1 / top-5 / per-class accuracy and images/s of a model on labeled data.
    Eval {
        model: PathBuf,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Per-layer error (cosine, SQNR, max |err|) of an int8 model against its float model.
    Report {
        float_model: PathBuf,
        int8_model: PathBuf,
        #[command(flatten)]
        data: DataArgs,
    },
}

/// Activation storage of the quantized model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Activations {
    /// int8, symmetric (zero point 0).
    Int8,
    /// int8 with a zero point (full range for ReLU outputs).
    Int8Asym,
    /// uint8 with a zero point (ONNX Runtime's U8S8).
    Uint8,
}

#[derive(clap::Args)]
struct DataArgs {
    /// Image folder (class subfolders or flat), .tar/.tar.gz of one, CIFAR-10 .bin (comma-separated), or
    /// .npy batches [N, C, H, W] (a file or a folder).
    #[arg(long)]
    data: String,
    /// Use this many samples, spread evenly over the set.
    #[arg(long)]
    samples: Option<usize>,
    /// Print one JSON object as the last stdout line.
    #[arg(long)]
    json: bool,
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
        Cmd::ImportCheckpoint { checkpoint, arch, meta, output } => {
            let mut m = passes::optimize(&resedge_quantize::import_checkpoint(&checkpoint, arch.as_deref())?)?;
            meta.apply(&mut m)?;
            let n = write(&m, &output)?;
            eprintln!("wrote {} ({n} bytes, f32, {} nodes)", output.display(), m.graph.nodes.len());
        }
        Cmd::Quantize {
            model,
            calib,
            method,
            percentile,
            activations,
            samples,
            keep_float,
            max_drop,
            bias_correction,
            holdout_every,
            meta,
            output,
        } => {
            let mut float = resedge_quantize::load_model(&model)?;
            anyhow::ensure!(!float.graph.is_quantized(), "{} is already quantized", model.display());
            meta.apply(&mut float)?;
            let float = passes::optimize(&float)?;
            let data = Samples::load(&calib, &float, Some(samples))?;
            let all: Vec<usize> = (0..data.len()).collect();
            let (calib_idx, held_out) = match max_drop {
                Some(_) => data.split(holdout_every),
                None => (all, vec![]),
            };
            eprintln!("calibrating on {} samples ({method:?})", calib_idx.len());
            let ranges = calibrate(&float, &data, &calib_idx, method, percentile)?;
            let scheme = match activations {
                Activations::Int8 => ActivationScheme::SymmetricI8,
                Activations::Int8Asym => ActivationScheme::AsymmetricI8,
                Activations::Uint8 => ActivationScheme::AsymmetricU8,
            };
            let qparams = qparams_from_ranges(&ranges, scheme);
            let known: BTreeSet<&str> = float.graph.nodes.iter().map(|n| n.name.as_str()).collect();
            if let Some(bad) = keep_float.iter().find(|l| !known.contains(l.as_str())) {
                anyhow::bail!("--keep-float: no layer `{bad}` (see `resedge inspect {}`)", model.display());
            }
            let mut keep: BTreeSet<String> = keep_float.into_iter().collect();
            if let Some(budget) = max_drop {
                keep = resedge_quantize::mixed::choose_float_layers(&float, &qparams, &keep, &data, &held_out, budget)?;
            }
            // After the search, which measured uncorrected layers: layers kept in float keep their bias.
            let float = if bias_correction {
                resedge_quantize::bias::correct_biases(&float, &qparams, &keep, &data, &calib_idx)?
            } else {
                float
            };
            let int8 = lower_to_int8(&float, &qparams, &keep)?;
            let n = write(&int8, &output)?;
            let kept =
                if keep.is_empty() { "none".to_string() } else { keep.into_iter().collect::<Vec<_>>().join(", ") };
            eprintln!(
                "wrote {} ({n} bytes, {activations:?} activations); layers kept in float: {kept}",
                output.display()
            );
        }
        Cmd::ExportOnnx { model, float_weights, output } => {
            let m = resedge_quantize::load_model(&model)?;
            let bytes = resedge_quantize::onnx::export(&m, resedge_quantize::onnx::ExportOptions { float_weights })?;
            std::fs::write(&output, &bytes).with_context(|| format!("writing {}", output.display()))?;
            let kind = if m.graph.is_quantized() { "QDQ int8" } else { "float" };
            eprintln!("wrote {} ({} bytes, {kind} ONNX, opset 17)", output.display(), bytes.len());
        }
        Cmd::Eval { model, data } => {
            let m = resedge_quantize::load_model(&model)?;
            let samples = Samples::load(&data.data, &m, data.samples)?;
            let idx: Vec<usize> = (0..samples.len()).collect();
            let acc = resedge_quantize::eval::accuracy(&m, &samples, &idx)?;
            println!("{:<14} {:>9} {:>7}", "class", "top-1 %", "images");
            for (c, ok, n) in &acc.per_class {
                println!("{c:<14} {:>9.2} {n:>7}", 100.0 * *ok as f64 / (*n).max(1) as f64);
            }
            println!(
                "{}: top-1 {:.2}%  top-5 {:.2}%  ({} images, {:.1} images/s)",
                model.display(),
                acc.top1,
                acc.top5,
                acc.images,
                acc.images_per_s
            );
            if data.json {
                println!("{}", serde_json::to_string(&acc)?);
            }
        }
        Cmd::Report { float_model, int8_model, data } => {
            let f = passes::optimize(&resedge_quantize::load_model(&float_model)?)?;
            let q = resedge_quantize::load_model(&int8_model)?;
            let samples = Samples::load(&data.data, &f, data.samples)?;
            let idx: Vec<usize> = (0..samples.len()).collect();
            let report = resedge_quantize::report::compare(&f, &q, &samples, &idx)?;
            println!("{report}");
            if data.json {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
    }
    Ok(())
}
