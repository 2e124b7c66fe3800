//! The timing model against hand-computed schedules and the roofline: random valid machine
//! programs never finish faster than their busiest queue, their tensor-engine FLOPs at peak,
//! their HBM bytes at the core's HBM bandwidth or their DMA bytes at the core's DMA bandwidth,
//! and never slower than running every instruction one after another.

use proptest::prelude::*;
use tessera_backends::timing::{TimingError, simulate};
use tessera_ir::*;

/// A machine program under construction; buffers are placed at the origin (timing ignores
/// addresses).
struct B {
    p: MachineProgram,
}

impl B {
    fn new() -> Self {
        B {
            p: MachineProgram {
                name: "timing".into(),
                ..Default::default()
            },
        }
    }

    fn tensor(&mut self, dtype: DType, shape: &[usize]) -> TensorId {
        self.p.tensors.push(HbmTensor {
            name: format!("t{}", self.p.tensors.len()),
            dtype,
            shape: shape.to_vec(),
            kind: TensorKind::Input,
        });
        self.p.hbm_offsets.push(None);
        TensorId(self.p.tensors.len() as u32 - 1)
    }

    fn buf(&mut self, dtype: DType, partitions: u32, free: u32) -> BufId {
        self.p.buffers.push(Buffer {
            name: format!("b{}", self.p.buffers.len()),
            space: Space::Sbuf,
            dtype,
            partitions,
            free_shape: vec![free as usize],
            placement: Some(Placement {
                partition: 0,
                byte_offset: 0,
            }),
        });
        BufId(self.p.buffers.len() as u32 - 1)
    }

    fn queue(&mut self, name: &str, engine: Engine) -> QueueId {
        self.p.queues.push(Queue {
            name: name.into(),
            engine,
            insts: vec![],
        });
        QueueId(self.p.queues.len() as u32 - 1)
    }

    fn push(&mut self, q: QueueId, op: Op, waits: &[(QueueId, u32)]) {
        self.p.queues[q.0 as usize].insts.push(MachineInst {
            op,
            waits: waits
                .iter()
                .map(|&(queue, count)| Wait { queue, count })
                .collect(),
            origin: Origin {
                node: "n".into(),
                tile_index: 0,
            },
        });
    }

    /// A [partitions, free] tile of a new buffer.
    fn tile(&mut self, dtype: DType, partitions: u32, free: u32) -> TileAccess {
        let buf = self.buf(dtype, partitions, free);
        TileAccess {
            buf,
            start_partition: 0,
            partitions,
            offset: 0,
            dims: vec![Dim::new(1, free)],
        }
    }

    /// `rows x cols` elements of a new HBM tensor, `step` elements apart within a row.
    fn hbm(&mut self, dtype: DType, rows: u32, cols: u32, step: u32) -> DmaOperand {
        let width = cols * step;
        let tensor = self.tensor(dtype, &[rows as usize, width as usize]);
        DmaOperand::Hbm(HbmAccess {
            tensor,
            offset: 0,
            dims: vec![Dim::new(width as i64, rows), Dim::new(step as i64, cols)],
        })
    }
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} != {b}");
}

fn add(b: &mut B, p: u32, f: u32) -> Op {
    let (dst, lhs, rhs) = (
        b.tile(DType::F32, p, f),
        b.tile(DType::F32, p, f),
        b.tile(DType::F32, p, f),
    );
    Op::TensorTensor {
        engine: Engine::Dve,
        op: AluOp::Add,
        dst,
        lhs,
        rhs,
    }
}

fn exp(b: &mut B, p: u32, f: u32) -> Op {
    let (dst, src) = (b.tile(DType::F32, p, f), b.tile(DType::F32, p, f));
    Op::Activation {
        dst,
        src,
        func: ActFunc::Exp,
        scale: Scalar::Imm(1.0),
        bias: Scalar::Imm(0.0),
        accum: None,
    }
}

// DVE add of [128, 512] f32 on trn2: (60 + 100 + 2 * 512) cycles / 0.96 GHz = 1233.333 ns.
const DVE_ADD_NS: f64 = 1184.0 / 0.96;
// ACT exp of [128, 512] on trn2: (60 + 200 + 512) cycles / 1.2 GHz = 643.333 ns.
const ACT_EXP_NS: f64 = 772.0 / 1.2;

#[test]
fn independent_queues_overlap() {
    let mut b = B::new();
    let (dve, act) = (b.queue("dve", Engine::Dve), b.queue("act", Engine::Act));
    let op = add(&mut b, 128, 512);
    b.push(dve, op, &[]);
    let op = exp(&mut b, 128, 512);
    b.push(act, op, &[]);
    let r = simulate(&b.p, &TargetSpec::trn2()).unwrap();
    close(r.latency_ns, DVE_ADD_NS);
    close(r.insts[1].start_ns, 0.0);
    close(r.insts[1].end_ns, ACT_EXP_NS);
    close(r.busy_fraction("act"), ACT_EXP_NS / DVE_ADD_NS);
    close(r.flops, 2.0 * 128.0 * 512.0);
}

#[test]
fn a_wait_serialises() {
    let mut b = B::new();
    let (dve, act) = (b.queue("dve", Engine::Dve), b.queue("act", Engine::Act));
    let op = add(&mut b, 128, 512);
    b.push(dve, op, &[]);
    let op = exp(&mut b, 128, 512);
    b.push(act, op, &[(dve, 1)]);
    let r = simulate(&b.p, &TargetSpec::trn2()).unwrap();
    close(r.insts[1].start_ns, DVE_ADD_NS);
    close(r.latency_ns, DVE_ADD_NS + ACT_EXP_NS);
}

#[test]
fn a_queue_runs_in_order() {
    let mut b = B::new();
    let dve = b.queue("dve", Engine::Dve);
    for _ in 0..3 {
        let op = add(&mut b, 128, 512);
        b.push(dve, op, &[]);
    }
    let r = simulate(&b.p, &TargetSpec::trn2()).unwrap();
    close(r.latency_ns, 3.0 * DVE_ADD_NS);
    close(r.insts[2].start_ns, 2.0 * DVE_ADD_NS);
}

/// Two 1 MiB loads ([128, 2048] f32, 8 KiB rows: full efficiency) on queues `qa` and `qb`.
fn two_loads(qa: &str, qb: &str, target: &TargetSpec) -> tessera_backends::timing::TimingReport {
    let mut b = B::new();
    for name in [qa, qb] {
        let q = b.queue(name, Engine::Dma);
        let dst = DmaOperand::Tile(b.tile(DType::F32, 128, 2048));
        let src = b.hbm(DType::F32, 128, 2048, 1);
        b.push(q, Op::DmaCopy { dst, src }, &[]);
    }
    simulate(&b.p, target).unwrap()
}

#[test]
fn dmas_on_different_engines_share_the_core_bandwidth() {
    // Core DMA bandwidth 40 GB/s, below two engines' 2 x 27 GB/s: each transfer gets 20 GB/s.
    // End = 1300 ns start cost + 1_048_576 B / 20 GB/s = 1300 + 52_428.8 ns.
    let target = TargetSpec {
        dma_core_bytes_per_s: 40e9,
        ..TargetSpec::trn2()
    };
    let r = two_loads("dma0", "dma1", &target);
    close(r.latency_ns, 1300.0 + 1_048_576.0 / 20e9 * 1e9);
    close(r.hbm_bytes, 2.0 * 1_048_576.0);
    // With the trn2 core (368 GB/s) each runs at its engine's 27 GB/s:
    // 1300 + 1_048_576 / 27e9 s = 1300 + 38_836.15 ns.
    let r = two_loads("dma0", "dma1", &TargetSpec::trn2());
    close(r.latency_ns, 1300.0 + 1_048_576.0 / 27e9 * 1e9);
    // Queues dma0 and dma16 share DMA engine 0 (16 engines): 13.5 GB/s each,
    // 1300 + 1_048_576 / 13.5e9 s = 1300 + 77_672.30 ns.
    let r = two_loads("dma0", "dma16", &TargetSpec::trn2());
    close(r.latency_ns, 1300.0 + 1_048_576.0 / 13.5e9 * 1e9);
}

#[test]
fn rates_are_recomputed_when_a_transfer_joins() {
    // Core 40 GB/s. The first load runs alone at 27 GB/s until the second, delayed by a DVE
    // add, finishes its start cost at t1 = 1233.333 + 1300 = 2533.333 ns; the first started
    // moving at 1300 ns, so it has moved 27 B/ns * 1233.333 ns = 33_300 B. Then both run at 20
    // GB/s; the first ends at t1 + (1_048_576 - 33_300) / 20 = t1 + 50_763.8 ns. The second
    // then runs alone at 27 GB/s: by then it has moved 1_015_276 B, 33_300 B remain,
    // 1233.333 ns more.
    let target = TargetSpec {
        dma_core_bytes_per_s: 40e9,
        ..TargetSpec::trn2()
    };
    let mut b = B::new();
    let dve = b.queue("dve", Engine::Dve);
    let op = add(&mut b, 128, 512);
    b.push(dve, op, &[]);
    for (name, waits) in [("dma0", vec![]), ("dma1", vec![(dve, 1)])] {
        let q = b.queue(name, Engine::Dma);
        let dst = DmaOperand::Tile(b.tile(DType::F32, 128, 2048));
        let src = b.hbm(DType::F32, 128, 2048, 1);
        b.push(q, Op::DmaCopy { dst, src }, &waits);
    }
    let r = simulate(&b.p, &target).unwrap();
    let t1 = DVE_ADD_NS + 1300.0;
    let moved = 27.0 * (t1 - 1300.0);
    let first_end = t1 + (1_048_576.0 - moved) / 20.0;
    close(r.insts[1].end_ns, first_end);
    close(r.latency_ns, first_end + moved / 27.0);
}

#[test]
fn strided_dmas_are_slower() {
    // [128, 64] f32 read with a 2-element step: 4-byte runs, efficiency 0.5, so 32_768 B at
    // 27 GB/s * 0.5 = 13.5 B/ns: 1300 + 2427.26 ns.
    let mut b = B::new();
    let q = b.queue("dma0", Engine::Dma);
    let dst = DmaOperand::Tile(b.tile(DType::F32, 128, 64));
    let src = b.hbm(DType::F32, 128, 64, 2);
    b.push(q, Op::DmaCopy { dst, src }, &[]);
    let r = simulate(&b.p, &TargetSpec::trn2()).unwrap();
    close(r.latency_ns, 1300.0 + 32_768.0 / 13.5);
}

#[test]
fn matmul_report_and_mfu() {
    // 8 bf16 matmuls [128 x 128] x [128 x 512] back to back: 8 * 512 / 2.4 = 1706.667 ns,
    // 8 * 16_777_216 FLOPs; MFU = 78.64 / 79 = 0.99545.
    let mut b = B::new();
    let pe = b.queue("pe", Engine::Pe);
    for _ in 0..8 {
        let (dst, stationary, moving) = (
            b.tile(DType::F32, 128, 512),
            b.tile(DType::Bf16, 128, 128),
            b.tile(DType::Bf16, 128, 512),
        );
        let op = Op::Matmul {
            dst,
            stationary,
            moving,
            start: true,
            stop: true,
        };
        b.push(pe, op, &[]);
    }
    let r = simulate(&b.p, &TargetSpec::trn2()).unwrap();
    close(r.latency_ns, 8.0 * 512.0 / 2.4);
    close(r.pe_flops, 8.0 * 16_777_216.0);
    close(r.pe_peak_flops, 79e12);
    close(r.mfu(), 2.0 * 128.0 * 128.0 * 2.4e9 / 79e12);
    assert_eq!(r.insts[0].opcode, "nc_matmul");
    assert_eq!(r.insts[0].node, "n");
}

#[test]
fn unmeetable_waits_are_a_deadlock() {
    let mut b = B::new();
    let (dve, act) = (b.queue("dve", Engine::Dve), b.queue("act", Engine::Act));
    let op = add(&mut b, 1, 1);
    b.push(dve, op, &[(act, 1)]);
    let op = exp(&mut b, 1, 1);
    b.push(act, op, &[(dve, 1)]);
    let err = simulate(&b.p, &TargetSpec::trn2()).unwrap_err();
    assert!(matches!(err, TimingError::Deadlock { .. }), "{err}");
    assert!(
        err.to_string().contains("waits for 1 instructions of act"),
        "{err}"
    );
    // A wait naming a queue that does not exist is reported, not indexed.
    b.p.queues[0].insts[0].waits[0].queue = QueueId(9);
    assert!(matches!(
        simulate(&b.p, &TargetSpec::trn2()),
        Err(TimingError::NoSuchQueue { queue: 9, .. })
    ));
}

/// One random instruction: which queue (index into `QUEUES`) and its sizes.
#[derive(Clone, Debug)]
struct Spec {
    queue: usize,
    a: u32,
    b: u32,
    c: u32,
    variant: u8,
    waits: Vec<(usize, u32)>,
}

const QUEUES: [(&str, Engine); 22] = [
    ("pe", Engine::Pe),
    ("act", Engine::Act),
    ("dve", Engine::Dve),
    ("pool", Engine::Pool),
    ("dma0", Engine::Dma),
    ("dma1", Engine::Dma),
    ("dma2", Engine::Dma),
    ("dma3", Engine::Dma),
    ("dma4", Engine::Dma),
    ("dma5", Engine::Dma),
    ("dma6", Engine::Dma),
    ("dma7", Engine::Dma),
    ("dma8", Engine::Dma),
    ("dma9", Engine::Dma),
    ("dma10", Engine::Dma),
    ("dma11", Engine::Dma),
    ("dma12", Engine::Dma),
    ("dma13", Engine::Dma),
    ("dma14", Engine::Dma),
    ("dma15", Engine::Dma),
    ("dma16", Engine::Dma),
    ("dma17", Engine::Dma),
];

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..QUEUES.len(),
        1u32..=128,
        1u32..=128,
        1u32..=2048,
        0u8..8,
        prop::collection::vec((0..QUEUES.len(), 0u32..1000), 0..3),
    )
        .prop_map(|(queue, a, b, c, variant, waits)| Spec {
            queue,
            a,
            b,
            c,
            variant,
            waits,
        })
}

/// Builds a valid machine program: each wait names an instruction issued earlier in the global
/// order (so the waits are acyclic and always met), clamped to what that queue holds by then.
fn build(specs: &[Spec]) -> MachineProgram {
    let mut b = B::new();
    let ids: Vec<QueueId> = QUEUES.iter().map(|(n, e)| b.queue(n, *e)).collect();
    let mut issued = vec![0u32; QUEUES.len()];
    for s in specs {
        let engine = QUEUES[s.queue].1;
        let op = match engine {
            Engine::Pe => {
                let dtype =
                    [DType::Bf16, DType::F32, DType::Fp8E4m3, DType::F16][s.variant as usize % 4];
                let n = 1 + s.c % 512;
                let dst = b.tile(DType::F32, s.b, n);
                let stationary = b.tile(dtype, s.a, s.b);
                let moving = b.tile(dtype, s.a, n);
                Op::Matmul {
                    dst,
                    stationary,
                    moving,
                    start: true,
                    stop: true,
                }
            }
            Engine::Act => exp(&mut b, s.a, s.c),
            Engine::Dve => add(&mut b, s.a, s.c),
            Engine::Pool => {
                let (dst, src) = (b.tile(DType::F32, s.a, s.c), b.tile(DType::F32, s.a, s.c));
                let op0 = ScalarStep {
                    op: AluOp::Mul,
                    operand: Scalar::Imm(2.0),
                    reverse: false,
                };
                Op::TensorScalar {
                    engine: Engine::Pool,
                    dst,
                    src,
                    op0,
                    op1: None,
                }
            }
            Engine::Dma => {
                let dtype = if s.variant & 1 == 0 {
                    DType::F32
                } else {
                    DType::Bf16
                };
                let step = [1, 1, 2, 64][(s.variant as usize >> 1) % 4];
                let hbm = b.hbm(dtype, s.a, s.c, step);
                let tile = DmaOperand::Tile(b.tile(dtype, s.a, s.c));
                match s.variant % 3 {
                    0 => Op::DmaCopy {
                        dst: tile,
                        src: hbm,
                    },
                    1 => Op::DmaCopy {
                        dst: hbm,
                        src: tile,
                    },
                    _ => {
                        let other = b.hbm(dtype, s.a, s.c, 1);
                        Op::DmaCopy {
                            dst: other,
                            src: hbm,
                        }
                    }
                }
            }
        };
        let waits: Vec<(QueueId, u32)> = s
            .waits
            .iter()
            .filter(|(q, _)| *q != s.queue && issued[*q] > 0)
            .map(|&(q, n)| (ids[q], 1 + n % issued[q]))
            .collect();
        b.push(ids[s.queue], op, &waits);
        issued[s.queue] += 1;
    }
    b.p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_schedule_beats_the_roofline(
        specs in prop::collection::vec(spec(), 1..40),
        trn1 in any::<bool>(),
    ) {
        let target = if trn1 { TargetSpec::trn1() } else { TargetSpec::trn2() };
        let program = build(&specs);
        prop_assert!(check_machine_program(&program, &target).is_ok());
        let r = simulate(&program, &target).unwrap();
        let eps = 1e-9 * r.latency_ns.max(1.0);

        // Lower bounds.
        let busiest = r.engines.iter().map(|e| e.busy_ns).fold(0.0, f64::max);
        let pe_ns = r.pe_flops / r.pe_peak_flops * 1e9;
        let hbm_ns = r.hbm_bytes / r.hbm_bytes_per_s * 1e9;
        let dma_bytes: f64 = program
            .queues
            .iter()
            .flat_map(|q| &q.insts)
            .filter_map(|i| cost::inst_cost(&i.op, &program.tensors, &program.buffers, &target))
            .filter_map(|c| c.dma)
            .map(|d| d.bytes)
            .sum();
        let dma_ns = dma_bytes / target.dma_core_bytes_per_s * 1e9;
        for (what, bound) in [("busiest queue", busiest), ("PE peak", pe_ns), ("HBM", hbm_ns), ("DMA", dma_ns)] {
            prop_assert!(r.latency_ns >= bound - eps, "{what}: latency {} < {bound}", r.latency_ns);
        }
        prop_assert!(r.mfu() <= 1.0 + 1e-9);
        prop_assert!(r.hbm_utilisation() <= 1.0 + 1e-9);

        // Upper bound: never slower than running everything one after another.
        let serial: f64 = r.insts.iter().map(|i| i.end_ns - i.start_ns).sum();
        prop_assert!(r.latency_ns <= serial + eps);

        // Every instruction is reported once, in queue order, and respects its waits.
        prop_assert_eq!(r.insts.len(), program.inst_count());
        let mut at = 0;
        let mut ends: Vec<Vec<f64>> = vec![];
        for q in &program.queues {
            ends.push(r.insts[at..at + q.insts.len()].iter().map(|i| i.end_ns).collect());
            at += q.insts.len();
        }
        let mut at = 0;
        for (qi, q) in program.queues.iter().enumerate() {
            for (i, inst) in q.insts.iter().enumerate() {
                let t = &r.insts[at + i];
                prop_assert_eq!(t.queue, QueueId(qi as u32));
                prop_assert!(t.end_ns >= t.start_ns);
                if i > 0 {
                    prop_assert!(t.start_ns >= ends[qi][i - 1] - eps);
                }
                for w in &inst.waits {
                    prop_assert!(t.start_ns >= ends[w.queue.0 as usize][w.count as usize - 1] - eps);
                }
            }
            at += q.insts.len();
        }

        // Deterministic.
        prop_assert_eq!(simulate(&program, &target).unwrap(), r);
    }
}
