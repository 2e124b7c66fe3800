//! `matmul`: `c[m, n] = a[m, k] . b[k, n]` on the tensor engine.
//!
//! Tiling: M by 128 (the stationary operand's free size and the result's partitions), N by 512
//! (one PSUM bank of f32), K by 128 (the partitions contracted). `A^T` is loaded once, by
//! transposing DMA views, a stripe of up to eight M tiles at a time that stays in SBUF while B
//! streams past it (see `resident_stripes` for the schedule and why). Each `[M, N]` block
//! accumulates over all K tiles in its own PSUM bank (start on the first, stop on the last); ACT
//! and DVE take turns evacuating the banks to SBUF, casting to the output dtype, and DMA stores
//! them. The modelled performance is in `docs/performance.md`.

use super::{blocks, check_shape, parts};
use crate::{HbmView, KernelBuilder, KernelError, Tensor, Tile};
use std::ops::Range;
use tessera_ir::{ActFunc, AluOp, DType, Engine, TargetSpec, TileProgram};

/// `a`[m, k] (in_dtype), `b`[k, n] (in_dtype) -> `c`[m, n] (out_dtype). `in_dtype` is f32, bf16
/// or f16 (the tensor engine's float operand types); accumulation is f32 in PSUM.
pub fn matmul(
    target: &TargetSpec,
    m: usize,
    k: usize,
    n: usize,
    in_dtype: DType,
    out_dtype: DType,
) -> Result<TileProgram, KernelError> {
    matmul_t(target, m, k, n, false, false, in_dtype, out_dtype)
}

/// [`matmul`] with operands that may be stored transposed: `a` is `[k, m]` when `trans_a` and
/// `b` is `[n, k]` when `trans_b` (Gemm's transA/transB). Only the DMA access patterns change:
/// a transposed A is loaded straight (its rows are already K), a transposed B through a
/// transposing view.
#[allow(clippy::too_many_arguments)] // the shape triple, two layout flags and two dtypes
pub fn matmul_t(
    target: &TargetSpec,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    in_dtype: DType,
    out_dtype: DType,
) -> Result<TileProgram, KernelError> {
    matmul_spec(
        target,
        &MatmulSpec {
            m,
            k,
            n,
            trans_a,
            trans_b,
            in_dtype,
            compute_dtype: in_dtype,
            out_dtype,
            epilogue: MatmulEpilogue::default(),
            swap_roles: false,
        },
    )
}

/// What happens to each result block as it leaves PSUM: `act(alpha * acc + bias) + residual`,
/// in fp32 on the activation and vector engines, before the cast to the output dtype. The
/// default (alpha 1, nothing else) is a plain copy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulEpilogue {
    /// Scale of the product.
    pub alpha: f64,
    /// A `bias` input `[n]` is added to every row (loaded once per column block, broadcast to
    /// every partition by a stride-0 DMA view).
    pub bias: bool,
    /// An activation-engine function applied after the bias.
    pub act: Option<ActFunc>,
    /// A `residual` input `[m, n]` (output dtype) is added last.
    pub residual: bool,
}

impl Default for MatmulEpilogue {
    fn default() -> Self {
        MatmulEpilogue {
            alpha: 1.0,
            bias: false,
            act: None,
            residual: false,
        }
    }
}

impl MatmulEpilogue {
    /// Nothing but the copy out of PSUM.
    pub fn is_plain(&self) -> bool {
        *self == MatmulEpilogue::default()
    }
}

/// Everything that shapes a matmul kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulSpec {
    /// Rows of the result.
    pub m: usize,
    /// The contracted size.
    pub k: usize,
    /// Columns of the result.
    pub n: usize,
    /// `a` is stored `[k, m]`.
    pub trans_a: bool,
    /// `b` is stored `[n, k]`.
    pub trans_b: bool,
    /// dtype of `a` and `b` in HBM.
    pub in_dtype: DType,
    /// dtype the tensor engine reads (the SBUF tiles); when it differs from `in_dtype` the DMA
    /// loads convert (how `--auto-cast matmul` feeds bf16 to the PE from fp32 tensors).
    pub compute_dtype: DType,
    /// dtype of `c`.
    pub out_dtype: DType,
    /// Applied while results leave PSUM.
    pub epilogue: MatmulEpilogue,
    /// The roles swapped: `op(B)^T` is the stationary operand and `op(A)^T` moves, so PSUM
    /// holds blocks of `C^T` (N on partitions), stored through transposing DMA views; the bias
    /// becomes a per-partition column. Same result; fewer, fuller matmuls when M is small
    /// and N large (each instruction costs `max(moving columns, 64)` cycles).
    pub swap_roles: bool,
}

/// The matmul kernel for a full [`MatmulSpec`].
pub fn matmul_spec(target: &TargetSpec, spec: &MatmulSpec) -> Result<TileProgram, KernelError> {
    const KERNEL: &str = "matmul";
    let MatmulSpec {
        m,
        k,
        n,
        trans_a,
        trans_b,
        in_dtype,
        compute_dtype,
        out_dtype,
        epilogue,
        swap_roles,
    } = *spec;
    let a_shape = if trans_a { [k, m] } else { [m, k] };
    let b_shape = if trans_b { [n, k] } else { [k, n] };
    check_shape(KERNEL, "a", &a_shape)?;
    check_shape(KERNEL, "b", &b_shape)?;
    for d in [in_dtype, compute_dtype] {
        if !matches!(d, DType::F32 | DType::Bf16 | DType::F16) {
            return Err(KernelError::Unsupported {
                kernel: KERNEL,
                detail: format!("dtype {d}; expected f32, bf16 or f16"),
            });
        }
    }
    let (tile_m, tile_k, tile_n) = (
        target.matmul_max_m as usize,
        target.matmul_max_k as usize,
        target.matmul_max_n as usize,
    );

    let name = format!(
        "matmul_{m}x{k}x{n}{}{}{}{}{}",
        if trans_a { "_ta" } else { "" },
        if trans_b { "_tb" } else { "" },
        if compute_dtype != in_dtype {
            format!("_{compute_dtype}")
        } else {
            String::new()
        },
        if epilogue.is_plain() { "" } else { "_epilogue" },
        if swap_roles { "_swapped" } else { "" }
    );
    let mut kb = KernelBuilder::new(name, target);
    let a = kb.input("a", in_dtype, &a_shape)?;
    let b = kb.input("b", in_dtype, &b_shape)?;
    let bias = if epilogue.bias {
        Some(kb.input("bias", in_dtype, &[n])?)
    } else {
        None
    };
    let residual = if epilogue.residual {
        Some(kb.input("residual", out_dtype, &[m, n])?)
    } else {
        None
    };
    let c = kb.output("c", out_dtype, &[m, n])?;
    // With the roles swapped the schedule below computes `D = C^T = op(B)^T op(A)^T`: its `A`
    // is `b` (stored `[k, n]` = `D`'s A transposed, unless `trans_b`) and its `B` is `a`.
    let swapped = MatmulSpec {
        m: n,
        n: m,
        trans_a: !trans_b,
        trans_b: !trans_a,
        ..*spec
    };
    let (sched, a_op, b_op) = if swap_roles {
        (&swapped, &b, &a)
    } else {
        (spec, &a, &b)
    };
    let ops = Operands {
        a: a_op,
        b: b_op,
        c: &c,
        bias: bias.as_ref(),
        residual: residual.as_ref(),
        spec: sched,
        trans_c: swap_roles,
    };
    let stripe_m_tiles = stripe_tiles(target, sched.m, k, compute_dtype);
    if stripe_m_tiles == 0 {
        streaming(&mut kb, &ops, (tile_m, tile_k, tile_n))?;
    } else {
        resident_stripes(
            &mut kb,
            &ops,
            (tile_m, tile_k, tile_n),
            stripe_m_tiles.min(STRIPE_M_TILES),
        )?;
    }
    kb.finish()
}

/// How many M tiles of the stationary operand (`rows` x `k`, `dtype`) one stripe holds; zero
/// when even one does not fit and the kernel falls back to streaming both operands.
fn stripe_tiles(target: &TargetSpec, rows: usize, k: usize, dtype: DType) -> usize {
    let tile_width = rows.min(target.matmul_max_m as usize).max(1);
    let k_tiles = k.div_ceil(target.matmul_max_k as usize).max(1);
    STRIPE_BYTES / (k_tiles * tile_width * dtype.size_bytes())
}

/// Whether the matmul kernel keeps a stationary operand of `rows` x `k` (`dtype`) resident
/// (the main schedule) rather than streaming both operands tile by tile (the fallback for a
/// very long K). `rows` is M, or N with the roles swapped.
pub fn matmul_resident(target: &TargetSpec, rows: usize, k: usize, dtype: DType) -> bool {
    stripe_tiles(target, rows, k, dtype) > 0
}

/// Whether a stationary operand of `rows` x `k` (`dtype`) is loaded in full stripes: as many
/// 128-row tiles per stripe as the PSUM banks allow, or all of them. Narrower stripes mean
/// more, smaller DMAs.
pub fn matmul_full_stripes(target: &TargetSpec, rows: usize, k: usize, dtype: DType) -> bool {
    let tiles = rows.div_ceil(target.matmul_max_m as usize).max(1);
    stripe_tiles(target, rows, k, dtype) >= tiles.min(STRIPE_M_TILES)
}

/// Per-partition SBUF bytes one stripe of `A^T` may take; two stripes are live at once (the
/// current one and the prefetched next one), leaving the rest of SBUF for streamed B tiles and
/// result tiles.
const STRIPE_BYTES: usize = 64 * 1024;

/// At most this many 128-row M tiles share one stripe: one PSUM bank each fills the eight
/// banks. B is re-read once per stripe, so the widest stripe that fits (in SBUF and PSUM) reads
/// B the fewest times; with f32 inputs in HBM (auto-cast) that traffic is what paces the
/// kernel.
const STRIPE_M_TILES: usize = 8;

/// PSUM banks the accumulators of one output block may take (all of them: the evacuation of a
/// block overlaps the next block's first matmuls bank by bank, since the allocator hands the
/// banks out in the order they were freed).
const PSUM_BANKS: usize = 8;

/// At most this many `tile_n` blocks share one B tile. Narrow stripes (small M or long K) load
/// wider B tiles instead, so each load still feeds several matmuls.
const MAX_N_SUBTILES: usize = 4;

/// `A^T` chunks move this many 128-row K tiles per DMA, so each transfer is large (128 KiB of
/// bf16) and amortises its fixed start cost.
const A_CHUNK_K_TILES: usize = 4;

/// How many K steps of the next output block are issued before the previous block's stores.
/// Stores wait for their evacuation, which waits for the last matmul; putting them behind the
/// next block's first loads keeps those loads from queueing behind a blocked store.
const STORE_DELAY_K_STEPS: usize = 16;

/// How many K steps into a stripe the previous stripe's buffers are freed and the next
/// stripe's allocated (see `resident_stripes`).
const RETIRE_K_STEPS: usize = 4;

struct Operands<'x> {
    a: &'x Tensor,
    b: &'x Tensor,
    c: &'x Tensor,
    bias: Option<&'x Tensor>,
    residual: Option<&'x Tensor>,
    /// The schedule's shape: `spec` itself, or with the roles swapped the spec of `C^T`.
    spec: &'x MatmulSpec,
    /// `c` (and `residual`) hold the transpose of the blocks computed: the roles are swapped.
    trans_c: bool,
}

/// The epilogue's operand tiles for one block of columns: the bias broadcast to every
/// partition (or, with the roles swapped, one bias column per M tile), and the residual rows
/// of each M tile.
struct EpilogueTiles {
    bias: Option<Tile>,
    bias_cols: Vec<Option<Tile>>,
    residuals: Vec<Option<Tile>>,
}

impl Operands<'_> {
    /// Loads the epilogue operands for M tiles `mbs` and columns `nw`.
    fn epilogue_tiles(
        &self,
        kb: &mut KernelBuilder<'_>,
        mbs: &[Range<usize>],
        nw: &Range<usize>,
    ) -> Result<EpilogueTiles, KernelError> {
        let rows = mbs.iter().map(|m| m.len()).max().unwrap_or(1) as u32;
        let mut bias_cols = Vec::with_capacity(mbs.len());
        for mb in mbs {
            bias_cols.push(match self.bias {
                Some(b) if self.trans_c => {
                    let t = kb.sbuf("bias", DType::F32, parts(mb), &[1])?;
                    kb.dma_copy(&t, b.block_t(0..1, mb.clone()))?;
                    Some(t)
                }
                _ => None,
            });
        }
        let bias = match self.bias {
            Some(_) if self.trans_c => None,
            Some(b) => {
                let t = kb.sbuf("bias", DType::F32, rows, &[nw.len()])?;
                kb.dma_copy(&t, b.bcast_row(rows, 0, nw.clone()))?;
                Some(t)
            }
            None => None,
        };
        let mut residuals = Vec::with_capacity(mbs.len());
        for mb in mbs {
            residuals.push(match self.residual {
                Some(r) => {
                    let t = kb.sbuf("residual", self.spec.out_dtype, parts(mb), &[nw.len()])?;
                    kb.dma_copy(&t, self.c_block(r, mb, nw))?;
                    Some(t)
                }
                None => None,
            });
        }
        Ok(EpilogueTiles {
            bias,
            bias_cols,
            residuals,
        })
    }

    /// Where result block (`rows`, `cols`) of the schedule lives in `t` (`c` or `residual`).
    fn c_block(&self, t: &Tensor, rows: &Range<usize>, cols: &Range<usize>) -> HbmView {
        if self.trans_c {
            t.block_t(cols.clone(), rows.clone())
        } else {
            t.block(rows.clone(), cols.clone())
        }
    }

    /// Moves one accumulator (`rows` x the columns `cols` of the block's tiles) out of PSUM
    /// into `out`, applying the epilogue: a plain copy on `engine`, or the epilogue's steps
    /// (scale and activation on ACT, bias and residual adds on DVE) through fp32 tiles.
    #[allow(clippy::too_many_arguments)] // the block's place: accumulator, output, rows, columns, M tile, engine
    fn evacuate(
        &self,
        kb: &mut KernelBuilder<'_>,
        acc: &Tile,
        out: &Tile,
        rows: u32,
        cols: Range<usize>,
        tiles: &EpilogueTiles,
        j: usize,
        engine: Engine,
    ) -> Result<(), KernelError> {
        let e = self.spec.epilogue;
        let dst_view = out.cols(0..rows, cols.clone());
        if e.is_plain() {
            return kb.tensor_copy_on(engine, dst_view, acc);
        }
        // (step, scale folded into an activation)
        enum Step {
            Scale,
            Bias,
            Act(ActFunc, f64),
            Residual,
        }
        let mut steps = Vec::new();
        let scale_first = e.alpha != 1.0 && (e.bias || e.act.is_none());
        if scale_first {
            steps.push(Step::Scale);
        }
        if e.bias {
            steps.push(Step::Bias);
        }
        if let Some(f) = e.act {
            steps.push(Step::Act(f, if scale_first { 1.0 } else { e.alpha }));
        }
        if e.residual {
            steps.push(Step::Residual);
        }
        let width = cols.len();
        let mut current: Option<Tile> = None;
        for (i, step) in steps.iter().enumerate() {
            let last = i + 1 == steps.len();
            let next = if last {
                None
            } else {
                Some(kb.sbuf("epilogue", DType::F32, rows, &[width])?)
            };
            let dst = match &next {
                Some(t) => t.cols(0..rows, 0..width),
                None => dst_view.clone(),
            };
            let src = match &current {
                Some(t) => t.cols(0..rows, 0..width),
                None => acc.cols(0..rows, 0..width),
            };
            match *step {
                Step::Scale => kb.activation(dst, src, ActFunc::Identity, e.alpha, 0.0, None)?,
                Step::Bias => match &tiles.bias_cols[j] {
                    Some(col) => kb.tensor_scalar_on(
                        Engine::Dve,
                        dst,
                        src,
                        crate::Step::new(AluOp::Add, col),
                        None,
                    )?,
                    None => {
                        let b = tiles.bias.as_ref().expect("bias tile loaded");
                        kb.tensor_tensor(dst, src, AluOp::Add, b.cols(0..rows, cols.clone()))?
                    }
                },
                Step::Act(f, scale) => kb.activation(dst, src, f, scale, 0.0, None)?,
                Step::Residual => {
                    let r = tiles.residuals[j].as_ref().expect("residual tile loaded");
                    kb.tensor_tensor(dst, src, AluOp::Add, r.cols(0..rows, cols.clone()))?
                }
            }
            if let Some(t) = current.take() {
                kb.free(t)?;
            }
            current = next;
        }
        Ok(())
    }

    /// Frees a block's epilogue tiles.
    fn free_epilogue(kb: &mut KernelBuilder<'_>, tiles: EpilogueTiles) -> Result<(), KernelError> {
        if let Some(t) = tiles.bias {
            kb.free(t)?;
        }
        for t in tiles.bias_cols.into_iter().flatten() {
            kb.free(t)?;
        }
        for t in tiles.residuals.into_iter().flatten() {
            kb.free(t)?;
        }
        Ok(())
    }

    /// B tile source: rows `kr` (K) and columns `nb` of B.
    fn b_block(&self, kr: &Range<usize>, nb: &Range<usize>) -> HbmView {
        if self.spec.trans_b {
            self.b.block_t(nb.clone(), kr.clone())
        } else {
            self.b.block(kr.clone(), nb.clone())
        }
    }

    /// `A^T` source for K rows `kr` and M columns `mb`.
    fn a_t_block(&self, kr: &Range<usize>, mb: &Range<usize>) -> HbmView {
        if self.spec.trans_a {
            self.a.block(kr.clone(), mb.clone())
        } else {
            self.a.block_t(mb.clone(), kr.clone())
        }
    }

    /// `A^T` source for `count` whole K tiles of `tile_k` rows from `k0`, M columns `mb`, as
    /// `[tile_k partitions, count, mb.len()]`.
    fn a_t_chunk(&self, k0: usize, count: usize, tile_k: usize, mb: &Range<usize>) -> HbmView {
        let MatmulSpec { m, k, .. } = *self.spec;
        let (tk, cnt, ml) = (tile_k as u32, count as u32, mb.len() as u32);
        if self.spec.trans_a {
            // a is [k, m]: K rows walk partitions, M is contiguous.
            let offset = (k0 * m + mb.start) as u64;
            let dims = [(m as i64, tk), ((tile_k * m) as i64, cnt), (1, ml)];
            self.a.ap(offset, &dims)
        } else {
            // a is [m, k]: K is contiguous in HBM, so each element is its own run.
            let offset = (mb.start * k + k0) as u64;
            let dims = [(1, tk), (tile_k as i64, cnt), (k as i64, ml)];
            self.a.ap(offset, &dims)
        }
    }
}

/// One stripe of `A^T`: for each of its M tiles, a buffer `[tile_k, K tiles, M tile]`.
struct Stripe {
    tiles: Vec<(Range<usize>, Tile)>,
}

/// The main schedule. `A^T` is loaded once, a stripe of up to `group` M tiles at a time, and
/// stays in SBUF while every column of B streams past it: for each group of 512-column N
/// blocks and each K tile, one B tile is loaded and feeds one full-width matmul per (M tile,
/// N block) pair, eight in all, into as many PSUM banks. So B is read `M / (128 group)` times and A once,
/// every matmul has N = 512, and each B load is reused by several matmuls. Loads of the next
/// stripe are spread over the current stripe's iterations, so the tensor engine never waits for
/// a whole stripe; every B tile is a fresh buffer, freed after use, so the allocator rotates
/// them through SBUF and loads run ahead of the matmuls.
fn resident_stripes(
    kb: &mut KernelBuilder<'_>,
    ops: &Operands<'_>,
    (tile_m, tile_k, tile_n): (usize, usize, usize),
    group: usize,
) -> Result<(), KernelError> {
    let MatmulSpec {
        m,
        k,
        n,
        compute_dtype,
        out_dtype,
        ..
    } = *ops.spec;
    let k_tiles: Vec<_> = blocks(k, tile_k).collect();
    let last = k_tiles.len() - 1;
    let kp = k.min(tile_k) as u32;
    let m_tiles: Vec<_> = blocks(m, tile_m).collect();
    let stripes: Vec<&[Range<usize>]> = m_tiles.chunks(group.clamp(1, STRIPE_M_TILES)).collect();
    let group = group.clamp(1, STRIPE_M_TILES).min(m_tiles.len());
    let n_subtiles = (PSUM_BANKS / group).clamp(1, MAX_N_SUBTILES);
    let n_wide: Vec<_> = blocks(n, tile_n * n_subtiles).collect();

    // Allocates a stripe's buffers and lists its loads (issued later, interleaved).
    let new_stripe = |kb: &mut KernelBuilder<'_>, mbs: &[Range<usize>]| {
        let mut tiles = Vec::with_capacity(mbs.len());
        for mb in mbs {
            let t = kb.sbuf("a_t", compute_dtype, kp, &[k_tiles.len(), mb.len()])?;
            tiles.push((mb.clone(), t));
        }
        Ok::<_, KernelError>(Stripe { tiles })
    };
    // The stripe's loads in the order they are needed: K chunk by K chunk.
    let stripe_loads = |stripe: &Stripe| {
        let mut loads = Vec::new();
        let mut kt = 0;
        while kt < k_tiles.len() {
            let whole = k_tiles[kt..]
                .iter()
                .take(A_CHUNK_K_TILES)
                .take_while(|kr| kr.len() == tile_k)
                .count();
            let count = whole.max(1);
            for (j, _) in stripe.tiles.iter().enumerate() {
                loads.push((j, kt, count, whole > 0));
            }
            kt += count;
        }
        loads
    };
    let issue = |kb: &mut KernelBuilder<'_>, stripe: &Stripe, load: (usize, usize, usize, bool)| {
        let (j, kt, count, whole) = load;
        let (mb, t) = &stripe.tiles[j];
        let kr = &k_tiles[kt];
        let dst = t.view(0..kr.len() as u32, std::slice::from_ref(&(kt..kt + count)));
        if whole {
            kb.dma_copy(dst, ops.a_t_chunk(kr.start, count, tile_k, mb))
        } else {
            kb.dma_copy(dst, ops.a_t_block(kr, mb))
        }
    };

    let mut current = new_stripe(kb, stripes[0])?;
    // The first stripe's loads are issued just ahead of the K steps that need them, so the
    // first matmuls wait for one chunk rather than the whole stripe.
    let mut first_loads = stripe_loads(&current).into_iter().peekable();
    // The stripe before `current`: freed a few steps into `current`, once its last matmuls are
    // long issued, so that the first B tiles of a stripe do not land in memory the previous
    // stripe's matmuls are still reading.
    let mut retired: Option<Stripe> = None;
    // Result tiles waiting to be stored, with their destinations.
    let mut pending: Vec<(Tile, Range<usize>, Range<usize>)> = Vec::new();
    let steps = n_wide.len() * k_tiles.len();
    let retire_step = RETIRE_K_STEPS.min(steps - 1);
    for s in 0..stripes.len() {
        let mut next: Option<Stripe> = None;
        let mut next_loads = Vec::new().into_iter();
        let mut per_step = 0;
        let mut step = 0;
        for nw in &n_wide {
            let n_sub: Vec<_> = blocks(nw.len(), tile_n)
                .map(|r| nw.start + r.start..nw.start + r.end)
                .collect();
            let mbs: Vec<Range<usize>> = current.tiles.iter().map(|(mb, _)| mb.clone()).collect();
            let epilogue = ops.epilogue_tiles(kb, &mbs, nw)?;
            let mut accs = Vec::with_capacity(current.tiles.len() * n_sub.len());
            for (mb, _) in &current.tiles {
                for nb in &n_sub {
                    accs.push(kb.psum("acc", DType::F32, mb.len() as u32, &[nb.len()])?);
                }
            }
            for (i, kr) in k_tiles.iter().enumerate() {
                while let Some(&load) = first_loads.peek() {
                    if load.1 > i + A_CHUNK_K_TILES {
                        break;
                    }
                    issue(kb, &current, load)?;
                    first_loads.next();
                }
                let b_tile = kb.sbuf("b", compute_dtype, kr.len() as u32, &[nw.len()])?;
                kb.dma_copy(&b_tile, ops.b_block(kr, nw))?;
                for (j, (_, a_t)) in current.tiles.iter().enumerate() {
                    let stationary =
                        a_t.view(0..kr.len() as u32, std::slice::from_ref(&(i..i + 1)));
                    for (q, nb) in n_sub.iter().enumerate() {
                        let cols = nb.start - nw.start..nb.end - nw.start;
                        let moving = b_tile.cols(0..kr.len() as u32, cols);
                        let acc = &accs[j * n_sub.len() + q];
                        kb.nc_matmul(acc, &stationary, moving, i == 0, i == last)?;
                    }
                }
                kb.free(b_tile)?;
                if step == retire_step {
                    if let Some(old) = retired.take() {
                        for (_, t) in old.tiles {
                            kb.free(t)?;
                        }
                    }
                    if let Some(mbs) = stripes.get(s + 1) {
                        let stripe = new_stripe(kb, mbs)?;
                        let loads = stripe_loads(&stripe);
                        per_step = loads.len().div_ceil(steps - step);
                        next_loads = loads.into_iter();
                        next = Some(stripe);
                    }
                }
                if let Some(next) = &next {
                    for load in next_loads.by_ref().take(per_step) {
                        issue(kb, next, load)?;
                    }
                }
                if i + 1 == STORE_DELAY_K_STEPS.min(k_tiles.len()) {
                    flush(kb, ops, &mut pending)?;
                }
                step += 1;
            }
            // Evacuate now (PSUM is full), alternating ACT and DVE so the two engines share the
            // work; store later.
            let mut accs = accs.into_iter();
            for (j, (mb, _)) in current.tiles.iter().enumerate() {
                let out = kb.sbuf("c", out_dtype, mb.len() as u32, &[nw.len()])?;
                for (q, nb) in n_sub.iter().enumerate() {
                    let Some(acc) = accs.next() else { break };
                    let engine = if (j + q) % 2 == 0 {
                        Engine::Act
                    } else {
                        Engine::Dve
                    };
                    let cols = nb.start - nw.start..nb.end - nw.start;
                    ops.evacuate(kb, &acc, &out, mb.len() as u32, cols, &epilogue, j, engine)?;
                    kb.free(acc)?;
                }
                pending.push((out, mb.clone(), nw.clone()));
            }
            Operands::free_epilogue(kb, epilogue)?;
        }
        if let Some(next) = &next {
            for load in next_loads {
                issue(kb, next, load)?;
            }
        }
        if let Some(old) = retired.take() {
            for (_, t) in old.tiles {
                kb.free(t)?;
            }
        }
        match next {
            Some(next) => retired = Some(std::mem::replace(&mut current, next)),
            None => {
                retired = Some(std::mem::replace(
                    &mut current,
                    Stripe { tiles: Vec::new() },
                ))
            }
        }
    }
    if let Some(old) = retired.take() {
        for (_, t) in old.tiles {
            kb.free(t)?;
        }
    }
    flush(kb, ops, &mut pending)
}

/// Stores and frees the pending result tiles.
fn flush(
    kb: &mut KernelBuilder<'_>,
    ops: &Operands<'_>,
    pending: &mut Vec<(Tile, Range<usize>, Range<usize>)>,
) -> Result<(), KernelError> {
    for (out, mb, nb) in pending.drain(..) {
        kb.dma_copy(ops.c_block(ops.c, &mb, &nb), &out)?;
        kb.free(out)?;
    }
    Ok(())
}

/// The fallback for a K so long that even one M tile's `A^T` does not fit a stripe: both
/// operands stream, one `[K tile, M tile]` and one `[K tile, N tile]` per matmul, and each
/// `[M, N]` block accumulates over all K tiles in one PSUM buffer.
fn streaming(
    kb: &mut KernelBuilder<'_>,
    ops: &Operands<'_>,
    (tile_m, tile_k, tile_n): (usize, usize, usize),
) -> Result<(), KernelError> {
    let MatmulSpec {
        m,
        k,
        n,
        compute_dtype,
        out_dtype,
        ..
    } = *ops.spec;
    let k_tiles: Vec<_> = blocks(k, tile_k).collect();
    let last = k_tiles.len().saturating_sub(1);
    for mb in blocks(m, tile_m) {
        for nb in blocks(n, tile_n) {
            let acc = kb.psum("acc", DType::F32, parts(&mb), &[nb.len()])?;
            for (i, kr) in k_tiles.iter().enumerate() {
                let a_t = kb.sbuf("a_t", compute_dtype, parts(kr), &[mb.len()])?;
                kb.dma_copy(&a_t, ops.a_t_block(kr, &mb))?;
                let b_tile = kb.sbuf("b", compute_dtype, parts(kr), &[nb.len()])?;
                kb.dma_copy(&b_tile, ops.b_block(kr, &nb))?;
                kb.nc_matmul(&acc, &a_t, &b_tile, i == 0, i == last)?;
                kb.free(a_t)?;
                kb.free(b_tile)?;
            }
            let epilogue = ops.epilogue_tiles(kb, std::slice::from_ref(&mb), &nb)?;
            let out = kb.sbuf("c", out_dtype, parts(&mb), &[nb.len()])?;
            ops.evacuate(
                kb,
                &acc,
                &out,
                parts(&mb),
                0..nb.len(),
                &epilogue,
                0,
                Engine::Dve,
            )?;
            Operands::free_epilogue(kb, epilogue)?;
            kb.free(acc)?;
            kb.dma_copy(ops.c_block(ops.c, &mb, &nb), &out)?;
            kb.free(out)?;
        }
    }
    Ok(())
}
