//! Chrome/Perfetto trace output (the "Trace Event Format" JSON that `chrome://tracing` and
//! <https://ui.perfetto.dev> open): one track per queue, one complete (`X`) event per
//! instruction.
//!
//! The whole program is one process (named after the target); each queue is a thread whose id
//! is the queue index, named `pe`, `act`, `dma0`, ... and sorted in queue order. Event times
//! are microseconds, as the format requires; `displayTimeUnit: "ns"` makes the viewers show
//! nanoseconds, which suits instructions that last a few hundred of them.

use serde_json::{Value, json};
use tessera_backends::timing::TimingReport;

use super::{duration_ns, finite, lanes};

/// The single process id of the trace.
const PID: u32 = 1;

/// The trace of `report` as a JSON document.
pub fn chrome_trace(report: &TimingReport) -> String {
    let lanes = lanes(report);
    let mut events: Vec<Value> = Vec::with_capacity(report.insts.len() + 2 * lanes.len() + 1);
    events.push(json!({
        "ph": "M", "pid": PID, "tid": 0, "name": "process_name",
        "args": { "name": format!("tessera {}", report.target) },
    }));
    for (rank, lane) in lanes.iter().enumerate() {
        events.push(json!({
            "ph": "M", "pid": PID, "tid": lane.queue, "name": "thread_name",
            "args": { "name": lane.name },
        }));
        events.push(json!({
            "ph": "M", "pid": PID, "tid": lane.queue, "name": "thread_sort_index",
            "args": { "sort_index": rank },
        }));
    }
    for inst in &report.insts {
        let start = finite(inst.start_ns);
        let queue = lanes
            .iter()
            .find(|l| l.queue == inst.queue.0)
            .map_or("", |l| l.name.as_str());
        events.push(json!({
            "ph": "X",
            "pid": PID,
            "tid": inst.queue.0,
            "name": format!("{}: {}", inst.node, inst.opcode),
            "cat": inst.opcode,
            "ts": start / 1e3,
            "dur": duration_ns(start, inst.end_ns) / 1e3,
            "args": {
                "node": inst.node,
                "queue": queue,
                "index": inst.index,
                "flops": finite(inst.flops),
                "hbm_bytes": finite(inst.hbm_bytes),
            },
        }));
    }
    let doc = json!({
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {
            "target": report.target,
            "latency_us": finite(report.latency_ns) / 1e3,
            "mfu": finite(report.mfu()),
        },
    });
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    fn events(report: &TimingReport) -> Vec<Value> {
        let doc: Value = serde_json::from_str(&chrome_trace(report)).expect("valid JSON");
        assert_eq!(doc["displayTimeUnit"], "ns");
        doc["traceEvents"].as_array().expect("an array").clone()
    }

    #[test]
    fn one_complete_event_per_instruction() {
        let ev = events(&testing::report());
        let x: Vec<&Value> = ev.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(x.len(), 6);
        // The second matmul: 4..6 us on queue 0.
        let m = x[1];
        assert_eq!(m["name"], "fc1: nc_matmul");
        assert_eq!(m["tid"], 0);
        assert_eq!(m["ts"], 4.0);
        assert_eq!(m["dur"], 2.0);
        assert_eq!(m["args"]["flops"], 2e6);
        assert_eq!(m["args"]["index"], 1);
        assert_eq!(m["args"]["queue"], "pe");
        let store = x[5];
        assert_eq!(store["tid"], 4);
        assert_eq!(store["args"]["hbm_bytes"], 5e5);
    }

    #[test]
    fn tracks_are_named_after_queues() {
        let ev = events(&testing::report());
        let names: Vec<(u64, &str)> = ev
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .map(|e| {
                (
                    e["tid"].as_u64().unwrap(),
                    e["args"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(names, [(0, "pe"), (2, "dve"), (4, "dma0")]);
        assert!(
            ev.iter()
                .any(|e| e["name"] == "process_name" && e["args"]["name"] == "tessera trn2")
        );
    }

    #[test]
    fn empty_report_is_a_valid_trace() {
        let ev = events(&testing::empty());
        assert_eq!(ev.len(), 1);
    }
}
