//! The timeline picture: one lane per queue that has work, each instruction a rectangle
//! coloured by its node, a time axis in microseconds, a legend of the top nodes and a title
//! with the headline numbers. Plain SVG 1.1 with no scripts or external fonts, so any browser,
//! editor or `rsvg-convert` shows it.
//!
//! Colours: the [`TOP_NODES`] nodes with the most engine time get distinct strong colours in
//! rank order (so the legend is unambiguous); every other node gets a muted colour chosen by a
//! hash of its name (stable from run to run). When a program has more than
//! [`MERGE_ABOVE`] instructions, neighbouring rectangles of the same node on a lane that would
//! touch on screen are drawn as one, which keeps files small without changing the picture.

use std::collections::BTreeMap;
use std::fmt::Write;

use tessera_backends::timing::{InstTiming, TimingReport};
use tessera_ir::Engine;

use super::{TOP_NODES, finite, fraction, lanes, node_times, percent, si, us};

/// Instruction counts above which same-node neighbours on a lane are merged.
pub const MERGE_ABOVE: usize = 3000;

/// Strong colours for the top nodes, in rank order.
const STRONG: [&str; TOP_NODES] = [
    "#3b6fb6", "#e07b28", "#3a9d5d", "#c8453b", "#8a5fbf", "#2aa3a8", "#d4a21c", "#d260a2",
    "#7a8b2e", "#8c5a3c",
];

/// Muted colours for every other node.
const MUTED: [&str; 6] = [
    "#b4c0cc", "#cdbfae", "#b9cbb4", "#cfb6c2", "#c0c0d6", "#d3cdaa",
];

const LANE_H: f64 = 20.0;
const LANE_GAP: f64 = 4.0;
/// Extra space where the engine kind changes (compute engines above, DMA queues below).
const GROUP_GAP: f64 = 10.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 64.0;
const TOP: f64 = 70.0;
const LEGEND_COLUMN: f64 = 260.0;

/// How to draw the timeline.
#[derive(Clone, Debug)]
pub struct SvgOptions {
    /// Width of the picture in pixels.
    pub width: u32,
    /// What was profiled (a model name), shown in the title.
    pub title: Option<String>,
}

impl Default for SvgOptions {
    fn default() -> Self {
        SvgOptions {
            width: 1400,
            title: None,
        }
    }
}

/// The timeline of `report` as an SVG document, 1400 px wide.
pub fn svg_timeline(report: &TimingReport) -> String {
    svg_timeline_with(report, &SvgOptions::default())
}

/// The timeline of `report` as an SVG document, drawn as `options` say.
pub fn svg_timeline_with(report: &TimingReport, options: &SvgOptions) -> String {
    let width = f64::from(options.width.max(400));
    let plot_w = width - LEFT - RIGHT;
    let lanes = lanes(report);
    let nodes = node_times(report);
    let latency = finite(report.latency_ns);
    // The axis covers the latency, or the last end if a (broken) report ends later.
    let span = report
        .insts
        .iter()
        .map(|i| finite(i.end_ns))
        .fold(latency, f64::max);
    let span = if span > 0.0 { span } else { 1_000.0 };
    let x_of = |t_ns: f64| LEFT + (finite(t_ns).clamp(0.0, span) / span) * plot_w;

    let rank: BTreeMap<&str, usize> = nodes
        .iter()
        .take(TOP_NODES)
        .enumerate()
        .map(|(i, n)| (n.node.as_str(), i))
        .collect();
    let colour = |node: &str| match rank.get(node) {
        Some(&i) => STRONG[i],
        None => MUTED[(fnv1a(node) % MUTED.len() as u64) as usize],
    };

    // Lane positions, with a wider gap between compute engines and DMA queues.
    let mut lane_y = Vec::with_capacity(lanes.len());
    let mut y = TOP;
    let mut previous: Option<bool> = None;
    for lane in &lanes {
        let is_dma = lane.engine == Some(Engine::Dma);
        if previous.is_some_and(|p| p != is_dma) {
            y += GROUP_GAP;
        }
        previous = Some(is_dma);
        lane_y.push(y);
        y += LANE_H + LANE_GAP;
    }
    let lanes_bottom = y - LANE_GAP + 6.0;
    let axis_y = lanes_bottom;
    let legend_entries = nodes.len().min(TOP_NODES) + usize::from(nodes.len() > TOP_NODES);
    let per_row = ((width - LEFT) / LEGEND_COLUMN).floor().max(1.0) as usize;
    let legend_rows = legend_entries.div_ceil(per_row);
    let legend_y = axis_y + 44.0;
    let height = (legend_y + legend_rows as f64 * 20.0 + 12.0).ceil();

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let heading = match &options.title {
        Some(t) => format!("{t} on {}", report.target),
        None => format!("tessera profile on {}", report.target),
    };
    let _ = writeln!(out, "<title>{}</title>", escape(&heading));
    let _ = writeln!(
        out,
        r##"<rect width="{width}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="28" font-size="18" font-weight="bold" fill="#222">{}: {}, MFU {}</text>"##,
        escape(&heading),
        us(latency),
        percent(report.mfu())
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="50" font-size="12" fill="#555">{} instructions on {} queues · {} ({} on the tensor engine, peak {}) · HBM {}, {} of {}</text>"##,
        report.insts.len(),
        lanes.len(),
        escape(&si(report.flops, "FLOP")),
        escape(&si(report.pe_flops, "FLOP")),
        escape(&si(report.pe_peak_flops, "FLOP/s")),
        escape(&si(report.hbm_bytes, "B")),
        percent(report.hbm_utilisation()),
        escape(&si(report.hbm_bytes_per_s, "B/s")),
    );

    // Grid and axis first, so the instructions draw over them.
    let (step, decimals) = tick_step(span / 1e3);
    let ticks = ((span / 1e3) / step).floor() as usize;
    let _ = writeln!(out, r##"<g stroke="#e2e2e2" stroke-width="1">"##);
    for k in 0..=ticks {
        let x = x_of(k as f64 * step * 1e3);
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{axis_y:.1}"/>"#,
            TOP - 4.0
        );
    }
    let _ = writeln!(out, "</g>");
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#444" stroke-width="1"/>"##,
        LEFT + plot_w
    );
    let _ = writeln!(
        out,
        r##"<g font-size="11" fill="#444" text-anchor="middle">"##
    );
    for k in 0..=ticks {
        let x = x_of(k as f64 * step * 1e3);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{axis_y:.1}" x2="{x:.1}" y2="{:.1}" stroke="#444"/><text x="{x:.1}" y="{:.1}">{:.decimals$}</text>"##,
            axis_y + 4.0,
            axis_y + 16.0,
            k as f64 * step
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end">time (us)</text>"##,
        LEFT + plot_w,
        axis_y + 30.0
    );
    let _ = writeln!(out, "</g>");

    // Lanes: background, label, busy share, then the instructions.
    if !lanes.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#555">busy</text>"##,
            LEFT + plot_w + 8.0,
            TOP - 6.0
        );
    }
    let mut by_lane: BTreeMap<u32, Vec<&InstTiming>> = BTreeMap::new();
    for inst in &report.insts {
        by_lane.entry(inst.queue.0).or_default().push(inst);
    }
    let merge = report.insts.len() > MERGE_ABOVE;
    for (lane, &y) in lanes.iter().zip(&lane_y) {
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{y:.1}" width="{plot_w:.1}" height="{LANE_H}" fill="#f4f5f7"/>"##
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" fill="#222" text-anchor="end">{}</text>"##,
            LEFT - 8.0,
            y + LANE_H / 2.0 + 4.0,
            escape(&lane.name)
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#555">{}</text>"##,
            LEFT + plot_w + 8.0,
            y + LANE_H / 2.0 + 4.0,
            busy_label(fraction(lane.busy_ns, latency))
        );
        let mut insts = by_lane.remove(&lane.queue).unwrap_or_default();
        insts.sort_by(|a, b| a.start_ns.total_cmp(&b.start_ns));
        for bar in bars(&insts, merge, &x_of) {
            let tip = if bar.count == 1 {
                format!(
                    "{}: {}\n{} from {}",
                    bar.node,
                    bar.opcode,
                    us(bar.busy_ns),
                    us(bar.start_ns)
                )
            } else {
                format!(
                    "{}: {} instructions, {} busy from {}",
                    bar.node,
                    bar.count,
                    us(bar.busy_ns),
                    us(bar.start_ns)
                )
            };
            let _ = writeln!(
                out,
                r#"<rect x="{:.2}" y="{:.1}" width="{:.2}" height="{LANE_H}" fill="{}"><title>{}</title></rect>"#,
                bar.x0,
                y,
                (bar.x1 - bar.x0).max(1.0),
                colour(bar.node),
                escape(&tip)
            );
        }
    }

    // Legend: the top nodes with their share of engine time.
    let _ = writeln!(out, r##"<g font-size="12" fill="#222">"##);
    let mut entries: Vec<(String, &str)> = nodes
        .iter()
        .take(TOP_NODES)
        .map(|n| {
            (
                format!("{} ({:.0} %)", short(&n.node, 26), 100.0 * n.share),
                colour(&n.node),
            )
        })
        .collect();
    if nodes.len() > TOP_NODES {
        let rest: f64 = nodes[TOP_NODES..].iter().map(|n| n.share).sum();
        entries.push((
            format!(
                "{} other nodes ({:.0} %)",
                nodes.len() - TOP_NODES,
                100.0 * rest
            ),
            MUTED[0],
        ));
    }
    for (i, (label, fill)) in entries.iter().enumerate() {
        let x = LEFT + (i % per_row) as f64 * LEGEND_COLUMN;
        let y = legend_y + (i / per_row) as f64 * 20.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{fill}"/><text x="{:.1}" y="{y:.1}">{}</text>"#,
            y - 10.0,
            x + 17.0,
            escape(label)
        );
    }
    let _ = writeln!(out, "</g>");
    out.push_str("</svg>\n");
    out
}

/// One rectangle: an instruction, or a run of same-node instructions merged.
struct Bar<'a> {
    node: &'a str,
    opcode: &'a str,
    x0: f64,
    x1: f64,
    start_ns: f64,
    busy_ns: f64,
    count: usize,
}

/// The rectangles of one lane's instructions (sorted by start). With `merge`, an instruction
/// of the same node as the previous rectangle that starts within half a pixel of its end
/// extends it instead of starting a new one.
fn bars<'a>(insts: &[&'a InstTiming], merge: bool, x_of: &dyn Fn(f64) -> f64) -> Vec<Bar<'a>> {
    let mut out: Vec<Bar<'a>> = Vec::new();
    for inst in insts {
        let (x0, x1) = (x_of(inst.start_ns), x_of(inst.end_ns));
        let busy = super::duration_ns(inst.start_ns, inst.end_ns);
        if merge
            && let Some(last) = out.last_mut()
            && last.node == inst.node
            && x0 - last.x1 < 0.5
        {
            last.x1 = last.x1.max(x1);
            last.busy_ns += busy;
            last.count += 1;
            continue;
        }
        out.push(Bar {
            node: &inst.node,
            opcode: inst.opcode,
            x0,
            x1,
            start_ns: finite(inst.start_ns),
            busy_ns: busy,
            count: 1,
        });
    }
    out
}

/// A lane's busy share: whole percent from 10 % up, one decimal below.
fn busy_label(fraction: f64) -> String {
    let v = 100.0 * fraction;
    if v >= 10.0 {
        format!("{v:.0} %")
    } else {
        format!("{v:.1} %")
    }
}

/// A tick spacing of 1, 2, 2.5 or 5 times a power of ten giving eight to twelve ticks over
/// `span_us`, and the decimals its labels need.
fn tick_step(span_us: f64) -> (f64, usize) {
    let raw = (span_us / 10.0).max(1e-6);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw * 0.999)
        .unwrap_or(10.0 * magnitude);
    let decimals = (0..6)
        .find(|&d| {
            let scaled = step * 10f64.powi(d as i32);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(6);
    (step, decimals)
}

/// `text` with the five XML special characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab and newline are not allowed in XML 1.0.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// `name` cut to `max` characters with an ellipsis.
fn short(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_string()
    } else {
        let head: String = name.chars().take(max - 1).collect();
        format!("{head}…")
    }
}

/// FNV-1a: a fixed hash, so a node keeps its colour from run to run and build to build.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;
    use tessera_backends::timing::EngineBusy;
    use tessera_ir::QueueId;

    fn parse(svg: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}\n{svg}"))
    }

    fn texts(doc: &roxmltree::Document) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(str::to_string))
            .collect()
    }

    #[test]
    fn hand_made_report_draws_one_rect_per_instruction() {
        let svg = svg_timeline_with(
            &testing::report(),
            &SvgOptions {
                title: Some("mlp".into()),
                ..SvgOptions::default()
            },
        );
        let doc = parse(&svg);
        let root = doc.root_element();
        assert_eq!(root.attribute("width"), Some("1400"));
        let texts = texts(&doc);
        for lane in ["pe", "dve", "dma0"] {
            assert!(texts.iter().any(|t| t == lane), "no lane label {lane}");
        }
        assert!(texts.contains(&"mlp on trn2: 10.00 us, MFU 40.0 %".to_string()));
        assert!(texts.contains(&"fc1 (60 %)".to_string()));
        assert!(texts.contains(&"40 %".to_string()), "pe busy share");
        // Instruction rectangles are the ones with a tooltip.
        let insts: Vec<roxmltree::Node> = root
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.children().any(|c| c.has_tag_name("title")))
            .collect();
        assert_eq!(insts.len(), 6);
        // The first matmul runs 2..4 us of 10: x from 70 + 0.2 * 1266 to 70 + 0.4 * 1266.
        let m = insts[0];
        assert_eq!(m.attribute("x"), Some("323.20"));
        assert_eq!(m.attribute("width"), Some("253.20"));
        assert_eq!(m.attribute("fill"), Some(STRONG[0]));
        // Axis ticks every 1 us, up to 10.
        assert!(texts.contains(&"10".to_string()));
        assert!(texts.contains(&"time (us)".to_string()));
    }

    #[test]
    fn names_are_escaped() {
        let mut r = testing::report();
        r.insts[0].node = "a<b & \"c\"".into();
        r.engines[0].name = "p<e>".into();
        let svg = svg_timeline_with(
            &r,
            &SvgOptions {
                title: Some("x & y".into()),
                ..SvgOptions::default()
            },
        );
        let doc = parse(&svg);
        assert!(texts(&doc).iter().any(|t| t == "p<e>"));
    }

    #[test]
    fn many_tiny_instructions_are_merged() {
        let mut r = testing::empty();
        r.latency_ns = 10_000.0;
        r.engines.push(EngineBusy {
            name: "dve".into(),
            engine: Engine::Dve,
            busy_ns: 10_000.0,
        });
        // 5000 back-to-back 2 ns instructions: the first half node a, then node b.
        for i in 0..5000u32 {
            r.insts.push(InstTiming {
                queue: QueueId(0),
                index: i,
                start_ns: 2.0 * f64::from(i),
                end_ns: 2.0 * f64::from(i + 1),
                opcode: "tensor_tensor",
                node: if i < 2500 { "a" } else { "b" }.into(),
                flops: 1.0,
                hbm_bytes: 0.0,
            });
        }
        let svg = svg_timeline(&r);
        let doc = parse(&svg);
        let insts = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.children().any(|c| c.has_tag_name("title")))
            .count();
        assert_eq!(insts, 2);
        assert!(svg.contains("a: 2500 instructions"));
        assert!(svg.len() < 20_000, "{} bytes", svg.len());
    }

    #[test]
    fn empty_report_is_well_formed() {
        let svg = svg_timeline(&testing::empty());
        parse(&svg);
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(10.0), (1.0, 0));
        assert_eq!(tick_step(218.6), (25.0, 0));
        assert_eq!(tick_step(0.9), (0.1, 1));
        assert_eq!(tick_step(2.2), (0.25, 2));
        assert_eq!(tick_step(350.0), (50.0, 0));
    }

    #[test]
    fn colours_are_stable() {
        assert_eq!(fnv1a("fc1"), fnv1a("fc1"));
        assert_ne!(fnv1a("fc1"), fnv1a("fc2"));
    }
}
