//! `tessera profile`: compile a model (or load an artifact), run the timing model on its machine
//! program, and show the result: a text summary, or one JSON object with `--json`, plus a
//! Chrome/Perfetto trace and an SVG timeline written to files on request.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use tessera_backends::timing;
use tessera_compiler::driver::CompileOptions;
use tessera_runtime::profile;

/// Where `profile` writes its files.
pub struct ProfileOutputs<'a> {
    /// Print the JSON object alone instead of the summary.
    pub json: bool,
    /// Chrome/Perfetto trace file.
    pub trace: Option<&'a Path>,
    /// SVG timeline file.
    pub svg: Option<&'a Path>,
}

/// `profile`: simulate, then print and write what was asked for.
pub fn profile_cmd(
    model: &Path,
    options: &CompileOptions,
    outputs: &ProfileOutputs,
) -> Result<(), String> {
    let session = super::model::session(model, options)?;
    let program = &session.artifact().program;
    let report = timing::simulate(program, session.target())
        .map_err(|e| format!("{}: timing model: {e}", model.display()))?;
    show(&report, &program.name, model, "model", outputs)
}

/// `kernel profile`: parse and check a `.tile` kernel, schedule it, simulate, then print and
/// write what was asked for.
pub fn kernel_profile_cmd(
    file: &Path,
    target: &tessera_ir::TargetSpec,
    outputs: &ProfileOutputs,
) -> Result<(), String> {
    let kernel = super::kernel::load(file)?;
    let report =
        tessera::profile_kernel(&kernel, target).map_err(|e| format!("{}: {e}", file.display()))?;
    show(&report, &kernel.name, file, "kernel", outputs)
}

fn show(
    report: &timing::TimingReport,
    name: &str,
    source: &Path,
    key: &str,
    outputs: &ProfileOutputs,
) -> Result<(), String> {
    let mut written = Vec::new();
    if let Some(path) = outputs.trace {
        write_atomic(path, &profile::chrome_trace(report))?;
        written.push(format!("wrote Chrome trace to {}", path.display()));
    }
    if let Some(path) = outputs.svg {
        let svg = profile::svg_timeline_with(
            report,
            &profile::SvgOptions {
                title: Some(name.to_string()),
                ..profile::SvgOptions::default()
            },
        );
        write_atomic(path, &svg)?;
        written.push(format!("wrote SVG timeline to {}", path.display()));
    }

    if outputs.json {
        // The model's (or kernel's) name first, then the profile's fields in their documented
        // order.
        let mut object = serde_json::Map::new();
        object.insert(key.into(), name.into());
        if let serde_json::Value::Object(fields) = profile::json(report) {
            object.extend(fields);
        }
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(object))
            .map_err(|e| e.to_string())?;
        println!("{text}");
        // stdout holds the JSON object alone, so it can be piped to `jq`.
        for line in written {
            eprintln!("{line}");
        }
    } else {
        println!("{name} ({})", source.display());
        print!("{}", profile::summary(report));
        if !written.is_empty() {
            println!();
        }
        for line in written {
            println!("{line}");
        }
    }
    Ok(())
}

/// Writes `contents` to `path` through a temporary file in the same directory and a rename, so
/// a failure never leaves a half-written file.
fn write_atomic(path: &Path, contents: &str) -> Result<(), String> {
    let mut tmp_name: OsString = path
        .file_name()
        .ok_or_else(|| format!("{} is not a file name", path.display()))?
        .to_owned();
    tmp_name.push(".partial");
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let result = fs::write(&tmp, contents)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
        .and_then(|()| {
            fs::rename(&tmp, path)
                .map_err(|e| format!("cannot move output into {}: {e}", path.display()))
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
