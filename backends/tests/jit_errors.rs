//! The jit's checks and bookkeeping: out-of-bounds views are errors found before running,
//! deadlocks are errors, the kernel cache and program plans are reused across runs (and a
//! changed program is planned again), and instructions the jit does
//! not compile run through interp's fallback with the same results.

use std::collections::BTreeMap;
use tessera_backends::interp::{self, MachineRunOptions};
use tessera_backends::jit::{Jit, JitError};
use tessera_ir::*;

/// The Cranelift jit, and with the `mlir` feature the jit with MLIR kernels: the bookkeeping
/// tests run on both.
fn jits() -> Vec<Jit> {
    let cranelift = Jit::new().unwrap();
    #[cfg(feature = "mlir")]
    return vec![cranelift, Jit::with_mlir().unwrap()];
    #[cfg(not(feature = "mlir"))]
    vec![cranelift]
}

fn tile(offset: u64, len: u32) -> TileAccess {
    TileAccess {
        buf: BufId(0),
        start_partition: 0,
        partitions: 2,
        offset,
        dims: vec![Dim::new(1, len)],
    }
}

fn hbm(t: u32) -> DmaOperand {
    DmaOperand::Hbm(HbmAccess {
        tensor: TensorId(t),
        offset: 0,
        dims: vec![Dim::new(4, 2), Dim::new(1, 4)],
    })
}

/// x (2x4) -> SBUF -> `middle` -> y, one queue per instruction, chained by waits.
fn program(middle: Vec<Op>) -> MachineProgram {
    let tensor = |name: &str, kind| HbmTensor {
        name: name.into(),
        dtype: DType::F32,
        shape: vec![2, 4],
        kind,
    };
    let mut ops = vec![Op::DmaCopy {
        dst: DmaOperand::Tile(tile(0, 4)),
        src: hbm(0),
    }];
    ops.extend(middle);
    ops.push(Op::DmaCopy {
        dst: hbm(1),
        src: DmaOperand::Tile(tile(0, 4)),
    });
    let queues = ops
        .into_iter()
        .enumerate()
        .map(|(i, op)| Queue {
            name: format!("q{i}"),
            engine: op.engine().unwrap_or(Engine::Dve),
            insts: vec![MachineInst {
                op,
                waits: (i > 0)
                    .then(|| Wait {
                        queue: QueueId(i as u32 - 1),
                        count: 1,
                    })
                    .into_iter()
                    .collect(),
                origin: Origin::default(),
            }],
        })
        .collect();
    MachineProgram {
        name: "p".into(),
        tensors: vec![
            tensor("x", TensorKind::Input),
            tensor("y", TensorKind::Output),
        ],
        hbm_offsets: vec![None, None],
        scratch_bytes: 0,
        buffers: vec![Buffer {
            name: "t".into(),
            space: Space::Sbuf,
            dtype: DType::F32,
            partitions: 2,
            free_shape: vec![8],
            placement: Some(Placement {
                partition: 0,
                byte_offset: 0,
            }),
        }],
        queues,
    }
}

fn inputs() -> BTreeMap<String, HostTensor> {
    let x = HostTensor::from_f64(
        DType::F32,
        &[2, 4],
        &[1.0, -2.0, 3.5, 4.0, 0.25, 6.0, -7.0, 8.0],
    );
    BTreeMap::from([("x".to_string(), x)])
}

fn add(dst: TileAccess, lhs: TileAccess, rhs: TileAccess) -> Op {
    Op::TensorTensor {
        engine: Engine::Dve,
        op: AluOp::Add,
        dst,
        lhs,
        rhs,
    }
}

#[test]
fn out_of_bounds_view_is_an_error_before_running() {
    // Elements 6..10 of an 8-element partition.
    let p = program(vec![add(tile(0, 4), tile(0, 4), tile(6, 4))]);
    let mut jit = Jit::new().unwrap();
    let err = jit
        .run_machine(&p, &TargetSpec::trn2(), &inputs())
        .unwrap_err();
    assert!(
        matches!(&err, JitError::OutOfBounds { role, .. } if role == "rhs"),
        "{err}"
    );
    assert!(err.to_string().contains("out of bounds"), "{err}");
    // Planning stops at the bad instruction: at most the first DMA's kernel was compiled, and
    // nothing ran.
    assert!(jit.stats().compiled <= 1);
    // Negative strides reaching below element 0, and partitions beyond the buffer.
    let below = TileAccess {
        dims: vec![Dim::new(-1, 4)],
        ..tile(2, 4)
    };
    let p = program(vec![add(tile(0, 4), tile(0, 4), below)]);
    assert!(matches!(
        jit.run_machine(&p, &TargetSpec::trn2(), &inputs()),
        Err(JitError::OutOfBounds { .. })
    ));
    let parts = TileAccess {
        start_partition: 1,
        ..tile(0, 4)
    };
    let p = program(vec![add(tile(0, 4), tile(0, 4), parts)]);
    assert!(matches!(
        jit.run_machine(&p, &TargetSpec::trn2(), &inputs()),
        Err(JitError::OutOfBounds { .. })
    ));
}

#[test]
fn second_run_compiles_nothing() {
    for jit in jits() {
        second_run_compiles_nothing_on(jit);
    }
}

fn second_run_compiles_nothing_on(mut jit: Jit) {
    let p = program(vec![add(tile(4, 4), tile(0, 4), tile(0, 4))]);
    let first = jit.run_machine(&p, &TargetSpec::trn2(), &inputs()).unwrap();
    let compiled = jit.stats().compiled;
    assert!(compiled > 0);
    let hits = jit.stats().cache_hits;
    let second = jit.run_machine(&p, &TargetSpec::trn2(), &inputs()).unwrap();
    assert_eq!(first, second);
    assert_eq!(jit.stats().compiled, compiled);
    assert_eq!(jit.stats().cache_hits, hits + p.inst_count() as u64);
    assert_eq!(jit.kernels() as u64, compiled);
}

/// A jit keeps the plans of the programs it ran; a program differing from one of them in a
/// single field (here the operation) is planned again, and alternating between them gives each
/// its own result.
#[test]
fn changed_program_is_planned_again() {
    for jit in jits() {
        changed_program_is_planned_again_on(jit);
    }
}

fn changed_program_is_planned_again_on(mut jit: Jit) {
    let double = program(vec![add(tile(0, 4), tile(0, 4), tile(0, 4))]);
    let mut square = double.clone();
    if let Op::TensorTensor { op, .. } = &mut square.queues[1].insts[0].op {
        *op = AluOp::Mul;
    }
    let target = TargetSpec::trn2();
    let x = inputs()["x"].to_f64_vec();
    for _ in 0..2 {
        let y = jit.run_machine(&double, &target, &inputs()).unwrap()["y"].to_f64_vec();
        assert_eq!(y, x.iter().map(|v| v + v).collect::<Vec<_>>());
        let y = jit.run_machine(&square, &target, &inputs()).unwrap()["y"].to_f64_vec();
        assert_eq!(y, x.iter().map(|v| v * v).collect::<Vec<_>>());
    }
}

#[test]
fn deadlock_is_an_error() {
    let mut p = program(vec![]);
    // The first DMA waits for the last one.
    p.queues[0].insts[0].waits = vec![Wait {
        queue: QueueId(1),
        count: 1,
    }];
    let mut jit = Jit::new().unwrap();
    let err = jit
        .run_machine(&p, &TargetSpec::trn2(), &inputs())
        .unwrap_err();
    assert!(matches!(err, JitError::Deadlock { .. }), "{err}");
}

#[test]
fn uncompiled_instructions_fall_back_to_interp() {
    for jit in jits() {
        uncompiled_instructions_fall_back_to_interp_on(jit);
    }
}

fn uncompiled_instructions_fall_back_to_interp_on(mut jit: Jit) {
    // `pow` and `iota` are not compiled; they run through interp's exec.
    let pow = Op::TensorTensor {
        engine: Engine::Dve,
        op: AluOp::Pow,
        dst: tile(0, 4),
        lhs: tile(0, 4),
        rhs: tile(0, 4),
    };
    let iota = Op::Iota {
        engine: Engine::Pool,
        dst: tile(4, 4),
        expr: AffineExpr {
            base: 1,
            partition: 3,
            free: vec![2],
        },
    };
    let p = program(vec![iota, pow, add(tile(0, 4), tile(0, 4), tile(4, 4))]);
    let got = jit.run_machine(&p, &TargetSpec::trn2(), &inputs()).unwrap();
    let want = interp::run_machine(
        &p,
        &TargetSpec::trn2(),
        &inputs(),
        &MachineRunOptions::default(),
    )
    .unwrap();
    assert_eq!(got, want);
    let stats = jit.stats();
    assert_eq!(stats.fallbacks, 2);
    assert_eq!(stats.fallback_ops.get("iota"), Some(&1));
    assert_eq!(stats.fallback_ops.get("tensor_tensor"), Some(&1));
}

#[test]
fn the_thread_jit_keeps_its_cache() {
    let p = program(vec![add(tile(0, 4), tile(0, 4), tile(0, 4))]);
    let a = tessera_backends::jit::run_machine(&p, &TargetSpec::trn2(), &inputs()).unwrap();
    let compiled = tessera_backends::jit::thread_stats().compiled;
    let b = tessera_backends::jit::run_machine(&p, &TargetSpec::trn2(), &inputs()).unwrap();
    assert_eq!(a, b);
    assert_eq!(tessera_backends::jit::thread_stats().compiled, compiled);
}

/// `program` with u64 tensors and tile.
fn program_u64(middle: Vec<Op>) -> MachineProgram {
    let mut p = program(middle);
    for t in &mut p.tensors {
        t.dtype = DType::U64;
    }
    p.buffers[0].dtype = DType::U64;
    p
}

fn u64_inputs(values: [u64; 8]) -> BTreeMap<String, HostTensor> {
    let x = HostTensor {
        dtype: DType::U64,
        shape: vec![2, 4],
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    BTreeMap::from([("x".to_string(), x)])
}

/// Both backends' results, which must agree (errors by message).
fn both(
    p: &MachineProgram,
    inputs: &BTreeMap<String, HostTensor>,
) -> Result<BTreeMap<String, HostTensor>, String> {
    let mut jit = Jit::new().unwrap();
    let got = jit
        .run_machine(p, &TargetSpec::trn2(), inputs)
        .map_err(|e| e.to_string());
    let want = interp::run_machine(
        p,
        &TargetSpec::trn2(),
        inputs,
        &MachineRunOptions::default(),
    )
    .map_err(|e| e.to_string());
    assert_eq!(got, want);
    got
}

#[test]
fn u64_beyond_2_53_moves_exactly_and_refuses_inexact_arithmetic() {
    // 2^53 + 1 and u64::MAX are not f64 values; 2^60 is, but is beyond exact arithmetic.
    let big = [(1 << 53) + 1, u64::MAX, 1 << 60, 4, 5, 6, 7, 8];
    let moved = both(&program_u64(vec![]), &u64_inputs(big)).unwrap();
    assert_eq!(moved["y"].data, u64_inputs(big)["x"].data);

    let sum = program_u64(vec![add(tile(0, 4), tile(0, 4), tile(0, 4))]);
    let err = both(&sum, &u64_inputs(big)).unwrap_err();
    assert!(
        err.contains("`lhs` holds the u64 value 9007199254740993") && err.contains("beyond 2^53"),
        "{err}"
    );

    // Values and sums up to 2^53 add exactly; a sum beyond 2^53 is refused, not rounded.
    let small = [1, 2, 3, 4, 5, 6, 7, 1 << 52];
    let y = both(&sum, &u64_inputs(small)).unwrap();
    assert_eq!(y["y"].data[..8], 2u64.to_le_bytes());
    assert_eq!(y["y"].data[56..], (1u64 << 53).to_le_bytes());
    let near = [1, 2, 3, 4, 5, 6, 7, 1 << 53];
    let err = both(&sum, &u64_inputs(near)).unwrap_err();
    assert!(err.contains("would receive the integer result"), "{err}");

    // max needs values f64 tells apart, not small ones: 2^60, 2^63 and the sentinel u64::MAX
    // (2^64 in f64, saturating back) are fine; 2^53 + 1 is not.
    let max = Op::TensorTensor {
        engine: Engine::Dve,
        op: AluOp::Max,
        dst: tile(0, 4),
        lhs: tile(0, 4),
        rhs: tile(0, 4),
    };
    let exact = [1 << 60, 1 << 63, u64::MAX, 4, 5, 6, 7, 8];
    let y = both(&program_u64(vec![max.clone()]), &u64_inputs(exact)).unwrap();
    assert_eq!(y["y"].data, u64_inputs(exact)["x"].data);
    let err = both(&program_u64(vec![max]), &u64_inputs(big)).unwrap_err();
    assert!(err.contains("f64 cannot hold exactly"), "{err}");
}

/// The jit reuses its memories from run to run, but a run still starts from zeroed on-chip
/// memory: what an earlier run left in SBUF where this run reads before writing is cleared, so
/// a (buggy) read of never-written memory gives zeros, as on the first run, not the earlier
/// run's data; gaps a strided write leaves count as never written.
#[test]
fn reused_memory_starts_zeroed() {
    for jit in jits() {
        reused_memory_starts_zeroed_on(jit);
    }
}

fn reused_memory_starts_zeroed_on(mut jit: Jit) {
    let with_dmas = |load: TileAccess, store: TileAccess| {
        let mut p = program(vec![]);
        p.queues[0].insts[0].op = Op::DmaCopy {
            dst: DmaOperand::Tile(load),
            src: hbm(0),
        };
        p.queues[1].insts[0].op = Op::DmaCopy {
            dst: hbm(1),
            src: DmaOperand::Tile(store),
        };
        p
    };
    // Writes x into columns 4..8 of the buffer and reads it back.
    let writer = with_dmas(tile(4, 4), tile(4, 4));
    // Writes columns 0..4, reads columns 4..8, which it never wrote.
    let reader = with_dmas(tile(0, 4), tile(4, 4));
    let target = TargetSpec::trn2();
    let fresh = jit.run_machine(&reader, &target, &inputs()).unwrap();
    assert!(fresh["y"].to_f64_vec().iter().all(|&v| v == 0.0));
    let written = jit.run_machine(&writer, &target, &inputs()).unwrap();
    assert_eq!(written["y"], inputs()["x"]);
    assert!(inputs()["x"].to_f64_vec().iter().any(|&v| v != 0.0));
    let again = jit.run_machine(&reader, &target, &inputs()).unwrap();
    assert_eq!(again["y"], fresh["y"]);
    // Writes x into the odd columns 1, 3, 5, 7 and reads columns 4..8: the even ones were
    // never written this run (the strided write leaves them out), so they read zero although
    // the writer left x there.
    let odd = TileAccess {
        offset: 1,
        dims: vec![Dim::new(2, 4)],
        ..tile(0, 4)
    };
    let strided = with_dmas(odd, tile(4, 4));
    jit.run_machine(&writer, &target, &inputs()).unwrap();
    let y = jit.run_machine(&strided, &target, &inputs()).unwrap()["y"].to_f64_vec();
    let x = inputs()["x"].to_f64_vec();
    let want: Vec<f64> = (0..2)
        .flat_map(|p| [0.0, x[4 * p + 2], 0.0, x[4 * p + 3]])
        .collect();
    assert_eq!(y, want);
}

/// The jit reads inputs in place (no copy per run), so a program writing an input tensor is
/// refused before anything runs, and the caller's tensor is untouched.
#[test]
fn writing_an_input_is_refused() {
    let write_x = Op::DmaCopy {
        dst: hbm(0),
        src: DmaOperand::Tile(tile(0, 4)),
    };
    let p = program(vec![write_x]);
    let given = inputs();
    for mut jit in jits() {
        let err = jit
            .run_machine(&p, &TargetSpec::trn2(), &given)
            .unwrap_err();
        assert!(matches!(err, JitError::BadInstruction { .. }), "{err}");
        assert!(err.to_string().contains("inputs are read-only"), "{err}");
    }
    assert_eq!(given, inputs());
}
