//! The `ewchain` kernel on the reference emulator (`interp`), against hand-computed results:
//! three-way broadcasting into `select`, bool results of predicates, and the Round-half-to-even
//! composition the compiler uses.

use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_ir::{AluOp, DType, HostTensor, TargetSpec};
use tessera_kernels::library::{self, EwChain, EwStep, Operand};

fn run(chain: &EwChain, inputs: &[(&[usize], Vec<f64>)]) -> Vec<f64> {
    let t = TargetSpec::trn2();
    let p = library::ewchain(&t, chain).expect("ewchain kernel");
    let inputs: BTreeMap<String, HostTensor> = inputs
        .iter()
        .enumerate()
        .map(|(k, (shape, v))| {
            let dtype = chain.inputs[k].1;
            (format!("x{k}"), HostTensor::from_f64(dtype, shape, v))
        })
        .collect();
    let out = interp::run(&p, &t, &inputs).expect("interp");
    out["y"].to_f64_vec()
}

#[test]
fn select_broadcasts_three_ways_across_partitions() {
    // cond [300, 1], x [300, 5] (x = row index), y scalar -1.
    let chain = EwChain {
        inputs: vec![
            (vec![300, 1], DType::Bool),
            (vec![300, 5], DType::F32),
            (vec![1], DType::F32),
        ],
        steps: vec![(
            EwStep::Select(Operand::In(0), Operand::In(1), Operand::In(2)),
            DType::F32,
        )],
        out_dtype: DType::F32,
    };
    let cond: Vec<f64> = (0..300).map(|r| (r % 3 == 0) as u8 as f64).collect();
    let x: Vec<f64> = (0..1500).map(|i| (i / 5) as f64).collect();
    let got = run(
        &chain,
        &[(&[300, 1], cond), (&[300, 5], x), (&[1], vec![-1.0])],
    );
    for (i, g) in got.iter().enumerate() {
        let r = i / 5;
        let want = if r % 3 == 0 { r as f64 } else { -1.0 };
        assert_eq!(*g, want, "element {i}");
    }
}

#[test]
fn predicate_writes_bool_and_round_is_half_to_even() {
    let less = EwChain {
        inputs: vec![(vec![4], DType::I32), (vec![1], DType::I32)],
        steps: vec![(
            EwStep::Alu(Operand::In(0), AluOp::Lt, Operand::In(1)),
            DType::Bool,
        )],
        out_dtype: DType::Bool,
    };
    let got = run(
        &less,
        &[(&[4], vec![-2.0, 0.0, 1.0, 5.0]), (&[1], vec![1.0])],
    );
    assert_eq!(got, [1.0, 1.0, 0.0, 0.0]);

    use Operand::{In, Step};
    let f = DType::F32;
    let round = EwChain {
        inputs: vec![(vec![8], f)],
        steps: vec![
            (EwStep::AluScalar(In(0), AluOp::Mod, 1.0), f),
            (EwStep::Alu(In(0), AluOp::Sub, Step(0)), f),
            (EwStep::AluScalar(Step(0), AluOp::Gt, 0.5), f),
            (EwStep::AluScalar(Step(0), AluOp::Eq, 0.5), f),
            (EwStep::AluScalar(Step(1), AluOp::Mod, 2.0), f),
            (EwStep::Alu(Step(3), AluOp::Mul, Step(4)), f),
            (EwStep::Alu(Step(2), AluOp::Add, Step(5)), f),
            (EwStep::Alu(Step(1), AluOp::Add, Step(6)), f),
        ],
        out_dtype: f,
    };
    let x = vec![0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6];
    let got = run(&round, &[(&[8], x)]);
    assert_eq!(got, [0.0, 2.0, 2.0, 0.0, -2.0, -2.0, 2.0, -3.0]);
}
