//! The emulator's errors: every way a program, its inputs or an instruction can go wrong at run
//! time, each message naming the instruction as `opcode #index`, the operand role and the buffer
//! or tensor, with the source location when the instruction carries one.

use std::fmt;
use tessera_ir::{InstRef, MachineProgram, SourceLoc, VerifyError};

/// The instruction an error happened in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// Index of the instruction in the program (for a machine program: in its queue).
    pub index: usize,
    /// Its opcode (`tensor_tensor`, `nc_matmul`, ...).
    pub opcode: &'static str,
    /// Where it was written, when known.
    pub loc: Option<SourceLoc>,
    /// For a machine program, the instruction as [`InstRef::describe`] names it
    /// (``dve[3] tensor_tensor (node `n`, tile #7)``); messages then use it instead of
    /// `opcode #index`.
    pub machine: Option<Box<str>>,
}

impl Site {
    /// ` (at file:line)` when the location is known, else nothing; appended to messages.
    pub fn at(&self) -> impl fmt::Display + '_ {
        At(self.loc.as_ref())
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.machine {
            Some(inst) => f.write_str(inst),
            None => write!(f, "{} #{}", self.opcode, self.index),
        }
    }
}

struct At<'a>(Option<&'a SourceLoc>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(loc) => write!(f, " (at {loc})"),
            None => Ok(()),
        }
    }
}

/// A poisoned (never written) element that an instruction read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoisonedElement {
    /// `%buffer` or `@tensor`.
    pub name: String,
    /// Partition within the buffer (counted from the buffer's first partition); `None` for HBM.
    pub partition: Option<u32>,
    /// Element offset within the partition (for HBM: within the row-major tensor).
    pub element: u64,
}

impl fmt::Display for PoisonedElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.partition {
            Some(p) => write!(f, "{}[partition {p}, element {}]", self.name, self.element),
            None => write!(f, "{}[element {}]", self.name, self.element),
        }
    }
}

/// Everything that can stop [`crate::interp::run`]. More checks may be added, so the enum is
/// non-exhaustive.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InterpError {
    /// The verifier rejected the program (a hardware rule is broken).
    #[error("the verifier rejected the program: {0}")]
    Verify(#[from] VerifyError),

    /// A tensor was given that is not an input of the program.
    #[error("input `{name}` is not an input tensor of the program (inputs: {expected})")]
    UnknownInput {
        /// The name given.
        name: String,
        /// The program's input names, comma-separated.
        expected: String,
    },

    /// An input tensor of the program was not given.
    #[error("input `{name}` ({expected}) was not given")]
    MissingInput {
        /// The tensor's name.
        name: String,
        /// Its declared dtype and shape, e.g. `f32[4, 8]`.
        expected: String,
    },

    /// An input was given with the wrong dtype, shape or byte count.
    #[error("input `{name}`: expected {expected}, given {given}")]
    InputMismatch {
        /// The tensor's name.
        name: String,
        /// What the program declares.
        expected: String,
        /// What was given.
        given: String,
    },

    /// The program's declarations cannot be emulated (duplicate names, absurd sizes).
    #[error("invalid program: {detail}")]
    BadProgram {
        /// What is wrong.
        detail: String,
    },

    /// An instruction read an element that was never written.
    #[error("{site}: `{role}` reads {element} before it was written{}", .site.at())]
    PoisonRead {
        /// The instruction.
        site: Box<Site>,
        /// The operand role (`lhs`, `moving`, `dst`, ...).
        role: &'static str,
        /// The element.
        element: PoisonedElement,
    },

    /// An operand names a buffer or tensor id the program does not declare.
    #[error("{site}: `{role}` refers to {what}, which the program does not declare{}", .site.at())]
    UnknownId {
        /// The instruction.
        site: Box<Site>,
        /// The operand role.
        role: &'static str,
        /// `buffer #N` or `tensor #N`.
        what: String,
    },

    /// An operand uses a buffer outside its `alloc` .. `free` lifetime, or an `alloc`/`free`
    /// does not match the buffer's state.
    #[error("{site}: `{role}` uses %{buffer}, which is {state}{}", .site.at())]
    NotLive {
        /// The instruction.
        site: Box<Site>,
        /// The operand role (`buf` for alloc/free).
        role: &'static str,
        /// The buffer's name.
        buffer: String,
        /// `not allocated`, `already freed`, `already allocated`.
        state: &'static str,
    },

    /// A view reaches outside its buffer or tensor.
    #[error("{site}: `{role}` view of {name} is out of bounds: {detail}{}", .site.at())]
    OutOfBounds {
        /// The instruction.
        site: Box<Site>,
        /// The operand role.
        role: &'static str,
        /// `%buffer` or `@tensor`.
        name: String,
        /// What exceeds what.
        detail: String,
    },

    /// Operands whose element counts or partition counts do not fit together.
    #[error("{site}: {detail}{}", .site.at())]
    ShapeMismatch {
        /// The instruction.
        site: Box<Site>,
        /// Which operands disagree, with their shapes.
        detail: String,
    },

    /// An instruction field that makes no sense (e.g. `axes` larger than the view's dims, more
    /// affine coefficients than dimensions, a view too large to emulate).
    #[error("{site}: {detail}{}", .site.at())]
    BadInstruction {
        /// The instruction.
        site: Box<Site>,
        /// What is wrong.
        detail: String,
    },

    /// Integer-only arithmetic on a 64-bit integer that the engines' `f64` arithmetic cannot
    /// do exactly: an operand that `f64` cannot hold, or an operand or result beyond 2^53.
    #[error("{site}: `{role}` {detail}{}", .site.at())]
    InexactInteger {
        /// The instruction.
        site: Box<Site>,
        /// The operand role.
        role: &'static str,
        /// The value and why it cannot be computed with exactly.
        detail: String,
    },

    /// After the last instruction, an output tensor still has an element never written.
    #[error(
        "output `{name}` is not fully written: element {element} (index {index:?}) was never written"
    )]
    OutputNotWritten {
        /// The output tensor's name.
        name: String,
        /// Row-major element number of the first unwritten element.
        element: u64,
        /// Its multi-dimensional index.
        index: Vec<usize>,
    },

    /// A machine program broke a structural rule (`tessera_ir::check_machine_program`): a
    /// buffer without placement, a wait on a queue that does not exist, ...
    #[error("invalid machine program: {detail}")]
    BadMachineProgram {
        /// The checker's message, naming the queue, instruction and rule.
        detail: String,
    },

    /// Two instructions of a machine program touch overlapping memory, at least one writes, and
    /// no chain of semaphore waits orders them: some legal interleaving gives a different result.
    #[error(
        "race: {first} {first_access} and {second} {second_access}; {memory}, and no semaphore wait orders them"
    )]
    Race {
        /// One instruction, as [`InstRef::describe`] names it.
        first: String,
        /// What it does there: ``writes `dst` `` or ``reads `src` ``.
        first_access: String,
        /// The other instruction.
        second: String,
        /// What it does there.
        second_access: String,
        /// The memory both touch: ``both touch sbuf partitions 0..4, bytes 64..128 (%t)``.
        memory: Box<str>,
        /// Index of the first instruction in the tile program it was scheduled from (its
        /// `origin.tile_index`), so a tool can point at the line that recorded it.
        first_tile: u32,
        /// The same for the second instruction.
        second_tile: u32,
    },

    /// Unfinished queues remain but none can proceed: each waits on a count never reached.
    #[error("deadlock: no queue can proceed: {}", .blocked.join("; "))]
    Deadlock {
        /// One line per blocked queue: its next instruction and the wait it is stuck on.
        blocked: Vec<String>,
    },
}

/// The instruction being executed, borrowed; turned into an owned [`Site`] only on error.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx<'a> {
    pub index: usize,
    pub opcode: &'static str,
    pub loc: Option<&'a SourceLoc>,
    /// Set for machine programs, so messages can name the queue and origin.
    pub machine: Option<(&'a MachineProgram, InstRef)>,
}

impl Ctx<'_> {
    /// Boxed: a site is large, and keeping it out of line keeps every `Result` small.
    pub fn site(&self) -> Box<Site> {
        Box::new(Site {
            index: self.index,
            opcode: self.opcode,
            loc: self.loc.cloned(),
            machine: self.machine.map(|(p, at)| at.describe(p).into()),
        })
    }

    pub fn shape_mismatch(&self, detail: String) -> InterpError {
        InterpError::ShapeMismatch {
            site: self.site(),
            detail,
        }
    }

    pub fn bad(&self, detail: String) -> InterpError {
        InterpError::BadInstruction {
            site: self.site(),
            detail,
        }
    }
}
