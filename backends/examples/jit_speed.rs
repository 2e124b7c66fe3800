//! A criterion-free speed check of the jit against interp, steady state (after one warm-up run
//! that also fills the jit's kernel cache): the bundled FFN example and a 512x512x512 matmul,
//! both compiled to machine programs. interp runs without its race detector so the comparison
//! is execution against execution.
//!
//! `cargo run --release -p tessera-backends --example jit_speed`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tessera_backends::interp::{self, MachineRunOptions};
use tessera_backends::jit::Jit;
use tessera_compiler::driver::{CompileOptions, Compiled, compile_file, compile_graph};
use tessera_ir::graph::{Graph, GraphOp, TensorType};
use tessera_ir::{DType, HostTensor, MachineProgram, TargetSpec};

fn bind(
    compiled: &Compiled,
    given: &BTreeMap<String, HostTensor>,
) -> (MachineProgram, BTreeMap<String, HostTensor>) {
    let program = compiled.machine.clone();
    let mut bound = BTreeMap::new();
    for e in &compiled.artifact.signature.inputs {
        let t = program.tensor(e.tensor).expect("input tensor");
        bound.insert(t.name.clone(), given[&e.name].clone());
    }
    for (id, data) in &compiled.artifact.weights {
        let t = program.tensor(*id).expect("weight tensor");
        bound.insert(t.name.clone(), data.clone());
    }
    (program, bound)
}

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn compare(name: &str, program: &MachineProgram, inputs: &BTreeMap<String, HostTensor>) {
    let target = TargetSpec::trn2();
    let options = MachineRunOptions {
        seed: 0,
        check_races: false,
    };
    let mut jit = Jit::new().expect("jit");
    let runs = 7;
    let ti = median(
        || {
            interp::run_machine(program, &target, inputs, &options).expect("interp");
        },
        runs,
    );
    let tj = median(
        || {
            jit.run_machine(program, &target, inputs).expect("jit");
        },
        runs,
    );
    println!(
        "{name}: {} instructions; interp {:.2} ms, jit {:.2} ms, speedup {:.1}x; {:?}",
        program.inst_count(),
        ti.as_secs_f64() * 1e3,
        tj.as_secs_f64() * 1e3,
        ti.as_secs_f64() / tj.as_secs_f64(),
        jit.stats()
    );
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/models/ffn");
    let compiled =
        compile_file(&dir.join("model.onnx"), &CompileOptions::default()).expect("compiles");
    let x: ndarray::ArrayD<f32> =
        ndarray_npy::read_npy(dir.join("inputs/x.npy")).expect("reads x.npy");
    let given = BTreeMap::from([("x".to_string(), HostTensor::from_array_f32(&x, DType::F32))]);
    let (program, inputs) = bind(&compiled, &given);
    compare("ffn", &program, &inputs);

    let n = 512;
    let mut g = Graph::new("matmul");
    let a = g.add_input("a", TensorType::new(DType::F32, &[n, n]));
    let b = g.add_input("b", TensorType::new(DType::F32, &[n, n]));
    let y = g
        .add_node("y", GraphOp::MatMul, &[a, b])
        .expect("matmul node")[0];
    g.outputs.push(y);
    let compiled = compile_graph(g, &CompileOptions::default()).expect("compiles");
    let data = |seed: usize| {
        let v: Vec<f64> = (0..n * n)
            .map(|i| (((i * 7919 + seed) % 1000) as f64) / 500.0 - 1.0)
            .collect();
        HostTensor::from_f64(DType::F32, &[n, n], &v)
    };
    let given = BTreeMap::from([("a".to_string(), data(1)), ("b".to_string(), data(2))]);
    let (program, inputs) = bind(&compiled, &given);
    compare("matmul 512x512x512", &program, &inputs);
}
