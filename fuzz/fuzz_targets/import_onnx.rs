//! The quantizer's ONNX import on arbitrary bytes: an error or a model, never a panic; an imported model
//! must then plan (or be refused with an error).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(imported) = resedge_quantize::onnx::import(data, "fuzz") {
        let _ = resedge::Plan::new(&imported.model, &Default::default());
    }
});
