//! Image decoding and preprocessing through the public API (`resedge::preprocess`): torchvision's recipe on
//! the real photos against Pillow reference values (tests/fixtures/pillow_resize.py), every pixel type
//! against its RGB8 equivalent, the supported file formats, EXIF orientation, the CIFAR-10 32x32 path, and
//! clear errors for truncated or foreign data.

mod common;

use image::{DynamicImage, GrayAlphaImage, GrayImage, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage, RgbaImage};
use resedge::graph::Preprocess;
use resedge::preprocess::{decode, Preprocessor};
use std::path::PathBuf;

fn shared(rel: &str) -> PathBuf {
    common::shared_data(rel)
}

fn read_shared(rel: &str) -> Vec<u8> {
    let p = shared(rel);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (the tests need ../shared beside the repository)", p.display()))
}

fn run(spec: &Preprocess, img: &DynamicImage) -> Vec<f32> {
    let mut p = Preprocessor::new(spec, &[3, spec.crop[0], spec.crop[1]]).unwrap();
    let mut out = vec![0.0; p.output_len()];
    p.run(img, &mut out).unwrap();
    out
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

fn rgb_pattern(w: u32, h: u32) -> RgbImage {
    ImageBuffer::from_fn(w, h, |x, y| {
        Rgb([(x * 7 + y * 3) as u8, (x * y % 251) as u8, (255 - (x + 2 * y) % 256) as u8])
    })
}

#[test]
fn photos_match_torchvision_on_pillow() {
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("tests/fixtures/pillow_resize.json").unwrap()).unwrap();
    let spec = Preprocess::imagenet();
    for photo in fixture["photos"].as_array().unwrap() {
        let name = photo["file"].as_str().unwrap();
        let img = decode(&read_shared(&format!("photos/{name}"))).unwrap();
        let out = run(&spec, &img);
        // PNG decodes to the same pixels in both libraries: only f32 rounding differs. JPEG decoders differ by
        // a few levels (IDCT and chroma upsampling), about 0.05 after normalization.
        let tol = if name.ends_with(".png") { 1e-4 } else { 0.08 };
        let plane = 224 * 224;
        for c in 0..3 {
            let mean = out[c * plane..(c + 1) * plane].iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64;
            let want = photo["channel_means"][c].as_f64().unwrap();
            assert!((mean - want).abs() < tol / 4.0, "{name} channel {c} mean {mean} vs Pillow {want}");
        }
        for s in photo["samples"].as_array().unwrap() {
            let [c, y, x] = [0, 1, 2].map(|i| s[i].as_u64().unwrap() as usize);
            let want = s[3].as_f64().unwrap() as f32;
            let got = out[c * plane + y * 224 + x];
            assert!((got - want).abs() < tol as f32, "{name} [{c}, {y}, {x}]: {got} vs Pillow {want}");
        }
    }
}

#[test]
fn pixel_types_are_read_as_their_rgb8_equivalent() {
    let spec = Preprocess { resize: 20, crop: [16, 18], mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3] };
    let gray = GrayImage::from_fn(45, 31, |x, y| Luma([(x * 5 + y * 11) as u8]));
    let gray_as_rgb = DynamicImage::ImageRgb8(ImageBuffer::from_fn(45, 31, |x, y| Rgb([gray.get_pixel(x, y)[0]; 3])));
    let want = run(&spec, &gray_as_rgb);
    let close = |a: &[f32], b: &[f32], what: &str| {
        let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(d < 1e-5, "{what}: max difference {d}");
    };
    close(&run(&spec, &DynamicImage::ImageLuma8(gray.clone())), &want, "gray8");
    let gray_alpha = GrayAlphaImage::from_fn(45, 31, |x, y| image::LumaA([gray.get_pixel(x, y)[0], (x * y) as u8]));
    close(&run(&spec, &DynamicImage::ImageLumaA8(gray_alpha)), &want, "gray8 + alpha");
    // 16-bit v * 257 is exactly v / 255 in [0, 1].
    let gray16 = ImageBuffer::<Luma<u16>, _>::from_fn(45, 31, |x, y| Luma([u16::from(gray.get_pixel(x, y)[0]) * 257]));
    close(&run(&spec, &DynamicImage::ImageLuma16(gray16)), &want, "gray16");

    let rgb = rgb_pattern(45, 31);
    let want = run(&spec, &DynamicImage::ImageRgb8(rgb.clone()));
    let rgba = RgbaImage::from_fn(45, 31, |x, y| {
        let p = rgb.get_pixel(x, y);
        image::Rgba([p[0], p[1], p[2], (x * 13) as u8])
    });
    close(&run(&spec, &DynamicImage::ImageRgba8(rgba)), &want, "rgba8");
    let rgb16 = DynamicImage::ImageRgb8(rgb.clone()).into_rgb16();
    close(&run(&spec, &DynamicImage::ImageRgb16(rgb16)), &want, "rgb16");
    let rgbf = DynamicImage::ImageRgb8(rgb).into_rgb32f();
    close(&run(&spec, &DynamicImage::ImageRgb32F(rgbf)), &want, "rgb32f");
}

#[test]
fn lossless_formats_decode_exactly() {
    let rgb = DynamicImage::ImageRgb8(rgb_pattern(33, 21));
    for format in [ImageFormat::Png, ImageFormat::Bmp, ImageFormat::WebP] {
        let back = decode(&encode(&rgb, format)).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(back.to_rgb8(), *rgb.as_rgb8().unwrap(), "{format:?}");
    }
    let gray16 = DynamicImage::ImageLuma16(ImageBuffer::from_fn(9, 7, |x, y| Luma([(x * 7000 + y * 300) as u16])));
    let back = decode(&encode(&gray16, ImageFormat::Png)).unwrap();
    assert_eq!(back.as_luma16().expect("16-bit PNG stays 16-bit"), gray16.as_luma16().unwrap());
    let jpeg = decode(&encode(&rgb, ImageFormat::Jpeg)).unwrap();
    assert_eq!((jpeg.width(), jpeg.height()), (33, 21));
}

#[test]
fn progressive_jpeg_frames_and_decodes() {
    // Several scans (SOS segments) with Huffman tables between them.
    let bytes = std::fs::read("tests/fixtures/progressive.jpg").unwrap();
    assert!(bytes.windows(2).filter(|w| *w == [0xFF, 0xDA]).count() > 1, "fixture should be progressive");
    assert_eq!(resedge::preprocess::jpeg::scan(&bytes), resedge::preprocess::jpeg::Scan::Complete(bytes.len()));
    let img = decode(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (23, 17));
    let e = decode(&bytes[..bytes.len() * 2 / 3]).unwrap_err().to_string();
    assert!(e.contains("truncated JPEG"), "{e}");
}

/// A JPEG whose APP1 segment says EXIF orientation `value`.
fn jpeg_with_orientation(img: &DynamicImage, value: u16) -> Vec<u8> {
    let jpeg = encode(img, ImageFormat::Jpeg);
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
    tiff.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01]); // Orientation, SHORT, count 1
    tiff.extend_from_slice(&value.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // value padding, next IFD = 0
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_applied() {
    // 32x16, left half red, right half blue. Orientation 6 means "rotate 90 degrees clockwise to display":
    // the result is 16x32 with red on top.
    let img =
        DynamicImage::ImageRgb8(RgbImage::from_fn(
            32,
            16,
            |x, _| if x < 16 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) },
        ));
    let plain = decode(&jpeg_with_orientation(&img, 1)).unwrap().to_rgb8();
    assert_eq!(plain.dimensions(), (32, 16));
    let rotated = decode(&jpeg_with_orientation(&img, 6)).unwrap().to_rgb8();
    assert_eq!(rotated.dimensions(), (16, 32));
    let (top, bottom) = (rotated.get_pixel(8, 4), rotated.get_pixel(8, 27));
    assert!(top[0] > 200 && top[2] < 60, "top should be red: {top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 60, "bottom should be blue: {bottom:?}");
    // Orientation 3: rotate 180, blue on the left.
    let flipped = decode(&jpeg_with_orientation(&img, 3)).unwrap().to_rgb8();
    assert!(flipped.get_pixel(4, 8)[2] > 200, "{:?}", flipped.get_pixel(4, 8));
}

#[test]
fn truncated_and_foreign_data_are_clear_errors() {
    let jpeg = read_shared("photos/rocket.jpg");
    for cut in [jpeg.len() / 2, jpeg.len() - 2, 700, 3] {
        let e = decode(&jpeg[..cut]).unwrap_err().to_string();
        assert!(e.contains("truncated JPEG"), "cut at {cut}: {e}");
    }
    let png = read_shared("photos/coffee.png");
    let e = decode(&png[..png.len() / 3]).unwrap_err().to_string();
    assert!(e.starts_with("image: Png"), "{e}");
    let e = decode(b"GIF89a not supported").unwrap_err().to_string();
    assert!(e.contains("unsupported image format Gif"), "{e}");
    let e = decode(b"plain text, not an image").unwrap_err().to_string();
    assert!(e.contains("unrecognised image format"), "{e}");
    assert!(decode(&[]).is_err());
    // A header claiming a 65535 x 65535 image is refused before allocating.
    let mut bmp = encode(&DynamicImage::ImageRgb8(rgb_pattern(4, 4)), ImageFormat::Bmp);
    bmp[18..22].copy_from_slice(&65535i32.to_le_bytes());
    bmp[22..26].copy_from_slice(&65535i32.to_le_bytes());
    let e = decode(&bmp).map(|i| (i.width(), i.height()));
    assert!(e.is_err(), "{e:?}");
}

#[test]
fn cifar_png_records_normalize_exactly() {
    // Records 0-9 of the official test batch (exact, not JPEG-recompressed), written as PNG, decoded and
    // preprocessed with the shipped model's parameters, must equal (x / 255 - mean) / std of the raw bytes:
    // the 32x32 path resizes nothing.
    let model_bytes = std::fs::read("models/cifar10/resnet20.rsm").unwrap();
    let model = resedge::format::load(&model_bytes).unwrap();
    let spec = model.preprocess.clone().unwrap();
    let batch = read_shared("cifar10/test_batch.bin");
    let mut p = Preprocessor::new(&spec, &model.graph.input.shape).unwrap();
    let mut out = vec![0.0; p.output_len()];
    for rec in batch.chunks_exact(3073).take(10) {
        let chw = &rec[1..];
        let img = RgbImage::from_fn(32, 32, |x, y| {
            let i = (y * 32 + x) as usize;
            Rgb([chw[i], chw[1024 + i], chw[2048 + i]])
        });
        let png = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png);
        p.run(&decode(&png).unwrap(), &mut out).unwrap();
        for (i, (&got, &x)) in out.iter().zip(chw).enumerate() {
            let c = i / 1024;
            let want = (f32::from(x) / 255.0 - spec.mean[c]) / spec.std[c];
            assert!((got - want).abs() < 1e-5, "label {} value {i}: {got} vs {want}", rec[0]);
        }
    }
}
