//! `tessera bench`: load (or compile) a model once, run it N times on the emulator, and report
//! the one-time cost and the median, min and max wall-clock time per run.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tessera_compiler::driver::CompileOptions;
use tessera_ir::{DType, HostTensor};
use tessera_runtime::{Backend, RunOptions, Session};

/// What `bench` was asked to do.
pub struct BenchOptions<'a> {
    /// `--input NAME=FILE.npy` pairs.
    pub named: &'a [(String, PathBuf)],
    /// `--inputs-dir DIR`.
    pub inputs_dir: Option<&'a Path>,
    /// Timed runs (at least 1).
    pub iters: usize,
    /// Untimed runs before the timed ones.
    pub warmup: usize,
    /// Seed for random inputs and for the interleaving of engine queues.
    pub seed: u64,
    /// Print one JSON object instead of the text summary.
    pub json: bool,
}

/// Per-run statistics in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Median (mean of the two middle runs when the count is even).
    pub median: f64,
    /// Fastest run.
    pub min: f64,
    /// Slowest run.
    pub max: f64,
}

/// Median, min and max of `times` (which must not be empty).
pub fn stats(times: &[f64]) -> Stats {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Stats {
        median,
        min: sorted[0],
        max: sorted[n - 1],
    }
}

/// SplitMix64: a small, seedable generator (inputs only need to be reproducible, not strong).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A random tensor: floats uniform in [-1, 1); integers in 0..4 (small enough to be valid
/// indices for a Gather); booleans 0 or 1.
fn random_tensor(dtype: DType, shape: &[usize], rng: &mut SplitMix) -> HostTensor {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n)
        .map(|_| match dtype {
            DType::Bool => (rng.next() & 1) as f64,
            d if d.is_integer() => (rng.next() % 4) as f64,
            _ => rng.unit() * 2.0 - 1.0,
        })
        .collect();
    HostTensor::from_f64(dtype, shape, &values)
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Interp => "interp",
        Backend::Jit => "jit",
        Backend::Mlir => "mlir",
    }
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// `bench`: compile or load once, bind inputs, run `warmup` + `iters` times, report.
pub fn bench_cmd(
    model: &Path,
    options: &CompileOptions,
    run: &RunOptions,
    bench: &BenchOptions,
) -> Result<(), String> {
    if bench.iters == 0 {
        return Err("--iters must be at least 1".into());
    }
    // One-time cost: compiling an ONNX model, or reading and validating an artifact.
    let (session, compile_ms, load_ms) = if super::model::is_artifact(model)? {
        let t = Instant::now();
        let s = Session::load(model).map_err(|e| format!("{}: {e}", model.display()))?;
        (s, None, ms(t))
    } else {
        let t = Instant::now();
        let c = super::model::compile(model, options)?;
        let compile_ms = ms(t);
        let t = Instant::now();
        let s = Session::new(c.artifact).map_err(|e| e.to_string())?;
        (s, Some(compile_ms), ms(t))
    };

    let random = bench.named.is_empty() && bench.inputs_dir.is_none();
    let inputs: BTreeMap<String, HostTensor> = if random {
        let mut rng = SplitMix(bench.seed);
        session
            .artifact()
            .signature
            .inputs
            .iter()
            .map(|e| (e.name.clone(), random_tensor(e.dtype, &e.shape, &mut rng)))
            .collect()
    } else {
        super::model::read_inputs(&session, bench.named, bench.inputs_dir)?
    };

    let total = bench.warmup + bench.iters;
    let progress = std::io::stderr().is_terminal();
    let mut times = Vec::with_capacity(bench.iters);
    for i in 0..total {
        if progress {
            let phase = if i < bench.warmup { "warmup" } else { "run" };
            eprint!("\rbench: {phase} {}/{total}", i + 1);
        }
        let t = Instant::now();
        session.run(&inputs, run).map_err(|e| {
            if progress {
                eprintln!();
            }
            e.to_string()
        })?;
        if i >= bench.warmup {
            times.push(ms(t));
        }
    }
    if progress {
        eprint!("\r\x1b[2K");
    }

    let s = stats(&times);
    // Microsecond resolution: the finer digits are noise and make the JSON hard to read.
    let us = |v: f64| (v * 1e3).round() / 1e3;
    let backend = backend_name(run.backend);
    if bench.json {
        let doc = serde_json::json!({
            "load_ms": us(load_ms),
            "median_ms": us(s.median),
            "min_ms": us(s.min),
            "max_ms": us(s.max),
            "iters": bench.iters,
            "backend": backend,
            "compile_ms": compile_ms.map(us),
            "warmup": bench.warmup,
            "model": session.artifact().program.name,
            "inputs": if random { "random" } else { "files" },
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        println!(
            "{} ({}) on {backend}, {} inputs",
            session.artifact().program.name,
            model.display(),
            if random {
                format!("random (seed {})", bench.seed)
            } else {
                "given".to_string()
            }
        );
        if let Some(c) = compile_ms {
            println!("  compile   {c:>10.3} ms (once)");
        }
        println!("  load      {load_ms:>10.3} ms (once)");
        println!(
            "  per run   {:>10.3} ms median, {:.3} min, {:.3} max ({} runs after {} warmup)",
            s.median, s.min, s.max, bench.iters, bench.warmup
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_odd_and_even_counts() {
        let s = stats(&[3.0, 1.0, 2.0]);
        assert_eq!(
            s,
            Stats {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        let s = stats(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(s.median, 2.5);
        assert_eq!((s.min, s.max), (1.0, 4.0));
    }

    #[test]
    fn random_inputs_are_seeded_and_in_range() {
        let a = random_tensor(DType::F32, &[4, 8], &mut SplitMix(7));
        let b = random_tensor(DType::F32, &[4, 8], &mut SplitMix(7));
        let c = random_tensor(DType::F32, &[4, 8], &mut SplitMix(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.to_f64_vec().iter().all(|v| (-1.0..1.0).contains(v)));
        let i = random_tensor(DType::I64, &[100], &mut SplitMix(1));
        assert!(i.to_f64_vec().iter().all(|v| (0.0..4.0).contains(v)));
    }
}
