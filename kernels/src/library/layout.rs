//! How element-wise kernels lay an N-D iteration space onto partitions and free elements.
//!
//! Every operand is described by one stride per output dimension (0 where it is broadcast).
//! Dimensions of size 1 are dropped and neighbours that are contiguous for every operand are
//! merged, so the common cases collapse to one or two dimensions. The last remaining dimension
//! becomes the free dimension; the largest other one walks partitions; any others are unrolled
//! into separate [`Piece`]s. A fully contiguous space is folded into `[rows, cols]` (plus a short
//! tail) so it still fills the partitions.

use std::ops::Range;

/// One dimension of the iteration space: its size and each operand's stride.
#[derive(Clone, Debug, PartialEq)]
struct Axis {
    size: usize,
    strides: Vec<i64>,
}

/// A 2-D part of the iteration space: `rows x cols` elements at `base` offsets, one entry per
/// operand in each vector.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Piece {
    pub base: Vec<u64>,
    pub rows: usize,
    pub row_strides: Vec<i64>,
    pub cols: usize,
    pub col_strides: Vec<i64>,
}

impl Piece {
    /// Operand `k`'s HBM access pattern for rows `r` and columns `c` of this piece.
    pub fn ap(&self, k: usize, r: &Range<usize>, c: &Range<usize>) -> (u64, [(i64, u32); 2]) {
        // Strides are never negative here, so offsets only grow from the base.
        let offset = self.base[k]
            + r.start as u64 * self.row_strides[k] as u64
            + c.start as u64 * self.col_strides[k] as u64;
        let dims = [
            (self.row_strides[k], r.len() as u32),
            (self.col_strides[k], c.len() as u32),
        ];
        (offset, dims)
    }
}

/// Numpy broadcasting of two shapes, or `None` when they are incompatible.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Strides of an operand of shape `shape` read at every index of `out` (broadcast dims get 0).
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<i64> {
    let own = crate::view::row_major(shape);
    let pad = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < pad || shape[i - pad] == 1 {
                0
            } else {
                own[i - pad]
            }
        })
        .collect()
}

/// Splits the iteration space `out` (with `strides[k]` per operand `k`) into pieces whose
/// columns stay at most `max_cols` when the space is contiguous.
pub(crate) fn plan(
    out: &[usize],
    strides: &[Vec<i64>],
    partitions: usize,
    max_cols: usize,
) -> Vec<Piece> {
    let ops = strides.len();
    let mut axes: Vec<Axis> = Vec::new();
    for (i, &size) in out.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let s: Vec<i64> = strides.iter().map(|st| st[i]).collect();
        match axes.last_mut() {
            // Outer stride == inner stride * inner size for every operand: one longer axis.
            Some(prev)
                if prev
                    .strides
                    .iter()
                    .zip(&s)
                    .all(|(&o, &n)| o == n * size as i64) =>
            {
                prev.size *= size;
                prev.strides = s;
            }
            _ => axes.push(Axis { size, strides: s }),
        }
    }
    let zeros = vec![0i64; ops];
    match axes.len() {
        0 => vec![Piece {
            base: vec![0; ops],
            rows: 1,
            row_strides: zeros.clone(),
            cols: 1,
            col_strides: zeros,
        }],
        1 => fold(&axes[0], partitions, max_cols),
        _ => {
            let free = axes.len() - 1;
            let part = (0..free).max_by_key(|&i| (axes[i].size, i)).unwrap_or(0);
            let outer: Vec<&Axis> = (0..free).filter(|&i| i != part).map(|i| &axes[i]).collect();
            let count: usize = outer.iter().map(|a| a.size).product();
            (0..count)
                .map(|mut flat| {
                    let mut base = vec![0u64; ops];
                    for a in outer.iter().rev() {
                        let idx = flat % a.size;
                        flat /= a.size;
                        for (b, &s) in base.iter_mut().zip(&a.strides) {
                            *b += idx as u64 * s as u64;
                        }
                    }
                    Piece {
                        base,
                        rows: axes[part].size,
                        row_strides: axes[part].strides.clone(),
                        cols: axes[free].size,
                        col_strides: axes[free].strides.clone(),
                    }
                })
                .collect()
        }
    }
}

/// A single contiguous (or broadcast) axis as `[rows, cols]` filling the partitions, plus a
/// one-row tail for the remainder.
fn fold(axis: &Axis, partitions: usize, max_cols: usize) -> Vec<Piece> {
    let cols = axis.size.div_ceil(partitions).clamp(1, max_cols);
    let rows = axis.size / cols;
    let rest = axis.size - rows * cols;
    let mut pieces = vec![Piece {
        base: vec![0; axis.strides.len()],
        rows,
        row_strides: axis.strides.iter().map(|&s| s * cols as i64).collect(),
        cols,
        col_strides: axis.strides.clone(),
    }];
    if rest > 0 {
        pieces.push(Piece {
            base: axis
                .strides
                .iter()
                .map(|&s| (rows * cols) as u64 * s as u64)
                .collect(),
            rows: 1,
            row_strides: vec![0; axis.strides.len()],
            cols: rest,
            col_strides: axis.strides.clone(),
        });
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shape(&[3, 1, 5], &[4, 1]), Some(vec![3, 4, 5]));
        assert_eq!(broadcast_shape(&[], &[2]), Some(vec![2]));
        assert_eq!(broadcast_shape(&[3], &[4]), None);
        assert_eq!(broadcast_strides(&[4, 1], &[3, 4, 5]), vec![0, 1, 0]);
    }

    #[test]
    fn contiguous_spaces_fold_onto_partitions() {
        let out = [10, 30];
        let s = crate::view::row_major(&out);
        let pieces = plan(&out, &[s.clone(), s], 128, 2048);
        // 300 elements: 3 per partition on 100 rows, no tail.
        assert_eq!(pieces.len(), 1);
        assert_eq!((pieces[0].rows, pieces[0].cols), (100, 3));
        assert_eq!(pieces[0].row_strides, vec![3, 3]);
    }

    #[test]
    fn broadcast_row_keeps_two_axes() {
        let out = [7, 9];
        let pieces = plan(&out, &[vec![9, 1], vec![0, 1], vec![9, 1]], 128, 2048);
        assert_eq!(pieces.len(), 1);
        assert_eq!((pieces[0].rows, pieces[0].cols), (7, 9));
        assert_eq!(pieces[0].row_strides, vec![9, 0, 9]);
    }

    #[test]
    fn odd_sizes_get_a_tail() {
        let pieces = plan(&[301], &[vec![1]], 128, 2048);
        assert_eq!((pieces[0].rows, pieces[0].cols), (100, 3));
        assert_eq!(
            (pieces[1].rows, pieces[1].cols, pieces[1].base[0]),
            (1, 1, 300)
        );
    }
}
