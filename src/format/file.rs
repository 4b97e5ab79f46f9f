//! Memory-mapped model files (std).

use crate::error::Result;
use crate::graph::Model;
use std::path::Path;

/// A model file mapped into memory; [`ModelFile::model`] borrows its tensors without copying.
pub struct ModelFile {
    map: memmap2::Mmap,
}

impl ModelFile {
    /// Maps `path` read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = std::fs::File::open(path.as_ref())?;
        // SAFETY: the map is read-only and private to this process; a concurrent writer truncating the file
        // could fault, which is the documented hazard of mmap and acceptable for model files.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(ModelFile { map })
    }
    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
    /// Parses the model, borrowing tensors from the map.
    pub fn model(&self) -> Result<Model<'_>> {
        super::load(&self.map)
    }
}
