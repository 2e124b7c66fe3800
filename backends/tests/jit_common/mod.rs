//! Shared helpers of the jit tests: compiling the bundled ONNX models to machine programs with
//! their inputs bound, and comparing jit outputs with interp's.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use tessera_backends::interp::{self, MachineRunOptions};
use tessera_compiler::driver::{CompileOptions, Compiled, compile_file};
use tessera_ir::{HostTensor, MachineProgram, TargetSpec};

pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/models")
}

/// A compiled model's machine program and its inputs (bundled `.npy` inputs and weights) keyed
/// by program tensor name.
pub fn model(name: &str) -> (MachineProgram, BTreeMap<String, HostTensor>) {
    let dir = models_dir().join(name);
    let compiled: Compiled =
        compile_file(&dir.join("model.onnx"), &CompileOptions::default()).expect("compiles");
    let program = compiled.machine;
    let mut bound = BTreeMap::new();
    for e in &compiled.artifact.signature.inputs {
        let file = dir
            .join("inputs")
            .join(format!("{}.npy", e.name.replace(['/', ':'], "_")));
        let array: ndarray::ArrayD<f32> = ndarray_npy::read_npy(&file).expect("reads npy");
        let tensor = program.tensor(e.tensor).expect("input tensor");
        bound.insert(
            tensor.name.clone(),
            HostTensor::from_array_f32(&array, e.dtype),
        );
    }
    for (id, data) in &compiled.artifact.weights {
        let t = program.tensor(*id).expect("weight tensor");
        bound.insert(t.name.clone(), data.clone());
    }
    (program, bound)
}

pub fn interp_run(
    program: &MachineProgram,
    inputs: &BTreeMap<String, HostTensor>,
) -> BTreeMap<String, HostTensor> {
    interp::run_machine(
        program,
        &TargetSpec::trn2(),
        inputs,
        &MachineRunOptions::default(),
    )
    .expect("interp runs")
}

/// Largest |a - b| over two tensors of the same shape, and the largest |b|.
pub fn max_diff(a: &HostTensor, b: &HostTensor) -> (f64, f64) {
    assert_eq!(a.shape, b.shape);
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let diff = av
        .iter()
        .zip(&bv)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    (diff, bv.iter().map(|y| y.abs()).fold(0.0, f64::max))
}

/// jit output within `1e-5 * max|interp| + 1e-6` of interp's (the matmul tolerance).
pub fn assert_close(jit: &BTreeMap<String, HostTensor>, want: &BTreeMap<String, HostTensor>) {
    assert_eq!(
        jit.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, w) in want {
        let (diff, norm) = max_diff(&jit[name], w);
        assert!(
            diff <= 1e-5 * norm + 1e-6,
            "{name}: max difference {diff} against max magnitude {norm}"
        );
    }
}
