//! `tessera onnx-test DIR...`: the ONNX backend-test runner. Each case folder holds
//! `model.onnx` and `test_data_set_<n>/{input,output}_<k>.pb`; the model is compiled, run on the
//! emulator for every data set, and its outputs compared with the expected ones within the
//! case's tolerance (`tolerance.json` with `rtol`, `atol` and `atol_scale`, else the ONNX
//! backend defaults rtol 1e-3, atol 1e-7; see [`Tolerance`]).
//!
//! A case is *skipped* when the model needs an operator or element type tessera does not
//! support yet, *failed* when it compiles but errs or gives different numbers, *passed*
//! otherwise. The last line is `N passed, N failed, N skipped`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use prost::Message;
use tessera_compiler::driver::{CompileError, CompileOptions, compile_file};
use tessera_compiler::lower::LowerError;
use tessera_compiler::onnx::{ImportError, proto, tensor_to_host};
use tessera_ir::HostTensor;
use tessera_runtime::{RunOptions, Session};

/// The outcome of one case.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Every data set matched.
    Passed,
    /// Compiled but failed or mismatched.
    Failed(String),
    /// Needs something not supported yet.
    Skipped(String),
}

/// One case's result.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// Folder name.
    pub name: String,
    /// The operator the case tests (best guess from the test name and the model's nodes).
    pub op: String,
    /// What happened.
    pub outcome: Outcome,
}

/// Finds case folders: each argument is a case folder or a folder of case folders.
pub fn find_cases(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut cases = Vec::new();
    for d in dirs {
        if d.join("model.onnx").is_file() {
            cases.push(d.clone());
            continue;
        }
        let entries = fs::read_dir(d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("model.onnx").is_file())
            .collect();
        if found.is_empty() {
            return Err(format!(
                "{} holds no ONNX test case (no model.onnx in it or its sub-folders)",
                d.display()
            ));
        }
        found.sort();
        cases.extend(found);
    }
    Ok(cases)
}

/// Reads a test tensor; data of an element type tessera does not support skips the case.
fn read_tensor(path: &Path) -> Result<HostTensor, Outcome> {
    let fail = |e: String| Outcome::Failed(format!("{}: {e}", path.display()));
    let bytes = fs::read(path).map_err(|e| fail(e.to_string()))?;
    let t = proto::TensorProto::decode(&bytes[..]).map_err(|e| fail(e.to_string()))?;
    tensor_to_host(&t, path.parent()).map_err(|e| match e {
        ImportError::Type { .. } => Outcome::Skipped(format!("test data: {e}")),
        e => fail(e.to_string()),
    })
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<(usize, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name
                .strip_prefix(prefix)?
                .strip_suffix(".pb")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// How close an output must be: element-wise `|got - want| <= atol + rtol * |want|`, where
/// `atol` is the case's `atol` plus `atol_scale` times the largest finite `|want|` of that
/// output (so one tolerance.json can scale the absolute term to each output's magnitude).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative term.
    pub rtol: f64,
    /// Absolute term.
    pub atol: f64,
    /// Added to `atol`, times the output's largest finite magnitude.
    pub atol_scale: f64,
}

impl Default for Tolerance {
    /// The ONNX backend-test defaults.
    fn default() -> Self {
        Tolerance {
            rtol: 1e-3,
            atol: 1e-7,
            atol_scale: 0.0,
        }
    }
}

impl Tolerance {
    /// Parses `tolerance.json` text: `rtol`, `atol`, `atol_scale`, each optional and >= 0.
    pub fn parse(text: &str) -> Result<Tolerance, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let d = Tolerance::default();
        let get = |key: &str, default: f64| match &v[key] {
            serde_json::Value::Null => Ok(default),
            x => x
                .as_f64()
                .filter(|f| *f >= 0.0)
                .ok_or_else(|| format!("`{key}` must be a number >= 0, got {x}")),
        };
        Ok(Tolerance {
            rtol: get("rtol", d.rtol)?,
            atol: get("atol", d.atol)?,
            atol_scale: get("atol_scale", d.atol_scale)?,
        })
    }

    /// The absolute term for an output with these expected values.
    pub fn atol_for(&self, want: &[f64]) -> f64 {
        let scale = want
            .iter()
            .filter(|w| w.is_finite())
            .fold(0.0f64, |m, w| m.max(w.abs()));
        self.atol + self.atol_scale * scale
    }

    /// The first element outside the tolerance, as (index, got, want, atol used).
    pub fn first_mismatch(&self, got: &[f64], want: &[f64]) -> Option<(usize, f64, f64, f64)> {
        let atol = self.atol_for(want);
        got.iter()
            .zip(want)
            .enumerate()
            .find(|(_, (a, b))| {
                let same = (a.is_nan() && b.is_nan())
                    || a == b
                    || (*a - *b).abs() <= atol + self.rtol * b.abs();
                !same
            })
            .map(|(i, (a, b))| (i, *a, *b, atol))
    }
}

/// The case's `tolerance.json`, else the defaults; a file that does not parse fails the case.
fn tolerance(case: &Path) -> Result<Tolerance, Outcome> {
    let path = case.join("tolerance.json");
    match fs::read_to_string(&path) {
        Err(_) => Ok(Tolerance::default()),
        Ok(text) => {
            Tolerance::parse(&text).map_err(|e| Outcome::Failed(format!("{}: {e}", path.display())))
        }
    }
}

fn is_unsupported(e: &CompileError) -> bool {
    matches!(
        e,
        CompileError::Import(
            ImportError::Unsupported(_)
                | ImportError::Type { .. }
                | ImportError::Opset { .. }
                // a shape computed from inputs at run time that freezing inputs cannot fix
                | ImportError::NeedsConstant { .. }
        ) | CompileError::Lower(LowerError::Unsupported { .. })
    )
}

/// What the runner needs from the model besides compiling it: its op types in order, and its
/// graph inputs that are not initializers (`input_<k>.pb` is the k-th). Read once: a real
/// model's file is hundreds of megabytes.
fn model_summary(model: &Path) -> (Vec<String>, Vec<String>) {
    let Some(g) = fs::read(model)
        .ok()
        .and_then(|b| proto::ModelProto::decode(&b[..]).ok())
        .and_then(|m| m.graph)
    else {
        return (Vec::new(), Vec::new());
    };
    let inits: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = g
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .map(|i| i.name.clone())
        .collect();
    (g.node.iter().map(|n| n.op_type.clone()).collect(), inputs)
}

/// The op a case tests: the model's op type whose name (lower case, no underscores) is the
/// longest prefix of the test name; else the first node's.
fn case_op(name: &str, ops: &[String]) -> String {
    let key: String = name
        .trim_start_matches("test_")
        .replace('_', "")
        .to_lowercase();
    ops.iter()
        .filter(|op| key.starts_with(&op.to_lowercase()))
        .max_by_key(|op| op.len())
        .or(ops.first())
        .cloned()
        .unwrap_or_else(|| "?".into())
}

/// Runs one case.
pub fn run_case(case: &Path, options: &CompileOptions, run: &RunOptions) -> CaseResult {
    let name = case
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().to_string());
    let (ops, inputs) = model_summary(&case.join("model.onnx"));
    let op = case_op(&name, &ops);
    let outcome = run_case_inner(case, &inputs, options, run);
    CaseResult { name, op, outcome }
}

fn compile_case(model: &Path, options: &CompileOptions) -> Result<Session, Outcome> {
    let compiled = match compile_file(model, options) {
        Ok(c) => c,
        Err(e) if is_unsupported(&e) => return Err(Outcome::Skipped(e.to_string())),
        Err(e) => return Err(Outcome::Failed(format!("compile: {e}"))),
    };
    Session::new(compiled.artifact).map_err(|e| Outcome::Failed(e.to_string()))
}

fn run_case_inner(
    case: &Path,
    names: &[String],
    options: &CompileOptions,
    run: &RunOptions,
) -> Outcome {
    let model = case.join("model.onnx");
    let tol = match tolerance(case) {
        Ok(t) => t,
        Err(outcome) => return outcome,
    };
    let mut sets: Vec<PathBuf> = fs::read_dir(case)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Outcome::Failed("no test_data_set_* folder".into());
    }
    for set in sets {
        let mut data = BTreeMap::new();
        for (k, file) in numbered(&set, "input_").into_iter().enumerate() {
            match read_tensor(&file) {
                Ok(t) => {
                    data.insert(names.get(k).cloned().unwrap_or_default(), t);
                }
                Err(outcome) => return outcome,
            }
        }
        // A static compiler specialises on inputs that decide shapes: when the model needs an
        // input's value at compile time (a Reshape target, Unsqueeze axes), fix that input to
        // this data set's value and compile again.
        let mut opts = options.clone();
        let session = loop {
            match compile_file(&model, &opts) {
                Err(CompileError::Import(ImportError::NeedsConstant { value, .. }))
                    if data.contains_key(&value) && !opts.frozen_inputs.contains_key(&value) =>
                {
                    opts.frozen_inputs
                        .insert(value.clone(), data[&value].clone());
                }
                _ => break compile_case(&model, &opts),
            }
        };
        let session = match session {
            Ok(s) => s,
            Err(outcome) => return outcome,
        };
        let sig = session.artifact().signature.clone();
        let mut inputs = BTreeMap::new();
        for entry in &sig.inputs {
            let Some(t) = data.get(&entry.name) else {
                return Outcome::Failed(format!("no data for input `{}`", entry.name));
            };
            let t = if t.dtype != entry.dtype {
                HostTensor::from_f64(entry.dtype, &t.shape, &t.to_f64_vec())
            } else {
                t.clone()
            };
            inputs.insert(entry.name.clone(), t);
        }
        let outputs = match session.run(&inputs, run) {
            Ok(o) => o,
            Err(e) => return Outcome::Failed(format!("run: {e}")),
        };
        for (k, file) in numbered(&set, "output_").into_iter().enumerate() {
            let want = match read_tensor(&file) {
                Ok(t) => t,
                Err(outcome) => return outcome,
            };
            let Some(entry) = sig.outputs.get(k) else {
                return Outcome::Failed(format!("expected output {k} is missing"));
            };
            let Some(got) = outputs.get(&entry.name) else {
                return Outcome::Failed(format!("output `{}` was not produced", entry.name));
            };
            if got.shape != want.shape {
                return Outcome::Failed(format!(
                    "output `{}` has shape {:?}, expected {:?}",
                    entry.name, got.shape, want.shape
                ));
            }
            let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
            if let Some((i, a, b, atol)) = tol.first_mismatch(&g, &w) {
                if let Some(why) = finer_than_type(want.dtype, tol.rtol, &g, &w) {
                    return Outcome::Skipped(format!("output `{}`: {why}", entry.name));
                }
                return Outcome::Failed(format!(
                    "{}: output `{}`[{i}] = {a}, expected {b} (rtol {}, atol {atol})",
                    set.file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().to_string()),
                    entry.name,
                    tol.rtol
                ));
            }
        }
    }
    Outcome::Passed
}

/// Why a mismatch cannot be judged: the case asks for a relative tolerance finer than the
/// unit roundoff of its (low-precision float) output type, and every element is within two
/// units in the last place of the expected one, the scale of the type's own rounding. The
/// expected values of such cases carry the reference implementation's rounding of every step
/// inside an operator (numpy in bf16 rounds a softmax's exponentials, their sum and the
/// quotients one by one) where tessera's kernels round once per operator, and with a bf16 graph
/// of a few operators that shifts results by an ulp or two either way. `None` when the case can
/// be judged (it then fails).
fn finer_than_type(
    dtype: tessera_ir::DType,
    rtol: f64,
    got: &[f64],
    want: &[f64],
) -> Option<String> {
    use tessera_ir::DType;
    let fraction_bits = match dtype {
        DType::Bf16 => 7,
        DType::Fp8E4m3 => 3,
        DType::Fp8E5m2 => 2,
        _ => return None,
    };
    let unit_roundoff = (-(fraction_bits as f64) - 1.0).exp2();
    if rtol >= unit_roundoff {
        return None;
    }
    let ulp = |v: f64| (v.abs().log2().floor() - fraction_bits as f64).exp2();
    let within = got.iter().zip(want).all(|(&a, &b)| {
        a == b
            || (a.is_nan() && b.is_nan())
            || (a.is_finite() && b.is_finite() && (a - b).abs() <= 2.0 * ulp(a).max(ulp(b)))
    });
    within.then(|| {
        format!(
            "{dtype} results within two {dtype} ulps of the expected values, but the case's rtol \
             {rtol} is finer than {dtype}'s precision ({unit_roundoff}), so the expected values' \
             own rounding decides it"
        )
    })
}

/// Markdown table per op: passed of total, and the reasons for the rest (first reason of each
/// kind, counted).
pub fn support_table(results: &[CaseResult]) -> String {
    let mut by_op: BTreeMap<&str, Vec<&CaseResult>> = BTreeMap::new();
    for r in results {
        by_op.entry(&r.op).or_default().push(r);
    }
    let passed = results
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .count();
    let mut out = format!(
        "# ONNX node test conformance\n\nGenerated by `tessera onnx-test target/nodetests --support-table docs/onnx-support.md` \
         over the node test cases of the pip `onnx` package (materialised by `scripts/make_node_tests.py`), on the \
         `interp` backend. Total: **{passed} of {} passed**.\n\n| operator | passed | of | why the others do not pass |\n|---|---|---|---|\n",
        results.len()
    );
    for (op, cases) in by_op {
        let ok = cases
            .iter()
            .filter(|r| r.outcome == Outcome::Passed)
            .count();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for r in &cases {
            let reason = match &r.outcome {
                Outcome::Passed => continue,
                Outcome::Skipped(s) => format!("unsupported: {}", short(s)),
                Outcome::Failed(s) => format!("fails: {}", short(s)),
            };
            *reasons.entry(reason).or_default() += 1;
        }
        let why: Vec<String> = reasons
            .into_iter()
            .take(3)
            .map(|(r, n)| format!("{n}x {r}"))
            .collect();
        out.push_str(&format!(
            "| {op} | {ok} | {} | {} |\n",
            cases.len(),
            why.join("; ").replace('|', "/")
        ));
    }
    out
}

fn short(s: &str) -> String {
    let s = s.lines().next().unwrap_or("");
    if s.chars().count() > 110 {
        format!("{}...", s.chars().take(110).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::DType;

    #[test]
    fn only_ulp_differences_below_the_type_precision_are_undecidable() {
        // 0.455078125 and 0.45703125 are neighbouring bf16 values (ulp 2^-9 in [0.25, 0.5)).
        let (a, b) = (0.455_078_125, 0.457_031_25);
        assert!(finer_than_type(DType::Bf16, 1e-3, &[a, 1.0], &[b, 1.0]).is_some());
        // Three ulps apart is a real difference.
        let c = b + 2.0 * 0.001_953_125;
        assert!(finer_than_type(DType::Bf16, 1e-3, &[a], &[c]).is_none());
        // A tolerance the type can meet, or a type with more precision, is judged as usual.
        assert!(finer_than_type(DType::Bf16, 1e-2, &[a], &[b]).is_none());
        assert!(finer_than_type(DType::F32, 1e-7, &[a], &[b]).is_none());
    }

    #[test]
    fn tolerance_defaults_and_keys() {
        assert_eq!(Tolerance::parse("{}").unwrap(), Tolerance::default());
        let t = Tolerance::parse(r#"{"rtol": 0.001, "atol": 0, "atol_scale": 0.0001}"#).unwrap();
        assert_eq!((t.rtol, t.atol, t.atol_scale), (1e-3, 0.0, 1e-4));
        assert!(Tolerance::parse(r#"{"atol": -1}"#).is_err());
        assert!(Tolerance::parse(r#"{"atol_scale": "big"}"#).is_err());
        assert!(Tolerance::parse("not json").is_err());
    }

    #[test]
    fn atol_scale_follows_the_outputs_magnitude() {
        let t = Tolerance {
            rtol: 1e-3,
            atol: 0.0,
            atol_scale: 1e-4,
        };
        // max |want| = 200 (the infinity is ignored), so atol = 0.02.
        let want = [200.0, -3.0, 0.0, f64::INFINITY];
        assert!((t.atol_for(&want) - 0.02).abs() < 1e-15);
        // 0.0199 off a zero passes, 0.0201 fails.
        assert_eq!(
            t.first_mismatch(&[200.0, -3.0, 0.0199, f64::INFINITY], &want),
            None
        );
        let bad = t.first_mismatch(&[200.0, -3.0, 0.0201, f64::INFINITY], &want);
        assert_eq!(bad.map(|m| m.0), Some(2));
        // The relative term adds 1e-3 |want|: 200.2 is 0.2 off (<= 0.02 + 0.2), 200.23 is not.
        assert_eq!(
            t.first_mismatch(&[200.2, -3.0, 0.0, f64::INFINITY], &want),
            None
        );
        assert_eq!(
            t.first_mismatch(&[200.23, -3.0, 0.0, f64::INFINITY], &want)
                .map(|m| m.0),
            Some(0)
        );
        // The same error on a small-magnitude output fails: the scale is per output.
        assert!(t.first_mismatch(&[0.0201], &[0.0]).is_some());
    }
}
