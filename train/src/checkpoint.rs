//! Checkpoints for `--resume`: `checkpoint.safetensors` (every variable, including batchnorm running
//! statistics, under `model.<name>`, and the SGD momentum under `momentum.<name>`) and `checkpoint.json`
//! (epochs done, iterations, elapsed time, what was trained). Written at epoch boundaries, atomically.

use crate::optim::Sgd;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Tensor};

/// What `checkpoint.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub arch: String,
    /// Completed epochs.
    pub epoch: usize,
    pub epochs: usize,
    pub batch: usize,
    pub seed: u64,
    pub elapsed_s: f64,
}

pub fn tensors_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.safetensors")
}
pub fn meta_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.json")
}

/// Saves variables, momentum and `meta` into `dir`.
pub fn save(dir: &Path, vs: &nn::VarStore, sgd: &Sgd, meta: &Meta) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (format!("model.{k}"), v.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    named
        .extend(sgd.state().into_iter().map(|(k, v)| (format!("momentum.{k}"), v.to_device(Device::Cpu).contiguous())));
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let tmp = dir.join("checkpoint.safetensors.tmp");
    Tensor::write_safetensors(&named, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, tensors_path(dir)).context("renaming the checkpoint")?;
    let tmp = dir.join("checkpoint.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(meta)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, meta_path(dir)).context("renaming the checkpoint metadata")?;
    Ok(())
}

/// Reads `checkpoint.json` of `dir`, if present.
pub fn read_meta(dir: &Path) -> Result<Option<Meta>> {
    let p = meta_path(dir);
    if !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?))
}

/// Restores variables and momentum from `dir` into `vs` and `sgd`.
pub fn load(dir: &Path, vs: &nn::VarStore, sgd: &mut Sgd) -> Result<()> {
    let p = tensors_path(dir);
    let saved: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(&p).with_context(|| format!("reading {}", p.display()))?.into_iter().collect();
    let mut momentum = BTreeMap::new();
    let vars = vs.variables();
    let mut restored = 0;
    for (k, t) in saved {
        if let Some(name) = k.strip_prefix("momentum.") {
            momentum.insert(name.to_string(), t.to_device(vs.device()));
        } else if let Some(name) = k.strip_prefix("model.") {
            let mut v = vars
                .get(name)
                .with_context(|| format!("{}: `{name}` is not a variable of this net", p.display()))?
                .shallow_clone();
            ensure!(v.size() == t.size(), "`{name}`: checkpoint shape {:?}, net {:?}", t.size(), v.size());
            tch::no_grad(|| v.copy_(&t));
            restored += 1;
        }
    }
    ensure!(restored == vars.len(), "{}: restored {restored} of {} variables", p.display(), vars.len());
    sgd.load_state(&momentum)
}
