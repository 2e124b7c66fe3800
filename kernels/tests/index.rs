//! The indexing kernels (`index_keys`, `strided_copy`, `select_reduce`, `topk_rows`) on the
//! reference emulator against plain Rust references written from the ONNX operator spec.
//! Selection moves values without rounding, so results must be exact.

use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_ir::graph::ScatterReduction;
use tessera_ir::{DType, HostTensor, TargetSpec, TileProgram};
use tessera_kernels::library::index::{
    LaneKeys, SelectMode, SelectSpec, index_keys, select_reduce, strided_copy, topk_rows,
};

fn run(p: &TileProgram, inputs: Vec<(&str, HostTensor)>) -> BTreeMap<String, Vec<f64>> {
    let inputs = inputs
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
    interp::run(p, &TargetSpec::trn2(), &inputs)
        .unwrap_or_else(|e| panic!("{}: {e}", p.name))
        .into_iter()
        .map(|(k, v)| (k, v.to_f64_vec()))
        .collect()
}

fn t(dtype: DType, shape: &[usize], v: &[f64]) -> HostTensor {
    HostTensor::from_f64(dtype, shape, v)
}

#[test]
fn scatter_max_includes_the_base() {
    // rows 4, lanes 2: row r's base is 10 + r; lane keys [0, 0] for every row, so only rows with
    // key 0 see the candidates.
    let spec = SelectSpec {
        rows: 4,
        lanes: 2,
        dtype: DType::F32,
        lane_keys: LaneKeys::Tensor,
        mode: SelectMode::Scatter(ScatterReduction::Max),
    };
    let p = select_reduce(&TargetSpec::trn2(), &spec).unwrap();
    let out = run(
        &p,
        vec![
            (
                "cand",
                t(
                    DType::F32,
                    &[4, 2],
                    &[5.0, 20.0, 5.0, 1.0, 5.0, 1.0, 5.0, 1.0],
                ),
            ),
            ("key", t(DType::F32, &[4], &[0.0, 0.0, 1.0, 1.0])),
            ("lane", t(DType::F32, &[4, 2], &[0.0; 8])),
            ("base", t(DType::F32, &[4], &[10.0, 11.0, 12.0, 13.0])),
        ],
    );
    assert_eq!(out["y"], vec![20.0, 11.0, 12.0, 13.0]);
}

#[test]
fn keys_wrap_negative_coordinates_and_refuse_out_of_range() {
    // Tuples into dims [3, 4]: (1, 2) -> 6; (-1, -4) -> (2, 0) -> 8; (3, 0) and (0, -5) are out
    // of range -> -1; (0, 3) -> 3.
    let p = index_keys(&TargetSpec::trn2(), 5, &[3, 4], DType::I64).unwrap();
    let idx = t(
        DType::I64,
        &[5, 2],
        &[1.0, 2.0, -1.0, -4.0, 3.0, 0.0, 0.0, -5.0, 0.0, 3.0],
    );
    let out = run(&p, vec![("idx", idx)]);
    assert_eq!(out["key"], vec![6.0, 8.0, -1.0, -1.0, 3.0]);
}

#[test]
fn keys_of_many_indices_fill_partitions_and_a_tail() {
    // 1001 single coordinates into [7]: i -> (i mod 15) - 7, which wraps to (i mod 15) for
    // values below 0 ... the reference does the same arithmetic.
    let n = 1001;
    let raw: Vec<f64> = (0..n).map(|i| (i % 15) as f64 - 7.0).collect();
    let want: Vec<f64> = raw
        .iter()
        .map(|&v| {
            let w = if v < 0.0 { v + 7.0 } else { v };
            if (0.0..7.0).contains(&w) { w } else { -1.0 }
        })
        .collect();
    let p = index_keys(&TargetSpec::trn2(), n, &[7], DType::I32).unwrap();
    let out = run(&p, vec![("idx", t(DType::I32, &[n, 1], &raw))]);
    assert_eq!(out["key"], want);
}

#[test]
fn strided_copy_broadcasts_and_transposes() {
    // y[i, j, r] = x[j, i] for x [2, 3], r repeated twice (stride 0).
    let dims = [(3, 1, 4), (2, 3, 2), (2, 0, 1)];
    let p = strided_copy(&TargetSpec::trn2(), DType::F32, 6, 12, &dims, &[(0, 0)]).unwrap();
    let x: Vec<f64> = (0..6).map(f64::from).collect();
    let out = run(&p, vec![("x", t(DType::F32, &[6], &x))]);
    assert_eq!(
        out["y"],
        vec![0.0, 0.0, 3.0, 3.0, 1.0, 1.0, 4.0, 4.0, 2.0, 2.0, 5.0, 5.0]
    );
}

#[test]
fn gather_selection_is_exact_for_int64_and_ignores_non_finite_neighbours() {
    // Row r selects lane key[r]; key -1 selects nothing (0). Large int64 values (2^40 + 1)
    // come through exactly.
    let big = (1u64 << 40) as f64 + 1.0;
    let spec = |dtype| SelectSpec {
        rows: 3,
        lanes: 3,
        dtype,
        lane_keys: LaneKeys::Iota,
        mode: SelectMode::Gather,
    };
    let key = t(DType::F32, &[3], &[2.0, 0.0, -1.0]);
    let p = select_reduce(&TargetSpec::trn2(), &spec(DType::I64)).unwrap();
    let cand = [1.0, 2.0, big, -big, 5.0, 6.0, 7.0, 8.0, 9.0];
    let out = run(
        &p,
        vec![
            ("cand", t(DType::I64, &[3, 3], &cand)),
            ("key", key.clone()),
        ],
    );
    assert_eq!(out["y"], vec![big, -big, 0.0]);
    let p = select_reduce(&TargetSpec::trn2(), &spec(DType::F32)).unwrap();
    let cand = [
        f64::NAN,
        f64::INFINITY,
        1.5,
        -2.5,
        f64::NAN,
        0.0,
        1.0,
        2.0,
        3.0,
    ];
    let out = run(
        &p,
        vec![("cand", t(DType::F32, &[3, 3], &cand)), ("key", key)],
    );
    assert_eq!(out["y"], vec![1.5, -2.5, 0.0]);
}

#[test]
fn gather_over_long_rows_combines_chunks() {
    // 5000 lanes (more than one 2048-lane chunk) for 130 rows (two partition blocks):
    // row r picks lane (r * 37) % 5000, whose value is its lane number + 0.5.
    let (rows, lanes) = (130, 5000);
    let cand: Vec<f64> = (0..rows * lanes)
        .map(|i| (i % lanes) as f64 + 0.5)
        .collect();
    let keys: Vec<f64> = (0..rows).map(|r| ((r * 37) % lanes) as f64).collect();
    let spec = SelectSpec {
        rows,
        lanes,
        dtype: DType::F32,
        lane_keys: LaneKeys::Iota,
        mode: SelectMode::Gather,
    };
    let p = select_reduce(&TargetSpec::trn2(), &spec).unwrap();
    let out = run(
        &p,
        vec![
            ("cand", t(DType::F32, &[rows, lanes], &cand)),
            ("key", t(DType::F32, &[rows], &keys)),
        ],
    );
    let want: Vec<f64> = keys.iter().map(|k| k + 0.5).collect();
    assert_eq!(out["y"], want);
}

#[test]
fn scatter_reductions_by_hand() {
    // Three rows with bases [1, 2, 3]; two updates [4, 5] both aimed at row 0 and one lane key
    // -1 (out of range) that never lands.
    let cand = [4.0, 5.0, 6.0, 4.0, 5.0, 6.0, 4.0, 5.0, 6.0];
    let lane = [0.0, 0.0, -1.0, 0.0, 0.0, -1.0, 0.0, 0.0, -1.0];
    let cases = [
        (ScatterReduction::Add, [1.0 + 4.0 + 5.0, 2.0, 3.0]),
        (ScatterReduction::Mul, [20.0, 2.0, 3.0]),
        (ScatterReduction::Min, [1.0, 2.0, 3.0]),
        (ScatterReduction::Max, [5.0, 2.0, 3.0]),
        // Duplicates under `none` are undefined in ONNX; the later update (5) wins, as in
        // onnxruntime and the evaluator.
        (ScatterReduction::None, [5.0, 2.0, 3.0]),
    ];
    for (reduction, want) in cases {
        let spec = SelectSpec {
            rows: 3,
            lanes: 3,
            dtype: DType::I32,
            lane_keys: LaneKeys::Tensor,
            mode: SelectMode::Scatter(reduction),
        };
        let p = select_reduce(&TargetSpec::trn2(), &spec).unwrap();
        let out = run(
            &p,
            vec![
                ("cand", t(DType::I32, &[3, 3], &cand)),
                ("key", t(DType::F32, &[3], &[0.0, 1.0, 2.0])),
                ("lane", t(DType::F32, &[3, 3], &lane)),
                ("base", t(DType::I32, &[3], &[1.0, 2.0, 3.0])),
            ],
        );
        assert_eq!(out["y"], want.to_vec(), "{reduction:?}");
    }
}

#[test]
fn top_k_orders_ties_by_index_and_handles_infinities() {
    // Row 0 has ties (3 at 1 and 3) and -inf; row 1 is all -inf, so the alive mask alone
    // decides the order: indices 0, 1, 2.
    let inf = f64::INFINITY;
    let x = [1.0, 3.0, -inf, 3.0, -inf, -inf, -inf, -inf];
    let p = topk_rows(&TargetSpec::trn2(), 2, 4, 3, true, DType::F32).unwrap();
    let out = run(&p, vec![("x", t(DType::F32, &[2, 4], &x))]);
    assert_eq!(out["values"], vec![3.0, 3.0, 1.0, -inf, -inf, -inf]);
    assert_eq!(out["indices"], vec![1.0, 3.0, 0.0, 0.0, 1.0, 2.0]);
    let p = topk_rows(&TargetSpec::trn2(), 2, 4, 2, false, DType::F32).unwrap();
    let out = run(&p, vec![("x", t(DType::F32, &[2, 4], &x))]);
    assert_eq!(out["values"], vec![-inf, 1.0, -inf, -inf]);
    assert_eq!(out["indices"], vec![2.0, 0.0, 0.0, 1.0]);
}

#[test]
fn top_k_matches_the_evaluator_on_int64_with_nan_free_ties() {
    // 200 rows (two blocks) of 9 int64 values with many ties; the reference is the evaluator's
    // `top_k` (a stable sort).
    let (rows, cols, k) = (200, 9, 4);
    let x: Vec<f64> = (0..rows * cols)
        .map(|i| ((i * 7919) % 5) as f64 - 2.0)
        .collect();
    for largest in [true, false] {
        let p = topk_rows(&TargetSpec::trn2(), rows, cols, k, largest, DType::I64).unwrap();
        let out = run(&p, vec![("x", t(DType::I64, &[rows, cols], &x))]);
        let (mut vals, mut idx) = (Vec::new(), Vec::new());
        for row in x.chunks(cols) {
            for (i, v) in tessera_ir::graph::index::top_k(row, k, largest) {
                idx.push(i as f64);
                vals.push(v);
            }
        }
        assert_eq!(out["values"], vals, "largest {largest}");
        assert_eq!(out["indices"], idx, "largest {largest}");
    }
}

#[test]
fn top_k_puts_nan_first_like_the_evaluator() {
    let nan = f64::NAN;
    let x = [1.0, nan, 2.0, nan];
    for largest in [true, false] {
        let p = topk_rows(&TargetSpec::trn2(), 1, 4, 3, largest, DType::F32).unwrap();
        let out = run(&p, vec![("x", t(DType::F32, &[1, 4], &x))]);
        let want: Vec<f64> = tessera_ir::graph::index::top_k(&x, 3, largest)
            .into_iter()
            .map(|(i, _)| i as f64)
            .collect();
        assert_eq!(out["indices"], want, "largest {largest}");
    }
}

#[test]
fn scatter_none_keeps_the_last_match_across_chunks() {
    // 5000 lanes (three chunks): lane j has key j % 3 and value j. Row r (key r) takes the last
    // lane with j % 3 == r: 4998, 4999, 4997; row 3 (key 7) matches nothing and keeps its base.
    let (rows, lanes) = (4, 5000);
    let cand: Vec<f64> = (0..rows * lanes).map(|i| (i % lanes) as f64).collect();
    let lane: Vec<f64> = (0..rows * lanes)
        .map(|i| ((i % lanes) % 3) as f64)
        .collect();
    let spec = SelectSpec {
        rows,
        lanes,
        dtype: DType::I32,
        lane_keys: LaneKeys::Tensor,
        mode: SelectMode::Scatter(ScatterReduction::None),
    };
    let p = select_reduce(&TargetSpec::trn2(), &spec).unwrap();
    let out = run(
        &p,
        vec![
            ("cand", t(DType::I32, &[rows, lanes], &cand)),
            ("key", t(DType::F32, &[rows], &[0.0, 1.0, 2.0, 7.0])),
            ("lane", t(DType::F32, &[rows, lanes], &lane)),
            ("base", t(DType::I32, &[rows], &[-1.0, -2.0, -3.0, -4.0])),
        ],
    );
    assert_eq!(out["y"], vec![4998.0, 4999.0, 4997.0, -4.0]);
}

#[test]
fn onehot_matmul_picks_table_rows_exactly() {
    // 300 keys (three token blocks) into a 260 x 600 table (three vocabulary blocks, two PSUM
    // banks): key t = (t * 7) % 263 - 1, so some keys are -1 or past the table (rows of
    // zeros). Table values are distinct non-integers, so any mixing would show.
    let (tokens, vocab, dim) = (300, 260, 600);
    let table: Vec<f64> = (0..vocab * dim)
        .map(|i| ((i * 37) % 1001) as f64 / 8.0 - 60.0)
        .collect();
    let keys: Vec<f64> = (0..tokens).map(|t| ((t * 7) % 263) as f64 - 1.0).collect();
    for dtype in [DType::F32, DType::Bf16] {
        let tab: Vec<f64> = table.iter().map(|&v| dtype.round(v)).collect();
        let p = tessera_kernels::library::index::onehot_matmul(
            &TargetSpec::trn2(),
            tokens,
            vocab,
            dim,
            dtype,
        )
        .unwrap();
        let out = run(
            &p,
            vec![
                ("table", t(dtype, &[vocab, dim], &tab)),
                ("key", t(DType::F32, &[tokens], &keys)),
            ],
        );
        let mut want = Vec::new();
        for &k in &keys {
            if (0.0..vocab as f64).contains(&k) {
                let r = k as usize;
                want.extend_from_slice(&tab[r * dim..(r + 1) * dim]);
            } else {
                want.extend(std::iter::repeat_n(0.0, dim));
            }
        }
        assert_eq!(out["y"], want, "{dtype}");
    }
}
