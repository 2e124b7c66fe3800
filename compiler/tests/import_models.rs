//! Imports every model `scripts/make_test_models.py` writes, evaluates it with the reference
//! evaluator on the recorded inputs, and compares with onnxruntime's recorded outputs; checks
//! that the `errors/` models fail with the right error.
//!
//! The models live in `$TESSERA_TEST_MODELS`, by default `<workspace>/target/testmodels`.

use prost::Message;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tessera_compiler::onnx::proto::TensorProto;
use tessera_compiler::onnx::{ImportError, import_file, tensor_to_host};
use tessera_ir::graph::evaluate;
use tessera_ir::host::HostTensor;

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("TESSERA_TEST_MODELS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/testmodels"),
        PathBuf::from,
    );
    assert!(
        dir.is_dir(),
        "ONNX test models not found at {}.\nGenerate them with:\n    \
         pip install -r scripts/requirements-test.txt\n    \
         python3 scripts/make_test_models.py target/testmodels\n\
         (or point TESSERA_TEST_MODELS at a folder the script wrote)",
        dir.display()
    );
    dir
}

/// The tensors `<kind>_<k>.pb` of a test data set, by tensor name.
fn read_tensors(set: &Path, kind: &str) -> Result<BTreeMap<String, HostTensor>, String> {
    let mut out = BTreeMap::new();
    for k in 0.. {
        let path = set.join(format!("{kind}_{k}.pb"));
        if !path.exists() {
            break;
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let proto = TensorProto::decode(bytes.as_slice())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let host = tensor_to_host(&proto, None).map_err(|e| format!("{}: {e}", path.display()))?;
        out.insert(proto.name, host);
    }
    Ok(out)
}

/// Compares one output: floats within 1e-5 + 1e-4 * |want| per element, integers exactly.
fn compare(name: &str, got: &HostTensor, want: &HostTensor) -> Result<(), String> {
    if got.dtype != want.dtype || got.shape != want.shape {
        return Err(format!(
            "output {name}: got {}{:?}, want {}{:?}",
            got.dtype, got.shape, want.dtype, want.shape
        ));
    }
    let float = want.dtype.is_float();
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let mut worst: Option<(usize, f64, f64)> = None;
    let mut bad = 0;
    for (i, (&g, &w)) in g.iter().zip(&w).enumerate() {
        let ok = if float {
            (g - w).abs() <= 1e-5 + 1e-4 * w.abs()
        } else {
            g == w
        };
        if !ok {
            bad += 1;
            if worst.is_none_or(|(_, wg, ww)| (g - w).abs() > (wg - ww).abs()) {
                worst = Some((i, g, w));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, g, w)) => Err(format!(
            "output {name}: {bad} of {} elements differ; worst at {i}: got {g}, want {w}",
            want.elems()
        )),
    }
}

fn run_case(dir: &Path) -> Result<(), String> {
    let graph = import_file(&dir.join("model.onnx")).map_err(|e| format!("import: {e}"))?;
    let set = dir.join("test_data_set_0");
    let inputs = read_tensors(&set, "input")?;
    let expected = read_tensors(&set, "output")?;
    if expected.is_empty() {
        return Err("no expected outputs".into());
    }
    let got = evaluate(&graph, &inputs).map_err(|e| format!("evaluate: {e}"))?;
    for (name, want) in &expected {
        let g = got
            .get(name)
            .ok_or_else(|| format!("the graph has no output {name}"))?;
        compare(name, g, want)?;
    }
    Ok(())
}

#[test]
fn models_match_onnxruntime() {
    let root = models_dir();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("test_data_set_0").is_dir())
        .collect();
    cases.sort();
    assert!(
        !cases.is_empty(),
        "no test cases in {}; run python3 scripts/make_test_models.py target/testmodels",
        root.display()
    );
    let mut table = String::new();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into());
        match run_case(case) {
            Ok(()) => writeln!(table, "pass  {name}").ok(),
            Err(e) => {
                writeln!(table, "FAIL  {name}").ok();
                failures.push(format!("{name}: {e}"));
                None
            }
        };
    }
    println!(
        "{table}{} passed, {} failed",
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} model cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn unknown_ops_are_all_listed() {
    let e = import_file(&models_dir().join("errors/unknown_op/model.onnx")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ImportError::Unsupported(_)), "{msg}");
    assert!(
        msg.contains("FooBar (node \"foobar\", domain com.example.tessera)")
            && msg.contains("Det (node \"det\")"),
        "{msg}"
    );
}

#[test]
fn shape_mismatch_names_the_matmul() {
    let e = import_file(&models_dir().join("errors/shape_mismatch/model.onnx")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ImportError::Shape { .. }), "{msg}");
    assert!(msg.contains("\"matmul\" (MatMul)"), "{msg}");
}

#[test]
fn shape_subgraph_folds_to_one_reshape() {
    let g = import_file(&models_dir().join("shape_gather_concat_reshape/model.onnx")).unwrap();
    let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
    assert_eq!(ops, ["Reshape"]);
    // Nothing of the shape computation remains, not even as constants.
    assert!(g.constants.is_empty(), "{:?}", g.constants.keys());
}
