//! Op-by-op lowering against the graph's reference evaluator: each graph is lowered to one tile
//! program, run on the checked emulator (with its weights bound), and compared with
//! `tessera_ir::graph::evaluate` on the same inputs.

use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_compiler::lower::lower;
use tessera_ir::graph::{
    BinaryOp, Graph, GraphOp, TensorType, UnaryOp, ValueId, evaluate, verify_graph,
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

#[test]
fn mlp_with_odd_sizes() {
    let mut g = Graph::new("mlp");
    let x = input(&mut g, "x", &[53, 200]);
    let w1 = g.add_constant("w1", f32t(&[200, 77], 10));
    let b1 = g.add_constant("b1", f32t(&[77], 11));
    let w2 = g.add_constant("w2", f32t(&[77, 9], 12));
    let b2 = g.add_constant("b2", f32t(&[9], 13));
    let gemm = GraphOp::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: false,
    };
    let h = node(&mut g, "gemm0", gemm, &[x, w1, b1]);
    let r = node(&mut g, "relu0", GraphOp::Unary(UnaryOp::Relu), &[h]);
    let m = node(&mut g, "matmul1", GraphOp::MatMul, &[r, w2]);
    let a = node(&mut g, "add1", GraphOp::Binary(BinaryOp::Add), &[m, b2]);
    let y = node(&mut g, "softmax", GraphOp::Softmax { axis: 1 }, &[a]);
    g.outputs.push(y);
    check(&g);
}

#[test]
fn gemm_attribute_combinations() {
    for (i, (ta, tb, alpha, beta, c_shape)) in [
        (false, true, 0.5, 2.0, vec![7usize]),
        (true, false, 1.0, 1.0, vec![5, 1]),
        (true, true, 2.0, 0.5, vec![5, 7]),
        (false, false, 1.5, 1.0, vec![1]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut g = Graph::new(format!("gemm{i}"));
        let a = input(&mut g, "a", if ta { &[9, 5] } else { &[5, 9] });
        let b = input(&mut g, "b", if tb { &[7, 9] } else { &[9, 7] });
        // C as a run-time input in half the cases and a weight in the others.
        let c = if i % 2 == 0 {
            input(&mut g, "c", &c_shape)
        } else {
            g.add_constant("c", f32t(&c_shape, 7))
        };
        let y = node(
            &mut g,
            "gemm",
            GraphOp::Gemm {
                alpha,
                beta,
                trans_a: ta,
                trans_b: tb,
            },
            &[a, b, c],
        );
        g.outputs.push(y);
        check(&g);
    }
}

#[test]
fn batched_and_vector_matmuls() {
    for (i, (a, b)) in [
        (vec![2usize, 1, 5, 7], vec![3usize, 7, 4]),
        (vec![7], vec![7, 4]),
        (vec![5, 7], vec![7]),
        (vec![3, 130, 20], vec![20, 600]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut g = Graph::new(format!("matmul{i}"));
        let x = input(&mut g, "x", &a);
        let w = input(&mut g, "w", &b);
        let y = node(&mut g, "mm", GraphOp::MatMul, &[x, w]);
        g.outputs.push(y);
        check(&g);
    }
}

#[test]
fn element_wise_softmax_and_movement() {
    let mut g = Graph::new("mix");
    let x = input(&mut g, "x", &[4, 5, 6]);
    let b = input(&mut g, "b", &[5, 1]);
    let s = node(&mut g, "sub", GraphOp::Binary(BinaryOp::Sub), &[x, b]);
    let t = node(&mut g, "tanh", GraphOp::Unary(UnaryOp::Tanh), &[s]);
    let n = node(&mut g, "neg", GraphOp::Unary(UnaryOp::Neg), &[t]);
    let sm0 = node(&mut g, "softmax0", GraphOp::Softmax { axis: 0 }, &[n]);
    let sm1 = node(&mut g, "softmax1", GraphOp::Softmax { axis: 1 }, &[n]);
    let tr = node(
        &mut g,
        "transpose",
        GraphOp::Transpose {
            perm: vec![2, 0, 1],
        },
        &[sm1],
    );
    let r = node(
        &mut g,
        "reshape",
        GraphOp::Reshape { shape: vec![6, 20] },
        &[tr],
    );
    let c = node(&mut g, "concat", GraphOp::Concat { axis: 1 }, &[r, r]);
    let d = node(&mut g, "div", GraphOp::Binary(BinaryOp::Div), &[sm0, x]);
    let sig = node(&mut g, "sigmoid", GraphOp::Unary(UnaryOp::Sigmoid), &[d]);
    g.outputs.extend([c, sig, r]);
    check(&g);
}

#[test]
fn outputs_that_alias_inputs_weights_or_each_other_are_copied() {
    let mut g = Graph::new("aliases");
    let x = input(&mut g, "x", &[3, 4]);
    let w = g.add_constant("w", f32t(&[3, 4], 3));
    let id = node(&mut g, "id", GraphOp::Identity, &[x]);
    let r = node(&mut g, "r", GraphOp::Reshape { shape: vec![12] }, &[w]);
    let m = node(&mut g, "mul", GraphOp::Binary(BinaryOp::Mul), &[x, w]);
    g.outputs.extend([x, id, r, m, m]);
    check(&g);
}

#[test]
fn scans_along_each_axis() {
    use tessera_ir::graph::{ScanKind, ScanSpec};
    // A middle axis (moved last and back), the last axis with more rows than partitions, and
    // the first axis; every kind and flag combination.
    for (shape, axis) in [(vec![3, 150, 4], 1), (vec![130, 6], 1), (vec![130, 6], 0)] {
        for kind in [ScanKind::Sum, ScanKind::Prod] {
            for (exclusive, reverse) in [(false, false), (true, false), (false, true), (true, true)]
            {
                let mut g = Graph::new(format!(
                    "scan_{kind:?}_{shape:?}_{axis}_{exclusive}_{reverse}"
                ));
                let x = input(&mut g, "x", &shape);
                let spec = ScanSpec {
                    kind,
                    axis,
                    exclusive,
                    reverse,
                };
                let y = node(&mut g, "scan", GraphOp::Scan(spec), &[x]);
                g.outputs.push(y);
                check(&g);
            }
        }
    }
}
