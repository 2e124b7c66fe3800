//! `ewchain`: a short element-wise program over one to three broadcast inputs, for operators the
//! engines have no single function for (Floor as `x - (x mod 1)`, predicates with bool
//! results, `Where` as `select`, ...).
//!
//! The layout and broadcasting are the binary kernel's: the iteration space is the broadcast
//! output shape, every input gets stride 0 along its broadcast axes in its DMA view, and each
//! block of the output is computed by running every step on SBUF tiles before one DMA out.

use super::layout::{broadcast_shape, broadcast_strides, plan};
use super::{FREE_CHUNK, blocks, check_shape};
use crate::{KernelBuilder, KernelError, Tile};
use tessera_ir::{ActFunc, AluOp, DType, TargetSpec, TileProgram};

/// An operand of a step: input `k` or the result of step `k`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    /// The k-th input of the chain.
    In(usize),
    /// The result of the k-th step.
    Step(usize),
}

/// One step; its result has the step's dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EwStep {
    /// `a OP b` on the vector engine (`tensor_tensor`).
    Alu(Operand, AluOp, Operand),
    /// `a OP scalar` on the vector engine (`tensor_scalar`).
    AluScalar(Operand, AluOp, f64),
    /// `func(a)` on the activation engine.
    Act(Operand, ActFunc),
    /// `pred != 0 ? on_true : on_false` (`select`).
    Select(Operand, Operand, Operand),
}

/// The program: inputs (shape and dtype), steps with their result dtypes; the last step's
/// result is the output, converted to `out_dtype`.
#[derive(Clone, Debug, PartialEq)]
pub struct EwChain {
    /// Input shapes and dtypes, bound as `x0`, `x1`, `x2`.
    pub inputs: Vec<(Vec<usize>, DType)>,
    /// Steps and the dtype each result is held in.
    pub steps: Vec<(EwStep, DType)>,
    /// The output's dtype (bound as `y`, of the broadcast shape).
    pub out_dtype: DType,
}

/// Builds the kernel for `chain`.
pub fn ewchain(target: &TargetSpec, chain: &EwChain) -> Result<TileProgram, KernelError> {
    const KERNEL: &str = "ewchain";
    if chain.inputs.is_empty() || chain.steps.is_empty() {
        return Err(KernelError::Unsupported {
            kernel: KERNEL,
            detail: "a chain needs at least one input and one step".into(),
        });
    }
    let mut out_shape: Vec<usize> = Vec::new();
    for (shape, _) in &chain.inputs {
        check_shape(KERNEL, "input", shape)?;
        out_shape = broadcast_shape(&out_shape, shape).ok_or_else(|| KernelError::Unsupported {
            kernel: KERNEL,
            detail: format!("shapes {out_shape:?} and {shape:?} do not broadcast"),
        })?;
    }
    let mut strides: Vec<Vec<i64>> = chain
        .inputs
        .iter()
        .map(|(s, _)| broadcast_strides(s, &out_shape))
        .collect();
    strides.push(crate::view::row_major(&out_shape));
    let p_max = target.partitions as usize;
    let pieces = plan(&out_shape, &strides, p_max, FREE_CHUNK);
    let rows = pieces.iter().map(|p| p.rows.min(p_max)).max().unwrap_or(1) as u32;
    let cols = pieces
        .iter()
        .map(|p| p.cols.min(FREE_CHUNK))
        .max()
        .unwrap_or(1);

    let mut kb = KernelBuilder::new("ewchain", target);
    let mut hbm_in = Vec::new();
    let mut tiles_in = Vec::new();
    for (k, (shape, dtype)) in chain.inputs.iter().enumerate() {
        hbm_in.push(kb.input(&format!("x{k}"), *dtype, shape)?);
        tiles_in.push(kb.sbuf(&format!("x{k}"), *dtype, rows, &[cols])?);
    }
    let y = kb.output("y", chain.out_dtype, &out_shape)?;
    // Step results share tiles: a step's tile is reused once its last reader has run (never by
    // that reader itself), so a long fused chain needs about as many tiles as values alive at
    // once, not one per step.
    let last = chain.steps.len() - 1;
    let mut last_use: Vec<usize> = (0..chain.steps.len()).collect();
    for (j, (step, _)) in chain.steps.iter().enumerate() {
        for o in operands(step) {
            if let Operand::Step(k) = o
                && k < j
            {
                last_use[k] = j;
            }
        }
    }
    last_use[last] = usize::MAX;
    let mut slot_of = Vec::with_capacity(chain.steps.len());
    let mut slots: Vec<(DType, Tile)> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    for (k, (step, dtype)) in chain.steps.iter().enumerate() {
        let slot = match free.iter().position(|&s| slots[s].0 == *dtype) {
            Some(i) => free.remove(i),
            None => {
                let t = kb.sbuf(&format!("s{}", slots.len()), *dtype, rows, &[cols])?;
                slots.push((*dtype, t));
                slots.len() - 1
            }
        };
        slot_of.push(slot);
        let mut done: Vec<usize> = operands(step)
            .into_iter()
            .filter_map(|o| match o {
                Operand::Step(j) if j < k && last_use[j] == k => Some(slot_of[j]),
                _ => None,
            })
            .collect();
        done.sort_unstable();
        done.dedup();
        free.extend(done);
    }
    let tiles_step: Vec<&Tile> = slot_of.iter().map(|&s| &slots[s].1).collect();
    let convert = chain.steps[last].1 != chain.out_dtype;
    let tile_out = if convert {
        Some(kb.sbuf("y", chain.out_dtype, rows, &[cols])?)
    } else {
        None
    };
    let n_in = chain.inputs.len();
    for piece in &pieces {
        for rb in blocks(piece.rows, p_max) {
            for cb in blocks(piece.cols, FREE_CHUNK) {
                let view = |t: &Tile| t.cols(0..rb.len() as u32, 0..cb.len());
                let pick = |o: Operand| -> Result<&Tile, KernelError> {
                    match o {
                        Operand::In(k) => tiles_in.get(k),
                        Operand::Step(k) => tiles_step.get(k).copied(),
                    }
                    .ok_or_else(|| KernelError::Unsupported {
                        kernel: KERNEL,
                        detail: format!("operand {o:?} does not exist"),
                    })
                };
                for (k, hbm) in hbm_in.iter().enumerate() {
                    let (off, dims) = piece.ap(k, &rb, &cb);
                    kb.dma_copy(view(&tiles_in[k]), hbm.ap(off, &dims))?;
                }
                for (k, (step, _)) in chain.steps.iter().enumerate() {
                    let dst = view(tiles_step[k]);
                    match *step {
                        EwStep::Alu(a, op, b) => {
                            kb.tensor_tensor(dst, view(pick(a)?), op, view(pick(b)?))?
                        }
                        EwStep::AluScalar(a, op, s) => {
                            kb.tensor_scalar(dst, view(pick(a)?), op, s)?
                        }
                        EwStep::Act(a, func) => kb.act(dst, view(pick(a)?), func)?,
                        EwStep::Select(p, t, f) => {
                            kb.select(dst, view(pick(p)?), view(pick(t)?), view(pick(f)?))?
                        }
                    }
                }
                let result = match &tile_out {
                    Some(t) => {
                        kb.tensor_copy(view(t), view(tiles_step[last]))?;
                        t
                    }
                    None => tiles_step[last],
                };
                let (off, dims) = piece.ap(n_in, &rb, &cb);
                kb.dma_copy(y.ap(off, &dims), view(result))?;
            }
        }
    }
    kb.finish()
}

/// The operands a step reads.
fn operands(step: &EwStep) -> Vec<Operand> {
    match *step {
        EwStep::Alu(a, _, b) => vec![a, b],
        EwStep::AluScalar(a, _, _) | EwStep::Act(a, _) => vec![a],
        EwStep::Select(p, t, f) => vec![p, t, f],
    }
}
