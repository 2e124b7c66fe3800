//! The `tessera` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tessera_ir::TargetSpec;

mod cli;

/// tessera: a compiler and kernel toolchain for Trainium/Inferentia-style accelerators, with a
/// CPU emulator that checks every hardware rule.
#[derive(Parser)]
#[command(name = "tessera", version, about, long_about = None, after_help = "\
Examples:
  tessera kernel check examples/tiles/softmax.tile
  tessera kernel run examples/tiles/softmax.tile --input x=x.npy --output-dir out/
  tessera list-kernels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with kernels written in the `.tile` text format.
    #[command(subcommand)]
    Kernel(KernelCommand),
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

fn parse_named_input(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("expected NAME=FILE.npy, got `{s}`")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
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
        Command::ListKernels => {
            for (name, about) in tessera_kernels::library::CATALOGUE {
                println!("{name:<12} {about}");
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
