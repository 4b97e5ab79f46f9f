//! ONNX import against ONNX Runtime's reference outputs (../shared/models) and against tract on the same
//! files; folded equals unfolded; unsupported ops are listed; hostile files are errors, not panics.

use prost::Message;
use resedge::graph::Model;
use resedge_quantize::onnx;
use std::path::PathBuf;
use tract_onnx::prelude::*;

fn shared_models() -> PathBuf {
    let dir = std::env::var_os("RESEDGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
        .join("models");
    assert!(dir.join("resnet20.onnx").exists(), "test models missing: {} (set RESEDGE_SHARED)", dir.display());
    dir
}

fn npy(path: &std::path::Path) -> Vec<f32> {
    resedge_data::npy::read_f32(path).unwrap().1
}

fn run(model: &Model<'_>, x: &[f32]) -> Vec<f32> {
    resedge::Plan::new(model, &Default::default()).unwrap().executor().run(x).unwrap().to_vec()
}

/// Runs the graph exactly as stored (no folding at plan time).
fn run_as_stored(model: &Model<'_>, x: &[f32]) -> Vec<f32> {
    let opts = resedge::plan::PlanOptions { optimize: false, ..Default::default() };
    resedge::Plan::new(model, &opts).unwrap().executor().run(x).unwrap().to_vec()
}

fn run_tract(path: &std::path::Path, shape: &[usize], x: &[f32]) -> Vec<f32> {
    let plan = tract_onnx::onnx().model_for_path(path).unwrap().into_optimized().unwrap().into_runnable().unwrap();
    let input = tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), x.to_vec()).unwrap();
    let out = plan.run(tvec!(Tensor::from(input).into())).unwrap();
    out[0].to_array_view::<f32>().unwrap().iter().copied().collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap()
}

fn import(name: &str, fold: bool) -> Model<'static> {
    resedge_quantize::import_onnx(&shared_models().join(format!("{name}.onnx")), fold, &Default::default()).unwrap()
}

#[test]
fn float_models_match_onnx_runtime_and_tract() {
    let dir = shared_models();
    for name in ["resnet20", "resnet56", "plain20", "resnet18"] {
        let x = npy(&dir.join(format!("{name}.input.npy")));
        let reference = npy(&dir.join(format!("{name}.output.npy")));
        let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        let folded = import(name, true);
        let unfolded = import(name, false);
        assert!(folded.graph.nodes.len() < unfolded.graph.nodes.len(), "{name}: folding removed nothing");
        assert!(!folded.graph.nodes.iter().any(|n| n.op.name() == "BatchNorm"), "{name}: a batchnorm was left");
        // Every residual add runs in its conv's epilogue, the option-A shortcuts' included.
        let plan = resedge::Plan::new(&folded, &Default::default()).unwrap();
        assert!(!plan.steps.iter().any(|s| s.op == "Add"), "{name}: a residual add was left unfused");
        let ours = run(&folded, &x);
        let ours_unfolded = run_as_stored(&unfolded, &x);
        let shape = [&[1usize][..], &folded.graph.input.shape].concat();
        let tract = run_tract(&dir.join(format!("{name}.onnx")), &shape, &x);
        let (e_ort, e_unf, e_tract) =
            (max_abs_diff(&ours, &reference), max_abs_diff(&ours, &ours_unfolded), max_abs_diff(&ours, &tract));
        eprintln!("{name}: max|logit| {scale:.3e}; max diff vs ORT {e_ort:.2e}, vs unfolded {e_unf:.2e}, vs tract {e_tract:.2e}");
        for (what, e) in [("ONNX Runtime", e_ort), ("unfolded", e_unf), ("tract", e_tract)] {
            assert!(e <= 1e-4 * scale, "{name}: differs from {what} by {e} (max |logit| {scale})");
        }
    }
}

#[test]
fn qdq_model_runs_in_int8_close_to_onnx_runtime() {
    let dir = shared_models();
    let m = import("resnet20.ort-int8", true);
    assert!(m.graph.is_quantized());
    let convs = m.graph.nodes.iter().filter(|n| n.op.name() == "Conv" && n.output_q.is_some()).count();
    assert_eq!(convs, 19, "every conv runs in int8");
    let x = npy(&dir.join("resnet20.ort-int8.input.npy"));
    let reference = npy(&dir.join("resnet20.ort-int8.output.npy"));
    let ours = run(&m, &x);
    // The logits are uint8 in the file; ORT requantizes in float (round half to even) and we in fixed point
    // (round half up), and ORT requantizes the option-A concat once more: a few output steps apart at most.
    let out_scale = m.graph.nodes.iter().rev().find_map(|n| n.output_q).unwrap().scale;
    let e = max_abs_diff(&ours, &reference);
    eprintln!("resnet20.ort-int8: max diff vs ORT {e:.3} = {:.1} output steps of {out_scale:.4}", e / out_scale);
    assert!(e <= 3.0 * out_scale, "int8 differs from ORT by {e} ({} steps)", e / out_scale);
    assert_eq!(argmax(&ours), argmax(&reference));
}

#[test]
fn unsupported_ops_are_all_listed() {
    let bytes = std::fs::read(shared_models().join("resnet20.onnx")).unwrap();
    let mut proto = tract_onnx::pb::ModelProto::decode(&bytes[..]).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let relus: Vec<usize> = (0..graph.node.len()).filter(|&i| graph.node[i].op_type == "Relu").collect();
    graph.node[relus[0]].op_type = "Sigmoid".into();
    graph.node[relus[3]].op_type = "HardSwish".into();
    graph.node[relus[5]].op_type = "Sigmoid".into();
    let err = onnx::import(&proto.encode_to_vec(), "x").err().expect("must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("HardSwish (x1)") && msg.contains("Sigmoid (x2)"), "{msg}");
}

#[test]
fn hostile_onnx_files_are_errors_not_panics() {
    let bytes = std::fs::read(shared_models().join("resnet20.onnx")).unwrap();
    // Truncations at every 1/64 of the file, plus deterministic byte mutations.
    for k in 0..64 {
        let _ = onnx::import(&bytes[..bytes.len() * k / 64], "t");
    }
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 8 {
            let i = (next() as usize) % b.len().min(64 * 1024);
            b[i] = next() as u8;
        }
        let _ = onnx::import(&b, "m");
    }
    // Structurally valid protobufs with absurd contents.
    let mut proto = tract_onnx::pb::ModelProto::decode(&bytes[..]).unwrap();
    let g = proto.graph.as_mut().unwrap();
    g.initializer[0].dims = vec![1 << 40, 1 << 40];
    assert!(onnx::import(&proto.encode_to_vec(), "big").is_err());
    proto.graph.as_mut().unwrap().initializer[0].dims = vec![-3];
    assert!(onnx::import(&proto.encode_to_vec(), "neg").is_err());
    let g = proto.graph.as_mut().unwrap();
    g.initializer[0].dims = vec![2];
    g.initializer[0].data_type = 99;
    assert!(onnx::import(&proto.encode_to_vec(), "type").is_err());
}

#[test]
fn symbolic_batch_and_older_opsets_import_the_same_network() {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    let dir = shared_models();
    let bytes = std::fs::read(dir.join("resnet20.onnx")).unwrap();
    let x = npy(&dir.join("resnet20.input.npy"));
    let reference = run(&onnx::import(&bytes, "r").unwrap().model, &x);
    for opset in [11, 13, 17] {
        let mut proto = tract_onnx::pb::ModelProto::decode(&bytes[..]).unwrap();
        proto.opset_import.iter_mut().for_each(|o| o.version = opset);
        let input = &mut proto.graph.as_mut().unwrap().input[0];
        let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut()
        else {
            panic!("input is a tensor")
        };
        t.shape.as_mut().unwrap().dim[0].value = Some(Value::DimParam("batch".into()));
        let m = onnx::import(&proto.encode_to_vec(), "r").unwrap().model;
        assert_eq!(run(&m, &x), reference, "opset {opset}, symbolic batch");
        // Batch 2 through the same model: each row equals the batch-1 result.
        let plan = resedge::Plan::new(&m, &resedge::plan::PlanOptions { batch: 2, ..Default::default() }).unwrap();
        let x2 = [x.clone(), x.clone()].concat();
        let y2 = plan.executor().run(&x2).unwrap().to_vec();
        assert_eq!(&y2[..10], &reference[..]);
        assert_eq!(&y2[10..], &reference[..]);
    }
}
