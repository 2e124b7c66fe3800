//! The `conv` and `pool` kernels against the graph IR's reference evaluator
//! (`tessera_ir::graph::conv`), run on the reference emulator.
//!
//! Tolerances: the kernels compute in f32 (PSUM accumulates fp32 products; pool sums round
//! each step to fp32), the reference in f64. Each f32 rounding is at most 2^-24 relative to the
//! running sum, which is bounded by the sum of the absolute terms, so an element may be off by
//! `n 2^-24 sum |terms|` for `n` roundings; we allow `1e-5 sum |terms|` (n up to ~170, more than
//! the taps times channel chunks here), with the sum of absolute terms computed by evaluating
//! the same operator on `|x|` and `|w|`.

use ndarray::{ArrayD, IxDyn};
use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_ir::graph::conv::{ConvSpec, PoolKind, PoolSpec};
use tessera_ir::{DType, HostTensor, TargetSpec, TileProgram};
use tessera_kernels::library::{self, ConvKernelSpec, PoolKernelSpec, PoolOp};

/// Deterministic values in [-1, 1) rounded to f32.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut z = seed;
    (0..n)
        .map(|_| {
            z = z
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            DType::F32.round(((z >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0)
        })
        .collect()
}

fn arr(shape: &[usize], v: Vec<f64>) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

fn run(p: &TileProgram, inputs: &[(&str, DType, &ArrayD<f64>)]) -> ArrayD<f64> {
    let t = TargetSpec::trn2();
    let inputs: BTreeMap<String, HostTensor> = inputs
        .iter()
        .map(|(n, d, a)| {
            // The kernels see N-D tensors with leading size-1 spatial axes: same elements.
            let v: Vec<f64> = a.iter().copied().collect();
            let shape = &p.tensors.iter().find(|t| t.name == *n).unwrap().shape;
            (n.to_string(), HostTensor::from_f64(*d, shape, &v))
        })
        .collect();
    let out = interp::run(p, &t, &inputs).unwrap_or_else(|e| panic!("{}: {e}", p.name));
    let y = out["y"].to_array_f64();
    let v: Vec<f64> = y.iter().copied().collect();
    ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).unwrap()
}

/// Compares in row-major element order (shapes differ only by size-1 axes).
fn assert_close(got: &ArrayD<f64>, want: &ArrayD<f64>, scale: &ArrayD<f64>) {
    assert_eq!(got.len(), want.len());
    for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * s + 1e-30,
            "element {i}: got {g}, want {w} (scale {s})"
        );
    }
}

/// `w[C_out, C_in, taps]` as the kernel's `[1, C_in, taps, C_out]`.
fn arrange(w: &[f64], c_out: usize, c_in: usize, taps: usize, flip: bool) -> Vec<f64> {
    let mut out = vec![0.0; w.len()];
    for co in 0..c_out {
        for ci in 0..c_in {
            for t in 0..taps {
                let src = if flip {
                    (ci * c_out + co) * taps + taps - 1 - t
                } else {
                    (co * c_in + ci) * taps + t
                };
                out[(ci * taps + t) * c_out + co] = w[src];
            }
        }
    }
    out
}

#[test]
fn conv2d_with_two_channel_chunks_stride_pads_and_bias() {
    for compute in [DType::F32, DType::Bf16, DType::F16] {
        conv2d_case(compute);
    }
}

/// With bf16 (or f16) compute the loading DMAs round `x` and `w` to that type; the products
/// are exact in f32 (at most 22 significant bits), so the reference sees the rounded inputs
/// and the f32 accumulation bound still holds.
fn conv2d_case(compute: DType) {
    // 130 input channels: two C_in chunks accumulate in one PSUM bank.
    let (n, c, h, w, m) = (2, 130, 6, 7, 5);
    let x = arr(&[n, c, h, w], values(n * c * h * w, 1));
    let wt = values(m * c * 9, 2);
    let (xr, wr) = (
        x.mapv(|v| compute.round(v)),
        wt.iter().map(|&v| compute.round(v)).collect::<Vec<_>>(),
    );
    let b = arr(&[m], values(m, 3));
    let spec = ConvSpec {
        transpose: false,
        strides: vec![2, 1],
        dilations: vec![1, 2],
        pads_begin: vec![1, 2],
        pads_end: vec![1, 0],
        group: 1,
    };
    let w4 = arr(&[m, c, 3, 3], wr);
    let want = spec.eval(&[&xr, &w4, &b]).unwrap();
    let abs = |a: &ArrayD<f64>| a.mapv(f64::abs);
    let scale = spec.eval(&[&abs(&xr), &abs(&w4), &abs(&b)]).unwrap();
    let ks = ConvKernelSpec {
        batch: n,
        groups: 1,
        c_in: c,
        c_out: m,
        in_sp: [1, h, w],
        out_sp: [1, want.shape()[2], want.shape()[3]],
        kernel: [1, 3, 3],
        strides: [1, 2, 1],
        dilations: [1, 1, 2],
        pads_begin: [0, 1, 2],
        in_dilation: [1, 1, 1],
        bias: true,
        dtype: DType::F32,
        compute_dtype: compute,
        act: None,
        residual: false,
        post_act: None,
    };
    let p = library::conv(&TargetSpec::trn2(), &ks).unwrap();
    let wa = arr(&[1, c, 9, m], arrange(&wt, m, c, 9, false));
    let got = run(
        &p,
        &[
            ("x", DType::F32, &x),
            ("w", DType::F32, &wa),
            ("b", DType::F32, &b),
        ],
    );
    assert_close(&got, &want, &scale);
}

#[test]
fn dilated_input_with_flipped_weights_is_conv_transpose() {
    // ConvTranspose 3-D, stride (1, 2, 3), pads (0, 1, 0)/(0, -1, 1): the kernel runs it as a
    // stride-1 convolution of the zero-inserted input, begin pads (k - 1) d - pads_begin.
    let (c, m) = (3, 4);
    let (sp, k) = ([2, 3, 4], [2, 3, 2]);
    let taps: usize = k.iter().product();
    let x = arr(&[1, c, sp[0], sp[1], sp[2]], values(c * 24, 4));
    let wt = values(c * m * taps, 5);
    let spec = ConvSpec {
        transpose: true,
        strides: vec![1, 2, 3],
        dilations: vec![1, 1, 1],
        pads_begin: vec![0, 1, 0],
        pads_end: vec![0, -1, 1],
        group: 1,
    };
    let w5 = arr(&[c, m, k[0], k[1], k[2]], wt.clone());
    let want = spec.eval(&[&x, &w5]).unwrap();
    let abs = |a: &ArrayD<f64>| a.mapv(f64::abs);
    let scale = spec.eval(&[&abs(&x), &abs(&w5)]).unwrap();
    let o = &want.shape()[2..];
    let ks = ConvKernelSpec {
        batch: 1,
        groups: 1,
        c_in: c,
        c_out: m,
        in_sp: sp,
        out_sp: [o[0], o[1], o[2]],
        kernel: k,
        strides: [1, 1, 1],
        dilations: [1, 1, 1],
        pads_begin: [1, 1, 1],
        in_dilation: [1, 2, 3],
        bias: false,
        dtype: DType::F32,
        compute_dtype: DType::F32,
        act: None,
        residual: false,
        post_act: None,
    };
    let p = library::conv(&TargetSpec::trn2(), &ks).unwrap();
    let wa = arr(&[1, c, taps, m], arrange(&wt, m, c, taps, true));
    let got = run(&p, &[("x", DType::F32, &x), ("w", DType::F32, &wa)]);
    assert_close(&got, &want, &scale);
}

fn pool_case(kind: PoolKind, dtype: DType, shape: &[usize], kernel: &[usize], pads: &[usize]) {
    let nsp = shape.len() - 2;
    let spec = PoolSpec {
        kind,
        kernel: kernel.to_vec(),
        strides: vec![2; nsp],
        dilations: vec![1; nsp],
        pads_begin: pads.to_vec(),
        pads_end: vec![1; nsp],
        ceil_mode: true,
    };
    let elems: usize = shape.iter().product();
    let v: Vec<f64> = values(elems, 7)
        .iter()
        .map(|&v| {
            if dtype.is_float() {
                v
            } else {
                (v * 100.0 + 100.0).floor()
            }
        })
        .collect();
    let x = arr(shape, v);
    let want = spec.eval(&x).unwrap();
    let scale = match kind {
        PoolKind::Max => want.mapv(|_| 0.0),
        _ => spec.eval(&x.mapv(f64::abs)).unwrap().mapv(|v| 4.0 * v),
    };
    let three = |v: &[usize], f: usize| {
        let mut o = [f; 3];
        o[3 - v.len()..].copy_from_slice(v);
        o
    };
    let ks = PoolKernelSpec {
        rows: shape[0] * shape[1],
        in_sp: three(&shape[2..], 1),
        out_sp: three(&want.shape()[2..], 1),
        kernel: three(kernel, 1),
        strides: three(&spec.strides, 1),
        dilations: [1; 3],
        pads_begin: three(pads, 0),
        op: match kind {
            PoolKind::Max => PoolOp::Max,
            PoolKind::Avg { .. } => PoolOp::Sum,
            PoolKind::Lp { p } => PoolOp::LpSum { p },
        },
        scaled: matches!(kind, PoolKind::Avg { .. }),
        dtype,
    };
    let p = library::pool(&TargetSpec::trn2(), &ks).unwrap();
    let inv = arr(
        &[want.len() / ks.rows],
        spec.avg_divisors(&shape[2..], &want.shape()[2..])
            .iter()
            .map(|c| 1.0 / c)
            .collect(),
    );
    let mut inputs = vec![("x", dtype, &x)];
    if ks.scaled {
        inputs.push(("scale", DType::F32, &inv));
    }
    let got = run(&p, &inputs);
    assert_close(&got, &want, &scale);
}

#[test]
fn pools_match_the_reference() {
    // 130 rows: two partition blocks; ceil mode and padding on both sides.
    pool_case(PoolKind::Max, DType::F32, &[2, 65, 7, 6], &[3, 2], &[1, 0]);
    pool_case(
        PoolKind::Avg {
            count_include_pad: false,
        },
        DType::F32,
        &[1, 3, 7, 6],
        &[3, 3],
        &[1, 2],
    );
    pool_case(
        PoolKind::Avg {
            count_include_pad: true,
        },
        DType::F32,
        &[1, 2, 5, 4, 6],
        &[2, 3, 3],
        &[1, 1, 0],
    );
    pool_case(PoolKind::Lp { p: 3.0 }, DType::F32, &[1, 4, 9], &[3], &[1]);
    pool_case(
        PoolKind::Lp { p: 2.0 },
        DType::F32,
        &[1, 4, 5, 5],
        &[2, 2],
        &[0, 1],
    );
    // Integer max is exact; the padding holds the dtype's lowest value.
    pool_case(PoolKind::Max, DType::U8, &[1, 2, 5, 5], &[3, 3], &[1, 1]);
}

#[test]
fn few_channels_fold_kernel_rows_into_partitions() {
    // 3 channels, 5x3 kernel: the kernel-row-folded path (partition (kh, c)), with padding on
    // every side, stride 2 and row dilation; 130 outputs take two C_out chunks.
    let (n, c, h, w, m) = (1, 3, 9, 10, 130);
    let x = arr(&[n, c, h, w], values(n * c * h * w, 8));
    let wt = values(m * c * 15, 9);
    let b = arr(&[m], values(m, 10));
    let spec = ConvSpec {
        transpose: false,
        strides: vec![2, 2],
        dilations: vec![2, 1],
        pads_begin: vec![3, 1],
        pads_end: vec![2, 2],
        group: 1,
    };
    let w4 = arr(&[m, c, 5, 3], wt.clone());
    let want = spec.eval(&[&x, &w4, &b]).unwrap();
    let abs = |a: &ArrayD<f64>| a.mapv(f64::abs);
    let scale = spec.eval(&[&abs(&x), &abs(&w4), &abs(&b)]).unwrap();
    let ks = ConvKernelSpec {
        batch: n,
        groups: 1,
        c_in: c,
        c_out: m,
        in_sp: [1, h, w],
        out_sp: [1, want.shape()[2], want.shape()[3]],
        kernel: [1, 5, 3],
        strides: [1, 2, 2],
        dilations: [1, 2, 1],
        pads_begin: [0, 3, 1],
        in_dilation: [1, 1, 1],
        bias: true,
        dtype: DType::F32,
        compute_dtype: DType::F32,
        act: None,
        residual: false,
        post_act: None,
    };
    let p = library::conv(&TargetSpec::trn2(), &ks).unwrap();
    // The folded path issues one matmul per kernel column (3) per C_out chunk (2).
    let matmuls = p
        .insts
        .iter()
        .filter(|i| matches!(i.op, tessera_ir::Op::Matmul { .. }))
        .count();
    assert_eq!(matmuls, 3 * 2);
    let wa = arr(&[1, c, 15, m], arrange(&wt, m, c, 15, false));
    let got = run(
        &p,
        &[
            ("x", DType::F32, &x),
            ("w", DType::F32, &wa),
            ("b", DType::F32, &b),
        ],
    );
    assert_close(&got, &want, &scale);
}
