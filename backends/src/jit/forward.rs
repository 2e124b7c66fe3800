//! Forwarding weight loads: a matmul reads the input tensor a DMA copied into SBUF, and the copy
//! is skipped when nothing else reads what it wrote.
//!
//! Compiled models load every weight tile from its input tensor into SBUF each run, and the
//! tensor engine reads it from there. On the host the copy is pure data movement (ResNet-50
//! moves 104 MB of weights a run, at memory speed), and the sgemm can read the weights where the
//! input tensor holds them just as well. Inputs never change during a run (planning refuses an
//! instruction that writes one), so reading the tensor at the matmul gives the bytes the copy
//! would have left in SBUF.
//!
//! Planning walks the program in the jit's run order and keeps, for every SBUF byte, which
//! instruction wrote it last. A load qualifies when it copies, partition by partition, one dense
//! run of an input tensor's bytes to one dense run of SBUF bytes, the partitions a fixed pitch
//! apart in the tensor: SBUF byte `b` of partition `p` then holds tensor byte `k + p * pitch +
//! b`. A matmul operand (or transpose source) whose bytes were all last written by qualifying
//! loads with one such map reads the tensor instead, with the pitch as its row stride. Any other
//! read of bytes a load wrote last (by any instruction, or by an operand that cannot be
//! forwarded) marks the load needed; loads never marked are skipped. A write that cannot be
//! followed byte by byte (too many runs) marks the loads under it needed, so a skipped load's
//! bytes are never read by anything that runs.

use super::JitError;
use super::clear::runs;
use super::matmul::Panel;
use super::memory::Loc;
use super::plan::{Raw, Resolver};
use super::{Step, planned};
use std::collections::{BTreeMap, HashMap};
use tessera_ir::program::Access;
use tessera_ir::{DmaOperand, MachineProgram, Op, TensorKind};

/// The tensor bytes a qualifying load put in SBUF: byte `b` of partition `p` holds byte
/// `k + p * pitch + b` of `tensor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Map {
    tensor: Loc,
    k: i64,
    pitch: i64,
}

/// The last writer of every byte of one SBUF partition: disjoint intervals `start -> (end,
/// writer)`, the writer an index into the loads or [`OTHER`].
pub(crate) type Writers = BTreeMap<u64, (u64, u32)>;

/// Any writer that is not a qualifying load.
pub(crate) const OTHER: u32 = u32::MAX;

pub(crate) fn assign(m: &mut Writers, lo: u64, hi: u64, w: u32) {
    if lo >= hi {
        return;
    }
    if let Some((&s, &(e, v))) = m.range(..lo).next_back()
        && e > lo
    {
        m.insert(s, (lo, v));
        if e > hi {
            m.insert(hi, (e, v));
        }
    }
    let inside: Vec<u64> = m.range(lo..hi).map(|(&s, _)| s).collect();
    for s in inside {
        if let Some((e, v)) = m.remove(&s)
            && e > hi
        {
            m.insert(hi, (e, v));
        }
    }
    m.insert(lo, (hi, w));
}

/// The writers of bytes `lo..hi`, and whether every byte has one.
pub(crate) fn writers(m: &Writers, lo: u64, hi: u64) -> (Vec<u32>, bool) {
    let start = m
        .range(..=lo)
        .next_back()
        .filter(|(_, (e, _))| *e > lo)
        .map_or(lo, |(&s, _)| s);
    let (mut at, mut whole, mut out) = (lo, true, Vec::new());
    for (&s, &(e, v)) in m.range(start..hi) {
        whole &= s <= at;
        out.push(v);
        at = at.max(e);
    }
    (out, whole && at >= hi)
}

/// `dims` without size-1 dimensions, each merged into the one outside it when the two nest
/// without a gap.
fn merged(dims: &[(u64, i64)]) -> Vec<(u64, i64)> {
    let mut out: Vec<(u64, i64)> = Vec::new();
    for &(size, stride) in dims.iter().filter(|d| d.0 != 1) {
        match out.last_mut() {
            Some(last) if last.1 == stride * size as i64 => *last = (last.0 * size, stride),
            _ => out.push((size, stride)),
        }
    }
    out
}

/// The map of a load from `src` (an HBM view) to `dst` (an SBUF tile) when it qualifies, with
/// the bytes it writes in each partition.
fn load_map(program: &MachineProgram, dst: &Raw, src: &Raw) -> Option<(Map, (u64, u64))> {
    let Loc::Tensor(t) = src.loc else {
        return None;
    };
    let input = program.tensors.get(t)?.kind == TensorKind::Input;
    if !input || dst.loc != Loc::Sbuf || dst.dtype != src.dtype || dst.rows == 0 {
        return None;
    }
    let w = dst.dtype.size_bytes() as i64;
    let (rows, n) = (dst.rows, dst.free);
    // Each partition one dense ascending run of `n` elements.
    let inner = if n > 1 { vec![(n, w)] } else { vec![] };
    if merged(&dst.dims[1..]) != inner {
        return None;
    }
    let s = merged(&src.dims);
    let pitch = if rows == 1 && s == inner {
        0
    } else if n == 1 && s.len() == 1 && s[0].0 == rows {
        s[0].1
    } else if s.len() == 1 && s[0] == (rows * n, w) {
        n as i64 * w
    } else if s.len() == 2 && s[0].0 == rows && s[1] == (n, w) {
        s[0].1
    } else {
        return None;
    };
    if pitch < 0 {
        return None;
    }
    let b0 = dst.extent.0;
    let k = src.base as i64 - dst.parts.0 as i64 * pitch - b0 as i64;
    Some((
        Map {
            tensor: src.loc,
            k,
            pitch,
        },
        (b0, b0 + n * w as u64),
    ))
}

/// What forwarding found: operands to read from tensors, loads to skip.
struct Walk<'a> {
    program: &'a MachineProgram,
    sbuf_pb: u64,
    parts: HashMap<u64, Writers>,
    /// Qualifying loads: their map, whether a run needs them, and where they are (queue,
    /// index).
    loads: Vec<(Map, bool, (usize, usize))>,
}

impl Walk<'_> {
    /// Marks the loads that last wrote any byte of `r`'s extent as needed.
    fn read(&mut self, r: &Raw) {
        if r.loc != Loc::Sbuf {
            return;
        }
        for p in r.parts.0..r.parts.1 {
            if let Some(m) = self.parts.get(&p) {
                for w in writers(m, r.extent.0, r.extent.1).0 {
                    if let Some(load) = self.loads.get_mut(w as usize) {
                        load.1 = true;
                    }
                }
            }
        }
    }

    /// The one map every byte of `r`'s extent was last written under, if there is one.
    fn forwardable(&self, r: &Raw) -> Option<Map> {
        let mut map = None;
        for p in r.parts.0..r.parts.1 {
            let (ws, whole) = writers(self.parts.get(&p)?, r.extent.0, r.extent.1);
            if !whole {
                return None;
            }
            for w in ws {
                let m = self.loads.get(w as usize)?.0;
                if *map.get_or_insert(m) != m {
                    return None;
                }
            }
        }
        map
    }

    /// `panel` (of the SBUF view `r`) read from the tensor instead, if it can be.
    fn forward(&mut self, r: &Raw, panel: &Panel) -> Option<Panel> {
        if r.loc != Loc::Sbuf {
            return None;
        }
        let map = self.forwardable(r)?;
        let Loc::Tensor(t) = map.tensor else {
            return None;
        };
        let tensor = self.program.tensors.get(t)?;
        let len = tensor
            .elems()
            .saturating_mul(tensor.dtype.size_bytes() as u64);
        let first = r.parts.0 as i64;
        let row0 = map.k + first * map.pitch + r.row0 as i64 - first * self.sbuf_pb as i64;
        let moved = panel.relocated(map.tensor, u64::try_from(row0).ok()?, map.pitch as u64);
        (moved.end() as u64 <= len).then_some(moved)
    }

    /// Records the tile write `w`, by the qualifying load at `pos` when `load` is given.
    fn write(&mut self, w: &Raw, load: Option<(Map, (u64, u64))>, pos: (usize, usize)) {
        if w.loc != Loc::Sbuf || w.rows * w.free == 0 {
            return;
        }
        if let Some((map, (lo, hi))) = load {
            let id = self.loads.len() as u32;
            self.loads.push((map, false, pos));
            for p in w.parts.0..w.parts.1 {
                assign(self.parts.entry(p).or_default(), lo, hi, id);
            }
            return;
        }
        match runs(w, true) {
            Some(spans) => {
                for p in w.parts.0..w.parts.1 {
                    let m = self.parts.entry(p).or_default();
                    for &(lo, hi) in &spans {
                        assign(m, lo, hi, OTHER);
                    }
                }
            }
            None => {
                // Not followed byte by byte: what lies under it stays needed.
                self.read(w);
                for p in w.parts.0..w.parts.1 {
                    assign(
                        self.parts.entry(p).or_default(),
                        w.extent.0,
                        w.extent.1,
                        OTHER,
                    );
                }
            }
        }
    }
}

/// Forwards loads in `steps` (planned, in run order `order`, each instruction with its
/// resolver) and returns how many loads are skipped.
pub(crate) fn forward_loads(
    program: &MachineProgram,
    sbuf_pb: u64,
    order: &[(usize, usize)],
    resolvers: &[Vec<Resolver<'_>>],
    steps: &mut [Vec<Step>],
) -> Result<u64, JitError> {
    let mut walk = Walk {
        program,
        sbuf_pb,
        parts: HashMap::new(),
        loads: Vec::new(),
    };
    for &pos in order {
        let Some((inst, res, step)) = planned(program, resolvers, steps, pos) else {
            continue;
        };
        let op = &inst.op;
        let mut writes: Vec<Raw> = Vec::new();
        for operand in op.tile_operands() {
            let raw = res.tile(operand.role, operand.tile)?;
            if operand.access == Access::Write {
                writes.push(raw);
                continue;
            }
            let moved = match (&mut *step, operand.role) {
                (Step::Matmul(p), "stationary") => {
                    walk.forward(&raw, &p.stationary).map(|x| p.stationary = x)
                }
                (Step::Matmul(p), "moving") => walk.forward(&raw, &p.moving).map(|x| p.moving = x),
                (Step::Transpose(t), "src") => walk.forward(&raw, &t.src).map(|x| t.src = x),
                _ => None,
            };
            if moved.is_none() {
                walk.read(&raw);
            }
        }
        let load = match op {
            Op::DmaCopy {
                dst: DmaOperand::Tile(d),
                src: DmaOperand::Hbm(h),
            } => load_map(program, &res.tile("dst", d)?, &res.hbm("src", h)?),
            _ => None,
        };
        for w in &writes {
            walk.write(w, load, pos);
        }
    }
    let mut skipped = 0;
    for &(_, needed, (q, i)) in &walk.loads {
        if !needed && let Some(step) = steps.get_mut(q).and_then(|s| s.get_mut(i)) {
            *step = Step::Skipped;
            skipped += 1;
        }
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_split_and_report_gaps() {
        let mut m = Writers::new();
        assign(&mut m, 0, 100, 0);
        assign(&mut m, 40, 60, OTHER);
        assert_eq!(writers(&m, 0, 100), (vec![0, OTHER, 0], true));
        assert_eq!(writers(&m, 45, 55), (vec![OTHER], true));
        assert_eq!(writers(&m, 10, 20), (vec![0], true));
        assert_eq!(writers(&m, 90, 120), (vec![0], false));
        assign(&mut m, 30, 70, 1);
        assert_eq!(writers(&m, 0, 100), (vec![0, 1, 0], true));
        assign(&mut m, 200, 210, 2);
        assert_eq!(writers(&m, 95, 205), (vec![0, 2], false));
        // Overwriting everything leaves one interval.
        assign(&mut m, 0, 300, 3);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn merged_dims_nest_without_gaps() {
        assert_eq!(merged(&[(4, 64), (16, 4)]), vec![(64, 4)]);
        assert_eq!(
            merged(&[(4, 128), (1, 8), (16, 4)]),
            vec![(4, 128), (16, 4)]
        );
        assert_eq!(merged(&[(2, 8), (2, 4), (2, 16)]), vec![(4, 4), (2, 16)]);
    }
}
