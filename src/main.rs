//! The `tessera` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tessera_compiler::driver::CompileOptions;
use tessera_ir::TargetSpec;
use tessera_runtime::RunOptions;

mod cli;

/// tessera: a compiler and kernel toolchain for Trainium/Inferentia-style accelerators, with a
/// CPU emulator that checks every hardware rule.
#[derive(Parser)]
#[command(name = "tessera", version, about, long_about = None, after_help = "\
Examples:
  tessera compile model.onnx -o model.tsr
  tessera run model.tsr --inputs-dir inputs/ --output-dir outputs/
  tessera run model.onnx --input x=x.npy          # compiles in memory, prints a summary
  tessera profile model.onnx --svg timeline.svg   # also: --json, --trace trace.json
  tessera bench model.onnx --backend jit --iters 50 --json
  tessera inspect model.onnx --emit graph         # also: tile, isa
  tessera kernel run examples/tiles/softmax_row.tile --input x=x.npy
  tessera list-ops")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command that compiles.
#[derive(Args, Clone)]
struct CompileArgs {
    /// Target preset.
    #[arg(long, value_enum, default_value_t = Target::Trn2)]
    target: Target,
    /// Optimisation level: 0 lowers op by op; 1 fuses (element-wise regions, LayerNorm/GELU/
    /// softmax recognition, epilogues, attention); 2 also folds transposes into matmuls; 3
    /// gives the e-graph larger budgets.
    #[arg(short = 'O', value_name = "LEVEL", default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=3))]
    opt_level: u8,
    /// Cast matmul (and convolution) inputs, or everything, to bf16 with fp32 accumulation.
    #[arg(long, value_enum, default_value_t = AutoCast::None)]
    auto_cast: AutoCast,
    /// Use the kernel in FILE.tile for nodes of a custom operator (repeatable), e.g.
    /// `--custom-op com.example:FastRmsNorm=rmsnorm.tile`: the kernel's input tensors, in
    /// order, take the node's inputs (their types must match) and its output tensors are the
    /// node's outputs.
    #[arg(long = "custom-op", value_name = "DOMAIN:OP=FILE.tile", value_parser = parse_custom_op)]
    custom_ops: Vec<(String, String, PathBuf)>,
}

/// What `profile` and `kernel profile` print and write.
#[derive(Args, Clone)]
struct ProfileArgs {
    /// Print the profile as one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Write a Chrome/Perfetto trace (Trace Event Format JSON) to this file.
    #[arg(long, value_name = "FILE.json")]
    trace: Option<PathBuf>,
    /// Write an SVG timeline (one lane per queue, instructions coloured by node).
    #[arg(long, value_name = "FILE.svg")]
    svg: Option<PathBuf>,
}

impl ProfileArgs {
    fn outputs(&self) -> cli::profile::ProfileOutputs<'_> {
        cli::profile::ProfileOutputs {
            json: self.json,
            trace: self.trace.as_deref(),
            svg: self.svg.as_deref(),
        }
    }
}

fn parse_custom_op(s: &str) -> Result<(String, String, PathBuf), String> {
    let (op, file) = s
        .split_once('=')
        .ok_or_else(|| format!("expected DOMAIN:OP=FILE.tile, got `{s}`"))?;
    let (domain, op_type) = op.rsplit_once(':').ok_or_else(|| {
        format!("expected DOMAIN:OP before `=` (e.g. com.example:MyOp), got `{op}`")
    })?;
    if op_type.is_empty() || file.is_empty() {
        return Err(format!("expected DOMAIN:OP=FILE.tile, got `{s}`"));
    }
    Ok((domain.to_string(), op_type.to_string(), PathBuf::from(file)))
}

impl CompileArgs {
    fn options(&self) -> Result<CompileOptions, String> {
        let auto_cast = match self.auto_cast {
            AutoCast::None => tessera_compiler::driver::AutoCast::None,
            AutoCast::Matmul => tessera_compiler::driver::AutoCast::Matmul,
            AutoCast::All => tessera_compiler::driver::AutoCast::All,
        };
        let mut custom_ops = tessera_compiler::custom::CustomOps::new();
        for (domain, op_type, file) in &self.custom_ops {
            let kernel = tessera_compiler::custom::TileFileKernel::load(file)
                .map_err(|e| format!("--custom-op {domain}:{op_type}: {e}"))?;
            custom_ops.register(domain, op_type, kernel);
        }
        Ok(CompileOptions {
            target: self.target.spec(),
            opt_level: self.opt_level,
            auto_cast,
            frozen_inputs: Default::default(),
            custom_ops,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Compile an ONNX model to an artifact (.tsr).
    Compile {
        /// The ONNX model.
        model: PathBuf,
        /// The artifact to write (written atomically: never half-written).
        #[arg(short, long, value_name = "OUT.tsr")]
        output: PathBuf,
        #[command(flatten)]
        compile: CompileArgs,
    },
    /// Run an ONNX model or a compiled artifact on the emulator.
    ///
    /// Every graph input needs data: `--input NAME=FILE.npy`, or `DIR/NAME.npy` with
    /// `--inputs-dir DIR` (`/` and `:` in names become `_`). Outputs are written as
    /// `DIR/NAME.npy` with `--output-dir`, otherwise summarised.
    Run {
        /// An ONNX model (compiled in memory) or an artifact from `tessera compile`.
        model: PathBuf,
        /// Input data: NAME=FILE.npy (repeatable).
        #[arg(long = "input", value_name = "NAME=FILE.npy", value_parser = parse_named_input)]
        inputs: Vec<(String, PathBuf)>,
        /// Directory holding NAME.npy for each input not given with --input.
        #[arg(long, value_name = "DIR")]
        inputs_dir: Option<PathBuf>,
        /// Directory to write NAME.npy for each output.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
        /// Execution backend: `jit` (the default) runs compiled instruction templates; `interp`
        /// is the checked emulator, which also reports reads of unwritten memory and races.
        #[arg(long, value_enum, default_value_t = BackendArg::Jit)]
        backend: BackendArg,
        /// Seed for the interleaving of engine queues (a correct program gives the same result
        /// for every seed; races are reported whatever the seed).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        compile: CompileArgs,
    },
    /// Profile a model on the modelled chip: latency, FLOPs, MFU, HBM traffic, engine busy
    /// time and the nodes that take it.
    ///
    /// Prints a text summary, or with `--json` one JSON object alone (for `jq`). `--trace` writes
    /// a Chrome/Perfetto trace (open it in https://ui.perfetto.dev or chrome://tracing) and
    /// `--svg` a timeline picture; both are written atomically.
    Profile {
        /// An ONNX model (compiled in memory) or an artifact from `tessera compile`.
        model: PathBuf,
        #[command(flatten)]
        outputs: ProfileArgs,
        #[command(flatten)]
        compile: CompileArgs,
    },
    /// Time runs of a model on the emulator: the one-time cost (compile or load), then the
    /// median, min and max wall-clock time per run.
    ///
    /// Inputs come from `--input NAME=FILE.npy` / `--inputs-dir DIR` as for `run`; with neither,
    /// seeded random inputs of the signature's types (floats in [-1, 1), integers in 0..4).
    ///
    /// Example: tessera bench examples/models/mlp/model.onnx --backend jit --iters 50 --json
    #[command(after_help = "\
Examples:
  tessera bench model.onnx                          # 10 runs on interp, random inputs
  tessera bench model.tsr --backend jit --iters 100 --warmup 5
  tessera bench model.onnx --inputs-dir inputs/ --json | jq .median_ms")]
    Bench {
        /// An ONNX model (compiled in memory) or an artifact from `tessera compile`.
        model: PathBuf,
        /// Input data: NAME=FILE.npy (repeatable).
        #[arg(long = "input", value_name = "NAME=FILE.npy", value_parser = parse_named_input)]
        inputs: Vec<(String, PathBuf)>,
        /// Directory holding NAME.npy for each input not given with --input.
        #[arg(long, value_name = "DIR")]
        inputs_dir: Option<PathBuf>,
        /// Execution backend.
        #[arg(long, value_enum, default_value_t = BackendArg::Interp)]
        backend: BackendArg,
        /// Timed runs (at least 1).
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// Untimed runs before the timed ones.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Seed for random inputs and for the interleaving of engine queues.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print one JSON object (load_ms, median_ms, min_ms, max_ms, iters, backend, compile_ms, ...).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        compile: CompileArgs,
    },
    /// Show one stage of compiling an ONNX model.
    Inspect {
        /// The ONNX model.
        model: PathBuf,
        /// The stage to print.
        #[arg(long, value_enum)]
        emit: cli::model::Emit,
        #[command(flatten)]
        compile: CompileArgs,
    },
    /// Run ONNX backend test cases (folders with model.onnx and test_data_set_N/).
    ///
    /// Each DIR is a case folder or a folder of case folders (e.g. the node tests written by
    /// scripts/make_node_tests.py). Prints PASS/FAIL/SKIP per case and ends with
    /// `N passed, N failed, N skipped`; exits non-zero if any case failed. Cases needing an
    /// operator or element type not supported yet are skipped.
    OnnxTest {
        /// Case folders, or folders of case folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Only cases whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Print one JSON object (cases and totals) instead of lines.
        #[arg(long)]
        json: bool,
        /// Also write a per-operator conformance table (Markdown) to this file.
        #[arg(long, value_name = "FILE.md")]
        support_table: Option<PathBuf>,
        /// Execution backend.
        #[arg(long, value_enum, default_value_t = BackendArg::Interp)]
        backend: BackendArg,
        #[command(flatten)]
        compile: CompileArgs,
    },
    /// Work with kernels written in the `.tile` text format.
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// List the ONNX operators the importer accepts.
    ListOps,
    /// List the kernels in the kernel library.
    ListKernels,
}

#[derive(Subcommand)]
enum KernelCommand {
    /// Parse a `.tile` file and check every hardware rule of the target.
    Check {
        /// The kernel, in the `.tile` text format (see docs/tile-format.md).
        file: PathBuf,
        /// Target preset.
        #[arg(long, value_enum, default_value_t = Target::Trn2)]
        target: Target,
    },
    /// Run a `.tile` kernel on the checked reference emulator.
    ///
    /// Every input tensor needs data: from `--input NAME=FILE.npy` or from `DIR/NAME.npy` with
    /// `--inputs-dir DIR` (`/` and `:` in names become `_`). Values are converted to the declared
    /// dtype. Outputs are written as `.npy` files with `--output-dir`, otherwise summarised.
    Run {
        /// The kernel, in the `.tile` text format.
        file: PathBuf,
        /// Input data: NAME=FILE.npy (repeatable).
        #[arg(long = "input", value_name = "NAME=FILE.npy", value_parser = parse_named_input)]
        inputs: Vec<(String, PathBuf)>,
        /// Directory holding NAME.npy for each input not given with --input.
        #[arg(long, value_name = "DIR")]
        inputs_dir: Option<PathBuf>,
        /// Directory to write NAME.npy for each output.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
        /// Target preset.
        #[arg(long, value_enum, default_value_t = Target::Trn2)]
        target: Target,
    },
    /// Profile a `.tile` kernel on the timing model: schedule it onto the engines as the
    /// compiler schedules a model, then print latency, FLOPs, MFU, HBM traffic and the busy
    /// time of every queue (as `tessera profile` does for a model).
    #[command(after_help = "\
Examples:
  tessera kernel profile examples/tiles/softmax_row.tile
  tessera kernel profile k.tile --svg k.svg --trace k.json   # timeline; open k.json in Perfetto
  tessera kernel profile k.tile --json | jq .latency_us")]
    Profile {
        /// The kernel, in the `.tile` text format.
        file: PathBuf,
        #[command(flatten)]
        outputs: ProfileArgs,
        /// Target preset.
        #[arg(long, value_enum, default_value_t = Target::Trn2)]
        target: Target,
    },
}

/// The target presets a user can name.
#[derive(Clone, Copy, ValueEnum)]
enum Target {
    /// NeuronCore-v2 (Trainium1)
    Trn1,
    /// NeuronCore-v2 (Inferentia2; same core as trn1)
    Inf2,
    /// NeuronCore-v3 (Trainium2)
    Trn2,
}

impl Target {
    fn spec(self) -> TargetSpec {
        match self {
            Target::Trn1 | Target::Inf2 => TargetSpec::trn1(),
            Target::Trn2 => TargetSpec::trn2(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AutoCast {
    /// Keep every dtype as the model has it.
    None,
    /// bf16 inputs for matmul and convolution, fp32 accumulation.
    Matmul,
    /// bf16 for every op.
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// The checked reference emulator.
    Interp,
    /// Cranelift JIT: compiled instruction templates (no poison or race checks).
    Jit,
    /// MLIR: the jit's kernels as MLIR, compiled by MLIR's ExecutionEngine (builds with
    /// `--features mlir`).
    Mlir,
}

impl BackendArg {
    fn runtime(self) -> Result<tessera_runtime::Backend, String> {
        match self {
            BackendArg::Interp => Ok(tessera_runtime::Backend::Interp),
            BackendArg::Jit => Ok(tessera_runtime::Backend::Jit),
            BackendArg::Mlir => Ok(tessera_runtime::Backend::Mlir),
        }
    }
}

fn parse_named_input(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("expected NAME=FILE.npy, got `{s}`")),
    }
}

fn dispatch(command: Command) -> Result<(), String> {
    match command {
        Command::Compile {
            model,
            output,
            compile,
        } => cli::model::compile_cmd(&model, &output, &compile.options()?),
        Command::Run {
            model,
            inputs,
            inputs_dir,
            output_dir,
            backend,
            seed,
            compile,
        } => {
            let run = RunOptions {
                seed,
                backend: backend.runtime()?,
            };
            cli::model::run_cmd(
                &model,
                &compile.options()?,
                &inputs,
                inputs_dir.as_deref(),
                output_dir.as_deref(),
                &run,
            )
        }
        Command::Bench {
            model,
            inputs,
            inputs_dir,
            backend,
            iters,
            warmup,
            seed,
            json,
            compile,
        } => cli::bench::bench_cmd(
            &model,
            &compile.options()?,
            &RunOptions {
                seed,
                backend: backend.runtime()?,
            },
            &cli::bench::BenchOptions {
                named: &inputs,
                inputs_dir: inputs_dir.as_deref(),
                iters,
                warmup,
                seed,
                json,
            },
        ),
        Command::OnnxTest {
            dirs,
            filter,
            json,
            support_table,
            backend,
            compile,
        } => {
            let run = RunOptions {
                backend: backend.runtime()?,
                ..RunOptions::default()
            };
            onnx_test(
                &dirs,
                filter.as_deref(),
                json,
                support_table.as_deref(),
                &compile.options()?,
                &run,
            )
        }
        Command::Profile {
            model,
            outputs,
            compile,
        } => cli::profile::profile_cmd(&model, &compile.options()?, &outputs.outputs()),
        Command::Inspect {
            model,
            emit,
            compile,
        } => cli::model::inspect_cmd(&model, emit, &compile.options()?),
        Command::Kernel(KernelCommand::Check { file, target }) => {
            cli::kernel::check(&file, &target.spec())
        }
        Command::Kernel(KernelCommand::Run {
            file,
            inputs,
            inputs_dir,
            output_dir,
            target,
        }) => cli::kernel::run(
            &file,
            &target.spec(),
            &inputs,
            inputs_dir.as_deref(),
            output_dir.as_deref(),
        ),
        Command::Kernel(KernelCommand::Profile {
            file,
            outputs,
            target,
        }) => cli::profile::kernel_profile_cmd(&file, &target.spec(), &outputs.outputs()),
        Command::ListOps => {
            for op in tessera_compiler::onnx::SUPPORTED_OPS {
                println!("{op}");
            }
            Ok(())
        }
        Command::ListKernels => {
            for (name, about) in tessera_kernels::library::CATALOGUE {
                println!("{name:<12} {about}");
            }
            Ok(())
        }
    }
}

fn onnx_test(
    dirs: &[PathBuf],
    filter: Option<&str>,
    json: bool,
    table: Option<&std::path::Path>,
    options: &CompileOptions,
    run: &RunOptions,
) -> Result<(), String> {
    use cli::onnx_test::{Outcome, run_case};
    let cases: Vec<PathBuf> = cli::onnx_test::find_cases(dirs)?
        .into_iter()
        .filter(|c| filter.is_none_or(|f| c.to_string_lossy().contains(f)))
        .collect();
    let mut results = Vec::with_capacity(cases.len());
    for case in &cases {
        // A bug in one case must not stop the run: report it as a failure and go on.
        // The options hold no state a panic could leave half-updated.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_case(case, options, run)
        }))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            cli::onnx_test::CaseResult {
                name: case
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().to_string()),
                op: "?".into(),
                outcome: Outcome::Failed(format!("panicked: {msg}")),
            }
        });
        if !json {
            match &r.outcome {
                Outcome::Passed => println!("PASS {} ({})", r.name, r.op),
                Outcome::Failed(e) => println!("FAIL {} ({}): {e}", r.name, r.op),
                Outcome::Skipped(e) => println!("SKIP {} ({}): {e}", r.name, r.op),
            }
        }
        results.push(r);
    }
    let count = |f: fn(&Outcome) -> bool| results.iter().filter(|r| f(&r.outcome)).count();
    let passed = count(|o| matches!(o, Outcome::Passed));
    let failed = count(|o| matches!(o, Outcome::Failed(_)));
    let skipped = count(|o| matches!(o, Outcome::Skipped(_)));
    if let Some(path) = table {
        let text = cli::onnx_test::support_table(&results);
        let tmp = path.with_extension("md.partial");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if json {
        let cases: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                let (status, detail) = match &r.outcome {
                    Outcome::Passed => ("passed", ""),
                    Outcome::Failed(e) => ("failed", e.as_str()),
                    Outcome::Skipped(e) => ("skipped", e.as_str()),
                };
                serde_json::json!({"name": r.name, "op": r.op, "status": status, "detail": detail})
            })
            .collect();
        let doc = serde_json::json!({"cases": cases, "passed": passed, "failed": failed, "skipped": skipped});
        println!("{doc}");
    } else {
        println!("{passed} passed, {failed} failed, {skipped} skipped");
    }
    if failed > 0 {
        return Err(format!(
            "{failed} of {} ONNX test cases failed",
            results.len()
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    // Like other Unix command-line tools, end quietly when the reader of our output goes away
    // (`tessera profile m.onnx | head`): Rust ignores SIGPIPE, which turns every later print into
    // a panic. SAFETY: called first thing in main, before any thread exists; restoring a
    // signal's default disposition has no other effect on the program's state.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
