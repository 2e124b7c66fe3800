//! `jit`: a template JIT for machine programs, built on Cranelift.
//!
//! [`Jit::run_machine`] (or the free function [`run_machine`], which keeps one [`Jit`] per
//! thread) executes a [`MachineProgram`] with the same inputs, outputs and memory layout as
//! [`crate::interp::run_machine`], but runs instructions as native code:
//!
//! 1. **Validate up front.** The structure is checked by [`tessera_ir::check_machine_program`]
//!    and the inputs against their declarations. Then every instruction is planned (`plan`):
//!    each operand view is checked against its buffer or tensor, once, before anything runs, so
//!    an out-of-bounds view is a [`JitError::OutOfBounds`] and generated code never touches
//!    memory outside its operands.
//! 2. **Template kernels.** An instruction the JIT knows is described by a `KernelKey`:
//!    its signature: operation, dtypes of all operands, the common loop shape and each operand's
//!    byte strides (offsets are run-time arguments). Each distinct signature is compiled once by
//!    Cranelift (`codegen`) and cached in the [`Jit`], which persists across runs: running a
//!    program twice compiles nothing the second time. The innermost contiguous loop of f32
//!    element-wise work uses `f32x4` SIMD with a scalar tail.
//! 3. **Matmul microkernel.** `nc_matmul` gathers its operands into packed f32 panels and calls
//!    a register-blocked Rust microkernel (`matmul`), accumulating in fp32.
//! 4. **Fallback.** Everything else (other dtypes, ALU operations such as `pow` or comparisons,
//!    `iota`, `select`, `nc_transpose`, activations with `accum`, operand layouts whose
//!    dimensions do not nest, a destination overlapping a source in a different pattern) runs
//!    through interp's own `exec` over the jit's physical memory, so every program runs.
//!    [`JitStats`] counts compiled kernels, cache hits, microkernel calls and fallbacks by
//!    opcode.
//!
//! Queues run in one fixed valid order: round-robin over the queues, each running as far as its
//! waits allow. A correct program gives the same bytes in every order; races and poison (reads
//! of never-written memory) are interp's business and are not checked here: memory starts
//! zeroed, and an output element never written reads as zero instead of being an error.
//!
//! **Agreement with interp.** Element-wise f32/bf16 work (`dma_copy`, `tensor_copy`,
//! `tensor_tensor`, `tensor_scalar`, `activation`, `memset`) and `tensor_reduce` are bit-identical
//! to interp (NaN payloads aside). `nc_matmul` accumulates in fp32 where interp sums each dot
//! product in f64 and rounds once; results agree within `1e-5` of the result's largest
//! magnitude (see `matmul` for the bound).
//!
//! ```
//! use std::collections::BTreeMap;
//! use tessera_backends::jit::Jit;
//! use tessera_ir::*;
//!
//! // y = x + x through one SBUF tile, as a machine program.
//! let tensor = |name: &str, kind| HbmTensor {
//!     name: name.into(), dtype: DType::F32, shape: vec![2, 3], kind,
//! };
//! let tile = TileAccess {
//!     buf: BufId(0), start_partition: 0, partitions: 2, offset: 0, dims: vec![Dim::new(1, 3)],
//! };
//! let hbm = |t| DmaOperand::Hbm(HbmAccess {
//!     tensor: TensorId(t), offset: 0, dims: vec![Dim::new(3, 2), Dim::new(1, 3)],
//! });
//! let inst = |op| MachineInst { op, waits: vec![], origin: Origin::default() };
//! let program = MachineProgram {
//!     name: "double".into(),
//!     tensors: vec![tensor("x", TensorKind::Input), tensor("y", TensorKind::Output)],
//!     hbm_offsets: vec![None, None],
//!     scratch_bytes: 0,
//!     buffers: vec![Buffer {
//!         name: "t".into(), space: Space::Sbuf, dtype: DType::F32, partitions: 2,
//!         free_shape: vec![3], placement: Some(Placement { partition: 0, byte_offset: 0 }),
//!     }],
//!     queues: vec![Queue {
//!         name: "dma0".into(), engine: Engine::Dma,
//!         insts: vec![inst(Op::DmaCopy { dst: DmaOperand::Tile(tile.clone()), src: hbm(0) })],
//!     }, Queue {
//!         name: "dve".into(), engine: Engine::Dve,
//!         insts: vec![MachineInst {
//!             waits: vec![Wait { queue: QueueId(0), count: 1 }],
//!             ..inst(Op::TensorTensor {
//!                 engine: Engine::Dve, op: AluOp::Add,
//!                 dst: tile.clone(), lhs: tile.clone(), rhs: tile.clone(),
//!             })
//!         }],
//!     }, Queue {
//!         name: "dma1".into(), engine: Engine::Dma,
//!         insts: vec![MachineInst {
//!             waits: vec![Wait { queue: QueueId(1), count: 1 }],
//!             ..inst(Op::DmaCopy { dst: hbm(1), src: DmaOperand::Tile(tile) })
//!         }],
//!     }],
//! };
//! let x = HostTensor::from_f64(DType::F32, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
//! let inputs = BTreeMap::from([("x".to_string(), x)]);
//! let mut jit = Jit::new()?;
//! let out = jit.run_machine(&program, &TargetSpec::trn2(), &inputs)?;
//! assert_eq!(out["y"].to_f64_vec(), vec![2.0, 4.0, 6.0, 8.0, 10.0, 13.0]);
//! assert_eq!(jit.stats().fallbacks, 0);
//! # Ok::<(), tessera_backends::jit::JitError>(())
//! ```

mod actrow;
mod clear;
mod codegen;
mod forward;
mod matmul;
mod memory;
#[cfg(feature = "mlir")]
mod mlir;
mod pack;
mod place;
mod plan;
mod store;
mod tilemm;

use crate::TensorSet;
use crate::interp::InterpError;
use crate::interp::error::Ctx;
use crate::interp::exec;
use codegen::{Compiler, KernelFn, alu_supported};
use matmul::{MatmulPlan, Panel, TransposePlan};
use memory::{JitMemory, Loc};
use plan::{Body, Invocation, KernelKey, Raw, Resolver, Src, is_f32ish};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use tessera_ir::{
    DType, HostTensor, InstRef, MachineProgram, Op, QueueId, Scalar, TargetSpec, TileAccess,
};

/// Why a jit run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JitError {
    /// The program's structure is invalid (`tessera_ir::check_machine_program`).
    #[error("invalid machine program: {detail}")]
    BadMachineProgram {
        /// The checker's message.
        detail: String,
    },
    /// An operand view reaches outside its buffer or tensor (found before running).
    #[error("{inst}: `{role}` view of {name} is out of bounds: {detail}")]
    OutOfBounds {
        /// The instruction, as `queue[index] opcode (node, tile #i)`.
        inst: String,
        /// The operand role.
        role: String,
        /// `%buffer` or `@tensor`.
        name: String,
        /// What exceeds what.
        detail: String,
    },
    /// An instruction names something the program does not declare.
    #[error("{inst}: {detail}")]
    BadInstruction {
        /// The instruction.
        inst: String,
        /// What is wrong.
        detail: String,
    },
    /// Unfinished queues remain but none can proceed.
    #[error("deadlock: no queue can proceed: {}", .blocked.join("; "))]
    Deadlock {
        /// One line per blocked queue.
        blocked: Vec<String>,
    },
    /// Cranelift or MLIR failed to set up or to compile a kernel (an internal error).
    #[error("code generation: {detail}")]
    Codegen {
        /// Cranelift's message.
        detail: String,
    },
    /// Reported by interp: input checks, and instructions run through the fallback.
    #[error(transparent)]
    Interp(#[from] InterpError),
}

/// What the jit did, accumulated over every run of one [`Jit`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Kernels compiled (by Cranelift, or by MLIR for [`Jit::with_mlir`]).
    pub compiled: u64,
    /// Instructions whose kernel was already in the cache.
    pub cache_hits: u64,
    /// `nc_matmul`, `nc_transpose` and vector-defined `activation` instructions run by Rust
    /// microkernels.
    pub microkernel: u64,
    /// Instructions run through interp's `exec`.
    pub fallbacks: u64,
    /// Fallbacks by opcode.
    pub fallback_ops: BTreeMap<&'static str, u64>,
    /// Weight loads skipped because every instruction reading what they load reads the input
    /// tensor instead (`forward`).
    pub forwarded: u64,
    /// Matmuls whose moving panel is the one an earlier matmul read, unchanged since, so a
    /// gathered copy is reused rather than gathered again (`keep_windows`).
    pub shared_windows: u64,
    /// Buffers the jit keeps at another host offset than the program places them at, so that
    /// memory a tile has just left is the next one's (`place`).
    pub moved_buffers: u64,
    /// Scratch tensors the jit keeps at another offset in the arena than the program's.
    pub moved_scratch: u64,
    /// DMAs to HBM skipped because the instruction whose result they copy writes it there
    /// itself (`store`).
    pub forwarded_stores: u64,
    /// Weight chunks copied from [`Frozen`] inputs into the layout the matmul reads fastest
    /// (`pack`), counted when made (once per program and `Frozen`).
    pub packed_weights: u64,
}

/// Input tensors that hold the same bytes in every run given this value, named by the caller:
/// a model's weights. The jit keeps copies of what matmuls read from them in the layout it
/// streams fastest, made on the first run given this `Frozen` and used by every later one; a
/// new `Frozen` (even for the same names) makes new copies. Inputs not named are read afresh
/// every run.
#[derive(Debug)]
pub struct Frozen {
    /// Unique to this value (never reused in the process), so copies made for another
    /// `Frozen` are never taken for this one's.
    id: u64,
    names: std::collections::BTreeSet<String>,
}

impl Frozen {
    /// Promises that the input tensors called `names` hold the same bytes in every run given
    /// the value returned.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Frozen {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Frozen {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            names: names.into_iter().map(Into::into).collect(),
        }
    }
}

/// The JIT: code generator state and the kernel cache, kept across runs.
pub struct Jit {
    compiler: Compiler,
    /// With [`Jit::with_mlir`]: kernels are generated as MLIR and compiled by its
    /// ExecutionEngine instead of Cranelift.
    #[cfg(feature = "mlir")]
    mlir: Option<mlir::MlirCompiler>,
    /// `None` for a key the code generator does not cover (its instructions fall back).
    cache: HashMap<KernelKey, Option<Code>>,
    stats: JitStats,
    /// The memories of the last run, reused by the next.
    spare: memory::Spare,
    /// The matmul packing buffers, reused by the next run.
    scratch: matmul::Scratch,
    /// The plans of the programs run most recently (most recent last), so running a program
    /// again skips checking and planning it.
    prepared: Vec<Prepared>,
}

/// How many planned programs a [`Jit`] keeps.
const PREPARED_PROGRAMS: usize = 4;

/// A checked and planned program: its run order and one step per instruction, valid for this
/// program on this target (inputs are checked every run).
struct Prepared {
    program: MachineProgram,
    /// `program` with the buffers at their host offsets (`place`), when they moved.
    host: Option<MachineProgram>,
    target: TargetSpec,
    order: Vec<(usize, usize)>,
    /// For each position in `order`, the next matmul (its queue and index), if any.
    ahead: Vec<Option<(usize, usize)>>,
    steps: Vec<Vec<Step>>,
    /// What each run zeroes first.
    clears: Vec<clear::Clear>,
    /// Copies of frozen weight chunks (made when a run is given a [`Frozen`]).
    packs: pack::Packs,
    /// What one run adds to the statistics when the plan is reused (as re-planning would
    /// count it: every kernel a cache hit).
    counts: JitStats,
}

impl JitStats {
    fn add(&mut self, other: &JitStats) {
        self.compiled += other.compiled;
        self.cache_hits += other.cache_hits;
        self.microkernel += other.microkernel;
        self.fallbacks += other.fallbacks;
        self.forwarded += other.forwarded;
        self.shared_windows += other.shared_windows;
        self.moved_buffers += other.moved_buffers;
        self.moved_scratch += other.moved_scratch;
        self.forwarded_stores += other.forwarded_stores;
        self.packed_weights += other.packed_weights;
        for (op, n) in &other.fallback_ops {
            *self.fallback_ops.entry(op).or_default() += n;
        }
    }
}

impl std::fmt::Debug for Jit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jit")
            .field("kernels", &self.cache.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// A compiled kernel.
#[derive(Clone, Copy)]
enum Code {
    /// Cranelift's: `f(pointers, immediates)`.
    Native(KernelFn),
    /// MLIR's packed entry point: one pointer per scalar of the lowered signature.
    #[cfg(feature = "mlir")]
    Packed(mlir::PackedFn),
}

/// How one instruction runs.
enum Step {
    Kernel {
        code: Code,
        ptrs: Vec<(Loc, u64)>,
        imms: Vec<f64>,
    },
    /// A kernel whose key is not compiled yet (resolved before the run starts).
    #[cfg_attr(not(feature = "mlir"), allow(dead_code))]
    Pending(Invocation, &'static str),
    Matmul(Box<MatmulPlan>),
    Transpose(Box<TransposePlan>),
    /// An activation whose function has a vector definition, run a row at a time (`actrow`).
    ActRows(Box<actrow::ActRows>),
    Fallback,
    /// A load whose readers all read its source tensor (`forward`): nothing to do.
    Skipped,
}

thread_local! {
    static JIT: RefCell<Option<Jit>> = const { RefCell::new(None) };
}

/// Runs `program` with this thread's [`Jit`] (created on first use, its cache kept for later
/// runs); see [`Jit::run_machine`].
pub fn run_machine<I: TensorSet + ?Sized>(
    program: &MachineProgram,
    target: &TargetSpec,
    inputs: &I,
) -> Result<BTreeMap<String, HostTensor>, JitError> {
    JIT.with(|cell| run_with(cell, Jit::new, program, target, inputs, None))
}

/// [`run_machine`] with the inputs `frozen` names held the same from run to run (see
/// [`Frozen`]).
pub fn run_machine_frozen<I: TensorSet + ?Sized>(
    program: &MachineProgram,
    target: &TargetSpec,
    inputs: &I,
    frozen: &Frozen,
) -> Result<BTreeMap<String, HostTensor>, JitError> {
    JIT.with(|cell| run_with(cell, Jit::new, program, target, inputs, Some(frozen)))
}

/// Runs `program` with the [`Jit`] in `cell`, made by `make` on first use.
fn run_with<I: TensorSet + ?Sized>(
    cell: &RefCell<Option<Jit>>,
    make: fn() -> Result<Jit, JitError>,
    program: &MachineProgram,
    target: &TargetSpec,
    inputs: &I,
    frozen: Option<&Frozen>,
) -> Result<BTreeMap<String, HostTensor>, JitError> {
    let mut slot = cell.borrow_mut();
    if slot.is_none() {
        *slot = Some(make()?);
    }
    match slot.as_mut() {
        Some(jit) => jit.run(program, target, inputs, frozen),
        None => Err(JitError::Codegen {
            detail: "no jit".into(),
        }),
    }
}

#[cfg(feature = "mlir")]
thread_local! {
    static MLIR: RefCell<Option<Jit>> = const { RefCell::new(None) };
}

/// Runs `program` with this thread's MLIR-backed [`Jit`] ([`Jit::with_mlir`], created on first
/// use, its kernels kept for later runs).
#[cfg(feature = "mlir")]
pub fn run_machine_mlir<I: TensorSet + ?Sized>(
    program: &MachineProgram,
    target: &TargetSpec,
    inputs: &I,
) -> Result<BTreeMap<String, HostTensor>, JitError> {
    MLIR.with(|cell| run_with(cell, Jit::with_mlir, program, target, inputs, None))
}

/// [`run_machine_mlir`] with the inputs `frozen` names held the same from run to run (see
/// [`Frozen`]).
#[cfg(feature = "mlir")]
pub fn run_machine_mlir_frozen<I: TensorSet + ?Sized>(
    program: &MachineProgram,
    target: &TargetSpec,
    inputs: &I,
    frozen: &Frozen,
) -> Result<BTreeMap<String, HostTensor>, JitError> {
    MLIR.with(|cell| run_with(cell, Jit::with_mlir, program, target, inputs, Some(frozen)))
}

/// The MLIR module the `mlir` backend generates for `program` (before lowering to LLVM): one
/// function per distinct kernel signature, each preceded by a comment saying what it computes
/// and how many instructions call it, and a header counting the instructions run by the
/// matmul microkernel and by the fallback.
#[cfg(feature = "mlir")]
pub fn mlir_module(program: &MachineProgram, target: &TargetSpec) -> Result<String, JitError> {
    tessera_ir::check_machine_program(program, target)
        .map_err(|detail| JitError::BadMachineProgram { detail })?;
    let mut keys: Vec<KernelKey> = Vec::new();
    let mut uses: HashMap<KernelKey, (usize, BTreeMap<&'static str, usize>)> = HashMap::new();
    let (mut matmuls, mut transposes) = (0usize, 0usize);
    let mut fallbacks = BTreeMap::<&'static str, usize>::new();
    for (q, queue) in program.queues.iter().enumerate() {
        for (i, inst) in queue.insts.iter().enumerate() {
            let res = resolver(program, target, q, i);
            let op = &inst.op;
            if let Op::Matmul {
                dst,
                stationary,
                moving,
                start,
                ..
            } = op
                && plan_matmul(&res, dst, stationary, moving, *start)?.is_some()
            {
                matmuls += 1;
                continue;
            }
            if let Op::Transpose { dst, src } = op
                && plan_transpose(&res, dst, src)?.is_some()
            {
                transposes += 1;
                continue;
            }
            match invocation(&res, op)? {
                Some(inv) if mlir::generates(&inv.key) => {
                    let entry = uses.entry(inv.key.clone()).or_insert_with(|| {
                        keys.push(inv.key.clone());
                        (0, BTreeMap::new())
                    });
                    entry.0 += 1;
                    *entry.1.entry(op.opcode()).or_default() += 1;
                }
                _ if matches!(op, Op::Alloc { .. } | Op::Free { .. }) => {}
                _ => *fallbacks.entry(op.opcode()).or_default() += 1,
            }
        }
    }
    let names: Vec<String> = (0..keys.len()).map(|k| format!("k{k}")).collect();
    let mut out = format!(
        "// tessera mlir backend: program `{}`\n// {} kernels for {} instructions; {} nc_matmul and {} nc_transpose by Rust microkernels; fallback to interp: {}\n",
        program.name,
        keys.len(),
        uses.values().map(|u| u.0).sum::<usize>(),
        matmuls,
        transposes,
        if fallbacks.is_empty() {
            "none".to_string()
        } else {
            fallbacks
                .iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let text = mlir::module_text(
        &names
            .iter()
            .zip(&keys)
            .map(|(n, k)| (n.as_str(), k))
            .collect::<Vec<_>>(),
    );
    // A comment line above each function.
    for line in text.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("func.func @k")
            && let Some(k) = rest.split('(').next().and_then(|n| n.parse::<usize>().ok())
            && let Some(key) = keys.get(k)
        {
            let (n, ops) = &uses[key];
            let ops: Vec<String> = ops.iter().map(|(o, c)| format!("{o} x{c}")).collect();
            out.push_str(&format!(
                "  // {:?} over {:?}; called by {n} instructions ({})\n",
                key.body,
                key.shape,
                ops.join(", ")
            ));
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// This thread's [`JitStats`] (as used by [`run_machine`]).
pub fn thread_stats() -> JitStats {
    JIT.with(|cell| {
        cell.borrow()
            .as_ref()
            .map(|j| j.stats.clone())
            .unwrap_or_default()
    })
}

impl Jit {
    /// A JIT for the host machine with an empty cache.
    pub fn new() -> Result<Self, JitError> {
        Ok(Jit {
            compiler: Compiler::new().map_err(|detail| JitError::Codegen { detail })?,
            #[cfg(feature = "mlir")]
            mlir: None,
            cache: HashMap::new(),
            stats: JitStats::default(),
            spare: memory::Spare::default(),
            scratch: matmul::Scratch::default(),
            prepared: Vec::new(),
        })
    }

    /// A JIT whose kernels are generated as MLIR (`func`, `scf`, `memref`, `arith`, `vector`),
    /// lowered to LLVM and compiled by MLIR's ExecutionEngine; the kernels a program needs are
    /// compiled together before it runs. Everything else (planning, checks, the matmul
    /// microkernel, the fallback) is shared with the Cranelift JIT.
    #[cfg(feature = "mlir")]
    pub fn with_mlir() -> Result<Self, JitError> {
        let mut jit = Jit::new()?;
        jit.mlir = Some(mlir::MlirCompiler::new().map_err(|detail| JitError::Codegen { detail })?);
        Ok(jit)
    }

    /// What the JIT has done so far.
    pub fn stats(&self) -> &JitStats {
        &self.stats
    }

    /// Number of distinct kernels compiled and cached.
    pub fn kernels(&self) -> usize {
        self.cache.len()
    }

    /// Runs `program` on `inputs` (one per Input tensor, by name) and returns every Output
    /// tensor by name. Checks, in order: structure, inputs, every operand's bounds (all before
    /// running), then executes in a fixed valid order; [`JitError::Deadlock`] when waits can
    /// never be met. Instructions run by the fallback report interp's shape errors.
    pub fn run_machine<I: TensorSet + ?Sized>(
        &mut self,
        program: &MachineProgram,
        target: &TargetSpec,
        inputs: &I,
    ) -> Result<BTreeMap<String, HostTensor>, JitError> {
        self.run(program, target, inputs, None)
    }

    /// [`Jit::run_machine`] with the inputs `frozen` names held the same from run to run (see
    /// [`Frozen`]).
    pub fn run_machine_frozen<I: TensorSet + ?Sized>(
        &mut self,
        program: &MachineProgram,
        target: &TargetSpec,
        inputs: &I,
        frozen: &Frozen,
    ) -> Result<BTreeMap<String, HostTensor>, JitError> {
        self.run(program, target, inputs, Some(frozen))
    }

    fn run<I: TensorSet + ?Sized>(
        &mut self,
        program: &MachineProgram,
        target: &TargetSpec,
        inputs: &I,
        frozen: Option<&Frozen>,
    ) -> Result<BTreeMap<String, HostTensor>, JitError> {
        let reused = self
            .prepared
            .iter()
            .position(|p| p.program == *program && p.target == *target);
        let mut prepared = match reused {
            Some(i) => {
                let p = self.prepared.remove(i);
                self.stats.add(&p.counts);
                p
            }
            None => self.prepare(program, target)?,
        };
        let result = self.execute(&mut prepared, inputs, frozen);
        if self.prepared.len() >= PREPARED_PROGRAMS {
            self.prepared.remove(0);
        }
        self.prepared.push(prepared);
        result
    }

    /// Checks and plans `program` (compiling the kernels it needs).
    fn prepare(
        &mut self,
        program: &MachineProgram,
        target: &TargetSpec,
    ) -> Result<Prepared, JitError> {
        tessera_ir::check_machine_program(program, target)
            .map_err(|detail| JitError::BadMachineProgram { detail })?;
        let order = order(program)?;
        // The buffers at host offsets of the jit's choosing, when that is the same program
        // (`place`); everything below plans and runs that one.
        let own = resolvers(program, target);
        let (host, moved) = match place::host_program(program, target, &order, &own)? {
            Some((host, moved)) => (Some(host), moved),
            None => (None, place::Moved::default()),
        };
        let original = program;
        let program = host.as_ref().unwrap_or(program);
        // One resolver per instruction, kept for the clearing analysis below (the program's
        // own when nothing moved).
        let resolvers = match &host {
            Some(host) => resolvers(host, target),
            None => own,
        };
        let mut steps: Vec<Vec<Step>> = Vec::with_capacity(program.queues.len());
        for (queue, res) in program.queues.iter().zip(&resolvers) {
            let mut qs = Vec::with_capacity(queue.insts.len());
            for (inst, res) in queue.insts.iter().zip(res) {
                qs.push(self.plan(res, &inst.op)?);
            }
            steps.push(qs);
        }
        // Results that only DMAs to HBM read are written there directly.
        let mut stored = 0;
        for f in store::forward_stores(program, &order, &resolvers, &mut steps)? {
            let (q, i) = f.at;
            let (Some(inst), Some(res)) = (
                program.queues.get(q).and_then(|s| s.insts.get(i)),
                resolvers.get(q).and_then(|s| s.get(i)),
            ) else {
                continue;
            };
            let Some(inv) = invocation_into(res, &inst.op, Some(f.into))? else {
                continue;
            };
            let step = self.step_for(inv, inst.op.opcode())?;
            if matches!(step, Step::Fallback) {
                continue;
            }
            steps[q][i] = step;
            for (sq, si) in f.stores {
                if let Some(s) = steps.get_mut(sq).and_then(|s| s.get_mut(si)) {
                    *s = Step::Skipped;
                    stored += 1;
                }
            }
        }
        self.compile_pending(&mut steps)?;
        let mut counts = JitStats::default();
        for (q, queue) in steps.iter().enumerate() {
            for (i, step) in queue.iter().enumerate() {
                match step {
                    Step::Kernel { .. } => counts.cache_hits += 1,
                    Step::Matmul(_) | Step::Transpose(_) | Step::ActRows(_) => {
                        counts.microkernel += 1
                    }
                    Step::Skipped => {}
                    Step::Fallback | Step::Pending(..) => {
                        counts.fallbacks += 1;
                        if let Some(inst) = program.queues.get(q).and_then(|s| s.insts.get(i)) {
                            *counts.fallback_ops.entry(inst.op.opcode()).or_default() += 1;
                        }
                    }
                }
            }
        }
        let forwarded = forward::forward_loads(
            program,
            memory::host_pitch(target.sbuf_partition_bytes),
            &order,
            &resolvers,
            &mut steps,
        )?;
        self.stats.forwarded += forwarded;
        counts.forwarded = forwarded;
        let shared = matmul::keep_windows(program, &order, &resolvers, &mut steps)?;
        for step in steps.iter_mut().flatten() {
            if let Step::Matmul(p) = step {
                let wanted = |panel: &Panel| {
                    matches!(panel.loc(), Loc::Tensor(_)) && panel.worth_prefetching()
                };
                p.prefetch = [wanted(&p.stationary), wanted(&p.moving)];
            }
        }
        let packs = pack::Packs::plan(&order, &mut steps);
        self.stats.shared_windows += shared;
        counts.shared_windows = shared;
        self.stats.forwarded_stores += stored;
        counts.forwarded_stores = stored;
        self.stats.moved_buffers += moved.buffers;
        self.stats.moved_scratch += moved.scratch;
        counts.moved_buffers = moved.buffers;
        counts.moved_scratch = moved.scratch;
        let clears = clear::uncovered_reads(order.iter().filter_map(|&(q, i)| {
            let inst = program.queues.get(q)?.insts.get(i)?;
            Some((resolvers.get(q)?.get(i)?, &inst.op))
        }))?;
        // For each position in the run order, the next matmul after it.
        let mut ahead = vec![None; order.len()];
        let mut next = None;
        for (j, &(q, i)) in order.iter().enumerate().rev() {
            ahead[j] = next;
            if let Some(Step::Matmul(_)) = steps.get(q).and_then(|s| s.get(i)) {
                next = Some((q, i));
            }
        }
        Ok(Prepared {
            program: original.clone(),
            host,
            target: target.clone(),
            order,
            ahead,
            steps,
            clears,
            packs,
            counts,
        })
    }

    /// Runs a prepared program on `inputs`.
    fn execute<I: TensorSet + ?Sized>(
        &mut self,
        prepared: &mut Prepared,
        inputs: &I,
        frozen: Option<&Frozen>,
    ) -> Result<BTreeMap<String, HostTensor>, JitError> {
        let Prepared {
            program,
            host,
            target,
            order,
            ahead,
            steps,
            clears,
            packs,
            ..
        } = prepared;
        let program = host.as_ref().unwrap_or(program);
        let spare = std::mem::take(&mut self.spare);
        let mut mem = JitMemory::new(program, target, inputs, spare, clears)?;
        let packs = match frozen {
            Some(frozen) => {
                let made = packs.refresh(frozen, program, &mem).ok_or_else(|| {
                    JitError::BadInstruction {
                        inst: format!("program `{}`", program.name),
                        detail: "internal: a packed weight chunk left its tensor".into(),
                    }
                })?;
                self.stats.packed_weights += made;
                Some(&*packs)
            }
            None => None,
        };
        // Packing buffers and kept windows, reused from run to run (the windows forgotten).
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.reset();
        let mut rows = actrow::RowScratch::default();
        let mut ptrs: Vec<*mut u8> = Vec::with_capacity(8);
        #[cfg(feature = "mlir")]
        let mut packed = mlir_call::Args::default();
        for (j, &(q, i)) in order.iter().enumerate() {
            let (Some(step), Some(inst)) = (
                steps.get(q).and_then(|s| s.get(i)),
                program.queues.get(q).and_then(|s| s.insts.get(i)),
            ) else {
                continue;
            };
            match step {
                #[cfg(feature = "mlir")]
                Step::Kernel {
                    code: Code::Packed(f),
                    ptrs: at,
                    imms,
                } => {
                    packed.fill(&mut mem, at, imms);
                    // SAFETY: as for native kernels below: the memref descriptors point at
                    // element 0 of checked operand views, and the kernel (generated from the
                    // same key, with the same loop nest) forms only addresses inside them.
                    unsafe { f(packed.argv()) };
                }
                Step::Kernel {
                    code: Code::Native(f),
                    ptrs: at,
                    imms,
                } => {
                    ptrs.clear();
                    for &(loc, offset) in at {
                        ptrs.push(mem.base_ptr(loc).wrapping_add(offset as usize));
                    }
                    // SAFETY: planning checked every operand view against its buffer or tensor
                    // (partitions and the lowest/highest element of each partition), the
                    // structural check placed every buffer inside its memory, and
                    // `JitMemory::new` sized every tensor to its declaration; the kernel's loop
                    // nest enumerates exactly the elements of each view (a re-factorisation of
                    // its dimensions), so every address it forms from these base pointers lies
                    // inside the memory they point into. The memories are not resized during
                    // the run and no Rust reference to them is live during the call. `ptrs` has
                    // one entry per memory operand and `imms` one per immediate of the key the
                    // kernel was compiled for.
                    unsafe { f(ptrs.as_ptr(), imms.as_ptr()) };
                }
                Step::Matmul(p) => {
                    let next = ahead.get(j).copied().flatten().and_then(|(q, i)| {
                        match steps.get(q)?.get(i)? {
                            Step::Matmul(next) => Some(&**next),
                            _ => None,
                        }
                    });
                    matmul::run(&mut mem, p, next, packs, &mut scratch, || {
                        inst_ref(q, i).describe(program)
                    })?;
                }
                Step::Transpose(t) => {
                    matmul::transpose(&mut mem, t, &mut scratch, || {
                        inst_ref(q, i).describe(program)
                    })?;
                }
                Step::ActRows(a) => {
                    actrow::run(&mut mem, a, &mut rows, || inst_ref(q, i).describe(program))?;
                }
                Step::Skipped => {}
                Step::Fallback | Step::Pending(..) => {
                    let ctx = Ctx {
                        index: i,
                        opcode: inst.op.opcode(),
                        loc: None,
                        machine: Some((program, inst_ref(q, i))),
                    };
                    exec::execute(&mut mem, ctx, &inst.op)?;
                }
            }
        }
        let (outputs, spare) = mem.finish();
        self.spare = spare;
        self.scratch = scratch;
        Ok(outputs)
    }

    /// Checks every operand of `op` and decides how it runs, compiling its kernel if needed.
    fn plan(&mut self, res: &Resolver<'_>, op: &Op) -> Result<Step, JitError> {
        for operand in op.tile_operands() {
            res.tile(operand.role, operand.tile)?;
        }
        if let Op::DmaCopy { dst, src } = op {
            res.dma("dst", dst)?;
            res.dma("src", src)?;
            // Inputs are borrowed from the caller and only read (`memory::JitMemory`).
            if let tessera_ir::DmaOperand::Hbm(h) = dst
                && res
                    .program
                    .tensor(h.tensor)
                    .is_some_and(|t| t.kind == tessera_ir::TensorKind::Input)
            {
                return Err(JitError::BadInstruction {
                    inst: res.at.clone(),
                    detail: "`dst` is an input tensor, and inputs are read-only".into(),
                });
            }
        }
        let planned = match op {
            Op::Matmul {
                dst,
                stationary,
                moving,
                start,
                ..
            } => {
                if let Some(p) = plan_matmul(res, dst, stationary, moving, *start)? {
                    self.stats.microkernel += 1;
                    return Ok(Step::Matmul(Box::new(p)));
                }
                None
            }
            Op::Transpose { dst, src } => {
                if let Some(t) = plan_transpose(res, dst, src)? {
                    self.stats.microkernel += 1;
                    return Ok(Step::Transpose(Box::new(t)));
                }
                None
            }
            _ => invocation(res, op)?,
        };
        let Some(inv) = planned else {
            self.stats.fallbacks += 1;
            *self.stats.fallback_ops.entry(op.opcode()).or_default() += 1;
            return Ok(Step::Fallback);
        };
        self.step_for(inv, op.opcode())
    }

    /// The step running an element-wise invocation: a Rust row kernel, a cached or newly
    /// compiled kernel, or (MLIR) pending the batch compilation.
    fn step_for(&mut self, inv: Invocation, opcode: &'static str) -> Result<Step, JitError> {
        if let Some(rows) = actrow::ActRows::plan(&inv) {
            self.stats.microkernel += 1;
            return Ok(Step::ActRows(Box::new(rows)));
        }
        match self.cache.get(&inv.key) {
            Some(&code) => {
                self.stats.cache_hits += 1;
                Ok(self.kernel_step(code, inv, opcode))
            }
            None if self.batches() => Ok(Step::Pending(inv, opcode)),
            None => {
                let f = self
                    .compiler
                    .compile(&inv.key)
                    .map_err(|detail| JitError::Codegen { detail })?;
                self.stats.compiled += 1;
                self.cache.insert(inv.key.clone(), Some(Code::Native(f)));
                Ok(self.kernel_step(Some(Code::Native(f)), inv, opcode))
            }
        }
    }

    /// Whether kernels are compiled in one batch after planning (MLIR) rather than one by one.
    fn batches(&self) -> bool {
        #[cfg(feature = "mlir")]
        {
            self.mlir.is_some()
        }
        #[cfg(not(feature = "mlir"))]
        {
            false
        }
    }

    /// The step running `inv` with `code`, or the fallback (counted) when there is no code.
    fn kernel_step(&mut self, code: Option<Code>, inv: Invocation, opcode: &'static str) -> Step {
        match code {
            Some(code) => Step::Kernel {
                code,
                ptrs: inv.ptrs,
                imms: inv.imms,
            },
            None => {
                self.stats.fallbacks += 1;
                *self.stats.fallback_ops.entry(opcode).or_default() += 1;
                Step::Fallback
            }
        }
    }

    /// Compiles the kernels of every [`Step::Pending`] in one batch and resolves the steps.
    #[cfg(feature = "mlir")]
    fn compile_pending(&mut self, steps: &mut [Vec<Step>]) -> Result<(), JitError> {
        let Some(compiler) = self.mlir.as_mut() else {
            return Ok(());
        };
        let mut keys: Vec<&KernelKey> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for step in steps.iter().flatten() {
            if let Step::Pending(inv, _) = step
                && seen.insert(&inv.key)
            {
                keys.push(&inv.key);
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let compiled = compiler
            .compile(&keys)
            .map_err(|detail| JitError::Codegen { detail })?;
        self.stats.compiled += compiled.iter().flatten().count() as u64;
        let new: Vec<(KernelKey, Option<Code>)> = keys
            .iter()
            .zip(compiled)
            .map(|(k, f)| ((*k).clone(), f.map(Code::Packed)))
            .collect();
        self.cache.extend(new);
        for step in steps.iter_mut().flatten() {
            if !matches!(step, Step::Pending(..)) {
                continue;
            }
            if let Step::Pending(inv, opcode) = std::mem::replace(step, Step::Fallback) {
                let code = self.cache.get(&inv.key).copied().flatten();
                *step = self.kernel_step(code, inv, opcode);
            }
        }
        Ok(())
    }

    #[cfg(not(feature = "mlir"))]
    fn compile_pending(&mut self, _steps: &mut [Vec<Step>]) -> Result<(), JitError> {
        Ok(())
    }
}

/// Calling MLIR's packed entry points: memref descriptors built from the planned operands.
#[cfg(feature = "mlir")]
mod mlir_call {
    use super::memory::{JitMemory, Loc};

    /// Reused storage for one call's scalars and the pointers to them.
    #[derive(Default)]
    pub(super) struct Args {
        slots: Vec<usize>,
        argv: Vec<*mut ()>,
    }

    impl Args {
        /// One `memref<?xT>` descriptor (allocated and aligned pointer, offset 0, size, stride 1)
        /// per operand, then one for the immediates. The size given is the bytes left in the
        /// memory, an upper bound on the elements; the kernels never read it.
        pub fn fill(&mut self, mem: &mut JitMemory, at: &[(Loc, u64)], imms: &[f64]) {
            self.slots.clear();
            for &(loc, offset) in at {
                let p = mem.base_ptr(loc).wrapping_add(offset as usize) as usize;
                let left = mem.len(loc).saturating_sub(offset as usize);
                self.slots.extend([p, p, 0, left, 1]);
            }
            let p = imms.as_ptr() as usize;
            self.slots.extend([p, p, 0, imms.len(), 1]);
            self.argv.clear();
            let base = self.slots.as_mut_ptr();
            for k in 0..self.slots.len() {
                self.argv.push(base.wrapping_add(k).cast());
            }
        }

        pub fn argv(&mut self) -> *mut *mut () {
            self.argv.as_mut_ptr()
        }
    }
}

fn inst_ref(q: usize, i: usize) -> InstRef {
    InstRef {
        queue: QueueId(q as u32),
        index: i as u32,
    }
}

/// A valid execution order: round-robin over the queues, each running as far as its waits
/// allow; a deadlock when a round makes no progress with queues unfinished.
fn order(program: &MachineProgram) -> Result<Vec<(usize, usize)>, JitError> {
    let queues = &program.queues;
    let mut done = vec![0usize; queues.len()];
    let mut out = Vec::with_capacity(program.inst_count());
    loop {
        let mut progressed = false;
        for (q, queue) in queues.iter().enumerate() {
            while let Some(inst) = queue.insts.get(done[q]) {
                let ready = inst.waits.iter().all(|w| {
                    done.get(w.queue.0 as usize)
                        .is_some_and(|&d| d >= w.count as usize)
                });
                if !ready {
                    break;
                }
                out.push((q, done[q]));
                done[q] += 1;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    let blocked: Vec<String> = queues
        .iter()
        .enumerate()
        .filter(|(q, queue)| done[*q] < queue.insts.len())
        .map(|(q, _)| format!("{} cannot start", inst_ref(q, done[q]).describe(program)))
        .collect();
    if blocked.is_empty() {
        Ok(out)
    } else {
        Err(JitError::Deadlock { blocked })
    }
}

/// Element-wise operands of tile instructions must pair partition by partition.
fn same_shape(a: &Raw, b: &Raw) -> bool {
    a.rows == b.rows && a.free == b.free
}

/// A scalar operand (immediate, rounded to fp32 as the engines hold it, or per-partition tile)
/// of an operation over `main`'s shape.
fn scalar(res: &Resolver<'_>, role: &str, s: &Scalar, main: &Raw) -> Result<Option<Src>, JitError> {
    Ok(match s {
        Scalar::Imm(v) => Some(Src::Imm(*v as f32 as f64)),
        Scalar::PerPartition(t) => {
            let raw = res.tile(role, t)?;
            if !is_f32ish(raw.dtype) {
                return Ok(None);
            }
            plan::per_partition(raw, main.rows, main.free).map(Src::Mem)
        }
    })
}

/// The kernel invocation for a compiled instruction, or `None` to fall back.
fn invocation(res: &Resolver<'_>, op: &Op) -> Result<Option<Invocation>, JitError> {
    invocation_into(res, op, None)
}

/// [`invocation`], writing to `into` instead of the instruction's destination tile when given
/// (the same elements in the same order, elsewhere: `store::forward_stores`); only for
/// `tensor_copy`, `tensor_tensor`, `tensor_scalar` and plain `activation`.
fn invocation_into(
    res: &Resolver<'_>,
    op: &Op,
    into: Option<Raw>,
) -> Result<Option<Invocation>, JitError> {
    // The destination the kernel writes, given the instruction's own (checked) one.
    let target = |d: Raw| into.clone().unwrap_or(d);
    if into.is_some()
        && !matches!(
            op,
            Op::TensorCopy { .. }
                | Op::TensorTensor { .. }
                | Op::TensorScalar { .. }
                | Op::Activation { accum: None, .. }
        )
    {
        return Ok(None);
    }
    let copy_body = |s: DType, d: DType| {
        if s == d {
            Some(Body::Copy {
                width: s.size_bytes() as u8,
            })
        } else if is_f32ish(s) && is_f32ish(d) {
            Some(Body::Convert)
        } else {
            None
        }
    };
    Ok(match op {
        Op::DmaCopy { dst, src } => {
            let (d, s) = (res.dma("dst", dst)?, res.dma("src", src)?);
            copy_body(s.dtype, d.dtype)
                .and_then(|body| plan::elementwise(body, d, vec![Src::Mem(s)]))
        }
        Op::TensorCopy { dst, src, .. } => {
            let (d, s) = (res.tile("dst", dst)?, res.tile("src", src)?);
            if !same_shape(&s, &d) {
                return Ok(None);
            }
            copy_body(s.dtype, d.dtype)
                .and_then(|body| plan::elementwise(body, target(d), vec![Src::Mem(s)]))
        }
        Op::TensorTensor {
            op, dst, lhs, rhs, ..
        } => {
            let (d, l, r) = (
                res.tile("dst", dst)?,
                res.tile("lhs", lhs)?,
                res.tile("rhs", rhs)?,
            );
            let ok = alu_supported(*op)
                && [&d, &l, &r].iter().all(|x| is_f32ish(x.dtype))
                && same_shape(&l, &d)
                && same_shape(&r, &d);
            if !ok {
                return Ok(None);
            }
            plan::elementwise(Body::Binary(*op), target(d), vec![Src::Mem(l), Src::Mem(r)])
        }
        Op::TensorScalar {
            dst, src, op0, op1, ..
        } => {
            let (d, s) = (res.tile("dst", dst)?, res.tile("src", src)?);
            let steps: Vec<_> = std::iter::once(op0).chain(op1.as_ref()).collect();
            let ok = is_f32ish(d.dtype)
                && is_f32ish(s.dtype)
                && same_shape(&s, &d)
                && steps.iter().all(|st| alu_supported(st.op));
            if !ok {
                return Ok(None);
            }
            let mut srcs = Vec::new();
            for (k, st) in steps.iter().enumerate() {
                let role = if k == 0 { "operand0" } else { "operand1" };
                match scalar(res, role, &st.operand, &s)? {
                    Some(x) => srcs.push(x),
                    None => return Ok(None),
                }
            }
            srcs.insert(0, Src::Mem(s));
            let body = Body::Scalar(steps.iter().map(|st| (st.op, st.reverse)).collect());
            plan::elementwise(body, target(d), srcs)
        }
        Op::Activation {
            dst,
            src,
            func,
            scale,
            bias,
            accum,
        } => {
            let (d, s) = (res.tile("dst", dst)?, res.tile("src", src)?);
            if !(is_f32ish(d.dtype) && is_f32ish(s.dtype) && same_shape(&s, &d)) {
                return Ok(None);
            }
            let (Some(sc), Some(bi)) = (
                scalar(res, "scale", scale, &s)?,
                scalar(res, "bias", bias, &s)?,
            ) else {
                return Ok(None);
            };
            match accum {
                None => plan::elementwise(Body::Act(*func), target(d), vec![Src::Mem(s), sc, bi]),
                Some(a) => {
                    let a = res.tile("accum", a)?;
                    if !is_f32ish(a.dtype) {
                        return Ok(None);
                    }
                    plan::act_accum(*func, d, s, sc, bi, a)
                }
            }
        }
        Op::TensorReduce {
            op, dst, src, axes, ..
        } => {
            let (d, s) = (res.tile("dst", dst)?, res.tile("src", src)?);
            if !(is_f32ish(d.dtype) && is_f32ish(s.dtype)) {
                return Ok(None);
            }
            plan::reduce(*op, d, s, *axes as usize)
        }
        Op::Memset { dst, value, .. } => {
            let d = res.tile("dst", dst)?;
            if !is_f32ish(d.dtype) {
                return Ok(None);
            }
            plan::elementwise(Body::Memset, d, vec![Src::Imm(*value)])
        }
        _ => None,
    })
}

/// Instruction `i` of queue `q` with its resolver and its planned step (the planning walks
/// over the run order look instructions up this way).
fn planned<'a, 'p>(
    program: &'a MachineProgram,
    resolvers: &'a [Vec<Resolver<'p>>],
    steps: &'a mut [Vec<Step>],
    (q, i): (usize, usize),
) -> Option<(&'a tessera_ir::MachineInst, &'a Resolver<'p>, &'a mut Step)> {
    Some((
        program.queues.get(q)?.insts.get(i)?,
        resolvers.get(q)?.get(i)?,
        steps.get_mut(q)?.get_mut(i)?,
    ))
}

/// One resolver per instruction of `program`, by queue and index.
fn resolvers<'p>(program: &'p MachineProgram, target: &TargetSpec) -> Vec<Vec<Resolver<'p>>> {
    (0..program.queues.len())
        .map(|q| {
            (0..program.queues[q].insts.len())
                .map(|i| resolver(program, target, q, i))
                .collect()
        })
        .collect()
}

/// The resolver of instruction `i` of queue `q` (named in its errors).
fn resolver<'p>(
    program: &'p MachineProgram,
    target: &TargetSpec,
    q: usize,
    i: usize,
) -> Resolver<'p> {
    Resolver {
        program,
        sbuf_pb: memory::host_pitch(target.sbuf_partition_bytes),
        psum_pb: memory::host_pitch(target.psum_partition_bytes),
        at: inst_ref(q, i).describe(program),
    }
}

/// The tensor engine's float operand types: f32, bf16 and f16 (each widens to f32 exactly).
fn pe_operand(t: DType) -> bool {
    is_f32ish(t) || t == DType::F16
}

fn plan_transpose(
    res: &Resolver<'_>,
    dst: &TileAccess,
    src: &TileAccess,
) -> Result<Option<TransposePlan>, JitError> {
    let (d, s) = (res.tile("dst", dst)?, res.tile("src", src)?);
    let ok = d.dtype == DType::F32
        && pe_operand(s.dtype)
        && d.rows == s.free
        && d.free == s.rows
        && !d.is_empty()
        && !s.is_empty()
        && !d.may_overlap(&s);
    Ok(ok.then(|| TransposePlan {
        src: Panel::new(&s, src),
        dst: Panel::new(&d, dst),
    }))
}

fn plan_matmul(
    res: &Resolver<'_>,
    dst: &TileAccess,
    stationary: &TileAccess,
    moving: &TileAccess,
    start: bool,
) -> Result<Option<MatmulPlan>, JitError> {
    let (d, st, mv) = (
        res.tile("dst", dst)?,
        res.tile("stationary", stationary)?,
        res.tile("moving", moving)?,
    );
    let ok = d.dtype == DType::F32
        && pe_operand(st.dtype)
        && pe_operand(mv.dtype)
        && st.rows == mv.rows
        && d.rows == st.free
        && d.free == mv.free
        && !d.is_empty()
        && !st.is_empty()
        && !mv.is_empty();
    Ok(ok.then(|| MatmulPlan {
        stationary: Panel::new(&st, stationary),
        moving: Panel::new(&mv, moving),
        dst: Panel::new(&d, dst),
        start,
        moving_slot: None,
        prefetch: [false; 2],
        packed: None,
    }))
}
