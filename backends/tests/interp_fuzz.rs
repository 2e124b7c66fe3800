//! Random, mostly malformed programs: the emulator must answer with a result or a typed error,
//! never a panic.

use proptest::prelude::*;
use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_ir::*;

fn view() -> impl Strategy<Value = TileAccess> {
    (
        0u32..5,
        0u32..2,
        0u32..5,
        0u64..12,
        prop::collection::vec((-3i64..5, 0u32..5), 0..4),
    )
        .prop_map(
            |(buf, start_partition, partitions, offset, dims)| TileAccess {
                buf: BufId(buf),
                start_partition,
                partitions,
                offset,
                dims: dims.into_iter().map(|(s, n)| Dim::new(s, n)).collect(),
            },
        )
}

fn scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        (-2.0f64..2.0).prop_map(Scalar::Imm),
        view().prop_map(Scalar::PerPartition)
    ]
}

fn expr() -> impl Strategy<Value = AffineExpr> {
    (-3i64..3, -3i64..3, prop::collection::vec(-3i64..3, 0..4)).prop_map(
        |(base, partition, free)| AffineExpr {
            base,
            partition,
            free,
        },
    )
}

fn dma_end() -> impl Strategy<Value = DmaOperand> {
    prop_oneof![
        view().prop_map(DmaOperand::Tile),
        (
            0u32..3,
            0u64..8,
            prop::collection::vec((-2i64..4, 0u32..4), 0..3)
        )
            .prop_map(|(t, offset, dims)| {
                DmaOperand::Hbm(HbmAccess {
                    tensor: TensorId(t),
                    offset,
                    dims: dims.into_iter().map(|(s, n)| Dim::new(s, n)).collect(),
                })
            }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let alu = prop::sample::select(tessera_ir::isa::ALL_ALU_OPS.to_vec());
    prop_oneof![
        (0u32..5).prop_map(|b| Op::Alloc { buf: BufId(b) }),
        (0u32..5).prop_map(|b| Op::Free { buf: BufId(b) }),
        (dma_end(), dma_end()).prop_map(|(dst, src)| Op::DmaCopy { dst, src }),
        (view(), view(), view(), any::<bool>()).prop_map(|(dst, stationary, moving, start)| {
            Op::Matmul {
                dst,
                stationary,
                moving,
                start,
                stop: true,
            }
        }),
        (view(), view()).prop_map(|(dst, src)| Op::Transpose { dst, src }),
        (view(), view(), scalar(), scalar(), prop::option::of(view())).prop_map(
            |(dst, src, scale, bias, accum)| {
                Op::Activation {
                    dst,
                    src,
                    func: ActFunc::Gelu,
                    scale,
                    bias,
                    accum,
                }
            }
        ),
        (alu.clone(), view(), view(), view()).prop_map(|(op, dst, lhs, rhs)| Op::TensorTensor {
            engine: Engine::Dve,
            op,
            dst,
            lhs,
            rhs
        }),
        (alu, view(), view(), scalar(), any::<bool>()).prop_map(
            |(op, dst, src, operand, reverse)| {
                Op::TensorScalar {
                    engine: Engine::Dve,
                    dst,
                    src,
                    op0: ScalarStep {
                        op,
                        operand,
                        reverse,
                    },
                    op1: None,
                }
            }
        ),
        (view(), view(), 0u8..5).prop_map(|(dst, src, axes)| Op::TensorReduce {
            engine: Engine::Dve,
            op: ReduceOp::Max,
            dst,
            src,
            axes
        }),
        (view(), -3.0f64..3.0).prop_map(|(dst, value)| Op::Memset {
            engine: Engine::Dve,
            dst,
            value
        }),
        (view(), expr()).prop_map(|(dst, expr)| Op::Iota {
            engine: Engine::Pool,
            dst,
            expr
        }),
        (view(), view(), expr()).prop_map(|(dst, src, expr)| Op::AffineSelect {
            engine: Engine::Pool,
            dst,
            src,
            expr,
            cmp: CmpOp::Ge,
            fill: -1.0
        }),
        (view(), view(), view(), view()).prop_map(|(dst, pred, on_true, on_false)| Op::Select {
            engine: Engine::Dve,
            dst,
            pred,
            on_true,
            on_false
        }),
    ]
}

fn program(insts: Vec<Op>) -> TileProgram {
    let mut p = TileProgram::new("fuzz");
    let dtypes = [DType::F32, DType::Bf16, DType::I32, DType::Fp8E4m3];
    for (i, dtype) in dtypes.into_iter().enumerate() {
        p.buffers.push(Buffer {
            name: format!("b{i}"),
            space: if i == 0 { Space::Psum } else { Space::Sbuf },
            dtype,
            partitions: 4,
            free_shape: vec![3, 4],
            placement: None,
        });
    }
    p.tensors.push(HbmTensor {
        name: "x".into(),
        dtype: DType::F32,
        shape: vec![4, 4],
        kind: TensorKind::Input,
    });
    p.tensors.push(HbmTensor {
        name: "y".into(),
        dtype: DType::Bf16,
        shape: vec![2],
        kind: TensorKind::Output,
    });
    // Every buffer starts allocated and filled so that more random instructions get past the
    // poison checks and exercise the arithmetic.
    for b in 0..4 {
        p.insts.push(Inst::new(Op::Alloc { buf: BufId(b) }));
        p.insts.push(Inst::new(Op::Memset {
            engine: Engine::Dve,
            dst: TileAccess {
                buf: BufId(b),
                start_partition: 0,
                partitions: 4,
                offset: 0,
                dims: vec![Dim::new(1, 12)],
            },
            value: 1.5,
        }));
    }
    p.insts.extend(insts.into_iter().map(Inst::new));
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_programs_never_panic(insts in prop::collection::vec(op(), 1..8)) {
        let p = program(insts);
        let x = HostTensor::from_f64(DType::F32, &[4, 4], &[0.5; 16]);
        let inputs = BTreeMap::from([("x".to_string(), x)]);
        // Either outcome is fine; a panic fails the property.
        let _ = interp::run(&p, &TargetSpec::trn2(), &inputs);
    }
}
