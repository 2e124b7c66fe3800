//! The verifier: every hardware rule of the architecture document, checked per instruction.
//!
//! [`Verifier`] checks one instruction at a time against the buffers live at that point, so the
//! kernel builder can reject an instruction the moment it is recorded; [`verify`] runs it over a
//! whole program and [`verify_all`] collects one error per broken instruction.
//! [`Verifier::all_live`] checks the instructions of a machine program, whose buffers are placed
//! for the whole run, with the same per-instruction rules. Errors name the instruction
//! (`nc_matmul #12`), the operand role and buffer (`moving %x`), the values and the limit, and
//! carry the [`Rule`] broken for tools and tests.
//!
//! Rules are checked in an order where later ones can trust earlier ones: ids and lifetimes,
//! then each operand's bounds (`operands.rs`), then engines and memory spaces, then the
//! per-instruction shape rules (`shapes.rs`). The code map:
//! - `mod.rs`: the API, buffer lifetimes, placement and capacity at `alloc`.
//! - `operands.rs`: tile and HBM views (bounds, partition starts, which engine may touch what).
//! - `shapes.rs`: shape, dtype and limit rules of each opcode (matmul, transpose, ...).
//! - `view.rs`: overflow-proof arithmetic, so no program can make the verifier panic.

mod operands;
mod shapes;
mod view;

use crate::access::BufId;
use crate::isa::Op;
use crate::program::{Buffer, HbmTensor, Inst, SourceLoc, Space, TileProgram};
use crate::target::TargetSpec;
use std::fmt;

/// The rule an error breaks (stable, for tests and tooling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// A buffer or tensor id that is not in the program.
    UnknownId,
    /// `alloc` of a buffer that is live or was allocated before (each buffer is allocated once).
    AlreadyAllocated,
    /// A use or `free` of a buffer that is not live (before its `alloc` or after its `free`).
    NotLive,
    /// A buffer's partition count is not in `1..=partitions` of the target.
    BufferPartitions,
    /// A placed buffer does not fit in its memory (partitions or bytes).
    PlacementOutOfRange,
    /// A placed PSUM buffer does not start on a bank boundary.
    PsumBankAlignment,
    /// Two live placed buffers share memory.
    OverlappingAllocation,
    /// The live SBUF buffers need more bytes per partition than SBUF has.
    SbufCapacity,
    /// The live PSUM buffers need more banks than PSUM has.
    PsumCapacity,
    /// A tile view has no partitions or reaches past its buffer's partitions.
    TilePartitions,
    /// An access pattern has more dimensions than the hardware walks.
    TooManyDims,
    /// An access pattern with a dimension of size 0.
    EmptyView,
    /// An access pattern touches elements outside its buffer or tensor.
    OutOfBounds,
    /// A written view addresses one element twice.
    OverlappingWrite,
    /// A compute-engine view starts at a partition its partition count may not start at.
    PartitionStart,
    /// A write to an `input` tensor (inputs are read-only).
    WriteToInput,
    /// The instruction runs on an engine that cannot execute it.
    WrongEngine,
    /// An operand lives in a memory (SBUF/PSUM) its engine or opcode cannot use there.
    WrongSpace,
    /// Operand shapes (partitions, free elements, dims, axes) do not fit together.
    ShapeMismatch,
    /// An operand has a dtype the instruction does not accept.
    WrongDType,
    /// `nc_matmul` beyond the tensor engine's K, M or N limit.
    MatmulLimit,
    /// An `nc_matmul` result crosses a PSUM bank boundary.
    PsumBankCrossing,
    /// `nc_transpose` input beyond the tensor engine's size.
    TransposeLimit,
}

impl Rule {
    /// The rule in a few words, for tables and tooling.
    pub fn summary(self) -> &'static str {
        match self {
            Rule::UnknownId => "ids refer to the program's buffers and tensors",
            Rule::AlreadyAllocated => "each buffer is allocated once",
            Rule::NotLive => "buffers are used and freed only while live",
            Rule::BufferPartitions => "buffers have between one partition and all of them",
            Rule::PlacementOutOfRange => "placed buffers fit in their memory",
            Rule::PsumBankAlignment => "placed PSUM buffers start on a bank boundary",
            Rule::OverlappingAllocation => "live placed buffers do not overlap",
            Rule::SbufCapacity => "live SBUF buffers fit in SBUF",
            Rule::PsumCapacity => "live PSUM buffers fit in the PSUM banks",
            Rule::TilePartitions => "tile views lie within their buffer's partitions",
            Rule::TooManyDims => "access patterns have at most the dimensions the hardware walks",
            Rule::EmptyView => "access patterns have no empty dimension",
            Rule::OutOfBounds => "access patterns stay within their buffer or tensor",
            Rule::OverlappingWrite => "a written view addresses each element once",
            Rule::PartitionStart => "compute-engine views start at an allowed partition",
            Rule::WriteToInput => "input tensors are read-only",
            Rule::WrongEngine => "each opcode runs on its engines",
            Rule::WrongSpace => "engines touch only the memories they can reach",
            Rule::ShapeMismatch => "operand shapes agree",
            Rule::WrongDType => "operands have the dtypes the instruction accepts",
            Rule::MatmulLimit => "nc_matmul stays within K, M and N limits",
            Rule::PsumBankCrossing => "a matmul result stays within one PSUM bank",
            Rule::TransposeLimit => "nc_transpose inputs fit the tensor engine",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.summary())
    }
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

/// A buffer that breaks a rule on its own (see [`Verifier::all_live`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("buffer #{}: {detail}", buffer.0)]
pub struct BufferError {
    /// The buffer.
    pub buffer: BufId,
    /// The rule broken.
    pub rule: Rule,
    /// What is wrong, naming the buffer.
    pub detail: String,
}

/// A broken rule before it is tied to an instruction: what the checks in this module return.
#[derive(Debug)]
pub(crate) struct Fail {
    rule: Rule,
    detail: String,
}

/// Shorthand for a failed check.
fn fail<T>(rule: Rule, detail: String) -> Result<T, Fail> {
    Err(Fail { rule, detail })
}

/// Where a buffer is in its life, as of the instructions checked so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Life {
    #[default]
    Unallocated,
    Live {
        alloc: usize,
    },
    Freed {
        alloc: usize,
        free: usize,
    },
}

/// Checks instructions one by one, tracking which buffers are live.
#[derive(Debug)]
pub struct Verifier<'t> {
    target: &'t TargetSpec,
    /// Indexed by buffer id; grows as the program's buffer list grows (the kernel builder adds
    /// buffers while it records).
    lives: Vec<Life>,
}

impl<'t> Verifier<'t> {
    /// A verifier for `target` with nothing allocated.
    pub fn new(target: &'t TargetSpec) -> Self {
        Verifier {
            target,
            lives: Vec::new(),
        }
    }

    /// A verifier for a program whose buffers are placed for its whole run, as in a machine
    /// program: every buffer counts as live, so each instruction gets the same bounds, engine,
    /// space and shape checks as in a tile program.
    ///
    /// Each buffer is first checked on its own as an `alloc` would (partition count, placement
    /// inside its memory, PSUM bank alignment). The checks an `alloc` makes against the other
    /// live buffers (overlap, capacity) are skipped: buffers whose lifetimes are disjoint may
    /// share addresses, and only the schedule knows which lifetimes those are.
    pub fn all_live(target: &'t TargetSpec, buffers: &[Buffer]) -> Result<Self, BufferError> {
        for (i, b) in buffers.iter().enumerate() {
            check_buffer_alone(target, b).map_err(|Fail { rule, detail }| BufferError {
                buffer: BufId(i as u32),
                rule,
                detail,
            })?;
        }
        Ok(Verifier {
            target,
            lives: vec![Life::Live { alloc: 0 }; buffers.len()],
        })
    }

    /// Checks instruction `index` against the buffers live now, and records its effect on
    /// liveness. An instruction that fails a check leaves the state unchanged, so a caller that
    /// drops the rejected instruction can carry on.
    pub fn check(
        &mut self,
        tensors: &[HbmTensor],
        buffers: &[Buffer],
        index: usize,
        inst: &Inst,
    ) -> Result<(), VerifyError> {
        self.check_op(tensors, buffers, index, &inst.op)
            .map_err(|e| VerifyError {
                loc: inst.loc.clone(),
                ..e
            })?;
        self.record(buffers, index, &inst.op);
        Ok(())
    }

    /// Checks one instruction, numbered `index` in messages, against the buffers live now,
    /// without recording its effect on liveness (with [`Verifier::all_live`], how a machine
    /// program's instructions are checked).
    pub fn check_op(
        &self,
        tensors: &[HbmTensor],
        buffers: &[Buffer],
        index: usize,
        op: &Op,
    ) -> Result<(), VerifyError> {
        let result = match op {
            Op::Alloc { buf } => self.check_alloc(buffers, *buf),
            Op::Free { buf } => self.live_buffer(buffers, "", *buf).map(|_| ()),
            _ => self.check_rules(tensors, buffers, op),
        };
        result.map_err(|Fail { rule, detail }| VerifyError {
            index,
            opcode: op.opcode(),
            rule,
            detail,
            loc: None,
        })
    }

    /// Applies an instruction's effect on liveness without checking it.
    fn record(&mut self, buffers: &[Buffer], index: usize, op: &Op) {
        let (Op::Alloc { buf } | Op::Free { buf }) = op else {
            return;
        };
        let id = buf.0 as usize;
        if id >= buffers.len() {
            return;
        }
        if self.lives.len() <= id {
            self.lives.resize(id + 1, Life::Unallocated);
        }
        let life = &mut self.lives[id];
        *life = match (op, *life) {
            (Op::Alloc { .. }, _) => Life::Live { alloc: index },
            (Op::Free { .. }, Life::Live { alloc }) => Life::Freed { alloc, free: index },
            (_, unchanged) => unchanged,
        };
    }

    fn life(&self, id: BufId) -> Life {
        self.lives.get(id.0 as usize).copied().unwrap_or_default()
    }

    /// The buffer `id`, if it exists and is live; `role` names the operand in the message
    /// (empty for `free`, whose only operand is the buffer).
    fn live_buffer<'b>(
        &self,
        buffers: &'b [Buffer],
        role: &str,
        id: BufId,
    ) -> Result<&'b Buffer, Fail> {
        let b = buffer(buffers, id)?;
        let who = if role.is_empty() {
            format!("%{}", b.name)
        } else {
            format!("{role} %{}", b.name)
        };
        match self.life(id) {
            Life::Live { .. } => Ok(b),
            Life::Unallocated => fail(
                Rule::NotLive,
                format!("{who} is not live: it is used before its alloc"),
            ),
            Life::Freed { free, .. } => fail(
                Rule::NotLive,
                format!("{who} is not live: it was freed at #{free}"),
            ),
        }
    }

    /// Buffers live now, with their ids.
    fn live<'b>(&self, buffers: &'b [Buffer]) -> impl Iterator<Item = &'b Buffer> {
        self.lives
            .iter()
            .zip(buffers)
            .filter(|(l, _)| matches!(l, Life::Live { .. }))
            .map(|(_, b)| b)
    }

    fn check_alloc(&self, buffers: &[Buffer], id: BufId) -> Result<(), Fail> {
        let b = buffer(buffers, id)?;
        let t = self.target;
        match self.life(id) {
            Life::Unallocated => {}
            Life::Live { alloc } => {
                return fail(
                    Rule::AlreadyAllocated,
                    format!("%{} is already allocated (live since #{alloc})", b.name),
                );
            }
            Life::Freed { alloc, free } => {
                return fail(
                    Rule::AlreadyAllocated,
                    format!(
                        "%{} was already allocated at #{alloc} and freed at #{free}; \
                         each buffer is allocated once",
                        b.name
                    ),
                );
            }
        }
        check_buffer_alone(t, b)?;
        let bytes = view::buffer_bytes(b);
        if let Some(p) = b.placement {
            let end = u64::from(p.partition) + u64::from(b.partitions);
            let byte_end = p.byte_offset.saturating_add(bytes);
            for other in self.live(buffers).filter(|o| o.space == b.space) {
                let Some(q) = other.placement else { continue };
                let parts = ranges_meet(
                    u64::from(p.partition),
                    end,
                    u64::from(q.partition),
                    u64::from(q.partition) + u64::from(other.partitions),
                );
                let other_end = q.byte_offset.saturating_add(view::buffer_bytes(other));
                if parts && ranges_meet(p.byte_offset, byte_end, q.byte_offset, other_end) {
                    return fail(
                        Rule::OverlappingAllocation,
                        format!(
                            "%{} (partitions {}..{end}, bytes {}..{byte_end}) overlaps live %{} \
                             (partitions {}..{}, bytes {}..{other_end}) in {}",
                            b.name,
                            p.partition,
                            p.byte_offset,
                            other.name,
                            q.partition,
                            u64::from(q.partition) + u64::from(other.partitions),
                            q.byte_offset,
                            space_name(b.space)
                        ),
                    );
                }
            }
        }
        match b.space {
            Space::Sbuf => self.check_sbuf_capacity(buffers, b, bytes),
            Space::Psum => self.check_psum_capacity(buffers, b, bytes),
        }
    }

    fn check_sbuf_capacity(&self, buffers: &[Buffer], b: &Buffer, bytes: u64) -> Result<(), Fail> {
        let capacity = self.target.sbuf_partition_bytes;
        let mut live: Vec<(u64, &str)> = self
            .live(buffers)
            .filter(|o| o.space == Space::Sbuf)
            .map(|o| (view::buffer_bytes(o), o.name.as_str()))
            .collect();
        let needed = live
            .iter()
            .fold(bytes, |sum, (n, _)| sum.saturating_add(*n));
        if needed <= capacity {
            return Ok(());
        }
        live.push((bytes, &b.name));
        fail(
            Rule::SbufCapacity,
            format!(
                "SBUF over capacity: allocating %{} ({bytes} bytes per partition) needs {needed} \
                 bytes per partition of live SBUF, capacity {capacity} (biggest live: {})",
                b.name,
                biggest(live, "")
            ),
        )
    }

    fn check_psum_capacity(&self, buffers: &[Buffer], b: &Buffer, bytes: u64) -> Result<(), Fail> {
        let t = self.target;
        // A bank belongs to one accumulation group at a time, so buffers occupy whole banks.
        let banks_of = |n: u64| view::div_ceil(n, t.psum_bank_bytes);
        let mut live: Vec<(u64, &str)> = self
            .live(buffers)
            .filter(|o| o.space == Space::Psum)
            .map(|o| (banks_of(view::buffer_bytes(o)), o.name.as_str()))
            .collect();
        let banks = banks_of(bytes);
        let needed = live
            .iter()
            .fold(banks, |sum, (n, _)| sum.saturating_add(*n));
        if needed <= u64::from(t.psum_banks) {
            return Ok(());
        }
        live.push((banks, &b.name));
        fail(
            Rule::PsumCapacity,
            format!(
                "PSUM over capacity: allocating %{} ({bytes} bytes per partition = {banks} banks \
                 of {}) needs {needed} banks of live PSUM, capacity {} (biggest live: {})",
                b.name,
                t.psum_bank_bytes,
                t.psum_banks,
                biggest(live, " banks")
            ),
        )
    }

    /// Every rule of a compute or DMA instruction, in an order where each step can trust the
    /// previous ones: ids, liveness and bounds; engine; partition starts; spaces; shapes.
    fn check_rules(&self, tensors: &[HbmTensor], buffers: &[Buffer], op: &Op) -> Result<(), Fail> {
        let operands = op.tile_operands();
        for o in &operands {
            let b = self.live_buffer(buffers, o.role, o.tile.buf)?;
            operands::check_tile(self.target, o, b)?;
        }
        operands::check_hbm_ends(self.target, tensors, op)?;
        let Some(engine) = op.engine() else {
            return Ok(());
        };
        if !op.allowed_engines().contains(&engine) {
            let allowed: Vec<&str> = op.allowed_engines().iter().map(|e| e.name()).collect();
            return fail(
                Rule::WrongEngine,
                format!(
                    "{} cannot run on {}; it runs on {}",
                    op.opcode(),
                    engine.name(),
                    one_of(&allowed)
                ),
            );
        }
        for o in &operands {
            operands::check_partition_start(self.target, engine, o, buffer(buffers, o.tile.buf)?)?;
        }
        operands::check_spaces(op, engine, &operands, buffers)?;
        shapes::check(self.target, tensors, buffers, op)
    }
}

/// The rules one buffer must satisfy on its own, whatever else is live: a partition count the
/// target has, a placement inside its memory, and PSUM buffers on a bank boundary.
fn check_buffer_alone(t: &TargetSpec, b: &Buffer) -> Result<(), Fail> {
    if b.partitions == 0 || b.partitions > t.partitions {
        return fail(
            Rule::BufferPartitions,
            format!(
                "%{} has {} partitions; a buffer has 1 to {} partitions",
                b.name, b.partitions, t.partitions
            ),
        );
    }
    let bytes = view::buffer_bytes(b);
    let capacity = space_capacity(t, b.space);
    if let Some(p) = b.placement {
        let end = u64::from(p.partition) + u64::from(b.partitions);
        if end > u64::from(t.partitions) {
            return fail(
                Rule::PlacementOutOfRange,
                format!(
                    "%{} is placed at partitions {}..{end}, past the {} partitions of {}",
                    b.name,
                    p.partition,
                    t.partitions,
                    space_name(b.space)
                ),
            );
        }
        let byte_end = p.byte_offset.saturating_add(bytes);
        if byte_end > capacity {
            return fail(
                Rule::PlacementOutOfRange,
                format!(
                    "%{} is placed at bytes {}..{byte_end} of each partition, past the {capacity} \
                     bytes of {}",
                    b.name,
                    p.byte_offset,
                    space_name(b.space)
                ),
            );
        }
        if b.space == Space::Psum && p.byte_offset.checked_rem(t.psum_bank_bytes) != Some(0) {
            return fail(
                Rule::PsumBankAlignment,
                format!(
                    "%{} is placed at PSUM byte {}, not a multiple of the {}-byte bank",
                    b.name, p.byte_offset, t.psum_bank_bytes
                ),
            );
        }
    }
    Ok(())
}

/// The buffer `id`, or an error naming the id when the program has no such buffer.
fn buffer(buffers: &[Buffer], id: BufId) -> Result<&Buffer, Fail> {
    buffers.get(id.0 as usize).map_or_else(
        || {
            fail(
                Rule::UnknownId,
                format!(
                    "buffer id {} is out of range (the program has {})",
                    id.0,
                    buffers.len()
                ),
            )
        },
        Ok,
    )
}

fn space_capacity(t: &TargetSpec, space: Space) -> u64 {
    match space {
        Space::Sbuf => t.sbuf_partition_bytes,
        Space::Psum => t.psum_partition_bytes,
    }
}

fn space_name(space: Space) -> &'static str {
    match space {
        Space::Sbuf => "SBUF",
        Space::Psum => "PSUM",
    }
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// True if the half-open ranges `a0..a1` and `b0..b1` share a point.
fn ranges_meet(a0: u64, a1: u64, b0: u64, b1: u64) -> bool {
    a0 < b1 && b0 < a1
}

/// The three biggest `(size, name)` entries, biggest first: `%a 4096, %b 2048`.
fn biggest(mut sizes: Vec<(u64, &str)>, unit: &str) -> String {
    sizes.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(y.1)));
    let shown: Vec<String> = sizes
        .iter()
        .take(3)
        .map(|(n, name)| format!("%{name} {n}{unit}"))
        .collect();
    shown.join(", ")
}

/// Checks a whole program; the first broken rule is returned.
pub fn verify(program: &TileProgram, target: &TargetSpec) -> Result<(), VerifyError> {
    let mut v = Verifier::new(target);
    for (i, inst) in program.insts.iter().enumerate() {
        v.check(&program.tensors, &program.buffers, i, inst)?;
    }
    Ok(())
}

/// Checks a whole program and returns every broken instruction's first error, in program order.
///
/// A failed instruction's effect on liveness is still applied, so one rejected `alloc` does not
/// turn every later use of that buffer into a second error.
pub fn verify_all(program: &TileProgram, target: &TargetSpec) -> Vec<VerifyError> {
    let mut v = Verifier::new(target);
    let mut errors = Vec::new();
    for (i, inst) in program.insts.iter().enumerate() {
        if let Err(e) = v.check(&program.tensors, &program.buffers, i, inst) {
            errors.push(e);
            v.record(&program.buffers, i, &inst.op);
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn biggest_lists_three_largest_first() {
        let s = biggest(vec![(1, "a"), (9, "b"), (5, "c"), (7, "d")], " banks");
        assert_eq!(s, "%b 9 banks, %d 7 banks, %c 5 banks");
    }

    #[test]
    fn lists_read_as_prose() {
        assert_eq!(one_of(&["pe"]), "pe");
        assert_eq!(one_of(&["dve", "pool"]), "dve or pool");
        assert_eq!(one_of(&["dve", "act", "pool"]), "dve, act or pool");
    }

    #[test]
    fn all_live_checks_uses_without_allocs_and_each_buffer_alone() {
        use crate::access::{Dim, TileAccess};
        use crate::dtype::DType;
        use crate::program::Placement;
        let t = TargetSpec::trn2();
        let b = |name: &str, partitions, offset| Buffer {
            name: name.into(),
            space: Space::Sbuf,
            dtype: DType::F32,
            partitions,
            free_shape: vec![8],
            placement: Some(Placement {
                partition: 0,
                byte_offset: offset,
            }),
        };
        // Same address: fine, the two may have disjoint lifetimes.
        let buffers = [b("a", 4, 0), b("b", 4, 0)];
        let v = Verifier::all_live(&t, &buffers).unwrap();
        let tile = |buf, n| TileAccess {
            buf: BufId(buf),
            start_partition: 0,
            partitions: 4,
            offset: 0,
            dims: vec![Dim::new(1, n)],
        };
        let copy = |n| Op::TensorCopy {
            engine: crate::isa::Engine::Dve,
            dst: tile(1, n),
            src: tile(0, n),
        };
        assert_eq!(v.check_op(&[], &buffers, 3, &copy(8)), Ok(()));
        let e = v.check_op(&[], &buffers, 3, &copy(9)).unwrap_err();
        assert_eq!((e.index, e.rule), (3, Rule::OutOfBounds));
        let e = Verifier::all_live(&t, &[b("a", 4, 0), b("z", 0, 0)]).unwrap_err();
        assert_eq!((e.buffer, e.rule), (BufId(1), Rule::BufferPartitions));
        assert!(e.to_string().contains("%z has 0 partitions"), "{e}");
    }

    #[test]
    fn half_open_ranges() {
        assert!(ranges_meet(0, 4, 3, 8));
        assert!(!ranges_meet(0, 4, 4, 8));
        assert!(!ranges_meet(0, 0, 0, 8));
    }
}
