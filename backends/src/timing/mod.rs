//! The timing model: a cycle-approximate schedule of a machine program on the modelled chip.
//! (The simulation lands with the timing-model work; the report type is shared with the
//! profiler.)

pub mod report;

pub use report::{EngineBusy, InstTiming, TimingReport};
