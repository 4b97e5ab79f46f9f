//! YUYV 4:2:2 (V4L2 `YUYV`, the uncompressed format every UVC webcam offers) to RGB8.
//!
//! Each 4-byte group `Y0 U Y1 V` covers two pixels that share U and V. Webcams send BT.601 limited range
//! (Y in 16..235, U/V in 16..240), so the conversion is R = 1.164 (Y-16) + 1.596 (V-128),
//! G = 1.164 (Y-16) - 0.392 (U-128) - 0.813 (V-128), B = 1.164 (Y-16) + 2.017 (U-128), clamped to 0..255,
//! computed in 8.8 fixed point (the coefficients times 256, rounded).

use crate::{Error, Result};
use image::RgbImage;
use std::prelude::v1::*;

/// Converts a YUYV frame of `width` x `height` pixels whose rows start every `stride` bytes
/// (`stride >= 2 * width`; V4L2's `bytesperline`). `width` must be even.
pub fn yuyv_to_rgb(src: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage> {
    let (w, h) = (width as usize, height as usize);
    if w == 0 || h == 0 || w % 2 != 0 {
        return Err(Error::Image(format!("YUYV frame {width}x{height}: width must be even and sizes non-zero")));
    }
    if stride < 2 * w {
        return Err(Error::Image(format!("YUYV frame {width}x{height}: stride {stride} < 2 * width")));
    }
    let needed = stride.checked_mul(h - 1).and_then(|n| n.checked_add(2 * w));
    if needed.is_none_or(|n| src.len() < n) {
        return Err(Error::Image(format!(
            "YUYV frame {width}x{height} (stride {stride}) needs {} bytes, got {}",
            needed.map_or_else(|| "too many".into(), |n| n.to_string()),
            src.len()
        )));
    }
    let mut rgb = vec![0u8; 3 * w * h];
    for (row, out) in rgb.chunks_exact_mut(3 * w).enumerate() {
        let line = &src[row * stride..row * stride + 2 * w];
        for (yuyv, px) in line.chunks_exact(4).zip(out.chunks_exact_mut(6)) {
            let (u, v) = (i32::from(yuyv[1]) - 128, i32::from(yuyv[3]) - 128);
            let (r, g, b) = (409 * v, -100 * u - 208 * v, 516 * u);
            for (y, px) in [yuyv[0], yuyv[2]].into_iter().zip(px.chunks_exact_mut(3)) {
                let c = 298 * (i32::from(y) - 16) + 128;
                px[0] = ((c + r) >> 8).clamp(0, 255) as u8;
                px[1] = ((c + g) >> 8).clamp(0, 255) as u8;
                px[2] = ((c + b) >> 8).clamp(0, 255) as u8;
            }
        }
    }
    Ok(RgbImage::from_raw(width, height, rgb).expect("buffer is 3 * w * h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The BT.601 formula in floating point, rounded: the fixed-point conversion must stay within 1 of it.
    fn reference(y: u8, u: u8, v: u8) -> [f64; 3] {
        let (y, u, v) = (f64::from(y) - 16.0, f64::from(u) - 128.0, f64::from(v) - 128.0);
        [1.164 * y + 1.596 * v, 1.164 * y - 0.392 * u - 0.813 * v, 1.164 * y + 2.017 * u].map(|c| c.clamp(0.0, 255.0))
    }

    #[test]
    fn matches_the_bt601_formula_within_one_level() {
        // Every Y with a sweep of U and V, in one 2-pixel-wide frame per (u, v) pair.
        for u in (0..=255u8).step_by(5) {
            for v in (0..=255u8).step_by(3) {
                let mut src = Vec::new();
                for y in (0..=255u8).step_by(2) {
                    src.extend_from_slice(&[y, u, y.saturating_add(1), v]);
                }
                let img = yuyv_to_rgb(&src, 2, 128, 4).unwrap();
                for (i, px) in img.pixels().enumerate() {
                    let y = src[(i / 2) * 4 + (i % 2) * 2];
                    let want = reference(y, u, v);
                    for c in 0..3 {
                        let got = f64::from(px[c]);
                        assert!((got - want[c]).abs() <= 1.0, "y {y} u {u} v {v} channel {c}: {got} vs {:.2}", want[c]);
                    }
                }
            }
        }
    }

    #[test]
    fn known_colours_and_row_padding() {
        // Limited-range black, white, and pure red (Y 81, U 90, V 240 in BT.601), in a frame with 4 padding
        // bytes per row.
        let row = [16, 128, 235, 128, 81, 90, 81, 240, 0xAA, 0xAA, 0xAA, 0xAA];
        let src: Vec<u8> = row.iter().chain(row.iter()).copied().collect();
        let img = yuyv_to_rgb(&src, 4, 2, 12).unwrap();
        for y in 0..2 {
            assert_eq!(img.get_pixel(0, y).0, [0, 0, 0]);
            assert_eq!(img.get_pixel(1, y).0, [255, 255, 255]);
            let red = img.get_pixel(2, y).0;
            assert!(red[0] >= 253 && red[1] <= 2 && red[2] <= 2, "{red:?}");
        }
    }

    #[test]
    fn short_or_odd_frames_are_errors() {
        assert!(yuyv_to_rgb(&[0; 15], 4, 2, 8).is_err());
        assert!(yuyv_to_rgb(&[0; 16], 3, 2, 8).is_err());
        assert!(yuyv_to_rgb(&[0; 16], 4, 2, 6).is_err());
        assert!(yuyv_to_rgb(&[], 0, 0, 0).is_err());
    }
}
