//! `tessera profile` as a user runs it on the bundled MLP: the JSON object has the contract's
//! keys with sane values, the Chrome trace has one complete event per machine instruction on
//! tracks named after the queues, the SVG is well-formed XML with a lane per busy queue, an
//! artifact profiles the same as its model, and bad input fails cleanly without leaving files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tessera::compiler::driver::{CompileOptions, compile_file};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("the tessera binary runs")
}

fn mlp() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/mlp/model.onnx")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// Queue names that have instructions in the MLP's machine program, and its instruction count.
fn mlp_queues() -> (Vec<String>, usize) {
    let c = compile_file(&mlp(), &CompileOptions::default()).expect("the MLP compiles");
    let names = c
        .machine
        .queues
        .iter()
        .filter(|q| !q.insts.is_empty())
        .map(|q| q.name.clone())
        .collect();
    (names, c.machine.inst_count())
}

fn profile_json(model: &Path) -> Value {
    let stdout = ok(&tessera(&["profile", model.to_str().unwrap(), "--json"]));
    // stdout is the JSON object alone.
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn fraction_ok(v: &Value, what: &str) -> f64 {
    let f = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!((0.0..=1.0).contains(&f), "{what} = {f}");
    f
}

#[test]
fn json_has_the_contract_keys_and_sane_values() {
    let v = profile_json(&mlp());
    for key in [
        "latency_us",
        "flops",
        "pe_flops",
        "mfu",
        "hbm_bytes",
        "hbm_utilisation",
        "busy",
        "engines",
        "top_nodes",
        "target",
    ] {
        assert!(v.get(key).is_some(), "no `{key}` in {v}");
    }
    assert_eq!(v["target"], "trn2");
    assert_eq!(v["model"], "mlp");
    assert!(v["latency_us"].as_f64().unwrap() > 0.0);
    assert!(v["flops"].as_f64().unwrap() > 0.0);
    // The MLP's two matmuls: 2*53*200*77 + 2*53*77*9 FLOPs on the tensor engine.
    let matmul_flops = 2.0 * 53.0 * (200.0 * 77.0 + 77.0 * 9.0);
    assert_eq!(v["pe_flops"].as_f64().unwrap(), matmul_flops);
    assert!(v["hbm_bytes"].as_f64().unwrap() > 0.0);
    fraction_ok(&v["mfu"], "mfu");
    fraction_ok(&v["hbm_utilisation"], "hbm_utilisation");

    let (queues, _) = mlp_queues();
    let busy = v["busy"].as_object().expect("busy is an object");
    assert_eq!(busy.len(), queues.len());
    for q in &queues {
        fraction_ok(&busy[q], &format!("busy.{q}"));
    }
    assert!(busy["pe"].as_f64().unwrap() > 0.0);
    let engines = v["engines"].as_array().unwrap();
    assert_eq!(engines.len(), queues.len());
    assert!(engines.iter().all(|e| e["busy_us"].as_f64().unwrap() > 0.0));
    let top = v["top_nodes"].as_array().unwrap();
    assert!(!top.is_empty() && top.len() <= 10);
    let shares: f64 = top.iter().map(|n| n["share"].as_f64().unwrap()).sum();
    assert!(shares <= 1.0 + 1e-9, "shares sum to {shares}");
}

#[test]
fn trace_has_one_complete_event_per_instruction() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("mlp.trace.json");
    let stdout = ok(&tessera(&[
        "profile",
        mlp().to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]));
    assert!(stdout.contains("latency"), "{stdout}");
    assert!(stdout.contains("wrote Chrome trace to"), "{stdout}");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).expect("the trace is JSON");
    let events = doc["traceEvents"].as_array().expect("traceEvents");
    let (queues, inst_count) = mlp_queues();
    let complete: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(complete.len(), inst_count);
    for e in &complete {
        assert!(e["ts"].as_f64().unwrap() >= 0.0);
        assert!(e["dur"].as_f64().unwrap() > 0.0, "{e}");
        assert!(e["name"].as_str().unwrap().contains(": "), "{e}");
    }
    let mut tracks: Vec<String> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut expected = queues.clone();
    tracks.sort();
    expected.sort();
    assert_eq!(tracks, expected);
    assert!(!dir.path().join("mlp.trace.json.partial").exists());
}

#[test]
fn svg_is_well_formed_with_a_lane_per_busy_queue() {
    let dir = tempfile::tempdir().unwrap();
    let svg_path = dir.path().join("mlp.svg");
    let out = tessera(&[
        "profile",
        mlp().to_str().unwrap(),
        "--json",
        "--svg",
        svg_path.to_str().unwrap(),
    ]);
    // With --json the file message goes to stderr, so stdout still parses.
    let stdout = ok(&out);
    serde_json::from_str::<Value>(&stdout).expect("stdout is the JSON object alone");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    let (queues, _) = mlp_queues();
    for q in &queues {
        assert!(texts.contains(&q.as_str()), "no lane label `{q}`");
    }
    assert!(
        texts.iter().any(|t| t.starts_with("mlp on trn2: ")),
        "{texts:?}"
    );
}

#[test]
fn an_artifact_profiles_like_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("mlp.tsr");
    ok(&tessera(&[
        "compile",
        mlp().to_str().unwrap(),
        "-o",
        art.to_str().unwrap(),
    ]));
    let from_art = profile_json(&art);
    let from_model = profile_json(&mlp());
    assert_eq!(from_art, from_model);
}

#[test]
fn trn1_profiles_against_its_own_peak() {
    let stdout = ok(&tessera(&[
        "profile",
        mlp().to_str().unwrap(),
        "--json",
        "--target",
        "trn1",
    ]));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["target"], "trn1");
    fraction_ok(&v["mfu"], "mfu");
}

#[test]
fn bad_input_fails_cleanly_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.onnx");
    let out = tessera(&["profile", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let svg = dir.path().join("no/such/dir/t.svg");
    let out = tessera(&[
        "profile",
        mlp().to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.starts_with("error: cannot write"), "{stderr}");
    assert!(!svg.exists());
}
