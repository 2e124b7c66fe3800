//! Host placement of SBUF and PSUM buffers: where the jit keeps each buffer in host memory.
//!
//! The compiler places buffers with a rotating cursor (next fit), so that a buffer freed a
//! moment ago is not overwritten at once and the chip's engines can overlap independent tiles.
//! On the host that spreads a model's tiles over all of SBUF (28 MiB on trn2), and nearly every
//! tile a kernel writes lands on memory last touched long ago: out of the processor's caches,
//! each of its cache lines fetched from memory before it is written (an activation over 128 rows
//! of 49 values measured 1.7 us with its rows in cache, 11.7 us with them cold).
//!
//! So planning gives every buffer a host offset of its own choosing, first fit from the lowest
//! address over the buffers' lifetimes in the jit's run order (the span from its first to its
//! last access): space a tile has just left is the next tile's, and stays in cache. The
//! partitions stay as placed; only the byte offset within each partition row changes.
//!
//! That is only the same program when buffers do not share bytes on purpose. Walking the run
//! order with the last writer of every byte (by buffer), every read must see bytes its own
//! buffer wrote last: a read of bytes another buffer wrote (two buffers placed over each other
//! while both are in use, as a program may do to reinterpret data) or of bytes nothing wrote
//! keeps the compiler's placements for the whole program. Given that, each buffer's bytes on
//! the host are its own from its first access to its last, so every read returns what it would
//! have returned at the compiler's addresses.

use super::JitError;
use super::clear::runs;
use super::forward::{OTHER, Writers, assign, writers};
use super::memory::Loc;
use super::plan::Resolver;
use std::collections::HashMap;
use std::rc::Rc;
use tessera_ir::program::Access;
use tessera_ir::{MachineProgram, Placement, Space, TargetSpec};

/// `program` with each SBUF and PSUM buffer at its host offset and how many buffers moved, or
/// `None` when the program's placements must be kept (see the module docs). `resolvers` are the
/// program's own, by queue and index; `order` is the run order.
pub(crate) fn host_program(
    program: &MachineProgram,
    target: &TargetSpec,
    order: &[(usize, usize)],
    resolvers: &[Vec<Resolver<'_>>],
) -> Result<Option<(MachineProgram, u64)>, JitError> {
    let n = program.buffers.len();
    // Each buffer's first and last position in the run order.
    let mut span: Vec<Option<(usize, usize)>> = vec![None; n];
    // Per memory, each partition's last writers; partitions written alike share one map.
    let mut last: HashMap<Loc, Vec<Option<Rc<Writers>>>> = HashMap::new();
    for (at, &(q, i)) in order.iter().enumerate() {
        let (Some(inst), Some(res)) = (
            program.queues.get(q).and_then(|s| s.insts.get(i)),
            resolvers.get(q).and_then(|s| s.get(i)),
        ) else {
            continue;
        };
        let operands = inst.op.tile_operands();
        let mut resolved = Vec::with_capacity(operands.len());
        for operand in &operands {
            let b = operand.tile.buf.0 as usize;
            let raw = res.tile(operand.role, operand.tile)?;
            if let Some(s) = span.get_mut(b) {
                *s = Some(s.map_or((at, at), |(first, _)| (first, at)));
            }
            resolved.push((b, raw, operand.access));
        }
        // Reads before writes: an instruction reading and writing one buffer reads its bytes
        // as they were.
        for (b, raw, _) in resolved.iter().filter(|r| r.2 == Access::Read) {
            if raw.rows * raw.free == 0 {
                continue;
            }
            let spans = runs(raw, true).unwrap_or_else(|| vec![raw.extent]);
            let Some(rows) = last.get(&raw.loc) else {
                return Ok(None);
            };
            for group in groups(rows, raw.parts) {
                let Some(m) = group else {
                    return Ok(None);
                };
                for &(lo, hi) in &spans {
                    let (ws, whole) = writers(m, lo, hi);
                    if !whole || ws.iter().any(|&w| w != *b as u32) {
                        return Ok(None);
                    }
                }
            }
        }
        for (b, raw, _) in resolved.iter().filter(|r| r.2 == Access::Write) {
            if raw.rows * raw.free == 0 {
                continue;
            }
            // A write not followed byte by byte marks its whole extent as written by no one
            // buffer, so a later read of any of it keeps the placements.
            let (spans, who) = match runs(raw, true) {
                Some(spans) => (spans, *b as u32),
                None => (vec![raw.extent], OTHER),
            };
            let rows = last.entry(raw.loc).or_default();
            let (p0, p1) = (raw.parts.0 as usize, raw.parts.1 as usize);
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
                // Taken out of the group's rows: a map no other partition shares is updated
                // in place rather than copied.
                let old = rows[p].take();
                for row in &mut rows[p + 1..q] {
                    *row = None;
                }
                let mut m = match old {
                    Some(rc) => Rc::try_unwrap(rc).unwrap_or_else(|rc| (*rc).clone()),
                    None => Writers::new(),
                };
                for &(lo, hi) in &spans {
                    assign(&mut m, lo, hi, who);
                }
                let m = Some(Rc::new(m));
                for row in &mut rows[p..q] {
                    row.clone_from(&m);
                }
                p = q;
            }
        }
    }
    // First fit from the lowest offset, over the lifetimes in run order.
    let mut placed = program.buffers.clone();
    let mut by_start: Vec<usize> = (0..n).filter(|&b| span[b].is_some()).collect();
    by_start.sort_by_key(|&b| span[b].map(|s| s.0));
    let mut sbuf = FirstFit::new(target.sbuf_partition_bytes, 64);
    let mut psum = FirstFit::new(target.psum_partition_bytes, target.psum_bank_bytes.max(64));
    // Live buffers: (last position, buffer, offset).
    let mut live: Vec<(usize, usize, u64)> = Vec::new();
    let mut moved = 0;
    for b in by_start {
        let Some((first, end)) = span[b] else {
            continue;
        };
        let buffer = &program.buffers[b];
        live.retain(|&(until, other, offset)| {
            if until < first {
                let bytes = program.buffers[other].bytes_per_partition();
                match program.buffers[other].space {
                    Space::Sbuf => sbuf.release(offset, bytes),
                    Space::Psum => psum.release(offset, bytes),
                }
                false
            } else {
                true
            }
        });
        let bytes = buffer.bytes_per_partition();
        let offset = match buffer.space {
            Space::Sbuf => sbuf.alloc(bytes),
            Space::Psum => psum.alloc(bytes),
        };
        let (Some(offset), Some(old)) = (offset, buffer.placement) else {
            return Ok(None);
        };
        moved += u64::from(offset != old.byte_offset);
        placed[b].placement = Some(Placement {
            partition: old.partition,
            byte_offset: offset,
        });
        live.push((end, b, offset));
    }
    let mut host = program.clone();
    host.buffers = placed;
    Ok(Some((host, moved)))
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
fn groups(rows: &[Option<Rc<Writers>>], parts: (u64, u64)) -> Vec<Option<&Writers>> {
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
