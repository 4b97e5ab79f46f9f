//! ONNX export of an f32 model file (opset 13), so other engines can check our weights. libtorch's C++
//! API has no ONNX exporter, so the graph is written from the ResEdge IR: Conv, BatchNormalization, Relu,
//! Clip, Add, MaxPool, AveragePool, GlobalAveragePool, Flatten, Gemm, Softmax; the option-A shortcut
//! becomes Slice (stride) + Pad (channels). Batch size is dynamic (`N`). Preprocessing and labels go into
//! `metadata_props`.

use anyhow::{bail, Context, Result};
use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    Message, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use resedge::graph::{Activation, Model, Op, Window};
use std::path::Path;

/// Opset the export targets.
pub const OPSET: i64 = 13;

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

fn int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

fn float(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = v;
    a
}

fn node(name: &str, op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    let mut n = NodeProto::new();
    n.name = name.into();
    n.op_type = op.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = vec![output.to_string()];
    n.attribute = attrs;
    n
}

fn f32_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.data_type = DataType::FLOAT as i32;
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

fn i64_tensor(name: &str, values: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = vec![values.len() as i64];
    t.data_type = DataType::INT64 as i32;
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim = dims
        .iter()
        .map(|d| {
            let mut dim = tensor_shape_proto::Dimension::new();
            dim.value = Some(match d {
                Some(v) => tensor_shape_proto::dimension::Value::DimValue(*v as i64),
                None => tensor_shape_proto::dimension::Value::DimParam("N".into()),
            });
            dim
        })
        .collect();
    let mut tt = type_proto::Tensor::new();
    tt.elem_type = DataType::FLOAT as i32;
    tt.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tt));
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v.type_ = Some(ty).into();
    v
}

fn window_attrs(w: &Window) -> Vec<AttributeProto> {
    let [t, l, b, r] = w.padding.map(|p| p as i64);
    vec![
        ints("kernel_shape", &w.kernel.map(|k| k as i64)),
        ints("strides", &w.stride.map(|s| s as i64)),
        ints("pads", &[t, l, b, r]),
    ]
}

/// Builds the ONNX model of an f32 model with unfolded or folded batchnorm (no int8 nodes).
pub fn to_onnx(model: &Model<'_>) -> Result<ModelProto> {
    let mut g = GraphProto::new();
    g.name = model.name.clone();
    let mut init = Vec::new();
    for (name, t) in &model.tensors {
        init.push(f32_tensor(name, &t.shape, &t.to_f32(name).with_context(|| format!("tensor `{name}`"))?));
    }
    let mut nodes = Vec::new();
    let act = |nodes: &mut Vec<NodeProto>, init: &mut Vec<TensorProto>, name: &str, x: &str, a: Activation| match a {
        Activation::None => {}
        Activation::Relu => nodes.push(node(name, "Relu", &[x], name, vec![])),
        Activation::Relu6 | Activation::Clip { .. } => {
            let (lo, hi) = a.bounds();
            let (mn, mx) = (format!("{name}.min"), format!("{name}.max"));
            init.push(f32_tensor(&mn, &[], &[lo]));
            init.push(f32_tensor(&mx, &[], &[hi]));
            nodes.push(node(name, "Clip", &[x, &mn, &mx], name, vec![]));
        }
    };
    for n in &model.graph.nodes {
        if n.output_q.is_some() {
            bail!("node `{}` is int8; ONNX export takes f32 models", n.name);
        }
        let x = n.inputs[0].as_str();
        let pre = format!("{}.pre_act", n.name);
        match &n.op {
            Op::Conv { window, groups, bias, residual, activation, .. } => {
                let w = format!("{}.weight", n.name);
                let b = format!("{}.bias", n.name);
                let mut inputs = vec![x, w.as_str()];
                if *bias {
                    inputs.push(&b);
                }
                let mut attrs = window_attrs(window);
                attrs.push(ints("dilations", &window.dilation.map(|d| d as i64)));
                attrs.push(int("group", *groups as i64));
                let fused = *residual || !activation.is_none();
                let conv_out = if fused { format!("{}.conv", n.name) } else { n.name.clone() };
                nodes.push(node(&n.name, "Conv", &inputs, &conv_out, attrs));
                let mut y = conv_out;
                if *residual {
                    let out = if activation.is_none() { n.name.clone() } else { pre.clone() };
                    nodes.push(node(&format!("{}.add", n.name), "Add", &[&y, &n.inputs[1]], &out, vec![]));
                    y = out;
                }
                if !activation.is_none() {
                    act(&mut nodes, &mut init, &n.name, &y, *activation);
                }
            }
            Op::BatchNorm { eps } => {
                let t = |r: &str| format!("{}.{r}", n.name);
                let (g_, b_, m_, v_) = (t("gamma"), t("beta"), t("mean"), t("var"));
                nodes.push(node(
                    &n.name,
                    "BatchNormalization",
                    &[x, &g_, &b_, &m_, &v_],
                    &n.name,
                    vec![float("epsilon", *eps)],
                ));
            }
            Op::Act { activation } => {
                if activation.is_none() {
                    nodes.push(node(&n.name, "Identity", &[x], &n.name, vec![]));
                } else {
                    act(&mut nodes, &mut init, &n.name, x, *activation);
                }
            }
            Op::Add { activation } => {
                let out = if activation.is_none() { n.name.clone() } else { pre.clone() };
                nodes.push(node(&format!("{}.add", n.name), "Add", &[x, &n.inputs[1]], &out, vec![]));
                act(&mut nodes, &mut init, &n.name, &out, *activation);
            }
            Op::MaxPool { window } => nodes.push(node(&n.name, "MaxPool", &[x], &n.name, window_attrs(window))),
            Op::AvgPool { window, count_include_pad } => {
                let mut attrs = window_attrs(window);
                attrs.push(int("count_include_pad", *count_include_pad as i64));
                nodes.push(node(&n.name, "AveragePool", &[x], &n.name, attrs));
            }
            Op::GlobalAvgPool => nodes.push(node(&n.name, "GlobalAveragePool", &[x], &n.name, vec![])),
            Op::Flatten => nodes.push(node(&n.name, "Flatten", &[x], &n.name, vec![int("axis", 1)])),
            Op::Linear { bias, activation, .. } => {
                let w = format!("{}.weight", n.name);
                let b = format!("{}.bias", n.name);
                let mut inputs = vec![x, w.as_str()];
                if *bias {
                    inputs.push(&b);
                }
                let out = if activation.is_none() { n.name.clone() } else { pre.clone() };
                nodes.push(node(&n.name, "Gemm", &inputs, &out, vec![int("transB", 1)]));
                act(&mut nodes, &mut init, &n.name, &out, *activation);
            }
            Op::Softmax => nodes.push(node(&n.name, "Softmax", &[x], &n.name, vec![int("axis", -1)])),
            Op::ShortcutA { stride, pad_before, pad_after } => {
                let s = *stride as i64;
                let names = ["starts", "ends", "axes", "steps", "pads"].map(|r| format!("{}.{r}", n.name));
                init.push(i64_tensor(&names[0], &[0, 0]));
                init.push(i64_tensor(&names[1], &[i64::MAX, i64::MAX]));
                init.push(i64_tensor(&names[2], &[2, 3]));
                init.push(i64_tensor(&names[3], &[s, s]));
                init.push(i64_tensor(&names[4], &[0, *pad_before as i64, 0, 0, 0, *pad_after as i64, 0, 0]));
                let sliced = format!("{}.subsample", n.name);
                nodes.push(node(&sliced, "Slice", &[x, &names[0], &names[1], &names[2], &names[3]], &sliced, vec![]));
                nodes.push(node(&n.name, "Pad", &[&sliced, &names[4]], &n.name, vec![]));
            }
            Op::Quantize | Op::Dequantize => bail!("node `{}` ({}) has no f32 ONNX form", n.name, n.op.name()),
        }
    }
    g.node = nodes;
    g.initializer = init;
    let in_shape: Vec<Option<usize>> =
        std::iter::once(None).chain(model.graph.input.shape.iter().map(|&d| Some(d))).collect();
    g.input = vec![value_info(&model.graph.input.name, &in_shape)];
    let classes = match model.graph.nodes.iter().rev().find_map(|n| match n.op {
        Op::Linear { out_features, .. } => Some(out_features),
        _ => None,
    }) {
        Some(c) => Some(c),
        None => bail!("model `{}` has no classifier (Linear) node", model.name),
    };
    g.output = vec![value_info(&model.graph.output, &[None, classes])];

    let mut m = ModelProto::new();
    m.ir_version = 7;
    m.producer_name = "resedge-train".into();
    m.producer_version = env!("CARGO_PKG_VERSION").into();
    let mut opset = OperatorSetIdProto::new();
    opset.version = OPSET;
    m.opset_import = vec![opset];
    let mut meta = Vec::new();
    if let Some(p) = &model.preprocess {
        meta.push(("resedge.preprocess", serde_json::to_string(p)?));
    }
    if !model.labels.is_empty() {
        meta.push(("labels", model.labels.join("\n")));
    }
    m.metadata_props = meta
        .into_iter()
        .map(|(k, v)| {
            let mut e = StringStringEntryProto::new();
            e.key = k.into();
            e.value = v;
            e
        })
        .collect();
    m.graph = Some(g).into();
    Ok(m)
}

/// Writes the ONNX form of `model` to `path`.
pub fn write(model: &Model<'_>, path: &Path) -> Result<()> {
    let bytes = to_onnx(model)?.write_to_bytes().context("encoding ONNX")?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
