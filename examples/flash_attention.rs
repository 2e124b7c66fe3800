//! Flash attention, written as a kernel author writes it: `o = softmax(q k^T / sqrt(d)) v` for
//! one head, with the `[S, S]` score matrix never leaving the chip.
//!
//! The kernel (`flash_attention` below) keeps `k^T` and `v` on chip, 128 query rows on the
//! partitions, and walks the keys 512 at a time (one PSUM bank of f32 scores). For each key
//! block:
//!
//! 1. scores `q k^T` on the tensor engine (contracting over the head dimension, which sits on
//!    the partitions of both operands), into PSUM;
//! 2. the row maximum of the block, the new running maximum `m`, and the correction
//!    `exp(m_old - m_new)` for what was accumulated so far;
//! 3. `p = exp(scale * s - m)` straight out of PSUM on the activation engine, which also gives
//!    the row sums `l` of the block in the same instruction, `p` stored as bf16;
//! 4. `p^T`, 128 keys at a time, on the tensor engine (a transpose is a matmul with the
//!    identity), so the keys sit on the partitions, then `p v` accumulated into PSUM, and
//!    `o_acc = o_acc * correction + p v`.
//!
//! Finally each row is divided by its sum. Inputs and output are bf16; scores, maxima, sums and
//! the accumulator are f32.
//!
//! For each sequence length the example checks the kernel against an f64 ndarray reference
//! (on the checked emulator for the shortest, on the JIT for all), then profiles it on the
//! timing model next to the unfused attention the compiler builds at `-O0` (MatMul, Mul,
//! Softmax, MatMul, each its own kernel with the scores going through HBM).
//!
//! Run with `cargo run --release --example flash_attention [-- S...]` (default: 128 256 512
//! 1024 2048 4096).

use ndarray::{Array2, Axis};
use std::collections::BTreeMap;
use tessera::compiler::driver::{CompileOptions, compile_graph};
use tessera::ir::graph::{BinaryOp, Graph, GraphOp, TensorType};
use tessera::ir::{ActFunc, AluOp, DType, Engine, HostTensor, ReduceOp, TargetSpec, TileProgram};
use tessera::kernels::{KernelBuilder, KernelError};

/// Head dimension.
const D: usize = 64;
/// Query rows per block: one per partition.
const ROWS: usize = 128;
/// Keys per score block: 512 f32 scores per partition fill one 2 KiB PSUM bank.
const KEYS: usize = 512;
/// Keys per transpose and per `p v` matmul (the tensor engine's 128 partitions).
const CHUNK: usize = 128;

/// `o[S, D] = softmax(q k^T * scale) v` for bf16 `q`, `k`, `v` of `[S, D]`, S a multiple of 128.
fn flash_attention(target: &TargetSpec, s: usize) -> Result<TileProgram, KernelError> {
    let scale = 1.0 / (D as f64).sqrt();
    let mut kb = KernelBuilder::new(format!("flash_attention_{s}"), target);
    let q = kb.input("q", DType::Bf16, &[s, D])?;
    let k = kb.input("k", DType::Bf16, &[s, D])?;
    let v = kb.input("v", DType::Bf16, &[s, D])?;
    let o = kb.output("o", DType::Bf16, &[s, D])?;
    let rows = ROWS as u32;

    // k^T and v stay on chip for the whole kernel (8 KiB and 4 KiB per partition at S = 4096):
    // every query block reads them, so they are loaded once, not once per query block.
    let k_t = kb.sbuf("k_t", DType::Bf16, D as u32, &[s])?;
    for k0 in (0..s).step_by(KEYS) {
        let ks = k0..(k0 + KEYS).min(s);
        kb.dma_copy(k_t.cols(0..D as u32, ks.clone()), k.block_t(ks, 0..D))?;
    }
    let mut v_chunks = Vec::new();
    for c0 in (0..s).step_by(CHUNK) {
        let chunk = kb.sbuf("v", DType::Bf16, CHUNK as u32, &[D])?;
        kb.dma_copy(&chunk, v.block(c0..c0 + CHUNK, 0..D))?;
        v_chunks.push(chunk);
    }

    for q0 in (0..s).step_by(ROWS) {
        let qs = q0..q0 + ROWS;
        // q^T: the head dimension on partitions, this block's 128 queries along the free axis.
        let q_t = kb.sbuf("q_t", DType::Bf16, D as u32, &[ROWS])?;
        kb.dma_copy(&q_t, q.block_t(qs.clone(), 0..D))?;
        let m = kb.sbuf("m", DType::F32, rows, &[1])?;
        kb.memset(&m, -1e30)?;
        let l = kb.sbuf("l", DType::F32, rows, &[1])?;
        kb.memset(&l, 0.0)?;
        let acc = kb.sbuf("o_acc", DType::F32, rows, &[D])?;
        kb.memset(&acc, 0.0)?;
        for k0 in (0..s).step_by(KEYS) {
            let n = KEYS.min(s - k0);

            // 1. Scores for 128 queries x up to 512 keys.
            let scores = kb.psum("scores", DType::F32, rows, &[n])?;
            kb.nc_matmul(&scores, &q_t, k_t.cols(0..D as u32, k0..k0 + n), true, true)?;

            // 2. New running maximum (of the scaled scores) and the correction factor.
            let blk_max = kb.sbuf("block_max", DType::F32, rows, &[1])?;
            kb.tensor_reduce(&blk_max, &scores, ReduceOp::Max, 1)?;
            let m_new = kb.sbuf("m_new", DType::F32, rows, &[1])?;
            kb.tensor_scalar(&m_new, &blk_max, AluOp::Mul, scale)?;
            kb.tensor_tensor(&m_new, &m_new, AluOp::Max, &m)?;
            let neg_m = kb.sbuf("neg_m", DType::F32, rows, &[1])?;
            kb.tensor_scalar(&neg_m, &m_new, AluOp::Mul, -1.0)?;
            let corr = kb.sbuf("correction", DType::F32, rows, &[1])?;
            kb.activation(&corr, &m, ActFunc::Exp, 1.0, &neg_m, None)?;
            kb.tensor_copy(&m, &m_new)?;

            // 3. p = exp(scale * s - m), and its row sums, in one activation out of PSUM.
            let p = kb.sbuf("p", DType::Bf16, rows, &[n])?;
            let blk_sum = kb.sbuf("block_sum", DType::F32, rows, &[1])?;
            kb.activation(
                &p,
                &scores,
                ActFunc::Exp,
                scale,
                &neg_m,
                Some(&blk_sum.all()),
            )?;
            kb.tensor_tensor(&l, &l, AluOp::Mul, &corr)?;
            kb.tensor_tensor(&l, &l, AluOp::Add, &blk_sum)?;

            // 4. p v, 128 keys at a time: p^T (keys on partitions) by a tensor-engine
            //    transpose, evacuated from PSUM to bf16 alternately by the activation and
            //    vector engines (GpSimd cannot read PSUM), then accumulated in one PSUM bank;
            //    o_acc = o_acc * correction + p v.
            let pv = kb.psum("pv", DType::F32, rows, &[D])?;
            let chunks = n / CHUNK;
            for c in 0..chunks {
                let p_t_ps = kb.psum("p_t", DType::F32, CHUNK as u32, &[ROWS])?;
                kb.nc_transpose(&p_t_ps, p.cols(0..rows, c * CHUNK..(c + 1) * CHUNK))?;
                let p_t = kb.sbuf("p_t", DType::Bf16, CHUNK as u32, &[ROWS])?;
                let engine = if c % 2 == 0 { Engine::Act } else { Engine::Dve };
                kb.tensor_copy_on(engine, &p_t, &p_t_ps)?;
                let v_chunk = &v_chunks[(k0 / CHUNK) + c];
                kb.nc_matmul(&pv, &p_t, v_chunk, c == 0, c + 1 == chunks)?;
                kb.free(p_t)?;
                kb.free(p_t_ps)?;
            }
            kb.tensor_scalar(&acc, &acc, AluOp::Mul, &corr)?;
            kb.tensor_tensor(&acc, &acc, AluOp::Add, &pv)?;
            for t in [pv, blk_sum, p, corr, neg_m, m_new, blk_max, scores] {
                kb.free(t)?;
            }
        }
        // o = o_acc / l, rounded to bf16 on the way out.
        let out = kb.sbuf("o", DType::Bf16, rows, &[D])?;
        kb.tensor_scalar(&out, &acc, AluOp::Div, &l)?;
        kb.dma_copy(o.block(qs, 0..D), &out)?;
        for t in [out, acc, l, m, q_t] {
            kb.free(t)?;
        }
    }
    kb.finish()
}

/// The same attention as a graph, lowered op by op at `-O0`: the baseline the kernel beats.
fn unfused_graph(s: usize) -> Result<Graph, Box<dyn std::error::Error>> {
    let ty = |shape: &[usize]| TensorType {
        dtype: DType::Bf16,
        shape: shape.to_vec(),
    };
    let mut g = Graph::new(format!("attention_{s}"));
    let q = g.add_input("q", ty(&[s, D]));
    let k = g.add_input("k", ty(&[s, D]));
    let v = g.add_input("v", ty(&[s, D]));
    let k_t = g.add_node("k_t", GraphOp::Transpose { perm: vec![1, 0] }, &[k])?[0];
    let scores = g.add_node("scores", GraphOp::MatMul, &[q, k_t])?[0];
    let scale = g.add_constant(
        "scale",
        HostTensor::from_f64(DType::Bf16, &[1], &[1.0 / (D as f64).sqrt()]),
    );
    let scaled = g.add_node("scaled", GraphOp::Binary(BinaryOp::Mul), &[scores, scale])?[0];
    let p = g.add_node("softmax", GraphOp::Softmax { axis: 1 }, &[scaled])?[0];
    let o = g.add_node("pv", GraphOp::MatMul, &[p, v])?[0];
    g.outputs.push(o);
    Ok(g)
}

/// Deterministic bf16 values in [-1, 1).
fn input(s: usize, seed: u64) -> HostTensor {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f64> = (0..s * D)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    HostTensor::from_f64(DType::Bf16, &[s, D], &values)
}

/// softmax(q k^T / sqrt(d)) v in f64 from the (bf16-rounded) inputs.
fn reference(q: &HostTensor, k: &HostTensor, v: &HostTensor, s: usize) -> Array2<f64> {
    let m = |t: &HostTensor| Array2::from_shape_vec((s, D), t.to_f64_vec()).expect("[S, D]");
    let (q, k, v) = (m(q), m(k), m(v));
    let mut scores = q.dot(&k.t()) / (D as f64).sqrt();
    for mut row in scores.axis_iter_mut(Axis(0)) {
        let max = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|x| (x - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|x| x / sum);
    }
    scores.dot(&v)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let target = TargetSpec::trn2();
    let lengths: Vec<usize> = match std::env::args().skip(1).collect::<Vec<_>>() {
        a if a.is_empty() => vec![128, 256, 512, 1024, 2048, 4096],
        a => a.iter().map(|s| s.parse()).collect::<Result<_, _>>()?,
    };
    println!(
        "{:>6}  {:>10}  {:>10}  {:>12}  {:>12}  {:>8}",
        "S", "max |err|", "bound", "kernel (us)", "-O0 (us)", "speed-up"
    );
    for &s in &lengths {
        if s == 0 || s % ROWS != 0 {
            return Err(format!("S = {s}: this kernel takes multiples of {ROWS}").into());
        }
        let kernel = flash_attention(&target, s)?;
        let (q, k, v) = (input(s, 1), input(s, 2), input(s, 3));
        let inputs = BTreeMap::from([
            ("q".to_string(), q.clone()),
            ("k".to_string(), k.clone()),
            ("v".to_string(), v.clone()),
        ]);
        // Scheduled as the compiler schedules a model; the checked emulator (poison and race
        // checks) for the shortest length, the JIT (same results, much faster) for every one.
        let machine = tessera::schedule_kernel(&kernel, &target)?;
        if s == lengths[0] {
            tessera::run_scheduled_kernel(&machine, &kernel, &target, &inputs)?;
        }
        let out = tessera::backends::jit::run_machine(&machine, &target, &inputs)?;
        let got = out["o"].to_f64_vec();
        let want = reference(&q, &k, &v, s);
        let scale = want.iter().fold(0.0f64, |a, b| a.max(b.abs()));
        let err = got
            .iter()
            .zip(want.iter())
            .fold(0.0f64, |a, (g, w)| a.max((g - w).abs()));
        // bf16 tolerance, derived: p is rounded to bf16 before p v, each weight off by at most
        // 2^-9 of itself, which moves the weighted average of v by at most 2^-9 max|v|; the
        // output's rounding to bf16 adds at most 2^-9 |o| <= 2^-9 max|o|; the f32 work (exp,
        // sums, the running rescaling) is at the 2^-20 level, covered by 1e-5 max|v|.
        let v_max = v.to_f64_vec().iter().fold(0.0f64, |a, b| a.max(b.abs()));
        let bound = 2f64.powi(-9) * (v_max + scale) + 1e-5 * v_max;
        if err > bound {
            return Err(format!("S = {s}: error {err:.3e} over the bf16 bound {bound:.3e}").into());
        }

        let fused_ns = tessera::profile_kernel(&kernel, &target)?.latency_ns;
        let options = CompileOptions {
            opt_level: 0,
            ..CompileOptions::default()
        };
        let unfused = compile_graph(unfused_graph(s)?, &options)?;
        let unfused_ns = tessera::backends::timing::simulate(&unfused.machine, &target)?.latency_ns;
        println!(
            "{s:>6}  {err:>10.3e}  {bound:>10.3e}  {:>12.1}  {:>12.1}  {:>7.2}x",
            fused_ns / 1e3,
            unfused_ns / 1e3,
            unfused_ns / fused_ns
        );
        if fused_ns >= unfused_ns {
            return Err(format!("S = {s}: the kernel is not faster than -O0").into());
        }
    }
    println!("ok");
    Ok(())
}
