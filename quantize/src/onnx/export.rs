//! ResEdge IR → ONNX (opset 17). Float models become plain ONNX; int8 models become standard QDQ ONNX:
//! every int8 value is a `QuantizeLinear` output (uint8 or int8, the model's own scale and zero point),
//! weights are int8 initializers behind a per-channel `DequantizeLinear`, biases int32 ones, and each op
//! runs in float between DequantizeLinear and QuantizeLinear. This carries our calibration to any engine
//! that reads QDQ (ONNX Runtime, TensorRT, Rockchip's toolkit).
//!
//! tract 0.22 reads only the first scale of a per-axis DequantizeLinear (silently), so for it
//! [`ExportOptions::float_weights`] stores each weight and bias as the exact f32 value of its int8 / int32
//! form instead; the activations stay QDQ.

use anyhow::{bail, Context, Result};
use prost::Message;
use resedge::graph::{Activation, Model, Node, Op, QParams, QType, Window};
use resedge::tensor::Tensor;
use std::collections::HashMap;
use tract_onnx::pb::{self, tensor_proto::DataType};

const OPSET: i64 = 17;

/// Export choices.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExportOptions {
    /// Weights and biases of int8 layers as f32 (their dequantized values) rather than int8 + per-channel
    /// DequantizeLinear.
    pub float_weights: bool,
}

struct Exporter<'m> {
    model: &'m Model<'m>,
    opts: ExportOptions,
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    /// Our value → (ONNX name, quantization if it is an int8 value).
    vals: HashMap<String, (String, Option<QParams>)>,
    /// Float views of quantized values already made.
    dq_cache: HashMap<String, String>,
    counter: usize,
}

fn attr_ints(name: &str, v: &[usize]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn tensor(name: &str, dims: &[usize], dt: DataType, raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: dt as i32,
        raw_data: raw,
        ..Default::default()
    }
}

fn f32_raw(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn window_attrs(w: &Window) -> Vec<pb::AttributeProto> {
    vec![
        attr_ints("kernel_shape", &w.kernel),
        attr_ints("strides", &w.stride),
        attr_ints("pads", &w.padding),
        attr_ints("dilations", &w.dilation),
    ]
}

impl<'m> Exporter<'m> {
    fn fresh(&mut self, base: &str) -> String {
        self.counter += 1;
        format!("{base}:{}", self.counter)
    }

    fn node(&mut self, op: &str, name: &str, inputs: Vec<String>, attrs: Vec<pb::AttributeProto>) -> String {
        let out = self.fresh(name);
        self.nodes.push(pb::NodeProto {
            name: out.clone(),
            op_type: op.into(),
            input: inputs,
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// Scale and zero-point initializers for `q` (uint8 or int8 zero point, as stored).
    fn qparam_inits(&mut self, base: &str, q: &QParams) -> (String, String) {
        let (s, z) = (self.fresh(&format!("{base}.scale")), self.fresh(&format!("{base}.zero_point")));
        self.inits.push(tensor(&s, &[], DataType::Float, f32_raw(&[q.scale])));
        let zp = match q.dtype {
            QType::U8 => tensor(&z, &[], DataType::Uint8, vec![q.zero_point as u8]),
            QType::I8 => tensor(&z, &[], DataType::Int8, vec![q.zero_point as i8 as u8]),
        };
        self.inits.push(zp);
        (s, z)
    }

    /// A float view of our value `v` (dequantizing an int8 value once).
    fn float_input(&mut self, v: &str) -> Result<String> {
        let (name, q) = self.vals.get(v).cloned().with_context(|| format!("value `{v}` used before it is computed"))?;
        let Some(q) = q else { return Ok(name) };
        if let Some(d) = self.dq_cache.get(v) {
            return Ok(d.clone());
        }
        let (s, z) = self.qparam_inits(v, &q);
        let d = self.node("DequantizeLinear", &format!("{v}.dq"), vec![name, s, z], vec![]);
        self.dq_cache.insert(v.to_string(), d.clone());
        Ok(d)
    }

    /// Float `y` → the node's output value (quantized when the node is int8).
    fn finish(&mut self, node: &Node, y: String) {
        let out = match node.output_q {
            Some(q) => {
                let (s, z) = self.qparam_inits(&node.name, &q);
                self.node("QuantizeLinear", &format!("{}.q", node.name), vec![y, s, z], vec![])
            }
            None => y,
        };
        self.vals.insert(node.name.clone(), (out, node.output_q));
    }

    fn t(&self, node: &Node, role: &str) -> Result<&'m Tensor<'m>> {
        self.model.tensor(&node.name, role).with_context(|| format!("node `{}` has no `{role}` tensor", node.name))
    }

    /// Weight (and bias) of a conv / linear node as ONNX inputs: float initializers, or int8 / int32
    /// initializers behind DequantizeLinear for an int8 node.
    fn weights(&mut self, node: &Node, bias: bool, input_q: Option<QParams>) -> Result<Vec<String>> {
        let w = self.t(node, "weight")?;
        let oc = w.shape[0];
        let wname = format!("{}.weight", node.name);
        let mut out = vec![];
        if node.output_q.is_none() {
            self.inits.push(tensor(&wname, &w.shape, DataType::Float, f32_raw(&w.to_f32(&wname)?)));
            out.push(wname.clone());
            if bias {
                let b = self.t(node, "bias")?;
                let bname = format!("{}.bias", node.name);
                self.inits.push(tensor(&bname, &b.shape, DataType::Float, f32_raw(&b.to_f32(&bname)?)));
                out.push(bname);
            }
            return Ok(out);
        }
        let sx = input_q.context("int8 node with a float input")?.scale;
        let ws = self.t(node, "weight_scale")?.to_f32("weight_scale")?;
        let wq = w.as_i8(&wname)?;
        // int8 nodes always carry an i32 bias with scale sx * sw.
        let b = self.t(node, "bias")?.to_i32("bias")?;
        let bname = format!("{}.bias", node.name);
        if self.opts.float_weights {
            let per = wq.len() / oc.max(1);
            let wf: Vec<f32> = wq.iter().enumerate().map(|(i, &q)| q as f32 * ws[i / per]).collect();
            let bf: Vec<f32> = b.iter().zip(&ws).map(|(&q, &s)| (q as f64 * s as f64 * sx as f64) as f32).collect();
            self.inits.push(tensor(&wname, &w.shape, DataType::Float, f32_raw(&wf)));
            self.inits.push(tensor(&bname, &[oc], DataType::Float, f32_raw(&bf)));
            return Ok(vec![wname, bname]);
        }
        self.inits.push(tensor(&wname, &w.shape, DataType::Int8, wq.iter().map(|&v| v as u8).collect()));
        let (s, z) = (format!("{wname}.scale"), format!("{wname}.zero_point"));
        self.inits.push(tensor(&s, &[oc], DataType::Float, f32_raw(&ws)));
        self.inits.push(tensor(&z, &[oc], DataType::Int8, vec![0; oc]));
        out.push(self.node("DequantizeLinear", &wname, vec![wname.clone(), s, z], vec![attr_int("axis", 0)]));
        self.inits.push(tensor(&bname, &[oc], DataType::Int32, b.iter().flat_map(|v| v.to_le_bytes()).collect()));
        let bs: Vec<f32> = ws.iter().map(|&w| w * sx).collect();
        let (s, z) = (format!("{bname}.scale"), format!("{bname}.zero_point"));
        self.inits.push(tensor(&s, &[oc], DataType::Float, f32_raw(&bs)));
        self.inits.push(tensor(&z, &[oc], DataType::Int32, vec![0; 4 * oc]));
        out.push(self.node("DequantizeLinear", &bname, vec![bname.clone(), s, z], vec![attr_int("axis", 0)]));
        Ok(out)
    }

    fn activation(&mut self, name: &str, x: String, a: Activation) -> String {
        match a {
            Activation::None => x,
            Activation::Relu => self.node("Relu", &format!("{name}.relu"), vec![x], vec![]),
            Activation::Relu6 | Activation::Clip { .. } => {
                let (lo, hi) = a.bounds();
                let (l, h) = (self.fresh(&format!("{name}.min")), self.fresh(&format!("{name}.max")));
                self.inits.push(tensor(&l, &[], DataType::Float, f32_raw(&[lo])));
                self.inits.push(tensor(&h, &[], DataType::Float, f32_raw(&[hi])));
                self.node("Clip", &format!("{name}.clip"), vec![x, l, h], vec![])
            }
        }
    }

    fn ints_init(&mut self, base: &str, v: &[i64]) -> String {
        let n = self.fresh(base);
        self.inits.push(tensor(&n, &[v.len()], DataType::Int64, v.iter().flat_map(|x| x.to_le_bytes()).collect()));
        n
    }

    fn export_node(&mut self, node: &Node) -> Result<()> {
        let name = node.name.as_str();
        let in_q = node.inputs.first().and_then(|v| self.vals.get(v)).and_then(|(_, q)| *q);
        match &node.op {
            Op::Quantize => {
                let x = self.float_input(&node.inputs[0])?;
                self.finish(node, x);
                return Ok(());
            }
            Op::Dequantize => {
                let x = self.float_input(&node.inputs[0])?;
                self.vals.insert(node.name.clone(), (x, None));
                return Ok(());
            }
            _ => {}
        }
        let x = self.float_input(&node.inputs[0])?;
        let y = match &node.op {
            Op::Conv { window, groups, bias, residual, activation, .. } => {
                let mut inputs = vec![x];
                inputs.extend(self.weights(node, *bias, in_q)?);
                let mut attrs = window_attrs(window);
                attrs.push(attr_int("group", *groups as i64));
                let mut y = self.node("Conv", name, inputs, attrs);
                if *residual {
                    let r = self.float_input(&node.inputs[1])?;
                    y = self.node("Add", &format!("{name}.residual"), vec![y, r], vec![]);
                }
                self.activation(name, y, *activation)
            }
            Op::Linear { bias, activation, .. } => {
                let mut inputs = vec![x];
                inputs.extend(self.weights(node, *bias, in_q)?);
                let y = self.node("Gemm", name, inputs, vec![attr_int("transB", 1)]);
                self.activation(name, y, *activation)
            }
            Op::BatchNorm { eps } => {
                let mut inputs = vec![x];
                for role in ["gamma", "beta", "mean", "var"] {
                    let t = self.t(node, role)?;
                    let n = format!("{name}.{role}");
                    self.inits.push(tensor(&n, &t.shape, DataType::Float, f32_raw(&t.to_f32(&n)?)));
                    inputs.push(n);
                }
                let attr = pb::AttributeProto {
                    name: "epsilon".into(),
                    r#type: pb::attribute_proto::AttributeType::Float as i32,
                    f: *eps,
                    ..Default::default()
                };
                self.node("BatchNormalization", name, inputs, vec![attr])
            }
            Op::Act { activation } => self.activation(name, x, *activation),
            Op::Add { activation } => {
                let r = self.float_input(&node.inputs[1])?;
                let y = self.node("Add", name, vec![x, r], vec![]);
                self.activation(name, y, *activation)
            }
            Op::MaxPool { window } => self.node("MaxPool", name, vec![x], window_attrs(window)),
            Op::AvgPool { window, count_include_pad } => {
                let mut attrs = window_attrs(window);
                attrs.retain(|a| a.name != "dilations");
                attrs.push(attr_int("count_include_pad", i64::from(*count_include_pad)));
                self.node("AveragePool", name, vec![x], attrs)
            }
            Op::GlobalAvgPool => self.node("GlobalAveragePool", name, vec![x], vec![]),
            Op::Flatten => self.node("Flatten", name, vec![x], vec![attr_int("axis", 1)]),
            Op::Softmax => self.node("Softmax", name, vec![x], vec![attr_int("axis", -1)]),
            Op::ShortcutA { stride, pad_before, pad_after } => {
                let s = *stride as i64;
                let starts = self.ints_init(&format!("{name}.starts"), &[0, 0]);
                let ends = self.ints_init(&format!("{name}.ends"), &[i64::MAX, i64::MAX]);
                let axes = self.ints_init(&format!("{name}.axes"), &[2, 3]);
                let steps = self.ints_init(&format!("{name}.steps"), &[s, s]);
                let sub = self.node("Slice", &format!("{name}.subsample"), vec![x, starts, ends, axes, steps], vec![]);
                let (b, a) = (*pad_before as i64, *pad_after as i64);
                let pads = self.ints_init(&format!("{name}.pads"), &[0, b, 0, 0, 0, a, 0, 0]);
                self.node("Pad", name, vec![sub, pads], vec![])
            }
            Op::Quantize | Op::Dequantize => unreachable!("handled above"),
        };
        self.finish(node, y);
        Ok(())
    }
}

fn value_info(name: &str, dims: &[Option<usize>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => Value::DimValue(*v as i64),
                None => Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The model as ONNX bytes, with a symbolic batch dimension.
pub fn export(model: &Model<'_>, opts: ExportOptions) -> Result<Vec<u8>> {
    let mut ex = Exporter {
        model,
        opts,
        nodes: vec![],
        inits: vec![],
        vals: HashMap::new(),
        dq_cache: HashMap::new(),
        counter: 0,
    };
    let input = model.graph.input.name.clone();
    ex.vals.insert(input.clone(), (input.clone(), None));
    for node in &model.graph.nodes {
        ex.export_node(node).with_context(|| format!("exporting node `{}`", node.name))?;
    }
    let (out, q) = ex.vals.get(&model.graph.output).cloned().context("graph output not computed")?;
    if q.is_some() {
        bail!("the graph output is quantized; int8 models end in a Dequantize");
    }
    let plan = resedge::Plan::new(model, &Default::default())?;
    let out_dims: Vec<Option<usize>> =
        std::iter::once(None).chain(plan.output_value().shape.iter().skip(1).map(|&d| Some(d))).collect();
    let in_dims: Vec<Option<usize>> =
        std::iter::once(None).chain(model.graph.input.shape.iter().map(|&d| Some(d))).collect();
    let identity = pb::NodeProto {
        name: "output".into(),
        op_type: "Identity".into(),
        input: vec![out],
        output: vec!["logits".into()],
        ..Default::default()
    };
    ex.nodes.push(identity);
    let graph = pb::GraphProto {
        name: model.name.clone(),
        node: ex.nodes,
        initializer: ex.inits,
        input: vec![value_info(&input, &in_dims)],
        output: vec![value_info("logits", &out_dims)],
        ..Default::default()
    };
    let proto = pb::ModelProto {
        ir_version: 8,
        producer_name: "resedge-quantize".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
        graph: Some(graph),
        ..Default::default()
    };
    Ok(proto.encode_to_vec())
}
