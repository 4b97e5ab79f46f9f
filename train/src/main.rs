//! `resedge-train`: train a zoo net and export a ResEdge model file; evaluate model files with the runtime;
//! plot metrics; export ONNX. See train/README.md.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use resedge::zoo::{Block, Family};
use resedge_train::augment::Augment;
use resedge_train::metrics;
use resedge_train::optim::Schedule;
use resedge_train::train::{self, Config};
use resedge_train::{data, device, eval, onnx, plot};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "resedge-train",
    version,
    about = "Train the paper's ResNets with libtorch and export ResEdge model files"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a zoo architecture; writes metrics.csv, curve.png, checkpoints and <name>.rsm into --out.
    Train(Box<TrainArgs>),
    /// Top-1 accuracy of a model file on a dataset, computed by the ResEdge runtime.
    Eval {
        /// Model file (.rsm).
        model: PathBuf,
        /// CIFAR .bin file(s) (comma-separated) or an image folder / .tar.gz.
        #[arg(long)]
        data: String,
        /// Only N images spread evenly over the set.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Threads, each running its own plan on a share of the images (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Draw metrics CSVs on one chart (the paper's Fig. 6 style): CSV or CSV=LABEL, one per run.
    Plot {
        #[arg(required = true)]
        runs: Vec<String>,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value = "CIFAR-10")]
        title: String,
    },
    /// Write the ONNX form (opset 13) of an f32 model file.
    Onnx {
        model: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Args)]
struct TrainArgs {
    /// Zoo architecture (`resedge zoo` lists them): resnet20, plain20, resnet20-b, resnet18, ...
    #[arg(long, default_value = "resnet20")]
    arch: String,
    /// Training data: CIFAR .bin file(s), comma-separated, or an image folder / .tar / .tar.gz.
    #[arg(long)]
    train: String,
    /// Test data, same forms; evaluated after each epoch.
    #[arg(long)]
    test: Option<String>,
    /// Class names, one per line, in label order (default: batches.meta.txt beside .bin files, else
    /// the sorted folder names).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Resize image-folder images (shorter side, then center square) to this side when decoding.
    #[arg(long)]
    image_size: Option<usize>,
    /// Network input side (default: 32 for CIFAR nets, 224 for ImageNet nets).
    #[arg(long)]
    crop: Option<usize>,
    /// Output folder.
    #[arg(short, long)]
    out: PathBuf,
    /// Model name in the exported file (default: the architecture's).
    #[arg(long)]
    name: Option<String>,
    /// Epochs (paper: 64k iterations at batch 128 = 164 epochs on CIFAR-10).
    #[arg(long, default_value_t = 164)]
    epochs: usize,
    /// Epochs at which the learning rate is divided by 10 (default: 50% and 75% of --epochs).
    #[arg(long, value_delimiter = ',')]
    milestones: Option<Vec<usize>>,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// Iterations at --warmup-lr first (default: 400 for nets of 110 layers or more, as the paper, else 0).
    #[arg(long)]
    warmup_iters: Option<usize>,
    #[arg(long, default_value_t = 0.01)]
    warmup_lr: f64,
    /// Seeds initialization, data order and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Augmentation (default: pad-crop-flip for CIFAR nets, resized-crop-flip for ImageNet nets).
    #[arg(long, value_enum)]
    augment: Option<Augment>,
    #[arg(long, value_enum, default_value = "auto")]
    device: device::Choice,
    /// CPU threads for libtorch (default: libtorch's choice).
    #[arg(long)]
    threads: Option<i32>,
    /// Also let matmuls use TF32 on CUDA (libtorch already allows TF32 in cuDNN convolutions).
    #[arg(long)]
    tf32: bool,
    /// bfloat16 convolutions with f32 master weights.
    #[arg(long)]
    bf16: bool,
    /// Channels-last (NHWC) activations and weights.
    #[arg(long)]
    channels_last: bool,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 1)]
    eval_every: usize,
    /// Train on N images spread evenly over the set (smoke tests).
    #[arg(long)]
    limit: Option<usize>,
    /// Decoded image-folder cache (default: $XDG_CACHE_HOME/resedge/data).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    #[arg(long)]
    no_progress: bool,
    /// Also write <name>.onnx.
    #[arg(long)]
    onnx: bool,
    /// After training, measure test top-1 with the ResEdge runtime on the exported file.
    #[arg(long)]
    runtime_eval: bool,
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("resedge").join("data"))
}

fn load_data(src: &str, a: &TrainArgs, labels: Option<Vec<String>>, limit: Option<usize>) -> Result<data::Dataset> {
    let cache = a.cache_dir.clone().or_else(default_cache_dir);
    data::load(src, labels, a.image_size, limit, cache.as_deref()).with_context(|| format!("loading {src}"))
}

fn run_train(a: &TrainArgs) -> Result<()> {
    if a.tf32 {
        // Read by libtorch when it creates cuBLAS handles, so it must be set before CUDA starts.
        std::env::set_var("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "1");
    }
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let dev = device::select(a.device)?;
    let mut arch = resedge::zoo::arch(&a.arch)?;
    let labels = a.labels.as_deref().map(data::read_labels).transpose()?;
    let train_ds = load_data(&a.train, a, labels.clone(), a.limit)?;
    if train_ds.classes.len() != arch.classes {
        eprintln!(
            "{}: classifier resized from {} to {} classes for this data",
            arch.name,
            arch.classes,
            train_ds.classes.len()
        );
        arch.classes = train_ds.classes.len();
    }
    let test_ds = a.test.as_deref().map(|t| load_data(t, a, Some(train_ds.classes.clone()), None)).transpose()?;
    let depth = match arch.block {
        Block::Basic => 2 * arch.layers.iter().sum::<usize>() + 2,
        Block::Bottleneck => 3 * arch.layers.iter().sum::<usize>() + 2,
    };
    let cifar = arch.family == Family::Cifar;
    let cfg = Config {
        name: a.name.clone().unwrap_or_else(|| arch.name.clone()),
        out: a.out.clone(),
        device: dev,
        epochs: a.epochs,
        batch: a.batch,
        schedule: Schedule {
            lr: a.lr,
            milestones: a.milestones.clone().unwrap_or_else(|| vec![a.epochs / 2, a.epochs * 3 / 4]),
            warmup_lr: a.warmup_lr,
            warmup_iters: a.warmup_iters.unwrap_or(if depth >= 110 { 400 } else { 0 }),
        },
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        seed: a.seed,
        augment: a.augment.unwrap_or(if cifar { Augment::PadCropFlip } else { Augment::ResizedCropFlip }),
        crop: a.crop.unwrap_or(arch.input()[1]),
        channels_last: a.channels_last,
        bf16: a.bf16,
        resume: a.resume,
        eval_every: a.eval_every,
        progress: !a.no_progress,
        onnx: a.onnx,
        arch,
    };
    let t = std::time::Instant::now();
    let summary = train::fit(&cfg, &train_ds, test_ds.as_ref())?;
    let last = summary.rows.last();
    println!(
        "done: {} epochs, training {:.1} s in this process ({:.1} s wall), final test error {}, model {}",
        last.map_or(0, |r| r.epoch),
        summary.train_s,
        t.elapsed().as_secs_f64(),
        last.map_or("n/a".into(), |r| format!("{:.2}%", 100.0 * r.test_err)),
        summary.model_path.display()
    );
    if a.runtime_eval {
        if let Some(test) = &test_ds {
            let bytes = std::fs::read(&summary.model_path)?;
            let model = resedge::format::load(&bytes)?;
            let top1 = eval::top1(&model, test, 100, threads_available())?;
            println!("runtime top-1 on {} test images: {:.2}%", test.len(), 100.0 * top1);
        }
    }
    Ok(())
}

fn threads_available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn run_eval(model_path: &Path, src: &str, limit: Option<usize>, batch: usize, threads: Option<usize>) -> Result<()> {
    let file =
        resedge::format::ModelFile::open(model_path).with_context(|| format!("opening {}", model_path.display()))?;
    let model = file.model().with_context(|| format!("loading {}", model_path.display()))?;
    let labels = (!model.labels.is_empty()).then(|| model.labels.clone());
    let ds = data::load(src, labels, None, limit, default_cache_dir().as_deref())?;
    let t = std::time::Instant::now();
    let top1 = eval::top1(&model, &ds, batch, threads.unwrap_or_else(threads_available))?;
    println!(
        "{}: top-1 {:.2}% on {} images of {src} (ResEdge runtime, {:.1} s)",
        model_path.display(),
        100.0 * top1,
        ds.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_plot(runs: &[String], output: &Path, title: &str) -> Result<()> {
    let mut curves = Vec::new();
    for r in runs {
        let (path, label) = match r.split_once('=') {
            Some((p, l)) => (PathBuf::from(p), l.to_string()),
            None => {
                let p = PathBuf::from(r);
                let label =
                    p.parent().and_then(|d| d.file_name()).map_or(r.clone(), |n| n.to_string_lossy().into_owned());
                (p, label)
            }
        };
        curves.push(plot::Curve { label, rows: metrics::read(&path)? });
    }
    plot::draw(output, title, &curves, (900, 560))?;
    println!("wrote {}", output.display());
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Train(a) => run_train(&a),
        Cmd::Eval { model, data, limit, batch, threads } => run_eval(&model, &data, limit, batch, threads),
        Cmd::Plot { runs, output, title } => run_plot(&runs, &output, &title),
        Cmd::Onnx { model, output } => {
            let file =
                resedge::format::ModelFile::open(&model).with_context(|| format!("opening {}", model.display()))?;
            onnx::write(&file.model()?, &output)?;
            println!("wrote {}", output.display());
            Ok(())
        }
    }
}
