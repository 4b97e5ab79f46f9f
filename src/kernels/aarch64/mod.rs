//! AArch64 kernels: NEON (ARMv8.0), dotprod (`SDOT`, ARMv8.2) and i8mm (`SMMLA`, ARMv8.6) convolutions on
//! the packed frame of [`super::im2col`]. Each tier differs only in its 8x8 microkernel; gathering,
//! packing and the fused epilogue (bias, residual, requantization, clamp) are shared. Plus a NEON int8
//! max pool for the stem window; the other ops run the scalar kernels. The convolutions split their pixel
//! blocks across the executor's workers ([`super::im2col::for_each_tile`]).
//!
//! The int8 kernels multiply raw int8 activations and fold `-x_zp * sum(w)` into the packed bias
//! (spec 11.3); requantization widens to 64 bits (`SMULL`, `SRSHL`, `SQXTN`), never `SQRDMULH`.
//! `SDOT`/`SMMLA` are emitted with `asm!` because their intrinsics are unstable on stable Rust.
//!
//! Safety contract of every entry point: it runs only on a CPU with its tier, which the planner
//! guarantees by capping `PlanOptions::max_isa` at `Isa::detect()` (with std; without std the caller
//! vouches for the tier it passes).

/// The registry entry of an int8 tier: the im2col pack with k block `$kb`, and [`epilogue::run_q`] with the
/// microkernel `$micro`. The caller states the tier's safety contract (`run_q` needs the tier's features).
macro_rules! qs8_conv {
    ($kb:expr, $micro:path) => {
        $crate::kernels::registry::QConv {
            supports: super::neon::any_geometry,
            pack: |g, p| $crate::kernels::im2col::pack_i8(g, p, $kb),
            run: |g, pack, p, x, r, y, s, par| unsafe {
                super::epilogue::run_q(g, pack, p, x, r, y, s, par, $kb, |o, acc| $micro(o, acc))
            },
        }
    };
}

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
