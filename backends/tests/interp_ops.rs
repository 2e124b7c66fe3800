//! One or more hand-derived checks per tile instruction of the reference emulator.

mod common;

use common::*;
use tessera_ir::*;

/// in [2, 3] -> tile -> out, optionally through a tile of another dtype.
#[test]
fn dma_copy_round_trip_and_bf16_rounding() {
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[2, 2]);
    let y = g.output("y", DType::F32, &[2, 2]);
    let t = g.sbuf("t", DType::Bf16, 2, 2);
    g.load(t, x, 2, 2);
    g.store(y, t, 2, 2);
    let e = 1.0 / 256.0; // 2^-8
    let xs = [1.0 + e, 1.0 + 3.0 * e, -2.0, 1.0 + 1.5 * e];
    // bf16 keeps 7 explicit mantissa bits: the ulp at 1 is 2^-7.
    // 1 + 2^-8 is the midpoint of 1 and 1 + 2^-7: ties to even gives 1.
    // 1 + 3 * 2^-8 is the midpoint of 1 + 2^-7 (odd) and 1 + 2^-6 (even): 1 + 2^-6.
    // 1 + 1.5 * 2^-8 is above the first midpoint: 1 + 2^-7.
    let want = [1.0, 1.0 + 4.0 * e, -2.0, 1.0 + 2.0 * e];
    assert_eq!(g.run_ok(vec![("x", f32s(&[2, 2], &xs))], "y"), want);
}

#[test]
fn fp8_saturates_on_store() {
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[1, 4]);
    let y = g.output("y", DType::F32, &[1, 4]);
    let y5 = g.output("y5", DType::F32, &[1, 4]);
    let a = g.sbuf("a", DType::F32, 1, 4);
    let f8 = g.sbuf("f8", DType::Fp8E4m3, 1, 4);
    let f5 = g.sbuf("f5", DType::Fp8E5m2, 1, 4);
    g.load(a, x, 1, 4);
    let copy = |dst, src| Op::TensorCopy {
        engine: Engine::Dve,
        dst: full(dst, 1, 4),
        src: full(src, 1, 4),
    };
    g.op(copy(f8, a));
    g.op(copy(f5, a));
    g.store(y, f8, 1, 4);
    g.store(y5, f5, 1, 4);
    let out = g
        .run(vec![("x", f32s(&[1, 4], &[1000.0, -1e6, 0.5, 3.0]))])
        .unwrap();
    // e4m3 saturates at +-448; 0.5 and 3 are exact.
    assert_eq!(out["y"].to_f64_vec(), [448.0, -448.0, 0.5, 3.0]);
    // e5m2 has 2 mantissa bits: 1000 lies between 896 and 1024, above their midpoint 960, so
    // it rounds to 1024; -1e6 saturates at the largest finite value, -57344.
    assert_eq!(out["y5"].to_f64_vec(), [1024.0, -57344.0, 0.5, 3.0]);
}

#[test]
fn dma_through_transposed_hbm_view() {
    // x is [3, 2]; the tile gets x^T: tile[p, f] = x[f, p].
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[3, 2]);
    let y = g.output("y", DType::F32, &[2, 3]);
    let t = g.sbuf("t", DType::F32, 2, 3);
    g.op(Op::DmaCopy {
        dst: DmaOperand::Tile(full(t, 2, 3)),
        src: hbm(x, 0, &[(1, 2), (2, 3)]),
    });
    g.store(y, t, 2, 3);
    let xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    assert_eq!(
        g.run_ok(vec![("x", f32s(&[3, 2], &xs))], "y"),
        [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]
    );
}

#[test]
fn transposed_tile_view_within_a_partition() {
    // One partition holding a 2x3 matrix; read it through a 3x2 transposed view.
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[1, 6]);
    let y = g.output("y", DType::F32, &[1, 6]);
    let a = g.sbuf("a", DType::F32, 1, 6);
    let b = g.sbuf("b", DType::F32, 1, 6);
    g.load(a, x, 1, 6);
    g.op(Op::TensorCopy {
        engine: Engine::Act,
        dst: full(b, 1, 6),
        src: tile(a, 1, &[(1, 3), (3, 2)]),
    });
    g.store(y, b, 1, 6);
    let xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    assert_eq!(
        g.run_ok(vec![("x", f32s(&[1, 6], &xs))], "y"),
        [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
}

/// stationary [K=2, M=2], moving [K=2, N=3]; dst = stationary^T . moving, twice.
#[test]
fn matmul_then_accumulate_in_psum() {
    let mut g = Prog::new();
    let s = g.input("s", DType::F32, &[2, 2]);
    let m = g.input("m", DType::F32, &[2, 3]);
    let y1 = g.output("once", DType::F32, &[2, 3]);
    let y2 = g.output("twice", DType::F32, &[2, 3]);
    let st = g.sbuf("st", DType::F32, 2, 2);
    let mv = g.sbuf("mv", DType::F32, 2, 3);
    let ps = g.psum("ps", 2, 3);
    let out = g.sbuf("out", DType::F32, 2, 3);
    g.load(st, s, 2, 2);
    g.load(mv, m, 2, 3);
    let mm = |start| Op::Matmul {
        dst: full(ps, 2, 3),
        stationary: full(st, 2, 2),
        moving: full(mv, 2, 3),
        start,
        stop: !start,
    };
    g.op(mm(true));
    g.op(Op::TensorCopy {
        engine: Engine::Dve,
        dst: full(out, 2, 3),
        src: full(ps, 2, 3),
    });
    g.store(y1, out, 2, 3);
    g.op(mm(false));
    g.op(Op::TensorCopy {
        engine: Engine::Dve,
        dst: full(out, 2, 3),
        src: full(ps, 2, 3),
    });
    g.store(y2, out, 2, 3);
    // stationary rows (k): [1, 2], [3, 4]; column m=0 is [1, 3], m=1 is [2, 4].
    // moving rows (k): [1, 0, 1], [0, 1, 2].
    // dst[0, :] = 1*[1,0,1] + 3*[0,1,2] = [1, 3, 7]; dst[1, :] = 2*[1,0,1] + 4*[0,1,2] = [2, 4, 10].
    let res = g
        .run(vec![
            ("s", f32s(&[2, 2], &[1.0, 2.0, 3.0, 4.0])),
            ("m", f32s(&[2, 3], &[1.0, 0.0, 1.0, 0.0, 1.0, 2.0])),
        ])
        .unwrap();
    assert_eq!(res["once"].to_f64_vec(), [1.0, 3.0, 7.0, 2.0, 4.0, 10.0]);
    assert_eq!(res["twice"].to_f64_vec(), [2.0, 6.0, 14.0, 4.0, 8.0, 20.0]);
}

#[test]
fn matmul_of_bf16_operands_accumulates_in_fp32() {
    // K = 3 ones times [1, 2^-9, 2^-9]: the exact sum 1 + 2^-8 is kept in the fp32 result even
    // though neither bf16 operand could hold it.
    let mut g = Prog::new();
    let s = g.input("s", DType::Bf16, &[3, 1]);
    let m = g.input("m", DType::Bf16, &[3, 1]);
    let y = g.output("y", DType::F32, &[1, 1]);
    let st = g.sbuf("st", DType::Bf16, 3, 1);
    let mv = g.sbuf("mv", DType::Bf16, 3, 1);
    let ps = g.psum("ps", 1, 1);
    g.load(st, s, 3, 1);
    g.load(mv, m, 3, 1);
    g.op(Op::Matmul {
        dst: full(ps, 1, 1),
        stationary: full(st, 3, 1),
        moving: full(mv, 3, 1),
        start: true,
        stop: true,
    });
    // DMA cannot read PSUM: evacuate to an fp32 SBUF tile first (an exact copy).
    let out = g.sbuf("out", DType::F32, 1, 1);
    g.op(Op::TensorCopy {
        engine: Engine::Dve,
        dst: full(out, 1, 1),
        src: full(ps, 1, 1),
    });
    g.store(y, out, 1, 1);
    let e = 1.0 / 512.0;
    let inputs = vec![
        (
            "s",
            HostTensor::from_f64(DType::Bf16, &[3, 1], &[1.0, 1.0, 1.0]),
        ),
        (
            "m",
            HostTensor::from_f64(DType::Bf16, &[3, 1], &[1.0, e, e]),
        ),
    ];
    assert_eq!(g.run_ok(inputs, "y"), [1.0 + 2.0 * e]);
}

#[test]
fn transpose_on_the_tensor_engine() {
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[2, 3]);
    let y = g.output("y", DType::F32, &[3, 2]);
    let a = g.sbuf("a", DType::F32, 2, 3);
    let ps = g.psum("ps", 3, 2);
    let b = g.sbuf("b", DType::Bf16, 3, 2);
    g.load(a, x, 2, 3);
    g.op(Op::Transpose {
        dst: full(ps, 3, 2),
        src: full(a, 2, 3),
    });
    g.op(Op::TensorCopy {
        engine: Engine::Dve,
        dst: full(b, 3, 2),
        src: full(ps, 3, 2),
    });
    g.store(y, b, 3, 2);
    let xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    assert_eq!(
        g.run_ok(vec![("x", f32s(&[2, 3], &xs))], "y"),
        [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
}

#[test]
fn activation_with_scale_bias_and_accum() {
    // relu(x * 2 + bias[p]) with bias = [-1, 0.5], and the per-partition sum.
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[2, 2]);
    let b = g.input("b", DType::F32, &[2, 1]);
    let y = g.output("y", DType::F32, &[2, 2]);
    let s = g.output("s", DType::F32, &[2, 1]);
    let xt = g.sbuf("xt", DType::F32, 2, 2);
    let bt = g.sbuf("bt", DType::F32, 2, 1);
    let yt = g.sbuf("yt", DType::F32, 2, 2);
    let st = g.sbuf("st", DType::F32, 2, 1);
    g.load(xt, x, 2, 2);
    g.load(bt, b, 2, 1);
    g.op(Op::Activation {
        dst: full(yt, 2, 2),
        src: full(xt, 2, 2),
        func: ActFunc::Relu,
        scale: Scalar::Imm(2.0),
        bias: Scalar::PerPartition(full(bt, 2, 1)),
        accum: Some(full(st, 2, 1)),
    });
    g.store(y, yt, 2, 2);
    g.store(s, st, 2, 1);
    // row 0: [1, -1] * 2 - 1 = [1, -3] -> [1, 0], sum 1.
    // row 1: [0.25, 3] * 2 + 0.5 = [1, 6.5] -> [1, 6.5], sum 7.5.
    let out = g
        .run(vec![
            ("x", f32s(&[2, 2], &[1.0, -1.0, 0.25, 3.0])),
            ("b", f32s(&[2, 1], &[-1.0, 0.5])),
        ])
        .unwrap();
    assert_eq!(out["y"].to_f64_vec(), [1.0, 0.0, 1.0, 6.5]);
    assert_eq!(out["s"].to_f64_vec(), [1.0, 7.5]);
}

#[test]
fn activation_rounds_to_fp32() {
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[1, 2]);
    let y = g.output("y", DType::F32, &[1, 2]);
    let t = g.sbuf("t", DType::F32, 1, 2);
    g.load(t, x, 1, 2);
    g.op(Op::Activation {
        dst: full(t, 1, 2),
        src: full(t, 1, 2),
        func: ActFunc::Exp,
        scale: Scalar::Imm(1.0),
        bias: Scalar::Imm(0.0),
        accum: None,
    });
    g.store(y, t, 1, 2);
    let got = g.run_ok(vec![("x", f32s(&[1, 2], &[1.0, 0.0]))], "y");
    assert_eq!(got, [std::f64::consts::E as f32 as f64, 1.0]);
}

#[test]
fn tensor_tensor_with_stride_zero_broadcast() {
    // lhs [2, 3] minus a per-partition column broadcast along the free dim with stride 0.
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[2, 3]);
    let c = g.input("c", DType::F32, &[2, 1]);
    let y = g.output("y", DType::F32, &[2, 3]);
    let xt = g.sbuf("xt", DType::F32, 2, 3);
    let ct = g.sbuf("ct", DType::F32, 2, 1);
    g.load(xt, x, 2, 3);
    g.load(ct, c, 2, 1);
    g.op(Op::TensorTensor {
        engine: Engine::Dve,
        op: AluOp::Sub,
        dst: full(xt, 2, 3),
        lhs: full(xt, 2, 3),
        rhs: tile(ct, 2, &[(0, 3)]),
    });
    g.store(y, xt, 2, 3);
    let out = g.run_ok(
        vec![
            ("x", f32s(&[2, 3], &[5.0, 6.0, 7.0, 1.0, 2.0, 3.0])),
            ("c", f32s(&[2, 1], &[5.0, -1.0])),
        ],
        "y",
    );
    assert_eq!(out, [0.0, 1.0, 2.0, 2.0, 3.0, 4.0]);
}

#[test]
fn float_arithmetic_rounds_each_step_and_integers_stay_exact() {
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[1, 1]);
    let n = g.input("n", DType::I32, &[1, 1]);
    let y = g.output("y", DType::F32, &[1, 1]);
    let ny = g.output("ny", DType::I32, &[1, 1]);
    let t = g.sbuf("t", DType::F32, 1, 1);
    let it = g.sbuf("it", DType::I32, 1, 1);
    g.load(t, x, 1, 1);
    g.load(it, n, 1, 1);
    let step = |op, v| ScalarStep {
        op,
        operand: Scalar::Imm(v),
        reverse: false,
    };
    // (1 + 2^-25) rounds to 1 in fp32 before the second step, so the result is 0, not 2^-25.
    g.op(Op::TensorScalar {
        engine: Engine::Dve,
        dst: full(t, 1, 1),
        src: full(t, 1, 1),
        op0: step(AluOp::Add, 2f64.powi(-25)),
        op1: Some(step(AluOp::Sub, 1.0)),
    });
    // 2^24 + 1 is not an fp32 value but integer-only arithmetic keeps it.
    g.op(Op::TensorScalar {
        engine: Engine::Dve,
        dst: full(it, 1, 1),
        src: full(it, 1, 1),
        op0: step(AluOp::Add, 1.0),
        op1: None,
    });
    g.store(y, t, 1, 1);
    g.store(ny, it, 1, 1);
    let out = g
        .run(vec![
            ("x", f32s(&[1, 1], &[1.0])),
            (
                "n",
                HostTensor::from_f64(DType::I32, &[1, 1], &[16777216.0]),
            ),
        ])
        .unwrap();
    assert_eq!(out["y"].to_f64_vec(), [0.0]);
    assert_eq!(out["ny"].to_f64_vec(), [16777217.0]);
}

#[test]
fn tensor_scalar_reverse_and_per_partition_operand() {
    // dst = (1 - x) * s[p]
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[2, 2]);
    let s = g.input("s", DType::F32, &[2, 1]);
    let y = g.output("y", DType::F32, &[2, 2]);
    let xt = g.sbuf("xt", DType::F32, 2, 2);
    let st = g.sbuf("st", DType::F32, 2, 1);
    let yt = g.sbuf("yt", DType::Bf16, 2, 2);
    g.load(xt, x, 2, 2);
    g.load(st, s, 2, 1);
    g.op(Op::TensorScalar {
        engine: Engine::Pool,
        dst: full(yt, 2, 2),
        src: full(xt, 2, 2),
        op0: ScalarStep {
            op: AluOp::Sub,
            operand: Scalar::Imm(1.0),
            reverse: true,
        },
        op1: Some(ScalarStep {
            op: AluOp::Mul,
            operand: Scalar::PerPartition(full(st, 2, 1)),
            reverse: false,
        }),
    });
    g.store(y, yt, 2, 2);
    let out = g.run_ok(
        vec![
            ("x", f32s(&[2, 2], &[0.25, 3.0, -1.0, 1.0])),
            ("s", f32s(&[2, 1], &[2.0, 10.0])),
        ],
        "y",
    );
    // row 0: (1 - [0.25, 3]) * 2 = [1.5, -4]; row 1: (1 - [-1, 1]) * 10 = [20, 0].
    assert_eq!(out, [1.5, -4.0, 20.0, 0.0]);
}

#[test]
fn tensor_reduce_over_trailing_axes() {
    // src per partition is 2x3; reduce the last axis (sum) and both axes (max).
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[2, 6]);
    let ys = g.output("sum", DType::F32, &[2, 2]);
    let ym = g.output("max", DType::F32, &[2, 1]);
    let xt = g.sbuf("xt", DType::F32, 2, 6);
    let st = g.sbuf("st", DType::F32, 2, 2);
    let mt = g.sbuf("mt", DType::F32, 2, 1);
    g.load(xt, x, 2, 6);
    let src = tile(xt, 2, &[(3, 2), (1, 3)]);
    g.op(Op::TensorReduce {
        engine: Engine::Dve,
        op: ReduceOp::Sum,
        dst: full(st, 2, 2),
        src: src.clone(),
        axes: 1,
    });
    g.op(Op::TensorReduce {
        engine: Engine::Dve,
        op: ReduceOp::Max,
        dst: full(mt, 2, 1),
        src,
        axes: 2,
    });
    g.store(ys, st, 2, 2);
    g.store(ym, mt, 2, 1);
    let xs = [
        1.0,
        2.0,
        3.0,
        4.0,
        5.0,
        6.0,
        -1.0,
        f64::NAN,
        0.0,
        -7.0,
        0.5,
        2.0,
    ];
    let out = g.run(vec![("x", f32s(&[2, 6], &xs))]).unwrap();
    let sum = out["sum"].to_f64_vec();
    // row 0: [1, 2, 3] -> 6, [4, 5, 6] -> 15; row 1: [-1, NaN, 0] -> NaN, [-7, 0.5, 2] -> -4.5.
    assert_eq!(sum[..2], [6.0, 15.0]);
    assert!(sum[2].is_nan());
    assert_eq!(sum[3], -4.5);
    let max = out["max"].to_f64_vec();
    assert_eq!(max[0], 6.0);
    assert!(max[1].is_nan(), "NaN propagates through max");
}

#[test]
fn memset_and_iota() {
    let mut g = Prog::new();
    let y = g.output("y", DType::I32, &[34, 4]);
    let z = g.output("z", DType::Bf16, &[1, 2]);
    let it = g.sbuf("it", DType::I32, 34, 4);
    let zt = g.sbuf("zt", DType::Bf16, 1, 2);
    // iota over partitions 32..34 of the buffer (a start the partition rules allow): p counts
    // from the operand's first partition.
    g.op(Op::Memset {
        engine: Engine::Pool,
        dst: full(it, 32, 4),
        value: -2.9,
    });
    let mut lower = full(it, 2, 4);
    lower.start_partition = 32;
    g.op(Op::Iota {
        engine: Engine::Pool,
        dst: lower,
        expr: AffineExpr {
            base: 1,
            partition: 10,
            free: vec![1],
        },
    });
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: full(zt, 1, 2),
        value: 1.0 + 1.0 / 256.0,
    });
    g.store(y, it, 34, 4);
    g.store(z, zt, 1, 2);
    let out = g.run(vec![]).unwrap();
    // memset -2.9 into i32 truncates toward zero; iota row p (relative) is 10p + i + 1.
    let y = out["y"].to_f64_vec();
    assert!(y[..32 * 4].iter().all(|&v| v == -2.0));
    assert_eq!(y[32 * 4..], [1.0, 2.0, 3.0, 4.0, 11.0, 12.0, 13.0, 14.0]);
    assert_eq!(out["z"].to_f64_vec(), [1.0, 1.0]);
}

#[test]
fn affine_select_causal_mask() {
    // Keep x[p, i] where p - i >= 0, else -inf: the lower triangle of a 4x4 score tile.
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[4, 4]);
    let y = g.output("y", DType::F32, &[4, 4]);
    let t = g.sbuf("t", DType::F32, 4, 4);
    g.load(t, x, 4, 4);
    g.op(Op::AffineSelect {
        engine: Engine::Pool,
        dst: full(t, 4, 4),
        src: full(t, 4, 4),
        expr: AffineExpr {
            base: 0,
            partition: 1,
            free: vec![-1],
        },
        cmp: CmpOp::Ge,
        fill: f64::NEG_INFINITY,
    });
    g.store(y, t, 4, 4);
    let xs: Vec<f64> = (0..16).map(f64::from).collect();
    let out = g.run_ok(vec![("x", f32s(&[4, 4], &xs))], "y");
    let n = f64::NEG_INFINITY;
    let want = [
        0.0, n, n, n, 4.0, 5.0, n, n, 8.0, 9.0, 10.0, n, 12.0, 13.0, 14.0, 15.0,
    ];
    assert_eq!(out, want);
}

#[test]
fn select_by_predicate() {
    let mut g = Prog::new();
    let p = g.input("p", DType::U8, &[1, 4]);
    let a = g.input("a", DType::F32, &[1, 4]);
    let b = g.input("b", DType::F32, &[1, 4]);
    let y = g.output("y", DType::F32, &[1, 4]);
    let (pt, at, bt) = (
        g.sbuf("pt", DType::U8, 1, 4),
        g.sbuf("at", DType::F32, 1, 4),
        g.sbuf("bt", DType::F32, 1, 4),
    );
    g.load(pt, p, 1, 4);
    g.load(at, a, 1, 4);
    g.load(bt, b, 1, 4);
    g.op(Op::Select {
        engine: Engine::Dve,
        dst: full(at, 1, 4),
        pred: full(pt, 1, 4),
        on_true: full(at, 1, 4),
        on_false: full(bt, 1, 4),
    });
    g.store(y, at, 1, 4);
    let out = g.run_ok(
        vec![
            (
                "p",
                HostTensor::from_f64(DType::U8, &[1, 4], &[1.0, 0.0, 7.0, 0.0]),
            ),
            ("a", f32s(&[1, 4], &[1.0, 2.0, 3.0, 4.0])),
            ("b", f32s(&[1, 4], &[-1.0, -2.0, -3.0, -4.0])),
        ],
        "y",
    );
    assert_eq!(out, [1.0, -2.0, 3.0, -4.0]);
}

#[test]
fn tensor_tensor_comparisons_and_integer_mod() {
    let mut g = Prog::new();
    let a = g.input("a", DType::I32, &[1, 4]);
    let b = g.input("b", DType::I32, &[1, 4]);
    let m = g.output("m", DType::I32, &[1, 4]);
    let l = g.output("l", DType::U8, &[1, 4]);
    let (at, bt) = (
        g.sbuf("at", DType::I32, 1, 4),
        g.sbuf("bt", DType::I32, 1, 4),
    );
    let (mt, lt) = (
        g.sbuf("mt", DType::I32, 1, 4),
        g.sbuf("lt", DType::U8, 1, 4),
    );
    g.load(at, a, 1, 4);
    g.load(bt, b, 1, 4);
    let tt = |op, dst| Op::TensorTensor {
        engine: Engine::Dve,
        op,
        dst,
        lhs: full(at, 1, 4),
        rhs: full(bt, 1, 4),
    };
    g.op(tt(AluOp::Mod, full(mt, 1, 4)));
    g.op(tt(AluOp::Lt, full(lt, 1, 4)));
    g.store(m, mt, 1, 4);
    g.store(l, lt, 1, 4);
    let i32s = |v: &[f64]| HostTensor::from_f64(DType::I32, &[1, 4], v);
    let out = g
        .run(vec![
            ("a", i32s(&[-7.0, 7.0, 6.0, 5.0])),
            ("b", i32s(&[3.0, -3.0, 3.0, 9.0])),
        ])
        .unwrap();
    assert_eq!(out["m"].to_f64_vec(), [2.0, -2.0, 0.0, 5.0]);
    assert_eq!(out["l"].to_f64_vec(), [1.0, 0.0, 0.0, 1.0]);
}
