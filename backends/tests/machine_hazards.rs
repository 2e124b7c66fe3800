//! Hazards and failures of machine programs: buffer reuse through aliasing, deadlocks, poison,
//! unwritten outputs, malformed programs, and what is not a race.

mod machine_common;

use machine_common::*;
use tessera_backends::interp::InterpError;
use tessera_ir::*;

/// `y = exp(x) + x2` where `x2` is loaded into a buffer placed over `x`'s tile: the load must
/// wait for `act` to finish reading `x` (write after read through aliasing).
fn reuse(war_wait: bool) -> M {
    let mut m = M::new();
    let x = m.input("x", &[4, 8]);
    let x2 = m.input("x2", &[4, 8]);
    let y = m.output("y", &[4, 8]);
    let a = m.sbuf("a", 4, 8, 0);
    let b = m.sbuf("b", 4, 8, 0); // same placement as `a`
    let e = m.sbuf("e", 4, 8, 64);
    let s = m.sbuf("s", 4, 8, 128);
    let dma0 = m.queue("dma0", Engine::Dma);
    let act = m.queue("act", Engine::Act);
    let dve = m.queue("dve", Engine::Dve);
    let dma1 = m.queue("dma1", Engine::Dma);
    m.push(
        dma0,
        dma(DmaOperand::Tile(tile(a, 4, 8)), hbm(x, 4, 8, 0, 8)),
        &[],
    );
    m.push(act, exp(tile(e, 4, 8), tile(a, 4, 8)), &[(dma0, 1)]);
    let war: &[(QueueId, u32)] = if war_wait { &[(act, 1)] } else { &[] };
    m.push(
        dma0,
        dma(DmaOperand::Tile(tile(b, 4, 8)), hbm(x2, 4, 8, 0, 8)),
        war,
    );
    m.push(
        dve,
        add(tile(s, 4, 8), tile(e, 4, 8), tile(b, 4, 8)),
        &[(act, 1), (dma0, 2)],
    );
    m.push(
        dma1,
        dma(hbm(y, 4, 8, 0, 8), DmaOperand::Tile(tile(s, 4, 8))),
        &[(dve, 1)],
    );
    m
}

#[test]
fn reusing_an_sbuf_region_without_a_wait_is_a_race() {
    let m = reuse(false);
    let err = m.run(&inputs(8, &["x", "x2"]), 0).expect_err("race");
    let msg = err.to_string();
    assert!(matches!(err, InterpError::Race { .. }), "{msg}");
    for part in [
        "act[0] activation",
        "reads `src`",
        "dma0[1] dma_copy",
        "writes `dst`",
        "sbuf partitions 0..4, bytes 0..32",
    ] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
}

#[test]
fn reusing_an_sbuf_region_after_a_wait_is_fine() {
    let m = reuse(true);
    let ins = inputs(8, &["x", "x2"]);
    let want: Vec<f64> = ins["x"]
        .to_f64_vec()
        .iter()
        .zip(ins["x2"].to_f64_vec())
        .map(|(&a, b)| ((a as f32).exp() + b as f32) as f64)
        .collect();
    for seed in 0..20 {
        let out = m
            .run(&ins, seed)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let got = out["y"].to_f64_vec();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
        }
    }
}

fn memset(engine: Engine, dst: TileAccess, value: f64) -> Op {
    Op::Memset { engine, dst, value }
}

#[test]
fn two_queues_waiting_on_each_other_deadlock() {
    let mut m = M::new();
    let y = m.output("y", &[4, 8]);
    let a = m.sbuf("a", 4, 8, 0);
    let b = m.sbuf("b", 4, 8, 32);
    let act = m.queue("act", Engine::Act);
    let dve = m.queue("dve", Engine::Dve);
    let dma = m.queue("dma", Engine::Dma);
    m.push(act, memset(Engine::Act, tile(a, 4, 8), 1.0), &[(dve, 1)]);
    m.push(dve, memset(Engine::Dve, tile(b, 4, 8), 2.0), &[(act, 1)]);
    m.push(
        dma,
        machine_common::dma(hbm(y, 4, 8, 0, 8), DmaOperand::Tile(tile(a, 4, 8))),
        &[(act, 1)],
    );
    for check_races in [true, false] {
        let options = tessera_backends::interp::MachineRunOptions {
            seed: 5,
            check_races,
        };
        let err = tessera_backends::interp::run_machine(
            &m.p,
            &TargetSpec::trn2(),
            &std::collections::BTreeMap::<String, tessera_ir::HostTensor>::new(),
            &options,
        )
        .expect_err("deadlock");
        let msg = err.to_string();
        assert!(matches!(err, InterpError::Deadlock { .. }), "{msg}");
        for part in [
            "deadlock",
            "act[0] memset (node `n`, tile #0) waits for dve to complete 1 instructions, but it completed 0",
            "dve[0] memset",
            "waits for act to complete 1",
            "dma[0] dma_copy",
        ] {
            assert!(msg.contains(part), "`{part}` missing from: {msg}");
        }
    }
}

#[test]
fn reading_another_queues_partial_write_is_a_poison_read() {
    let mut m = M::new();
    let y = m.output("y", &[4, 8]);
    let a = m.sbuf("a", 4, 8, 0);
    let e = m.sbuf("e", 4, 8, 32);
    let dve = m.queue("dve", Engine::Dve);
    let act = m.queue("act", Engine::Act);
    let dma = m.queue("dma", Engine::Dma);
    // Only the first 4 elements of each partition are written.
    m.push(dve, memset(Engine::Dve, tile(a, 4, 4), 0.5), &[]);
    m.push(act, exp(tile(e, 4, 8), tile(a, 4, 8)), &[(dve, 1)]);
    m.push(
        dma,
        machine_common::dma(hbm(y, 4, 8, 0, 8), DmaOperand::Tile(tile(e, 4, 8))),
        &[(act, 1)],
    );
    let err = m.run(&Default::default(), 0).expect_err("poison");
    assert!(matches!(err, InterpError::PoisonRead { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "act[0] activation (node `n`, tile #0): `src` reads %a[partition 0, element 4] before it was written"
    );
}

#[test]
fn an_output_not_fully_written_is_an_error() {
    let mut m = M::new();
    let y = m.output("y", &[4, 8]);
    let a = m.sbuf("a", 4, 8, 0);
    let dve = m.queue("dve", Engine::Dve);
    let dma = m.queue("dma", Engine::Dma);
    m.push(dve, memset(Engine::Dve, tile(a, 4, 8), 0.5), &[]);
    // Stores columns 0..6 only.
    m.push(
        dma,
        machine_common::dma(hbm(y, 4, 8, 0, 6), DmaOperand::Tile(tile(a, 4, 6))),
        &[(dve, 1)],
    );
    let err = m.run(&Default::default(), 0).expect_err("unwritten");
    assert_eq!(
        err,
        InterpError::OutputNotWritten {
            name: "y".into(),
            element: 6,
            index: vec![0, 6]
        }
    );
}

#[test]
fn malformed_machine_programs_are_errors() {
    // A wait on a queue that does not exist.
    let mut m = M::new();
    let a = m.sbuf("a", 4, 8, 0);
    let dve = m.queue("dve", Engine::Dve);
    m.push(
        dve,
        memset(Engine::Dve, tile(a, 4, 8), 1.0),
        &[(QueueId(7), 1)],
    );
    let err = m.run(&Default::default(), 0).expect_err("bad");
    assert!(
        matches!(err, InterpError::BadMachineProgram { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("queue #7"), "{err}");

    // A buffer with no placement.
    let mut m = M::new();
    let a = m.sbuf("a", 4, 8, 0);
    m.p.buffers[0].placement = None;
    let dve = m.queue("dve", Engine::Dve);
    m.push(dve, memset(Engine::Dve, tile(a, 4, 8), 1.0), &[]);
    let err = m.run(&Default::default(), 0).expect_err("bad");
    assert!(err.to_string().contains("%a has no placement"), "{err}");

    // An absurdly large buffer is refused before any size arithmetic can overflow.
    let mut m = M::new();
    m.sbuf("huge", 4, usize::MAX / 2, 0);
    let err = m.run(&Default::default(), 0).expect_err("bad");
    assert!(
        matches!(err, InterpError::BadMachineProgram { .. }),
        "{err}"
    );

    // A view outside its buffer names the machine instruction.
    let mut m = M::new();
    let a = m.sbuf("a", 4, 8, 0);
    let dve = m.queue("dve", Engine::Dve);
    m.push(dve, memset(Engine::Dve, tile(a, 4, 9), 1.0), &[]);
    let err = m.run(&Default::default(), 0).expect_err("bounds");
    assert!(matches!(err, InterpError::OutOfBounds { .. }), "{err}");
    assert!(err.to_string().starts_with("dve[0] memset"), "{err}");
}

#[test]
fn same_queue_accesses_never_race() {
    let mut m = M::new();
    let x = m.input("x", &[4, 8]);
    let y = m.output("y", &[4, 8]);
    let a = m.sbuf("a", 4, 8, 0);
    let b = m.sbuf("b", 4, 8, 0); // aliases `a`
    let dma = m.queue("dma", Engine::Dma);
    let dve = m.queue("dve", Engine::Dve);
    // Write, overwrite, read and rewrite the same bytes, all on `dve`: program order.
    m.push(
        dma,
        machine_common::dma(DmaOperand::Tile(tile(a, 4, 8)), hbm(x, 4, 8, 0, 8)),
        &[],
    );
    m.push(dve, memset(Engine::Dve, tile(b, 4, 8), 3.0), &[(dma, 1)]);
    m.push(dve, add(tile(a, 4, 8), tile(b, 4, 8), tile(a, 4, 8)), &[]);
    m.push(dve, add(tile(b, 4, 8), tile(a, 4, 8), tile(b, 4, 8)), &[]);
    m.push(
        dma,
        machine_common::dma(hbm(y, 4, 8, 0, 8), DmaOperand::Tile(tile(b, 4, 8))),
        &[(dve, 3)],
    );
    for seed in 0..10 {
        let out = m.run(&inputs(8, &["x"]), seed).expect("no race");
        assert_eq!(out["y"].to_f64_vec(), vec![12.0; 32]);
    }
}

#[test]
fn interleaved_strided_writes_from_two_queues_do_not_race() {
    let mut m = M::new();
    let y = m.output("y", &[4, 8]);
    let a = m.sbuf("a", 4, 8, 0);
    let dve = m.queue("dve", Engine::Dve);
    let pool = m.queue("pool", Engine::Pool);
    let dma = m.queue("dma", Engine::Dma);
    let half = |start: u64| TileAccess {
        buf: a,
        start_partition: 0,
        partitions: 4,
        offset: start,
        dims: vec![Dim::new(2, 4)],
    };
    m.push(dve, memset(Engine::Dve, half(0), 1.0), &[]);
    m.push(pool, memset(Engine::Pool, half(1), 2.0), &[]);
    m.push(
        dma,
        machine_common::dma(hbm(y, 4, 8, 0, 8), DmaOperand::Tile(tile(a, 4, 8))),
        &[(dve, 1), (pool, 1)],
    );
    let out = m.run(&Default::default(), 0).expect("disjoint bytes");
    assert_eq!(out["y"].to_f64_vec()[..4], [1.0, 2.0, 1.0, 2.0]);

    // Overlapping strided views (every other element vs. a contiguous run) do race.
    m.p.queues[1].insts[0].op = memset(Engine::Pool, tile(a, 4, 3), 2.0);
    let err = m.run(&Default::default(), 0).expect_err("race");
    assert!(err.to_string().contains("bytes 0..4"), "{err}");
}

#[test]
fn hbm_writes_from_two_dma_queues_race_on_the_tensor_and_in_the_arena() {
    let mut m = M::new();
    let y = m.output("y", &[4, 8]);
    let a = m.sbuf("a", 4, 8, 0);
    let dve = m.queue("dve", Engine::Dve);
    let d0 = m.queue("dma0", Engine::Dma);
    let d1 = m.queue("dma1", Engine::Dma);
    m.push(dve, memset(Engine::Dve, tile(a, 4, 8), 1.0), &[]);
    m.push(
        d0,
        machine_common::dma(hbm(y, 4, 8, 0, 8), DmaOperand::Tile(tile(a, 4, 8))),
        &[(dve, 1)],
    );
    m.push(
        d1,
        machine_common::dma(hbm(y, 4, 8, 4, 4), DmaOperand::Tile(tile(a, 4, 4))),
        &[(dve, 1)],
    );
    let err = m.run(&Default::default(), 0).expect_err("race");
    let msg = err.to_string();
    assert!(
        msg.contains("dma0[0] dma_copy") && msg.contains("dma1[0] dma_copy"),
        "{msg}"
    );
    assert!(msg.contains("both touch @y, bytes 16..32"), "{msg}");

    // Two scratch tensors sharing arena bytes alias too.
    let mut m = M::new();
    let y = m.output("y", &[4, 8]);
    let s0 = m.scratch("s0", &[4, 8], 0);
    let s1 = m.scratch("s1", &[4, 8], 64);
    let a = m.sbuf("a", 4, 8, 0);
    let dve = m.queue("dve", Engine::Dve);
    let d0 = m.queue("dma0", Engine::Dma);
    let d1 = m.queue("dma1", Engine::Dma);
    m.push(dve, memset(Engine::Dve, tile(a, 4, 8), 1.0), &[]);
    m.push(
        d0,
        machine_common::dma(hbm(s0, 4, 8, 0, 8), DmaOperand::Tile(tile(a, 4, 8))),
        &[(dve, 1)],
    );
    m.push(
        d1,
        machine_common::dma(hbm(s1, 4, 8, 0, 8), DmaOperand::Tile(tile(a, 4, 8))),
        &[(dve, 1)],
    );
    m.push(
        d1,
        machine_common::dma(hbm(y, 4, 8, 0, 8), hbm(s1, 4, 8, 0, 8)),
        &[],
    );
    let err = m.run(&Default::default(), 0).expect_err("race");
    assert!(
        err.to_string()
            .contains("the HBM scratch arena, bytes 64..128"),
        "{err}"
    );
    // Moving s1 clear of s0 removes the race.
    m.p.hbm_offsets[2] = Some(128);
    m.p.scratch_bytes = 256;
    assert_eq!(
        m.run(&Default::default(), 0).expect("no race")["y"].to_f64_vec(),
        vec![1.0; 32]
    );
}
