//! Rules about single operands: a tile view's partitions, dimensions and bounds, an HBM view's
//! bounds and writability, the partition a compute-engine view may start at, and which memory
//! each engine and opcode may reach.

use super::{Fail, Rule, buffer, fail, space_name, view};
use crate::access::{DmaOperand, HbmAccess};
use crate::isa::{Engine, Op};
use crate::program::{Access, Buffer, HbmTensor, Space, TensorKind, TileOperand};
use crate::target::TargetSpec;

/// Partitions, dimension count, emptiness, bounds and (for writes) self-overlap of one tile
/// operand of a live buffer.
pub(super) fn check_tile(t: &TargetSpec, o: &TileOperand<'_>, b: &Buffer) -> Result<(), Fail> {
    let v = o.tile;
    let who = format!("{} %{}", o.role, b.name);
    if v.partitions == 0 {
        return fail(
            Rule::TilePartitions,
            format!("{who} has 0 partitions; a view has at least 1"),
        );
    }
    let end = u64::from(v.start_partition) + u64::from(v.partitions);
    if end > u64::from(b.partitions) {
        return fail(
            Rule::TilePartitions,
            format!(
                "{who} covers partitions {}..{end}, past the buffer's {} partitions",
                v.start_partition, b.partitions
            ),
        );
    }
    if v.dims.len() > t.max_free_dims {
        return fail(
            Rule::TooManyDims,
            format!(
                "{who} has {} free dimensions, more than the {} an access pattern can walk",
                v.dims.len(),
                t.max_free_dims
            ),
        );
    }
    let Some((lo, hi)) = view::offset_range(v.offset, &v.dims) else {
        return fail(
            Rule::EmptyView,
            format!("{who} has a dimension of size 0 (an empty view)"),
        );
    };
    let size = view::buffer_free_elems(b);
    if lo < 0 || hi >= i128::from(size) {
        return fail(
            Rule::OutOfBounds,
            format!(
                "{who} touches elements {lo}..={hi} of each partition, outside the buffer's \
                 {size} elements (0..{size})"
            ),
        );
    }
    if o.access == Access::Write && view::has_overlap(&v.dims) {
        return fail(
            Rule::OverlappingWrite,
            format!("{who} is written but addresses some element twice (overlapping strides)"),
        );
    }
    Ok(())
}

/// The HBM ends of a `dma_copy`: tensor id, dimension count, emptiness, bounds, self-overlap of
/// a written view, and no writes to inputs.
pub(super) fn check_hbm_ends(t: &TargetSpec, tensors: &[HbmTensor], op: &Op) -> Result<(), Fail> {
    let Op::DmaCopy { dst, src } = op else {
        return Ok(());
    };
    for (role, end, access) in [("src", src, Access::Read), ("dst", dst, Access::Write)] {
        if let DmaOperand::Hbm(h) = end {
            check_hbm(t, tensors, role, h, access)?;
        }
    }
    Ok(())
}

fn check_hbm(
    t: &TargetSpec,
    tensors: &[HbmTensor],
    role: &str,
    h: &HbmAccess,
    access: Access,
) -> Result<(), Fail> {
    let Some(tensor) = tensors.get(h.tensor.0 as usize) else {
        return fail(
            Rule::UnknownId,
            format!(
                "{role} tensor id {} is out of range (the program has {})",
                h.tensor.0,
                tensors.len()
            ),
        );
    };
    let who = format!("{role} @{}", tensor.name);
    // One dimension more than a tile: the outermost usually walks the partitions.
    let max_dims = t.max_free_dims.saturating_add(1);
    if h.dims.len() > max_dims {
        return fail(
            Rule::TooManyDims,
            format!(
                "{who} has {} dimensions, more than the {max_dims} an HBM access pattern can walk",
                h.dims.len()
            ),
        );
    }
    let Some((lo, hi)) = view::offset_range(h.offset, &h.dims) else {
        return fail(
            Rule::EmptyView,
            format!("{who} has a dimension of size 0 (an empty view)"),
        );
    };
    let size = view::tensor_elems(tensor);
    if lo < 0 || hi >= i128::from(size) {
        return fail(
            Rule::OutOfBounds,
            format!(
                "{who} touches elements {lo}..={hi}, outside the tensor's {size} elements (0..{size})"
            ),
        );
    }
    if access == Access::Write {
        if tensor.kind == TensorKind::Input {
            return fail(
                Rule::WriteToInput,
                format!("{who} is an input, and inputs are read-only"),
            );
        }
        if view::has_overlap(&h.dims) {
            return fail(
                Rule::OverlappingWrite,
                format!("{who} is written but addresses some element twice (overlapping strides)"),
            );
        }
    }
    Ok(())
}

/// Compute engines address partitions in quadrants of 32 (source: NKI docs, access-pattern
/// partition rules): a view of more than 64 partitions starts at 0, of 33..=64 at 0 or 64, of
/// at most 32 at 0, 32, 64 or 96. DMA has no such restriction. The start is absolute: the
/// buffer's placement plus the view's first partition.
pub(super) fn check_partition_start(
    t: &TargetSpec,
    engine: Engine,
    o: &TileOperand<'_>,
    b: &Buffer,
) -> Result<(), Fail> {
    if engine == Engine::Dma {
        return Ok(());
    }
    let start = u64::from(b.base_partition()) + u64::from(o.tile.start_partition);
    let n = o.tile.partitions;
    let quadrant = u64::from(t.partitions / 4).max(1);
    let half = 2 * quadrant;
    let (ok, allowed) = if u64::from(n) > half {
        (start == 0, "0".to_string())
    } else if u64::from(n) > quadrant {
        (start == 0 || start == half, format!("0 or {half}"))
    } else {
        (
            start % quadrant == 0 && start < 4 * quadrant,
            format!("0, {quadrant}, {half} or {}", 3 * quadrant),
        )
    };
    if ok {
        return Ok(());
    }
    fail(
        Rule::PartitionStart,
        format!(
            "{} %{} starts at partition {start} with {n} partitions; the {} engine needs a view \
             of {n} partitions to start at partition {allowed}",
            o.role,
            b.name,
            engine.name()
        ),
    )
}

/// Which memory each operand may be in: POOL and DMA cannot reach PSUM; the tensor engine reads
/// SBUF and writes PSUM.
pub(super) fn check_spaces(
    op: &Op,
    engine: Engine,
    operands: &[TileOperand<'_>],
    buffers: &[Buffer],
) -> Result<(), Fail> {
    for o in operands {
        let b = buffer(buffers, o.tile.buf)?;
        let who = format!("{} %{} is in {}", o.role, b.name, space_name(b.space));
        let wrong = |why: &str| fail(Rule::WrongSpace, format!("{who}; {why}"));
        match (engine, b.space) {
            (Engine::Pool, Space::Psum) => return wrong("the pool engine cannot access PSUM"),
            (Engine::Dma, Space::Psum) => return wrong("DMA cannot access PSUM"),
            _ => {}
        }
        let needed = match op {
            Op::Matmul { .. } | Op::Transpose { .. } if o.role == "dst" => Space::Psum,
            Op::Matmul { .. } | Op::Transpose { .. } => Space::Sbuf,
            _ => continue,
        };
        if b.space != needed {
            let why = if needed == Space::Psum {
                format!("{} writes its result to PSUM", op.opcode())
            } else {
                format!("{} reads its inputs from SBUF", op.opcode())
            };
            return wrong(&why);
        }
    }
    Ok(())
}
