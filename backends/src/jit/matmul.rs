//! `nc_matmul` on the host: gather the operands into packed f32 panels (contiguous rows are
//! decoded a row at a time), multiply with `ndarray`'s `general_mat_mul` (the `matrixmultiply`
//! sgemm: cache-blocked, SIMD with FMA where the CPU has it, detected at run time), scatter the
//! result to PSUM.
//!
//! Accumulation is fp32, as on the tensor engine, in the sgemm's blocked order (with fused
//! multiply-adds where available). interp instead sums each dot product in f64 and rounds
//! once, so the two differ by the fp32 rounding of the partial sums: at most about
//! `K * 2^-24 * sum_k |s_k m_k|` per element, whatever the order (K <= 128 gives under 8e-6 of
//! the sum of absolute products). The tests hold the jit within `1e-5 * ||result||_inf` (plus
//! 1e-6 absolute) of interp. Accumulation into an existing `dst` (`start = false`) adds the new
//! product to it in f32.
//!
//! Memory is accessed through checked slices, so this file has no `unsafe`.

use super::JitError;
use super::memory::{JitMemory, Loc};
use super::plan::Raw;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use tessera_ir::{DType, TileAccess};

/// One operand: row `r`, element `e` is at byte `row0 + r * pb + offsets[e]` of `loc`.
#[derive(Clone, Debug)]
pub(crate) struct Panel {
    loc: Loc,
    dtype: DType,
    row0: u64,
    pb: u64,
    rows: usize,
    offsets: Vec<usize>,
    /// The free elements of a row are adjacent (`offsets[e] = offsets[0] + e * size`).
    contiguous: bool,
}

impl Panel {
    /// The panel of a checked operand (its offsets lie inside the buffer's partitions).
    pub fn new(raw: &Raw, t: &TileAccess) -> Panel {
        let w = raw.dtype.size_bytes() as i64;
        let mut offsets = vec![t.offset as i64 * w];
        for d in &t.dims {
            let mut next = Vec::with_capacity(offsets.len() * d.size as usize);
            for &o in &offsets {
                next.extend((0..d.size as i64).map(|i| o + i * d.stride * w));
            }
            offsets = next;
        }
        // Non-negative: the view was checked to lie inside each partition.
        let offsets: Vec<usize> = offsets.into_iter().map(|o| o.max(0) as usize).collect();
        let size = raw.dtype.size_bytes();
        let contiguous = offsets
            .iter()
            .enumerate()
            .all(|(e, &o)| o == offsets[0] + e * size);
        Panel {
            loc: raw.loc,
            dtype: raw.dtype,
            row0: raw.row0,
            pb: raw.pb,
            rows: raw.rows as usize,
            offsets,
            contiguous,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn free(&self) -> usize {
        self.offsets.len()
    }

    fn at(&self, r: usize, e: usize) -> usize {
        self.row0 as usize + r * self.pb as usize + self.offsets[e]
    }

    /// Every element as f32, row-major.
    fn gather(&self, mem: &JitMemory<'_>, out: &mut Vec<f32>) -> Option<()> {
        let bytes = mem.bytes(self.loc)?;
        out.clear();
        out.reserve(self.rows * self.free());
        if self.contiguous && self.dtype == DType::F32 {
            for r in 0..self.rows {
                let at = self.at(r, 0);
                let row = bytes.get(at..at + 4 * self.free())?;
                out.extend(
                    row.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            }
            return Some(());
        }
        for r in 0..self.rows {
            for e in 0..self.offsets.len() {
                let at = self.at(r, e);
                let v = match self.dtype {
                    DType::F32 => f32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?),
                    DType::Bf16 => {
                        let h = u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?);
                        f32::from_bits((h as u32) << 16)
                    }
                    DType::F16 => {
                        half::f16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?).to_f32()
                    }
                    _ => return None,
                };
                out.push(v);
            }
        }
        Some(())
    }

    /// Stores f32 values (row-major); the panel is f32.
    fn scatter(&self, mem: &mut JitMemory<'_>, values: &[f32]) -> Option<()> {
        let (rows, free) = (self.rows, self.free());
        let bytes = mem.bytes_mut(self.loc)?;
        if self.contiguous {
            for r in 0..rows {
                let at = self.at(r, 0);
                let row = bytes.get_mut(at..at + 4 * free)?;
                let src = values.get(r * free..(r + 1) * free)?;
                for (dst, v) in row.chunks_exact_mut(4).zip(src) {
                    dst.copy_from_slice(&v.to_le_bytes());
                }
            }
            return Some(());
        }
        for r in 0..rows {
            for e in 0..free {
                let at = self.at(r, e);
                bytes
                    .get_mut(at..at + 4)?
                    .copy_from_slice(&values.get(r * free + e)?.to_le_bytes());
            }
        }
        Some(())
    }
}

/// A planned `nc_matmul`.
#[derive(Clone, Debug)]
pub(crate) struct MatmulPlan {
    pub stationary: Panel,
    pub moving: Panel,
    pub dst: Panel,
    pub start: bool,
}

/// Reusable packing buffers.
#[derive(Default)]
pub(crate) struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

pub(crate) fn run(
    mem: &mut JitMemory<'_>,
    p: &MatmulPlan,
    s: &mut Scratch,
    at: impl Fn() -> String,
) -> Result<(), JitError> {
    let internal = || JitError::BadInstruction {
        inst: at(),
        detail: "internal: a matmul operand left its memory".into(),
    };
    let (k, m, n) = (p.stationary.rows(), p.stationary.free(), p.moving.free());
    p.stationary.gather(mem, &mut s.a).ok_or_else(internal)?;
    p.moving.gather(mem, &mut s.b).ok_or_else(internal)?;
    let beta = if p.start {
        s.c.clear();
        s.c.resize(m * n, 0.0);
        0.0
    } else {
        p.dst.gather(mem, &mut s.c).ok_or_else(internal)?;
        1.0
    };
    gemm(&s.a, &s.b, k, m, n, beta, &mut s.c).ok_or_else(internal)?;
    p.dst.scatter(mem, &s.c).ok_or_else(internal)
}

/// `c[m][n] = sum_k a[k][m] * b[k][n] + beta c[m][n]` in f32 (`a`, `b`, `c` row-major).
fn gemm(
    a: &[f32],
    b: &[f32],
    k: usize,
    m: usize,
    n: usize,
    beta: f32,
    c: &mut [f32],
) -> Option<()> {
    let a = ArrayView2::from_shape((k, m), a).ok()?;
    let b = ArrayView2::from_shape((k, n), b).ok()?;
    let mut c = ArrayViewMut2::from_shape((m, n), c).ok()?;
    general_mat_mul(1.0, &a.t(), &b, beta, &mut c);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_naive() {
        // Small integers and halves: every product and partial sum is exact in f32, so any
        // summation order gives the same result.
        let (k, m, n) = (3, 6, 5);
        let a: Vec<f32> = (0..k * m).map(|i| i as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| 1.0 - i as f32 * 0.25).collect();
        for beta in [0.0, 1.0] {
            let mut c: Vec<f32> = (0..m * n).map(|i| i as f32).collect();
            gemm(&a, &b, k, m, n, beta, &mut c).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let prod: f32 = (0..k).map(|kk| a[kk * m + i] * b[kk * n + j]).sum();
                    assert_eq!(c[i * n + j], prod + beta * (i * n + j) as f32);
                }
            }
        }
    }
}
