//! `tessera compile`, `run` and `inspect`: the ML engineer's path from an ONNX model to outputs
//! on the emulator.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tessera_compiler::driver::{CompileOptions, Compiled, compile_file};
use tessera_ir::HostTensor;
use tessera_runtime::{RunOptions, Session};

use super::npy;

/// What `inspect --emit` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// The imported graph IR, after folding and shape inference.
    Graph,
    /// The e-graph optimiser's report: e-graph size, why saturation stopped, rules fired, the
    /// estimate before and after, and the chosen plan.
    Egraph,
    /// The chosen kernel plan: one line per kernel with its estimated time.
    Kernels,
    /// The whole-model tile program, in the `.tile` text format.
    Tile,
    /// The scheduled machine program: queues, waits, placements.
    Isa,
    /// The MLIR module the `mlir` backend generates: one function per distinct kernel
    /// signature (builds with `--features mlir`).
    Mlir,
}

pub(crate) fn compile(model: &Path, options: &CompileOptions) -> Result<Compiled, String> {
    compile_file(model, options).map_err(|e| format!("{}: {e}", model.display()))
}

/// `compile`: write the artifact atomically.
pub fn compile_cmd(model: &Path, out: &Path, options: &CompileOptions) -> Result<(), String> {
    let c = compile(model, options)?;
    tessera_ir::artifact::write_atomic(out, &c.artifact).map_err(|e| e.to_string())?;
    let bytes = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "compiled {} -> {} ({} nodes planned as {} kernels, {} machine instructions on {} queues, {} bytes, {})",
        model.display(),
        out.display(),
        c.graph.nodes.len(),
        c.optimized
            .nodes
            .iter()
            .filter(|n| !matches!(
                n.op,
                tessera_ir::graph::GraphOp::Reshape { .. } | tessera_ir::graph::GraphOp::Identity
            ))
            .count(),
        c.machine.inst_count(),
        c.machine
            .queues
            .iter()
            .filter(|q| !q.insts.is_empty())
            .count(),
        bytes,
        options.flags()
    );
    Ok(())
}

/// True when the file starts with the artifact magic (so `run` accepts either kind of file
/// whatever its extension).
pub(crate) fn is_artifact(path: &Path) -> Result<bool, String> {
    use std::io::Read;
    let mut f = fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(n == 4 && magic == tessera_ir::artifact::MAGIC)
}

/// Loads an artifact, or compiles an ONNX model in memory (whatever the file's extension).
pub fn session(model: &Path, options: &CompileOptions) -> Result<Session, String> {
    if is_artifact(model)? {
        Session::load(model).map_err(|e| format!("{}: {e}", model.display()))
    } else {
        let c = compile(model, options)?;
        Session::new(c.artifact).map_err(|e| e.to_string())
    }
}

/// `run`: compile or load, bind inputs, run on the emulator, write or summarise outputs.
pub fn run_cmd(
    model: &Path,
    options: &CompileOptions,
    named: &[(String, PathBuf)],
    inputs_dir: Option<&Path>,
    output_dir: Option<&Path>,
    run: &RunOptions,
) -> Result<(), String> {
    let session = session(model, options)?;
    let inputs = read_inputs(&session, named, inputs_dir)?;
    let outputs = session.run(&inputs, run).map_err(|e| e.to_string())?;
    write_outputs(&outputs, output_dir)
}

/// Reads every graph input from `--input NAME=FILE.npy` or `DIR/NAME.npy` (`--inputs-dir`),
/// checking names and shapes against the session's signature.
pub fn read_inputs(
    session: &Session,
    named: &[(String, PathBuf)],
    inputs_dir: Option<&Path>,
) -> Result<BTreeMap<String, HostTensor>, String> {
    let sig = &session.artifact().signature;
    for (name, _) in named {
        if !sig.inputs.iter().any(|e| &e.name == name) {
            let all: Vec<&str> = sig.inputs.iter().map(|e| e.name.as_str()).collect();
            return Err(format!(
                "--input {name}=...: the model has no input `{name}` (its inputs: {})",
                all.join(", ")
            ));
        }
    }
    let mut inputs = BTreeMap::new();
    let mut missing = Vec::new();
    for e in &sig.inputs {
        let file = named
            .iter()
            .find(|(n, _)| n == &e.name)
            .map(|(_, f)| f.clone())
            .or_else(|| inputs_dir.map(|d| d.join(npy::file_name(&e.name))));
        match file {
            Some(f) => {
                let t = npy::read_as(&f, e.dtype)?;
                if t.shape != e.shape {
                    return Err(format!(
                        "input `{}` expects shape {:?} but {} holds {:?}",
                        e.name,
                        e.shape,
                        f.display(),
                        t.shape
                    ));
                }
                inputs.insert(e.name.clone(), t);
            }
            None => missing.push(format!("{} ({}{:?})", e.name, e.dtype, e.shape)),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "no data for input(s) {}: pass --input NAME=FILE.npy or --inputs-dir DIR (holding NAME.npy, with / and : in names written as _)",
            missing.join(", ")
        ));
    }
    Ok(inputs)
}

fn write_outputs(
    outputs: &BTreeMap<String, HostTensor>,
    output_dir: Option<&Path>,
) -> Result<(), String> {
    match output_dir {
        Some(dir) => {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            for (name, t) in outputs {
                let file = dir.join(npy::file_name(name));
                npy::write_atomic(&file, t)?;
                println!(
                    "wrote {name} {}{:?} to {}",
                    t.dtype,
                    t.shape,
                    file.display()
                );
            }
        }
        None => {
            for (name, t) in outputs {
                println!("{}", super::kernel::summary(name, t));
            }
        }
    }
    Ok(())
}

/// `inspect --emit`: print one stage of the compilation.
pub fn inspect_cmd(model: &Path, emit: Emit, options: &CompileOptions) -> Result<(), String> {
    #[cfg(not(feature = "mlir"))]
    if emit == Emit::Mlir {
        return Err(
            "--emit mlir needs the mlir backend, which this build of tessera does not have: rebuild with `cargo build --release --features mlir` after installing LLVM 19's MLIR (scripts/install-mlir.sh)"
                .into(),
        );
    }
    if emit == Emit::Graph {
        let g = tessera_compiler::onnx::import_file(model)
            .map_err(|e| format!("{}: {e}", model.display()))?;
        print!("{}", tessera_ir::graph::print_graph(&g));
        return Ok(());
    }
    let c = compile(model, options)?;
    match emit {
        Emit::Egraph | Emit::Kernels => match &c.opt_report {
            None => println!(
                "-O0: the e-graph optimiser does not run; every node is lowered op by op ({} kernels)",
                c.graph.nodes.len()
            ),
            Some(r) if emit == Emit::Egraph => print!("{}", r.render()),
            Some(r) => {
                for p in &r.plan {
                    println!(
                        "{:>10.2} us  {:<40} {} -> {}",
                        p.est_ns / 1e3,
                        p.op,
                        p.node,
                        p.ty
                    );
                }
            }
        },
        Emit::Tile => print!("{}", tessera_ir::text::print(&c.lowered.program)),
        #[cfg(feature = "mlir")]
        Emit::Mlir => print!(
            "{}",
            tessera_backends::jit::mlir_module(&c.machine, &options.target)
                .map_err(|e| e.to_string())?
        ),
        _ => print!("{}", tessera_ir::text::print_machine(&c.machine)),
    }
    Ok(())
}
