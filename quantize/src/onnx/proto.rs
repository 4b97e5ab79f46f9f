//! Reading ONNX protobuf pieces safely: attributes and constant tensors. tract-onnx parses the file
//! (prost); the tensor decoding is ours because tract's panics on some hostile inputs.

use anyhow::{bail, ensure, Context, Result};
use tract_onnx::pb::{tensor_proto::DataType, AttributeProto, NodeProto, TensorProto};

/// Largest constant we accept (elements): far above any ResNet layer, far below memory exhaustion.
const MAX_ELEMENTS: usize = 1 << 28;

/// A constant tensor (initializer, `Constant` node or folded `DequantizeLinear`).
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Data,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

impl Array {
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::U8(v) => v.len(),
        }
    }
    /// Values widened to f64 (every dtype converts exactly enough for shapes, scales and weights).
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I8(v) => v.iter().map(|&x| x as f64).collect(),
            Data::U8(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
    pub fn f32(&self, what: &str) -> Result<&[f32]> {
        match &self.data {
            Data::F32(v) => Ok(v),
            _ => bail!("{what}: expected a float32 tensor"),
        }
    }
    /// Integer values (shape and axis arguments).
    pub fn ints(&self, what: &str) -> Result<Vec<i64>> {
        match &self.data {
            Data::I64(v) => Ok(v.clone()),
            Data::I32(v) => Ok(v.iter().map(|&x| x as i64).collect()),
            _ => bail!("{what}: expected an integer tensor"),
        }
    }
    /// The single value of a scalar or one-element tensor.
    pub fn scalar(&self, what: &str) -> Result<f64> {
        ensure!(self.len() == 1, "{what}: expected one value, got {}", self.len());
        Ok(self.to_f64()[0])
    }
    /// Whether every element is zero.
    pub fn all_zero(&self) -> bool {
        self.to_f64().iter().all(|&x| x == 0.0)
    }
}

fn checked_numel(dims: &[i64], what: &str) -> Result<(Vec<usize>, usize)> {
    let mut n = 1usize;
    let mut shape = Vec::with_capacity(dims.len());
    for &d in dims {
        ensure!(d >= 0, "{what}: negative dimension {d}");
        let d = usize::try_from(d).context("dimension")?;
        n = n.checked_mul(d).filter(|&n| n <= MAX_ELEMENTS).with_context(|| format!("{what}: shape {dims:?} too large"))?;
        shape.push(d);
    }
    Ok((shape, n))
}

fn from_raw<T, const N: usize>(raw: &[u8], n: usize, what: &str, f: fn([u8; N]) -> T) -> Result<Vec<T>> {
    ensure!(raw.len() == n * N, "{what}: {} data bytes for {n} elements of {N} bytes", raw.len());
    Ok(raw.chunks_exact(N).map(|c| f(c.try_into().expect("chunk of N bytes"))).collect())
}

fn sized<T>(v: Vec<T>, n: usize, what: &str) -> Result<Vec<T>> {
    ensure!(v.len() == n, "{what}: {} values for a shape of {n} elements", v.len());
    Ok(v)
}

/// Decodes a tensor stored inside the file (external data is rejected with a clear error).
pub fn array(t: &TensorProto) -> Result<Array> {
    let what = format!("tensor `{}`", t.name);
    ensure!(t.external_data.is_empty(), "{what}: external data files are not supported; re-save with the weights inside");
    let (shape, n) = checked_numel(&t.dims, &what)?;
    let raw = &t.raw_data;
    let dt = DataType::from_i32(t.data_type);
    let data = match dt {
        Some(DataType::Float) if !raw.is_empty() => Data::F32(from_raw(raw, n, &what, f32::from_le_bytes)?),
        Some(DataType::Float) => Data::F32(sized(t.float_data.clone(), n, &what)?),
        Some(DataType::Int64) if !raw.is_empty() => Data::I64(from_raw(raw, n, &what, i64::from_le_bytes)?),
        Some(DataType::Int64) => Data::I64(sized(t.int64_data.clone(), n, &what)?),
        Some(DataType::Int32) if !raw.is_empty() => Data::I32(from_raw(raw, n, &what, i32::from_le_bytes)?),
        Some(DataType::Int32) => Data::I32(sized(t.int32_data.clone(), n, &what)?),
        Some(DataType::Int8) if !raw.is_empty() => Data::I8(from_raw(raw, n, &what, i8::from_le_bytes)?),
        Some(DataType::Int8) => Data::I8(sized(t.int32_data.iter().map(|&x| x as i8).collect(), n, &what)?),
        Some(DataType::Uint8) if !raw.is_empty() => Data::U8(sized(raw.clone(), n, &what)?),
        Some(DataType::Uint8) => Data::U8(sized(t.int32_data.iter().map(|&x| x as u8).collect(), n, &what)?),
        _ => bail!("{what}: data type {} is not supported (float32, int64, int32, int8, uint8 are)", t.data_type),
    };
    Ok(Array { shape, data })
}

/// Attribute accessors for one node.
pub struct Attrs<'a>(pub &'a NodeProto);

impl<'a> Attrs<'a> {
    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }
    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }
    pub fn ints(&self, name: &str) -> Option<&'a [i64]> {
        self.get(name).map(|a| a.ints.as_slice())
    }
    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
    pub fn tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }
    /// Non-negative integers, each at most `max` (kernel sizes, strides, pads).
    pub fn usizes(&self, name: &str, max: i64) -> Result<Option<Vec<usize>>> {
        let Some(v) = self.ints(name) else { return Ok(None) };
        v.iter()
            .map(|&x| {
                ensure!((0..=max).contains(&x), "attribute `{name}` value {x} out of range 0..={max}");
                Ok(x as usize)
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}
