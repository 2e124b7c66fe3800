//! Lowering of the indexing operators against the reference evaluator: each graph is lowered,
//! run on the checked emulator and compared with `tessera_ir::graph::evaluate`. Selection and
//! DMA move values without arithmetic, so gathers must match exactly; scatter reductions (one
//! f32 rounding of the combined updates, then one for the combination with the data) and TopK
//! (exact) are compared with the same bound as the other lowering tests.

use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_compiler::lower::lower;
use tessera_ir::graph::{
    Graph, GraphOp, IndexOp, ScatterReduction, TensorType, ValueId, evaluate, verify_graph,
};
use tessera_ir::{DType, HostTensor, TargetSpec};

/// Deterministic values in [lo, hi) (xorshift).
fn values(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (s >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
        })
        .collect()
}

/// Integer indices in [lo, hi).
fn ints(n: usize, seed: u64, lo: i64, hi: i64) -> Vec<f64> {
    values(n, seed, lo as f64, hi as f64)
        .into_iter()
        .map(f64::floor)
        .collect()
}

fn check(g: &Graph, inputs: &BTreeMap<String, HostTensor>) {
    verify_graph(g).unwrap();
    let want = evaluate(g, inputs).unwrap();
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
        for (i, (x, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (x - w).abs() <= 1e-6 * w.abs(),
                "{}: output {name}[{i}] = {x}, evaluator says {w}",
                g.name
            );
        }
    }
}

struct Builder {
    g: Graph,
    inputs: BTreeMap<String, HostTensor>,
}

impl Builder {
    fn new(name: &str) -> Self {
        Builder {
            g: Graph::new(name),
            inputs: BTreeMap::new(),
        }
    }

    fn input(&mut self, name: &str, dtype: DType, shape: &[usize], v: Vec<f64>) -> ValueId {
        self.inputs
            .insert(name.into(), HostTensor::from_f64(dtype, shape, &v));
        self.g.add_input(name, TensorType::new(dtype, shape))
    }

    fn run(mut self, op: GraphOp, ins: &[ValueId]) -> Graph {
        let outs = self.g.add_node("op", op, ins).unwrap();
        self.g.outputs.extend(outs);
        check(&self.g, &self.inputs);
        self.g
    }
}

#[test]
fn gather_with_run_time_indices_across_partition_blocks() {
    // data [5, 40, 3] along axis 1 with 150 indices (including negative ones): 2250 outputs,
    // several 128-row blocks.
    let mut b = Builder::new("gather_rt");
    let d = b.input("d", DType::F32, &[5, 40, 3], values(600, 1, -2.0, 2.0));
    let i = b.input("i", DType::I64, &[10, 15], ints(150, 2, -40, 40));
    b.run(GraphOp::Gather { axis: 1 }, &[d, i]);
}

#[test]
fn gather_with_constant_indices_copies_slices() {
    let mut b = Builder::new("gather_const");
    let d = b.input("d", DType::I32, &[4, 6], ints(24, 3, -1000, 1000));
    let i = b.g.add_constant(
        "i",
        HostTensor::from_f64(DType::I64, &[3], &[5.0, -6.0, 2.0]),
    );
    b.run(GraphOp::Gather { axis: 1 }, &[d, i]);
}

#[test]
fn gather_elements_with_indices_smaller_than_data() {
    let mut b = Builder::new("gather_elements");
    let d = b.input("d", DType::F32, &[4, 5, 3], values(60, 4, -1.0, 1.0));
    let i = b.input("i", DType::I32, &[3, 7, 2], ints(42, 5, -5, 5));
    b.run(GraphOp::Index(IndexOp::GatherElements { axis: 1 }), &[d, i]);
}

#[test]
fn gather_nd_with_a_batch_axis_and_trailing_slices() {
    // data [2, 3, 4, 5], batch 1, tuples of 2 -> slices of 5; indices [2, 6, 2].
    let mut b = Builder::new("gather_nd");
    let d = b.input("d", DType::F32, &[2, 3, 4, 5], values(120, 6, -1.0, 1.0));
    let mut idx = Vec::new();
    for (n, v) in ints(24, 7, -3, 3).into_iter().enumerate() {
        // First coordinate in [-3, 3), second in [-4, 4).
        idx.push(if n % 2 == 0 {
            v
        } else {
            (v * 4.0 / 3.0).floor()
        });
    }
    let i = b.input("i", DType::I64, &[2, 6, 2], idx);
    b.run(GraphOp::Index(IndexOp::GatherNd { batch_dims: 1 }), &[d, i]);
}

#[test]
fn scatter_elements_into_part_of_the_data() {
    // Indices [2, 3] into data [4, 5] along axis 1: rows 2..4 and columns 3..5 of data are
    // outside the reachable box and must come through unchanged. Distinct indices per row so
    // `none` is well defined.
    for reduction in [
        ScatterReduction::None,
        ScatterReduction::Add,
        ScatterReduction::Mul,
        ScatterReduction::Max,
        ScatterReduction::Min,
    ] {
        let mut b = Builder::new("scatter_elements");
        let d = b.input("d", DType::F32, &[4, 5], values(20, 8, -1.0, 1.0));
        let i = b.input(
            "i",
            DType::I64,
            &[2, 3],
            vec![4.0, 0.0, -3.0, 1.0, -1.0, 3.0],
        );
        let u = b.input("u", DType::F32, &[2, 3], values(6, 9, -1.0, 1.0));
        b.run(
            GraphOp::Index(IndexOp::ScatterElements { axis: 1, reduction }),
            &[d, i, u],
        );
    }
}

#[test]
fn scatter_nd_with_repeated_tuples_under_add_and_max() {
    for reduction in [ScatterReduction::Add, ScatterReduction::Max] {
        let mut b = Builder::new("scatter_nd");
        let d = b.input("d", DType::I32, &[3, 4, 2], ints(24, 10, -9, 9));
        let i = b.input(
            "i",
            DType::I64,
            &[5, 2],
            vec![0.0, 1.0, 2.0, -1.0, 0.0, 1.0, -3.0, 0.0, 1.0, 2.0],
        );
        let u = b.input("u", DType::I32, &[5, 2], ints(10, 11, -9, 9));
        b.run(GraphOp::Index(IndexOp::ScatterNd { reduction }), &[d, i, u]);
    }
}

#[test]
fn top_k_on_a_leading_axis() {
    // Axis 0 of [6, 3, 4] is moved last and back; many ties (values in 0..3).
    for largest in [true, false] {
        let mut b = Builder::new("top_k");
        let x = b.input("x", DType::F32, &[6, 3, 4], ints(72, 12, 0, 3));
        b.run(
            GraphOp::Index(IndexOp::TopK {
                axis: 0,
                k: 4,
                largest,
                sorted: true,
            }),
            &[x],
        );
    }
}

#[test]
fn scatter_nd_none_keeps_the_last_of_duplicate_tuples() {
    // Tuples 0 and 2 both name row 1 of data [3, 4]; the evaluator applies updates in order,
    // so the later one wins, and the device must agree.
    let mut b = Builder::new("scatter_nd_none");
    let d = b.input("d", DType::F32, &[3, 4], values(12, 13, -1.0, 1.0));
    let i = b.input("i", DType::I64, &[3, 1], vec![1.0, 0.0, -2.0]);
    let u = b.input("u", DType::F32, &[3, 4], values(12, 14, -1.0, 1.0));
    b.run(
        GraphOp::Index(IndexOp::ScatterNd {
            reduction: ScatterReduction::None,
        }),
        &[d, i, u],
    );
}

#[test]
fn gather_from_a_constant_table_uses_the_one_hot_product() {
    // A [300, 2, 70] table (finite, constant) gathered on axis 1... and an embedding-style
    // [300, 70] table on axis 0 with 2-D run-time indices.
    let mut b = Builder::new("embedding");
    let table = b.g.add_constant(
        "table",
        HostTensor::from_f64(DType::F32, &[300, 70], &values(21000, 15, -3.0, 3.0)),
    );
    let i = b.input("i", DType::I64, &[3, 50], ints(150, 16, -300, 300));
    let g = b.run(GraphOp::Gather { axis: 0 }, &[table, i]);
    let lowered = lower(&g, &TargetSpec::trn2()).unwrap();
    assert!(
        lowered
            .program
            .insts
            .iter()
            .any(|i| i.op.opcode() == "nc_matmul"),
        "a constant table goes through the tensor engine"
    );

    let mut b = Builder::new("embedding_axis1");
    let table = b.g.add_constant(
        "table",
        HostTensor::from_f64(DType::F32, &[3, 200, 5], &values(3000, 17, -3.0, 3.0)),
    );
    let i = b.input("i", DType::I32, &[7], ints(7, 18, -200, 200));
    b.run(GraphOp::Gather { axis: 1 }, &[table, i]);
}
