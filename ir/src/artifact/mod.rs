//! The `.tsr` artifact: a compiled model as the compiler writes it and the runtime loads it.
//!
//! An [`Artifact`] holds the [`MachineProgram`], the data of its constant inputs (weights), the
//! graph's user-facing signature, and the target and flags it was compiled for. [`encode`] and
//! [`decode`] convert it to and from bytes; [`write_atomic`] and [`read`] do the same for files.
//! [`decode`] trusts nothing: every way a file can be wrong is an [`ArtifactError`], never a
//! panic, and a decoded artifact has passed [`validate`], so the runtime may execute it without
//! checking bounds again.
//!
//! # Byte layout
//!
//! All integers are little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"TSRA"` |
//! | 4 | 4 | format version, `u32` ([`FORMAT_VERSION`]) |
//! | 8 | 8 | payload length in bytes, `u64` |
//! | 16 | 4 | CRC-32 (IEEE, as `crc32fast` computes it) of the payload, `u32` |
//! | 20 | length | payload: the [`Artifact`] serialised with `postcard` |
//!
//! The file ends exactly at the end of the payload. The version comes straight after the magic
//! so that a later format may change everything after it and still be recognised and refused
//! with a clear message. The payload is the serde derive of the IR types read by `postcard`
//! (variable-length integers, enums as variant indices, sequences prefixed by their length), so
//! **any change to a serialised IR type changes the format and must bump [`FORMAT_VERSION`]**.
//!
//! Encoding is deterministic: the artifact holds only vectors and plain values (no hash maps),
//! so the same artifact always gives the same bytes.

mod codec;
mod file;
mod validate;

use crate::access::TensorId;
use crate::dtype::DType;
use crate::host::HostTensor;
use crate::machine::MachineProgram;
use crate::verify::Rule;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use codec::{HEADER_BYTES, MAGIC, decode, encode};
pub use file::{read, write_atomic};
pub use validate::validate;

/// The format version this build writes and reads. Bump it whenever a serialised type changes.
/// Version 2 added the `u16`, `u32` and `u64` dtypes (which renumbered `bool`).
pub const FORMAT_VERSION: u32 = 2;

/// A compiled model: everything the runtime needs to run it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Target preset name (`trn1`, `trn2`, ...), as [`crate::TargetSpec::by_name`] accepts.
    pub target: String,
    /// Compile flags as text, e.g. `-O1 --auto-cast none` (informational only).
    pub flags: String,
    /// The graph's user-facing inputs and outputs, in order.
    pub signature: Signature,
    /// Data of the program's constant `Input` tensors, sorted by tensor id.
    pub weights: Vec<(TensorId, HostTensor)>,
    /// The program.
    pub program: MachineProgram,
}

/// The inputs a caller supplies and the outputs it gets back, in the graph's order.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Signature {
    /// Graph inputs that are not weights, each an `Input` tensor of the program.
    pub inputs: Vec<SignatureEntry>,
    /// Graph outputs, each an `Output` tensor of the program.
    pub outputs: Vec<SignatureEntry>,
}

/// One graph input or output and the machine tensor that holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignatureEntry {
    /// The graph value's name (what `--input NAME=...` and output files use).
    pub name: String,
    /// The machine program's tensor.
    pub tensor: TensorId,
    /// Element type (equal to the tensor's).
    pub dtype: DType,
    /// Shape (equal to the tensor's).
    pub shape: Vec<usize>,
}

/// Why an artifact could not be written, read or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `write`, `rename to`, `read`, ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The bytes do not start with the magic `TSRA`.
    #[error(
        "not a tessera artifact (.tsr): starts with {found}, but every artifact starts with \
         \"TSRA\"; is this an ONNX model or another file passed where an artifact was expected?"
    )]
    BadMagic {
        /// The first bytes found, escaped for printing.
        found: String,
    },
    /// The file was written by a different format version.
    #[error("{}", version_message(*found, *supported))]
    Version {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file ends before the header or the payload it declares.
    #[error(
        "truncated artifact: the {part} needs {needed} bytes but only {available} are present; \
         the file was cut short (an interrupted copy or download?)"
    )]
    Truncated {
        /// `header` or `payload`.
        part: &'static str,
        /// Bytes the header or the length field calls for.
        needed: u64,
        /// Bytes actually present for it.
        available: u64,
    },
    /// Bytes follow the payload.
    #[error(
        "corrupt artifact: {extra} unexpected bytes after the {payload}-byte payload the header \
         declares; the file was appended to or its length field is damaged"
    )]
    TrailingBytes {
        /// How many bytes follow the payload.
        extra: u64,
        /// The declared payload length.
        payload: u64,
    },
    /// The payload's CRC-32 differs from the header's.
    #[error(
        "corrupt artifact: checksum mismatch (header says {stored:#010x}, payload has \
         {computed:#010x}); the file was damaged after it was written, recompile or copy it again"
    )]
    Checksum {
        /// CRC-32 stored in the header.
        stored: u32,
        /// CRC-32 of the payload present.
        computed: u32,
    },
    /// The payload has a correct checksum but is not a serialised artifact.
    #[error(
        "malformed artifact payload: {0}; the checksum matches, so the writer produced bytes this \
         build cannot read (a format change without a version bump?)"
    )]
    Payload(String),
    /// The artifact is well-formed but breaks a rule of the program or its metadata.
    #[error("invalid artifact: {0}")]
    Invalid(String),
    /// An instruction of the program breaks a verifier rule.
    #[error("invalid artifact: instruction {inst}: {detail}")]
    InvalidInstruction {
        /// The instruction: queue, index, opcode, node and tile index.
        inst: String,
        /// The rule broken.
        rule: Rule,
        /// What is wrong, naming the operand and the limit.
        detail: String,
    },
}

fn version_message(found: u32, supported: u32) -> String {
    let advice = if found > supported {
        "it was written by a newer tessera; load it with that version or recompile the model \
         with this one"
    } else {
        "it was written by an older tessera; recompile the model with this version"
    };
    format!(
        "unsupported artifact format version {found}: this build reads version {supported} only; \
         {advice}"
    )
}
