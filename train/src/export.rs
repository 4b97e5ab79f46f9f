//! Trained weights <-> ResEdge model files. The graph and tensor names come from `resedge::zoo::build`, so an
//! exported file runs in the runtime (and imports into `resedge-quantize`) like any zoo model.
//!
//! Name mapping (torch -> model file): `<conv>.weight` and `fc.{weight,bias}` unchanged; batchnorm
//! `weight`/`bias`/`running_mean`/`running_var` -> `gamma`/`beta`/`mean`/`var`.

use anyhow::{ensure, Context, Result};
use resedge::graph::{Model, Preprocess};
use resedge::zoo::Arch;
use std::collections::HashMap;
use tch::{nn, Device, Kind, Tensor};

pub use resedge::zoo::torch_name;

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
    let vars: HashMap<String, Tensor> = vs.variables();
    let names: Vec<String> = vars.keys().cloned().collect();
    let mut model = resedge::zoo::with_torch_weights(arch, &names, |var| {
        let v = vars.get(var)?;
        Some((v.size().iter().map(|&d| d as usize).collect(), to_vec_f32(v).ok()?))
    })
    .with_context(|| format!("filling the {} graph with trained weights", arch.name))?;
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
