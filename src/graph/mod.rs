//! The IR: a topologically ordered list of nodes over named values, in f32 or int8.
//!
//! Every node produces one value named after the node; the graph input is the value `input.name`. Weights
//! live in the model's tensor map under `<node>.<role>` (see docs/model-format.md). A quantized value carries
//! [`QParams`]; a node with `output_q` set runs in int8 and reads its requantization tensors from the map.

mod model;

pub use model::{Model, Preprocess};

use serde::{Deserialize, Serialize};
use std::prelude::v1::*;

/// Activation applied in an op's epilogue (or as a standalone node).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Activation {
    #[default]
    None,
    Relu,
    Relu6,
    Clip {
        min: f32,
        max: f32,
    },
}

impl Activation {
    /// The f32 clamp bounds this activation applies.
    pub fn bounds(self) -> (f32, f32) {
        match self {
            Activation::None => (f32::NEG_INFINITY, f32::INFINITY),
            Activation::Relu => (0.0, f32::INFINITY),
            Activation::Relu6 => (0.0, 6.0),
            Activation::Clip { min, max } => (min, max),
        }
    }
    pub fn is_none(&self) -> bool {
        matches!(self, Activation::None)
    }
}

/// Storage type of quantized activations. uint8 values are treated internally as int8 with the zero point
/// shifted by -128 (the arithmetic only ever sees `q - zero_point`, so results are identical).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QType {
    I8,
    U8,
}

/// Quantization of one activation tensor: `real = scale * (q - zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QParams {
    pub dtype: QType,
    pub scale: f32,
    pub zero_point: i32,
}

impl QParams {
    /// The (qmin, qmax) range of the storage type.
    pub fn range(&self) -> (i32, i32) {
        match self.dtype {
            QType::I8 => (-128, 127),
            QType::U8 => (0, 255),
        }
    }
}

/// 2-D window geometry shared by convolution and pooling. `padding` is [top, left, bottom, right].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub kernel: [usize; 2],
    #[serde(default = "ones")]
    pub stride: [usize; 2],
    #[serde(default)]
    pub padding: [usize; 4],
    #[serde(default = "ones")]
    pub dilation: [usize; 2],
}

fn ones() -> [usize; 2] {
    [1, 1]
}
fn one() -> usize {
    1
}

impl Window {
    /// A square window with symmetric padding.
    pub fn square(k: usize, stride: usize, pad: usize) -> Self {
        Window { kernel: [k, k], stride: [stride, stride], padding: [pad; 4], dilation: [1, 1] }
    }
}

/// The operators of ResNets and common CNN classifiers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Op {
    /// 2-D convolution, NCHW. Tensors: `weight` [oc, ic/groups, kh, kw], optional `bias` [oc].
    /// With `residual`, the second input is added before the activation (fused residual block tail).
    Conv {
        out_channels: usize,
        #[serde(flatten)]
        window: Window,
        #[serde(default = "one")]
        groups: usize,
        #[serde(default)]
        bias: bool,
        #[serde(default)]
        residual: bool,
        #[serde(default)]
        activation: Activation,
    },
    /// Inference batchnorm: tensors `gamma`, `beta`, `mean`, `var` [C]. Folded into the preceding conv by
    /// the planner where possible; otherwise run as a per-channel affine (f32 only).
    BatchNorm {
        eps: f32,
    },
    /// Standalone activation (ReLU, ReLU6, Clip).
    Act {
        activation: Activation,
    },
    /// Elementwise sum of two same-shaped inputs (the residual add), then the activation.
    Add {
        #[serde(default)]
        activation: Activation,
    },
    MaxPool {
        #[serde(flatten)]
        window: Window,
    },
    AvgPool {
        #[serde(flatten)]
        window: Window,
        #[serde(default)]
        count_include_pad: bool,
    },
    GlobalAvgPool,
    /// y = x W^T + b. Tensors: `weight` [out, in], optional `bias` [out]. Input [N, in] (or [N, in, 1, 1]).
    Linear {
        out_features: usize,
        #[serde(default)]
        bias: bool,
        #[serde(default)]
        activation: Activation,
    },
    Flatten,
    /// Softmax over the last axis (f32).
    Softmax,
    /// The paper's option-A shortcut: subsample by `stride`, zero-pad channels before and after.
    ShortcutA {
        stride: usize,
        pad_before: usize,
        pad_after: usize,
    },
    /// f32 -> quantized, by the node's `output_q`.
    Quantize,
    /// quantized -> f32.
    Dequantize,
}

impl Op {
    /// The ONNX-style name of the op.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "Conv",
            Op::BatchNorm { .. } => "BatchNorm",
            Op::Act { .. } => "Act",
            Op::Add { .. } => "Add",
            Op::MaxPool { .. } => "MaxPool",
            Op::AvgPool { .. } => "AvgPool",
            Op::GlobalAvgPool => "GlobalAvgPool",
            Op::Linear { .. } => "Linear",
            Op::Flatten => "Flatten",
            Op::Softmax => "Softmax",
            Op::ShortcutA { .. } => "ShortcutA",
            Op::Quantize => "Quantize",
            Op::Dequantize => "Dequantize",
        }
    }
    /// How many inputs the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Add { .. } | Op::Conv { residual: true, .. } => 2,
            _ => 1,
        }
    }
}

/// One node: an op, its input value names, and (for int8 nodes) the quantization of its output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(flatten)]
    pub op: Op,
    pub inputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_q: Option<QParams>,
}

/// The graph input: name and shape without the batch dimension ([C, H, W]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Input {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A whole network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub input: Input,
    pub nodes: Vec<Node>,
    pub output: String,
}

impl Graph {
    /// Index of the node that produces `value`, or None for the graph input / unknown names.
    pub fn producer(&self, value: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == value)
    }
    /// Indices of the nodes that read `value`.
    pub fn consumers(&self, value: &str) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].inputs.iter().any(|v| v == value)).collect()
    }
    /// Whether any node computes in int8.
    pub fn is_quantized(&self) -> bool {
        self.nodes.iter().any(|n| n.output_q.is_some())
    }
}
