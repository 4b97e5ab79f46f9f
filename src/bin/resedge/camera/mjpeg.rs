//! An MJPEG byte stream (concatenated JPEGs, as `ffmpeg ... -f mjpeg -` writes) split into frames by walking
//! each JPEG's markers from SOI to EOI (`resedge::preprocess::jpeg`), reading in 64 KiB chunks. Bytes outside
//! a JPEG, a malformed frame, or a frame over the size limit are reported as corrupt and skipped up to the next
//! SOI; a stream that ends inside a frame is reported as lost.

use super::source::{Frame, FrameSource, Pixels, SourceError};
use resedge::preprocess::jpeg::{JpegScanner, Scan};
use std::io::Read;

/// Largest frame accepted (a 4K MJPEG frame is a few MB).
pub const MAX_FRAME_BYTES: usize = 32 << 20;
const CHUNK: usize = 64 << 10;

pub struct MjpegReader<R> {
    reader: R,
    name: String,
    /// Unconsumed bytes; while `in_frame`, a frame's SOI is at index 0.
    buf: Vec<u8>,
    in_frame: bool,
    scanner: JpegScanner,
    frames: u64,
    ended: bool,
    /// Skipping the rest of a frame already reported as corrupt: skipped bytes are not reported again.
    resyncing: bool,
}

impl<R: Read + Send> MjpegReader<R> {
    pub fn new(reader: R, name: &str) -> Self {
        MjpegReader {
            reader,
            name: name.into(),
            buf: Vec::new(),
            in_frame: false,
            scanner: JpegScanner::new(),
            frames: 0,
            ended: false,
            resyncing: false,
        }
    }

    /// Reads one more chunk; `Ok(false)` at end of stream.
    fn fill(&mut self) -> Result<bool, SourceError> {
        let old = self.buf.len();
        self.buf.resize(old + CHUNK, 0);
        let n = loop {
            match self.reader.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(SourceError::Lost(format!("reading {}: {e}", self.name)));
                }
            }
        };
        self.buf.truncate(old + n);
        Ok(n > 0)
    }

    fn hint(&self) -> &'static str {
        if self.frames == 0 {
            " (is it an MJPEG stream?)"
        } else {
            ""
        }
    }

    /// Gives up the frame at the start of the buffer: skips its SOI and resynchronizes on the next one.
    fn abandon_frame(&mut self) {
        self.buf.drain(..2);
        self.in_frame = false;
        self.resyncing = true;
    }

    /// Drops bytes up to the next SOI (keeping a trailing `FF` that may start one). Returns how many.
    fn skip_to_soi(&mut self) -> usize {
        let at = self.buf.windows(2).position(|w| w == [0xFF, 0xD8]);
        let skip = at.unwrap_or(self.buf.len() - usize::from(self.buf.last() == Some(&0xFF)));
        self.buf.drain(..skip);
        self.in_frame = at.is_some();
        self.scanner = JpegScanner::new();
        if std::mem::take(&mut self.resyncing) {
            self.resyncing = !self.in_frame;
            return 0;
        }
        skip
    }
}

impl<R: Read + Send> FrameSource for MjpegReader<R> {
    fn describe(&self) -> String {
        format!("MJPEG on {}", self.name)
    }

    fn is_live(&self) -> bool {
        true
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.ended {
            return Ok(None);
        }
        let mut skipped = 0;
        loop {
            if !self.in_frame {
                skipped += self.skip_to_soi();
                if self.in_frame && skipped > 0 {
                    return Err(SourceError::Corrupt(format!(
                        "{skipped} bytes of non-JPEG data before frame {} in {}{}",
                        self.frames + 1,
                        self.name,
                        self.hint()
                    )));
                }
            }
            if self.in_frame {
                match self.scanner.advance(&self.buf) {
                    Scan::Complete(n) => {
                        let bytes: Vec<u8> = self.buf.drain(..n).collect();
                        self.in_frame = false;
                        self.frames += 1;
                        return Ok(Some(Frame::new(Pixels::Encoded(bytes), format!("frame {}", self.frames))));
                    }
                    Scan::Invalid(why) => {
                        self.abandon_frame();
                        return Err(SourceError::Corrupt(format!("frame {} in {}: {why}", self.frames + 1, self.name)));
                    }
                    Scan::Incomplete if self.buf.len() > MAX_FRAME_BYTES => {
                        self.abandon_frame();
                        return Err(SourceError::Corrupt(format!(
                            "frame {} in {} is larger than {MAX_FRAME_BYTES} bytes",
                            self.frames + 1,
                            self.name
                        )));
                    }
                    Scan::Incomplete => {}
                }
            }
            if !self.fill()? {
                self.ended = true;
                if self.in_frame {
                    return Err(SourceError::Lost(format!(
                        "{} ended in the middle of frame {} ({} bytes of an unfinished JPEG)",
                        self.name,
                        self.frames + 1,
                        self.buf.len()
                    )));
                }
                let garbage = skipped + self.buf.len();
                if garbage > 0 && !self.resyncing {
                    return Err(SourceError::Corrupt(format!(
                        "{} ended with {garbage} bytes that are not a JPEG{}",
                        self.name,
                        self.hint()
                    )));
                }
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(seed: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([seed, (x * 9) as u8, (y * 13) as u8]));
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    /// Reads every event until the stream ends (or 100 events).
    fn events(bytes: Vec<u8>) -> Vec<Result<Vec<u8>, SourceError>> {
        let mut r = MjpegReader::new(std::io::Cursor::new(bytes), "test");
        let mut out = Vec::new();
        while out.len() < 100 {
            match r.next_frame() {
                Ok(Some(f)) => match f.pixels {
                    Pixels::Encoded(b) => out.push(Ok(b)),
                    Pixels::Yuyv { .. } => unreachable!(),
                },
                Ok(None) => break,
                Err(e) => out.push(Err(e)),
            }
        }
        out
    }

    #[test]
    fn splits_concatenated_jpegs_exactly() {
        // Frames larger than one read chunk included.
        let big = {
            // Noise compresses badly: well over one read chunk.
            let noise = |x: u32, y: u32, k: u32| {
                (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503 + k)).rotate_left(k) as u8
            };
            let img = image::RgbImage::from_fn(400, 300, |x, y| {
                image::Rgb([noise(x, y, 3), noise(x, y, 11), noise(x, y, 17)])
            });
            let mut out = std::io::Cursor::new(Vec::new());
            image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
            out.into_inner()
        };
        assert!(big.len() > CHUNK, "{}", big.len());
        let frames = [jpeg(1), big, jpeg(2), jpeg(3)];
        let got = events(frames.concat());
        assert_eq!(got.len(), 4);
        for (g, want) in got.iter().zip(&frames) {
            assert_eq!(g.as_ref().unwrap(), want);
        }
    }

    #[test]
    fn a_cut_stream_is_lost_and_garbage_is_corrupt() {
        let (a, b) = (jpeg(1), jpeg(2));
        let cut = [a.clone(), b[..b.len() / 2].to_vec()].concat();
        let got = events(cut);
        assert_eq!(got[0].as_ref().unwrap(), &a);
        assert!(matches!(&got[1], Err(SourceError::Lost(m)) if m.contains("middle of frame 2")), "{got:?}");
        assert_eq!(got.len(), 2);

        let noisy = [b"junk".to_vec(), a.clone(), b"\x00\x01".to_vec(), b.clone()].concat();
        let got = events(noisy);
        assert!(matches!(&got[0], Err(SourceError::Corrupt(m)) if m.contains("4 bytes")), "{got:?}");
        assert_eq!(got[1].as_ref().unwrap(), &a);
        assert!(matches!(&got[2], Err(SourceError::Corrupt(_))), "{got:?}");
        assert_eq!(got[3].as_ref().unwrap(), &b);

        // A frame cut short and followed by a whole one: the broken one is corrupt (cut in its headers here, so
        // the segment walk lands inside the next frame), the next one is kept.
        let spliced = [a[..a.len() / 2].to_vec(), b.clone()].concat();
        let got = events(spliced);
        assert!(matches!(&got[0], Err(SourceError::Corrupt(m)) if m.contains("frame 1")), "{got:?}");
        assert_eq!(got[1].as_ref().unwrap(), &b);
        assert_eq!(got.len(), 2);
        // Cut inside the entropy-coded data instead: the next SOI ends it.
        let spliced = [a[..a.len() - 20].to_vec(), b.clone()].concat();
        let got = events(spliced);
        assert!(matches!(&got[0], Err(SourceError::Corrupt(m)) if m.contains("start-of-image")), "{got:?}");
        assert_eq!(got[1].as_ref().unwrap(), &b);

        let png = events(b"\x89PNG\r\n\x1a\nIHDR....".to_vec());
        assert!(matches!(&png[..], [Err(SourceError::Corrupt(m))] if m.contains("MJPEG")), "{png:?}");
        assert!(events(Vec::new()).is_empty());
    }
}
