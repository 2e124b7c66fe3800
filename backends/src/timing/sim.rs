//! The event-driven simulation behind [`simulate`].
//!
//! - Every queue runs in order. Its head instruction starts as soon as the queue is idle and
//!   every wait holds (the waited queue has completed enough instructions). Nothing else delays
//!   it: engines run concurrently, as the hardware's do.
//! - A compute instruction (PE, ACT, DVE, POOL) takes its cost-rule time
//!   ([`tessera_ir::cost::inst_cost`]): `fixed + busy`.
//! - A DMA first pays its fixed start cost, then moves its bytes as a fluid: every transfer in
//!   its data phase gets a rate, recomputed whenever a transfer starts or ends, by max-min fair
//!   sharing (progressive filling) of three kinds of resource:
//!   - its DMA engine (queue `dmaK` is served by engine `K % dma_engines`), whose bandwidth a
//!     transfer consumes at `rate / efficiency` (short contiguous runs waste engine time);
//!   - the core's DMA bandwidth (`dma_core_bytes_per_s`), consumed at `rate`;
//!   - the core's share of HBM bandwidth (`hbm_core_bytes_per_s`), consumed at
//!     `rate * hbm_bytes / bytes` (twice the rate for an HBM-to-HBM copy).
//!
//!   A transfer alone therefore runs at `min(engine x efficiency, core, HBM)`, and transfers
//!   competing for a resource split it fairly. Since no resource is ever oversubscribed, the
//!   total DMA bytes over the core bandwidth and the HBM bytes over the HBM bandwidth are lower
//!   bounds on the latency: no schedule beats the roofline.
//!
//! Waits that can never be met (a wait for more instructions than a queue will complete, or a
//! cycle of waits) stop the simulation with [`TimingError::Deadlock`] naming the blocked
//! instructions. The simulation is deterministic: ties are broken by queue order.

use super::report::{EngineBusy, InstTiming, TimingReport};
use tessera_ir::cost::{InstCost, inst_cost};
use tessera_ir::{Engine, InstRef, MachineProgram, QueueId, TargetSpec};

/// Why a machine program could not be timed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimingError {
    /// An instruction the cost rules do not cover (`alloc`/`free` at the machine level).
    #[error("{inst}: `{opcode}` has no cost at the machine level")]
    NoCost {
        /// The instruction.
        inst: String,
        /// Its opcode.
        opcode: &'static str,
    },
    /// A wait naming a queue that does not exist.
    #[error("{inst}: waits on queue #{queue}, which does not exist")]
    NoSuchQueue {
        /// The instruction.
        inst: String,
        /// The queue index it names.
        queue: u32,
    },
    /// Some instructions can never start: their waits are never met.
    #[error("deadlock at {time_ns:.1} ns: {blocked}")]
    Deadlock {
        /// Modelled time when nothing could run any more.
        time_ns: f64,
        /// Each blocked queue head with the first wait it cannot meet.
        blocked: String,
    },
    /// A target whose clocks or bandwidths are not positive.
    #[error("target {target}: {what} must be positive")]
    BadTarget {
        /// The target's name.
        target: String,
        /// The offending number.
        what: &'static str,
    },
}

/// What an instruction in flight is doing.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// A compute instruction, ending at this time.
    Compute { end: f64 },
    /// A DMA paying its start cost until this time.
    DmaStart { until: f64 },
    /// A DMA moving data: bytes left and the current rate (bytes/ns).
    DmaData { remaining: f64, rate: f64 },
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    start: f64,
    cost: InstCost,
    phase: Phase,
}

/// Times a machine program on `target`. See the module documentation for the model.
pub fn simulate(
    program: &MachineProgram,
    target: &TargetSpec,
) -> Result<TimingReport, TimingError> {
    check_target(target)?;
    let describe = |q: usize, i: usize| {
        InstRef {
            queue: QueueId(q as u32),
            index: i as u32,
        }
        .describe(program)
    };

    // Costs up front, so a bad instruction is reported before any time passes.
    let mut costs: Vec<Vec<InstCost>> = Vec::with_capacity(program.queues.len());
    for (qi, q) in program.queues.iter().enumerate() {
        let mut qc = Vec::with_capacity(q.insts.len());
        for (i, inst) in q.insts.iter().enumerate() {
            for w in &inst.waits {
                if w.queue.0 as usize >= program.queues.len() {
                    return Err(TimingError::NoSuchQueue {
                        inst: describe(qi, i),
                        queue: w.queue.0,
                    });
                }
            }
            let cost = inst_cost(&inst.op, &program.tensors, &program.buffers, target).ok_or(
                TimingError::NoCost {
                    inst: describe(qi, i),
                    opcode: inst.op.opcode(),
                },
            )?;
            qc.push(cost);
        }
        costs.push(qc);
    }

    let nq = program.queues.len();
    let mut next = vec![0usize; nq];
    let mut completed = vec![0u32; nq];
    let mut flying: Vec<Option<InFlight>> = vec![None; nq];
    let mut timings: Vec<Vec<InstTiming>> = program
        .queues
        .iter()
        .map(|q| Vec::with_capacity(q.insts.len()))
        .collect();
    let mut now = 0.0f64;

    loop {
        // Start every queue head that can start now. Starting completes nothing, so one pass
        // in queue order finds them all.
        for q in 0..nq {
            if flying[q].is_some() || next[q] >= program.queues[q].insts.len() {
                continue;
            }
            let inst = &program.queues[q].insts[next[q]];
            if inst
                .waits
                .iter()
                .all(|w| completed[w.queue.0 as usize] >= w.count)
            {
                let cost = costs[q][next[q]];
                let phase = if cost.dma.is_some() {
                    Phase::DmaStart {
                        until: now + cost.fixed_ns,
                    }
                } else {
                    Phase::Compute {
                        end: now + cost.fixed_ns + cost.busy_ns,
                    }
                };
                flying[q] = Some(InFlight {
                    start: now,
                    cost,
                    phase,
                });
            }
        }
        share_bandwidth(program, target, &mut flying);

        // The next event: the earliest end of a phase.
        let mut event: Option<(f64, usize)> = None;
        for (q, f) in flying.iter().enumerate() {
            let Some(f) = f else { continue };
            let t = match f.phase {
                Phase::Compute { end } => end,
                Phase::DmaStart { until } => until,
                Phase::DmaData { remaining, rate } => now + remaining / rate,
            };
            if event.is_none_or(|(best, _)| t < best) {
                event = Some((t, q));
            }
        }
        let Some((t, first)) = event else {
            if next
                .iter()
                .zip(&program.queues)
                .all(|(n, q)| *n >= q.insts.len())
            {
                break;
            }
            return Err(deadlock(program, &next, &completed, now, &describe));
        };

        let dt = (t - now).max(0.0);
        now = t.max(now);
        for (q, slot) in flying.iter_mut().enumerate() {
            let Some(f) = slot else { continue };
            let done = match &mut f.phase {
                Phase::Compute { end } => *end <= now,
                Phase::DmaStart { until } => {
                    if *until <= now {
                        let bytes = f.cost.dma.map_or(0.0, |d| d.bytes);
                        if bytes > 0.0 {
                            // The rate is set by `share_bandwidth` at the top of the loop.
                            f.phase = Phase::DmaData {
                                remaining: bytes,
                                rate: 0.0,
                            };
                            false
                        } else {
                            true
                        }
                    } else {
                        false
                    }
                }
                Phase::DmaData { remaining, rate } => {
                    *remaining -= *rate * dt;
                    let bytes = f.cost.dma.map_or(0.0, |d| d.bytes);
                    // The transfer that set the event time ends exactly; others within rounding.
                    q == first || *remaining <= bytes * 1e-12
                }
            };
            if done {
                let inst = &program.queues[q].insts[next[q]];
                timings[q].push(InstTiming {
                    queue: QueueId(q as u32),
                    index: next[q] as u32,
                    start_ns: f.start,
                    end_ns: now,
                    opcode: inst.op.opcode(),
                    node: inst.origin.node.clone(),
                    flops: f.cost.flops,
                    hbm_bytes: f.cost.dma.map_or(0.0, |d| d.hbm_bytes),
                });
                completed[q] += 1;
                next[q] += 1;
                *slot = None;
            }
        }
    }

    Ok(report(program, target, &costs, timings, now))
}

fn check_target(t: &TargetSpec) -> Result<(), TimingError> {
    let numbers = [
        (t.pe_hz, "pe_hz"),
        (t.dve_hz, "dve_hz"),
        (t.act_hz, "act_hz"),
        (t.pool_hz, "pool_hz"),
        (t.dma_engine_bytes_per_s, "dma_engine_bytes_per_s"),
        (t.dma_core_bytes_per_s, "dma_core_bytes_per_s"),
        (t.hbm_core_bytes_per_s(), "hbm_core_bytes_per_s"),
        (t.dma_engines as f64, "dma_engines"),
    ];
    for (v, what) in numbers {
        if !(v > 0.0 && v.is_finite()) {
            return Err(TimingError::BadTarget {
                target: t.name.to_string(),
                what,
            });
        }
    }
    Ok(())
}

/// The DMA engine serving a queue: the number in its name (`dma5`), or its position among the
/// program's DMA queues when the name carries none, modulo the engines.
fn dma_engine_of(program: &MachineProgram, q: usize, target: &TargetSpec) -> usize {
    let queue = &program.queues[q];
    let k = queue
        .name
        .strip_prefix("dma")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or_else(|| {
            program.queues[..q]
                .iter()
                .filter(|p| p.engine == Engine::Dma)
                .count()
        });
    k % target.dma_engines as usize
}

/// Max-min fair rates (bytes/ns) for the transfers in their data phase, by progressive filling:
/// raise every unfrozen transfer's rate together until some resource is full, freeze the
/// transfers using it, repeat.
fn share_bandwidth(program: &MachineProgram, target: &TargetSpec, flying: &mut [Option<InFlight>]) {
    // (queue, engine, weight on engine, weight on HBM)
    let mut users: Vec<(usize, usize, f64, f64)> = Vec::new();
    for (q, f) in flying.iter().enumerate() {
        if let Some(InFlight {
            cost,
            phase: Phase::DmaData { .. },
            ..
        }) = f
        {
            let d = cost.dma.expect("a DMA phase belongs to a DMA");
            let hbm = if d.bytes > 0.0 {
                d.hbm_bytes / d.bytes
            } else {
                0.0
            };
            users.push((
                q,
                dma_engine_of(program, q, target),
                1.0 / d.efficiency,
                hbm,
            ));
        }
    }
    if users.is_empty() {
        return;
    }
    // Capacities in bytes/ns; each resource lists (user, weight).
    let mut resources: Vec<(f64, Vec<(usize, f64)>)> = Vec::new();
    for e in 0..target.dma_engines as usize {
        let on: Vec<(usize, f64)> = users
            .iter()
            .enumerate()
            .filter(|(_, u)| u.1 == e)
            .map(|(i, u)| (i, u.2))
            .collect();
        if !on.is_empty() {
            resources.push((target.dma_engine_bytes_per_s * 1e-9, on));
        }
    }
    resources.push((
        target.dma_core_bytes_per_s * 1e-9,
        (0..users.len()).map(|i| (i, 1.0)).collect(),
    ));
    let hbm: Vec<(usize, f64)> = users
        .iter()
        .enumerate()
        .filter(|(_, u)| u.3 > 0.0)
        .map(|(i, u)| (i, u.3))
        .collect();
    if !hbm.is_empty() {
        resources.push((target.hbm_core_bytes_per_s() * 1e-9, hbm));
    }

    let mut rate = vec![0.0f64; users.len()];
    let mut frozen = vec![false; users.len()];
    while frozen.iter().any(|f| !f) {
        // The common increment at which each resource with unfrozen users fills up.
        let mut steps: Vec<(usize, f64)> = Vec::new();
        for (r, (cap, on)) in resources.iter().enumerate() {
            let used: f64 = on.iter().map(|&(i, w)| w * rate[i]).sum();
            let growing: f64 = on.iter().filter(|(i, _)| !frozen[*i]).map(|(_, w)| w).sum();
            if growing > 0.0 {
                steps.push((r, ((cap - used) / growing).max(0.0)));
            }
        }
        // Every transfer uses the core resource, so some resource always has unfrozen users.
        let step = steps.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
        for (i, r) in rate.iter_mut().enumerate() {
            if !frozen[i] {
                *r += step;
            }
        }
        for (r, s) in steps {
            if s <= step * (1.0 + 1e-12) {
                for &(i, _) in &resources[r].1 {
                    frozen[i] = true;
                }
            }
        }
    }
    for (i, u) in users.iter().enumerate() {
        if let Some(InFlight {
            phase: Phase::DmaData { rate: r, .. },
            ..
        }) = &mut flying[u.0]
        {
            *r = rate[i];
        }
    }
}

fn deadlock(
    program: &MachineProgram,
    next: &[usize],
    completed: &[u32],
    now: f64,
    describe: &dyn Fn(usize, usize) -> String,
) -> TimingError {
    let blocked: Vec<String> = program
        .queues
        .iter()
        .enumerate()
        .filter(|(q, queue)| next[*q] < queue.insts.len())
        .map(|(q, queue)| {
            let inst = &queue.insts[next[q]];
            let unmet = inst
                .waits
                .iter()
                .find(|w| completed[w.queue.0 as usize] < w.count);
            match unmet {
                Some(w) => format!(
                    "{} waits for {} instructions of {} (completed {})",
                    describe(q, next[q]),
                    w.count,
                    program.queues[w.queue.0 as usize].name,
                    completed[w.queue.0 as usize]
                ),
                None => describe(q, next[q]),
            }
        })
        .collect();
    TimingError::Deadlock {
        time_ns: now,
        blocked: blocked.join("; "),
    }
}

fn report(
    program: &MachineProgram,
    target: &TargetSpec,
    costs: &[Vec<InstCost>],
    timings: Vec<Vec<InstTiming>>,
    latency_ns: f64,
) -> TimingReport {
    let engines = program
        .queues
        .iter()
        .zip(&timings)
        .filter(|(q, _)| !q.insts.is_empty())
        .map(|(q, t)| EngineBusy {
            name: q.name.clone(),
            engine: q.engine,
            busy_ns: t.iter().map(|i| i.end_ns - i.start_ns).sum(),
        })
        .collect();
    let all = costs.iter().flatten();
    let flops = all.clone().map(|c| c.flops).sum();
    let hbm_bytes = all.clone().filter_map(|c| c.dma).map(|d| d.hbm_bytes).sum();
    let matmuls = all.filter_map(|c| c.pe_rate.map(|r| (r, c.flops)));
    let (mut pe_flops, mut peak_seconds) = (0.0, 0.0);
    for (rate, f) in matmuls {
        pe_flops += f;
        peak_seconds += f / rate.peak_flops(target);
    }
    // The FLOP-weighted harmonic mean of the matmuls' peaks: the time the matmuls would take at
    // their dtypes' peaks, so that MFU <= 1 holds for mixed-dtype programs too. For a program
    // with one matmul dtype it is that dtype's peak; without matmuls, the bf16 peak.
    let pe_peak_flops = if peak_seconds > 0.0 {
        pe_flops / peak_seconds
    } else {
        target.pe_bf16_flops
    };
    TimingReport {
        target: target.name.to_string(),
        latency_ns,
        insts: timings.into_iter().flatten().collect(),
        engines,
        pe_flops,
        flops,
        hbm_bytes,
        pe_peak_flops,
        hbm_bytes_per_s: target.hbm_core_bytes_per_s(),
    }
}
