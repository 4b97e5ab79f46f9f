//! `--resume` replays an unbroken run exactly: 2 epochs straight == 1 epoch, stop, resume for 1 more,
//! bit for bit (weights, batchnorm statistics, momentum, and the exported model file).

mod common;

use resedge_train::augment::Augment;
use resedge_train::optim::Schedule;
use resedge_train::train::{fit, Config};

fn config(out: std::path::PathBuf, epochs: usize, resume: bool) -> Config {
    Config {
        arch: resedge::zoo::arch("resnet20").unwrap(),
        name: "resnet20".into(),
        out,
        device: tch::Device::Cpu,
        epochs,
        batch: 32,
        schedule: Schedule { lr: 0.1, milestones: vec![1], warmup_lr: 0.01, warmup_iters: 2 },
        momentum: 0.9,
        weight_decay: 1e-4,
        seed: 9,
        augment: Augment::PadCropFlip,
        crop: 32,
        channels_last: false,
        bf16: false,
        resume,
        eval_every: 1,
        progress: false,
        onnx: false,
    }
}

#[test]
fn resume_reproduces_an_unbroken_run() {
    let train = common::synthetic(96, 10, 1);
    let test = common::synthetic(40, 10, 2);
    let a = common::temp_dir("resume-a");
    let b = common::temp_dir("resume-b");
    let full = fit(&config(a.clone(), 2, false), &train, Some(&test)).unwrap();
    let first = fit(&config(b.clone(), 1, false), &train, Some(&test)).unwrap();
    assert_eq!(first.rows.len(), 1);
    let resumed = fit(&config(b.clone(), 2, true), &train, Some(&test)).unwrap();
    assert_eq!(resumed.rows.len(), 2, "metrics rows after resume");

    let ck = |d: &std::path::Path| std::fs::read(d.join("checkpoint.safetensors")).unwrap();
    assert!(ck(&a) == ck(&b), "checkpoints differ between the unbroken and the resumed run");
    let model = |d: &std::path::Path| std::fs::read(d.join("resnet20.rsm")).unwrap();
    assert!(model(&a) == model(&b), "exported model files differ");
    // Rows of earlier epochs come back from the CSV (6 decimals); the last one is computed in both runs.
    let (x, y) = (full.rows.last().unwrap(), resumed.rows.last().unwrap());
    assert_eq!((x.train_loss, x.test_loss, x.test_err), (y.train_loss, y.test_loss, y.test_err));
    assert!((full.rows[0].train_loss - resumed.rows[0].train_loss).abs() < 1e-5);

    // The run leaves its metrics and a curve that decodes as a PNG.
    let rows = resedge_train::metrics::read(&a.join("metrics.csv")).unwrap();
    assert_eq!(rows.iter().map(|r| r.epoch).collect::<Vec<_>>(), [1, 2]);
    assert!(rows.iter().all(|r| r.test_err.is_finite() && r.train_loss.is_finite()));
    let png = image::open(a.join("curve.png")).unwrap();
    assert_eq!((png.width(), png.height()), (800, 500));
    let _ = std::fs::remove_dir_all(a);
    let _ = std::fs::remove_dir_all(b);
}
