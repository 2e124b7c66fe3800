//! A synthetic 10,000-instruction machine program (the four-queue pipeline over 2,500 chunks,
//! four rotating buffer slots reused hundreds of times each) runs race-free and matches the tile
//! interp. Run with `--nocapture` to see how long the race check and the run take; the test
//! asserts only on results, never on time.

mod machine_common;

use machine_common::*;
use std::time::Instant;
use tessera_backends::interp::{self, MachineRunOptions};
use tessera_ir::TargetSpec;

#[test]
fn ten_thousand_instructions() {
    let chunks = 2500;
    let (m, tp) = pipeline(chunks, 4, Omit::default());
    assert_eq!(m.p.inst_count(), 10_000);
    let inputs = inputs(chunks * COLS, &["x"]);
    let target = TargetSpec::trn2();
    let expected = interp::run(&tp, &target, &inputs).expect("tile program runs");

    let timed = |check_races| {
        let options = MachineRunOptions {
            seed: 42,
            check_races,
        };
        let start = Instant::now();
        let out = interp::run_machine(&m.p, &target, &inputs, &options).expect("runs");
        (out, start.elapsed())
    };
    let (checked, with) = timed(true);
    let (unchecked, without) = timed(false);
    assert_eq!(checked, expected);
    assert_eq!(unchecked, expected);
    eprintln!(
        "10k instructions: run with race check {with:?}, without {without:?}, race check about {:?}",
        with.saturating_sub(without)
    );

    // The same program missing one wait near the end: the race is still found.
    let (racy, _) = pipeline(
        chunks,
        4,
        Omit {
            store_wait_at: Some(chunks - 1),
        },
    );
    let start = Instant::now();
    let err = interp::run_machine(&racy.p, &target, &inputs, &MachineRunOptions::default())
        .expect_err("race");
    eprintln!("racy 10k program rejected in {:?}", start.elapsed());
    assert!(err.to_string().contains("dma1[2499] dma_copy"), "{err}");
}
