//! The training loop: epochs of augmented SGD steps, evaluation, metrics CSV, curve, checkpoint, and the
//! exported model file at the end. Everything lands in one output folder:
//!
//! | file | what |
//! |---|---|
//! | `metrics.csv` | one row per epoch ([`crate::metrics::HEADER`]) |
//! | `curve.png` | training / test error per epoch |
//! | `checkpoint.{safetensors,json}` | weights + momentum after the last finished epoch (`--resume`) |
//! | `<name>.rsm` | the ResEdge model file (f32, batchnorm kept) |
//! | `<name>.onnx` | the same weights as ONNX, when asked |

use crate::augment::{Augment, DeviceSet};
use crate::checkpoint::{self, Meta};
use crate::data::Dataset;
use crate::metrics::{self, EpochRow};
use crate::model::Net;
use crate::optim::{Schedule, Sgd};
use crate::{export, plot};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use resedge::graph::Preprocess;
use resedge::zoo::Arch;
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// Everything one training run needs besides the data.
#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    /// Model name written into the model file (and its file name).
    pub name: String,
    pub out: PathBuf,
    pub device: Device,
    pub epochs: usize,
    pub batch: usize,
    pub schedule: Schedule,
    pub momentum: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub augment: Augment,
    /// Side of the square network input (the crop).
    pub crop: usize,
    pub channels_last: bool,
    pub bf16: bool,
    /// Continue from `out/checkpoint.*` when present.
    pub resume: bool,
    /// Evaluate on the test set every this many epochs (and after the last).
    pub eval_every: usize,
    pub progress: bool,
    pub onnx: bool,
}

/// What a finished run produced.
#[derive(Debug)]
pub struct Summary {
    pub rows: Vec<EpochRow>,
    pub model_path: PathBuf,
    /// Training time (excluding evaluation) of the epochs run by this process.
    pub train_s: f64,
}

/// Mean cross-entropy and top-1 error of `net` (inference mode) over all of `set`.
pub fn evaluate(net: &Net, set: &DeviceSet, batch: usize) -> (f64, f64) {
    tch::no_grad(|| {
        let dev = set.images_device();
        let mut loss = Tensor::zeros([], (Kind::Double, dev));
        let mut wrong = Tensor::zeros([], (Kind::Int64, dev));
        for start in (0..set.len()).step_by(batch) {
            let (x, y) = set.plain_batch(start, batch.min(set.len() - start));
            let logits = net.forward_t(&x, false);
            loss += logits.log_softmax(-1, Kind::Float).nll_loss(&y).to_kind(Kind::Double) * y.size()[0] as f64;
            wrong += logits.argmax(-1, false).ne_tensor(&y).sum(Kind::Int64);
        }
        let n = set.len().max(1) as f64;
        (loss.double_value(&[]) / n, wrong.int64_value(&[]) as f64 / n)
    })
}

fn progress_bar(cfg: &Config, total: u64) -> ProgressBar {
    if !cfg.progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:32}] {pos}/{len} it, ETA {eta_precise} | {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

fn say(pb: &ProgressBar, line: String) {
    if pb.is_hidden() {
        eprintln!("{line}");
    } else {
        pb.println(line);
    }
}

/// Trains `cfg.arch` on `train`, evaluating on `test`, writing everything into `cfg.out`.
pub fn fit(cfg: &Config, train: &Dataset, test: Option<&Dataset>) -> Result<Summary> {
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    anyhow::ensure!(cfg.batch > 0 && cfg.eval_every > 0, "batch and eval interval must be positive");
    anyhow::ensure!(
        train.classes.len() == cfg.arch.classes,
        "{} has {} classes, the training data {}",
        cfg.arch.name,
        cfg.arch.classes,
        train.classes.len()
    );
    let (mean, std) = train.channel_stats();
    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(cfg.device);
    let mut net = Net::new(&vs.root(), &cfg.arch)?;
    net.bf16 = cfg.bf16;
    if cfg.channels_last {
        net.weights_to_channels_last();
    }
    let mut sgd = Sgd::new(&vs, cfg.momentum, cfg.weight_decay);

    let csv = cfg.out.join("metrics.csv");
    let mut rows = Vec::new();
    let mut start = 0;
    let mut elapsed0 = 0.0;
    if cfg.resume {
        match checkpoint::read_meta(&cfg.out)? {
            Some(meta) => {
                anyhow::ensure!(
                    meta.arch == cfg.arch.name && meta.batch == cfg.batch && meta.seed == cfg.seed,
                    "checkpoint in {} is {} batch {} seed {}; this run is {} batch {} seed {}",
                    cfg.out.display(),
                    meta.arch,
                    meta.batch,
                    meta.seed,
                    cfg.arch.name,
                    cfg.batch,
                    cfg.seed
                );
                checkpoint::load(&cfg.out, &vs, &mut sgd)?;
                start = meta.epoch;
                elapsed0 = meta.elapsed_s;
                if csv.exists() {
                    rows = metrics::read(&csv)?.into_iter().filter(|r| r.epoch <= start).collect();
                }
                eprintln!("resume: {} after epoch {start} of {}", cfg.out.display(), meta.epochs);
            }
            None => eprintln!("resume: no checkpoint in {}, starting from scratch", cfg.out.display()),
        }
    }

    let train_set = DeviceSet::new(train, cfg.augment, cfg.crop, cfg.device, mean, std, cfg.channels_last)?;
    let test_set = test
        .map(|t| DeviceSet::new(t, Augment::None, cfg.crop, cfg.device, mean, std, cfg.channels_last))
        .transpose()?;
    let steps = train_set.len().div_ceil(cfg.batch);
    eprintln!(
        "train: {} on {} images ({} classes), {} epochs x {steps} steps of {}, lr {} milestones {:?}, test {} images",
        cfg.arch.name,
        train.len(),
        train.classes.len(),
        cfg.epochs,
        cfg.batch,
        cfg.schedule.lr,
        cfg.schedule.milestones,
        test.map_or(0, |t| t.len())
    );
    let pb = progress_bar(cfg, (cfg.epochs * steps) as u64);
    pb.set_position((start * steps) as u64);
    pb.reset_eta();
    let run_start = Instant::now();
    let mut train_total = 0.0;
    for epoch in start..cfg.epochs {
        let t0 = Instant::now();
        let mut loss_sum = Tensor::zeros([], (Kind::Double, cfg.device));
        let mut wrong = Tensor::zeros([], (Kind::Int64, cfg.device));
        let mut lr = cfg.schedule.lr;
        for (i, (x, y)) in train_set.epoch(cfg.seed, epoch, cfg.batch).enumerate() {
            lr = cfg.schedule.lr(epoch, epoch * steps + i);
            let logits = net.forward_t(&x, true);
            let loss = logits.cross_entropy_for_logits(&y);
            sgd.backward_step(&loss, lr);
            tch::no_grad(|| {
                loss_sum += loss.to_kind(Kind::Double) * y.size()[0] as f64;
                wrong += logits.argmax(-1, false).ne_tensor(&y).sum(Kind::Int64);
            });
            pb.inc(1);
            if i % 50 == 0 && !pb.is_hidden() {
                pb.set_message(format!("epoch {} loss {:.3} lr {lr}", epoch + 1, loss.double_value(&[])));
            }
        }
        let n = train.len() as f64;
        let (train_loss, train_err) = (loss_sum.double_value(&[]) / n, wrong.int64_value(&[]) as f64 / n);
        let train_s = t0.elapsed().as_secs_f64();
        train_total += train_s;
        let last = epoch + 1 == cfg.epochs;
        let (test_loss, test_err) = match &test_set {
            Some(t) if last || (epoch + 1) % cfg.eval_every == 0 => evaluate(&net, t, cfg.batch.max(256)),
            _ => (f64::NAN, f64::NAN),
        };
        let elapsed_s = elapsed0 + run_start.elapsed().as_secs_f64();
        let row = EpochRow {
            epoch: epoch + 1,
            lr,
            train_loss,
            train_err,
            test_loss,
            test_err,
            train_s,
            elapsed_s,
            images_per_s: n / train_s,
        };
        say(
            &pb,
            format!(
                "epoch {:>3}/{} lr {lr:<6} train loss {train_loss:.4} err {:5.2}% | test loss {test_loss:.4} err {:5.2}% | {train_s:.1} s, {:.0} img/s",
                epoch + 1,
                cfg.epochs,
                100.0 * train_err,
                100.0 * test_err,
                row.images_per_s
            ),
        );
        rows.push(row);
        metrics::write(&csv, &rows)?;
        let curve = plot::Curve { label: cfg.name.clone(), rows: rows.clone() };
        plot::draw(&cfg.out.join("curve.png"), &format!("{} training", cfg.name), &[curve], (800, 500))?;
        let meta = Meta {
            arch: cfg.arch.name.clone(),
            epoch: epoch + 1,
            epochs: cfg.epochs,
            batch: cfg.batch,
            seed: cfg.seed,
            elapsed_s,
        };
        checkpoint::save(&cfg.out, &vs, &sgd, &meta)?;
    }
    pb.finish_and_clear();

    let [_, h, _] = train.shape;
    let preprocess = Preprocess { resize: h, crop: [cfg.crop, cfg.crop], mean, std };
    let model = export::to_model(&vs, &cfg.arch, &cfg.name, preprocess, train.classes.clone())?;
    let model_path = cfg.out.join(format!("{}.rsm", cfg.name));
    let bytes = resedge::format::save(&model).with_context(|| format!("serializing {}", cfg.name))?;
    std::fs::write(&model_path, bytes).with_context(|| format!("writing {}", model_path.display()))?;
    eprintln!("wrote {}", model_path.display());
    if cfg.onnx {
        let onnx_path = cfg.out.join(format!("{}.onnx", cfg.name));
        crate::onnx::write(&model, &onnx_path)?;
        eprintln!("wrote {}", onnx_path.display());
    }
    Ok(Summary { rows, model_path, train_s: train_total })
}
