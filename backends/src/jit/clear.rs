//! What a run must zero before it starts.
//!
//! The jit reuses SBUF, PSUM and the scratch arena from run to run, and promises that a run
//! starts from zeroed memory: a (buggy) read of memory never written gives zeros, never an
//! earlier run's data. Zeroing everything the previous run used cost a tenth of the BERT
//! layer's run time, yet programs from the compiler write before they read. So planning walks
//! the program in the jit's run order and records each read that is not entirely covered by
//! earlier writes; only those boxes are zeroed before each run.
//!
//! That keeps the promise exactly: if a read sees a byte before any write of it in the run
//! order, that byte is uncovered when the read is planned, so the read's whole box is zeroed
//! at the start and nothing writes the byte before the read. A write covers exactly the runs
//! of bytes its view touches, so a strided write never hides the gaps it leaves.

use super::JitError;
use super::memory::Loc;
use super::plan::{Raw, Resolver};
use std::collections::{BTreeMap, HashMap};
use tessera_ir::program::Access;
use tessera_ir::{DmaOperand, Op};

/// A box a run zeroes first: bytes `bytes` of partitions `parts` of `loc` (the arena has one
/// partition, 0).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Clear {
    pub loc: Loc,
    pub parts: (u64, u64),
    pub bytes: (u64, u64),
}

/// The byte intervals written so far in one partition: disjoint, sorted, adjacent ones merged
/// (start -> end).
#[derive(Default)]
struct Written(BTreeMap<u64, u64>);

impl Written {
    fn covers(&self, lo: u64, hi: u64) -> bool {
        lo >= hi
            || self
                .0
                .range(..=lo)
                .next_back()
                .is_some_and(|(_, &e)| e >= hi)
    }

    fn insert(&mut self, mut lo: u64, mut hi: u64) {
        if lo >= hi {
            return;
        }
        if let Some((&s, &e)) = self.0.range(..=lo).next_back()
            && e >= lo
        {
            lo = s;
            hi = hi.max(e);
        }
        let inside: Vec<u64> = self.0.range(lo..=hi).map(|(&s, _)| s).collect();
        for s in inside {
            if let Some(e) = self.0.remove(&s) {
                hi = hi.max(e);
            }
        }
        self.0.insert(lo, hi);
    }
}

/// Most runs a view is split into; a view with more counts as not covering (a write) or is
/// taken as its whole extent (a read).
const MAX_RUNS: usize = 1 << 12;

/// The bytes of each partition a view touches, as maximal runs `[lo, hi)` (within the
/// partition for tiles, absolute for HBM): the free dimensions (the partition dimension
/// excluded for tiles) that nest without gaps from the element width up form one block,
/// repeated at the offsets the other dimensions enumerate. `None` when there are more than
/// [`MAX_RUNS`] repetitions or the view is empty.
pub(crate) fn runs(raw: &Raw, tile: bool) -> Option<Vec<(u64, u64)>> {
    let free = if tile { &raw.dims[1..] } else { &raw.dims[..] };
    if free.iter().any(|d| d.0 == 0) || raw.rows == 0 {
        return None;
    }
    let mut dims: Vec<(u64, i64)> = free.iter().copied().filter(|d| d.0 != 1).collect();
    dims.sort_by_key(|d| d.1.unsigned_abs());
    let mut block = raw.dtype.size_bytes() as u64;
    // The lowest byte of the block relative to element 0 (negative strides reach below it).
    let mut block_lo = 0i64;
    let mut outer = Vec::new();
    for (i, &(size, stride)) in dims.iter().enumerate() {
        if outer.is_empty() && stride.unsigned_abs() == block {
            block_lo += stride.min(0) * (size as i64 - 1);
            block *= size;
        } else {
            outer.extend_from_slice(&dims[i..]);
            break;
        }
    }
    let count: u64 = outer.iter().map(|d| d.0).product();
    if count as usize > MAX_RUNS {
        return None;
    }
    let start = raw.base as i64 - (raw.parts.0 * raw.pb) as i64 + block_lo;
    let mut offsets = vec![start];
    for &(size, stride) in &outer {
        offsets = offsets
            .iter()
            .flat_map(|&o| (0..size as i64).map(move |k| o + k * stride))
            .collect();
    }
    Some(
        offsets
            .into_iter()
            .map(|o| (o.max(0) as u64, o.max(0) as u64 + block))
            .collect(),
    )
}

/// Walks `insts` (each with the resolver naming it) in run order and returns the boxes of the
/// reads not covered by earlier dense writes, without duplicates.
pub(crate) fn uncovered_reads<'a>(
    insts: impl Iterator<Item = (&'a Resolver<'a>, &'a Op)>,
) -> Result<Vec<Clear>, JitError> {
    let mut written: HashMap<(Loc, u64), Written> = HashMap::new();
    let mut clears: Vec<Clear> = Vec::new();
    for (res, op) in insts {
        let mut reads: Vec<(Raw, bool)> = Vec::new();
        let mut writes: Vec<(Raw, bool)> = Vec::new();
        for operand in op.tile_operands() {
            let raw = res.tile(operand.role, operand.tile)?;
            match operand.access {
                Access::Read => reads.push((raw, true)),
                Access::Write => writes.push((raw, true)),
            }
        }
        // The HBM ends of a DMA: only the scratch arena is reused between runs.
        if let Op::DmaCopy { dst, src } = op {
            if let DmaOperand::Hbm(h) = src {
                reads.push((res.hbm("src", h)?, false));
            }
            if let DmaOperand::Hbm(h) = dst {
                writes.push((res.hbm("dst", h)?, false));
            }
        }
        let reused = |loc: Loc| matches!(loc, Loc::Sbuf | Loc::Psum | Loc::Arena);
        for (r, tile) in reads
            .iter()
            .filter(|r| reused(r.0.loc) && r.0.rows * r.0.free > 0)
        {
            let spans = runs(r, *tile).unwrap_or_else(|| vec![r.extent]);
            let covered = (r.parts.0..r.parts.1).all(|p| {
                written
                    .get(&(r.loc, p))
                    .is_some_and(|w| spans.iter().all(|&(lo, hi)| w.covers(lo, hi)))
            });
            let clear = Clear {
                loc: r.loc,
                parts: r.parts,
                bytes: r.extent,
            };
            if !covered && !clears.contains(&clear) {
                clears.push(clear);
            }
        }
        for (w, tile) in writes {
            if !reused(w.loc) || w.rows * w.free == 0 {
                continue;
            }
            let Some(spans) = runs(&w, tile) else {
                continue;
            };
            for p in w.parts.0..w.parts.1 {
                let set = written.entry((w.loc, p)).or_default();
                for &(lo, hi) in &spans {
                    set.insert(lo, hi);
                }
            }
        }
    }
    Ok(clears)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_intervals_merge_and_cover() {
        let mut w = Written::default();
        w.insert(10, 20);
        w.insert(30, 40);
        assert!(w.covers(12, 18));
        assert!(!w.covers(15, 35));
        // Filling the gap joins the three into one interval.
        w.insert(20, 30);
        assert_eq!(w.0.len(), 1);
        assert!(w.covers(10, 40));
        assert!(!w.covers(9, 12));
        assert!(!w.covers(38, 41));
        w.insert(0, 5);
        assert!(!w.covers(4, 11));
        assert_eq!(w.0.len(), 2);
    }
}
