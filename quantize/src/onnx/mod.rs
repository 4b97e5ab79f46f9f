//! ONNX in and out: import into our IR (float and QDQ files), export as plain or QDQ ONNX.

mod export;
mod import;
mod proto;

pub use export::{export, ExportOptions};
pub use import::{import, Imported};
