//! A model: graph + named tensors + the metadata a user needs to feed it (preprocessing, labels).

use super::Graph;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::prelude::v1::*;

/// How raw images become the graph input: resize, crop, scale to [0,1], then (x - mean) / std per channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Shorter side is resized to this before the center crop (torchvision: 256 for a 224 crop).
    pub resize: usize,
    /// Center crop [height, width]; equals the graph input's spatial size.
    pub crop: [usize; 2],
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// ImageNet statistics, torchvision's 256 -> 224 recipe.
    pub fn imagenet() -> Self {
        Preprocess { resize: 256, crop: [224, 224], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
    }
    /// CIFAR-10 statistics at 32x32.
    pub fn cifar10() -> Self {
        Preprocess { resize: 32, crop: [32, 32], mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616] }
    }
}

/// Graph, tensors and metadata. Tensors borrow from the file bytes where possible (`'a`).
#[derive(Clone, Debug, PartialEq)]
pub struct Model<'a> {
    pub name: String,
    pub graph: Graph,
    pub tensors: BTreeMap<String, Tensor<'a>>,
    pub preprocess: Option<Preprocess>,
    pub labels: Vec<String>,
}

impl<'a> Model<'a> {
    /// The tensor `<node>.<role>`, if present.
    pub fn tensor(&self, node: &str, role: &str) -> Option<&Tensor<'a>> {
        self.tensors.get(&format!("{node}.{role}"))
    }
    /// Learnable parameters, counted as PyTorch does: conv / linear weights and biases and batchnorm
    /// gamma / beta (not running statistics, not quantization parameters).
    pub fn parameter_count(&self) -> u64 {
        const LEARNABLE: [&str; 4] = [".weight", ".bias", ".gamma", ".beta"];
        self.tensors
            .iter()
            .filter(|(k, _)| LEARNABLE.iter().any(|r| k.ends_with(r)))
            .map(|(_, t)| t.numel() as u64)
            .sum()
    }

    /// Bytes of all stored tensors.
    pub fn weight_bytes(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }

    /// Converts every borrowed tensor into an owned one, detaching the model from the file bytes.
    pub fn into_owned(self) -> Model<'static> {
        Model {
            name: self.name,
            graph: self.graph,
            tensors: self.tensors.into_iter().map(|(k, t)| (k, t.into_owned())).collect(),
            preprocess: self.preprocess,
            labels: self.labels,
        }
    }
}
