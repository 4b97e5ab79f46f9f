//! Images to input tensors (feature `image`): decode JPEG, PNG, BMP and (feature `webp`) WebP files, then resize, center-crop
//! and normalize them as torchvision's `Resize(resize)`, `CenterCrop(crop)`, `ToTensor()`,
//! `Normalize(mean, std)` do, with the parameters stored in the model file ([`Preprocess`]).
//!
//! - [`decode`]: format sniffed from the bytes (not the file name), size limits against hostile headers,
//!   truncated JPEGs rejected (the decoder would fill the missing part with grey), EXIF orientation applied.
//! - [`Preprocessor::run`]: reads any decoded pixel type in place (8/16-bit, float; gray, gray + alpha, RGB,
//!   RGBA: gray is replicated to three channels, alpha is dropped as PIL's `convert("RGB")` does) and writes
//!   the planar f32 tensor in one resize pass per axis; see [`resize`] for the exact filter.
//! - [`yuyv_to_rgb`]: the uncompressed webcam format.
//!
//! Geometry follows torchvision exactly: the shorter side becomes `resize` and the longer
//! `int(resize * long / short)`; the crop origin is `int(round((size - crop) / 2))` with Python's
//! round-half-to-even.

pub mod jpeg;
mod resize;
mod yuyv;

pub use yuyv::yuyv_to_rgb;

use crate::graph::Preprocess;
use crate::{Error, Result};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use resize::{Axis, Samples};
use std::prelude::v1::*;

/// Largest width or height [`decode`] accepts (a 16384 x 16384 RGB image is 768 MiB decoded).
pub const MAX_SIDE: u32 = 16384;
/// Most bytes a decoder may allocate.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

/// Decodes an image file's bytes (JPEG, PNG, BMP or WebP, recognised by content) and applies its EXIF
/// orientation. Errors name the problem: unknown format, truncated or corrupt data, oversized image.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage> {
    decode_with_limit(bytes, MAX_DECODE_BYTES)
}

/// [`decode`] with a smaller allocation budget (fuzzing, small boards).
pub fn decode_with_limit(bytes: &[u8], max_bytes: u64) -> Result<DynamicImage> {
    let supported = if cfg!(feature = "webp") { "JPEG, PNG, BMP, WebP" } else { "JPEG, PNG, BMP" };
    let reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    let format = reader.format().ok_or_else(|| {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Error::Image(format!(
            "unrecognised image format (supported: {supported}); {} bytes starting {}",
            bytes.len(),
            head.join(" ")
        ))
    })?;
    if format == ImageFormat::WebP && !cfg!(feature = "webp") {
        return Err(Error::Image("WebP support is not in this build (cargo feature `webp`)".into()));
    }
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Bmp | ImageFormat::WebP) {
        return Err(Error::Image(format!("unsupported image format {format:?} (supported: {supported})")));
    }
    if format == ImageFormat::Jpeg {
        match jpeg::scan(bytes) {
            jpeg::Scan::Complete(_) => {}
            jpeg::Scan::Incomplete => {
                return Err(Error::Image(format!(
                    "truncated JPEG: the data ends after {} bytes, before the end-of-image marker",
                    bytes.len()
                )))
            }
            jpeg::Scan::Invalid(why) => return Err(Error::Image(format!("corrupt JPEG: {why}"))),
        }
    }
    let what = |e: image::ImageError| Error::Image(format!("{format:?}: {e}"));
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(max_bytes);
    let mut reader = reader;
    reader.limits(limits.clone());
    let mut decoder = reader.into_decoder().map_err(what)?;
    limits.reserve(decoder.total_bytes()).map_err(what)?;
    // Unreadable EXIF is not a reason to refuse the pixels.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(what)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Where the crop of a `width` x `height` image lies after the resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Size after resizing the shorter side: [width, height].
    pub resized: [usize; 2],
    /// Top-left corner of the crop in the resized image: [x, y].
    pub origin: [usize; 2],
    /// Crop size: [width, height].
    pub crop: [usize; 2],
}

/// Turns decoded images into the model's f32 input, [3, crop height, crop width]. Keeps its filter weights
/// and scratch rows between calls, so a stream of same-sized frames allocates nothing after the first.
#[derive(Debug)]
pub struct Preprocessor {
    spec: Preprocess,
    cached: Option<([usize; 2], Axis, Axis)>,
    rows: Vec<f32>,
    acc: Vec<f32>,
}

impl Preprocessor {
    /// Checks `spec` against the graph input shape `[3, H, W]` (crop must equal [H, W]).
    pub fn new(spec: &Preprocess, input_shape: &[usize]) -> Result<Self> {
        let bad = |what: String| Err(Error::Input(format!("preprocess {spec:?}: {what}")));
        if input_shape.len() != 3 || input_shape[0] != 3 {
            return bad(format!("the model input must be [3, H, W] for images, not {input_shape:?}"));
        }
        if spec.crop != [input_shape[1], input_shape[2]] {
            return bad(format!("crop [h, w] must equal the input's spatial size {:?}", &input_shape[1..]));
        }
        if spec.crop.contains(&0) || spec.resize < spec.crop[0].max(spec.crop[1]) {
            return bad("crop must be non-empty and fit inside the resized shorter side".into());
        }
        if spec.resize > MAX_SIDE as usize {
            return bad(format!("resize larger than {MAX_SIDE}"));
        }
        if !spec.mean.iter().chain(&spec.std).all(|v| v.is_finite()) || spec.std.iter().any(|&s| s <= 0.0) {
            return bad("mean and std must be finite and std > 0".into());
        }
        Ok(Preprocessor { spec: spec.clone(), cached: None, rows: Vec::new(), acc: Vec::new() })
    }

    /// The parameters in use.
    pub fn spec(&self) -> &Preprocess {
        &self.spec
    }

    /// Number of f32 values [`Preprocessor::run`] writes.
    pub fn output_len(&self) -> usize {
        3 * self.spec.crop[0] * self.spec.crop[1]
    }

    /// torchvision's resize and center-crop geometry for a `width` x `height` image.
    pub fn geometry(&self, width: usize, height: usize) -> Geometry {
        let size = self.spec.resize;
        let (short, long) = if width <= height { (width, height) } else { (height, width) };
        // Python evaluates int(size * long / short): integer product, correctly rounded division, truncation.
        let new_long = ((size as u64 * long as u64) as f64 / short as f64) as usize;
        let resized = if width <= height { [size, new_long] } else { [new_long, size] };
        let crop = [self.spec.crop[1], self.spec.crop[0]];
        let origin = [0, 1].map(|a| round_half_even_half(resized[a] - crop[a]));
        Geometry { resized, origin, crop }
    }

    /// Writes the preprocessed `img` into `out` (length [`Preprocessor::output_len`], planar RGB).
    pub fn run(&mut self, img: &DynamicImage, out: &mut [f32]) -> Result<()> {
        if out.len() != self.output_len() {
            return Err(Error::Input(format!("output has {} values, expected {}", out.len(), self.output_len())));
        }
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Err(Error::Input(format!("image is {w}x{h}")));
        }
        let g = self.geometry(w, h);
        if g.resized[0] < g.crop[0] || g.resized[1] < g.crop[1] {
            // Only reachable for extreme aspect ratios, where the long side rounds below the crop.
            return Err(Error::Input(format!("a {w}x{h} image resizes to {:?}, smaller than the crop", g.resized)));
        }
        if self.cached.as_ref().is_none_or(|(size, _, _)| *size != [w, h]) {
            let ax = Axis::bilinear(w, g.resized[0], g.origin[0], g.crop[0]);
            let ay = Axis::bilinear(h, g.resized[1], g.origin[1], g.crop[1]);
            self.cached = Some(([w, h], ax, ay));
        }
        let (_, ax, ay) = self.cached.as_ref().expect("set above");
        let rows = ay.input_range();
        match img {
            DynamicImage::ImageLuma8(i) => {
                resize::horizontal(&samples(i.as_raw(), w, 1, 255.0), rows, ax, &mut self.rows)
            }
            DynamicImage::ImageLumaA8(i) => {
                resize::horizontal(&samples(i.as_raw(), w, 2, 255.0), rows, ax, &mut self.rows)
            }
            DynamicImage::ImageRgb8(i) => {
                resize::horizontal(&samples(i.as_raw(), w, 3, 255.0), rows, ax, &mut self.rows)
            }
            DynamicImage::ImageRgba8(i) => {
                resize::horizontal(&samples(i.as_raw(), w, 4, 255.0), rows, ax, &mut self.rows)
            }
            DynamicImage::ImageLuma16(i) => {
                resize::horizontal(&samples(i.as_raw(), w, 1, 65535.0), rows, ax, &mut self.rows)
            }
            DynamicImage::ImageLumaA16(i) => {
                resize::horizontal(&samples(i.as_raw(), w, 2, 65535.0), rows, ax, &mut self.rows)
            }
            DynamicImage::ImageRgb16(i) => {
                resize::horizontal(&samples(i.as_raw(), w, 3, 65535.0), rows, ax, &mut self.rows)
            }
            DynamicImage::ImageRgba16(i) => {
                resize::horizontal(&samples(i.as_raw(), w, 4, 65535.0), rows, ax, &mut self.rows)
            }
            DynamicImage::ImageRgb32F(i) => {
                resize::horizontal(&samples(i.as_raw(), w, 3, 1.0), rows, ax, &mut self.rows)
            }
            DynamicImage::ImageRgba32F(i) => {
                resize::horizontal(&samples(i.as_raw(), w, 4, 1.0), rows, ax, &mut self.rows)
            }
            other => {
                let rgb = other.to_rgb32f();
                resize::horizontal(&samples(rgb.as_raw(), w, 3, 1.0), rows, ax, &mut self.rows)
            }
        }
        let norm = (self.spec.mean, self.spec.std);
        resize::vertical_normalize(&self.rows, rows.0, ay, g.crop[0], norm, &mut self.acc, out);
        Ok(())
    }
}

fn samples<T>(data: &[T], width: usize, channels: usize, max: f32) -> Samples<'_, T> {
    Samples { data, width, channels, scale: 1.0 / max }
}

/// `round(d / 2)` with ties to even, as Python's `round` (torchvision's center-crop origin).
fn round_half_even_half(d: usize) -> usize {
    let k = d / 2;
    if d % 2 == 1 && k % 2 == 1 {
        k + 1
    } else {
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_origin_rounds_half_to_even_like_python() {
        // Python: round(0.5) = 0, round(1.5) = 2, round(2.5) = 2, round(58.5) = 58, round(59.5) = 60.
        for (d, want) in [(0, 0), (1, 0), (3, 2), (5, 2), (117, 58), (119, 60), (32, 16)] {
            assert_eq!(round_half_even_half(d), want, "d = {d}");
        }
    }

    #[test]
    fn geometry_matches_torchvision() {
        let p = Preprocessor::new(&Preprocess::imagenet(), &[3, 224, 224]).unwrap();
        // 640x427: short 427 -> 256, long int(256 * 640 / 427) = int(383.70) = 383; crop origin
        // round(159 / 2) = round(79.5) = 80, round(32 / 2) = 16.
        assert_eq!(p.geometry(640, 427), Geometry { resized: [383, 256], origin: [80, 16], crop: [224, 224] });
        // 512x600 portrait: 256 x int(256 * 600 / 512) = 300; origins 16 and round(76 / 2) = 38.
        assert_eq!(p.geometry(512, 600), Geometry { resized: [256, 300], origin: [16, 38], crop: [224, 224] });
        // 451x300: long int(256 * 451 / 300) = int(384.85) = 384; origin round(160 / 2) = 80.
        assert_eq!(p.geometry(451, 300).resized, [384, 256]);
    }

    #[test]
    fn bad_specs_are_errors() {
        let ok = Preprocess::imagenet();
        assert!(Preprocessor::new(&ok, &[3, 224, 224]).is_ok());
        assert!(Preprocessor::new(&ok, &[3, 32, 32]).is_err());
        assert!(Preprocessor::new(&ok, &[1, 224, 224]).is_err());
        assert!(Preprocessor::new(&Preprocess { resize: 200, ..ok.clone() }, &[3, 224, 224]).is_err());
        assert!(Preprocessor::new(&Preprocess { std: [0.0, 1.0, 1.0], ..ok.clone() }, &[3, 224, 224]).is_err());
        assert!(Preprocessor::new(&Preprocess { mean: [f32::NAN, 0.0, 0.0], ..ok }, &[3, 224, 224]).is_err());
    }
}
