//! Batches on the training device. The dataset is uploaded once (u8); every batch is gathered, augmented and
//! normalized there, so the host only draws a few random numbers per epoch.
//!
//! Randomness comes from ChaCha8 seeded by (seed, epoch), not from torch: the data order and augmentation
//! are the same on CPU and GPU, and resuming at an epoch boundary replays exactly what an unbroken run does.

use crate::data::{Dataset, DatasetTensors};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, IndexOp, Kind, Tensor};

/// Training-time augmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Augment {
    /// None: images as stored (center crop to the output size).
    None,
    /// The paper's CIFAR recipe: zero-pad 4 pixels, random crop, random horizontal flip.
    PadCropFlip,
    /// ImageNet style: random-resized crop (area 8-100%, aspect 3/4-4/3), random horizontal flip.
    ResizedCropFlip,
}

/// Padding of [`Augment::PadCropFlip`].
pub const PAD: i64 = 4;

/// A dataset resident on a device, producing normalized f32 batches [B, 3, out, out].
pub struct DeviceSet {
    /// u8 [N, S + 2 PAD, S + 2 PAD, 3] (NHWC, padded) for pad-crop-flip; else u8 [N, 3, S, S].
    images: Tensor,
    labels: Tensor,
    len: usize,
    size: i64,
    out: i64,
    augment: Augment,
    mean: Tensor,
    std: Tensor,
    channels_last: bool,
}

impl DeviceSet {
    /// Uploads `ds` (square images of side S >= `out`) to `device`.
    pub fn new(
        ds: &Dataset,
        augment: Augment,
        out: usize,
        device: Device,
        mean: [f32; 3],
        std: [f32; 3],
        channels_last: bool,
    ) -> anyhow::Result<Self> {
        let [_, h, w] = ds.shape;
        anyhow::ensure!(h == w && h >= out, "images are {h}x{w}; need square images of at least {out}x{out}");
        let mut images = ds.images_tensor().to_device(device);
        if augment == Augment::PadCropFlip {
            images = images.permute([0, 2, 3, 1]).constant_pad_nd([0, 0, PAD, PAD, PAD, PAD]);
        }
        Ok(DeviceSet {
            images,
            labels: ds.labels_tensor().to_device(device),
            len: ds.len(),
            size: h as i64,
            out: out as i64,
            augment,
            mean: Tensor::from_slice(&mean).to_device(device).view([1, 3, 1, 1]),
            std: Tensor::from_slice(&std).to_device(device).view([1, 3, 1, 1]),
            channels_last,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The device the data lives on.
    pub fn images_device(&self) -> Device {
        self.images.device()
    }

    /// u8 or f32 NCHW-indexed pixels -> normalized f32, in the requested memory format.
    fn finish(&self, x: Tensor) -> Tensor {
        let x = (x.to_kind(Kind::Float) / 255.0 - &self.mean) / &self.std;
        if self.channels_last {
            crate::model::to_channels_last(&x)
        } else {
            x.contiguous()
        }
    }

    /// Samples `start..start + n` in stored order, center-cropped, no augmentation (for evaluation).
    pub fn plain_batch(&self, start: usize, n: usize) -> (Tensor, Tensor) {
        let (s, o) = (self.size, self.out);
        let idx = Tensor::arange_start(start as i64, (start + n) as i64, (Kind::Int64, self.images.device()));
        let x = if self.augment == Augment::PadCropFlip {
            let c = PAD + (s - o) / 2;
            self.images.index_select(0, &idx).i((.., c..c + o, c..c + o, ..)).permute([0, 3, 1, 2])
        } else {
            let c = (s - o) / 2;
            self.images.index_select(0, &idx).i((.., .., c..c + o, c..c + o))
        };
        (self.finish(x), self.labels.index_select(0, &idx))
    }

    /// The augmented batches of one epoch, in a shuffled order drawn from (seed, epoch).
    pub fn epoch(&self, seed: u64, epoch: usize, batch: usize) -> Epoch<'_> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch as u64);
        let mut order: Vec<i64> = (0..self.len as i64).collect();
        order.shuffle(&mut rng);
        let dev = self.images.device();
        let params = match self.augment {
            Augment::None => Vec::new(),
            Augment::PadCropFlip => {
                let span = self.size + 2 * PAD - self.out;
                (0..self.len)
                    .flat_map(|_| [rng.random_range(0..=span), rng.random_range(0..=span), rng.random_range(0..2)])
                    .map(|v| v as f32)
                    .collect()
            }
            Augment::ResizedCropFlip => (0..self.len).flat_map(|_| resized_crop_theta(&mut rng)).collect(),
        };
        let width = if self.augment == Augment::PadCropFlip { 3 } else { 6 };
        let params =
            (!params.is_empty()).then(|| Tensor::from_slice(&params).view([self.len as i64, width]).to_device(dev));
        Epoch { set: self, order: Tensor::from_slice(&order).to_device(dev), params, batch, pos: 0 }
    }
}

/// One random-resized crop with flip as an affine sampling matrix (normalized coordinates, row-major 2x3).
fn resized_crop_theta(rng: &mut ChaCha8Rng) -> [f32; 6] {
    let (mut sw, mut sh) = (1.0f64, 1.0f64);
    for _ in 0..10 {
        let area = rng.random_range(0.08..=1.0);
        let log_ratio = rng.random_range((3.0f64 / 4.0).ln()..=(4.0f64 / 3.0).ln());
        let r = log_ratio.exp();
        let (w, h) = ((area * r).sqrt(), (area / r).sqrt());
        if w <= 1.0 && h <= 1.0 {
            (sw, sh) = (w, h);
            break;
        }
    }
    let cx = rng.random_range(-(1.0 - sw)..=(1.0 - sw));
    let cy = rng.random_range(-(1.0 - sh)..=(1.0 - sh));
    let flip = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
    [(sw * flip) as f32, 0.0, cx as f32, 0.0, sh as f32, cy as f32]
}

/// Iterator over one epoch's batches: (normalized images, labels). The last batch may be smaller.
pub struct Epoch<'a> {
    set: &'a DeviceSet,
    order: Tensor,
    params: Option<Tensor>,
    batch: usize,
    pos: usize,
}

impl Epoch<'_> {
    /// Number of batches.
    pub fn steps(&self) -> usize {
        self.set.len.div_ceil(self.batch)
    }
}

impl Iterator for Epoch<'_> {
    type Item = (Tensor, Tensor);
    fn next(&mut self) -> Option<(Tensor, Tensor)> {
        let s = self.set;
        if self.pos >= s.len {
            return None;
        }
        let n = self.batch.min(s.len - self.pos) as i64;
        let idx = self.order.narrow(0, self.pos as i64, n);
        let p = self.params.as_ref().map(|p| p.narrow(0, self.pos as i64, n));
        self.pos += n as usize;
        let dev = s.images.device();
        let x = match (s.augment, p) {
            (Augment::PadCropFlip, Some(p)) => {
                // One gather does crop and flip: row = dy + i, col = dx + (flip ? out-1-j : j).
                let p = p.to_kind(Kind::Int64);
                let (dy, dx, flip) = (p.i((.., 0..1)), p.i((.., 1..2)), p.i((.., 2..3)));
                let ar = Tensor::arange(s.out, (Kind::Int64, dev)).view([1, s.out]);
                let rows = &dy + &ar;
                let cols = &dx + &ar + &flip * (-&ar * 2 + (s.out - 1));
                let x = s.images.index(&[
                    Some(idx.view([n, 1, 1])),
                    Some(rows.view([n, s.out, 1])),
                    Some(cols.view([n, 1, s.out])),
                ]);
                x.permute([0, 3, 1, 2])
            }
            (Augment::ResizedCropFlip, Some(theta)) => {
                let x = s.images.index_select(0, &idx).to_kind(Kind::Float);
                let grid = Tensor::affine_grid_generator(&theta.view([n, 2, 3]), [n, 3, s.out, s.out], false);
                Tensor::grid_sampler(&x, &grid, 0, 0, false)
            }
            _ => {
                let c = (s.size - s.out) / 2;
                s.images.index_select(0, &idx).i((.., .., c..c + s.out, c..c + s.out))
            }
        };
        Some((s.finish(x), s.labels.index_select(0, &idx)))
    }
}
