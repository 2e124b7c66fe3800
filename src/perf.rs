//! Modelled performance of whole compiled graphs against their rooflines: the numbers behind
//! `examples/perf_sweep.rs`, `docs/performance.md` and the performance tests.
//!
//! Each case builds a small graph in code (or, for layer norm, which has no graph operator, takes
//! the library kernel directly), compiles it with [`compile_graph`], schedules it, and times the
//! machine program with the timing model ([`simulate`]). The roofline of a program is the
//! slowest of three lower bounds no schedule can beat: tensor-engine FLOPs at the published peak
//! for their dtype, HBM bytes at the core's share of HBM bandwidth, and DMA bytes at the core's
//! DMA bandwidth. These are modelled, deterministic numbers, not wall-clock measurements.

use tessera_backends::timing::{TimingError, TimingReport, simulate};
use tessera_compiler::driver::{AutoCast, CompileError, CompileOptions, compile_graph};
use tessera_compiler::schedule::{ScheduleError, schedule};
use tessera_ir::cost::inst_cost;
use tessera_ir::graph::{BinaryOp, Graph, GraphOp, TensorType, UnaryOp};
use tessera_ir::{DType, MachineProgram, TargetSpec, TensorKind, TileProgram};

/// Why a case could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// The graph did not compile.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// A kernel could not be built.
    #[error(transparent)]
    Kernel(#[from] tessera_kernels::KernelError),
    /// A kernel could not be scheduled.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// The timing model rejected the program.
    #[error(transparent)]
    Timing(#[from] TimingError),
    /// The test graph itself was malformed (a bug in this module).
    #[error("building the graph: {0}")]
    Graph(String),
}

/// Which resource sets a program's roofline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Tensor-engine FLOPs at peak.
    Pe,
    /// HBM bandwidth.
    Hbm,
    /// The core's DMA bandwidth.
    Dma,
}

impl Bound {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Bound::Pe => "PE",
            Bound::Hbm => "HBM",
            Bound::Dma => "DMA",
        }
    }
}

/// One timed program and its roofline.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// The timing model's report.
    pub report: TimingReport,
    /// Bytes moved by DMA (HBM and on-chip ends together).
    pub dma_bytes: f64,
    /// Compulsory HBM traffic: every input read once and every output written once.
    pub io_bytes: f64,
    /// Lower bound on the latency, ns: the slowest of the three bounds.
    pub roofline_ns: f64,
    /// Which bound that is.
    pub bound: Bound,
    /// Instructions in the machine program.
    pub insts: usize,
}

impl Measurement {
    /// Times `machine` on `target`.
    pub fn of(machine: &MachineProgram, target: &TargetSpec) -> Result<Self, PerfError> {
        let report = simulate(machine, target)?;
        let dma_bytes: f64 = machine
            .queues
            .iter()
            .flat_map(|q| &q.insts)
            .filter_map(|i| inst_cost(&i.op, &machine.tensors, &machine.buffers, target))
            .filter_map(|c| c.dma)
            .map(|d| d.bytes)
            .sum();
        let pe_ns = report.pe_flops / report.pe_peak_flops * 1e9;
        let io_bytes: f64 = machine
            .tensors
            .iter()
            .filter(|t| t.kind != TensorKind::Scratch)
            .map(|t| (t.shape.iter().product::<usize>() * t.dtype.size_bytes()) as f64)
            .sum();
        let hbm_ns = io_bytes / target.hbm_core_bytes_per_s() * 1e9;
        let dma_ns = io_bytes / target.dma_core_bytes_per_s * 1e9;
        let (roofline_ns, bound) = [
            (pe_ns, Bound::Pe),
            (hbm_ns, Bound::Hbm),
            (dma_ns, Bound::Dma),
        ]
        .into_iter()
        .fold(
            (0.0, Bound::Pe),
            |best, c| if c.0 > best.0 { c } else { best },
        );
        Ok(Measurement {
            report,
            dma_bytes,
            io_bytes,
            roofline_ns,
            bound,
            insts: machine.inst_count(),
        })
    }

    /// Roofline over modelled latency: 1 means the program runs at its bound.
    pub fn fraction(&self) -> f64 {
        if self.report.latency_ns > 0.0 {
            self.roofline_ns / self.report.latency_ns
        } else {
            0.0
        }
    }
}

fn options(target: &TargetSpec, auto_cast: AutoCast) -> CompileOptions {
    CompileOptions {
        target: target.clone(),
        auto_cast,
        ..CompileOptions::default()
    }
}

fn graph_err(e: impl std::fmt::Display) -> PerfError {
    PerfError::Graph(e.to_string())
}

/// Compiles `graph` and times it.
pub fn measure_graph(
    graph: Graph,
    target: &TargetSpec,
    auto_cast: AutoCast,
) -> Result<Measurement, PerfError> {
    let compiled = compile_graph(graph, &options(target, auto_cast))?;
    Measurement::of(&compiled.machine, target)
}

/// One `MatMul` of two `[m, k]`, `[k, n]` inputs of `dtype`.
pub fn matmul_graph(m: usize, k: usize, n: usize, dtype: DType) -> Result<Graph, PerfError> {
    let mut g = Graph::new("matmul");
    let a = g.add_input("a", TensorType::new(dtype, &[m, k]));
    let b = g.add_input("b", TensorType::new(dtype, &[k, n]));
    let c = g
        .add_node("c", GraphOp::MatMul, &[a, b])
        .map_err(graph_err)?;
    g.outputs = c;
    Ok(g)
}

/// `a + b` of two f32 tensors of `shape`.
pub fn add_graph(shape: &[usize]) -> Result<Graph, PerfError> {
    let mut g = Graph::new("add");
    let a = g.add_input("a", TensorType::new(DType::F32, shape));
    let b = g.add_input("b", TensorType::new(DType::F32, shape));
    let c = g
        .add_node("c", GraphOp::Binary(BinaryOp::Add), &[a, b])
        .map_err(graph_err)?;
    g.outputs = c;
    Ok(g)
}

/// `relu(x)` of an f32 tensor of `shape`.
pub fn relu_graph(shape: &[usize]) -> Result<Graph, PerfError> {
    let mut g = Graph::new("relu");
    let x = g.add_input("x", TensorType::new(DType::F32, shape));
    let y = g
        .add_node("y", GraphOp::Unary(UnaryOp::Relu), &[x])
        .map_err(graph_err)?;
    g.outputs = y;
    Ok(g)
}

/// Softmax over the last axis of an f32 `[rows, cols]` tensor.
pub fn softmax_graph(rows: usize, cols: usize) -> Result<Graph, PerfError> {
    let mut g = Graph::new("softmax");
    let x = g.add_input("x", TensorType::new(DType::F32, &[rows, cols]));
    let y = g
        .add_node("y", GraphOp::Softmax { axis: 1 }, &[x])
        .map_err(graph_err)?;
    g.outputs = y;
    Ok(g)
}

/// Schedules a single library kernel as if it were a whole graph, and times it. Layer norm has
/// no graph operator, so this is how it is measured.
pub fn measure_kernel(kernel: TileProgram, target: &TargetSpec) -> Result<Measurement, PerfError> {
    let machine = schedule(&crate::as_lowered(kernel), target)?;
    Measurement::of(&machine, target)
}

/// Layer norm over the last axis of an f32 `[rows, cols]` tensor (eps 1e-5).
pub fn measure_layer_norm(
    rows: usize,
    cols: usize,
    target: &TargetSpec,
) -> Result<Measurement, PerfError> {
    let kernel = tessera_kernels::library::layer_norm(target, &[rows, cols], DType::F32, 1e-5)?;
    measure_kernel(kernel, target)
}
