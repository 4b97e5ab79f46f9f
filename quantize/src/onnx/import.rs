//! ONNX → ResEdge IR. Walks the graph node by node (tract-onnx parses the protobuf) and maps each ONNX op
//! to ours; constants are folded on the way. Recognized patterns:
//! - option-A shortcuts: `Slice` (every 2nd row / column) + `Concat(zeros, x, zeros)` or a channel `Pad`;
//! - `MatMul` + `Add(constant)` as a linear layer, `Reshape(x, [N, -1])` as a flatten;
//! - QDQ int8 files: `DequantizeLinear` of constant weights is folded to f32, and each activation's
//!   `QuantizeLinear` → `DequantizeLinear` pair is removed and its scale / zero point recorded, so the
//!   quantizer lowers the float graph with exactly the file's quantization.
//!
//! Every unsupported op is collected and reported in one error.

use super::proto::{array, Array, Attrs, Data};
use anyhow::{bail, ensure, Context, Result};
use resedge::graph::{Activation, Graph, Input, Model, Node, Op, QParams, QType, Window};
use resedge::quant::QParamMap;
use resedge::tensor::Tensor;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use tract_onnx::pb::{self, type_proto, NodeProto};
use tract_onnx::prelude::Framework;

/// Largest kernel / stride / pad / dilation accepted from a file.
const MAX_WINDOW: i64 = 1 << 12;
/// `ends` at or above this means "to the end" (exporters write INT64_MAX or INT32_MAX).
const SLICE_TO_END: i64 = i32::MAX as i64;

/// An imported model and, for QDQ files, the activation quantization the file carries.
pub struct Imported {
    pub model: Model<'static>,
    /// Empty for float files.
    pub qparams: QParamMap,
}

/// What an ONNX value is on our side.
#[derive(Clone, Debug)]
enum Val {
    /// One of our values.
    Value(String),
    /// `src` subsampled by `stride` [rows, cols] (pending option-A slices).
    Strided { src: String, stride: [usize; 2] },
    /// `src` after a QuantizeLinear, waiting for its DequantizeLinear.
    Quantized { src: String, q: QParams },
    /// Output of an unsupported node (already reported).
    Poisoned,
}

#[derive(Default)]
struct Importer {
    consts: HashMap<String, Array>,
    vals: HashMap<String, Val>,
    nodes: Vec<Node>,
    tensors: BTreeMap<String, Tensor<'static>>,
    used: HashSet<String>,
    qparams: QParamMap,
    unsupported: BTreeMap<String, usize>,
}

/// Imports an ONNX file from memory. `name` becomes the model's name.
pub fn import(bytes: &[u8], name: &str) -> Result<Imported> {
    let proto = tract_onnx::onnx().proto_model_for_read(&mut &bytes[..]).context("not a readable ONNX protobuf")?;
    let opset = proto.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version);
    if let Some(v) = opset {
        ensure!((7..=21).contains(&v), "ONNX opset {v} is not supported (7 to 21 are; tested 11 to 17)");
    }
    let graph = proto.graph.as_ref().context("the ONNX file has no graph")?;
    let mut im = Importer::default();
    for t in &graph.initializer {
        im.consts.insert(t.name.clone(), array(t)?);
    }
    let input = graph_input(graph, &im.consts)?;
    im.used.insert(input.name.clone());
    im.vals.insert(input.name.clone(), Val::Value(input.name.clone()));
    for node in &graph.node {
        im.node(node).with_context(|| format!("ONNX node `{}` ({})", node.name, node.op_type))?;
    }
    if !im.unsupported.is_empty() {
        let list: Vec<String> = im.unsupported.iter().map(|(op, n)| format!("{op} (x{n})")).collect();
        let known: Vec<&str> = supported_ops().into_iter().collect();
        bail!("unsupported ONNX ops: {} (supported: {})", list.join(", "), known.join(", "));
    }
    let out_name = &graph.output.first().context("the ONNX graph has no output")?.name;
    let output = match im.vals.get(out_name) {
        Some(Val::Value(v)) => v.clone(),
        Some(Val::Quantized { src, .. }) => src.clone(),
        _ => bail!("graph output `{out_name}` is not computed by a supported node"),
    };
    ensure!(!im.nodes.is_empty(), "the ONNX graph has no supported compute nodes");
    let model = Model {
        name: name.to_string(),
        graph: Graph { input, nodes: im.nodes, output },
        tensors: im.tensors,
        preprocess: None,
        labels: vec![],
    };
    Ok(Imported { model, qparams: im.qparams })
}

/// The single float input that is not an initializer: [N, C, H, W] with N fixed or symbolic.
fn graph_input(graph: &pb::GraphProto, consts: &HashMap<String, Array>) -> Result<Input> {
    let inputs: Vec<&pb::ValueInfoProto> = graph.input.iter().filter(|i| !consts.contains_key(&i.name)).collect();
    ensure!(inputs.len() == 1, "expected one graph input, found {}", inputs.len());
    let vi = inputs[0];
    let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        bail!("graph input `{}` is not a tensor", vi.name);
    };
    ensure!(t.elem_type == pb::tensor_proto::DataType::Float as i32, "graph input `{}` is not float32", vi.name);
    let dims = &t.shape.as_ref().context("graph input has no shape")?.dim;
    ensure!(dims.len() == 4, "graph input `{}` has rank {}, expected [N, C, H, W]", vi.name, dims.len());
    let mut shape = vec![];
    for d in &dims[1..] {
        match d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if (1..=1 << 16).contains(&v) => {
                shape.push(v as usize)
            }
            _ => bail!("graph input `{}`: C, H and W must be fixed positive sizes", vi.name),
        }
    }
    Ok(Input { name: vi.name.clone(), shape })
}

/// A readable unique node name from the exporter's (`/layer1/layer1.0/conv1/Conv` → `layer1.0.conv1`).
fn readable(node: &NodeProto) -> String {
    let op = node.op_type.as_str();
    let mut parts: Vec<&str> = node.name.trim_start_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    if parts.last().is_some_and(|l| *l == op || l.strip_prefix(op).is_some_and(|r| r.starts_with('_'))) {
        parts.pop();
    }
    let base = match parts.as_slice() {
        [] => String::new(),
        [.., prev, last] if !last.starts_with(prev) => format!("{prev}.{last}"),
        [.., last] => last.to_string(),
    };
    let functional = matches!(op, "Add" | "Concat" | "Slice" | "Pad" | "Flatten" | "Reshape");
    match (base.is_empty(), functional) {
        (true, _) => op.to_ascii_lowercase(),
        (false, true) => format!("{base}.{}", op.to_ascii_lowercase()),
        (false, false) => base,
    }
}

impl Importer {
    fn unique(&mut self, node: &NodeProto) -> String {
        let base = readable(node);
        let mut name = base.clone();
        let mut k = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }

    fn konst(&self, name: &str, what: &str) -> Result<&Array> {
        self.consts.get(name).with_context(|| format!("{what} `{name}` must be a constant"))
    }

    fn opt_konst(&self, node: &NodeProto, i: usize) -> Option<&Array> {
        node.input.get(i).filter(|n| !n.is_empty()).and_then(|n| self.consts.get(n))
    }

    /// Our value for ONNX input `i` (None if poisoned).
    fn value(&self, node: &NodeProto, i: usize) -> Result<Option<String>> {
        let name = node.input.get(i).with_context(|| format!("missing input {i}"))?;
        match self.vals.get(name) {
            Some(Val::Value(v)) => Ok(Some(v.clone())),
            Some(Val::Poisoned) => Ok(None),
            Some(Val::Strided { .. }) => bail!("a strided slice of `{name}` is only supported as an option-A shortcut"),
            Some(Val::Quantized { .. }) => bail!("`{name}` is quantized but not dequantized before use"),
            None if self.consts.contains_key(name) => bail!("constant `{name}` where a computed value is expected"),
            None => bail!("input `{name}` is not defined before use"),
        }
    }

    fn emit(&mut self, node: &NodeProto, op: Op, inputs: Vec<String>) -> String {
        let name = self.unique(node);
        self.nodes.push(Node { name: name.clone(), op, inputs, output_q: None });
        if let Some(out) = node.output.first() {
            self.vals.insert(out.clone(), Val::Value(name.clone()));
        }
        name
    }

    fn set(&mut self, node: &NodeProto, v: Val) {
        if let Some(out) = node.output.first() {
            self.vals.insert(out.clone(), v);
        }
    }

    fn node(&mut self, node: &NodeProto) -> Result<()> {
        let a = Attrs(node);
        ensure!(node.domain.is_empty() || node.domain == "ai.onnx", "operator domain `{}` is not supported", node.domain);
        ensure!(!node.output.is_empty(), "node has no output");
        // Constants fold; everything downstream of a poisoned value is poisoned (reported once).
        if node.op_type == "Constant" {
            let t = a.tensor("value").context("Constant without a tensor `value`")?;
            self.consts.insert(node.output[0].clone(), array(t)?);
            return Ok(());
        }
        let poisoned = node.input.iter().any(|i| matches!(self.vals.get(i), Some(Val::Poisoned)));
        if poisoned {
            self.set(node, Val::Poisoned);
            return Ok(());
        }
        match node.op_type.as_str() {
            "Identity" | "Dropout" => {
                let src = node.input.first().context("missing input")?;
                if let Some(c) = self.consts.get(src).cloned() {
                    self.consts.insert(node.output[0].clone(), c);
                } else {
                    let v = self.vals.get(src).cloned().with_context(|| format!("input `{src}` undefined"))?;
                    self.set(node, v);
                }
            }
            "Conv" => self.conv(node)?,
            "BatchNormalization" => {
                let x = self.value(node, 0)?.context("poisoned")?;
                ensure!(a.int("training_mode", 0) == 0, "BatchNormalization in training mode");
                let c = self.konst(&node.input[1], "scale")?.len();
                let name = self.emit(node, Op::BatchNorm { eps: a.float("epsilon", 1e-5) }, vec![x]);
                for (i, role) in [(1, "gamma"), (2, "beta"), (3, "mean"), (4, "var")] {
                    let t = self.konst(node.input.get(i).context("missing input")?, role)?;
                    ensure!(t.len() == c, "BatchNormalization {role} has {} values, scale has {c}", t.len());
                    let v = t.f32(role)?.to_vec();
                    self.tensors.insert(format!("{name}.{role}"), Tensor::from_f32(vec![c], &v));
                }
            }
            "Relu" => self.act(node, Activation::Relu)?,
            "Clip" => {
                let bound = |i: usize, attr: &str, d: f32| -> Result<f32> {
                    match self.opt_konst(node, i) {
                        Some(t) => Ok(t.scalar(attr)? as f32),
                        None => Ok(Attrs(node).float(attr, d)),
                    }
                };
                let (lo, hi) = (bound(1, "min", f32::NEG_INFINITY)?, bound(2, "max", f32::INFINITY)?);
                let act = match (lo, hi) {
                    (0.0, f32::INFINITY) => Activation::Relu,
                    (0.0, 6.0) => Activation::Relu6,
                    _ => Activation::Clip { min: lo, max: hi },
                };
                self.act(node, act)?;
            }
            "Add" => self.add(node)?,
            "MaxPool" | "AveragePool" => {
                let x = self.value(node, 0)?.context("poisoned")?;
                ensure!(a.int("ceil_mode", 0) == 0, "ceil_mode=1 is not supported");
                let window = self.window(node, None)?;
                ensure!(window.dilation == [1, 1], "dilated pooling is not supported");
                let op = if node.op_type == "MaxPool" {
                    ensure!(node.output.len() == 1, "MaxPool indices output is not supported");
                    Op::MaxPool { window }
                } else {
                    Op::AvgPool { window, count_include_pad: a.int("count_include_pad", 0) != 0 }
                };
                self.emit(node, op, vec![x]);
            }
            "GlobalAveragePool" => {
                let x = self.value(node, 0)?.context("poisoned")?;
                self.emit(node, Op::GlobalAvgPool, vec![x]);
            }
            "Flatten" => {
                let x = self.value(node, 0)?.context("poisoned")?;
                ensure!(a.int("axis", 1) == 1, "Flatten is supported with axis=1 only");
                self.emit(node, Op::Flatten, vec![x]);
            }
            "Reshape" => {
                let x = self.value(node, 0)?.context("poisoned")?;
                let shape = self.konst(node.input.get(1).context("missing shape")?, "shape")?.ints("shape")?;
                ensure!(
                    shape.len() == 2 && (shape[1] == -1 || matches!(shape[0], -1 | 0 | 1)),
                    "Reshape to {shape:?} is supported only as a flatten to [N, -1]"
                );
                self.emit(node, Op::Flatten, vec![x]);
            }
            "Gemm" => self.gemm(node)?,
            "MatMul" => {
                let x = self.value(node, 0)?.context("poisoned")?;
                let w = self.konst(node.input.get(1).context("missing weight")?, "MatMul weight")?.clone();
                ensure!(w.shape.len() == 2, "MatMul weight must be 2-D");
                self.linear(node, x, &transpose(&w)?, None)?;
            }
            "Softmax" => {
                let x = self.value(node, 0)?.context("poisoned")?;
                ensure!(matches!(a.int("axis", -1), -1 | 1), "Softmax is supported over the last axis of [N, K]");
                self.emit(node, Op::Softmax, vec![x]);
            }
            "Slice" => self.slice(node)?,
            "Concat" => self.concat(node)?,
            "Pad" => self.pad(node)?,
            "QuantizeLinear" => {
                // A strided slice is a subsampled copy: it keeps its source's quantization.
                if let Some(v @ Val::Strided { .. }) = self.vals.get(&node.input[0]).cloned() {
                    self.set(node, v);
                    return Ok(());
                }
                let src = self.value(node, 0)?.context("poisoned")?;
                let q = self.qparams_of(node)?;
                self.set(node, Val::Quantized { src, q });
            }
            "DequantizeLinear" => self.dequantize(node)?,
            other => {
                *self.unsupported.entry(other.to_string()).or_default() += 1;
                self.set(node, Val::Poisoned);
            }
        }
        Ok(())
    }

    fn act(&mut self, node: &NodeProto, activation: Activation) -> Result<()> {
        let x = self.value(node, 0)?.context("poisoned")?;
        self.emit(node, Op::Act { activation }, vec![x]);
        Ok(())
    }

    /// Kernel from `kernel_shape` (or `weight_hw`), strides, pads [t, l, b, r], dilations.
    fn window(&self, node: &NodeProto, weight_hw: Option<[usize; 2]>) -> Result<Window> {
        let a = Attrs(node);
        let pair = |name: &str, d: Option<[usize; 2]>| -> Result<[usize; 2]> {
            match a.usizes(name, MAX_WINDOW)? {
                Some(v) => {
                    ensure!(v.len() == 2, "`{name}` must have 2 values (2-D ops only), got {v:?}");
                    Ok([v[0], v[1]])
                }
                None => d.with_context(|| format!("missing `{name}`")),
            }
        };
        let kernel = pair("kernel_shape", weight_hw)?;
        if let Some(w) = weight_hw {
            ensure!(kernel == w, "kernel_shape {kernel:?} differs from the weight's {w:?}");
        }
        let stride = pair("strides", Some([1, 1]))?;
        let dilation = pair("dilations", Some([1, 1]))?;
        ensure!(kernel.iter().chain(&stride).chain(&dilation).all(|&v| v > 0), "zero kernel, stride or dilation");
        let padding = match a.string("auto_pad").as_deref() {
            None | Some("NOTSET") => match a.usizes("pads", MAX_WINDOW)? {
                Some(p) => {
                    ensure!(p.len() == 4, "`pads` must have 4 values, got {p:?}");
                    [p[0], p[1], p[2], p[3]]
                }
                None => [0; 4],
            },
            Some("VALID") => [0; 4],
            Some(other) => bail!("auto_pad={other} is not supported; export with explicit pads"),
        };
        Ok(Window { kernel, stride, padding, dilation })
    }

    fn conv(&mut self, node: &NodeProto) -> Result<()> {
        let x = self.value(node, 0)?.context("poisoned")?;
        let w = self.konst(node.input.get(1).context("missing weight")?, "Conv weight")?.clone();
        ensure!(w.shape.len() == 4, "Conv weight must be 4-D (2-D convolution), got {:?}", w.shape);
        let groups = usize::try_from(Attrs(node).int("group", 1)).ok().filter(|&g| g > 0).context("bad `group`")?;
        let oc = w.shape[0];
        ensure!(oc % groups == 0, "{oc} output channels are not divisible by {groups} groups");
        let window = self.window(node, Some([w.shape[2], w.shape[3]]))?;
        let bias = self.opt_konst(node, 2).cloned();
        if let Some(b) = &bias {
            ensure!(b.len() == oc, "Conv bias has {} values for {oc} channels", b.len());
        }
        let op = Op::Conv { out_channels: oc, window, groups, bias: bias.is_some(), residual: false, activation: Activation::None };
        let name = self.emit(node, op, vec![x]);
        self.tensors.insert(format!("{name}.weight"), Tensor::from_f32(w.shape.clone(), w.f32("Conv weight")?));
        if let Some(b) = bias {
            self.tensors.insert(format!("{name}.bias"), Tensor::from_f32(vec![oc], b.f32("Conv bias")?));
        }
        Ok(())
    }

    /// A linear layer from a weight [out, in] and an optional bias.
    fn linear(&mut self, node: &NodeProto, x: String, w: &Array, b: Option<Vec<f32>>) -> Result<()> {
        let out = w.shape[0];
        if let Some(b) = &b {
            ensure!(b.len() == out, "bias has {} values for {out} outputs", b.len());
        }
        let op = Op::Linear { out_features: out, bias: b.is_some(), activation: Activation::None };
        let name = self.emit(node, op, vec![x]);
        self.tensors.insert(format!("{name}.weight"), Tensor::from_f32(w.shape.clone(), w.f32("weight")?));
        if let Some(b) = b {
            self.tensors.insert(format!("{name}.bias"), Tensor::from_f32(vec![out], &b));
        }
        Ok(())
    }

    fn gemm(&mut self, node: &NodeProto) -> Result<()> {
        let a = Attrs(node);
        let x = self.value(node, 0)?.context("poisoned")?;
        ensure!(a.int("transA", 0) == 0, "Gemm with transA=1 is not supported");
        let w = self.konst(node.input.get(1).context("missing weight")?, "Gemm weight")?.clone();
        ensure!(w.shape.len() == 2, "Gemm weight must be 2-D");
        let mut w = if a.int("transB", 0) != 0 { w } else { transpose(&w)? };
        let (alpha, beta) = (a.float("alpha", 1.0), a.float("beta", 1.0));
        if let Data::F32(v) = &mut w.data {
            v.iter_mut().for_each(|x| *x *= alpha);
        }
        let out = w.shape[0];
        let bias = match self.opt_konst(node, 2) {
            Some(c) => {
                let v = c.f32("Gemm bias")?;
                let b: Vec<f32> = match v.len() {
                    1 => vec![v[0] * beta; out],
                    n if n == out => v.iter().map(|x| x * beta).collect(),
                    n => bail!("Gemm bias has {n} values for {out} outputs"),
                };
                Some(b)
            }
            None => None,
        };
        self.linear(node, x, &w, bias)
    }

    fn add(&mut self, node: &NodeProto) -> Result<()> {
        ensure!(node.input.len() == 2, "Add needs two inputs");
        // Add(MatMul(x, W), b): the bias of the linear layer just emitted.
        for (ci, vi) in [(1, 0), (0, 1)] {
            if let Some(b) = self.opt_konst(node, ci).cloned() {
                let x = self.value(node, vi)?.context("poisoned")?;
                let last = self.nodes.last_mut().filter(|n| n.name == x);
                let Some(Node { op: Op::Linear { bias: has_bias @ false, out_features, .. }, name, .. }) = last else {
                    bail!("Add of a constant is supported only as the bias of a preceding MatMul");
                };
                ensure!(b.len() == *out_features, "bias has {} values for {out_features} outputs", b.len());
                *has_bias = true;
                let key = format!("{name}.bias");
                let t = Tensor::from_f32(vec![b.len()], b.f32("bias")?);
                self.tensors.insert(key, t);
                self.set(node, Val::Value(x));
                return Ok(());
            }
        }
        let (x, y) = (self.value(node, 0)?.context("poisoned")?, self.value(node, 1)?.context("poisoned")?);
        self.emit(node, Op::Add { activation: Activation::None }, vec![x, y]);
        Ok(())
    }

    /// `Slice` of every k-th row / column from 0 to the end, recorded for the option-A pattern.
    fn slice(&mut self, node: &NodeProto) -> Result<()> {
        let a = Attrs(node);
        let src_name = node.input.first().context("missing input")?;
        let (src, mut stride) = match self.vals.get(src_name) {
            Some(Val::Value(v)) => (v.clone(), [1, 1]),
            Some(Val::Strided { src, stride }) => (src.clone(), *stride),
            _ => bail!("Slice input `{src_name}` must be a computed value"),
        };
        let arg = |i: usize, attr: &str| -> Result<Option<Vec<i64>>> {
            match self.opt_konst(node, i) {
                Some(t) => t.ints(attr).map(Some),
                None => Ok(a.ints(attr).map(<[i64]>::to_vec)),
            }
        };
        let starts = arg(1, "starts")?.context("Slice without starts")?;
        let ends = arg(2, "ends")?.context("Slice without ends")?;
        let n = starts.len();
        let axes = arg(3, "axes")?.unwrap_or_else(|| (0..n as i64).collect());
        let steps = arg(4, "steps")?.unwrap_or_else(|| vec![1; n]);
        ensure!(ends.len() == n && axes.len() == n && steps.len() == n, "Slice argument lengths differ");
        for i in 0..n {
            let axis = match axes[i] {
                2 | -2 => 0,
                3 | -1 => 1,
                ax => bail!("Slice along axis {ax} is supported only as an option-A shortcut's spatial subsampling"),
            };
            ensure!(
                starts[i] == 0 && ends[i] >= SLICE_TO_END && (1..=MAX_WINDOW).contains(&steps[i]),
                "Slice {}:{}:{} is supported only as 0:end:step (option-A subsampling)",
                starts[i],
                ends[i],
                steps[i]
            );
            stride[axis] *= steps[i] as usize;
        }
        self.set(node, Val::Strided { src, stride });
        Ok(())
    }

    /// The strided source of an option-A shortcut: (value, stride).
    fn shortcut_source(&self, onnx_name: &str) -> Result<(String, usize)> {
        match self.vals.get(onnx_name) {
            Some(Val::Value(v)) => Ok((v.clone(), 1)),
            Some(Val::Strided { src, stride }) if stride[0] == stride[1] => Ok((src.clone(), stride[0])),
            Some(Val::Strided { stride, .. }) => bail!("option-A shortcut with unequal strides {stride:?}"),
            _ => bail!("`{onnx_name}` is not a computed value"),
        }
    }

    /// `Concat(axis=1)(zeros, x, zeros)`: the option-A shortcut's zero-padded channels.
    fn concat(&mut self, node: &NodeProto) -> Result<()> {
        ensure!(matches!(Attrs(node).int("axis", 0), 1 | -3), "Concat is supported only along channels (option A)");
        let (mut before, mut after, mut src) = (0, 0, None);
        for name in &node.input {
            match self.consts.get(name) {
                Some(z) => {
                    ensure!(z.all_zero() && z.shape.len() == 4, "Concat of a non-zero constant is not supported");
                    if src.is_none() { before += z.shape[1] } else { after += z.shape[1] }
                }
                None => {
                    ensure!(src.is_none(), "Concat of two computed values is not supported (only option-A zero padding)");
                    src = Some(self.shortcut_source(name)?);
                }
            }
        }
        let (x, stride) = src.context("Concat of constants only")?;
        self.emit(node, Op::ShortcutA { stride, pad_before: before, pad_after: after }, vec![x]);
        Ok(())
    }

    /// A constant-zero `Pad` of channels only: the other common export of the option-A shortcut.
    fn pad(&mut self, node: &NodeProto) -> Result<()> {
        let a = Attrs(node);
        ensure!(a.string("mode").as_deref().unwrap_or("constant") == "constant", "Pad mode must be constant");
        let pads = match self.opt_konst(node, 1) {
            Some(t) => t.ints("pads")?,
            None => a.ints("pads").context("Pad without pads")?.to_vec(),
        };
        let value = match self.opt_konst(node, 2) {
            Some(t) => t.scalar("constant_value")?,
            None => a.float("value", 0.0) as f64,
        };
        ensure!(value == 0.0, "Pad with a non-zero value is not supported");
        ensure!(
            pads.len() == 8 && pads.iter().enumerate().all(|(i, &p)| p >= 0 && (i % 4 == 1 || p == 0)),
            "Pad is supported only on channels (option-A shortcut), got {pads:?}"
        );
        let (x, stride) = self.shortcut_source(&node.input[0])?;
        let op = Op::ShortcutA { stride, pad_before: pads[1] as usize, pad_after: pads[5] as usize };
        self.emit(node, op, vec![x]);
        Ok(())
    }

    /// Per-tensor scale and zero point of a QuantizeLinear / DequantizeLinear (activations).
    fn qparams_of(&self, node: &NodeProto) -> Result<QParams> {
        let scale = self.konst(node.input.get(1).context("missing scale")?, "scale")?.scalar("activation scale")?;
        ensure!(scale > 0.0 && scale.is_finite(), "activation scale {scale} must be positive");
        let (dtype, zero_point) = match self.opt_konst(node, 2) {
            Some(z) => match &z.data {
                Data::U8(v) if v.len() == 1 => (QType::U8, v[0] as i32),
                Data::I8(v) if v.len() == 1 => (QType::I8, v[0] as i32),
                _ => bail!("activation zero point must be one uint8 or int8 value"),
            },
            None => (QType::U8, 0),
        };
        Ok(QParams { dtype, scale: scale as f32, zero_point })
    }

    fn dequantize(&mut self, node: &NodeProto) -> Result<()> {
        let src = node.input.first().context("missing input")?;
        if let Some(q) = self.consts.get(src) {
            let folded = dequantize_const(q, self.konst(&node.input[1], "scale")?, self.opt_konst(node, 2), Attrs(node).int("axis", 1))?;
            self.consts.insert(node.output[0].clone(), folded);
            return Ok(());
        }
        match self.vals.get(src).cloned() {
            Some(v @ Val::Strided { .. }) => {
                self.set(node, v);
                Ok(())
            }
            Some(Val::Quantized { src: v, q }) => {
                let dq = self.qparams_of(node)?;
                ensure!(dq == q, "DequantizeLinear parameters {dq:?} differ from its QuantizeLinear's {q:?}");
                if let Some(prev) = self.qparams.insert(v.clone(), q) {
                    ensure!(prev == q, "value `{v}` is quantized twice with different parameters");
                }
                self.set(node, Val::Value(v));
                Ok(())
            }
            _ => bail!("DequantizeLinear of `{src}`, which is neither a constant nor quantized"),
        }
    }
}

/// Constant DequantizeLinear: per-tensor or per-axis scale and zero point.
fn dequantize_const(q: &Array, scale: &Array, zp: Option<&Array>, axis: i64) -> Result<Array> {
    let values = q.to_f64();
    let scales = scale.to_f64();
    let zps = zp.map(Array::to_f64).unwrap_or_else(|| vec![0.0; scales.len()]);
    ensure!(zps.len() == scales.len(), "zero point and scale lengths differ");
    ensure!(!scales.is_empty(), "empty scale");
    let out: Vec<f32> = if scales.len() == 1 {
        values.iter().map(|&v| ((v - zps[0]) * scales[0]) as f32).collect()
    } else {
        let rank = q.shape.len() as i64;
        let ax = if axis < 0 { axis + rank } else { axis };
        ensure!((0..rank).contains(&ax), "axis {axis} out of range for rank {rank}");
        let ax = ax as usize;
        ensure!(q.shape[ax] == scales.len(), "{} scales for axis {ax} of size {}", scales.len(), q.shape[ax]);
        let inner: usize = q.shape[ax + 1..].iter().product();
        values.iter().enumerate().map(|(i, &v)| {
            let c = (i / inner.max(1)) % scales.len();
            ((v - zps[c]) * scales[c]) as f32
        }).collect()
    };
    Ok(Array { shape: q.shape.clone(), data: Data::F32(out) })
}

/// [rows, cols] → [cols, rows].
fn transpose(w: &Array) -> Result<Array> {
    let v = w.f32("weight")?;
    let (r, c) = (w.shape[0], w.shape[1]);
    let t: Vec<f32> = (0..c * r).map(|i| v[(i % r) * c + i / r]).collect();
    Ok(Array { shape: vec![c, r], data: Data::F32(t) })
}

/// Ops the importer understands, listed in the unsupported-ops error.
pub fn supported_ops() -> BTreeSet<&'static str> {
    [
        "Conv", "BatchNormalization", "Relu", "Clip", "Add", "MaxPool", "AveragePool", "GlobalAveragePool",
        "Flatten", "Reshape", "Gemm", "MatMul", "Softmax", "Slice", "Concat", "Pad", "Constant", "Identity",
        "Dropout", "QuantizeLinear", "DequantizeLinear",
    ]
    .into_iter()
    .collect()
}
