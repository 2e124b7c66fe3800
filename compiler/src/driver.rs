//! The compile pipeline in one call: ONNX bytes -> graph -> lowered tile program -> scheduled
//! machine program -> artifact. Every stage's result is kept so `tessera inspect` can show it.

use crate::lower::{self, Lowered};
use crate::onnx;
use crate::schedule;
use std::path::Path;
use tessera_ir::artifact::{Artifact, Signature, SignatureEntry};
use tessera_ir::graph::Graph;
use tessera_ir::{MachineProgram, TargetSpec};

/// `--auto-cast`: which fp32 work is done in bf16 (the vendor compiler's option of that name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AutoCast {
    /// Keep every dtype as the model has it.
    #[default]
    None,
    /// Matmul (and convolution) inputs in bf16, accumulation in fp32.
    Matmul,
    /// Also store every intermediate fp32 value as bf16.
    All,
}

impl AutoCast {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            AutoCast::None => "none",
            AutoCast::Matmul => "matmul",
            AutoCast::All => "all",
        }
    }
}

/// How to compile.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// The target machine.
    pub target: TargetSpec,
    /// Optimisation level 0..=3: `-O0` lowers op by op (the baseline); `-O1` runs the e-graph
    /// optimiser's cleanup, recognition and fusion rules; `-O2` (the default) adds layout rules;
    /// `-O3` raises the saturation budgets (see [`crate::opt`]).
    pub opt_level: u8,
    /// Which fp32 work runs in bf16.
    pub auto_cast: AutoCast,
    /// Graph inputs fixed at compile time (they become constants and leave the signature).
    pub frozen_inputs: std::collections::BTreeMap<String, tessera_ir::HostTensor>,
    /// The application's own operators and their kernels (see [`crate::custom`]).
    pub custom_ops: crate::custom::CustomOps,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            target: TargetSpec::default(),
            opt_level: 2,
            auto_cast: AutoCast::None,
            frozen_inputs: Default::default(),
            custom_ops: Default::default(),
        }
    }
}

impl CompileOptions {
    /// The flags as text, recorded in the artifact.
    pub fn flags(&self) -> String {
        format!(
            "--target {} -O{} --auto-cast {}",
            self.target.name,
            self.opt_level,
            self.auto_cast.name()
        )
    }
}

/// Every stage of one compilation.
#[derive(Debug)]
pub struct Compiled {
    /// The imported graph.
    pub graph: Graph,
    /// The graph lowered: the optimiser's plan (the imported graph at `-O0`).
    pub optimized: Graph,
    /// What the optimiser did (`None` at `-O0`).
    pub opt_report: Option<crate::opt::Report>,
    /// The op-by-op tile program.
    pub lowered: Lowered,
    /// The scheduled machine program (also inside `artifact`).
    pub machine: MachineProgram,
    /// The artifact to write.
    pub artifact: Artifact,
}

/// Why compilation failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The model could not be read or imported.
    #[error(transparent)]
    Import(#[from] onnx::ImportError),
    /// The graph could not be lowered to kernels.
    #[error(transparent)]
    Lower(#[from] lower::LowerError),
    /// The optimiser failed (an internal bug, reported, not hidden).
    #[error(transparent)]
    Optimize(#[from] crate::opt::OptError),
    /// The tile program could not be scheduled.
    #[error(transparent)]
    Schedule(#[from] schedule::ScheduleError),
    /// The artifact failed its own validation (an internal bug, reported, not panicking).
    #[error(transparent)]
    Artifact(#[from] tessera_ir::artifact::ArtifactError),
    /// An option outside its range.
    #[error("{0}")]
    Options(String),
    /// A custom operator's kernel was refused.
    #[error(transparent)]
    Custom(#[from] crate::custom::CustomKernelError),
}

/// Compiles the model at `path`.
pub fn compile_file(path: &Path, options: &CompileOptions) -> Result<Compiled, CompileError> {
    let graph = onnx::import_file_custom(path, &options.frozen_inputs, &options.custom_ops)?;
    compile_graph(graph, options)
}

/// Compiles an imported graph.
pub fn compile_graph(graph: Graph, options: &CompileOptions) -> Result<Compiled, CompileError> {
    if options.opt_level > 3 {
        return Err(CompileError::Options(format!(
            "-O{} is not a level (0, 1, 2 or 3)",
            options.opt_level
        )));
    }
    let mut graph = graph;
    crate::custom::prepare(&mut graph, &options.custom_ops, &options.target)?;
    let graph = if options.auto_cast == AutoCast::All {
        crate::passes::auto_cast::cast_all_to_bf16(&graph)
            .map_err(|e| CompileError::Options(format!("--auto-cast all: {e}")))?
    } else {
        graph
    };
    let lower_options = lower::LowerOptions {
        bf16_matmul: options.auto_cast != AutoCast::None,
    };
    let opt = crate::opt::optimize_with(
        &graph,
        &options.target,
        options.opt_level,
        &options.custom_ops,
    )?;
    let lowered = lower::lower_custom(
        &opt.graph,
        &options.target,
        lower_options,
        &options.custom_ops,
    )?;
    let machine = schedule::schedule(&lowered, &options.target)?;
    let entry = |(name, t): &(String, tessera_ir::TensorId)| {
        let tensor = lowered.program.tensor(*t);
        SignatureEntry {
            name: name.clone(),
            tensor: *t,
            dtype: tensor.dtype,
            shape: tensor.shape.clone(),
        }
    };
    let artifact = Artifact {
        target: options.target.name.to_string(),
        flags: options.flags(),
        signature: Signature {
            inputs: lowered.inputs.iter().map(entry).collect(),
            outputs: lowered.outputs.iter().map(entry).collect(),
        },
        weights: lowered.weights.clone(),
        program: machine.clone(),
    };
    tessera_ir::artifact::validate(&artifact)?;
    Ok(Compiled {
        graph,
        optimized: opt.graph,
        opt_report: opt.report,
        lowered,
        machine,
        artifact,
    })
}
