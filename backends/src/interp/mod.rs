//! `interp`: the reference emulator, the executable specification of the tile ISA.
//!
//! [`run`] executes a [`TileProgram`] instruction by instruction on emulated HBM, SBUF and PSUM
//! and returns the output tensors. It is simple, checked and deterministic:
//!
//! - The program is first checked by [`tessera_ir::verify()`] (hardware rules, capacities); the
//!   emulator then checks everything it needs to run safely on its own, so a malformed program
//!   is always an [`InterpError`], never a panic.
//! - New memory is poisoned: Output and Scratch tensors, and every buffer at its `alloc`.
//!   Reading an element never written is [`InterpError::PoisonRead`]; using a buffer outside its
//!   `alloc` .. `free` lifetime is [`InterpError::NotLive`]; a view reaching outside its buffer
//!   or tensor is [`InterpError::OutOfBounds`]. Every output element must be written by the end.
//! - Values are stored in their dtype's encoding and decoded to `f64` to compute. An instruction
//!   with any float operand or destination rounds each arithmetic step to fp32; integer-only
//!   instructions are exact, and those on 64-bit integers that `f64` would not compute exactly
//!   (beyond 2^53) stop with [`InterpError::InexactInteger`]. Every store rounds to the destination dtype (bf16, fp16, fp8
//!   saturation, integer truncation). Immediates of float instructions are fp32 constants.
//!   Moves with equal dtypes copy bytes exactly.
//! - `nc_matmul` sums each dot product in `f64` and rounds once to fp32; reductions and the
//!   activation `accum` likewise round once per result. Other backends must match element-wise
//!   work exactly and may differ in accumulation within a documented tolerance. The `stop` flag
//!   needs no state here: a `start = false` matmul adds to whatever `dst` holds, and reading it
//!   is poison-checked like any read.
//!
//! The scalar definitions (ALU operations, activation functions, reductions) live in
//! [`semantics`] so other backends reuse them.
//!
//! [`run_machine`] executes the other program level, a [`tessera_ir::MachineProgram`]
//! (per-engine queues, semaphore waits, placed buffers), in a seeded interleaving on physical
//! memory, with a race detector; each instruction runs through the same code as here.
//!
//! ```
//! use std::collections::BTreeMap;
//! use tessera_backends::interp;
//! use tessera_ir::*;
//!
//! // y = x + x through one SBUF tile.
//! let mut p = TileProgram::new("double");
//! let tensor = |name: &str, kind| HbmTensor {
//!     name: name.into(), dtype: DType::F32, shape: vec![2, 3], kind,
//! };
//! p.tensors = vec![tensor("x", TensorKind::Input), tensor("y", TensorKind::Output)];
//! p.buffers = vec![Buffer {
//!     name: "t".into(), space: Space::Sbuf, dtype: DType::F32, partitions: 2,
//!     free_shape: vec![3], placement: None,
//! }];
//! let tile = TileAccess {
//!     buf: BufId(0), start_partition: 0, partitions: 2, offset: 0, dims: vec![Dim::new(1, 3)],
//! };
//! let hbm = |t| DmaOperand::Hbm(HbmAccess {
//!     tensor: TensorId(t), offset: 0, dims: vec![Dim::new(3, 2), Dim::new(1, 3)],
//! });
//! p.insts = vec![
//!     Inst::new(Op::Alloc { buf: BufId(0) }),
//!     Inst::new(Op::DmaCopy { dst: DmaOperand::Tile(tile.clone()), src: hbm(0) }),
//!     Inst::new(Op::TensorTensor {
//!         engine: Engine::Dve, op: AluOp::Add,
//!         dst: tile.clone(), lhs: tile.clone(), rhs: tile.clone(),
//!     }),
//!     Inst::new(Op::DmaCopy { dst: hbm(1), src: DmaOperand::Tile(tile) }),
//!     Inst::new(Op::Free { buf: BufId(0) }),
//! ];
//! let x = HostTensor::from_f64(DType::F32, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
//! let inputs = BTreeMap::from([("x".to_string(), x)]);
//! let out = interp::run(&p, &TargetSpec::trn2(), &inputs)?;
//! assert_eq!(out["y"].to_f64_vec(), vec![2.0, 4.0, 6.0, 8.0, 10.0, 13.0]);
//! # Ok::<(), interp::InterpError>(())
//! ```

pub(crate) mod error;
mod exact;
pub(crate) mod exec;
mod machine;
pub(crate) mod memory;
pub mod semantics;
pub mod vmath;

pub use error::{InterpError, PoisonedElement, Site};
pub use machine::{MachineRunOptions, run_machine};

use memory::Memory;
use std::collections::BTreeMap;
use tessera_ir::{HostTensor, TargetSpec, TileProgram};

/// Runs `program` on `inputs` (one per Input tensor, by name) and returns every Output tensor by
/// name.
///
/// The first error stops the run; see [`InterpError`] for what is checked.
pub fn run(
    program: &TileProgram,
    target: &TargetSpec,
    inputs: &BTreeMap<String, HostTensor>,
) -> Result<BTreeMap<String, HostTensor>, InterpError> {
    tessera_ir::verify(program, target)?;
    run_unverified(program, inputs)
}

/// Executes `program` with only the emulator's own dynamic checks (poison, bounds, liveness,
/// shapes), skipping the static verifier. For programs verified already (the kernel builder
/// verifies as it records) and for testing the emulator's checks on their own.
pub fn run_unverified(
    program: &TileProgram,
    inputs: &BTreeMap<String, HostTensor>,
) -> Result<BTreeMap<String, HostTensor>, InterpError> {
    let mut mem = Memory::new(program, inputs)?;
    for (index, inst) in program.insts.iter().enumerate() {
        exec::step(&mut mem, index, inst)?;
    }
    mem.outputs(program)
}
