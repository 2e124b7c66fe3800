//! Whole compiled models through the jit (and, with the `mlir` feature, the jit with MLIR
//! kernels), compared with interp: the bundled MLP and FFN examples, compiled from ONNX, on
//! their bundled inputs.

mod jit_common;

use jit_common::{assert_close, interp_run, model};
use tessera_backends::jit::Jit;
use tessera_ir::TargetSpec;

fn check(name: &str, mut jit: Jit) {
    let (program, inputs) = model(name);
    let want = interp_run(&program, &inputs);
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
    check("mlp", Jit::new().expect("jit"));
}

#[test]
fn ffn_matches_interp() {
    check("ffn", Jit::new().expect("jit"));
}

#[cfg(feature = "mlir")]
#[test]
fn mlp_matches_interp_with_mlir_kernels() {
    check("mlp", Jit::with_mlir().expect("mlir jit"));
}

#[cfg(feature = "mlir")]
#[test]
fn ffn_matches_interp_with_mlir_kernels() {
    check("ffn", Jit::with_mlir().expect("mlir jit"));
}

/// The module `inspect --emit mlir` prints: one function per kernel signature, each with its
/// comment, in the dialects the backend promises, and a header that accounts for every
/// instruction.
#[cfg(feature = "mlir")]
#[test]
fn mlir_module_lists_every_kernel() {
    let (program, _) = model("ffn");
    let text = tessera_backends::jit::mlir_module(&program, &TargetSpec::trn2()).expect("module");
    let header = text.lines().nth(1).expect("header");
    let kernels: usize = header
        .trim_start_matches("// ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("kernel count");
    assert!(kernels > 0, "{header}");
    assert_eq!(text.matches("  func.func @k").count(), kernels, "{text}");
    assert_eq!(text.matches("; called by ").count(), kernels, "{text}");
    for dialect in ["scf.for", "memref.load", "arith.", "vector.load"] {
        assert!(text.contains(dialect), "no {dialect} in\n{text}");
    }
    // Every instruction is a kernel call, a microkernel matmul or a fallback.
    let counted: usize = text
        .lines()
        .filter_map(|l| l.split("; called by ").nth(1))
        .filter_map(|r| r.split(' ').next().and_then(|n| n.parse::<usize>().ok()))
        .sum();
    let calls: usize = header
        .split(" kernels for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("instruction count");
    assert_eq!(counted, calls, "{header}");
}
