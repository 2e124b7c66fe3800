//! `TensorProto` to [`HostTensor`]: element types, the typed data fields, `raw_data`, and
//! external data files beside the model.
//!
//! Every length is checked against the shape before anything is allocated or indexed, so a
//! corrupt tensor is an [`ImportError`], never a panic or a huge allocation.

use super::ImportError;
use super::proto::{DataLocation, TensorProto, data_type};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};
use tessera_ir::dtype::DType;
use tessera_ir::host::HostTensor;

/// The most elements a tensor (or any static shape the importer makes) may have. Far above any
/// model the target can hold, and low enough that byte counts never overflow.
pub const MAX_ELEMS: usize = 1 << 40;

/// The dtype an ONNX element type imports as. Double becomes f32 (the target has no f64, and
/// models use double mostly for constants that f32 holds well enough).
pub fn dtype_of(elem_type: i32) -> Option<DType> {
    Some(match elem_type {
        data_type::FLOAT | data_type::DOUBLE => DType::F32,
        data_type::FLOAT16 => DType::F16,
        data_type::BFLOAT16 => DType::Bf16,
        data_type::FLOAT8E4M3FN => DType::Fp8E4m3,
        data_type::FLOAT8E5M2 => DType::Fp8E5m2,
        data_type::INT8 => DType::I8,
        data_type::INT16 => DType::I16,
        data_type::INT32 => DType::I32,
        data_type::INT64 => DType::I64,
        data_type::UINT8 => DType::U8,
        data_type::UINT16 => DType::U16,
        data_type::UINT32 => DType::U32,
        data_type::UINT64 => DType::U64,
        data_type::BOOL => DType::Bool,
        _ => return None,
    })
}

/// Element count of a shape, or `None` when it exceeds [`MAX_ELEMS`].
pub fn checked_elems(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMS)
}

/// Converts ONNX dims to a static shape, rejecting negative and oversized ones.
pub fn shape_of(dims: &[i64]) -> Option<Vec<usize>> {
    let shape: Vec<usize> = dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()?;
    checked_elems(&shape)?;
    Some(shape)
}

/// Converts a tensor (an initializer, a constant attribute, or a `.pb` test-data file);
/// `model_dir` resolves external data (without it, external data is an error). Messages name
/// the tensor.
pub fn tensor_to_host(
    t: &TensorProto,
    model_dir: Option<&Path>,
) -> Result<HostTensor, ImportError> {
    let what = format!("tensor \"{}\"", t.name);
    let dtype = dtype_of(t.data_type).ok_or_else(|| ImportError::Type {
        what: what.clone(),
        elem_type: data_type::name(t.data_type).to_string(),
        detail: format!(" (ONNX code {})", t.data_type),
    })?;
    let shape = shape_of(&t.dims)
        .ok_or_else(|| ImportError::Malformed(format!("{what} has invalid dims {:?}", t.dims)))?;
    let n = checked_elems(&shape).unwrap_or(0);
    let is_double = t.data_type == data_type::DOUBLE;
    // Bytes per element as stored in the file (double is 8 there, 4 once imported).
    let stored = if is_double { 8 } else { dtype.size_bytes() };
    let mismatch = |field: &str, got: usize| {
        ImportError::Malformed(format!(
            "{what} has shape {shape:?} ({n} elements) but {field} holds {got}"
        ))
    };

    let raw: Option<Vec<u8>> = if t.data_location == DataLocation::External as i32 {
        Some(read_external(t, model_dir, n * stored)?)
    } else if !t.raw_data.is_empty() {
        Some(t.raw_data.clone())
    } else {
        None
    };
    let data: Vec<u8> = if let Some(raw) = raw {
        if raw.len() != n * stored {
            return Err(mismatch(
                "raw_data (bytes / element size)",
                raw.len() / stored,
            ));
        }
        if is_double {
            // Little-endian f64 to f32, rounding to nearest.
            raw.chunks_exact(8)
                .flat_map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    (f64::from_le_bytes(b) as f32).to_le_bytes()
                })
                .collect()
        } else {
            raw
        }
    } else {
        typed_field_bytes(t, dtype, n, &mismatch)?
    };
    Ok(HostTensor { dtype, shape, data })
}

/// The typed repeated fields: which one carries which element type follows the comments on
/// `TensorProto` in onnx.proto (int32_data holds the 8/16-bit types, bool and the bit patterns
/// of float16, bfloat16 and float8; uint64_data holds uint32 and uint64).
fn typed_field_bytes(
    t: &TensorProto,
    dtype: DType,
    n: usize,
    mismatch: &dyn Fn(&str, usize) -> ImportError,
) -> Result<Vec<u8>, ImportError> {
    let check = |field: &str, len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(mismatch(field, len))
        }
    };
    let mut out = Vec::with_capacity(n * dtype.size_bytes());
    match t.data_type {
        data_type::FLOAT => {
            check("float_data", t.float_data.len())?;
            t.float_data
                .iter()
                .for_each(|v| out.extend(v.to_le_bytes()));
        }
        data_type::DOUBLE => {
            check("double_data", t.double_data.len())?;
            t.double_data
                .iter()
                .for_each(|&v| out.extend((v as f32).to_le_bytes()));
        }
        data_type::INT64 => {
            check("int64_data", t.int64_data.len())?;
            t.int64_data
                .iter()
                .for_each(|v| out.extend(v.to_le_bytes()));
        }
        data_type::UINT32 | data_type::UINT64 => {
            check("uint64_data", t.uint64_data.len())?;
            for &v in &t.uint64_data {
                if dtype == DType::U32 {
                    let v = u32::try_from(v).map_err(|_| {
                        ImportError::Malformed(format!(
                            "tensor \"{}\" is uint32 but uint64_data holds {v}, above the uint32 range",
                            t.name
                        ))
                    })?;
                    out.extend(v.to_le_bytes());
                } else {
                    out.extend(v.to_le_bytes());
                }
            }
        }
        _ => {
            check("int32_data", t.int32_data.len())?;
            for &v in &t.int32_data {
                match dtype {
                    DType::I32 => out.extend(v.to_le_bytes()),
                    DType::I16 | DType::U16 | DType::F16 | DType::Bf16 => {
                        out.extend((v as u16).to_le_bytes());
                    }
                    DType::Bool => out.push(u8::from(v != 0)),
                    // int8, uint8 and the float8 bit patterns: the low byte.
                    _ => out.push(v as u8),
                }
            }
        }
    }
    Ok(out)
}

/// Reads `expected` bytes of external data for `t`, after checking that the file lies inside
/// the model folder (no absolute path, no `..`, no symlink out of it) and is long enough.
fn read_external(
    t: &TensorProto,
    model_dir: Option<&Path>,
    expected: usize,
) -> Result<Vec<u8>, ImportError> {
    let err = |detail: String| ImportError::ExternalData {
        tensor: t.name.clone(),
        detail,
    };
    let key = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    let number = |k: &str| -> Result<Option<u64>, ImportError> {
        key(k)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| err(format!("has a bad {k} `{v}` (expected a byte count)")))
            })
            .transpose()
    };
    let location = key("location").ok_or_else(|| err("has no `location` key".into()))?;
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?;
    let rel = Path::new(location);
    if location.is_empty()
        || !rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(err(format!(
            "location `{location}` is not a plain relative path inside the model folder \
             (absolute paths and `..` are rejected)"
        )));
    }
    let dir = model_dir.ok_or_else(|| {
        err(format!(
            "file `{location}` cannot be found: the model was given as bytes without its folder"
        ))
    })?;
    let path = dir.join(rel);
    let canon_dir = dir
        .canonicalize()
        .map_err(|e| err(format!("folder {} is not accessible: {e}", dir.display())))?;
    let canon = path
        .canonicalize()
        .map_err(|e| err(format!("file {} is missing: {e}", path.display())))?;
    if !canon.starts_with(&canon_dir) {
        return Err(err(format!(
            "file {} resolves outside the model folder {}",
            path.display(),
            canon_dir.display()
        )));
    }
    if let Some(len) = length
        && len != expected as u64
    {
        return Err(err(format!(
            "length {len} does not match the tensor's {expected} bytes"
        )));
    }
    let mut file = File::open(&canon)
        .map_err(|e| err(format!("file {} cannot be opened: {e}", path.display())))?;
    let size = file
        .metadata()
        .map_err(|e| err(format!("file {}: {e}", path.display())))?
        .len();
    let end = offset.checked_add(expected as u64);
    if end.is_none_or(|end| end > size) {
        return Err(err(format!(
            "file {} is {size} bytes, too short for {expected} bytes at offset {offset}",
            path.display()
        )));
    }
    let mut data = vec![0u8; expected];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut data))
        .map_err(|e| err(format!("short read from {}: {e}", path.display())))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::super::proto::StringStringEntryProto;
    use super::*;

    fn external(location: &str, dims: Vec<i64>) -> TensorProto {
        TensorProto {
            name: "w".into(),
            dims,
            data_type: data_type::FLOAT,
            data_location: DataLocation::External as i32,
            external_data: vec![StringStringEntryProto {
                key: "location".into(),
                value: location.into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn typed_fields_follow_the_spec() {
        let t = TensorProto {
            dims: vec![3],
            data_type: data_type::INT8,
            int32_data: vec![-5, 0, 127],
            ..Default::default()
        };
        assert_eq!(
            tensor_to_host(&t, None).unwrap().to_f64_vec(),
            [-5.0, 0.0, 127.0]
        );
        // float16 bit patterns ride in int32_data: 0x3c00 is 1.0, 0xc000 is -2.0.
        let t = TensorProto {
            dims: vec![2],
            data_type: data_type::FLOAT16,
            int32_data: vec![0x3c00, 0xc000],
            ..Default::default()
        };
        assert_eq!(tensor_to_host(&t, None).unwrap().to_f64_vec(), [1.0, -2.0]);
        let t = TensorProto {
            dims: vec![2],
            data_type: data_type::DOUBLE,
            double_data: vec![0.1, -3.0],
            ..Default::default()
        };
        let h = tensor_to_host(&t, None).unwrap();
        assert_eq!(h.dtype, DType::F32);
        assert_eq!(h.to_f64_vec(), [0.1f32 as f64, -3.0]);
        let bad = TensorProto {
            dims: vec![4],
            data_type: data_type::FLOAT,
            float_data: vec![1.0],
            ..Default::default()
        };
        assert!(matches!(
            tensor_to_host(&bad, None),
            Err(ImportError::Malformed(_))
        ));
        let string = TensorProto {
            data_type: data_type::STRING,
            ..Default::default()
        };
        assert!(matches!(
            tensor_to_host(&string, None),
            Err(ImportError::Type { .. })
        ));
    }

    #[test]
    fn unsigned_fields_follow_the_spec() {
        // uint16 rides in int32_data; uint32 and uint64 in uint64_data.
        let t = TensorProto {
            dims: vec![2],
            data_type: data_type::UINT16,
            int32_data: vec![65535, 7],
            ..Default::default()
        };
        let h = tensor_to_host(&t, None).unwrap();
        assert_eq!(h.dtype, DType::U16);
        assert_eq!(h.to_f64_vec(), [65535.0, 7.0]);
        let t = TensorProto {
            dims: vec![2],
            data_type: data_type::UINT32,
            uint64_data: vec![4_000_000_000, 1],
            ..Default::default()
        };
        let h = tensor_to_host(&t, None).unwrap();
        assert_eq!((h.dtype, h.data.len()), (DType::U32, 8));
        assert_eq!(h.to_f64_vec(), [4e9, 1.0]);
        // uint64 keeps every bit, above 2^53 and above i64::MAX too.
        let big = [u64::MAX, (1 << 53) + 1];
        let t = TensorProto {
            dims: vec![2],
            data_type: data_type::UINT64,
            uint64_data: big.to_vec(),
            ..Default::default()
        };
        let h = tensor_to_host(&t, None).unwrap();
        assert_eq!(h.dtype, DType::U64);
        assert_eq!(
            h.data,
            big.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()
        );
        // raw_data is the little-endian bytes.
        let t = TensorProto {
            dims: vec![1],
            data_type: data_type::UINT64,
            raw_data: u64::MAX.to_le_bytes().to_vec(),
            ..Default::default()
        };
        assert_eq!(tensor_to_host(&t, None).unwrap().data, [0xff; 8]);
        // A uint32 value that does not fit is an error, not a wrapped value.
        let bad = TensorProto {
            name: "c".into(),
            dims: vec![1],
            data_type: data_type::UINT32,
            uint64_data: vec![1 << 32],
            ..Default::default()
        };
        let err = tensor_to_host(&bad, None).unwrap_err().to_string();
        assert!(err.contains("above the uint32 range"), "{err}");
    }

    #[test]
    fn external_data_must_stay_in_the_model_folder() {
        let root = tempfile::tempdir().unwrap();
        let models = root.path().join("models");
        std::fs::create_dir(&models).unwrap();
        std::fs::write(root.path().join("secret.bin"), [0u8; 8]).unwrap();
        std::fs::write(models.join("w.bin"), 1.5f32.to_le_bytes().repeat(2)).unwrap();

        let ok = tensor_to_host(&external("w.bin", vec![2]), Some(&models)).unwrap();
        assert_eq!(ok.to_f64_vec(), [1.5, 1.5]);
        for bad in ["../secret.bin", "/etc/passwd", "sub/../../secret.bin", ""] {
            let e = tensor_to_host(&external(bad, vec![2]), Some(&models)).unwrap_err();
            assert!(matches!(e, ImportError::ExternalData { .. }), "{bad}: {e}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.path().join("secret.bin"), models.join("link.bin"))
                .unwrap();
            let e = tensor_to_host(&external("link.bin", vec![2]), Some(&models)).unwrap_err();
            assert!(e.to_string().contains("outside the model folder"), "{e}");
        }
        let short = tensor_to_host(&external("w.bin", vec![3]), Some(&models)).unwrap_err();
        assert!(short.to_string().contains("too short"), "{short}");
        let missing = tensor_to_host(&external("nope.bin", vec![2]), Some(&models)).unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
        let no_dir = tensor_to_host(&external("w.bin", vec![2]), None).unwrap_err();
        assert!(matches!(no_dir, ImportError::ExternalData { .. }));
    }
}
