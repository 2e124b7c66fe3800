//! # tessera-ir
//!
//! The vocabulary every other tessera crate speaks:
//!
//! - [`DType`]: element types with the exact rounding of every store.
//! - [`TargetSpec`]: the machine's numbers (`trn1`, `trn2`), each with its public source;
//!   [`cost`]: per-instruction cost rules on it, and [`estimate_tile_program`].
//! - [`TileProgram`]: a kernel at the tile level: HBM tensors, SBUF/PSUM [`Buffer`]s, and the
//!   [`Op`]s of the tile ISA ([`isa`]) operating on [`TileAccess`] views.
//! - [`verify()`]: every hardware rule, checked with messages naming the instruction and rule.
//! - [`text`]: a printer and parser for the `.tile` text format (round-trips exactly).
//! - [`HostTensor`]: tensors in host memory, in their dtype's encoding.
//! - [`MachineProgram`]: per-engine queues with placed buffers and semaphore waits, what the
//!   hardware runs; [`artifact`] stores one with its weights as a versioned `.tsr` file.
//! - [`graph`]: the graph IR ONNX models are imported to, with its verifier and the reference
//!   evaluator that defines every graph operator.
//!
//! `tessera-ir` depends on no other tessera crate.
#![deny(missing_docs)]

pub mod access;
pub mod artifact;
pub mod cost;
pub mod dtype;
pub mod graph;
pub mod host;
pub mod isa;
pub mod isa_doc;
pub mod machine;
pub mod program;
pub mod target;
pub mod text;
pub mod verify;
pub mod visit;

pub use access::{BufId, Dim, DmaOperand, HbmAccess, TensorId, TileAccess};
pub use cost::{DmaCost, Estimate, InstCost, PeRate, estimate_tile_program, inst_cost};
pub use dtype::{ALL_DTYPES, DType};
pub use host::HostTensor;
pub use isa::{ActFunc, AffineExpr, AluOp, CmpOp, Engine, Op, ReduceOp, Scalar, ScalarStep};
pub use machine::{
    InstRef, MachineInst, MachineProgram, Origin, Queue, QueueId, Wait, check_machine_program,
};
pub use program::{
    Buffer, HbmTensor, Inst, Placement, SourceLoc, Space, TensorKind, TileOperand, TileProgram,
};
pub use target::TargetSpec;
pub use verify::{BufferError, Rule, Verifier, VerifyError, verify, verify_all};
