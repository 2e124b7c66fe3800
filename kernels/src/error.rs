//! [`KernelError`]: everything that can go wrong while recording a kernel, from a handle used
//! with the wrong builder to a hardware rule the verifier rejects.

use tessera_ir::{Engine, VerifyError};

/// Why the builder refused an instruction, or a library kernel refused its arguments.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// The verifier rejected the instruction; its message names the instruction, the rule and
    /// the Rust line that recorded it.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A tensor, tile or view made by a different [`crate::KernelBuilder`].
    #[error("{what} `{name}` belongs to another kernel builder")]
    ForeignHandle {
        /// `tensor`, `buffer` or `view`.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A view of a buffer that has already been freed.
    #[error("{op} {role}: buffer `{name}` was already freed")]
    UseAfterFree {
        /// The instruction being recorded.
        op: &'static str,
        /// The operand's role (`dst`, `src`, ...).
        role: &'static str,
        /// The buffer's name.
        name: String,
    },
    /// A view that does not fit its buffer or tensor (out of range, empty, malformed).
    #[error("{op} {role}: {detail}")]
    BadOperand {
        /// The instruction being recorded.
        op: &'static str,
        /// The operand's role.
        role: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// Operands whose shapes cannot go together.
    #[error("{op}: {detail}")]
    ShapeMismatch {
        /// The instruction being recorded.
        op: &'static str,
        /// The shapes involved.
        detail: String,
    },
    /// Two HBM tensors with the same name.
    #[error("a tensor named `{0}` already exists")]
    DuplicateTensor(String),
    /// A tensor or buffer that cannot exist (no elements, too many partitions, too large).
    #[error("`{name}`: {detail}")]
    BadAllocation {
        /// The tensor or buffer.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// An engine the instruction cannot run on.
    #[error("{op} cannot run on the {engine} engine (allowed: {allowed})")]
    WrongEngine {
        /// The instruction.
        op: &'static str,
        /// The engine asked for.
        engine: Engine,
        /// The engines it can run on.
        allowed: String,
    },
    /// A library kernel asked for arguments it does not handle.
    #[error("kernel {kernel}: {detail}")]
    Unsupported {
        /// The kernel.
        kernel: &'static str,
        /// Why.
        detail: String,
    },
    /// One of the errors above, with the place in the author's code that called the builder
    /// (`file:line:column`, from `#[track_caller]`). Verifier errors carry theirs already.
    #[error("{source} (at {at})")]
    At {
        /// `file:line:column` of the builder call.
        at: String,
        /// The error.
        source: Box<KernelError>,
    },
}

impl KernelError {
    /// The error itself, without the location [`KernelError::At`] adds.
    pub fn root(&self) -> &KernelError {
        match self {
            KernelError::At { source, .. } => source.root(),
            e => e,
        }
    }

    /// `file:line:column` of the author's code the error points at, when known.
    pub fn location(&self) -> Option<String> {
        match self {
            KernelError::At { at, .. } => Some(at.clone()),
            KernelError::Verify(v) => v
                .loc
                .as_ref()
                .map(|l| format!("{}:{}:{}", l.file, l.line, l.column)),
            _ => None,
        }
    }

    /// This error located at `loc` (unless it already names a place).
    pub(crate) fn at(self, loc: &std::panic::Location<'_>) -> KernelError {
        match self {
            KernelError::Verify(_) | KernelError::At { .. } => self,
            e => KernelError::At {
                at: format!("{}:{}:{}", loc.file(), loc.line(), loc.column()),
                source: Box::new(e),
            },
        }
    }
}
