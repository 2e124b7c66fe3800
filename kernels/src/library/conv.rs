//! `conv`: N-D convolution (up to three spatial axes) on the tensor engine.
//!
//! Channels sit on partitions. For each output tile (a block of output positions of at most
//! 512, one PSUM bank of f32) the kernel loads the input block the tile reads, zero-padded, into
//! SBUF as `[C_in chunk, planes, rows, cols]`; then for every kernel tap and every 128-channel
//! chunk of C_in it issues one `nc_matmul` with the tap's weights `[C_in chunk, C_out chunk]` as
//! the stationary operand and, as the moving operand, the strided (and dilated) window view of
//! the block, `[C_in chunk, output positions]`, accumulating all taps and chunks in one PSUM bank
//! (start on the first, stop on the last). ACT and DVE take turns evacuating the banks (adding
//! the per-channel bias on the way), and the stores are deferred a few tiles so they do not block
//! the next tiles' loads.
//!
//! The weights arrive pre-arranged by the lowering as `w[group, C_in, tap, C_out]`, so each
//! `C_in` row of a group is one contiguous DMA; they stay resident in SBUF (or, when too large,
//! a stripe of C_out chunks at a time, the input re-read once per stripe). Grouped convolutions
//! are independent convolutions over channel ranges; the lowering packs several small groups
//! into one block-diagonal group so depthwise convolutions still fill the partitions.
//!
//! With few input channels (at most 32, 2-D) the kernel rows are folded into the contraction
//! instead: partition `(kh, c)` holds the input rows that kernel row `kh` reads (a DMA per
//! kernel row with the row stride applied), and one matmul per kernel column covers every row,
//! so a 7x7 convolution of an RGB image runs 7 matmuls of K = 21 per tile instead of 49 of K = 3.
//!
//! The input may be dilated (`in_dilation`): element `i` sits at padded position
//! `pads_begin + i * in_dilation` with zeros between. That is how the lowering runs
//! `ConvTranspose`: a stride-1 convolution of the zero-inserted input with flipped weights,
//! the zero insertion being a strided DMA into a zeroed block.

use super::{DeferredStores, blocks};
use crate::{KernelBuilder, KernelError, ScalarArg, Step, Tensor, Tile};
use std::ops::Range;
use tessera_ir::{ActFunc, AluOp, DType, Engine, TargetSpec, TileProgram};

/// Everything that shapes a convolution kernel. Spatial quantities are `[D, H, W]`; fewer
/// spatial axes are given as leading size-1 axes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvKernelSpec {
    /// Batch size N.
    pub batch: usize,
    /// Independent channel groups.
    pub groups: usize,
    /// Input channels per group.
    pub c_in: usize,
    /// Output channels per group.
    pub c_out: usize,
    /// Input extents.
    pub in_sp: [usize; 3],
    /// Output extents.
    pub out_sp: [usize; 3],
    /// Kernel extents.
    pub kernel: [usize; 3],
    /// Strides.
    pub strides: [usize; 3],
    /// Kernel dilations.
    pub dilations: [usize; 3],
    /// Padded position of input element 0 (negative crops the input).
    pub pads_begin: [i64; 3],
    /// Distance between consecutive input elements in the padded input (1 for a plain
    /// convolution).
    pub in_dilation: [usize; 3],
    /// A bias input `b[groups * c_out]` is added.
    pub bias: bool,
    /// dtype of `x`, `w`, `b` and `y` (f32, bf16 or f16); accumulation is f32 in PSUM.
    pub dtype: DType,
    /// dtype the tensor engine reads (the input and weight tiles); when it differs from
    /// `dtype` the loading DMAs convert (`--auto-cast matmul` feeds bf16 from f32 tensors).
    pub compute_dtype: DType,
    /// An activation applied (after the bias, by the same activation-engine instruction)
    /// while results leave PSUM.
    pub act: Option<ActFunc>,
    /// A `residual` input of `y`'s shape is added after the activation.
    pub residual: bool,
    /// An activation applied after the residual (only with `residual`).
    pub post_act: Option<ActFunc>,
}

const KERNEL: &str = "conv";

/// Per-partition SBUF bytes the resident weights may take.
const WEIGHT_BYTES: usize = 96 * 1024;

/// C_out chunks accumulated at once, each in its own PSUM bank (half the banks, so the next
/// group's accumulation overlaps this group's evacuation).
const PSUM_GROUP: usize = 4;

/// Kernel-row folding (see `conv`) for at most this many input channels per group.
const FOLD_MAX_CHANNELS: usize = 32;

/// Target size of an input-block or result DMA piece (see [`split_parts`]).
const ACT_PIECE_BYTES: usize = 16 * 1024;

/// Smallest weight DMA worth splitting off (its fixed start cost stays small against its data).
const WEIGHT_PIECE_BYTES: usize = 128 * 1024;

/// Per-partition SBUF bytes the input blocks of one output tile may take (all C_in chunks);
/// two tiles' blocks are live while the next loads overlap the current matmuls.
const BLOCK_BYTES: usize = 40 * 1024;

fn unsupported(detail: String) -> KernelError {
    KernelError::Unsupported {
        kernel: KERNEL,
        detail,
    }
}

/// One output tile: ranges of output planes, rows and columns.
#[derive(Clone, Debug)]
struct OutTile {
    r: [Range<usize>; 3],
}

impl OutTile {
    fn len(&self, a: usize) -> usize {
        self.r[a].len()
    }

    fn pixels(&self) -> usize {
        (0..3).map(|a| self.len(a)).product()
    }
}

impl ConvKernelSpec {
    fn taps(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Padded extent one tile of `n` outputs reads along axis `a`.
    fn span(&self, a: usize, n: usize) -> usize {
        (n - 1) * self.strides[a] + (self.kernel[a] - 1) * self.dilations[a] + 1
    }

    /// Output tile extents `[planes, rows, cols]`: whole planes and rows while they fit one
    /// PSUM bank (`max_n` positions), then shrunk until the input block fits its budget.
    fn tile_extents(&self, max_n: usize, ci_chunks: usize) -> Result<[usize; 3], KernelError> {
        let o = self.out_sp;
        let mut t = [1, 1, o[2].min(max_n)];
        if o[2] <= max_n {
            t[1] = o[1].min(max_n / o[2]);
            if t[1] == o[1] {
                t[0] = o[0].min(max_n / (o[1] * o[2]));
            }
        }
        let bytes = |t: &[usize; 3]| {
            (0..3).map(|a| self.span(a, t[a])).product::<usize>()
                * ci_chunks
                * self.dtype.size_bytes()
        };
        while bytes(&t) > BLOCK_BYTES {
            if t[0] > 1 {
                t[0] = t[0].div_ceil(2);
            } else if t[1] > 1 {
                t[1] = t[1].div_ceil(2);
            } else if t[2] > 1 {
                t[2] = t[2].div_ceil(2);
            } else {
                return Err(unsupported(format!(
                    "one output position reads a block of {} bytes per partition, more than {BLOCK_BYTES}",
                    bytes(&t)
                )));
            }
        }
        Ok(t)
    }
}

/// `x[N, groups c_in, D, H, W]`, `w[groups, c_in, taps, c_out]` (and `b[groups c_out]`) ->
/// `y[N, groups c_out, OD, OH, OW]`.
pub fn conv(target: &TargetSpec, spec: &ConvKernelSpec) -> Result<TileProgram, KernelError> {
    let s = spec;
    if ![s.dtype, s.compute_dtype]
        .iter()
        .all(|d| matches!(d, DType::F32 | DType::Bf16 | DType::F16))
    {
        return Err(unsupported(format!(
            "dtype {}; expected f32, bf16 or f16",
            s.dtype
        )));
    }
    let dims_ok = [s.batch, s.groups, s.c_in, s.c_out].iter().all(|&d| d > 0)
        && (0..3).all(|a| {
            s.in_sp[a] > 0
                && s.out_sp[a] > 0
                && s.kernel[a] > 0
                && s.strides[a] > 0
                && s.dilations[a] > 0
                && s.in_dilation[a] > 0
        });
    if !dims_ok {
        return Err(unsupported(format!("empty or zero extent in {s:?}")));
    }
    let parts = target.partitions as usize;
    let max_n = target.matmul_max_n as usize;
    let max_m = target.matmul_max_m as usize;
    let dsize = s.dtype.size_bytes();
    let taps = s.taps();
    let ci_chunks: Vec<Range<usize>> = blocks(s.c_in, parts).collect();
    let co_chunks: Vec<Range<usize>> = blocks(s.c_out, max_m).collect();
    let ext = s.tile_extents(max_n, ci_chunks.len())?;

    // C_out chunks whose weights (all C_in chunks and taps) stay resident together.
    let chunk_bytes = ci_chunks.len() * taps * max_m.min(s.c_out) * dsize;
    let per_stripe = (WEIGHT_BYTES / chunk_bytes.max(1)).max(1);
    if chunk_bytes > target.sbuf_partition_bytes as usize / 2 {
        return Err(unsupported(format!(
            "the weights of one output-channel chunk need {chunk_bytes} bytes per partition"
        )));
    }
    let stripes: Vec<&[Range<usize>]> = co_chunks.chunks(per_stripe).collect();

    let [d, h, w] = s.in_sp;
    let [od, oh, ow] = s.out_sp;
    let (cin_total, cout_total) = (s.groups * s.c_in, s.groups * s.c_out);
    let name = format!(
        "conv_{}x{}x{}x{}x{}_k{}x{}x{}_to{}",
        s.batch, cin_total, d, h, w, s.kernel[0], s.kernel[1], s.kernel[2], cout_total
    );
    let mut kb = KernelBuilder::new(name, target);
    let x = kb.input("x", s.dtype, &[s.batch, cin_total, d, h, w])?;
    let wt = kb.input("w", s.dtype, &[s.groups, s.c_in, taps, s.c_out])?;
    let b = if s.bias {
        Some(kb.input("b", s.dtype, &[cout_total])?)
    } else {
        None
    };
    let residual = if s.residual {
        Some(kb.input("residual", s.dtype, &[s.batch, cout_total, od, oh, ow])?)
    } else {
        None
    };
    let y = kb.output("y", s.dtype, &[s.batch, cout_total, od, oh, ow])?;
    // The DMA pieces of one result block (image n, channels cc, output tile) in a tensor laid
    // out like `y`.
    let block_pieces = |t: &Tensor, n: usize, g: usize, cc: &Range<usize>, tile: &OutTile| {
        let o = &tile.r;
        let npix = tile.pixels();
        let off =
            ((((n * cout_total + g * s.c_out + cc.start) * od + o[0].start) * oh + o[1].start) * ow
                + o[2].start) as u64;
        split_parts(cc.len(), npix * dsize)
            .into_iter()
            .map(|pr| {
                let dst = t.ap(
                    off + (pr.start * od * oh * ow) as u64,
                    &[
                        ((od * oh * ow) as i64, pr.len() as u32),
                        ((oh * ow) as i64, tile.len(0) as u32),
                        (ow as i64, tile.len(1) as u32),
                        (1, tile.len(2) as u32),
                    ],
                );
                (pr.start as u32..pr.end as u32, dst)
            })
            .collect::<Vec<_>>()
    };

    let tiles: Vec<OutTile> = blocks(od, ext[0])
        .flat_map(|rd| {
            blocks(oh, ext[1]).flat_map(move |rh| {
                let rd = rd.clone();
                blocks(ow, ext[2]).map(move |rw| OutTile {
                    r: [rd.clone(), rh.clone(), rw],
                })
            })
        })
        .collect();
    let mut stores = DeferredStores::new(ext.iter().product::<usize>() * dsize);
    let mut evac = 0usize;
    // Few input channels leave most of the contraction rows idle, and the tensor engine takes
    // as long for K = 3 as for K = 128: fold the kernel rows into the partitions instead, so
    // partition (kh, c) holds the input rows tap row kh reads and one matmul per kernel column
    // covers every kernel row (7 instead of 49 matmuls for a 7x7 conv on RGB input).
    let fold = s.in_sp[0] == 1
        && s.kernel[0] == 1
        && s.in_dilation == [1, 1, 1]
        && s.kernel[1] > 1
        && s.c_in <= FOLD_MAX_CHANNELS
        && s.c_in * s.kernel[1] <= parts;
    let (kfold, mm_taps) = if fold {
        (s.kernel[1], s.kernel[2])
    } else {
        (1, taps)
    };
    let n_mm = ci_chunks.len() * mm_taps;
    let load = |kb: &mut KernelBuilder<'_>, n: usize, g: usize, tile: &OutTile| {
        if fold {
            load_folded(kb, s, &x, n, g, tile)
        } else {
            load_blocks(kb, s, &x, n, g, &ci_chunks, tile)
        }
    };
    for g in 0..s.groups {
        for stripe in &stripes {
            let cols = stripe[0].start..stripe[stripe.len() - 1].end;
            // The first tile's input goes ahead of the weights in the DMA queues.
            let mut first = Some(load(&mut kb, 0, g, &tiles[0])?);
            // Weights of this stripe: one [C_in chunk, taps, stripe columns] tile per chunk.
            let mut wtiles = Vec::with_capacity(ci_chunks.len());
            for cr in ci_chunks.iter().filter(|_| fold) {
                // Partition (kh, c), then [kw, C_out]: one DMA (the weights are small).
                let pk = (kfold * cr.len()) as u32;
                let t = kb.sbuf("w", s.compute_dtype, pk, &[mm_taps, cols.len()])?;
                let src = wt.ap(
                    ((g * s.c_in + cr.start) * taps * s.c_out + cols.start) as u64,
                    &[
                        ((mm_taps * s.c_out) as i64, kfold as u32),
                        ((taps * s.c_out) as i64, cr.len() as u32),
                        (s.c_out as i64, mm_taps as u32),
                        (1, cols.len() as u32),
                    ],
                );
                kb.dma_copy(&t, src)?;
                wtiles.push(t);
            }
            for cr in ci_chunks.iter().filter(|_| !fold) {
                let t = kb.sbuf("w", s.compute_dtype, cr.len() as u32, &[taps, cols.len()])?;
                // Whole contiguous rows (every tap) per DMA, so runs are long, split into
                // partition groups of at least WEIGHT_PIECE_BYTES so the pieces spread over
                // the DMA queues.
                let row_bytes = taps * cols.len() * dsize;
                let pieces = (cr.len() * row_bytes / WEIGHT_PIECE_BYTES).clamp(1, 8);
                for pg in blocks(cr.len(), cr.len().div_ceil(pieces)) {
                    let row = g * s.c_in + cr.start + pg.start;
                    let src = wt.ap(
                        (row * taps * s.c_out + cols.start) as u64,
                        &[
                            ((taps * s.c_out) as i64, pg.len() as u32),
                            (s.c_out as i64, taps as u32),
                            (1, cols.len() as u32),
                        ],
                    );
                    kb.dma_copy(t.part(pg.start as u32..pg.end as u32), src)?;
                }
                wtiles.push(t);
            }
            let mut btiles = Vec::new();
            if let Some(b) = &b {
                for cc in stripe.iter() {
                    let t = kb.sbuf("bias", DType::F32, cc.len() as u32, &[1])?;
                    let off = (g * s.c_out + cc.start) as u64;
                    kb.dma_copy(&t, b.ap(off, &[(1, cc.len() as u32), (1, 1)]))?;
                    btiles.push(t);
                }
            }
            for n in 0..s.batch {
                for tile in &tiles {
                    let blocks_in = match first.take() {
                        Some(b) => b,
                        None => load(&mut kb, n, g, tile)?,
                    };
                    let span = [
                        s.span(0, tile.len(0)),
                        s.span(1, tile.len(1)),
                        s.span(2, tile.len(2)),
                    ];
                    let npix = tile.pixels();
                    // C_out chunks accumulate side by side in their own PSUM banks, C_in chunk
                    // by C_in chunk: the first matmuls need only the first chunk's weights.
                    for group in stripe.chunks(PSUM_GROUP) {
                        let mut accs = Vec::with_capacity(group.len());
                        for cc in group {
                            accs.push(kb.psum("acc", DType::F32, cc.len() as u32, &[npix])?);
                        }
                        // Residual blocks load while the matmuls run.
                        let mut rtiles = Vec::new();
                        if let Some(r) = &residual {
                            for cc in group {
                                let t = kb.sbuf("residual", s.dtype, cc.len() as u32, &[npix])?;
                                for (pr, src) in block_pieces(r, n, g, cc, tile) {
                                    kb.dma_copy(t.part(pr), src)?;
                                }
                                rtiles.push(t);
                            }
                        }
                        let mut rtiles = rtiles.into_iter();
                        for (q, cr) in ci_chunks.iter().enumerate() {
                            let pc = (kfold * cr.len()) as u32;
                            for (cc, acc) in group.iter().zip(&accs) {
                                for t in 0..mm_taps {
                                    let i = q * mm_taps + t;
                                    let moving = if fold {
                                        // Rows are pre-strided; column kw of the kernel.
                                        blocks_in[q].ap(
                                            0..pc,
                                            (t * s.dilations[2]) as u64,
                                            &[
                                                (span[2] as i64, tile.len(1) as u32),
                                                (s.strides[2] as i64, tile.len(2) as u32),
                                            ],
                                        )
                                    } else {
                                        window(s, &blocks_in[q], pc, &span, tile, t)
                                    };
                                    let c0 = cc.start - cols.start;
                                    let stationary =
                                        wtiles[q].view(0..pc, &[t..t + 1, c0..c0 + cc.len()]);
                                    kb.nc_matmul(acc, stationary, moving, i == 0, i + 1 == n_mm)?;
                                }
                            }
                        }
                        for (cc, acc) in group.iter().zip(accs) {
                            let j = (cc.start - cols.start) / max_m;
                            let out = kb.sbuf("y", s.dtype, cc.len() as u32, &[npix])?;
                            let engine = if evac.is_multiple_of(2) {
                                Engine::Act
                            } else {
                                Engine::Dve
                            };
                            evac += 1;
                            if s.act.is_some() || s.residual {
                                // Bias and activation in one activation-engine instruction,
                                // then the residual on the vector engine.
                                let func = s.act.unwrap_or(ActFunc::Identity);
                                let tmp = match rtiles.next() {
                                    Some(r) => Some((
                                        kb.sbuf("epilogue", DType::F32, cc.len() as u32, &[npix])?,
                                        r,
                                    )),
                                    None => None,
                                };
                                let dst = match &tmp {
                                    Some((t, _)) => t,
                                    None => &out,
                                };
                                match btiles.get(j) {
                                    Some(bt) => kb.activation(dst, &acc, func, 1.0, bt, None)?,
                                    None => kb.activation(dst, &acc, func, 1.0, 0.0, None)?,
                                }
                                if let Some((t, r)) = tmp {
                                    match s.post_act {
                                        // The sum stays fp32 until the activation's result
                                        // is rounded to the output's dtype.
                                        Some(post) => {
                                            kb.tensor_tensor(&t, &t, AluOp::Add, &r)?;
                                            kb.activation(&out, &t, post, 1.0, 0.0, None)?;
                                        }
                                        None => kb.tensor_tensor(&out, &t, AluOp::Add, &r)?,
                                    }
                                    kb.free(t)?;
                                    kb.free(r)?;
                                }
                            } else {
                                match btiles.get(j) {
                                    Some(bt) if engine == Engine::Act => {
                                        kb.activation(&out, &acc, ActFunc::Identity, 1.0, bt, None)?
                                    }
                                    Some(bt) => kb.tensor_scalar_on(
                                        engine,
                                        &out,
                                        &acc,
                                        Step::new(AluOp::Add, ScalarArg::from(bt)),
                                        None,
                                    )?,
                                    None => kb.tensor_copy_on(engine, &out, &acc)?,
                                }
                            }
                            kb.free(acc)?;
                            let pieces = block_pieces(&y, n, g, cc, tile);
                            stores.push(&mut kb, out, pieces)?;
                        }
                    }
                    for t in blocks_in {
                        kb.free(t)?;
                    }
                }
            }
            stores.flush(&mut kb)?;
            for t in wtiles.into_iter().chain(btiles) {
                kb.free(t)?;
            }
        }
    }
    kb.finish()
}

/// Partition ranges splitting a DMA of `per_part` bytes per partition into pieces of about
/// [`ACT_PIECE_BYTES`]: the input blocks and results move in short rows (an image row), at half
/// a DMA engine's bandwidth, so one transfer per tile would hold the tile's matmuls back; the
/// pieces run on several queues at once.
pub(crate) fn split_parts(p: usize, per_part: usize) -> Vec<Range<usize>> {
    let ways = (p * per_part / ACT_PIECE_BYTES).clamp(1, 8).min(p);
    blocks(p, p.div_ceil(ways)).collect()
}

/// The moving operand of tap `t`: the strided, dilated window of `block` whose columns are the
/// tile's output positions.
fn window(
    s: &ConvKernelSpec,
    block: &Tile,
    pc: u32,
    span: &[usize; 3],
    tile: &OutTile,
    t: usize,
) -> crate::TileView {
    let k = [
        t / (s.kernel[1] * s.kernel[2]),
        (t / s.kernel[2]) % s.kernel[1],
        t % s.kernel[2],
    ];
    let off = ((k[0] * s.dilations[0] * span[1] + k[1] * s.dilations[1]) * span[2]
        + k[2] * s.dilations[2]) as u64;
    block.ap(
        0..pc,
        off,
        &[
            (
                (s.strides[0] * span[1] * span[2]) as i64,
                tile.len(0) as u32,
            ),
            ((s.strides[1] * span[2]) as i64, tile.len(1) as u32),
            (s.strides[2] as i64, tile.len(2) as u32),
        ],
    )
}

/// The input blocks (one per C_in chunk) that output tile `tile` of batch `n`, group `g`
/// reads: padded positions `o s + k d` for the tile's outputs, zero where no input element
/// lands (padding, or the gaps of a dilated input).
fn load_blocks(
    kb: &mut KernelBuilder<'_>,
    s: &ConvKernelSpec,
    x: &crate::Tensor,
    n: usize,
    g: usize,
    ci_chunks: &[Range<usize>],
    tile: &OutTile,
) -> Result<Vec<Tile>, KernelError> {
    let span: Vec<usize> = (0..3).map(|a| s.span(a, tile.len(a))).collect();
    // Per axis: first padded position, and the input elements that land in the block (first
    // index, count, first position inside the block).
    let mut full = true;
    let mut empty = false;
    let mut lands = [(0usize, 0usize, 0usize); 3];
    for a in 0..3 {
        let q0 = (tile.r[a].start * s.strides[a]) as i64;
        let q1 = q0 + span[a] as i64; // exclusive
        let (pb, step) = (s.pads_begin[a], s.in_dilation[a] as i64);
        // Smallest i with pb + i step >= q0, largest with pb + i step < q1.
        let lo = (q0 - pb).max(0);
        let i_lo = (lo + step - 1) / step;
        let hi = q1 - 1 - pb;
        let i_hi = if hi < 0 {
            -1
        } else {
            (hi / step).min(s.in_sp[a] as i64 - 1)
        };
        if i_hi < i_lo {
            empty = true;
            continue;
        }
        let count = (i_hi - i_lo + 1) as usize;
        let at = (pb + i_lo * step - q0) as usize;
        if count != span[a] {
            full = false;
        }
        lands[a] = (i_lo as usize, count, at);
    }
    let [d, h, w] = s.in_sp;
    let cin_total = s.groups * s.c_in;
    let mut out = Vec::with_capacity(ci_chunks.len());
    for cr in ci_chunks {
        let pc = cr.len() as u32;
        let t = kb.sbuf("x", s.compute_dtype, pc, &[span[0], span[1], span[2]])?;
        if !full || empty {
            // Zeros for the padding and gaps; on POOL, which evacuation does not use.
            kb.memset_on(Engine::Pool, &t, 0.0)?;
        }
        if !empty {
            let dst_off = ((lands[0].2 * span[1] + lands[1].2) * span[2] + lands[2].2) as u64;
            let c = n * cin_total + g * s.c_in + cr.start;
            let src_off = (((c * d + lands[0].0) * h + lands[1].0) * w + lands[2].0) as u64;
            let per_part = lands[0].1 * lands[1].1 * lands[2].1 * s.dtype.size_bytes();
            for pr in split_parts(cr.len(), per_part) {
                let dst = t.ap(
                    pr.start as u32..pr.end as u32,
                    dst_off,
                    &[
                        (
                            (s.in_dilation[0] * span[1] * span[2]) as i64,
                            lands[0].1 as u32,
                        ),
                        ((s.in_dilation[1] * span[2]) as i64, lands[1].1 as u32),
                        (s.in_dilation[2] as i64, lands[2].1 as u32),
                    ],
                );
                let src = x.ap(
                    src_off + (pr.start * d * h * w) as u64,
                    &[
                        ((d * h * w) as i64, pr.len() as u32),
                        ((h * w) as i64, lands[0].1 as u32),
                        (w as i64, lands[1].1 as u32),
                        (1, lands[2].1 as u32),
                    ],
                );
                kb.dma_copy(dst, src)?;
            }
        }
        out.push(t);
    }
    Ok(out)
}

/// The kernel-row-folded input of one output tile (2-D, `c_in * KH <= 128`): partition
/// `(kh, c)` row `r` holds padded input row `(oh0 + r) sh + kh dh` of channel `c`, all
/// `span` padded columns, zeros where the padding is.
fn load_folded(
    kb: &mut KernelBuilder<'_>,
    s: &ConvKernelSpec,
    x: &crate::Tensor,
    n: usize,
    g: usize,
    tile: &OutTile,
) -> Result<Vec<Tile>, KernelError> {
    let [_, h, w] = s.in_sp;
    let (kh_n, c) = (s.kernel[1], s.c_in);
    let (nh, cols) = (tile.len(1), s.span(2, tile.len(2)));
    let t = kb.sbuf("x", s.compute_dtype, (kh_n * c) as u32, &[nh, cols])?;
    // Columns: the input columns landing in the tile's padded span.
    let q0 = (tile.r[2].start * s.strides[2]) as i64;
    let pw = s.pads_begin[2];
    let i_lo = (q0 - pw).max(0);
    let i_hi = (q0 + cols as i64 - 1 - pw).min(w as i64 - 1);
    // Rows per kernel row: outputs oh whose input row oh sh + kh dh - ph lies in 0..h.
    let ph = s.pads_begin[1];
    let rows: Vec<(usize, usize)> = (0..kh_n)
        .map(|kh| {
            let valid = |r: usize| {
                let i = ((tile.r[1].start + r) * s.strides[1] + kh * s.dilations[1]) as i64 - ph;
                i >= 0 && i < h as i64
            };
            let first = (0..nh).find(|&r| valid(r)).unwrap_or(nh);
            let count = (first..nh).take_while(|&r| valid(r)).count();
            (first, count)
        })
        .collect();
    let whole = i_hi - i_lo + 1 == cols as i64 && rows.iter().all(|&(f, k)| f == 0 && k == nh);
    if !whole {
        kb.memset_on(Engine::Pool, &t, 0.0)?;
    }
    if i_hi < i_lo {
        return Ok(vec![t]);
    }
    let ncols = (i_hi - i_lo + 1) as u32;
    let at = (pw + i_lo - q0) as usize;
    let cin_total = s.groups * s.c_in;
    for (kh, &(first, count)) in rows.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let row = ((tile.r[1].start + first) * s.strides[1] + kh * s.dilations[1]) as i64 - ph;
        let base = ((n * cin_total + g * c) * h + row as usize) * w + i_lo as usize;
        let dst = t.ap(
            (kh * c) as u32..((kh + 1) * c) as u32,
            (first * cols + at) as u64,
            &[(cols as i64, count as u32), (1, ncols)],
        );
        let src = x.ap(
            base as u64,
            &[
                ((h * w) as i64, c as u32),
                ((s.strides[1] * w) as i64, count as u32),
                (1, ncols),
            ],
        );
        kb.dma_copy(dst, src)?;
    }
    Ok(vec![t])
}
