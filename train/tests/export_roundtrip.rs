//! Export -> model file -> `resedge::format::load` -> import gives back every variable bit for bit, with
//! preprocessing and labels; the ONNX form parses back with the same graph.

mod common;

use onnx_protobuf::{Message, ModelProto};
use resedge::graph::Preprocess;
use resedge_train::{export, onnx};
use tch::nn;

#[test]
fn model_file_round_trip() {
    let (vs, _net) = common::net_with_random_bn("resnet20", 1);
    let arch = resedge::zoo::arch("resnet20").unwrap();
    let pre = Preprocess { resize: 32, crop: [32, 32], mean: [0.49, 0.48, 0.45], std: [0.25, 0.24, 0.26] };
    let labels: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let model = export::to_model(&vs, &arch, "my-resnet20", pre.clone(), labels.clone()).unwrap();
    let bytes = resedge::format::save(&model).unwrap();
    let back = resedge::format::load(&bytes).unwrap();
    assert_eq!(back.name, "my-resnet20");
    assert_eq!(back.preprocess, Some(pre));
    assert_eq!(back.labels, labels);
    assert_eq!(back.graph, resedge::zoo::build(&arch, 0).unwrap().graph, "graph is the zoo's");
    assert!(back.tensors.contains_key("layer2.0.bn1.var") && back.tensors.contains_key("fc.bias"));

    let (vs2, _) = common::net_with_random_bn("resnet20", 2);
    export::import(&vs2, &back).unwrap();
    let (a, b) = (vs.variables(), vs2.variables());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "`{name}` changed in the round trip");
    }
}

#[test]
fn export_refuses_a_mismatched_net() {
    let (vs, _net) = common::net_with_random_bn("resnet20", 1);
    let other = resedge::zoo::arch("resnet32").unwrap();
    let err = export::to_model(&vs, &other, "x", Preprocess::cifar10(), vec![]).unwrap_err();
    assert!(format!("{err:#}").contains("has no trained variable"), "{err:#}");
    let empty = nn::VarStore::new(tch::Device::Cpu);
    assert!(export::to_model(&empty, &other, "x", Preprocess::cifar10(), vec![]).is_err());
}

#[test]
fn onnx_parses_back() {
    let (vs, _net) = common::net_with_random_bn("resnet20", 1);
    let arch = resedge::zoo::arch("resnet20").unwrap();
    let model = export::to_model(&vs, &arch, "resnet20", Preprocess::cifar10(), vec![]).unwrap();
    let bytes = onnx::to_onnx(&model).unwrap().write_to_bytes().unwrap();
    let m = ModelProto::parse_from_bytes(&bytes).unwrap();
    let g = m.graph.as_ref().unwrap();
    assert_eq!(m.opset_import[0].version, onnx::OPSET);
    let count = |op: &str| g.node.iter().filter(|n| n.op_type == op).count();
    assert_eq!(count("Conv"), 19);
    assert_eq!(count("BatchNormalization"), 19);
    assert_eq!(count("Add"), 9);
    assert_eq!((count("Slice"), count("Pad")), (2, 2), "two option-A shortcuts");
    assert_eq!(count("Gemm"), 1);
    // Every node input is the graph input, an initializer or an earlier node's output.
    let mut known: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    known.insert("input");
    for n in &g.node {
        for i in &n.input {
            assert!(known.contains(i.as_str()), "node {} reads unknown `{i}`", n.name);
        }
        known.extend(n.output.iter().map(String::as_str));
    }
    assert!(known.contains(g.output[0].name.as_str()));
}
