//! The shipped int8 model: loads through the byte-slice API used on no_std boards (`include_bytes!`, no
//! alignment guarantee), runs, and is reproduced byte for byte by the command in models/README.md.

use resedge::plan::{Plan, PlanOptions};
use resedge::quant::ActivationScheme;

static SHIPPED: &[u8] = include_bytes!("../models/resnet20-random-int8.rsm");

#[test]
fn shipped_model_loads_from_a_byte_slice_and_runs() {
    let model = resedge::format::load(SHIPPED).unwrap();
    assert!(model.graph.is_quantized());
    let plan = Plan::new(&model, &PlanOptions::default()).unwrap();
    let input = resedge::zoo::random_input(3 * 32 * 32, 5);
    let out = plan.executor().run(&input).unwrap().to_vec();
    assert_eq!(out.len(), 10);
    // A misaligned copy of the bytes must give the same answer (weights are copied instead of borrowed).
    let mut shifted = vec![0u8; SHIPPED.len() + 1];
    shifted[1..].copy_from_slice(SHIPPED);
    let model2 = resedge::format::load(&shifted[1..]).unwrap();
    let plan2 = Plan::new(&model2, &PlanOptions::default()).unwrap();
    assert_eq!(plan2.executor().run(&input).unwrap(), &out[..]);
}

#[test]
fn writer_reproduces_the_shipped_file() {
    let arch = resedge::zoo::arch("resnet20").unwrap();
    let model = resedge::zoo::build_int8(&arch, 0, ActivationScheme::AsymmetricI8).unwrap();
    let bytes = resedge::format::save(&model).unwrap();
    assert!(
        bytes == SHIPPED,
        "models/resnet20-random-int8.rsm is stale: regenerate it with the command in models/README.md"
    );
}

#[test]
fn save_load_round_trip_preserves_the_model() {
    let arch = resedge::zoo::arch("resnet20-b").unwrap();
    let model = resedge::zoo::build(&arch, 3).unwrap();
    let bytes = resedge::format::save(&model).unwrap();
    assert_eq!(resedge::format::load(&bytes).unwrap(), model);
    assert_eq!(resedge::format::save(&model).unwrap(), bytes, "writer must be deterministic");
    // f32 weights borrowed from an aligned buffer and copied from a misaligned one compute the same logits.
    let input = resedge::zoo::random_input(3 * 32 * 32, 6);
    let mut buf = vec![0u8; bytes.len() + 1];
    let run = |b: &[u8]| {
        let m = resedge::format::load(b).unwrap();
        Plan::new(&m, &PlanOptions::default()).unwrap().executor().run(&input).unwrap().to_vec()
    };
    buf[1..].copy_from_slice(&bytes);
    assert_eq!(run(&bytes), run(&buf[1..]));
}
