//! Every e-graph rule, verified: random instances of its left-hand side (shapes, values,
//! operand orders chosen by proptest) are rewritten by that rule alone, extracting its
//! right-hand sides (`opt::rewrite_with`), and both graphs are evaluated by the reference
//! evaluator on the same random inputs. The rule must fire, change the graph, and keep every
//! output within `1e-5 |want| + 1e-5 max|want|`: both sides compute in f64 and round each
//! node's result to f32, so they differ by the f32 roundings of differently placed
//! intermediates (a few units in the 7th digit), relative to the output's magnitude for sums.
//!
//! A last test checks every rule the optimiser has is covered here.

use proptest::prelude::*;
use std::collections::BTreeMap;
use tessera_compiler::opt::{rewrite_with, rule_names};
use tessera_ir::graph::{
    Activation, BinaryOp, ConvSpec, ElementwiseOp, FusedOp, Graph, GraphOp, MatMulEpilogue,
    ReduceKind, ReduceSpec, TensorType, UnaryOp, ValueId, evaluate, print_graph,
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

/// A graph under construction, with a seed for its constants.
struct B {
    g: Graph,
    seed: u64,
}

impl B {
    fn new(seed: u64) -> Self {
        B {
            g: Graph::new("lhs"),
            seed,
        }
    }
    fn input(&mut self, shape: &[usize]) -> ValueId {
        let name = format!("in{}", self.g.inputs.len());
        self.g.add_input(name, TensorType::new(DType::F32, shape))
    }
    fn weight(&mut self, shape: &[usize], scale: f64) -> ValueId {
        self.seed += 1;
        let name = format!("w{}", self.g.values.len());
        self.g.add_constant(name, f32t(shape, self.seed, scale))
    }
    fn splat(&mut self, shape: &[usize], v: f64) -> ValueId {
        let n: usize = shape.iter().product();
        let name = format!("c{}", self.g.values.len());
        self.g
            .add_constant(name, HostTensor::from_f64(DType::F32, shape, &vec![v; n]))
    }
    fn node(&mut self, op: GraphOp, ins: &[ValueId]) -> ValueId {
        let name = format!("n{}", self.g.nodes.len());
        self.g.add_node(name, op, ins).unwrap()[0]
    }
    /// `a OP b`, operands swapped when `swap` (for commutative operators).
    fn bin(&mut self, op: BinaryOp, a: ValueId, b: ValueId, swap: bool) -> ValueId {
        if swap {
            self.node(GraphOp::Binary(op), &[b, a])
        } else {
            self.node(GraphOp::Binary(op), &[a, b])
        }
    }
    fn un(&mut self, op: UnaryOp, x: ValueId) -> ValueId {
        self.node(GraphOp::Unary(op), &[x])
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
    fn finish(mut self, y: ValueId) -> Graph {
        self.g.outputs.push(y);
        self.g
    }
}

/// The rule fires on `g`, changes it, and keeps its meaning.
fn verify(rule: &str, g: &Graph, seed: u64) -> Result<(), TestCaseError> {
    verify_with(rule, &[rule], g, seed)
}

/// [`verify`] with `rules` enabled (a rule that extends another's result needs both).
fn verify_with(rule: &str, rules: &[&str], g: &Graph, seed: u64) -> Result<(), TestCaseError> {
    let (r, stats) = rewrite_with(g, &TargetSpec::trn2(), rules)
        .map_err(|e| TestCaseError::fail(format!("{rule}: {e}")))?;
    let fired = stats.fired.get(rule).copied().unwrap_or(0);
    prop_assert!(fired > 0, "{rule} did not fire on\n{}", print_graph(g));
    prop_assert_ne!(print_graph(&r), print_graph(g), "{} changed nothing", rule);
    let feeds: BTreeMap<String, HostTensor> = g
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let v = g.value(id);
            (
                v.name.clone(),
                f32t(&v.ty.shape, seed + 100 + i as u64, 1.0),
            )
        })
        .collect();
    let want = evaluate(g, &feeds).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got = evaluate(&r, &feeds).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (name, w) in &want {
        let (a, b) = (got[name].to_f64_vec(), w.to_f64_vec());
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            prop_assert!(
                (x - y).abs() <= 1e-5 * y.abs() + 1e-5 * scale,
                "{rule}: {name}[{i}] = {x}, expected {y}\nbefore:\n{}after:\n{}",
                print_graph(g),
                print_graph(&r)
            );
        }
    }
    Ok(())
}

fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..6, 1..4)
}

fn perm_of(rank: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..rank).collect();
    let v = values(rank, seed);
    p.sort_by(|&a, &b| v[a].partial_cmp(&v[b]).unwrap());
    p
}

fn conv_spec(pad: i64) -> ConvSpec {
    ConvSpec {
        transpose: false,
        strides: vec![1; 2],
        dilations: vec![1; 2],
        pads_begin: vec![pad; 2],
        pads_end: vec![pad; 2],
        group: 1,
    }
}

/// The rules covered below.
const COVERED: &[&str] = &[
    "identity-elim",
    "reshape-noop",
    "reshape-chain",
    "transpose-chain",
    "neutral-operand",
    "splat-to-scalar",
    "gelu-erf",
    "gelu-tanh",
    "silu",
    "layer-norm",
    "rms-norm",
    "softmax",
    "batchnorm-into-conv",
    "elementwise-region",
    "matmul-bias",
    "matmul-activation",
    "matmul-residual",
    "conv-activation",
    "conv-residual",
    "conv-residual-activation",
    "flash-attention",
    "shared-input-matmuls",
    "transpose-into-matmul",
    "transpose-on-pe",
    "matmul-swap-roles",
    "pretranspose-weight",
];

#[test]
fn every_rule_is_covered() {
    let mut names = rule_names();
    names.sort_unstable();
    let mut covered = COVERED.to_vec();
    covered.sort_unstable();
    assert_eq!(names, covered, "add a proptest for each new rule");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn identity_elim(shape in shape_strategy(), seed in any::<u64>()) {
        let mut b = B::new(seed);
        let x = b.input(&shape);
        let i = b.node(GraphOp::Identity, &[x]);
        let y = b.un(UnaryOp::Tanh, i);
        verify("identity-elim", &b.finish(y), seed)?;
    }

    #[test]
    fn reshape_noop(shape in shape_strategy(), seed in any::<u64>(), transpose in any::<bool>()) {
        let mut b = B::new(seed);
        let x = b.input(&shape);
        let op = if transpose {
            GraphOp::Transpose { perm: (0..shape.len()).collect() }
        } else {
            GraphOp::Reshape { shape: shape.clone() }
        };
        let r = b.node(op, &[x]);
        let y = b.un(UnaryOp::Exp, r);
        verify("reshape-noop", &b.finish(y), seed)?;
    }

    #[test]
    fn reshape_chain(shape in shape_strategy(), seed in any::<u64>()) {
        let mut b = B::new(seed);
        let x = b.input(&shape);
        let n: usize = shape.iter().product();
        let r1 = b.node(GraphOp::Reshape { shape: vec![n] }, &[x]);
        let r2 = b.node(GraphOp::Reshape { shape: vec![1, n, 1] }, &[r1]);
        let y = b.un(UnaryOp::Sigmoid, r2);
        verify("reshape-chain", &b.finish(y), seed)?;
    }

    #[test]
    fn transpose_chain(shape in prop::collection::vec(1usize..5, 2..5), seed in any::<u64>()) {
        let mut b = B::new(seed);
        let x = b.input(&shape);
        let r = shape.len();
        let t1 = b.node(GraphOp::Transpose { perm: perm_of(r, seed) }, &[x]);
        let t2 = b.node(GraphOp::Transpose { perm: perm_of(r, seed ^ 0x55) }, &[t1]);
        let y = b.un(UnaryOp::Abs, t2);
        verify("transpose-chain", &b.finish(y), seed)?;
    }

    #[test]
    fn neutral_operand(shape in shape_strategy(), seed in any::<u64>(), which in 0usize..4, swap in any::<bool>()) {
        let mut b = B::new(seed);
        let x = b.input(&shape);
        let (op, v) = [(BinaryOp::Add, 0.0), (BinaryOp::Sub, 0.0), (BinaryOp::Mul, 1.0), (BinaryOp::Div, 1.0)][which];
        let c = b.splat(&[1], v);
        let commutes = matches!(op, BinaryOp::Add | BinaryOp::Mul);
        let y = b.bin(op, x, c, swap && commutes);
        let y = b.un(UnaryOp::Tanh, y);
        verify("neutral-operand", &b.finish(y), seed)?;
    }

    #[test]
    fn splat_to_scalar(shape in shape_strategy(), seed in any::<u64>(), which in 0usize..5, v in 0.25f64..3.0) {
        let mut b = B::new(seed);
        let x = b.input(&shape);
        let ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max];
        let c = b.splat(&vec![1; shape.len()], v);
        let y = b.bin(ops[which], x, c, false);
        verify("splat-to-scalar", &b.finish(y), seed)?;
    }

    #[test]
    fn gelu_erf(shape in shape_strategy(), seed in any::<u64>(), swaps in any::<[bool; 3]>(), by_mul in any::<bool>()) {
        let mut b = B::new(seed);
        let x = b.input(&shape);
        let u = if by_mul {
            let c = b.splat(&[], std::f64::consts::FRAC_1_SQRT_2);
            b.bin(BinaryOp::Mul, x, c, swaps[0])
        } else {
            let c = b.splat(&[], std::f64::consts::SQRT_2);
            b.bin(BinaryOp::Div, x, c, false)
        };
        let e = b.un(UnaryOp::Erf, u);
        let one = b.splat(&[], 1.0);
        let t = b.bin(BinaryOp::Add, e, one, swaps[1]);
        let half = b.splat(&[], 0.5);
        // x * t * 0.5, or (x * 0.5) * t
        let y = if swaps[2] {
            let m = b.bin(BinaryOp::Mul, x, t, swaps[0]);
            b.bin(BinaryOp::Mul, m, half, swaps[1])
        } else {
            let h = b.bin(BinaryOp::Mul, x, half, swaps[0]);
            b.bin(BinaryOp::Mul, h, t, swaps[1])
        };
        verify("gelu-erf", &b.finish(y), seed)?;
    }

    #[test]
    fn gelu_tanh(shape in shape_strategy(), seed in any::<u64>(), swaps in any::<[bool; 3]>(), cube_by_pow in any::<bool>()) {
        let mut b = B::new(seed);
        let x = b.input(&shape);
        let cube = if cube_by_pow {
            let three = b.splat(&[], 3.0);
            b.bin(BinaryOp::Pow, x, three, false)
        } else {
            let sq = b.bin(BinaryOp::Mul, x, x, false);
            b.bin(BinaryOp::Mul, sq, x, swaps[2])
        };
        let c = b.splat(&[], 0.044715);
        let cc = b.bin(BinaryOp::Mul, cube, c, swaps[0]);
        let inner = b.bin(BinaryOp::Add, x, cc, swaps[1]);
        let k = b.splat(&[], (2.0 / std::f64::consts::PI).sqrt());
        let ik = b.bin(BinaryOp::Mul, inner, k, swaps[2]);
        let t = b.un(UnaryOp::Tanh, ik);
        let one = b.splat(&[], 1.0);
        let t1 = b.bin(BinaryOp::Add, t, one, swaps[0]);
        let half = b.splat(&[], 0.5);
        let hx = b.bin(BinaryOp::Mul, x, half, swaps[1]);
        let y = b.bin(BinaryOp::Mul, hx, t1, swaps[2]);
        verify("gelu-tanh", &b.finish(y), seed)?;
    }

    #[test]
    fn silu(shape in shape_strategy(), seed in any::<u64>(), swap in any::<bool>()) {
        let mut b = B::new(seed);
        let x = b.input(&shape);
        let s = b.un(UnaryOp::Sigmoid, x);
        let y = b.bin(BinaryOp::Mul, x, s, swap);
        verify("silu", &b.finish(y), seed)?;
    }

    #[test]
    fn layer_norm(rows in 1usize..5, c in 2usize..40, seed in any::<u64>(), eps in 1e-12f64..1e-3,
                  by_pow in any::<bool>(), by_recip in any::<bool>(), params in 0usize..3, swap in any::<bool>()) {
        let mut b = B::new(seed);
        let x = b.input(&[rows, c]);
        let mean = b.mean_last(x);
        let d = b.bin(BinaryOp::Sub, x, mean, false);
        let sq = if by_pow {
            let two = b.splat(&[], 2.0);
            b.bin(BinaryOp::Pow, d, two, false)
        } else {
            b.bin(BinaryOp::Mul, d, d, false)
        };
        let var = b.mean_last(sq);
        let e = b.splat(&[], eps);
        let ve = b.bin(BinaryOp::Add, var, e, swap);
        let sd = b.un(UnaryOp::Sqrt, ve);
        let mut y = if by_recip {
            let r = b.un(UnaryOp::Reciprocal, sd);
            b.bin(BinaryOp::Mul, d, r, swap)
        } else {
            b.bin(BinaryOp::Div, d, sd, false)
        };
        if params >= 1 {
            let g = b.weight(&[c], 1.0);
            y = b.bin(BinaryOp::Mul, y, g, swap);
        }
        if params >= 2 {
            let be = b.weight(&[1, c], 1.0);
            y = b.bin(BinaryOp::Add, y, be, swap);
        }
        verify("layer-norm", &b.finish(y), seed)?;
    }

    #[test]
    fn rms_norm(rows in 1usize..5, c in 1usize..40, seed in any::<u64>(), eps in 1e-12f64..1e-3,
                by_pow in any::<bool>(), by_recip in any::<bool>(), scale in any::<bool>(), swap in any::<bool>()) {
        let mut b = B::new(seed);
        let x = b.input(&[rows, c]);
        let sq = if by_pow {
            let two = b.splat(&[], 2.0);
            b.bin(BinaryOp::Pow, x, two, false)
        } else {
            b.bin(BinaryOp::Mul, x, x, false)
        };
        let ms = b.mean_last(sq);
        let e = b.splat(&[], eps);
        let me = b.bin(BinaryOp::Add, ms, e, swap);
        let r = b.un(UnaryOp::Sqrt, me);
        let mut y = if by_recip {
            let inv = b.un(UnaryOp::Reciprocal, r);
            b.bin(BinaryOp::Mul, x, inv, swap)
        } else {
            b.bin(BinaryOp::Div, x, r, false)
        };
        if scale {
            let g = b.weight(&[c], 1.0);
            y = b.bin(BinaryOp::Mul, y, g, swap);
        }
        verify("rms-norm", &b.finish(y), seed)?;
    }

    #[test]
    fn softmax(shape in prop::collection::vec(1usize..6, 1..4), seed in any::<u64>(), axis_pick in any::<usize>(), with_max in any::<bool>()) {
        let mut b = B::new(seed);
        let x = b.input(&shape);
        let axis = axis_pick % shape.len();
        let red = |kind| GraphOp::Reduce(ReduceSpec { kind, axes: vec![axis], keepdims: true });
        let z = if with_max {
            let m = b.node(red(ReduceKind::Max), &[x]);
            b.bin(BinaryOp::Sub, x, m, false)
        } else {
            x
        };
        let e = b.un(UnaryOp::Exp, z);
        let s = b.node(red(ReduceKind::Sum), &[e]);
        let y = b.bin(BinaryOp::Div, e, s, false);
        verify("softmax", &b.finish(y), seed)?;
    }

    #[test]
    fn batchnorm_into_conv(c_in in 1usize..5, c_out in 1usize..6, hw in 3usize..7, seed in any::<u64>(),
                           bias in any::<bool>(), form in 0usize..3, swap in any::<bool>()) {
        let mut b = B::new(seed);
        let x = b.input(&[1, c_in, hw, hw]);
        let w = b.weight(&[c_out, c_in, 3, 3], 0.5);
        let mut ins = vec![x, w];
        if bias {
            ins.push(b.weight(&[c_out], 0.5));
        }
        let conv = b.node(GraphOp::Conv(conv_spec(1)), &ins);
        // BatchNormalization as imported: x * s + t, per channel [C, 1, 1].
        let s = b.weight(&[c_out, 1, 1], 1.0);
        let t = b.weight(&[c_out, 1, 1], 1.0);
        let y = match form {
            0 => {
                let m = b.bin(BinaryOp::Mul, conv, s, swap);
                b.bin(BinaryOp::Add, m, t, swap)
            }
            1 => b.bin(BinaryOp::Mul, conv, s, swap),
            _ => b.bin(BinaryOp::Add, conv, t, swap),
        };
        verify("batchnorm-into-conv", &b.finish(y), seed)?;
    }

    #[test]
    fn elementwise_region(shape in shape_strategy(), seed in any::<u64>(), ops in prop::collection::vec(0usize..7, 2..8)) {
        let mut b = B::new(seed);
        let x = b.input(&shape);
        let z = b.input(&shape);
        let mut y = x;
        for (i, o) in ops.iter().enumerate() {
            y = match o {
                0 => b.bin(BinaryOp::Add, y, z, i % 2 == 0),
                1 => b.bin(BinaryOp::Mul, y, z, i % 2 == 1),
                2 => { let c = b.splat(&[], 0.75); b.bin(BinaryOp::Sub, y, c, false) }
                3 => b.un(UnaryOp::Tanh, y),
                4 => b.un(UnaryOp::Sigmoid, y),
                5 => b.node(GraphOp::Elementwise(ElementwiseOp::Gelu { tanh: false }), &[y]),
                _ => { let c = b.splat(&[1], 2.0); b.bin(BinaryOp::Max, y, c, true) }
            };
        }
        verify("elementwise-region", &b.finish(y), seed)?;
    }

    #[test]
    fn matmul_bias(m in 1usize..6, k in 1usize..6, n in 1usize..6, seed in any::<u64>(), swap in any::<bool>(), gemm in any::<bool>()) {
        let mut b = B::new(seed);
        let a = b.input(&[m, k]);
        let w = b.weight(&[k, n], 1.0);
        let bias = b.weight(&[n], 1.0);
        let y = if gemm {
            b.node(GraphOp::Gemm { alpha: 0.5, beta: 1.0, trans_a: false, trans_b: false }, &[a, w, bias])
        } else {
            let mm = b.node(GraphOp::MatMul, &[a, w]);
            b.bin(BinaryOp::Add, mm, bias, swap)
        };
        verify("matmul-bias", &b.finish(y), seed)?;
    }

    #[test]
    fn matmul_activation(m in 1usize..6, k in 1usize..6, n in 1usize..6, seed in any::<u64>(), act in 0usize..5) {
        let mut b = B::new(seed);
        let a = b.input(&[2, m, k]);
        let w = b.weight(&[k, n], 1.0);
        let mm = b.node(GraphOp::MatMul, &[a, w]);
        let y = match act {
            0 => b.un(UnaryOp::Relu, mm),
            1 => b.un(UnaryOp::Sigmoid, mm),
            2 => b.un(UnaryOp::Tanh, mm),
            3 => b.node(GraphOp::Elementwise(ElementwiseOp::Gelu { tanh: false }), &[mm]),
            _ => b.node(GraphOp::Elementwise(ElementwiseOp::Gelu { tanh: true }), &[mm]),
        };
        verify("matmul-activation", &b.finish(y), seed)?;
    }

    #[test]
    fn matmul_residual(m in 1usize..6, k in 1usize..6, n in 1usize..6, seed in any::<u64>(), swap in any::<bool>()) {
        let mut b = B::new(seed);
        let a = b.input(&[m, k]);
        let r = b.input(&[m, n]);
        let w = b.weight(&[k, n], 1.0);
        let mm = b.node(GraphOp::MatMul, &[a, w]);
        let y = b.bin(BinaryOp::Add, mm, r, swap);
        verify("matmul-residual", &b.finish(y), seed)?;
    }

    #[test]
    fn conv_activation(c_in in 1usize..5, c_out in 1usize..6, hw in 3usize..7, seed in any::<u64>(), act in 0usize..3) {
        let mut b = B::new(seed);
        let x = b.input(&[1, c_in, hw, hw]);
        let w = b.weight(&[c_out, c_in, 3, 3], 0.5);
        let bias = b.weight(&[c_out], 0.5);
        let conv = b.node(GraphOp::Conv(conv_spec(1)), &[x, w, bias]);
        let y = match act {
            0 => b.un(UnaryOp::Relu, conv),
            1 => b.un(UnaryOp::Sigmoid, conv),
            _ => b.un(UnaryOp::Tanh, conv),
        };
        verify("conv-activation", &b.finish(y), seed)?;
    }

    #[test]
    fn conv_residual(c in 1usize..5, hw in 3usize..7, seed in any::<u64>(), swap in any::<bool>()) {
        let mut b = B::new(seed);
        let x = b.input(&[1, c, hw, hw]);
        let w = b.weight(&[c, c, 3, 3], 0.5);
        let conv = b.node(GraphOp::Conv(conv_spec(1)), &[x, w]);
        let y = b.bin(BinaryOp::Add, conv, x, swap);
        verify("conv-residual", &b.finish(y), seed)?;
    }

    #[test]
    fn conv_residual_activation(c in 1usize..5, hw in 3usize..7, seed in any::<u64>(), swap in any::<bool>(), act in 0usize..3) {
        let mut b = B::new(seed);
        let x = b.input(&[1, c, hw, hw]);
        let w = b.weight(&[c, c, 3, 3], 0.5);
        let bias = b.weight(&[c], 0.5);
        let conv = b.node(GraphOp::Conv(conv_spec(1)), &[x, w, bias]);
        let sum = b.bin(BinaryOp::Add, conv, x, swap);
        let y = match act {
            0 => b.un(UnaryOp::Relu, sum),
            1 => b.un(UnaryOp::Sigmoid, sum),
            _ => b.un(UnaryOp::Tanh, sum),
        };
        let rules = ["conv-residual", "conv-residual-activation"];
        verify_with("conv-residual-activation", &rules, &b.finish(y), seed)?;
    }

    #[test]
    fn flash_attention(s in 1usize..6, t in 1usize..6, d in 1usize..5, seed in any::<u64>(),
                       mask in any::<bool>(), div in any::<bool>(), swap in any::<bool>()) {
        let mut b = B::new(seed);
        let q = b.input(&[2, s, d]);
        let kt = b.input(&[2, d, t]);
        let v = b.input(&[2, t, d + 1]);
        let sc = b.node(GraphOp::MatMul, &[q, kt]);
        let sc = if div {
            let c = b.splat(&[], (d as f64).sqrt());
            b.bin(BinaryOp::Div, sc, c, false)
        } else {
            let c = b.splat(&[], 0.3);
            b.bin(BinaryOp::Mul, sc, c, swap)
        };
        let sc = if mask {
            let m = b.weight(&[1, 1, t], 2.0);
            b.bin(BinaryOp::Add, sc, m, swap)
        } else {
            sc
        };
        let p = b.node(GraphOp::Softmax { axis: 2 }, &[sc]);
        let y = b.node(GraphOp::MatMul, &[p, v]);
        verify("flash-attention", &b.finish(y), seed)?;
    }

    #[test]
    fn shared_input_matmuls(m in 1usize..5, k in 1usize..5, ns in prop::collection::vec(1usize..5, 2..4), seed in any::<u64>(), biased in any::<bool>()) {
        let mut b = B::new(seed);
        let x = b.input(&[m, k]);
        let mut outs = Vec::new();
        for &n in &ns {
            let w = b.weight(&[k, n], 1.0);
            let y = if biased {
                let bias = b.weight(&[n], 1.0);
                let spec = MatMulEpilogue { bias: true, ..MatMulEpilogue::default() };
                b.node(GraphOp::Fused(FusedOp::MatMul(spec)), &[x, w, bias])
            } else {
                b.node(GraphOp::MatMul, &[x, w])
            };
            outs.push(b.un(UnaryOp::Tanh, y));
        }
        let mut g = b.g;
        g.outputs = outs;
        verify("shared-input-matmuls", &g, seed)?;
    }

    #[test]
    fn transpose_into_matmul(m in 1usize..6, k in 1usize..6, n in 1usize..6, seed in any::<u64>(), side in any::<bool>(), act in any::<bool>()) {
        let mut b = B::new(seed);
        let (a, w) = if side {
            let at = b.input(&[2, k, m]);
            let a = b.node(GraphOp::Transpose { perm: vec![0, 2, 1] }, &[at]);
            (a, b.weight(&[k, n], 1.0))
        } else {
            let wt = b.weight(&[n, k], 1.0);
            let w = b.node(GraphOp::Transpose { perm: vec![1, 0] }, &[wt]);
            (b.input(&[2, m, k]), w)
        };
        let y = if act {
            let spec = MatMulEpilogue { act: Some(Activation::Relu), ..MatMulEpilogue::default() };
            b.node(GraphOp::Fused(FusedOp::MatMul(spec)), &[a, w])
        } else {
            b.node(GraphOp::MatMul, &[a, w])
        };
        verify("transpose-into-matmul", &b.finish(y), seed)?;
    }

    #[test]
    fn transpose_on_pe(batch in prop::collection::vec(1usize..4, 0..2), a in prop::collection::vec(1usize..6, 1..3),
                       b in prop::collection::vec(1usize..6, 1..3), seed in any::<u64>()) {
        let mut bld = B::new(seed);
        let shape: Vec<usize> = batch.iter().chain(&a).chain(&b).copied().collect();
        let x = bld.input(&shape);
        let (nb, na) = (batch.len(), a.len());
        let perm: Vec<usize> = (0..nb).chain(nb + na..shape.len()).chain(nb..nb + na).collect();
        let t = bld.node(GraphOp::Transpose { perm }, &[x]);
        let y = bld.un(UnaryOp::Tanh, t);
        verify("transpose-on-pe", &bld.finish(y), seed)?;
    }

    #[test]
    fn matmul_swap_roles(batch in prop::collection::vec(1usize..3, 0..2), m in 1usize..6, k in 1usize..6, extra_n in 1usize..6,
                         seed in any::<u64>(), fused in any::<bool>()) {
        // The rule offers the swap where N > M (see `SWAP_MAX_M`).
        let n = m + extra_n;
        let mut b = B::new(seed);
        let mut shape = batch.clone();
        shape.extend([m, k]);
        let a = b.input(&shape);
        let w = b.weight(&[k, n], 1.0);
        let y = if fused {
            let bias = b.weight(&[n], 1.0);
            let spec = MatMulEpilogue { bias: true, act: Some(Activation::Relu), ..MatMulEpilogue::default() };
            b.node(GraphOp::Fused(FusedOp::MatMul(spec)), &[a, w, bias])
        } else {
            b.node(GraphOp::MatMul, &[a, w])
        };
        verify("matmul-swap-roles", &b.finish(y), seed)?;
    }

    #[test]
    fn pretranspose_weight(batch in prop::collection::vec(1usize..3, 0..2), m in 1usize..6, k in 1usize..6, n in 1usize..6,
                           seed in any::<u64>(), bias in any::<bool>()) {
        let mut b = B::new(seed);
        let mut shape = batch.clone();
        shape.extend([m, k]);
        let a = b.input(&shape);
        let w = b.weight(&[n, k], 1.0);
        let mut ins = vec![a, w];
        if bias {
            ins.push(b.weight(&[n], 1.0));
        }
        let spec = MatMulEpilogue { trans_b: true, bias, ..MatMulEpilogue::default() };
        let y = b.node(GraphOp::Fused(FusedOp::MatMul(spec)), &ins);
        verify("pretranspose-weight", &b.finish(y), seed)?;
    }
}
