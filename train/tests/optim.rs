//! The flat-buffer SGD matches torch.optim.SGD's update rule, keeps channels-last layouts, and the
//! schedule follows the paper (milestones, warm-up).

use resedge_train::optim::{Schedule, Sgd};
use tch::{nn, Device, Kind, Tensor};

#[test]
fn sgd_matches_the_reference_update() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let a = root.var("a", &[2, 3], nn::Init::Uniform { lo: -1.0, up: 1.0 });
    let b = root.var("b", &[4], nn::Init::Uniform { lo: -1.0, up: 1.0 });
    let (ca, cb) = (Tensor::randn([2, 3], (Kind::Float, Device::Cpu)), Tensor::randn([4], (Kind::Float, Device::Cpu)));
    let (mut ra, mut rb) = (a.detach().copy(), b.detach().copy());
    let (mut ma, mut mb) = (ra.zeros_like(), rb.zeros_like());
    let (lr, mom, wd) = (0.1, 0.9, 1e-2);
    let mut sgd = Sgd::new(&vs, mom, wd);
    for step in 0..3 {
        // loss = sum(a^2 * ca) + sum(b * cb): grad a = 2 a ca, grad b = cb.
        let loss = (&a * &a * &ca).sum(Kind::Float) + (&b * &cb).sum(Kind::Float);
        sgd.backward_step(&loss, lr);
        let (ga, gb) = (&ra * &ca * 2.0 + &ra * wd, &cb + &rb * wd);
        ma = &ma * mom + ga;
        mb = &mb * mom + gb;
        ra = &ra - &ma * lr;
        rb = &rb - &mb * lr;
        let diff =
            (a.detach() - &ra).abs().max().double_value(&[]).max((b.detach() - &rb).abs().max().double_value(&[]));
        assert!(diff < 1e-6, "step {step}: parameters differ from the reference by {diff}");
    }
    let state = sgd.state();
    assert_eq!(state.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!((&state[0].1 - &ma).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn channels_last_weights_stay_channels_last() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut net = resedge_train::model::Net::new(&vs.root(), &resedge::zoo::arch("resnet20").unwrap()).unwrap();
    let vs2 = nn::VarStore::new(Device::Cpu);
    let net2 = resedge_train::model::Net::new(&vs2.root(), &resedge::zoo::arch("resnet20").unwrap()).unwrap();
    tch::no_grad(|| {
        let v2 = vs2.variables();
        for (k, mut v) in vs.variables() {
            v.copy_(&v2[&k]);
        }
    });
    net.weights_to_channels_last();
    let (mut s1, mut s2) = (Sgd::new(&vs, 0.9, 1e-4), Sgd::new(&vs2, 0.9, 1e-4));
    let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 3]);
    for _ in 0..2 {
        s1.backward_step(
            &net.forward_t(&resedge_train::model::to_channels_last(&x), true).cross_entropy_for_logits(&y),
            0.1,
        );
        s2.backward_step(&net2.forward_t(&x, true).cross_entropy_for_logits(&y), 0.1);
    }
    let (v1, v2) = (vs.variables(), vs2.variables());
    let w = &v1["layer1.0.conv1.weight"];
    assert!(!w.is_contiguous() && w.permute([0, 2, 3, 1]).is_contiguous(), "weight lost its channels-last strides");
    for (k, t) in &v1 {
        // Different (and multi-threaded) summation orders in the two layouts: a small absolute plus relative
        // tolerance; a layout mix-up moves weights by orders of magnitude more.
        let (d, scale) = ((t - &v2[k]).abs().max().double_value(&[]), t.abs().max().double_value(&[]).max(1e-3));
        assert!(
            d <= 5e-4 + 1e-3 * scale,
            "`{k}` differs by {d} (max |w| {scale}) between channels-last and NCHW training"
        );
    }
}

#[test]
fn schedule_milestones_and_warmup() {
    let s = Schedule { lr: 0.1, milestones: vec![20, 30], warmup_lr: 0.01, warmup_iters: 400 };
    assert_eq!(s.lr(0, 0), 0.01);
    assert_eq!(s.lr(1, 399), 0.01);
    assert_eq!(s.lr(1, 400), 0.1);
    assert_eq!(s.lr(19, 10_000), 0.1);
    assert_eq!(s.lr(20, 10_000), 0.01);
    assert_eq!(s.lr(30, 10_000), 0.001);
}
