//! `resedge-train`: trains the nets of He et al. 2015 (CIFAR ResNet-20..1202, plain nets, ImageNet-style
//! ResNet-18..152) with libtorch through `tch`, on CUDA when available, and exports ResEdge model files.
//!
//! data (decode once, cache) -> augment (on the device) -> model (from `resedge::zoo::Arch`) -> train
//! (SGD, schedule, checkpoints, metrics, plot) -> export (model file, ONNX) -> eval (by the runtime).

pub mod augment;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod eval;
pub mod export;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod optim;
pub mod plot;
pub mod train;
