//! The model file: a safetensors container whose tensors are the weights and whose `__metadata__` holds the
//! format version and the graph as JSON. Specified in docs/model-format.md.
//!
//! Loading is zero copy: tensors borrow from the byte slice (an mmap on std, `include_bytes!` on no_std).
//! Everything in the header is validated before use; a bad file is an [`Error`], never a panic.

#[cfg(feature = "std")]
mod file;
#[cfg(feature = "std")]
pub use file::ModelFile;

use crate::error::{Error, Result};
use crate::graph::{Graph, Model, Preprocess};
use crate::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::prelude::v1::*;

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Metadata key holding the format version.
pub const KEY_VERSION: &str = "resedge.version";
/// Metadata key holding the model JSON ([`ModelMeta`]).
pub const KEY_MODEL: &str = "resedge.model";

/// The JSON stored under [`KEY_MODEL`].
#[derive(Serialize, Deserialize)]
struct ModelMeta {
    name: String,
    graph: Graph,
    #[serde(default)]
    preprocess: Option<Preprocess>,
    #[serde(default)]
    labels: Vec<String>,
}

/// Parses a model file held in memory. Tensors borrow from `bytes`.
pub fn load(bytes: &[u8]) -> Result<Model<'_>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Container(format!("{e}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| Error::Container(format!("{e}")))?;
    let meta =
        header.metadata().as_ref().ok_or_else(|| Error::Metadata("no __metadata__ (not a ResEdge model)".into()))?;
    let version = meta.get(KEY_VERSION).ok_or_else(|| Error::Metadata(format!("missing `{KEY_VERSION}`")))?;
    let version: u32 =
        version.parse().map_err(|_| Error::Metadata(format!("`{KEY_VERSION}` is not a number: {version:?}")))?;
    if version != FORMAT_VERSION {
        return Err(Error::Version { found: version, supported: FORMAT_VERSION });
    }
    let json = meta.get(KEY_MODEL).ok_or_else(|| Error::Metadata(format!("missing `{KEY_MODEL}`")))?;
    let m: ModelMeta = serde_json::from_str(json).map_err(|e| Error::Metadata(format!("`{KEY_MODEL}`: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::I8 => DType::I8,
            safetensors::Dtype::U8 => DType::U8,
            safetensors::Dtype::I32 => DType::I32,
            other => return Err(Error::tensor(name, format!("unsupported dtype {other:?}"))),
        };
        tensors
            .insert(name.to_string(), Tensor { dtype, shape: view.shape().to_vec(), data: Cow::Borrowed(view.data()) });
    }
    Ok(Model { name: m.name, graph: m.graph, tensors, preprocess: m.preprocess, labels: m.labels })
}

struct View<'t, 'a>(&'t Tensor<'a>);

impl safetensors::View for View<'_, '_> {
    fn dtype(&self) -> safetensors::Dtype {
        match self.0.dtype {
            DType::F32 => safetensors::Dtype::F32,
            DType::F16 => safetensors::Dtype::F16,
            DType::I8 => safetensors::Dtype::I8,
            DType::U8 => safetensors::Dtype::U8,
            DType::I32 => safetensors::Dtype::I32,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0.data)
    }
    fn data_len(&self) -> usize {
        self.0.data.len()
    }
}

/// Serializes a model to the file format. Deterministic: the same model gives the same bytes.
pub fn save(model: &Model<'_>) -> Result<Vec<u8>> {
    for (name, t) in &model.tensors {
        let expected = t.shape.iter().try_fold(t.dtype.size(), |acc, &d| acc.checked_mul(d));
        if expected != Some(t.data.len()) {
            return Err(Error::tensor(name, format!("{} bytes do not match shape {:?}", t.data.len(), t.shape)));
        }
    }
    let meta = ModelMeta {
        name: model.name.clone(),
        graph: model.graph.clone(),
        preprocess: model.preprocess.clone(),
        labels: model.labels.clone(),
    };
    let json = serde_json::to_string(&meta).map_err(|e| Error::Metadata(format!("{e}")))?;
    let info = [
        (KEY_VERSION.to_string(), format!("{FORMAT_VERSION}")),
        (KEY_MODEL.to_string(), json),
        ("format".to_string(), "resedge".to_string()),
    ];
    let bytes = safetensors::serialize(
        model.tensors.iter().map(|(k, t)| (k.as_str(), View(t))),
        Some(info.into_iter().collect()),
    )
    .map_err(|e| Error::Container(format!("{e}")))?;
    canonical_header(bytes)
}

/// Rewrites the header with `__metadata__` keys in sorted order. safetensors keeps metadata in a HashMap,
/// whose order changes from run to run; a model file must be byte-identical for identical inputs.
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let bad = |e: serde_json::Error| Error::Container(format!("re-reading the header just written: {e}"));
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let mut top: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(bytes[8..8 + n].trim_ascii_end()).map_err(bad)?;
    if let Some(meta) = top.get_mut("__metadata__") {
        let sorted: BTreeMap<String, String> = serde_json::from_value(meta.take()).map_err(bad)?;
        *meta = serde_json::to_value(sorted).map_err(bad)?;
    }
    let mut header = serde_json::to_vec(&top).map_err(bad)?;
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + header.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}
