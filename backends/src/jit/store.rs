//! Forwarding stores: an element-wise instruction whose result only DMAs read, each copying its
//! share of the partitions to an HBM tensor, writes the tensor itself, and the copies are
//! skipped.
//!
//! A compiled convolution evacuates each PSUM bank into an SBUF tile (adding the bias, applying
//! the activation) and DMAs the tile to the activation tensor in HBM, split by partitions over
//! several queues; the next kernel loads it back. On the host that copy is pure data movement
//! (ResNet-50 stores 2,653 pieces a run), and the evacuation can write its result where the
//! copies would have put it just as well.
//!
//! Planning walks the program in the jit's run order with the last writer of every SBUF byte.
//! An instruction qualifies (a *candidate*) when it is `tensor_copy`, `tensor_tensor`,
//! `tensor_scalar` or a plain `activation` run by a kernel, writing an SBUF tile. It is
//! forwarded when
//! - every read of the bytes it wrote, until they are overwritten, is a DMA to HBM copying the
//!   whole of its view on some of its partitions (the same free dimensions, no conversion);
//! - those DMAs together cover its partitions once, and their destinations are one view of one
//!   tensor: the same free dimensions, partition `p` a fixed stride after partition `p - 1`;
//! - nothing between it and each of those DMAs touches (reads or writes) the bytes that DMA
//!   writes.
//!
//! Then the instruction writes that combined view instead of its tile, at its own place in the
//! run order: the tensor holds what the DMAs would have written, earlier, and nothing looks at
//! it in between; nothing reads the tile's bytes it no longer writes.

use super::JitError;
use super::clear::runs;
use super::forward::{OTHER, Writers, writers};
use super::memory::Loc;
use super::place::{groups, write};
use super::plan::{Raw, Resolver};
use super::{Step, planned};
use std::rc::Rc;
use tessera_ir::program::Access;
use tessera_ir::{DmaOperand, MachineProgram, Op};

/// A forwarded instruction: where it is, the view it writes instead of its tile, and the DMAs
/// that no longer run.
pub(crate) struct Forwarded {
    pub at: (usize, usize),
    pub into: Raw,
    pub stores: Vec<(usize, usize)>,
}

/// One DMA copying part of a candidate's result: its position (run order index and queue,
/// index), the candidate's partitions it copies, and its destination.
struct Store {
    at: usize,
    pos: (usize, usize),
    parts: (u64, u64),
    dst: Raw,
}

struct Candidate {
    at: usize,
    pos: (usize, usize),
    /// The destination tile.
    tile: Raw,
    /// Still forwardable.
    ok: bool,
    stores: Vec<Store>,
}

/// The instructions of `program` (planned in `steps`, run in `order`, resolved by `resolvers`)
/// whose results can go straight to HBM (see the module docs).
pub(crate) fn forward_stores(
    program: &MachineProgram,
    order: &[(usize, usize)],
    resolvers: &[Vec<Resolver<'_>>],
    steps: &mut [Vec<Step>],
) -> Result<Vec<Forwarded>, JitError> {
    let mut cands: Vec<Candidate> = Vec::new();
    // Each SBUF partition's last writers; partitions written alike share one map.
    let mut last: Vec<Option<Rc<Writers>>> = Vec::new();
    // Every HBM view a DMA touches: run order index and view.
    let mut hbm: Vec<(usize, Raw)> = Vec::new();
    for (at, &pos) in order.iter().enumerate() {
        let Some((inst, res, step)) = planned(program, resolvers, steps, pos) else {
            continue;
        };
        let op = &inst.op;
        let mut store_dst = None;
        if let Op::DmaCopy { dst, src } = op {
            for (role, end) in [("src", src), ("dst", dst)] {
                if let DmaOperand::Hbm(h) = end {
                    hbm.push((at, res.hbm(role, h)?));
                }
            }
            if let (DmaOperand::Hbm(h), DmaOperand::Tile(_)) = (dst, src) {
                store_dst = Some(res.hbm("dst", h)?);
            }
        }
        let mut writes = Vec::new();
        for operand in op.tile_operands() {
            let raw = res.tile(operand.role, operand.tile)?;
            if raw.loc != Loc::Sbuf || raw.elems() == 0 {
                continue;
            }
            if operand.access == Access::Write {
                writes.push(raw);
                continue;
            }
            let spans = runs(&raw, true).unwrap_or_else(|| vec![raw.extent]);
            let mut ids: Vec<u32> = Vec::new();
            for m in groups(&last, raw.parts).into_iter().flatten() {
                for &(lo, hi) in &spans {
                    ids.extend(writers(m, lo, hi).0);
                }
            }
            ids.sort_unstable();
            ids.dedup();
            let copied = match (&store_dst, ids.as_slice()) {
                (Some(dst), &[c]) => cands
                    .get(c as usize)
                    .and_then(|cand| share(&cand.tile, &raw, dst)),
                _ => None,
            };
            match (copied, ids.first()) {
                (Some(parts), Some(&c)) => {
                    if let (Some(cand), Some(dst)) = (cands.get_mut(c as usize), &store_dst) {
                        cand.stores.push(Store {
                            at,
                            pos,
                            parts,
                            dst: dst.clone(),
                        });
                    }
                }
                _ => {
                    for c in ids {
                        if let Some(cand) = cands.get_mut(c as usize) {
                            cand.ok = false;
                        }
                    }
                }
            }
        }
        let candidate = matches!(
            op,
            Op::TensorCopy { .. }
                | Op::TensorTensor { .. }
                | Op::TensorScalar { .. }
                | Op::Activation { accum: None, .. }
        ) && matches!(
            step,
            Step::Kernel { .. } | Step::ActRows(_) | Step::Pending(..)
        );
        for w in writes {
            let precise = runs(&w, true);
            let who = match (&precise, candidate) {
                (Some(_), true) => {
                    cands.push(Candidate {
                        at,
                        pos,
                        tile: w.clone(),
                        ok: true,
                        stores: Vec::new(),
                    });
                    cands.len() as u32 - 1
                }
                _ => OTHER,
            };
            let spans = precise.unwrap_or_else(|| vec![w.extent]);
            write(&mut last, w.parts, &spans, who);
        }
    }
    Ok(cands
        .into_iter()
        .filter(|c| c.ok && !c.stores.is_empty())
        .filter_map(|c| combined(c, &hbm))
        .collect())
}

/// The partitions of `tile` that the DMA reading `src` and writing `dst` copies, when it
/// copies the whole of the tile's view on them (same free dimensions, no conversion) and its
/// destination lays each of them out as the tile's free dimensions.
fn share(tile: &Raw, src: &Raw, dst: &Raw) -> Option<(u64, u64)> {
    let (a, b) = src.parts;
    let inside = tile.parts.0 <= a && b <= tile.parts.1;
    let same_view = src.dims.get(1..) == tile.dims.get(1..)
        && src.dims.first().map(|d| d.0) == Some(b - a)
        && src.base == tile.base + (a - tile.parts.0) * tile.pb
        && src.dtype == tile.dtype
        && dst.dtype == tile.dtype;
    // The destination: the partitions as its first dimension (or a single partition), then a
    // layout of the free elements.
    let rest = free_dims(dst, b - a)?;
    let free: u64 = rest.iter().map(|d| d.0).product();
    (inside && same_view && free == tile.free).then_some((a, b))
}

/// `dst`'s dimensions after its partition dimension (`parts` of them), or all of them for one
/// partition.
fn free_dims(dst: &Raw, parts: u64) -> Option<&[(u64, i64)]> {
    match dst.dims.first() {
        Some(&(n, _)) if n == parts && parts > 1 => dst.dims.get(1..),
        _ if parts == 1 => Some(&dst.dims),
        _ => None,
    }
}

/// The one view the candidate writes instead of its tile, when its stores cover its
/// partitions once with one layout and nothing else touches what they write before the last.
fn combined(mut c: Candidate, hbm: &[(usize, Raw)]) -> Option<Forwarded> {
    c.stores.sort_by_key(|s| s.parts.0);
    let first = c.stores.first()?;
    let (loc, dtype) = (first.dst.loc, first.dst.dtype);
    let rest = free_dims(&first.dst, first.parts.1 - first.parts.0)?.to_vec();
    // The partition stride: from the first two stores' bases, or the first store's own
    // partition dimension.
    let stride = match (c.stores.get(1), first.dst.dims.first()) {
        (Some(second), _) => {
            let apart = (second.parts.0 - first.parts.0) as i64;
            let bytes = second.dst.base as i64 - first.dst.base as i64;
            (bytes % apart == 0).then_some(bytes / apart)?
        }
        (None, Some(&(n, s))) if n > 1 => s,
        _ => 0,
    };
    let mut next = c.tile.parts.0;
    for s in &c.stores {
        let ok = s.parts.0 == next
            && s.dst.loc == loc
            && s.dst.dtype == dtype
            && free_dims(&s.dst, s.parts.1 - s.parts.0)? == rest.as_slice()
            && (s.parts.1 - s.parts.0 == 1 || s.dst.dims.first().map(|d| d.1) == Some(stride))
            && s.dst.base as i64
                == first.dst.base as i64 + (s.parts.0 - first.parts.0) as i64 * stride;
        if !ok {
            return None;
        }
        next = s.parts.1;
    }
    // The first store starts at the tile's first partition (checked in the loop above).
    if next != c.tile.parts.1 {
        return None;
    }
    let lo = c.stores.iter().map(|s| s.dst.extent.0).min()?;
    let hi = c.stores.iter().map(|s| s.dst.extent.1).max()?;
    let end = c.stores.iter().map(|s| s.at).max()?;
    let theirs: Vec<usize> = c.stores.iter().map(|s| s.at).collect();
    // The exact bytes each store writes (their bounding box also spans the other tiles of the
    // same channels).
    let bytes = |r: &Raw| {
        let mut v = runs(r, false).unwrap_or_else(|| vec![r.extent]);
        v.sort_unstable();
        v
    };
    let stored: Vec<(usize, Vec<(u64, u64)>)> =
        c.stores.iter().map(|s| (s.at, bytes(&s.dst))).collect();
    // Between the instruction and its last store, another access to bytes a store writes only
    // after it would see (a read) or be overwritten by (a write) the new values early. Once a
    // store has run, its bytes hold the same values either way, so later reads and writes of
    // them are unaffected.
    // `hbm` is in run order.
    let from = hbm.partition_point(|(at, _)| *at <= c.at);
    let between = hbm[from..].iter().take_while(|(at, _)| *at <= end);
    let clash = between
        .filter(|(at, _)| !theirs.contains(at))
        .any(|(at, r)| {
            if r.loc != loc || r.extent.0 >= hi || lo >= r.extent.1 {
                return false;
            }
            let other = bytes(r);
            stored.iter().any(|(s, b)| *s > *at && intersect(b, &other))
        });
    if clash {
        return None;
    }
    let rows = c.tile.parts.1 - c.tile.parts.0;
    let mut dims = vec![(rows, stride)];
    dims.extend(rest);
    Some(Forwarded {
        at: c.pos,
        into: Raw {
            loc,
            base: first.dst.base,
            dtype,
            dims,
            rows: 1,
            free: rows * c.tile.free,
            parts: (0, 1),
            extent: (lo, hi),
            row0: first.dst.base,
            pb: 0,
        },
        stores: c.stores.iter().map(|s| s.pos).collect(),
    })
}

/// Whether two sorted lists of byte ranges share a byte.
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let ((a0, a1), (b0, b1)) = (a[i], b[j]);
        if a0 < b1 && b0 < a1 && a0 < a1 && b0 < b1 {
            return true;
        }
        if a1 <= b1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    false
}
