//! `resedge-quantize` as a library: ONNX import / export, calibration, int8 lowering with reports.
//! The binary (`main.rs`) is a thin CLI over these modules.

pub mod bias;
pub mod calib;
pub mod eval;
pub mod meta;
pub mod mixed;
pub mod onnx;
pub mod parallel;
pub mod report;
pub mod samples;

use anyhow::{Context, Result};
use resedge::graph::Model;
use std::path::Path;

/// Imports an ONNX file: float files are folded and fused unless `fold` is false; QDQ files are lowered
/// to int8 with the file's own quantization (not fused, so each requantization matches the file's).
pub fn import_onnx(path: &Path, fold: bool, meta: &meta::MetaArgs) -> Result<Model<'static>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let imported = onnx::import(&bytes, &name).with_context(|| format!("importing {}", path.display()))?;
    let mut model = if imported.qparams.is_empty() {
        if fold {
            resedge::plan::passes::optimize(&imported.model)?
        } else {
            imported.model
        }
    } else {
        let mut m = imported.model;
        resedge::plan::passes::fold_batchnorm(&mut m)?;
        resedge::quant::lower_to_int8(&m, &imported.qparams, &Default::default())?
    };
    meta.apply(&mut model)?;
    Ok(model)
}

/// Loads a model file (`.rsm`) or imports an ONNX file (folded), detached from the file bytes.
pub fn load_model(path: &Path) -> Result<Model<'static>> {
    if path.extension().is_some_and(|e| e == "onnx") {
        return import_onnx(path, true, &Default::default());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(resedge::format::load(&bytes).with_context(|| format!("loading {}", path.display()))?.into_owned())
}

/// Imports a training checkpoint of the training crate (`resedge-train`): a run directory
/// (`checkpoint.safetensors` + `checkpoint.json`, which names the architecture) or a `.safetensors` file of
/// PyTorch-named variables (optionally under `model.`; `momentum.` entries are skipped) with `arch`.
pub fn import_checkpoint(path: &Path, arch: Option<&str>) -> Result<Model<'static>> {
    let (file, json) = if path.is_dir() {
        (path.join("checkpoint.safetensors"), Some(path.join("checkpoint.json")))
    } else {
        (path.to_path_buf(), None)
    };
    let arch_name = match (arch, json.filter(|j| j.exists())) {
        (Some(a), _) => a.to_string(),
        (None, Some(j)) => {
            let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&j)?)
                .with_context(|| format!("parsing {}", j.display()))?;
            meta["arch"].as_str().with_context(|| format!("{} names no `arch`", j.display()))?.to_string()
        }
        (None, None) => anyhow::bail!("{}: pass --arch (no checkpoint.json beside it)", path.display()),
    };
    let arch = resedge::zoo::arch(&arch_name)?;
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", file.display()))?;
    let var = |k: &str| k.strip_prefix("model.").unwrap_or(k).to_string();
    let names: Vec<String> = st.names().into_iter().filter(|k| !k.starts_with("momentum.")).map(&var).collect();
    let lookup: std::collections::HashMap<String, String> =
        st.names().into_iter().map(|k| (var(k), k.to_string())).collect();
    let model = resedge::zoo::with_torch_weights(&arch, &names, |name| {
        let t = st.tensor(lookup.get(name)?).ok()?;
        if t.dtype() != safetensors::Dtype::F32 {
            return None;
        }
        let values = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Some((t.shape().to_vec(), values))
    })
    .with_context(|| format!("loading {} weights from {}", arch.name, file.display()))?;
    Ok(model)
}
