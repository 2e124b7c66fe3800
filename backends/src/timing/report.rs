//! What the timing model reports: when every instruction of a machine program starts and ends on
//! the modelled chip, and the totals a profile is made of. Times are nanoseconds from the start
//! of the program.

use tessera_ir::{Engine, QueueId};

/// The timing of one instruction.
#[derive(Clone, Debug, PartialEq)]
pub struct InstTiming {
    /// Its queue.
    pub queue: QueueId,
    /// Its position in the queue.
    pub index: u32,
    /// Start time, ns.
    pub start_ns: f64,
    /// End time, ns.
    pub end_ns: f64,
    /// The opcode (`nc_matmul`, `dma_copy`, ...).
    pub opcode: &'static str,
    /// The graph node (or kernel) it came from.
    pub node: String,
    /// Floating-point operations it performs (2*K*M*N for a matmul, one per output element for
    /// element-wise work, 0 for data movement).
    pub flops: f64,
    /// Bytes it moves to or from HBM (DMA only).
    pub hbm_bytes: f64,
}

/// Busy time of one engine (or DMA queue).
#[derive(Clone, Debug, PartialEq)]
pub struct EngineBusy {
    /// Queue name (`pe`, `act`, `dve`, `pool`, `dma0`, ...).
    pub name: String,
    /// The engine kind.
    pub engine: Engine,
    /// Sum of its instructions' durations, ns.
    pub busy_ns: f64,
}

/// The timing model's result for a whole program.
#[derive(Clone, Debug, PartialEq)]
pub struct TimingReport {
    /// Target preset name.
    pub target: String,
    /// End of the last instruction, ns.
    pub latency_ns: f64,
    /// Every instruction, in queue order (queue 0's first, ...).
    pub insts: Vec<InstTiming>,
    /// One entry per queue that has instructions.
    pub engines: Vec<EngineBusy>,
    /// Total floating-point operations on the tensor engine.
    pub pe_flops: f64,
    /// Total floating-point operations (all engines).
    pub flops: f64,
    /// Total bytes moved to or from HBM.
    pub hbm_bytes: f64,
    /// Tensor-engine peak for the dtype the matmuls used (FLOP/s); the MFU denominator.
    pub pe_peak_flops: f64,
    /// HBM bandwidth available to the core, bytes/s; the bandwidth-utilisation denominator.
    pub hbm_bytes_per_s: f64,
}

impl TimingReport {
    /// Model FLOP utilisation: tensor-engine FLOPs over (latency x peak).
    pub fn mfu(&self) -> f64 {
        if self.latency_ns <= 0.0 || self.pe_peak_flops <= 0.0 {
            return 0.0;
        }
        self.pe_flops / (self.latency_ns * 1e-9 * self.pe_peak_flops)
    }

    /// HBM bandwidth utilisation over the whole run.
    pub fn hbm_utilisation(&self) -> f64 {
        if self.latency_ns <= 0.0 || self.hbm_bytes_per_s <= 0.0 {
            return 0.0;
        }
        self.hbm_bytes / (self.latency_ns * 1e-9 * self.hbm_bytes_per_s)
    }

    /// Busy fraction of a queue (busy time over latency).
    pub fn busy_fraction(&self, name: &str) -> f64 {
        self.engines
            .iter()
            .find(|e| e.name == name)
            .map_or(0.0, |e| {
                if self.latency_ns > 0.0 {
                    e.busy_ns / self.latency_ns
                } else {
                    0.0
                }
            })
    }
}
