//! Profile outputs: what a person (or a script) sees of a [`TimingReport`].
//!
//! The timing model (`tessera_backends::timing`) says when every machine instruction starts and
//! ends on the modelled chip; this module renders that report four ways:
//!
//! - [`summary`]: a short text report (latency, FLOPs, MFU, HBM traffic, a busy bar per engine,
//!   the nodes that take the most engine time);
//! - [`json`]: the same numbers as one JSON object, for scripts and `jq`;
//! - [`chrome_trace`]: a Chrome/Perfetto trace with one track per queue and one slice per
//!   instruction;
//! - [`svg_timeline`]: a picture of the queues over time, instructions coloured by node.
//!
//! ```
//! use tessera_backends::timing::TimingReport;
//! use tessera_runtime::profile;
//!
//! # fn show(report: &TimingReport) {
//! println!("{}", profile::summary(report));
//! let mfu = profile::json(report)["mfu"].as_f64();
//! std::fs::write("trace.json", profile::chrome_trace(report)).unwrap();
//! std::fs::write("timeline.svg", profile::svg_timeline(report)).unwrap();
//! # }
//! ```
//!
//! All renderers are pure functions of the report, deterministic, and never panic on odd input
//! (an empty program, zero latency, NaN from a broken model all render something).

mod json;
mod summary;
mod svg;
mod trace;

use std::collections::BTreeMap;

use tessera_backends::timing::TimingReport;
use tessera_ir::Engine;

pub use json::json;
pub use summary::summary;
pub use svg::{SvgOptions, svg_timeline, svg_timeline_with};
pub use trace::chrome_trace;

/// How many nodes the summary, the JSON object and the SVG legend list.
pub const TOP_NODES: usize = 10;

/// Engine time spent on one graph node (or kernel), over all its instructions.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTime {
    /// The node.
    pub node: String,
    /// Sum of its instructions' durations over every queue, ns.
    pub busy_ns: f64,
    /// Its share of the total engine time of the program (0..=1).
    pub share: f64,
    /// How many instructions it has.
    pub instructions: usize,
    /// Floating-point operations of its instructions.
    pub flops: f64,
    /// Bytes its instructions move to or from HBM.
    pub hbm_bytes: f64,
}

/// Every node's engine time, the largest first (ties by name, so the order is stable).
///
/// Engine time counts each queue separately: a node whose matmul and DMA overlap is charged for
/// both, which is what "where do the engines spend their time" asks.
pub fn node_times(report: &TimingReport) -> Vec<NodeTime> {
    let mut by_node: BTreeMap<&str, NodeTime> = BTreeMap::new();
    let mut total = 0.0;
    for inst in &report.insts {
        let dur = duration_ns(inst.start_ns, inst.end_ns);
        total += dur;
        let entry = by_node
            .entry(inst.node.as_str())
            .or_insert_with(|| NodeTime {
                node: inst.node.clone(),
                busy_ns: 0.0,
                share: 0.0,
                instructions: 0,
                flops: 0.0,
                hbm_bytes: 0.0,
            });
        entry.busy_ns += dur;
        entry.instructions += 1;
        entry.flops += finite(inst.flops);
        entry.hbm_bytes += finite(inst.hbm_bytes);
    }
    let mut nodes: Vec<NodeTime> = by_node.into_values().collect();
    for n in &mut nodes {
        n.share = if total > 0.0 { n.busy_ns / total } else { 0.0 };
    }
    nodes.sort_by(|a, b| b.busy_ns.total_cmp(&a.busy_ns).then(a.node.cmp(&b.node)));
    nodes
}

/// The label and engine of a queue, as the trace and the timeline name it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Lane {
    /// Queue index in the machine program.
    pub queue: u32,
    /// `pe`, `act`, `dma3`, ...
    pub name: String,
    /// Its engine (`None` when the report does not say).
    pub engine: Option<Engine>,
    /// Busy time, ns.
    pub busy_ns: f64,
}

/// The queues that have instructions, in queue order, with their names.
///
/// The report lists instructions by queue id and names queues in `engines`, one entry per queue
/// that has instructions, in queue order; matching the two lists by rank gives each id its
/// name. A report that breaks that shape still renders, with queues named `q<id>`.
pub(crate) fn lanes(report: &TimingReport) -> Vec<Lane> {
    let mut busy: BTreeMap<u32, f64> = BTreeMap::new();
    for inst in &report.insts {
        *busy.entry(inst.queue.0).or_insert(0.0) += duration_ns(inst.start_ns, inst.end_ns);
    }
    let named = busy.len() == report.engines.len();
    busy.into_iter()
        .enumerate()
        .map(|(rank, (queue, busy_ns))| match named {
            true => Lane {
                queue,
                name: report.engines[rank].name.clone(),
                engine: Some(report.engines[rank].engine),
                busy_ns,
            },
            false => Lane {
                queue,
                name: format!("q{queue}"),
                engine: None,
                busy_ns,
            },
        })
        .collect()
}

/// A duration that is never negative or NaN.
pub(crate) fn duration_ns(start: f64, end: f64) -> f64 {
    finite(end - start).max(0.0)
}

/// `x`, or 0 when it is NaN or infinite (a number a renderer can print and add).
pub(crate) fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

/// Busy time over latency (0 when there is no latency). Not clamped: a fraction above 1 is a
/// timing-model bug that the profile should show, not hide.
pub(crate) fn fraction(busy_ns: f64, latency_ns: f64) -> f64 {
    if latency_ns > 0.0 && latency_ns.is_finite() {
        (finite(busy_ns) / latency_ns).max(0.0)
    } else {
        0.0
    }
}

/// `1.23 k`, `45.6 M`, ... with the unit appended (`FLOP`, `B`, `B/s`).
pub(crate) fn si(value: f64, unit: &str) -> String {
    let v = finite(value);
    let (scaled, prefix) = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(scale, _)| v.abs() >= *scale)
        .map_or((v, ""), |(scale, p)| (v / scale, p));
    if prefix.is_empty() && scaled.fract() == 0.0 {
        format!("{scaled:.0} {unit}")
    } else {
        format!("{scaled:.2} {prefix}{unit}")
    }
}

/// A fraction as a percentage, with more decimals when it is small but not zero (an MFU of
/// 0.008 % should not read as 0).
pub(crate) fn percent(fraction: f64) -> String {
    let v = 100.0 * finite(fraction);
    if v != 0.0 && v.abs() < 0.1 {
        format!("{v:.3} %")
    } else {
        format!("{v:.1} %")
    }
}

/// A time in ns printed in microseconds with sensible precision.
pub(crate) fn us(ns: f64) -> String {
    let u = finite(ns) / 1e3;
    if u.abs() >= 100.0 {
        format!("{u:.1} us")
    } else if u.abs() >= 1.0 {
        format!("{u:.2} us")
    } else {
        format!("{u:.3} us")
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A hand-made report whose numbers are easy to check by hand.

    use tessera_backends::timing::{EngineBusy, InstTiming, TimingReport};
    use tessera_ir::{Engine, QueueId};

    fn inst(
        queue: u32,
        index: u32,
        (start_ns, end_ns): (f64, f64),
        opcode: &'static str,
        node: &str,
        flops: f64,
        hbm_bytes: f64,
    ) -> InstTiming {
        InstTiming {
            queue: QueueId(queue),
            index,
            start_ns,
            end_ns,
            opcode,
            node: node.to_string(),
            flops,
            hbm_bytes,
        }
    }

    /// Latency 10 us. Queue 0 `pe` busy 4 us (two matmuls of `fc1`, 2e6 FLOPs each), queue 2
    /// `dve` busy 1 us (`relu`), queue 4 `dma0` busy 5 us (loads for `fc1`, 1 MB and 0.5 MB;
    /// a store for `relu`, 0.5 MB). Queues 1 and 3 are empty. PE peak 1e12 FLOP/s, so MFU =
    /// 4e6 / (10e-6 * 1e12) = 0.4; HBM 1 TB/s, so 2 MB in 10 us is 0.2 of it.
    pub fn report() -> TimingReport {
        TimingReport {
            target: "trn2".into(),
            latency_ns: 10_000.0,
            insts: vec![
                inst(0, 0, (2_000.0, 4_000.0), "nc_matmul", "fc1", 2e6, 0.0),
                inst(0, 1, (4_000.0, 6_000.0), "nc_matmul", "fc1", 2e6, 0.0),
                inst(2, 0, (6_000.0, 7_000.0), "tensor_scalar", "relu", 1e3, 0.0),
                inst(4, 0, (0.0, 1_500.0), "dma_copy", "fc1", 0.0, 1e6),
                inst(4, 1, (1_500.0, 2_000.0), "dma_copy", "fc1", 0.0, 5e5),
                inst(4, 2, (7_000.0, 10_000.0), "dma_copy", "relu", 0.0, 5e5),
            ],
            engines: vec![
                EngineBusy {
                    name: "pe".into(),
                    engine: Engine::Pe,
                    busy_ns: 4_000.0,
                },
                EngineBusy {
                    name: "dve".into(),
                    engine: Engine::Dve,
                    busy_ns: 1_000.0,
                },
                EngineBusy {
                    name: "dma0".into(),
                    engine: Engine::Dma,
                    busy_ns: 5_000.0,
                },
            ],
            pe_flops: 4e6,
            flops: 4e6 + 1e3,
            hbm_bytes: 2e6,
            pe_peak_flops: 1e12,
            hbm_bytes_per_s: 1e12,
        }
    }

    /// No instructions at all.
    pub fn empty() -> TimingReport {
        TimingReport {
            target: "trn1".into(),
            latency_ns: 0.0,
            insts: vec![],
            engines: vec![],
            pe_flops: 0.0,
            flops: 0.0,
            hbm_bytes: 0.0,
            pe_peak_flops: 0.0,
            hbm_bytes_per_s: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_times_group_by_node_largest_first() {
        let nodes = node_times(&testing::report());
        assert_eq!(nodes.len(), 2);
        // fc1: 2 + 2 us on pe, 1.5 + 0.5 us on dma0; relu: 1 us dve + 3 us dma0. Total 10 us.
        assert_eq!(nodes[0].node, "fc1");
        assert_eq!(nodes[0].busy_ns, 6_000.0);
        assert_eq!(nodes[0].instructions, 4);
        assert_eq!(nodes[0].flops, 4e6);
        assert_eq!(nodes[0].hbm_bytes, 1.5e6);
        assert!((nodes[0].share - 0.6).abs() < 1e-12);
        assert_eq!(nodes[1].node, "relu");
        assert!((nodes[1].share - 0.4).abs() < 1e-12);
    }

    #[test]
    fn lanes_name_queues_by_rank() {
        let lanes = lanes(&testing::report());
        let names: Vec<(u32, &str)> = lanes.iter().map(|l| (l.queue, l.name.as_str())).collect();
        assert_eq!(names, [(0, "pe"), (2, "dve"), (4, "dma0")]);
        assert_eq!(lanes[2].busy_ns, 5_000.0);
    }

    #[test]
    fn lanes_fall_back_to_queue_ids() {
        let mut r = testing::report();
        r.engines.pop();
        let names: Vec<String> = lanes(&r).into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["q0", "q2", "q4"]);
    }

    #[test]
    fn numbers_print_with_prefixes() {
        assert_eq!(si(4_001_000.0, "FLOP"), "4.00 MFLOP");
        assert_eq!(si(512.0, "B"), "512 B");
        assert_eq!(si(f64::NAN, "B"), "0 B");
        assert_eq!(us(10_000.0), "10.00 us");
        assert_eq!(percent(0.4), "40.0 %");
        assert_eq!(percent(0.00008), "0.008 %");
        assert_eq!(percent(0.0), "0.0 %");
        assert_eq!(us(250.0), "0.250 us");
        assert_eq!(fraction(5.0, 0.0), 0.0);
        assert_eq!(fraction(15.0, 10.0), 1.5);
    }
}
