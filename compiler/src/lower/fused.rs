//! Lowering of [`GraphOp::Fused`](tessera_ir::graph::GraphOp::Fused): each fused operator the
//! optimiser chose becomes one kernel.
//!
//! - An element-wise program becomes one `ewchain` kernel: each block is loaded once, every step
//!   runs on chip, only the result is stored. Scalar operands become `tensor_scalar` immediates.
//! - LayerNorm and RMSNorm become the `layer_norm` / `rms_norm` kernel (absent gamma/beta
//!   become ones/zeros weights).
//! - Matmul, convolution and attention kernels with epilogues are in their own files.

use super::{Binding, LowerError, Lowering, act_func, alu};
use tessera_ir::graph::{
    Activation, BinaryOp, EwArg, EwInst, EwProgram, FusedOp, Node, NormKind, NormSpec, UnaryOp,
};
use tessera_ir::{ActFunc, AluOp, DType, HostTensor, TensorId, TensorKind};
use tessera_kernels::library::{self, EwChain, EwStep, Operand};

/// The activation-engine function of an epilogue activation.
pub(crate) fn activation_func(a: Activation) -> ActFunc {
    match a {
        Activation::Relu => ActFunc::Relu,
        Activation::Sigmoid => ActFunc::Sigmoid,
        Activation::Tanh => ActFunc::Tanh,
        Activation::Gelu => ActFunc::Gelu,
        Activation::GeluTanh => ActFunc::GeluTanh,
        Activation::Silu => ActFunc::Silu,
    }
}

/// Why an element-wise program has no `ewchain` form.
pub(crate) fn ew_steps(program: &EwProgram, dtype: DType) -> Result<Vec<(EwStep, DType)>, String> {
    let mut steps = Vec::new();
    // Where each program step's value is among the chain's steps.
    let mut at: Vec<usize> = Vec::new();
    for inst in &program.steps {
        let operand = |a: EwArg| match a {
            EwArg::In(k) => Ok(Operand::In(k)),
            EwArg::Step(k) => Ok(Operand::Step(at[k])),
            EwArg::Scalar(_) => Err(()),
        };
        match *inst {
            EwInst::Binary(op, a, b) => {
                let alu_op = alu(op);
                let commutes = matches!(
                    op,
                    BinaryOp::Add | BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min
                );
                let step = match (a, b) {
                    (_, EwArg::Scalar(s)) => match operand(a) {
                        Ok(x) => EwStep::AluScalar(x, alu_op, s),
                        Err(()) => return Err("an operation on two scalars".into()),
                    },
                    (EwArg::Scalar(s), _) if commutes => match operand(b) {
                        Ok(x) => EwStep::AluScalar(x, alu_op, s),
                        Err(()) => return Err("an operation on two scalars".into()),
                    },
                    (EwArg::Scalar(_), _) => {
                        return Err(format!("a scalar on the left of {}", op.name()));
                    }
                    _ => EwStep::Alu(
                        operand(a).map_err(|_| "scalar")?,
                        alu_op,
                        operand(b).map_err(|_| "scalar")?,
                    ),
                };
                steps.push((step, dtype));
            }
            EwInst::Unary(UnaryOp::Neg, a) => {
                let x = operand(a).map_err(|_| "a unary operation on a scalar")?;
                steps.push((EwStep::AluScalar(x, AluOp::Mul, -1.0), dtype));
            }
            EwInst::Unary(op, a) => {
                let x = operand(a).map_err(|_| "a unary operation on a scalar")?;
                let f = act_func(op).ok_or_else(|| format!("no activation for {}", op.name()))?;
                steps.push((EwStep::Act(x, f), dtype));
            }
            EwInst::Act(act, a) => {
                let x = operand(a).map_err(|_| "an activation of a scalar")?;
                steps.push((EwStep::Act(x, activation_func(act)), dtype));
            }
        }
        at.push(steps.len() - 1);
    }
    Ok(steps)
}

/// Whether lowering has a kernel for the fused operator on operands of these types (the
/// optimiser never chooses a form it cannot lower).
pub fn fused_supported(op: &FusedOp, ins: &[&tessera_ir::graph::TensorType]) -> bool {
    let dtype = ins.first().map_or(DType::F32, |t| t.dtype);
    match op {
        FusedOp::Elementwise(p) => ins.len() <= 8 && ew_steps(p, dtype).is_ok(),
        FusedOp::Norm(_) => matches!(dtype, DType::F32 | DType::Bf16 | DType::F16),
        FusedOp::MatMul(_) => ins
            .first()
            .is_some_and(|t| matches!(t.dtype, DType::F32 | DType::Bf16 | DType::F16)),
        FusedOp::Conv(c) => {
            !c.conv.transpose
                && ins
                    .first()
                    .is_some_and(|t| matches!(t.dtype, DType::F32 | DType::Bf16 | DType::F16))
        }
        FusedOp::PeTranspose { perm } => {
            dtype.is_float() && tessera_ir::graph::fused::pe_transpose_split(perm).is_some()
        }
        FusedOp::Attention(a) => {
            !a.causal
                && ins.len() >= 3
                && ins[2].shape.last().is_some_and(|&dv| dv <= 512)
                && matches!(dtype, DType::F32 | DType::Bf16 | DType::F16)
        }
    }
}

impl Lowering<'_> {
    pub(super) fn fused(
        &mut self,
        node: &Node,
        op: &FusedOp,
        ins: &[TensorId],
    ) -> Result<(), LowerError> {
        match op {
            FusedOp::Elementwise(p) => self.fused_elementwise(node, p, ins),
            FusedOp::Norm(spec) => self.fused_norm(node, spec, ins),
            FusedOp::MatMul(m) => self.fused_matmul(node, m, ins),
            FusedOp::Conv(c) => {
                let out = self.result_tensor(node.outputs[0]);
                let bias = c.bias.then(|| ins[2]);
                let residual = c.residual.then(|| ins[2 + c.bias as usize]);
                let act = c.act.map(activation_func);
                let post = c.post_act.map(activation_func);
                self.conv_with(node, &c.conv, ins[0], bias, out, (act, residual, post))
            }
            FusedOp::Attention(a) => self.fused_attention(node, a, ins),
            FusedOp::PeTranspose { perm } => self.pe_transpose(node, perm, ins[0]),
        }
    }

    /// A batch of 2-D transposes on the tensor engine (`transpose2d`), one kernel linked per
    /// batch index.
    fn pe_transpose(&mut self, node: &Node, perm: &[usize], x: TensorId) -> Result<(), LowerError> {
        let ty = self.graph.ty(node.inputs[0]).clone();
        let Some((b, k)) = tessera_ir::graph::fused::pe_transpose_split(perm) else {
            return Err(Self::unsupported(
                node,
                format!("{perm:?} is not a batch of 2-D transposes"),
            ));
        };
        let batch: usize = ty.shape[..b].iter().product();
        let rows: usize = ty.shape[b..b + k].iter().product();
        let cols: usize = ty.shape[b + k..].iter().product();
        let kern = self.kernel(
            node,
            library::transpose2d(self.target, rows, cols, ty.dtype),
        )?;
        let out = self.result_tensor(node.outputs[0]);
        for i in 0..batch {
            let off = (i * rows * cols) as u64;
            self.link(
                &node.name,
                &kern,
                &[
                    Binding {
                        name: "x",
                        tensor: x,
                        offset: off,
                    },
                    Binding {
                        name: "y",
                        tensor: out,
                        offset: off,
                    },
                ],
            )?;
        }
        Ok(())
    }

    fn fused_elementwise(
        &mut self,
        node: &Node,
        program: &EwProgram,
        ins: &[TensorId],
    ) -> Result<(), LowerError> {
        let g = self.graph;
        let out_ty = g.ty(node.outputs[0]).clone();
        let steps = ew_steps(program, out_ty.dtype).map_err(|e| Self::unsupported(node, e))?;
        let chain = EwChain {
            inputs: node
                .inputs
                .iter()
                .map(|&i| (g.ty(i).shape.clone(), g.ty(i).dtype))
                .collect(),
            steps,
            out_dtype: out_ty.dtype,
        };
        let k = self.kernel(node, library::ewchain(self.target, &chain))?;
        let out = self.result_tensor(node.outputs[0]);
        let names: Vec<String> = (0..ins.len()).map(|i| format!("x{i}")).collect();
        let mut b: Vec<Binding<'_>> = names
            .iter()
            .zip(ins)
            .map(|(n, &t)| Binding::whole(n, t))
            .collect();
        b.push(Binding::whole("y", out));
        self.link(&node.name, &k, &b)
    }

    fn fused_norm(
        &mut self,
        node: &Node,
        spec: &NormSpec,
        ins: &[TensorId],
    ) -> Result<(), LowerError> {
        let ty = self.graph.ty(node.outputs[0]).clone();
        let c = *ty.shape.last().unwrap_or(&1);
        let mut next = 1;
        let mut param = |l: &mut Self, present: bool, fill: f64, what: &str| {
            if present {
                next += 1;
                ins[next - 1]
            } else {
                l.consts += 1;
                let t = l.linker.add_tensor(
                    &format!("{}.{what}{}", node.name, l.consts),
                    ty.dtype,
                    &[c],
                    TensorKind::Input,
                );
                l.weights
                    .push((t, HostTensor::from_f64(ty.dtype, &[c], &vec![fill; c])));
                t
            }
        };
        let gamma = param(self, spec.scale, 1.0, "gamma");
        let beta = param(self, spec.shift, 0.0, "beta");
        let kernel = match spec.kind {
            NormKind::Layer => library::layer_norm(self.target, &ty.shape, ty.dtype, spec.eps),
            NormKind::Rms => library::rms_norm(self.target, &ty.shape, ty.dtype, spec.eps),
        };
        let k = self.kernel(node, kernel)?;
        let out = self.result_tensor(node.outputs[0]);
        self.link(
            &node.name,
            &k,
            &[
                Binding::whole("x", ins[0]),
                Binding::whole("gamma", gamma),
                Binding::whole("beta", beta),
                Binding::whole("y", out),
            ],
        )
    }
}
