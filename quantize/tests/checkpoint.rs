//! Training checkpoints (PyTorch-named safetensors, as `resedge-train` writes them) import into the
//! same network as the model file exported from the same weights.

use safetensors::tensor::TensorView;
use std::path::PathBuf;

#[test]
fn checkpoint_imports_to_the_exported_network() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bytes = std::fs::read(root.join("models/cifar10/resnet20.rsm")).unwrap();
    let exported = resedge::format::load(&bytes).unwrap();
    // A checkpoint as the trainer writes it: `model.<torch name>` plus optimizer state to skip.
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = exported
        .tensors
        .iter()
        .map(|(k, t)| (format!("model.{}", resedge::zoo::torch_name(k)), t.shape.clone(), t.data.to_vec()))
        .chain(std::iter::once(("momentum.fc.weight".to_string(), vec![1], vec![0; 4])))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(k, s, d)| (k.clone(), TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()))
        .collect();
    let dir = std::env::temp_dir().join(format!("resedge-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("checkpoint.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    std::fs::write(dir.join("checkpoint.json"), r#"{"arch": "resnet20", "epoch": 1}"#).unwrap();
    let imported = resedge_quantize::import_checkpoint(&dir, None).unwrap();
    let x = resedge::zoo::random_input(3 * 32 * 32, 7);
    let run = |m: &resedge::Model<'_>| {
        resedge::Plan::new(m, &Default::default()).unwrap().executor().run(&x).unwrap().to_vec()
    };
    assert_eq!(run(&imported), run(&exported));
    // A wrong architecture is a clear error naming the missing variable.
    let err = resedge_quantize::import_checkpoint(&dir, Some("resnet32")).unwrap_err();
    assert!(format!("{err:#}").contains("no trained variable"), "{err:#}");
}
