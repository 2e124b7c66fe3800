//! Host placement of SBUF and PSUM buffers and of scratch tensors: where the jit keeps each in
//! host memory.
//!
//! The compiler places buffers with a rotating cursor (next fit), so that a buffer freed a
//! moment ago is not overwritten at once and the chip's engines can overlap independent tiles,
//! and gives every scratch tensor its own stretch of the HBM arena. On the host that spreads a
//! model's tiles over all of SBUF (28 MiB on trn2) and its activations over the arena (45 MB for
//! ResNet-50), and nearly everything a kernel writes lands on memory last touched long ago: out
//! of the processor's caches, each cache line fetched from memory before it is written (an
//! activation over 128 rows of 49 values measured 1.7 us with its rows in cache, 11.7 us with
//! them cold).
//!
//! So planning gives every buffer and scratch tensor (every owner) a host offset of its own
//! choosing, first fit from the lowest address over the owners' lifetimes in the jit's run
//! order (the span from its first to its last access): space a tile has just left is the next
//! tile's, and stays in cache. A buffer's partitions stay as placed; only the byte offset within
//! each partition row changes.
//!
//! That is only the same program when owners do not share bytes on purpose. Walking the run
//! order with the last writer of every byte (by owner), every read must see bytes its own owner
//! wrote last: a read of bytes another owner wrote (two buffers placed over each other while
//! both are in use, as a program may do to reinterpret data) or of bytes nothing wrote keeps
//! the program's placements in that memory (SBUF, PSUM or the arena). Given that, each owner's
//! bytes on the host are its own from its first access to its last, so every read returns what
//! it would have returned at the program's addresses.

use super::JitError;
use super::clear::runs;
use super::forward::{OTHER, Writers, assign, writers};
use super::memory::Loc;
use super::plan::{Raw, Resolver};
use std::collections::HashMap;
use std::rc::Rc;
use tessera_ir::program::Access;
use tessera_ir::{DmaOperand, MachineProgram, Op, Space, TargetSpec};

/// `program` with its SBUF and PSUM buffers and its scratch tensors at host offsets, and how
/// many buffers and how many scratch tensors moved; `None` when nothing moves. Each of the
/// three memories moves only when no read in it sees another owner's bytes (see the module
/// docs). `resolvers` are the program's own, by queue and index; `order` is the run order.
pub(crate) fn host_program(
    program: &MachineProgram,
    target: &TargetSpec,
    order: &[(usize, usize)],
    resolvers: &[Vec<Resolver<'_>>],
) -> Result<Option<(MachineProgram, Moved)>, JitError> {
    // Owners: buffer `b` is `b`, scratch tensor `t` is `buffers + t`.
    let n = program.buffers.len();
    let owners = n + program.tensors.len();
    // Each owner's first and last position in the run order.
    let mut span: Vec<Option<(usize, usize)>> = vec![None; owners];
    // Per memory, each partition's last writers (the arena is one partition); partitions
    // written alike share one map.
    let mut last: HashMap<Loc, Vec<Option<Rc<Writers>>>> = HashMap::new();
    // Memories where some read sees bytes of another owner or of none.
    let mut pinned: Vec<Loc> = Vec::new();
    for (at, &(q, i)) in order.iter().enumerate() {
        let (Some(inst), Some(res)) = (
            program.queues.get(q).and_then(|s| s.insts.get(i)),
            resolvers.get(q).and_then(|s| s.get(i)),
        ) else {
            continue;
        };
        let mut accesses: Vec<(usize, Raw, bool, Access)> = Vec::new();
        for operand in inst.op.tile_operands() {
            let raw = res.tile(operand.role, operand.tile)?;
            accesses.push((operand.tile.buf.0 as usize, raw, true, operand.access));
        }
        if let Op::DmaCopy { dst, src } = &inst.op {
            for (role, end, access) in [("src", src, Access::Read), ("dst", dst, Access::Write)] {
                if let DmaOperand::Hbm(h) = end {
                    let raw = res.hbm(role, h)?;
                    if raw.loc == Loc::Arena {
                        accesses.push((n + h.tensor.0 as usize, raw, false, access));
                    }
                }
            }
        }
        for (owner, _, _, _) in &accesses {
            if let Some(s) = span.get_mut(*owner) {
                *s = Some(s.map_or((at, at), |(first, _)| (first, at)));
            }
        }
        // Reads before writes: an instruction reading and writing one owner reads its bytes
        // as they were.
        for (owner, raw, tile, _) in accesses.iter().filter(|a| a.3 == Access::Read) {
            if raw.rows * raw.free == 0 || pinned.contains(&raw.loc) {
                continue;
            }
            let spans = runs(raw, *tile).unwrap_or_else(|| vec![raw.extent]);
            let own = |m: &Writers| {
                spans.iter().all(|&(lo, hi)| {
                    let (ws, whole) = writers(m, lo, hi);
                    whole && ws.iter().all(|&w| w == *owner as u32)
                })
            };
            let seen = last
                .get(&raw.loc)
                .is_some_and(|rows| groups(rows, raw.parts).iter().all(|m| m.is_some_and(own)));
            if !seen {
                pinned.push(raw.loc);
            }
        }
        for (owner, raw, tile, _) in accesses.iter().filter(|a| a.3 == Access::Write) {
            if raw.rows * raw.free == 0 || pinned.contains(&raw.loc) {
                continue;
            }
            // A write not followed byte by byte marks its whole extent as written by no one
            // owner, so a later read of any of it pins the memory.
            let (spans, who) = match runs(raw, *tile) {
                Some(spans) => (spans, *owner as u32),
                None => (vec![raw.extent], OTHER),
            };
            write(last.entry(raw.loc).or_default(), raw.parts, &spans, who);
        }
    }
    // First fit from the lowest offset, over the lifetimes in run order.
    let mut host = program.clone();
    let mut by_start: Vec<usize> = (0..owners).filter(|&o| span[o].is_some()).collect();
    by_start.sort_by_key(|&o| span[o].map(|s| s.0));
    let loc_of = |o: usize| match program.buffers.get(o) {
        Some(b) if b.space == Space::Sbuf => Loc::Sbuf,
        Some(_) => Loc::Psum,
        None => Loc::Arena,
    };
    let bytes_of = |o: usize| match program.buffers.get(o) {
        Some(b) => b.bytes_per_partition(),
        None => program
            .tensors
            .get(o - n)
            .map_or(0, |t| t.elems().saturating_mul(t.dtype.size_bytes() as u64)),
    };
    let mut pools = [
        (Loc::Sbuf, FirstFit::new(target.sbuf_partition_bytes, 64)),
        (
            Loc::Psum,
            FirstFit::new(target.psum_partition_bytes, target.psum_bank_bytes.max(64)),
        ),
        (Loc::Arena, FirstFit::new(program.scratch_bytes, 64)),
    ];
    // Live owners: (last position, owner, offset).
    let mut live: Vec<(usize, usize, u64)> = Vec::new();
    let mut moved = Moved::default();
    for o in by_start {
        let (Some((first, end)), loc) = (span[o], loc_of(o)) else {
            continue;
        };
        if pinned.contains(&loc) {
            continue;
        }
        live.retain(|&(until, other, offset)| {
            let done = until < first;
            if done && let Some(pool) = pools.iter_mut().find(|p| p.0 == loc_of(other)) {
                pool.1.release(offset, bytes_of(other));
            }
            !done
        });
        let Some(pool) = pools.iter_mut().find(|p| p.0 == loc) else {
            continue;
        };
        let Some(offset) = pool.1.alloc(bytes_of(o)) else {
            // Fragmented beyond the memory's size: the program keeps its placements.
            return Ok(None);
        };
        let (old, count) = match host.buffers.get_mut(o) {
            Some(b) => (
                b.placement
                    .as_mut()
                    .map(|p| std::mem::replace(&mut p.byte_offset, offset)),
                &mut moved.buffers,
            ),
            None => (
                host.hbm_offsets
                    .get_mut(o - n)
                    .and_then(|h| h.replace(offset)),
                &mut moved.scratch,
            ),
        };
        *count += u64::from(old != Some(offset));
        live.push((end, o, offset));
    }
    Ok((moved.buffers + moved.scratch > 0).then_some((host, moved)))
}

/// How many owners [`host_program`] moved.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Moved {
    pub buffers: u64,
    pub scratch: u64,
}

/// Records that `who` last wrote bytes `spans` of partitions `parts` of one memory.
pub(crate) fn write(
    rows: &mut Vec<Option<Rc<Writers>>>,
    parts: (u64, u64),
    spans: &[(u64, u64)],
    who: u32,
) {
    let (p0, p1) = (parts.0 as usize, parts.1 as usize);
    if rows.len() < p1 {
        rows.resize(p1, None);
    }
    // Partitions sharing one map get one new map.
    let mut p = p0;
    while p < p1 {
        let mut q = p + 1;
        while q < p1 && same(&rows[q], &rows[p]) {
            q += 1;
        }
        // Taken out of the group's rows: a map no other partition shares is updated in place
        // rather than copied.
        let old = rows[p].take();
        for row in &mut rows[p + 1..q] {
            *row = None;
        }
        let mut m = match old {
            Some(rc) => Rc::try_unwrap(rc).unwrap_or_else(|rc| (*rc).clone()),
            None => Writers::new(),
        };
        for &(lo, hi) in spans {
            assign(&mut m, lo, hi, who);
        }
        let m = Some(Rc::new(m));
        for row in &mut rows[p..q] {
            row.clone_from(&m);
        }
        p = q;
    }
}

/// Whether two partitions' maps are one shared map (or both absent).
fn same(a: &Option<Rc<Writers>>, b: &Option<Rc<Writers>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Rc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// The distinct maps of partitions `parts` (consecutive partitions sharing one map give it
/// once; `None` for a partition never written).
pub(crate) fn groups(rows: &[Option<Rc<Writers>>], parts: (u64, u64)) -> Vec<Option<&Writers>> {
    let mut out = Vec::new();
    let mut prev: Option<&Option<Rc<Writers>>> = None;
    for p in parts.0 as usize..parts.1 as usize {
        let row = rows.get(p).unwrap_or(&None);
        if prev.is_some_and(|q| same(q, row)) {
            continue;
        }
        prev = Some(row);
        out.push(row.as_deref());
    }
    out
}

/// Byte ranges of a partition row, handed out first fit from offset 0.
struct FirstFit {
    capacity: u64,
    align: u64,
    /// Free ranges `(start, end)`, sorted and coalesced.
    free: Vec<(u64, u64)>,
}

impl FirstFit {
    fn new(capacity: u64, align: u64) -> FirstFit {
        FirstFit {
            capacity,
            align,
            free: vec![(0, capacity)],
        }
    }

    fn rounded(&self, size: u64) -> u64 {
        size.max(1).div_ceil(self.align) * self.align
    }

    fn alloc(&mut self, size: u64) -> Option<u64> {
        let size = self.rounded(size);
        let k = self.free.iter().position(|&(s, e)| e - s >= size)?;
        let (s, e) = self.free[k];
        if e - s == size {
            self.free.remove(k);
        } else {
            self.free[k].0 = s + size;
        }
        Some(s)
    }

    fn release(&mut self, start: u64, size: u64) {
        let end = (start + self.rounded(size)).min(self.capacity);
        let k = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(k, (start, end));
        // Coalesce with the neighbours.
        if k + 1 < self.free.len() && self.free[k].1 == self.free[k + 1].0 {
            self.free[k].1 = self.free[k + 1].1;
            self.free.remove(k + 1);
        }
        if k > 0 && self.free[k - 1].1 == self.free[k].0 {
            self.free[k - 1].1 = self.free[k].1;
            self.free.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_reuses_the_lowest_freed_space() {
        let mut f = FirstFit::new(1024, 64);
        assert_eq!(f.alloc(100), Some(0));
        assert_eq!(f.alloc(64), Some(128));
        assert_eq!(f.alloc(64), Some(192));
        f.release(0, 100);
        // The freed block at 0 is the first fit again, before the space beyond 256.
        assert_eq!(f.alloc(10), Some(0));
        assert_eq!(f.alloc(64), Some(64));
        f.release(128, 64);
        f.release(192, 64);
        f.release(64, 64);
        // Released neighbours coalesce: 192 bytes from 64 are one range.
        assert_eq!(f.alloc(192), Some(64));
        assert_eq!(f.alloc(1024), None);
        assert_eq!(f.alloc(768), Some(256));
        assert_eq!(f.alloc(1), None);
    }
}
