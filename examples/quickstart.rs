//! Quickstart: build two kernels with the kernel library, look at the tile program, run them on
//! the checked reference emulator and compare with an ndarray reference.
//!
//! Run with `cargo run --release --example quickstart`.

use ndarray::{Array2, ArrayD, Axis, Ix2, IxDyn};
use tessera::ir::{DType, TargetSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = TargetSpec::trn2();

    // 1. A tiled matmul for sizes that are not multiples of the tile sizes.
    let (m, k, n) = (53, 200, 77);
    let kernel = tessera::kernels::library::matmul(&target, m, k, n, DType::F32, DType::F32)?;
    let text = tessera::ir::text::print(&kernel);
    println!(
        "matmul {m}x{k}x{n}: {} instructions; the first lines of its tile program:",
        kernel.insts.len()
    );
    for line in text.lines().take(12) {
        println!("  {line}");
    }
    let a = pseudo_random(&[m, k], 1);
    let b = pseudo_random(&[k, n], 2);
    let out = tessera::simulate(&kernel, &[("a", a.clone()), ("b", b.clone())])?;
    let want = to_f64(&a).dot(&to_f64(&b));
    let got = to_f64(&out["c"]);
    let err = (&got - &want).mapv(|x| x * x).sum().sqrt() / want.mapv(|x| x * x).sum().sqrt();
    println!("matmul on the emulator: relative error vs ndarray (f64) = {err:.2e}");
    if err > 1e-4 {
        return Err(format!("matmul mismatch: relative error {err:.2e}").into());
    }

    // 2. Softmax over the last axis.
    let (rows, cols) = (130, 300);
    let kernel = tessera::kernels::library::softmax(&target, &[rows, cols], DType::F32)?;
    let x = pseudo_random(&[rows, cols], 3);
    let out = tessera::simulate(&kernel, &[("x", x.clone())])?;
    let x64 = to_f64(&x);
    let mut want = x64.clone();
    for mut row in want.axis_iter_mut(Axis(0)) {
        let max = row.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
    let got = to_f64(&out["y"]);
    let worst = (&got - &want)
        .iter()
        .zip(want.iter())
        .map(|(d, w)| d.abs() / w.abs())
        .fold(0.0, f64::max);
    println!("softmax {rows}x{cols} on the emulator: worst relative error = {worst:.2e}");
    if worst > 1e-5 {
        return Err(format!("softmax mismatch: relative error {worst:.2e}").into());
    }
    println!("ok");
    Ok(())
}

/// Deterministic values in [-1, 1) (a simple LCG is enough for a demo).
fn pseudo_random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

fn to_f64(a: &ArrayD<f32>) -> Array2<f64> {
    a.mapv(|v| v as f64)
        .into_dimensionality::<Ix2>()
        .expect("2-D")
}
