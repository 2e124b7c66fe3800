//! The emulator's dynamic checks: each bad program or input is a typed error with a message
//! naming the instruction, the operand and the element.
//!
//! Most of these programs also break a static rule, so `interp::run` reports the verifier's
//! error first (checked in `the_verifier_reports_static_errors_first`); the dynamic checks are
//! exercised through `run_unverified`, since they are the emulator's own defence.

mod common;

use common::*;
use tessera_backends::interp::{InterpError, PoisonedElement};
use tessera_ir::*;

fn err(g: &Prog, inputs: Vec<(&str, HostTensor)>) -> InterpError {
    match g.run_unverified(inputs) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// y = x + t where t is allocated but never written.
fn reads_unwritten_tile() -> Prog {
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[4, 16]);
    let y = g.output("y", DType::F32, &[4, 16]);
    let a = g.sbuf("a", DType::F32, 4, 16);
    let b = g.sbuf("b", DType::F32, 4, 16);
    g.load(a, x, 4, 16);
    // b's partition 0 is written; partitions 1.. are not.
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: full(b, 1, 16),
        value: 0.0,
    });
    g.op(Op::TensorTensor {
        engine: Engine::Dve,
        op: AluOp::Add,
        dst: full(a, 4, 16),
        lhs: full(a, 4, 16),
        rhs: full(b, 4, 16),
    });
    g.store(y, a, 4, 16);
    g
}

#[test]
fn poison_read_names_instruction_operand_and_element() {
    let mut g = reads_unwritten_tile();
    g.p.insts[4].loc = Some(SourceLoc {
        file: "k.rs".into(),
        line: 7,
        column: 0,
    });
    let e = err(&g, vec![("x", f32s(&[4, 16], &[1.0; 64]))]);
    match &e {
        InterpError::PoisonRead {
            site,
            role,
            element,
        } => {
            assert_eq!(
                (site.index, site.opcode, *role),
                (4, "tensor_tensor", "rhs")
            );
            assert_eq!(
                element,
                &PoisonedElement {
                    name: "%b".into(),
                    partition: Some(1),
                    element: 0
                }
            );
        }
        other => panic!("wrong error: {other}"),
    }
    assert_eq!(
        e.to_string(),
        "tensor_tensor #4: `rhs` reads %b[partition 1, element 0] before it was written (at k.rs:7)"
    );
}

#[test]
fn poison_read_of_an_hbm_output() {
    let mut g = Prog::new();
    let y = g.output("y", DType::F32, &[2, 2]);
    let t = g.sbuf("t", DType::F32, 2, 2);
    g.load(t, y, 2, 2);
    let e = err(&g, vec![]);
    assert_eq!(
        e.to_string(),
        "dma_copy #1: `src` reads @y[element 0] before it was written"
    );
}

#[test]
fn accumulating_matmul_into_unwritten_psum_is_a_poison_read() {
    let mut g = Prog::new();
    let y = g.output("y", DType::F32, &[1, 1]);
    let a = g.sbuf("a", DType::F32, 1, 1);
    let ps = g.psum("ps", 1, 1);
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: full(a, 1, 1),
        value: 1.0,
    });
    g.op(Op::Matmul {
        dst: full(ps, 1, 1),
        stationary: full(a, 1, 1),
        moving: full(a, 1, 1),
        start: false,
        stop: true,
    });
    // DMA cannot read PSUM: evacuate through SBUF as a real kernel does.
    let out = g.sbuf("out", DType::F32, 1, 1);
    g.op(Op::TensorCopy {
        engine: Engine::Dve,
        dst: full(out, 1, 1),
        src: full(ps, 1, 1),
    });
    g.store(y, out, 1, 1);
    let e = match g.run(vec![]) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    };
    assert!(
        matches!(&e, InterpError::PoisonRead { role: "dst", element, .. } if element.name == "%ps"),
        "{e}"
    );
}

#[test]
fn out_of_bounds_views() {
    // Free offsets past the end of the partition.
    let mut g = Prog::new();
    let a = g.sbuf("a", DType::F32, 2, 8);
    let mut v = full(a, 2, 4);
    v.offset = 5;
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: v,
        value: 0.0,
    });
    let e = err(&g, vec![]);
    assert!(
        matches!(&e, InterpError::OutOfBounds { role: "dst", .. }),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "memset #1: `dst` view of %a is out of bounds: elements 5..=8 fall outside 0..8 of each partition"
    );

    // Partitions past the buffer.
    let mut g = Prog::new();
    let a = g.sbuf("a", DType::F32, 2, 8);
    let mut v = full(a, 2, 8);
    v.start_partition = 1;
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: v,
        value: 0.0,
    });
    let e = err(&g, vec![]);
    assert!(
        e.to_string()
            .contains("partitions 1..3 but the buffer has 2"),
        "{e}"
    );

    // A negative stride walking below element 0, and an HBM view past the tensor.
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[2, 2]);
    let a = g.sbuf("a", DType::F32, 1, 8);
    g.op(Op::DmaCopy {
        dst: DmaOperand::Tile(tile(a, 1, &[(-1, 4)])),
        src: hbm(x, 0, &[(1, 4)]),
    });
    assert!(matches!(
        err(&g, vec![("x", f32s(&[2, 2], &[0.0; 4]))]),
        InterpError::OutOfBounds { .. }
    ));
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[2, 2]);
    let a = g.sbuf("a", DType::F32, 1, 8);
    g.op(Op::DmaCopy {
        dst: DmaOperand::Tile(full(a, 1, 4)),
        src: hbm(x, 1, &[(1, 4)]),
    });
    let e = err(&g, vec![("x", f32s(&[2, 2], &[0.0; 4]))]);
    assert!(
        matches!(&e, InterpError::OutOfBounds { name, .. } if name == "@x"),
        "{e}"
    );
}

#[test]
fn use_after_free_and_before_alloc() {
    let mut g = Prog::new();
    let a = g.sbuf("a", DType::F32, 1, 4);
    g.op(Op::Free { buf: a });
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: full(a, 1, 4),
        value: 0.0,
    });
    let e = err(&g, vec![]);
    assert_eq!(
        e.to_string(),
        "memset #2: `dst` uses %a, which is already freed"
    );

    let mut g = Prog::new();
    let a = g.declare("a", Space::Sbuf, DType::F32, 1, &[4]);
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: full(a, 1, 4),
        value: 0.0,
    });
    assert!(matches!(
        err(&g, vec![]),
        InterpError::NotLive {
            state: "not allocated",
            ..
        }
    ));

    let mut g = Prog::new();
    let a = g.sbuf("a", DType::F32, 1, 4);
    g.op(Op::Alloc { buf: a });
    assert!(matches!(
        err(&g, vec![]),
        InterpError::NotLive {
            state: "already allocated",
            ..
        }
    ));
}

#[test]
fn a_freed_buffer_loses_its_contents() {
    // Re-allocating after free gives fresh poisoned storage.
    let mut g = Prog::new();
    let y = g.output("y", DType::F32, &[1, 1]);
    let a = g.sbuf("a", DType::F32, 1, 1);
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: full(a, 1, 1),
        value: 3.0,
    });
    g.op(Op::Free { buf: a });
    g.op(Op::Alloc { buf: a });
    g.store(y, a, 1, 1);
    assert!(matches!(err(&g, vec![]), InterpError::PoisonRead { .. }));
}

#[test]
fn unknown_ids_are_errors_not_panics() {
    let mut g = Prog::new();
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: full(BufId(9), 1, 1),
        value: 0.0,
    });
    assert_eq!(
        err(&g, vec![]).to_string(),
        "memset #0: `dst` refers to buffer #9, which the program does not declare"
    );
    let mut g = Prog::new();
    let a = g.sbuf("a", DType::F32, 1, 1);
    g.op(Op::DmaCopy {
        dst: DmaOperand::Tile(full(a, 1, 1)),
        src: hbm(TensorId(3), 0, &[(1, 1)]),
    });
    assert!(matches!(err(&g, vec![]), InterpError::UnknownId { .. }));
    let mut g = Prog::new();
    g.op(Op::Free { buf: BufId(0) });
    assert!(matches!(err(&g, vec![]), InterpError::UnknownId { .. }));
}

#[test]
fn malformed_instructions_are_errors() {
    let mut g = Prog::new();
    let a = g.sbuf("a", DType::F32, 2, 4);
    let b = g.sbuf("b", DType::F32, 2, 2);
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: full(a, 2, 4),
        value: 0.0,
    });
    g.op(Op::TensorTensor {
        engine: Engine::Dve,
        op: AluOp::Add,
        dst: full(b, 2, 2),
        lhs: full(a, 2, 4),
        rhs: full(a, 2, 4),
    });
    let e = err(&g, vec![]);
    assert_eq!(
        e.to_string(),
        "tensor_tensor #3: `lhs` is 2 partitions x 4 elements but `dst` is 2 partitions x 2 elements"
    );

    let mut g = Prog::new();
    let a = g.sbuf("a", DType::F32, 2, 4);
    let b = g.sbuf("b", DType::F32, 2, 1);
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: full(a, 2, 4),
        value: 0.0,
    });
    g.op(Op::TensorReduce {
        engine: Engine::Dve,
        op: ReduceOp::Sum,
        dst: full(b, 2, 1),
        src: full(a, 2, 4),
        axes: 2,
    });
    assert!(matches!(
        err(&g, vec![]),
        InterpError::BadInstruction { .. }
    ));

    // A broadcast view too large to emulate.
    let mut g = Prog::new();
    let a = g.sbuf("a", DType::F32, 1, 1);
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: tile(a, 1, &[(0, u32::MAX), (0, u32::MAX)]),
        value: 0.0,
    });
    assert!(matches!(
        err(&g, vec![]),
        InterpError::BadInstruction { .. }
    ));

    // A matmul whose operands disagree on K.
    let mut g = Prog::new();
    let a = g.sbuf("a", DType::F32, 2, 2);
    let b = g.sbuf("b", DType::F32, 3, 2);
    let ps = g.psum("ps", 2, 2);
    g.op(Op::Matmul {
        dst: full(ps, 2, 2),
        stationary: full(a, 2, 2),
        moving: full(b, 3, 2),
        start: true,
        stop: true,
    });
    assert!(matches!(err(&g, vec![]), InterpError::ShapeMismatch { .. }));

    // An absurd buffer declaration.
    let mut g = Prog::new();
    g.declare("huge", Space::Sbuf, DType::F32, 128, &[usize::MAX / 2, 4]);
    g.op(Op::Alloc { buf: BufId(0) });
    assert!(matches!(
        err(&g, vec![]),
        InterpError::BadInstruction { .. }
    ));
}

#[test]
fn output_not_fully_written() {
    let mut g = Prog::new();
    let y = g.output("y", DType::F32, &[2, 3]);
    let a = g.sbuf("a", DType::F32, 1, 3);
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: full(a, 1, 3),
        value: 1.0,
    });
    g.op(Op::DmaCopy {
        dst: hbm(y, 0, &[(1, 3)]),
        src: DmaOperand::Tile(full(a, 1, 3)),
    });
    let e = err(&g, vec![]);
    assert_eq!(
        e,
        InterpError::OutputNotWritten {
            name: "y".into(),
            element: 3,
            index: vec![1, 0]
        }
    );
    assert_eq!(
        e.to_string(),
        "output `y` is not fully written: element 3 (index [1, 0]) was never written"
    );
}

#[test]
fn input_problems() {
    let mut g = Prog::new();
    g.input("x", DType::F32, &[2, 3]);
    g.output("y", DType::F32, &[1]);
    let e = err(&g, vec![("x", HostTensor::zeros(DType::Bf16, &[2, 3]))]);
    assert_eq!(
        e.to_string(),
        "input `x`: expected f32[2, 3], given bf16[2, 3]"
    );
    let e = err(&g, vec![("x", HostTensor::zeros(DType::F32, &[3, 2]))]);
    assert_eq!(
        e.to_string(),
        "input `x`: expected f32[2, 3], given f32[3, 2]"
    );
    let mut short = HostTensor::zeros(DType::F32, &[2, 3]);
    short.data.pop();
    assert!(matches!(
        err(&g, vec![("x", short)]),
        InterpError::InputMismatch { .. }
    ));
    assert_eq!(
        err(&g, vec![]).to_string(),
        "input `x` (f32[2, 3]) was not given"
    );
    let e = err(
        &g,
        vec![
            ("x", HostTensor::zeros(DType::F32, &[2, 3])),
            ("y", HostTensor::zeros(DType::F32, &[1])),
        ],
    );
    assert_eq!(
        e.to_string(),
        "input `y` is not an input tensor of the program (inputs: x)"
    );
}

#[test]
fn the_verifier_reports_static_errors_first() {
    // Use after free: a static rule, so `run` names the verifier's rule.
    let mut g = Prog::new();
    let a = g.sbuf("a", DType::F32, 1, 4);
    g.op(Op::Free { buf: a });
    g.op(Op::Memset {
        engine: Engine::Dve,
        dst: full(a, 1, 4),
        value: 0.0,
    });
    let e = match g.run(vec![]) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    };
    assert!(matches!(e, InterpError::Verify(_)), "{e}");
    assert!(
        e.to_string().contains("memset #2: dst %a is not live"),
        "{e}"
    );
}
