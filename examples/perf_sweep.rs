//! Performance sweep: compiles matmuls, element-wise ops, softmax and layer norm of several sizes
//! for `trn2`, times them with the timing model and prints each against its roofline. With
//! `--write` it also replaces the table in `docs/performance.md`.
//!
//! Run with `cargo run --release --example perf_sweep [-- --write]`.

use std::time::Instant;
use tessera::compiler::driver::AutoCast;
use tessera::ir::{DType, TargetSpec};
use tessera::perf::{self, Measurement};

/// Marks the generated table in docs/performance.md.
const BEGIN: &str = "<!-- perf_sweep:begin -->";
const END: &str = "<!-- perf_sweep:end -->";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = TargetSpec::trn2();
    let mut rows: Vec<String> = Vec::new();
    let mut row = |case: String, m: &Measurement, work: String, compile_s: f64| {
        let r = &m.report;
        let line = format!(
            "| {case} | {:.1} | {work} | {:.1} ({}) | {:.3} | {:.3} | {:.3} | {} | {:.2} |",
            r.latency_ns / 1e3,
            m.roofline_ns / 1e3,
            m.bound.name(),
            m.fraction(),
            r.mfu(),
            r.busy_fraction("pe"),
            m.insts,
            compile_s,
        );
        println!("{line}");
        rows.push(line);
    };
    println!("{}", header());

    for &n in &[128usize, 256, 512, 1024, 2048, 4096] {
        for (dtype, name) in [(DType::F32, "f32"), (DType::Bf16, "bf16")] {
            let t0 = Instant::now();
            let m =
                perf::measure_graph(perf::matmul_graph(n, n, n, dtype)?, &target, AutoCast::None)?;
            let s = t0.elapsed().as_secs_f64();
            let tflops = m.report.pe_flops / m.report.latency_ns * 1e-3;
            row(
                format!("matmul {n}^3 {name}"),
                &m,
                format!("{tflops:.1} TFLOP/s"),
                s,
            );
        }
    }
    for log in [16u32, 18, 20, 22, 24] {
        let elems = 1usize << log;
        let shape = [elems / 4096, 4096];
        for (op, graph) in [
            ("add", perf::add_graph(&shape)?),
            ("relu", perf::relu_graph(&shape)?),
        ] {
            let t0 = Instant::now();
            let m = perf::measure_graph(graph, &target, AutoCast::None)?;
            let s = t0.elapsed().as_secs_f64();
            let gbs = m.report.hbm_bytes / m.report.latency_ns;
            row(
                format!("{op} f32 [{}, {}] (2^{log})", shape[0], shape[1]),
                &m,
                format!("{gbs:.1} GB/s"),
                s,
            );
        }
    }
    for (r, c) in [
        (1024usize, 1024usize),
        (4096, 1024),
        (4096, 4096),
        (1024, 16384),
    ] {
        let t0 = Instant::now();
        let m = perf::measure_graph(perf::softmax_graph(r, c)?, &target, AutoCast::None)?;
        let s = t0.elapsed().as_secs_f64();
        let gbs = m.report.hbm_bytes / m.report.latency_ns;
        row(
            format!("softmax f32 [{r}, {c}]"),
            &m,
            format!("{gbs:.1} GB/s"),
            s,
        );
        let t0 = Instant::now();
        let m = perf::measure_layer_norm(r, c, &target)?;
        let s = t0.elapsed().as_secs_f64();
        let gbs = m.report.hbm_bytes / m.report.latency_ns;
        row(
            format!("layer_norm f32 [{r}, {c}]"),
            &m,
            format!("{gbs:.1} GB/s"),
            s,
        );
    }

    if std::env::args().any(|a| a == "--write") {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/performance.md");
        let doc = std::fs::read_to_string(&path)?;
        let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
            return Err(format!("{} has no {BEGIN} ... {END} markers", path.display()).into());
        };
        let table = format!("{BEGIN}\n{}\n{}\n", header(), rows.join("\n"));
        let updated = format!("{}{table}{}", &doc[..b], &doc[e..]);
        std::fs::write(&path, updated)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn header() -> String {
    "| case | latency (us) | achieved | roofline (us, bound) | fraction of roofline | MFU | PE busy | instructions | compile+time (s) |\n\
     |---|---|---|---|---|---|---|---|---|"
        .to_string()
}
