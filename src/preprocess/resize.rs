//! Antialiased bilinear resize fused with the center crop and the mean/std normalization, writing the
//! planar (CHW) f32 input tensor directly.
//!
//! The weights are those of PIL's `Image.resize(..., BILINEAR)`, which is what torchvision's `Resize` applies
//! to PIL images and what its tensor path computes with `antialias=True`: a triangle filter whose support
//! grows with the downscaling factor, so every input pixel contributes (no aliasing). Output coordinate `i`
//! of an axis scaled by `s = in / out` is centred at `(i + 0.5) s` in input coordinates; input pixel `j`
//! weighs `max(0, 1 - |j + 0.5 - centre| / max(s, 1))`, over the window PIL uses, normalized to sum 1.
//! We compute in f32 without rounding to 8 bits between the two passes (torchvision's float path; PIL's
//! uint8 path rounds twice and can differ by one level).
//!
//! Only the output pixels inside the crop are computed, and only the input rows they need.

use std::prelude::v1::*;

/// The taps of a run of output coordinates along one axis.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Axis {
    /// First input index of each output coordinate's window.
    pub start: Vec<usize>,
    /// Window lengths.
    pub len: Vec<usize>,
    /// `stride` weights per output coordinate (the first `len[i]` are used).
    pub weights: Vec<f32>,
    pub stride: usize,
}

impl Axis {
    /// Weights for output coordinates `first .. first + count` of an axis resized from `in_len` to `out_len`
    /// (PIL's `precompute_coeffs` with the bilinear filter, in f64 as PIL does).
    pub fn bilinear(in_len: usize, out_len: usize, first: usize, count: usize) -> Axis {
        let scale = in_len as f64 / out_len as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale; // the triangle's support is 1, widened by the downscale factor
        let inv_filter_scale = 1.0 / filter_scale;
        let stride = support.ceil() as usize * 2 + 1;
        let mut axis = Axis {
            start: Vec::with_capacity(count),
            len: Vec::with_capacity(count),
            weights: vec![0.0; stride * count],
            stride,
        };
        for (k, i) in (first..first + count).enumerate() {
            let centre = (i as f64 + 0.5) * scale;
            // Truncation toward zero, as PIL's (int) casts.
            let lo = ((centre - support + 0.5) as i64).max(0) as usize;
            let hi = ((centre + support + 0.5) as i64).clamp(0, in_len as i64) as usize;
            let n = hi.saturating_sub(lo).min(stride);
            let w = &mut axis.weights[k * stride..k * stride + n];
            let mut total = 0.0f64;
            let raw: Vec<f64> = (0..n)
                .map(|j| {
                    let x = ((lo + j) as f64 - centre + 0.5) * inv_filter_scale;
                    let v = (1.0 - x.abs()).max(0.0);
                    total += v;
                    v
                })
                .collect();
            for (dst, v) in w.iter_mut().zip(raw) {
                *dst = if total != 0.0 { (v / total) as f32 } else { 0.0 };
            }
            axis.start.push(lo);
            axis.len.push(n);
        }
        axis
    }

    /// Input indices `[lo, hi)` that some output coordinate reads.
    pub fn input_range(&self) -> (usize, usize) {
        let lo = self.start.iter().copied().min().unwrap_or(0);
        let hi = self.start.iter().zip(&self.len).map(|(s, n)| s + n).max().unwrap_or(0);
        (lo, hi)
    }
}

/// An image's pixel samples as the resizer reads them: `channels` interleaved samples per pixel (1 gray,
/// 2 gray + alpha, 3 RGB, 4 RGBA; alpha is ignored, gray is replicated), each multiplied by `scale` to [0, 1].
pub(crate) struct Samples<'a, T> {
    pub data: &'a [T],
    pub width: usize,
    pub channels: usize,
    pub scale: f32,
}

/// Horizontal pass: for input rows `rows`, the cropped output columns as interleaved RGB f32 in `tmp`.
pub(crate) fn horizontal<T: Copy + Into<f32>>(
    src: &Samples<'_, T>,
    rows: (usize, usize),
    ax: &Axis,
    tmp: &mut Vec<f32>,
) {
    let cols = ax.start.len();
    tmp.clear();
    tmp.resize((rows.1 - rows.0) * cols * 3, 0.0);
    let nc = src.channels;
    let row_len = src.width * nc;
    for (y, out) in (rows.0..rows.1).zip(tmp.chunks_exact_mut(cols * 3)) {
        let row = &src.data[y * row_len..(y + 1) * row_len];
        for (k, px) in out.chunks_exact_mut(3).enumerate() {
            let w = &ax.weights[k * ax.stride..k * ax.stride + ax.len[k]];
            let taps = &row[ax.start[k] * nc..(ax.start[k] + w.len()) * nc];
            let mut acc = [0.0f32; 3];
            if nc >= 3 {
                for (p, &w) in taps.chunks_exact(nc).zip(w) {
                    acc[0] += w * p[0].into();
                    acc[1] += w * p[1].into();
                    acc[2] += w * p[2].into();
                }
            } else {
                for (p, &w) in taps.chunks_exact(nc).zip(w) {
                    acc[0] += w * p[0].into();
                }
                acc[1] = acc[0];
                acc[2] = acc[0];
            }
            px.copy_from_slice(&acc.map(|a| a * src.scale));
        }
    }
}

/// Vertical pass over the horizontal pass's rows (which start at input row `first_row`), then
/// `(x - mean) / std`, written planar into `out` ([3, rows, cols]).
pub(crate) fn vertical_normalize(
    tmp: &[f32],
    first_row: usize,
    ax: &Axis,
    cols: usize,
    (mean, std): ([f32; 3], [f32; 3]),
    acc: &mut Vec<f32>,
    out: &mut [f32],
) {
    let rows = ax.start.len();
    let plane = rows * cols;
    acc.resize(cols * 3, 0.0);
    for i in 0..rows {
        acc.fill(0.0);
        let w = &ax.weights[i * ax.stride..i * ax.stride + ax.len[i]];
        for (t, &w) in w.iter().enumerate() {
            let r = ax.start[i] + t - first_row;
            for (a, &x) in acc.iter_mut().zip(&tmp[r * cols * 3..(r + 1) * cols * 3]) {
                *a += w * x;
            }
        }
        for (j, px) in acc.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i * cols + j] = (px[c] - mean[c]) / std[c];
            }
        }
    }
}
