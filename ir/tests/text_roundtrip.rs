//! Property tests of the `.tile` format: random programs covering every opcode and option
//! round-trip through `print`/`parse`, printing is canonical, and no input makes the parser
//! panic.

use proptest::prelude::*;
use proptest::sample::select;
use tessera_ir::isa::{ALL_ACT_FUNCS, ALL_ALU_OPS, ALL_CMP_OPS, ALL_REDUCE_OPS};
use tessera_ir::text::{parse, print};
use tessera_ir::*;

const ALL_ENGINES: [Engine; 5] = [
    Engine::Pe,
    Engine::Act,
    Engine::Dve,
    Engine::Pool,
    Engine::Dma,
];

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_.]{0,6}"
}

/// Any float but NaN (NaN != NaN would make `same_meaning` fail for a correct round trip).
fn float() -> impl Strategy<Value = f64> {
    use proptest::num::f64::*;
    prop_oneof![
        POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO | INFINITE,
        select(vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            1e-7,
            1e16,
            f64::MAX,
            f64::MIN_POSITIVE
        ]),
    ]
}

fn dims(max: usize) -> impl Strategy<Value = Vec<Dim>> {
    prop::collection::vec(
        (any::<i64>(), any::<u32>()).prop_map(|(s, n)| Dim::new(s, n)),
        0..=max,
    )
}

fn tile(nb: u32) -> impl Strategy<Value = TileAccess> {
    (0..nb, any::<u32>(), any::<u32>(), any::<u64>(), dims(5)).prop_map(
        |(buf, start_partition, partitions, offset, dims)| TileAccess {
            buf: BufId(buf),
            start_partition,
            partitions,
            offset,
            dims,
        },
    )
}

fn hbm(nt: u32) -> impl Strategy<Value = HbmAccess> {
    (0..nt, any::<u64>(), dims(5)).prop_map(|(t, offset, dims)| HbmAccess {
        tensor: TensorId(t),
        offset,
        dims,
    })
}

fn dma_operand(nt: u32, nb: u32) -> impl Strategy<Value = DmaOperand> {
    prop_oneof![
        hbm(nt).prop_map(DmaOperand::Hbm),
        tile(nb).prop_map(DmaOperand::Tile)
    ]
}

fn scalar(nb: u32) -> impl Strategy<Value = Scalar> {
    prop_oneof![
        float().prop_map(Scalar::Imm),
        tile(nb).prop_map(Scalar::PerPartition)
    ]
}

fn step(nb: u32) -> impl Strategy<Value = ScalarStep> {
    (select(&ALL_ALU_OPS[..]), scalar(nb), any::<bool>()).prop_map(|(op, operand, reverse)| {
        ScalarStep {
            op,
            operand,
            reverse,
        }
    })
}

fn affine() -> impl Strategy<Value = AffineExpr> {
    (
        any::<i64>(),
        any::<i64>(),
        prop::collection::vec(any::<i64>(), 0..5),
    )
        .prop_map(|(base, partition, free)| AffineExpr {
            base,
            partition,
            free,
        })
}

fn engine() -> impl Strategy<Value = Engine> {
    select(&ALL_ENGINES[..])
}

/// Every opcode except alloc (which the program generator places itself).
fn op(nt: u32, nb: u32) -> impl Strategy<Value = Op> {
    let t = move || tile(nb);
    prop_oneof![
        (0..nb).prop_map(|b| Op::Free { buf: BufId(b) }),
        (dma_operand(nt, nb), dma_operand(nt, nb)).prop_map(|(dst, src)| Op::DmaCopy { dst, src }),
        (t(), t(), t(), any::<bool>(), any::<bool>()).prop_map(
            |(dst, stationary, moving, start, stop)| Op::Matmul {
                dst,
                stationary,
                moving,
                start,
                stop
            }
        ),
        (t(), t()).prop_map(|(dst, src)| Op::Transpose { dst, src }),
        (
            t(),
            t(),
            select(&ALL_ACT_FUNCS[..]),
            scalar(nb),
            scalar(nb),
            prop::option::of(t())
        )
            .prop_map(|(dst, src, func, scale, bias, accum)| Op::Activation {
                dst,
                src,
                func,
                scale,
                bias,
                accum
            }),
        (engine(), select(&ALL_ALU_OPS[..]), t(), t(), t()).prop_map(
            |(engine, op, dst, lhs, rhs)| Op::TensorTensor {
                engine,
                op,
                dst,
                lhs,
                rhs
            }
        ),
        (engine(), t(), t(), step(nb), prop::option::of(step(nb))).prop_map(
            |(engine, dst, src, op0, op1)| Op::TensorScalar {
                engine,
                dst,
                src,
                op0,
                op1
            }
        ),
        (engine(), select(&ALL_REDUCE_OPS[..]), t(), t(), any::<u8>()).prop_map(
            |(engine, op, dst, src, axes)| Op::TensorReduce {
                engine,
                op,
                dst,
                src,
                axes
            }
        ),
        (engine(), t(), t()).prop_map(|(engine, dst, src)| Op::TensorCopy { engine, dst, src }),
        (engine(), t(), float()).prop_map(|(engine, dst, value)| Op::Memset { engine, dst, value }),
        (engine(), t(), affine()).prop_map(|(engine, dst, expr)| Op::Iota { engine, dst, expr }),
        (
            engine(),
            t(),
            t(),
            affine(),
            select(&ALL_CMP_OPS[..]),
            float()
        )
            .prop_map(|(engine, dst, src, expr, cmp, fill)| Op::AffineSelect {
                engine,
                dst,
                src,
                expr,
                cmp,
                fill
            }),
        (engine(), t(), t(), t(), t()).prop_map(|(engine, dst, pred, on_true, on_false)| {
            Op::Select {
                engine,
                dst,
                pred,
                on_true,
                on_false,
            }
        }),
    ]
}

fn tensor(i: usize) -> impl Strategy<Value = HbmTensor> {
    let kind = select(vec![
        TensorKind::Input,
        TensorKind::Output,
        TensorKind::Scratch,
    ]);
    (
        name(),
        select(&ALL_DTYPES[..]),
        prop::collection::vec(any::<usize>(), 0..4),
        kind,
    )
        .prop_map(move |(name, dtype, shape, kind)| HbmTensor {
            // The index suffix keeps names unique.
            name: format!("{name}_{i}"),
            dtype,
            shape,
            kind,
        })
}

fn buffer(i: usize) -> impl Strategy<Value = Buffer> {
    let space = select(vec![Space::Sbuf, Space::Psum]);
    let placement = prop::option::of((any::<u32>(), any::<u64>()).prop_map(
        |(partition, byte_offset)| Placement {
            partition,
            byte_offset,
        },
    ));
    (
        name(),
        space,
        select(&ALL_DTYPES[..]),
        any::<u32>(),
        prop::collection::vec(any::<usize>(), 0..4),
        placement,
    )
        .prop_map(
            move |(name, space, dtype, partitions, free_shape, placement)| Buffer {
                name: format!("{name}_{i}"),
                space,
                dtype,
                partitions,
                free_shape,
                placement,
            },
        )
}

/// A program whose buffers are allocated in order, each before its first use; allocs are
/// interleaved with the other instructions.
fn program() -> impl Strategy<Value = TileProgram> {
    (1usize..4, 1usize..5)
        .prop_flat_map(|(nt, nb)| {
            let tensors: Vec<_> = (0..nt).map(tensor).collect();
            let buffers: Vec<_> = (0..nb).map(buffer).collect();
            (
                name(),
                tensors,
                buffers,
                prop::collection::vec(op(nt as u32, nb as u32), 0..20),
            )
        })
        .prop_map(|(name, tensors, buffers, ops)| {
            let mut insts = Vec::new();
            let mut next_alloc = 0u32;
            let mut alloc_through = |insts: &mut Vec<Inst>, last: u32| {
                while next_alloc <= last {
                    insts.push(Inst::new(Op::Alloc {
                        buf: BufId(next_alloc),
                    }));
                    next_alloc += 1;
                }
            };
            for op in ops {
                let mut used: Vec<u32> = op.tile_operands().iter().map(|o| o.tile.buf.0).collect();
                if let Op::Free { buf } = op {
                    used.push(buf.0);
                }
                if let Some(&last) = used.iter().max() {
                    alloc_through(&mut insts, last);
                }
                insts.push(Inst::new(op));
            }
            alloc_through(&mut insts, buffers.len() as u32 - 1);
            TileProgram {
                name,
                tensors,
                buffers,
                insts,
            }
        })
}

/// Every opcode the ISA has, to check that the generator reaches them all.
const OPCODES: [&str; 14] = [
    "alloc",
    "free",
    "dma_copy",
    "nc_matmul",
    "nc_transpose",
    "activation",
    "tensor_tensor",
    "tensor_scalar",
    "tensor_reduce",
    "tensor_copy",
    "memset",
    "iota",
    "affine_select",
    "select",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn print_parse_round_trips(p in program()) {
        let text = print(&p);
        let back = match parse(&text, "x") {
            Ok(back) => back,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n{text}"))),
        };
        prop_assert!(back.same_meaning(&p), "meaning changed:\n{text}");
        prop_assert_eq!(print(&back), text);
    }

    #[test]
    fn parser_never_panics_on_random_text(src in "(?s).{0,200}") {
        let _ = parse(&src, "fuzz");
    }

    #[test]
    fn parser_never_panics_on_token_soup(
        words in prop::collection::vec(
            select(vec![
                "kernel", "k", "{", "}", "\n", "%b", "@t", "[", "]", "(", ")", ",", ":", ";", "*",
                "=", "0", "-1", "1.5", "-inf", "NaN", "99999999999999999999999", "alloc", "free",
                "sbuf", "psum", "f32", "input", "dve.tensor_scalar", "add.rev", "affine",
                "pe.nc_matmul", "start", "stop", "dma.dma_copy", "axes", "#", "-", "é",
            ]),
            0..60,
        )
    ) {
        let _ = parse(&words.join(" "), "fuzz");
    }

    #[test]
    fn parser_never_panics_on_mutated_programs(
        p in program(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..4, "[ -~\n]{0,3}"), 1..4),
    ) {
        let mut chars: Vec<char> = print(&p).chars().collect();
        for (at, kind, junk) in edits {
            let i = at.index(chars.len() + 1);
            match kind {
                0 => chars.truncate(i),
                1 => { chars.splice(i..i, junk.chars()); }
                2 => { chars.drain(i..(i + 3).min(chars.len())); }
                _ => {
                    let end = (i + junk.len()).min(chars.len());
                    chars.splice(i..end, junk.chars());
                }
            }
        }
        let src: String = chars.into_iter().collect();
        let _ = parse(&src, "fuzz");
    }
}

#[test]
fn generator_covers_every_opcode() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::HashSet::new();
    let strategy = program();
    for _ in 0..300 {
        let Ok(tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        for inst in &tree.current().insts {
            seen.insert(inst.op.opcode());
        }
    }
    for opcode in OPCODES {
        assert!(seen.contains(opcode), "generator never produced {opcode}");
    }
}
