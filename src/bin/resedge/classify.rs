//! `resedge classify MODEL IMAGE...`: top-k classes of each image with the time of each stage (decode,
//! preprocess, inference). An image that cannot be read or decoded is reported and skipped; the command
//! then exits non-zero after the others.

use crate::predict::{ms, with_classifier};
use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// Model file (.rsm) with preprocessing metadata (zoo and trained models carry it).
    pub model: PathBuf,
    /// Image files: JPEG, PNG, BMP or WebP (recognised by content).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// One JSON object per image on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub backend: crate::backend::BackendArgs,
}

/// Returns whether every image was classified.
pub fn classify(args: &ClassifyArgs) -> Result<bool> {
    let file =
        resedge::format::ModelFile::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    let model = file.model().with_context(|| format!("loading {}", args.model.display()))?;
    with_classifier(&model, &args.backend, &args.model, |clf| {
        let mut out = std::io::stdout().lock();
        let mut all_ok = true;
        for path in &args.images {
            let t0 = Instant::now();
            let decoded = std::fs::read(path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(resedge::preprocess::decode(&bytes)?));
            let decode = t0.elapsed();
            let img = match decoded {
                Ok(img) => img,
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    all_ok = false;
                    continue;
                }
            };
            let p = clf.classify(&img, args.top)?;
            if args.json {
                let line = serde_json::json!({
                    "image": path.display().to_string(),
                    "width": img.width(),
                    "height": img.height(),
                    "color": format!("{:?}", img.color()),
                    "top": p.top,
                    "decode_ms": ms(decode),
                    "preprocess_ms": ms(p.preprocess),
                    "inference_ms": ms(p.inference),
                });
                writeln!(out, "{line}")?;
            } else {
                writeln!(
                    out,
                    "{}: {}x{} {:?}; decode {:.2} ms, preprocess {:.2} ms, inference {:.2} ms",
                    path.display(),
                    img.width(),
                    img.height(),
                    img.color(),
                    ms(decode),
                    ms(p.preprocess),
                    ms(p.inference)
                )?;
                for c in &p.top {
                    writeln!(out, "  {:>6.2}%  {:>4}  {}", 100.0 * c.prob, c.index, c.label)?;
                }
            }
        }
        Ok(all_ok)
    })
}
