//! ARMv8.2 dotprod convolution: `SDOT` by element, k block 4. Per k block: two pixel vectors (4 pixels x 4
//! values each), two weight vectors (4 channels x 4 values), 16 `SDOT`s = 256 multiply-adds.

use super::epilogue::QAcc;
use crate::kernels::im2col::{Operands, TILE};
use crate::kernels::registry::QConv;
use core::arch::aarch64::*;
use core::arch::asm;

const KB: usize = 4;

/// # Safety
/// The CPU must implement dotprod.
#[target_feature(enable = "neon,dotprod")]
fn micro(o: &Operands<'_, i8>, acc: &mut QAcc) {
    let step = TILE * KB;
    debug_assert!(o.x.len() >= o.k_blocks * step && o.w.len() >= o.k_blocks * step);
    let mut c = [[vdupq_n_s32(0); 2]; TILE];
    for k in 0..o.k_blocks {
        // SAFETY: in bounds by the frame's layout (asserted above).
        let (x0, x1, w0, w1) = unsafe {
            let (xk, wk) = (o.x.as_ptr().add(k * step), o.w.as_ptr().add(k * step));
            (vld1q_s8(xk), vld1q_s8(xk.add(16)), vld1q_s8(wk), vld1q_s8(wk.add(16)))
        };
        macro_rules! sdot {
            ($($oc:literal: $w:ident[$l:literal]),*) => {$(
                // SAFETY: register-only instruction; dotprod is enabled on this function.
                unsafe {
                    asm!("sdot {a0:v}.4s, {x0:v}.16b, {w:v}.4b[{l}]", "sdot {a1:v}.4s, {x1:v}.16b, {w:v}.4b[{l}]",
                        a0 = inout(vreg) c[$oc][0], a1 = inout(vreg) c[$oc][1], x0 = in(vreg) x0, x1 = in(vreg) x1,
                        w = in(vreg) $w, l = const $l, options(pure, nomem, nostack));
                }
            )*};
        }
        sdot!(0: w0[0], 1: w0[1], 2: w0[2], 3: w0[3], 4: w1[0], 5: w1[1], 6: w1[2], 7: w1[3]);
    }
    for (row, v) in acc.iter_mut().zip(c) {
        // SAFETY: `row` holds 8 i32.
        unsafe {
            vst1q_s32(row.as_mut_ptr(), v[0]);
            vst1q_s32(row.as_mut_ptr().add(4), v[1]);
        }
    }
}

// SAFETY: the planner picks this kernel only on CPUs with dotprod (module contract).
pub const QS8_CONV_NEONDOT: QConv = qs8_conv!(KB, micro);
