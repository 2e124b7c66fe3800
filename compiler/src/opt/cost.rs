//! The extraction cost: each e-node's kernel time estimated from the timing model's rules
//! (`tessera_ir::cost`), without building the kernel.
//!
//! A kernel streams its operands from HBM and its result back, and computes on the engines
//! meanwhile; engines overlap, so its time is its busiest resource plus one DMA latency to fill
//! the pipeline:
//! - DMA: bytes moved over the core's DMA bandwidth (the tighter of DMA and HBM bandwidth);
//! - tensor engine: `2 M K N` FLOPs at the peak rate of the operand dtype (fp32 runs at a
//!   quarter of the bf16 rate, `PE_FP32_SLOWDOWN`);
//! - vector/activation engines: one element per partition per cycle per step (the `nki.isa`
//!   cost notes the timing model follows), 128 partitions at once.
//!
//! Values that only rename storage (`Reshape`, `Identity`) and leaves cost nothing. The
//! estimates are checked against the timing model's estimate of the lowered kernels in the
//! tests (`compiler/tests/opt.rs`).

use super::lang::{EG, Op, TNode};
use tessera_ir::TargetSpec;
use tessera_ir::cost::{
    ACCESS_LATENCY_CYCLES, DMA_FIXED_NS, DVE_FIXED_CYCLES, PE_FP32_SLOWDOWN, PE_MIN_CYCLES,
    dma_efficiency,
};
use tessera_ir::graph::{FusedOp, GraphOp, TensorType};
use tessera_kernels::library;

fn bytes(t: &TensorType) -> f64 {
    (t.elems() * t.dtype.size_bytes()) as f64
}

/// Estimated time of one kernel, ns.
struct Work {
    hbm_bytes: f64,
    pe_flops: f64,
    /// Tensor-engine cycles of work that is not FLOPs (transposes).
    pe_cycles: f64,
    fp32_pe: bool,
    /// Element-steps on the vector/activation engines.
    vector_elems: f64,
    /// Vector-engine instructions whose fixed cost is not hidden behind their data (small
    /// per-row bookkeeping).
    small_insts: f64,
    /// DMA instructions whose fixed start cost is not hidden behind their data (small
    /// transfers), spread over the DMA engines.
    small_dmas: f64,
}

impl Work {
    fn ns(&self, target: &TargetSpec) -> f64 {
        let bw = target
            .dma_core_bytes_per_s
            .min(target.hbm_core_bytes_per_s());
        let dma = (self.hbm_bytes / bw * 1e9)
            .max(self.small_dmas * DMA_FIXED_NS / target.dma_engines.max(1) as f64);
        let peak = if self.fp32_pe {
            target.pe_fp32_flops
        } else {
            target.pe_bf16_flops
        };
        let pe = (self.pe_flops / peak * 1e9).max(self.pe_cycles / target.pe_hz * 1e9);
        let fixed = (ACCESS_LATENCY_CYCLES + DVE_FIXED_CYCLES) / target.dve_hz * 1e9;
        let vec = self.vector_elems / (target.partitions as f64 * target.dve_hz) * 1e9
            + self.small_insts * fixed;
        DMA_FIXED_NS + dma.max(pe).max(vec)
    }
}

/// The estimated time of `op` on operands of types `ins` giving `outs`, ns.
pub fn op_ns(op: &GraphOp, ins: &[&TensorType], outs: &[TensorType], target: &TargetSpec) -> f64 {
    if matches!(op, GraphOp::Reshape { .. } | GraphOp::Identity) {
        return 0.0;
    }
    if let GraphOp::Custom(c) = op {
        // The registered kernel's own estimate, made when the graph was prepared.
        return c.est_ns;
    }
    let in_bytes: f64 = ins.iter().map(|t| bytes(t)).sum();
    let out_bytes: f64 = outs.iter().map(bytes).sum();
    let out_elems: f64 = outs.iter().map(|t| t.elems() as f64).sum();
    let fp32 = ins
        .first()
        .is_some_and(|t| t.dtype == tessera_ir::DType::F32);
    let mut w = Work {
        hbm_bytes: in_bytes + out_bytes,
        pe_flops: 0.0,
        pe_cycles: 0.0,
        fp32_pe: fp32,
        vector_elems: out_elems,
        small_insts: 0.0,
        small_dmas: 0.0,
    };
    // `(trans_a, trans_b)`: the operands' layouts. The tensor engine contracts over
    // partitions, so an operand whose contiguous axis is not K is read element by element;
    // the stationary operand is loaded in 128-column tiles, whose runs are at most 512 bytes
    // (f32) even when its contiguous axis is M: both at the short-run DMA efficiency.
    let matmul = |w: &mut Work,
                  out: &TensorType,
                  (a_bytes, b_bytes): (f64, f64),
                  k: usize,
                  (trans_a, trans_b): (bool, bool),
                  swap: bool| {
        let r = out.shape.len();
        let (m, n) = (out.shape[r - 2], out.shape[r - 1]);
        let batch = out.elems() / (m * n).max(1);
        w.pe_flops = 2.0 * (batch * m * n * k) as f64;
        // The schedule's rows (the stationary operand's columns) and columns (moving).
        let (rows, cols, moving_bytes) = if swap {
            (n, m, a_bytes)
        } else {
            (m, n, b_bytes)
        };
        w.pe_cycles = batch as f64 * matmul_pe_cycles(rows, k, cols, fp32);
        // The moving operand streams past each resident stripe of eight 128-row tiles of the
        // stationary one once.
        let stripes = rows.div_ceil(8 * 128) as f64;
        w.hbm_bytes += moving_bytes * (stripes - 1.0).max(0.0);
        if !library::matmul_resident(target, rows, k, out.dtype) {
            // K too long for a resident stripe: both operands stream, one small DMA each per
            // (row tile, 512-column block, K tile), and each is re-read for every block of
            // the other.
            let (row_tiles, col_blocks) = (rows.div_ceil(128), cols.div_ceil(512));
            let stationary_bytes = if swap { b_bytes } else { a_bytes };
            w.hbm_bytes += stationary_bytes * (col_blocks as f64 - 1.0)
                + moving_bytes * (row_tiles as f64 - stripes);
            w.small_dmas = 2.0 * (batch * row_tiles * col_blocks * k.div_ceil(128)) as f64;
        }
        let short = 1.0 / dma_efficiency(4.0) - 1.0;
        // Stationary: always short runs (unless it is a single column); moving: short runs
        // when its contiguous axis is not K.
        let (a_short, b_short) = if swap {
            (!trans_a, true)
        } else {
            (true, trans_b)
        };
        if a_short && m > 1 {
            w.hbm_bytes += a_bytes * short;
        }
        if b_short && n > 1 {
            w.hbm_bytes += b_bytes * short;
        }
        if swap && m > 1 {
            // C^T blocks are stored (and residuals loaded) through transposing views.
            w.hbm_bytes += out_bytes * short;
        }
    };
    match op {
        GraphOp::MatMul | GraphOp::Gemm { .. } => {
            if let Some(out) = outs.first()
                && out.shape.len() >= 2
            {
                let k = match op {
                    GraphOp::Gemm { trans_a: true, .. } => ins[0].shape[0],
                    _ => *ins[0].shape.last().unwrap_or(&1),
                };
                let (trans_a, trans_b) = match op {
                    GraphOp::Gemm {
                        trans_a, trans_b, ..
                    } => (*trans_a, *trans_b),
                    _ => (false, false),
                };
                let ab = (bytes(ins[0]), bytes(ins[1]));
                matmul(&mut w, out, ab, k, (trans_a, trans_b), false);
            }
        }
        GraphOp::Fused(FusedOp::MatMul(m)) => {
            let a = &ins[0].shape;
            let k = if m.trans_a {
                a[a.len() - 2]
            } else {
                a[a.len() - 1]
            };
            let ab = (bytes(ins[0]), bytes(ins[1]));
            matmul(
                &mut w,
                &outs[0],
                ab,
                k,
                (m.trans_a, m.trans_b),
                m.swap_roles,
            );
        }
        GraphOp::Conv(_) | GraphOp::Fused(FusedOp::Conv(_)) => {
            // 2 x output elements x (C_in / group) x kernel taps, as the weights hold them.
            let wt = &ins[1].shape;
            let taps: usize = wt[1..].iter().product();
            w.pe_flops = 2.0 * out_elems * taps as f64;
        }
        GraphOp::Fused(FusedOp::Attention(_)) => {
            let (q, v) = (&ins[0].shape, &ins[2].shape);
            let r = q.len();
            let t = ins[1].shape[r - 2];
            let rows = (ins[0].elems() / q[r - 1]) as f64;
            w.pe_flops = 2.0 * rows * t as f64 * (q[r - 1] + v[r - 1]) as f64;
            // Scores: scale/mask, exp, row sums, rescales, and the transposes of P.
            w.vector_elems = 4.0 * rows * t as f64;
            // Per (query block, key block): about ten `[rows, 1]` instructions (block max,
            // running max, its negation, the rescale factor, the running sum, the output
            // rescale) that each pay the vector engine's fixed cost.
            let blocks = (rows / 128.0).ceil() * (t as f64 / 512.0).ceil();
            w.small_insts = 10.0 * blocks;
        }
        GraphOp::Fused(FusedOp::PeTranspose { .. }) => {
            // Whole-row loads and stores; per 128 x 128 block a tensor-engine transpose (the
            // block's 128 columns, fp32 at a quarter rate) and a PSUM-to-SBUF copy.
            let blocks = (out_elems / (128.0 * 128.0)).ceil();
            w.pe_cycles = blocks * 128.0 * if fp32 { PE_FP32_SLOWDOWN } else { 1.0 };
            // Block rows of 128 elements are short DMA runs.
            let elem = outs.first().map_or(4, |t| t.dtype.size_bytes()) as f64;
            w.hbm_bytes /= dma_efficiency(128.0 * elem);
        }
        GraphOp::Fused(FusedOp::Elementwise(p)) => {
            w.vector_elems = out_elems * p.steps.len() as f64;
        }
        GraphOp::Fused(FusedOp::Norm(_)) => w.vector_elems = 5.0 * out_elems,
        GraphOp::Softmax { .. } => w.vector_elems = 4.0 * out_elems,
        GraphOp::Movement(tessera_ir::graph::MovementOp::Slice(_)) => {
            // A slice reads only what it keeps.
            w.hbm_bytes = 2.0 * out_bytes;
        }
        GraphOp::Reduce(_) => {
            w.vector_elems = ins.first().map_or(0.0, |t| t.elems() as f64);
        }
        _ => {}
    }
    w.ns(target)
}

/// Tensor-engine cycles of the matmul kernel's instructions for one `[rows, k] x [k, cols]`
/// product: per 128-row tile of `rows` and 128-row tile of K, one instruction per 512-column
/// block of `cols`, each `max(block columns, 64)` cycles (`PE_MIN_CYCLES`), four times that
/// for fp32 operands.
pub fn matmul_pe_cycles(rows: usize, k: usize, cols: usize, fp32: bool) -> f64 {
    let blocks = cols / 512;
    let rem = cols % 512;
    let per_row_tile = blocks as f64 * 512.0
        + if rem > 0 {
            (rem as f64).max(PE_MIN_CYCLES)
        } else {
            0.0
        };
    let slowdown = if fp32 { PE_FP32_SLOWDOWN } else { 1.0 };
    (rows.div_ceil(128) * k.div_ceil(128)) as f64 * per_row_tile * slowdown
}

/// The cost of one e-node, ns.
pub fn enode_ns(eg: &EG, n: &TNode, target: &TargetSpec) -> f64 {
    match n.op {
        Op::Input(_) | Op::Const(_) | Op::Get(_) => 0.0,
        Op::Node(k) => {
            let op = &eg.analysis.tables.ops[k as usize];
            let ins: Vec<&TensorType> = n.children.iter().map(|&c| eg[c].data.ty()).collect();
            let outs = match super::lang::infer(eg, op, &n.children) {
                Ok(t) => t,
                Err(_) => return f64::INFINITY,
            };
            op_ns(op, &ins, &outs, target)
        }
    }
}
