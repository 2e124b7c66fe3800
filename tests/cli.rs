//! The `tessera` binary as a user runs it: `kernel check`, `kernel run` with `.npy` files, and
//! the errors a user sees for bad input (non-zero exit, one clear message, no panic, no file).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("the tessera binary runs")
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/tiles")
        .join(name)
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_f32(path: &Path) -> ArrayD<f32> {
    ArrayD::<f32>::read_npy(std::fs::File::open(path).unwrap()).unwrap()
}

fn assert_clean_failure(out: &Output, expect_in_message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert!(
        stderr.starts_with("error: "),
        "message should start with `error: `: {stderr}"
    );
    assert!(
        stderr.contains(expect_in_message),
        "`{expect_in_message}` not in: {stderr}"
    );
}

#[test]
fn check_accepts_the_example_kernel() {
    let out = tessera(&[
        "kernel",
        "check",
        example("softmax_row.tile").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ok(&out);
    assert!(
        stdout.contains("kernel `softmax_row` is valid for trn2"),
        "{stdout}"
    );
}

#[test]
fn run_writes_softmax_outputs_matching_a_reference() {
    let dir = tempfile::tempdir().unwrap();
    let x: Vec<f32> = (0..40)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.37)
        .collect();
    let x = ArrayD::from_shape_vec(IxDyn(&[4, 10]), x).unwrap();
    let x_path = dir.path().join("x.npy");
    x.write_npy(std::fs::File::create(&x_path).unwrap())
        .unwrap();
    let out_dir = dir.path().join("out");
    let arg = format!("x={}", x_path.display());
    let out = tessera(&[
        "kernel",
        "run",
        example("softmax_row.tile").to_str().unwrap(),
        "--input",
        &arg,
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let y = read_f32(&out_dir.join("y.npy"));
    assert_eq!(y.shape(), &[4, 10]);
    for r in 0..4 {
        // Reference softmax of the row in f64.
        let row: Vec<f64> = (0..10).map(|c| x[[r, c]] as f64).collect();
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        for c in 0..10 {
            let want = (row[c] - max).exp() / sum;
            let got = y[[r, c]] as f64;
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "[{r},{c}] {got} vs {want}"
            );
        }
    }
}

#[test]
fn missing_input_is_a_clear_error() {
    let out = tessera(&[
        "kernel",
        "run",
        example("softmax_row.tile").to_str().unwrap(),
    ]);
    assert_clean_failure(&out, "no data for input(s) @x");
}

#[test]
fn unknown_input_name_is_a_clear_error() {
    let out = tessera(&[
        "kernel",
        "run",
        example("softmax_row.tile").to_str().unwrap(),
        "--input",
        "nope=x.npy",
    ]);
    assert_clean_failure(&out, "has no input `nope`");
}

#[test]
fn wrong_input_shape_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let x = ArrayD::<f32>::zeros(IxDyn(&[3, 10]));
    let x_path = dir.path().join("x.npy");
    x.write_npy(std::fs::File::create(&x_path).unwrap())
        .unwrap();
    let out_dir = dir.path().join("out");
    let arg = format!("x={}", x_path.display());
    let out = tessera(&[
        "kernel",
        "run",
        example("softmax_row.tile").to_str().unwrap(),
        "--input",
        &arg,
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, "expects shape [4, 10]");
    assert!(
        !out_dir.exists(),
        "no output directory should be created on failure"
    );
}

#[test]
fn syntax_and_rule_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad_syntax = dir.path().join("bad.tile");
    std::fs::write(
        &bad_syntax,
        "kernel k {\n  input @x: f32[4]\n  dve.frobnicate %a\n}\n",
    )
    .unwrap();
    let out = tessera(&["kernel", "check", bad_syntax.to_str().unwrap()]);
    assert_clean_failure(&out, "bad.tile:3:");

    // A matmul whose moving operand is wider than a PSUM bank allows.
    let too_wide = dir.path().join("wide.tile");
    std::fs::write(
        &too_wide,
        "kernel wide {\n\
           alloc %s: sbuf f32[128, 128]\n\
           alloc %m: sbuf f32[128, 640]\n\
           alloc %acc: psum f32[128, 640]\n\
           dve.memset %s[0:128][0; 1*128], 1.0\n\
           dve.memset %m[0:128][0; 1*640], 1.0\n\
           pe.nc_matmul %acc[0:128][0; 1*640], %s[0:128][0; 1*128], %m[0:128][0; 1*640] start stop\n\
         }\n",
    )
    .unwrap();
    let out = tessera(&["kernel", "check", too_wide.to_str().unwrap()]);
    assert_clean_failure(&out, "nc_matmul #5: moving free size 640 exceeds 512");
    assert_clean_failure(&out, "wide.tile:7");
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = tessera(&["kernel", "check", "/nonexistent/k.tile"]);
    assert_clean_failure(&out, "cannot read /nonexistent/k.tile");
}

/// A big MatMul model built with the protobuf structs, so `inspect --emit isa` prints far more
/// than a pipe buffer holds.
fn big_matmul_model(dir: &Path) -> PathBuf {
    use prost::Message;
    use tessera::compiler::onnx::proto::*;
    let value = |name: &str| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type::BFLOAT16,
                shape: Some(TensorShapeProto {
                    dim: [2048, 2048]
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            denotation: String::new(),
                        })
                        .collect(),
                }),
            })),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: "mm".into(),
            node: vec![NodeProto {
                input: vec!["a".into(), "b".into()],
                output: vec!["c".into()],
                name: "mm".into(),
                op_type: "MatMul".into(),
                ..Default::default()
            }],
            input: vec![value("a"), value("b")],
            output: vec![value("c")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = dir.join("mm2048.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

#[test]
fn a_reader_that_stops_early_does_not_make_tessera_panic() {
    use std::io::Read;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let model = big_matmul_model(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["inspect", model.to_str().unwrap(), "--emit", "isa"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line's worth, then close our end while tessera is still writing (as `| head` does).
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    assert!(
        first.starts_with(b"machine mm"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn mlp_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/mlp/model.onnx")
}

fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = tessera(args);
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).expect("bench --json prints one JSON object")
}

#[test]
fn bench_json_reports_ordered_times_for_each_backend() {
    let model = mlp_model();
    for backend in ["interp", "jit"] {
        let v = bench_json(&[
            "bench",
            model.to_str().unwrap(),
            "--backend",
            backend,
            "--iters",
            "3",
            "--json",
        ]);
        assert_eq!(v["iters"], 3, "{v}");
        assert_eq!(v["backend"], backend, "{v}");
        let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
        let (load, min, median, max) = (f("load_ms"), f("min_ms"), f("median_ms"), f("max_ms"));
        assert!(load >= 0.0 && f("compile_ms") >= 0.0, "{v}");
        assert!(min <= median && median <= max, "{v}");
    }
}

#[test]
fn bench_loads_an_artifact_with_given_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("mlp.tsr");
    let out = tessera(&[
        "compile",
        mlp_model().to_str().unwrap(),
        "-o",
        art.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let inputs = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/mlp/inputs");
    let v = bench_json(&[
        "bench",
        art.to_str().unwrap(),
        "--inputs-dir",
        inputs.to_str().unwrap(),
        "--iters",
        "2",
        "--json",
    ]);
    assert_eq!(v["iters"], 2, "{v}");
    assert_eq!(v["backend"], "interp", "{v}");
    assert!(
        v["compile_ms"].is_null(),
        "an artifact is loaded, not compiled: {v}"
    );
    assert_eq!(v["inputs"], "files", "{v}");
}

#[test]
fn bench_text_names_the_one_time_and_per_run_costs() {
    let out = tessera(&["bench", mlp_model().to_str().unwrap(), "--iters", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ok(&out);
    for word in ["compile", "load", "median", "min", "max", "2 runs"] {
        assert!(stdout.contains(word), "`{word}` not in: {stdout}");
    }
}

#[test]
fn bench_errors_are_clean() {
    let model = mlp_model();
    let out = tessera(&["bench", model.to_str().unwrap(), "--iters", "0"]);
    assert_clean_failure(&out, "--iters must be at least 1");
    let out = tessera(&["bench", "no/such/model.onnx"]);
    assert_clean_failure(&out, "no/such/model.onnx");
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(&[
        "bench",
        model.to_str().unwrap(),
        "--inputs-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_clean_failure(&out, "x.npy");
}

fn custom_op_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/custom_op")
}

/// The custom-operator example from the command line: the `.tile` kernel serves the
/// `com.example:FastRmsNorm` node, and the output matches numpy's (examples/custom_op).
#[test]
fn custom_op_from_a_tile_file_runs_the_example_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = custom_op_dir();
    let kernel = format!(
        "com.example:FastRmsNorm={}",
        d.join("rms_norm.tile").display()
    );
    for backend in ["interp", "jit"] {
        let out_dir = dir.path().join(backend);
        let out = tessera(&[
            "run",
            d.join("model.onnx").to_str().unwrap(),
            "--inputs-dir",
            d.join("inputs").to_str().unwrap(),
            "--output-dir",
            out_dir.to_str().unwrap(),
            "--custom-op",
            &kernel,
            "--backend",
            backend,
        ]);
        assert_ok(&out);
        let got = read_f32(&out_dir.join("y.npy"));
        let want = read_f32(&d.join("expected/y.npy"));
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(want.iter())
            .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
        // fp32 over 64-element rows against numpy's f64: a few ulps of the output's scale.
        assert!(worst <= 1e-5 * scale, "{backend}: {worst} of {scale}");
    }
}

#[test]
fn custom_op_errors_are_clean() {
    let d = custom_op_dir();
    let model = d.join("model.onnx");
    let model = model.to_str().unwrap();
    let inputs = d.join("inputs");
    let inputs = inputs.to_str().unwrap();
    // Without a kernel: the error says how to provide one.
    let out = tessera(&["run", model, "--inputs-dir", inputs]);
    assert_clean_failure(&out, "--custom-op com.example:FastRmsNorm=KERNEL.tile");
    // A malformed flag.
    let out = tessera(&["run", model, "--custom-op", "FastRmsNorm"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected DOMAIN:OP=FILE.tile"));
    // A kernel file that does not exist.
    let out = tessera(&[
        "run",
        model,
        "--inputs-dir",
        inputs,
        "--custom-op",
        "com.example:FastRmsNorm=/nonexistent/k.tile",
    ]);
    assert_clean_failure(
        &out,
        "--custom-op com.example:FastRmsNorm: cannot read /nonexistent/k.tile",
    );
    // A kernel of other shapes: the node's and the kernel's types are both named.
    let out = tessera(&[
        "run",
        model,
        "--inputs-dir",
        inputs,
        "--custom-op",
        &format!(
            "com.example:FastRmsNorm={}",
            example("softmax_row.tile").display()
        ),
    ]);
    assert_clean_failure(
        &out,
        "takes (f32[4, 10]), but the node's operands are (f32[8, 64], f32[64])",
    );
}

/// The default build has no MLIR backend: asking for it says how to get it, without a panic.
#[test]
fn mlir_backend_in_a_default_build_says_how_to_get_it() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/mlp");
    let out = tessera(&[
        "run",
        model.join("model.onnx").to_str().unwrap(),
        "--inputs-dir",
        model.join("inputs").to_str().unwrap(),
        "--backend",
        "mlir",
    ]);
    assert_clean_failure(&out, "this build of tessera has no mlir backend");
    assert_clean_failure(&out, "--features mlir");
}

#[test]
fn kernel_profile_prints_the_timeline_and_writes_files() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("k.svg");
    let trace = dir.path().join("k.json");
    let kernel = example("softmax_row.tile");
    let out = tessera(&["kernel", "profile", kernel.to_str().unwrap()]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for part in ["softmax_row (", "latency", "busy per queue", "dve", "dma0"] {
        assert!(text.contains(part), "`{part}` not in: {text}");
    }
    let out = tessera(&[
        "kernel",
        "profile",
        kernel.to_str().unwrap(),
        "--json",
        "--svg",
        svg.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(json["kernel"], "softmax_row");
    let latency = json["latency_us"].as_f64().unwrap();
    assert!(latency > 0.0, "{json}");
    // One X event per instruction in the trace; the SVG parses as XML.
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .count() as u64;
    assert_eq!(events, json["instructions"].as_u64().unwrap());
    roxmltree::Document::parse(&std::fs::read_to_string(&svg).unwrap()).expect("valid SVG");
}

#[test]
fn kernel_profile_of_a_broken_kernel_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example("softmax_row.tile")).unwrap();
    let broken = dir.path().join("broken.tile");
    std::fs::write(
        &broken,
        text.replace("alloc %t: sbuf f32[4, 10]", "alloc %t: sbuf f32[400, 10]"),
    )
    .unwrap();
    let svg = dir.path().join("k.svg");
    let out = tessera(&[
        "kernel",
        "profile",
        broken.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, "%t");
    assert!(!svg.exists(), "no file on failure");
}
