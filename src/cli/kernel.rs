//! `tessera kernel ...`: check and run kernels written in the `.tile` text format.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tessera_ir::{HostTensor, TargetSpec, TensorKind, TileProgram};

use super::npy;

/// Reads and parses a `.tile` file.
pub fn load(path: &Path) -> Result<TileProgram, String> {
    let src =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    tessera_ir::text::parse(&src, &path.display().to_string()).map_err(|e| e.to_string())
}

/// `kernel check`: parse and verify; print a one-line summary.
pub fn check(path: &Path, target: &TargetSpec) -> Result<(), String> {
    let program = load(path)?;
    tessera_ir::verify(&program, target).map_err(|e| format!("{}: {e}", path.display()))?;
    let insts = program.insts.len();
    println!(
        "{}: kernel `{}` is valid for {} ({} instructions, {} buffers)",
        path.display(),
        program.name,
        target.name,
        insts,
        program.buffers.len()
    );
    Ok(())
}

/// `kernel run`: bind inputs from `.npy` files, run on the emulator, write or summarise outputs.
pub fn run(
    path: &Path,
    target: &TargetSpec,
    named_inputs: &[(String, PathBuf)],
    inputs_dir: Option<&Path>,
    output_dir: Option<&Path>,
) -> Result<(), String> {
    let program = load(path)?;
    let mut inputs = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, _) in named_inputs {
        if !program
            .tensors
            .iter()
            .any(|t| t.kind == TensorKind::Input && &t.name == name)
        {
            return Err(format!(
                "--input {name}=...: kernel `{}` has no input `{name}` (its inputs: {})",
                program.name,
                input_names(&program)
            ));
        }
    }
    for t in program.tensors_of(TensorKind::Input) {
        let file = named_inputs
            .iter()
            .find(|(n, _)| n == &t.name)
            .map(|(_, f)| f.clone())
            .or_else(|| inputs_dir.map(|d| d.join(npy::file_name(&t.name))));
        match file {
            Some(f) => {
                let host = npy::read_as(&f, t.dtype)?;
                if host.shape != t.shape {
                    return Err(format!(
                        "input @{} expects shape {:?} but {} holds {:?}",
                        t.name,
                        t.shape,
                        f.display(),
                        host.shape
                    ));
                }
                inputs.insert(t.name.clone(), host);
            }
            None => missing.push(format!("@{}", t.name)),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "no data for input(s) {}: pass --input NAME=FILE.npy or --inputs-dir DIR",
            missing.join(", ")
        ));
    }
    let outputs =
        tessera_backends::interp::run(&program, target, &inputs).map_err(|e| e.to_string())?;
    match output_dir {
        Some(dir) => {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            for (name, t) in &outputs {
                let file = dir.join(npy::file_name(name));
                npy::write_atomic(&file, t)?;
                println!(
                    "wrote @{name} {}{:?} to {}",
                    t.dtype,
                    t.shape,
                    file.display()
                );
            }
        }
        None => {
            for (name, t) in &outputs {
                println!("{}", summary(&format!("@{name}"), t));
            }
        }
    }
    Ok(())
}

fn input_names(program: &TileProgram) -> String {
    program
        .tensors_of(TensorKind::Input)
        .map(|t| format!("@{}", t.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line describing an output: dtype, shape, range, mean and the first values.
pub fn summary(name: &str, t: &HostTensor) -> String {
    let v = t.to_f64_vec();
    let n = v.len().max(1) as f64;
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = v.iter().sum::<f64>() / n;
    let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:.6}")).collect();
    format!(
        "{name}: {}{:?} min {min:.6} max {max:.6} mean {mean:.6} first [{}{}]",
        t.dtype,
        t.shape,
        head.join(", "),
        if v.len() > 6 { ", ..." } else { "" }
    )
}
