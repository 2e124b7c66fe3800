//! Where an instruction's operand lives: on-chip tiles (SBUF/PSUM buffers viewed through a
//! partition range and a free-dimension access pattern) and HBM tensor views.
//!
//! Element order is the same everywhere: partition-major for tiles, then the free dimensions
//! outermost first (row-major). Two operands "have the same shape" when they have the same
//! partition count and the same number of free elements; access patterns may differ (that is how
//! broadcasting with stride 0 and transposed views work).

use serde::{Deserialize, Serialize};

/// Index of an HBM tensor in [`crate::TileProgram::tensors`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TensorId(pub u32);

/// Index of an on-chip buffer in [`crate::TileProgram::buffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BufId(pub u32);

/// One dimension of an access pattern: `size` indices, `stride` elements apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dim {
    /// Distance in elements (of the operand's dtype) between consecutive indices; may be 0
    /// (broadcast, reads only) or negative.
    pub stride: i64,
    /// Number of indices.
    pub size: u32,
}

impl Dim {
    /// A dimension of `size` indices, `stride` elements apart.
    pub fn new(stride: i64, size: u32) -> Self {
        Dim { stride, size }
    }
}

/// A view of an SBUF or PSUM buffer: partitions `start_partition .. start_partition + partitions`
/// of the buffer, and in each partition the elements `offset + sum(i_k * dims[k].stride)`.
///
/// Offsets and strides count elements of the buffer's dtype within one partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TileAccess {
    /// The buffer viewed.
    pub buf: BufId,
    /// First partition, relative to the buffer's first partition.
    pub start_partition: u32,
    /// Number of partitions.
    pub partitions: u32,
    /// Element offset of index (0, 0, ...) within each partition.
    pub offset: u64,
    /// Free dimensions, outermost first; at most `TargetSpec::max_free_dims`.
    pub dims: Vec<Dim>,
}

impl TileAccess {
    /// Number of elements in each partition (product of the free sizes; 1 with no dims).
    pub fn free_elems(&self) -> u64 {
        self.dims
            .iter()
            .fold(1u64, |n, d| n.saturating_mul(d.size as u64))
    }

    /// Total elements over all partitions.
    pub fn elems(&self) -> u64 {
        (self.partitions as u64).saturating_mul(self.free_elems())
    }

    /// The lowest and highest element offset touched within a partition, or `None` when the view
    /// is empty. Values may be negative for an out-of-bounds view.
    pub fn offset_range(&self) -> Option<(i64, i64)> {
        offset_range(self.offset as i64, &self.dims)
    }

    /// True if two different indices of this view address the same element (a view that must
    /// not be written).
    pub fn has_overlapping_elements(&self) -> bool {
        has_overlap(&self.dims)
    }
}

/// A view of an HBM tensor, flattened row-major: the elements `offset + sum(i_k * dims[k].stride)`.
///
/// When DMA moves data to or from a tile, the first dimension usually walks the partitions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HbmAccess {
    /// The tensor viewed.
    pub tensor: TensorId,
    /// Element offset of index (0, 0, ...).
    pub offset: u64,
    /// Dimensions, outermost first; at most `TargetSpec::max_free_dims + 1`.
    pub dims: Vec<Dim>,
}

impl HbmAccess {
    /// Total elements in the view.
    pub fn elems(&self) -> u64 {
        self.dims
            .iter()
            .fold(1u64, |n, d| n.saturating_mul(d.size as u64))
    }

    /// The lowest and highest element offset touched, or `None` when the view is empty.
    pub fn offset_range(&self) -> Option<(i64, i64)> {
        offset_range(self.offset as i64, &self.dims)
    }

    /// True if two different indices address the same element.
    pub fn has_overlapping_elements(&self) -> bool {
        has_overlap(&self.dims)
    }
}

/// Either end of a `dma_copy`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DmaOperand {
    /// A view of an HBM tensor.
    Hbm(HbmAccess),
    /// A view of an SBUF buffer.
    Tile(TileAccess),
}

impl DmaOperand {
    /// Total elements moved through this end.
    pub fn elems(&self) -> u64 {
        match self {
            DmaOperand::Hbm(h) => h.elems(),
            DmaOperand::Tile(t) => t.elems(),
        }
    }
}

fn offset_range(offset: i64, dims: &[Dim]) -> Option<(i64, i64)> {
    let mut lo = offset;
    let mut hi = offset;
    for d in dims {
        if d.size == 0 {
            return None;
        }
        let span = d.stride.saturating_mul(d.size as i64 - 1);
        if span < 0 {
            lo = lo.saturating_add(span);
        } else {
            hi = hi.saturating_add(span);
        }
    }
    Some((lo, hi))
}

/// Conservative-exact overlap test: sort the non-trivial dims by |stride|; the view is injective
/// iff each |stride| is at least the extent covered by the dims below it. This is exact for the
/// nested patterns kernels produce and errs on the side of "overlapping" otherwise.
fn has_overlap(dims: &[Dim]) -> bool {
    let mut ds: Vec<(u64, u64)> = dims
        .iter()
        .filter(|d| d.size > 1)
        .map(|d| (d.stride.unsigned_abs(), d.size as u64))
        .collect();
    ds.sort();
    let mut extent = 1u64; // elements spanned by the dims processed so far
    for (stride, size) in ds {
        if stride < extent {
            return true;
        }
        extent = extent.saturating_add(stride.saturating_mul(size - 1));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(offset: u64, dims: &[(i64, u32)]) -> TileAccess {
        TileAccess {
            buf: BufId(0),
            start_partition: 0,
            partitions: 4,
            offset,
            dims: dims.iter().map(|&(s, n)| Dim::new(s, n)).collect(),
        }
    }

    #[test]
    fn ranges_and_counts() {
        let t = tile(3, &[(16, 8), (1, 4)]);
        assert_eq!(t.free_elems(), 32);
        assert_eq!(t.elems(), 128);
        assert_eq!(t.offset_range(), Some((3, 3 + 16 * 7 + 3)));
        let neg = tile(10, &[(-2, 3)]);
        assert_eq!(neg.offset_range(), Some((6, 10)));
        assert_eq!(tile(0, &[(1, 0)]).offset_range(), None);
        assert_eq!(tile(5, &[]).free_elems(), 1);
    }

    #[test]
    fn overlap_detection() {
        assert!(!tile(0, &[(4, 3), (1, 4)]).has_overlapping_elements());
        assert!(!tile(0, &[(1, 4), (4, 3)]).has_overlapping_elements()); // transposed view
        assert!(tile(0, &[(0, 3)]).has_overlapping_elements()); // broadcast
        assert!(tile(0, &[(2, 3), (1, 4)]).has_overlapping_elements());
        assert!(!tile(0, &[(0, 1), (1, 4)]).has_overlapping_elements()); // size-1 stride-0 is fine
    }
}
