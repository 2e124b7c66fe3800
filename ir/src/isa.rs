//! The tile instruction set: what each engine can be asked to do.
//!
//! The normative semantics are written in `docs/isa.md` and executed by
//! `tessera_backends::interp`; this file defines the instructions' shape. Summary of the shared
//! rules:
//! - Operands are [`TileAccess`] views (SBUF or PSUM) except `dma_copy`, which also takes HBM.
//! - Engines compute on decoded values. Arithmetic whose operands or destination include a float
//!   type is rounded to fp32 after each step; integer-only arithmetic is exact (below 2^53;
//!   i64/u64 arithmetic that would leave that range is an error, see `docs/isa.md`).
//!   Every store rounds to the destination dtype ([`crate::DType::round`]).
//! - Element-wise instructions pair the i-th element of each operand in element order (see
//!   [`crate::access`]); operands need the same partition count and free element count.

use crate::BufId;
use crate::access::{DmaOperand, TileAccess};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The engines of a NeuronCore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Engine {
    /// Tensor engine: the 128x128 systolic array (`nc_matmul`, `nc_transpose`).
    Pe,
    /// Scalar/activation engine: `func(x * scale + bias)`.
    Act,
    /// Vector engine.
    Dve,
    /// GpSimd engine; cannot access PSUM.
    Pool,
    /// DMA engines and queues.
    Dma,
}

impl Engine {
    /// Lower-case name used in the text format (`pe`, `act`, `dve`, `pool`, `dma`).
    pub fn name(self) -> &'static str {
        match self {
            Engine::Pe => "pe",
            Engine::Act => "act",
            Engine::Dve => "dve",
            Engine::Pool => "pool",
            Engine::Dma => "dma",
        }
    }
}

/// Binary ALU operations of `tensor_tensor` and `tensor_scalar`.
///
/// Comparisons give 1 or 0; logical operations treat non-zero as true and give 1 or 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AluOp {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b
    Div,
    /// max(a, b); NaN if either is NaN
    Max,
    /// min(a, b); NaN if either is NaN
    Min,
    /// a ^ b
    Pow,
    /// a mod b with the sign of b (floored, as Python and ONNX `Mod` with fmod=0)
    Mod,
    /// a == b
    Eq,
    /// a != b
    Ne,
    /// a < b
    Lt,
    /// a <= b
    Le,
    /// a > b
    Gt,
    /// a >= b
    Ge,
    /// a && b
    And,
    /// a || b
    Or,
    /// a xor b
    Xor,
}

/// Every [`AluOp`].
pub const ALL_ALU_OPS: [AluOp; 17] = [
    AluOp::Add,
    AluOp::Sub,
    AluOp::Mul,
    AluOp::Div,
    AluOp::Max,
    AluOp::Min,
    AluOp::Pow,
    AluOp::Mod,
    AluOp::Eq,
    AluOp::Ne,
    AluOp::Lt,
    AluOp::Le,
    AluOp::Gt,
    AluOp::Ge,
    AluOp::And,
    AluOp::Or,
    AluOp::Xor,
];

impl AluOp {
    /// Name in the text format.
    pub fn name(self) -> &'static str {
        match self {
            AluOp::Add => "add",
            AluOp::Sub => "sub",
            AluOp::Mul => "mul",
            AluOp::Div => "div",
            AluOp::Max => "max",
            AluOp::Min => "min",
            AluOp::Pow => "pow",
            AluOp::Mod => "mod",
            AluOp::Eq => "eq",
            AluOp::Ne => "ne",
            AluOp::Lt => "lt",
            AluOp::Le => "le",
            AluOp::Gt => "gt",
            AluOp::Ge => "ge",
            AluOp::And => "and",
            AluOp::Or => "or",
            AluOp::Xor => "xor",
        }
    }

    /// True for the comparisons and logical operations, whose result is 0 or 1.
    pub fn is_predicate(self) -> bool {
        matches!(
            self,
            AluOp::Eq
                | AluOp::Ne
                | AluOp::Lt
                | AluOp::Le
                | AluOp::Gt
                | AluOp::Ge
                | AluOp::And
                | AluOp::Or
                | AluOp::Xor
        )
    }
}

/// Functions of the activation engine, applied as `func(x * scale + bias)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActFunc {
    /// x
    Identity,
    /// max(x, 0)
    Relu,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// tanh(x)
    Tanh,
    /// x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
    Gelu,
    /// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    GeluTanh,
    /// x * sigmoid(x)
    Silu,
    /// e^x
    Exp,
    /// ln x
    Log,
    /// sqrt x
    Sqrt,
    /// 1 / sqrt x
    Rsqrt,
    /// 1 / x
    Reciprocal,
    /// x^2
    Square,
    /// |x|
    Abs,
    /// erf x
    Erf,
    /// -1, 0 or 1 (0 for NaN)
    Sign,
    /// sin x (radians)
    Sin,
    /// cos x (radians)
    Cos,
}

/// Every [`ActFunc`].
pub const ALL_ACT_FUNCS: [ActFunc; 18] = [
    ActFunc::Identity,
    ActFunc::Relu,
    ActFunc::Sigmoid,
    ActFunc::Tanh,
    ActFunc::Gelu,
    ActFunc::GeluTanh,
    ActFunc::Silu,
    ActFunc::Exp,
    ActFunc::Log,
    ActFunc::Sqrt,
    ActFunc::Rsqrt,
    ActFunc::Reciprocal,
    ActFunc::Square,
    ActFunc::Abs,
    ActFunc::Erf,
    ActFunc::Sign,
    ActFunc::Sin,
    ActFunc::Cos,
];

impl ActFunc {
    /// Name in the text format.
    pub fn name(self) -> &'static str {
        match self {
            ActFunc::Identity => "identity",
            ActFunc::Relu => "relu",
            ActFunc::Sigmoid => "sigmoid",
            ActFunc::Tanh => "tanh",
            ActFunc::Gelu => "gelu",
            ActFunc::GeluTanh => "gelu_tanh",
            ActFunc::Silu => "silu",
            ActFunc::Exp => "exp",
            ActFunc::Log => "log",
            ActFunc::Sqrt => "sqrt",
            ActFunc::Rsqrt => "rsqrt",
            ActFunc::Reciprocal => "reciprocal",
            ActFunc::Square => "square",
            ActFunc::Abs => "abs",
            ActFunc::Erf => "erf",
            ActFunc::Sign => "sign",
            ActFunc::Sin => "sin",
            ActFunc::Cos => "cos",
        }
    }
}

/// Reductions of `tensor_reduce`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Maximum (NaN if any element is NaN).
    Max,
    /// Minimum (NaN if any element is NaN).
    Min,
    /// Product.
    Prod,
}

/// Every [`ReduceOp`].
pub const ALL_REDUCE_OPS: [ReduceOp; 4] =
    [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::Prod];

impl ReduceOp {
    /// Name in the text format.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Prod => "prod",
        }
    }
}

/// Comparison of an affine expression with zero, for `affine_select`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CmpOp {
    /// expr == 0
    Eq,
    /// expr != 0
    Ne,
    /// expr < 0
    Lt,
    /// expr <= 0
    Le,
    /// expr > 0
    Gt,
    /// expr >= 0
    Ge,
}

/// Every [`CmpOp`].
pub const ALL_CMP_OPS: [CmpOp; 6] = [
    CmpOp::Eq,
    CmpOp::Ne,
    CmpOp::Lt,
    CmpOp::Le,
    CmpOp::Gt,
    CmpOp::Ge,
];

impl CmpOp {
    /// Name in the text format.
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
        }
    }

    /// Whether `v` compares true against zero.
    pub fn holds(self, v: i64) -> bool {
        match self {
            CmpOp::Eq => v == 0,
            CmpOp::Ne => v != 0,
            CmpOp::Lt => v < 0,
            CmpOp::Le => v <= 0,
            CmpOp::Gt => v > 0,
            CmpOp::Ge => v >= 0,
        }
    }
}

macro_rules! name_parsing {
    ($ty:ident, $all:expr, $what:literal) => {
        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                $all.iter()
                    .copied()
                    .find(|v| v.name() == s)
                    .ok_or_else(|| UnknownName {
                        what: $what,
                        name: s.to_string(),
                        expected: $all.iter().map(|v| v.name()).collect::<Vec<_>>().join(", "),
                    })
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

const ALL_ENGINES: [Engine; 5] = [
    Engine::Pe,
    Engine::Act,
    Engine::Dve,
    Engine::Pool,
    Engine::Dma,
];
name_parsing!(Engine, ALL_ENGINES, "engine");
name_parsing!(AluOp, ALL_ALU_OPS, "ALU operation");
name_parsing!(ActFunc, ALL_ACT_FUNCS, "activation function");
name_parsing!(ReduceOp, ALL_REDUCE_OPS, "reduction");
name_parsing!(CmpOp, ALL_CMP_OPS, "comparison");

/// A name that is not one of a closed set (engine, ALU op, activation function, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{name}` (expected one of {expected})")]
pub struct UnknownName {
    /// What kind of name was expected.
    pub what: &'static str,
    /// The name given.
    pub name: String,
    /// The names accepted.
    pub expected: String,
}

/// A scalar operand: an immediate, or one value per partition read from a tile with one free
/// element per partition (`[P, 1]`), broadcast along the free dimensions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    /// The same value for every element.
    Imm(f64),
    /// Element 0 of each partition of this tile, for that partition's elements.
    PerPartition(TileAccess),
}

/// One step of `tensor_scalar`: `x = x OP operand`, or `x = operand OP x` when `reverse`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalarStep {
    /// The ALU operation.
    pub op: AluOp,
    /// Its second operand.
    pub operand: Scalar,
    /// Swap the operands (`operand OP x`), e.g. `1 - x` or `1 / x`.
    pub reverse: bool,
}

/// `base + partition * p + sum_k free[k] * i_k`, over the partition index `p` (relative to the
/// operand's first partition) and the free indices `i_k` of the destination access pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AffineExpr {
    /// Constant term.
    pub base: i64,
    /// Coefficient of the partition index.
    pub partition: i64,
    /// One coefficient per free dimension of the destination, outermost first.
    pub free: Vec<i64>,
}

impl AffineExpr {
    /// Value at partition `p` and free indices `idx`.
    pub fn eval(&self, p: i64, idx: &[i64]) -> i64 {
        // Saturating so that absurd coefficients from a user's file cannot panic.
        self.free.iter().zip(idx).fold(
            self.base.saturating_add(self.partition.saturating_mul(p)),
            |acc, (c, i)| acc.saturating_add(c.saturating_mul(*i)),
        )
    }
}

/// One tile instruction (or an allocation marker).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Start of a buffer's lifetime: its memory is reserved and poisoned.
    Alloc {
        /// The buffer.
        buf: BufId,
    },
    /// End of a buffer's lifetime.
    Free {
        /// The buffer.
        buf: BufId,
    },
    /// DMA: copy `src` to `dst` element by element in element order (equal counts), converting
    /// dtype when the two differ. HBM<->SBUF, SBUF<->SBUF and HBM<->HBM; never PSUM.
    DmaCopy {
        /// Destination.
        dst: DmaOperand,
        /// Source.
        src: DmaOperand,
    },
    /// Tensor engine: `dst[M, N] (+)= stationary[K, M]^T . moving[K, N]`, K on partitions.
    /// `start` overwrites `dst`, otherwise the product is added to it; `stop` ends the
    /// accumulation group. `dst` is fp32 in PSUM, within one bank.
    Matmul {
        /// Result, `M` partitions x `N` free elements, PSUM fp32.
        dst: TileAccess,
        /// Stationary operand, `K` partitions x `M` free elements, SBUF.
        stationary: TileAccess,
        /// Moving operand, `K` partitions x `N` free elements, SBUF.
        moving: TileAccess,
        /// Overwrite instead of accumulate.
        start: bool,
        /// Last matmul of the accumulation group.
        stop: bool,
    },
    /// Tensor engine transpose: `dst[f, p] = src[p, f]`; `src` in SBUF with at most 128
    /// partitions and 128 free elements, `dst` in PSUM.
    Transpose {
        /// Result, PSUM.
        dst: TileAccess,
        /// Input, SBUF.
        src: TileAccess,
    },
    /// Activation engine: `dst = func(src * scale + bias)`; with `accum`, also writes the sum
    /// over each partition's free elements of the (fp32) results to `accum` (`[P, 1]`).
    Activation {
        /// Destination.
        dst: TileAccess,
        /// Input.
        src: TileAccess,
        /// The function.
        func: ActFunc,
        /// Multiplier applied before the function.
        scale: Scalar,
        /// Addend applied before the function.
        bias: Scalar,
        /// Optional per-partition sum of the results.
        accum: Option<TileAccess>,
    },
    /// `dst = lhs OP rhs`, element-wise.
    TensorTensor {
        /// DVE or POOL.
        engine: Engine,
        /// The operation.
        op: AluOp,
        /// Destination.
        dst: TileAccess,
        /// First operand.
        lhs: TileAccess,
        /// Second operand.
        rhs: TileAccess,
    },
    /// `dst = (src OP0 s0) OP1 s1`, element-wise, with immediate or per-partition scalars.
    TensorScalar {
        /// DVE, POOL or ACT.
        engine: Engine,
        /// Destination.
        dst: TileAccess,
        /// Input.
        src: TileAccess,
        /// First step.
        op0: ScalarStep,
        /// Optional second step.
        op1: Option<ScalarStep>,
    },
    /// Reduce the trailing `axes` free dimensions of `src`; `dst` holds the remaining ones.
    TensorReduce {
        /// DVE or POOL.
        engine: Engine,
        /// The reduction.
        op: ReduceOp,
        /// Destination.
        dst: TileAccess,
        /// Input.
        src: TileAccess,
        /// How many trailing free dimensions of `src` are reduced (1 ..= dims).
        axes: u8,
    },
    /// `dst = src` with dtype conversion (e.g. PSUM fp32 to SBUF bf16).
    TensorCopy {
        /// DVE, ACT or POOL.
        engine: Engine,
        /// Destination.
        dst: TileAccess,
        /// Input.
        src: TileAccess,
    },
    /// `dst = value`.
    Memset {
        /// DVE, ACT or POOL.
        engine: Engine,
        /// Destination.
        dst: TileAccess,
        /// The value (rounded to `dst`'s dtype).
        value: f64,
    },
    /// `dst[p, i...] = expr(p, i...)`.
    Iota {
        /// POOL.
        engine: Engine,
        /// Destination.
        dst: TileAccess,
        /// The affine expression over the destination's indices.
        expr: AffineExpr,
    },
    /// `dst = (expr(p, i...) CMP 0) ? src : fill`; e.g. a causal mask.
    AffineSelect {
        /// POOL.
        engine: Engine,
        /// Destination.
        dst: TileAccess,
        /// Values kept where the predicate holds.
        src: TileAccess,
        /// The affine expression over the destination's indices.
        expr: AffineExpr,
        /// Comparison with zero.
        cmp: CmpOp,
        /// Value where the predicate fails.
        fill: f64,
    },
    /// `dst = pred != 0 ? on_true : on_false`, element-wise.
    Select {
        /// DVE or POOL.
        engine: Engine,
        /// Destination.
        dst: TileAccess,
        /// Predicate.
        pred: TileAccess,
        /// Values where the predicate is non-zero.
        on_true: TileAccess,
        /// Values where the predicate is zero.
        on_false: TileAccess,
    },
}

impl Op {
    /// The opcode as written in the text format and in messages.
    pub fn opcode(&self) -> &'static str {
        match self {
            Op::Alloc { .. } => "alloc",
            Op::Free { .. } => "free",
            Op::DmaCopy { .. } => "dma_copy",
            Op::Matmul { .. } => "nc_matmul",
            Op::Transpose { .. } => "nc_transpose",
            Op::Activation { .. } => "activation",
            Op::TensorTensor { .. } => "tensor_tensor",
            Op::TensorScalar { .. } => "tensor_scalar",
            Op::TensorReduce { .. } => "tensor_reduce",
            Op::TensorCopy { .. } => "tensor_copy",
            Op::Memset { .. } => "memset",
            Op::Iota { .. } => "iota",
            Op::AffineSelect { .. } => "affine_select",
            Op::Select { .. } => "select",
        }
    }

    /// The engine that executes it (`None` for alloc/free, which are bookkeeping).
    pub fn engine(&self) -> Option<Engine> {
        match self {
            Op::Alloc { .. } | Op::Free { .. } => None,
            Op::DmaCopy { .. } => Some(Engine::Dma),
            Op::Matmul { .. } | Op::Transpose { .. } => Some(Engine::Pe),
            Op::Activation { .. } => Some(Engine::Act),
            Op::TensorTensor { engine, .. }
            | Op::TensorScalar { engine, .. }
            | Op::TensorReduce { engine, .. }
            | Op::TensorCopy { engine, .. }
            | Op::Memset { engine, .. }
            | Op::Iota { engine, .. }
            | Op::AffineSelect { engine, .. }
            | Op::Select { engine, .. } => Some(*engine),
        }
    }

    /// The engines allowed to execute this opcode.
    pub fn allowed_engines(&self) -> &'static [Engine] {
        match self {
            Op::Alloc { .. } | Op::Free { .. } => &[],
            Op::DmaCopy { .. } => &[Engine::Dma],
            Op::Matmul { .. } | Op::Transpose { .. } => &[Engine::Pe],
            Op::Activation { .. } => &[Engine::Act],
            Op::TensorTensor { .. } | Op::TensorReduce { .. } | Op::Select { .. } => {
                &[Engine::Dve, Engine::Pool]
            }
            Op::TensorScalar { .. } | Op::TensorCopy { .. } | Op::Memset { .. } => {
                &[Engine::Dve, Engine::Act, Engine::Pool]
            }
            // nki.isa.iota and nki.isa.affine_select run on the GpSimd engine.
            Op::Iota { .. } | Op::AffineSelect { .. } => &[Engine::Pool],
        }
    }
}
