//! AArch64 kernels: NEON (ARMv8.0), dotprod (`SDOT`, ARMv8.2) and i8mm (`SMMLA`, ARMv8.6) convolutions on
//! the packed frame of [`super::im2col`]. Each tier differs only in its 8x8 microkernel; gathering,
//! packing and the fused epilogue (bias, residual, requantization, clamp) are shared. Plus a NEON int8
//! max pool for the stem window; the other ops run the scalar kernels.
//!
//! The int8 kernels multiply raw int8 activations and fold `-x_zp * sum(w)` into the packed bias
//! (spec 11.3); requantization widens to 64 bits (`SMULL`, `SRSHL`, `SQXTN`), never `SQRDMULH`.
//! `SDOT`/`SMMLA` are emitted with `asm!` because their intrinsics are unstable on stable Rust.
//!
//! Safety contract of every entry point: it runs only on a CPU with its tier, which the planner
//! guarantees by capping `PlanOptions::max_isa` at `Isa::detect()` (with std; without std the caller
//! vouches for the tier it passes).

mod epilogue;
mod neon;
mod neondot;
mod neoni8mm;
mod pack;
mod pool;

pub use neon::{F32_CONV_NEON, QS8_CONV_NEON};
pub use neondot::QS8_CONV_NEONDOT;
pub use neoni8mm::QS8_CONV_NEONI8MM;
pub use pool::qs8_maxpool;
