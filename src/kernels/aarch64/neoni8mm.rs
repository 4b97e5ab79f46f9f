//! ARMv8.6 i8mm convolution: `SMMLA`, k block 8. Each instruction multiplies a 2x8 block of pixels by a 2x8
//! block of channels into a 2x2 i32 tile (32 multiply-adds); per k block 4 pixel vectors, 4 weight vectors
//! and 16 `SMMLA`s = 512 multiply-adds.

use super::epilogue::QAcc;
use crate::kernels::im2col::{Operands, TILE};
use crate::kernels::registry::QConv;
use core::arch::aarch64::*;
use core::arch::asm;

const KB: usize = 8;

/// # Safety
/// The CPU must implement i8mm.
#[target_feature(enable = "neon,i8mm")]
fn micro(o: &Operands<'_, i8>, acc: &mut QAcc) {
    let step = TILE * KB;
    debug_assert!(o.x.len() >= o.k_blocks * step && o.w.len() >= o.k_blocks * step);
    // c[pixel pair][channel pair] = [p0c0, p0c1, p1c0, p1c1].
    let mut c = [[vdupq_n_s32(0); 4]; 4];
    for k in 0..o.k_blocks {
        // SAFETY: in bounds by the frame's layout (asserted above).
        let (xv, wv) = unsafe {
            let (xk, wk) = (o.x.as_ptr().add(k * step), o.w.as_ptr().add(k * step));
            let ld = |p: *const i8| [vld1q_s8(p), vld1q_s8(p.add(16)), vld1q_s8(p.add(32)), vld1q_s8(p.add(48))];
            (ld(xk), ld(wk))
        };
        for (cp, x) in c.iter_mut().zip(xv) {
            for (cc, w) in cp.iter_mut().zip(wv) {
                // SAFETY: register-only instruction; i8mm is enabled on this function.
                unsafe {
                    asm!("smmla {c:v}.4s, {x:v}.16b, {w:v}.16b", c = inout(vreg) *cc, x = in(vreg) x, w = in(vreg) w,
                        options(pure, nomem, nostack));
                }
            }
        }
    }
    // Lanes 0 and 2 of a 2x2 tile belong to its first channel: UZP1/UZP2 of two pixel pairs give one
    // channel's four pixels.
    for q in 0..2 {
        for cp in 0..4 {
            let (a, b) = (c[2 * q][cp], c[2 * q + 1][cp]);
            // SAFETY: 4 i32 fit at pixel offset 4q of an 8-wide row.
            unsafe {
                vst1q_s32(acc[2 * cp].as_mut_ptr().add(4 * q), vuzp1q_s32(a, b));
                vst1q_s32(acc[2 * cp + 1].as_mut_ptr().add(4 * q), vuzp2q_s32(a, b));
            }
        }
    }
}

// SAFETY: the planner picks this kernel only on CPUs with i8mm (module contract).
pub const QS8_CONV_NEONI8MM: QConv = qs8_conv!(KB, micro);
