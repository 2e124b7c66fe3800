//! `activation` of exp, erf and GELU, and of identity and relu, a row at a time, in vector
//! lanes.
//!
//! A compiled kernel would call interp's scalar definition once per element. These functions
//! are written to vectorise instead ([`crate::interp::vmath`]), so the jit runs them here: the
//! row's arguments `x * scale + bias` are computed in f64 exactly as interp does, the function
//! is applied to the whole row at once ([`activation_row`]), and the results are rounded and
//! stored (and, for `accum`, summed in f64 in element order and rounded once). Every value is
//! bit-identical to interp's.
//!
//! Identity and relu (a convolution's evacuation of PSUM, with its bias) go from source row to
//! destination row in one pass of AVX-512 (or AVX2) lanes, each lane the same f64 operations:
//! the Cranelift kernel they replace has two f64 lanes per instruction. They take this path when
//! both rows are dense f32 and scale and bias are the same along the row.
//!
//! The step takes the loop nest of the kernel it replaces (the same `KernelKey`): for a plain
//! activation a row is the innermost loop, for an accumulating one all elements of a partition.
//! Memory is read and written through checked slices, so this file has no `unsafe`.

use super::JitError;
use super::matmul::left_memory;
use super::memory::{JitMemory, Loc};
use super::plan::{Arg, Body, Invocation};
use crate::interp::vmath::{activation_row, vectorised};
use tessera_ir::{ActFunc, DType};

/// A planned row-wise activation.
#[derive(Clone, Debug)]
pub(crate) struct ActRows {
    func: ActFunc,
    accum: bool,
    /// The memory arguments (destination, source, then scale and bias when in memory, then
    /// `accum`): where element 0 lies and its dtype.
    mems: Vec<(Loc, u64, DType)>,
    /// Which memory argument (or immediate value) scale and bias are.
    scale: Operand,
    bias: Operand,
    /// Outer loops: sizes and each memory argument's byte stride.
    outer: Loops,
    /// Each memory argument's byte offset of each element of a row.
    row: Vec<Vec<i64>>,
    /// Per memory argument: the row's elements are adjacent f32 values (offsets 0, 4, 8, ...).
    dense: Vec<bool>,
    /// The source row is dense and scale and bias are the same along it (immediates or
    /// per-partition values): the row is read by the vectorised loop.
    fast: bool,
}

/// Loops: each one's size and each memory argument's byte stride.
type Loops = Vec<(u64, Vec<i64>)>;

#[derive(Clone, Copy, Debug)]
enum Operand {
    Mem(usize),
    Imm(f64),
}

/// Reusable row buffer.
#[derive(Default)]
pub(crate) struct RowScratch {
    values: Vec<f64>,
}

impl ActRows {
    /// The row-wise form of an activation kernel's invocation, for the functions with a vector
    /// definition and f32/bf16 operands.
    pub fn plan(inv: &Invocation) -> Option<ActRows> {
        let (func, accum) = match inv.key.body {
            Body::Act(f) => (f, false),
            Body::ActAccum(f) => (f, true),
            _ => return None,
        };
        // Identity and relu only when `affine_row` can take them (checked below).
        let affine = affine_func(func) && !accum;
        if !vectorised(func) && !affine {
            return None;
        }
        let mut mems = Vec::new();
        let mut operand = Vec::new();
        let mut strides: Vec<&[i64]> = Vec::new();
        for (arg, &(loc, at)) in inv
            .key
            .args
            .iter()
            .filter(|a| matches!(a, Arg::Mem { .. }))
            .zip(&inv.ptrs)
        {
            if let Arg::Mem { dtype, strides: s } = arg {
                if !matches!(dtype, DType::F32 | DType::Bf16) {
                    return None;
                }
                mems.push((loc, at, *dtype));
                strides.push(s);
            }
        }
        let mut next_mem = 0;
        for arg in &inv.key.args {
            operand.push(match arg {
                Arg::Mem { .. } => {
                    next_mem += 1;
                    Operand::Mem(next_mem - 1)
                }
                Arg::Imm(slot) => Operand::Imm(*inv.imms.get(*slot as usize)?),
            });
        }
        if operand.len() != 4 + accum as usize {
            return None;
        }
        let shape = &inv.key.shape;
        let dim = |d: usize| -> Vec<i64> { strides.iter().map(|s| s[d]).collect() };
        // The row: the innermost loop, or an accumulating activation's walk.
        let (outer_dims, row_dims): (Loops, Loops) = if accum {
            let outer = (0..shape.len()).map(|d| (shape[d], dim(d))).collect();
            (outer, inv.key.inner.clone())
        } else {
            let last = shape.len().checked_sub(1)?;
            let outer = (0..last).map(|d| (shape[d], dim(d))).collect();
            (outer, vec![(shape[last], dim(last))])
        };
        if strides.iter().any(|s| s.len() != shape.len())
            || row_dims.iter().any(|d| d.1.len() != mems.len())
        {
            return None;
        }
        let mut row: Vec<Vec<i64>> = vec![vec![0]; mems.len()];
        for (size, st) in &row_dims {
            for (offsets, &s) in row.iter_mut().zip(st) {
                *offsets = offsets
                    .iter()
                    .flat_map(|&o| (0..*size as i64).map(move |i| o + i * s))
                    .collect();
            }
        }
        let dense: Vec<bool> = row
            .iter()
            .zip(&mems)
            .map(|(o, m)| {
                m.2 == DType::F32 && o.iter().enumerate().all(|(j, &o)| o == 4 * j as i64)
            })
            .collect();
        let uniform = |o: Operand| match o {
            Operand::Imm(_) => true,
            Operand::Mem(m) => row[m].iter().all(|&o| o == 0),
        };
        let fast = dense[1] && uniform(operand[2]) && uniform(operand[3]) && !row[0].is_empty();
        if affine && !(fast && dense[0]) {
            return None;
        }
        Some(ActRows {
            fast,
            dense,
            func,
            accum,
            mems,
            scale: operand[2],
            bias: operand[3],
            outer: outer_dims,
            row,
        })
    }
}

/// The element of `dtype` at byte `at`.
fn load(bytes: &[u8], at: usize, dtype: DType) -> Option<f64> {
    Some(dtype.decode(bytes.get(at..at + dtype.size_bytes())?))
}

/// Stores `v` (rounded to f32 already) as the element of `dtype` at byte `at`.
fn store(bytes: &mut [u8], at: usize, dtype: DType, v: f32) -> Option<()> {
    dtype.encode(v as f64, bytes.get_mut(at..at + dtype.size_bytes())?);
    Some(())
}

/// Runs a planned activation.
pub(crate) fn run(
    mem: &mut JitMemory<'_>,
    a: &ActRows,
    s: &mut RowScratch,
    at: impl Fn() -> String,
) -> Result<(), JitError> {
    let internal = || left_memory(&at, "activation");
    let rows: u64 = a.outer.iter().map(|d| d.0).product();
    let mut index = vec![0u64; a.outer.len()];
    let mut base: Vec<i64> = Vec::with_capacity(a.mems.len());
    for _ in 0..rows {
        // Element 0 of this row in each memory argument.
        base.clear();
        base.extend((0..a.mems.len()).map(|m| {
            let outer: i64 = a
                .outer
                .iter()
                .zip(&index)
                .map(|((_, st), &i)| st[m] * i as i64)
                .sum();
            a.mems[m].1 as i64 + outer
        }));
        let done = if affine_func(a.func) {
            affine_row(mem, a, &base, s)
        } else {
            function_row(mem, a, &base, s)
        };
        done.ok_or_else(internal)?;
        // The next row's index, innermost outer loop fastest.
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < a.outer[d].0 {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(())
}

/// The functions run by [`affine_row`]: no more than a comparison after `x * scale + bias`.
fn affine_func(func: ActFunc) -> bool {
    matches!(func, ActFunc::Identity | ActFunc::Relu)
}

/// One row of identity or relu (planned only with dense f32 rows and per-row scale and bias),
/// in one pass from source to destination. `None` when an operand leaves its memory.
fn affine_row(
    mem: &mut JitMemory<'_>,
    a: &ActRows,
    base: &[i64],
    s: &mut RowScratch,
) -> Option<()> {
    let addr = |m: usize| usize::try_from(base[m]).ok();
    let get = |o: Operand| match o {
        Operand::Imm(v) => Some(v),
        Operand::Mem(m) => load(mem.bytes(a.mems[m].0)?, addr(m)?, a.mems[m].2),
    };
    let (scale, bias) = (get(a.scale)?, get(a.bias)?);
    let relu = a.func == ActFunc::Relu;
    let len = 4 * a.row[0].len();
    let (src_at, dst_at) = (addr(1)?, addr(0)?);
    let (src_loc, dst_loc) = (a.mems[1].0, a.mems[0].0);
    if let Some((src, dst)) = mem.two(src_loc, dst_loc) {
        affine(
            src.get(src_at..src_at + len)?,
            scale,
            bias,
            relu,
            dst.get_mut(dst_at..dst_at + len)?,
        );
        return Some(());
    }
    // One memory: in place, two disjoint rows, or (overlapping) through the row buffer.
    if src_loc != dst_loc {
        return None;
    }
    let bytes = mem.bytes_mut(dst_loc)?;
    if src_at == dst_at {
        affine_in_place(bytes.get_mut(src_at..src_at + len)?, scale, bias, relu);
    } else if src_at + len <= dst_at || dst_at + len <= src_at {
        let (lo, hi) = bytes.split_at_mut(src_at.max(dst_at));
        let (src, dst) = if src_at < dst_at {
            (lo.get(src_at..src_at + len)?, hi.get_mut(..len)?)
        } else {
            (hi.get(..len)?, lo.get_mut(dst_at..dst_at + len)?)
        };
        affine(src, scale, bias, relu, dst);
    } else {
        s.values.resize(len / 4, 0.0);
        widen(bytes.get(src_at..src_at + len)?, scale, bias, &mut s.values);
        activation_row(a.func, &mut s.values);
        narrow(&s.values, bytes.get_mut(dst_at..dst_at + len)?);
    }
    Some(())
}

/// One row of a function with a vector definition: the arguments into the row buffer, the
/// function over the whole row, the results stored (and for `accum` summed). `None` when an
/// operand leaves its memory.
fn function_row(
    mem: &mut JitMemory<'_>,
    a: &ActRows,
    base: &[i64],
    s: &mut RowScratch,
) -> Option<()> {
    let addr = |m: usize, j: usize| usize::try_from(base[m] + a.row[m][j]).ok();
    let n = a.row[0].len();
    s.values.clear();
    {
        // Each operand's memory, looked up once per row.
        let view = |o: Operand| -> Option<(Option<&[u8]>, usize, f64)> {
            Some(match o {
                Operand::Imm(v) => (None, 0, v),
                Operand::Mem(m) => (Some(mem.bytes(a.mems[m].0)?), m, 0.0),
            })
        };
        let [x, scale, bias] = [Operand::Mem(1), a.scale, a.bias].map(view);
        let (x, scale, bias) = (x?, scale?, bias?);
        let get = |(bytes, m, v): (Option<&[u8]>, usize, f64), j: usize| match bytes {
            None => Some(v),
            Some(b) => load(b, addr(m, j)?, a.mems[m].2),
        };
        if a.fast {
            let (sc, bi) = (get(scale, 0)?, get(bias, 0)?);
            let at = addr(1, 0)?;
            let src = x.0?.get(at..at + 4 * n)?;
            s.values.resize(n, 0.0);
            widen(src, sc, bi, &mut s.values);
        } else {
            for j in 0..n {
                s.values.push(get(x, j)? * get(scale, j)? + get(bias, j)?);
            }
        }
    }
    activation_row(a.func, &mut s.values);
    let (dloc, _, dtype) = a.mems[0];
    let bytes = mem.bytes_mut(dloc)?;
    if a.dense[0] {
        let at = addr(0, 0)?;
        narrow(&s.values, bytes.get_mut(at..at + 4 * n)?);
    } else {
        for (j, &y) in s.values.iter().enumerate() {
            store(bytes, addr(0, j)?, dtype, y as f32)?;
        }
    }
    if a.accum {
        // The f64 sum of the stored f32 results, in element order.
        let sum: f64 = s.values.iter().fold(0.0, |acc, &y| acc + (y as f32) as f64);
        let m = a.mems.len() - 1;
        let (loc, _, dtype) = a.mems[m];
        let bytes = mem.bytes_mut(loc)?;
        store(bytes, usize::try_from(base[m]).ok()?, dtype, sum as f32)?;
    }
    Some(())
}

/// Calls `$generic($args)` compiled for AVX-512, else AVX2, else the baseline, as the
/// processor allows (the same operations, so the same bits, in any of them).
macro_rules! widest {
    ($generic:ident($($arg:ident: $ty:ty),*)) => {{
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        fn avx512($($arg: $ty),*) {
            $generic($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn avx2($($arg: $ty),*) {
            $generic($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the processor has AVX-512F (checked just above).
                return unsafe { avx512($($arg),*) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the processor has AVX2 (checked just above).
                return unsafe { avx2($($arg),*) };
            }
        }
        $generic($($arg),*)
    }};
}

/// `out[j] = src[j] * scale + bias` in f64 for the little-endian f32 values of `src` (as many
/// as `out` holds), with the widest vectors the processor has.
fn widen(src: &[u8], scale: f64, bias: f64, out: &mut [f64]) {
    #[inline(always)]
    fn generic(src: &[u8], scale: f64, bias: f64, out: &mut [f64]) {
        for (v, c) in out.iter_mut().zip(src.chunks_exact(4)) {
            *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64 * scale + bias;
        }
    }
    widest!(generic(src: &[u8], scale: f64, bias: f64, out: &mut [f64]))
}

/// `dst[j] = f(src[j] * scale + bias)` in f64 rounded to f32, f identity or relu (NaN kept).
fn affine(src: &[u8], scale: f64, bias: f64, relu: bool, dst: &mut [u8]) {
    #[inline(always)]
    fn generic(src: &[u8], scale: f64, bias: f64, relu: bool, dst: &mut [u8]) {
        if relu {
            for (d, c) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                let y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64 * scale + bias;
                let y = if y > 0.0 || y.is_nan() { y } else { 0.0 };
                d.copy_from_slice(&(y as f32).to_le_bytes());
            }
        } else {
            for (d, c) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                let y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64 * scale + bias;
                d.copy_from_slice(&(y as f32).to_le_bytes());
            }
        }
    }
    widest!(generic(src: &[u8], scale: f64, bias: f64, relu: bool, dst: &mut [u8]))
}

fn affine_in_place(row: &mut [u8], scale: f64, bias: f64, relu: bool) {
    #[inline(always)]
    fn generic(row: &mut [u8], scale: f64, bias: f64, relu: bool) {
        for d in row.chunks_exact_mut(4) {
            let y = f32::from_le_bytes([d[0], d[1], d[2], d[3]]) as f64 * scale + bias;
            let y = if !relu || y > 0.0 || y.is_nan() {
                y
            } else {
                0.0
            };
            d.copy_from_slice(&(y as f32).to_le_bytes());
        }
    }
    widest!(generic(row: &mut [u8], scale: f64, bias: f64, relu: bool))
}

/// Each value of `values` rounded to f32, stored little-endian in `dst` (as many as fit).
fn narrow(values: &[f64], dst: &mut [u8]) {
    #[inline(always)]
    fn generic(values: &[f64], dst: &mut [u8]) {
        for (d, &y) in dst.chunks_exact_mut(4).zip(values) {
            d.copy_from_slice(&(y as f32).to_le_bytes());
        }
    }
    widest!(generic(values: &[f64], dst: &mut [u8]))
}
