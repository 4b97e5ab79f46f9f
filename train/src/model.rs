//! The paper's nets in libtorch, built from the runtime's [`resedge::zoo::Arch`] so training and inference
//! cannot drift: the block structure, option-A shortcut and torchvision-style variable names mirror
//! `resedge::zoo::build` (`conv1`, `bn1`, `layer2.0.conv1`, `layer2.0.downsample.0`, `fc`, ...).
//!
//! He et al. 2015, "Deep Residual Learning for Image Recognition", <https://arxiv.org/abs/1512.03385>.
//! Convolutions are He-initialized (normal, fan-in), have no bias and are each followed by batchnorm.

use anyhow::{bail, Result};
use resedge::zoo::{Arch, Block as BlockKind, Family, Shortcut};
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// Batchnorm settings shared with the runtime's graph (`BatchNorm { eps: 1e-5 }`).
pub const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// Returns `x` with channels-last (NHWC) strides, still indexed as NCHW.
pub fn to_channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// `root / "a" / "b"` for the dotted name "a.b" (tch paths refuse dots inside one component).
fn sub<'a>(root: &nn::Path<'a>, dotted: &str) -> nn::Path<'a> {
    dotted.split('.').fold(root.clone(), |p, c| p.sub(c))
}

/// Convolution without bias followed by batchnorm.
#[derive(Debug)]
struct ConvBn {
    weight: Tensor,
    stride: i64,
    pad: i64,
    gamma: Tensor,
    beta: Tensor,
    mean: Tensor,
    var: Tensor,
}

impl ConvBn {
    /// Variables `<conv>.weight` and `<bn>.{weight,bias,running_mean,running_var}`.
    fn new(root: &nn::Path, conv: &str, bn: &str, cin: i64, cout: i64, k: i64, stride: i64) -> ConvBn {
        let he = Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanIn,
            non_linearity: nn::init::NonLinearity::ReLU,
        };
        let c = sub(root, conv);
        let b = sub(root, bn);
        ConvBn {
            weight: c.var("weight", &[cout, cin, k, k], he),
            stride,
            pad: k / 2,
            gamma: b.var("weight", &[cout], Init::Const(1.0)),
            beta: b.var("bias", &[cout], Init::Const(0.0)),
            mean: b.zeros_no_train("running_mean", &[cout]),
            var: b.ones_no_train("running_var", &[cout]),
        }
    }

    fn forward(&self, x: &Tensor, train: bool, bf16: bool) -> Tensor {
        let y = if bf16 {
            x.to_kind(Kind::BFloat16).conv2d(
                &self.weight.to_kind(Kind::BFloat16),
                None::<Tensor>,
                [self.stride; 2],
                [self.pad; 2],
                [1, 1],
                1,
            )
        } else {
            x.conv2d(&self.weight, None::<Tensor>, [self.stride; 2], [self.pad; 2], [1, 1], 1)
        };
        Tensor::batch_norm(
            &y,
            Some(&self.gamma),
            Some(&self.beta),
            Some(&self.mean),
            Some(&self.var),
            train,
            BN_MOMENTUM,
            BN_EPS,
            true,
        )
    }
}

#[derive(Debug)]
enum Short {
    Identity,
    /// Subsample by `stride`, zero-pad channels.
    A {
        stride: i64,
        before: i64,
        after: i64,
    },
    Projection(ConvBn),
    None,
}

#[derive(Debug)]
struct ResBlock {
    /// Branch convolutions; ReLU after all but the last.
    convs: Vec<ConvBn>,
    short: Short,
}

impl ResBlock {
    fn forward(&self, x: &Tensor, train: bool, bf16: bool) -> Tensor {
        let mut y = x.shallow_clone();
        for (i, c) in self.convs.iter().enumerate() {
            y = c.forward(&y, train, bf16);
            if i + 1 < self.convs.len() {
                y = y.relu();
            }
        }
        let sum = match &self.short {
            Short::Identity => y + x,
            Short::A { stride, before, after } => {
                let s = x.slice(2, 0, None, *stride).slice(3, 0, None, *stride);
                let s = s.constant_pad_nd([0, 0, 0, 0, *before, *after]);
                y + s.to_kind(if bf16 { Kind::BFloat16 } else { x.kind() })
            }
            Short::Projection(p) => y + p.forward(x, train, bf16),
            Short::None => y,
        };
        sum.relu()
    }
}

/// A trainable net. Its variables live in the [`nn::VarStore`] it was built in.
#[derive(Debug)]
pub struct Net {
    pub arch: Arch,
    stem: ConvBn,
    maxpool: bool,
    blocks: Vec<ResBlock>,
    fc_weight: Tensor,
    fc_bias: Tensor,
    /// Run convolutions in bfloat16 (f32 master weights, batchnorm statistics and classifier).
    pub bf16: bool,
}

impl Net {
    /// Builds `arch` in `root` with fresh He-initialized weights (drawn from torch's global generator).
    pub fn new(root: &nn::Path, arch: &Arch) -> Result<Net> {
        let (stem, maxpool, widths, mut c) = match arch.family {
            Family::Imagenet => (ConvBn::new(root, "conv1", "bn1", 3, 64, 7, 2), true, vec![64, 128, 256, 512], 64),
            Family::Cifar => (ConvBn::new(root, "conv1", "bn1", 3, 16, 3, 1), false, vec![16, 32, 64], 16),
        };
        if arch.layers.len() != widths.len() {
            bail!("{}: {:?} family needs {} stages, got {:?}", arch.name, arch.family, widths.len(), arch.layers);
        }
        let mut blocks = Vec::new();
        for (stage, (&n, &width)) in arch.layers.iter().zip(&widths).enumerate() {
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let p = format!("layer{}.{i}", stage + 1);
                let cout = match arch.block {
                    BlockKind::Basic => width,
                    BlockKind::Bottleneck => width * 4,
                };
                let changes = stride != 1 || c != cout;
                let proj = |root: &nn::Path| {
                    let (conv, bn) = (format!("{p}.downsample.0"), format!("{p}.downsample.1"));
                    Short::Projection(ConvBn::new(root, &conv, &bn, c, cout, 1, stride))
                };
                let short = match arch.shortcut {
                    Shortcut::None => Short::None,
                    Shortcut::A if changes => {
                        let pad = cout - c;
                        Short::A { stride, before: pad / 2, after: pad - pad / 2 }
                    }
                    Shortcut::B if changes => proj(root),
                    Shortcut::C => proj(root),
                    Shortcut::A | Shortcut::B => Short::Identity,
                };
                let cv = |j: usize, cin: i64, cout: i64, k: i64, s: i64| {
                    ConvBn::new(root, &format!("{p}.conv{j}"), &format!("{p}.bn{j}"), cin, cout, k, s)
                };
                let convs = match arch.block {
                    BlockKind::Basic => vec![cv(1, c, width, 3, stride), cv(2, width, width, 3, 1)],
                    BlockKind::Bottleneck => {
                        vec![cv(1, c, width, 1, 1), cv(2, width, width, 3, stride), cv(3, width, cout, 1, 1)]
                    }
                };
                blocks.push(ResBlock { convs, short });
                c = cout;
            }
        }
        let bound = 1.0 / (c as f64).sqrt();
        let fc = sub(root, "fc");
        let classes = arch.classes as i64;
        Ok(Net {
            arch: arch.clone(),
            stem,
            maxpool,
            blocks,
            fc_weight: fc.var("weight", &[classes, c], Init::Uniform { lo: -bound, up: bound }),
            fc_bias: fc.var("bias", &[classes], Init::Uniform { lo: -bound, up: bound }),
            bf16: false,
        })
    }

    /// Logits [B, classes] (f32) of normalized images [B, 3, H, W]; `train` selects batch statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.stem.forward(x, train, self.bf16).relu();
        if self.maxpool {
            y = y.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for b in &self.blocks {
            y = b.forward(&y, train, self.bf16);
        }
        let y = y.mean_dim(&[2i64, 3][..], false, Kind::Float);
        y.linear(&self.fc_weight, Some(&self.fc_bias))
    }

    /// Gives every 4-d weight channels-last strides (in place, so optimizer state follows).
    pub fn weights_to_channels_last(&mut self) {
        let mut convs: Vec<&mut ConvBn> = vec![&mut self.stem];
        for b in &mut self.blocks {
            convs.extend(b.convs.iter_mut());
            if let Short::Projection(p) = &mut b.short {
                convs.push(p);
            }
        }
        for c in convs {
            let cl = to_channels_last(&c.weight.detach());
            tch::no_grad(|| c.weight.set_data(&cl));
        }
    }
}
