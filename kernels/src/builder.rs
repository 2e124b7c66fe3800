//! [`KernelBuilder`]: records a [`TileProgram`] as Rust code runs, the way NKI traces a kernel.
//!
//! Rust loops run while recording, so the program is fully unrolled. Every recording method is
//! `#[track_caller]`: the instruction keeps the kernel author's file and line, and it is checked
//! by [`Verifier`] the moment it is recorded, so a broken rule points at the line that broke it.

use crate::error::KernelError;
use crate::view::{DmaEnd, HbmView, ScalarArg, Step, Tensor, Tile, TileView};
use std::collections::HashSet;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use tessera_ir::{
    ActFunc, AffineExpr, AluOp, BufId, Buffer, CmpOp, DType, DmaOperand, Engine, HbmAccess,
    HbmTensor, Inst, Op, ReduceOp, Scalar, ScalarStep, SourceLoc, Space, TargetSpec, TensorKind,
    TileAccess, TileProgram, Verifier,
};

/// Each builder gets a distinct id so handles from another builder are recognised.
static NEXT_BUILDER_ID: AtomicU64 = AtomicU64::new(1);

/// Records a tile program instruction by instruction. See the crate docs for a tutorial.
#[derive(Debug)]
pub struct KernelBuilder<'t> {
    id: u64,
    target: &'t TargetSpec,
    verifier: Verifier<'t>,
    program: TileProgram,
    /// Indexed by `BufId`: still allocated.
    live: Vec<bool>,
    buffer_names: HashSet<String>,
    /// Next numeric suffix to try for each repeated buffer name.
    next_suffix: std::collections::HashMap<String, u64>,
}

type Loc = &'static Location<'static>;

impl<'t> KernelBuilder<'t> {
    /// An empty kernel called `name` for `target`.
    pub fn new(name: impl Into<String>, target: &'t TargetSpec) -> Self {
        KernelBuilder {
            id: NEXT_BUILDER_ID.fetch_add(1, Ordering::Relaxed),
            target,
            verifier: Verifier::new(target),
            program: TileProgram::new(name),
            live: Vec::new(),
            buffer_names: HashSet::new(),
            next_suffix: std::collections::HashMap::new(),
        }
    }

    /// The target the kernel is recorded for.
    pub fn target(&self) -> &'t TargetSpec {
        self.target
    }

    /// The program recorded so far.
    pub fn program(&self) -> &TileProgram {
        &self.program
    }

    // ----- HBM tensors -----

    /// Declares an input tensor.
    #[track_caller]
    pub fn input(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor, KernelError> {
        let loc = Location::caller();
        self.tensor(name, dtype, shape, TensorKind::Input)
            .map_err(|e| e.at(loc))
    }

    /// Declares an output tensor.
    #[track_caller]
    pub fn output(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor, KernelError> {
        let loc = Location::caller();
        self.tensor(name, dtype, shape, TensorKind::Output)
            .map_err(|e| e.at(loc))
    }

    /// Declares an HBM scratch tensor (uninitialised, private to the kernel).
    #[track_caller]
    pub fn scratch(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor, KernelError> {
        let loc = Location::caller();
        self.tensor(name, dtype, shape, TensorKind::Scratch)
            .map_err(|e| e.at(loc))
    }

    fn tensor(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        kind: TensorKind,
    ) -> Result<Tensor, KernelError> {
        if self.program.tensor_by_name(name).is_some() {
            return Err(KernelError::DuplicateTensor(name.to_string()));
        }
        // Views compute element offsets in i64; a tensor whose byte size fits keeps them exact.
        let bytes = shape
            .iter()
            .try_fold(dtype.size_bytes() as u64, |acc, &d| {
                acc.checked_mul(d as u64)
            })
            .filter(|&b| b <= i64::MAX as u64);
        match bytes {
            Some(0) => return Err(bad_alloc(name, format!("shape {shape:?} has no elements"))),
            None => return Err(bad_alloc(name, format!("shape {shape:?} is too large"))),
            Some(_) => {}
        }
        let id = tessera_ir::TensorId(self.program.tensors.len() as u32);
        self.program.tensors.push(HbmTensor {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            kind,
        });
        Ok(Tensor {
            owner: self.id,
            id,
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
        })
    }

    // ----- on-chip buffers -----

    /// Allocates an SBUF buffer of `partitions` x `free_shape` (records `alloc`). The name is
    /// made unique (`x`, `x.1`, `x.2`, ...) so a loop can allocate under one name.
    #[track_caller]
    pub fn sbuf(
        &mut self,
        name: &str,
        dtype: DType,
        partitions: u32,
        free_shape: &[usize],
    ) -> Result<Tile, KernelError> {
        self.alloc(
            Location::caller(),
            Space::Sbuf,
            name,
            dtype,
            partitions,
            free_shape,
        )
    }

    /// Allocates a PSUM buffer (records `alloc`); named as [`KernelBuilder::sbuf`].
    #[track_caller]
    pub fn psum(
        &mut self,
        name: &str,
        dtype: DType,
        partitions: u32,
        free_shape: &[usize],
    ) -> Result<Tile, KernelError> {
        self.alloc(
            Location::caller(),
            Space::Psum,
            name,
            dtype,
            partitions,
            free_shape,
        )
    }

    fn unique_name(&mut self, name: &str) -> String {
        if !self.buffer_names.contains(name) {
            return name.to_string();
        }
        // Resume from the last suffix handed out for this name: a loop allocating the same
        // name thousands of times stays linear.
        let next = self.next_suffix.entry(name.to_string()).or_insert(1);
        loop {
            let candidate = format!("{name}.{next}");
            *next += 1;
            if !self.buffer_names.contains(&candidate) {
                return candidate;
            }
        }
    }

    fn alloc(
        &mut self,
        loc: Loc,
        space: Space,
        name: &str,
        dtype: DType,
        partitions: u32,
        free_shape: &[usize],
    ) -> Result<Tile, KernelError> {
        // Refusals point at the author's `sbuf`/`psum` call.
        let refuse = |detail: String| bad_alloc(name, detail).at(loc);
        let capacity = match space {
            Space::Sbuf => self.target.sbuf_partition_bytes,
            Space::Psum => self.target.psum_partition_bytes,
        };
        if partitions == 0 || partitions > self.target.partitions {
            let max = self.target.partitions;
            return Err(refuse(format!(
                "{partitions} partitions (1 to {max} allowed)"
            )));
        }
        // A buffer bigger than its whole memory can never be placed; refusing it here also keeps
        // every stride computed from its shape small.
        let bytes = free_shape
            .iter()
            .try_fold(dtype.size_bytes() as u64, |acc, &d| {
                acc.checked_mul(d as u64)
            });
        match bytes {
            Some(0) => {
                return Err(refuse(format!("free shape {free_shape:?} is empty")));
            }
            Some(b) if b <= capacity => {}
            _ => {
                return Err(refuse(format!(
                    "{dtype} {free_shape:?} needs more than the {capacity} bytes per partition of {}",
                    space.name()
                )));
            }
        }
        let name = self.unique_name(name);
        let buf = BufId(self.program.buffers.len() as u32);
        self.program.buffers.push(Buffer {
            name: name.clone(),
            space,
            dtype,
            partitions,
            free_shape: free_shape.to_vec(),
            placement: None,
        });
        if let Err(e) = self.record(Op::Alloc { buf }, loc) {
            self.program.buffers.pop();
            return Err(e);
        }
        self.buffer_names.insert(name.clone());
        self.live.push(true);
        Ok(Tile {
            owner: self.id,
            buf,
            name,
            space,
            dtype,
            partitions,
            free_shape: free_shape.to_vec(),
        })
    }

    /// Ends a buffer's lifetime (records `free`).
    #[track_caller]
    pub fn free(&mut self, tile: Tile) -> Result<(), KernelError> {
        let loc = Location::caller();
        if tile.owner != self.id {
            return Err(KernelError::ForeignHandle {
                what: "buffer",
                name: tile.name,
            }
            .at(loc));
        }
        self.free_buf(tile.buf, loc)
    }

    fn free_buf(&mut self, buf: BufId, loc: Loc) -> Result<(), KernelError> {
        let i = buf.0 as usize;
        if !self.live.get(i).copied().unwrap_or(false) {
            let name = self
                .program
                .buffers
                .get(i)
                .map(|b| b.name.clone())
                .unwrap_or_default();
            return Err(KernelError::UseAfterFree {
                op: "free",
                role: "buf",
                name,
            }
            .at(loc));
        }
        self.record(Op::Free { buf }, loc)?;
        self.live[i] = false;
        Ok(())
    }

    /// Frees every buffer still live (in reverse allocation order), verifies the whole program
    /// and returns it.
    #[track_caller]
    pub fn finish(mut self) -> Result<TileProgram, KernelError> {
        let loc = Location::caller();
        for i in (0..self.live.len()).rev() {
            if self.live[i] {
                self.free_buf(BufId(i as u32), loc)?;
            }
        }
        tessera_ir::verify(&self.program, self.target)?;
        Ok(self.program)
    }

    // ----- recording -----

    fn record(&mut self, op: Op, loc: Loc) -> Result<(), KernelError> {
        if let Some(engine) = op.engine()
            && !op.allowed_engines().contains(&engine)
        {
            let allowed = op
                .allowed_engines()
                .iter()
                .map(|e| e.name())
                .collect::<Vec<_>>();
            return Err(KernelError::WrongEngine {
                op: op.opcode(),
                engine,
                allowed: allowed.join(", "),
            }
            .at(loc));
        }
        let inst = Inst {
            op,
            loc: Some(SourceLoc {
                file: loc.file().to_string(),
                line: loc.line(),
                column: loc.column(),
            }),
        };
        let index = self.program.insts.len();
        self.verifier
            .check(&self.program.tensors, &self.program.buffers, index, &inst)?;
        self.program.insts.push(inst);
        Ok(())
    }

    /// The author's name of a buffer.
    fn buf_name(&self, buf: BufId) -> &str {
        self.program
            .buffers
            .get(buf.0 as usize)
            .map_or("?", |b| b.name.as_str())
    }

    /// Checks a tile view: made here, still live, within its buffer. Errors point at the
    /// author's call of the public method (`#[track_caller]` all the way).
    #[track_caller]
    fn tile(
        &self,
        op: &'static str,
        role: &'static str,
        v: TileView,
    ) -> Result<TileAccess, KernelError> {
        let loc = Location::caller();
        self.tile_at(op, role, v).map_err(|e| e.at(loc))
    }

    fn tile_at(
        &self,
        op: &'static str,
        role: &'static str,
        v: TileView,
    ) -> Result<TileAccess, KernelError> {
        if v.owner != self.id {
            return Err(KernelError::ForeignHandle {
                what: "view",
                name: v.name,
            });
        }
        if let Some(detail) = v.problem {
            return Err(KernelError::BadOperand { op, role, detail });
        }
        let i = v.access.buf.0 as usize;
        let buf = &self.program.buffers[i];
        if !self.live[i] {
            return Err(KernelError::UseAfterFree {
                op,
                role,
                name: buf.name.clone(),
            });
        }
        let a = &v.access;
        let bad = |detail: String| KernelError::BadOperand { op, role, detail };
        if a.partitions == 0
            || a.start_partition as u64 + a.partitions as u64 > buf.partitions as u64
        {
            return Err(bad(format!(
                "partitions {}..{} outside %{}'s 0..{}",
                a.start_partition,
                a.start_partition as u64 + a.partitions as u64,
                buf.name,
                buf.partitions
            )));
        }
        match a.offset_range() {
            None => return Err(bad(format!("view of %{} is empty", buf.name))),
            Some((lo, hi)) if lo < 0 || hi >= buf.free_elems() as i64 => {
                return Err(bad(format!(
                    "view of %{} reaches free elements {lo}..={hi}, outside 0..{}",
                    buf.name,
                    buf.free_elems()
                )));
            }
            Some(_) => {}
        }
        Ok(v.access)
    }

    /// Checks an HBM view: made here, within its tensor.
    fn hbm_at(
        &self,
        op: &'static str,
        role: &'static str,
        v: HbmView,
    ) -> Result<HbmAccess, KernelError> {
        if v.owner != self.id {
            return Err(KernelError::ForeignHandle {
                what: "tensor",
                name: v.name,
            });
        }
        if let Some(detail) = v.problem {
            return Err(KernelError::BadOperand { op, role, detail });
        }
        let t = self.program.tensor(v.access.tensor);
        match v.access.offset_range() {
            None => Err(KernelError::BadOperand {
                op,
                role,
                detail: format!("view of @{} is empty", t.name),
            }),
            Some((lo, hi)) if lo < 0 || hi as u64 >= t.elems() => Err(KernelError::BadOperand {
                op,
                role,
                detail: format!(
                    "view of @{} reaches elements {lo}..={hi}, outside 0..{}",
                    t.name,
                    t.elems()
                ),
            }),
            Some(_) => Ok(v.access),
        }
    }

    #[track_caller]
    fn scalar(
        &self,
        op: &'static str,
        role: &'static str,
        s: ScalarArg,
        p: u32,
    ) -> Result<Scalar, KernelError> {
        match s {
            ScalarArg::Imm(v) => Ok(Scalar::Imm(v)),
            ScalarArg::PerPartition(v) => {
                let a = self.tile(op, role, v)?;
                column(op, &format!("{role} %{}", self.buf_name(a.buf)), &a, p)?;
                Ok(Scalar::PerPartition(a))
            }
        }
    }

    #[track_caller]
    fn step(
        &self,
        op: &'static str,
        role: &'static str,
        s: Step,
        p: u32,
    ) -> Result<ScalarStep, KernelError> {
        Ok(ScalarStep {
            op: s.op,
            operand: self.scalar(op, role, s.operand, p)?,
            reverse: s.reverse,
        })
    }

    // ----- one method per instruction -----

    /// `dma_copy`: moves `src` to `dst` element by element in element order, converting dtype.
    /// Either end may be an HBM view or an SBUF view.
    #[track_caller]
    pub fn dma_copy(
        &mut self,
        dst: impl Into<DmaEnd>,
        src: impl Into<DmaEnd>,
    ) -> Result<(), KernelError> {
        const OP: &str = "dma_copy";
        let loc = Location::caller();
        // A closure is not `#[track_caller]`: the author's location is attached here.
        let end = |e: DmaEnd, role| -> Result<DmaOperand, KernelError> {
            Ok(match e {
                DmaEnd::Hbm(h) => DmaOperand::Hbm(self.hbm_at(OP, role, h).map_err(|e| e.at(loc))?),
                DmaEnd::Tile(t) => {
                    DmaOperand::Tile(self.tile_at(OP, role, t).map_err(|e| e.at(loc))?)
                }
            })
        };
        let dst = end(dst.into(), "dst")?;
        let src = end(src.into(), "src")?;
        if dst.elems() != src.elems() {
            return Err(mismatch(
                OP,
                format!("dst has {} elements, src {}", dst.elems(), src.elems()),
            ));
        }
        self.record(Op::DmaCopy { dst, src }, loc)
    }

    /// `nc_matmul`: `dst[M, N] (+)= stationary[K, M]^T . moving[K, N]`; `start` overwrites,
    /// `stop` closes the accumulation group.
    #[track_caller]
    pub fn nc_matmul(
        &mut self,
        dst: impl Into<TileView>,
        stationary: impl Into<TileView>,
        moving: impl Into<TileView>,
        start: bool,
        stop: bool,
    ) -> Result<(), KernelError> {
        const OP: &str = "nc_matmul";
        let loc = Location::caller();
        let dst = self.tile(OP, "dst", dst.into())?;
        let stationary = self.tile(OP, "stationary", stationary.into())?;
        let moving = self.tile(OP, "moving", moving.into())?;
        if stationary.partitions != moving.partitions
            || dst.partitions as u64 != stationary.free_elems()
            || dst.free_elems() != moving.free_elems()
        {
            let name = |a: &TileAccess| self.buf_name(a.buf);
            return Err(mismatch(
                OP,
                format!(
                    "stationary %{} [{}, {}], moving %{} [{}, {}] and dst %{} [{}, {}] do not \
                     form [K, M]^T . [K, N] = [M, N] (K, the contraction size, is the \
                     partitions of both operands)",
                    name(&stationary),
                    stationary.partitions,
                    stationary.free_elems(),
                    name(&moving),
                    moving.partitions,
                    moving.free_elems(),
                    name(&dst),
                    dst.partitions,
                    dst.free_elems()
                ),
            ));
        }
        self.record(
            Op::Matmul {
                dst,
                stationary,
                moving,
                start,
                stop,
            },
            loc,
        )
    }

    /// `nc_transpose`: `dst[f, p] = src[p, f]` through the tensor engine (into PSUM).
    #[track_caller]
    pub fn nc_transpose(
        &mut self,
        dst: impl Into<TileView>,
        src: impl Into<TileView>,
    ) -> Result<(), KernelError> {
        const OP: &str = "nc_transpose";
        let loc = Location::caller();
        let dst = self.tile(OP, "dst", dst.into())?;
        let src = self.tile(OP, "src", src.into())?;
        if dst.partitions as u64 != src.free_elems() || dst.free_elems() != src.partitions as u64 {
            return Err(mismatch(
                OP,
                format!(
                    "dst is [{}, {}] but the transpose of src is [{}, {}]",
                    dst.partitions,
                    dst.free_elems(),
                    src.free_elems(),
                    src.partitions
                ),
            ));
        }
        self.record(Op::Transpose { dst, src }, loc)
    }

    /// `activation`: `dst = func(src * scale + bias)`; with `accum`, also the per-partition sum
    /// of the results into a `[P, 1]` f32 view.
    #[track_caller]
    pub fn activation(
        &mut self,
        dst: impl Into<TileView>,
        src: impl Into<TileView>,
        func: ActFunc,
        scale: impl Into<ScalarArg>,
        bias: impl Into<ScalarArg>,
        accum: Option<&TileView>,
    ) -> Result<(), KernelError> {
        const OP: &str = "activation";
        let loc = Location::caller();
        let dst = self.tile(OP, "dst", dst.into())?;
        let src = self.tile(OP, "src", src.into())?;
        same_shape(OP, "src", &src, &dst)?;
        let scale = self.scalar(OP, "scale", scale.into(), dst.partitions)?;
        let bias = self.scalar(OP, "bias", bias.into(), dst.partitions)?;
        let accum = match accum {
            Some(a) => {
                let a = self.tile(OP, "accum", a.clone())?;
                column(OP, "accum", &a, dst.partitions)?;
                Some(a)
            }
            None => None,
        };
        self.record(
            Op::Activation {
                dst,
                src,
                func,
                scale,
                bias,
                accum,
            },
            loc,
        )
    }

    /// `activation` with scale 1, bias 0 and no accumulation: `dst = func(src)`.
    #[track_caller]
    pub fn act(
        &mut self,
        dst: impl Into<TileView>,
        src: impl Into<TileView>,
        func: ActFunc,
    ) -> Result<(), KernelError> {
        self.activation(dst, src, func, 1.0, 0.0, None)
    }

    /// `tensor_tensor` on the vector engine: `dst = lhs OP rhs`.
    #[track_caller]
    pub fn tensor_tensor(
        &mut self,
        dst: impl Into<TileView>,
        lhs: impl Into<TileView>,
        op: AluOp,
        rhs: impl Into<TileView>,
    ) -> Result<(), KernelError> {
        self.tensor_tensor_on(Engine::Dve, dst, lhs, op, rhs)
    }

    /// `tensor_tensor` on `engine` (DVE or POOL).
    #[track_caller]
    pub fn tensor_tensor_on(
        &mut self,
        engine: Engine,
        dst: impl Into<TileView>,
        lhs: impl Into<TileView>,
        op: AluOp,
        rhs: impl Into<TileView>,
    ) -> Result<(), KernelError> {
        const OP: &str = "tensor_tensor";
        let loc = Location::caller();
        let dst = self.tile(OP, "dst", dst.into())?;
        let lhs = self.tile(OP, "lhs", lhs.into())?;
        let rhs = self.tile(OP, "rhs", rhs.into())?;
        same_shape(OP, "lhs", &lhs, &dst)?;
        same_shape(OP, "rhs", &rhs, &dst)?;
        self.record(
            Op::TensorTensor {
                engine,
                op,
                dst,
                lhs,
                rhs,
            },
            loc,
        )
    }

    /// `tensor_scalar` on the vector engine with one step: `dst = src OP operand`.
    #[track_caller]
    pub fn tensor_scalar(
        &mut self,
        dst: impl Into<TileView>,
        src: impl Into<TileView>,
        op: AluOp,
        operand: impl Into<ScalarArg>,
    ) -> Result<(), KernelError> {
        self.tensor_scalar_on(Engine::Dve, dst, src, Step::new(op, operand), None)
    }

    /// `tensor_scalar` on `engine` (DVE, ACT or POOL): `dst = (src op0) op1`.
    #[track_caller]
    pub fn tensor_scalar_on(
        &mut self,
        engine: Engine,
        dst: impl Into<TileView>,
        src: impl Into<TileView>,
        op0: Step,
        op1: Option<Step>,
    ) -> Result<(), KernelError> {
        const OP: &str = "tensor_scalar";
        let loc = Location::caller();
        let dst = self.tile(OP, "dst", dst.into())?;
        let src = self.tile(OP, "src", src.into())?;
        same_shape(OP, "src", &src, &dst)?;
        let op0 = self.step(OP, "operand0", op0, dst.partitions)?;
        let op1 = match op1 {
            Some(s) => Some(self.step(OP, "operand1", s, dst.partitions)?),
            None => None,
        };
        self.record(
            Op::TensorScalar {
                engine,
                dst,
                src,
                op0,
                op1,
            },
            loc,
        )
    }

    /// `tensor_reduce` on the vector engine over the trailing `axes` free dimensions of `src`.
    #[track_caller]
    pub fn tensor_reduce(
        &mut self,
        dst: impl Into<TileView>,
        src: impl Into<TileView>,
        op: ReduceOp,
        axes: u8,
    ) -> Result<(), KernelError> {
        self.tensor_reduce_on(Engine::Dve, dst, src, op, axes)
    }

    /// `tensor_reduce` on `engine` (DVE or POOL).
    #[track_caller]
    pub fn tensor_reduce_on(
        &mut self,
        engine: Engine,
        dst: impl Into<TileView>,
        src: impl Into<TileView>,
        op: ReduceOp,
        axes: u8,
    ) -> Result<(), KernelError> {
        const OP: &str = "tensor_reduce";
        let loc = Location::caller();
        let dst = self.tile(OP, "dst", dst.into())?;
        let src = self.tile(OP, "src", src.into())?;
        let n = src.dims.len();
        let kept = (axes as usize >= 1 && axes as usize <= n).then(|| {
            src.dims[..n - axes as usize]
                .iter()
                .map(|d| d.size as u64)
                .product::<u64>()
        });
        if kept != Some(dst.free_elems()) || dst.partitions != src.partitions {
            return Err(mismatch(
                OP,
                format!(
                    "reducing {axes} of src's {n} free dims ({} partitions) does not give dst [{}, {}]",
                    src.partitions,
                    dst.partitions,
                    dst.free_elems()
                ),
            ));
        }
        self.record(
            Op::TensorReduce {
                engine,
                op,
                dst,
                src,
                axes,
            },
            loc,
        )
    }

    /// `tensor_copy` on the vector engine: `dst = src`, converting dtype (e.g. evacuating PSUM).
    #[track_caller]
    pub fn tensor_copy(
        &mut self,
        dst: impl Into<TileView>,
        src: impl Into<TileView>,
    ) -> Result<(), KernelError> {
        self.tensor_copy_on(Engine::Dve, dst, src)
    }

    /// `tensor_copy` on `engine` (DVE, ACT or POOL).
    #[track_caller]
    pub fn tensor_copy_on(
        &mut self,
        engine: Engine,
        dst: impl Into<TileView>,
        src: impl Into<TileView>,
    ) -> Result<(), KernelError> {
        const OP: &str = "tensor_copy";
        let loc = Location::caller();
        let dst = self.tile(OP, "dst", dst.into())?;
        let src = self.tile(OP, "src", src.into())?;
        same_shape(OP, "src", &src, &dst)?;
        self.record(Op::TensorCopy { engine, dst, src }, loc)
    }

    /// `memset` on the vector engine.
    #[track_caller]
    pub fn memset(&mut self, dst: impl Into<TileView>, value: f64) -> Result<(), KernelError> {
        self.memset_on(Engine::Dve, dst, value)
    }

    /// `memset` on `engine` (DVE, ACT or POOL).
    #[track_caller]
    pub fn memset_on(
        &mut self,
        engine: Engine,
        dst: impl Into<TileView>,
        value: f64,
    ) -> Result<(), KernelError> {
        let loc = Location::caller();
        let dst = self.tile("memset", "dst", dst.into())?;
        self.record(Op::Memset { engine, dst, value }, loc)
    }

    /// `iota` (on POOL): `dst[p, i...] = expr(p, i...)`.
    #[track_caller]
    pub fn iota(&mut self, dst: impl Into<TileView>, expr: AffineExpr) -> Result<(), KernelError> {
        let loc = Location::caller();
        let dst = self.tile("iota", "dst", dst.into())?;
        affine_dims("iota", &expr, &dst)?;
        self.record(
            Op::Iota {
                engine: Engine::Pool,
                dst,
                expr,
            },
            loc,
        )
    }

    /// `affine_select` (on POOL): `dst = (expr CMP 0) ? src : fill`, e.g. a causal mask.
    #[track_caller]
    pub fn affine_select(
        &mut self,
        dst: impl Into<TileView>,
        src: impl Into<TileView>,
        expr: AffineExpr,
        cmp: CmpOp,
        fill: f64,
    ) -> Result<(), KernelError> {
        const OP: &str = "affine_select";
        let loc = Location::caller();
        let dst = self.tile(OP, "dst", dst.into())?;
        let src = self.tile(OP, "src", src.into())?;
        same_shape(OP, "src", &src, &dst)?;
        affine_dims(OP, &expr, &dst)?;
        self.record(
            Op::AffineSelect {
                engine: Engine::Pool,
                dst,
                src,
                expr,
                cmp,
                fill,
            },
            loc,
        )
    }

    /// `select` on the vector engine: `dst = pred != 0 ? on_true : on_false`.
    #[track_caller]
    pub fn select(
        &mut self,
        dst: impl Into<TileView>,
        pred: impl Into<TileView>,
        on_true: impl Into<TileView>,
        on_false: impl Into<TileView>,
    ) -> Result<(), KernelError> {
        self.select_on(Engine::Dve, dst, pred, on_true, on_false)
    }

    /// `select` on `engine` (DVE or POOL).
    #[track_caller]
    pub fn select_on(
        &mut self,
        engine: Engine,
        dst: impl Into<TileView>,
        pred: impl Into<TileView>,
        on_true: impl Into<TileView>,
        on_false: impl Into<TileView>,
    ) -> Result<(), KernelError> {
        const OP: &str = "select";
        let loc = Location::caller();
        let dst = self.tile(OP, "dst", dst.into())?;
        let pred = self.tile(OP, "pred", pred.into())?;
        let on_true = self.tile(OP, "on_true", on_true.into())?;
        let on_false = self.tile(OP, "on_false", on_false.into())?;
        for (role, v) in [
            ("pred", &pred),
            ("on_true", &on_true),
            ("on_false", &on_false),
        ] {
            same_shape(OP, role, v, &dst)?;
        }
        self.record(
            Op::Select {
                engine,
                dst,
                pred,
                on_true,
                on_false,
            },
            loc,
        )
    }
}

fn bad_alloc(name: &str, detail: String) -> KernelError {
    KernelError::BadAllocation {
        name: name.to_string(),
        detail,
    }
}

#[track_caller]
fn mismatch(op: &'static str, detail: String) -> KernelError {
    KernelError::ShapeMismatch { op, detail }.at(Location::caller())
}

#[track_caller]
fn same_shape(
    op: &'static str,
    role: &str,
    a: &TileAccess,
    dst: &TileAccess,
) -> Result<(), KernelError> {
    if a.partitions == dst.partitions && a.free_elems() == dst.free_elems() {
        return Ok(());
    }
    Err(mismatch(
        op,
        format!(
            "{role} is [{}, {}] but dst is [{}, {}]",
            a.partitions,
            a.free_elems(),
            dst.partitions,
            dst.free_elems()
        ),
    ))
}

#[track_caller]
fn column(
    op: &'static str,
    role: &str,
    a: &TileAccess,
    partitions: u32,
) -> Result<(), KernelError> {
    if a.partitions == partitions && a.free_elems() == 1 {
        return Ok(());
    }
    Err(mismatch(
        op,
        format!(
            "{role} is [{}, {}]; a per-partition operand is [{partitions}, 1]",
            a.partitions,
            a.free_elems()
        ),
    ))
}

#[track_caller]
fn affine_dims(op: &'static str, expr: &AffineExpr, dst: &TileAccess) -> Result<(), KernelError> {
    if expr.free.len() == dst.dims.len() {
        return Ok(());
    }
    Err(mismatch(
        op,
        format!(
            "the expression has {} free coefficients for dst's {} free dims",
            expr.free.len(),
            dst.dims.len()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::Dim;

    /// The result with its error's location taken off, for matching the kind.
    fn root<T>(r: Result<T, KernelError>) -> Result<T, KernelError> {
        r.map_err(|e| e.root().clone())
    }

    fn target() -> TargetSpec {
        TargetSpec::trn2()
    }

    #[test]
    fn buffer_names_are_made_unique() {
        let t = target();
        let mut kb = KernelBuilder::new("k", &t);
        let names: Vec<String> = (0..3)
            .map(|_| {
                kb.sbuf("acc", DType::F32, 4, &[8])
                    .map(|b| b.name().to_string())
            })
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(names, ["acc", "acc.1", "acc.2"]);
        // A user name that looks like a generated one is skipped over, not duplicated.
        let mut kb = KernelBuilder::new("k", &t);
        let a = kb.sbuf("x.1", DType::F32, 1, &[1]).unwrap();
        let b = kb.sbuf("x", DType::F32, 1, &[1]).unwrap();
        let c = kb.sbuf("x", DType::F32, 1, &[1]).unwrap();
        assert_eq!([a.name(), b.name(), c.name()], ["x.1", "x", "x.2"]);
    }

    #[test]
    fn instructions_record_the_callers_line() {
        let t = target();
        let mut kb = KernelBuilder::new("k", &t);
        let tile = kb.sbuf("t", DType::F32, 2, &[3]).unwrap();
        let line = line!() + 1;
        kb.memset(&tile, 1.5).unwrap();
        let inst = kb.program().insts.last().unwrap();
        let loc = inst.loc.as_ref().unwrap();
        assert_eq!((loc.file.as_str(), loc.line), (file!(), line));
        assert!(matches!(inst.op, Op::Memset { value: 1.5, .. }));
    }

    #[test]
    fn views_take_strides_from_the_free_shape() {
        let t = target();
        let mut kb = KernelBuilder::new("k", &t);
        let tile = kb.sbuf("t", DType::F32, 8, &[4, 6]).unwrap();
        let v = tile.view(2..6, &[1..3, 2..5]);
        assert_eq!((v.access().start_partition, v.access().partitions), (2, 4));
        assert_eq!(v.access().offset, 6 + 2);
        assert_eq!(v.access().dims, vec![Dim::new(6, 2), Dim::new(1, 3)]);
        assert_eq!(
            tile.transposed(0..8).access().dims,
            vec![Dim::new(1, 6), Dim::new(6, 4)]
        );
        assert_eq!(
            tile.bcast_col(0..8, 5, 7).access().dims,
            vec![Dim::new(0, 7)]
        );
        assert_eq!(tile.col(0..8, 5).access().offset, 5);

        let x = kb.input("x", DType::F32, &[10, 20]).unwrap();
        let rows = x.block(3..5, 4..10).access().clone();
        assert_eq!(
            (rows.offset, rows.dims),
            (64, vec![Dim::new(20, 2), Dim::new(1, 6)])
        );
        let at = x.block_t(3..5, 4..10).access().clone();
        assert_eq!(
            (at.offset, at.dims),
            (64, vec![Dim::new(1, 6), Dim::new(20, 2)])
        );
        let g = x.bcast_row(128, 2, 0..20).access().clone();
        assert_eq!(
            (g.offset, g.dims),
            (40, vec![Dim::new(0, 128), Dim::new(1, 20)])
        );
    }

    #[test]
    fn handles_from_another_builder_are_refused() {
        let t = target();
        let mut one = KernelBuilder::new("one", &t);
        let mut two = KernelBuilder::new("two", &t);
        let foreign = one.sbuf("t", DType::F32, 2, &[2]).unwrap();
        let own = two.sbuf("t", DType::F32, 2, &[2]).unwrap();
        let err = two.tensor_copy(&own, &foreign).unwrap_err();
        assert!(
            matches!(err.root(), KernelError::ForeignHandle { what: "view", .. }),
            "{err}"
        );
        let x = one.input("x", DType::F32, &[2, 2]).unwrap();
        let err = two.dma_copy(&own, &x).unwrap_err();
        assert!(
            matches!(
                err.root(),
                KernelError::ForeignHandle { what: "tensor", .. }
            ),
            "{err}"
        );
        assert!(matches!(
            root(two.free(foreign)),
            Err(KernelError::ForeignHandle { .. })
        ));
        assert_eq!(
            two.program().insts.len(),
            1,
            "refused instructions are not recorded"
        );
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        let t = target();
        let mut kb = KernelBuilder::new("k", &t);
        let a = kb.sbuf("a", DType::F32, 4, &[8]).unwrap();
        let b = kb.sbuf("b", DType::F32, 4, &[6]).unwrap();
        assert!(matches!(
            root(kb.tensor_copy(&a, &b)),
            Err(KernelError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            root(kb.memset(a.view(0..5, &[]), 0.0)),
            Err(KernelError::BadOperand { .. })
        ));
        assert!(matches!(
            root(kb.memset(a.cols(0..4, 7..20), 0.0)),
            Err(KernelError::BadOperand { .. })
        ));
        assert!(matches!(
            root(kb.memset(a.ap(0..4, 4, &[(1, 5)]), 0.0)),
            Err(KernelError::BadOperand { .. })
        ));
        assert!(matches!(
            root(kb.tensor_copy_on(Engine::Pe, &a, &a)),
            Err(KernelError::WrongEngine { .. })
        ));
        assert!(matches!(
            root(kb.sbuf("big", DType::F32, 129, &[1])),
            Err(KernelError::BadAllocation { .. })
        ));
        assert!(matches!(
            root(kb.sbuf("big", DType::F32, 1, &[usize::MAX, 4])),
            Err(KernelError::BadAllocation { .. })
        ));
        assert!(matches!(
            root(kb.input("x", DType::F32, &[0])),
            Err(KernelError::BadAllocation { .. })
        ));
        let x = kb.input("x", DType::F32, &[4, 8]).unwrap();
        assert!(matches!(
            root(kb.input("x", DType::F32, &[1])),
            Err(KernelError::DuplicateTensor(_))
        ));
        assert!(matches!(
            root(kb.dma_copy(&a, x.rows(0..9))),
            Err(KernelError::BadOperand { .. })
        ));
        assert!(matches!(
            root(kb.dma_copy(&a, x.block(usize::MAX..usize::MAX, 0..1))),
            Err(KernelError::BadOperand { .. })
        ));
        let view = a.all();
        kb.free(a).unwrap();
        assert!(matches!(
            root(kb.memset(&view, 0.0)),
            Err(KernelError::UseAfterFree { .. })
        ));
    }

    #[test]
    fn finish_frees_what_is_live() {
        let t = target();
        let mut kb = KernelBuilder::new("k", &t);
        let a = kb.sbuf("a", DType::F32, 4, &[8]).unwrap();
        let _b = kb.psum("b", DType::F32, 4, &[8]).unwrap();
        kb.free(a).unwrap();
        let p = kb.finish().unwrap();
        let ops: Vec<&str> = p.insts.iter().map(|i| i.op.opcode()).collect();
        assert_eq!(ops, ["alloc", "alloc", "free", "free"]);
        assert_eq!(p.insts[3].op, Op::Free { buf: BufId(1) });
    }
}
