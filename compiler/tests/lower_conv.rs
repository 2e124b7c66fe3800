//! Lowering of convolutions and pools against the graph's reference evaluator, for what the
//! ONNX node tests do not reach: grouped and depthwise convolutions (packed block-diagonally by
//! the lowering), a grouped ConvTranspose with a negative end pad, and an average pool whose
//! divisors vary with the padding.

use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_compiler::lower::lower;
use tessera_ir::graph::{
    ConvSpec, Graph, GraphOp, PoolKind, PoolSpec, TensorType, evaluate, verify_graph,
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

/// One node on input `x` (and constant `w`, `b`), lowered, run on the emulator and compared
/// with the evaluator: 1e-5 relative plus 1e-5 of the largest output (the sums accumulate f32
/// rounding relative to their terms).
fn check(name: &str, op: GraphOp, x_shape: &[usize], consts: &[&[usize]]) {
    let mut g = Graph::new(name);
    let x = g.add_input("x", TensorType::new(DType::F32, x_shape));
    let mut ins = vec![x];
    for (i, shape) in consts.iter().enumerate() {
        ins.push(g.add_constant(format!("c{i}"), f32t(shape, 10 + i as u64)));
    }
    let y = g.add_node(name, op, &ins).unwrap()[0];
    g.outputs.push(y);
    verify_graph(&g).unwrap();
    let inputs = BTreeMap::from([("x".to_string(), f32t(x_shape, 1))]);
    let want = evaluate(&g, &inputs).unwrap();
    let target = TargetSpec::trn2();
    let lowered = lower(&g, &target).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut bound = BTreeMap::new();
    for (n, t) in &lowered.inputs {
        bound.insert(lowered.program.tensor(*t).name.clone(), inputs[n].clone());
    }
    for (t, data) in &lowered.weights {
        bound.insert(lowered.program.tensor(*t).name.clone(), data.clone());
    }
    let got =
        interp::run(&lowered.program, &target, &bound).unwrap_or_else(|e| panic!("{name}: {e}"));
    for (n, t) in &lowered.outputs {
        let got = got[&lowered.program.tensor(*t).name].to_f64_vec();
        let want = want[n].to_f64_vec();
        assert_eq!(got.len(), want.len(), "{name}");
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs() + 1e-5 * scale,
                "{name}[{i}] = {a}, evaluator says {b}"
            );
        }
    }
}

fn conv(group: usize, strides: usize, pads: (i64, i64), transpose: bool) -> GraphOp {
    GraphOp::Conv(ConvSpec {
        transpose,
        strides: vec![strides; 2],
        dilations: vec![1; 2],
        pads_begin: vec![pads.0; 2],
        pads_end: vec![pads.1; 2],
        group,
    })
}

#[test]
fn depthwise_conv_packs_channels_block_diagonally() {
    // 200 groups of one channel: packed as 2 groups of 100 channels.
    check(
        "depthwise",
        conv(200, 1, (1, 1), false),
        &[2, 200, 6, 5],
        &[&[200, 1, 3, 3], &[200]],
    );
}

#[test]
fn grouped_conv_with_wide_groups() {
    // 4 groups of 48 -> 16 channels: packed two groups per block; stride 2.
    check(
        "grouped",
        conv(4, 2, (1, 0), false),
        &[1, 192, 9, 8],
        &[&[64, 48, 3, 3]],
    );
    // Groups wider than the partitions are not packed: 2 groups of 130 -> 3.
    check(
        "wide_groups",
        conv(2, 1, (0, 0), false),
        &[1, 260, 4, 4],
        &[&[6, 130, 2, 2]],
    );
}

#[test]
fn grouped_conv_transpose_with_negative_end_pad() {
    // 3 groups of 2 -> 4 channels, stride 2, pads 1 at the start and -1 (output_shape one past
    // the full output) at the end.
    check(
        "conv_transpose",
        conv(3, 2, (1, -1), true),
        &[2, 6, 3, 4],
        &[&[6, 4, 3, 3], &[12]],
    );
}

#[test]
fn average_pool_divisors_follow_the_padding() {
    let op = GraphOp::Pool(PoolSpec {
        kind: PoolKind::Avg {
            count_include_pad: false,
        },
        kernel: vec![3, 2],
        strides: vec![2, 2],
        dilations: vec![1, 2],
        pads_begin: vec![1, 1],
        pads_end: vec![2, 0],
        ceil_mode: true,
    });
    check("avg_pool", op, &[1, 130, 7, 9], &[]);
}
