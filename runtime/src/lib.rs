//! # tessera-runtime
//!
//! Loads a compiled artifact (`.tsr`), binds inputs by the graph's names (dtype and shape
//! checked against the signature), and runs the machine program on a backend.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use tessera_ir::{DType, HostTensor};
//! use tessera_runtime::{RunOptions, Session};
//!
//! let session = Session::load(std::path::Path::new("mlp.tsr"))?;
//! let x = HostTensor::zeros(DType::F32, &[53, 200]);
//! let outputs = session.run(&BTreeMap::from([("x".to_string(), x)]), &RunOptions::default())?;
//! println!("{:?}", outputs["y"].shape);
//! # Ok::<(), tessera_runtime::RuntimeError>(())
//! ```
//!
//! [`profile`] renders the timing model's report of a program: a text summary, a JSON object,
//! a Chrome/Perfetto trace and an SVG timeline.
#![deny(missing_docs)]

pub mod profile;

use std::collections::BTreeMap;
use std::path::Path;

use tessera_backends::interp::{self, MachineRunOptions};
use tessera_ir::artifact::{self, Artifact, ArtifactError};
use tessera_ir::{HostTensor, TargetSpec};

/// The execution backends a session can use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The checked reference emulator (poison, bounds and race checks).
    #[default]
    Interp,
    /// The Cranelift JIT: compiled instruction templates, bounds checked up front, no poison or
    /// race checks (use `Interp` for those).
    Jit,
    /// The MLIR backend: the jit's kernels generated as MLIR and compiled by MLIR's
    /// ExecutionEngine (cargo feature `mlir`; without it, running reports that it is not built).
    Mlir,
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The backend.
    pub backend: Backend,
    /// Seed choosing the interleaving of the engine queues (any seed gives the same result for
    /// a correct program; a race is reported whatever the seed).
    pub seed: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            backend: Backend::Interp,
            seed: 0,
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The artifact could not be read or is invalid.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// An input the model needs was not given.
    #[error("missing input `{name}` ({expected}); the model's inputs are: {all}")]
    MissingInput {
        /// The input.
        name: String,
        /// Its type.
        expected: String,
        /// Every input with its type.
        all: String,
    },
    /// A name that is not one of the model's inputs.
    #[error("the model has no input named `{name}`; its inputs are: {all}")]
    UnknownInput {
        /// The name given.
        name: String,
        /// Every input with its type.
        all: String,
    },
    /// An input with the wrong dtype or shape.
    #[error("input `{name}` must be {expected}, got {got}")]
    InputMismatch {
        /// The input.
        name: String,
        /// Its declared type.
        expected: String,
        /// What was given.
        got: String,
    },
    /// The backend failed (an emulator check fired).
    #[error(transparent)]
    Backend(Box<interp::InterpError>),
    /// The JIT backend failed.
    #[error(transparent)]
    Jit(Box<tessera_backends::jit::JitError>),
    /// The backend asked for is not compiled into this build.
    #[error(
        "this build of tessera has no {what}: rebuild with `cargo build --release --features mlir` after installing LLVM 19's MLIR (scripts/install-mlir.sh)"
    )]
    NotBuilt {
        /// What is missing.
        what: &'static str,
    },
}

/// A loaded artifact, ready to run.
#[derive(Debug)]
pub struct Session {
    artifact: Artifact,
    target: TargetSpec,
    /// The weights' tensors, which a session never changes: the jit keeps copies of them in
    /// the layout its matmul reads fastest.
    frozen: tessera_backends::jit::Frozen,
}

fn describe(dtype: tessera_ir::DType, shape: &[usize]) -> String {
    format!("{dtype}{shape:?}")
}

impl Session {
    /// Reads and validates the artifact at `path`.
    pub fn load(path: &Path) -> Result<Self, RuntimeError> {
        Self::new(artifact::read(path)?)
    }

    /// A session for an artifact in memory (validated again here).
    pub fn new(artifact: Artifact) -> Result<Self, RuntimeError> {
        artifact::validate(&artifact)?;
        let target = TargetSpec::by_name(&artifact.target)
            .map_err(|e| RuntimeError::Artifact(ArtifactError::Invalid(e.to_string())))?;
        let frozen = tessera_backends::jit::Frozen::new(
            artifact
                .weights
                .iter()
                .filter_map(|(id, _)| artifact.program.tensor(*id))
                .map(|t| t.name.clone()),
        );
        Ok(Session {
            artifact,
            target,
            frozen,
        })
    }

    /// The artifact.
    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    /// The target the artifact was compiled for.
    pub fn target(&self) -> &TargetSpec {
        &self.target
    }

    fn all_inputs(&self) -> String {
        self.artifact
            .signature
            .inputs
            .iter()
            .map(|e| format!("{} {}", e.name, describe(e.dtype, &e.shape)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Runs the model on `inputs` (by graph input name) and returns its outputs by name.
    pub fn run(
        &self,
        inputs: &BTreeMap<String, HostTensor>,
        options: &RunOptions,
    ) -> Result<BTreeMap<String, HostTensor>, RuntimeError> {
        let sig = &self.artifact.signature;
        let program = &self.artifact.program;
        for name in inputs.keys() {
            if !sig.inputs.iter().any(|e| &e.name == name) {
                return Err(RuntimeError::UnknownInput {
                    name: name.clone(),
                    all: self.all_inputs(),
                });
            }
        }
        let mut bound: BTreeMap<String, &HostTensor> = BTreeMap::new();
        for e in &sig.inputs {
            let t = inputs
                .get(&e.name)
                .ok_or_else(|| RuntimeError::MissingInput {
                    name: e.name.clone(),
                    expected: describe(e.dtype, &e.shape),
                    all: self.all_inputs(),
                })?;
            if t.dtype != e.dtype || t.shape != e.shape {
                return Err(RuntimeError::InputMismatch {
                    name: e.name.clone(),
                    expected: describe(e.dtype, &e.shape),
                    got: describe(t.dtype, &t.shape),
                });
            }
            let tensor = program
                .tensor(e.tensor)
                .map(|t| t.name.clone())
                .unwrap_or_default();
            bound.insert(tensor, t);
        }
        // Weights are bound by reference: copying them every run cost ResNet-50 100 MB of
        // memory traffic and page faults a run.
        for (id, data) in &self.artifact.weights {
            if let Some(t) = program.tensor(*id) {
                bound.insert(t.name.clone(), data);
            }
        }
        let mut outputs = match options.backend {
            Backend::Interp => {
                let run = MachineRunOptions {
                    seed: options.seed,
                    check_races: true,
                };
                interp::run_machine(program, &self.target, &bound, &run)
                    .map_err(|e| RuntimeError::Backend(Box::new(e)))?
            }
            Backend::Jit => tessera_backends::jit::run_machine_frozen(
                program,
                &self.target,
                &bound,
                &self.frozen,
            )
            .map_err(|e| RuntimeError::Jit(Box::new(e)))?,
            #[cfg(feature = "mlir")]
            Backend::Mlir => tessera_backends::jit::run_machine_mlir_frozen(
                program,
                &self.target,
                &bound,
                &self.frozen,
            )
            .map_err(|e| RuntimeError::Jit(Box::new(e)))?,
            #[cfg(not(feature = "mlir"))]
            Backend::Mlir => {
                return Err(RuntimeError::NotBuilt {
                    what: "mlir backend",
                });
            }
        };
        let mut result = BTreeMap::new();
        for e in &sig.outputs {
            let tensor = program
                .tensor(e.tensor)
                .map(|t| t.name.clone())
                .unwrap_or_default();
            if let Some(t) = outputs.remove(&tensor) {
                result.insert(e.name.clone(), t);
            }
        }
        Ok(result)
    }
}
