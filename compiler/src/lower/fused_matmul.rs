//! Lowering of a fused matmul (`act(alpha op(A) op(B) + bias) + residual`): one matmul kernel
//! whose epilogue applies the rest while results leave PSUM, built once and linked at each
//! batch index like a plain batched matmul (`Lowering::matmul`).

use super::fused::activation_func;
use super::{Binding, LowerError, Lowering, broadcast_offset, unflatten};
use tessera_ir::graph::{MatMulEpilogue, Node};
use tessera_ir::{DType, TensorId};
use tessera_kernels::library;

impl Lowering<'_> {
    pub(super) fn fused_matmul(
        &mut self,
        node: &Node,
        spec: &MatMulEpilogue,
        ins: &[TensorId],
    ) -> Result<(), LowerError> {
        let g = self.graph;
        let (at, bt) = (g.ty(node.inputs[0]).clone(), g.ty(node.inputs[1]).clone());
        let out_ty = g.ty(node.outputs[0]).clone();
        if !matches!(at.dtype, DType::F32 | DType::Bf16 | DType::F16) {
            return Err(Self::unsupported(
                node,
                format!("matmul on {} tensors", at.dtype),
            ));
        }
        let (ra, rb, ro) = (at.shape.len(), bt.shape.len(), out_ty.shape.len());
        let (m, n) = (out_ty.shape[ro - 2], out_ty.shape[ro - 1]);
        let k = if spec.trans_a {
            at.shape[ra - 2]
        } else {
            at.shape[ra - 1]
        };
        let (a_batch, b_batch) = (&at.shape[..ra - 2], &bt.shape[..rb - 2]);
        let batch = &out_ty.shape[..ro - 2];
        let kspec = library::MatmulSpec {
            m,
            k,
            n,
            trans_a: spec.trans_a,
            trans_b: spec.trans_b,
            in_dtype: at.dtype,
            compute_dtype: self.compute_dtype(at.dtype),
            out_dtype: out_ty.dtype,
            epilogue: library::MatmulEpilogue {
                alpha: spec.alpha,
                bias: spec.bias,
                act: spec.act.map(activation_func),
                residual: spec.residual,
            },
            swap_roles: spec.swap_roles,
        };
        let kern = self.kernel(node, library::matmul_spec(self.target, &kspec))?;
        let out = self.result_tensor(node.outputs[0]);
        let bias = spec.bias.then(|| ins[2]);
        let residual = spec.residual.then(|| ins[2 + spec.bias as usize]);
        let count: usize = batch.iter().product();
        for flat in 0..count {
            let idx = unflatten(flat, batch);
            let a_off = broadcast_offset(&idx, a_batch) * (m * k) as u64;
            let b_off = broadcast_offset(&idx, b_batch) * (k * n) as u64;
            let c_off = (flat * m * n) as u64;
            let mut b = vec![
                Binding {
                    name: "a",
                    tensor: ins[0],
                    offset: a_off,
                },
                Binding {
                    name: "b",
                    tensor: ins[1],
                    offset: b_off,
                },
                Binding {
                    name: "c",
                    tensor: out,
                    offset: c_off,
                },
            ];
            if let Some(t) = bias {
                b.push(Binding::whole("bias", t));
            }
            if let Some(t) = residual {
                b.push(Binding {
                    name: "residual",
                    tensor: t,
                    offset: c_off,
                });
            }
            self.link(&node.name, &kern, &b)?;
        }
        Ok(())
    }
}
