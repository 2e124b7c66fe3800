//! Lowering, op by op: every graph node becomes one or more kernels from the library, linked
//! into one sequential tile program over HBM tensors (graph inputs, weights, outputs and
//! scratch). This is the `-O0` baseline the e-graph optimiser will improve on.
//!
//! Values that only reinterpret their input (`Reshape`, `Identity`) share its HBM tensor. A
//! graph output that is not produced into its own output tensor (an input, a weight or an alias
//! returned directly) is copied there by DMA.

mod conv;
mod elementwise;
mod fused;
mod fused_attention;
mod fused_matmul;
pub use fused::fused_supported;
mod index;
pub mod link;
mod movement;
mod reduce;
mod scan;

use link::{Binding, Linker};
use std::collections::BTreeMap;
use tessera_ir::graph::{BinaryOp, Graph, GraphOp, Node, UnaryOp, ValueId};
use tessera_ir::{
    ActFunc, AluOp, DType, HostTensor, TargetSpec, TensorId, TensorKind, TileProgram,
};
use tessera_kernels::library;

/// The result of lowering a graph.
#[derive(Debug)]
pub struct Lowered {
    /// One sequential tile program for the whole graph.
    pub program: TileProgram,
    /// For each instruction of `program`, the graph node it came from.
    pub origins: Vec<String>,
    /// Graph inputs: value name and the program tensor bound to it, in signature order.
    pub inputs: Vec<(String, TensorId)>,
    /// Graph outputs: value name and the program tensor holding it, in signature order.
    pub outputs: Vec<(String, TensorId)>,
    /// Data of the weight tensors (program `Input` tensors that are not graph inputs).
    pub weights: Vec<(TensorId, HostTensor)>,
}

/// Why a graph could not be lowered.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// An operator (or an operand type of it) that no kernel implements yet.
    #[error("node `{node}` ({op}): no kernel for this yet: {detail}")]
    Unsupported {
        /// Node name.
        node: String,
        /// Operator.
        op: &'static str,
        /// What exactly is missing.
        detail: String,
    },
    /// A kernel refused the node's shapes or types.
    #[error("node `{node}` ({op}): {source}")]
    Kernel {
        /// Node name.
        node: String,
        /// Operator.
        op: &'static str,
        /// The kernel's error.
        source: Box<tessera_kernels::KernelError>,
    },
    /// Linking failed (an internal inconsistency, reported rather than panicking).
    #[error("node `{node}`: {detail}")]
    Link {
        /// Node name.
        node: String,
        /// What went wrong.
        detail: String,
    },
    /// The whole-graph program broke a hardware rule (an internal bug in a kernel).
    #[error("the lowered program breaks a hardware rule: {0}")]
    Verify(Box<tessera_ir::VerifyError>),
}

/// Choices that change what lowering emits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LowerOptions {
    /// Feed the tensor engine bf16 (converted by the loading DMAs) for fp32 matmuls; PSUM still
    /// accumulates in fp32 (`--auto-cast matmul`).
    pub bf16_matmul: bool,
}

struct Lowering<'g> {
    options: LowerOptions,
    custom: &'g crate::custom::CustomOps,
    graph: &'g Graph,
    target: &'g TargetSpec,
    linker: Linker,
    storage: BTreeMap<ValueId, TensorId>,
    weights: Vec<(TensorId, HostTensor)>,
    consts: usize,
}

/// Lowers `graph` for `target`. The graph must be verified (`verify_graph`).
pub fn lower(graph: &Graph, target: &TargetSpec) -> Result<Lowered, LowerError> {
    lower_with(graph, target, LowerOptions::default())
}

/// [`lower`] with options.
pub fn lower_with(
    graph: &Graph,
    target: &TargetSpec,
    options: LowerOptions,
) -> Result<Lowered, LowerError> {
    lower_custom(graph, target, options, &crate::custom::CustomOps::new())
}

/// [`lower_with`] for a graph that may hold custom nodes, whose kernels come from `custom`.
pub fn lower_custom(
    graph: &Graph,
    target: &TargetSpec,
    options: LowerOptions,
    custom: &crate::custom::CustomOps,
) -> Result<Lowered, LowerError> {
    let mut l = Lowering {
        options,
        custom,
        graph,
        target,
        linker: Linker::new(&graph.name),
        storage: BTreeMap::new(),
        weights: Vec::new(),
        consts: 0,
    };
    let mut inputs = Vec::new();
    for &id in &graph.inputs {
        let v = graph.value(id);
        let t = l
            .linker
            .add_tensor(&v.name, v.ty.dtype, &v.ty.shape, TensorKind::Input);
        l.storage.insert(id, t);
        inputs.push((v.name.clone(), t));
    }
    let used: std::collections::BTreeSet<ValueId> = graph
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().copied())
        .chain(graph.outputs.iter().copied())
        .collect();
    for (&id, data) in &graph.constants {
        if used.contains(&id) {
            let v = graph.value(id);
            let t = l
                .linker
                .add_tensor(&v.name, v.ty.dtype, &v.ty.shape, TensorKind::Input);
            l.storage.insert(id, t);
            l.weights.push((t, data.clone()));
        }
    }
    for node in &graph.nodes {
        l.node(node)?;
    }
    // Graph outputs: each gets its own Output tensor; copy if the value lives elsewhere.
    let mut outputs = Vec::new();
    let mut claimed = std::collections::BTreeSet::new();
    for &id in &graph.outputs {
        let v = graph.value(id);
        let src = l.storage_of(id, "<outputs>")?;
        if v.ty.elems() == 0 {
            // An empty output has nothing to compute or copy.
            let t = l
                .linker
                .add_tensor(&v.name, v.ty.dtype, &v.ty.shape, TensorKind::Output);
            outputs.push((v.name.clone(), t));
            continue;
        }
        let own = l.linker.program.tensor(src).kind == TensorKind::Output
            && l.linker.program.tensor(src).shape == v.ty.shape
            && claimed.insert(src);
        let t = if own {
            src
        } else {
            let t = l
                .linker
                .add_tensor(&v.name, v.ty.dtype, &v.ty.shape, TensorKind::Output);
            claimed.insert(t);
            let k =
                library::cast(target, &v.ty.shape, v.ty.dtype, v.ty.dtype).map_err(|source| {
                    LowerError::Kernel {
                        node: v.name.clone(),
                        op: "Identity",
                        source: Box::new(source),
                    }
                })?;
            l.link(
                &v.name,
                &k,
                &[Binding::whole("x", src), Binding::whole("y", t)],
            )?;
            t
        };
        outputs.push((v.name.clone(), t));
    }
    tessera_ir::verify(&l.linker.program, target).map_err(|e| LowerError::Verify(Box::new(e)))?;
    Ok(Lowered {
        program: l.linker.program,
        origins: l.linker.origins,
        inputs,
        outputs,
        weights: l.weights,
    })
}

impl Lowering<'_> {
    fn storage_of(&self, id: ValueId, node: &str) -> Result<TensorId, LowerError> {
        self.storage
            .get(&id)
            .copied()
            .ok_or_else(|| LowerError::Link {
                node: node.to_string(),
                detail: format!("value `{}` has no storage", self.graph.value(id).name),
            })
    }

    fn link(
        &mut self,
        node: &str,
        kernel: &TileProgram,
        bindings: &[Binding<'_>],
    ) -> Result<(), LowerError> {
        self.linker
            .link(node, kernel, bindings)
            .map_err(|detail| LowerError::Link {
                node: node.to_string(),
                detail,
            })
    }

    /// A fresh tensor for a node result: the graph output tensor if this value is one (and
    /// not yet stored), else scratch.
    fn result_tensor(&mut self, id: ValueId) -> TensorId {
        let v = self.graph.value(id);
        let kind = if self.graph.outputs.contains(&id) {
            TensorKind::Output
        } else {
            TensorKind::Scratch
        };
        let t = self
            .linker
            .add_tensor(&v.name, v.ty.dtype, &v.ty.shape, kind);
        self.storage.insert(id, t);
        t
    }

    /// One broadcasting element-wise kernel `out = a OP b`, linked for `node`.
    fn binary_kernel(
        &mut self,
        node: &Node,
        op: AluOp,
        a: (TensorId, &[usize]),
        b: (TensorId, &[usize]),
        out: TensorId,
        dtype: DType,
    ) -> Result<(), LowerError> {
        let k = self.kernel(node, library::binary(self.target, op, a.1, b.1, dtype))?;
        self.link(
            &node.name,
            &k,
            &[
                Binding::whole("a", a.0),
                Binding::whole("b", b.0),
                Binding::whole("out", out),
            ],
        )
    }

    /// The dtype the tensor engine reads for a matmul whose operands are `dtype` in HBM.
    fn compute_dtype(&self, dtype: DType) -> DType {
        if self.options.bf16_matmul && dtype == DType::F32 {
            DType::Bf16
        } else {
            dtype
        }
    }

    fn scratch(&mut self, name: &str, dtype: DType, shape: &[usize]) -> TensorId {
        self.linker
            .add_tensor(name, dtype, shape, TensorKind::Scratch)
    }

    /// A weight holding one scalar `value` (shape `[1]`, broadcast by the binary kernel).
    fn scalar_weight(&mut self, node: &str, dtype: DType, value: f64) -> TensorId {
        self.consts += 1;
        let t = self.linker.add_tensor(
            &format!("{node}.const{}", self.consts),
            dtype,
            &[1],
            TensorKind::Input,
        );
        self.weights
            .push((t, HostTensor::from_f64(dtype, &[1], &[value])));
        t
    }

    fn kernel<T>(
        &self,
        node: &Node,
        r: Result<T, tessera_kernels::KernelError>,
    ) -> Result<T, LowerError> {
        r.map_err(|source| LowerError::Kernel {
            node: node.name.clone(),
            op: node.op.name(),
            source: Box::new(source),
        })
    }

    fn unsupported(node: &Node, detail: impl Into<String>) -> LowerError {
        LowerError::Unsupported {
            node: node.name.clone(),
            op: node.op.name(),
            detail: detail.into(),
        }
    }

    fn node(&mut self, node: &Node) -> Result<(), LowerError> {
        let g = self.graph;
        let ty = |id: ValueId| g.ty(id).clone();
        let ins: Vec<TensorId> = node
            .inputs
            .iter()
            .map(|&i| self.storage_of(i, &node.name))
            .collect::<Result<_, _>>()?;
        let Some(&out_id) = node.outputs.first() else {
            return Err(Self::unsupported(node, "a node without results"));
        };
        let out_ty = ty(out_id);
        if node.outputs.iter().all(|&o| g.ty(o).elems() == 0) {
            // Empty results: nothing to compute; they still get (empty) tensors.
            for &o in &node.outputs {
                self.result_tensor(o);
            }
            return Ok(());
        }
        match &node.op {
            GraphOp::Reshape { .. } | GraphOp::Identity => {
                // Same elements, same order: the result shares the input's HBM tensor.
                self.storage.insert(out_id, ins[0]);
            }
            GraphOp::MatMul => {
                let out = self.result_tensor(out_id);
                self.matmul(node, ins[0], ins[1], out)?;
            }
            GraphOp::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let out = self.result_tensor(out_id);
                self.gemm(node, &ins, out, *alpha, *beta, *trans_a, *trans_b)?;
            }
            GraphOp::Binary(op) => {
                let out = self.result_tensor(out_id);
                let (a, b) = (ty(node.inputs[0]), ty(node.inputs[1]));
                self.binary_kernel(
                    node,
                    alu(*op),
                    (ins[0], &a.shape),
                    (ins[1], &b.shape),
                    out,
                    a.dtype,
                )?;
            }
            GraphOp::Unary(UnaryOp::Neg) => {
                let out = self.result_tensor(out_id);
                let minus_one = self.scalar_weight(&node.name, out_ty.dtype, -1.0);
                self.binary_kernel(
                    node,
                    AluOp::Mul,
                    (ins[0], &out_ty.shape),
                    (minus_one, &[1]),
                    out,
                    out_ty.dtype,
                )?;
            }
            GraphOp::Unary(op) => {
                let func = act_func(*op)
                    .ok_or_else(|| Self::unsupported(node, "no activation function"))?;
                if !out_ty.dtype.is_float() {
                    return Err(Self::unsupported(
                        node,
                        format!("{} on {} tensors", op.name(), out_ty.dtype),
                    ));
                }
                let out = self.result_tensor(out_id);
                let k = self.kernel(
                    node,
                    library::unary(self.target, func, &out_ty.shape, out_ty.dtype),
                )?;
                self.link(
                    &node.name,
                    &k,
                    &[Binding::whole("x", ins[0]), Binding::whole("y", out)],
                )?;
            }
            GraphOp::Softmax { axis } => {
                let out = self.result_tensor(out_id);
                self.softmax(node, ins[0], out, &out_ty.shape, out_ty.dtype, *axis)?;
            }
            GraphOp::Transpose { perm } => {
                let out = self.result_tensor(out_id);
                let in_ty = ty(node.inputs[0]);
                let k = self.kernel(
                    node,
                    library::permute(self.target, &in_ty.shape, perm, in_ty.dtype),
                )?;
                self.link(
                    &node.name,
                    &k,
                    &[Binding::whole("x", ins[0]), Binding::whole("y", out)],
                )?;
            }
            GraphOp::Concat { axis } => {
                let out = self.result_tensor(out_id);
                let shapes: Vec<Vec<usize>> = node.inputs.iter().map(|&i| ty(i).shape).collect();
                let k = self.kernel(
                    node,
                    library::concat(self.target, &shapes, *axis, out_ty.dtype),
                )?;
                let names: Vec<String> = (0..ins.len()).map(|i| format!("x{i}")).collect();
                let mut b: Vec<Binding<'_>> = names
                    .iter()
                    .zip(&ins)
                    .filter(|(n, _)| k.tensors.iter().any(|t| &t.name == *n))
                    .map(|(n, &t)| Binding::whole(n, t))
                    .collect();
                b.push(Binding::whole("y", out));
                self.link(&node.name, &k, &b)?;
            }
            GraphOp::Cast { to } => {
                let out = self.result_tensor(out_id);
                let in_ty = ty(node.inputs[0]);
                let k = self.kernel(
                    node,
                    library::cast(self.target, &in_ty.shape, in_ty.dtype, *to),
                )?;
                self.link(
                    &node.name,
                    &k,
                    &[Binding::whole("x", ins[0]), Binding::whole("y", out)],
                )?;
            }
            GraphOp::Elementwise(op) => self.elementwise(node, *op, &ins)?,
            GraphOp::Reduce(spec) => {
                let out = self.result_tensor(out_id);
                self.reduce(node, spec, ins[0], out)?;
            }
            GraphOp::Movement(op) => {
                let out = self.result_tensor(out_id);
                self.movement(node, op, &ins, out)?;
            }
            GraphOp::Custom(op) => {
                let kernel = crate::custom::build_checked(self.custom, &node.name, op, self.target)
                    .map_err(|e| LowerError::Link {
                        node: node.name.clone(),
                        detail: e.detail,
                    })?;
                let outs: Vec<TensorId> = node
                    .outputs
                    .iter()
                    .map(|&o| self.result_tensor(o))
                    .collect();
                let (inputs, outputs): (Vec<_>, Vec<_>) = kernel
                    .tensors
                    .iter()
                    .filter(|t| t.kind != TensorKind::Scratch)
                    .partition(|t| t.kind == TensorKind::Input);
                let bindings: Vec<Binding<'_>> = inputs
                    .iter()
                    .zip(&ins)
                    .chain(outputs.iter().zip(&outs))
                    .map(|(t, &id)| Binding::whole(&t.name, id))
                    .collect();
                self.link(&node.name, &kernel, &bindings)?;
            }
            GraphOp::Scan(spec) => {
                let out = self.result_tensor(out_id);
                self.scan(node, spec, ins[0], out)?;
            }
            GraphOp::Conv(spec) => {
                let out = self.result_tensor(out_id);
                self.conv(node, spec, &ins, out)?;
            }
            GraphOp::Pool(spec) => {
                let out = self.result_tensor(out_id);
                self.pool(node, spec, ins[0], out)?;
            }
            GraphOp::Gather { axis } => self.gather(node, *axis, &ins)?,
            GraphOp::Index(op) => self.index(node, op, &ins)?,
            GraphOp::Fused(op) => self.fused(node, op, &ins)?,
        }
        Ok(())
    }

    /// numpy matmul: 1-D operands promoted, batch axes broadcast, one kernel instance per batch
    /// index (the kernel is built once and linked at each batch offset).
    fn matmul(
        &mut self,
        node: &Node,
        a: TensorId,
        b: TensorId,
        out: TensorId,
    ) -> Result<(), LowerError> {
        let (at, bt) = (
            self.graph.ty(node.inputs[0]).clone(),
            self.graph.ty(node.inputs[1]).clone(),
        );
        let a2: Vec<usize> = if at.shape.len() == 1 {
            vec![1, at.shape[0]]
        } else {
            at.shape.clone()
        };
        let b2: Vec<usize> = if bt.shape.len() == 1 {
            vec![bt.shape[0], 1]
        } else {
            bt.shape.clone()
        };
        let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
        let n = b2[b2.len() - 1];
        let (a_batch, b_batch) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
        let batch = tessera_ir::graph::ops::broadcast_shapes(a_batch, b_batch)
            .map_err(|e| Self::unsupported(node, e.to_string()))?;
        let out_dtype = self.graph.ty(node.outputs[0]).dtype;
        if !matches!(at.dtype, DType::F32 | DType::Bf16 | DType::F16) {
            return Err(Self::unsupported(
                node,
                format!("MatMul on {} tensors", at.dtype),
            ));
        }
        let spec = library::MatmulSpec {
            m,
            k,
            n,
            trans_a: false,
            trans_b: false,
            in_dtype: at.dtype,
            compute_dtype: self.compute_dtype(at.dtype),
            out_dtype,
            epilogue: library::MatmulEpilogue::default(),
            swap_roles: false,
        };
        let kern = self.kernel(node, library::matmul_spec(self.target, &spec))?;
        let count: usize = batch.iter().product();
        for flat in 0..count {
            // Multi-index of this batch element, then the (broadcast) offsets into A and B.
            let idx = unflatten(flat, &batch);
            let a_off = broadcast_offset(&idx, a_batch) * (m * k) as u64;
            let b_off = broadcast_offset(&idx, b_batch) * (k * n) as u64;
            let c_off = (flat * m * n) as u64;
            self.link(
                &node.name,
                &kern,
                &[
                    Binding {
                        name: "a",
                        tensor: a,
                        offset: a_off,
                    },
                    Binding {
                        name: "b",
                        tensor: b,
                        offset: b_off,
                    },
                    Binding {
                        name: "c",
                        tensor: out,
                        offset: c_off,
                    },
                ],
            )?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // mirrors Gemm's attributes
    fn gemm(
        &mut self,
        node: &Node,
        ins: &[TensorId],
        out: TensorId,
        alpha: f64,
        beta: f64,
        trans_a: bool,
        trans_b: bool,
    ) -> Result<(), LowerError> {
        let at = self.graph.ty(node.inputs[0]).clone();
        let out_ty = self.graph.ty(node.outputs[0]).clone();
        let (m, n) = (out_ty.shape[0], out_ty.shape[1]);
        let k = if trans_a { at.shape[0] } else { at.shape[1] };
        let has_c = ins.len() > 2 && beta != 0.0;
        let needs_scale = alpha != 1.0;
        let dtype = out_ty.dtype;
        if !matches!(at.dtype, DType::F32 | DType::Bf16 | DType::F16) {
            return Err(Self::unsupported(
                node,
                format!("Gemm on {} tensors", at.dtype),
            ));
        }
        let spec = library::MatmulSpec {
            m,
            k,
            n,
            trans_a,
            trans_b,
            in_dtype: at.dtype,
            compute_dtype: self.compute_dtype(at.dtype),
            out_dtype: dtype,
            epilogue: library::MatmulEpilogue::default(),
            swap_roles: false,
        };
        let kern = self.kernel(node, library::matmul_spec(self.target, &spec))?;
        let prod = if needs_scale || has_c {
            self.scratch(&format!("{}.ab", node.name), dtype, &[m, n])
        } else {
            out
        };
        self.link(
            &node.name,
            &kern,
            &[
                Binding::whole("a", ins[0]),
                Binding::whole("b", ins[1]),
                Binding::whole("c", prod),
            ],
        )?;
        let mut acc = prod;
        if needs_scale {
            let scaled = if has_c {
                self.scratch(&format!("{}.alpha_ab", node.name), dtype, &[m, n])
            } else {
                out
            };
            let w = self.scalar_weight(&node.name, dtype, alpha);
            self.binary_kernel(node, AluOp::Mul, (acc, &[m, n]), (w, &[1]), scaled, dtype)?;
            acc = scaled;
        }
        if has_c {
            let c_ty = self.graph.ty(node.inputs[2]).clone();
            let mut c = ins[2];
            if beta != 1.0 {
                // beta * C: folded into a new weight when C is constant, else one more kernel.
                if let Some(data) = self.graph.constants.get(&node.inputs[2]) {
                    let scaled: Vec<f64> = data.to_f64_vec().iter().map(|v| v * beta).collect();
                    self.consts += 1;
                    let t = self.linker.add_tensor(
                        &format!("{}.beta_c{}", node.name, self.consts),
                        c_ty.dtype,
                        &c_ty.shape,
                        TensorKind::Input,
                    );
                    self.weights
                        .push((t, HostTensor::from_f64(c_ty.dtype, &c_ty.shape, &scaled)));
                    c = t;
                } else {
                    let t = self.scratch(&format!("{}.beta_c", node.name), c_ty.dtype, &c_ty.shape);
                    let w = self.scalar_weight(&node.name, dtype, beta);
                    self.binary_kernel(node, AluOp::Mul, (c, &c_ty.shape), (w, &[1]), t, dtype)?;
                    c = t;
                }
            }
            self.binary_kernel(
                node,
                AluOp::Add,
                (acc, &[m, n]),
                (c, &c_ty.shape),
                out,
                dtype,
            )?;
        }
        Ok(())
    }

    /// Softmax over `axis`: the library kernel works on the last axis, so other axes are moved
    /// last and back by DMA permutes.
    fn softmax(
        &mut self,
        node: &Node,
        x: TensorId,
        out: TensorId,
        shape: &[usize],
        dtype: DType,
        axis: usize,
    ) -> Result<(), LowerError> {
        let rank = shape.len();
        if rank == 0 || axis + 1 == rank {
            let k = self.kernel(node, library::softmax(self.target, shape, dtype))?;
            return self.link(
                &node.name,
                &k,
                &[Binding::whole("x", x), Binding::whole("y", out)],
            );
        }
        let mut perm: Vec<usize> = (0..rank).filter(|&i| i != axis).collect();
        perm.push(axis);
        let moved: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let mut inverse = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        let t0 = self.scratch(&format!("{}.moved", node.name), dtype, &moved);
        let t1 = self.scratch(&format!("{}.softmax", node.name), dtype, &moved);
        let k = self.kernel(node, library::permute(self.target, shape, &perm, dtype))?;
        self.link(
            &node.name,
            &k,
            &[Binding::whole("x", x), Binding::whole("y", t0)],
        )?;
        let k = self.kernel(node, library::softmax(self.target, &moved, dtype))?;
        self.link(
            &node.name,
            &k,
            &[Binding::whole("x", t0), Binding::whole("y", t1)],
        )?;
        let k = self.kernel(node, library::permute(self.target, &moved, &inverse, dtype))?;
        self.link(
            &node.name,
            &k,
            &[Binding::whole("x", t1), Binding::whole("y", out)],
        )
    }
}

fn alu(op: BinaryOp) -> AluOp {
    match op {
        BinaryOp::Add => AluOp::Add,
        BinaryOp::Sub => AluOp::Sub,
        BinaryOp::Mul => AluOp::Mul,
        BinaryOp::Div => AluOp::Div,
        BinaryOp::Pow => AluOp::Pow,
        BinaryOp::Max => AluOp::Max,
        BinaryOp::Min => AluOp::Min,
    }
}

fn act_func(op: UnaryOp) -> Option<ActFunc> {
    Some(match op {
        UnaryOp::Relu => ActFunc::Relu,
        UnaryOp::Sigmoid => ActFunc::Sigmoid,
        UnaryOp::Tanh => ActFunc::Tanh,
        UnaryOp::Exp => ActFunc::Exp,
        UnaryOp::Log => ActFunc::Log,
        UnaryOp::Sqrt => ActFunc::Sqrt,
        UnaryOp::Abs => ActFunc::Abs,
        UnaryOp::Reciprocal => ActFunc::Reciprocal,
        UnaryOp::Erf => ActFunc::Erf,
        UnaryOp::Neg => return None,
    })
}

pub(crate) fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for i in (0..shape.len()).rev() {
        idx[i] = flat % shape[i].max(1);
        flat /= shape[i].max(1);
    }
    idx
}

/// Row-major offset (in batch elements) of `idx` (over the broadcast batch shape) in an operand
/// whose batch shape is `own` (right-aligned; size-1 axes broadcast).
pub(crate) fn broadcast_offset(idx: &[usize], own: &[usize]) -> u64 {
    let skip = idx.len() - own.len();
    let mut off = 0u64;
    for (j, &d) in own.iter().enumerate() {
        let i = if d == 1 { 0 } else { idx[skip + j] };
        off = off * d as u64 + i as u64;
    }
    off
}
