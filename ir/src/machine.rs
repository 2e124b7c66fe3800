//! The machine program: what the hardware runs. Per-engine instruction queues with concrete
//! SBUF/PSUM/HBM addresses, ordered across queues only by semaphore waits.
//!
//! Semaphores are modelled as one counter per queue: each queue counts the instructions it has
//! completed, and an instruction may carry waits "queue `q` has completed at least `n`
//! instructions". This is how the hardware's engines signal each other (an engine increments
//! its semaphore when an instruction retires; another engine's instruction waits on a value),
//! reduced to the one pattern the scheduler emits. Within a queue, instructions run in order.
//!
//! Any interleaving that respects the waits is a legal execution. A correct machine program
//! gives the same result under all of them; the emulator runs seeded interleavings and its race
//! detector reports two accesses to overlapping memory, at least one a write, that no chain of
//! waits orders.

use crate::access::TensorId;
use crate::isa::{Engine, Op};
use crate::program::{Buffer, HbmTensor};
use crate::target::TargetSpec;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Index of a queue in [`MachineProgram::queues`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueueId(pub u32);

/// "Queue `queue` has completed at least `count` instructions."
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Wait {
    /// The queue waited on.
    pub queue: QueueId,
    /// How many of its instructions must have completed.
    pub count: u32,
}

/// Where a machine instruction came from, for messages and profiles.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Origin {
    /// The graph node (or kernel) that produced it.
    pub node: String,
    /// Index of the instruction in the sequential tile program it was scheduled from.
    pub tile_index: u32,
}

/// One instruction in a queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineInst {
    /// What it does (never `Alloc`/`Free`: buffers are placed for the whole program).
    pub op: Op,
    /// Waits that must all hold before it starts.
    pub waits: Vec<Wait>,
    /// Where it came from.
    pub origin: Origin,
}

/// An in-order instruction queue of one engine (or one DMA queue).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    /// Name used in messages and traces (`pe`, `act`, `dve`, `pool`, `dma0`, `dma1`, ...).
    pub name: String,
    /// The engine that executes it.
    pub engine: Engine,
    /// Instructions in issue order.
    pub insts: Vec<MachineInst>,
}

/// A complete machine program.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineProgram {
    /// Program name.
    pub name: String,
    /// HBM tensors. Inputs and outputs have their own memory; scratch tensors live in the
    /// scratch arena at `hbm_offsets`.
    pub tensors: Vec<HbmTensor>,
    /// Byte offset of each tensor in the scratch arena (`Some` exactly for scratch tensors;
    /// tensors with disjoint lifetimes may share bytes).
    pub hbm_offsets: Vec<Option<u64>>,
    /// Size of the scratch arena in bytes.
    pub scratch_bytes: u64,
    /// On-chip buffers, every one placed (`placement` is `Some`); buffers with disjoint
    /// lifetimes may share addresses.
    pub buffers: Vec<Buffer>,
    /// The queues.
    pub queues: Vec<Queue>,
}

impl MachineProgram {
    /// Total instructions over all queues.
    pub fn inst_count(&self) -> usize {
        self.queues.iter().map(|q| q.insts.len()).sum()
    }

    /// The tensor with this id, if any.
    pub fn tensor(&self, id: TensorId) -> Option<&HbmTensor> {
        self.tensors.get(id.0 as usize)
    }
}

/// Names an instruction of a machine program: queue and position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstRef {
    /// The queue.
    pub queue: QueueId,
    /// Position in the queue.
    pub index: u32,
}

impl InstRef {
    /// Displays as `queue[index] opcode (node, tile #i)` using the program for names.
    pub fn describe(&self, program: &MachineProgram) -> String {
        let Some(q) = program.queues.get(self.queue.0 as usize) else {
            return format!("queue #{}[{}]", self.queue.0, self.index);
        };
        match q.insts.get(self.index as usize) {
            Some(inst) => format!(
                "{}[{}] {} (node `{}`, tile #{})",
                q.name,
                self.index,
                inst.op.opcode(),
                inst.origin.node,
                inst.origin.tile_index
            ),
            None => format!("{}[{}]", q.name, self.index),
        }
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wait q{}>={}", self.queue.0, self.count)
    }
}

/// Checks the structural rules of a machine program that the tile verifier does not: every
/// buffer placed and inside the target's memories, scratch tensors inside the arena, waits naming
/// existing queues and counts, no `alloc`/`free`, each instruction on a queue of its engine, and
/// no wait on an instruction of its own queue at or after itself. Returns a message naming the
/// first problem.
pub fn check_machine_program(program: &MachineProgram, target: &TargetSpec) -> Result<(), String> {
    use crate::program::Space;
    for b in &program.buffers {
        let Some(p) = b.placement else {
            return Err(format!("buffer %{} has no placement", b.name));
        };
        let cap = match b.space {
            Space::Sbuf => target.sbuf_partition_bytes,
            Space::Psum => target.psum_partition_bytes,
        };
        let end = p.byte_offset.checked_add(b.bytes_per_partition());
        if p.partition.saturating_add(b.partitions) > target.partitions
            || end.is_none_or(|e| e > cap)
        {
            return Err(format!(
                "buffer %{} is placed outside {}",
                b.name,
                b.space.name()
            ));
        }
    }
    if program.hbm_offsets.len() != program.tensors.len() {
        return Err("hbm_offsets must have one entry per tensor".into());
    }
    for (t, off) in program.tensors.iter().zip(&program.hbm_offsets) {
        let scratch = t.kind == crate::program::TensorKind::Scratch;
        match off {
            Some(o) if scratch => {
                let bytes = t.elems().saturating_mul(t.dtype.size_bytes() as u64);
                if o.saturating_add(bytes) > program.scratch_bytes {
                    return Err(format!(
                        "scratch tensor @{} lies outside the scratch arena",
                        t.name
                    ));
                }
            }
            None if !scratch => {}
            _ => {
                return Err(format!(
                    "tensor @{}: only scratch tensors have arena offsets",
                    t.name
                ));
            }
        }
    }
    for (qi, q) in program.queues.iter().enumerate() {
        for (i, inst) in q.insts.iter().enumerate() {
            let at = format!("{}[{i}] {}", q.name, inst.op.opcode());
            if matches!(inst.op, Op::Alloc { .. } | Op::Free { .. }) {
                return Err(format!(
                    "{at}: alloc/free do not exist at the machine level"
                ));
            }
            if inst.op.engine() != Some(q.engine) {
                return Err(format!(
                    "{at}: runs on {:?} but sits in a {} queue",
                    inst.op.engine(),
                    q.engine.name()
                ));
            }
            for w in &inst.waits {
                let Some(target_q) = program.queues.get(w.queue.0 as usize) else {
                    return Err(format!(
                        "{at}: waits on queue #{}, which does not exist",
                        w.queue.0
                    ));
                };
                if w.count as usize > target_q.insts.len() {
                    return Err(format!(
                        "{at}: waits for {} instructions of {}, which has only {}",
                        w.count,
                        target_q.name,
                        target_q.insts.len()
                    ));
                }
                if w.queue.0 as usize == qi && w.count as usize > i {
                    return Err(format!(
                        "{at}: waits on itself or a later instruction of its own queue"
                    ));
                }
            }
        }
    }
    Ok(())
}
