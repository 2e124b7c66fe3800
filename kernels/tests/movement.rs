//! The DMA-only data movement kernels against ndarray: permutation of up to 7 axes (more than
//! one access pattern holds, so the unrolling is exercised), casts, concatenation, and the
//! transposed-operand matmul variant. Movement is exact, so results must be bit-identical.

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_ir::{DType, HostTensor, TargetSpec, TileProgram};
use tessera_kernels::library;

fn run(p: &TileProgram, inputs: Vec<(&str, HostTensor)>) -> BTreeMap<String, HostTensor> {
    let inputs = inputs
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
    interp::run(p, &TargetSpec::trn2(), &inputs).unwrap_or_else(|e| panic!("{}: {e}", p.name))
}

fn counting(shape: &[usize]) -> ArrayD<f64> {
    // Distinct values: the row-major index itself.
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f64).collect()).expect("shape")
}

fn host(a: &ArrayD<f64>, dtype: DType) -> HostTensor {
    HostTensor::from_f64(dtype, a.shape(), &a.iter().copied().collect::<Vec<_>>())
}

fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(1usize..=5, 1..=7).prop_flat_map(|shape| {
        let n = shape.len();
        (Just(shape), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn permute_matches_ndarray((shape, perm) in shape_and_perm()) {
        let x = counting(&shape);
        let p = library::permute(&TargetSpec::trn2(), &shape, &perm, DType::F32).unwrap();
        let out = run(&p, vec![("x", host(&x, DType::F32))]);
        let want = x.clone().permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned();
        prop_assert_eq!(out["y"].shape.clone(), want.shape().to_vec());
        prop_assert_eq!(out["y"].to_f64_vec(), want.iter().copied().collect::<Vec<_>>());
    }

    #[test]
    fn concat_matches_ndarray(base in prop::collection::vec(1usize..=4, 1..=4), extra in prop::collection::vec(0usize..=3, 1..=3), axis_pick in 0usize..4) {
        let axis = axis_pick % base.len();
        let shapes: Vec<Vec<usize>> = std::iter::once(base[axis]).chain(extra).map(|n| {
            let mut s = base.clone();
            s[axis] = n;
            s
        }).collect();
        let arrays: Vec<ArrayD<f64>> = shapes.iter().enumerate().map(|(i, s)| counting(s).mapv(|v| v + 1000.0 * i as f64)).collect();
        let p = library::concat(&TargetSpec::trn2(), &shapes, axis, DType::F32).unwrap();
        let names: Vec<String> = (0..shapes.len()).map(|i| format!("x{i}")).collect();
        let inputs = arrays.iter().zip(&names).filter(|(a, _)| !a.is_empty()).map(|(a, n)| (n.as_str(), host(a, DType::F32))).collect();
        let out = run(&p, inputs);
        let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
        let want = ndarray::concatenate(ndarray::Axis(axis), &views).unwrap();
        prop_assert_eq!(out["y"].to_f64_vec(), want.iter().copied().collect::<Vec<_>>());
    }
}

#[test]
fn cast_rounds_like_a_store() {
    let values = [1.0 + 1.0 / 256.0, -2.75, 70000.0, 0.1];
    let x = HostTensor::from_f64(DType::F32, &[4], &values);
    for to in [DType::Bf16, DType::F16, DType::I32] {
        let p = library::cast(&TargetSpec::trn2(), &[4], DType::F32, to).unwrap();
        let out = run(&p, vec![("x", x.clone())]);
        let want: Vec<f64> = values.iter().map(|&v| to.round(v as f32 as f64)).collect();
        assert_eq!(out["y"].to_f64_vec(), want, "to {to}");
    }
}

#[test]
fn large_permutes_are_split_into_bounded_dmas() {
    let shape = [300, 700];
    let p = library::permute(&TargetSpec::trn2(), &shape, &[1, 0], DType::F32).unwrap();
    let dmas = p
        .insts
        .iter()
        .filter(|i| i.op.opcode() == "dma_copy")
        .count();
    // 210,000 elements at most 65,536 per DMA: 700 rows of 300 in blocks of 218 rows -> 4 DMAs.
    assert_eq!(dmas, 4);
    let x = counting(&shape);
    let out = run(&p, vec![("x", host(&x, DType::F32))]);
    assert_eq!(
        out["y"].to_f64_vec(),
        x.t().iter().copied().collect::<Vec<_>>()
    );
}

#[test]
fn matmul_with_transposed_operands() {
    let (m, k, n) = (130, 70, 515);
    let a = counting(&[m, k]).mapv(|v| (v % 13.0) - 6.0);
    let b = counting(&[k, n]).mapv(|v| (v % 7.0) - 3.0);
    let want = a
        .clone()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap()
        .dot(&b.clone().into_dimensionality::<ndarray::Ix2>().unwrap());
    for (ta, tb) in [(false, true), (true, false), (true, true)] {
        let a_in = if ta { a.t().to_owned() } else { a.clone() };
        let b_in = if tb { b.t().to_owned() } else { b.clone() };
        let p = library::matmul_t(&TargetSpec::trn2(), m, k, n, ta, tb, DType::F32, DType::F32)
            .unwrap();
        let out = run(
            &p,
            vec![
                (
                    "a",
                    host(&a_in.as_standard_layout().into_owned(), DType::F32),
                ),
                (
                    "b",
                    host(&b_in.as_standard_layout().into_owned(), DType::F32),
                ),
            ],
        );
        // Small integers: every product and partial sum is exact in f32, so equality is exact.
        assert_eq!(
            out["c"].to_f64_vec(),
            want.iter().copied().collect::<Vec<_>>(),
            "trans_a={ta} trans_b={tb}"
        );
    }
}
