//! Host tensors: a dtype, a shape and the little-endian bytes, the form in which inputs and
//! outputs cross between the caller and HBM.

use crate::dtype::DType;
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

/// A dense row-major tensor in host memory, stored in its dtype's encoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostTensor {
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// `elems() * dtype.size_bytes()` bytes, little-endian.
    pub data: Vec<u8>,
}

impl HostTensor {
    /// A tensor of zeros.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Self {
        let n: usize = shape.iter().product();
        HostTensor {
            dtype,
            shape: shape.to_vec(),
            data: vec![0; n * dtype.size_bytes()],
        }
    }

    /// Number of elements.
    pub fn elems(&self) -> usize {
        self.shape.iter().product()
    }

    /// Element `i` (row-major), decoded.
    pub fn get(&self, i: usize) -> f64 {
        let w = self.dtype.size_bytes();
        self.dtype.decode(&self.data[i * w..(i + 1) * w])
    }

    /// Stores `v` at element `i`, rounded to the dtype.
    pub fn set(&mut self, i: usize, v: f64) {
        let w = self.dtype.size_bytes();
        self.dtype.encode(v, &mut self.data[i * w..(i + 1) * w]);
    }

    /// Builds a tensor of `dtype` from f64 values (rounded to the dtype).
    pub fn from_f64(dtype: DType, shape: &[usize], values: &[f64]) -> Self {
        let mut t = HostTensor::zeros(dtype, shape);
        assert_eq!(
            values.len(),
            t.elems(),
            "value count does not match the shape"
        );
        for (i, &v) in values.iter().enumerate() {
            t.set(i, v);
        }
        t
    }

    /// The first element, as an exact integer, that decoding to f64 and storing back would
    /// change, or `None` when there is none. Only int64 and uint64 have such values (2^53 + 1
    /// decodes as 2^53; i64::MAX decodes as 2^63 but saturates back to itself): every other
    /// dtype's values are f64 values.
    pub fn first_inexact_in_f64(&self) -> Option<i128> {
        if !matches!(self.dtype, DType::I64 | DType::U64) {
            return None;
        }
        let mut back = [0u8; 8];
        self.data.chunks_exact(8).find_map(|word| {
            self.dtype.encode(self.dtype.decode(word), &mut back);
            (back != word).then(|| {
                back.copy_from_slice(word);
                if self.dtype == DType::U64 {
                    i128::from(u64::from_le_bytes(back))
                } else {
                    i128::from(i64::from_le_bytes(back))
                }
            })
        })
    }

    /// All elements decoded, row-major.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.elems()).map(|i| self.get(i)).collect()
    }

    /// Converts an f32 array to `dtype` (rounding as a store would).
    pub fn from_array_f32(array: &ArrayD<f32>, dtype: DType) -> Self {
        let values: Vec<f64> = array.iter().map(|&v| v as f64).collect();
        HostTensor::from_f64(dtype, array.shape(), &values)
    }

    /// Decodes to an f32 array (exact for every float dtype; integers above 2^24 round).
    pub fn to_array_f32(&self) -> ArrayD<f32> {
        let values: Vec<f32> = (0..self.elems()).map(|i| self.get(i) as f32).collect();
        ArrayD::from_shape_vec(IxDyn(&self.shape), values).expect("shape matches element count")
    }

    /// Decodes to an f64 array.
    pub fn to_array_f64(&self) -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.to_f64_vec())
            .expect("shape matches element count")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_round_trip_and_rounding() {
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0f32, 2.5, -3.0, 1.0 + 1.0 / 512.0])
            .unwrap();
        let t = HostTensor::from_array_f32(&a, DType::F32);
        assert_eq!(t.to_array_f32(), a);
        let b = HostTensor::from_array_f32(&a, DType::Bf16);
        assert_eq!(b.data.len(), 8);
        // 1 + 2^-9 is below half an ulp of bf16 at 1 (2^-8), so it rounds to 1.
        assert_eq!(b.get(3), 1.0);
    }

    #[test]
    fn inexact_sixty_four_bit_values_are_found() {
        let u = |v: &[u64]| HostTensor {
            dtype: DType::U64,
            shape: vec![v.len()],
            data: v.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        assert_eq!(u(&[3, u64::MAX, 1 << 63]).first_inexact_in_f64(), None);
        assert_eq!(
            u(&[3, (1 << 53) + 1, (1 << 53) + 3]).first_inexact_in_f64(),
            Some((1 << 53) + 1)
        );
        let i = HostTensor {
            dtype: DType::I64,
            shape: vec![3],
            data: [i64::MIN, i64::MAX, -(1 << 53) - 1]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        assert_eq!(i.first_inexact_in_f64(), Some(-(1 << 53) - 1));
        let f = HostTensor::from_f64(DType::F32, &[1], &[0.1]);
        assert_eq!(f.first_inexact_in_f64(), None);
    }
}
