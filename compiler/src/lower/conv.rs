//! Lowering of [`GraphOp::Conv`](tessera_ir::graph::GraphOp::Conv) and
//! [`GraphOp::Pool`](tessera_ir::graph::GraphOp::Pool).
//!
//! Convolution weights are constants; they are rearranged here into the layout the `conv`
//! kernel reads, `[group, C_in, tap, C_out]`, as a new weight tensor. Small groups are packed
//! into one block-diagonal group of up to 128 channels (zeros between the groups), so a
//! depthwise convolution still runs 128 channels per matmul on the tensor engine instead of
//! one. `ConvTranspose` becomes a stride-1 convolution of the zero-inserted input
//! (`in_dilation` = stride, done by the kernel's strided DMA into a zeroed block) with spatially
//! flipped, channel-swapped weights and begin padding `(k - 1) d - pads_begin`: that keeps it a
//! PSUM-accumulated matmul chain instead of a scatter of tap products, which would need
//! read-modify-write of overlapping output windows.

use super::link::Binding;
use super::{LowerError, Lowering};
use tessera_ir::graph::Node;
use tessera_ir::graph::conv::{ConvSpec, PoolKind, PoolSpec};
use tessera_ir::{DType, HostTensor, TensorId, TensorKind};
use tessera_kernels::library;

/// A fused convolution's epilogue: the activation, the residual input, and the activation
/// after the residual.
pub(super) type ConvEpilogueParts = (
    Option<tessera_ir::ActFunc>,
    Option<TensorId>,
    Option<tessera_ir::ActFunc>,
);

/// `v` (one entry per spatial axis) as three axes, leading entries `fill`.
fn three<T: Copy>(v: &[T], fill: T) -> [T; 3] {
    let mut o = [fill; 3];
    o[3 - v.len()..].copy_from_slice(v);
    o
}

/// Groups of `cin_g` / `cout_g` channels packed into one block-diagonal group: the largest
/// divisor of `groups` whose packed channels fit the 128 partitions (1 when a group alone is
/// wider).
fn pack(groups: usize, cin_g: usize, cout_g: usize, limit: usize) -> usize {
    (1..=groups)
        .rev()
        .find(|&p| groups.is_multiple_of(p) && p * cin_g <= limit && p * cout_g <= limit)
        .unwrap_or(1)
}

impl Lowering<'_> {
    pub(super) fn conv(
        &mut self,
        node: &Node,
        spec: &ConvSpec,
        ins: &[TensorId],
        out: TensorId,
    ) -> Result<(), LowerError> {
        let bias = ins.get(2).copied();
        self.conv_with(node, spec, ins[0], bias, out, (None, None, None))
    }

    /// A convolution of `x` (+ `bias`) into `out` by the node's constant weights (its second
    /// input, rearranged here), with the fused form's epilogue applied while results leave
    /// PSUM: an activation, a residual, and an activation after the residual.
    pub(super) fn conv_with(
        &mut self,
        node: &Node,
        spec: &ConvSpec,
        x: TensorId,
        bias: Option<TensorId>,
        out: TensorId,
        epilogue: ConvEpilogueParts,
    ) -> Result<(), LowerError> {
        let (act, residual, post_act) = epilogue;
        let g = self.graph;
        let xt = g.ty(node.inputs[0]).clone();
        let wt = g.ty(node.inputs[1]).clone();
        let yt = g.ty(node.outputs[0]).clone();
        if !matches!(xt.dtype, DType::F32 | DType::Bf16 | DType::F16) {
            return Err(Self::unsupported(
                node,
                format!("{} on {} tensors", node.op.name(), xt.dtype),
            ));
        }
        let Some(wdata) = g.constants.get(&node.inputs[1]) else {
            return Err(Self::unsupported(
                node,
                "weights computed at run time (they are rearranged at compile time)",
            ));
        };
        let wv = wdata.to_f64_vec();
        let kernel = three(&wt.shape[2..], 1);
        let taps: usize = kernel.iter().product();
        let groups = spec.group;
        let (c_in, c_out) = (xt.shape[1], yt.shape[1]);
        let (cin_g, cout_g) = (c_in / groups, c_out / groups);
        let parts = self.target.partitions as usize;
        let p = pack(groups, cin_g, cout_g, parts);
        let (sg, cin_p, cout_p) = (groups / p, p * cin_g, p * cout_g);
        // w_arr[s, ci', t, co'] for super-group s packing groups s p .. (s + 1) p.
        let mut arr = vec![0.0; sg * cin_p * taps * cout_p];
        for s in 0..sg {
            for j in 0..p {
                let gi = s * p + j;
                for ci in 0..cin_g {
                    for co in 0..cout_g {
                        for t in 0..taps {
                            let src = if spec.transpose {
                                // W[C_in, C_out / g, k]: flipped taps.
                                (((gi * cin_g + ci) * cout_g + co) * taps) + (taps - 1 - t)
                            } else {
                                (((gi * cout_g + co) * cin_g + ci) * taps) + t
                            };
                            let dst = (((s * cin_p + j * cin_g + ci) * taps + t) * cout_p)
                                + j * cout_g
                                + co;
                            arr[dst] = wv[src];
                        }
                    }
                }
            }
        }
        self.consts += 1;
        let shape = [sg, cin_p, taps, cout_p];
        let w = self.linker.add_tensor(
            &format!("{}.weights{}", node.name, self.consts),
            xt.dtype,
            &shape,
            TensorKind::Input,
        );
        self.weights
            .push((w, HostTensor::from_f64(xt.dtype, &shape, &arr)));

        let strides = three(&spec.strides, 1);
        let dilations = three(&spec.dilations, 1);
        let (strides_k, pads_begin, in_dilation) = if spec.transpose {
            let pb = three(&spec.pads_begin, 0);
            let eq: Vec<i64> = (0..3)
                .map(|a| (kernel[a] as i64 - 1) * dilations[a] as i64 - pb[a])
                .collect();
            ([1; 3], [eq[0], eq[1], eq[2]], strides)
        } else {
            (strides, three(&spec.pads_begin, 0), [1; 3])
        };
        let kspec = library::ConvKernelSpec {
            batch: xt.shape[0],
            groups: sg,
            c_in: cin_p,
            c_out: cout_p,
            in_sp: three(&xt.shape[2..], 1),
            out_sp: three(&yt.shape[2..], 1),
            kernel,
            strides: strides_k,
            dilations,
            pads_begin,
            in_dilation,
            bias: bias.is_some(),
            dtype: xt.dtype,
            compute_dtype: self.compute_dtype(xt.dtype),
            act,
            residual: residual.is_some(),
            post_act,
        };
        let k = self.kernel(node, library::conv(self.target, &kspec))?;
        let mut b = vec![
            Binding::whole("x", x),
            Binding::whole("w", w),
            Binding::whole("y", out),
        ];
        if let Some(t) = bias {
            b.push(Binding::whole("b", t));
        }
        if let Some(t) = residual {
            b.push(Binding::whole("residual", t));
        }
        self.link(&node.name, &k, &b)
    }

    pub(super) fn pool(
        &mut self,
        node: &Node,
        spec: &PoolSpec,
        x: TensorId,
        out: TensorId,
    ) -> Result<(), LowerError> {
        let g = self.graph;
        let xt = g.ty(node.inputs[0]).clone();
        let yt = g.ty(node.outputs[0]).clone();
        let float = xt.dtype.is_float();
        if !(float || matches!(spec.kind, PoolKind::Max)) || xt.dtype == DType::Bool {
            return Err(Self::unsupported(
                node,
                format!("{} on {} tensors", node.op.name(), xt.dtype),
            ));
        }
        let out_sp = three(&yt.shape[2..], 1);
        let kind = match spec.kind {
            PoolKind::Max => library::PoolOp::Max,
            PoolKind::Avg { .. } => library::PoolOp::Sum,
            PoolKind::Lp { p } => library::PoolOp::LpSum { p },
        };
        let kspec = library::PoolKernelSpec {
            rows: xt.shape[0] * xt.shape[1],
            in_sp: three(&xt.shape[2..], 1),
            out_sp,
            kernel: three(&spec.kernel, 1),
            strides: three(&spec.strides, 1),
            dilations: three(&spec.dilations, 1),
            pads_begin: three(&spec.pads_begin, 0),
            op: kind,
            scaled: matches!(spec.kind, PoolKind::Avg { .. }),
            dtype: xt.dtype,
        };
        let k = self.kernel(node, library::pool(self.target, &kspec))?;
        let mut b = vec![Binding::whole("x", x), Binding::whole("y", out)];
        if kspec.scaled {
            // The average's divisor per output position, computed here: 1 / count.
            let inv: Vec<f64> = spec
                .avg_divisors(&xt.shape[2..], &yt.shape[2..])
                .iter()
                .map(|c| 1.0 / c)
                .collect();
            self.consts += 1;
            let n = inv.len();
            let t = self.linker.add_tensor(
                &format!("{}.inv_count{}", node.name, self.consts),
                DType::F32,
                &[n],
                TensorKind::Input,
            );
            self.weights
                .push((t, HostTensor::from_f64(DType::F32, &[n], &inv)));
            b.push(Binding::whole("scale", t));
        }
        self.link(&node.name, &k, &b)
    }
}
