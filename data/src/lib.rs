//! Datasets for the training crate and the quantizer: CIFAR-10 binary files and image folders (a
//! directory or a `.tar`/`.tar.gz` of `<...>/<class>/<image>` files), decoded once into u8
//! [N, 3, H, W] and cached as safetensors; and float `.npy` batches.
//!
//! Class order: the given label list, else `batches.meta.txt` beside CIFAR binaries, else the sorted folder
//! names (which for CIFAR-10 equals the official order). Samples are ordered by class, then file name.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub mod npy;

/// Decoded images with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// u8 pixels, [N, 3, H, W] row-major (RGB planes).
    pub images: Vec<u8>,
    pub labels: Vec<i64>,
    /// [3, H, W].
    pub shape: [usize; 3],
    pub classes: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Image `i` normalized to (x / 255 - mean) / std, as f32 [3, H, W] (the runtime's input).
    pub fn normalized(&self, i: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
        let per: usize = self.shape.iter().product();
        let plane = per / 3;
        self.images[i * per..(i + 1) * per]
            .iter()
            .enumerate()
            .map(|(k, &p)| (p as f32 / 255.0 - mean[k / plane]) / std[k / plane])
            .collect()
    }
    /// `n` samples spread evenly over the set (every len/n-th), so a class-sorted folder keeps all classes.
    pub fn subset(&self, n: usize) -> Dataset {
        let per: usize = self.shape.iter().product();
        let pick = spread(self.len(), n);
        Dataset {
            images: pick.iter().flat_map(|&i| &self.images[i * per..(i + 1) * per]).copied().collect(),
            labels: pick.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
            classes: self.classes.clone(),
        }
    }
    /// Per-channel mean and (population) standard deviation of the pixels scaled to [0, 1].
    pub fn channel_stats(&self) -> ([f32; 3], [f32; 3]) {
        let [c, h, w] = self.shape;
        let plane = h * w;
        let mut mean = [0f32; 3];
        let mut std = [0f32; 3];
        for ch in 0..c.min(3) {
            let (mut s, mut s2) = (0u64, 0u64);
            for img in self.images.chunks_exact(c * plane) {
                for &p in &img[ch * plane..(ch + 1) * plane] {
                    s += p as u64;
                    s2 += (p as u64) * (p as u64);
                }
            }
            let n = (self.len() * plane) as f64;
            let m = s as f64 / n;
            let var = (s2 as f64 / n - m * m).max(0.0);
            mean[ch] = (m / 255.0) as f32;
            std[ch] = (var.sqrt() / 255.0) as f32;
        }
        (mean, std)
    }
}

/// Indices of `n` items spread evenly over `len` (every len/n-th; all of them when n >= len).
fn spread(len: usize, n: usize) -> Vec<usize> {
    let n = n.min(len);
    (0..n).map(|i| i * len / n).collect()
}

/// Reads class names, one per line (blank lines ignored).
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading labels {}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// Reads CIFAR-10 binary batches (records of 1 label byte + 3072 pixel bytes).
pub fn read_cifar_bin(paths: &[PathBuf], classes: Option<Vec<String>>) -> Result<Dataset> {
    const REC: usize = 1 + 3 * 32 * 32;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        ensure!(
            !bytes.is_empty() && bytes.len() % REC == 0,
            "{}: {} bytes is not a whole number of {REC}-byte CIFAR-10 records",
            p.display(),
            bytes.len()
        );
        images.reserve(bytes.len());
        for rec in bytes.chunks_exact(REC) {
            labels.push(rec[0] as i64);
            images.extend_from_slice(&rec[1..]);
        }
    }
    let classes = match classes {
        Some(c) => c,
        None => match paths.first().and_then(|p| p.parent()).map(|d| d.join("batches.meta.txt")) {
            Some(meta) if meta.exists() => read_labels(&meta)?,
            _ => (0..10).map(|i| i.to_string()).collect(),
        },
    };
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes.len()) {
        bail!("label {bad} out of range for {} classes", classes.len());
    }
    Ok(Dataset { images, labels, shape: [3, 32, 32], classes })
}

fn is_image(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".jpg", ".jpeg", ".png"].iter().any(|e| lower.ends_with(e))
}

/// Splits `a/b/class/file.jpg` into ("class", "a/b/class/file.jpg").
fn class_of(path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches("./").rsplit('/');
    let _file = parts.next()?;
    parts.next().filter(|c| !c.is_empty()).map(String::from)
}

/// Encoded image files of a folder tree or tar archive: (path inside the source, bytes).
fn collect_files(src: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    if src.is_dir() {
        let mut stack = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if is_image(&path.to_string_lossy()) {
                    let rel = path.strip_prefix(src).unwrap_or(&path).to_string_lossy().into_owned();
                    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                    files.push((rel, bytes));
                }
            }
        }
    } else {
        let file = std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let name = src.to_string_lossy();
        let reader: Box<dyn Read> = if name.ends_with(".gz") || name.ends_with(".tgz") {
            Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
        } else {
            Box::new(std::io::BufReader::new(file))
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().with_context(|| format!("reading tar {}", src.display()))? {
            let mut entry = entry.with_context(|| format!("reading tar {}", src.display()))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path()?.to_string_lossy().into_owned();
            if is_image(&path) {
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut bytes).with_context(|| format!("reading {path} in {}", src.display()))?;
                files.push((path, bytes));
            }
        }
    }
    Ok(files)
}

/// Decodes to RGB and, when `size` is given, resizes the shorter side to it and center-crops a square.
fn decode(path: &str, bytes: &[u8], size: Option<usize>) -> Result<image::RgbImage> {
    let img = image::load_from_memory(bytes).with_context(|| format!("decoding {path}"))?.to_rgb8();
    let Some(s) = size else { return Ok(img) };
    let (w, h) = img.dimensions();
    if (w as usize, h as usize) == (s, s) {
        return Ok(img);
    }
    let scale = s as f64 / w.min(h) as f64;
    let (nw, nh) =
        (((w as f64 * scale).round() as u32).max(s as u32), ((h as f64 * scale).round() as u32).max(s as u32));
    let resized = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle);
    let (x, y) = ((nw - s as u32) / 2, (nh - s as u32) / 2);
    Ok(image::imageops::crop_imm(&resized, x, y, s as u32, s as u32).to_image())
}

/// Reads an image folder (directory or tar / tar.gz). `size`: square side to resize to; by default every
/// image must already have the first image's size.
pub fn read_image_folder(src: &Path, classes: Option<Vec<String>>, size: Option<usize>) -> Result<Dataset> {
    read_images(src, classes, size, None)
}

/// [`read_image_folder`], keeping only `limit` images picked as [`Dataset::subset`] picks them; only those
/// are decoded (a 16-image calibration set of a 50,000-image archive decodes 16).
fn read_images(src: &Path, classes: Option<Vec<String>>, size: Option<usize>, limit: Option<usize>) -> Result<Dataset> {
    let mut by_class: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for (path, bytes) in collect_files(src)? {
        let class = class_of(&path).with_context(|| format!("{path}: an image outside any class folder"))?;
        by_class.entry(class).or_default().push((path, bytes));
    }
    ensure!(!by_class.is_empty(), "{}: no .jpg/.jpeg/.png files in class folders", src.display());
    let classes = match classes {
        Some(c) => {
            if let Some(unknown) = by_class.keys().find(|k| !c.contains(k)) {
                bail!("{}: folder `{unknown}` is not in the label list {c:?}", src.display());
            }
            c
        }
        None => by_class.keys().cloned().collect(),
    };
    // Samples in dataset order: by label, then file name.
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let Some(mut list) = by_class.remove(class) else { continue };
        list.sort_by(|a, b| a.0.cmp(&b.0));
        files.extend(list.into_iter().map(|(path, bytes)| (path, bytes, label as i64)));
    }
    let pick = spread(files.len(), limit.unwrap_or(files.len()));
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let mut shape = None;
    for (path, bytes, label) in pick.iter().map(|&i| &files[i]) {
        let img = decode(path, bytes, size)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let s = *shape.get_or_insert([3, h, w]);
        ensure!(
            s == [3, h, w],
            "{path}: {w}x{h} differs from the first image's {}x{}; pass an image size to resize",
            s[2],
            s[1]
        );
        push_planes(&mut images, &img);
        labels.push(*label);
    }
    let shape = shape.with_context(|| format!("{}: no images selected", src.display()))?;
    Ok(Dataset { images, labels, shape, classes })
}

/// Appends an RGB image as three planes (the [3, H, W] layout).
fn push_planes(images: &mut Vec<u8>, img: &image::RgbImage) {
    let plane = (img.width() * img.height()) as usize;
    let start = images.len();
    images.resize(start + 3 * plane, 0);
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            images[start + c * plane + i] = px[c];
        }
    }
}

/// Reads every image under a folder without class subfolders, resized and center-cropped to `size`;
/// labels are -1 (unknown), files in name order.
pub fn read_flat_folder(src: &Path, size: usize) -> Result<Dataset> {
    let mut files = collect_files(src)?;
    ensure!(!files.is_empty(), "{}: no .jpg/.jpeg/.png files", src.display());
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut images = Vec::new();
    for (path, bytes) in &files {
        push_planes(&mut images, &decode(path, bytes, Some(size))?);
    }
    Ok(Dataset { images, labels: vec![-1; files.len()], shape: [3, size, size], classes: vec![] })
}

/// Writes a dataset as safetensors (`images` u8, `labels` i64, class names in the metadata).
pub fn save_cache(ds: &Dataset, path: &Path) -> Result<()> {
    use safetensors::tensor::TensorView;
    let [c, h, w] = ds.shape;
    let labels: Vec<u8> = ds.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    let views = [
        ("images", TensorView::new(safetensors::Dtype::U8, vec![ds.len(), c, h, w], &ds.images)?),
        ("labels", TensorView::new(safetensors::Dtype::I64, vec![ds.len()], &labels)?),
    ];
    let meta = [("classes".to_string(), serde_json::to_string(&ds.classes)?)].into_iter().collect();
    let bytes = safetensors::serialize(views, Some(meta))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Reads a dataset written by [`save_cache`].
pub fn load_cache(path: &Path) -> Result<Dataset> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let classes = header.metadata().as_ref().and_then(|m| m.get("classes")).context("no class names")?;
    let classes: Vec<String> = serde_json::from_str(classes)?;
    let images = st.tensor("images")?;
    let labels = st.tensor("labels")?;
    let s = images.shape();
    ensure!(s.len() == 4 && s[1] == 3, "{}: images shape {s:?}", path.display());
    ensure!(labels.shape() == [s[0]], "{}: labels shape {:?}", path.display(), labels.shape());
    let labels: Vec<i64> =
        labels.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
    Ok(Dataset { images: images.data().to_vec(), labels, shape: [3, s[2], s[3]], classes })
}

/// The cache file for an image-folder source: keyed by its path, size, modification time and image size.
fn cache_path(cache_dir: &Path, src: &Path, size: Option<usize>) -> Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    let meta = std::fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::canonicalize(src)?.hash(&mut h);
    meta.len().hash(&mut h);
    meta.modified().ok().hash(&mut h);
    size.hash(&mut h);
    let stem = src.file_name().map(|n| n.to_string_lossy().replace(['.', ' '], "_")).unwrap_or_default();
    Ok(cache_dir.join(format!("{stem}-{:016x}.safetensors", h.finish())))
}

/// Loads any supported source: CIFAR `.bin` files (comma-separated), or an image folder / archive
/// (decoded once, then cached under `cache_dir` when given). `limit`: keep that many samples, picked as
/// [`Dataset::subset`] picks them; an image folder then decodes only those and skips the cache, which
/// holds whole sets (7.5 GB for ImageNet-sized CIFAR-10 train images).
pub fn load(
    src: &str,
    classes: Option<Vec<String>>,
    size: Option<usize>,
    limit: Option<usize>,
    cache_dir: Option<&Path>,
) -> Result<Dataset> {
    let paths: Vec<PathBuf> = src.split(',').map(PathBuf::from).collect();
    if paths.iter().all(|p| p.extension().is_some_and(|e| e == "bin")) {
        let ds = read_cifar_bin(&paths, classes)?;
        return Ok(match limit {
            Some(n) => ds.subset(n),
            None => ds,
        });
    }
    ensure!(paths.len() == 1, "`{src}`: only CIFAR .bin files can be combined with commas");
    let src = &paths[0];
    let cache = cache_dir.filter(|_| limit.is_none()).map(|d| cache_path(d, src, size)).transpose()?;
    if let Some(c) = cache.as_ref().filter(|c| c.exists()) {
        let ds = load_cache(c)?;
        if classes.as_ref().is_none_or(|want| *want == ds.classes) {
            eprintln!("data: {} images from cache {}", ds.len(), c.display());
            return Ok(ds);
        }
    }
    let t = std::time::Instant::now();
    let ds = read_images(src, classes, size, limit)?;
    eprintln!(
        "data: decoded {} images ({} classes, {:?}) from {} in {:.1} s",
        ds.len(),
        ds.classes.len(),
        ds.shape,
        src.display(),
        t.elapsed().as_secs_f64()
    );
    if let Some(c) = &cache {
        save_cache(&ds, c)?;
    }
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three class folders of 5, 1 and 4 PNGs of assorted sizes, each image's pixels unique to it.
    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (c, count) in [5u8, 1, 4].into_iter().enumerate() {
            let class = dir.path().join(format!("class{c}"));
            std::fs::create_dir(&class).unwrap();
            for k in 0..count {
                let (w, h) = (6 + k as u32, 9 - k as u32);
                let img =
                    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([c as u8 * 50 + k, x as u8 * 20, y as u8 * 20]));
                img.save(class.join(format!("img{k}.png"))).unwrap();
            }
        }
        dir
    }

    #[test]
    fn a_limited_load_is_the_subset_of_the_full_load() {
        let dir = folder();
        let src = dir.path().to_str().unwrap();
        let full = load(src, None, Some(4), None, None).unwrap();
        assert_eq!((full.len(), full.labels.iter().sum::<i64>()), (10, 1 + 2 * 4));
        for n in 1..=12 {
            assert_eq!(load(src, None, Some(4), Some(n), None).unwrap(), full.subset(n), "limit {n}");
        }
    }

    #[test]
    fn a_limited_load_decodes_only_the_picked_images_and_skips_the_cache() {
        let dir = folder();
        let src = dir.path().to_str().unwrap();
        // Index 1 of 10 is never picked for 2 samples (0 and 5 are): a corrupt file there goes unread.
        std::fs::write(dir.path().join("class0/img1.png"), b"not a png").unwrap();
        let cache = tempfile::tempdir().unwrap();
        let two = load(src, None, Some(4), Some(2), Some(cache.path())).unwrap();
        assert_eq!(two.labels, [0, 1]);
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "a subset is not cached");
        let err = load(src, None, Some(4), None, Some(cache.path())).unwrap_err();
        assert!(format!("{err:#}").contains("img1.png"), "{err:#}");
    }

    #[test]
    fn a_limited_load_of_cifar_binaries_is_their_subset() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("batch.bin");
        let records: Vec<u8> =
            (0..7u8).flat_map(|i| std::iter::once(i % 10).chain(std::iter::repeat_n(i, 3072))).collect();
        std::fs::write(&bin, records).unwrap();
        let src = bin.to_str().unwrap();
        let full = load(src, None, None, None, None).unwrap();
        assert_eq!(full.len(), 7);
        assert_eq!(load(src, None, None, Some(3), None).unwrap(), full.subset(3));
    }
}
