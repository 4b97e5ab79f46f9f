//! The ImageNet-style path end to end at a small size: an image folder, random-resized crops, a
//! bottleneck-free ResNet-18 (7x7 stem, max pool), bf16 convolutions, export with resize != crop.

mod common;

use resedge_train::augment::{Augment, DeviceSet};
use resedge_train::data::Dataset;
use resedge_train::optim::Schedule;
use resedge_train::train::{fit, Config};
use tch::Device;

fn folder_like(n: usize, side: usize) -> Dataset {
    let mut ds = common::synthetic(n, 3, 6);
    ds.images = (0..n * 3 * side * side).map(|i| (i * 7 % 251) as u8).collect();
    ds.shape = [3, side, side];
    ds
}

#[test]
fn resized_crop_flip_batches() {
    let ds = folder_like(8, 40);
    let set = DeviceSet::new(&ds, Augment::ResizedCropFlip, 32, Device::Cpu, [0.0; 3], [1.0; 3], false).unwrap();
    let (x, y) = set.epoch(0, 0, 8).next().unwrap();
    assert_eq!(x.size(), [8, 3, 32, 32]);
    assert_eq!(y.size(), [8]);
    let (lo, hi) = (x.min().double_value(&[]), x.max().double_value(&[]));
    assert!((0.0..=1.0).contains(&lo) && hi <= 1.0 + 1e-6 && hi > lo, "pixel range {lo}..{hi}");
    assert_eq!(set.plain_batch(0, 8).0.size(), [8, 3, 32, 32]);
    assert!(set.plain_batch(0, 8).0.isfinite().all().int64_value(&[]) == 1);
}

#[test]
fn resnet18_trains_and_exports_at_small_size() {
    let ds = folder_like(12, 72);
    let mut arch = resedge::zoo::arch("resnet18").unwrap();
    arch.classes = 3;
    let out = common::temp_dir("resnet18");
    let cfg = Config {
        arch,
        name: "tiny18".into(),
        out: out.clone(),
        device: Device::Cpu,
        epochs: 1,
        batch: 6,
        schedule: Schedule { lr: 0.01, milestones: vec![], warmup_lr: 0.01, warmup_iters: 0 },
        momentum: 0.9,
        weight_decay: 1e-4,
        seed: 0,
        augment: Augment::ResizedCropFlip,
        crop: 64,
        channels_last: true,
        bf16: true,
        resume: false,
        eval_every: 1,
        progress: false,
        onnx: true,
    };
    let summary = fit(&cfg, &ds, Some(&ds)).unwrap();
    assert!(summary.rows[0].train_loss.is_finite() && summary.rows[0].test_loss.is_finite());
    let bytes = std::fs::read(&summary.model_path).unwrap();
    let model = resedge::format::load(&bytes).unwrap();
    let p = model.preprocess.as_ref().unwrap();
    assert_eq!((p.resize, p.crop), (72, [64, 64]));
    assert_eq!(model.labels, ds.classes);
    assert_eq!(model.tensors["fc.weight"].shape, [3, 512]);
    assert!(out.join("tiny18.onnx").exists());
    let _ = std::fs::remove_dir_all(out);
}
