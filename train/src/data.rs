//! The shared datasets (`resedge-data`) as libtorch tensors.

pub use resedge_data::*;
use tch::{Kind, Tensor};

/// Tensor views of a [`Dataset`].
pub trait DatasetTensors {
    /// Pixels as a CPU u8 tensor [N, 3, H, W].
    fn images_tensor(&self) -> Tensor;
    /// Labels as a CPU i64 tensor [N].
    fn labels_tensor(&self) -> Tensor;
}

impl DatasetTensors for Dataset {
    fn images_tensor(&self) -> Tensor {
        let [c, h, w] = self.shape;
        Tensor::from_slice(&self.images).view([self.len() as i64, c as i64, h as i64, w as i64])
    }
    fn labels_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.labels)
    }
}

/// Normalizes u8 pixels [N, 3, H, W] (any device) to (x / 255 - mean) / std in f32.
pub fn normalize(images_u8: &Tensor, mean: [f32; 3], std: [f32; 3]) -> Tensor {
    let dev = images_u8.device();
    let m = Tensor::from_slice(&mean).to_device(dev).view([1, 3, 1, 1]);
    let s = Tensor::from_slice(&std).to_device(dev).view([1, 3, 1, 1]);
    (images_u8.to_kind(Kind::Float) / 255.0 - m) / s
}
