//! Scalar reference pooling, f32 and int8, NCHW. Geometry is a depthwise [`ConvGeom`]
//! (c_out = c_in = groups).

use crate::kernels::{ConvGeom, Requant};
use crate::quant::{requantize, saturate};

/// Max pooling; padded positions are ignored (never win). A window entirely in padding yields `min`;
/// the planner only admits geometries where every window touches the input.
pub fn max_pool<T: Copy + PartialOrd>(g: &ConvGeom, x: &[T], min: T, y: &mut [T]) {
    for nc in 0..g.n * g.c_in {
        let xc = &x[nc * g.h_in * g.w_in..][..g.h_in * g.w_in];
        for oy in 0..g.h_out {
            for ox in 0..g.w_out {
                let mut best = min;
                for ky in 0..g.kh {
                    let Some(iy) = g.in_y(oy, ky) else { continue };
                    for kx in 0..g.kw {
                        let Some(ix) = g.in_x(ox, kx) else { continue };
                        let v = xc[iy * g.w_in + ix];
                        if v > best {
                            best = v;
                        }
                    }
                }
                y[(nc * g.h_out + oy) * g.w_out + ox] = best;
            }
        }
    }
}

/// f32 max pooling.
pub fn f32_maxpool_scalar(g: &ConvGeom, x: &[f32], y: &mut [f32]) {
    max_pool(g, x, f32::NEG_INFINITY, y)
}

/// int8 max pooling (input and output share quantization, so this is exact).
pub fn qs8_maxpool_scalar(g: &ConvGeom, x: &[i8], y: &mut [i8]) {
    max_pool(g, x, i8::MIN, y)
}

/// Number of window taps that fall inside the input (the divisor without padding).
fn taps_inside(g: &ConvGeom, oy: usize, ox: usize) -> usize {
    let ys = (0..g.kh).filter(|&k| g.in_y(oy, k).is_some()).count();
    let xs = (0..g.kw).filter(|&k| g.in_x(ox, k).is_some()).count();
    ys * xs
}

/// f32 average pooling; the divisor is kh*kw with `count_include_pad`, else the taps inside the input.
pub fn f32_avgpool_scalar(g: &ConvGeom, count_include_pad: bool, x: &[f32], y: &mut [f32]) {
    for nc in 0..g.n * g.c_in {
        let xc = &x[nc * g.h_in * g.w_in..][..g.h_in * g.w_in];
        for oy in 0..g.h_out {
            for ox in 0..g.w_out {
                let mut sum = 0.0f32;
                for ky in 0..g.kh {
                    let Some(iy) = g.in_y(oy, ky) else { continue };
                    for kx in 0..g.kw {
                        let Some(ix) = g.in_x(ox, kx) else { continue };
                        sum += xc[iy * g.w_in + ix];
                    }
                }
                let count = if count_include_pad { g.kh * g.kw } else { taps_inside(g, oy, ox) };
                y[(nc * g.h_out + oy) * g.w_out + ox] = sum / count.max(1) as f32;
            }
        }
    }
}

/// int8 average pooling: sum of (x - x_zp) over the window (padding contributes 0), requantized with a
/// multiplier that already includes 1/(kh*kw). Only `count_include_pad` semantics exist in int8.
pub fn qs8_avgpool_scalar(g: &ConvGeom, x_zp: i32, rq: &Requant<'_>, x: &[i8], y: &mut [i8]) {
    let (m, s) = rq.channel(0);
    for nc in 0..g.n * g.c_in {
        let xc = &x[nc * g.h_in * g.w_in..][..g.h_in * g.w_in];
        for oy in 0..g.h_out {
            for ox in 0..g.w_out {
                let mut sum = 0i32;
                for ky in 0..g.kh {
                    let Some(iy) = g.in_y(oy, ky) else { continue };
                    for kx in 0..g.kw {
                        let Some(ix) = g.in_x(ox, kx) else { continue };
                        sum += xc[iy * g.w_in + ix] as i32 - x_zp;
                    }
                }
                y[(nc * g.h_out + oy) * g.w_out + ox] = saturate(requantize(sum, m, s), rq.zero_point, rq.lo, rq.hi);
            }
        }
    }
}

/// f32 global average pooling over H*W: [N, C, H, W] -> [N, C].
pub fn f32_gap_scalar(hw: usize, x: &[f32], y: &mut [f32]) {
    for (xc, yc) in x.chunks_exact(hw).zip(y.iter_mut()) {
        *yc = xc.iter().sum::<f32>() / hw as f32;
    }
}

/// int8 global average pooling: sum of (x - x_zp) over H*W, requantized (multiplier includes 1/(H*W)).
pub fn qs8_gap_scalar(hw: usize, x_zp: i32, rq: &Requant<'_>, x: &[i8], y: &mut [i8]) {
    let (m, s) = rq.channel(0);
    for (xc, yc) in x.chunks_exact(hw).zip(y.iter_mut()) {
        let sum: i32 = xc.iter().map(|&v| v as i32 - x_zp).sum();
        *yc = saturate(requantize(sum, m, s), rq.zero_point, rq.lo, rq.hi);
    }
}
