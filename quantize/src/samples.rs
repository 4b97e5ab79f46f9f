//! Calibration / evaluation inputs: an image folder (class subfolders or flat) or tar archive, CIFAR-10
//! binaries, or `.npy` batches ([N, C, H, W] float32, already normalized), turned into model inputs with
//! the model's preprocessing.

use anyhow::{bail, ensure, Context, Result};
use resedge::graph::Model;
use resedge_data::Dataset;
use std::path::Path;

/// Model-ready inputs with labels where the source has them.
pub enum Samples {
    /// u8 images normalized on demand by (x / 255 - mean) / std.
    Images { data: Dataset, mean: [f32; 3], std: [f32; 3] },
    /// Float inputs as given.
    Tensors { data: Vec<Vec<f32>> },
}

impl Samples {
    /// Loads `src` for `model` (its input shape and preprocessing). `limit`: keep that many samples,
    /// spread evenly over the set (so class-sorted folders keep every class).
    pub fn load(src: &str, model: &Model<'_>, limit: Option<usize>) -> Result<Samples> {
        let shape = model.graph.input.shape.clone();
        ensure!(shape.len() == 3 && shape[0] == 3, "model input {shape:?} is not a 3-channel image");
        let path = Path::new(src);
        if path.extension().is_some_and(|e| e == "npy") || (path.is_dir() && has_npy(path)?) {
            let mut data = read_npy_batches(path, &shape)?;
            if let Some(n) = limit.filter(|&n| n < data.len()) {
                data = (0..n).map(|i| data[i * data.len() / n].clone()).collect();
            }
            return Ok(Samples::Tensors { data });
        }
        let p =
            model.preprocess.as_ref().context("the model has no preprocessing; pass --preprocess when importing")?;
        ensure!(shape[1] == shape[2], "image sources need a square input, the model's is {shape:?}");
        let mut data = resedge_data::load(src, class_list(model), Some(shape[1]), limit, cache_dir().as_deref())
            .or_else(|e| {
                // A flat folder (no class subfolders): unlabeled images.
                if path.is_dir() {
                    resedge_data::read_flat_folder(path, shape[1]).with_context(|| format!("{e:#}"))
                } else {
                    Err(e)
                }
            })?;
        ensure!(data.shape == [3, shape[1], shape[2]], "images are {:?}, the model wants {shape:?}", data.shape);
        if let Some(n) = limit.filter(|&n| n < data.len()) {
            data = data.subset(n);
        }
        Ok(Samples::Images { data, mean: p.mean, std: p.std })
    }

    pub fn len(&self) -> usize {
        match self {
            Samples::Images { data, .. } => data.len(),
            Samples::Tensors { data } => data.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Input `i`, [C, H, W] float32.
    pub fn input(&self, i: usize) -> Vec<f32> {
        match self {
            Samples::Images { data, mean, std } => data.normalized(i, *mean, *std),
            Samples::Tensors { data } => data[i].clone(),
        }
    }

    /// Label of sample `i`, where known.
    pub fn label(&self, i: usize) -> Option<usize> {
        match self {
            Samples::Images { data, .. } => data.labels.get(i).and_then(|&l| usize::try_from(l).ok()),
            Samples::Tensors { .. } => None,
        }
    }

    pub fn classes(&self) -> Vec<String> {
        match self {
            Samples::Images { data, .. } => data.classes.clone(),
            Samples::Tensors { .. } => vec![],
        }
    }

    /// Splits off every `k`-th sample (held-out data for sensitivity checks): (rest, held out).
    pub fn split(&self, k: usize) -> (Vec<usize>, Vec<usize>) {
        (0..self.len()).partition(|i| i % k.max(2) != 0)
    }
}

/// The label order to use: the model's labels when it has them (so indices match its outputs).
fn class_list(model: &Model<'_>) -> Option<Vec<String>> {
    (!model.labels.is_empty()).then(|| model.labels.clone())
}

fn cache_dir() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("resedge/data"))
}

fn has_npy(dir: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(dir)?.flatten().any(|e| e.path().extension().is_some_and(|x| x == "npy")))
}

/// `.npy` files (one, or every one in a folder, sorted by name) of shape [N, C, H, W] or [C, H, W].
fn read_npy_batches(path: &Path, shape: &[usize]) -> Result<Vec<Vec<f32>>> {
    let mut files: Vec<std::path::PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "npy"))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    let per: usize = shape.iter().product();
    let mut out = vec![];
    for f in files {
        let (s, v) = resedge_data::npy::read_f32(&f)?;
        let tail = if s.len() == shape.len() + 1 { &s[1..] } else { &s[..] };
        if tail != shape {
            bail!(
                "{}: shape {s:?} does not match the model input [N, {}]",
                f.display(),
                shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            );
        }
        out.extend(v.chunks_exact(per).map(<[f32]>::to_vec));
    }
    ensure!(!out.is_empty(), "{}: no samples", path.display());
    Ok(out)
}
