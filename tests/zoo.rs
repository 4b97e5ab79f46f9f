//! The zoo against the published numbers, and the planner's passes against the unoptimized graph.

use resedge::plan::{Plan, PlanOptions};
use resedge::quant::ActivationScheme;
use resedge::zoo;

fn params(name: &str) -> u64 {
    zoo::build(&zoo::arch(name).unwrap(), 0).unwrap().parameter_count()
}

fn macs(name: &str) -> u64 {
    let m = zoo::build(&zoo::arch(name).unwrap(), 0).unwrap();
    Plan::new(&m, &PlanOptions::default()).unwrap().macs()
}

#[test]
fn imagenet_parameter_counts_match_torchvision() {
    assert_eq!(params("resnet18"), 11_689_512);
    assert_eq!(params("resnet34"), 21_797_672);
    assert_eq!(params("resnet50"), 25_557_032);
    assert_eq!(params("resnet101"), 44_549_160);
    assert_eq!(params("resnet152"), 60_192_808);
}

#[test]
fn cifar_parameter_counts_match_the_paper() {
    // Paper Table 6: 0.27M, 1.7M, 19.4M.
    let near = |p: u64, m: f64| ((p as f64 / 1e6) - m).abs() < 0.05 * m;
    assert!(near(params("resnet20"), 0.27), "{}", params("resnet20"));
    assert!(near(params("resnet110"), 1.7), "{}", params("resnet110"));
    assert!(near(params("resnet1202"), 19.4), "{}", params("resnet1202"));
}

#[test]
fn macs_match_published() {
    let rel = |a: u64, b: f64| (a as f64 - b).abs() / b;
    assert!(rel(macs("resnet18"), 1.82e9) < 0.01, "{}", macs("resnet18"));
    assert!(rel(macs("resnet50"), 4.1e9) < 0.01, "{}", macs("resnet50"));
}

#[test]
fn folded_equals_unfolded_and_int8_tracks_f32() {
    for name in ["resnet20", "plain20", "resnet20-b", "resnet20-c"] {
        let arch = zoo::arch(name).unwrap();
        let m = zoo::build(&arch, 7).unwrap();
        let x = zoo::random_input(3 * 32 * 32, 99);
        let raw = Plan::new(&m, &PlanOptions { optimize: false, ..Default::default() }).unwrap();
        let opt = Plan::new(&m, &PlanOptions::default()).unwrap();
        assert!(opt.steps.len() < raw.steps.len());
        let a = raw.executor().run(&x).unwrap().to_vec();
        let b = opt.executor().run(&x).unwrap().to_vec();
        let max = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() <= 1e-4 * max.max(1.0), "{name}: {u} vs {v}");
        }
        let q = zoo::build_int8(&arch, 7, ActivationScheme::AsymmetricI8).unwrap();
        let qp = Plan::new(&q, &PlanOptions::default()).unwrap();
        let c = qp.executor().run(&x).unwrap().to_vec();
        let dot: f32 = a.iter().zip(&c).map(|(u, v)| u * v).sum();
        let cos = dot / (a.iter().map(|v| v * v).sum::<f32>().sqrt() * c.iter().map(|v| v * v).sum::<f32>().sqrt());
        assert!(cos > 0.97, "{name}: int8 vs f32 cosine {cos}: {a:?} {c:?}");
    }
}

#[test]
fn zoo_nets_carry_their_dataset_preprocessing_and_labels() {
    let imagenet = zoo::build(&zoo::arch("resnet18").unwrap(), 0).unwrap();
    let p = imagenet.preprocess.as_ref().unwrap();
    assert_eq!((p.resize, p.crop), (256, [224, 224]));
    assert_eq!((p.mean, p.std), ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]));
    assert_eq!(imagenet.labels.len(), 1000);
    // Spot checks against the ILSVRC-2012 order (../shared/data/photos/README.md uses these indices).
    for (i, name) in [(0, "tench"), (281, "tabby"), (652, "military uniform"), (872, "tripod"), (967, "espresso")] {
        assert!(imagenet.labels[i].starts_with(name), "{i}: {}", imagenet.labels[i]);
    }
    assert_eq!(imagenet.labels[999], "toilet tissue, toilet paper, bathroom tissue");

    let int8 = zoo::build_int8(&zoo::arch("resnet20").unwrap(), 0, ActivationScheme::AsymmetricI8).unwrap();
    assert_eq!(int8.preprocess.as_ref().unwrap().crop, [32, 32]);
    let cifar = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
    assert_eq!(int8.labels, cifar);
}
