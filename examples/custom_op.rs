//! A custom operator from a Rust program: register your own kernel for an ONNX operator the
//! library does not have, compile a model that uses it, and run it.
//!
//! The model (`examples/custom_op/model.onnx`, written by `examples/custom_op/make_model.py`)
//! is `MatMul -> com.example:FastRmsNorm -> Relu`. This program registers `FastRmsNorm` with
//! a shape rule and a kernel written with the Rust builder (any number of rows, in blocks of
//! 128 partitions; the `epsilon` attribute is read from the node), compiles the model with the
//! registry, runs it on the checked emulator and compares with the expected output the script
//! computed with numpy. The same model compiles from the command line with the kernel written
//! in the text format:
//!
//! ```sh
//! tessera run examples/custom_op/model.onnx --inputs-dir examples/custom_op/inputs \
//!     --custom-op com.example:FastRmsNorm=examples/custom_op/rms_norm.tile
//! ```
//!
//! Run with `cargo run --release --example custom_op`.

use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;
use std::collections::BTreeMap;
use std::path::Path;
use tessera::compiler::custom::{CustomError, CustomOps, KernelRequest};
use tessera::compiler::driver::{CompileOptions, compile_file};
use tessera::ir::graph::{CustomAttr, TensorType};
use tessera::ir::{ActFunc, AluOp, DType, HostTensor, TileProgram};
use tessera::kernels::KernelBuilder;
use tessera::runtime::{RunOptions, Session};

/// `y = x * rsqrt(mean(x^2) + epsilon) * gamma` over the last axis of `x: [rows, cols]`.
fn rms_norm_shape(
    inputs: &[TensorType],
    _attrs: &[(String, CustomAttr)],
) -> Result<Vec<TensorType>, CustomError> {
    let [x, gamma] = inputs else {
        return Err(format!("takes x and gamma, got {} operands", inputs.len()).into());
    };
    let cols = match x.shape.as_slice() {
        [_, cols] => *cols,
        s => return Err(format!("x must be [rows, cols], got {s:?}").into()),
    };
    if gamma.shape != [cols] || x.dtype != DType::F32 || gamma.dtype != DType::F32 {
        return Err(format!(
            "x must be f32 [rows, {cols}] and gamma f32 [{cols}], got {}{:?} and {}{:?}",
            x.dtype, x.shape, gamma.dtype, gamma.shape
        )
        .into());
    }
    Ok(vec![x.clone()])
}

/// The kernel, as a kernel author writes it: 128 rows at a time, one row per partition.
fn rms_norm_kernel(req: &KernelRequest<'_>) -> Result<TileProgram, CustomError> {
    let (rows, cols) = (req.inputs[0].shape[0], req.inputs[0].shape[1]);
    let eps = req
        .attrs
        .iter()
        .find_map(|(k, v)| match (k.as_str(), v) {
            ("epsilon", CustomAttr::Float(e)) => Some(*e),
            _ => None,
        })
        .unwrap_or(1e-6);
    let mut kb = KernelBuilder::new("fast_rms_norm", req.target);
    let x = kb.input("x", DType::F32, &[rows, cols])?;
    let gamma = kb.input("gamma", DType::F32, &[cols])?;
    let y = kb.output("y", DType::F32, &[rows, cols])?;
    let p_max = req.target.partitions as usize;
    // gamma on every partition, loaded once (a stride-0 DMA over partitions).
    let parts = rows.min(p_max) as u32;
    let g = kb.sbuf("gamma", DType::F32, parts, &[cols])?;
    kb.dma_copy(&g, gamma.bcast_row(parts, 0, 0..cols))?;
    for start in (0..rows).step_by(p_max) {
        let n = (rows - start).min(p_max);
        let p = n as u32;
        let xt = kb.sbuf("x", DType::F32, p, &[cols])?;
        let sq = kb.sbuf("sq", DType::F32, p, &[cols])?;
        let ss = kb.sbuf("sum_sq", DType::F32, p, &[1])?;
        let yt = kb.sbuf("y", DType::F32, p, &[cols])?;
        kb.dma_copy(&xt, x.block(start..start + n, 0..cols))?;
        // The square's accumulator gives each row's sum of squares in the same pass.
        kb.activation(&sq, &xt, ActFunc::Square, 1.0, 0.0, Some(&ss.all()))?;
        // rstd = rsqrt(sum / cols + eps), in place.
        kb.activation(&ss, &ss, ActFunc::Rsqrt, 1.0 / cols as f64, eps, None)?;
        kb.tensor_scalar(&yt, &xt, AluOp::Mul, &ss)?;
        kb.tensor_tensor(&yt, &yt, AluOp::Mul, g.view(0..p, &[]))?;
        kb.dma_copy(y.block(start..start + n, 0..cols), &yt)?;
        for t in [yt, ss, sq, xt] {
            kb.free(t)?;
        }
    }
    Ok(kb.finish()?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/custom_op");
    let mut custom_ops = CustomOps::new();
    custom_ops.register_fn(
        "com.example",
        "FastRmsNorm",
        rms_norm_shape,
        rms_norm_kernel,
    );
    let options = CompileOptions {
        custom_ops,
        ..CompileOptions::default()
    };
    let compiled = compile_file(&dir.join("model.onnx"), &options)?;
    let plan = compiled
        .opt_report
        .as_ref()
        .map(|r| r.plan.len())
        .unwrap_or(0);
    println!(
        "compiled {}: {plan} kernels, {} instructions",
        compiled.graph.name,
        compiled.machine.inst_count()
    );

    let read = |p: &Path| -> Result<ArrayD<f32>, Box<dyn std::error::Error>> {
        Ok(ArrayD::<f32>::read_npy(std::fs::File::open(p)?)?)
    };
    let x = read(&dir.join("inputs/x.npy"))?;
    let want = read(&dir.join("expected/y.npy"))?;
    let session = Session::new(compiled.artifact)?;
    let x = HostTensor::from_f64(
        DType::F32,
        x.shape(),
        &x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
    );
    let outputs = session.run(
        &BTreeMap::from([("x".to_string(), x)]),
        &RunOptions::default(),
    )?;
    let got = outputs["y"].to_f64_vec();
    let scale = want.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
    let worst = got
        .iter()
        .zip(want.iter())
        .fold(0.0f64, |m, (g, &w)| m.max((g - f64::from(w)).abs()));
    println!(
        "ran on the checked emulator: max |error| vs numpy = {worst:.2e} (outputs up to {scale:.2})"
    );
    // fp32 arithmetic over 64-element rows: a few units in the last place of the scale.
    if worst > 1e-5 * scale {
        return Err(format!("output differs from numpy's by {worst:.2e}").into());
    }
    println!("ok");
    Ok(())
}
