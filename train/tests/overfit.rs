//! The training step works: loss on one small batch falls when training on it repeatedly.

mod common;

use resedge_train::data::DatasetTensors;
use resedge_train::optim::Sgd;
use tch::{nn, Device, Kind};

#[test]
fn loss_falls_when_overfitting_a_small_batch() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = resedge_train::model::Net::new(&vs.root(), &resedge::zoo::arch("resnet20").unwrap()).unwrap();
    let ds = common::synthetic(32, 10, 5);
    let x = resedge_train::data::normalize(&ds.images_tensor(), [0.5; 3], [0.29; 3]);
    let y = ds.labels_tensor();
    let mut sgd = Sgd::new(&vs, 0.9, 1e-4);
    let mut losses = Vec::new();
    for _ in 0..20 {
        let loss = net.forward_t(&x, true).cross_entropy_for_logits(&y);
        sgd.backward_step(&loss, 0.05);
        losses.push(loss.double_value(&[]));
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    eprintln!("loss {first:.4} -> {last:.4}: {losses:.3?}");
    assert!(last < 0.2 * first, "loss did not fall enough: {first} -> {last} ({losses:?})");
    let acc =
        tch::no_grad(|| net.forward_t(&x, true).argmax(-1, false).eq_tensor(&y).to_kind(Kind::Float).mean(Kind::Float));
    assert!(acc.double_value(&[]) > 0.9, "training accuracy {} after overfitting", acc.double_value(&[]));
}
