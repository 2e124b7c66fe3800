//! A pipeline across four queues gives the same bytes as the tile-level emulator running the
//! same instructions in order, under every seed, and a missing wait is a race.

mod machine_common;

use machine_common::*;
use std::collections::BTreeMap;
use tessera_backends::interp::{self, InterpError, MachineRunOptions};
use tessera_ir::{HostTensor, TargetSpec};

#[test]
fn pipeline_matches_the_tile_interp_under_20_seeds() {
    let (m, tp) = pipeline(3, 2, Omit::default());
    let inputs = inputs(3 * COLS, &["x"]);
    let expected = interp::run(&tp, &TargetSpec::trn2(), &inputs).expect("tile program runs");
    for seed in 0..20 {
        let out = m
            .run(&inputs, seed)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(out, expected, "seed {seed}");
    }
}

#[test]
fn one_chunk_pipeline_matches() {
    let (m, tp) = pipeline(1, 1, Omit::default());
    let inputs = inputs(COLS, &["x"]);
    let expected = interp::run(&tp, &TargetSpec::trn2(), &inputs).expect("tile program runs");
    assert_eq!(m.run(&inputs, 3).expect("runs"), expected);
}

#[test]
fn a_missing_wait_is_a_race_naming_both_instructions() {
    let (m, _) = pipeline(
        3,
        2,
        Omit {
            store_wait_at: Some(2),
        },
    );
    let inputs = inputs(3 * COLS, &["x"]);
    let first = m.run(&inputs, 0).expect_err("race");
    assert!(matches!(first, InterpError::Race { .. }), "{first}");
    let msg = first.to_string();
    for part in [
        "dve[2] tensor_tensor",
        "writes `dst`",
        "dma1[2] dma_copy",
        "reads `src`",
        "sbuf partitions 0..4",
        "no semaphore wait orders them",
    ] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
    // Happens-before is static: every seed reports the same race.
    for seed in 1..20 {
        assert_eq!(
            m.run(&inputs, seed).expect_err("race"),
            first,
            "seed {seed}"
        );
    }
}

#[test]
fn the_race_is_real_some_interleaving_reads_poison() {
    // Three slots: chunk 2's result tile is fresh, so a store running before the add reads
    // poison.
    let (m, _) = pipeline(
        3,
        3,
        Omit {
            store_wait_at: Some(2),
        },
    );
    let inputs = inputs(3 * COLS, &["x"]);
    let outcomes: Vec<_> = (0..64).map(|seed| unchecked(&m, &inputs, seed)).collect();
    assert!(
        outcomes
            .iter()
            .any(|r| matches!(r, Err(InterpError::PoisonRead { .. }))),
        "no seed ran the store before the add"
    );
    assert!(
        outcomes.iter().any(Result::is_ok),
        "no seed ran the add first"
    );
}

#[test]
fn the_race_is_real_some_interleaving_stores_a_stale_tile() {
    // Two slots: chunk 2 reuses chunk 0's tiles, which alias for real, so a store running
    // before the add copies chunk 0's result.
    let (m, tp) = pipeline(
        3,
        2,
        Omit {
            store_wait_at: Some(2),
        },
    );
    let inputs = inputs(3 * COLS, &["x"]);
    let expected = interp::run(&tp, &TargetSpec::trn2(), &inputs).expect("tile program runs");
    let outcomes: Vec<_> = (0..64).map(|seed| unchecked(&m, &inputs, seed)).collect();
    assert!(
        outcomes
            .iter()
            .any(|r| r.as_ref().is_ok_and(|o| *o != expected)),
        "no seed stored the stale tile"
    );
    assert!(outcomes.iter().any(|r| r.as_ref() == Ok(&expected)));
}

fn unchecked(
    m: &M,
    inputs: &BTreeMap<String, HostTensor>,
    seed: u64,
) -> Result<BTreeMap<String, HostTensor>, InterpError> {
    let options = MachineRunOptions {
        seed,
        check_races: false,
    };
    interp::run_machine(&m.p, &TargetSpec::trn2(), inputs, &options)
}

#[test]
fn a_long_pipeline_with_buffer_reuse_is_race_free() {
    let (m, tp) = pipeline(40, 3, Omit::default());
    let inputs = inputs(40 * COLS, &["x"]);
    let expected = interp::run(&tp, &TargetSpec::trn2(), &inputs).expect("tile program runs");
    for seed in [0, 1, 99, u64::MAX] {
        assert_eq!(m.run(&inputs, seed).expect("runs"), expected, "seed {seed}");
    }
}
