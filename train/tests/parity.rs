//! The runtime's f32 forward equals the trainer's (inference mode) on the same weights: same graph, same
//! names, same option-A shortcut, same batchnorm.

mod common;

use resedge::graph::Preprocess;
use resedge::plan::{Plan, PlanOptions};
use resedge_train::export;
use tch::{Device, Kind, Tensor};

/// Compares logits for a batch of 2 at `side` x `side`; tolerance 1e-4 of the largest |logit|.
fn check(arch_name: &str, side: i64) {
    let (vs, net) = common::net_with_random_bn(arch_name, 7);
    let arch = resedge::zoo::arch(arch_name).unwrap();
    tch::manual_seed(11);
    let x = Tensor::randn([2, 3, side, side], (Kind::Float, Device::Cpu));
    let want = export::to_vec_f32(&tch::no_grad(|| net.forward_t(&x, false))).unwrap();

    let pre = Preprocess { resize: side as usize, crop: [side as usize; 2], mean: [0.5; 3], std: [0.25; 3] };
    let model = export::to_model(&vs, &arch, arch_name, pre, Vec::new()).unwrap();
    let bytes = resedge::format::save(&model).unwrap();
    let mut model = resedge::format::load(&bytes).unwrap();
    model.graph.input.shape = vec![3, side as usize, side as usize];
    for optimize in [false, true] {
        let plan = Plan::new(&model, &PlanOptions { batch: 2, optimize, ..Default::default() }).unwrap();
        let mut exec = plan.executor();
        let got = exec.run(&export::to_vec_f32(&x).unwrap()).unwrap().to_vec();
        assert_eq!(got.len(), want.len(), "{arch_name}: output length");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("{arch_name} @{side} optimize={optimize}: max |logit| {scale:.4}, max diff {worst:.3e}");
        assert!(
            worst <= 1e-4 * scale.max(1.0),
            "{arch_name} @{side} optimize={optimize}: runtime differs by {worst} (largest logit {scale})\n runtime {got:?}\n torch {want:?}"
        );
    }
}

#[test]
fn resnet20_option_a() {
    check("resnet20", 32);
}

#[test]
fn resnet20_option_b() {
    check("resnet20-b", 32);
}

#[test]
fn plain20_no_shortcut() {
    check("plain20", 32);
}

#[test]
fn resnet50_bottleneck_small_input() {
    // ImageNet stem (7x7/2 conv, 3x3/2 max pool), bottlenecks, option-B projections; 64x64 keeps it quick.
    check("resnet50", 64);
}
