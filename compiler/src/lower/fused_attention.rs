//! Lowering of fused attention: one flash-attention kernel per (batch, head) slice shape,
//! linked at each slice's offsets. The mask's leading axes broadcast against the slices (a
//! BERT mask `[B, 1, 1, T]` serves every head), and its last two axes by stride-0 views in the
//! kernel.

use super::{Binding, LowerError, Lowering, broadcast_offset, unflatten};
use tessera_ir::graph::{AttentionSpec, Node};
use tessera_ir::{DType, TensorId};
use tessera_kernels::library;

impl Lowering<'_> {
    pub(super) fn fused_attention(
        &mut self,
        node: &Node,
        spec: &AttentionSpec,
        ins: &[TensorId],
    ) -> Result<(), LowerError> {
        if spec.causal {
            return Err(Self::unsupported(
                node,
                "causal attention without a mask tensor",
            ));
        }
        let g = self.graph;
        let (qt, kt, vt) = (
            g.ty(node.inputs[0]).clone(),
            g.ty(node.inputs[1]).clone(),
            g.ty(node.inputs[2]).clone(),
        );
        if !matches!(qt.dtype, DType::F32 | DType::Bf16 | DType::F16) {
            return Err(Self::unsupported(
                node,
                format!("attention on {} tensors", qt.dtype),
            ));
        }
        let r = qt.shape.len();
        let (s, d) = (qt.shape[r - 2], qt.shape[r - 1]);
        let (t, dv) = (kt.shape[r - 2], vt.shape[r - 1]);
        let lead = &qt.shape[..r - 2];
        // The mask as [leading..., ms, mt], right-aligned against the scores [..., S, T].
        let mask = if spec.mask {
            let ms = g.ty(node.inputs[3]).shape.clone();
            let mut full = vec![1; (r).saturating_sub(ms.len())];
            full.extend(ms);
            let mr = full.len();
            Some((full[..mr - 2].to_vec(), full[mr - 2], full[mr - 1]))
        } else {
            None
        };
        let kspec = library::AttentionKernelSpec {
            s,
            t,
            d,
            dv,
            scale: spec.scale,
            mask: mask.as_ref().map(|m| (m.1, m.2)),
            dtype: qt.dtype,
        };
        let kern = self.kernel(node, library::attention(self.target, &kspec))?;
        let out = self.result_tensor(node.outputs[0]);
        let count: usize = lead.iter().product();
        for flat in 0..count {
            let f = flat as u64;
            let mut b = vec![
                Binding {
                    name: "q",
                    tensor: ins[0],
                    offset: f * (s * d) as u64,
                },
                Binding {
                    name: "k",
                    tensor: ins[1],
                    offset: f * (t * d) as u64,
                },
                Binding {
                    name: "v",
                    tensor: ins[2],
                    offset: f * (t * dv) as u64,
                },
                Binding {
                    name: "o",
                    tensor: out,
                    offset: f * (s * dv) as u64,
                },
            ];
            if let Some((mlead, ms, mt)) = &mask {
                let idx = unflatten(flat, lead);
                b.push(Binding {
                    name: "mask",
                    tensor: ins[3],
                    offset: broadcast_offset(&idx, mlead) * (ms * mt) as u64,
                });
            }
            self.link(&node.name, &kern, &b)?;
        }
        Ok(())
    }
}
