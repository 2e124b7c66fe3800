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
//! sorted disjoint intervals. Per memory, live accesses are indexed in buckets over the byte
//! axis (up to 1024 per memory), registered under the buckets their *intervals* touch (not
//! their bounding range, so a column of a row-major tensor does not land in every bucket). `B`
//! is compared with the live accesses in its buckets; a pair with overlapping partitions and
//! bytes, one a write, and not ordered, is a race (exact intervals, so interleaved strided views
//! that never share a byte are not reported).
//!
//! # Pruning (why the live sets stay small)
//! - *Covering*: when `B` is ordered after `A`, contains `A`'s partitions and bytes, and
//!   conflicts with at least everything `A` conflicts with (`B` writes, or both only read), `A`
//!   is retired: a later access `X` racing with `A` races with `B` too (`X` comes later, so it
//!   cannot happen before `B`; if `B` happened before `X`, so would `A`). This is FastTrack's
//!   "last write plus the reads since" for byte ranges: rewriting a buffer, or re-reading it
//!   from the same queue, retires the older accesses.
//! - *Frontier sweep*: an access ordered before the next instruction of every unfinished queue
//!   can never race again. Whenever the live set has doubled since the last sweep, such
//!   accesses are retired (O(queues^2 + live) per sweep, O(1) amortised per access). This
//!   bounds the live set for patterns no single access covers, such as the disjoint column
//!   slices a DMA queue reads from an input.
//!
//! A race is reported iff one exists; the pair named is a racing pair, not necessarily the
//! first one in program order.
//!
//! # Cost
//! Footprints are linear in the elements of the views (plus a sort for views whose offsets are
//! not increasing). Each access costs O(Q) for its clock and O(buckets touched + live accesses
//! in them) for the comparisons, so N instructions over Q queues check in about O(N (Q + k)),
//! k the live accesses sharing a bucket. Measured: the 10,000-instruction pipeline of
//! `tests/machine_scale.rs` (four queues, four buffer slots each reused 625 times, 30,000
//! accesses) checks in under 20 ms.

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

    /// True if this footprint contains every byte of `other` in every partition of `other`.
    fn covers(&self, other: &Footprint) -> bool {
        self.parts.0 <= other.parts.0
            && other.parts.1 <= self.parts.1
            && intervals_contain(&self.bytes, &other.bytes)
    }

    fn access(&self) -> String {
        let verb = if self.write { "writes" } else { "reads" };
        format!("{verb} `{}`", self.role)
    }
}

/// True if the union of sorted disjoint intervals `outer` contains every interval of `inner`.
fn intervals_contain(outer: &[(u64, u64)], inner: &[(u64, u64)]) -> bool {
    let mut o = outer.iter().peekable();
    inner.iter().all(|&(lo, hi)| {
        // Skip outer intervals that end before this one starts; both lists are sorted, so
        // they cannot contain any later inner interval either.
        while o.next_if(|&&(_, ohi)| ohi <= lo).is_some() {}
        o.peek().is_some_and(|&&(olo, ohi)| olo <= lo && hi <= ohi)
    })
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

    /// The buckets the byte intervals touch, ascending and without repeats. Registering by
    /// the exact intervals, not the bounding range, keeps strided views (a column of an HBM
    /// tensor, say) from landing in every bucket between their first and last byte.
    fn buckets_of(&self, bytes: &[(u64, u64)]) -> Vec<usize> {
        let last = self.buckets.len().saturating_sub(1);
        let at = |b: u64| ((b / self.width) as usize).min(last);
        let mut out: Vec<usize> = Vec::new();
        for &(lo, hi) in bytes {
            let (first, end) = (at(lo), at(hi.saturating_sub(1).max(lo)));
            let from = match out.last() {
                Some(&prev) if prev >= first => prev + 1,
                _ => first,
            };
            out.extend(from..=end);
        }
        out
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
    /// Live accesses, and the count at which the next frontier sweep runs.
    live: usize,
    next_sweep: usize,
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
        let touched = index.buckets_of(&new.bytes);
        let accesses = &mut self.accesses;
        let mut retired = 0;
        for &b in &touched {
            let Some(bucket) = index.buckets.get_mut(b) else {
                continue;
            };
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
                    retired += 1;
                }
            }
        }
        let id = self.accesses.len();
        for &b in &touched {
            if let Some(bucket) = index.buckets.get_mut(b) {
                bucket.push(id);
            }
        }
        self.accesses.push(new);
        self.live = self.live + 1 - retired;
        Ok(())
    }

    /// Retires every access that happens before all future instructions: `horizon[q]` is the
    /// least clock entry for queue `q` over the next instructions of the unfinished queues, so
    /// an access of instruction `(q, i)` with `i < horizon[q]` is ordered before anything still
    /// to come and can never race again. Run when the live set has doubled since the last
    /// sweep, so it costs O(1) amortised per access; it bounds the live set for access
    /// patterns no single later access covers (disjoint slices of a tensor, say).
    fn sweep_if_due(&mut self, horizon: impl FnOnce() -> Vec<u32>) {
        if self.live < self.next_sweep {
            return;
        }
        let horizon = horizon();
        for a in self.accesses.iter_mut().filter(|a| a.alive) {
            if horizon.get(a.queue).is_some_and(|&h| a.index < h) {
                a.alive = false;
                a.bytes = Box::new([]);
                self.live -= 1;
            }
        }
        self.next_sweep = 2 * self.live + 64;
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
        Loc::Sbuf | Loc::Psum => {
            let space = if loc == Loc::Sbuf {
                tessera_ir::Space::Sbuf
            } else {
                tessera_ir::Space::Psum
            };
            // The buffers placed there, by their authors' names.
            let names: Vec<String> = program
                .buffers
                .iter()
                .filter(|b| b.space == space)
                .filter(|b| {
                    b.placement.is_some_and(|p| {
                        let parts = (
                            u64::from(p.partition),
                            u64::from(p.partition + b.partitions),
                        );
                        let bytes = (
                            p.byte_offset,
                            p.byte_offset + b.free_elems() * b.dtype.size_bytes() as u64,
                        );
                        parts.0 < c.parts.1 && c.parts.0 < parts.1 && bytes.0 < b1 && b0 < bytes.1
                    })
                })
                .map(|b| format!("%{}", b.name))
                .collect();
            let named = if names.is_empty() {
                String::new()
            } else {
                format!(" ({})", names.join(" or "))
            };
            format!(
                "both touch {} partitions {}..{}, bytes {b0}..{b1}{named}",
                if loc == Loc::Sbuf { "sbuf" } else { "psum" },
                c.parts.0,
                c.parts.1
            )
        }
        Loc::Arena => format!("both touch the HBM scratch arena, bytes {b0}..{b1}"),
        Loc::Tensor(t) => format!(
            "both touch @{}, bytes {b0}..{b1}",
            program.tensors.get(t).map_or("?", |t| t.name.as_str())
        ),
    }
}

/// Per queue `x`, the least `clock[x]` any instruction still to run can have: over unfinished
/// queues `q`, `q`'s latest clock (its own entry is its completed count).
fn horizon(program: &MachineProgram, sched: &Scheduler<'_>, frontier: &[Vec<u32>]) -> Vec<u32> {
    let nq = program.queues.len();
    let mut h = vec![u32::MAX; nq];
    for (q, queue) in program.queues.iter().enumerate() {
        let done = sched.done(q);
        if done as usize >= queue.insts.len() {
            continue;
        }
        let Some(clock) = frontier.get(q) else {
            continue;
        };
        for (x, (hx, &c)) in h.iter_mut().zip(clock).enumerate() {
            *hx = (*hx).min(if x == q { done } else { c });
        }
    }
    h
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
                let tile = |r: InstRef| {
                    program
                        .queues
                        .get(r.queue.0 as usize)
                        .and_then(|q| q.insts.get(r.index as usize))
                        .map_or(0, |inst| inst.origin.tile_index)
                };
                return Err(InterpError::Race {
                    first: earlier.describe(program),
                    first_access: first.access(),
                    second: at.describe(program),
                    second_access,
                    memory: describe_memory(program, loc, &c).into_boxed_str(),
                    first_tile: tile(earlier),
                    second_tile: tile(at),
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
        shadow.sweep_if_due(|| horizon(program, &sched, &frontier));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Index, first_overlap, intervals_contain};

    #[test]
    fn interval_containment() {
        assert!(intervals_contain(&[(0, 16)], &[(0, 4), (8, 16)]));
        assert!(intervals_contain(&[(0, 4), (8, 12)], &[(8, 12)]));
        assert!(!intervals_contain(&[(0, 4), (8, 12)], &[(2, 10)]));
        assert!(!intervals_contain(&[(0, 4)], &[(0, 4), (4, 5)]));
        assert!(intervals_contain(&[(0, 4)], &[]));
        assert!(!intervals_contain(&[], &[(0, 1)]));
    }

    #[test]
    fn buckets_follow_the_exact_intervals() {
        let index = Index::new(128 * 16); // 16 buckets of 128 bytes
        assert_eq!(index.buckets_of(&[(0, 4), (1000, 1004)]), vec![0, 7]);
        assert_eq!(index.buckets_of(&[(100, 300), (300, 310)]), vec![0, 1, 2]);
        assert_eq!(index.buckets_of(&[(5000, 5004)]), vec![15]); // past the end: last bucket
    }

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
