//! The verifier: every hardware rule of the architecture document, checked per instruction.
//!
//! [`Verifier`] checks one instruction at a time against the buffers live at that point, so the
//! kernel builder can reject an instruction the moment it is recorded; [`verify`] runs it over a
//! whole program. Errors name the instruction (`nc_matmul #12`) and the rule broken.

use crate::program::{Buffer, HbmTensor, Inst, SourceLoc, TileProgram};
use crate::target::TargetSpec;
use std::fmt;

/// The rule an error breaks (stable, for tests and tooling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Placeholder until the verifier lands.
    Unimplemented,
}

/// A broken rule, naming the instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// Index of the instruction in the program.
    pub index: usize,
    /// Its opcode.
    pub opcode: &'static str,
    /// The rule broken.
    pub rule: Rule,
    /// What is wrong, e.g. `moving free size 640 exceeds 512`.
    pub detail: String,
    /// Where the instruction was written, when known.
    pub loc: Option<SourceLoc>,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} #{}: {}", self.opcode, self.index, self.detail)?;
        if let Some(loc) = &self.loc {
            write!(f, " (at {loc})")?;
        }
        Ok(())
    }
}

impl std::error::Error for VerifyError {}

/// Checks instructions one by one, tracking which buffers are live.
#[derive(Debug)]
pub struct Verifier<'t> {
    target: &'t TargetSpec,
}

impl<'t> Verifier<'t> {
    /// A verifier for `target` with nothing allocated.
    pub fn new(target: &'t TargetSpec) -> Self {
        Verifier { target }
    }

    /// Checks instruction `index` (and records its effect on liveness).
    pub fn check(
        &mut self,
        tensors: &[HbmTensor],
        buffers: &[Buffer],
        index: usize,
        inst: &Inst,
    ) -> Result<(), VerifyError> {
        let _ = (self.target, tensors, buffers, index, inst);
        Ok(())
    }
}

/// Checks a whole program; the first broken rule is returned.
pub fn verify(program: &TileProgram, target: &TargetSpec) -> Result<(), VerifyError> {
    let mut v = Verifier::new(target);
    for (i, inst) in program.insts.iter().enumerate() {
        v.check(&program.tensors, &program.buffers, i, inst)?;
    }
    Ok(())
}
