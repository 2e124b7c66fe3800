//! Every `.tile` file in the repository (the golden filetests and the examples) is a real
//! kernel: it parses, passes the verifier, and runs on the reference emulator without a poison
//! read, a bounds error, or an output left unwritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tessera::ir::{HostTensor, TargetSpec, TensorKind};

fn tile_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["ir/tests/filetests", "examples/tiles"] {
        for entry in std::fs::read_dir(root.join(dir))
            .expect("folder exists")
            .flatten()
        {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "tile") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_tile_file_runs_on_the_emulator() {
    let files = tile_files();
    assert!(
        files.len() >= 13,
        "expected the golden files and examples, found {}",
        files.len()
    );
    let target = TargetSpec::trn2();
    let mut failures = Vec::new();
    for path in &files {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path).expect("readable");
        let program = match tessera::ir::text::parse(&src, &name) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{e}"));
                continue;
            }
        };
        // Inputs in [0.5, 1.5): positive, so log/sqrt/rsqrt kernels stay finite.
        let mut inputs = BTreeMap::new();
        for (i, t) in program.tensors_of(TensorKind::Input).enumerate() {
            let n: usize = t.shape.iter().product();
            let values: Vec<f64> = (0..n)
                .map(|j| 0.5 + ((j * 37 + i * 11) % 100) as f64 / 100.0)
                .collect();
            inputs.insert(
                t.name.clone(),
                HostTensor::from_f64(t.dtype, &t.shape, &values),
            );
        }
        match tessera::simulate_host(&target, &program, &inputs) {
            Ok(outputs) => {
                let declared = program.tensors_of(TensorKind::Output).count();
                if outputs.len() != declared {
                    failures.push(format!(
                        "{name}: {} outputs, {declared} declared",
                        outputs.len()
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The ISA reference's tour (`docs/isa.md`, every instruction once) runs on the checked
/// emulator, and on the JIT with the same bytes once scheduled.
#[test]
fn the_isa_tour_runs() {
    let program = tessera::ir::text::parse(tessera::ir::isa_doc::TOUR, "isa_tour.tile").unwrap();
    let x = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[4, 8]), |i| {
        (i[0] * 8 + i[1]) as f32 / 10.0
    });
    let out = tessera::simulate(&program, &[("x", x.clone())]).unwrap();
    assert_eq!(out["yt"].shape(), &[8, 4]);
    // yt is the transpose of x, exactly.
    for r in 0..4 {
        for c in 0..8 {
            assert_eq!(out["yt"][[c, r]], x[[r, c]]);
        }
    }
    let target = tessera::ir::TargetSpec::trn2();
    let machine = tessera::schedule_kernel(&program, &target).unwrap();
    let inputs = std::collections::BTreeMap::from([(
        "x".to_string(),
        tessera::ir::HostTensor::from_array_f32(&x, tessera::ir::DType::F32),
    )]);
    let checked = tessera::run_scheduled_kernel(&machine, &program, &target, &inputs).unwrap();
    let jit = tessera::backends::jit::run_machine(&machine, &target, &inputs).unwrap();
    // Bit-identical but for the matmul's share, which the JIT accumulates in fp32 (within
    // 1e-5 of the largest magnitude, `backends/src/jit`).
    assert_eq!(checked["yt"].data, jit["yt"].data);
    let (a, b) = (checked["y"].to_f64_vec(), jit["y"].to_f64_vec());
    let scale = a
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    for (x, y) in a.iter().zip(&b) {
        assert!(x == y || (x - y).abs() <= 1e-5 * scale, "{x} vs {y}");
    }
}

/// The `tile` code blocks of the kernel author guide parse, keep every rule and run.
#[test]
fn the_guides_tile_blocks_run() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/kernel-guide.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut blocks = 0;
    let mut rest = text.as_str();
    while let Some(start) = rest.find("```tile\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("the block is closed");
        let program = tessera::ir::text::parse(&body[..end], "docs/kernel-guide.md")
            .unwrap_or_else(|e| panic!("{e}"));
        let inputs: BTreeMap<String, HostTensor> = program
            .tensors
            .iter()
            .filter(|t| t.kind == TensorKind::Input)
            .map(|t| (t.name.clone(), HostTensor::zeros(t.dtype, &t.shape)))
            .collect();
        tessera::backends::interp::run(&program, &TargetSpec::trn2(), &inputs)
            .unwrap_or_else(|e| panic!("{e}"));
        blocks += 1;
        rest = &body[end..];
    }
    assert!(blocks > 0, "no tile blocks in the guide");
}
