//! The text summary `tessera profile` prints: the headline numbers, a busy bar per queue, and
//! the nodes that take the most engine time.

use std::fmt::Write;

use tessera_backends::timing::TimingReport;

use super::{TOP_NODES, finite, fraction, lanes, node_times, percent, si, us};

/// Width of a busy bar in characters.
const BAR: usize = 20;

/// Node names longer than this are shortened in the table.
const NAME_WIDTH: usize = 32;

/// A human-readable summary of `report`, a few dozen lines ending in a newline.
pub fn summary(report: &TimingReport) -> String {
    let mut out = String::new();
    let lanes = lanes(report);
    let latency = finite(report.latency_ns);
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        out,
        "profile on {}: {} instructions on {} queues",
        report.target,
        report.insts.len(),
        lanes.len()
    );
    let _ = writeln!(out, "  latency      {}", us(latency));
    let _ = writeln!(
        out,
        "  FLOPs        {} ({} on the tensor engine)",
        si(report.flops, "FLOP"),
        si(report.pe_flops, "FLOP")
    );
    let _ = writeln!(
        out,
        "  MFU          {} of the {} tensor-engine peak",
        percent(report.mfu()),
        si(report.pe_peak_flops, "FLOP/s")
    );
    let achieved = if latency > 0.0 {
        finite(report.hbm_bytes) / (latency * 1e-9)
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "  HBM traffic  {}, {} = {} of {}",
        si(report.hbm_bytes, "B"),
        si(achieved, "B/s"),
        percent(report.hbm_utilisation()),
        si(report.hbm_bytes_per_s, "B/s")
    );

    if !lanes.is_empty() {
        let width = lanes.iter().map(|l| l.name.len()).max().unwrap_or(0);
        let _ = writeln!(out, "\nbusy per queue (busy time / latency)");
        for lane in &lanes {
            let f = fraction(lane.busy_ns, latency);
            let filled = ((f * BAR as f64).round() as usize).min(BAR);
            let _ = writeln!(
                out,
                "  {:<width$}  {}{}  {:5.1} %  {:>9}",
                lane.name,
                "#".repeat(filled),
                ".".repeat(BAR - filled),
                100.0 * f,
                us(lane.busy_ns)
            );
        }
    }

    let nodes = node_times(report);
    if !nodes.is_empty() {
        let shown = &nodes[..nodes.len().min(TOP_NODES)];
        let names: Vec<String> = shown.iter().map(|n| shorten(&n.node)).collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "\ntop nodes by engine time (summed over queues; {} of {} nodes)",
            shown.len(),
            nodes.len()
        );
        let _ = writeln!(
            out,
            "  {:>3}  {:<width$}  {:>7}  {:>10}  {:>6}",
            "#", "node", "share", "time", "insts"
        );
        for (i, (n, name)) in shown.iter().zip(&names).enumerate() {
            let _ = writeln!(
                out,
                "  {:>3}  {:<width$}  {:5.1} %  {:>10}  {:>6}",
                i + 1,
                name,
                100.0 * n.share,
                us(n.busy_ns),
                n.instructions
            );
        }
    }
    out
}

/// `name`, cut to [`NAME_WIDTH`] characters with an ellipsis.
fn shorten(name: &str) -> String {
    if name.chars().count() <= NAME_WIDTH {
        name.to_string()
    } else {
        let head: String = name.chars().take(NAME_WIDTH - 1).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    #[test]
    fn summary_of_the_hand_made_report() {
        let s = summary(&testing::report());
        let expected = "\
profile on trn2: 6 instructions on 3 queues
  latency      10.00 us
  FLOPs        4.00 MFLOP (4.00 MFLOP on the tensor engine)
  MFU          40.0 % of the 1.00 TFLOP/s tensor-engine peak
  HBM traffic  2.00 MB, 200.00 GB/s = 20.0 % of 1.00 TB/s

busy per queue (busy time / latency)
  pe    ########............   40.0 %    4.00 us
  dve   ##..................   10.0 %    1.00 us
  dma0  ##########..........   50.0 %    5.00 us

top nodes by engine time (summed over queues; 2 of 2 nodes)
    #  node    share        time   insts
    1  fc1    60.0 %     6.00 us       4
    2  relu   40.0 %     4.00 us       2
";
        assert_eq!(s, expected, "got:\n{s}");
    }

    #[test]
    fn empty_report_renders_headline_only() {
        let s = summary(&testing::empty());
        assert!(s.starts_with("profile on trn1: 0 instructions on 0 queues\n"));
        assert!(s.contains("MFU          0.0 %"), "{s}");
        assert!(!s.contains("busy per queue"), "{s}");
    }

    #[test]
    fn long_names_are_shortened() {
        assert_eq!(shorten("fc1"), "fc1");
        let long = "x".repeat(40);
        assert_eq!(shorten(&long).chars().count(), NAME_WIDTH);
    }
}
