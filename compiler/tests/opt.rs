//! The e-graph optimiser end to end: a transformer block as ONNX exporters write it (linear
//! layers as MatMul + Add, LayerNorm and GELU written out, masked attention), optimised at each
//! level, must keep its meaning (reference evaluator), lower and run on the emulator, get
//! cheaper by the optimiser's own estimate, and do so deterministically. The estimates are
//! checked against the timing model's estimate of the kernels lowering builds.

use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_compiler::driver::{CompileOptions, compile_graph};
use tessera_compiler::lower::lower;
use tessera_compiler::opt::{cost, optimize};
use tessera_ir::graph::{
    Activation, AttentionSpec, BinaryOp, ElementwiseOp, FusedOp, Graph, GraphOp, MatMulEpilogue,
    NormKind, NormSpec, ReduceKind, ReduceSpec, TensorType, UnaryOp, ValueId, evaluate,
    print_graph,
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

fn f32t(shape: &[usize], seed: u64, scale: f64) -> HostTensor {
    let n = shape.iter().product();
    let v: Vec<f64> = values(n, seed).iter().map(|x| x * scale).collect();
    HostTensor::from_f64(DType::F32, shape, &v)
}

struct B {
    g: Graph,
    seed: u64,
    n: usize,
}

impl B {
    fn node(&mut self, op: GraphOp, ins: &[ValueId]) -> ValueId {
        self.n += 1;
        self.g.add_node(format!("n{}", self.n), op, ins).unwrap()[0]
    }
    fn bin(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> ValueId {
        self.node(GraphOp::Binary(op), &[a, b])
    }
    fn weight(&mut self, shape: &[usize], scale: f64) -> ValueId {
        self.seed += 1;
        let name = format!("w{}", self.seed);
        self.g.add_constant(name, f32t(shape, self.seed, scale))
    }
    fn scalar(&mut self, v: f64) -> ValueId {
        self.seed += 1;
        let name = format!("c{}", self.seed);
        self.g
            .add_constant(name, HostTensor::from_f64(DType::F32, &[], &[v]))
    }
    fn linear(&mut self, x: ValueId, d_in: usize, d_out: usize) -> ValueId {
        let w = self.weight(&[d_in, d_out], 1.0 / (d_in as f64).sqrt());
        let b = self.weight(&[d_out], 0.05);
        let y = self.node(GraphOp::MatMul, &[x, w]);
        self.bin(BinaryOp::Add, y, b)
    }
    fn mean_last(&mut self, x: ValueId) -> ValueId {
        let r = self.g.ty(x).shape.len();
        self.node(
            GraphOp::Reduce(ReduceSpec {
                kind: ReduceKind::Mean,
                axes: vec![r - 1],
                keepdims: true,
            }),
            &[x],
        )
    }
    /// LayerNorm written out as BERT exports it.
    fn layer_norm(&mut self, x: ValueId, d: usize) -> ValueId {
        let mean = self.mean_last(x);
        let c = self.bin(BinaryOp::Sub, x, mean);
        let two = self.scalar(2.0);
        let sq = self.bin(BinaryOp::Pow, c, two);
        let var = self.mean_last(sq);
        let eps = self.scalar(1e-12);
        let ve = self.bin(BinaryOp::Add, var, eps);
        let sd = self.node(GraphOp::Unary(UnaryOp::Sqrt), &[ve]);
        let n = self.bin(BinaryOp::Div, c, sd);
        let gamma = self.weight(&[d], 0.2);
        let beta = self.weight(&[d], 0.1);
        let s = self.bin(BinaryOp::Mul, n, gamma);
        self.bin(BinaryOp::Add, s, beta)
    }
    /// 0.5 x (1 + erf(x / sqrt 2)).
    fn gelu(&mut self, x: ValueId) -> ValueId {
        let s2 = self.scalar(std::f64::consts::SQRT_2);
        let d = self.bin(BinaryOp::Div, x, s2);
        let e = self.node(GraphOp::Unary(UnaryOp::Erf), &[d]);
        let one = self.scalar(1.0);
        let a = self.bin(BinaryOp::Add, e, one);
        let m = self.bin(BinaryOp::Mul, x, a);
        let half = self.scalar(0.5);
        self.bin(BinaryOp::Mul, m, half)
    }
}

/// A post-LN BERT layer: batch 2, sequence 64, hidden 128, 4 heads, FFN 512, additive mask.
fn bert_layer() -> Graph {
    let (b, s, h, heads, f) = (2, 64, 128, 4, 512);
    let dh = h / heads;
    let mut g = B {
        g: Graph::new("bert_layer"),
        seed: 0,
        n: 0,
    };
    let x = g.g.add_input("x", TensorType::new(DType::F32, &[b, s, h]));
    let mask =
        g.g.add_input("mask", TensorType::new(DType::F32, &[b, 1, 1, s]));
    let heads_of = |g: &mut B, perm: Vec<usize>| {
        let y = g.linear(x, h, h);
        let y = g.node(
            GraphOp::Reshape {
                shape: vec![b, s, heads, dh],
            },
            &[y],
        );
        g.node(GraphOp::Transpose { perm }, &[y])
    };
    let q = heads_of(&mut g, vec![0, 2, 1, 3]);
    let k = heads_of(&mut g, vec![0, 2, 3, 1]);
    let v = heads_of(&mut g, vec![0, 2, 1, 3]);
    let sc = g.node(GraphOp::MatMul, &[q, k]);
    let root = g.scalar((dh as f64).sqrt());
    let sc = g.bin(BinaryOp::Div, sc, root);
    let sc = g.bin(BinaryOp::Add, sc, mask);
    let p = g.node(GraphOp::Softmax { axis: 3 }, &[sc]);
    let ctx = g.node(GraphOp::MatMul, &[p, v]);
    let ctx = g.node(
        GraphOp::Transpose {
            perm: vec![0, 2, 1, 3],
        },
        &[ctx],
    );
    let ctx = g.node(
        GraphOp::Reshape {
            shape: vec![b, s, h],
        },
        &[ctx],
    );
    let o = g.linear(ctx, h, h);
    let o = g.bin(BinaryOp::Add, o, x);
    let a = g.layer_norm(o, h);
    let i = g.linear(a, h, f);
    let i = g.gelu(i);
    let o = g.linear(i, f, h);
    let o = g.bin(BinaryOp::Add, o, a);
    let y = g.layer_norm(o, h);
    g.g.outputs.push(y);
    g.g
}

fn inputs(g: &Graph) -> BTreeMap<String, HostTensor> {
    g.inputs
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let v = g.value(id);
            (v.name.clone(), f32t(&v.ty.shape, 100 + i as u64, 1.0))
        })
        .collect()
}

/// Every output of `got` within `1e-5 |want| + 1e-5 max|want|` of `want` (both f32 paths of
/// the same sums in a different order: relative rounding, scaled to the output's magnitude
/// for the sums of matmuls and reductions).
fn assert_close(
    what: &str,
    got: &BTreeMap<String, HostTensor>,
    want: &BTreeMap<String, HostTensor>,
    rtol: f64,
) {
    for (name, w) in want {
        let (g, w) = (got[name].to_f64_vec(), w.to_f64_vec());
        let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            assert!(
                (a - b).abs() <= rtol * b.abs() + rtol * scale,
                "{what}: {name}[{i}] = {a}, expected {b}"
            );
        }
    }
}

#[test]
fn optimised_bert_layer_keeps_its_meaning_and_runs() {
    let g = bert_layer();
    let target = TargetSpec::trn2();
    let feeds = inputs(&g);
    let want = evaluate(&g, &feeds).unwrap();
    for level in 1..=3 {
        let o = optimize(&g, &target, level).unwrap();
        let r = o.report.as_ref().unwrap();
        let fired = |n: &str| r.run.fired.get(n).copied().unwrap_or(0);
        for rule in [
            "layer-norm",
            "gelu-erf",
            "elementwise-region",
            "matmul-bias",
        ] {
            assert!(fired(rule) > 0, "-O{level}: {rule} never fired");
        }
        assert!(
            r.after_ns < 0.75 * r.before_ns,
            "-O{level}: estimate {} -> {}",
            r.before_ns,
            r.after_ns
        );
        let got = evaluate(&o.graph, &feeds).unwrap();
        assert_close(&format!("-O{level} evaluator"), &got, &want, 1e-5);
    }
    // The -O2 plan lowers and runs on the checked emulator.
    let c = compile_graph(g.clone(), &CompileOptions::default()).unwrap();
    let lowered = &c.lowered;
    let mut bound = BTreeMap::new();
    for (name, t) in &lowered.inputs {
        bound.insert(lowered.program.tensor(*t).name.clone(), feeds[name].clone());
    }
    for (t, data) in &lowered.weights {
        bound.insert(lowered.program.tensor(*t).name.clone(), data.clone());
    }
    let out = interp::run(&lowered.program, &target, &bound).unwrap();
    let got: BTreeMap<String, HostTensor> = lowered
        .outputs
        .iter()
        .map(|(n, t)| (n.clone(), out[&lowered.program.tensor(*t).name].clone()))
        .collect();
    assert_close("-O2 on interp", &got, &want, 1e-4);
}

#[test]
fn optimising_is_deterministic() {
    let g = bert_layer();
    let target = TargetSpec::trn2();
    let a = optimize(&g, &target, 2).unwrap();
    let b = optimize(&g, &target, 2).unwrap();
    assert_eq!(print_graph(&a.graph), print_graph(&b.graph));
    let bytes = || {
        let c = compile_graph(g.clone(), &CompileOptions::default()).unwrap();
        tessera_ir::artifact::encode(&c.artifact)
    };
    assert!(bytes() == bytes(), "two compilations differ");
}

#[test]
fn o0_lowers_the_graph_as_imported() {
    let g = bert_layer();
    let o = optimize(&g, &TargetSpec::trn2(), 0).unwrap();
    assert!(o.report.is_none());
    assert_eq!(print_graph(&o.graph), print_graph(&g));
}

/// `a . w` of an input `a` and a constant `w`, as a plain `MatMul`.
fn plain_matmul(a: &[usize], w: &[usize]) -> Graph {
    let mut g = Graph::new("mm");
    let x = g.add_input("a", TensorType::new(DType::F32, a));
    let w = g.add_constant("w", f32t(w, 1, 0.1));
    let y = g.add_node("mm", GraphOp::MatMul, &[x, w]).unwrap()[0];
    g.outputs.push(y);
    g
}

/// The fused matmul `spec` of an input `a`, a constant `w` and, when `spec.bias`, a constant
/// bias.
fn fused_matmul(a: &[usize], w: &[usize], spec: MatMulEpilogue) -> Graph {
    let mut g = Graph::new("fmm");
    let x = g.add_input("a", TensorType::new(DType::F32, a));
    let mut ins = vec![x, g.add_constant("w", f32t(w, 1, 0.1))];
    if spec.bias {
        ins.push(g.add_constant("b", f32t(&w[1..], 2, 0.1)));
    }
    let y = g
        .add_node("mm", GraphOp::Fused(FusedOp::MatMul(spec)), &ins)
        .unwrap()[0];
    g.outputs.push(y);
    g
}

/// The optimiser's estimate of single kernels against the timing model's estimate of the
/// kernel lowering builds for them (`estimate_tile_program`): within a factor of two. The
/// estimate only has to rank alternatives, but one far off would misrank them.
#[test]
fn kernel_estimates_follow_the_timing_model() {
    let target = TargetSpec::trn2();
    let swapped = MatMulEpilogue {
        swap_roles: true,
        ..MatMulEpilogue::default()
    };
    // `gelu(a . w + b)`, BERT's intermediate layer.
    let ffn = |swap_roles| MatMulEpilogue {
        bias: true,
        act: Some(Activation::Gelu),
        swap_roles,
        ..MatMulEpilogue::default()
    };
    let cases: Vec<(&str, Graph)> = vec![
        (
            "matmul 256x512x1024",
            plain_matmul(&[256, 512], &[512, 1024]),
        ),
        (
            "matmul 4x1024x2048",
            plain_matmul(&[4, 1024], &[1024, 2048]),
        ),
        (
            "matmul 4x1024x2048, roles swapped",
            fused_matmul(&[4, 1024], &[1024, 2048], swapped.clone()),
        ),
        (
            "classifier head 1x2048x1000 + bias, roles swapped",
            fused_matmul(
                &[1, 2048],
                &[2048, 1000],
                MatMulEpilogue {
                    bias: true,
                    ..swapped.clone()
                },
            ),
        ),
        ("matmul 64x256x1024", plain_matmul(&[64, 256], &[256, 1024])),
        (
            "matmul 64x256x1024, roles swapped",
            fused_matmul(&[64, 256], &[256, 1024], swapped.clone()),
        ),
        (
            "ffn 2x64x256x1024",
            fused_matmul(&[2, 64, 256], &[256, 1024], ffn(false)),
        ),
        (
            "ffn 2x64x256x1024, roles swapped",
            fused_matmul(&[2, 64, 256], &[256, 1024], ffn(true)),
        ),
        (
            "matmul 256x512x1024, roles swapped",
            fused_matmul(&[256, 512], &[512, 1024], swapped.clone()),
        ),
        ("add [512, 1024]", {
            let mut g = Graph::new("add");
            let a = g.add_input("a", TensorType::new(DType::F32, &[512, 1024]));
            let b = g.add_input("b", TensorType::new(DType::F32, &[512, 1024]));
            let y = g
                .add_node("add", GraphOp::Binary(BinaryOp::Add), &[a, b])
                .unwrap()[0];
            g.outputs.push(y);
            g
        }),
        ("gelu [256, 2048]", {
            let mut g = Graph::new("gelu");
            let a = g.add_input("a", TensorType::new(DType::F32, &[256, 2048]));
            let y = g
                .add_node(
                    "gelu",
                    GraphOp::Elementwise(ElementwiseOp::Gelu { tanh: false }),
                    &[a],
                )
                .unwrap()[0];
            g.outputs.push(y);
            g
        }),
        ("softmax [512, 512]", {
            let mut g = Graph::new("softmax");
            let a = g.add_input("a", TensorType::new(DType::F32, &[512, 512]));
            let y = g
                .add_node("softmax", GraphOp::Softmax { axis: 1 }, &[a])
                .unwrap()[0];
            g.outputs.push(y);
            g
        }),
        (
            "fused matmul+bias+gelu 256x768x1024",
            fused_matmul(&[256, 768], &[768, 1024], ffn(false)),
        ),
        ("layer norm [512, 768]", {
            let mut g = Graph::new("ln");
            let a = g.add_input("a", TensorType::new(DType::F32, &[512, 768]));
            let spec = NormSpec {
                kind: NormKind::Layer,
                eps: 1e-5,
                scale: false,
                shift: false,
            };
            let y = g
                .add_node("ln", GraphOp::Fused(FusedOp::Norm(spec)), &[a])
                .unwrap()[0];
            g.outputs.push(y);
            g
        }),
        ("transpose by DMA [512, 384]", {
            let mut g = Graph::new("t");
            let a = g.add_input("a", TensorType::new(DType::F32, &[512, 384]));
            let y = g
                .add_node("t", GraphOp::Transpose { perm: vec![1, 0] }, &[a])
                .unwrap()[0];
            g.outputs.push(y);
            g
        }),
        ("transpose on the PE [512, 384]", {
            let mut g = Graph::new("t");
            let a = g.add_input("a", TensorType::new(DType::F32, &[512, 384]));
            let op = GraphOp::Fused(FusedOp::PeTranspose { perm: vec![1, 0] });
            let y = g.add_node("t", op, &[a]).unwrap()[0];
            g.outputs.push(y);
            g
        }),
        ("attention [4, 256, 64]", {
            let mut g = Graph::new("attn");
            let ins: Vec<ValueId> = ["q", "k", "v"]
                .iter()
                .map(|n| g.add_input(*n, TensorType::new(DType::F32, &[4, 256, 64])))
                .collect();
            let spec = AttentionSpec {
                scale: 0.125,
                mask: false,
                causal: false,
            };
            let y = g
                .add_node("attn", GraphOp::Fused(FusedOp::Attention(spec)), &ins)
                .unwrap()[0];
            g.outputs.push(y);
            g
        }),
    ];
    for (what, g) in cases {
        let node = &g.nodes[0];
        let ins: Vec<&TensorType> = node.inputs.iter().map(|&v| g.ty(v)).collect();
        let outs: Vec<TensorType> = node.outputs.iter().map(|&v| g.ty(v).clone()).collect();
        let est = cost::op_ns(&node.op, &ins, &outs, &target);
        let lowered = lower(&g, &target).unwrap();
        let model = tessera_ir::cost::estimate_tile_program(&lowered.program, &target).total_ns;
        let ratio = est / model;
        eprintln!("{what}: optimiser {est:.0} ns, timing model {model:.0} ns ({ratio:.2})");
        assert!(
            (0.5..=2.0).contains(&ratio),
            "{what}: optimiser {est:.0} ns, timing model {model:.0} ns"
        );
    }
}

/// A classifier head as ONNX writes it (`Gemm` with `transB`, weights `[N, K]`): at `-O2` the
/// weights are transposed at compile time and the bias fused, and the plan computes the same
/// logits. The swapped roles are offered for M = 1 but priced out, as the timing model prices
/// them (the stationary `B^T` loads in 128-column tiles, short DMA runs: see the estimates
/// test); a 256-row product is not offered them at all.
#[test]
fn classifier_head_plan() {
    let target = TargetSpec::trn2();
    let head = |m: usize| {
        let mut g = Graph::new("head");
        let x = g.add_input("x", TensorType::new(DType::F32, &[m, 2048]));
        let w = g.add_constant("w", f32t(&[1000, 2048], 1, 0.05));
        let b = g.add_constant("b", f32t(&[1000], 2, 0.1));
        let op = GraphOp::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        };
        let y = g.add_node("fc", op, &[x, w, b]).unwrap()[0];
        g.outputs.push(y);
        g
    };
    for m in [1, 256] {
        let g = head(m);
        let o = optimize(&g, &target, 2).unwrap();
        let specs: Vec<&MatMulEpilogue> = o
            .graph
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                GraphOp::Fused(FusedOp::MatMul(s)) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(
            specs.len(),
            1,
            "M = {m}: one fused matmul\n{}",
            print_graph(&o.graph)
        );
        assert!(!specs[0].trans_b, "M = {m}: weights pre-transposed");
        assert!(specs[0].bias, "M = {m}: bias fused");
        assert!(!specs[0].swap_roles, "M = {m}: usual roles");
        let inputs = BTreeMap::from([("x".to_string(), f32t(&[m, 2048], 3, 1.0))]);
        let want = evaluate(&g, &inputs).unwrap();
        let got = evaluate(&o.graph, &inputs).unwrap();
        assert_close(&format!("head M = {m}"), &got, &want, 1e-5);
    }
}
