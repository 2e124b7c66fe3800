//! The timing model: a cycle-approximate schedule of a machine program on the modelled chip.
//!
//! [`simulate`] runs every queue in order, starts each instruction when its queue is free and
//! its semaphore waits hold, charges compute instructions the per-instruction cost rules of
//! [`tessera_ir::cost`], and moves DMA data as a fluid sharing the DMA engines', the core's DMA
//! and the core's HBM bandwidth ([`sim`] explains the model). The result is a
//! [`TimingReport`], which the profiler turns into summaries and traces.

pub mod report;
pub mod sim;

pub use report::{EngineBusy, InstTiming, TimingReport};
pub use sim::{TimingError, simulate};
