//! Element types and borrowed-or-owned tensor storage.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::prelude::v1::*;

/// Element type of a stored tensor or of an activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    I8,
    U8,
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::I8 | DType::U8 => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I32 => "i32",
        }
    }
}

/// A named weight tensor: dtype, shape and little-endian bytes, borrowed from the file (zero copy) or owned
/// (after a pass such as batchnorm folding rewrote it).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<'a> {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Cow<'a, [u8]>,
}

impl<'a> Tensor<'a> {
    /// Number of elements (product of the shape).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The same tensor with owned storage.
    pub fn into_owned(self) -> Tensor<'static> {
        Tensor { dtype: self.dtype, shape: self.shape, data: Cow::Owned(self.data.into_owned()) }
    }

    /// An owned f32 tensor.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Tensor<'static> {
        Tensor { dtype: DType::F32, shape, data: Cow::Owned(bytemuck::cast_slice(values).to_vec()) }
    }
    /// An owned i8 tensor.
    pub fn from_i8(shape: Vec<usize>, values: &[i8]) -> Tensor<'static> {
        Tensor { dtype: DType::I8, shape, data: Cow::Owned(bytemuck::cast_slice(values).to_vec()) }
    }
    /// An owned i32 tensor.
    pub fn from_i32(shape: Vec<usize>, values: &[i32]) -> Tensor<'static> {
        Tensor { dtype: DType::I32, shape, data: Cow::Owned(bytemuck::cast_slice(values).to_vec()) }
    }
    /// An owned f16 tensor (weights stored at half size, computed in f32).
    pub fn from_f16(shape: Vec<usize>, values: &[f32]) -> Tensor<'static> {
        let mut bytes = Vec::with_capacity(values.len() * 2);
        for v in values {
            bytes.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes());
        }
        Tensor { dtype: DType::F16, shape, data: Cow::Owned(bytes) }
    }

    /// The values as f32 (f32 or f16 storage). Copies: use at plan time, never in `run`.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        match self.dtype {
            DType::F32 => Ok(self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            DType::F16 => {
                Ok(self.data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect())
            }
            other => Err(Error::tensor(name, format!("expected f32 or f16, found {}", other.name()))),
        }
    }
    /// The values as i32 (i32 storage only).
    pub fn to_i32(&self, name: &str) -> Result<Vec<i32>> {
        self.expect_dtype(name, DType::I32)?;
        Ok(self.data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
    /// The values as i8 (i8 storage only); zero copy.
    pub fn as_i8(&self, name: &str) -> Result<&[i8]> {
        self.expect_dtype(name, DType::I8)?;
        Ok(bytemuck::cast_slice(&self.data))
    }

    fn expect_dtype(&self, name: &str, dtype: DType) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::tensor(name, format!("expected {}, found {}", dtype.name(), self.dtype.name())));
        }
        Ok(())
    }
}
