//! Compile time of the real models at `-O0` (op by op) and `-O2` (the e-graph optimiser), the
//! figure the optimiser issue bounds (ResNet-50 at `-O2` under 3 s on the 2-core CI machine).
//!
//! Needs the generated models: `python3 scripts/make_real_models.py target/realmodels` (the
//! README's test command does it). Run with `cargo bench --bench compile`; `-- resnet50` picks
//! one model.

use criterion::{Criterion, criterion_group, criterion_main};
use std::path::Path;
use std::time::Duration;
use tessera::compiler::driver::{CompileOptions, compile_file};

fn compile(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/realmodels");
    let mut group = c.benchmark_group("compile");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(1));
    for model in ["resnet50", "bert_encoder_layer", "gpt_decoder_2block"] {
        let path = dir.join(model).join("model.onnx");
        if !path.exists() {
            eprintln!(
                "skipping {model}: {} is missing (python3 scripts/make_real_models.py target/realmodels)",
                path.display()
            );
            continue;
        }
        for level in [0u8, 2] {
            let options = CompileOptions {
                opt_level: level,
                ..CompileOptions::default()
            };
            group.bench_function(format!("{model}/-O{level}"), |b| {
                b.iter(|| compile_file(&path, &options).expect("the model compiles"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, compile);
criterion_main!(benches);
