//! SGD with momentum and weight decay, as `torch.optim.SGD` (dampening 0, not Nesterov), with its state in
//! plain tensors so checkpoints can hold it; and the paper's step schedule with optional warm-up.

use std::collections::BTreeMap;
use tch::{nn, Tensor};

/// Learning-rate schedule: `lr`, divided by 10 at each milestone epoch; `warmup_lr` for the first
/// `warmup_iters` iterations (the paper's ResNet-110 trick).
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub lr: f64,
    /// Epochs (0-based: the epoch with this index and later run at the reduced rate).
    pub milestones: Vec<usize>,
    pub warmup_lr: f64,
    pub warmup_iters: usize,
}

impl Schedule {
    /// The learning rate for iteration `iter` (counted from the start of training) in `epoch`.
    pub fn lr(&self, epoch: usize, iter: usize) -> f64 {
        if iter < self.warmup_iters {
            return self.warmup_lr;
        }
        let drops = self.milestones.iter().filter(|&&m| epoch >= m).count();
        self.lr / 10f64.powi(drops as i32)
    }
}

/// Storage order of one parameter inside the flat buffers.
struct Slot {
    name: String,
    offset: i64,
    numel: i64,
    shape: Vec<i64>,
    /// 4-d weight kept with channels-last strides: stored as [O, H, W, I].
    channels_last: bool,
}

impl Slot {
    /// `t` (shaped like the parameter) as 1-d in this slot's storage order (a view when strides allow).
    fn flatten(&self, t: &Tensor) -> Tensor {
        if self.channels_last {
            t.permute([0, 2, 3, 1]).reshape([-1])
        } else {
            t.reshape([-1])
        }
    }
    /// The parameter-shaped view of this slot in the flat buffer `flat`.
    fn view(&self, flat: &Tensor) -> Tensor {
        let seg = flat.narrow(0, self.offset, self.numel);
        if self.channels_last {
            let s = &self.shape;
            seg.view([s[0], s[2], s[3], s[1]]).permute([0, 3, 1, 2])
        } else {
            seg.view(self.shape.as_slice())
        }
    }
}

/// SGD over every trainable variable of a var store. The variables are re-pointed into one flat buffer
/// (and the momentum lives in another), so an update is a handful of kernels whatever the depth of the
/// net, as PyTorch's multi-tensor ("foreach") SGD.
pub struct Sgd {
    slots: Vec<Slot>,
    params: Vec<Tensor>,
    flat: Tensor,
    buf: Tensor,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Sgd {
    /// Takes the trainable variables of `vs` (in name order). Build it after any change of their layout
    /// (e.g. channels-last).
    pub fn new(vs: &nn::VarStore, momentum: f64, weight_decay: f64) -> Sgd {
        let named: BTreeMap<String, Tensor> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        let mut slots = Vec::new();
        let mut offset = 0;
        for (name, p) in &named {
            let channels_last = p.dim() == 4 && !p.is_contiguous() && p.permute([0, 2, 3, 1]).is_contiguous();
            let numel = p.numel() as i64;
            slots.push(Slot { name: name.clone(), offset, numel, shape: p.size(), channels_last });
            offset += numel;
        }
        let mut params: Vec<Tensor> = named.into_values().collect();
        let pieces: Vec<Tensor> = slots.iter().zip(&params).map(|(s, p)| s.flatten(&p.detach())).collect();
        let flat = Tensor::cat(&pieces, 0);
        tch::no_grad(|| {
            for (s, p) in slots.iter().zip(&mut params) {
                p.set_data(&s.view(&flat));
            }
        });
        let buf = flat.zeros_like();
        Sgd { slots, params, flat, buf, momentum, weight_decay }
    }

    /// Back-propagates `loss` and updates: d = grad + wd * p; buf = momentum * buf + d; p -= lr * buf.
    pub fn backward_step(&mut self, loss: &Tensor, lr: f64) {
        let grads = Tensor::run_backward(&[loss], &self.params, false, false);
        tch::no_grad(|| {
            let pieces: Vec<Tensor> = self.slots.iter().zip(&grads).map(|(s, g)| s.flatten(g)).collect();
            let mut d = Tensor::cat(&pieces, 0);
            let _ = d.g_add_(&(&self.flat * self.weight_decay));
            let _ = self.buf.g_mul_scalar_(self.momentum).g_add_(&d);
            let _ = self.flat.g_sub_(&(&self.buf * lr));
        })
    }

    /// Momentum buffers by variable name.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.slots.iter().map(|s| (s.name.clone(), s.view(&self.buf))).collect()
    }

    /// Restores momentum buffers saved by [`Sgd::state`].
    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        for s in &self.slots {
            let saved =
                state.get(&s.name).ok_or_else(|| anyhow::anyhow!("no momentum for `{}` in the checkpoint", s.name))?;
            anyhow::ensure!(
                saved.size() == s.shape,
                "momentum `{}`: shape {:?} vs {:?}",
                s.name,
                saved.size(),
                s.shape
            );
            let mut v = s.view(&self.buf);
            tch::no_grad(|| v.copy_(saved));
        }
        Ok(())
    }
}
