//! The kernel library against plain f64 references, run on the reference emulator (`interp`).
//!
//! Shapes are drawn with every dimension in 1..=700 (products above 490,000 elements, i.e.
//! beyond a full 700x700, are halved down so the emulator stays fast), inputs from a seeded generator. Tolerances, and why:
//! - f32 element-wise work (binary, unary): the emulator computes each result in f64 from the
//!   f32 inputs and rounds once to f32, so the error is at most 2^-24 relative; we allow 1e-5
//!   relative, with the floor `f32::MIN_POSITIVE` below which rounding is no longer relative.
//! - f32 softmax: a handful of fp32 roundings per element (x - max, exp, the row sum, the
//!   reciprocal, the product), each 2^-24 relative to the value itself, so 1e-5 relative to the
//!   element holds with the same floor.
//! - f32 layer norm: the output is `xhat * gamma + beta`; fp32 rounding errors are relative to
//!   the terms, not to their (possibly cancelling) sum, so the scale is
//!   `max(|want|, |xhat * gamma| + |beta|)` and the bound 1e-5 of it, plus the row mean's
//!   rounding (a sum of `cols` values, so `max(1e-5, cols 2^-24) mean|x|`) times `rstd |gamma|`.
//! - matmul f32: 1e-4 of the result's Frobenius norm.
//! - bf16: inputs are bf16 values (so the reference sees exactly what the kernel sees); the
//!   fp32 result is rounded to bf16 (8 significant bits, unit roundoff 2^-8), so the bound is
//!   `2^-8 |want|` plus the f32 bound above scaled by (1 + 2^-8) (we use 2^-8 + 2^-23 where
//!   the f32 bound is the single 2^-24 rounding). bf16 matmul outputs allow in addition the fp32
//!   accumulation bound `k 2^-24 sum_k |a_ik b_kj|` a hardware-order sum could need.
//! - f16 matmul: as bf16 with f16's unit roundoff 2^-11 (inputs are f16 values, fp32 PSUM, one
//!   rounding to f16; |values| stay far below f16's 65504).

use ndarray::{ArrayD, IxDyn, Zip};
use proptest::prelude::*;
use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_ir::{ActFunc, AluOp, DType, HostTensor, Op, Space, TargetSpec, TileProgram};
use tessera_kernels::library;

const BF16_U: f64 = 1.0 / 256.0; // 2^-8
const F16_U: f64 = 1.0 / 2048.0; // 2^-11
const F32_U: f64 = 1.0 / 16_777_216.0; // 2^-24

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// splitmix64: tiny, seeded, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }

    /// `n` values in [lo, hi), already rounded to `dtype`.
    fn values(&mut self, dtype: DType, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| dtype.round(self.uniform(lo, hi))).collect()
    }
}

fn array(shape: &[usize], values: Vec<f64>) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(shape), values).expect("shape matches")
}

/// Shapes of rank 1..=max_rank with dims in 1..=700, halving the largest dim until the element
/// count is within `budget`.
fn shape(max_rank: usize, budget: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=700, 1..=max_rank).prop_map(move |mut s| {
        while s.iter().product::<usize>() > budget {
            let i = (0..s.len()).max_by_key(|&i| s[i]).unwrap_or(0);
            s[i] = s[i].div_ceil(2);
        }
        s
    })
}

/// The live SBUF bytes and PSUM banks per partition never exceed the target (checked here as
/// well as by the verifier, so the kernels are held to it whatever the verifier's state).
fn check_capacity(p: &TileProgram, t: &TargetSpec) {
    let (mut sbuf, mut banks) = (0u64, 0u64);
    for inst in &p.insts {
        let (buf, sign) = match inst.op {
            Op::Alloc { buf } => (buf, 1i64),
            Op::Free { buf } => (buf, -1),
            _ => continue,
        };
        let b = p.buffer(buf);
        match b.space {
            Space::Sbuf => sbuf = sbuf.wrapping_add_signed(sign * b.bytes_per_partition() as i64),
            Space::Psum => {
                let n = b.bytes_per_partition().div_ceil(t.psum_bank_bytes);
                banks = banks.wrapping_add_signed(sign * n as i64);
            }
        }
        assert!(
            sbuf <= t.sbuf_partition_bytes,
            "SBUF over capacity: {sbuf} bytes"
        );
        assert!(
            banks <= t.psum_banks as u64,
            "PSUM over capacity: {banks} banks"
        );
    }
}

fn run(
    p: &TileProgram,
    t: &TargetSpec,
    inputs: &[(&str, DType, &ArrayD<f64>)],
) -> BTreeMap<String, ArrayD<f64>> {
    check_capacity(p, t);
    let inputs = inputs
        .iter()
        .map(|(name, dtype, a)| {
            let v: Vec<f64> = a.iter().copied().collect();
            (
                name.to_string(),
                HostTensor::from_f64(*dtype, a.shape(), &v),
            )
        })
        .collect();
    let out =
        interp::run(p, t, &inputs).unwrap_or_else(|e| panic!("interp failed on {}: {e}", p.name));
    out.into_iter()
        .map(|(k, v)| (k, v.to_array_f64()))
        .collect()
}

/// Asserts `|got - want| <= tol(want, i)` element by element.
fn assert_close(
    what: &str,
    got: &ArrayD<f64>,
    want: &ArrayD<f64>,
    tol: impl Fn(usize, f64) -> f64,
) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= tol(i, w);
        assert!(
            ok,
            "{what}: element {i}: got {g}, want {w} (tolerance {})",
            tol(i, w)
        );
    }
}

/// Tolerance for a result rounded from a fp32 pipeline with relative error `rel` to `dtype`.
fn rel_tol(dtype: DType, rel: f64) -> impl Fn(usize, f64) -> f64 {
    let floor = f32::MIN_POSITIVE as f64;
    move |_, w| {
        let scale = w.abs().max(floor);
        match dtype {
            DType::Bf16 => BF16_U * scale + (1.0 + BF16_U) * rel * scale,
            _ => rel * scale,
        }
    }
}

fn float_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::Bf16)]
}

fn f32_rel(dtype: DType) -> f64 {
    // bf16: the fp32 step is one rounding (2^-24, plus the 2^-23 margin of the module docs).
    if dtype == DType::Bf16 {
        2.0 * F32_U
    } else {
        1e-5
    }
}

// ----- matmul -----

fn matmul_case(m: usize, k: usize, n: usize, in_dtype: DType, out_dtype: DType, seed: u64) {
    let t = TargetSpec::trn2();
    let p = library::matmul(&t, m, k, n, in_dtype, out_dtype).expect("matmul kernel");
    let mut rng = Rng(seed);
    let a = array(&[m, k], rng.values(in_dtype, m * k, -1.0, 1.0));
    let b = array(&[k, n], rng.values(in_dtype, k * n, -1.0, 1.0));
    let got = &run(&p, &t, &[("a", in_dtype, &a), ("b", in_dtype, &b)])["c"];
    let (a2, b2) = (
        a.view().into_dimensionality::<ndarray::Ix2>().expect("2-D"),
        b.view().into_dimensionality::<ndarray::Ix2>().expect("2-D"),
    );
    let want = a2.dot(&b2).into_dyn();
    if out_dtype == DType::F32 {
        let err = (got - &want).mapv(|d| d * d).sum().sqrt();
        let norm = want.mapv(|d| d * d).sum().sqrt();
        assert!(
            err <= 1e-4 * norm,
            "matmul {m}x{k}x{n}: error {err} vs norm {norm}"
        );
    } else {
        // The output's unit roundoff: the fp32 result is rounded once to bf16 or f16.
        let u = if out_dtype == DType::F16 {
            F16_U
        } else {
            BF16_U
        };
        let abs = a2.mapv(f64::abs).dot(&b2.mapv(f64::abs)).into_dyn();
        let abs: Vec<f64> = abs.iter().copied().collect();
        let tol =
            |i: usize, w: f64| (u + 2.0 * F32_U) * w.abs() + (1.0 + u) * k as f64 * F32_U * abs[i];
        assert_close(&format!("matmul {m}x{k}x{n}"), got, &want, tol);
    }
}

proptest! {
    #![proptest_config(cfg(8))]
    #[test]
    fn matmul_f32(m in 1usize..=700, k in 1usize..=700, n in 1usize..=700, seed: u64) {
        matmul_case(m, k, n, DType::F32, DType::F32, seed);
    }

    #[test]
    fn matmul_bf16(m in 1usize..=700, k in 1usize..=700, n in 1usize..=700, out_bf16: bool, seed: u64) {
        let out = if out_bf16 { DType::Bf16 } else { DType::F32 };
        matmul_case(m, k, n, DType::Bf16, out, seed);
    }

    /// f16 operands on the PE, fp32 PSUM, the result stored as f16 or f32.
    #[test]
    fn matmul_f16(m in 1usize..=700, k in 1usize..=700, n in 1usize..=700, out_f16: bool, seed: u64) {
        let out = if out_f16 { DType::F16 } else { DType::F32 };
        matmul_case(m, k, n, DType::F16, out, seed);
    }
}

// ----- element-wise -----

/// numpy broadcasting, written independently of the kernel's.
fn np_broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    let pad = |s: &[usize]| [vec![1; r - s.len()], s.to_vec()].concat();
    pad(a).iter().zip(pad(b)).map(|(&x, y)| x.max(y)).collect()
}

/// An operand shape for `out`: leading dims dropped, dims whose bit is set made 1.
fn operand_shape(out: &[usize], drop: usize, bits: u8) -> Vec<usize> {
    let drop = drop.min(out.len());
    out[drop..]
        .iter()
        .enumerate()
        .map(|(i, &d)| if bits >> i & 1 == 1 { 1 } else { d })
        .collect()
}

const BINARY_OPS: [AluOp; 10] = [
    AluOp::Add,
    AluOp::Sub,
    AluOp::Mul,
    AluOp::Div,
    AluOp::Max,
    AluOp::Min,
    AluOp::Pow,
    AluOp::Mod,
    AluOp::Gt,
    AluOp::Eq,
];

fn reference_alu(op: AluOp, a: f64, b: f64) -> f64 {
    match op {
        AluOp::Add => a + b,
        AluOp::Sub => a - b,
        AluOp::Mul => a * b,
        AluOp::Div => a / b,
        AluOp::Max => a.max(b),
        AluOp::Min => a.min(b),
        AluOp::Pow => a.powf(b),
        AluOp::Mod => a - b * (a / b).floor(),
        AluOp::Gt => (a > b) as u8 as f64,
        AluOp::Eq => (a == b) as u8 as f64,
        _ => unreachable!("not drawn"),
    }
}

proptest! {
    #![proptest_config(cfg(16))]
    #[test]
    fn binary_broadcasts(
        out in shape(4, 490_000),
        (drop_a, bits_a, drop_b, bits_b) in (0usize..3, any::<u8>(), 0usize..3, any::<u8>()),
        op_index in 0usize..BINARY_OPS.len(),
        dtype in float_dtype(),
        seed: u64,
    ) {
        let op = BINARY_OPS[op_index];
        let (sa, sb) = (operand_shape(&out, drop_a, bits_a), operand_shape(&out, drop_b, bits_b));
        let out_shape = np_broadcast(&sa, &sb);
        let t = TargetSpec::trn2();
        let p = library::binary(&t, op, &sa, &sb, dtype).expect("binary kernel");
        let mut rng = Rng(seed);
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        // Pow takes a positive base; Div and Mod a divisor away from 0; Eq needs equal values
        // to be likely, so it draws from a few integers.
        let (a, b) = match op {
            AluOp::Pow => (rng.values(dtype, na, 0.25, 2.0), rng.values(dtype, nb, -2.0, 2.0)),
            AluOp::Div | AluOp::Mod => {
                let b = (0..nb).map(|_| {
                    let v = rng.uniform(0.5, 2.0);
                    dtype.round(if rng.next() < 0.5 { -v } else { v })
                }).collect();
                (rng.values(dtype, na, -4.0, 4.0), b)
            }
            AluOp::Eq => (
                (0..na).map(|_| (rng.next() * 3.0).floor()).collect(),
                (0..nb).map(|_| (rng.next() * 3.0).floor()).collect(),
            ),
            _ => (rng.values(dtype, na, -2.0, 2.0), rng.values(dtype, nb, -2.0, 2.0)),
        };
        let (a, b) = (array(&sa, a), array(&sb, b));
        let got = &run(&p, &t, &[("a", dtype, &a), ("b", dtype, &b)])["out"];
        let ab = a.broadcast(IxDyn(&out_shape)).expect("broadcasts");
        let bb = b.broadcast(IxDyn(&out_shape)).expect("broadcasts");
        // The emulator rounds the single step to fp32 before the store rounds to dtype.
        let want = Zip::from(&ab).and(&bb).map_collect(|&x, &y| reference_alu(op, x, y) as f32 as f64);
        let want = want.mapv(|v| dtype.round(v));
        let what = format!("binary {op} {sa:?} {sb:?} {dtype}");
        // `want` is already the rounded result, so only a rounding-sized slack is needed.
        assert_close(&what, got, &want, rel_tol(dtype, f32_rel(dtype)));
    }
}

/// Activation functions with an input range inside each one's domain.
const UNARY: [(ActFunc, f64, f64); 12] = [
    (ActFunc::Relu, -3.0, 3.0),
    (ActFunc::Sigmoid, -6.0, 6.0),
    (ActFunc::Tanh, -3.0, 3.0),
    (ActFunc::Gelu, -4.0, 4.0),
    (ActFunc::Silu, -4.0, 4.0),
    (ActFunc::Exp, -5.0, 5.0),
    (ActFunc::Log, 0.01, 10.0),
    (ActFunc::Sqrt, 0.0, 10.0),
    (ActFunc::Rsqrt, 0.01, 10.0),
    (ActFunc::Reciprocal, 0.1, 10.0),
    (ActFunc::Square, -3.0, 3.0),
    (ActFunc::Abs, -3.0, 3.0),
];

fn reference_act(f: ActFunc, x: f64) -> f64 {
    let erf = |x: f64| {
        // Abramowitz-Stegun 7.1.26 is too coarse; integrate erf by Simpson's rule instead.
        let n = 2000;
        let h = x / n as f64;
        let g = |t: f64| (-t * t).exp();
        let s: f64 = (0..=n)
            .map(|i| {
                let w = if i == 0 || i == n {
                    1.0
                } else if i % 2 == 1 {
                    4.0
                } else {
                    2.0
                };
                w * g(i as f64 * h)
            })
            .sum();
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    };
    match f {
        ActFunc::Relu => x.max(0.0),
        ActFunc::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        ActFunc::Tanh => x.tanh(),
        ActFunc::Gelu => 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
        ActFunc::Silu => x / (1.0 + (-x).exp()),
        ActFunc::Exp => x.exp(),
        ActFunc::Log => x.ln(),
        ActFunc::Sqrt => x.sqrt(),
        ActFunc::Rsqrt => 1.0 / x.sqrt(),
        ActFunc::Reciprocal => 1.0 / x,
        ActFunc::Square => x * x,
        ActFunc::Abs => x.abs(),
        _ => unreachable!("not drawn"),
    }
}

proptest! {
    #![proptest_config(cfg(16))]
    #[test]
    fn unary_matches(shape in shape(3, 490_000), fi in 0usize..UNARY.len(), dtype in float_dtype(), seed: u64) {
        let (func, lo, hi) = UNARY[fi];
        let t = TargetSpec::trn2();
        let p = library::unary(&t, func, &shape, dtype).expect("unary kernel");
        let n: usize = shape.iter().product();
        let x = array(&shape, Rng(seed).values(dtype, n, lo, hi));
        let got = &run(&p, &t, &[("x", dtype, &x)])["y"];
        let want = x.mapv(|v| reference_act(func, v));
        assert_close(&format!("unary {func} {shape:?} {dtype}"), got, &want, rel_tol(dtype, f32_rel(dtype)));
    }
}

// ----- softmax and layer norm -----

fn rows_of(a: &ArrayD<f64>) -> (usize, usize) {
    let c = *a.shape().last().unwrap_or(&1);
    (a.len() / c.max(1), c)
}

fn reference_softmax(x: &ArrayD<f64>) -> ArrayD<f64> {
    let (rows, cols) = rows_of(x);
    let v: Vec<f64> = x.iter().copied().collect();
    let mut out = Vec::with_capacity(v.len());
    for r in 0..rows {
        let row = &v[r * cols..(r + 1) * cols];
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|&e| (e - m).exp()).sum();
        out.extend(row.iter().map(|&e| (e - m).exp() / s));
    }
    array(x.shape(), out)
}

fn softmax_case(shape: &[usize], dtype: DType, chunk: Option<usize>, seed: u64) {
    let t = TargetSpec::trn2();
    let p = match chunk {
        Some(c) => library::softmax_chunked(&t, shape, dtype, c),
        None => library::softmax(&t, shape, dtype),
    }
    .expect("softmax kernel");
    let n: usize = shape.iter().product();
    let x = array(shape, Rng(seed).values(dtype, n, -4.0, 4.0));
    let got = &run(&p, &t, &[("x", dtype, &x)])["y"];
    let want = reference_softmax(&x);
    assert_close(
        &format!("softmax {shape:?} {dtype} chunk {chunk:?}"),
        got,
        &want,
        rel_tol(dtype, 1e-5),
    );
}

proptest! {
    #![proptest_config(cfg(12))]
    #[test]
    fn softmax_rows(shape in shape(3, 490_000), dtype in float_dtype(), seed: u64) {
        softmax_case(&shape, dtype, None, seed);
    }

    #[test]
    fn softmax_streams_long_rows(rows in 1usize..=300, cols in 1usize..=700, chunk in 16usize..=300, seed: u64) {
        softmax_case(&[rows, cols], DType::F32, Some(chunk), seed);
    }
}

fn layer_norm_case(shape: &[usize], dtype: DType, chunk: Option<usize>, seed: u64) {
    let eps = 1e-5;
    let t = TargetSpec::trn2();
    let p = match chunk {
        Some(c) => library::layer_norm_chunked(&t, shape, dtype, eps, c),
        None => library::layer_norm(&t, shape, dtype, eps),
    }
    .expect("layer_norm kernel");
    let mut rng = Rng(seed);
    let n: usize = shape.iter().product();
    let x = array(shape, rng.values(dtype, n, -2.0, 2.0));
    let (rows, cols) = rows_of(&x);
    let gamma = array(&[cols], rng.values(dtype, cols, -2.0, 2.0));
    let beta = array(&[cols], rng.values(dtype, cols, -1.0, 1.0));
    let got = &run(
        &p,
        &t,
        &[
            ("x", dtype, &x),
            ("gamma", dtype, &gamma),
            ("beta", dtype, &beta),
        ],
    )["y"];

    // The emulator uses fp32 immediates, so the reference's eps is the fp32 value too.
    let eps = eps as f32 as f64;
    let v: Vec<f64> = x.iter().copied().collect();
    let (mut want, mut scale) = (Vec::with_capacity(n), Vec::with_capacity(n));
    // The mean is a sum of `cols` fp32 values: its rounding error is bounded by
    // gamma_n = n u times the mean of |x| (Higham, "Accuracy and Stability of Numerical
    // Algorithms", 2nd ed., eq. 4.4), not by |x - mean|, and reaches each output scaled by
    // rstd |gamma|.
    let mean_rel = 1e-5_f64.max(cols as f64 * F32_U);
    let mut mean_err = Vec::with_capacity(n);
    for r in 0..rows {
        let row = &v[r * cols..(r + 1) * cols];
        let mean = row.iter().sum::<f64>() / cols as f64;
        let mean_abs = row.iter().map(|e| e.abs()).sum::<f64>() / cols as f64;
        let var = row.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (j, &e) in row.iter().enumerate() {
            let term = (e - mean) * rstd * gamma[j];
            want.push(term + beta[j]);
            scale.push(term.abs() + beta[j].abs());
            mean_err.push(mean_rel * mean_abs * rstd * gamma[j].abs());
        }
    }
    let want = array(shape, want);
    let bound = |i: usize, w: f64| {
        let s = w.abs().max(scale[i]);
        match dtype {
            DType::Bf16 => BF16_U * w.abs() + (1.0 + BF16_U) * (1e-5 * s + mean_err[i]),
            _ => 1e-5 * s + mean_err[i],
        }
    };
    assert_close(
        &format!("layer_norm {shape:?} {dtype} chunk {chunk:?}"),
        got,
        &want,
        bound,
    );
}

proptest! {
    #![proptest_config(cfg(12))]
    #[test]
    fn layer_norm_rows(shape in shape(3, 490_000), dtype in float_dtype(), seed: u64) {
        layer_norm_case(&shape, dtype, None, seed);
    }

    #[test]
    fn layer_norm_streams_long_rows(rows in 1usize..=300, cols in 1usize..=700, chunk in 16usize..=300, seed: u64) {
        layer_norm_case(&[rows, cols], DType::F32, Some(chunk), seed);
    }
}

/// Found by `layer_norm_streams_long_rows`: an output near zero (`xhat * gamma` and `beta`
/// cancelling) whose error comes from the row mean's rounding.
#[test]
fn layer_norm_small_output_carries_mean_rounding() {
    layer_norm_case(&[237, 162], DType::F32, Some(16), 16789493908676888172);
}

// ----- transpose -----

proptest! {
    #![proptest_config(cfg(10))]
    #[test]
    fn transpose_is_exact(rows in 1usize..=700, cols in 1usize..=700, dtype in float_dtype(), seed: u64) {
        let t = TargetSpec::trn2();
        let p = library::transpose2d(&t, rows, cols, dtype).expect("transpose kernel");
        let x = array(&[rows, cols], Rng(seed).values(dtype, rows * cols, -100.0, 100.0));
        let got = &run(&p, &t, &[("x", dtype, &x)])["y"];
        let want = x.t().to_owned();
        prop_assert_eq!(got, &want);
    }
}

#[test]
fn library_kernels_refuse_bad_arguments() {
    let t = TargetSpec::trn2();
    assert!(library::binary(&t, AluOp::Add, &[3, 4], &[5], DType::F32).is_err());
    assert!(library::matmul(&t, 0, 4, 4, DType::F32, DType::F32).is_err());
    assert!(library::matmul(&t, 4, 4, 4, DType::I32, DType::F32).is_err());
    assert!(library::transpose2d(&t, 4, 4, DType::I32).is_err());
    assert!(library::unary(&t, ActFunc::Exp, &[2, 0], DType::F32).is_err());
}

/// `reduce_rows` (streamed in `chunk`-column pieces) and `arg_reduce_rows` against
/// [`ReduceKind::combine`]. Sums of f32 values round once per partial sum, so the bound is
/// 1e-5 of the sum of magnitudes (plus one for the log forms near zero); max/min are exact.
fn reduce_case(rows: usize, cols: usize, chunk: usize, seed: u64) {
    use tessera_ir::graph::ReduceKind;
    let t = TargetSpec::trn2();
    let x = array(
        &[rows, cols],
        Rng(seed).values(DType::F32, rows * cols, 0.5, 4.0),
    );
    let row = |r: usize| x.as_slice().expect("standard")[r * cols..(r + 1) * cols].to_vec();
    for kind in [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::L2,
        ReduceKind::LogSumExp,
    ] {
        let p = library::reduce_rows_chunked(&t, rows, cols, kind, DType::F32, chunk)
            .expect("reduce kernel");
        let got = &run(&p, &t, &[("x", DType::F32, &x)])["y"];
        for r in 0..rows {
            let xs = row(r);
            let want = kind.combine(&xs);
            let scale = xs.iter().map(|v| v.abs() * v.abs().max(1.0)).sum::<f64>() + 1.0;
            let g = got.as_slice().expect("standard")[r];
            assert!(
                (g - want).abs() <= 1e-5 * scale,
                "{kind:?} row {r} of [{rows}, {cols}] chunk {chunk}: got {g}, want {want}"
            );
        }
    }
    for kind in [
        ReduceKind::ArgMax { last: false },
        ReduceKind::ArgMin { last: true },
    ] {
        let max = matches!(kind, ReduceKind::ArgMax { .. });
        let last = matches!(kind, ReduceKind::ArgMin { last: true });
        let p = library::arg_reduce_rows(&t, rows, cols, max, last, DType::F32).expect("arg");
        let got = &run(&p, &t, &[("x", DType::F32, &x)])["y"];
        for r in 0..rows {
            assert_eq!(got.as_slice().expect("standard")[r], kind.combine(&row(r)));
        }
    }
}

proptest! {
    #![proptest_config(cfg(8))]
    #[test]
    fn reduce_rows_combine_chunks(rows in 1usize..=200, cols in 1usize..=300, chunk in 7usize..=100, seed: u64) {
        reduce_case(rows, cols, chunk, seed);
    }
}
