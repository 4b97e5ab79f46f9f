//! Trained weights <-> ResEdge model files. The graph and tensor names come from `resedge::zoo::build`, so an
//! exported file runs in the runtime (and imports into `resedge-quantize`) like any zoo model.
//!
//! Name mapping (torch -> model file): `<conv>.weight` and `fc.{weight,bias}` unchanged; batchnorm
//! `weight`/`bias`/`running_mean`/`running_var` -> `gamma`/`beta`/`mean`/`var`.

use anyhow::{ensure, Context, Result};
use resedge::graph::{Model, Preprocess};
use resedge::zoo::Arch;
use std::collections::{BTreeSet, HashMap};
use tch::{nn, Device, Kind, Tensor};

/// The torch variable holding the model-file tensor `key`.
pub fn torch_name(key: &str) -> String {
    let (node, role) = key.rsplit_once('.').unwrap_or(("", key));
    let role = match role {
        "gamma" => "weight",
        "beta" => "bias",
        "mean" => "running_mean",
        "var" => "running_var",
        other => other,
    };
    format!("{node}.{role}")
}

/// f32 values of a tensor on any device, in row-major order.
pub fn to_vec_f32(t: &Tensor) -> Result<Vec<f32>> {
    let t = t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous().flatten(0, -1);
    Ok(Vec::<f32>::try_from(&t)?)
}

/// Builds the f32 model file contents for `arch` from the variables of `vs` (batchnorm kept unfolded).
/// Every model tensor must have a variable of the same shape, and every variable must be used.
pub fn to_model(
    vs: &nn::VarStore,
    arch: &Arch,
    name: &str,
    preprocess: Preprocess,
    labels: Vec<String>,
) -> Result<Model<'static>> {
    let mut model = resedge::zoo::build(arch, 0).with_context(|| format!("building the {} graph", arch.name))?;
    let vars: HashMap<String, Tensor> = vs.variables();
    let mut used = BTreeSet::new();
    for (key, t) in model.tensors.iter_mut() {
        let var = torch_name(key);
        let v = vars.get(&var).with_context(|| format!("model tensor `{key}` has no trained variable `{var}`"))?;
        let shape: Vec<usize> = v.size().iter().map(|&d| d as usize).collect();
        ensure!(shape == t.shape, "`{var}` has shape {shape:?}, the graph's `{key}` needs {:?}", t.shape);
        *t = resedge::tensor::Tensor::from_f32(shape, &to_vec_f32(v)?);
        used.insert(var);
    }
    let unused: Vec<&String> = vars.keys().filter(|k| !used.contains(*k)).collect();
    ensure!(unused.is_empty(), "variables with no place in the {} graph: {unused:?}", arch.name);
    model.name = name.to_string();
    model.preprocess = Some(preprocess);
    model.labels = labels;
    Ok(model)
}

/// Copies the tensors of an f32 model file (unfolded batchnorm) into the variables of `vs`.
pub fn import(vs: &nn::VarStore, model: &Model<'_>) -> Result<()> {
    let vars = vs.variables();
    ensure!(
        vars.len() == model.tensors.len(),
        "model has {} tensors, the net {} variables",
        model.tensors.len(),
        vars.len()
    );
    for (key, t) in &model.tensors {
        let var = torch_name(key);
        let mut v =
            vars.get(&var).with_context(|| format!("model tensor `{key}` has no variable `{var}`"))?.shallow_clone();
        let values = t.to_f32(key).with_context(|| format!("reading `{key}`"))?;
        let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        ensure!(v.size() == shape, "`{key}` has shape {shape:?}, variable `{var}` {:?}", v.size());
        let src = Tensor::from_slice(&values).view(shape.as_slice()).to_device(v.device());
        tch::no_grad(|| v.copy_(&src));
    }
    Ok(())
}
