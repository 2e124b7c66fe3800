//! `.npy` files in and out of the CLI: reading any numeric npy into a [`HostTensor`] of the
//! dtype the program declares, and writing outputs atomically (temp file, then rename) so a
//! failed run never leaves a half-written file.

use std::fs;
use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use tessera_ir::{DType, HostTensor};

/// Reads `path` and converts it to `dtype` with `shape` checked by the caller.
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
    attempt!(f32, |&v| v as f64);
    attempt!(f64, |&v| v);
    attempt!(i64, |&v| v as f64);
    attempt!(i32, |&v| v as f64);
    attempt!(i16, |&v| v as f64);
    attempt!(i8, |&v| v as f64);
    attempt!(u8, |&v| v as f64);
    attempt!(bool, |&v| if v { 1.0 } else { 0.0 });
    Err(format!(
        "{} is not a .npy file of a supported element type (f32, f64, i64, i32, i16, i8, u8, bool; C order)",
        path.display()
    ))
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
    match t.dtype {
        DType::F32 | DType::Bf16 | DType::F16 | DType::Fp8E4m3 | DType::Fp8E5m2 => {
            write_as!(f32, |&v| v as f32)
        }
        DType::I8 => write_as!(i8, |&v| v as i8),
        DType::I16 => write_as!(i16, |&v| v as i16),
        DType::I32 => write_as!(i32, |&v| v as i32),
        DType::I64 => write_as!(i64, |&v| v as i64),
        DType::U8 => write_as!(u8, |&v| v as u8),
        DType::Bool => write_as!(bool, |&v| v != 0.0),
    }
}

/// The file name for a tensor: `/` and `:` become `_` (the CLI contract).
pub fn file_name(tensor: &str) -> String {
    format!("{}.npy", tensor.replace(['/', ':'], "_"))
}
