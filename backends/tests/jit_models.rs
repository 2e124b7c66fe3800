//! Whole compiled models through the jit, compared with interp: the bundled MLP and FFN
//! examples, compiled from ONNX, on their bundled inputs.

mod jit_common;

use jit_common::{assert_close, interp_run, model};
use tessera_backends::jit::Jit;
use tessera_ir::TargetSpec;

fn check(name: &str) {
    let (program, inputs) = model(name);
    let want = interp_run(&program, &inputs);
    let mut jit = Jit::new().expect("jit");
    let got = jit
        .run_machine(&program, &TargetSpec::trn2(), &inputs)
        .expect("jit runs");
    assert_close(&got, &want);
    let stats = jit.stats().clone();
    eprintln!("{name}: {stats:?}");
    assert!(stats.compiled > 0, "{name}: nothing compiled");
    // Running again reuses every kernel and gives the same bytes.
    let again = jit
        .run_machine(&program, &TargetSpec::trn2(), &inputs)
        .expect("jit runs");
    assert_eq!(again, got);
    assert_eq!(jit.stats().compiled, stats.compiled, "{name}: recompiled");
}

#[test]
fn mlp_matches_interp() {
    check("mlp");
}

#[test]
fn ffn_matches_interp() {
    check("ffn");
}
