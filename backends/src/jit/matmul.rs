//! `nc_matmul` on the host: gather the operands into packed f32 panels, multiply with a
//! register-blocked Rust microkernel, scatter the result to PSUM.
//!
//! Accumulation is fp32, as on the tensor engine: each dot product sums `k` in ascending order in
//! f32. interp instead sums each dot product in f64 and rounds once, so the two differ by the
//! fp32 rounding of the partial sums: at most about `K * 2^-24 * sum_k |s_k m_k|` per element
//! (K <= 128 gives under 8e-6 of the sum of absolute products). The tests hold the jit within
//! `1e-5 * ||result||_inf` (plus 1e-6 absolute) of interp. Accumulation into an existing `dst`
//! (`start = false`) adds the new product in f32, exactly as interp does.
//!
//! Memory is accessed through checked slices, so this file has no `unsafe`.

use super::JitError;
use super::memory::{JitMemory, Loc};
use super::plan::Raw;
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
        Panel {
            loc: raw.loc,
            dtype: raw.dtype,
            row0: raw.row0,
            pb: raw.pb,
            rows: raw.rows as usize,
            // Non-negative: the view was checked to lie inside each partition.
            offsets: offsets.into_iter().map(|o| o.max(0) as usize).collect(),
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
    prev: Vec<f32>,
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
    s.c.clear();
    s.c.resize(m * n, 0.0);
    microkernel(&s.a, &s.b, k, m, n, &mut s.c);
    if !p.start {
        p.dst.gather(mem, &mut s.prev).ok_or_else(internal)?;
        for (c, &q) in s.c.iter_mut().zip(&s.prev) {
            *c += q;
        }
    }
    p.dst.scatter(mem, &s.c).ok_or_else(internal)
}

/// `c[m][n] = sum_k a[k][m] * b[k][n]` in f32, `k` ascending. Four rows of `c` at a time share
/// each row of `b`; the inner loops over `n` are plain slices the compiler vectorises.
fn microkernel(a: &[f32], b: &[f32], k: usize, m: usize, n: usize, c: &mut [f32]) {
    if n == 0 {
        return;
    }
    let mut i = 0;
    while i + 4 <= m {
        let (c0, rest) = c[i * n..(i + 4) * n].split_at_mut(n);
        let (c1, rest) = rest.split_at_mut(n);
        let (c2, c3) = rest.split_at_mut(n);
        for kk in 0..k {
            let x = &a[kk * m + i..kk * m + i + 4];
            let (x0, x1, x2, x3) = (x[0], x[1], x[2], x[3]);
            let row = &b[kk * n..kk * n + n];
            let lanes = c0.iter_mut().zip(c1.iter_mut()).zip(c2.iter_mut());
            for (((o0, o1), o2), (o3, &y)) in lanes.zip(c3.iter_mut().zip(row)) {
                *o0 += x0 * y;
                *o1 += x1 * y;
                *o2 += x2 * y;
                *o3 += x3 * y;
            }
        }
        i += 4;
    }
    for i in i..m {
        let out = &mut c[i * n..(i + 1) * n];
        for kk in 0..k {
            let x = a[kk * m + i];
            for (o, &y) in out.iter_mut().zip(&b[kk * n..kk * n + n]) {
                *o += x * y;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microkernel_matches_naive() {
        let (k, m, n) = (3, 6, 5);
        let a: Vec<f32> = (0..k * m).map(|i| i as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| 1.0 - i as f32 * 0.25).collect();
        let mut c = vec![0.0; m * n];
        microkernel(&a, &b, k, m, n, &mut c);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|kk| a[kk * m + i] * b[kk * n + j]).sum();
                assert_eq!(c[i * n + j], want);
            }
        }
    }
}
