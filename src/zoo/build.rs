//! Graph construction for zoo architectures. Node names follow torchvision (`conv1`, `bn1`,
//! `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`) so imported checkpoints map onto them.

use super::{Arch, Block, Family, Shortcut};
use crate::error::{Error, Result};
use crate::graph::{Activation, Graph, Input, Model, Node, Op, Preprocess, Window};
use crate::plan::{passes, Plan, PlanOptions, ValueRef};
use crate::quant::{lower_to_int8, qparams_from_ranges, ActivationScheme, Ranges};
use crate::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};
use std::collections::BTreeMap;
use std::prelude::v1::*;

/// Channels, square kernel size and stride of one convolution.
#[derive(Clone, Copy)]
struct Conv {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
}

struct Builder {
    nodes: Vec<Node>,
    tensors: BTreeMap<String, Tensor<'static>>,
    rng: ChaCha8Rng,
    /// Scales the last batchnorm of every residual branch so that the variance of deep nets with random
    /// weights stays bounded (as zero-init-residual training would).
    branch_gamma: f32,
}

impl Builder {
    fn node(&mut self, name: &str, op: Op, inputs: &[&str]) -> String {
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output_q: None,
        });
        name.to_string()
    }

    /// Conv (no bias, Kaiming-normal fan-in weights) followed by batchnorm with random statistics.
    fn conv_bn(&mut self, name: &str, bn: &str, x: &str, c: Conv, gamma: f32) -> String {
        let Conv { cin, cout, k, stride } = c;
        let std = (2.0 / (cin * k * k) as f32).sqrt();
        let normal = Normal::new(0.0, std).expect("finite std");
        let w: Vec<f32> = (0..cout * cin * k * k).map(|_| normal.sample(&mut self.rng)).collect();
        self.tensors.insert(format!("{name}.weight"), Tensor::from_f32(vec![cout, cin, k, k], &w));
        let op = Op::Conv {
            out_channels: cout,
            window: Window::square(k, stride, k / 2),
            groups: 1,
            bias: false,
            residual: false,
            activation: Activation::None,
        };
        let c = self.node(name, op, &[x]);
        let u = |lo: f32, hi: f32, rng: &mut ChaCha8Rng| -> Vec<f32> {
            let d = Uniform::new(lo, hi).expect("lo < hi");
            (0..cout).map(|_| d.sample(rng)).collect()
        };
        let g: Vec<f32> = u(0.5, 1.0, &mut self.rng).into_iter().map(|v| v * gamma).collect();
        let beta = u(-0.1, 0.1, &mut self.rng);
        let mean = u(-0.1, 0.1, &mut self.rng);
        let var = u(0.5, 1.5, &mut self.rng);
        for (role, v) in [("gamma", g), ("beta", beta), ("mean", mean), ("var", var)] {
            self.tensors.insert(format!("{bn}.{role}"), Tensor::from_f32(vec![cout], &v));
        }
        self.node(bn, Op::BatchNorm { eps: 1e-5 }, &[&c])
    }

    fn relu(&mut self, name: &str, x: &str) -> String {
        self.node(name, Op::Act { activation: Activation::Relu }, &[x])
    }

    /// One residual (or plain) block; returns its output value.
    fn block(&mut self, arch: &Arch, p: &str, x: &str, cin: usize, width: usize, stride: usize) -> (String, usize) {
        // The shortcut is emitted first so the residual add can fuse into the branch's last conv.
        let cout = match arch.block {
            Block::Basic => width,
            Block::Bottleneck => width * 4,
        };
        let changes = stride != 1 || cin != cout;
        let short = match arch.shortcut {
            Shortcut::None => None,
            Shortcut::A if changes => {
                let pad = cout - cin;
                let op = Op::ShortcutA { stride, pad_before: pad / 2, pad_after: pad - pad / 2 };
                Some(self.node(&format!("{p}.shortcut"), op, &[x]))
            }
            Shortcut::B if changes => Some(self.projection(p, x, cin, cout, stride)),
            Shortcut::C => Some(self.projection(p, x, cin, cout, stride)),
            Shortcut::A | Shortcut::B => Some(x.to_string()),
        };
        // The branch: (kernel, stride, out channels) per conv, ReLU between them; its last batchnorm is
        // scaled by `branch_gamma` when a shortcut is added to it.
        let convs = match arch.block {
            Block::Basic => vec![(3, stride, width), (3, 1, width)],
            Block::Bottleneck => vec![(1, 1, width), (3, stride, width), (1, 1, cout)],
        };
        let last_gamma = if arch.shortcut == Shortcut::None { 1.0 } else { self.branch_gamma };
        let (mut body, mut c) = (x.to_string(), cin);
        for (i, &(k, stride, co)) in convs.iter().enumerate() {
            let (n, last) = (i + 1, i + 1 == convs.len());
            let conv = Conv { cin: c, cout: co, k, stride };
            body = self.conv_bn(
                &format!("{p}.conv{n}"),
                &format!("{p}.bn{n}"),
                &body,
                conv,
                if last { last_gamma } else { 1.0 },
            );
            if !last {
                body = self.relu(&format!("{p}.relu{n}"), &body);
            }
            c = co;
        }
        let sum = match short {
            Some(s) => self.node(&format!("{p}.add"), Op::Add { activation: Activation::None }, &[&body, &s]),
            None => body,
        };
        (self.relu(&format!("{p}.relu"), &sum), cout)
    }

    fn projection(&mut self, p: &str, x: &str, cin: usize, cout: usize, stride: usize) -> String {
        self.conv_bn(
            &format!("{p}.downsample.0"),
            &format!("{p}.downsample.1"),
            x,
            Conv { cin, cout, k: 1, stride },
            1.0,
        )
    }
}

/// Builds the f32 model of `arch` (explicit BatchNorm nodes, as trained) with weights drawn from `seed`.
pub fn build(arch: &Arch, seed: u64) -> Result<Model<'static>> {
    let total_blocks: usize = arch.layers.iter().sum();
    let mut b = Builder {
        nodes: Vec::new(),
        tensors: BTreeMap::new(),
        rng: ChaCha8Rng::seed_from_u64(seed),
        branch_gamma: 1.0 / (total_blocks as f32).sqrt(),
    };
    let (mut x, mut c, widths): (String, usize, Vec<usize>) = match arch.family {
        Family::Imagenet => {
            let x = b.conv_bn("conv1", "bn1", "input", Conv { cin: 3, cout: 64, k: 7, stride: 2 }, 1.0);
            let x = b.relu("relu", &x);
            let x = b.node("maxpool", Op::MaxPool { window: Window::square(3, 2, 1) }, &[&x]);
            (x, 64, vec![64, 128, 256, 512])
        }
        Family::Cifar => {
            let x = b.conv_bn("conv1", "bn1", "input", Conv { cin: 3, cout: 16, k: 3, stride: 1 }, 1.0);
            (b.relu("relu", &x), 16, vec![16, 32, 64])
        }
    };
    for (stage, (&n, &width)) in arch.layers.iter().zip(&widths).enumerate() {
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            (x, c) = b.block(arch, &format!("layer{}.{i}", stage + 1), &x, c, width, stride);
        }
    }
    let x = b.node("avgpool", Op::GlobalAvgPool, &[&x]);
    let x = b.node("flatten", Op::Flatten, &[&x]);
    let bound = 1.0 / (c as f32).sqrt();
    let u = Uniform::new(-bound, bound).expect("bound > 0");
    let w: Vec<f32> = (0..arch.classes * c).map(|_| u.sample(&mut b.rng)).collect();
    let bias: Vec<f32> = (0..arch.classes).map(|_| u.sample(&mut b.rng)).collect();
    b.tensors.insert("fc.weight".into(), Tensor::from_f32(vec![arch.classes, c], &w));
    b.tensors.insert("fc.bias".into(), Tensor::from_f32(vec![arch.classes], &bias));
    let out = b.node("fc", Op::Linear { out_features: arch.classes, bias: true, activation: Activation::None }, &[&x]);
    let preprocess = match arch.family {
        Family::Imagenet => Preprocess::imagenet(),
        Family::Cifar => Preprocess::cifar10(),
    };
    Ok(Model {
        name: arch.name.clone(),
        graph: Graph {
            input: Input { name: "input".into(), shape: arch.input().to_vec() },
            nodes: b.nodes,
            output: out,
        },
        tensors: b.tensors,
        preprocess: Some(preprocess),
        labels: super::labels(arch.family, arch.classes),
    })
}

/// A seeded standard-normal input of `len` values (what the zoo calibrates and benchmarks on).
pub fn random_input(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)).collect()
}

/// Min/max of the input and of every node output of `model` (already optimized) over `inputs`. Runs the
/// scalar reference kernels: SIMD f32 sums differ in the last bits, and the ranges (hence the int8 file)
/// must not depend on the CPU or tier that made them.
pub fn calibrate_minmax(model: &Model<'_>, inputs: &[Vec<f32>]) -> Result<Ranges> {
    let opts = PlanOptions { optimize: false, max_isa: crate::kernels::Isa::Scalar, ..Default::default() };
    let plan = Plan::new(model, &opts)?;
    let mut exec = plan.executor();
    let mut ranges = Ranges::new();
    let mut widen = |name: &str, v: &[f32]| {
        let e = ranges.entry(name.to_string()).or_insert((f32::INFINITY, f32::NEG_INFINITY));
        for &x in v {
            e.0 = e.0.min(x);
            e.1 = e.1.max(x);
        }
    };
    for input in inputs {
        widen(&plan.values[plan.input].name, input);
        exec.run_observed(input, &mut |i, v| {
            if let ValueRef::F32(v) = v {
                widen(&plan.steps[i].name, v);
            }
        })?;
    }
    Ok(ranges)
}

/// Builds `arch` in int8: fold and fuse, calibrate min/max on a few seeded random inputs, lower.
/// (Real calibration on data is the quantizer's job; this gives benchmarkable int8 nets of every arch.)
pub fn build_int8(arch: &Arch, seed: u64, scheme: ActivationScheme) -> Result<Model<'static>> {
    let f32_model = passes::optimize(&build(arch, seed)?)?;
    let len: usize = arch.input().iter().product();
    let inputs: Vec<Vec<f32>> = (0..4).map(|i| random_input(len, seed.wrapping_add(1000 + i))).collect();
    let ranges = calibrate_minmax(&f32_model, &inputs)?;
    lower_to_int8(&f32_model, &qparams_from_ranges(&ranges, scheme), &Default::default())
}

/// The PyTorch variable name of the model-file tensor `key` (zoo nets use torchvision's module names):
/// batchnorm `gamma`/`beta`/`mean`/`var` are `weight`/`bias`/`running_mean`/`running_var`.
pub fn torch_name(key: &str) -> String {
    let (node, role) = key.rsplit_once('.').unwrap_or(("", key));
    let role = match role {
        "gamma" => "weight",
        "beta" => "bias",
        "mean" => "running_mean",
        "var" => "running_var",
        other => other,
    };
    format!("{node}.{role}")
}

/// Builds `arch` (batchnorm unfolded) with trained weights looked up by PyTorch name: `get(name)` gives
/// (shape, values). Every graph tensor must be found with its shape, and every name in `names` used.
pub fn with_torch_weights(
    arch: &Arch,
    names: &[String],
    mut get: impl FnMut(&str) -> Option<(Vec<usize>, Vec<f32>)>,
) -> Result<Model<'static>> {
    let mut model = build(arch, 0)?;
    let mut used = std::collections::BTreeSet::new();
    for (key, t) in model.tensors.iter_mut() {
        let var = torch_name(key);
        let (shape, values) =
            get(&var).ok_or_else(|| Error::tensor(key, format!("has no trained variable `{var}`")))?;
        if shape != t.shape || values.len() != t.numel() {
            return Err(Error::tensor(key, format!("`{var}` has shape {shape:?}, the graph needs {:?}", t.shape)));
        }
        *t = Tensor::from_f32(shape, &values);
        used.insert(var);
    }
    let unused: Vec<&String> = names.iter().filter(|k| !used.contains(*k)).collect();
    if !unused.is_empty() {
        return Err(Error::Arch(format!("variables with no place in the {} graph: {unused:?}", arch.name)));
    }
    Ok(model)
}
