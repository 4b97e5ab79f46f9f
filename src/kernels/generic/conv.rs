//! Scalar reference convolution, f32 and int8, NCHW activations and OIHW weights. The oracle for every
//! optimized kernel: plain loops, no unsafe, accumulation in a fixed documented order
//! (bias, then input channel, kernel row, kernel column).

use crate::kernels::{ConvGeom, QConvParams};
use crate::quant::{requantize, saturate};

/// f32 convolution with bias, optional residual (added before the clamp) and clamp [lo, hi].
///
/// Every output is summed in the documented order, one rounding per product and per sum (no FMA), so the
/// bits are the same on every CPU (calibration relies on it). The loops go tap by tap over a whole output
/// row, which keeps each output's order and lets the compiler vectorize across the row.
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
                let o = ((n * g.c_out + oc) * g.h_out + oy) * g.w_out;
                let acc = &mut y[o..o + g.w_out];
                acc.fill(bias[oc]);
                for ic in 0..icg {
                    let xc = &x[(n * g.c_in + grp * icg + ic) * g.h_in * g.w_in..][..g.h_in * g.w_in];
                    for ky in 0..g.kh {
                        let Some(iy) = g.in_y(oy, ky) else { continue };
                        let xr = &xc[iy * g.w_in..][..g.w_in];
                        for kx in 0..g.kw {
                            let wv = wk[(ic * g.kh + ky) * g.kw + kx];
                            let cols = g.valid_ox(kx);
                            let Some(ix0) = g.in_x(cols.start, kx) else { continue };
                            if g.stride_w == 1 {
                                axpy(&mut acc[cols], &xr[ix0..], wv);
                            } else {
                                axpy(&mut acc[cols], xr[ix0..].iter().step_by(g.stride_w), wv);
                            }
                        }
                    }
                }
                if let Some(r) = residual {
                    for (a, &rv) in acc.iter_mut().zip(&r[o..o + g.w_out]) {
                        *a += rv;
                    }
                }
                for a in acc {
                    *a = a.max(lo).min(hi);
                }
            }
        }
    }
}

/// acc[i] += x[i] * w, rounding the product and the sum (a plain loop over contiguous `x` vectorizes).
#[inline(always)]
fn axpy<'a>(acc: &mut [f32], x: impl IntoIterator<Item = &'a f32>, w: f32) {
    for (a, &xv) in acc.iter_mut().zip(x) {
        *a += xv * w;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::{vec, vec::Vec};

    /// The order spelled out one output at a time: the definition the row-wise loops must match bit for bit.
    #[allow(clippy::manual_clamp)] // max then min, as the kernel clamps (f32::clamp differs on NaN)
    fn per_output(g: &ConvGeom, x: &[f32], w: &[f32], bias: &[f32], r: Option<&[f32]>, y: &mut [f32]) {
        let (icg, ocg) = (g.c_in / g.groups, g.c_out / g.groups);
        for n in 0..g.n {
            for oc in 0..g.c_out {
                for oy in 0..g.h_out {
                    for ox in 0..g.w_out {
                        let mut acc = bias[oc];
                        for ic in 0..icg {
                            let c = n * g.c_in + oc / ocg * icg + ic;
                            for ky in 0..g.kh {
                                let Some(iy) = g.in_y(oy, ky) else { continue };
                                for kx in 0..g.kw {
                                    let Some(ix) = g.in_x(ox, kx) else { continue };
                                    acc += x[(c * g.h_in + iy) * g.w_in + ix]
                                        * w[((oc * icg + ic) * g.kh + ky) * g.kw + kx];
                                }
                            }
                        }
                        let o = ((n * g.c_out + oc) * g.h_out + oy) * g.w_out + ox;
                        if let Some(r) = r {
                            acc += r[o];
                        }
                        y[o] = acc.max(-1.5).min(2.0);
                    }
                }
            }
        }
    }

    #[test]
    fn f32_rows_keep_every_outputs_summation_order() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for trial in 0..400 {
            let (kh, kw) = (1 + next(7), 1 + next(7));
            let groups = [1, 1, 2, 3][next(4)];
            let (stride_h, stride_w) = (1 + next(3), 1 + next(3));
            let (dil_h, dil_w) = (1 + next(2), 1 + next(2));
            // Padding up to past the kernel, bottom and right independent of top and left.
            let (pad_t, pad_l, pad_b, pad_r) = (next(kh + 2), next(kw + 2), next(kh + 2), next(kw + 2));
            let (h_in, w_in) = (1 + next(12), 1 + next(19));
            let span = |k: usize, d: usize| (k - 1) * d + 1;
            let Some(h) = (h_in + pad_t + pad_b).checked_sub(span(kh, dil_h)) else { continue };
            let Some(wd) = (w_in + pad_l + pad_r).checked_sub(span(kw, dil_w)) else { continue };
            let g = ConvGeom {
                n: 1 + next(2),
                c_in: groups * (1 + next(3)),
                h_in,
                w_in,
                c_out: groups * (1 + next(3)),
                h_out: h / stride_h + 1,
                w_out: wd / stride_w + 1,
                kh,
                kw,
                stride_h,
                stride_w,
                pad_t,
                pad_l,
                dil_h,
                dil_w,
                groups,
            };
            let mut val = |len: usize| -> Vec<f32> { (0..len).map(|_| next(2001) as f32 / 997.0 - 1.0).collect() };
            let x = val(g.input_len());
            let w = val(g.c_out * g.c_in / groups * kh * kw);
            let (bias, r) = (val(g.c_out), val(g.output_len()));
            let residual = (trial % 2 == 0).then_some(&r[..]);
            let (mut want, mut got) = (vec![0f32; g.output_len()], vec![f32::NAN; g.output_len()]);
            per_output(&g, &x, &w, &bias, residual, &mut want);
            f32_conv2d_scalar(&g, &x, &w, &bias, residual, (-1.5, 2.0), &mut got);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{g:?}");
        }
    }
}
