//! A directory of image files as a frame source: every JPEG, PNG, BMP or WebP file (by extension), in name
//! order, each one processed (not live: nothing is dropped). Handy for replaying captured frames.

use super::source::{Frame, FrameSource, Pixels, SourceError};
use std::path::{Path, PathBuf};

pub struct DirSource {
    dir: PathBuf,
    files: std::vec::IntoIter<PathBuf>,
}

const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];

impl DirSource {
    /// Lists the images in `dir`; an unreadable directory or one without images is an error.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("reading directory {}: {e}", dir.display()))? {
            let path = entry?.path();
            let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
            if path.is_file() && ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str())) {
                files.push(path);
            }
        }
        if files.is_empty() {
            anyhow::bail!("{} holds no images (.{})", dir.display(), EXTENSIONS.join(", ."));
        }
        files.sort();
        Ok(DirSource { dir: dir.to_owned(), files: files.into_iter() })
    }
}

impl FrameSource for DirSource {
    fn describe(&self) -> String {
        format!("images in {}", self.dir.display())
    }

    fn is_live(&self) -> bool {
        false
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let Some(path) = self.files.next() else { return Ok(None) };
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(Frame::new(Pixels::Encoded(bytes), name))),
            Err(e) => Err(SourceError::Corrupt(format!("{}: {e}", path.display()))),
        }
    }
}
