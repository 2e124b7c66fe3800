//! The last entry of the broken-kernel catalogue (`kernels/tests/broken_kernels.rs` has the
//! rules the builder and the verifier check): a race after scheduling. A kernel is scheduled
//! as the compiler schedules a model; one semaphore wait is then removed, as a hand-edited or
//! mis-synchronised schedule would lack it; the emulator's race detector must name both
//! instructions, the buffer they share and the lines of this file that recorded them.

use std::collections::BTreeMap;
use tessera::ir::{ActFunc, DType, HostTensor, TargetSpec};
use tessera::kernels::KernelBuilder;

#[test]
fn race_after_scheduling_names_both_lines() {
    let target = TargetSpec::trn2();
    let mut kb = KernelBuilder::new("racy", &target);
    let x = kb.input("x", DType::F32, &[4, 8]).unwrap();
    let y = kb.output("y", DType::F32, &[4, 8]).unwrap();
    let staged = kb.sbuf("staged", DType::F32, 4, &[8]).unwrap();
    let load_line = line!() + 1;
    kb.dma_copy(&staged, x.block(0..4, 0..8)).unwrap();
    let act_line = line!() + 1;
    kb.activation(&staged, &staged, ActFunc::Exp, 1.0, 0.0, None)
        .unwrap();
    kb.dma_copy(y.block(0..4, 0..8), &staged).unwrap();
    let kernel = kb.finish().unwrap();

    let mut machine = tessera::schedule_kernel(&kernel, &target).unwrap();
    let inputs = BTreeMap::from([(
        "x".to_string(),
        HostTensor::from_f64(DType::F32, &[4, 8], &[0.5; 32]),
    )]);
    // As scheduled, it runs (and computes exp).
    let ok = tessera::run_scheduled_kernel(&machine, &kernel, &target, &inputs).unwrap();
    assert!(
        ok["y"]
            .to_f64_vec()
            .iter()
            .all(|&v| (v - 0.5f64.exp()).abs() < 1e-6)
    );

    // Drop the activation's wait on the load.
    let act = machine
        .queues
        .iter_mut()
        .flat_map(|q| q.insts.iter_mut())
        .find(|i| i.op.opcode() == "activation")
        .unwrap();
    assert!(
        !act.waits.is_empty(),
        "the scheduler made the activation wait"
    );
    act.waits.clear();
    let err = tessera::run_scheduled_kernel(&machine, &kernel, &target, &inputs)
        .unwrap_err()
        .to_string();
    let file = "tests/kernel_races.rs";
    for want in [
        "race:",
        "dma_copy",
        "activation",
        "no semaphore wait orders them",
        "(%staged)",
        &format!("{file}:{load_line}:"),
        &format!("{file}:{act_line}:"),
    ] {
        assert!(err.contains(want), "{want:?} not in: {err}");
    }
}
