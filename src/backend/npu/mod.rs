//! The Rockchip NPU backend (feature `npu-rknn`): a whole `.rknn` model, compiled by Rockchip's
//! rknn-toolkit2 from our QDQ ONNX export (`resedge-quantize export-onnx`, so the NPU uses our calibration),
//! run through `librknnrt.so`. The library is opened with `dlopen` at run time (libloading) using
//! rknpu-sys's types, so one binary runs with and without an NPU: a missing library or NPU device is
//! [`Error::BackendUnavailable`] with a message, and the caller falls back to the CPU.
//!
//! The NPU is not a partition of our plan: it runs the toolkit's graph, with the toolkit's int8 kernels, so
//! its logits are close to ours but not bit-identical (docs/int8-spec.md binds our executors, not Rockchip's).
//! Tested up to the library boundary with a stand-in `librknnrt.so` (tests/npu_standin.rs); never run on an
//! NPU here.

use crate::error::{Error, Result};
use core::ffi::{c_int, c_void};
use rknpu_sys::rknn::{
    rknn_context, rknn_input, rknn_input_output_num, rknn_output, rknn_query_cmd, rknn_tensor_attr, rknn_tensor_format,
    rknn_tensor_type,
};
use std::path::{Path, PathBuf};
use std::prelude::v1::*;

type InitFn = unsafe extern "C" fn(*mut rknn_context, *mut c_void, u32, u32, *mut c_void) -> c_int;
type DestroyFn = unsafe extern "C" fn(rknn_context) -> c_int;
type QueryFn = unsafe extern "C" fn(rknn_context, rknn_query_cmd, *mut c_void, u32) -> c_int;
type InputsSetFn = unsafe extern "C" fn(rknn_context, u32, *mut rknn_input) -> c_int;
type RunFn = unsafe extern "C" fn(rknn_context, *mut c_void) -> c_int;
type OutputsGetFn = unsafe extern "C" fn(rknn_context, u32, *mut rknn_output, *mut c_void) -> c_int;
type OutputsReleaseFn = unsafe extern "C" fn(rknn_context, u32, *mut rknn_output) -> c_int;

/// Where the runtime library and the NPU device node are looked for.
#[derive(Clone, Debug)]
pub struct RknnPaths {
    /// `librknnrt.so` (a bare name searches the dynamic loader's path). Env `RESEDGE_RKNN_LIB` overrides.
    pub library: PathBuf,
    /// Any of these existing means an NPU driver is present. Env `RESEDGE_RKNPU_DEVICE` replaces the list.
    pub devices: Vec<PathBuf>,
}

impl Default for RknnPaths {
    fn default() -> Self {
        let library = std::env::var_os("RESEDGE_RKNN_LIB").map_or_else(|| "librknnrt.so".into(), PathBuf::from);
        let devices = match std::env::var_os("RESEDGE_RKNPU_DEVICE") {
            Some(d) => vec![PathBuf::from(d)],
            // The vendor kernel's misc device, and the DRM node of the mainline-style driver (RK3588).
            None => vec!["/dev/rknpu".into(), "/sys/kernel/debug/rknpu".into(), "/dev/dri/renderD129".into()],
        };
        RknnPaths { library, devices }
    }
}

fn unavailable(why: String) -> Error {
    Error::BackendUnavailable { backend: "npu", why }
}

fn rknn_err(call: &str, code: c_int) -> Error {
    let name = match code {
        -1 => "RKNN_ERR_FAIL",
        -2 => "RKNN_ERR_TIMEOUT",
        -3 => "RKNN_ERR_DEVICE_UNAVAILABLE",
        -4 => "RKNN_ERR_MALLOC_FAIL",
        -5 => "RKNN_ERR_PARAM_INVALID",
        -6 => "RKNN_ERR_MODEL_INVALID",
        -7 => "RKNN_ERR_CTX_INVALID",
        -8 => "RKNN_ERR_INPUT_INVALID",
        -9 => "RKNN_ERR_OUTPUT_INVALID",
        -10 => "RKNN_ERR_DEVICE_UNMATCH",
        _ => "error",
    };
    Error::Backend { backend: "npu", what: format!("{call} returned {code} ({name})") }
}

/// A `.rknn` model loaded on the NPU: one f32 NCHW input, one f32 output.
pub struct Rknn {
    ctx: rknn_context,
    destroy: DestroyFn,
    inputs_set: InputsSetFn,
    run: RunFn,
    outputs_get: OutputsGetFn,
    outputs_release: OutputsReleaseFn,
    input_len: usize,
    output_len: usize,
    // Last: the functions above point into it.
    _lib: libloading::Library,
}

/// Resolves `name` from `lib` as a function of type `T`.
///
/// # Safety
/// `T` must be the symbol's true C signature.
unsafe fn symbol<T: Copy>(lib: &libloading::Library, name: &str) -> Result<T> {
    // SAFETY: the caller guarantees the type; the copy outlives no library (Rknn keeps `lib`).
    unsafe { lib.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| unavailable(format!("{name} missing from librknnrt.so: {e}")))
}

impl Rknn {
    /// Loads `model` (the bytes of a `.rknn` file) with the default library and device paths.
    pub fn open(model: &[u8]) -> Result<Rknn> {
        Rknn::open_with(&RknnPaths::default(), model)
    }

    /// Loads `model` with the library and device of `paths`.
    pub fn open_with(paths: &RknnPaths, model: &[u8]) -> Result<Rknn> {
        if !paths.devices.iter().any(|d| d.exists()) {
            return Err(unavailable(format!(
                "no NPU device ({} missing); is this a Rockchip board with the rknpu driver loaded?",
                paths.devices.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        let size = u32::try_from(model.len())
            .map_err(|_| Error::Input(format!(".rknn model of {} bytes is too large", model.len())))?;
        // SAFETY: loading runs the library's initializers; librknnrt.so is the vendor runtime we mean to run.
        let lib = unsafe { libloading::Library::new(&paths.library) }.map_err(|e| {
            unavailable(format!(
                "cannot load {} ({e}); install Rockchip's librknnrt.so (rknpu2 runtime) or set RESEDGE_RKNN_LIB",
                paths.library.display()
            ))
        })?;
        // SAFETY: the signatures are those of rknn_api.h, as rknpu-sys declares them.
        let (init, destroy, query, inputs_set, run, outputs_get, outputs_release) = unsafe {
            (
                symbol::<InitFn>(&lib, "rknn_init")?,
                symbol::<DestroyFn>(&lib, "rknn_destroy")?,
                symbol::<QueryFn>(&lib, "rknn_query")?,
                symbol::<InputsSetFn>(&lib, "rknn_inputs_set")?,
                symbol::<RunFn>(&lib, "rknn_run")?,
                symbol::<OutputsGetFn>(&lib, "rknn_outputs_get")?,
                symbol::<OutputsReleaseFn>(&lib, "rknn_outputs_release")?,
            )
        };
        let mut ctx: rknn_context = 0;
        // rknn_init takes a mutable pointer but only reads the model (it copies what it keeps).
        let mut copy = model.to_vec();
        // SAFETY: valid out-pointer, buffer of `size` bytes, no extension struct.
        let rc = unsafe { init(&mut ctx, copy.as_mut_ptr().cast(), size, 0, core::ptr::null_mut()) };
        if rc != 0 {
            return Err(rknn_err("rknn_init", rc));
        }
        let mut me = Rknn {
            ctx,
            destroy,
            inputs_set,
            run,
            outputs_get,
            outputs_release,
            input_len: 0,
            output_len: 0,
            _lib: lib,
        };
        let mut io = rknn_input_output_num { n_input: 0, n_output: 0 };
        me.query(query, rknn_query_cmd::RKNN_QUERY_IN_OUT_NUM, &mut io)?;
        if io.n_input != 1 || io.n_output != 1 {
            return Err(Error::Backend {
                backend: "npu",
                what: format!("model has {} inputs and {} outputs; expected one of each", io.n_input, io.n_output),
            });
        }
        // SAFETY: rknn_tensor_attr is plain old data; all-zero is a valid value.
        let mut attr: rknn_tensor_attr = unsafe { core::mem::zeroed() };
        me.query(query, rknn_query_cmd::RKNN_QUERY_INPUT_ATTR, &mut attr)?;
        me.input_len = attr.n_elems as usize;
        attr = unsafe { core::mem::zeroed() };
        me.query(query, rknn_query_cmd::RKNN_QUERY_OUTPUT_ATTR, &mut attr)?;
        me.output_len = attr.n_elems as usize;
        log::info!("npu: model loaded, input {} values, output {} values", me.input_len, me.output_len);
        Ok(me)
    }

    fn query<T>(&self, query: QueryFn, cmd: rknn_query_cmd, out: &mut T) -> Result<()> {
        // SAFETY: `out` is a valid, writable T of the size passed, the struct rknn_api.h names for `cmd`.
        let rc = unsafe { query(self.ctx, cmd, (out as *mut T).cast(), core::mem::size_of::<T>() as u32) };
        if rc != 0 {
            return Err(rknn_err("rknn_query", rc));
        }
        Ok(())
    }

    /// Values of the model's input (N * C * H * W).
    pub fn input_len(&self) -> usize {
        self.input_len
    }
    /// Values of the model's output.
    pub fn output_len(&self) -> usize {
        self.output_len
    }

    /// Runs one inference on an f32 NCHW input; returns the output as f32 (the runtime dequantizes).
    pub fn run(&mut self, input: &[f32]) -> Result<Vec<f32>> {
        if input.len() != self.input_len {
            return Err(Error::Input(format!(
                "NPU model expects {} input values, got {}",
                self.input_len,
                input.len()
            )));
        }
        let mut inp = rknn_input {
            index: 0,
            buf: input.as_ptr() as *mut c_void,
            size: (input.len() * 4) as u32,
            pass_through: 0,
            type_: rknn_tensor_type::RKNN_TENSOR_FLOAT32,
            fmt: rknn_tensor_format::RKNN_TENSOR_NCHW,
        };
        // SAFETY: one input descriptor pointing at `input.len() * 4` readable bytes (the runtime only reads).
        let rc = unsafe { (self.inputs_set)(self.ctx, 1, &mut inp) };
        if rc != 0 {
            return Err(rknn_err("rknn_inputs_set", rc));
        }
        // SAFETY: a context from rknn_init; no extension struct.
        let rc = unsafe { (self.run)(self.ctx, core::ptr::null_mut()) };
        if rc != 0 {
            return Err(rknn_err("rknn_run", rc));
        }
        let mut out = rknn_output { want_float: 1, is_prealloc: 0, index: 0, buf: core::ptr::null_mut(), size: 0 };
        // SAFETY: one output descriptor; the runtime allocates `buf` until rknn_outputs_release.
        let rc = unsafe { (self.outputs_get)(self.ctx, 1, &mut out, core::ptr::null_mut()) };
        if rc != 0 {
            return Err(rknn_err("rknn_outputs_get", rc));
        }
        let result = if out.buf.is_null() || (out.size as usize) < self.output_len * 4 {
            Err(Error::Backend {
                backend: "npu",
                what: format!("output of {} bytes, expected {} f32 values", out.size, self.output_len),
            })
        } else {
            // SAFETY: the runtime handed out `size` >= output_len * 4 bytes of f32 (want_float), valid until release.
            Ok(unsafe { core::slice::from_raw_parts(out.buf as *const f32, self.output_len) }.to_vec())
        };
        // SAFETY: releases the buffer rknn_outputs_get gave us, once.
        unsafe { (self.outputs_release)(self.ctx, 1, &mut out) };
        result
    }
}

impl Drop for Rknn {
    fn drop(&mut self) {
        // SAFETY: the context came from rknn_init and is destroyed once, before the library is unloaded.
        unsafe { (self.destroy)(self.ctx) };
    }
}

/// The `.rknn` file for a model: `explicit`, else `model` with the extension `.rknn`.
pub fn rknn_path(model: &Path, explicit: Option<&Path>) -> PathBuf {
    explicit.map_or_else(|| model.with_extension("rknn"), Path::to_path_buf)
}
