//! The strided-DMA gather kernels (Slice, Expand, Tile, Pad) against the graph's reference
//! evaluator (`MovementOp::eval`), run on the checked emulator. Movement is exact, so results
//! must be identical; inputs are the row-major index itself so every misplaced element shows.

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_ir::graph::movement::right_aligned;
use tessera_ir::graph::{AxisSlice, MovementOp, PadMode};
use tessera_ir::{DType, HostTensor, TargetSpec, TileProgram};
use tessera_kernels::library;

fn counting(shape: &[usize]) -> ArrayD<f64> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f64).collect()).expect("shape")
}

fn host(a: &ArrayD<f64>, dtype: DType) -> HostTensor {
    HostTensor::from_f64(dtype, a.shape(), &a.iter().copied().collect::<Vec<_>>())
}

/// The kernel for `op` on an input of `shape`, as the lowering builds it.
fn kernel(op: &MovementOp, shape: &[usize], dtype: DType) -> TileProgram {
    let t = TargetSpec::trn2();
    match op {
        MovementOp::Tile { repeats } => library::tile(&t, shape, repeats, dtype),
        _ => {
            let maps = op.axis_maps(shape);
            let in_shape = right_aligned(shape, maps.len());
            library::axis_gather(&t, "gather", &in_shape, &maps, dtype)
        }
    }
    .unwrap_or_else(|e| panic!("{op:?} on {shape:?}: {e}"))
}

/// Runs `op` on a counting input (and `fill` for Pad) and compares with the evaluator.
fn check(op: &MovementOp, shape: &[usize], dtype: DType, fill: f64) -> TileProgram {
    let x = counting(shape);
    let v = ArrayD::from_elem(IxDyn(&[]), fill);
    let want = op.eval(&[&x, &v]).unwrap();
    let p = kernel(op, shape, dtype);
    let mut inputs = BTreeMap::new();
    if let Some(t) = p.tensors.iter().find(|t| t.name == "x") {
        // Expand declares the input with the result's rank (leading 1s): same elements.
        let mut h = host(&x, dtype);
        h.shape = t.shape.clone();
        inputs.insert("x".to_string(), h);
    }
    if p.tensors.iter().any(|t| t.name == "value") {
        inputs.insert(
            "value".to_string(),
            HostTensor::from_f64(dtype, &[1], &[fill]),
        );
    }
    let out = interp::run(&p, &TargetSpec::trn2(), &inputs)
        .unwrap_or_else(|e| panic!("{op:?} on {shape:?}: {e}"));
    assert_eq!(out["y"].shape, want.shape().to_vec(), "{op:?} on {shape:?}");
    assert_eq!(
        out["y"].to_f64_vec(),
        want.iter().copied().collect::<Vec<_>>(),
        "{op:?} on {shape:?}"
    );
    p
}

fn dmas(p: &TileProgram) -> usize {
    p.insts
        .iter()
        .filter(|i| i.op.opcode() == "dma_copy")
        .count()
}

/// A slice of an axis of size `n` from raw ONNX-style numbers, clamped as Slice does.
fn axis_slice(n: usize, start: usize, len: usize, step: i64) -> AxisSlice {
    if n == 0 || len == 0 {
        return AxisSlice {
            start: 0,
            step,
            len: 0,
        };
    }
    let start = start % n;
    // As many indices as fit from `start` in the direction of `step`.
    let room = if step > 0 {
        (n - 1 - start) / step as usize + 1
    } else {
        start / step.unsigned_abs() as usize + 1
    };
    AxisSlice {
        start,
        step,
        len: len.min(room),
    }
}

fn slice_case() -> impl Strategy<Value = (Vec<usize>, Vec<AxisSlice>)> {
    prop::collection::vec((1usize..=7, 0usize..7, 1usize..=7, -3i64..=3), 1..=6).prop_map(|axes| {
        let shape: Vec<usize> = axes.iter().map(|a| a.0).collect();
        let spec = axes
            .iter()
            .map(|&(n, s, l, st)| axis_slice(n, s, l, if st == 0 { 1 } else { st }))
            .collect();
        (shape, spec)
    })
}

fn pad_mode() -> impl Strategy<Value = PadMode> {
    prop_oneof![
        Just(PadMode::Constant),
        Just(PadMode::Reflect),
        Just(PadMode::Edge),
        Just(PadMode::Wrap),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn slices_match_the_evaluator((shape, spec) in slice_case()) {
        check(&MovementOp::Slice(spec), &shape, DType::F32, 0.0);
    }

    #[test]
    fn pads_match_the_evaluator(
        shape in prop::collection::vec(2usize..=5, 1..=4),
        raw in prop::collection::vec((-1i64..=4, -1i64..=4), 4),
        mode in pad_mode(),
    ) {
        let pads: Vec<(i64, i64)> = raw[..shape.len()].to_vec();
        // Cropping both ends of a size-2 axis leaves nothing; an empty result has no kernel.
        prop_assume!(shape.iter().zip(&pads).all(|(&n, &(b, e))| n as i64 + b + e > 0));
        check(&MovementOp::Pad { mode, pads }, &shape, DType::I32, -7.0);
    }

    #[test]
    fn expands_and_tiles_match_the_evaluator(
        shape in prop::collection::vec(1usize..=4, 1..=4),
        ones in prop::collection::vec(any::<bool>(), 4),
        extra in prop::collection::vec(1usize..=3, 0..=2),
        repeats in prop::collection::vec(1usize..=3, 4),
    ) {
        // Expand: size-1 input axes broadcast to 1..4, and up to two new leading axes.
        let input: Vec<usize> = shape.iter().zip(&ones).map(|(&n, &one)| if one { 1 } else { n }).collect();
        let mut out = extra.clone();
        out.extend(&shape);
        check(&MovementOp::Expand { shape: out }, &input, DType::F32, 0.0);
        let repeats = repeats[..shape.len()].to_vec();
        check(&MovementOp::Tile { repeats }, &shape, DType::F32, 0.0);
    }
}

#[test]
fn reversed_int64_slice_is_exact() {
    // Every row reversed with step -2 over int64 values above 2^53, which f64 cannot hold
    // exactly: the DMA copies bytes, so the values must survive.
    let shape = [3, 9];
    let op = MovementOp::Slice(vec![
        AxisSlice {
            start: 0,
            step: 1,
            len: 3,
        },
        AxisSlice {
            start: 8,
            step: -2,
            len: 5,
        },
    ]);
    let big: Vec<i64> = (0..27).map(|i| (1i64 << 60) + i).collect();
    let x = HostTensor {
        dtype: DType::I64,
        shape: shape.to_vec(),
        data: big.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let p = kernel(&op, &shape, DType::I64);
    let out = interp::run(&p, &TargetSpec::trn2(), &BTreeMap::from([("x".into(), x)])).unwrap();
    let got: Vec<i64> = out["y"]
        .data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want: Vec<i64> = (0..3)
        .flat_map(|r| [8, 6, 4, 2, 0].map(|c| big[r * 9 + c]))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn large_copies_are_split_into_bounded_dmas() {
    // Expand [1, 700] to [300, 700]: 210,000 elements, one merged pattern of 300 rows; at most
    // 65,536 elements per DMA gives blocks of 93 rows, so 4 DMAs.
    let op = MovementOp::Expand {
        shape: vec![300, 700],
    };
    let p = check(&op, &[1, 700], DType::F32, 0.0);
    assert_eq!(dmas(&p), 4);
    // One contiguous axis longer than a DMA: 100,000 elements sliced by step 1 -> 2 DMAs.
    let op = MovementOp::Slice(vec![AxisSlice {
        start: 5,
        step: 1,
        len: 100_000,
    }]);
    let p = check(&op, &[100_010], DType::F32, 0.0);
    assert_eq!(dmas(&p), 2);
}

#[test]
fn many_axes_unroll_beyond_one_access_pattern() {
    // Seven axes of size 2 with step -1 on every other one cannot merge: five stay in the
    // pattern, two are unrolled (4 DMAs).
    let spec: Vec<AxisSlice> = (0..7)
        .map(|i| {
            if i % 2 == 0 {
                AxisSlice {
                    start: 1,
                    step: -1,
                    len: 2,
                }
            } else {
                AxisSlice {
                    start: 0,
                    step: 1,
                    len: 2,
                }
            }
        })
        .collect();
    let p = check(&MovementOp::Slice(spec), &[2; 7], DType::F32, 0.0);
    assert_eq!(dmas(&p), 4);
}

#[test]
fn pad_fill_and_edges_by_few_dmas() {
    // Constant pad of one column on each side of [4, 5]: interior, left and right fills.
    let op = MovementOp::Pad {
        mode: PadMode::Constant,
        pads: vec![(0, 0), (1, 1)],
    };
    let p = check(&op, &[4, 5], DType::F32, 1.5);
    assert_eq!(dmas(&p), 3);
    // Padding an empty axis with a constant reads only the fill value.
    let op = MovementOp::Pad {
        mode: PadMode::Constant,
        pads: vec![(0, 0), (2, 1)],
    };
    let p = check(&op, &[3, 0], DType::F32, 2.0);
    assert!(!p.tensors.iter().any(|t| t.name == "x"));
    // Edge and reflect on both axes of [1, 3, 4, 5] (the node tests' case): 3 x 3 pieces.
    for mode in [PadMode::Edge, PadMode::Reflect, PadMode::Wrap] {
        let op = MovementOp::Pad {
            mode,
            pads: vec![(0, 0), (0, 0), (1, 1), (1, 1)],
        };
        let p = check(&op, &[1, 3, 4, 5], DType::F32, 0.0);
        assert_eq!(dmas(&p), 9, "{mode:?}");
    }
}
