//! Per-instruction cost rules: how long one instruction keeps its engine busy on a
//! [`TargetSpec`], how many FLOPs it performs, and for DMA how many bytes it moves and how
//! efficiently.
//!
//! These rules live next to [`TargetSpec`] so that kernels can estimate their cost and the
//! compiler can cost e-graph choices without depending on a backend. The timing model
//! (`tessera_backends::timing`) applies the same rules and adds what a single instruction cannot
//! know: in-order queues, semaphore waits and DMA bandwidth shared between transfers.
//!
//! The model, per engine:
//! - **Compute engines** (PE, ACT, DVE, POOL): an instruction takes `fixed + busy` nanoseconds,
//!   both converted from cycles at the engine's clock. `busy` grows with the elements processed
//!   per partition (all 128 lanes work in parallel, so partitions are free); `fixed` is the
//!   per-instruction overhead.
//! - **DMA**: an instruction pays a fixed start cost (trigger, descriptor processing, completion
//!   semaphore), then moves `bytes` at a rate limited by its engine's bandwidth times an
//!   efficiency that depends on the length of the contiguous runs it reads and writes. When
//!   several transfers run at once the timing model also caps them by the core's DMA bandwidth
//!   and the core's share of HBM bandwidth; [`InstCost::uncontended_ns`] assumes no contention.
//!
//! Every constant below says where it comes from: the public AWS Neuron documentation (NeuronCore
//! architecture pages, the NKI performance guide and DMA guides, the "Estimated instruction
//! cost" sections of the `nki.isa` reference), or "modelling assumption" where the
//! documentation gives no figure and the number is ours.

use crate::access::{Dim, DmaOperand, TileAccess};
use crate::dtype::DType;
use crate::isa::{Engine, Op};
use crate::program::{Buffer, HbmTensor, TileProgram};
use crate::target::TargetSpec;
use std::collections::BTreeMap;

/// Tensor-engine floor on the issue interval, in PE cycles. Source: `nki.isa.nc_matmul`,
/// "Estimated instruction cost": a matmul occupies the tensor engine for `max(N, 64)` cycles
/// where `N` is the moving tensor's free size; below 64 columns the array's pipeline, not the
/// data, sets the pace.
pub const PE_MIN_CYCLES: f64 = 64.0;

/// How much slower fp32 matmuls issue than bf16/fp16/fp8. Source: NeuronCore-v2/v3
/// architecture pages: 92 vs 23 TFLOPS (trn1), 79 vs 20 TFLOPS (trn2), a 4x ratio.
pub const PE_FP32_SLOWDOWN: f64 = 4.0;

/// Fixed access latency of a compute-engine instruction (reading its first operands from SBUF
/// or PSUM and draining its last results), in engine cycles. Modelling assumption from the
/// design document (ARCHITECTURE.md, "about 60 cycles per tensor access"); the NKI performance
/// guide describes this per-instruction overhead as what makes many tiny instructions slow
/// without giving a cycle count. Not charged to the tensor engine: its documented issue interval
/// ([`PE_MIN_CYCLES`]) already covers it, and back-to-back matmuls overlap their accesses
/// (loading the next stationary operand overlaps the current one's moving data, per the
/// `nc_matmul` page).
pub const ACCESS_LATENCY_CYCLES: f64 = 60.0;

/// Static overhead of a vector-engine (DVE) instruction, in DVE cycles, on top of the access
/// latency. Modelling assumption (design document: "about 100 cycles fixed"), consistent with
/// the `nki.isa` pages' minimum initiation interval for small tiles.
pub const DVE_FIXED_CYCLES: f64 = 100.0;

/// Static overhead of an activation-engine (ACT) instruction, in ACT cycles, on top of the
/// access latency. Modelling assumption: larger than DVE's because every ACT instruction runs
/// through the activation function pipeline (its lookup tables); the cost of switching tables
/// between functions is not modelled.
pub const ACT_FIXED_CYCLES: f64 = 200.0;

/// Static overhead of a GpSimd (POOL) instruction, in POOL cycles, on top of the access latency.
/// Modelling assumption, the same as DVE.
pub const POOL_FIXED_CYCLES: f64 = 100.0;

/// POOL cycles per element per input, relative to DVE's one. Modelling assumption: the NKI
/// architecture guide describes GpSimd as general-purpose cores meant for operations the other
/// engines lack, and the `nki.isa` pages recommend DVE for element-wise work; we take half
/// DVE's per-cycle throughput.
pub const POOL_CYCLES_PER_ELEM: f64 = 2.0;

/// Fixed start cost of one `dma_copy`, ns: the core's trigger, descriptor generation and
/// processing, and the completion semaphore. The NKI DMA overview ("Introduction to Direct
/// Memory Access (DMA) with NKI") describes this sequence for every transfer but gives no
/// figure; 1.3 us is a modelling assumption from the design document, of the order of the
/// microsecond-scale per-transfer overhead the NKI performance guide warns about when it
/// recommends fewer, larger DMAs.
pub const DMA_FIXED_NS: f64 = 1300.0;

/// Contiguous run, in bytes, from which a DMA reaches its engine's full bandwidth. Source: the
/// NKI DMA bandwidth guide ("Guideline to Avoid Under-Utilizing DMA Bandwidth", also "HBM
/// CRC-Based Hashing and DMA Bandwidth Requirements"): payloads of at least 4 KiB are required
/// to saturate HBM bandwidth.
pub const DMA_FULL_RUN_BYTES: f64 = 4096.0;

/// Per-run overhead of a DMA, expressed in bytes of transfer time. Modelling assumption chosen
/// so that a 512-byte run reaches about half the bandwidth (the NKI performance guide's advice
/// to keep each partition's DMA chunk at 512 bytes or more) and element-granular runs
/// (<= 16 bytes) get a few percent (the DMA bandwidth guide: small fragmented transfers
/// "underperform badly").
pub const DMA_RUN_OVERHEAD_BYTES: f64 = 512.0;

/// The tensor-engine rate class of a matmul, by its operands' dtypes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeRate {
    /// bf16/fp16 (and anything narrower that is not fp8 on both sides).
    Bf16,
    /// fp8 on both operands.
    Fp8,
    /// fp32 on either operand: the 4x slower path.
    Fp32,
}

impl PeRate {
    /// The class of a matmul with these operand dtypes.
    pub fn of(stationary: DType, moving: DType) -> PeRate {
        let fp8 = |d: DType| matches!(d, DType::Fp8E4m3 | DType::Fp8E5m2);
        if stationary.size_bytes() >= 4 || moving.size_bytes() >= 4 {
            PeRate::Fp32
        } else if fp8(stationary) && fp8(moving) {
            PeRate::Fp8
        } else {
            PeRate::Bf16
        }
    }

    /// The published tensor-engine peak for this class, FLOP/s.
    pub fn peak_flops(self, target: &TargetSpec) -> f64 {
        match self {
            PeRate::Bf16 => target.pe_bf16_flops,
            PeRate::Fp8 => target.pe_fp8_flops,
            PeRate::Fp32 => target.pe_fp32_flops,
        }
    }
}

/// What a DMA moves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DmaCost {
    /// Bytes moved: the larger of the bytes read and the bytes written (they differ when the
    /// copy converts dtype).
    pub bytes: f64,
    /// Bytes read from or written to HBM (both ends count for an HBM-to-HBM copy).
    pub hbm_bytes: f64,
    /// The shortest contiguous run, in bytes, at either end.
    pub run_bytes: f64,
    /// Fraction of the engine's bandwidth this access pattern achieves ([`dma_efficiency`]).
    pub efficiency: f64,
}

/// The cost of one instruction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InstCost {
    /// The engine that runs it.
    pub engine: Engine,
    /// Fixed overhead, ns: access latency plus static overhead for compute engines, the start
    /// cost for DMA.
    pub fixed_ns: f64,
    /// Data-proportional time on a compute engine, ns (0 for DMA, whose data time depends on
    /// bandwidth: see [`InstCost::uncontended_ns`]).
    pub busy_ns: f64,
    /// Floating-point operations (2*K*M*N for a matmul, one per output element for arithmetic,
    /// 0 for data movement).
    pub flops: f64,
    /// The matmul's rate class (tensor-engine matmuls only).
    pub pe_rate: Option<PeRate>,
    /// What a DMA moves (DMA only).
    pub dma: Option<DmaCost>,
}

impl InstCost {
    /// Duration with nothing else running: `fixed + busy` for compute engines; for DMA the start
    /// cost plus the bytes at the slowest of the engine's effective bandwidth, the core's DMA
    /// bandwidth and (for HBM traffic) the core's HBM bandwidth.
    pub fn uncontended_ns(&self, target: &TargetSpec) -> f64 {
        match &self.dma {
            None => self.fixed_ns + self.busy_ns,
            Some(d) => self.fixed_ns + d.bytes / dma_solo_rate(d, target) * 1e9,
        }
    }
}

/// The data rate (bytes/s) of a DMA running alone.
pub fn dma_solo_rate(d: &DmaCost, target: &TargetSpec) -> f64 {
    let mut rate = (target.dma_engine_bytes_per_s * d.efficiency).min(target.dma_core_bytes_per_s);
    if d.hbm_bytes > 0.0 && d.bytes > 0.0 {
        // HBM consumption per byte moved is hbm_bytes / bytes (2 for an HBM-to-HBM copy).
        rate = rate.min(target.hbm_core_bytes_per_s() * d.bytes / d.hbm_bytes);
    }
    rate
}

/// Bandwidth efficiency of a DMA whose shortest contiguous run is `run_bytes` long.
///
/// `e(r) = min(1, r / (r + 512) * (4096 + 512) / 4096)`: each contiguous run costs a fixed
/// overhead worth [`DMA_RUN_OVERHEAD_BYTES`], normalised so that runs of
/// [`DMA_FULL_RUN_BYTES`] (4 KiB, the NKI DMA bandwidth guide's threshold) and longer reach the
/// full rate. It gives 0.5625 at 512 B, about 0.2 at 128 B and 0.034 at 16 B; monotone in `r`.
pub fn dma_efficiency(run_bytes: f64) -> f64 {
    let r = run_bytes.max(1.0);
    let norm = (DMA_FULL_RUN_BYTES + DMA_RUN_OVERHEAD_BYTES) / DMA_FULL_RUN_BYTES;
    (r / (r + DMA_RUN_OVERHEAD_BYTES) * norm).min(1.0)
}

/// Elements in the innermost contiguous run of an access pattern: trailing dimensions merge
/// while each one's stride equals the extent of those inside it. A broadcast or strided
/// innermost dimension gives runs of one element.
pub fn contiguous_elems(dims: &[Dim]) -> u64 {
    let mut run = 1u64;
    for d in dims.iter().rev().filter(|d| d.size > 1) {
        if d.stride == run as i64 {
            run = run.saturating_mul(d.size as u64);
        } else {
            break;
        }
    }
    run
}

/// The cost of one instruction, with the program's tensors and buffers for dtypes. `None` for
/// `alloc`/`free`, which are bookkeeping. Ids outside the program count as fp32 rather than
/// panicking (a decoded artifact may be malformed; the verifier reports that).
pub fn inst_cost(
    op: &Op,
    tensors: &[HbmTensor],
    buffers: &[Buffer],
    target: &TargetSpec,
) -> Option<InstCost> {
    let tile_dtype = |t: &TileAccess| {
        buffers
            .get(t.buf.0 as usize)
            .map_or(DType::F32, |b| b.dtype)
    };
    let engine = op.engine()?;
    let cycles_ns = |cycles: f64, hz: f64| cycles / hz * 1e9;
    let compute = |fixed_cycles: f64, busy_cycles: f64, hz: f64, flops: f64| InstCost {
        engine,
        fixed_ns: cycles_ns(fixed_cycles, hz),
        busy_ns: cycles_ns(busy_cycles, hz),
        flops,
        pe_rate: None,
        dma: None,
    };
    // Element-wise engines stream the free elements of each partition, all partitions at once:
    // cycles = per-element cost x free elements x full-size inputs read (the `nki.isa` cost
    // notes: about N cycles for one input tensor, 2N for two, N = free elements per partition).
    let elementwise = |free: u64, inputs: u32, flops: f64| {
        let n = free as f64 * inputs.max(1) as f64;
        match engine {
            Engine::Act => compute(
                ACCESS_LATENCY_CYCLES + ACT_FIXED_CYCLES,
                n,
                target.act_hz,
                flops,
            ),
            Engine::Pool => compute(
                ACCESS_LATENCY_CYCLES + POOL_FIXED_CYCLES,
                n * POOL_CYCLES_PER_ELEM,
                target.pool_hz,
                flops,
            ),
            // DVE, and any other engine a malformed program names.
            _ => compute(
                ACCESS_LATENCY_CYCLES + DVE_FIXED_CYCLES,
                n,
                target.dve_hz,
                flops,
            ),
        }
    };
    let cost = match op {
        Op::Alloc { .. } | Op::Free { .. } => return None,
        Op::Matmul {
            stationary, moving, ..
        } => {
            let rate = PeRate::of(tile_dtype(stationary), tile_dtype(moving));
            let n = moving.free_elems() as f64;
            let mut cycles = n.max(PE_MIN_CYCLES);
            if rate == PeRate::Fp32 {
                cycles *= PE_FP32_SLOWDOWN;
            }
            // fp8 issues at the bf16 rate: the 2x fp8 rate of NeuronCore-v3 needs the
            // `double_row` performance mode (`nki.isa.nc_matmul`), which this ISA does not
            // expose. MFU for fp8 is still measured against the fp8 peak.
            let k = moving.partitions as f64;
            let m = stationary.free_elems() as f64;
            InstCost {
                pe_rate: Some(rate),
                ..compute(0.0, cycles, target.pe_hz, 2.0 * k * m * n)
            }
        }
        // Source: the design document and `nki.isa.nc_transpose`: the tensor-engine transpose
        // is a matmul against an identity whose moving data is the input, so it costs like a
        // matmul with N = the input's partition count. No useful FLOPs.
        Op::Transpose { src, .. } => {
            let mut cycles = (src.partitions as f64).max(PE_MIN_CYCLES);
            if tile_dtype(src).size_bytes() >= 4 {
                cycles *= PE_FP32_SLOWDOWN;
            }
            compute(0.0, cycles, target.pe_hz, 0.0)
        }
        Op::Activation { dst, src, .. } => elementwise(src.free_elems(), 1, dst.elems() as f64),
        Op::TensorTensor { dst, lhs, rhs, .. } => elementwise(
            lhs.free_elems().max(rhs.free_elems()),
            2,
            dst.elems() as f64,
        ),
        // Per-partition scalar operands are one element per partition: not counted as inputs.
        Op::TensorScalar { dst, src, .. } => elementwise(src.free_elems(), 1, dst.elems() as f64),
        Op::TensorReduce { src, .. } => elementwise(src.free_elems(), 1, src.elems() as f64),
        Op::TensorCopy { src, .. } => elementwise(src.free_elems(), 1, 0.0),
        Op::Memset { dst, .. } | Op::Iota { dst, .. } => elementwise(dst.free_elems(), 1, 0.0),
        Op::AffineSelect { dst, src, .. } => elementwise(src.free_elems(), 1, dst.elems() as f64),
        Op::Select { dst, .. } => elementwise(dst.free_elems(), 3, dst.elems() as f64),
        Op::DmaCopy { dst, src } => {
            let end = |o: &DmaOperand| -> (f64, f64, bool) {
                // (bytes, contiguous run bytes, is HBM)
                match o {
                    DmaOperand::Hbm(h) => {
                        let size = tensors
                            .get(h.tensor.0 as usize)
                            .map_or(4, |t| t.dtype.size_bytes())
                            as f64;
                        let run = contiguous_elems(&h.dims) as f64 * size;
                        (h.elems() as f64 * size, run, true)
                    }
                    DmaOperand::Tile(t) => {
                        // A tile's run never crosses a partition: partitions are separate rows.
                        let size = tile_dtype(t).size_bytes() as f64;
                        let run = contiguous_elems(&t.dims) as f64 * size;
                        (t.elems() as f64 * size, run, false)
                    }
                }
            };
            let (src_bytes, src_run, src_hbm) = end(src);
            let (dst_bytes, dst_run, dst_hbm) = end(dst);
            let hbm_bytes =
                if src_hbm { src_bytes } else { 0.0 } + if dst_hbm { dst_bytes } else { 0.0 };
            let run_bytes = src_run.min(dst_run);
            InstCost {
                engine,
                fixed_ns: DMA_FIXED_NS,
                busy_ns: 0.0,
                flops: 0.0,
                pe_rate: None,
                dma: Some(DmaCost {
                    bytes: src_bytes.max(dst_bytes),
                    hbm_bytes,
                    run_bytes,
                    efficiency: dma_efficiency(run_bytes),
                }),
            }
        }
    };
    Some(cost)
}

/// A tile program's cost estimated without scheduling.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// Busy time per engine, ns: the sum of its instructions' `fixed + busy` for compute
    /// engines; for DMA, see [`Estimate::dma_ns`].
    pub engine_ns: BTreeMap<Engine, f64>,
    /// Sum of the DMA start costs, ns (before spreading them over the DMA queues).
    pub dma_fixed_ns: f64,
    /// DMA time, ns: the start costs spread over `dma_engines` queues (the scheduler deals DMAs
    /// round-robin, so their fixed latencies overlap), plus the data time at the tightest of the
    /// core's DMA bandwidth, the core's HBM bandwidth and all engines' effective bandwidth.
    pub dma_ns: f64,
    /// The estimate: the busiest engine (DMA included), ns. Engines run concurrently, so with
    /// perfect overlap the program takes as long as its busiest engine.
    pub total_ns: f64,
    /// Tensor-engine FLOPs.
    pub pe_flops: f64,
    /// All FLOPs.
    pub flops: f64,
    /// Bytes to and from HBM.
    pub hbm_bytes: f64,
    /// Bytes moved by DMA.
    pub dma_bytes: f64,
}

/// Estimates a tile program's latency without scheduling: the per-engine sums of the cost
/// rules, the maximum over engines, with DMA start costs included in the DMA lane.
pub fn estimate_tile_program(program: &TileProgram, target: &TargetSpec) -> Estimate {
    let mut engine_ns: BTreeMap<Engine, f64> = BTreeMap::new();
    let (mut pe_flops, mut flops, mut hbm_bytes, mut dma_bytes) = (0.0, 0.0, 0.0, 0.0);
    let (mut dma_fixed_ns, mut dma_engine_time_ns) = (0.0, 0.0);
    for inst in &program.insts {
        let Some(c) = inst_cost(&inst.op, &program.tensors, &program.buffers, target) else {
            continue;
        };
        flops += c.flops;
        if c.engine == Engine::Pe {
            pe_flops += c.flops;
        }
        match &c.dma {
            Some(d) => {
                dma_fixed_ns += c.fixed_ns;
                dma_bytes += d.bytes;
                hbm_bytes += d.hbm_bytes;
                dma_engine_time_ns +=
                    d.bytes / (target.dma_engine_bytes_per_s * d.efficiency) * 1e9;
            }
            None => *engine_ns.entry(c.engine).or_default() += c.fixed_ns + c.busy_ns,
        }
    }
    let engines = target.dma_engines.max(1) as f64;
    let data_ns = (dma_bytes / target.dma_core_bytes_per_s * 1e9)
        .max(hbm_bytes / target.hbm_core_bytes_per_s() * 1e9)
        .max(dma_engine_time_ns / engines);
    let dma_ns = dma_fixed_ns / engines + data_ns;
    if dma_ns > 0.0 {
        engine_ns.insert(Engine::Dma, dma_ns);
    }
    let total_ns = engine_ns.values().copied().fold(0.0, f64::max);
    Estimate {
        engine_ns,
        dma_fixed_ns,
        dma_ns,
        total_ns,
        pe_flops,
        flops,
        hbm_bytes,
        dma_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{BufId, HbmAccess, TensorId};
    use crate::isa::{ActFunc, AluOp, Scalar, ScalarStep};
    use crate::program::{Inst, Space, TensorKind};

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} != {b}");
    }

    fn buf(dtype: DType, partitions: u32, free: usize) -> Buffer {
        Buffer {
            name: format!("b{partitions}x{free}"),
            space: Space::Sbuf,
            dtype,
            partitions,
            free_shape: vec![free],
            placement: None,
        }
    }

    fn tile(b: u32, partitions: u32, dims: &[(i64, u32)]) -> TileAccess {
        TileAccess {
            buf: BufId(b),
            start_partition: 0,
            partitions,
            offset: 0,
            dims: dims.iter().map(|&(s, n)| Dim::new(s, n)).collect(),
        }
    }

    fn hbm(t: u32, dims: &[(i64, u32)]) -> DmaOperand {
        DmaOperand::Hbm(HbmAccess {
            tensor: TensorId(t),
            offset: 0,
            dims: dims.iter().map(|&(s, n)| Dim::new(s, n)).collect(),
        })
    }

    fn tensor(dtype: DType, shape: &[usize]) -> HbmTensor {
        HbmTensor {
            name: "t".into(),
            dtype,
            shape: shape.to_vec(),
            kind: TensorKind::Input,
        }
    }

    fn matmul(n: u32) -> Op {
        Op::Matmul {
            dst: tile(2, 128, &[(1, n)]),
            stationary: tile(0, 128, &[(1, 128)]),
            moving: tile(1, 128, &[(1, n)]),
            start: true,
            stop: true,
        }
    }

    #[test]
    fn pe_peak_matches_the_published_figures() {
        // One 128x128 MAC array, one multiply-add (2 FLOPs) per PE per cycle:
        // trn2: 2 * 128 * 128 * 2.4e9 = 78.64e12, published 79 TFLOPS bf16;
        // trn1: 2 * 128 * 128 * 2.8e9 = 91.75e12, published 92 TFLOPS.
        for t in [TargetSpec::trn2(), TargetSpec::trn1()] {
            let array = 2.0 * 128.0 * 128.0 * t.pe_hz;
            assert!((array / t.pe_bf16_flops - 1.0).abs() < 0.005, "{}", t.name);
            // fp32 at a quarter of that: 19.66e12 vs 20e12, 22.94e12 vs 23e12.
            assert!((array / PE_FP32_SLOWDOWN / t.pe_fp32_flops - 1.0).abs() < 0.02);
        }
        // A full-size bf16 matmul never beats the published peak.
        let t = TargetSpec::trn2();
        let bufs = [
            buf(DType::Bf16, 128, 128),
            buf(DType::Bf16, 128, 512),
            buf(DType::F32, 128, 512),
        ];
        let c = inst_cost(&matmul(512), &[], &bufs, &t).unwrap();
        assert!(c.flops / (c.busy_ns * 1e-9) <= t.pe_bf16_flops);
    }

    #[test]
    fn matmul_issue_interval() {
        let t = TargetSpec::trn2();
        let bf16 = [
            buf(DType::Bf16, 128, 128),
            buf(DType::Bf16, 128, 512),
            buf(DType::F32, 128, 512),
        ];
        // N = 512: 512 PE cycles / 2.4 GHz = 213.333 ns; 2*128*128*512 = 16_777_216 FLOPs.
        let c = inst_cost(&matmul(512), &[], &bf16, &t).unwrap();
        assert_eq!(c.engine, Engine::Pe);
        close(c.busy_ns, 512.0 / 2.4);
        close(c.fixed_ns, 0.0);
        close(c.flops, 16_777_216.0);
        assert_eq!(c.pe_rate, Some(PeRate::Bf16));
        // N = 32 is below the 64-cycle floor: 64 / 2.4 = 26.667 ns.
        close(
            inst_cost(&matmul(32), &[], &bf16, &t).unwrap().busy_ns,
            64.0 / 2.4,
        );
        // fp32 moving data: 4 * 512 = 2048 cycles / 2.4 GHz = 853.333 ns.
        let f32s = [
            buf(DType::F32, 128, 128),
            buf(DType::F32, 128, 512),
            buf(DType::F32, 128, 512),
        ];
        let c = inst_cost(&matmul(512), &[], &f32s, &t).unwrap();
        close(c.busy_ns, 2048.0 / 2.4);
        assert_eq!(c.pe_rate, Some(PeRate::Fp32));
        close(PeRate::Fp32.peak_flops(&t), 20e12);
        let fp8 = [
            buf(DType::Fp8E4m3, 128, 128),
            buf(DType::Fp8E5m2, 128, 512),
            buf(DType::F32, 128, 512),
        ];
        let c = inst_cost(&matmul(512), &[], &fp8, &t).unwrap();
        assert_eq!(c.pe_rate, Some(PeRate::Fp8));
        close(c.busy_ns, 512.0 / 2.4); // no double_row mode: the bf16 rate
    }

    #[test]
    fn transpose_costs_like_a_matmul_over_the_input_partitions() {
        let t = TargetSpec::trn2();
        let bufs = [buf(DType::Bf16, 128, 64), buf(DType::F32, 64, 128)];
        let op = Op::Transpose {
            dst: tile(1, 64, &[(1, 128)]),
            src: tile(0, 128, &[(1, 64)]),
        };
        // N = 128 input partitions: 128 cycles / 2.4 GHz = 53.333 ns, no FLOPs.
        let c = inst_cost(&op, &[], &bufs, &t).unwrap();
        close(c.busy_ns, 128.0 / 2.4);
        close(c.flops, 0.0);
    }

    #[test]
    fn elementwise_engines() {
        let t = TargetSpec::trn2();
        let bufs = [
            buf(DType::F32, 128, 512),
            buf(DType::F32, 128, 512),
            buf(DType::F32, 128, 512),
        ];
        let a = |b| tile(b, 128, &[(1, 512)]);
        // DVE, two inputs of 512 free elements: busy 2 * 512 = 1024 cycles / 0.96 GHz =
        // 1066.667 ns; fixed 60 + 100 = 160 cycles / 0.96 GHz = 166.667 ns; 128 * 512 FLOPs.
        let op = Op::TensorTensor {
            engine: Engine::Dve,
            op: AluOp::Add,
            dst: a(2),
            lhs: a(0),
            rhs: a(1),
        };
        let c = inst_cost(&op, &[], &bufs, &t).unwrap();
        close(c.busy_ns, 1024.0 / 0.96);
        close(c.fixed_ns, 160.0 / 0.96);
        close(c.flops, 65536.0);
        // ACT, one input: busy 512 cycles / 1.2 GHz = 426.667 ns; fixed 60 + 200 = 260 cycles
        // / 1.2 GHz = 216.667 ns.
        let op = Op::Activation {
            dst: a(2),
            src: a(0),
            func: ActFunc::Exp,
            scale: Scalar::Imm(1.0),
            bias: Scalar::Imm(0.0),
            accum: None,
        };
        let c = inst_cost(&op, &[], &bufs, &t).unwrap();
        assert_eq!(c.engine, Engine::Act);
        close(c.busy_ns, 512.0 / 1.2);
        close(c.fixed_ns, 260.0 / 1.2);
        // POOL, one input: busy 2 * 512 = 1024 cycles / 1.2 GHz = 853.333 ns; fixed 160 cycles
        // / 1.2 GHz = 133.333 ns.
        let step = ScalarStep {
            op: AluOp::Mul,
            operand: Scalar::Imm(2.0),
            reverse: false,
        };
        let op = Op::TensorScalar {
            engine: Engine::Pool,
            dst: a(2),
            src: a(0),
            op0: step,
            op1: None,
        };
        let c = inst_cost(&op, &[], &bufs, &t).unwrap();
        close(c.busy_ns, 1024.0 / 1.2);
        close(c.fixed_ns, 160.0 / 1.2);
        // Bookkeeping has no cost.
        assert!(inst_cost(&Op::Free { buf: BufId(0) }, &[], &bufs, &t).is_none());
    }

    #[test]
    fn dma_efficiency_and_runs() {
        // e(r) = min(1, r / (r + 512) * 4608 / 4096)
        close(dma_efficiency(4096.0), 1.0); // 4096/4608 * 4608/4096
        close(dma_efficiency(65536.0), 1.0);
        close(dma_efficiency(512.0), 0.5625); // 512/1024 * 1.125
        close(dma_efficiency(16.0), 16.0 / 528.0 * 1.125); // 0.0341
        assert!(dma_efficiency(100.0) < dma_efficiency(101.0));
        // Row-major [128, 64] in a tensor of 64 columns merges into one 8192-element run.
        assert_eq!(
            contiguous_elems(&[Dim::new(64, 128), Dim::new(1, 64)]),
            8192
        );
        // Its transposed view steps 64 elements innermost: runs of one element.
        assert_eq!(contiguous_elems(&[Dim::new(1, 64), Dim::new(64, 128)]), 1);
        assert_eq!(contiguous_elems(&[Dim::new(0, 8)]), 1);
        assert_eq!(
            contiguous_elems(&[Dim::new(100, 4), Dim::new(1, 1), Dim::new(1, 10)]),
            10
        );
    }

    #[test]
    fn dma_costs() {
        let t = TargetSpec::trn2();
        let tensors = [
            tensor(DType::F32, &[128, 1024]),
            tensor(DType::F32, &[128, 1024]),
        ];
        let bufs = [buf(DType::F32, 128, 1024)];
        // HBM [128, 1024] f32 to SBUF: 128 * 1024 * 4 = 524_288 bytes, 4096-byte runs (full
        // efficiency). Alone: 1300 ns + 524_288 / 27e9 s = 1300 + 19_418.07 ns.
        let op = Op::DmaCopy {
            dst: DmaOperand::Tile(tile(0, 128, &[(1, 1024)])),
            src: hbm(0, &[(1024, 128), (1, 1024)]),
        };
        let c = inst_cost(&op, &tensors, &bufs, &t).unwrap();
        let d = c.dma.unwrap();
        close(d.bytes, 524_288.0);
        close(d.hbm_bytes, 524_288.0);
        close(d.run_bytes, 4096.0);
        close(d.efficiency, 1.0);
        close(c.uncontended_ns(&t), 1300.0 + 524_288.0 / 27e9 * 1e9);
        // HBM to HBM counts HBM traffic at both ends: 2 * 524_288.
        let op = Op::DmaCopy {
            dst: hbm(1, &[(1024, 128), (1, 1024)]),
            src: hbm(0, &[(1024, 128), (1, 1024)]),
        };
        close(
            inst_cost(&op, &tensors, &bufs, &t)
                .unwrap()
                .dma
                .unwrap()
                .hbm_bytes,
            1_048_576.0,
        );
        // Element-granular read (a transposing load): 4-byte runs, e = 4/516 * 1.125.
        let op = Op::DmaCopy {
            dst: DmaOperand::Tile(tile(0, 128, &[(1, 1024)])),
            src: hbm(0, &[(1, 128), (128, 1024)]),
        };
        let d = inst_cost(&op, &tensors, &bufs, &t).unwrap().dma.unwrap();
        close(d.run_bytes, 4.0);
        close(d.efficiency, 4.0 / 516.0 * 1.125);
    }

    #[test]
    fn estimate_of_a_small_program() {
        let t = TargetSpec::trn2();
        let mut p = TileProgram::new("small");
        p.tensors = vec![
            tensor(DType::Bf16, &[128, 128]),
            tensor(DType::Bf16, &[128, 512]),
            tensor(DType::F32, &[128, 512]),
        ];
        p.buffers = vec![
            buf(DType::Bf16, 128, 128),
            buf(DType::Bf16, 128, 512),
            buf(DType::F32, 128, 512),
            buf(DType::F32, 128, 512),
        ];
        let rows = |n: u32| [(n as i64, 128), (1, n)];
        p.insts = vec![
            Inst::new(Op::DmaCopy {
                dst: DmaOperand::Tile(tile(0, 128, &[(1, 128)])),
                src: hbm(0, &rows(128)),
            }),
            Inst::new(Op::DmaCopy {
                dst: DmaOperand::Tile(tile(1, 128, &[(1, 512)])),
                src: hbm(1, &rows(512)),
            }),
            Inst::new(matmul(512)),
            Inst::new(Op::TensorCopy {
                engine: Engine::Dve,
                dst: tile(3, 128, &[(1, 512)]),
                src: tile(2, 128, &[(1, 512)]),
            }),
            Inst::new(Op::DmaCopy {
                dst: hbm(2, &rows(512)),
                src: DmaOperand::Tile(tile(3, 128, &[(1, 512)])),
            }),
        ];
        let e = estimate_tile_program(&p, &t);
        // PE: 512 / 2.4 = 213.333 ns. DVE: (160 + 512) / 0.96 = 700 ns.
        close(e.engine_ns[&Engine::Pe], 512.0 / 2.4);
        close(e.engine_ns[&Engine::Dve], 700.0);
        // DMA bytes: 128*128*2 + 128*512*2 + 128*512*4 = 32_768 + 131_072 + 262_144 = 425_984.
        close(e.dma_bytes, 425_984.0);
        close(e.hbm_bytes, 425_984.0);
        // Runs: 256 B (e = 256/768 * 1.125 = 0.375), 1024 B (e = 1024/1536 * 1.125 = 0.75),
        // 2048 B (e = 2048/2560 * 1.125 = 0.9). Engine time: 32_768/(27e9*0.375) +
        // 131_072/(27e9*0.75) + 262_144/(27e9*0.9) = 3236.35 + 6472.69 + 10_787.82 ns = 20_496.86
        // ns, over 16 engines = 1281.05 ns; above the core (425_984 / 368e9 = 1157.57 ns) and
        // HBM (425_984 / 362.5e9 = 1175.13 ns) bounds. Fixed: 3 * 1300 / 16 = 243.75 ns.
        let engine_time =
            32_768.0 / (27e9 * 0.375) + 131_072.0 / (27e9 * 0.75) + 262_144.0 / (27e9 * 0.9);
        close(e.dma_fixed_ns, 3900.0);
        close(e.dma_ns, 243.75 + engine_time * 1e9 / 16.0);
        assert!((e.dma_ns - 1524.8).abs() < 0.1);
        close(e.total_ns, e.dma_ns);
        close(e.pe_flops, 16_777_216.0);
    }
}
