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

#[cfg(test)]
mod tests {
    use super::*;

    /// The synthetic image of tests/fixtures/pillow_resize.py, value(x, y, c) in 0..=255.
    fn pattern(w: usize, h: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    v.push(((x * 37 + y * 91 + c * 53 + ((x * y) % 7) * 11) % 256) as u8);
                }
            }
        }
        v
    }

    /// Resizes the whole of `src` (RGB u8) to `ow` x `oh` with our passes; HWC values in 0..=255.
    fn ours(src: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
        let ax = Axis::bilinear(w, ow, 0, ow);
        let ay = Axis::bilinear(h, oh, 0, oh);
        let rows = ay.input_range();
        let mut tmp = Vec::new();
        horizontal(&Samples { data: src, width: w, channels: 3, scale: 1.0 }, rows, &ax, &mut tmp);
        let mut planar = vec![0.0; 3 * ow * oh];
        vertical_normalize(&tmp, rows.0, &ay, ow, ([0.0; 3], [1.0; 3]), &mut Vec::new(), &mut planar);
        (0..oh * ow).flat_map(|p| (0..3).map(move |c| (c, p))).map(|(c, p)| planar[c * ow * oh + p]).collect()
    }

    /// Textbook antialiased bilinear, written independently of `Axis`: every input pixel weighted by the
    /// triangle `max(0, 1 - |x + 0.5 - centre| / max(scale, 1))`, weights normalized, no windows.
    fn naive(src: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
        let weights = |n: usize, on: usize, i: usize| -> Vec<f64> {
            let s = n as f64 / on as f64;
            let centre = (i as f64 + 0.5) * s;
            let raw: Vec<f64> =
                (0..n).map(|x| (1.0 - ((x as f64 + 0.5 - centre) / s.max(1.0)).abs()).max(0.0)).collect();
            let total: f64 = raw.iter().sum();
            raw.into_iter().map(|v| v / total).collect()
        };
        let mut out = Vec::new();
        for i in 0..oh {
            let wy = weights(h, oh, i);
            for j in 0..ow {
                let wx = weights(w, ow, j);
                for c in 0..3 {
                    let mut acc = 0.0;
                    for (y, wy) in wy.iter().enumerate() {
                        for (x, wx) in wx.iter().enumerate() {
                            acc += wy * wx * f64::from(src[(y * w + x) * 3 + c]);
                        }
                    }
                    out.push(acc as f32);
                }
            }
        }
        out
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn hand_derived_two_to_one() {
        // 4 -> 2: scale 2, support 2; output 0 is centred at 1.0: inputs 0..3 sit at distances 0.5, 0.5, 1.5,
        // 2.5 -> triangle weights 0.75, 0.75, 0.25, 0 -> divided by 1.75.
        let ax = Axis::bilinear(4, 2, 0, 2);
        assert_eq!((ax.start[0], ax.len[0]), (0, 3));
        let w = &ax.weights[..3];
        for (got, want) in w.iter().zip([0.75 / 1.75, 0.75 / 1.75, 0.25 / 1.75]) {
            assert!((got - want).abs() < 1e-7, "{w:?}");
        }
        // Output 1 mirrors it: inputs 1, 2, 3 with 0.25, 0.75, 0.75.
        assert_eq!((ax.start[1], ax.len[1]), (1, 3));
        // Identity: one tap of weight 1 each.
        let id = Axis::bilinear(5, 5, 0, 5);
        for i in 0..5 {
            assert_eq!(id.weights[i * id.stride..i * id.stride + id.len[i]].iter().sum::<f32>(), 1.0);
            let k = (0..id.len[i]).find(|&t| id.weights[i * id.stride + t] == 1.0).unwrap();
            assert_eq!(id.start[i] + k, i);
        }
    }

    #[test]
    fn equals_the_naive_formula_on_many_sizes() {
        let sizes = [(1, 1), (2, 1), (7, 3), (23, 17), (31, 8), (64, 48)];
        for &(w, h) in &sizes {
            let src = pattern(w, h);
            for &(ow, oh) in &[(1, 1), (3, 2), (5, 7), (11, 8), (40, 30), (w, h), (2 * w + 1, h.max(2) - 1)] {
                let d = max_diff(&ours(&src, w, h, ow, oh), &naive(&src, w, h, ow, oh));
                assert!(d < 2e-3, "{w}x{h} -> {ow}x{oh}: max difference {d}");
            }
        }
    }

    #[test]
    fn matches_pillow_float_resize() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/pillow_resize.json")).unwrap();
        for case in fixture["resize"].as_array().unwrap() {
            let dims = |k: &str| -> (usize, usize) {
                let a = case[k].as_array().unwrap();
                (a[0].as_u64().unwrap() as usize, a[1].as_u64().unwrap() as usize)
            };
            let ((w, h), (ow, oh)) = (dims("in"), dims("out"));
            let want: Vec<f32> = case["hwc"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let d = max_diff(&ours(&pattern(w, h), w, h, ow, oh), &want);
            // Pillow rounds the fixture to 5 decimals; the rest is f32 vs f64 accumulation.
            assert!(d < 2e-3, "{w}x{h} -> {ow}x{oh}: max difference {d} from Pillow");
        }
    }

    #[test]
    fn crop_computes_the_same_pixels_as_the_full_resize() {
        let (w, h, ow, oh) = (37, 29, 19, 15);
        let src = pattern(w, h);
        let full = ours(&src, w, h, ow, oh);
        let (x0, y0, cw, ch) = (3, 4, 11, 9);
        let ax = Axis::bilinear(w, ow, x0, cw);
        let ay = Axis::bilinear(h, oh, y0, ch);
        let rows = ay.input_range();
        let mut tmp = Vec::new();
        horizontal(&Samples { data: &src[..], width: w, channels: 3, scale: 1.0 }, rows, &ax, &mut tmp);
        let mut planar = vec![0.0; 3 * cw * ch];
        vertical_normalize(&tmp, rows.0, &ay, cw, ([0.0; 3], [1.0; 3]), &mut Vec::new(), &mut planar);
        for y in 0..ch {
            for x in 0..cw {
                for c in 0..3 {
                    let want = full[((y + y0) * ow + x + x0) * 3 + c];
                    assert_eq!(planar[c * cw * ch + y * cw + x], want, "({x}, {y}, {c})");
                }
            }
        }
    }
}
