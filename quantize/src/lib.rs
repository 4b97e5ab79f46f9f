//! `resedge-quantize` as a library: ONNX import / export, calibration, int8 lowering with reports.
//! The binary (`main.rs`) is a thin CLI over these modules.

pub mod onnx;
pub mod meta;

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
