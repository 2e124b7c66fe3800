//! Lowering of fused operators (the optimiser's plans) against the reference evaluator, which
//! evaluates a fused operator through its expansion into primitive ones: each graph is lowered,
//! run on the checked emulator and compared, as in `lower.rs`.

use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_compiler::lower::lower;
use tessera_ir::graph::{
    Activation, AttentionSpec, ConvEpilogue, ConvSpec, FusedOp, Graph, GraphOp, MatMulEpilogue,
    NormKind, NormSpec, TensorType, ValueId, evaluate, verify_graph,
};
use tessera_ir::{DType, HostTensor, TargetSpec};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

fn f32t(shape: &[usize], seed: u64) -> HostTensor {
    let n = shape.iter().product();
    HostTensor::from_f64(DType::F32, shape, &values(n, seed))
}

/// Lowers `g`, runs it on the emulator and compares every output with the evaluator. Error
/// bound per element: 1e-5 relative plus 1e-5 of the output's largest magnitude (sums such as
/// matmul and softmax accumulate rounding relative to their terms, not their result).
fn check(g: &Graph) {
    verify_graph(g).unwrap();
    let inputs: BTreeMap<String, HostTensor> = g
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let v = g.value(id);
            (v.name.clone(), f32t(&v.ty.shape, i as u64 + 1))
        })
        .collect();
    let want = evaluate(g, &inputs).unwrap();
    let target = TargetSpec::trn2();
    let lowered = lower(g, &target).unwrap_or_else(|e| panic!("{}: {e}", g.name));
    let mut bound = BTreeMap::new();
    for (name, t) in &lowered.inputs {
        bound.insert(
            lowered.program.tensor(*t).name.clone(),
            inputs[name].clone(),
        );
    }
    for (t, data) in &lowered.weights {
        bound.insert(lowered.program.tensor(*t).name.clone(), data.clone());
    }
    let got = interp::run(&lowered.program, &target, &bound)
        .unwrap_or_else(|e| panic!("{}: {e}", g.name));
    for (name, t) in &lowered.outputs {
        let got = got[&lowered.program.tensor(*t).name].to_f64_vec();
        let want = want[name].to_f64_vec();
        assert_eq!(got.len(), want.len(), "{}: output {name}", g.name);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (g_, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g_ - w).abs() <= 1e-5 * w.abs() + 1e-5 * scale,
                "{}: output {name}[{i}] = {g_}, evaluator says {w}",
                g.name
            );
        }
    }
}

fn input(g: &mut Graph, name: &str, shape: &[usize]) -> ValueId {
    g.add_input(name, TensorType::new(DType::F32, shape))
}

fn node(g: &mut Graph, name: &str, op: GraphOp, ins: &[ValueId]) -> ValueId {
    g.add_node(name, op, ins).unwrap()[0]
}

fn fused_matmul(name: &str, a: &[usize], b: &[usize], spec: MatMulEpilogue) -> Graph {
    let mut g = Graph::new(name);
    let x = input(&mut g, "a", a);
    let w = g.add_constant("b", f32t(b, 7));
    let mut ins = vec![x, w];
    let (ra, rb) = (a.len(), b.len());
    let n = if spec.trans_b { b[rb - 2] } else { b[rb - 1] };
    let m = if spec.trans_a { a[ra - 1] } else { a[ra - 2] };
    if spec.bias {
        ins.push(g.add_constant("bias", f32t(&[n], 8)));
    }
    if spec.residual {
        let batch = if a.len() >= b.len() {
            &a[..ra - 2]
        } else {
            &b[..rb - 2]
        };
        let mut shape = batch.to_vec();
        shape.extend([m, n]);
        ins.push(input(&mut g, "residual", &shape));
    }
    let y = node(&mut g, "fused", GraphOp::Fused(FusedOp::MatMul(spec)), &ins);
    g.outputs.push(y);
    g
}

#[test]
fn matmul_epilogues() {
    let acts = [
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
    ];
    for (i, act) in acts.into_iter().enumerate() {
        let spec = MatMulEpilogue {
            bias: true,
            act: Some(act),
            ..MatMulEpilogue::default()
        };
        check(&fused_matmul(
            &format!("bias_{}", act.name()),
            &[40, 70],
            &[70, 130 + i],
            spec,
        ));
    }
    // Every step at once, sizes off the 128/512 tiling, through the resident-stripe path.
    let all = MatMulEpilogue {
        alpha: 0.5,
        bias: true,
        act: Some(Activation::Gelu),
        residual: true,
        ..MatMulEpilogue::default()
    };
    check(&fused_matmul("all", &[200, 300], &[300, 600], all.clone()));
    // Scale alone, residual alone, scale with an activation (folded into it).
    check(&fused_matmul(
        "alpha",
        &[33, 20],
        &[20, 17],
        MatMulEpilogue {
            alpha: -2.0,
            ..MatMulEpilogue::default()
        },
    ));
    check(&fused_matmul(
        "residual",
        &[33, 20],
        &[20, 17],
        MatMulEpilogue {
            residual: true,
            ..MatMulEpilogue::default()
        },
    ));
    check(&fused_matmul(
        "alpha_act",
        &[33, 20],
        &[20, 17],
        MatMulEpilogue {
            alpha: 3.0,
            act: Some(Activation::Tanh),
            ..MatMulEpilogue::default()
        },
    ));
    // Operands read transposed.
    check(&fused_matmul(
        "transposed",
        &[70, 40],
        &[130, 70],
        MatMulEpilogue {
            trans_a: true,
            trans_b: true,
            bias: true,
            residual: true,
            ..MatMulEpilogue::default()
        },
    ));
    // Batched, with the weights broadcast over the batch.
    check(&fused_matmul("batched", &[2, 3, 40, 70], &[70, 130], all));
}

/// The same fused matmuls with the roles swapped (`C^T` computed, stored transposed): every
/// epilogue step, both operand layouts, small and large M, batches, the streaming path.
#[test]
fn matmul_with_roles_swapped() {
    let swapped = |spec: MatMulEpilogue| MatMulEpilogue {
        swap_roles: true,
        ..spec
    };
    let all = swapped(MatMulEpilogue {
        alpha: 0.5,
        bias: true,
        act: Some(Activation::Gelu),
        residual: true,
        ..MatMulEpilogue::default()
    });
    // A batch-1 classifier head: M = 1, N across several 128-partition tiles.
    check(&fused_matmul("head", &[1, 300], &[300, 1000], all.clone()));
    check(&fused_matmul(
        "plain",
        &[5, 70],
        &[70, 260],
        swapped(MatMulEpilogue::default()),
    ));
    // N over 1024 (two stripes of the swapped schedule), M over 512 (two column blocks).
    check(&fused_matmul(
        "large",
        &[600, 130],
        &[130, 1100],
        all.clone(),
    ));
    check(&fused_matmul(
        "bias_relu",
        &[3, 64],
        &[64, 129],
        swapped(MatMulEpilogue {
            bias: true,
            act: Some(Activation::Relu),
            ..MatMulEpilogue::default()
        }),
    ));
    for (ta, tb) in [(true, false), (false, true), (true, true)] {
        let spec = MatMulEpilogue {
            trans_a: ta,
            trans_b: tb,
            ..all.clone()
        };
        let a = if ta { [70, 9] } else { [9, 70] };
        let b = if tb { [300, 70] } else { [70, 300] };
        check(&fused_matmul(&format!("t{ta}{tb}"), &a, &b, spec));
    }
    check(&fused_matmul(
        "batched",
        &[2, 3, 7, 70],
        &[70, 130],
        all.clone(),
    ));
    // K so long that a stationary stripe does not fit: the streaming schedule.
    check(&fused_matmul("streaming", &[4, 20000], &[20000, 140], all));
}

/// `act(conv(x, w) + b) + residual` on an `[n, c_in, h, w]` input.
#[allow(clippy::too_many_arguments)] // the convolution's shape and the epilogue
fn fused_conv(
    name: &str,
    x: [usize; 4],
    c_out: usize,
    k: usize,
    stride: usize,
    pad: i64,
    group: usize,
    epi: (bool, Option<Activation>, bool, Option<Activation>),
) -> Graph {
    let (bias, act, residual, post_act) = epi;
    let conv = ConvSpec {
        transpose: false,
        strides: vec![stride; 2],
        dilations: vec![1; 2],
        pads_begin: vec![pad; 2],
        pads_end: vec![pad; 2],
        group,
    };
    let mut g = Graph::new(name);
    let xv = input(&mut g, "x", &x);
    let w = g.add_constant("w", f32t(&[c_out, x[1] / group, k, k], 21));
    let mut ins = vec![xv, w];
    if bias {
        ins.push(g.add_constant("b", f32t(&[c_out], 22)));
    }
    if residual {
        let oh = (x[2] + 2 * pad as usize - k) / stride + 1;
        let ow = (x[3] + 2 * pad as usize - k) / stride + 1;
        ins.push(input(&mut g, "residual", &[x[0], c_out, oh, ow]));
    }
    let spec = ConvEpilogue {
        conv,
        bias,
        act,
        residual,
        post_act,
    };
    let y = node(&mut g, "fused", GraphOp::Fused(FusedOp::Conv(spec)), &ins);
    g.outputs.push(y);
    g
}

#[test]
fn conv_epilogues() {
    let relu = Some(Activation::Relu);
    // ResNet's basic block: 3x3, bias, ReLU, residual.
    check(&fused_conv(
        "block",
        [1, 64, 14, 14],
        64,
        3,
        1,
        1,
        1,
        (true, relu, true, None),
    ));
    // A bottleneck's 1x1 projection, and the 7x7 stride-2 stem (kernel rows folded).
    check(&fused_conv(
        "proj",
        [1, 256, 7, 7],
        64,
        1,
        1,
        0,
        1,
        (true, relu, false, None),
    ));
    check(&fused_conv(
        "stem",
        [1, 3, 32, 32],
        64,
        7,
        2,
        3,
        1,
        (true, relu, false, None),
    ));
    // Depthwise, no bias; a residual without an activation; batch 2 over 160 output channels.
    check(&fused_conv(
        "depthwise",
        [1, 32, 9, 9],
        32,
        3,
        1,
        1,
        32,
        (false, relu, false, None),
    ));
    check(&fused_conv(
        "residual_only",
        [2, 16, 8, 8],
        160,
        3,
        1,
        1,
        1,
        (true, None, true, None),
    ));
    // ResNet's bottleneck ends: relu(conv + bias + residual), and another activation after a
    // residual with the output channels in two partition chunks.
    check(&fused_conv(
        "residual_relu",
        [1, 64, 8, 8],
        256,
        1,
        1,
        0,
        1,
        (true, None, true, relu),
    ));
    check(&fused_conv(
        "relu_residual_sigmoid",
        [2, 16, 8, 8],
        160,
        3,
        1,
        1,
        1,
        (true, relu, true, Some(Activation::Sigmoid)),
    ));
    for act in [
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
    ] {
        check(&fused_conv(
            act.name(),
            [1, 8, 6, 6],
            24,
            3,
            1,
            1,
            1,
            (true, Some(act), false, None),
        ));
    }
}

/// Attention over q `[.., S, D]`, k `[.., T, D]`, v `[.., T, Dv]`, with an optional additive
/// mask of the given shape.
fn fused_attention(
    name: &str,
    lead: &[usize],
    s: usize,
    t: usize,
    d: usize,
    dv: usize,
    mask: Option<&[usize]>,
) -> Graph {
    let mut g = Graph::new(name);
    let shape = |a: usize, b: usize| {
        let mut v = lead.to_vec();
        v.extend([a, b]);
        v
    };
    let q = input(&mut g, "q", &shape(s, d));
    let k = input(&mut g, "k", &shape(t, d));
    let v = input(&mut g, "v", &shape(t, dv));
    let mut ins = vec![q, k, v];
    if let Some(m) = mask {
        ins.push(g.add_constant("mask", f32t(m, 31)));
    }
    let spec = AttentionSpec {
        scale: 1.0 / (d as f64).sqrt(),
        mask: mask.is_some(),
        causal: false,
    };
    let y = node(
        &mut g,
        "attention",
        GraphOp::Fused(FusedOp::Attention(spec)),
        &ins,
    );
    g.outputs.push(y);
    g
}

#[test]
fn flash_attention() {
    // BERT-like heads with a padding mask shared by the heads.
    check(&fused_attention(
        "bert",
        &[2, 3],
        128,
        128,
        64,
        64,
        Some(&[2, 1, 1, 128]),
    ));
    // Sizes off every block size: 2 query blocks, key blocks of 512 and a remainder, D > 128
    // in two chunks, a full [S, T] mask.
    check(&fused_attention(
        "odd",
        &[1],
        200,
        600,
        160,
        40,
        Some(&[200, 600]),
    ));
    // No mask, one row, one key.
    check(&fused_attention("tiny", &[], 1, 1, 8, 8, None));
    check(&fused_attention("long", &[1], 512, 1024, 64, 64, None));
}

#[test]
fn layer_and_rms_norms() {
    for (kind, scale, shift) in [
        (NormKind::Layer, true, true),
        (NormKind::Layer, false, false),
        (NormKind::Rms, true, false),
        (NormKind::Rms, false, false),
    ] {
        for shape in [vec![3usize, 50], vec![2, 130, 768]] {
            let c = *shape.last().unwrap();
            let mut g = Graph::new(format!("{kind:?}_{scale}_{shift}"));
            let x = input(&mut g, "x", &shape);
            let mut ins = vec![x];
            if scale {
                ins.push(g.add_constant("gamma", f32t(&[c], 41)));
            }
            if shift {
                ins.push(g.add_constant("beta", f32t(&[c], 42)));
            }
            let spec = NormSpec {
                kind,
                eps: 1e-5,
                scale,
                shift,
            };
            let y = node(&mut g, "norm", GraphOp::Fused(FusedOp::Norm(spec)), &ins);
            g.outputs.push(y);
            check(&g);
        }
    }
}

#[test]
fn transposes_on_the_tensor_engine() {
    for (shape, perm) in [
        (vec![300usize, 200], vec![1usize, 0]),
        (vec![3, 130, 70], vec![0, 2, 1]),
        (vec![2, 5, 40, 3], vec![2, 3, 0, 1]),
    ] {
        let mut g = Graph::new("pe_transpose");
        let x = input(&mut g, "x", &shape);
        let y = node(
            &mut g,
            "t",
            GraphOp::Fused(FusedOp::PeTranspose { perm }),
            &[x],
        );
        g.outputs.push(y);
        check(&g);
    }
}
