//! Shared helpers: synthetic datasets, temporary folders, a net with non-trivial batchnorm statistics.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resedge_train::data::Dataset;
use resedge_train::model::Net;
use std::path::PathBuf;
use tch::{nn, Kind, Tensor};

/// `n` random 32x32 images over `classes` classes (label i % classes), from `seed`.
pub fn synthetic(n: usize, classes: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Dataset {
        images: (0..n * 3 * 32 * 32).map(|_| rng.random()).collect(),
        labels: (0..n).map(|i| (i % classes) as i64).collect(),
        shape: [3, 32, 32],
        classes: (0..classes).map(|c| format!("class{c}")).collect(),
    }
}

/// A fresh empty folder under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("resedge-train-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// Builds `arch` on the CPU and gives every batchnorm random affine parameters and running statistics,
/// so inference-mode batchnorm is far from the identity.
pub fn net_with_random_bn(arch: &str, seed: i64) -> (nn::VarStore, Net) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let net = Net::new(&vs.root(), &resedge::zoo::arch(arch).expect("zoo arch")).expect("net");
    tch::no_grad(|| {
        for (name, mut v) in vs.variables() {
            let n = v.size()[0];
            let u = |lo: f64, hi: f64| Tensor::rand([n], (Kind::Float, tch::Device::Cpu)) * (hi - lo) + lo;
            let r = if name.ends_with("running_mean") {
                u(-0.3, 0.3)
            } else if name.ends_with("running_var") {
                u(0.5, 2.0)
            } else if name.ends_with("bias") && !name.starts_with("fc") {
                u(-0.2, 0.2)
            } else if name.ends_with("weight") && v.dim() == 1 {
                u(0.5, 1.5)
            } else {
                continue;
            };
            v.copy_(&r);
        }
    });
    (vs, net)
}
