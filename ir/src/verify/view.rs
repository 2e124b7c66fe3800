//! Overflow-proof arithmetic over access patterns, buffer sizes and tensor sizes.
//!
//! `access.rs` and `program.rs` compute ranges and sizes in plain `i64`/`u64`, which is right for
//! the programs kernels emit but overflows (and panics in debug builds) on adversarial ones: a
//! stride of 2^62 or a buffer of 2^40 x 2^40 elements. The verifier must reject such programs
//! with an error rather than crash, so it does its own sums here in `i128`/`u128`, saturating.
//! The results agree with the `access.rs` versions wherever those do not overflow (see the tests).

use crate::access::Dim;
use crate::program::{Buffer, HbmTensor};

/// The lowest and highest element offset a view touches, or `None` when a dimension is empty.
pub(super) fn offset_range(offset: u64, dims: &[Dim]) -> Option<(i128, i128)> {
    let mut lo = i128::from(offset);
    let mut hi = lo;
    for d in dims {
        if d.size == 0 {
            return None;
        }
        // |stride| < 2^63 and size - 1 < 2^32, so one span fits easily in i128.
        let span = i128::from(d.stride) * (i128::from(d.size) - 1);
        if span < 0 {
            lo = lo.saturating_add(span);
        } else {
            hi = hi.saturating_add(span);
        }
    }
    Some((lo, hi))
}

/// Number of elements a view addresses (product of the sizes), saturating.
pub(super) fn view_elems(dims: &[Dim]) -> u128 {
    dims.iter()
        .fold(1u128, |n, d| n.saturating_mul(u128::from(d.size)))
}

/// True if two different indices of the view address the same element.
///
/// Same test as `access::has_overlap` (sort the non-trivial dims by |stride|; the view is
/// injective iff each |stride| reaches past everything the smaller dims span), in `u128`.
pub(super) fn has_overlap(dims: &[Dim]) -> bool {
    let mut ds: Vec<(u128, u128)> = dims
        .iter()
        .filter(|d| d.size > 1)
        .map(|d| (u128::from(d.stride.unsigned_abs()), u128::from(d.size)))
        .collect();
    ds.sort_unstable();
    let mut extent = 1u128;
    for (stride, size) in ds {
        if stride < extent {
            return true;
        }
        extent = extent.saturating_add(stride.saturating_mul(size - 1));
    }
    false
}

/// Elements per partition of a buffer, saturating at `u64::MAX`.
pub(super) fn buffer_free_elems(b: &Buffer) -> u64 {
    b.free_shape
        .iter()
        .fold(1u64, |n, &d| n.saturating_mul(d as u64))
}

/// Bytes per partition of a buffer, saturating at `u64::MAX` (so it fails any capacity check).
pub(super) fn buffer_bytes(b: &Buffer) -> u64 {
    buffer_free_elems(b).saturating_mul(b.dtype.size_bytes() as u64)
}

/// Elements of an HBM tensor, saturating.
pub(super) fn tensor_elems(t: &HbmTensor) -> u64 {
    t.shape
        .iter()
        .fold(1u64, |n, &d| n.saturating_mul(d as u64))
}

/// `ceil(n / d)` for `d > 0`; 0 when `d == 0` (a degenerate target, reported elsewhere).
pub(super) fn div_ceil(n: u64, d: u64) -> u64 {
    if d == 0 { 0 } else { n.div_ceil(d) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{BufId, TileAccess};

    fn tile(offset: u64, dims: &[(i64, u32)]) -> TileAccess {
        TileAccess {
            buf: BufId(0),
            start_partition: 0,
            partitions: 1,
            offset,
            dims: dims.iter().map(|&(s, n)| Dim::new(s, n)).collect(),
        }
    }

    #[test]
    fn agrees_with_access_helpers_on_ordinary_views() {
        let cases: [(u64, &[(i64, u32)]); 7] = [
            (0, &[(16, 8), (1, 16)]),
            (10, &[(-2, 3)]),
            (0, &[(1, 4), (4, 3)]),
            (0, &[(0, 3)]),
            (0, &[(2, 3), (1, 4)]),
            (5, &[]),
            (0, &[(1, 0)]),
        ];
        for (offset, dims) in cases {
            let t = tile(offset, dims);
            let want = t
                .offset_range()
                .map(|(a, b)| (i128::from(a), i128::from(b)));
            assert_eq!(offset_range(t.offset, &t.dims), want, "{dims:?}");
            assert_eq!(
                has_overlap(&t.dims),
                t.has_overlapping_elements(),
                "{dims:?}"
            );
            assert_eq!(view_elems(&t.dims), u128::from(t.free_elems()));
        }
    }

    #[test]
    fn huge_views_do_not_overflow() {
        let dims = [Dim::new(i64::MAX, u32::MAX), Dim::new(i64::MIN, u32::MAX)];
        let (lo, hi) = offset_range(u64::MAX, &dims).unwrap();
        assert!(lo < 0 && hi > i128::from(u64::MAX));
        assert!(!has_overlap(&dims[..1]));
        assert_eq!(view_elems(&[Dim::new(1, u32::MAX); 5]), u128::MAX);
    }

    #[test]
    fn ceiling_division() {
        assert_eq!(div_ceil(0, 2048), 0);
        assert_eq!(div_ceil(1, 2048), 1);
        assert_eq!(div_ceil(4096, 2048), 2);
        assert_eq!(div_ceil(4097, 2048), 3);
        assert_eq!(div_ceil(5, 0), 0);
    }
}
