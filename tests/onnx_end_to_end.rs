//! The ML engineer's path, end to end: every generated ONNX test model is compiled with
//! `tessera compile`, run from the artifact with `tessera run --inputs-dir/--output-dir`, and
//! its outputs compared with onnxruntime's (within 1e-4 relative plus 1e-5 absolute). Then the
//! machine program's concurrency: 20 interleaving seeds give identical bytes and no race, and
//! deleting one semaphore wait from a real program is caught by the race detector. Last, bad
//! input: truncated or random files, an unknown op, a shape mismatch: a non-zero exit with a
//! one-paragraph message, no panic, and no output file left behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;
use tessera::compiler::driver::{CompileOptions, compile_file};
use tessera::ir::HostTensor;
use tessera::runtime::{RunOptions, RuntimeError, Session};

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("TESSERA_TEST_MODELS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/testmodels"),
        PathBuf::from,
    );
    assert!(
        dir.is_dir(),
        "ONNX test models not found at {}; generate them with\n    pip install -r scripts/requirements-test.txt\n    python3 scripts/make_test_models.py target/testmodels",
        dir.display()
    );
    dir
}

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("the tessera binary runs")
}

fn read_npy(path: &Path) -> ArrayD<f32> {
    ArrayD::<f32>::read_npy(
        std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every case folder with expected outputs (the error models live under `errors/`).
fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(models_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("expected").is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn every_test_model_matches_onnxruntime_through_the_cli() {
    let work = tempfile::tempdir().unwrap();
    let cases = cases();
    assert!(
        cases.len() >= 50,
        "expected the generated cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let art = work.path().join(format!("{name}.tsr"));
        let out_dir = work.path().join(format!("{name}.out"));
        let c = tessera(&[
            "compile",
            case.join("model.onnx").to_str().unwrap(),
            "-o",
            art.to_str().unwrap(),
        ]);
        if !c.status.success() {
            failures.push(format!(
                "{name}: compile failed: {}",
                String::from_utf8_lossy(&c.stderr)
            ));
            continue;
        }
        let r = tessera(&[
            "run",
            art.to_str().unwrap(),
            "--inputs-dir",
            case.join("inputs").to_str().unwrap(),
            "--output-dir",
            out_dir.to_str().unwrap(),
        ]);
        if !r.status.success() {
            failures.push(format!(
                "{name}: run failed: {}",
                String::from_utf8_lossy(&r.stderr)
            ));
            continue;
        }
        for expected in std::fs::read_dir(case.join("expected")).unwrap().flatten() {
            let file = expected.file_name();
            let want = read_npy(&expected.path());
            let got_path = out_dir.join(&file);
            if !got_path.exists() {
                failures.push(format!("{name}: no output {}", file.to_string_lossy()));
                continue;
            }
            let got = read_npy(&got_path);
            if got.shape() != want.shape() {
                failures.push(format!("{name}: {:?} vs {:?}", got.shape(), want.shape()));
                continue;
            }
            let bad = got
                .iter()
                .zip(want.iter())
                .filter(|(g, w)| {
                    ((**g as f64) - (**w as f64)).abs() > 1e-5 + 1e-4 * (**w as f64).abs()
                })
                .count();
            if bad > 0 {
                failures.push(format!(
                    "{name}: {bad} elements of {} differ from onnxruntime",
                    file.to_string_lossy()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn inputs_of(case: &Path, session: &Session) -> BTreeMap<String, HostTensor> {
    session
        .artifact()
        .signature
        .inputs
        .iter()
        .map(|e| {
            let file = case
                .join("inputs")
                .join(format!("{}.npy", e.name.replace(['/', ':'], "_")));
            (
                e.name.clone(),
                HostTensor::from_array_f32(&read_npy(&file), e.dtype),
            )
        })
        .collect()
}

#[test]
fn twenty_interleavings_agree_and_race_free() {
    for model in ["mlp", "ffn"] {
        let case = models_dir().join(model);
        let compiled = compile_file(&case.join("model.onnx"), &CompileOptions::default()).unwrap();
        let session = Session::new(compiled.artifact).unwrap();
        let inputs = inputs_of(&case, &session);
        let first = session
            .run(
                &inputs,
                &RunOptions {
                    seed: 0,
                    ..RunOptions::default()
                },
            )
            .unwrap();
        for seed in 1..20 {
            let again = session
                .run(
                    &inputs,
                    &RunOptions {
                        seed,
                        ..RunOptions::default()
                    },
                )
                .unwrap();
            assert_eq!(again, first, "{model}: seed {seed} gave different bytes");
        }
    }
}

#[test]
fn removing_one_semaphore_wait_is_caught_as_a_race() {
    let case = models_dir().join("mlp");
    let compiled = compile_file(&case.join("model.onnx"), &CompileOptions::default()).unwrap();
    let mut artifact = compiled.artifact;
    // The first instruction of the tensor engine waits for the DMAs that load its operands.
    let pe = artifact
        .program
        .queues
        .iter()
        .position(|q| q.name == "pe")
        .unwrap();
    let inst = artifact.program.queues[pe]
        .insts
        .iter_mut()
        .find(|i| !i.waits.is_empty())
        .unwrap();
    let removed = inst.waits.remove(0);
    let session = Session::new(artifact).unwrap();
    let inputs = inputs_of(&case, &session);
    match session.run(&inputs, &RunOptions::default()) {
        Err(RuntimeError::Backend(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("race"), "{msg}");
            assert!(msg.contains("nc_matmul"), "names the matmul: {msg}");
            let waited = format!("dma{}", removed.queue.0 - 4);
            assert!(msg.contains(&waited), "names the DMA queue {waited}: {msg}");
        }
        other => panic!("expected a race, got {other:?}"),
    }
}

fn assert_clean_failure(out: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one paragraph: {stderr}"
    );
    assert!(stderr.contains(expect), "`{expect}` not in: {stderr}");
}

#[test]
fn bad_models_fail_cleanly_and_leave_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let models = models_dir();
    let good = std::fs::read(models.join("mlp/model.onnx")).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &good[..good.len() / 3]).unwrap();
    let random = dir.path().join("random.onnx");
    std::fs::write(
        &random,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let cases: [(PathBuf, &str); 4] = [
        (truncated, "not a valid ONNX model"),
        (random, "not a valid ONNX model"),
        (models.join("errors/unknown_op/model.onnx"), "FooBar"),
        (models.join("errors/shape_mismatch/model.onnx"), "MatMul"),
    ];
    for (model, expect) in &cases {
        let art = dir.path().join("out.tsr");
        let out = tessera(&[
            "compile",
            model.to_str().unwrap(),
            "-o",
            art.to_str().unwrap(),
        ]);
        assert_clean_failure(&out, expect);
        assert!(
            !art.exists(),
            "{}: an artifact was left behind",
            model.display()
        );
        let out_dir = dir.path().join("outputs");
        let out = tessera(&[
            "run",
            model.to_str().unwrap(),
            "--output-dir",
            out_dir.to_str().unwrap(),
        ]);
        assert_clean_failure(&out, expect);
        assert!(
            !out_dir.exists(),
            "{}: an output directory was left behind",
            model.display()
        );
    }
    // The unknown-op model lists both unsupported operators with node names.
    let out = tessera(&[
        "compile",
        models
            .join("errors/unknown_op/model.onnx")
            .to_str()
            .unwrap(),
        "-o",
        "/dev/null/x.tsr",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FooBar") && stderr.contains("Det"),
        "{stderr}"
    );
}

#[test]
fn corrupt_artifacts_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("mlp.tsr");
    let out = tessera(&[
        "compile",
        models_dir().join("mlp/model.onnx").to_str().unwrap(),
        "-o",
        art.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let bytes = std::fs::read(&art).unwrap();
    let inputs = models_dir().join("mlp/inputs");
    for (label, data, expect) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        (
            "flipped",
            {
                let mut b = bytes.clone();
                let i = b.len() - 10;
                b[i] ^= 0x40;
                b
            },
            "checksum",
        ),
    ] {
        let bad = dir.path().join(format!("{label}.tsr"));
        std::fs::write(&bad, data).unwrap();
        let out_dir = dir.path().join(format!("{label}.out"));
        let out = tessera(&[
            "run",
            bad.to_str().unwrap(),
            "--inputs-dir",
            inputs.to_str().unwrap(),
            "--output-dir",
            out_dir.to_str().unwrap(),
        ]);
        assert_clean_failure(&out, expect);
        assert!(!out_dir.exists());
    }
}

#[test]
fn compiling_twice_gives_identical_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    for model in ["mlp", "ffn", "mlp_gemm_trans"] {
        let src = models_dir().join(model).join("model.onnx");
        let a = dir.path().join(format!("{model}.a.tsr"));
        let b = dir.path().join(format!("{model}.b.tsr"));
        for out in [&a, &b] {
            let o = tessera(&[
                "compile",
                src.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--target",
                "trn1",
                "-O",
                "1",
            ]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{model}"
        );
    }
}

#[test]
fn inspect_shows_each_stage() {
    let model = models_dir().join("mlp/model.onnx");
    let graph = tessera(&["inspect", model.to_str().unwrap(), "--emit", "graph"]);
    let text = String::from_utf8_lossy(&graph.stdout);
    assert!(graph.status.success());
    assert!(
        text.contains("= Gemm(") && text.contains("= Softmax("),
        "{text}"
    );

    // The whole-model tile program prints in the `.tile` format and parses back to the same
    // program, so a kernel author can take it, edit it and run it with `tessera kernel run`.
    let tile = tessera(&["inspect", model.to_str().unwrap(), "--emit", "tile"]);
    assert!(tile.status.success());
    let text = String::from_utf8_lossy(&tile.stdout).to_string();
    let parsed = tessera::ir::text::parse(&text, "inspect").unwrap();
    let compiled = compile_file(&model, &CompileOptions::default()).unwrap();
    assert!(parsed.same_meaning(&compiled.lowered.program));

    let isa = tessera(&["inspect", model.to_str().unwrap(), "--emit", "isa"]);
    let text = String::from_utf8_lossy(&isa.stdout);
    assert!(isa.status.success());
    assert!(
        text.contains("queue pe {") && text.contains("wait ") && text.contains("nc_matmul"),
        "{text}"
    );

    // The optimiser's report: size, stop reason, rules fired, the estimate and the plan.
    let egraph = tessera(&["inspect", model.to_str().unwrap(), "--emit", "egraph"]);
    let text = String::from_utf8_lossy(&egraph.stdout);
    assert!(egraph.status.success());
    for part in [
        "e-graph optimiser at -O2",
        "stopped: saturated",
        "rules fired",
        "matmul-bias",
        "plan (",
    ] {
        assert!(text.contains(part), "`{part}` not in: {text}");
    }
    let kernels = tessera(&["inspect", model.to_str().unwrap(), "--emit", "kernels"]);
    let text = String::from_utf8_lossy(&kernels.stdout);
    assert!(kernels.status.success());
    assert!(text.lines().count() >= 2 && text.contains(" us "), "{text}");
    let o0 = tessera(&[
        "inspect",
        model.to_str().unwrap(),
        "--emit",
        "egraph",
        "-O",
        "0",
    ]);
    assert!(String::from_utf8_lossy(&o0.stdout).contains("op by op"));

    let mlir = tessera(&["inspect", model.to_str().unwrap(), "--emit", "mlir"]);
    // This test's binary is the default build, without the mlir feature: it says how to get it.
    assert_clean_failure(
        &mlir,
        "rebuild with `cargo build --release --features mlir`",
    );
}

#[test]
fn list_ops_names_the_supported_operators() {
    let out = tessera(&["list-ops"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for op in [
        "MatMul",
        "Gemm",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Relu",
        "Sigmoid",
        "Tanh",
        "Softmax",
        "Reshape",
        "Transpose",
        "Flatten",
        "Identity",
        "Constant",
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(op)),
            "{op} missing from:\n{text}"
        );
    }
}

#[test]
fn auto_cast_runs_matmuls_and_intermediates_in_bf16() {
    // bf16 keeps 8 significant bits (relative rounding 2^-9 per value); through two layers of
    // rounded operands and stored intermediates the error stays a few bf16 ulps of the
    // output's scale. Bound: 2^-5 of the largest output magnitude (observed: ~2e-3 for
    // `matmul`, ~5e-3 for `all`), while exact fp32 (`none`) stays at 1e-4 relative.
    let dir = tempfile::tempdir().unwrap();
    for model in ["mlp", "ffn"] {
        let case = models_dir().join(model);
        for mode in ["matmul", "all"] {
            let out_dir = dir.path().join(format!("{model}.{mode}"));
            let o = tessera(&[
                "run",
                case.join("model.onnx").to_str().unwrap(),
                "--auto-cast",
                mode,
                "--inputs-dir",
                case.join("inputs").to_str().unwrap(),
                "--output-dir",
                out_dir.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            for expected in std::fs::read_dir(case.join("expected")).unwrap().flatten() {
                let want = read_npy(&expected.path());
                let got = read_npy(&out_dir.join(expected.file_name()));
                let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let err = got
                    .iter()
                    .zip(want.iter())
                    .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
                assert!(
                    err <= scale / 32.0,
                    "{model} --auto-cast {mode}: max error {err} vs scale {scale}"
                );
                assert!(
                    err > 0.0,
                    "{model} --auto-cast {mode}: identical to fp32, so nothing was cast"
                );
            }
        }
    }
}
