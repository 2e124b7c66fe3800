//! `.npy` files in and out of the CLI: reading any numeric npy into a [`HostTensor`] of the
//! dtype the program declares, and writing outputs atomically (temp file, then rename) so a
//! failed run never leaves a half-written file.

use std::fs;
use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use tessera_ir::{DType, HostTensor};

/// Reads `path` and converts it to `dtype` with `shape` checked by the caller.
///
/// Conversions round as a store would. Integer files going into an `i64` or `u64` program
/// input convert from the integer itself, not through `f64`, so values above 2^53 stay exact.
pub fn read_as(path: &Path, dtype: DType) -> Result<HostTensor, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // ndarray-npy reads one element type at a time; try the types numpy writes.
    macro_rules! attempt {
        ($t:ty, $conv:expr) => {
            if let Ok(a) = ArrayD::<$t>::read_npy(&bytes[..]) {
                let values: Vec<f64> = a.iter().map($conv).collect();
                return Ok(HostTensor::from_f64(dtype, a.shape(), &values));
            }
        };
    }
    macro_rules! attempt_int {
        ($t:ty) => {
            if let Ok(a) = ArrayD::<$t>::read_npy(&bytes[..]) {
                if matches!(dtype, DType::I64 | DType::U64) {
                    let values: Vec<i128> = a.iter().map(|&v| i128::from(v)).collect();
                    return Ok(wide_ints(dtype, a.shape(), &values));
                }
                let values: Vec<f64> = a.iter().map(|&v| v as f64).collect();
                return Ok(HostTensor::from_f64(dtype, a.shape(), &values));
            }
        };
    }
    attempt!(f32, |&v| v as f64);
    attempt!(f64, |&v| v);
    attempt_int!(i64);
    attempt_int!(i32);
    attempt_int!(i16);
    attempt_int!(i8);
    attempt_int!(u8);
    attempt_int!(u16);
    attempt_int!(u32);
    attempt_int!(u64);
    attempt!(bool, |&v| if v { 1.0 } else { 0.0 });
    Err(format!(
        "{} is not a .npy file of a supported element type (f32, f64, i64, i32, i16, i8, u8, u16, u32, \
         u64, bool; C order)",
        path.display()
    ))
}

/// An `i64` or `u64` tensor from integer values, saturating at the dtype's range as a store
/// does, without passing through `f64`.
fn wide_ints(dtype: DType, shape: &[usize], values: &[i128]) -> HostTensor {
    let data = values
        .iter()
        .flat_map(|&v| match dtype {
            DType::U64 => (v.clamp(0, i128::from(u64::MAX)) as u64).to_le_bytes(),
            _ => (v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64).to_le_bytes(),
        })
        .collect();
    HostTensor {
        dtype,
        shape: shape.to_vec(),
        data,
    }
}

/// Writes `tensor` to `path` atomically: float dtypes as f32, integers in their own type.
pub fn write_atomic(path: &Path, tensor: &HostTensor) -> Result<(), String> {
    let tmp: PathBuf = path.with_extension("npy.partial");
    let result = write_to(&tmp, tensor).and_then(|()| {
        fs::rename(&tmp, path)
            .map_err(|e| format!("cannot move output into {}: {e}", path.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_to(path: &Path, t: &HostTensor) -> Result<(), String> {
    let file =
        fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let values = t.to_f64_vec();
    let shape = ndarray::IxDyn(&t.shape);
    macro_rules! write_as {
        ($ty:ty, $conv:expr) => {{
            let v: Vec<$ty> = values.iter().map($conv).collect();
            ArrayD::from_shape_vec(shape, v)
                .map_err(|e| e.to_string())?
                .write_npy(file)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }};
    }
    macro_rules! write_ints {
        ($iter:expr) => {{
            ArrayD::from_shape_vec(shape, $iter.collect())
                .map_err(|e| e.to_string())?
                .write_npy(file)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }};
    }
    match t.dtype {
        DType::F32 | DType::Bf16 | DType::F16 | DType::Fp8E4m3 | DType::Fp8E5m2 => {
            write_as!(f32, |&v| v as f32)
        }
        DType::I8 => write_as!(i8, |&v| v as i8),
        DType::I16 => write_as!(i16, |&v| v as i16),
        DType::I32 => write_as!(i32, |&v| v as i32),
        // The 64-bit integers come from their bytes: f64 holds them exactly only below 2^53.
        DType::I64 => {
            let ints = t.data.chunks_exact(8).map(|c| i64::from_le_bytes(le8(c)));
            write_ints!(ints)
        }
        DType::U8 => write_as!(u8, |&v| v as u8),
        DType::U16 => write_as!(u16, |&v| v as u16),
        DType::U32 => write_as!(u32, |&v| v as u32),
        DType::U64 => {
            let ints = t.data.chunks_exact(8).map(|c| u64::from_le_bytes(le8(c)));
            write_ints!(ints)
        }
        DType::Bool => write_as!(bool, |&v| v != 0.0),
    }
}

fn le8(c: &[u8]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(c);
    b
}

/// The file name for a tensor: `/` and `:` become `_` (the CLI contract).
pub fn file_name(tensor: &str) -> String {
    format!("{}.npy", tensor.replace(['/', ':'], "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_four_bit_integers_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        // Neighbours above 2^53, which f64 cannot tell apart.
        let big = [u64::MAX, (1 << 53) + 1, 7];
        let path = dir.path().join("u.npy");
        ArrayD::from_shape_vec(ndarray::IxDyn(&[3]), big.to_vec())
            .unwrap()
            .write_npy(fs::File::create(&path).unwrap())
            .unwrap();
        let t = read_as(&path, DType::U64).unwrap();
        let want: Vec<u8> = big.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(t.data, want);
        let out = dir.path().join("out.npy");
        write_atomic(&out, &t).unwrap();
        let back = ArrayD::<u64>::read_npy(fs::File::open(&out).unwrap()).unwrap();
        assert_eq!(back.as_slice().unwrap(), big);

        // u64 into an i64 input saturates at i64::MAX, exactly; i64 keeps its sign.
        let s = read_as(&path, DType::I64).unwrap();
        assert_eq!(s.data[..8], i64::MAX.to_le_bytes());
        assert_eq!(s.data[8..16], ((1i64 << 53) + 1).to_le_bytes());
        write_atomic(&out, &s).unwrap();
        let back = ArrayD::<i64>::read_npy(fs::File::open(&out).unwrap()).unwrap();
        assert_eq!(back.as_slice().unwrap(), [i64::MAX, (1 << 53) + 1, 7]);

        // Narrower unsigned types go through f64 and saturate.
        let n = read_as(&path, DType::U16).unwrap();
        assert_eq!(n.to_f64_vec(), [65535.0, 65535.0, 7.0]);
    }
}
