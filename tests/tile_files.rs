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
