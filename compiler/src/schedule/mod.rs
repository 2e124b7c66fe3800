//! Scheduling: a sequential tile program becomes a machine program.
//!
//! 1. Buffers get addresses ([`alloc`]): SBUF byte ranges, PSUM whole banks, HBM scratch
//!    offsets in one arena, reusing space whose occupant is dead.
//! 2. Each instruction goes to its engine's queue; DMAs are dealt round-robin over the DMA
//!    queues.
//! 3. Semaphore insertion: for every pair of instructions on different queues that touch
//!    overlapping physical memory, at least one writing, the later one (in program order) waits
//!    for the earlier one. Overlap is judged on each access's bounding box, which can only add
//!    waits, never miss one. Waits already implied by other waits (tracked with vector clocks)
//!    are dropped, and an access wholly overwritten by a later write is forgotten (the later
//!    write stands for it), so the history stays about as large as the live data.
//!
//! The result executes, under any interleaving the waits allow, exactly as the sequential
//! program does.

pub mod alloc;

use crate::lower::Lowered;
use alloc::RangeAllocator;
use std::collections::BTreeMap;
use tessera_ir::{
    DmaOperand, Engine, HbmAccess, MachineInst, MachineProgram, Op, Origin, Placement, Queue,
    QueueId, Space, TargetSpec, TensorKind, TileAccess, TileProgram, Wait,
};

/// Why a program could not be scheduled.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A buffer found no free space (fragmentation beyond what the verifier's totals see).
    #[error(
        "{space} has no room for buffer %{buffer} ({bytes} bytes per partition) at instruction #{index}"
    )]
    OutOfMemory {
        /// SBUF or PSUM.
        space: &'static str,
        /// The buffer.
        buffer: String,
        /// Its size.
        bytes: u64,
        /// Where it was allocated.
        index: usize,
    },
    /// An `alloc`/`free` or operand naming a buffer that was not allocated (an internal bug in
    /// a kernel that the verifier should have caught).
    #[error("instruction #{index}: buffer %{buffer} is not allocated")]
    NotAllocated {
        /// The instruction.
        index: usize,
        /// The buffer.
        buffer: String,
    },
}

/// Scratch arena alignment in bytes.
const HBM_ALIGN: u64 = 64;

/// Schedules a lowered graph for `target`.
pub fn schedule(lowered: &Lowered, target: &TargetSpec) -> Result<MachineProgram, ScheduleError> {
    let tile = &lowered.program;
    let buffers = place_buffers(tile, target)?;
    let (hbm_offsets, scratch_bytes) = place_scratch(tile);
    let queues = assign_and_synchronise(tile, &lowered.origins, &buffers, &hbm_offsets, target);
    Ok(MachineProgram {
        name: tile.name.clone(),
        tensors: tile.tensors.clone(),
        hbm_offsets,
        scratch_bytes,
        buffers,
        queues,
    })
}

fn place_buffers(
    tile: &TileProgram,
    target: &TargetSpec,
) -> Result<Vec<tessera_ir::Buffer>, ScheduleError> {
    let mut buffers = tile.buffers.clone();
    // SBUF: 64-byte granules; PSUM: whole 2 KiB banks so a matmul group never crosses one.
    let mut sbuf = RangeAllocator::new(target.sbuf_partition_bytes, 64);
    let mut psum = RangeAllocator::new(target.psum_partition_bytes, target.psum_bank_bytes);
    for (index, inst) in tile.insts.iter().enumerate() {
        match inst.op {
            Op::Alloc { buf } | Op::Free { buf } => {
                let alloc = matches!(inst.op, Op::Alloc { .. });
                let b =
                    buffers
                        .get_mut(buf.0 as usize)
                        .ok_or_else(|| ScheduleError::NotAllocated {
                            index,
                            buffer: format!("#{}", buf.0),
                        })?;
                let bytes = b.bytes_per_partition();
                let pool = match b.space {
                    Space::Sbuf => &mut sbuf,
                    Space::Psum => &mut psum,
                };
                if alloc {
                    let offset = pool
                        .alloc(bytes)
                        .ok_or_else(|| ScheduleError::OutOfMemory {
                            space: b.space.name(),
                            buffer: b.name.clone(),
                            bytes,
                            index,
                        })?;
                    b.placement = Some(Placement {
                        partition: 0,
                        byte_offset: offset,
                    });
                } else {
                    let p = b.placement.ok_or_else(|| ScheduleError::NotAllocated {
                        index,
                        buffer: b.name.clone(),
                    })?;
                    pool.release(p.byte_offset, bytes);
                }
            }
            _ => {}
        }
    }
    for b in &buffers {
        if b.placement.is_none() {
            return Err(ScheduleError::NotAllocated {
                index: tile.insts.len(),
                buffer: b.name.clone(),
            });
        }
    }
    Ok(buffers)
}

/// Offsets of scratch tensors in one arena, reusing space between tensors whose uses (first to
/// last instruction touching them) do not overlap.
fn place_scratch(tile: &TileProgram) -> (Vec<Option<u64>>, u64) {
    let mut first_last: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for (i, inst) in tile.insts.iter().enumerate() {
        if let Op::DmaCopy { dst, src } = &inst.op {
            for end in [dst, src] {
                if let DmaOperand::Hbm(h) = end {
                    let e = first_last.entry(h.tensor.0).or_insert((i, i));
                    e.1 = i;
                }
            }
        }
    }
    let bytes = |t: &tessera_ir::HbmTensor| t.elems() * t.dtype.size_bytes() as u64;
    // Events in program order: frees at an index happen after that instruction, allocations at
    // the tensor's first use.
    let mut order: Vec<(usize, u32)> = first_last
        .iter()
        .filter(|(id, _)| {
            tile.tensors
                .get(**id as usize)
                .is_some_and(|t| t.kind == TensorKind::Scratch)
        })
        .map(|(&id, &(first, _))| (first, id))
        .collect();
    order.sort();
    let total: u64 = tile
        .tensors
        .iter()
        .filter(|t| t.kind == TensorKind::Scratch)
        .map(|t| bytes(t).div_ceil(HBM_ALIGN) * HBM_ALIGN)
        .sum();
    let mut arena = RangeAllocator::new(total.max(HBM_ALIGN), HBM_ALIGN);
    let mut offsets = vec![None; tile.tensors.len()];
    let mut live: Vec<(usize, u32, u64)> = Vec::new(); // (last use, tensor, offset)
    let mut high = 0u64;
    for (first, id) in order {
        live.sort();
        while let Some(&(last, t, off)) = live.first() {
            if last >= first {
                break;
            }
            arena.release(off, bytes(&tile.tensors[t as usize]));
            live.remove(0);
        }
        let size = bytes(&tile.tensors[id as usize]);
        // The arena is as large as all scratch tensors together, so this always fits.
        let off = arena.alloc(size).unwrap_or(0);
        high = high.max(off + size.div_ceil(HBM_ALIGN) * HBM_ALIGN);
        offsets[id as usize] = Some(off);
        live.push((first_last[&id].1, id, off));
    }
    // Scratch tensors never touched still need a place (and do not overlap anything).
    for (i, t) in tile.tensors.iter().enumerate() {
        if t.kind == TensorKind::Scratch && offsets[i].is_none() {
            offsets[i] = Some(high);
            high += bytes(t).div_ceil(HBM_ALIGN) * HBM_ALIGN;
        }
    }
    (offsets, high)
}

/// Memory an access touches, as a bounding box.
#[derive(Clone, Copy, Debug)]
struct Region {
    /// 0 = SBUF, 1 = PSUM, 2 = scratch arena, 3 + t = HBM tensor t.
    key: u64,
    parts: (u32, u32),
    bytes: (u64, u64),
    write: bool,
}

fn overlaps(a: &Region, b: &Region) -> bool {
    a.key == b.key
        && a.parts.0 < b.parts.1
        && b.parts.0 < a.parts.1
        && a.bytes.0 < b.bytes.1
        && b.bytes.0 < a.bytes.1
}

fn covers(outer: &Region, inner: &Region) -> bool {
    outer.key == inner.key
        && outer.parts.0 <= inner.parts.0
        && inner.parts.1 <= outer.parts.1
        && outer.bytes.0 <= inner.bytes.0
        && inner.bytes.1 <= outer.bytes.1
}

fn tile_region(t: &TileAccess, buffers: &[tessera_ir::Buffer], write: bool) -> Option<Region> {
    let b = buffers.get(t.buf.0 as usize)?;
    let p = b.placement?;
    let (lo, hi) = t.offset_range()?;
    let size = b.dtype.size_bytes() as i64;
    let base = p.byte_offset as i64;
    let start = p.partition + t.start_partition;
    Some(Region {
        key: match b.space {
            Space::Sbuf => 0,
            Space::Psum => 1,
        },
        parts: (start, start + t.partitions),
        bytes: (
            (base + lo * size).max(0) as u64,
            (base + (hi + 1) * size).max(0) as u64,
        ),
        write,
    })
}

fn hbm_region(
    h: &HbmAccess,
    tile: &TileProgram,
    offsets: &[Option<u64>],
    write: bool,
) -> Option<Region> {
    let t = tile.tensors.get(h.tensor.0 as usize)?;
    let (lo, hi) = h.offset_range()?;
    let size = t.dtype.size_bytes() as i64;
    let (key, base) = match offsets.get(h.tensor.0 as usize).copied().flatten() {
        Some(off) => (2, off as i64),
        None => (3 + h.tensor.0 as u64, 0),
    };
    Some(Region {
        key,
        parts: (0, 1),
        bytes: (
            (base + lo * size).max(0) as u64,
            (base + (hi + 1) * size).max(0) as u64,
        ),
        write,
    })
}

fn regions(
    op: &Op,
    tile: &TileProgram,
    buffers: &[tessera_ir::Buffer],
    offsets: &[Option<u64>],
) -> Vec<Region> {
    let mut out: Vec<Region> = op
        .tile_operands()
        .iter()
        .filter_map(|o| {
            tile_region(
                o.tile,
                buffers,
                o.access == tessera_ir::program::Access::Write,
            )
        })
        .collect();
    if let Op::DmaCopy { dst, src } = op {
        if let DmaOperand::Hbm(h) = dst {
            out.extend(hbm_region(h, tile, offsets, true));
        }
        if let DmaOperand::Hbm(h) = src {
            out.extend(hbm_region(h, tile, offsets, false));
        }
    }
    out
}

/// Queue layout: PE, ACT, DVE, POOL, then one queue per DMA engine.
fn queue_names(target: &TargetSpec) -> Vec<(String, Engine)> {
    let mut q = vec![
        ("pe".to_string(), Engine::Pe),
        ("act".to_string(), Engine::Act),
        ("dve".to_string(), Engine::Dve),
        ("pool".to_string(), Engine::Pool),
    ];
    for i in 0..target.dma_engines.max(1) {
        q.push((format!("dma{i}"), Engine::Dma));
    }
    q
}

fn assign_and_synchronise(
    tile: &TileProgram,
    origins: &[String],
    buffers: &[tessera_ir::Buffer],
    offsets: &[Option<u64>],
    target: &TargetSpec,
) -> Vec<Queue> {
    let names = queue_names(target);
    let nq = names.len();
    let dma_queues = nq - 4;
    let mut queues: Vec<Queue> = names
        .into_iter()
        .map(|(name, engine)| Queue {
            name,
            engine,
            insts: Vec::new(),
        })
        .collect();
    // Vector clock of the last instruction of each queue, and of every scheduled instruction.
    let mut clocks: Vec<Vec<Vec<u32>>> = vec![Vec::new(); nq];
    // Past accesses per memory key: (region, queue, position).
    let mut history: BTreeMap<u64, Vec<(Region, usize, u32)>> = BTreeMap::new();
    let mut next_dma = 0usize;
    for (index, inst) in tile.insts.iter().enumerate() {
        let q = match inst.op.engine() {
            None => continue, // alloc/free: placement is static now
            Some(Engine::Pe) => 0,
            Some(Engine::Act) => 1,
            Some(Engine::Dve) => 2,
            Some(Engine::Pool) => 3,
            Some(Engine::Dma) => {
                let q = 4 + next_dma % dma_queues;
                next_dma += 1;
                q
            }
        };
        let pos = queues[q].insts.len() as u32;
        let regs = regions(&inst.op, tile, buffers, offsets);
        // Required: for each other queue, the highest position we conflict with.
        let mut need = vec![0u32; nq];
        for r in &regs {
            if let Some(past) = history.get(&r.key) {
                for (pr, pq, ppos) in past {
                    if *pq != q && (r.write || pr.write) && overlaps(r, pr) {
                        need[*pq] = need[*pq].max(ppos + 1);
                    }
                }
            }
        }
        // Start from the queue predecessor's clock; add waits not already implied, latest
        // producers first so that their clocks imply as many of the others as possible.
        let mut clock = clocks[q].last().cloned().unwrap_or_else(|| vec![0; nq]);
        let mut candidates: Vec<(usize, u32)> = need
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i, *c))
            .collect();
        candidates.sort_by_key(|&(qi, c)| {
            std::cmp::Reverse(clocks[qi][c as usize - 1].iter().sum::<u32>())
        });
        let mut waits = Vec::new();
        for (qi, c) in candidates {
            if clock[qi] >= c {
                continue;
            }
            for (k, v) in clocks[qi][c as usize - 1].iter().enumerate() {
                clock[k] = clock[k].max(*v);
            }
            waits.push(Wait {
                queue: QueueId(qi as u32),
                count: c,
            });
        }
        waits.sort_by_key(|w| w.queue);
        clock[q] = pos + 1;
        clocks[q].push(clock);
        for r in regs {
            let past = history.entry(r.key).or_default();
            if r.write {
                // A record wholly inside this write can be forgotten: anything that would
                // conflict with it later conflicts with this write too, and this write is
                // ordered after it (by the waits just added, or by queue order).
                past.retain(|(old, _, _)| !covers(&r, old));
            }
            past.push((r, q, pos));
        }
        queues[q].insts.push(MachineInst {
            op: inst.op.clone(),
            waits,
            origin: Origin {
                node: origins.get(index).cloned().unwrap_or_default(),
                tile_index: index as u32,
            },
        });
    }
    queues
}
