//! A V4L2 camera (`/dev/videoN`, feature `camera`) as a frame source: MJPEG preferred, YUYV otherwise, at the
//! requested size and rate (the driver picks the nearest it supports), four mmap buffers, a 2 s dequeue
//! timeout so an unplugged or stalled camera becomes an error instead of a hang.
//!
//! [`frame_from_buffer`] (the part that turns a dequeued buffer into a [`Frame`]) needs no device and is
//! always compiled and tested; the device code needs the `v4l` crate.

// Without the `camera` feature only the tests use the buffer conversion.
#![cfg_attr(not(feature = "camera"), allow(dead_code))]

use super::source::{Frame, Pixels, SourceError};

/// The pixel formats we ask for, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fourcc {
    Mjpg,
    Yuyv,
}

impl Fourcc {
    pub fn code(self) -> [u8; 4] {
        match self {
            Fourcc::Mjpg => *b"MJPG",
            Fourcc::Yuyv => *b"YUYV",
        }
    }
    pub fn from_code(code: [u8; 4]) -> Option<Self> {
        match &code {
            b"MJPG" => Some(Fourcc::Mjpg),
            b"YUYV" => Some(Fourcc::Yuyv),
            _ => None,
        }
    }
}

/// The frame format the driver agreed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    pub fourcc: Fourcc,
    pub width: u32,
    pub height: u32,
    /// Bytes per row (YUYV).
    pub stride: usize,
}

/// A dequeued buffer (`bytesused` bytes of it) as a frame. MJPEG buffers may carry padding after the JPEG
/// (drivers round up), which is cut; an empty or truncated buffer is a corrupt frame.
pub fn frame_from_buffer(format: &Format, data: &[u8], sequence: u32) -> Result<Frame, SourceError> {
    let name = format!("frame {sequence}");
    match format.fourcc {
        Fourcc::Mjpg => match resedge::preprocess::jpeg::scan(data) {
            resedge::preprocess::jpeg::Scan::Complete(n) => Ok(Frame::new(Pixels::Encoded(data[..n].to_vec()), name)),
            resedge::preprocess::jpeg::Scan::Incomplete => {
                Err(SourceError::Corrupt(format!("{name}: MJPEG buffer of {} bytes ends inside the JPEG", data.len())))
            }
            resedge::preprocess::jpeg::Scan::Invalid(why) => Err(SourceError::Corrupt(format!("{name}: {why}"))),
        },
        Fourcc::Yuyv => {
            let need = format.stride * format.height as usize;
            if data.len() < need {
                return Err(SourceError::Corrupt(format!(
                    "{name}: YUYV buffer of {} bytes, {}x{} needs {need}",
                    data.len(),
                    format.width,
                    format.height
                )));
            }
            let pixels = Pixels::Yuyv {
                width: format.width,
                height: format.height,
                stride: format.stride,
                data: data[..need].to_vec(),
            };
            Ok(Frame::new(pixels, name))
        }
    }
}

#[cfg(feature = "camera")]
pub use device::V4l2Source;

#[cfg(feature = "camera")]
mod device {
    use super::{frame_from_buffer, Format, Fourcc};
    use crate::camera::source::{Frame, FrameSource, SourceError};
    use std::path::PathBuf;
    use v4l::buffer::Type;
    use v4l::io::traits::CaptureStream;
    use v4l::prelude::{Device, MmapStream};
    use v4l::video::Capture;

    pub struct V4l2Source {
        path: PathBuf,
        size: Option<(u32, u32)>,
        fps: Option<u32>,
        format: Format,
        // Declared before `_device` so the buffers are unmapped and streaming stops before the device closes.
        stream: MmapStream<'static>,
        _device: Device,
    }

    impl V4l2Source {
        pub fn open(path: PathBuf, size: Option<(u32, u32)>, fps: Option<u32>) -> anyhow::Result<Self> {
            let (device, stream, format) = open(&path, size, fps)?;
            Ok(V4l2Source { path, size, fps, format, stream, _device: device })
        }
    }

    fn open(
        path: &PathBuf,
        size: Option<(u32, u32)>,
        fps: Option<u32>,
    ) -> anyhow::Result<(Device, MmapStream<'static>, Format)> {
        use anyhow::Context;
        let what = || format!("camera {}", path.display());
        let device = Device::with_path(path).with_context(what)?;
        let offered: Vec<[u8; 4]> = device.enum_formats().with_context(what)?.iter().map(|f| f.fourcc.repr).collect();
        let fourcc =
            [Fourcc::Mjpg, Fourcc::Yuyv].into_iter().find(|f| offered.contains(&f.code())).with_context(|| {
                let names: Vec<String> = offered.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect();
                format!("{} offers {}; resedge reads MJPG or YUYV", what(), names.join(", "))
            })?;
        let mut fmt = device.format().with_context(what)?;
        fmt.fourcc = v4l::FourCC::new(&fourcc.code());
        if let Some((w, h)) = size {
            (fmt.width, fmt.height) = (w, h);
        }
        let fmt = device.set_format(&fmt).with_context(what)?;
        let fourcc = Fourcc::from_code(fmt.fourcc.repr)
            .with_context(|| format!("{}: driver switched to {}", what(), fmt.fourcc))?;
        if let Some(fps) = fps {
            device.set_params(&v4l::video::capture::Parameters::with_fps(fps)).with_context(what)?;
        }
        let mut stream = MmapStream::with_buffers(&device, Type::VideoCapture, 4).with_context(what)?;
        stream.set_timeout(std::time::Duration::from_secs(2));
        let format = Format { fourcc, width: fmt.width, height: fmt.height, stride: fmt.stride as usize };
        Ok((device, stream, format))
    }

    impl FrameSource for V4l2Source {
        fn describe(&self) -> String {
            let f = &self.format;
            format!("{} ({:?} {}x{})", self.path.display(), f.fourcc, f.width, f.height)
        }

        fn is_live(&self) -> bool {
            true
        }

        fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
            let format = self.format;
            match CaptureStream::next(&mut self.stream) {
                Ok((buf, meta)) => {
                    let used = (meta.bytesused as usize).min(buf.len());
                    frame_from_buffer(&format, &buf[..used], meta.sequence).map(Some)
                }
                Err(e) => Err(SourceError::Lost(format!("{}: {e}", self.path.display()))),
            }
        }

        fn can_reconnect(&self) -> bool {
            true
        }

        fn reconnect(&mut self) -> Result<(), String> {
            let (device, stream, format) = open(&self.path, self.size, self.fps).map_err(|e| format!("{e:#}"))?;
            self.stream = stream;
            self._device = device;
            self.format = format;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg() -> Vec<u8> {
        let img = image::RgbImage::from_fn(16, 8, |x, y| image::Rgb([(x * 16) as u8, (y * 32) as u8, 200]));
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn mjpeg_buffers_lose_driver_padding_and_truncation_is_corrupt() {
        let j = jpeg();
        let format = Format { fourcc: Fourcc::Mjpg, width: 16, height: 8, stride: 0 };
        let mut padded = j.clone();
        padded.resize(j.len() + 4096, 0);
        let frame = frame_from_buffer(&format, &padded, 7).unwrap();
        assert_eq!(frame.name, "frame 7");
        assert!(matches!(&frame.pixels, Pixels::Encoded(b) if *b == j));
        let img = frame.decode().unwrap();
        assert_eq!((img.width(), img.height()), (16, 8));
        assert!(matches!(frame_from_buffer(&format, &j[..j.len() - 10], 8), Err(SourceError::Corrupt(_))));
        assert!(matches!(frame_from_buffer(&format, &[], 9), Err(SourceError::Corrupt(_))));
    }

    #[test]
    fn yuyv_buffers_convert_with_their_stride() {
        // 4x2 YUYV with 4 bytes of row padding: mid grey (Y 126, U = V = 128) everywhere.
        let row = [126, 128, 126, 128, 126, 128, 126, 128, 9, 9, 9, 9];
        let data = [row, row].concat();
        let format = Format { fourcc: Fourcc::Yuyv, width: 4, height: 2, stride: 12 };
        let img = frame_from_buffer(&format, &data, 0).unwrap().decode().unwrap().to_rgb8();
        // 1.164 * (126 - 16) = 128.04 -> 128.
        assert!(img.pixels().all(|p| p.0 == [128, 128, 128]), "{:?}", img.as_raw());
        assert!(matches!(frame_from_buffer(&format, &data[..20], 1), Err(SourceError::Corrupt(_))));
    }

    #[test]
    fn ffmpeg_frames_as_v4l2_buffers() {
        // ffmpeg's testsrc2 frame as a YUYV buffer, converted by us and by ffmpeg (swscale): two independent
        // BT.601 decoders that round differently, so a few levels apart at most.
        let yuyv = include_bytes!("../../../../tests/fixtures/testsrc2-64x48.yuyv");
        let ffmpeg_rgb = include_bytes!("../../../../tests/fixtures/testsrc2-64x48.rgb");
        let format = Format { fourcc: Fourcc::Yuyv, width: 64, height: 48, stride: 128 };
        let ours = frame_from_buffer(&format, yuyv, 1).unwrap().decode().unwrap().to_rgb8();
        let diff: Vec<i32> =
            ours.as_raw().iter().zip(ffmpeg_rgb).map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs()).collect();
        let mean = diff.iter().sum::<i32>() as f64 / diff.len() as f64;
        assert!(*diff.iter().max().unwrap() <= 4 && mean < 1.5, "max {:?} mean {mean}", diff.iter().max());
        // The same frame as an MJPEG buffer decodes to nearly the same picture.
        let mjpg = include_bytes!("../../../../tests/fixtures/testsrc2-64x48.mjpg");
        let format = Format { fourcc: Fourcc::Mjpg, width: 64, height: 48, stride: 0 };
        let decoded = frame_from_buffer(&format, mjpg, 2).unwrap().decode().unwrap().to_rgb8();
        assert_eq!(decoded.dimensions(), (64, 48));
        let mean =
            decoded.as_raw().iter().zip(ffmpeg_rgb).map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs()).sum::<f64>()
                / ffmpeg_rgb.len() as f64;
        assert!(mean < 9.0, "MJPEG frame far from the YUYV one: mean difference {mean}");
    }

    #[test]
    fn fourcc_codes_round_trip() {
        for f in [Fourcc::Mjpg, Fourcc::Yuyv] {
            assert_eq!(Fourcc::from_code(f.code()), Some(f));
        }
        assert_eq!(Fourcc::from_code(*b"H264"), None);
    }
}
