//! Scalar reference convolution, f32 and int8, NCHW activations and OIHW weights. The oracle for every
//! optimized kernel: plain loops, no unsafe, accumulation in a fixed documented order
//! (bias, then input channel, kernel row, kernel column).

use crate::kernels::{ConvGeom, QConvParams};
use crate::quant::{requantize, saturate};

/// f32 convolution with bias, optional residual (added before the clamp) and clamp [lo, hi].
pub fn f32_conv2d_scalar(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    (lo, hi): (f32, f32),
    y: &mut [f32],
) {
    let icg = g.c_in / g.groups;
    let ocg = g.c_out / g.groups;
    debug_assert_eq!(x.len(), g.input_len());
    debug_assert_eq!(y.len(), g.output_len());
    debug_assert_eq!(w.len(), g.c_out * icg * g.kh * g.kw);
    for n in 0..g.n {
        for oc in 0..g.c_out {
            let grp = oc / ocg;
            let wk = &w[oc * icg * g.kh * g.kw..][..icg * g.kh * g.kw];
            for oy in 0..g.h_out {
                for ox in 0..g.w_out {
                    let mut acc = bias[oc];
                    for ic in 0..icg {
                        let xc = &x[(n * g.c_in + grp * icg + ic) * g.h_in * g.w_in..][..g.h_in * g.w_in];
                        for ky in 0..g.kh {
                            let Some(iy) = g.in_y(oy, ky) else { continue };
                            for kx in 0..g.kw {
                                let Some(ix) = g.in_x(ox, kx) else { continue };
                                acc += xc[iy * g.w_in + ix] * wk[(ic * g.kh + ky) * g.kw + kx];
                            }
                        }
                    }
                    let o = ((n * g.c_out + oc) * g.h_out + oy) * g.w_out + ox;
                    if let Some(r) = residual {
                        acc += r[o];
                    }
                    y[o] = acc.max(lo).min(hi);
                }
            }
        }
    }
}

/// int8 convolution per the spec: i32 accumulation of (x - x_zp) * w plus the i32 bias, per-channel
/// requantization, optional residual requantized to the output scale, output zero point, clamp.
pub fn qs8_conv2d_scalar(g: &ConvGeom, p: &QConvParams<'_>, x: &[i8], residual: Option<&[i8]>, y: &mut [i8]) {
    let icg = g.c_in / g.groups;
    let ocg = g.c_out / g.groups;
    debug_assert_eq!(x.len(), g.input_len());
    debug_assert_eq!(y.len(), g.output_len());
    debug_assert_eq!(p.weight.len(), g.c_out * icg * g.kh * g.kw);
    for n in 0..g.n {
        for oc in 0..g.c_out {
            let grp = oc / ocg;
            let wk = &p.weight[oc * icg * g.kh * g.kw..][..icg * g.kh * g.kw];
            let (m, s) = p.requant.channel(oc);
            for oy in 0..g.h_out {
                for ox in 0..g.w_out {
                    let mut acc = p.bias[oc];
                    for ic in 0..icg {
                        let xc = &x[(n * g.c_in + grp * icg + ic) * g.h_in * g.w_in..][..g.h_in * g.w_in];
                        for ky in 0..g.kh {
                            let Some(iy) = g.in_y(oy, ky) else { continue };
                            for kx in 0..g.kw {
                                let Some(ix) = g.in_x(ox, kx) else { continue };
                                let xv = xc[iy * g.w_in + ix] as i32 - p.x_zero_point;
                                acc += xv * wk[(ic * g.kh + ky) * g.kw + kx] as i32;
                            }
                        }
                    }
                    let o = ((n * g.c_out + oc) * g.h_out + oy) * g.w_out + ox;
                    let mut v = requantize(acc, m, s);
                    if let (Some(r), Some(rq)) = (residual, &p.residual) {
                        v = v.saturating_add(requantize(r[o] as i32 - rq.zero_point, rq.multiplier, rq.shift));
                    }
                    y[o] = saturate(v, p.requant.zero_point, p.requant.lo, p.requant.hi);
                }
            }
        }
    }
}
