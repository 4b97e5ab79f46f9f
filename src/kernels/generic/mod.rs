//! Scalar reference kernels: the truth every optimized kernel is tested against. No unsafe, no
//! target_feature, no allocation; preconditions are checked by the planner and restated as debug asserts.

mod conv;
mod eltwise;
mod pool;

pub use conv::{f32_conv2d_scalar, qs8_conv2d_scalar};
pub use eltwise::{
    dequantize_scalar, f32_add_scalar, f32_affine_scalar, f32_clamp_scalar, f32_softmax_scalar, qs8_add_scalar,
    qs8_clamp_scalar, quantize_scalar, shortcut_a, ShortcutGeom,
};
pub use pool::{
    f32_avgpool_scalar, f32_gap_scalar, f32_maxpool_scalar, max_pool, qs8_avgpool_scalar, qs8_gap_scalar,
    qs8_maxpool_scalar,
};
