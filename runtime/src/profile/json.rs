//! The profile as one JSON object (`tessera profile --json`): the headline numbers, busy
//! fractions by queue name, and the top nodes. Field names are part of the CLI contract and
//! documented in `docs/profiling.md`; add fields, do not rename them.

use serde_json::{Map, Value, json};
use tessera_backends::timing::TimingReport;

use super::{TOP_NODES, finite, fraction, lanes, node_times};

/// The profile of `report` as a JSON object. Every number is finite (a NaN from a broken
/// report becomes 0), times are in microseconds, fractions in 0..=1.
pub fn json(report: &TimingReport) -> Value {
    let latency_ns = finite(report.latency_ns);
    let lanes = lanes(report);
    let mut busy = Map::new();
    let mut engines = Vec::new();
    for lane in &lanes {
        let f = fraction(lane.busy_ns, latency_ns);
        busy.insert(lane.name.clone(), json!(f));
        engines.push(json!({
            "name": lane.name,
            "engine": lane.engine.map_or("unknown", |e| e.name()),
            "queue": lane.queue,
            "busy_us": lane.busy_ns / 1e3,
            "busy": f,
        }));
    }
    let nodes = node_times(report);
    let top_nodes: Vec<Value> = nodes
        .iter()
        .take(TOP_NODES)
        .map(|n| {
            json!({
                "node": n.node,
                "time_us": n.busy_ns / 1e3,
                "share": n.share,
                "instructions": n.instructions,
                "flops": n.flops,
                "hbm_bytes": n.hbm_bytes,
            })
        })
        .collect();
    json!({
        "target": report.target,
        "latency_us": latency_ns / 1e3,
        "instructions": report.insts.len(),
        "flops": finite(report.flops),
        "pe_flops": finite(report.pe_flops),
        "pe_peak_flops": finite(report.pe_peak_flops),
        "mfu": finite(report.mfu()).max(0.0),
        "hbm_bytes": finite(report.hbm_bytes),
        "hbm_bytes_per_s": finite(report.hbm_bytes_per_s),
        "hbm_utilisation": finite(report.hbm_utilisation()).max(0.0),
        "busy": busy,
        "engines": engines,
        "nodes": nodes.len(),
        "top_nodes": top_nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    #[test]
    fn json_of_the_hand_made_report() {
        let v = json(&testing::report());
        assert_eq!(v["target"], "trn2");
        assert_eq!(v["latency_us"], 10.0);
        assert_eq!(v["instructions"], 6);
        assert_eq!(v["flops"], 4_001_000.0);
        assert_eq!(v["pe_flops"], 4e6);
        // 4e6 FLOPs / (10 us * 1e12 FLOP/s) = 0.4; 2e6 B / (10 us * 1e12 B/s) = 0.2.
        assert!((v["mfu"].as_f64().unwrap() - 0.4).abs() < 1e-12);
        assert!((v["hbm_utilisation"].as_f64().unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(v["hbm_bytes"], 2e6);
        assert_eq!(v["busy"]["pe"], 0.4);
        assert_eq!(v["busy"]["dve"], 0.1);
        assert_eq!(v["busy"]["dma0"], 0.5);
        assert_eq!(v["engines"][2]["name"], "dma0");
        assert_eq!(v["engines"][2]["engine"], "dma");
        assert_eq!(v["engines"][2]["queue"], 4);
        assert_eq!(v["engines"][2]["busy_us"], 5.0);
        assert_eq!(v["nodes"], 2);
        assert_eq!(v["top_nodes"][0]["node"], "fc1");
        assert_eq!(v["top_nodes"][0]["time_us"], 6.0);
        assert_eq!(v["top_nodes"][1]["instructions"], 2);
    }

    #[test]
    fn broken_numbers_stay_finite() {
        let mut r = testing::empty();
        r.flops = f64::NAN;
        r.latency_ns = f64::INFINITY;
        let v = json(&r);
        assert_eq!(v["flops"], 0.0);
        assert_eq!(v["latency_us"], 0.0);
        assert_eq!(v["mfu"], 0.0);
        assert_eq!(v["busy"], json!({}));
        // It serialises (serde_json refuses nothing here, and prints no `null`).
        assert!(!serde_json::to_string(&v).unwrap().contains("null"));
    }
}
