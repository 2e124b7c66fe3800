//! One test per verifier rule: a minimal valid program, then the same program broken in exactly
//! one way, checking the rule, the instruction and the words of the message. Programs are built
//! from the public structs; the helpers below keep each test to the one thing it breaks.

use tessera_ir::{
    ActFunc, AffineExpr, AluOp, BufId, Buffer, CmpOp, DType, Dim, DmaOperand, Engine, HbmAccess,
    HbmTensor, Inst, Op, Placement, ReduceOp, Rule, Scalar, ScalarStep, SourceLoc, Space,
    TargetSpec, TensorId, TensorKind, TileAccess, TileProgram, Verifier, VerifyError, verify,
    verify_all,
};

// ---------------------------------------------------------------------------------------------
// Builders

fn buf(name: &str, space: Space, dtype: DType, partitions: u32, free: &[usize]) -> Buffer {
    Buffer {
        name: name.into(),
        space,
        dtype,
        partitions,
        free_shape: free.to_vec(),
        placement: None,
    }
}

fn sbuf(name: &str, partitions: u32, free: &[usize]) -> Buffer {
    buf(name, Space::Sbuf, DType::F32, partitions, free)
}

fn tensor(name: &str, dtype: DType, shape: &[usize], kind: TensorKind) -> HbmTensor {
    HbmTensor {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        kind,
    }
}

fn dims(d: &[(i64, u32)]) -> Vec<Dim> {
    d.iter().map(|&(s, n)| Dim::new(s, n)).collect()
}

/// Partitions `0..partitions` of buffer `b`, elements `offset + sum(i_k * stride_k)`.
fn view(b: u32, partitions: u32, offset: u64, d: &[(i64, u32)]) -> TileAccess {
    TileAccess {
        buf: BufId(b),
        start_partition: 0,
        partitions,
        offset,
        dims: dims(d),
    }
}

/// `partitions x n` contiguous elements from the start of each partition.
fn rows(b: u32, partitions: u32, n: u32) -> TileAccess {
    view(b, partitions, 0, &[(1, n)])
}

fn hbm(t: u32, offset: u64, d: &[(i64, u32)]) -> HbmAccess {
    HbmAccess {
        tensor: TensorId(t),
        offset,
        dims: dims(d),
    }
}

fn load(dst: TileAccess, src: HbmAccess) -> Op {
    Op::DmaCopy {
        dst: DmaOperand::Tile(dst),
        src: DmaOperand::Hbm(src),
    }
}

fn store(dst: HbmAccess, src: TileAccess) -> Op {
    Op::DmaCopy {
        dst: DmaOperand::Hbm(dst),
        src: DmaOperand::Tile(src),
    }
}

fn alloc(b: u32) -> Op {
    Op::Alloc { buf: BufId(b) }
}

fn free(b: u32) -> Op {
    Op::Free { buf: BufId(b) }
}

fn copy(engine: Engine, dst: TileAccess, src: TileAccess) -> Op {
    Op::TensorCopy { engine, dst, src }
}

fn program(tensors: Vec<HbmTensor>, buffers: Vec<Buffer>, ops: Vec<Op>) -> TileProgram {
    TileProgram {
        name: "k".into(),
        tensors,
        buffers,
        insts: ops.into_iter().map(Inst::new).collect(),
    }
}

/// `@x -> %a -> (middle) -> %b -> @y` over 128 x 256 f32, with `extra` buffers (ids 2, 3, ...)
/// allocated after `%a` and `%b`. Returns the program and the index of `middle`.
fn copy_with(extra: Vec<Buffer>, middle: Op) -> (TileProgram, usize) {
    let tensors = vec![
        tensor("x", DType::F32, &[128, 256], TensorKind::Input),
        tensor("y", DType::F32, &[128, 256], TensorKind::Output),
    ];
    let n = 2 + extra.len() as u32;
    let mut buffers = vec![sbuf("a", 128, &[256]), sbuf("b", 128, &[256])];
    buffers.extend(extra);
    let mut ops: Vec<Op> = (0..n).map(alloc).collect();
    ops.push(load(rows(0, 128, 256), hbm(0, 0, &[(256, 128), (1, 256)])));
    ops.push(middle);
    ops.push(store(hbm(1, 0, &[(256, 128), (1, 256)]), rows(1, 128, 256)));
    ops.extend((0..n).map(free));
    (program(tensors, buffers, ops), n as usize + 1)
}

/// The copy kernel: `tensor_copy` on DVE at #3.
fn copy_kernel() -> (TileProgram, usize) {
    copy_with(
        vec![],
        copy(Engine::Dve, rows(1, 128, 256), rows(0, 128, 256)),
    )
}

/// One 128 x 128 x 512 matmul: `%w`=0 [K=128, M=128] bf16, `%x`=1 [K, N=512] bf16, `%acc`=2
/// PSUM f32, `%o`=3; `nc_matmul` at #6, `tensor_copy` out of PSUM at #7.
fn matmul_kernel() -> TileProgram {
    let tensors = vec![
        tensor("a", DType::Bf16, &[128, 128], TensorKind::Input),
        tensor("b", DType::Bf16, &[128, 512], TensorKind::Input),
        tensor("c", DType::F32, &[128, 512], TensorKind::Output),
    ];
    let buffers = vec![
        buf("w", Space::Sbuf, DType::Bf16, 128, &[128]),
        buf("x", Space::Sbuf, DType::Bf16, 128, &[512]),
        buf("acc", Space::Psum, DType::F32, 128, &[512]),
        sbuf("o", 128, &[512]),
    ];
    let ops = vec![
        alloc(0),
        alloc(1),
        alloc(2),
        alloc(3),
        load(rows(0, 128, 128), hbm(0, 0, &[(128, 128), (1, 128)])),
        load(rows(1, 128, 512), hbm(1, 0, &[(512, 128), (1, 512)])),
        mm(rows(2, 128, 512), rows(0, 128, 128), rows(1, 128, 512)),
        copy(Engine::Dve, rows(3, 128, 512), rows(2, 128, 512)),
        store(hbm(2, 0, &[(512, 128), (1, 512)]), rows(3, 128, 512)),
        free(0),
        free(1),
        free(2),
        free(3),
    ];
    program(tensors, buffers, ops)
}

const MATMUL: usize = 6;

fn mm(dst: TileAccess, stationary: TileAccess, moving: TileAccess) -> Op {
    Op::Matmul {
        dst,
        stationary,
        moving,
        start: true,
        stop: true,
    }
}

fn set(p: &mut TileProgram, index: usize, op: Op) {
    p.insts[index] = Inst::new(op);
}

// ---------------------------------------------------------------------------------------------
// Assertions

#[track_caller]
fn assert_ok(p: &TileProgram) {
    if let Err(e) = verify(p, &TargetSpec::trn2()) {
        panic!("expected a valid program, got: {e}");
    }
    assert!(verify_all(p, &TargetSpec::trn2()).is_empty());
}

#[track_caller]
fn assert_err_on(
    target: &TargetSpec,
    p: &TileProgram,
    rule: Rule,
    index: usize,
    opcode: &str,
    words: &[&str],
) -> VerifyError {
    let e = verify(p, target).expect_err("expected a verifier error");
    let msg = e.to_string();
    assert_eq!((e.rule, e.index, e.opcode), (rule, index, opcode), "{msg}");
    for w in words {
        assert!(msg.contains(w), "message lacks {w:?}: {msg}");
    }
    assert_eq!(verify_all(p, target).first(), Some(&e));
    e
}

#[track_caller]
fn assert_err(
    p: &TileProgram,
    rule: Rule,
    index: usize,
    opcode: &str,
    words: &[&str],
) -> VerifyError {
    assert_err_on(&TargetSpec::trn2(), p, rule, index, opcode, words)
}

// ---------------------------------------------------------------------------------------------
// Whole programs

#[test]
fn base_programs_are_valid() {
    assert_ok(&copy_kernel().0);
    assert_ok(&matmul_kernel());
    let mut p = copy_kernel().0;
    p.insts.clear();
    assert_ok(&p);
}

/// C[128, 512] = A[256, 128]^T . B[256, 512] in two K tiles accumulating into one PSUM bank,
/// evacuated to SBUF on the vector engine and stored with DMA, as a kernel would emit it.
#[test]
fn tiled_matmul_accumulating_two_k_tiles_is_valid() {
    let tensors = vec![
        tensor("a", DType::Bf16, &[256, 128], TensorKind::Input),
        tensor("b", DType::Bf16, &[256, 512], TensorKind::Input),
        tensor("c", DType::F32, &[128, 512], TensorKind::Output),
    ];
    // Both K tiles side by side in each partition: [K=128][kt=2][M or N].
    let buffers = vec![
        buf("w", Space::Sbuf, DType::Bf16, 128, &[2, 128]),
        buf("x", Space::Sbuf, DType::Bf16, 128, &[2, 512]),
        buf("acc", Space::Psum, DType::F32, 128, &[512]),
        buf("o", Space::Sbuf, DType::Bf16, 128, &[512]),
    ];
    let mut ops = vec![alloc(0), alloc(1), alloc(2), alloc(3)];
    for kt in 0..2u32 {
        let k0 = u64::from(kt) * 128;
        ops.push(load(
            view(0, 128, k0, &[(1, 128)]),
            hbm(0, k0 * 128, &[(128, 128), (1, 128)]),
        ));
        ops.push(load(
            view(1, 128, k0 * 4, &[(1, 512)]),
            hbm(1, k0 * 512, &[(512, 128), (1, 512)]),
        ));
    }
    for kt in 0..2u64 {
        ops.push(Op::Matmul {
            dst: rows(2, 128, 512),
            stationary: view(0, 128, kt * 128, &[(1, 128)]),
            moving: view(1, 128, kt * 512, &[(1, 512)]),
            start: kt == 0,
            stop: kt == 1,
        });
    }
    ops.push(copy(Engine::Dve, rows(3, 128, 512), rows(2, 128, 512)));
    ops.push(store(hbm(2, 0, &[(512, 128), (1, 512)]), rows(3, 128, 512)));
    ops.extend((0..4).map(free));
    let p = program(tensors, buffers, ops);
    assert_ok(&p);

    // The same kernel with a 640-wide moving tile breaks exactly the N limit.
    let mut wide = p.clone();
    wide.buffers[1].free_shape = vec![2, 640];
    let Op::Matmul { moving, .. } = &mut wide.insts[8].op else {
        unreachable!()
    };
    moving.dims = dims(&[(1, 640)]);
    let e = assert_err(&wide, Rule::MatmulLimit, 8, "nc_matmul", &[]);
    assert_eq!(
        e.to_string(),
        "nc_matmul #8: moving free size 640 exceeds 512 (moving %x; one PSUM bank holds 512 f32 per partition)"
    );
}

#[test]
fn messages_carry_the_source_location() {
    let (mut p, mid) = copy_kernel();
    p.insts[mid] = Inst {
        op: copy(Engine::Pe, rows(1, 128, 256), rows(0, 128, 256)),
        loc: Some(SourceLoc {
            file: "k.tile".into(),
            line: 7,
            column: 3,
        }),
    };
    let e = verify(&p, &TargetSpec::trn2()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor_copy #3: tensor_copy cannot run on pe; it runs on dve, act or pool (at k.tile:7:3)"
    );
}

#[test]
fn matmul_message_is_exact() {
    let mut p = matmul_kernel();
    // Pad so the matmul sits at #12, as in the documentation's example.
    for i in 0..6 {
        p.insts.insert(
            4,
            Inst::new(Op::Memset {
                engine: Engine::Dve,
                dst: rows(3, 128, 512),
                value: i as f64,
            }),
        );
    }
    p.buffers[1].free_shape = vec![640];
    set(
        &mut p,
        12,
        mm(rows(2, 128, 512), rows(0, 128, 128), rows(1, 128, 640)),
    );
    p.tensors[1].shape = vec![128, 640];
    set(
        &mut p,
        11,
        load(rows(1, 128, 640), hbm(1, 0, &[(640, 128), (1, 640)])),
    );
    let e = verify(&p, &TargetSpec::trn2()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "nc_matmul #12: moving free size 640 exceeds 512 (moving %x; one PSUM bank holds 512 f32 per partition)"
    );
    assert_eq!(e.rule, Rule::MatmulLimit);
}

// ---------------------------------------------------------------------------------------------
// Rule 1: lifetimes and ids

#[test]
fn unknown_ids() {
    let (mut p, mid) = copy_kernel();
    set(
        &mut p,
        mid,
        copy(Engine::Dve, rows(1, 128, 256), rows(9, 128, 256)),
    );
    assert_err(
        &p,
        Rule::UnknownId,
        mid,
        "tensor_copy",
        &["buffer id 9", "out of range"],
    );

    let (mut p, _) = copy_kernel();
    set(
        &mut p,
        2,
        load(rows(0, 128, 256), hbm(7, 0, &[(256, 128), (1, 256)])),
    );
    assert_err(
        &p,
        Rule::UnknownId,
        2,
        "dma_copy",
        &["src tensor id 7", "out of range"],
    );

    let (mut p, _) = copy_kernel();
    set(&mut p, 0, alloc(u32::MAX));
    assert_err(&p, Rule::UnknownId, 0, "alloc", &["4294967295"]);

    let (mut p, _) = copy_kernel();
    let last = p.insts.len() - 1;
    set(&mut p, last, free(2));
    assert_err(&p, Rule::UnknownId, last, "free", &["buffer id 2"]);
}

#[test]
fn alloc_twice() {
    let (mut p, _) = copy_kernel();
    p.insts.insert(2, Inst::new(alloc(0)));
    assert_err(
        &p,
        Rule::AlreadyAllocated,
        2,
        "alloc",
        &["%a", "already allocated", "#0"],
    );

    // Allocating again after the free is also an error: a buffer is declared by its one alloc.
    let (mut p, _) = copy_kernel();
    p.insts.push(Inst::new(alloc(0)));
    let last = p.insts.len() - 1;
    assert_err(
        &p,
        Rule::AlreadyAllocated,
        last,
        "alloc",
        &["%a", "freed at #5", "once"],
    );
}

#[test]
fn use_or_free_when_not_live() {
    // Use after free.
    let (mut p, mid) = copy_kernel();
    p.insts.swap(mid, 5); // free %a now comes before the copy that reads it
    assert_err(
        &p,
        Rule::NotLive,
        5,
        "tensor_copy",
        &["src %a", "not live", "freed at #3"],
    );

    // Use before alloc.
    let (mut p, _) = copy_kernel();
    p.insts.swap(0, 2);
    assert_err(
        &p,
        Rule::NotLive,
        0,
        "dma_copy",
        &["dst %a", "not live", "before its alloc"],
    );

    // Double free.
    let (mut p, _) = copy_kernel();
    p.insts.push(Inst::new(free(0)));
    let last = p.insts.len() - 1;
    assert_err(
        &p,
        Rule::NotLive,
        last,
        "free",
        &["%a", "not live", "freed at #5"],
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 2: buffers at alloc

#[test]
fn buffer_partitions() {
    let (mut p, _) = copy_kernel();
    p.buffers[1].partitions = 129;
    assert_err(
        &p,
        Rule::BufferPartitions,
        1,
        "alloc",
        &["%b", "129 partitions", "1 to 128"],
    );
    p.buffers[1].partitions = 0;
    assert_err(
        &p,
        Rule::BufferPartitions,
        1,
        "alloc",
        &["%b", "0 partitions"],
    );
}

#[test]
fn placement_must_fit() {
    let (mut p, _) = copy_kernel();
    p.buffers[0].placement = Some(Placement {
        partition: 0,
        byte_offset: 224 * 1024 - 1024,
    });
    assert_ok(&p);
    p.buffers[0].placement = Some(Placement {
        partition: 0,
        byte_offset: 224 * 1024 - 512,
    });
    assert_err(
        &p,
        Rule::PlacementOutOfRange,
        0,
        "alloc",
        &["%a", "229888", "229376", "SBUF"],
    );
    p.buffers[0].placement = Some(Placement {
        partition: 64,
        byte_offset: 0,
    });
    assert_err(
        &p,
        Rule::PlacementOutOfRange,
        0,
        "alloc",
        &["%a", "64..192", "128 partitions"],
    );
}

#[test]
fn placed_psum_is_bank_aligned() {
    let mut p = matmul_kernel();
    p.buffers[2].placement = Some(Placement {
        partition: 0,
        byte_offset: 4096,
    });
    assert_ok(&p);
    p.buffers[2].placement = Some(Placement {
        partition: 0,
        byte_offset: 1024,
    });
    assert_err(
        &p,
        Rule::PsumBankAlignment,
        2,
        "alloc",
        &["%acc", "1024", "2048-byte bank"],
    );
}

#[test]
fn overlapping_placed_buffers() {
    let (mut p, _) = copy_kernel();
    p.buffers[0].placement = Some(Placement {
        partition: 0,
        byte_offset: 0,
    });
    p.buffers[1].placement = Some(Placement {
        partition: 0,
        byte_offset: 1024,
    });
    assert_ok(&p);
    p.buffers[1].placement = Some(Placement {
        partition: 0,
        byte_offset: 512,
    });
    assert_err(
        &p,
        Rule::OverlappingAllocation,
        1,
        "alloc",
        &["%b", "overlaps live %a", "bytes 0..1024"],
    );
    // A freed buffer's memory may be reused.
    let mut q = p.clone();
    q.insts = vec![
        Inst::new(alloc(0)),
        Inst::new(free(0)),
        Inst::new(alloc(1)),
        Inst::new(free(1)),
    ];
    assert_ok(&q);
}

// ---------------------------------------------------------------------------------------------
// Rule 3: capacity

#[test]
fn sbuf_capacity() {
    let (mut p, _) = copy_kernel();
    p.buffers[0].free_shape = vec![28 * 1024]; // 112 KiB
    p.buffers[1].free_shape = vec![28 * 1024];
    assert_ok(&p); // exactly the 224 KiB of trn2
    p.buffers[1].free_shape = vec![28 * 1024 + 1];
    assert_err(
        &p,
        Rule::SbufCapacity,
        1,
        "alloc",
        &[
            "SBUF over capacity",
            "%b",
            "229380",
            "capacity 229376",
            "biggest live: %b 114692, %a 114688",
        ],
    );
    // trn1 has less SBUF: 192 KiB.
    p.buffers[1].free_shape = vec![28 * 1024];
    assert_err_on(
        &TargetSpec::trn1(),
        &p,
        Rule::SbufCapacity,
        1,
        "alloc",
        &["capacity 196608"],
    );
}

#[test]
fn psum_capacity_counts_whole_banks() {
    let mut p = matmul_kernel();
    p.buffers
        .push(buf("big", Space::Psum, DType::F32, 128, &[7 * 512]));
    p.insts.insert(4, Inst::new(alloc(4)));
    assert_ok(&p); // 1 + 7 banks of 8
    // One more element takes a ninth bank.
    p.buffers[4].free_shape = vec![7 * 512 + 1];
    assert_err(
        &p,
        Rule::PsumCapacity,
        4,
        "alloc",
        &[
            "PSUM over capacity",
            "%big",
            "8 banks",
            "needs 9 banks",
            "capacity 8",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 4: tile operands

#[test]
fn tile_partitions() {
    let (mut p, mid) = copy_kernel();
    let mut src = rows(0, 128, 256);
    src.start_partition = 1;
    set(&mut p, mid, copy(Engine::Dve, rows(1, 128, 256), src));
    assert_err(
        &p,
        Rule::TilePartitions,
        mid,
        "tensor_copy",
        &["src %a", "1..129", "128 partitions"],
    );
    set(
        &mut p,
        mid,
        copy(Engine::Dve, rows(1, 0, 256), rows(0, 0, 256)),
    );
    assert_err(
        &p,
        Rule::TilePartitions,
        mid,
        "tensor_copy",
        &["src %a", "0 partitions"],
    );
}

#[test]
fn too_many_dims() {
    let (mut p, mid) = copy_kernel();
    let four = view(0, 128, 0, &[(256, 1), (256, 1), (16, 16), (1, 16)]);
    set(
        &mut p,
        mid,
        copy(Engine::Dve, rows(1, 128, 256), four.clone()),
    );
    assert_ok(&p);
    let mut five = four;
    five.dims.insert(0, Dim::new(256, 1));
    set(&mut p, mid, copy(Engine::Dve, rows(1, 128, 256), five));
    assert_err(
        &p,
        Rule::TooManyDims,
        mid,
        "tensor_copy",
        &["src %a", "5 free dimensions", "4"],
    );

    // HBM views may have one more (the partition walk), but not two more.
    let (mut p, _) = copy_kernel();
    let six = hbm(
        0,
        0,
        &[(1, 1), (1, 1), (1, 1), (1, 1), (256, 128), (1, 256)],
    );
    set(&mut p, 2, load(rows(0, 128, 256), six));
    assert_err(
        &p,
        Rule::TooManyDims,
        2,
        "dma_copy",
        &["src @x", "6 dimensions", "5"],
    );
}

#[test]
fn empty_views() {
    let (mut p, mid) = copy_kernel();
    set(
        &mut p,
        mid,
        copy(Engine::Dve, view(1, 128, 0, &[(1, 0)]), rows(0, 128, 256)),
    );
    assert_err(
        &p,
        Rule::EmptyView,
        mid,
        "tensor_copy",
        &["dst %b", "size 0"],
    );
    let (mut p, _) = copy_kernel();
    set(
        &mut p,
        2,
        load(rows(0, 128, 256), hbm(0, 0, &[(256, 0), (1, 256)])),
    );
    assert_err(&p, Rule::EmptyView, 2, "dma_copy", &["src @x", "size 0"]);
}

#[test]
fn out_of_bounds() {
    let (mut p, mid) = copy_kernel();
    set(
        &mut p,
        mid,
        copy(Engine::Dve, rows(1, 128, 256), view(0, 128, 1, &[(1, 256)])),
    );
    assert_err(
        &p,
        Rule::OutOfBounds,
        mid,
        "tensor_copy",
        &["src %a", "1..=256", "256 elements"],
    );
    // Negative strides may not reach below element 0.
    set(
        &mut p,
        mid,
        copy(
            Engine::Dve,
            rows(1, 128, 256),
            view(0, 128, 254, &[(-1, 256)]),
        ),
    );
    assert_err(
        &p,
        Rule::OutOfBounds,
        mid,
        "tensor_copy",
        &["src %a", "-1..=254"],
    );
    set(
        &mut p,
        mid,
        copy(
            Engine::Dve,
            rows(1, 128, 256),
            view(0, 128, 255, &[(-1, 256)]),
        ),
    );
    assert_ok(&p);

    let (mut p, _) = copy_kernel();
    let last_store = 4;
    set(
        &mut p,
        last_store,
        store(hbm(1, 1, &[(256, 128), (1, 256)]), rows(1, 128, 256)),
    );
    assert_err(
        &p,
        Rule::OutOfBounds,
        last_store,
        "dma_copy",
        &["dst @y", "1..=32768", "32768 elements"],
    );
}

#[test]
fn overlapping_writes() {
    // Broadcast reads are fine; broadcast writes are not.
    let (mut p, mid) = copy_with(
        vec![sbuf("col", 128, &[1])],
        copy(Engine::Dve, rows(1, 128, 256), view(2, 128, 0, &[(0, 256)])),
    );
    assert_ok(&p);
    set(
        &mut p,
        mid,
        copy(Engine::Dve, view(2, 128, 0, &[(0, 256)]), rows(1, 128, 256)),
    );
    assert_err(
        &p,
        Rule::OverlappingWrite,
        mid,
        "tensor_copy",
        &["dst %col", "written", "twice"],
    );

    let (mut p, _) = copy_kernel();
    set(
        &mut p,
        4,
        store(hbm(1, 0, &[(128, 128), (1, 256)]), rows(1, 128, 256)),
    );
    assert_err(
        &p,
        Rule::OverlappingWrite,
        4,
        "dma_copy",
        &["dst @y", "twice"],
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 5: partition starts of compute-engine views

fn part_view(b: u32, start: u32, partitions: u32) -> TileAccess {
    TileAccess {
        start_partition: start,
        ..rows(b, partitions, 256)
    }
}

#[test]
fn partition_start_quadrants() {
    let (mut p, mid) = copy_kernel();
    let cases = [
        (0, 128, true),
        (0, 65, true),
        (64, 64, true),
        (32, 64, false),
        (64, 33, true),
        (96, 32, true),
        (32, 32, true),
        (16, 32, false),
        (16, 16, false),
        (32, 65, false),
    ];
    for (start, n, ok) in cases {
        set(
            &mut p,
            mid,
            copy(Engine::Act, part_view(1, start, n), part_view(0, start, n)),
        );
        if ok {
            assert_ok(&p);
        } else {
            let msg = format!("starts at partition {start} with {n} partitions");
            assert_err(
                &p,
                Rule::PartitionStart,
                mid,
                "tensor_copy",
                &["src %a", &msg, "act engine"],
            );
        }
    }
    set(
        &mut p,
        mid,
        copy(Engine::Dve, part_view(1, 32, 64), part_view(0, 32, 64)),
    );
    assert_err(
        &p,
        Rule::PartitionStart,
        mid,
        "tensor_copy",
        &["start at partition 0 or 64"],
    );
    set(
        &mut p,
        mid,
        copy(Engine::Dve, part_view(1, 16, 16), part_view(0, 0, 16)),
    );
    assert_err(
        &p,
        Rule::PartitionStart,
        mid,
        "tensor_copy",
        &["dst %b", "0, 32, 64 or 96"],
    );
}

#[test]
fn partition_start_is_absolute_and_dma_is_exempt() {
    // DMA may start anywhere.
    let (mut p, _) = copy_kernel();
    set(
        &mut p,
        2,
        load(part_view(0, 16, 16), hbm(0, 0, &[(256, 16), (1, 256)])),
    );
    assert_ok(&p);

    // A buffer placed at partition 16 shifts its views' absolute start.
    let (mut p, mid) = copy_with(
        vec![sbuf("q", 32, &[256])],
        copy(Engine::Dve, part_view(1, 0, 32), part_view(2, 0, 32)),
    );
    p.buffers[2].placement = Some(Placement {
        partition: 32,
        byte_offset: 0,
    });
    assert_ok(&p);
    p.buffers[2].placement = Some(Placement {
        partition: 16,
        byte_offset: 0,
    });
    assert_err(
        &p,
        Rule::PartitionStart,
        mid,
        "tensor_copy",
        &["src %q", "starts at partition 16"],
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 6: HBM

#[test]
fn inputs_are_read_only() {
    let (mut p, _) = copy_kernel();
    set(
        &mut p,
        4,
        store(hbm(0, 0, &[(256, 128), (1, 256)]), rows(1, 128, 256)),
    );
    assert_err(
        &p,
        Rule::WriteToInput,
        4,
        "dma_copy",
        &["dst @x", "input", "read-only"],
    );
    // Scratch tensors may be written.
    p.tensors[0].kind = TensorKind::Scratch;
    assert_ok(&p);
}

// ---------------------------------------------------------------------------------------------
// Rule 7: engines and memory spaces

#[test]
fn wrong_engine() {
    let (mut p, mid) = copy_kernel();
    let tt = |engine| Op::TensorTensor {
        engine,
        op: AluOp::Add,
        dst: rows(1, 128, 256),
        lhs: rows(0, 128, 256),
        rhs: rows(0, 128, 256),
    };
    set(&mut p, mid, tt(Engine::Pool));
    assert_ok(&p);
    set(&mut p, mid, tt(Engine::Act));
    assert_err(
        &p,
        Rule::WrongEngine,
        mid,
        "tensor_tensor",
        &["cannot run on act", "dve or pool"],
    );
}

#[test]
fn wrong_space() {
    // POOL cannot read PSUM.
    let mut p = matmul_kernel();
    set(
        &mut p,
        7,
        copy(Engine::Act, rows(3, 128, 512), rows(2, 128, 512)),
    );
    assert_ok(&p);
    set(
        &mut p,
        7,
        copy(Engine::Pool, rows(3, 128, 512), rows(2, 128, 512)),
    );
    assert_err(
        &p,
        Rule::WrongSpace,
        7,
        "tensor_copy",
        &["src %acc is in PSUM", "pool engine cannot access PSUM"],
    );

    // DMA cannot read PSUM.
    let mut p = matmul_kernel();
    set(
        &mut p,
        8,
        store(hbm(2, 0, &[(512, 128), (1, 512)]), rows(2, 128, 512)),
    );
    assert_err(
        &p,
        Rule::WrongSpace,
        8,
        "dma_copy",
        &["src %acc is in PSUM", "DMA cannot access PSUM"],
    );

    // The matmul result goes to PSUM; its inputs come from SBUF.
    let mut p = matmul_kernel();
    set(
        &mut p,
        MATMUL,
        mm(rows(3, 128, 512), rows(0, 128, 128), rows(1, 128, 512)),
    );
    assert_err(
        &p,
        Rule::WrongSpace,
        MATMUL,
        "nc_matmul",
        &["dst %o is in SBUF", "writes its result to PSUM"],
    );
    let mut p = matmul_kernel();
    p.buffers
        .push(buf("pw", Space::Psum, DType::Bf16, 128, &[128]));
    p.insts.insert(4, Inst::new(alloc(4)));
    set(
        &mut p,
        MATMUL + 1,
        mm(rows(2, 128, 512), rows(4, 128, 128), rows(1, 128, 512)),
    );
    assert_err(
        &p,
        Rule::WrongSpace,
        MATMUL + 1,
        "nc_matmul",
        &["stationary %pw is in PSUM", "reads its inputs from SBUF"],
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 8: shapes of element-wise and other instructions

#[test]
fn element_wise_shapes() {
    let (mut p, mid) = copy_kernel();
    set(
        &mut p,
        mid,
        copy(Engine::Dve, rows(1, 128, 128), rows(0, 128, 256)),
    );
    assert_err(
        &p,
        Rule::ShapeMismatch,
        mid,
        "tensor_copy",
        &[
            "src %a is 128 partitions x 256",
            "dst %b is 128 x 128",
            "same shape",
        ],
    );

    // A transposed view with the same counts is fine.
    set(
        &mut p,
        mid,
        copy(
            Engine::Dve,
            view(1, 128, 0, &[(1, 16), (16, 16)]),
            rows(0, 128, 256),
        ),
    );
    assert_ok(&p);

    let sel = |pred| Op::Select {
        engine: Engine::Dve,
        dst: rows(1, 128, 256),
        pred,
        on_true: rows(0, 128, 256),
        on_false: rows(0, 128, 256),
    };
    set(&mut p, mid, sel(rows(0, 128, 256)));
    assert_ok(&p);
    set(&mut p, mid, sel(rows(0, 64, 256)));
    assert_err(
        &p,
        Rule::ShapeMismatch,
        mid,
        "select",
        &["pred %a is 64 partitions"],
    );
}

#[test]
fn per_partition_scalars_and_accum() {
    let act = |bias: TileAccess, accum: TileAccess| Op::Activation {
        dst: rows(1, 128, 256),
        src: rows(0, 128, 256),
        func: ActFunc::Exp,
        scale: Scalar::Imm(0.5),
        bias: Scalar::PerPartition(bias),
        accum: Some(accum),
    };
    let extra = vec![sbuf("s", 128, &[2]), sbuf("sum", 128, &[1])];
    let (mut p, mid) = copy_with(extra, act(rows(2, 128, 1), rows(3, 128, 1)));
    assert_ok(&p);
    set(&mut p, mid, act(rows(2, 128, 2), rows(3, 128, 1)));
    assert_err(
        &p,
        Rule::ShapeMismatch,
        mid,
        "activation",
        &["bias %s", "128 partitions x 2", "x 1"],
    );
    set(&mut p, mid, act(rows(2, 128, 1), rows(3, 64, 1)));
    assert_err(
        &p,
        Rule::ShapeMismatch,
        mid,
        "activation",
        &["accum %sum", "64 partitions"],
    );
    set(&mut p, mid, act(rows(2, 128, 1), rows(3, 128, 1)));
    p.buffers[3].dtype = DType::Bf16;
    assert_err(
        &p,
        Rule::WrongDType,
        mid,
        "activation",
        &["accum %sum is bf16", "f32"],
    );

    let ts = |operand| Op::TensorScalar {
        engine: Engine::Dve,
        dst: rows(1, 128, 256),
        src: rows(0, 128, 256),
        op0: ScalarStep {
            op: AluOp::Mul,
            operand: Scalar::Imm(2.0),
            reverse: false,
        },
        op1: Some(ScalarStep {
            op: AluOp::Sub,
            operand,
            reverse: true,
        }),
    };
    let (mut p, mid) = copy_with(
        vec![sbuf("s", 128, &[2])],
        ts(Scalar::PerPartition(rows(2, 128, 1))),
    );
    assert_ok(&p);
    set(&mut p, mid, ts(Scalar::PerPartition(rows(2, 128, 2))));
    assert_err(
        &p,
        Rule::ShapeMismatch,
        mid,
        "tensor_scalar",
        &["operand1 %s"],
    );
}

#[test]
fn reduce_shapes() {
    let red = |dst, axes| Op::TensorReduce {
        engine: Engine::Dve,
        op: ReduceOp::Max,
        dst,
        src: view(0, 128, 0, &[(16, 16), (1, 16)]),
        axes,
    };
    let (mut p, mid) = copy_with(vec![sbuf("m", 128, &[16])], red(rows(2, 128, 16), 1));
    assert_ok(&p);
    set(&mut p, mid, red(rows(2, 128, 1), 2));
    assert_ok(&p);
    set(&mut p, mid, red(rows(2, 128, 1), 3));
    assert_err(
        &p,
        Rule::ShapeMismatch,
        mid,
        "tensor_reduce",
        &["axes=3", "2 free dimensions"],
    );
    set(&mut p, mid, red(rows(2, 128, 1), 0));
    assert_err(&p, Rule::ShapeMismatch, mid, "tensor_reduce", &["axes=0"]);
    set(&mut p, mid, red(rows(2, 128, 8), 1));
    assert_err(
        &p,
        Rule::ShapeMismatch,
        mid,
        "tensor_reduce",
        &["dst %m has 8 free elements", "leaves 16"],
    );
    set(&mut p, mid, red(rows(2, 64, 16), 1));
    assert_err(
        &p,
        Rule::ShapeMismatch,
        mid,
        "tensor_reduce",
        &["dst %m has 64 partitions", "keeps the partitions"],
    );
}

#[test]
fn affine_expressions_match_dst_dims() {
    let expr = |free: Vec<i64>| AffineExpr {
        base: 0,
        partition: 1,
        free,
    };
    let (mut p, mid) = copy_kernel();
    let iota = |e| Op::Iota {
        engine: Engine::Pool,
        dst: view(1, 128, 0, &[(16, 16), (1, 16)]),
        expr: e,
    };
    set(&mut p, mid, iota(expr(vec![-1, 1])));
    assert_ok(&p);
    set(&mut p, mid, iota(expr(vec![-1])));
    assert_err(
        &p,
        Rule::ShapeMismatch,
        mid,
        "iota",
        &["1 free coefficients", "dst %b has 2 free dimensions"],
    );

    let sel = |e| Op::AffineSelect {
        engine: Engine::Pool,
        dst: rows(1, 128, 256),
        src: rows(0, 128, 256),
        expr: e,
        cmp: CmpOp::Ge,
        fill: f64::NEG_INFINITY,
    };
    set(&mut p, mid, sel(expr(vec![-1])));
    assert_ok(&p);
    set(&mut p, mid, sel(expr(vec![])));
    assert_err(
        &p,
        Rule::ShapeMismatch,
        mid,
        "affine_select",
        &["0 free coefficients"],
    );
}

#[test]
fn dma_counts_match() {
    let (mut p, _) = copy_kernel();
    set(
        &mut p,
        2,
        load(rows(0, 128, 256), hbm(0, 0, &[(256, 128), (1, 128)])),
    );
    assert_err(
        &p,
        Rule::ShapeMismatch,
        2,
        "dma_copy",
        &["dst %a has 32768 elements but src @x has 16384"],
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 9: nc_matmul

#[test]
fn matmul_limits() {
    let mut p = matmul_kernel();
    p.buffers[0].free_shape = vec![256];
    set(
        &mut p,
        MATMUL,
        mm(rows(2, 128, 512), rows(0, 128, 256), rows(1, 128, 512)),
    );
    assert_err(
        &p,
        Rule::MatmulLimit,
        MATMUL,
        "nc_matmul",
        &["stationary free size 256 exceeds 128"],
    );

    // K cannot exceed 128 on the presets (no buffer is taller); a smaller engine shows the rule.
    let small = TargetSpec {
        matmul_max_k: 64,
        ..TargetSpec::trn2()
    };
    let p = matmul_kernel();
    assert_err_on(
        &small,
        &p,
        Rule::MatmulLimit,
        MATMUL,
        "nc_matmul",
        &["contraction size K 128 exceeds 64"],
    );
}

#[test]
fn matmul_shapes_and_dtypes() {
    let mut p = matmul_kernel();
    set(
        &mut p,
        MATMUL,
        mm(rows(2, 128, 512), rows(0, 128, 128), rows(1, 64, 512)),
    );
    assert_err(
        &p,
        Rule::ShapeMismatch,
        MATMUL,
        "nc_matmul",
        &["stationary %w has 128 partitions", "moving %x has 64", "K"],
    );
    set(
        &mut p,
        MATMUL,
        mm(rows(2, 128, 256), rows(0, 128, 128), rows(1, 128, 512)),
    );
    assert_err(
        &p,
        Rule::ShapeMismatch,
        MATMUL,
        "nc_matmul",
        &["dst %acc is 128 partitions x 256", "M 128 x N 512"],
    );

    let mut p = matmul_kernel();
    p.buffers[2].dtype = DType::Bf16;
    assert_err(
        &p,
        Rule::WrongDType,
        MATMUL,
        "nc_matmul",
        &["dst %acc is bf16", "f32"],
    );
    let mut p = matmul_kernel();
    p.buffers[1].dtype = DType::F32;
    p.buffers[1].free_shape = vec![512];
    assert_err(
        &p,
        Rule::WrongDType,
        MATMUL,
        "nc_matmul",
        &[
            "stationary %w is bf16",
            "moving %x is f32",
            "same float dtype",
        ],
    );
    let mut p = matmul_kernel();
    p.buffers[0].dtype = DType::I8;
    p.buffers[1].dtype = DType::I8;
    assert_err(&p, Rule::WrongDType, MATMUL, "nc_matmul", &["is i8"]);
}

#[test]
fn matmul_result_stays_in_one_bank() {
    let mut p = matmul_kernel();
    p.buffers[2].free_shape = vec![1024]; // two banks
    set(
        &mut p,
        MATMUL,
        mm(
            view(2, 128, 512, &[(1, 512)]),
            rows(0, 128, 128),
            rows(1, 128, 512),
        ),
    );
    assert_ok(&p);
    set(
        &mut p,
        MATMUL,
        mm(
            view(2, 128, 256, &[(1, 512)]),
            rows(0, 128, 128),
            rows(1, 128, 512),
        ),
    );
    assert_err(
        &p,
        Rule::PsumBankCrossing,
        MATMUL,
        "nc_matmul",
        &["dst %acc", "1024..=3071", "2048-byte bank", "one bank"],
    );
    // A strided result that jumps into the next bank also crosses.
    set(
        &mut p,
        MATMUL,
        mm(
            view(2, 128, 0, &[(2, 512)]),
            rows(0, 128, 128),
            rows(1, 128, 512),
        ),
    );
    assert_err(
        &p,
        Rule::PsumBankCrossing,
        MATMUL,
        "nc_matmul",
        &["0..=4091"],
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 10: nc_transpose

#[test]
fn transpose_rules() {
    let mut p = matmul_kernel();
    let tr = |dst, src| Op::Transpose { dst, src };
    set(&mut p, MATMUL, tr(rows(2, 128, 128), rows(0, 128, 128)));
    assert_ok(&p);
    set(&mut p, MATMUL, tr(rows(2, 64, 128), rows(0, 128, 64)));
    assert_ok(&p);
    set(&mut p, MATMUL, tr(rows(2, 128, 64), rows(0, 128, 64)));
    assert_err(
        &p,
        Rule::ShapeMismatch,
        MATMUL,
        "nc_transpose",
        &[
            "dst %acc is 128 partitions x 64",
            "transpose of src %w is 64 x 128",
        ],
    );
    set(&mut p, MATMUL, tr(rows(2, 128, 128), rows(1, 128, 256)));
    assert_err(
        &p,
        Rule::TransposeLimit,
        MATMUL,
        "nc_transpose",
        &["src %x is 128 partitions x 256", "at most 128 x 128"],
    );
    set(&mut p, MATMUL, tr(rows(2, 128, 128), rows(0, 128, 128)));
    p.buffers[0].dtype = DType::I16;
    assert_err(
        &p,
        Rule::WrongDType,
        MATMUL,
        "nc_transpose",
        &["src %w is i16", "float"],
    );
    let mut p = matmul_kernel();
    set(&mut p, MATMUL, tr(rows(3, 128, 128), rows(0, 128, 128)));
    assert_err(
        &p,
        Rule::WrongSpace,
        MATMUL,
        "nc_transpose",
        &["dst %o is in SBUF"],
    );
}

// ---------------------------------------------------------------------------------------------
// The API around the rules

#[test]
fn verify_all_reports_each_broken_instruction_once() {
    let (mut p, mid) = copy_kernel();
    p.buffers[0].partitions = 200; // alloc #0 fails, but %a still counts as live afterwards
    set(
        &mut p,
        mid,
        copy(Engine::Pe, rows(1, 128, 256), rows(0, 128, 256)),
    );
    p.insts.push(Inst::new(free(1)));
    let errors = verify_all(&p, &TargetSpec::trn2());
    let got: Vec<(usize, Rule)> = errors.iter().map(|e| (e.index, e.rule)).collect();
    assert_eq!(
        got,
        vec![
            (0, Rule::BufferPartitions),
            (mid, Rule::WrongEngine),
            (p.insts.len() - 1, Rule::NotLive)
        ]
    );
}

#[test]
fn a_rejected_instruction_leaves_the_state_unchanged() {
    let t = TargetSpec::trn2();
    let (p, _) = copy_kernel();
    let mut big = p.buffers.clone();
    big.push(sbuf("huge", 128, &[1 << 20]));
    let mut v = Verifier::new(&t);
    v.check(&p.tensors, &big, 0, &Inst::new(alloc(0))).unwrap();
    let e = v
        .check(&p.tensors, &big, 1, &Inst::new(alloc(2)))
        .unwrap_err();
    assert_eq!(e.rule, Rule::SbufCapacity);
    // %huge was not allocated, so %b still fits and %huge is not live.
    v.check(&p.tensors, &big, 1, &Inst::new(alloc(1))).unwrap();
    let e = v
        .check(&p.tensors, &big, 2, &Inst::new(free(2)))
        .unwrap_err();
    assert_eq!(e.rule, Rule::NotLive);
}

#[test]
fn rules_have_summaries() {
    assert_eq!(
        Rule::PsumBankCrossing.to_string(),
        "a matmul result stays within one PSUM bank"
    );
}

/// Extreme ids, sizes, strides and offsets are errors, never panics.
#[test]
fn adversarial_programs_do_not_panic() {
    let huge_dims = [(i64::MAX, u32::MAX), (i64::MIN, u32::MAX), (1, u32::MAX)];
    let tiles = [
        view(0, u32::MAX, u64::MAX, &huge_dims),
        view(u32::MAX, 1, 0, &[]),
        TileAccess {
            start_partition: u32::MAX,
            ..rows(0, u32::MAX, 1)
        },
        view(0, 128, u64::MAX, &[(-1, u32::MAX)]),
        view(0, 128, 0, &[(0, u32::MAX); 4]),
    ];
    let hbms = [
        hbm(0, u64::MAX, &huge_dims),
        hbm(u32::MAX, 0, &[]),
        hbm(0, 0, &[(0, u32::MAX); 5]),
    ];
    for target in [
        TargetSpec::trn2(),
        TargetSpec {
            psum_bank_bytes: 0,
            partitions: 0,
            ..TargetSpec::trn1()
        },
    ] {
        for shape in [vec![usize::MAX, usize::MAX], vec![0], vec![]] {
            for placement in [
                None,
                Some(Placement {
                    partition: u32::MAX,
                    byte_offset: u64::MAX,
                }),
            ] {
                let (mut p, mid) = copy_kernel();
                for b in &mut p.buffers {
                    b.free_shape = shape.clone();
                    b.placement = placement;
                }
                p.tensors[0].shape = shape.clone();
                p.buffers
                    .push(buf("ps", Space::Psum, DType::F32, 128, &shape));
                p.insts.insert(0, Inst::new(alloc(2)));
                for a in &tiles {
                    for b in &tiles {
                        let mut q = p.clone();
                        set(&mut q, mid + 1, mm(a.clone(), b.clone(), a.clone()));
                        let _ = verify_all(&q, &target);
                        set(
                            &mut q,
                            mid + 1,
                            Op::Transpose {
                                dst: a.clone(),
                                src: b.clone(),
                            },
                        );
                        let _ = verify_all(&q, &target);
                        set(
                            &mut q,
                            mid + 1,
                            Op::TensorReduce {
                                engine: Engine::Dve,
                                op: ReduceOp::Sum,
                                dst: a.clone(),
                                src: b.clone(),
                                axes: u8::MAX,
                            },
                        );
                        let _ = verify_all(&q, &target);
                    }
                    for h in &hbms {
                        let mut q = p.clone();
                        set(&mut q, 3, load(a.clone(), h.clone()));
                        let _ = verify_all(&q, &target);
                        set(&mut q, 3, store(h.clone(), a.clone()));
                        let _ = verify_all(&q, &target);
                    }
                }
            }
        }
    }
}

mod fuzz {
    //! Random views, buffers and placements through every opcode: the verifier may reject them
    //! but must never panic.
    use super::*;
    use proptest::prelude::*;

    fn any_view() -> impl Strategy<Value = TileAccess> {
        (
            0u32..4,
            prop_oneof![Just(0u32), 0u32..200, Just(u32::MAX)],
            prop_oneof![0u32..200, Just(u32::MAX)],
            prop_oneof![0u64..4096, Just(u64::MAX)],
            prop::collection::vec(
                (
                    prop_oneof![-600i64..600, Just(i64::MAX), Just(i64::MIN)],
                    0u32..700,
                ),
                0..7,
            ),
        )
            .prop_map(|(b, start, partitions, offset, d)| TileAccess {
                start_partition: start,
                ..view(b, partitions, offset, &d)
            })
    }

    fn any_buffer() -> impl Strategy<Value = Buffer> {
        (
            any::<bool>(),
            prop_oneof![Just(DType::F32), Just(DType::Bf16), Just(DType::I8)],
            0u32..200,
            prop::collection::vec(prop_oneof![0usize..2048, Just(usize::MAX)], 0..3),
            prop::option::of((0u32..200, prop_oneof![0u64..300_000, Just(u64::MAX)])),
        )
            .prop_map(|(psum, dtype, partitions, free, placed)| {
                let space = if psum { Space::Psum } else { Space::Sbuf };
                Buffer {
                    placement: placed.map(|(partition, byte_offset)| Placement {
                        partition,
                        byte_offset,
                    }),
                    ..buf("r", space, dtype, partitions, &free)
                }
            })
    }

    proptest! {
        #[test]
        fn never_panics(
            bufs in prop::collection::vec(any_buffer(), 4),
            v in prop::collection::vec(any_view(), 4),
            axes in any::<u8>(),
            hoff in prop_oneof![0u64..70_000, Just(u64::MAX)],
        ) {
            let ops = [
                mm(v[0].clone(), v[1].clone(), v[2].clone()),
                Op::Transpose { dst: v[0].clone(), src: v[1].clone() },
                Op::TensorReduce {
                    engine: Engine::Pool, op: ReduceOp::Sum, dst: v[0].clone(), src: v[1].clone(), axes,
                },
                Op::Activation {
                    dst: v[0].clone(), src: v[1].clone(), func: ActFunc::Relu,
                    scale: Scalar::PerPartition(v[2].clone()), bias: Scalar::Imm(0.0),
                    accum: Some(v[3].clone()),
                },
                Op::Select {
                    engine: Engine::Dve, dst: v[0].clone(), pred: v[1].clone(),
                    on_true: v[2].clone(), on_false: v[3].clone(),
                },
                Op::Iota {
                    engine: Engine::Pool, dst: v[0].clone(),
                    expr: AffineExpr { base: i64::MAX, partition: i64::MIN, free: vec![1; 3] },
                },
                load(v[0].clone(), hbm(0, hoff, &[(256, 128), (1, 256)])),
                store(hbm(1, hoff, &[(i64::MIN, 3), (1, 256)]), v[1].clone()),
            ];
            let (mut p, mid) = copy_with(bufs, ops[0].clone());
            for target in [TargetSpec::trn2(), TargetSpec::trn1()] {
                for op in &ops {
                    set(&mut p, mid, op.clone());
                    let _ = verify_all(&p, &target);
                }
            }
        }
    }
}
