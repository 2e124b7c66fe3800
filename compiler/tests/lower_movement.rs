//! Lowering of the data-movement operators (Slice, Expand, Tile, Pad) inside graphs, against
//! the graph's reference evaluator on the checked emulator: runtime Pad constants, constants
//! bound as weights, int64 data, empty results and results that are graph outputs or feed
//! other kernels. Movement is exact, so results must be identical.

use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_compiler::lower::lower;
use tessera_ir::graph::{
    AxisSlice, BinaryOp, Graph, GraphOp, MovementOp, PadMode, TensorType, ValueId, evaluate,
    verify_graph,
};
use tessera_ir::{DType, HostTensor, TargetSpec};

/// Distinct values per input: `seed * 1000 + index`.
fn data(ty: &TensorType, seed: usize) -> HostTensor {
    let v: Vec<f64> = (0..ty.elems()).map(|i| (seed * 1000 + i) as f64).collect();
    HostTensor::from_f64(ty.dtype, &ty.shape, &v)
}

fn check(g: &Graph) {
    verify_graph(g).unwrap();
    let inputs: BTreeMap<String, HostTensor> = g
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let v = g.value(id);
            (v.name.clone(), data(&v.ty, i + 1))
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
    for (t, d) in &lowered.weights {
        bound.insert(lowered.program.tensor(*t).name.clone(), d.clone());
    }
    let got = interp::run(&lowered.program, &target, &bound)
        .unwrap_or_else(|e| panic!("{}: {e}", g.name));
    for (name, t) in &lowered.outputs {
        let got = &got[&lowered.program.tensor(*t).name];
        assert_eq!(got.shape, want[name].shape, "{}: {name}", g.name);
        assert_eq!(got.data, want[name].data, "{}: {name}", g.name);
    }
}

fn node(g: &mut Graph, name: &str, op: MovementOp, ins: &[ValueId]) -> ValueId {
    g.add_node(name, GraphOp::Movement(op), ins).unwrap()[0]
}

fn whole(n: usize) -> AxisSlice {
    AxisSlice {
        start: 0,
        step: 1,
        len: n,
    }
}

#[test]
fn pad_with_a_runtime_constant_and_a_default_zero() {
    let mut g = Graph::new("pad");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 3, 4, 5]));
    let v = g.add_input("v", TensorType::new(DType::F32, &[]));
    let pads = vec![(0, 0), (0, 1), (1, 3), (-1, 2)];
    let op = |mode| MovementOp::Pad {
        mode,
        pads: pads.clone(),
    };
    let a = node(&mut g, "with_value", op(PadMode::Constant), &[x, v]);
    let b = node(&mut g, "zero", op(PadMode::Constant), &[x]);
    let c = node(&mut g, "reflect", op(PadMode::Reflect), &[x]);
    g.outputs.extend([a, b, c]);
    check(&g);
}

#[test]
fn split_halves_feed_an_add() {
    // The Slices a Split becomes, one per half of axis 1, added: exercises scratch results.
    let mut g = Graph::new("split");
    let x = g.add_input("x", TensorType::new(DType::F32, &[3, 8, 5]));
    let half = |start| {
        MovementOp::Slice(vec![
            whole(3),
            AxisSlice {
                start,
                step: 1,
                len: 4,
            },
            whole(5),
        ])
    };
    let a = node(&mut g, "lo", half(0), &[x]);
    let b = node(&mut g, "hi", half(4), &[x]);
    let y = g
        .add_node("sum", GraphOp::Binary(BinaryOp::Add), &[a, b])
        .unwrap()[0];
    g.outputs.push(y);
    check(&g);
}

#[test]
fn int64_expand_tile_and_reversal() {
    let mut g = Graph::new("ints");
    let x = g.add_input("x", TensorType::new(DType::I64, &[3, 1]));
    let e = node(
        &mut g,
        "expand",
        MovementOp::Expand {
            shape: vec![2, 3, 4],
        },
        &[x],
    );
    let t = node(
        &mut g,
        "tile",
        MovementOp::Tile {
            repeats: vec![2, 1, 3],
        },
        &[e],
    );
    let r = node(
        &mut g,
        "reverse",
        MovementOp::Slice(vec![
            AxisSlice {
                start: 3,
                step: -1,
                len: 4,
            },
            whole(3),
            AxisSlice {
                start: 11,
                step: -5,
                len: 3,
            },
        ]),
        &[t],
    );
    g.outputs.extend([e, r]);
    check(&g);
}

#[test]
fn constant_operands_and_empty_results() {
    let mut g = Graph::new("consts");
    let x = g.add_input("x", TensorType::new(DType::F32, &[4, 6]));
    // A constant fill value is a weight; an empty slice has nothing to compute.
    let v = g.add_constant("v", HostTensor::from_f64(DType::F32, &[1], &[-2.5]));
    let p = node(
        &mut g,
        "pad",
        MovementOp::Pad {
            mode: PadMode::Constant,
            pads: vec![(2, 0), (0, 1)],
        },
        &[x, v],
    );
    let empty = node(
        &mut g,
        "empty",
        MovementOp::Slice(vec![
            AxisSlice {
                start: 0,
                step: 1,
                len: 0,
            },
            whole(6),
        ]),
        &[x],
    );
    g.outputs.extend([p, empty]);
    check(&g);
}
