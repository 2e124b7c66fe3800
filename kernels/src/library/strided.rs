//! Gathers by strided DMA, HBM to HBM: the kernels behind Slice, Expand, Tile and Pad. The
//! result is covered by rectangular *pieces*; each piece copies an index space from the input
//! through an access pattern (any strides: negative walks backwards, 0 repeats an element) or
//! fills it with the one-element `value` tensor read with all strides 0. No engine computes
//! anything.
//!
//! Most operators describe their result axis by axis: each result index along an axis reads
//! one input index or the fill value ([`axis_runs`] compresses such a map into runs of constant
//! stride), and the result is the product of the runs of every axis ([`axis_gather`]). Tile
//! is one piece over an interleaved index space instead (repetition outside, the input axis
//! inside, [`tile`]), so large repeat counts do not multiply the DMA count.
//!
//! An access pattern walks at most `max_free_dims + 1` dimensions, so each piece is simplified
//! first (size-1 axes dropped, neighbouring axes merged where both ends stay affine across
//! them); axes beyond the limit are unrolled, and no DMA moves more than [`MAX_DMA_ELEMS`]
//! elements.

use super::check_shape;
use crate::{KernelBuilder, KernelError, Tensor};
use tessera_ir::{DType, TargetSpec, TileProgram};

/// Most elements one `dma_copy` of these kernels moves.
pub const MAX_DMA_ELEMS: u64 = 1 << 16;

/// Most pieces one kernel may have (a product of runs over many padded axes grows fast).
pub const MAX_PIECES: usize = 4096;

/// Where a piece's elements come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PieceSource {
    /// The input `x`: element `offset + sum(i_k * strides[k])`.
    Input {
        /// Element offset of index 0.
        offset: i64,
        /// Stride per axis of the piece (any sign, 0 to repeat).
        strides: Vec<i64>,
    },
    /// The fill value (`value`, one element).
    Fill,
}

/// A rectangular part of the result and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The index space copied.
    pub shape: Vec<usize>,
    /// Result element of index 0.
    pub dst_offset: u64,
    /// Result stride per axis (the result is written once: no repeats).
    pub dst_strides: Vec<i64>,
    /// The source.
    pub src: PieceSource,
}

/// A run of result indices along one axis: `len` indices from `out_start`, reading input
/// indices `start, start + stride, ...` (`None`: the fill value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First result index.
    pub out_start: usize,
    /// Number of indices.
    pub len: usize,
    /// First input index and stride, or `None` for fill.
    pub src: Option<(usize, i64)>,
}

/// Splits an axis map (the input index each result index reads, `None` for fill) into
/// maximal runs of constant stride, greedily from the front.
pub fn axis_runs(map: &[Option<usize>]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (o, &m) in map.iter().enumerate() {
        if let Some(last) = runs.last_mut() {
            let extends = match (last.src, m) {
                (None, None) => true,
                (Some((s, _)), Some(i)) if last.len == 1 => {
                    last.src = Some((s, i as i64 - s as i64));
                    true
                }
                (Some((s, st)), Some(i)) => s as i64 + st * last.len as i64 == i as i64,
                _ => false,
            };
            if extends {
                last.len += 1;
                continue;
            }
        }
        runs.push(Run {
            out_start: o,
            len: 1,
            src: m.map(|i| (i, 1)),
        });
    }
    runs
}

/// The pieces of a result of shape `maps[k].len()` per axis whose axis `k` reads the input
/// (of shape `in_shape`, same rank) through `maps[k]`; one piece per combination of runs.
pub fn pieces_from_maps(
    in_shape: &[usize],
    maps: &[Vec<Option<usize>>],
) -> Result<Vec<Piece>, KernelError> {
    const KERNEL: &str = "axis_gather";
    if in_shape.len() != maps.len() {
        return Err(KernelError::Unsupported {
            kernel: KERNEL,
            detail: format!(
                "{} axis maps for an input of rank {}",
                maps.len(),
                in_shape.len()
            ),
        });
    }
    let out_shape: Vec<usize> = maps.iter().map(Vec::len).collect();
    let (in_strides, out_strides) = (row_major(in_shape), row_major(&out_shape));
    let runs: Vec<Vec<Run>> = maps.iter().map(|m| axis_runs(m)).collect();
    let count = runs
        .iter()
        .try_fold(1usize, |n, r| n.checked_mul(r.len()))
        .filter(|&n| n <= MAX_PIECES)
        .ok_or_else(|| KernelError::Unsupported {
            kernel: KERNEL,
            detail: format!(
                "the result needs more than {MAX_PIECES} rectangular pieces ({} runs per axis)",
                runs.iter()
                    .map(|r| r.len().to_string())
                    .collect::<Vec<_>>()
                    .join(" x ")
            ),
        })?;
    let mut pieces = Vec::with_capacity(count);
    for flat in 0..count {
        let (mut rem, mut pick) = (
            flat,
            vec![
                Run {
                    out_start: 0,
                    len: 0,
                    src: None
                };
                maps.len()
            ],
        );
        for k in (0..maps.len()).rev() {
            pick[k] = runs[k][rem % runs[k].len()];
            rem /= runs[k].len();
        }
        let shape: Vec<usize> = pick.iter().map(|r| r.len).collect();
        let dst_offset = pick
            .iter()
            .zip(&out_strides)
            .map(|(r, &s)| r.out_start as u64 * s as u64)
            .sum();
        let src = if pick.iter().all(|r| r.src.is_some()) {
            let (mut offset, mut strides) = (0i64, Vec::with_capacity(maps.len()));
            for (r, &s) in pick.iter().zip(&in_strides) {
                let (start, step) = r.src.unwrap_or((0, 0));
                offset += start as i64 * s;
                strides.push(step * s);
            }
            PieceSource::Input { offset, strides }
        } else {
            PieceSource::Fill
        };
        pieces.push(Piece {
            shape,
            dst_offset,
            dst_strides: out_strides.clone(),
            src,
        });
    }
    Ok(pieces)
}

/// `y[i_0, ...] = x[maps[0][i_0], ...]`, or `value` where any map gives `None` (see
/// [`pieces_from_maps`]). `in_shape` has the maps' rank (size-1 axes added as needed).
pub fn axis_gather(
    target: &TargetSpec,
    name: &str,
    in_shape: &[usize],
    maps: &[Vec<Option<usize>>],
    dtype: DType,
) -> Result<TileProgram, KernelError> {
    let pieces = pieces_from_maps(in_shape, maps)?;
    let out_shape: Vec<usize> = maps.iter().map(Vec::len).collect();
    gather_pieces(target, name, in_shape, &out_shape, dtype, &pieces)
}

/// `y = tile(x, repeats)`: one piece over the index space `[r_0, n_0, r_1, n_1, ...]`, whose
/// result strides are `(n_k s_k, s_k)` and input strides `(0, t_k)` (`s`, `t` the row-major
/// strides of the result and the input).
pub fn tile(
    target: &TargetSpec,
    in_shape: &[usize],
    repeats: &[usize],
    dtype: DType,
) -> Result<TileProgram, KernelError> {
    if repeats.len() != in_shape.len() {
        return Err(KernelError::Unsupported {
            kernel: "tile",
            detail: format!(
                "{} repeats for an input of rank {}",
                repeats.len(),
                in_shape.len()
            ),
        });
    }
    let out_shape: Vec<usize> = in_shape.iter().zip(repeats).map(|(n, r)| n * r).collect();
    let (in_strides, out_strides) = (row_major(in_shape), row_major(&out_shape));
    let mut piece = Piece {
        shape: Vec::new(),
        dst_offset: 0,
        dst_strides: Vec::new(),
        src: PieceSource::Input {
            offset: 0,
            strides: Vec::new(),
        },
    };
    if let PieceSource::Input { strides, .. } = &mut piece.src {
        for k in 0..in_shape.len() {
            piece.shape.extend([repeats[k], in_shape[k]]);
            piece
                .dst_strides
                .extend([in_shape[k] as i64 * out_strides[k], out_strides[k]]);
            strides.extend([0, in_strides[k]]);
        }
    }
    gather_pieces(target, "tile", in_shape, &out_shape, dtype, &[piece])
}

/// The kernel copying each piece into `y` (of `out_shape`) from `x` (of `in_shape`) or the
/// one-element `value`. `x` and `value` are declared only when some non-empty piece reads
/// them. The pieces must cover `y` (every element written once); their element counts are
/// checked to add up to its size.
pub fn gather_pieces(
    target: &TargetSpec,
    name: &str,
    in_shape: &[usize],
    out_shape: &[usize],
    dtype: DType,
    pieces: &[Piece],
) -> Result<TileProgram, KernelError> {
    const KERNEL: &str = "gather_pieces";
    check_shape(KERNEL, "y", out_shape)?;
    let live: Vec<&Piece> = pieces
        .iter()
        .filter(|p| p.shape.iter().all(|&n| n > 0))
        .collect();
    let covered: u128 = live
        .iter()
        .map(|p| p.shape.iter().map(|&n| n as u128).product::<u128>())
        .sum();
    let total: u128 = out_shape.iter().map(|&n| n as u128).product();
    if covered != total {
        return Err(KernelError::Unsupported {
            kernel: KERNEL,
            detail: format!("the pieces cover {covered} elements of a {total}-element result"),
        });
    }
    let mut kb = KernelBuilder::new(format!("{name}_{}", dims_name(out_shape)), target);
    let y = kb.output("y", dtype, out_shape)?;
    let reads_input = live
        .iter()
        .any(|p| matches!(p.src, PieceSource::Input { .. }));
    let x = if reads_input {
        check_shape(KERNEL, "x", in_shape)?;
        Some(kb.input("x", dtype, in_shape)?)
    } else {
        None
    };
    let value = if live.iter().any(|p| p.src == PieceSource::Fill) {
        Some(kb.input("value", dtype, &[1])?)
    } else {
        None
    };
    for p in live {
        let zeros = vec![0i64; p.shape.len()];
        let (src, offset, strides) = match &p.src {
            PieceSource::Input { offset, strides } => (x.as_ref(), *offset, strides),
            PieceSource::Fill => (value.as_ref(), 0, &zeros),
        };
        let Some(src) = src else {
            continue;
        };
        if strides.len() != p.shape.len() || p.dst_strides.len() != p.shape.len() {
            return Err(KernelError::Unsupported {
                kernel: KERNEL,
                detail: format!(
                    "piece of shape {:?} has {} source and {} result strides",
                    p.shape,
                    strides.len(),
                    p.dst_strides.len()
                ),
            });
        }
        copy_strided(
            &mut kb,
            (&y, p.dst_offset as i64, &p.dst_strides),
            (src, offset, strides),
            &p.shape,
        )?;
    }
    kb.finish()
}

/// Row-major strides of `shape`.
pub fn row_major(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

fn dims_name(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// One end of a strided copy: the tensor, the element of index 0, and its stride per axis.
type End<'a> = (&'a Tensor, i64, &'a [i64]);

/// Copies the index space `shape` from `src` to `dst`: axes merged where both ends allow,
/// the outer ones unrolled until the rest fits one access pattern of at most
/// [`MAX_DMA_ELEMS`] elements (the outermost remaining axis split into blocks when needed).
fn copy_strided(
    kb: &mut KernelBuilder,
    dst: End<'_>,
    src: End<'_>,
    shape: &[usize],
) -> Result<(), KernelError> {
    // (size, dst stride, src stride), size-1 axes dropped, merged inner into outer.
    let mut axes: Vec<(usize, i64, i64)> = Vec::new();
    for (i, &n) in shape.iter().enumerate() {
        if n == 1 {
            continue;
        }
        if let Some(last) = axes.last_mut()
            && last.1 == dst.2[i] * n as i64
            && last.2 == src.2[i] * n as i64
        {
            *last = (last.0 * n, dst.2[i], src.2[i]);
            continue;
        }
        axes.push((n, dst.2[i], src.2[i]));
    }
    if axes.is_empty() {
        axes.push((1, 1, 1));
    }
    let max_dims = kb.target().max_free_dims + 1;
    // The first axis kept in the access pattern: enough inner axes to fit the dimension
    // limit, and with everything inside it at most MAX_DMA_ELEMS.
    let mut first = axes.len() - 1;
    let mut inside: u64 = 1;
    while first > 0 && axes.len() - first < max_dims {
        let with = inside * axes[first].0 as u64;
        if with > MAX_DMA_ELEMS {
            break;
        }
        inside = with;
        first -= 1;
    }
    let block = (MAX_DMA_ELEMS / inside).max(1) as usize;
    let (outer, kept) = axes.split_at(first);
    let outer_count: usize = outer.iter().map(|a| a.0).product();
    for flat in 0..outer_count {
        let (mut d_off, mut s_off, mut rem) = (dst.1, src.1, flat);
        for a in outer.iter().rev() {
            let i = (rem % a.0) as i64;
            rem /= a.0;
            d_off += i * a.1;
            s_off += i * a.2;
        }
        let mut start = 0;
        while start < kept[0].0 {
            let rows = block.min(kept[0].0 - start);
            let mut d_dims = vec![(kept[0].1, rows as u32)];
            let mut s_dims = vec![(kept[0].2, rows as u32)];
            for a in &kept[1..] {
                d_dims.push((a.1, a.0 as u32));
                s_dims.push((a.2, a.0 as u32));
            }
            let d0 = d_off + start as i64 * kept[0].1;
            let s0 = s_off + start as i64 * kept[0].2;
            let (Ok(d0), Ok(s0)) = (u64::try_from(d0), u64::try_from(s0)) else {
                return Err(KernelError::Unsupported {
                    kernel: "gather_pieces",
                    detail: format!("a piece starts before its tensor (offsets {d0}, {s0})"),
                });
            };
            kb.dma_copy(dst.0.ap(d0, &d_dims), src.0.ap(s0, &s_dims))?;
            start += rows;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Triple = (usize, usize, Option<(usize, i64)>);

    fn triples(runs: &[Run]) -> Vec<Triple> {
        runs.iter().map(|r| (r.out_start, r.len, r.src)).collect()
    }

    #[test]
    fn runs_follow_constant_strides() {
        // Reflect-pad by 2 of [0, 1, 2, 3] reads 2 1 0 1 2 3 2 1: greedily 2 1 0, then 1 2 3,
        // then 2 1, three runs with strides -1, +1, -1.
        let map: Vec<Option<usize>> = [2, 1, 0, 1, 2, 3, 2, 1].iter().map(|&i| Some(i)).collect();
        assert_eq!(
            triples(&axis_runs(&map)),
            [
                (0, 3, Some((2, -1))),
                (3, 3, Some((1, 1))),
                (6, 2, Some((2, -1)))
            ]
        );
        // Edge padding repeats index 0 (stride 0); fill runs merge.
        let map = [Some(0), Some(0), Some(0), Some(1), None, None];
        assert_eq!(
            triples(&axis_runs(&map)),
            [(0, 3, Some((0, 0))), (3, 1, Some((1, 1))), (4, 2, None)]
        );
    }

    #[test]
    fn pieces_cover_the_result_once() {
        // A [2, 3] input padded with one fill column on each side: 3 pieces.
        let maps = vec![
            vec![Some(0), Some(1)],
            vec![None, Some(0), Some(1), Some(2), None],
        ];
        let pieces = pieces_from_maps(&[2, 3], &maps).unwrap();
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[1].dst_offset, 1);
        assert_eq!(
            pieces[1].src,
            PieceSource::Input {
                offset: 0,
                strides: vec![3, 1]
            }
        );
        assert_eq!(pieces[2].src, PieceSource::Fill);
    }
}
