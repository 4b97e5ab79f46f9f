//! What `resedge camera` reads: a [`FrameSource`] hands out encoded or raw frames; the capture thread
//! (`camera/mod.rs`) decides what to keep.

use image::DynamicImage;
use std::time::Instant;

/// Pixels as a source delivers them; decoding happens on the inference thread, so frames that are dropped
/// cost no decode.
pub enum Pixels {
    /// An image file's bytes (JPEG for MJPEG sources; any supported format for directories).
    Encoded(Vec<u8>),
    /// A raw YUYV 4:2:2 frame (V4L2), rows `stride` bytes apart.
    #[cfg_attr(not(feature = "camera"), allow(dead_code))]
    Yuyv { width: u32, height: u32, stride: usize, data: Vec<u8> },
}

/// One captured frame.
pub struct Frame {
    pub pixels: Pixels,
    /// Where it came from, for messages: "frame 12", a file name.
    pub name: String,
    pub captured: Instant,
}

impl Frame {
    pub fn new(pixels: Pixels, name: String) -> Self {
        Frame { pixels, name, captured: Instant::now() }
    }

    /// Decodes (or converts) the frame to an image.
    pub fn decode(&self) -> resedge::Result<DynamicImage> {
        match &self.pixels {
            Pixels::Encoded(bytes) => resedge::preprocess::decode(bytes),
            Pixels::Yuyv { width, height, stride, data } => {
                resedge::preprocess::yuyv_to_rgb(data, *width, *height, *stride).map(DynamicImage::ImageRgb8)
            }
        }
    }
}

/// Why a source produced no frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// The source is gone: stream cut in the middle of a frame, camera unplugged, read error.
    Lost(String),
    /// One frame (or a run of bytes) was unusable; later frames may be fine.
    Corrupt(String),
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::Lost(m) => write!(f, "source lost: {m}"),
            SourceError::Corrupt(m) => write!(f, "corrupt frame: {m}"),
        }
    }
}

/// A camera, a stream or a folder of images.
pub trait FrameSource: Send {
    /// For messages: "/dev/video0 (MJPG 640x480)", "MJPEG on stdin".
    fn describe(&self) -> String;
    /// The next frame; `Ok(None)` when the source ended cleanly (last file, end of stream between frames).
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;
    /// Whether frames arrive in real time, so stale ones must be dropped, rather than on request.
    fn is_live(&self) -> bool;
    /// Whether [`FrameSource::reconnect`] can work (a device can come back; stdin cannot).
    fn can_reconnect(&self) -> bool {
        false
    }
    /// Reopens the source after [`SourceError::Lost`].
    fn reconnect(&mut self) -> Result<(), String> {
        Err(format!("{} cannot be reopened", self.describe()))
    }
}
