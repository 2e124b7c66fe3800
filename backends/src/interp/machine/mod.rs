//! Executing machine programs: per-engine queues on physical memory, in a seeded interleaving,
//! with a static race detector.
//!
//! [`run_machine`] runs a [`MachineProgram`] the way the hardware may: each queue in order, the
//! queues concurrently, an instruction starting only once its waits hold. Any interleaving the
//! waits allow is legal, so the emulator picks one pseudo-randomly from [`MachineRunOptions::seed`]
//! (a correct program gives identical bytes for every seed). Each instruction runs atomically
//! with the same implementation as the tile level (`exec::execute`), over physical memory
//! (`memory`) where buffers placed at the same addresses really alias.
//!
//! Before executing, the race detector (`race`) derives happens-before from the waits with
//! vector clocks and reports two accesses to overlapping memory, one a write, that no chain of
//! waits orders, as [`InterpError::Race`]. It is static, so its verdict does not depend on the
//! seed, and it is what catches a missing wait even when the chosen interleaving happens to
//! produce the right bytes.
//!
//! Order of checks: structure ([`tessera_ir::check_machine_program`], as
//! [`InterpError::BadMachineProgram`]), inputs, races (when enabled), then execution, which
//! reports poison reads, bounds and shape errors of the instruction that hits them, and
//! [`InterpError::Deadlock`] when unfinished queues remain but none can proceed. Outputs must be
//! fully written at the end.

mod memory;
mod race;
mod schedule;

use super::error::{Ctx, InterpError};
use super::exec;
use memory::MachineMemory;
use schedule::{Scheduler, SplitMix64};
use std::collections::BTreeMap;
use tessera_ir::{HostTensor, InstRef, MachineProgram, QueueId, TargetSpec};

/// How [`run_machine`] runs a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineRunOptions {
    /// Seed of the interleaving: at each step the next instruction comes from a ready queue
    /// chosen by a SplitMix64 generator started from this seed. The same seed gives the same
    /// interleaving on every host.
    pub seed: u64,
    /// Run the race detector before executing.
    pub check_races: bool,
}

impl Default for MachineRunOptions {
    fn default() -> Self {
        MachineRunOptions {
            seed: 0,
            check_races: true,
        }
    }
}

/// Runs `program` on `inputs` (one per Input tensor, by name) and returns every Output tensor by
/// name.
///
/// Checks, in order: the structure ([`tessera_ir::check_machine_program`], as
/// [`InterpError::BadMachineProgram`]); the inputs; races, when `options.check_races` (a static
/// happens-before analysis of the waits, independent of the seed: [`InterpError::Race`] names
/// both instructions, what each does and the memory both touch); then execution in the
/// interleaving chosen by `options.seed`, which reports poison reads, bounds and shape errors of
/// the instruction that hits them, [`InterpError::Deadlock`] when unfinished queues remain but
/// none can proceed, and [`InterpError::OutputNotWritten`] at the end.
///
/// Memory is physical: SBUF and PSUM are `target.partitions` rows of the target's bytes per
/// partition, a buffer is a window at its placement (buffers placed at the same addresses
/// alias), Input and Output tensors have their own bytes and Scratch tensors live in one arena.
pub fn run_machine<I: crate::TensorSet + ?Sized>(
    program: &MachineProgram,
    target: &TargetSpec,
    inputs: &I,
    options: &MachineRunOptions,
) -> Result<BTreeMap<String, HostTensor>, InterpError> {
    check_sizes(program)?;
    tessera_ir::check_machine_program(program, target)
        .map_err(|detail| InterpError::BadMachineProgram { detail })?;
    let mut mem = MachineMemory::new(program, target, inputs)?;
    if options.check_races {
        race::check(program, &mem)?;
    }
    let mut sched = Scheduler::new(&program.queues);
    let mut rng = SplitMix64::new(options.seed);
    while sched.ready_len() > 0 {
        let Some((q, index)) = sched.take(rng.below(sched.ready_len())) else {
            break;
        };
        let Some(inst) = program
            .queues
            .get(q)
            .and_then(|queue| queue.insts.get(index as usize))
        else {
            break;
        };
        let ctx = Ctx {
            index: index as usize,
            opcode: inst.op.opcode(),
            loc: None,
            machine: Some((
                program,
                InstRef {
                    queue: QueueId(q as u32),
                    index,
                },
            )),
        };
        exec::execute(&mut mem, ctx, &inst.op)?;
        sched.complete(q);
    }
    let blocked = sched.blocked();
    if !blocked.is_empty() {
        return Err(deadlock(program, &sched, &blocked));
    }
    mem.outputs()
}

/// Buffer sizes whose byte count overflows would make the structural checker's arithmetic
/// overflow; reject them first.
fn check_sizes(program: &MachineProgram) -> Result<(), InterpError> {
    for b in &program.buffers {
        if b.free_elems()
            .checked_mul(b.dtype.size_bytes() as u64)
            .is_none()
        {
            return Err(InterpError::BadMachineProgram {
                detail: format!("buffer %{} is too large to place", b.name),
            });
        }
    }
    Ok(())
}

fn deadlock(
    program: &MachineProgram,
    sched: &Scheduler<'_>,
    blocked: &[(usize, u32, tessera_ir::Wait)],
) -> InterpError {
    let queue_name = |q: usize| {
        program
            .queues
            .get(q)
            .map_or_else(|| format!("queue #{q}"), |queue| queue.name.clone())
    };
    let blocked = blocked
        .iter()
        .map(|&(q, index, w)| {
            let at = InstRef {
                queue: QueueId(q as u32),
                index,
            };
            let wq = w.queue.0 as usize;
            format!(
                "{} waits for {} to complete {} instructions, but it completed {}",
                at.describe(program),
                queue_name(wq),
                w.count,
                sched.done(wq)
            )
        })
        .collect();
    InterpError::Deadlock { blocked }
}
