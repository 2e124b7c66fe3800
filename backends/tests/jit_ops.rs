//! Every instruction kind the jit compiles, on random shapes, layouts (transposed, padded,
//! reversed, broadcast) and dtypes, compared with interp: bit-identical for element-wise work and
//! reductions, within the documented tolerance for `nc_matmul`. Layouts whose dimensions do not
//! nest fall back to interp and must agree too.

mod jit_common;

use jit_common::assert_close;
use proptest::prelude::*;
use std::collections::BTreeMap;
use tessera_backends::interp::{self, MachineRunOptions};
use tessera_backends::jit::{Frozen, Jit, JitStats};
use tessera_ir::*;

/// A machine program under construction: buffers laid out one after another in SBUF (PSUM for
/// `psum` buffers), one queue per instruction, each waiting for the previous one.
struct B {
    p: MachineProgram,
    sbuf_at: u64,
    psum_at: u64,
    inputs: BTreeMap<String, HostTensor>,
}

impl B {
    fn new() -> Self {
        B {
            p: MachineProgram {
                name: "case".into(),
                ..Default::default()
            },
            sbuf_at: 0,
            psum_at: 0,
            inputs: BTreeMap::new(),
        }
    }

    fn buffer(&mut self, dtype: DType, parts: u32, free: usize, space: Space) -> BufId {
        let bytes = (free * dtype.size_bytes()) as u64;
        let at = match space {
            Space::Sbuf => &mut self.sbuf_at,
            Space::Psum => &mut self.psum_at,
        };
        let byte_offset = *at;
        *at += bytes.div_ceil(64) * 64;
        self.p.buffers.push(Buffer {
            name: format!("b{}", self.p.buffers.len()),
            space,
            dtype,
            partitions: parts,
            free_shape: vec![free],
            placement: Some(Placement {
                partition: 0,
                byte_offset,
            }),
        });
        BufId(self.p.buffers.len() as u32 - 1)
    }

    fn tensor(&mut self, kind: TensorKind, shape: &[usize]) -> TensorId {
        let name = format!("t{}", self.p.tensors.len());
        self.p.tensors.push(HbmTensor {
            name,
            dtype: DType::F32,
            shape: shape.to_vec(),
            kind,
        });
        self.p.hbm_offsets.push(None);
        TensorId(self.p.tensors.len() as u32 - 1)
    }

    fn push(&mut self, engine: Engine, op: Op) {
        let n = self.p.queues.len();
        let waits = if n == 0 {
            vec![]
        } else {
            vec![Wait {
                queue: QueueId(n as u32 - 1),
                count: 1,
            }]
        };
        self.p.queues.push(Queue {
            name: format!("q{n}"),
            engine,
            insts: vec![MachineInst {
                op,
                waits,
                origin: Origin::default(),
            }],
        });
    }

    fn whole(buf: BufId, parts: u32, free: usize) -> TileAccess {
        TileAccess {
            buf,
            start_partition: 0,
            partitions: parts,
            offset: 0,
            dims: vec![Dim::new(1, free as u32)],
        }
    }

    fn hbm_whole(t: TensorId, parts: u32, free: usize) -> DmaOperand {
        DmaOperand::Hbm(HbmAccess {
            tensor: t,
            offset: 0,
            dims: vec![Dim::new(free as i64, parts), Dim::new(1, free as u32)],
        })
    }

    /// A buffer filled by DMA from a new f32 input holding `values`.
    fn loaded(&mut self, dtype: DType, parts: u32, values: &[f32]) -> BufId {
        let free = values.len() / parts as usize;
        let buf = self.buffer(dtype, parts, free, Space::Sbuf);
        let t = self.tensor(TensorKind::Input, &[parts as usize, free]);
        let data: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        self.inputs.insert(
            self.p.tensors[t.0 as usize].name.clone(),
            HostTensor::from_f64(DType::F32, &[parts as usize, free], &data),
        );
        self.push(
            Engine::Dma,
            Op::DmaCopy {
                dst: DmaOperand::Tile(Self::whole(buf, parts, free)),
                src: Self::hbm_whole(t, parts, free),
            },
        );
        buf
    }

    /// A destination buffer zeroed by `memset`, and copied to a new output after `finish`.
    fn dst(&mut self, dtype: DType, parts: u32, free: usize, space: Space) -> BufId {
        let buf = self.buffer(dtype, parts, free, space);
        self.push(
            Engine::Dve,
            Op::Memset {
                engine: Engine::Dve,
                dst: Self::whole(buf, parts, free),
                value: 0.0,
            },
        );
        buf
    }

    /// `dst = lhs + rhs` over whole `[parts, free]` buffers.
    fn add(&mut self, dst: BufId, lhs: BufId, rhs: BufId, parts: u32, free: usize) {
        self.push(
            Engine::Dve,
            Op::TensorTensor {
                engine: Engine::Dve,
                op: AluOp::Add,
                dst: Self::whole(dst, parts, free),
                lhs: Self::whole(lhs, parts, free),
                rhs: Self::whole(rhs, parts, free),
            },
        );
    }

    /// Copies every buffer in `outs` to an output tensor (PSUM through an SBUF copy).
    fn finish(mut self, outs: &[BufId]) -> (MachineProgram, BTreeMap<String, HostTensor>) {
        for &buf in outs {
            let b = self.p.buffers[buf.0 as usize].clone();
            let (parts, free) = (b.partitions, b.free_shape[0]);
            let src = if b.space == Space::Psum {
                let s = self.buffer(b.dtype, parts, free, Space::Sbuf);
                self.push(
                    Engine::Dve,
                    Op::TensorCopy {
                        engine: Engine::Dve,
                        dst: Self::whole(s, parts, free),
                        src: Self::whole(buf, parts, free),
                    },
                );
                s
            } else {
                buf
            };
            let t = self.tensor(TensorKind::Output, &[parts as usize, free]);
            self.push(
                Engine::Dma,
                Op::DmaCopy {
                    dst: Self::hbm_whole(t, parts, free),
                    src: DmaOperand::Tile(Self::whole(src, parts, free)),
                },
            );
        }
        (self.p, self.inputs)
    }
}

/// How one operand lays out the logical shape in its buffer.
#[derive(Clone, Debug)]
struct Layout {
    /// Storage order of the logical dims (outermost first).
    perm: Vec<usize>,
    /// Extra elements after each storage row.
    pad: u64,
    /// Walk logical dim 0 backwards.
    reverse: bool,
    /// Logical dim given stride 0 (sources only).
    broadcast: Option<usize>,
    /// Elements from one stored element to the next (sources only: 2 reads every other
    /// element, as a stride-2 convolution or pooling window does).
    spread: u64,
}

impl Layout {
    /// Storage order equals logical order, so the view nests with any other such view.
    fn in_order(&self) -> bool {
        self.perm.windows(2).all(|w| w[0] < w[1])
    }

    /// The view's offset and dims, and the free size its buffer needs.
    fn view(&self, shape: &[u32]) -> (u64, Vec<Dim>, usize) {
        let n = shape.len();
        let mut strides = vec![0i64; n];
        let mut span = self.spread as i64;
        for (k, &d) in self.perm.iter().enumerate().rev() {
            let extra = if k == n - 1 { self.pad as i64 } else { 0 };
            strides[d] = span;
            span *= shape[d] as i64 + extra;
        }
        if let Some(b) = self.broadcast {
            strides[b] = 0;
        }
        let mut offset = 0u64;
        if self.reverse && strides[0] != 0 {
            offset = (strides[0] * (shape[0] as i64 - 1)) as u64;
            strides[0] = -strides[0];
        }
        let dims = shape
            .iter()
            .zip(&strides)
            .map(|(&s, &st)| Dim::new(st, s))
            .collect();
        (offset, dims, span as usize)
    }
}

fn layout(n: usize, source: bool) -> impl Strategy<Value = Layout> {
    let perm = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
    let (broadcast, spread) = if source {
        (
            prop_oneof![3 => Just(None), 1 => (0..n).prop_map(Some)].boxed(),
            prop_oneof![3 => Just(1u64), 1 => Just(2u64)].boxed(),
        )
    } else {
        (Just(None).boxed(), Just(1u64).boxed())
    };
    (perm, 0u64..3, any::<bool>(), broadcast, spread).prop_map(
        |(perm, pad, reverse, broadcast, spread)| Layout {
            perm,
            pad,
            reverse,
            broadcast,
            spread,
        },
    )
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    // A small deterministic generator: values in [-4, 4) with fractional bits.
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
        })
        .collect()
}

/// A source operand: a loaded buffer viewed with `layout` over `shape`.
fn source(b: &mut B, dtype: DType, parts: u32, shape: &[u32], l: &Layout, seed: u64) -> TileAccess {
    let (offset, dims, free) = l.view(shape);
    let buf = b.loaded(dtype, parts, &values(parts as usize * free, seed));
    TileAccess {
        buf,
        start_partition: 0,
        partitions: parts,
        offset,
        dims,
    }
}

fn destination(b: &mut B, dtype: DType, parts: u32, shape: &[u32], l: &Layout) -> TileAccess {
    let (offset, dims, free) = l.view(shape);
    let buf = b.dst(dtype, parts, free, Space::Sbuf);
    TileAccess {
        buf,
        start_partition: 0,
        partitions: parts,
        offset,
        dims,
    }
}

/// Runs interp and the jit (and, with the `mlir` feature, the jit with MLIR kernels); `exact`
/// demands identical bytes. Returns the jit's statistics.
fn compare(
    program: &MachineProgram,
    inputs: &BTreeMap<String, HostTensor>,
    exact: bool,
) -> JitStats {
    let target = TargetSpec::trn2();
    let want = interp::run_machine(program, &target, inputs, &MachineRunOptions::default())
        .expect("interp runs");
    let mut jit = Jit::new().expect("jit");
    let got = jit.run_machine(program, &target, inputs).expect("jit runs");
    if exact {
        assert_eq!(
            got,
            want,
            "jit differs from interp; stats {:?}",
            jit.stats()
        );
    } else {
        assert_close(&got, &want);
    }
    #[cfg(feature = "mlir")]
    {
        let mut mlir = Jit::with_mlir().expect("mlir jit");
        let got = mlir
            .run_machine(program, &target, inputs)
            .expect("mlir runs");
        if exact {
            assert_eq!(
                got,
                want,
                "mlir differs from interp; stats {:?}",
                mlir.stats()
            );
        } else {
            assert_close(&got, &want);
        }
        // MLIR kernels cover every signature Cranelift's do.
        assert_eq!(
            mlir.stats().fallbacks,
            jit.stats().fallbacks,
            "{:?}",
            mlir.stats()
        );
    }
    jit.stats().clone()
}

/// Layouts in logical order always nest: the jit must compile, not fall back.
fn assert_compiled(stats: &JitStats, layouts: &[&Layout]) {
    if layouts.iter().all(|l| l.in_order()) {
        assert_eq!(stats.fallbacks, 0, "{stats:?}");
    }
}

const ALU: [AluOp; 6] = [
    AluOp::Add,
    AluOp::Sub,
    AluOp::Mul,
    AluOp::Div,
    AluOp::Max,
    AluOp::Min,
];

fn float_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![3 => Just(DType::F32), 1 => Just(DType::Bf16)]
}

/// The tensor engine's float operand types.
fn pe_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![2 => Just(DType::F32), 1 => Just(DType::Bf16), 1 => Just(DType::F16)]
}

fn shape() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1u32..7, 1..=3)
}

/// A shape with layouts for a destination and `k` sources.
fn case(k: usize) -> impl Strategy<Value = (u32, Vec<u32>, Layout, Vec<Layout>)> {
    (1u32..9, shape()).prop_flat_map(move |(parts, shape)| {
        let n = shape.len();
        (
            Just(parts),
            Just(shape),
            layout(n, false),
            prop::collection::vec(layout(n, true), k),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn tensor_tensor_matches(
        (parts, shape, dl, sl) in case(2),
        op in prop::sample::select(ALU.to_vec()),
        dt in prop::collection::vec(float_dtype(), 3),
        seed in any::<u64>(),
    ) {
        let mut b = B::new();
        let lhs = source(&mut b, dt[1], parts, &shape, &sl[0], seed);
        let rhs = source(&mut b, dt[2], parts, &shape, &sl[1], seed ^ 0x55);
        let dst = destination(&mut b, dt[0], parts, &shape, &dl);
        let out = dst.buf;
        b.push(Engine::Dve, Op::TensorTensor { engine: Engine::Dve, op, dst, lhs, rhs });
        let (p, inputs) = b.finish(&[out]);
        let stats = compare(&p, &inputs, true);
        assert_compiled(&stats, &[&dl, &sl[0], &sl[1]]);
    }

    /// Long contiguous f32 rows: the vectorised innermost loops (Cranelift's f32x4, MLIR's
    /// vector<8xf32>) with their scalar tails, and broadcast (stride-0) and every-other-element
    /// (stride-2) sources.
    #[test]
    fn contiguous_rows_match(
        parts in 1u32..5,
        n in 1u32..40,
        op in prop::sample::select(ALU.to_vec()),
        broadcast in prop::collection::vec(any::<bool>(), 2),
        spread in prop::collection::vec(1u64..=2, 2),
        imm in -3.0f64..3.0,
        value in -5.0f64..5.0,
        seed in any::<u64>(),
    ) {
        let shape = [n];
        let row = |bcast: bool, spread| Layout { perm: vec![0], pad: 0, reverse: false, broadcast: bcast.then_some(0), spread };
        let mut b = B::new();
        let lhs = source(&mut b, DType::F32, parts, &shape, &row(broadcast[0], spread[0]), seed);
        let rhs = source(&mut b, DType::F32, parts, &shape, &row(broadcast[1], spread[1]), seed ^ 0x55);
        let dst = destination(&mut b, DType::F32, parts, &shape, &row(false, 1));
        let scaled = destination(&mut b, DType::F32, parts, &shape, &row(false, 1));
        let copied = destination(&mut b, DType::F32, parts, &shape, &row(false, 1));
        let set = destination(&mut b, DType::F32, parts, &shape, &row(false, 1));
        let outs = [dst.buf, scaled.buf, copied.buf, set.buf];
        b.push(Engine::Dve, Op::TensorTensor { engine: Engine::Dve, op, dst, lhs: lhs.clone(), rhs });
        let step = ScalarStep { op, operand: Scalar::Imm(imm), reverse: seed % 2 == 0 };
        b.push(Engine::Pool, Op::TensorScalar { engine: Engine::Pool, dst: scaled, src: lhs.clone(), op0: step, op1: None });
        b.push(Engine::Act, Op::TensorCopy { engine: Engine::Act, dst: copied, src: lhs });
        b.push(Engine::Dve, Op::Memset { engine: Engine::Dve, dst: set, value });
        let (p, inputs) = b.finish(&outs);
        let stats = compare(&p, &inputs, true);
        prop_assert_eq!(stats.fallbacks, 0);
    }

    #[test]
    fn tensor_scalar_matches(
        (parts, shape, dl, sl) in case(1),
        steps in prop::collection::vec(
            (prop::sample::select(ALU.to_vec()), any::<bool>(), any::<bool>(), -3.0f64..3.0), 1..=2),
        dt in prop::collection::vec(float_dtype(), 2),
        seed in any::<u64>(),
    ) {
        let mut b = B::new();
        let src = source(&mut b, dt[1], parts, &shape, &sl[0], seed);
        let mut ops = Vec::new();
        for (k, &(op, reverse, per_partition, imm)) in steps.iter().enumerate() {
            let operand = if per_partition {
                let buf = b.loaded(DType::F32, parts, &values(parts as usize * 2, seed ^ k as u64));
                Scalar::PerPartition(TileAccess {
                    buf, start_partition: 0, partitions: parts, offset: 1, dims: vec![Dim::new(1, 1)],
                })
            } else {
                Scalar::Imm(imm)
            };
            ops.push(ScalarStep { op, operand, reverse });
        }
        let dst = destination(&mut b, dt[0], parts, &shape, &dl);
        let out = dst.buf;
        let mut ops = ops.into_iter();
        let op0 = ops.next().unwrap();
        b.push(Engine::Dve, Op::TensorScalar { engine: Engine::Dve, dst, src, op0, op1: ops.next() });
        let (p, inputs) = b.finish(&[out]);
        let stats = compare(&p, &inputs, true);
        assert_compiled(&stats, &[&dl, &sl[0]]);
    }

    #[test]
    fn activation_matches(
        (parts, shape, dl, sl) in case(1),
        func in prop::sample::select(tessera_ir::isa::ALL_ACT_FUNCS.to_vec()),
        scale_pp in any::<bool>(),
        bias_pp in any::<bool>(),
        accum in any::<bool>(),
        dt in prop::collection::vec(float_dtype(), 2),
        seed in any::<u64>(),
    ) {
        let mut b = B::new();
        let src = source(&mut b, dt[1], parts, &shape, &sl[0], seed);
        let scalar = |pp: bool, imm: f64, b: &mut B, salt: u64| if pp {
            let buf = b.loaded(DType::F32, parts, &values(parts as usize, seed ^ salt));
            Scalar::PerPartition(B::whole(buf, parts, 1))
        } else {
            Scalar::Imm(imm)
        };
        let scale = scalar(scale_pp, 0.7, &mut b, 1);
        let bias = scalar(bias_pp, -0.3, &mut b, 2);
        let dst = destination(&mut b, dt[0], parts, &shape, &dl);
        let mut outs = vec![dst.buf];
        let accum = accum.then(|| {
            let a = b.dst(DType::F32, parts, 1, Space::Sbuf);
            outs.push(a);
            B::whole(a, parts, 1)
        });
        b.push(Engine::Act, Op::Activation { dst, src, func, scale, bias, accum });
        let (p, inputs) = b.finish(&outs);
        let stats = compare(&p, &inputs, true);
        assert_compiled(&stats, &[&dl, &sl[0]]);
    }

    #[test]
    fn tensor_reduce_matches(
        (parts, shape, _dl, sl) in case(1),
        op in prop::sample::select(tessera_ir::isa::ALL_REDUCE_OPS.to_vec()),
        axes_pick in 0usize..3,
        dt in prop::collection::vec(float_dtype(), 2),
        seed in any::<u64>(),
    ) {
        let mut sl = sl;
        sl[0].broadcast = None;
        let axes = 1 + axes_pick % shape.len();
        let mut b = B::new();
        let src = source(&mut b, dt[1], parts, &shape, &sl[0], seed);
        let kept = &shape[..shape.len() - axes];
        let free: usize = kept.iter().map(|&s| s as usize).product();
        let buf = b.dst(dt[0], parts, free, Space::Sbuf);
        let dst = TileAccess {
            buf, start_partition: 0, partitions: parts, offset: 0,
            dims: B::whole(buf, parts, free).dims,
        };
        b.push(Engine::Dve, Op::TensorReduce { engine: Engine::Dve, op, dst, src, axes: axes as u8 });
        let (p, inputs) = b.finish(&[buf]);
        let stats = compare(&p, &inputs, true);
        assert_compiled(&stats, &[&sl[0]]);
    }

    #[test]
    fn copies_and_memset_match(
        (parts, shape, dl, sl) in case(1),
        dt in prop::collection::vec(float_dtype(), 2),
        value in -5.0f64..5.0,
        seed in any::<u64>(),
    ) {
        let mut b = B::new();
        let src = source(&mut b, dt[1], parts, &shape, &sl[0], seed);
        let dst = destination(&mut b, dt[0], parts, &shape, &dl);
        let out = dst.buf;
        b.push(Engine::Dve, Op::TensorCopy { engine: Engine::Dve, dst: dst.clone(), src: src.clone() });
        // A second destination: memset over the view, then a DMA of the source into it.
        let other = destination(&mut b, dt[0], parts, &shape, &dl);
        let out2 = other.buf;
        b.push(Engine::Pool, Op::Memset { engine: Engine::Pool, dst: other.clone(), value });
        let mut dma_src = src;
        dma_src.dims.retain(|d| d.stride != 0 || d.size == 1);
        if dma_src.dims.len() == shape.len() {
            b.push(Engine::Dma, Op::DmaCopy {
                dst: DmaOperand::Tile(other),
                src: DmaOperand::Tile(dma_src),
            });
        }
        let (p, inputs) = b.finish(&[out, out2]);
        let stats = compare(&p, &inputs, true);
        assert_compiled(&stats, &[&dl, &sl[0]]);
    }

    #[test]
    fn transpose_matches(
        p in 1u32..40,
        f in 1u32..40,
        dt in pe_dtype(),
        reversed in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut b = B::new();
        let src = b.loaded(dt, p, &values((p * f) as usize, seed));
        // The source plain, or read column-reversed (gathered an element at a time).
        let src = if reversed {
            TileAccess { offset: f as u64 - 1, dims: vec![Dim::new(-1, f)], ..B::whole(src, p, f as usize) }
        } else {
            B::whole(src, p, f as usize)
        };
        let d = b.buffer(DType::F32, f, p as usize, Space::Psum);
        b.push(Engine::Pe, Op::Transpose { dst: B::whole(d, f, p as usize), src });
        let (prog, inputs) = b.finish(&[d]);
        let stats = compare(&prog, &inputs, true);
        if dt == DType::F16 {
            // As for the matmul: the f16 operand loads take the interpreter path.
            assert!(stats.fallback_ops.keys().all(|op| *op == "dma_copy"), "{stats:?}");
        } else {
            assert_eq!(stats.fallbacks, 0, "{stats:?}");
        }
        assert_eq!(stats.microkernel, 1);
    }

    #[test]
    fn matmul_within_tolerance(
        k in 1u32..40,
        m in 1u32..20,
        n in 1u32..40,
        dt in pe_dtype(),
        layout in 0u8..4,
        dst_reversed in any::<bool>(),
        accumulate in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut b = B::new();
        let st = b.loaded(dt, k, &values((k * m) as usize, seed));
        let stationary = B::whole(st, k, m as usize);
        // The moving operand plain (read in place when f32), read column-reversed, a window
        // of pairs of adjacent columns with gaps, or every other column (all gathered).
        let half = n.div_ceil(2);
        let (moving, n) = match layout {
            0 => {
                let mv = b.loaded(dt, k, &values((k * n) as usize, seed ^ 9));
                (B::whole(mv, k, n as usize), n)
            }
            1 => {
                let mv = b.loaded(dt, k, &values((k * n) as usize, seed ^ 9));
                let reversed = vec![Dim::new(-1, n)];
                (TileAccess { offset: n as u64 - 1, dims: reversed, ..B::whole(mv, k, n as usize) }, n)
            }
            2 => {
                let mv = b.loaded(dt, k, &values((k * 4 * half) as usize, seed ^ 9));
                let window = vec![Dim::new(4, half), Dim::new(1, 2)];
                (TileAccess { dims: window, ..B::whole(mv, k, 4 * half as usize) }, 2 * half)
            }
            _ => {
                // Every other column (a stride-2 convolution's window): evenly spaced runs.
                let mv = b.loaded(dt, k, &values((k * 2 * n) as usize, seed ^ 9));
                let strided = vec![Dim::new(2, n)];
                (TileAccess { dims: strided, ..B::whole(mv, k, 2 * n as usize) }, n)
            }
        };
        let d = b.buffer(DType::F32, m, n as usize, Space::Psum);
        // The destination written in place, or column-reversed (gathered and scattered).
        let dst = if dst_reversed {
            TileAccess { offset: n as u64 - 1, dims: vec![Dim::new(-1, n)], ..B::whole(d, m, n as usize) }
        } else {
            B::whole(d, m, n as usize)
        };
        b.push(Engine::Pe, Op::Matmul {
            dst: dst.clone(), stationary: stationary.clone(), moving: moving.clone(), start: true, stop: !accumulate,
        });
        if accumulate {
            b.push(Engine::Pe, Op::Matmul { dst, stationary, moving, start: false, stop: true });
        }
        let (p, inputs) = b.finish(&[d]);
        let stats = compare(&p, &inputs, false);
        if dt == DType::F16 {
            // The matmuls run in the microkernel; the f16 operand loads are not compiled yet
            // (the DMA templates cover f32 and bf16) and take the interpreter path.
            assert!(stats.fallback_ops.keys().all(|op| *op == "dma_copy"), "{stats:?}");
        } else {
            assert_eq!(stats.fallbacks, 0, "{stats:?}");
        }
        assert_eq!(stats.microkernel, 1 + accumulate as u64);
    }
}

/// f32 add, sub, mul and div equal interp's f64-then-round on awkward values (IEEE binary64 has
/// more than twice binary32's precision, so double rounding never changes the result).
/// f32 -> bf16 on the edges of the rounding rule: exact ties (to even, down and up), just above
/// a tie, the largest f32 (rounds to infinity), infinities, NaN, -0 and a subnormal.
#[test]
fn bf16_rounding_edges_match() {
    let tie = |m: u32| f32::from_bits(0x3f80_0000 | (m << 15));
    let values = [
        tie(1),
        tie(3),
        -tie(1),
        -tie(3),
        f32::from_bits(0x3f80_8001),
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -0.0,
        f32::from_bits(0x0000_8000),
        1.0,
        tie(5),
        tie(7),
        f32::from_bits(0x3f81_7fff),
        -f32::MAX,
    ];
    let mut b = B::new();
    let buf = b.loaded(DType::Bf16, 2, &values);
    let (p, inputs) = b.finish(&[buf]);
    let stats = compare(&p, &inputs, true);
    assert_eq!(stats.fallbacks, 0, "{stats:?}");
}

/// Identity, Relu and Square run four (Cranelift) or eight (MLIR) lanes at a time; every lane equals
/// interp's scalar f64 computation bit for bit on the awkward values: NaN (Relu keeps it),
/// signed zeros (Relu gives +0), subnormals, overflow to infinity after scaling, and a tail
/// shorter than a vector.
#[test]
fn vector_activations_match_on_edge_values() {
    let mut row = vec![
        f32::NAN,
        -0.0,
        0.0,
        -1e-45,
        1e-45,
        1e-40,
        f32::MAX,
        -f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1.0 + f32::EPSILON,
        -3.0,
        0.3,
    ];
    row.extend(values(18, 5));
    let (parts, free) = (2u32, row.len());
    let both: Vec<f32> = row.iter().chain(row.iter().rev()).copied().collect();
    let scalars = [(1.0, 0.0), (0.7, -0.3), (3.0, 1e-8), (-1.5, 0.0)];
    for func in [ActFunc::Identity, ActFunc::Relu, ActFunc::Square] {
        for (scale, bias) in scalars {
            for per_partition in [false, true] {
                let mut b = B::new();
                let src = b.loaded(DType::F32, parts, &both);
                let (scale, bias) = if per_partition {
                    let s = b.loaded(DType::F32, parts, &[scale as f32, -(scale as f32)]);
                    let c = b.loaded(DType::F32, parts, &[bias as f32, 0.5]);
                    (
                        Scalar::PerPartition(B::whole(s, parts, 1)),
                        Scalar::PerPartition(B::whole(c, parts, 1)),
                    )
                } else {
                    (Scalar::Imm(scale), Scalar::Imm(bias))
                };
                let dst = b.dst(DType::F32, parts, free, Space::Sbuf);
                b.push(
                    Engine::Act,
                    Op::Activation {
                        dst: B::whole(dst, parts, free),
                        src: B::whole(src, parts, free),
                        func,
                        scale,
                        bias,
                        accum: None,
                    },
                );
                let (p, inputs) = b.finish(&[dst]);
                let stats = compare(&p, &inputs, true);
                assert_eq!(stats.fallbacks, 0, "{stats:?}");
            }
        }
    }
}

/// Accumulating activations over many partitions (the property test above stops at 8), a
/// count that no vector width divides among them, in the Rust row path (exp, GELU) and the
/// compiled kernels (identity, square): every partition's sum and every element equal interp's.
#[test]
fn accumulating_activations_over_many_partitions_match() {
    for (parts, free) in [(19u32, 37usize), (128, 64), (9, 1)] {
        for func in [
            ActFunc::Exp,
            ActFunc::Identity,
            ActFunc::Square,
            ActFunc::Gelu,
        ] {
            let mut b = B::new();
            let src = b.loaded(DType::F32, parts, &values(parts as usize * free, 7));
            let bias = b.loaded(DType::F32, parts, &values(parts as usize, 11));
            let dst = b.dst(DType::F32, parts, free, Space::Sbuf);
            let acc = b.dst(DType::F32, parts, 1, Space::Sbuf);
            b.push(
                Engine::Act,
                Op::Activation {
                    dst: B::whole(dst, parts, free),
                    src: B::whole(src, parts, free),
                    func,
                    scale: Scalar::Imm(0.7),
                    bias: Scalar::PerPartition(B::whole(bias, parts, 1)),
                    accum: Some(B::whole(acc, parts, 1)),
                },
            );
            let (p, inputs) = b.finish(&[dst, acc]);
            let stats = compare(&p, &inputs, true);
            assert_eq!(stats.fallbacks, 0, "{stats:?}");
        }
    }
}

/// Transposing loads as the compiler emits them for a matmul's stationary operand (an HBM
/// `[tokens, features]` tensor read feature-major into partitions): the jit runs them in tiles
/// (`plan::block_transposed`) with unrolled rows; the result equals interp's. Sizes where the
/// row does not divide into tiles, and a bf16 copy, too.
#[test]
fn transposing_loads_match() {
    for (dtype, parts, chunks, rows) in [
        (DType::F32, 128u32, 2u32, 64u32),
        (DType::F32, 64, 4, 48),
        (DType::F32, 32, 1, 40),
        (DType::Bf16, 16, 2, 32),
    ] {
        let mut b = B::new();
        // Tensor [rows, chunks * parts]: element (r, c * parts + p) goes to partition p,
        // free element c * rows + r.
        let width = (chunks * parts) as usize;
        let t = b.tensor(TensorKind::Input, &[rows as usize, width]);
        let data: Vec<f64> = values(rows as usize * width, 9)
            .iter()
            .map(|&v| v as f64)
            .collect();
        b.inputs.insert(
            b.p.tensors[t.0 as usize].name.clone(),
            HostTensor::from_f64(dtype, &[rows as usize, width], &data),
        );
        b.p.tensors[t.0 as usize].dtype = dtype;
        let buf = b.buffer(dtype, parts, (chunks * rows) as usize, Space::Sbuf);
        let dst = TileAccess {
            dims: vec![Dim::new(rows as i64, chunks), Dim::new(1, rows)],
            ..B::whole(buf, parts, (chunks * rows) as usize)
        };
        let src = HbmAccess {
            tensor: t,
            offset: 0,
            dims: vec![
                Dim::new(1, parts),
                Dim::new(parts as i64, chunks),
                Dim::new(width as i64, rows),
            ],
        };
        b.push(
            Engine::Dma,
            Op::DmaCopy {
                dst: DmaOperand::Tile(dst),
                src: DmaOperand::Hbm(src),
            },
        );
        let (p, inputs) = b.finish(&[buf]);
        let stats = compare(&p, &inputs, true);
        assert_eq!(stats.fallbacks, 0, "{stats:?}");
    }
}

#[test]
fn f32_arithmetic_equals_f64_then_round() {
    let xs = values(4096, 7);
    let ys = values(4096, 11);
    let specials = [
        0.0f32,
        -0.0,
        f32::MIN_POSITIVE,
        1e-40,
        f32::MAX,
        1.0 + f32::EPSILON,
        3.0,
    ];
    for (&x, &y) in xs
        .iter()
        .chain(&specials)
        .zip(ys.iter().chain(specials.iter().rev()))
    {
        for op in ALU {
            let want = tessera_backends::interp::semantics::alu(op, x as f64, y as f64) as f32;
            let got = match op {
                AluOp::Add => x + y,
                AluOp::Sub => x - y,
                AluOp::Mul => x * y,
                AluOp::Div => x / y,
                AluOp::Max => want,
                _ => want,
            };
            assert_eq!(got.to_bits(), want.to_bits(), "{x} {op:?} {y}");
        }
    }
}

/// How the stationary operand of [`forwarding_case`] is put in SBUF.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// One DMA of the whole tile, read only by the matmul.
    Plain,
    /// The same, and the tile also copied to an output.
    AlsoCopied,
    /// One DMA, then the first three columns overwritten by `memset` before the matmul.
    Overwritten,
    /// Two DMAs of one input, partitions `0..8` and `8..16`.
    Halves,
    /// Two DMAs of two different inputs (the halves' maps differ).
    TwoInputs,
}

/// `stationary (16 x 8) . moving (16 x 12)` with the stationary loaded as `load` says; returns
/// the jit's statistics after checking the result against interp.
fn forwarding_case(load: Load) -> JitStats {
    let (k, m, n) = (16u32, 8usize, 12usize);
    let mut b = B::new();
    let w = values(k as usize * m, 3);
    let st = match load {
        Load::Halves | Load::TwoInputs => {
            let buf = b.buffer(DType::F32, k, m, Space::Sbuf);
            let both = b.tensor(TensorKind::Input, &[k as usize, m]);
            let tensors = match load {
                Load::Halves => [both, both],
                _ => [both, b.tensor(TensorKind::Input, &[k as usize, m])],
            };
            for (i, t) in tensors.iter().enumerate() {
                let data: Vec<f64> = values(k as usize * m, 3 + i as u64)
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                b.inputs.insert(
                    b.p.tensors[t.0 as usize].name.clone(),
                    HostTensor::from_f64(DType::F32, &[k as usize, m], &data),
                );
                let dst = TileAccess {
                    start_partition: 8 * i as u32,
                    partitions: 8,
                    ..B::whole(buf, k, m)
                };
                let src = HbmAccess {
                    tensor: *t,
                    offset: (8 * i * m) as u64,
                    dims: vec![Dim::new(m as i64, 8), Dim::new(1, m as u32)],
                };
                b.push(
                    Engine::Dma,
                    Op::DmaCopy {
                        dst: DmaOperand::Tile(dst),
                        src: DmaOperand::Hbm(src),
                    },
                );
            }
            buf
        }
        _ => b.loaded(DType::F32, k, &w),
    };
    let mut outs = Vec::new();
    match load {
        Load::AlsoCopied => {
            let copy = b.buffer(DType::F32, k, m, Space::Sbuf);
            b.push(
                Engine::Act,
                Op::TensorCopy {
                    engine: Engine::Act,
                    dst: B::whole(copy, k, m),
                    src: B::whole(st, k, m),
                },
            );
            outs.push(copy);
        }
        Load::Overwritten => {
            let cols = TileAccess {
                dims: vec![Dim::new(1, 3)],
                ..B::whole(st, k, m)
            };
            b.push(
                Engine::Pool,
                Op::Memset {
                    engine: Engine::Pool,
                    dst: cols,
                    value: 7.0,
                },
            );
        }
        _ => {}
    }
    let mv = b.loaded(DType::F32, k, &values(k as usize * n, 5));
    let d = b.buffer(DType::F32, m as u32, n, Space::Psum);
    b.push(
        Engine::Pe,
        Op::Matmul {
            dst: B::whole(d, m as u32, n),
            stationary: B::whole(st, k, m),
            moving: B::whole(mv, k, n),
            start: true,
            stop: true,
        },
    );
    outs.push(d);
    let (p, inputs) = b.finish(&outs);
    let stats = compare(&p, &inputs, false);
    assert_eq!(stats.microkernel, 1, "{stats:?}");
    stats
}

/// A load whose only reader is a matmul is skipped (the matmul reads the input tensor); one
/// that anything else reads is kept, and a matmul never forwards past a later write.
#[test]
fn loads_are_forwarded_only_when_the_matmul_alone_reads_them() {
    // The moving operand's load is always forwarded; the stationary's as listed.
    for (load, forwarded) in [
        (Load::Plain, 2),
        (Load::AlsoCopied, 1),
        (Load::Overwritten, 1),
        (Load::Halves, 3),
        (Load::TwoInputs, 1),
    ] {
        let stats = forwarding_case(load);
        assert_eq!(stats.forwarded, forwarded, "{load:?}: {stats:?}");
    }
}

/// Matmuls whose weight chunks come from an input tensor, rows apart (a half of each row):
/// with the tensor frozen, the jit copies each distinct chunk once and reads the copy, with
/// results identical to reading the tensor; a new `Frozen` copies afresh (the weights changed);
/// a tensor not named is never copied. The matmuls have short rows (the tile kernel) and long
/// rows (the sgemm); two read the same chunk.
#[test]
fn frozen_weights_are_copied_once_per_frozen_and_read_alike() {
    let (k, m) = (16u32, 8usize);
    let build = |seed: u64| {
        let mut b = B::new();
        let w = b.loaded(DType::F32, k, &values(k as usize * 2 * m, seed));
        let half = |i: usize| TileAccess {
            offset: (i * m) as u64,
            dims: vec![Dim::new(1, m as u32)],
            ..B::whole(w, k, 2 * m)
        };
        let mut outs = Vec::new();
        for (i, n) in [(0, 12usize), (1, 80), (1, 20)] {
            let mv = b.loaded(DType::F32, k, &values(k as usize * n, 7));
            let d = b.buffer(DType::F32, m as u32, n, Space::Psum);
            b.push(
                Engine::Pe,
                Op::Matmul {
                    dst: B::whole(d, m as u32, n),
                    stationary: half(i),
                    moving: B::whole(mv, k, n),
                    start: true,
                    stop: true,
                },
            );
            outs.push(d);
        }
        b.finish(&outs)
    };
    let (program, inputs) = build(1);
    let (_, changed) = build(2);
    let weights = program.tensors[0].name.clone();
    assert!(inputs.contains_key(&weights) && changed[&weights] != inputs[&weights]);
    let target = TargetSpec::trn2();
    let mut jit = Jit::new().expect("jit");
    let packed = |jit: &mut Jit, inputs: &BTreeMap<String, HostTensor>, frozen: &Frozen| {
        let got = jit
            .run_machine_frozen(&program, &target, inputs, frozen)
            .expect("jit runs");
        let plain = Jit::new()
            .expect("jit")
            .run_machine(&program, &target, inputs)
            .expect("jit runs");
        assert_eq!(
            got, plain,
            "reading the copies differs from reading the tensor"
        );
        compare(&program, inputs, false);
        jit.stats().packed_weights
    };
    let frozen = Frozen::new([weights.clone()]);
    assert_eq!(packed(&mut jit, &inputs, &frozen), 2, "both chunks copied");
    assert_eq!(packed(&mut jit, &inputs, &frozen), 2, "copies reused");
    let again = Frozen::new([weights.clone()]);
    assert_eq!(packed(&mut jit, &changed, &again), 4, "copied again");
    let other = Frozen::new(["not a weight"]);
    assert_eq!(packed(&mut jit, &inputs, &other), 4, "nothing copied");
}

/// A matmul reading the upper partitions of loaded tiles (a contraction chunk that starts at
/// partition 8) reads the right rows of the input tensors once the loads are forwarded: the
/// operand's first partition maps to the tensor row it was loaded from, whatever the host's
/// partition pitch.
#[test]
fn forwarded_operands_starting_past_partition_zero_match() {
    let (k, m, n) = (16u32, 8usize, 12usize);
    let mut b = B::new();
    let st = b.loaded(DType::F32, k, &values(k as usize * m, 3));
    let mv = b.loaded(DType::F32, k, &values(k as usize * n, 5));
    let d = b.buffer(DType::F32, m as u32, n, Space::Psum);
    let upper = |buf, free| TileAccess {
        start_partition: 8,
        partitions: 8,
        ..B::whole(buf, k, free)
    };
    b.push(
        Engine::Pe,
        Op::Matmul {
            dst: B::whole(d, m as u32, n),
            stationary: upper(st, m),
            moving: upper(mv, n),
            start: true,
            stop: true,
        },
    );
    let (p, inputs) = b.finish(&[d]);
    let stats = compare(&p, &inputs, false);
    assert_eq!(stats.forwarded, 2, "{stats:?}");
}

/// Two matmuls read the same strided window (gathered, not read in place) with different
/// stationary operands, as a convolution's output-channel chunks do. The second reuses the
/// first's gathered copy, unless something writes the window in between.
#[test]
fn shared_windows_are_gathered_once_unless_written_between() {
    for (write_between, copied) in [(false, false), (false, true), (true, false), (true, true)] {
        let (k, m, n) = (12u32, 6usize, 10usize);
        let mut b = B::new();
        let st1 = b.loaded(DType::F32, k, &values(k as usize * m, 1));
        let st2 = b.loaded(DType::F32, k, &values(k as usize * m, 2));
        let mut mv = b.loaded(DType::F32, k, &values(k as usize * 2 * n, 3));
        if copied {
            // In SBUF as a computed result rather than a load read from the input tensor.
            let c = b.buffer(DType::F32, k, 2 * n, Space::Sbuf);
            b.push(
                Engine::Act,
                Op::TensorCopy {
                    engine: Engine::Act,
                    dst: B::whole(c, k, 2 * n),
                    src: B::whole(mv, k, 2 * n),
                },
            );
            mv = c;
        }
        // Every other column: a stride-2 window, gathered.
        let window = TileAccess {
            dims: vec![Dim::new(2, n as u32)],
            ..B::whole(mv, k, 2 * n)
        };
        let d1 = b.buffer(DType::F32, m as u32, n, Space::Psum);
        let d2 = b.buffer(DType::F32, m as u32, n, Space::Psum);
        let matmul = |d: BufId, st: BufId, window: &TileAccess| Op::Matmul {
            dst: B::whole(d, m as u32, n),
            stationary: B::whole(st, k, m),
            moving: window.clone(),
            start: true,
            stop: true,
        };
        b.push(Engine::Pe, matmul(d1, st1, &window));
        if write_between {
            // Overwrite some of the window's elements (partitions 2..5, columns 4..9).
            let part = TileAccess {
                start_partition: 2,
                partitions: 3,
                offset: 4,
                dims: vec![Dim::new(1, 5)],
                ..B::whole(mv, k, 2 * n)
            };
            b.push(
                Engine::Pool,
                Op::Memset {
                    engine: Engine::Pool,
                    dst: part,
                    value: 9.5,
                },
            );
        }
        b.push(Engine::Pe, matmul(d2, st2, &window));
        let (p, inputs) = b.finish(&[d1, d2]);
        let stats = compare(&p, &inputs, false);
        assert_eq!(stats.microkernel, 2, "{stats:?}");
        assert_eq!(
            stats.shared_windows,
            u64::from(!write_between),
            "{copied} {stats:?}"
        );
    }
}

/// How [`placement_case`] places its third buffer.
#[derive(Clone, Copy, Debug)]
enum Reuse {
    /// Its own bytes.
    Fresh,
    /// Over the first buffer, once the first is dead (its load written before it is read), as
    /// the compiler reuses space.
    AfterDeath,
    /// Over the first buffer, reading what the first wrote: the program reinterprets the
    /// first buffer's bytes.
    Alias,
}

/// Three SBUF buffers: `a` loaded and copied to `b` (in another buffer), then `c` written
/// (unless it aliases `a`) and added to `b`; the sum is the output. Returns the jit's
/// statistics after checking the result against interp, exactly.
fn placement_case(reuse: Reuse) -> JitStats {
    let (parts, free) = (8u32, 24usize);
    let mut b = B::new();
    let a = b.loaded(DType::F32, parts, &values(parts as usize * free, 11));
    let copy = b.buffer(DType::F32, parts, free, Space::Sbuf);
    b.push(
        Engine::Act,
        Op::TensorCopy {
            engine: Engine::Act,
            dst: B::whole(copy, parts, free),
            src: B::whole(a, parts, free),
        },
    );
    let c = match reuse {
        Reuse::Alias => b.buffer(DType::F32, parts, free, Space::Sbuf),
        _ => b.loaded(DType::F32, parts, &values(parts as usize * free, 12)),
    };
    if !matches!(reuse, Reuse::Fresh) {
        let at = b.p.buffers[a.0 as usize].placement;
        b.p.buffers[c.0 as usize].placement = at;
    }
    let sum = b.buffer(DType::F32, parts, free, Space::Sbuf);
    b.add(sum, copy, c, parts, free);
    let (p, inputs) = b.finish(&[sum]);
    compare(&p, &inputs, true)
}

/// The jit keeps buffers at host offsets of its own (first fit over their lifetimes), which
/// gives the same results as the program's placements when buffers only share bytes one after
/// the other; a program reading one buffer's bytes through another keeps its placements.
#[test]
fn buffers_move_only_when_no_read_sees_another_buffers_bytes() {
    for (reuse, moved) in [
        (Reuse::Fresh, true),
        (Reuse::AfterDeath, true),
        (Reuse::Alias, false),
    ] {
        let stats = placement_case(reuse);
        assert_eq!(stats.moved_buffers > 0, moved, "{reuse:?}: {stats:?}");
    }
}

/// A tile stored to the scratch tensor `first` and loaded back twice around a load of `second`
/// (placed past a gap after `first` in the arena, or over it when `alias`), the three loads summed into the
/// output. With `alias` the program reads `first`'s bytes through `second`, so the arena keeps
/// its placements; otherwise `second`, written from a copy of the tile, may move. Returns the
/// jit's statistics after checking the result against interp, exactly.
fn arena_case(alias: bool) -> JitStats {
    let (parts, free) = (8u32, 24usize);
    let bytes = (parts as usize * free * 4) as u64;
    let mut b = B::new();
    let a = b.loaded(DType::F32, parts, &values(parts as usize * free, 21));
    let first = b.tensor(TensorKind::Scratch, &[parts as usize, free]);
    let second = b.tensor(TensorKind::Scratch, &[parts as usize, free]);
    b.p.hbm_offsets[first.0 as usize] = Some(0);
    b.p.hbm_offsets[second.0 as usize] = Some(if alias { 0 } else { 2 * bytes });
    b.p.scratch_bytes = 3 * bytes;
    let hbm = |t| B::hbm_whole(t, parts, free);
    let tile = |buf| DmaOperand::Tile(B::whole(buf, parts, free));
    let copy = |b: &mut B, dst, src| b.push(Engine::Dma, Op::DmaCopy { dst, src });
    copy(&mut b, hbm(first), tile(a));
    if !alias {
        copy(&mut b, hbm(second), tile(a));
    }
    let loads: Vec<BufId> = [first, second, first]
        .into_iter()
        .map(|t| {
            let buf = b.buffer(DType::F32, parts, free, Space::Sbuf);
            copy(&mut b, tile(buf), hbm(t));
            buf
        })
        .collect();
    let sum = b.buffer(DType::F32, parts, free, Space::Sbuf);
    b.add(sum, loads[0], loads[1], parts, free);
    b.add(sum, sum, loads[2], parts, free);
    let (p, inputs) = b.finish(&[sum]);
    compare(&p, &inputs, true)
}

/// Scratch tensors move in the arena like buffers in SBUF, unless a read sees another
/// tensor's bytes.
#[test]
fn scratch_tensors_move_only_when_no_read_sees_another_tensors_bytes() {
    assert!(arena_case(false).moved_scratch > 0);
    assert_eq!(arena_case(true).moved_scratch, 0);
}

/// What else [`store_case`] does around its two stores.
#[derive(Clone, Copy, Debug)]
enum Around {
    Nothing,
    /// Another instruction reads the activation's tile.
    TileRead,
    /// Between the two stores, a DMA reads rows the first store wrote.
    ReadStored,
    /// Between the two stores, a DMA reads rows the second store writes later.
    ReadUnstored,
    /// Between the activation and the first store, a DMA writes rows the first store writes.
    WriteBefore,
}

/// An activation into an SBUF tile whose halves (partitions 0..4 and 4..8) two DMAs copy to
/// the rows of an output tensor, with `around` in between. Returns the jit's statistics after
/// checking every output against interp, exactly.
fn store_case(around: Around) -> JitStats {
    let (parts, free) = (8u32, 24usize);
    let mut b = B::new();
    let a = b.loaded(DType::F32, parts, &values(parts as usize * free, 31));
    let other = b.loaded(DType::F32, parts, &values(parts as usize * free, 32));
    let y = b.buffer(DType::F32, parts, free, Space::Sbuf);
    let out = b.tensor(TensorKind::Output, &[parts as usize, free]);
    let half = |first: u32| TileAccess {
        start_partition: first,
        partitions: 4,
        ..B::whole(y, parts, free)
    };
    let rows = |first: u32| {
        DmaOperand::Hbm(HbmAccess {
            tensor: out,
            offset: first as u64 * free as u64,
            dims: vec![Dim::new(free as i64, 4), Dim::new(1, free as u32)],
        })
    };
    if let Around::ReadUnstored = around {
        // Rows 4..8 hold `other`'s until the second store (so the read between sees them).
        let src = DmaOperand::Tile(TileAccess {
            start_partition: 4,
            partitions: 4,
            ..B::whole(other, parts, free)
        });
        b.push(Engine::Dma, Op::DmaCopy { dst: rows(4), src });
    }
    b.push(
        Engine::Act,
        Op::Activation {
            dst: B::whole(y, parts, free),
            src: B::whole(a, parts, free),
            func: ActFunc::Relu,
            scale: Scalar::Imm(0.5),
            bias: Scalar::Imm(0.25),
            accum: None,
        },
    );
    let mut outs = Vec::new();
    match around {
        Around::TileRead => {
            let copy = b.buffer(DType::F32, parts, free, Space::Sbuf);
            b.push(
                Engine::Dve,
                Op::TensorCopy {
                    engine: Engine::Dve,
                    dst: B::whole(copy, parts, free),
                    src: B::whole(y, parts, free),
                },
            );
            outs.push(copy);
        }
        Around::WriteBefore => {
            let src = DmaOperand::Tile(TileAccess {
                partitions: 4,
                ..B::whole(other, parts, free)
            });
            b.push(Engine::Dma, Op::DmaCopy { dst: rows(0), src });
        }
        _ => {}
    }
    b.push(
        Engine::Dma,
        Op::DmaCopy {
            dst: rows(0),
            src: DmaOperand::Tile(half(0)),
        },
    );
    if let Around::ReadStored | Around::ReadUnstored = around {
        let first = if matches!(around, Around::ReadStored) {
            0
        } else {
            4
        };
        let seen = b.buffer(DType::F32, 4, free, Space::Sbuf);
        b.push(
            Engine::Dma,
            Op::DmaCopy {
                dst: DmaOperand::Tile(B::whole(seen, 4, free)),
                src: rows(first),
            },
        );
        outs.push(seen);
    }
    b.push(
        Engine::Dma,
        Op::DmaCopy {
            dst: rows(4),
            src: DmaOperand::Tile(half(4)),
        },
    );
    let (p, inputs) = b.finish(&outs);
    compare(&p, &inputs, true)
}

/// An element-wise result that only DMAs to HBM read is written there directly, unless the
/// tile is read otherwise, or something between reads bytes the stores have not written yet
/// or writes bytes they write.
#[test]
fn stores_are_forwarded_only_when_nothing_sees_the_difference() {
    for (around, forwarded) in [
        (Around::Nothing, true),
        (Around::TileRead, false),
        (Around::ReadStored, true),
        (Around::ReadUnstored, false),
        (Around::WriteBefore, false),
    ] {
        let stats = store_case(around);
        assert_eq!(
            stats.forwarded_stores >= 2,
            forwarded,
            "{around:?}: {stats:?}"
        );
    }
}
