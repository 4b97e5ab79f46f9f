//! Accuracy by the runtime (`eval::top1`) agrees with the trainer's own predictions on the same weights and
//! preprocessing, whatever the batch and thread split.

mod common;

use resedge::graph::Preprocess;
use resedge_train::data::DatasetTensors;
use resedge_train::{data, eval, export};
use tch::Kind;

#[test]
fn runtime_top1_matches_torch_predictions() {
    let (vs, net) = common::net_with_random_bn("resnet20", 4);
    let mut ds = common::synthetic(30, 10, 12);
    let (mean, std) = ds.channel_stats();
    let x = data::normalize(&ds.images_tensor(), mean, std);
    let pred: Vec<i64> = Vec::try_from(&tch::no_grad(|| net.forward_t(&x, false)).argmax(-1, false)).unwrap();
    // Label half of the images with the torch prediction, so the expected accuracy is known.
    for (i, l) in ds.labels.iter_mut().enumerate() {
        *l = if i % 2 == 0 { pred[i] } else { (pred[i] + 1) % 10 };
    }
    let arch = resedge::zoo::arch("resnet20").unwrap();
    let pre = Preprocess { resize: 32, crop: [32, 32], mean, std };
    let model = export::to_model(&vs, &arch, "resnet20", pre, ds.classes.clone()).unwrap();
    for (batch, threads) in [(7, 1), (30, 1), (4, 2)] {
        let top1 = eval::top1(&model, &ds, batch, threads).unwrap();
        assert_eq!(top1, 0.5, "batch {batch}, threads {threads}");
    }
    let input = eval::runtime_input(&model, &ds, 0, 30).unwrap();
    let want = export::to_vec_f32(&x.to_kind(Kind::Float)).unwrap();
    let worst = input.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-5, "runtime input differs from the trainer's normalization by {worst}");
}
