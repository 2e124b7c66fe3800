//! The timing model on a compiled model: the bundled MLP example, scheduled for trn2, times
//! without error, within its roofline, and the estimate of its tile program is of the same
//! order.

use std::path::Path;
use tessera_backends::timing::simulate;
use tessera_compiler::driver::{CompileOptions, compile_file};
use tessera_ir::{TargetSpec, estimate_tile_program};

#[test]
fn the_mlp_example_times_within_its_roofline() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/mlp/model.onnx");
    let target = TargetSpec::trn2();
    let compiled = compile_file(&path, &CompileOptions::default()).expect("the example compiles");
    let r = simulate(&compiled.machine, &target).expect("the example times");
    let est = estimate_tile_program(&compiled.lowered.program, &target);
    eprintln!(
        "mlp on trn2: {} instructions, latency {:.1} ns, MFU {:.5}, HBM utilisation {:.4}, \
         pe_flops {}, hbm_bytes {}, estimate {:.1} ns",
        compiled.machine.inst_count(),
        r.latency_ns,
        r.mfu(),
        r.hbm_utilisation(),
        r.pe_flops,
        r.hbm_bytes,
        est.total_ns
    );
    for e in &r.engines {
        eprintln!(
            "  {:6} busy {:10.1} ns ({:.1}%)",
            e.name,
            e.busy_ns,
            100.0 * r.busy_fraction(&e.name)
        );
    }
    assert_eq!(r.insts.len(), compiled.machine.inst_count());
    assert!(r.latency_ns > 0.0);
    assert!(r.mfu() > 0.0 && r.mfu() <= 1.0);
    assert!(r.hbm_utilisation() <= 1.0);
    // Both the tile-level estimate and the timing model count the same work.
    assert!((est.pe_flops - r.pe_flops).abs() <= 1e-9 * r.pe_flops);
    assert!((est.hbm_bytes - r.hbm_bytes).abs() <= 1e-9 * r.hbm_bytes.max(1.0));
    // The estimate assumes perfect overlap; the schedule can only be slower.
    assert!(est.total_ns <= r.latency_ns * 1.0001);
}
