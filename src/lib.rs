//! # tessera
//!
//! A compiler and kernel toolchain for a Trainium/Inferentia-style accelerator, with a CPU
//! emulator so everything runs without the chip.
//!
//! This facade re-exports the workspace crates and adds the helpers that need more than one of
//! them. The quickest way to try a kernel is [`simulate`]: build a tile program with the kernel
//! builder (or take one from the library), give it ndarray inputs, and get its outputs back from
//! the checked reference emulator.
//!
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use tessera::ir::{DType, TargetSpec};
//!
//! let target = TargetSpec::trn2();
//! // c[3, 2] = a[3, 4] . b[4, 2], tiled for the tensor engine.
//! let kernel = tessera::kernels::library::matmul(&target, 3, 4, 2, DType::F32, DType::F32)?;
//! let a = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] + i[1]) as f32);
//! let b = ArrayD::from_shape_fn(IxDyn(&[4, 2]), |i| i[0] as f32 - i[1] as f32);
//! let out = tessera::simulate(&kernel, &[("a", a), ("b", b)])?;
//! // Row 0 of a is [0, 1, 2, 3]; column 0 of b is [0, 1, 2, 3]: 0 + 1 + 4 + 9 = 14.
//! assert_eq!(out["c"][[0, 0]], 14.0);
//! # Ok::<(), tessera::Error>(())
//! ```
#![deny(missing_docs)]

use std::collections::BTreeMap;

use ndarray::ArrayD;

pub use tessera_backends as backends;
pub use tessera_compiler as compiler;
pub use tessera_ir as ir;
pub use tessera_kernels as kernels;
pub use tessera_runtime as runtime;

pub mod perf;

/// The kernel author guide (`docs/kernel-guide.md`): its Rust examples run as this module's
/// doc-tests.
#[doc = include_str!("../docs/kernel-guide.md")]
pub mod guide {}

use tessera_ir::{HostTensor, TargetSpec, TensorKind, TileProgram};

/// Everything that can go wrong in the facade's helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The emulator rejected the program or failed while running it.
    #[error(transparent)]
    Interp(#[from] tessera_backends::interp::InterpError),
    /// A kernel could not be built.
    #[error(transparent)]
    Kernel(#[from] tessera_kernels::KernelError),
    /// The kernel could not be scheduled onto the engines.
    #[error(transparent)]
    Schedule(#[from] tessera_compiler::schedule::ScheduleError),
    /// The timing model failed (a deadlock in the schedule: an internal bug).
    #[error(transparent)]
    Timing(#[from] tessera_backends::timing::TimingError),
    /// Two instructions of a scheduled kernel race: the emulator's message, with the lines of
    /// the author's code that recorded both.
    #[error("{message}; recorded at {first_at} and {second_at}")]
    KernelRace {
        /// The race detector's message (both instructions, what each does, the memory).
        message: String,
        /// Where the first instruction was recorded (`?` when unknown).
        first_at: String,
        /// Where the second was.
        second_at: String,
    },
    /// An input name that the kernel does not declare.
    #[error("kernel `{kernel}` has no input named `{name}` (its inputs: {expected})")]
    UnknownInput {
        /// The kernel.
        kernel: String,
        /// The name given.
        name: String,
        /// The declared inputs.
        expected: String,
    },
}

/// Schedules `kernel` (a tile program, e.g. from [`kernels::KernelBuilder`] or a `.tile` file)
/// onto the engines of `target` as the compiler schedules a model: buffers placed, instructions
/// assigned to engine and DMA queues, semaphore waits inserted.
pub fn schedule_kernel(
    kernel: &TileProgram,
    target: &TargetSpec,
) -> Result<tessera_ir::MachineProgram, Error> {
    tessera_ir::verify(kernel, target).map_err(tessera_kernels::KernelError::from)?;
    let lowered = as_lowered(kernel.clone());
    Ok(tessera_compiler::schedule::schedule(&lowered, target)?)
}

/// A kernel as a lowered graph of one node (its inputs and outputs the graph's), so the
/// compiler's scheduler can place it.
pub(crate) fn as_lowered(kernel: TileProgram) -> tessera_compiler::lower::Lowered {
    let ids = |kind| {
        kernel
            .tensors
            .iter()
            .enumerate()
            .filter(move |(_, t)| t.kind == kind)
            .map(|(i, t)| (t.name.clone(), tessera_ir::TensorId(i as u32)))
            .collect::<Vec<_>>()
    };
    tessera_compiler::lower::Lowered {
        inputs: ids(TensorKind::Input),
        outputs: ids(TensorKind::Output),
        origins: vec![kernel.name.clone(); kernel.insts.len()],
        weights: Vec::new(),
        program: kernel,
    }
}

/// Profiles `kernel` on the timing model of `target`: schedules it ([`schedule_kernel`]) and
/// simulates the engines, giving the report `tessera kernel profile` prints (latency, busy time
/// per queue, MFU, HBM traffic, and the per-instruction timeline for
/// [`runtime::profile::chrome_trace`] and [`runtime::profile::svg_timeline`]).
///
/// ```
/// let target = tessera::ir::TargetSpec::trn2();
/// let kernel = tessera::kernels::library::softmax(&target, &[256, 512], tessera::ir::DType::F32)?;
/// let report = tessera::profile_kernel(&kernel, &target)?;
/// assert!(report.latency_ns > 0.0);
/// println!("{}", tessera::runtime::profile::summary(&report));
/// # Ok::<(), tessera::Error>(())
/// ```
pub fn profile_kernel(
    kernel: &TileProgram,
    target: &TargetSpec,
) -> Result<tessera_backends::timing::TimingReport, Error> {
    let machine = schedule_kernel(kernel, target)?;
    Ok(tessera_backends::timing::simulate(&machine, target)?)
}

/// Runs `machine`, a schedule of `kernel` ([`schedule_kernel`], possibly edited by hand), on
/// the checked emulator with the race detector on: a race between two engines is reported with
/// the lines of the author's code (or `.tile` file) that recorded both instructions. `inputs`
/// by tensor name, in each tensor's dtype.
pub fn run_scheduled_kernel(
    machine: &tessera_ir::MachineProgram,
    kernel: &TileProgram,
    target: &TargetSpec,
    inputs: &BTreeMap<String, HostTensor>,
) -> Result<BTreeMap<String, HostTensor>, Error> {
    let options = tessera_backends::interp::MachineRunOptions {
        seed: 0,
        check_races: true,
    };
    tessera_backends::interp::run_machine(machine, target, inputs, &options).map_err(|e| match e {
        tessera_backends::interp::InterpError::Race {
            first_tile,
            second_tile,
            ..
        } => {
            let at = |i: u32| {
                kernel
                    .insts
                    .get(i as usize)
                    .and_then(|inst| inst.loc.as_ref())
                    .map_or_else(|| "?".to_string(), ToString::to_string)
            };
            Error::KernelRace {
                message: e.to_string(),
                first_at: at(first_tile),
                second_at: at(second_tile),
            }
        }
        other => Error::Interp(other),
    })
}

/// Runs `kernel` on the reference emulator for the default target (`trn2`).
///
/// Inputs are f32 arrays, one per input tensor by name, converted to each tensor's dtype with the
/// rounding a store would apply; outputs come back decoded to f32. See [`simulate_on`] to choose
/// the target and [`simulate_host`] for exact dtype control.
pub fn simulate(
    kernel: &TileProgram,
    inputs: &[(&str, ArrayD<f32>)],
) -> Result<BTreeMap<String, ArrayD<f32>>, Error> {
    simulate_on(&TargetSpec::default(), kernel, inputs)
}

/// [`simulate`] on a chosen target.
pub fn simulate_on(
    target: &TargetSpec,
    kernel: &TileProgram,
    inputs: &[(&str, ArrayD<f32>)],
) -> Result<BTreeMap<String, ArrayD<f32>>, Error> {
    let mut host = BTreeMap::new();
    for (name, array) in inputs {
        let tensor = kernel
            .tensors
            .iter()
            .find(|t| t.kind == TensorKind::Input && t.name == *name)
            .ok_or_else(|| Error::UnknownInput {
                kernel: kernel.name.clone(),
                name: name.to_string(),
                expected: kernel
                    .tensors_of(TensorKind::Input)
                    .map(|t| format!("@{}", t.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        host.insert(
            name.to_string(),
            HostTensor::from_array_f32(array, tensor.dtype),
        );
    }
    let outputs = simulate_host(target, kernel, &host)?;
    Ok(outputs
        .into_iter()
        .map(|(k, v)| (k, v.to_array_f32()))
        .collect())
}

/// Runs `kernel` on the reference emulator with inputs already in their device dtypes.
pub fn simulate_host(
    target: &TargetSpec,
    kernel: &TileProgram,
    inputs: &BTreeMap<String, HostTensor>,
) -> Result<BTreeMap<String, HostTensor>, Error> {
    Ok(tessera_backends::interp::run(kernel, target, inputs)?)
}
