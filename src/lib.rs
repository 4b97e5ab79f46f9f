//! ResEdge: a lean ResNet inference runtime for edge boards.
//!
//! model file ([`format`]) -> [`graph::Model`] -> [`plan::Plan`] (passes, shapes, kernels, arena)
//! -> [`plan::Executor::run`] (allocation free).
//!
//! | feature | what it adds |
//! |---|---|
//! | (none)  | `no_std` + `alloc` core: load from a byte slice, plan, run f32 and int8 |
//! | `std`   | mmap loading, the model zoo (TOML architecture specs, seeded random weights), env overrides |
//! | `image` | [`preprocess`]: decode JPEG / PNG / BMP / WebP and preprocess images into the input tensor |
//! | `cli`   | the `resedge` binary (zoo, inspect, run, bench, classify, camera) |
//! | `camera`| the V4L2 frame source of `resedge camera` (Linux, libclang to build) |
//! | `gpu`   | [`backend::gpu`]: wgpu (Vulkan) compute shaders, `--backend gpu` |
//! | `npu-rknn` | [`backend::npu`]: Rockchip NPU through a run-time `dlopen` of `librknnrt.so`, `--backend npu` |
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate no_std_compat as std;

pub mod error;
pub mod format;
pub mod graph;
pub mod kernels;
pub mod plan;
pub mod quant;
pub mod tensor;

pub use error::{Error, Result};
pub use graph::{Graph, Model};
pub use plan::{Executor, Plan, PlanOptions};
#[cfg(feature = "std")]
pub mod backend;
#[cfg(feature = "image")]
pub mod preprocess;
#[cfg(feature = "std")]
pub mod zoo;
