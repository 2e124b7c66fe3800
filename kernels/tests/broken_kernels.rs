//! A catalogue of deliberately broken kernels, one per hardware or memory rule. Each must be
//! refused with a message that names the author's buffer (or tensor) and the line of this file
//! that recorded the offending instruction or allocation, and says what the rule is.

use std::collections::BTreeMap;
use tessera_backends::interp;
use tessera_ir::{AluOp, DType, HostTensor, TargetSpec, TensorKind, TileProgram};
use tessera_kernels::{KernelBuilder, KernelError};

/// `file:line` of a line of this file, as the messages print it.
fn here(line: u32) -> String {
    format!("kernels/tests/broken_kernels.rs:{line}:")
}

/// Asserts the message names `name`, points at `line` of this file and contains `rule`.
fn assert_names(message: &str, name: &str, line: u32, rule: &str) {
    for want in [name, &here(line), rule] {
        assert!(
            message.contains(want),
            "message does not contain {want:?}:\n{message}"
        );
    }
}

/// Records a kernel with `body` (which sets `line` to the line of its offending call) and
/// finishes it: the error's message, and that line.
fn refused(
    body: impl FnOnce(&mut KernelBuilder<'_>, &mut u32) -> Result<(), KernelError>,
) -> (String, u32) {
    let t = TargetSpec::trn2();
    let mut kb = KernelBuilder::new("broken", &t);
    let mut line = 0;
    let r = body(&mut kb, &mut line).and_then(|()| kb.finish().map(|_| ()));
    match r {
        Ok(()) => panic!("the broken kernel was accepted"),
        Err(e) => {
            assert!(e.location().is_some(), "no location in {e}");
            (e.to_string(), line)
        }
    }
}

/// Runs a kernel that builds (its inputs all zero) on the checked emulator: the error.
fn run_err(p: &TileProgram) -> String {
    let inputs: BTreeMap<String, HostTensor> = p
        .tensors
        .iter()
        .filter(|t| t.kind == TensorKind::Input)
        .map(|t| (t.name.clone(), HostTensor::zeros(t.dtype, &t.shape)))
        .collect();
    match interp::run(p, &TargetSpec::trn2(), &inputs) {
        Ok(_) => panic!("the broken kernel ran"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn poison_read_names_the_buffer_and_line() {
    let t = TargetSpec::trn2();
    let mut line = 0;
    let p = (|| {
        let mut kb = KernelBuilder::new("poison", &t);
        let y = kb.output("y", DType::F32, &[4, 8])?;
        let s = kb.sbuf("never_written", DType::F32, 4, &[8])?;
        line = line!() + 1;
        kb.dma_copy(y.block(0..4, 0..8), &s)?;
        kb.finish()
    })()
    .expect("builds: the error is found by running");
    assert_names(
        &run_err(&p),
        "%never_written",
        line,
        "before it was written",
    );
}

#[test]
fn too_many_partitions() {
    let (msg, line) = refused(|kb, line| {
        *line = line!() + 1;
        let _wide = kb.sbuf("wide", DType::F32, 200, &[8])?;
        Ok(())
    });
    assert_names(&msg, "`wide`", line, "1 to 128 allowed");
}

#[test]
fn sbuf_capacity() {
    let (msg, line) = refused(|kb, line| {
        *line = line!() + 1;
        let _huge = kb.sbuf("huge", DType::F32, 128, &[100_000])?;
        Ok(())
    });
    assert_names(&msg, "`huge`", line, "bytes per partition of sbuf");
}

#[test]
fn psum_capacity() {
    let (msg, line) = refused(|kb, line| {
        *line = line!() + 1;
        let _acc = kb.psum("acc_big", DType::F32, 128, &[8192])?;
        Ok(())
    });
    assert_names(&msg, "`acc_big`", line, "bytes per partition of psum");
}

/// A matmul whose stationary, moving and result tiles are given; the error of recording it.
fn matmul_case(
    stationary: (u32, usize, DType),
    moving: (u32, usize),
    dst: (&'static str, bool, DType, u32, usize),
) -> (String, u32) {
    refused(|kb, line| {
        let a = kb.sbuf("a_t", stationary.2, stationary.0, &[stationary.1])?;
        let b = kb.sbuf("b_wide", DType::F32, moving.0, &[moving.1])?;
        let (name, in_psum, dtype, parts, free) = dst;
        let acc = if in_psum {
            kb.psum(name, dtype, parts, &[free])?
        } else {
            kb.sbuf(name, dtype, parts, &[free])?
        };
        kb.memset(&a, 1.0)?;
        kb.memset(&b, 1.0)?;
        *line = line!() + 1;
        kb.nc_matmul(&acc, &a, &b, true, true)?;
        Ok(())
    })
}

#[test]
fn matmul_moving_wider_than_a_psum_bank() {
    let (msg, line) = matmul_case(
        (128, 128, DType::F32),
        (128, 1024),
        ("acc", true, DType::F32, 128, 1024),
    );
    assert_names(&msg, "%b_wide", line, "moving free size 1024 exceeds 512");
}

#[test]
fn matmul_result_outside_psum() {
    let (msg, line) = matmul_case(
        (128, 128, DType::F32),
        (128, 64),
        ("acc_in_sbuf", false, DType::F32, 128, 64),
    );
    assert_names(&msg, "%acc_in_sbuf", line, "writes its result to PSUM");
}

#[test]
fn matmul_contraction_sizes_differ() {
    let (msg, line) = matmul_case(
        (128, 64, DType::F32),
        (64, 64),
        ("acc", true, DType::F32, 64, 64),
    );
    assert_names(&msg, "%a_t", line, "contraction size");
    assert!(msg.contains("%b_wide"), "{msg}");
}

#[test]
fn matmul_result_not_f32() {
    let (msg, line) = matmul_case(
        (128, 64, DType::Bf16),
        (128, 64),
        ("acc_bf16", true, DType::Bf16, 64, 64),
    );
    assert_names(&msg, "%acc_bf16", line, "matmul results are f32");
}

#[test]
fn view_outside_its_buffer() {
    let (msg, line) = refused(|kb, line| {
        let tile = kb.sbuf("rows", DType::F32, 4, &[8])?;
        *line = line!() + 1;
        kb.memset(tile.cols(0..4, 4..12), 0.0)?;
        Ok(())
    });
    assert_names(&msg, "%rows", line, "outside 0..8");
}

#[test]
fn view_outside_its_tensor() {
    let (msg, line) = refused(|kb, line| {
        let x = kb.input("x_in", DType::F32, &[4, 8])?;
        let tile = kb.sbuf("t", DType::F32, 4, &[8])?;
        *line = line!() + 1;
        kb.dma_copy(&tile, x.block(0..4, 4..12))?;
        Ok(())
    });
    assert_names(&msg, "@x_in", line, "outside 4 x 8");
}

#[test]
fn use_after_free() {
    let (msg, line) = refused(|kb, line| {
        let tile = kb.sbuf("scratchpad", DType::F32, 4, &[8])?;
        let view = tile.all();
        kb.free(tile)?;
        *line = line!() + 1;
        kb.memset(&view, 0.0)?;
        Ok(())
    });
    assert_names(&msg, "`scratchpad`", line, "already freed");
}

#[test]
fn per_partition_operand_of_the_wrong_shape() {
    let (msg, line) = refused(|kb, line| {
        let x = kb.sbuf("x", DType::F32, 4, &[8])?;
        let col = kb.sbuf("not_a_column", DType::F32, 4, &[2])?;
        kb.memset(&x, 1.0)?;
        kb.memset(&col, 1.0)?;
        *line = line!() + 1;
        kb.tensor_scalar(&x, &x, AluOp::Add, &col)?;
        Ok(())
    });
    assert_names(
        &msg,
        "%not_a_column",
        line,
        "per-partition operand is [4, 1]",
    );
}
