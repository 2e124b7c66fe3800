//! Element types of the target and the exact conversions between them.
//!
//! Every value the emulator moves is stored in its dtype's bit encoding; engines compute on the
//! decoded value (see [`DType::decode`]) and round on every store (see [`DType::encode`]). This
//! file is the one place where those roundings are defined.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An element type of a tensor or tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// bfloat16: binary32 with the low 16 mantissa bits dropped (round to nearest even).
    Bf16,
    /// IEEE binary16.
    F16,
    /// 8-bit float, 4 exponent and 3 mantissa bits, no infinities (OCP "E4M3FN"), max 448.
    Fp8E4m3,
    /// 8-bit float, 5 exponent and 2 mantissa bits (OCP "E5M2"), max finite 57344.
    Fp8E5m2,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer. Engines compute on `f64`, so arithmetic on it is exact below
    /// 2^53, as for [`DType::I64`]; moves copy its bytes and are exact for every value.
    U64,
    /// Boolean, one byte holding 0 or 1.
    Bool,
}

/// Every dtype, in declaration order (handy for tests and tables).
pub const ALL_DTYPES: [DType; 14] = [
    DType::F32,
    DType::Bf16,
    DType::F16,
    DType::Fp8E4m3,
    DType::Fp8E5m2,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
    DType::Bool,
];

impl DType {
    /// Bytes one element occupies in memory.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::Bf16 | DType::F16 | DType::I16 | DType::U16 => 2,
            DType::Fp8E4m3 | DType::Fp8E5m2 | DType::I8 | DType::U8 | DType::Bool => 1,
            DType::I64 | DType::U64 => 8,
        }
    }

    /// True for the floating-point types.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F32 | DType::Bf16 | DType::F16 | DType::Fp8E4m3 | DType::Fp8E5m2
        )
    }

    /// True for the integer types and bool.
    pub fn is_integer(self) -> bool {
        !self.is_float()
    }

    /// The name used in the text format and in messages (`f32`, `bf16`, `fp8e4m3`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
            DType::Fp8E4m3 => "fp8e4m3",
            DType::Fp8E5m2 => "fp8e5m2",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::Bool => "bool",
        }
    }

    /// Rounds `v` to the nearest value this dtype can hold, as a store would.
    ///
    /// Floats round to nearest, ties to even, from the fp32 value (the engines hold fp32, and
    /// `half`'s direct f64 conversion mis-rounds some values, e.g. 1236.0007 to bf16 gives 1232
    /// instead of 1240); the fp8 types saturate to their largest finite
    /// value (the `float8` crate's saturating conversion), the others overflow to infinity.
    /// Integers truncate toward zero and saturate at their range, NaN becomes 0 (the rule the
    /// ISA reference states for float-to-integer casts). Bool is `v != 0`.
    pub fn round(self, v: f64) -> f64 {
        match self {
            DType::F32 => v as f32 as f64,
            DType::Bf16 => half::bf16::from_f32(v as f32).to_f64(),
            DType::F16 => half::f16::from_f32(v as f32).to_f64(),
            DType::Fp8E4m3 => float8::F8E4M3::from_f32(v as f32).to_f64(),
            DType::Fp8E5m2 => float8::F8E5M2::from_f32(v as f32).to_f64(),
            DType::I8 => sat_int(v, i8::MIN as f64, i8::MAX as f64),
            DType::I16 => sat_int(v, i16::MIN as f64, i16::MAX as f64),
            DType::I32 => sat_int(v, i32::MIN as f64, i32::MAX as f64),
            // i64::MAX is not representable in f64; `as` saturates correctly.
            DType::I64 => {
                if v.is_nan() {
                    0.0
                } else {
                    (v.trunc() as i64) as f64 + 0.0
                }
            }
            DType::U8 => sat_int(v, 0.0, u8::MAX as f64),
            DType::U16 => sat_int(v, 0.0, u16::MAX as f64),
            DType::U32 => sat_int(v, 0.0, u32::MAX as f64),
            // u64::MAX is not representable in f64; `as` saturates correctly (negatives to 0).
            DType::U64 => {
                if v.is_nan() {
                    0.0
                } else {
                    (v.trunc() as u64) as f64
                }
            }
            DType::Bool => {
                if v != 0.0 && !v.is_nan() {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// Writes `v` (rounded as by [`DType::round`]) into `out`, which holds `size_bytes()` bytes,
    /// little-endian.
    pub fn encode(self, v: f64, out: &mut [u8]) {
        match self {
            DType::F32 => out.copy_from_slice(&(v as f32).to_le_bytes()),
            DType::Bf16 => out.copy_from_slice(&half::bf16::from_f32(v as f32).to_le_bytes()),
            DType::F16 => out.copy_from_slice(&half::f16::from_f32(v as f32).to_le_bytes()),
            DType::Fp8E4m3 => out[0] = float8::F8E4M3::from_f32(v as f32).to_bits(),
            DType::Fp8E5m2 => out[0] = float8::F8E5M2::from_f32(v as f32).to_bits(),
            DType::I8 => out[0] = (self.round(v) as i8) as u8,
            DType::I16 => out.copy_from_slice(&(self.round(v) as i16).to_le_bytes()),
            DType::I32 => out.copy_from_slice(&(self.round(v) as i32).to_le_bytes()),
            DType::I64 => {
                let i = if v.is_nan() { 0 } else { v.trunc() as i64 };
                out.copy_from_slice(&i.to_le_bytes())
            }
            DType::U8 => out[0] = self.round(v) as u8,
            DType::U16 => out.copy_from_slice(&(self.round(v) as u16).to_le_bytes()),
            DType::U32 => out.copy_from_slice(&(self.round(v) as u32).to_le_bytes()),
            DType::U64 => {
                let u = if v.is_nan() { 0 } else { v.trunc() as u64 };
                out.copy_from_slice(&u.to_le_bytes())
            }
            DType::Bool => out[0] = self.round(v) as u8,
        }
    }

    /// Reads one element from `bytes` (little-endian, `size_bytes()` long).
    pub fn decode(self, bytes: &[u8]) -> f64 {
        match self {
            DType::F32 => f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as f64,
            DType::Bf16 => half::bf16::from_le_bytes([bytes[0], bytes[1]]).to_f64(),
            DType::F16 => half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f64(),
            DType::Fp8E4m3 => float8::F8E4M3::from_bits(bytes[0]).to_f64(),
            DType::Fp8E5m2 => float8::F8E5M2::from_bits(bytes[0]).to_f64(),
            DType::I8 => bytes[0] as i8 as f64,
            DType::I16 => i16::from_le_bytes([bytes[0], bytes[1]]) as f64,
            DType::I32 => i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as f64,
            DType::I64 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&bytes[..8]);
                i64::from_le_bytes(b) as f64
            }
            DType::U8 | DType::Bool => bytes[0] as f64,
            DType::U16 => u16::from_le_bytes([bytes[0], bytes[1]]) as f64,
            DType::U32 => u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as f64,
            DType::U64 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&bytes[..8]);
                u64::from_le_bytes(b) as f64
            }
        }
    }
}

fn sat_int(v: f64, lo: f64, hi: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        // `+ 0.0` turns -0 into 0: integers have no negative zero.
        v.trunc().clamp(lo, hi) + 0.0
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a dtype name that is not one of [`ALL_DTYPES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown dtype `{0}` (expected one of f32, bf16, f16, fp8e4m3, fp8e5m2, i8, i16, i32, i64, u8, u16, u32, u64, bool)"
)]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_DTYPES
            .iter()
            .copied()
            .find(|d| d.name() == s)
            .ok_or_else(|| UnknownDType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in ALL_DTYPES {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
        assert!("f64".parse::<DType>().is_err());
    }

    #[test]
    fn encode_decode_agrees_with_round() {
        let samples = [
            0.0,
            -0.0,
            1.0,
            -1.5,
            1.0e3 + 0.25,
            1e-8,
            65504.0,
            70000.0,
            500.0,
            -129.7,
            1e20,
        ];
        for d in ALL_DTYPES {
            let mut buf = vec![0u8; d.size_bytes()];
            for &v in &samples {
                d.encode(v, &mut buf);
                let back = d.decode(&buf);
                assert_eq!(back.to_bits(), d.round(v).to_bits(), "{d} {v}");
            }
        }
    }

    #[test]
    fn hand_checked_roundings() {
        // bf16 keeps 8 significant bits: 1 + 2^-8 is a tie between 1 and 1 + 2^-7; even is 1.
        assert_eq!(DType::Bf16.round(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(DType::Bf16.round(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        // bf16 has an 8-bit significand: in [1024, 2048) the spacing is 8, and 1236.0007 is
        // past the midpoint 1236 between 1232 and 1240, so it rounds up.
        assert_eq!(DType::Bf16.round(1236.0007f32 as f64), 1240.0);
        // e4m3 saturates at 448; e5m2 at 57344.
        assert_eq!(DType::Fp8E4m3.round(1000.0), 448.0);
        assert_eq!(DType::Fp8E5m2.round(1e6), 57344.0);
        assert_eq!(DType::I8.round(-300.7), -128.0);
        assert_eq!(DType::I32.round(-2.9), -2.0);
        assert_eq!(DType::U8.round(-4.0), 0.0);
        assert_eq!(DType::Bool.round(0.25), 1.0);
        assert_eq!(DType::I64.round(f64::NAN), 0.0);
        // The unsigned types truncate toward zero and saturate at 0 and their maximum.
        assert_eq!(DType::U16.round(70000.0), 65535.0);
        assert_eq!(DType::U16.round(-0.5), 0.0);
        assert!(DType::U16.round(-0.5).is_sign_positive());
        assert_eq!(DType::U32.round(4294967295.9), 4294967295.0);
        assert_eq!(DType::U32.round(5e9), 4294967295.0);
        assert_eq!(DType::U32.round(-1.0), 0.0);
        assert_eq!(DType::U64.round(-7.0), 0.0);
        assert_eq!(DType::U64.round(f64::NAN), 0.0);
        assert_eq!(DType::U64.round(12.75), 12.0);
    }

    #[test]
    fn unsigned_sizes_names_and_bytes() {
        assert_eq!(
            [DType::U16, DType::U32, DType::U64].map(DType::size_bytes),
            [2, 4, 8]
        );
        assert_eq!(
            [DType::U16, DType::U32, DType::U64].map(DType::name),
            ["u16", "u32", "u64"]
        );
        assert!(DType::U64.is_integer() && !DType::U64.is_float());
        // Values above the signed range of the same width keep their bit patterns.
        let mut b = [0u8; 2];
        DType::U16.encode(65000.0, &mut b);
        assert_eq!(u16::from_le_bytes(b), 65000);
        let mut b = [0u8; 4];
        DType::U32.encode(4e9, &mut b);
        assert_eq!(u32::from_le_bytes(b), 4_000_000_000);
        assert_eq!(DType::U32.decode(&b), 4e9);
        // u64 above i64::MAX: 2^63 + 2^11 is exact in f64 and survives encode and decode.
        let big = (1u64 << 63) + (1 << 11);
        let mut b = [0u8; 8];
        DType::U64.encode(big as f64, &mut b);
        assert_eq!(u64::from_le_bytes(b), big);
        assert_eq!(DType::U64.decode(&b), big as f64);
        // Past the range, a store saturates to u64::MAX.
        DType::U64.encode(1e20, &mut b);
        assert_eq!(u64::from_le_bytes(b), u64::MAX);
    }
}
