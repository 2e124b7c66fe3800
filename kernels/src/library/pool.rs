//! `pool`: windowed max / sum / Lp-sum over up to three spatial axes (MaxPool, AveragePool,
//! LpPool).
//!
//! The `[N C]` rows sit on partitions, 128 at a time, and the spatial axes in the free
//! dimensions. For each output tile the kernel loads the padded input block it reads into SBUF
//! (padding filled with the operation's identity: the dtype's lowest value for max, zero for
//! sums), then combines the taps with one vector-engine instruction each, reading the tap's
//! strided (and dilated) window view of the block: `acc = max(acc, window)` or `acc += window`.
//! Tiles are shared between DVE and POOL (two to one, POOL being half as fast); ACT fills the
//! padding. LpPool raises the
//! block to `|x|^p` first (ACT for `|x|` and `x^2`) and takes the `1/p` power at the end; an
//! average multiplies by a per-position `1 / count` map (`scale`, computed at lowering time, so
//! `count_include_pad=0` with padding costs nothing extra).

use super::conv::split_parts;
use super::{DeferredStores, blocks};
use crate::{KernelBuilder, KernelError, Step};
use std::ops::Range;
use tessera_ir::{ActFunc, AluOp, DType, Engine, TargetSpec, TileProgram};

/// How the taps of a window combine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolOp {
    /// The largest element.
    Max,
    /// The sum.
    Sum,
    /// `(sum |x|^p)^(1/p)`.
    LpSum {
        /// The exponent.
        p: f64,
    },
}

/// Everything that shapes a pool kernel. Spatial quantities are `[D, H, W]`, fewer spatial
/// axes given as leading size-1 axes.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolKernelSpec {
    /// Independent rows (`N C`).
    pub rows: usize,
    /// Input extents.
    pub in_sp: [usize; 3],
    /// Output extents.
    pub out_sp: [usize; 3],
    /// Window extents.
    pub kernel: [usize; 3],
    /// Strides.
    pub strides: [usize; 3],
    /// Window dilations.
    pub dilations: [usize; 3],
    /// Padding before each axis.
    pub pads_begin: [usize; 3],
    /// How taps combine.
    pub op: PoolOp,
    /// Multiply each result by `scale[position]` (an f32 input over the output positions).
    pub scaled: bool,
    /// dtype of `x` and `y`. Floats compute in f32; integers (max only) in their own dtype.
    pub dtype: DType,
}

const KERNEL: &str = "pool";

/// Per-partition SBUF bytes one tile's input block may take.
const BLOCK_BYTES: usize = 16 * 1024;

fn unsupported(detail: String) -> KernelError {
    KernelError::Unsupported {
        kernel: KERNEL,
        detail,
    }
}

/// The lowest value of an integer dtype (the identity of max), or -inf for floats.
fn lowest(dtype: DType) -> f64 {
    match dtype {
        DType::I8 => f64::from(i8::MIN),
        DType::I16 => f64::from(i16::MIN),
        DType::I32 => f64::from(i32::MIN),
        DType::I64 => i64::MIN as f64,
        DType::U8 | DType::U16 | DType::U32 | DType::U64 | DType::Bool => 0.0,
        _ => f64::NEG_INFINITY,
    }
}

impl PoolKernelSpec {
    fn span(&self, a: usize, n: usize) -> usize {
        (n - 1) * self.strides[a] + (self.kernel[a] - 1) * self.dilations[a] + 1
    }

    fn tile_extents(&self, esize: usize) -> Result<[usize; 3], KernelError> {
        let mut t = self.out_sp;
        let bytes = |t: &[usize; 3]| {
            ((0..3).map(|a| self.span(a, t[a])).product::<usize>()
                + 2 * t.iter().product::<usize>())
                * esize
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

/// `x[rows, D, H, W]` (and `scale[OD OH OW]` f32 when `scaled`) -> `y[rows, OD, OH, OW]`.
pub fn pool(target: &TargetSpec, spec: &PoolKernelSpec) -> Result<TileProgram, KernelError> {
    let s = spec;
    let float = s.dtype.is_float();
    if !float && (s.op != PoolOp::Max || s.scaled || s.dtype == DType::Bool) {
        return Err(unsupported(format!(
            "{:?} on {} tensors (integers support max only)",
            s.op, s.dtype
        )));
    }
    let ok = s.rows > 0
        && (0..3).all(|a| {
            s.in_sp[a] > 0
                && s.out_sp[a] > 0
                && s.kernel[a] > 0
                && s.strides[a] > 0
                && s.dilations[a] > 0
        });
    if !ok {
        return Err(unsupported(format!("empty or zero extent in {s:?}")));
    }
    let cdt = if float { DType::F32 } else { s.dtype };
    let ext = s.tile_extents(cdt.size_bytes())?;
    let [d, h, w] = s.in_sp;
    let [od, oh, ow] = s.out_sp;
    let name = format!(
        "pool_{}x{}x{}x{}_k{}x{}x{}",
        s.rows, d, h, w, s.kernel[0], s.kernel[1], s.kernel[2]
    );
    let mut kb = KernelBuilder::new(name, target);
    let x = kb.input("x", s.dtype, &[s.rows, d, h, w])?;
    let scale = if s.scaled {
        Some(kb.input("scale", DType::F32, &[od * oh * ow])?)
    } else {
        None
    };
    let y = kb.output("y", s.dtype, &[s.rows, od, oh, ow])?;
    let fill = if s.op == PoolOp::Max {
        lowest(cdt)
    } else {
        0.0
    };
    let tiles: Vec<[Range<usize>; 3]> = blocks(od, ext[0])
        .flat_map(|rd| {
            blocks(oh, ext[1]).flat_map(move |rh| {
                let rd = rd.clone();
                blocks(ow, ext[2]).map(move |rw| [rd.clone(), rh.clone(), rw])
            })
        })
        .collect();
    let mut stores = DeferredStores::new(ext.iter().product::<usize>() * s.dtype.size_bytes());
    let taps: usize = s.kernel.iter().product();
    let mut turn = 0usize;
    for rb in blocks(s.rows, target.partitions as usize) {
        let pc = rb.len() as u32;
        for r in &tiles {
            // POOL runs element-wise work at half DVE's rate: it takes every third tile.
            let engine = if turn % 3 == 2 {
                Engine::Pool
            } else {
                Engine::Dve
            };
            turn += 1;
            let len = [r[0].len(), r[1].len(), r[2].len()];
            let span = [s.span(0, len[0]), s.span(1, len[1]), s.span(2, len[2])];
            let block = kb.sbuf("x", cdt, pc, &span)?;
            // Input elements landing in the block, per axis: (first index, count, offset).
            let mut lands = [(0usize, 0usize, 0usize); 3];
            let mut full = true;
            let mut empty = false;
            for a in 0..3 {
                let q0 = (r[a].start * s.strides[a]) as i64;
                let pb = s.pads_begin[a] as i64;
                let i_lo = (q0 - pb).max(0);
                let i_hi = (q0 + span[a] as i64 - 1 - pb).min(s.in_sp[a] as i64 - 1);
                if i_hi < i_lo {
                    empty = true;
                    continue;
                }
                let count = (i_hi - i_lo + 1) as usize;
                full &= count == span[a];
                lands[a] = (i_lo as usize, count, (pb + i_lo - q0) as usize);
            }
            if !full || empty {
                // The padding fill goes to ACT, otherwise idle here.
                kb.memset_on(Engine::Act, &block, fill)?;
            }
            if !empty {
                let dst_off = ((lands[0].2 * span[1] + lands[1].2) * span[2] + lands[2].2) as u64;
                let src_off =
                    (((rb.start * d + lands[0].0) * h + lands[1].0) * w + lands[2].0) as u64;
                // Short image rows move at half a DMA engine's rate: split over queues.
                let per_part = lands[0].1 * lands[1].1 * lands[2].1 * s.dtype.size_bytes();
                for pr in split_parts(rb.len(), per_part) {
                    let dst = block.ap(
                        pr.start as u32..pr.end as u32,
                        dst_off,
                        &[
                            ((span[1] * span[2]) as i64, lands[0].1 as u32),
                            (span[2] as i64, lands[1].1 as u32),
                            (1, lands[2].1 as u32),
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
            if let PoolOp::LpSum { p } = s.op {
                // |x|^p in place (padding stays 0).
                if p == 2.0 {
                    kb.act(&block, &block, ActFunc::Square)?;
                } else {
                    kb.act(&block, &block, ActFunc::Abs)?;
                    if p != 1.0 {
                        kb.tensor_scalar_on(
                            engine,
                            &block,
                            &block,
                            Step::new(AluOp::Pow, p),
                            None,
                        )?;
                    }
                }
            }
            let npix: usize = len.iter().product();
            let acc = kb.sbuf("acc", cdt, pc, &[npix])?;
            let combine = if s.op == PoolOp::Max {
                AluOp::Max
            } else {
                AluOp::Add
            };
            for t in 0..taps {
                let k = [
                    t / (s.kernel[1] * s.kernel[2]),
                    (t / s.kernel[2]) % s.kernel[1],
                    t % s.kernel[2],
                ];
                let off = ((k[0] * s.dilations[0] * span[1] + k[1] * s.dilations[1]) * span[2]
                    + k[2] * s.dilations[2]) as u64;
                let window = block.ap(
                    0..pc,
                    off,
                    &[
                        ((s.strides[0] * span[1] * span[2]) as i64, len[0] as u32),
                        ((s.strides[1] * span[2]) as i64, len[1] as u32),
                        (s.strides[2] as i64, len[2] as u32),
                    ],
                );
                if t == 0 {
                    kb.tensor_copy_on(engine, &acc, window)?;
                } else {
                    kb.tensor_tensor_on(engine, &acc, &acc, combine, window)?;
                }
            }
            kb.free(block)?;
            let out = kb.sbuf("y", s.dtype, pc, &[npix])?;
            let pos_off = ((r[0].start * oh + r[1].start) * ow + r[2].start) as u64;
            let pos_dims = [
                ((oh * ow) as i64, len[0] as u32),
                (ow as i64, len[1] as u32),
                (1, len[2] as u32),
            ];
            if let PoolOp::LpSum { p } = s.op {
                if p == 2.0 {
                    kb.act(&out, &acc, ActFunc::Sqrt)?;
                } else if p == 1.0 {
                    kb.tensor_copy_on(engine, &out, &acc)?;
                } else {
                    kb.tensor_scalar_on(engine, &out, &acc, Step::new(AluOp::Pow, 1.0 / p), None)?;
                }
            } else if let Some(scale) = &scale {
                let sc = kb.sbuf("scale", DType::F32, pc, &[npix])?;
                let mut dims = vec![(0i64, pc)];
                dims.extend(pos_dims);
                kb.dma_copy(&sc, scale.ap(pos_off, &dims))?;
                kb.tensor_tensor_on(engine, &out, &acc, AluOp::Mul, &sc)?;
                kb.free(sc)?;
            } else {
                kb.tensor_copy_on(engine, &out, &acc)?;
            }
            kb.free(acc)?;
            let pieces = split_parts(rb.len(), npix * s.dtype.size_bytes())
                .into_iter()
                .map(|pr| {
                    let y_off = ((rb.start + pr.start) * od * oh * ow) as u64 + pos_off;
                    let mut dims = vec![((od * oh * ow) as i64, pr.len() as u32)];
                    dims.extend(pos_dims);
                    (pr.start as u32..pr.end as u32, y.ap(y_off, &dims))
                })
                .collect();
            stores.push(&mut kb, out, pieces)?;
        }
    }
    stores.flush(&mut kb)?;
    kb.finish()
}
