//! JPEG framing without decoding: walks the marker segments from start-of-image (SOI, `FF D8`) to end-of-image
//! (EOI, `FF D9`). Used to reject truncated JPEG files (the decoder would otherwise fill the missing part with
//! grey) and to split an MJPEG byte stream into frames.
//!
//! Walking segments by their lengths, rather than searching for `FF D9`, keeps an EXIF thumbnail (a whole
//! JPEG inside the APP1 segment) from ending the frame early. Inside entropy-coded data `FF` is always followed
//! by `00` (stuffing) or a restart marker, so the first other marker there ends the scan.

use std::prelude::v1::*;

/// Where a scan stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The JPEG is complete: its EOI marker ends at this byte count.
    Complete(usize),
    /// The bytes so far are a valid beginning; more are needed.
    Incomplete,
    /// Not a well-formed JPEG (the message says where).
    Invalid(String),
}

/// A resumable scan of one JPEG at the start of a growing buffer: call [`JpegScanner::advance`] again with the
/// same buffer extended by new bytes, and it continues where it stopped (linear time over a stream).
#[derive(Clone, Debug, Default)]
pub struct JpegScanner {
    pos: usize,
    in_entropy_data: bool,
}

impl JpegScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes examined so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Continues the scan over `buf` (which must start with the same bytes as on earlier calls).
    pub fn advance(&mut self, buf: &[u8]) -> Scan {
        if self.pos == 0 {
            match buf {
                [] | [0xFF] => return Scan::Incomplete,
                [0xFF, 0xD8, ..] => self.pos = 2,
                _ => return Scan::Invalid("no start-of-image marker (FF D8) at byte 0".into()),
            }
        }
        loop {
            if self.in_entropy_data {
                match next_marker(buf, self.pos) {
                    Ok(at) => {
                        self.pos = at;
                        self.in_entropy_data = false;
                    }
                    Err(resume) => {
                        self.pos = resume;
                        return Scan::Incomplete;
                    }
                }
            }
            let p = self.pos;
            let (Some(&ff), Some(&marker)) = (buf.get(p), buf.get(p + 1)) else { return Scan::Incomplete };
            if ff != 0xFF {
                return Scan::Invalid(format!("expected a marker at byte {p}, found {ff:#04x}"));
            }
            match marker {
                // Fill bytes before a marker.
                0xFF => self.pos += 1,
                0xD9 => return Scan::Complete(p + 2),
                0xD8 => return Scan::Invalid(format!("start-of-image marker at byte {p} before end-of-image")),
                // Markers without a length: TEM, RST0-7.
                0x01 | 0xD0..=0xD7 => self.pos += 2,
                0x00 => return Scan::Invalid(format!("invalid marker FF 00 at byte {p}")),
                _ => {
                    let (Some(&hi), Some(&lo)) = (buf.get(p + 2), buf.get(p + 3)) else { return Scan::Incomplete };
                    let len = usize::from(u16::from_be_bytes([hi, lo]));
                    if len < 2 {
                        return Scan::Invalid(format!("segment {marker:#04x} at byte {p} has length {len}"));
                    }
                    self.pos = p + 2 + len;
                    // Start-of-scan: entropy-coded data follows its header.
                    self.in_entropy_data = marker == 0xDA;
                }
            }
        }
    }
}

/// Position of the first marker (`FF` followed by neither `00`, `FF` nor a restart code) at or after `from`,
/// or `Err(resume)` where a later search must restart when the buffer has grown.
fn next_marker(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut i = from;
    while let Some(off) = buf.get(i..).and_then(|rest| rest.iter().position(|&b| b == 0xFF)) {
        let at = i + off;
        match buf.get(at + 1) {
            None => return Err(at),
            Some(0x00 | 0xD0..=0xD7) => i = at + 2,
            Some(0xFF) => i = at + 1,
            Some(_) => return Ok(at),
        }
    }
    Err(buf.len().max(from))
}

/// The length of the JPEG at the start of `bytes` up to and including its EOI marker.
pub fn scan(bytes: &[u8]) -> Scan {
    JpegScanner::new().advance(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// SOI, APP1 holding a whole thumbnail JPEG, SOS with stuffed FF 00 and a restart marker, EOI.
    fn sample() -> Vec<u8> {
        let thumb = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x11, 0xFF, 0x00, 0xFF, 0xD9];
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE1];
        v.extend_from_slice(&((thumb.len() + 2) as u16).to_be_bytes());
        v.extend_from_slice(&thumb);
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF]);
        v.extend_from_slice(&[0xFF, 0xD9]);
        v
    }

    #[test]
    fn thumbnail_eoi_does_not_end_the_image() {
        let v = sample();
        assert_eq!(scan(&v), Scan::Complete(v.len()));
        let mut trailing = v.clone();
        trailing.extend_from_slice(b"garbage");
        assert_eq!(scan(&trailing), Scan::Complete(v.len()));
    }

    #[test]
    fn every_prefix_is_incomplete_and_resuming_agrees() {
        let v = sample();
        for n in 0..v.len() {
            assert_eq!(scan(&v[..n]), Scan::Incomplete, "prefix of {n} bytes");
        }
        for step in 1..5 {
            let mut s = JpegScanner::new();
            let mut n = 0;
            let result = loop {
                n = (n + step).min(v.len());
                match s.advance(&v[..n]) {
                    Scan::Incomplete if n < v.len() => continue,
                    other => break other,
                }
            };
            assert_eq!(result, Scan::Complete(v.len()), "step {step}");
        }
    }

    #[test]
    fn malformed_streams_are_invalid() {
        assert!(matches!(scan(b"\x89PNG\r\n"), Scan::Invalid(_)));
        assert!(matches!(scan(&[0xFF, 0xD8, 0x12, 0x34]), Scan::Invalid(_)));
        assert!(matches!(scan(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01]), Scan::Invalid(_)));
        // A new frame starting inside an unfinished one.
        let mut v = sample();
        v.truncate(30);
        v.extend_from_slice(&sample());
        assert!(matches!(scan(&v), Scan::Invalid(m) if m.contains("start-of-image")));
    }
}
