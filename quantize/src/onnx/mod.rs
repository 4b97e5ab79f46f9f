//! ONNX in and out: import into our IR (float and QDQ files), export as plain or QDQ ONNX.

mod import;
mod proto;

pub use import::{import, Imported};
