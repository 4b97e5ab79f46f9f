//! NEON int8 max pooling for the ResNet stem's window (3x3, stride 2, any padding): a vertical max of the
//! (up to) three input rows, then the horizontal max of three taps for 16 outputs at once (`LD2` splits even
//! and odd columns). Other windows, and rows wider than the stack buffers, take the scalar kernel. Padding
//! is -128, which never wins: the planner only admits windows that touch the input (spec 7.4).

use crate::kernels::generic;
use crate::kernels::ConvGeom;
use core::arch::aarch64::*;

/// Widest input row the fast path takes (stack buffers).
const MAX_W: usize = 2048;

pub fn qs8_maxpool(g: &ConvGeom, x: &[i8], y: &mut [i8]) {
    let fits = g.kh == 3 && g.kw == 3 && g.stride_h == 2 && g.stride_w == 2 && g.dil_h == 1 && g.dil_w == 1;
    if !fits || g.pad_l + g.w_in > MAX_W || 2 * g.w_out + 34 > MAX_W + 64 {
        return generic::qs8_maxpool_scalar(g, x, y);
    }
    // SAFETY: NEON is part of every AArch64 target this module is built for.
    unsafe { maxpool_3x3s2(g, x, y) }
}

#[target_feature(enable = "neon")]
fn maxpool_3x3s2(g: &ConvGeom, x: &[i8], y: &mut [i8]) {
    let (hw_in, hw_out) = (g.h_in * g.w_in, g.h_out * g.w_out);
    // `cols[j]` = vertical max at input column j - pad_l (-128 outside the row); 32 bytes of slack for LD2.
    let mut cols = [i8::MIN; MAX_W + 64];
    let mut out = [0i8; 16];
    for (xc, yc) in x.chunks_exact(hw_in).zip(y.chunks_exact_mut(hw_out)) {
        for (oy, yr) in yc.chunks_exact_mut(g.w_out).enumerate() {
            let rows = (0..3).filter_map(|ky| g.in_y(oy, ky)).map(|iy| &xc[iy * g.w_in..][..g.w_in]);
            let vm = &mut cols[g.pad_l..g.pad_l + g.w_in];
            vm.fill(i8::MIN);
            for r in rows {
                let (mut a, mut b) = (vm.chunks_exact_mut(16), r.chunks_exact(16));
                for (d, s) in (&mut a).zip(&mut b) {
                    // SAFETY: both chunks hold 16 bytes.
                    unsafe { vst1q_s8(d.as_mut_ptr(), vmaxq_s8(vld1q_s8(d.as_ptr()), vld1q_s8(s.as_ptr()))) };
                }
                for (d, &s) in a.into_remainder().iter_mut().zip(b.remainder()) {
                    *d = (*d).max(s);
                }
            }
            for ox0 in (0..g.w_out).step_by(16) {
                let p = &cols[2 * ox0..2 * ox0 + 34];
                // SAFETY: `p` holds 34 bytes; LD2 reads 32 from offsets 0 and 2.
                let m = unsafe {
                    let (e, e2) = (vld2q_s8(p.as_ptr()), vld2q_s8(p.as_ptr().add(2)));
                    vmaxq_s8(vmaxq_s8(e.0, e.1), e2.0)
                };
                let n = (g.w_out - ox0).min(16);
                // SAFETY: `out` holds 16 bytes.
                unsafe { vst1q_s8(out.as_mut_ptr(), m) };
                yr[ox0..ox0 + n].copy_from_slice(&out[..n]);
            }
        }
    }
}
