//! Random, mostly malformed machine programs: the emulator answers with outputs or a typed
//! error, never a panic, whatever the queues, waits, placements and operands.

use proptest::prelude::*;
use std::collections::BTreeMap;
use tessera_backends::interp::{self, MachineRunOptions};
use tessera_ir::*;

fn view() -> impl Strategy<Value = TileAccess> {
    (
        0u32..5,
        0u32..3,
        0u32..5,
        0u64..12,
        prop::collection::vec((-3i64..5, 0u32..5), 0..3),
    )
        .prop_map(
            |(buf, start_partition, partitions, offset, dims)| TileAccess {
                buf: BufId(buf),
                start_partition,
                partitions,
                offset,
                dims: dims.into_iter().map(|(s, n)| Dim::new(s, n)).collect(),
            },
        )
}

fn dma_end() -> impl Strategy<Value = DmaOperand> {
    prop_oneof![
        view().prop_map(DmaOperand::Tile),
        (
            0u32..4,
            0u64..8,
            prop::collection::vec((-2i64..5, 0u32..5), 0..3)
        )
            .prop_map(|(t, offset, dims)| DmaOperand::Hbm(HbmAccess {
                tensor: TensorId(t),
                offset,
                dims: dims.into_iter().map(|(s, n)| Dim::new(s, n)).collect(),
            })),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let alu = prop::sample::select(tessera_ir::isa::ALL_ALU_OPS.to_vec());
    prop_oneof![
        1 => (0u32..5).prop_map(|b| Op::Alloc { buf: BufId(b) }),
        6 => (dma_end(), dma_end()).prop_map(|(dst, src)| Op::DmaCopy { dst, src }),
        6 => (view(), view(), view(), any::<bool>()).prop_map(|(dst, stationary, moving, start)| {
            Op::Matmul {
                dst,
                stationary,
                moving,
                start,
                stop: true,
            }
        }),
        6 => (view(), view(), prop::option::of(view())).prop_map(|(dst, src, accum)| Op::Activation {
            dst,
            src,
            func: ActFunc::Exp,
            scale: Scalar::Imm(0.5),
            bias: Scalar::PerPartition(TileAccess {
                buf: BufId(1),
                start_partition: 0,
                partitions: 2,
                offset: 0,
                dims: vec![Dim::new(1, 1)],
            }),
            accum,
        }),
        6 => (alu, view(), view(), view()).prop_map(|(op, dst, lhs, rhs)| Op::TensorTensor {
            engine: Engine::Dve,
            op,
            dst,
            lhs,
            rhs
        }),
        6 => (view(), -3.0f64..3.0).prop_map(|(dst, value)| Op::Memset {
            engine: Engine::Pool,
            dst,
            value
        }),
        6 => (view(), view()).prop_map(|(dst, src)| Op::Transpose { dst, src }),
    ]
}

fn inst() -> impl Strategy<Value = MachineInst> {
    (op(), prop::collection::vec((0u32..6, 0u32..4), 0..3)).prop_map(|(op, waits)| MachineInst {
        op,
        waits: waits
            .into_iter()
            .map(|(q, count)| Wait {
                queue: QueueId(q),
                count,
            })
            .collect(),
        origin: Origin::default(),
    })
}

fn placement() -> impl Strategy<Value = Option<Placement>> {
    prop_oneof![
        1 => Just(None),
        150 => (prop_oneof![0u32..6, 0u32..126], 0u64..96).prop_map(|(partition, byte_offset)| Some(Placement {
            partition,
            byte_offset
        })),
    ]
}

/// Puts each instruction on a queue of its own engine most of the time, so more programs get
/// past the structural check into the race detector and execution.
fn program(
    insts: Vec<(usize, MachineInst)>,
    placements: Vec<Option<Placement>>,
    arena: (u64, Option<u64>),
    repair: bool,
) -> MachineProgram {
    let engines = [
        Engine::Dma,
        Engine::Act,
        Engine::Dve,
        Engine::Pool,
        Engine::Pe,
    ];
    let mut queues: Vec<Queue> = engines
        .iter()
        .map(|&engine| Queue {
            name: engine.name().into(),
            engine,
            insts: Vec::new(),
        })
        .collect();
    for (pick, inst) in insts {
        let home = inst
            .op
            .engine()
            .and_then(|e| engines.iter().position(|&x| x == e))
            .unwrap_or(0);
        let q = if pick == 0 { (home + 1) % 5 } else { home };
        queues[q].insts.push(inst);
    }
    if repair {
        // Clamp every wait to what the structural check accepts, so these programs reach the
        // race detector and the scheduler (where deadlocks are still possible).
        let lens: Vec<u32> = queues.iter().map(|q| q.insts.len() as u32).collect();
        for (qi, q) in queues.iter_mut().enumerate() {
            for (i, inst) in q.insts.iter_mut().enumerate() {
                for w in &mut inst.waits {
                    let own = w.queue.0 as usize == qi;
                    let limit = if own {
                        i as u32
                    } else {
                        lens.get(w.queue.0 as usize).copied().unwrap_or(w.count)
                    };
                    w.count = w.count.min(limit);
                }
            }
        }
    }
    let dtypes = [DType::F32, DType::Bf16, DType::F32, DType::I32, DType::F32];
    let buffers = placements
        .into_iter()
        .enumerate()
        .map(|(i, placement)| Buffer {
            name: format!("b{i}"),
            space: if i == 4 { Space::Psum } else { Space::Sbuf },
            dtype: dtypes[i % 5],
            partitions: 4,
            free_shape: vec![3, 4],
            placement,
        })
        .collect();
    let tensor = |name: &str, kind| HbmTensor {
        name: name.into(),
        dtype: DType::F32,
        shape: vec![4, 4],
        kind,
    };
    MachineProgram {
        name: "fuzz".into(),
        tensors: vec![
            tensor("x", TensorKind::Input),
            tensor("y", TensorKind::Output),
            tensor("s", TensorKind::Scratch),
        ],
        hbm_offsets: vec![None, None, arena.1],
        // Usually just large enough for `s`; sometimes 1 or 2 bytes short.
        scratch_bytes: (arena.1.unwrap_or(0) + 62 + arena.0),
        buffers,
        queues,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_machine_programs_never_panic(
        insts in prop::collection::vec((0usize..16, inst()), 0..10),
        placements in prop::collection::vec(placement(), 5),
        arena in (0u64..96, prop::option::weighted(0.95, 0u64..96)),
        seed in any::<u64>(),
        check_races in any::<bool>(),
        repair in any::<bool>(),
    ) {
        let p = program(insts, placements, arena, repair);
        let x = HostTensor::from_f64(DType::F32, &[4, 4], &[0.5; 16]);
        let inputs = BTreeMap::from([("x".to_string(), x)]);
        let options = MachineRunOptions { seed, check_races };
        let _ = interp::run_machine(&p, &TargetSpec::trn2(), &inputs, &options);
    }
}

#[test]
fn wrong_inputs_are_errors() {
    let p = program(Vec::new(), Vec::new(), (64, Some(0)), false);
    let options = MachineRunOptions::default();
    let err = interp::run_machine(
        &p,
        &TargetSpec::trn2(),
        &BTreeMap::<String, HostTensor>::new(),
        &options,
    )
    .expect_err("missing input");
    assert!(err.to_string().contains("input `x`"), "{err}");
}
