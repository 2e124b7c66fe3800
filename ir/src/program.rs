//! A tile program: HBM tensors, on-chip buffers, and a sequential list of instructions.
//!
//! This is the level kernel authors write (NKI-like) and kernels emit. Buffers are "virtual":
//! they have a size and a lifetime (`alloc` .. `free`) but usually no address; the verifier
//! checks that the live buffers fit, and later passes may place them.

use crate::access::{BufId, DmaOperand, TensorId, TileAccess};
use crate::dtype::DType;
use crate::isa::{Op, Scalar};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The role of an HBM tensor in a kernel's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TensorKind {
    /// Supplied by the caller.
    Input,
    /// Returned to the caller.
    Output,
    /// HBM scratch space private to the program (starts uninitialised).
    Scratch,
}

impl TensorKind {
    /// Keyword in the text format.
    pub fn name(self) -> &'static str {
        match self {
            TensorKind::Input => "input",
            TensorKind::Output => "output",
            TensorKind::Scratch => "scratch",
        }
    }
}

/// A tensor in HBM, row-major.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HbmTensor {
    /// Name (unique among the program's tensors), written `@name`.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Input, output or scratch.
    pub kind: TensorKind,
}

impl HbmTensor {
    /// Number of elements.
    pub fn elems(&self) -> u64 {
        self.shape
            .iter()
            .fold(1u64, |n, &d| n.saturating_mul(d as u64))
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<i64> {
        let mut strides = vec![1i64; self.shape.len()];
        for i in (0..self.shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.shape[i + 1] as i64;
        }
        strides
    }
}

/// On-chip memories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Space {
    /// State buffer: the main on-chip scratchpad.
    Sbuf,
    /// Partial-sum buffer: where the tensor engine writes, organised in 2 KiB banks.
    Psum,
}

impl Space {
    /// Keyword in the text format.
    pub fn name(self) -> &'static str {
        match self {
            Space::Sbuf => "sbuf",
            Space::Psum => "psum",
        }
    }
}

/// A concrete position for a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// First partition the buffer occupies.
    pub partition: u32,
    /// Byte offset within each partition.
    pub byte_offset: u64,
}

/// An SBUF or PSUM buffer: `partitions` rows of `free_shape` elements each.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Buffer {
    /// Name (unique among the program's buffers), written `%name`.
    pub name: String,
    /// SBUF or PSUM.
    pub space: Space,
    /// Element type.
    pub dtype: DType,
    /// Partitions occupied (<= 128).
    pub partitions: u32,
    /// Shape of the free dimensions of one partition, outermost first.
    pub free_shape: Vec<usize>,
    /// Where it lives, when a pass or the author fixed it. Unplaced buffers start at partition 0.
    pub placement: Option<Placement>,
}

impl Buffer {
    /// Elements per partition.
    pub fn free_elems(&self) -> u64 {
        self.free_shape
            .iter()
            .fold(1u64, |n, &d| n.saturating_mul(d as u64))
    }

    /// Bytes per partition, saturating at `u64::MAX` (a decoded artifact may declare an absurd
    /// buffer, and checking it must not overflow).
    pub fn bytes_per_partition(&self) -> u64 {
        self.free_elems()
            .saturating_mul(self.dtype.size_bytes() as u64)
    }

    /// First partition occupied on the chip.
    pub fn base_partition(&self) -> u32 {
        self.placement.map_or(0, |p| p.partition)
    }
}

/// Where an instruction came from: a line of a `.tile` file or the Rust call that recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourceLoc {
    /// File name.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (0 when unknown).
    pub column: u32,
}

impl fmt::Display for SourceLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column > 0 {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// An instruction with the source location that produced it (not part of its meaning).
#[derive(Clone, Debug)]
pub struct Inst {
    /// What it does.
    pub op: Op,
    /// Where it was written, if known.
    pub loc: Option<SourceLoc>,
}

impl Inst {
    /// An instruction without a location.
    pub fn new(op: Op) -> Self {
        Inst { op, loc: None }
    }
}

/// A complete tile program (one kernel).
#[derive(Clone, Debug, Default)]
pub struct TileProgram {
    /// Kernel name.
    pub name: String,
    /// HBM tensors: inputs, outputs and scratch.
    pub tensors: Vec<HbmTensor>,
    /// On-chip buffers, each allocated once by an `alloc` instruction.
    pub buffers: Vec<Buffer>,
    /// Instructions in program order.
    pub insts: Vec<Inst>,
}

impl TileProgram {
    /// An empty program.
    pub fn new(name: impl Into<String>) -> Self {
        TileProgram {
            name: name.into(),
            ..Default::default()
        }
    }

    /// The tensor with this id. Panics on an id not from this program (an internal bug).
    pub fn tensor(&self, id: TensorId) -> &HbmTensor {
        &self.tensors[id.0 as usize]
    }

    /// The buffer with this id. Panics on an id not from this program (an internal bug).
    pub fn buffer(&self, id: BufId) -> &Buffer {
        &self.buffers[id.0 as usize]
    }

    /// The tensor with this name.
    pub fn tensor_by_name(&self, name: &str) -> Option<(TensorId, &HbmTensor)> {
        self.tensors
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == name)
            .map(|(i, t)| (TensorId(i as u32), t))
    }

    /// Tensors of one kind, in declaration order.
    pub fn tensors_of(&self, kind: TensorKind) -> impl Iterator<Item = &HbmTensor> {
        self.tensors.iter().filter(move |t| t.kind == kind)
    }

    /// True if the two programs mean the same (source locations ignored).
    pub fn same_meaning(&self, other: &TileProgram) -> bool {
        self.name == other.name
            && self.tensors == other.tensors
            && self.buffers == other.buffers
            && self.insts.len() == other.insts.len()
            && self
                .insts
                .iter()
                .zip(&other.insts)
                .all(|(a, b)| a.op == b.op)
    }
}

/// Whether an operand is read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read.
    Read,
    /// Written.
    Write,
}

/// One tile operand of an instruction, with its role name as the ISA reference spells it.
#[derive(Clone, Copy, Debug)]
pub struct TileOperand<'a> {
    /// Role (`dst`, `src`, `stationary`, `moving`, `bias`, ...).
    pub role: &'static str,
    /// The view.
    pub tile: &'a TileAccess,
    /// Read or written.
    pub access: Access,
}

impl Op {
    /// Every on-chip tile operand of the instruction (HBM ends of a DMA are not included).
    pub fn tile_operands(&self) -> Vec<TileOperand<'_>> {
        use Access::{Read, Write};
        let mut out = Vec::new();
        let mut push = |role, tile, access| out.push(TileOperand { role, tile, access });
        match self {
            Op::Alloc { .. } | Op::Free { .. } => {}
            Op::DmaCopy { dst, src } => {
                if let DmaOperand::Tile(t) = src {
                    push("src", t, Read);
                }
                if let DmaOperand::Tile(t) = dst {
                    push("dst", t, Write);
                }
            }
            Op::Matmul {
                dst,
                stationary,
                moving,
                start,
                ..
            } => {
                push("stationary", stationary, Read);
                push("moving", moving, Read);
                if !start {
                    push("dst", dst, Read);
                }
                push("dst", dst, Write);
            }
            Op::Transpose { dst, src } | Op::TensorCopy { dst, src, .. } => {
                push("src", src, Read);
                push("dst", dst, Write);
            }
            Op::Activation {
                dst,
                src,
                scale,
                bias,
                accum,
                ..
            } => {
                push("src", src, Read);
                if let Scalar::PerPartition(t) = scale {
                    push("scale", t, Read);
                }
                if let Scalar::PerPartition(t) = bias {
                    push("bias", t, Read);
                }
                push("dst", dst, Write);
                if let Some(a) = accum {
                    push("accum", a, Write);
                }
            }
            Op::TensorTensor { dst, lhs, rhs, .. } => {
                push("lhs", lhs, Read);
                push("rhs", rhs, Read);
                push("dst", dst, Write);
            }
            Op::TensorScalar {
                dst, src, op0, op1, ..
            } => {
                push("src", src, Read);
                if let Scalar::PerPartition(t) = &op0.operand {
                    push("operand0", t, Read);
                }
                if let Some(step) = op1
                    && let Scalar::PerPartition(t) = &step.operand
                {
                    push("operand1", t, Read);
                }
                push("dst", dst, Write);
            }
            Op::TensorReduce { dst, src, .. } | Op::AffineSelect { dst, src, .. } => {
                push("src", src, Read);
                push("dst", dst, Write);
            }
            Op::Memset { dst, .. } | Op::Iota { dst, .. } => push("dst", dst, Write),
            Op::Select {
                dst,
                pred,
                on_true,
                on_false,
                ..
            } => {
                push("pred", pred, Read);
                push("on_true", on_true, Read);
                push("on_false", on_false, Read);
                push("dst", dst, Write);
            }
        }
        out
    }
}
