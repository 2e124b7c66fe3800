//! The race detector: two accesses to overlapping physical memory, at least one a write, from
//! different instructions that no chain of semaphore waits orders.
//!
//! # Happens-before
//! Instruction `A = (qa, ia)` happens before `B` iff `clock(B)[qa] > ia`, where `clock(B)` is a
//! vector clock with one entry per queue: the join of its queue predecessor's clock with own
//! entry `ib` (program order), and for each wait "queue `w` has completed `c`" the clock of
//! instruction `(w, c - 1)` with entry `w` raised to `c`. Waits only compare monotone completion
//! counts, so this relation is the same for every interleaving: detection is static and does
//! not depend on the seed. The clocks are built in one simulated execution (any order the waits
//! allow; we take the scheduler's first ready queue), keeping only each queue's latest clock and
//! the clocks of instructions some wait refers to.
//!
//! # Finding conflicting pairs
//! Accesses are processed in that execution order, so a new access `B` can only be ordered
//! *after* an earlier one, never before. Each access is a footprint: a memory (SBUF, PSUM, one
//! HBM tensor or the scratch arena), a partition range, and a per-partition byte set kept as
//! sorted disjoint intervals with their bounding range. Per memory, live accesses are indexed in
//! buckets over the byte axis (up to 1024 buckets per memory); `B` is compared only with the
//! live accesses in the buckets its bounding range covers. A candidate pair whose bounding
//! ranges and partitions overlap, one a write, and not ordered, is confirmed on the exact
//! intervals (so interleaved strided views that never share a byte are not reported).
//!
//! # Pruning (why the live sets stay small)
//! When `B` is ordered after `A` and covers `A`'s footprint (`B` dense, its partitions and bytes
//! contain `A`'s) and `B` conflicts with at least everything `A` conflicts with (`B` writes, or
//! both only read), `A` is dropped: any later access `X` racing with `A` races with `B` too.
//! (`X` comes later, so `X` cannot happen before `B`; if `B` happened before `X`, so would `A`.)
//! This is FastTrack's "last write plus reads since" for byte ranges: rewriting a buffer, or
//! re-reading it from the same queue, retires the older accesses. A race is reported iff one
//! exists; the pair named is a racing pair, not necessarily the first one in program order.
//!
//! # Cost
//! Building footprints is linear in the elements of the views (plus a sort for views whose
//! offsets are not increasing). Each access then costs O(buckets spanned + live accesses in
//! them) and O(queues) for its clock, so a program of N instructions over Q queues checks in
//! about O(N (Q + k)) where k is the number of concurrently live overlapping accesses, which
//! pruning keeps near the number of queues touching an address between two covering writes.

use super::memory::{Loc, MachineMemory};
use super::schedule::Scheduler;
use crate::interp::error::{Ctx, InterpError};
use crate::interp::exec::Store;
use crate::interp::memory::View;
use std::collections::{HashMap, HashSet};
use tessera_ir::program::Access as Rw;
use tessera_ir::{DmaOperand, InstRef, MachineInst, MachineProgram, Op, QueueId};

/// Most vector-clock entries the detector keeps (queues x (queues + waited-on instructions)), so
/// an absurd program is an error rather than an allocation failure.
const MAX_CLOCK_ENTRIES: u64 = 1 << 26;

/// Smallest bucket of the byte index; finer buckets only add registrations.
const MIN_BUCKET_BYTES: u64 = 128;

/// Most buckets per memory.
const MAX_BUCKETS: u64 = 1024;

/// Roles whose operand is a per-partition scalar: only element 0 of each partition is read.
const SCALAR_ROLES: [&str; 4] = ["scale", "bias", "operand0", "operand1"];

/// One operand of one instruction, as physical memory.
#[derive(Debug)]
struct Footprint {
    queue: usize,
    index: u32,
    role: &'static str,
    write: bool,
    loc: Loc,
    /// Absolute partitions `[start, end)` (HBM: `[0, 1)`).
    parts: (u64, u64),
    /// Bytes within each partition: sorted, disjoint, non-adjacent `[start, end)` intervals.
    bytes: Box<[(u64, u64)]>,
    alive: bool,
    /// Query number that last visited this access, to visit it once per query.
    stamp: u64,
}

impl Footprint {
    /// Bounding byte range `[lo, hi)`.
    fn bounds(&self) -> (u64, u64) {
        match (self.bytes.first(), self.bytes.last()) {
            (Some(first), Some(last)) => (first.0, last.1),
            _ => (0, 0),
        }
    }

    fn dense(&self) -> bool {
        self.bytes.len() == 1
    }

    fn covers(&self, other: &Footprint) -> bool {
        let ((lo, hi), (olo, ohi)) = (self.bounds(), other.bounds());
        self.dense()
            && self.parts.0 <= other.parts.0
            && other.parts.1 <= self.parts.1
            && lo <= olo
            && ohi <= hi
    }

    fn access(&self) -> String {
        let verb = if self.write { "writes" } else { "reads" };
        format!("{verb} `{}`", self.role)
    }
}

/// The first byte range two sorted interval lists share.
fn first_overlap(a: &[(u64, u64)], b: &[(u64, u64)]) -> Option<(u64, u64)> {
    let (mut i, mut j) = (0, 0);
    while let (Some(&(a0, a1)), Some(&(b0, b1))) = (a.get(i), b.get(j)) {
        let (lo, hi) = (a0.max(b0), a1.min(b1));
        if lo < hi {
            return Some((lo, hi));
        }
        if a1 <= b1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    None
}

/// Live accesses of one memory, bucketed by byte address.
#[derive(Debug)]
struct Index {
    width: u64,
    buckets: Vec<Vec<usize>>,
}

impl Index {
    fn new(extent: u64) -> Index {
        let n = extent.div_ceil(MIN_BUCKET_BYTES).clamp(1, MAX_BUCKETS);
        Index {
            width: extent.div_ceil(n).max(1),
            buckets: vec![Vec::new(); n as usize],
        }
    }

    /// Buckets overlapping `[lo, hi)` (clamped: bytes past the extent share the last bucket).
    fn range(&self, (lo, hi): (u64, u64)) -> std::ops::RangeInclusive<usize> {
        let last = self.buckets.len().saturating_sub(1);
        let at = |b: u64| ((b / self.width) as usize).min(last);
        at(lo)..=at(hi.saturating_sub(1).max(lo))
    }
}

/// A race found: the earlier access (by id) and the memory both touch.
struct Conflict {
    earlier: usize,
    parts: (u64, u64),
    bytes: (u64, u64),
}

/// The shadow state: every access seen, and per memory the index of the live ones.
#[derive(Debug, Default)]
struct Shadow {
    accesses: Vec<Footprint>,
    indexes: HashMap<Loc, Index>,
    stamp: u64,
}

impl Shadow {
    /// Checks `new` (with its instruction's clock) against the live accesses, retires those it
    /// supersedes, and records it.
    fn add(
        &mut self,
        new: Footprint,
        clock: &[u32],
        mem: &MachineMemory<'_>,
    ) -> Result<(), Conflict> {
        self.stamp += 1;
        let stamp = self.stamp;
        let index = self
            .indexes
            .entry(new.loc)
            .or_insert_with(|| Index::new(mem.extent(new.loc)));
        let (lo, hi) = new.bounds();
        let range = index.range((lo, hi));
        let accesses = &mut self.accesses;
        for bucket in index.buckets.get_mut(range.clone()).into_iter().flatten() {
            bucket.retain(|&id| accesses.get(id).is_some_and(|a| a.alive));
            for &id in bucket.iter() {
                let Some(old) = accesses.get_mut(id) else {
                    continue;
                };
                if old.stamp == stamp {
                    continue;
                }
                old.stamp = stamp;
                let (olo, ohi) = old.bounds();
                let parts = (old.parts.0.max(new.parts.0), old.parts.1.min(new.parts.1));
                if parts.0 >= parts.1 || olo >= hi || lo >= ohi {
                    continue;
                }
                let same_inst = old.queue == new.queue && old.index == new.index;
                let ordered = same_inst || clock.get(old.queue).is_some_and(|&c| c > old.index);
                if !ordered {
                    if (old.write || new.write)
                        && let Some(bytes) = first_overlap(&old.bytes, &new.bytes)
                    {
                        return Err(Conflict {
                            earlier: id,
                            parts,
                            bytes,
                        });
                    }
                } else if (new.write || !old.write) && new.covers(old) {
                    old.alive = false;
                    old.bytes = Box::new([]);
                }
            }
        }
        let id = self.accesses.len();
        for bucket in index.buckets.get_mut(range).into_iter().flatten() {
            bucket.push(id);
        }
        self.accesses.push(new);
        Ok(())
    }
}

/// The footprint of a resolved view, or `None` for an empty view.
fn footprint(mem: &MachineMemory<'_>, at: InstRef, view: &View, write: bool) -> Option<Footprint> {
    let placed = mem.placed(view)?;
    let w = view.dtype.size_bytes() as u64;
    let increasing = view.offsets.windows(2).all(|p| p[0] < p[1]);
    let sorted;
    let offsets: &[usize] = if increasing {
        &view.offsets
    } else {
        let mut s = view.offsets.clone();
        s.sort_unstable();
        sorted = s;
        &sorted
    };
    let mut bytes: Vec<(u64, u64)> = Vec::new();
    for &o in offsets {
        let start = (o as u64).checked_mul(w)?.checked_add(placed.byte_base)?;
        let end = start.checked_add(w)?;
        match bytes.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => bytes.push((start, end)),
        }
    }
    if bytes.is_empty() || view.rows == 0 {
        return None;
    }
    Some(Footprint {
        queue: at.queue.0 as usize,
        index: at.index,
        role: view.role,
        write,
        loc: placed.loc,
        parts: (
            placed.first_partition,
            placed.first_partition.checked_add(view.rows as u64)?,
        ),
        bytes: bytes.into_boxed_slice(),
        alive: true,
        stamp: 0,
    })
}

/// Every memory access of one instruction. Operands that do not resolve (out of bounds, unknown
/// ids) are skipped: executing the instruction reports them.
fn footprints(
    program: &MachineProgram,
    mem: &MachineMemory<'_>,
    at: InstRef,
    inst: &MachineInst,
) -> Vec<Footprint> {
    let ctx = Ctx {
        index: at.index as usize,
        opcode: inst.op.opcode(),
        loc: None,
        machine: Some((program, at)),
    };
    let mut out = Vec::new();
    for operand in inst.op.tile_operands() {
        let Ok(mut view) = mem.tile_view(ctx, operand.role, operand.tile) else {
            continue;
        };
        if SCALAR_ROLES.contains(&operand.role) {
            // The engines read element 0 of each partition of a per-partition scalar.
            view.offsets.truncate(1);
        }
        out.extend(footprint(mem, at, &view, operand.access == Rw::Write));
    }
    if let Op::DmaCopy { dst, src } = &inst.op {
        for (role, end, write) in [("src", src, false), ("dst", dst, true)] {
            if let DmaOperand::Hbm(h) = end
                && let Ok(view) = mem.hbm_view(ctx, role, h)
            {
                out.extend(footprint(mem, at, &view, write));
            }
        }
    }
    out
}

fn describe_memory(program: &MachineProgram, loc: Loc, c: &Conflict) -> String {
    let (b0, b1) = c.bytes;
    match loc {
        Loc::Sbuf | Loc::Psum => format!(
            "both touch {} partitions {}..{}, bytes {b0}..{b1}",
            if loc == Loc::Sbuf { "sbuf" } else { "psum" },
            c.parts.0,
            c.parts.1
        ),
        Loc::Arena => format!("both touch the HBM scratch arena, bytes {b0}..{b1}"),
        Loc::Tensor(t) => format!(
            "both touch @{}, bytes {b0}..{b1}",
            program.tensors.get(t).map_or("?", |t| t.name.as_str())
        ),
    }
}

/// Checks that every pair of conflicting accesses is ordered by waits; the first race found is
/// an [`InterpError::Race`]. Instructions that can never run (a deadlock) are not checked; the
/// execution reports the deadlock.
pub(crate) fn check(program: &MachineProgram, mem: &MachineMemory<'_>) -> Result<(), InterpError> {
    let nq = program.queues.len();
    // Instructions some wait refers to: their clocks are kept for the waiters to join.
    let targets: HashSet<(usize, u32)> = program
        .queues
        .iter()
        .flat_map(|q| &q.insts)
        .flat_map(|i| &i.waits)
        .filter(|w| w.count > 0)
        .map(|w| (w.queue.0 as usize, w.count - 1))
        .collect();
    let entries = (nq as u64).saturating_mul((nq as u64).saturating_add(targets.len() as u64));
    if entries > MAX_CLOCK_ENTRIES {
        return Err(InterpError::BadMachineProgram {
            detail: format!(
                "{nq} queues and {} waited-on instructions need {entries} vector-clock entries, \
                 more than the race detector's limit of {MAX_CLOCK_ENTRIES}",
                targets.len()
            ),
        });
    }
    let mut frontier: Vec<Vec<u32>> = vec![vec![0; nq]; nq];
    let mut saved: HashMap<(usize, u32), Vec<u32>> = HashMap::new();
    let mut shadow = Shadow::default();
    let mut sched = Scheduler::new(&program.queues);
    while let Some((q, i)) = sched.take(0) {
        let Some(inst) = program
            .queues
            .get(q)
            .and_then(|qq| qq.insts.get(i as usize))
        else {
            break;
        };
        let mut clock = frontier.get(q).cloned().unwrap_or_default();
        if let Some(own) = clock.get_mut(q) {
            *own = i;
        }
        for w in &inst.waits {
            let wq = w.queue.0 as usize;
            if w.count == 0 {
                continue;
            }
            if let Some(theirs) = saved.get(&(wq, w.count - 1)) {
                for (c, &t) in clock.iter_mut().zip(theirs) {
                    *c = (*c).max(t);
                }
            }
            if let Some(c) = clock.get_mut(wq) {
                *c = (*c).max(w.count);
            }
        }
        let at = InstRef {
            queue: QueueId(q as u32),
            index: i,
        };
        for fp in footprints(program, mem, at, inst) {
            let (loc, second_access) = (fp.loc, fp.access());
            if let Err(c) = shadow.add(fp, &clock, mem) {
                let Some(first) = shadow.accesses.get(c.earlier) else {
                    continue;
                };
                let earlier = InstRef {
                    queue: QueueId(first.queue as u32),
                    index: first.index,
                };
                return Err(InterpError::Race {
                    first: earlier.describe(program),
                    first_access: first.access(),
                    second: at.describe(program),
                    second_access,
                    memory: describe_memory(program, loc, &c),
                });
            }
        }
        if targets.contains(&(q, i)) {
            saved.insert((q, i), clock.clone());
        }
        if let Some(f) = frontier.get_mut(q) {
            *f = clock;
        }
        sched.complete(q);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::first_overlap;

    #[test]
    fn interval_overlap() {
        assert_eq!(first_overlap(&[(0, 4), (8, 12)], &[(4, 8)]), None);
        assert_eq!(first_overlap(&[(0, 4), (8, 12)], &[(5, 9)]), Some((8, 9)));
        assert_eq!(
            first_overlap(&[(0, 100)], &[(10, 20), (30, 40)]),
            Some((10, 20))
        );
        assert_eq!(first_overlap(&[], &[(0, 1)]), None);
    }
}
