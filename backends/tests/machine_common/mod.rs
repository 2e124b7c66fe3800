//! Hand-built machine programs for the machine-level emulator tests: a tiny builder, and the
//! pipeline programs several tests share.
#![allow(dead_code)]

use std::collections::BTreeMap;
use tessera_backends::interp::{self, InterpError, MachineRunOptions};
use tessera_ir::*;

/// A machine program under construction.
pub struct M {
    pub p: MachineProgram,
}

impl M {
    pub fn new() -> Self {
        M {
            p: MachineProgram {
                name: "test".into(),
                ..Default::default()
            },
        }
    }

    fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        kind: TensorKind,
        at: Option<u64>,
    ) -> TensorId {
        self.p.tensors.push(HbmTensor {
            name: name.into(),
            dtype: DType::F32,
            shape: shape.to_vec(),
            kind,
        });
        self.p.hbm_offsets.push(at);
        TensorId(self.p.tensors.len() as u32 - 1)
    }

    /// An f32 input tensor.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> TensorId {
        self.tensor(name, shape, TensorKind::Input, None)
    }

    /// An f32 output tensor.
    pub fn output(&mut self, name: &str, shape: &[usize]) -> TensorId {
        self.tensor(name, shape, TensorKind::Output, None)
    }

    /// An f32 scratch tensor at arena byte `offset` (the arena grows to hold it).
    pub fn scratch(&mut self, name: &str, shape: &[usize], offset: u64) -> TensorId {
        let bytes = shape.iter().product::<usize>() as u64 * 4;
        self.p.scratch_bytes = self.p.scratch_bytes.max(offset + bytes);
        self.tensor(name, shape, TensorKind::Scratch, Some(offset))
    }

    /// An f32 buffer of `partitions x free` elements placed at (`partition`, `byte_offset`).
    pub fn buffer(
        &mut self,
        name: &str,
        space: Space,
        partitions: u32,
        free: usize,
        partition: u32,
        byte_offset: u64,
    ) -> BufId {
        self.p.buffers.push(Buffer {
            name: name.into(),
            space,
            dtype: DType::F32,
            partitions,
            free_shape: vec![free],
            placement: Some(Placement {
                partition,
                byte_offset,
            }),
        });
        BufId(self.p.buffers.len() as u32 - 1)
    }

    pub fn sbuf(&mut self, name: &str, partitions: u32, free: usize, byte_offset: u64) -> BufId {
        self.buffer(name, Space::Sbuf, partitions, free, 0, byte_offset)
    }

    pub fn queue(&mut self, name: &str, engine: Engine) -> QueueId {
        self.p.queues.push(Queue {
            name: name.into(),
            engine,
            insts: Vec::new(),
        });
        QueueId(self.p.queues.len() as u32 - 1)
    }

    /// Appends `op` to queue `q` with waits `(queue, count)`.
    pub fn push(&mut self, q: QueueId, op: Op, waits: &[(QueueId, u32)]) -> InstRef {
        let queue = &mut self.p.queues[q.0 as usize];
        let index = queue.insts.len() as u32;
        queue.insts.push(MachineInst {
            op,
            waits: waits
                .iter()
                .map(|&(queue, count)| Wait { queue, count })
                .collect(),
            origin: Origin {
                node: "n".into(),
                tile_index: index,
            },
        });
        InstRef { queue: q, index }
    }

    pub fn run(
        &self,
        inputs: &BTreeMap<String, HostTensor>,
        seed: u64,
    ) -> Result<BTreeMap<String, HostTensor>, InterpError> {
        let options = MachineRunOptions {
            seed,
            check_races: true,
        };
        interp::run_machine(&self.p, &TargetSpec::trn2(), inputs, &options)
    }
}

/// The whole buffer `b` as `partitions x free`.
pub fn tile(b: BufId, partitions: u32, free: u32) -> TileAccess {
    TileAccess {
        buf: b,
        start_partition: 0,
        partitions,
        offset: 0,
        dims: vec![Dim::new(1, free)],
    }
}

/// Columns `col .. col + cols` of a row-major `[rows, width]` tensor, rows on partitions.
pub fn hbm(t: TensorId, rows: u32, width: u32, col: u32, cols: u32) -> DmaOperand {
    DmaOperand::Hbm(HbmAccess {
        tensor: t,
        offset: col as u64,
        dims: vec![Dim::new(width as i64, rows), Dim::new(1, cols)],
    })
}

pub fn exp(dst: TileAccess, src: TileAccess) -> Op {
    Op::Activation {
        dst,
        src,
        func: ActFunc::Exp,
        scale: Scalar::Imm(1.0),
        bias: Scalar::Imm(0.0),
        accum: None,
    }
}

pub fn add(dst: TileAccess, lhs: TileAccess, rhs: TileAccess) -> Op {
    Op::TensorTensor {
        engine: Engine::Dve,
        op: AluOp::Add,
        dst,
        lhs,
        rhs,
    }
}

pub fn dma(dst: DmaOperand, src: DmaOperand) -> Op {
    Op::DmaCopy { dst, src }
}

pub const ROWS: u32 = 4;
pub const COLS: u32 = 8;

/// Inputs `x` (and `x2` when asked) of shape `[ROWS, width]` with distinct values.
pub fn inputs(width: u32, names: &[&str]) -> BTreeMap<String, HostTensor> {
    let n = (ROWS * width) as usize;
    names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let values: Vec<f64> = (0..n)
                .map(|i| ((i * 7 + k * 3) % 23) as f64 / 8.0 - 1.0)
                .collect();
            (
                name.to_string(),
                HostTensor::from_f64(DType::F32, &[ROWS as usize, width as usize], &values),
            )
        })
        .collect()
}

/// Which waits [`pipeline`] leaves out, to make hazards.
#[derive(Clone, Copy, Default)]
pub struct Omit {
    /// `dma1[c]` does not wait for `dve[c]` at this chunk.
    pub store_wait_at: Option<u32>,
}

/// `y = exp(x) + x`, chunk by chunk: `dma0` loads chunk `c` of `x` into a tile, `act` computes
/// `exp` into another (waiting on `dma0`), `dve` adds the two (waiting on `act`), `dma1` stores
/// (waiting on `dve`). `slots` rotating sets of buffers are reused every `slots` chunks, so
/// each reuse waits for the last reader of the slot (write-after-read through real aliasing).
/// Returns the program and the equivalent sequential tile program.
pub fn pipeline(chunks: u32, slots: u32, omit: Omit) -> (M, TileProgram) {
    let width = chunks * COLS;
    let mut m = M::new();
    let x = m.input("x", &[ROWS as usize, width as usize]);
    let y = m.output("y", &[ROWS as usize, width as usize]);
    let bytes = COLS as u64 * 4;
    let mut bufs = Vec::new();
    for s in 0..slots {
        let base = s as u64 * 3 * bytes;
        let xt = m.sbuf(&format!("x{s}"), ROWS, COLS as usize, base);
        let et = m.sbuf(&format!("e{s}"), ROWS, COLS as usize, base + bytes);
        let st = m.sbuf(&format!("s{s}"), ROWS, COLS as usize, base + 2 * bytes);
        bufs.push((xt, et, st));
    }
    let dma0 = m.queue("dma0", Engine::Dma);
    let act = m.queue("act", Engine::Act);
    let dve = m.queue("dve", Engine::Dve);
    let dma1 = m.queue("dma1", Engine::Dma);

    let mut tp = TileProgram::new("pipeline");
    tp.tensors = m.p.tensors.clone();
    tp.buffers =
        m.p.buffers
            .iter()
            .map(|b| Buffer {
                placement: None,
                ..b.clone()
            })
            .collect();
    // The tile program uses a fresh set of buffers per chunk lifetime: alloc before, free after.
    for c in 0..chunks {
        let (xt, et, st) = bufs[(c % slots) as usize];
        let (xv, ev, sv) = (
            tile(xt, ROWS, COLS),
            tile(et, ROWS, COLS),
            tile(st, ROWS, COLS),
        );
        // Reusing slot c % slots waits until chunk c - slots is done with it.
        let reuse = c.checked_sub(slots).map(|prev| prev + 1);
        let mut w0 = vec![];
        if let Some(n) = reuse {
            w0.push((dve, n)); // dve[prev] is the last reader of x and e
        }
        m.push(
            dma0,
            dma(
                DmaOperand::Tile(xv.clone()),
                hbm(x, ROWS, width, c * COLS, COLS),
            ),
            &w0,
        );
        let mut w1 = vec![(dma0, c + 1)];
        if let Some(n) = reuse {
            w1.push((dve, n));
        }
        m.push(act, exp(ev.clone(), xv.clone()), &w1);
        let mut w2 = vec![(act, c + 1)];
        if let Some(n) = reuse {
            w2.push((dma1, n)); // dma1[prev] is the last reader of s
        }
        m.push(dve, add(sv.clone(), ev.clone(), xv.clone()), &w2);
        let w3 = if omit.store_wait_at == Some(c) {
            vec![]
        } else {
            vec![(dve, c + 1)]
        };
        m.push(
            dma1,
            dma(
                hbm(y, ROWS, width, c * COLS, COLS),
                DmaOperand::Tile(sv.clone()),
            ),
            &w3,
        );

        let fresh: Vec<BufId> = [xt, et, st]
            .iter()
            .map(|b| {
                tp.buffers.push(Buffer {
                    placement: None,
                    ..m.p.buffers[b.0 as usize].clone()
                });
                BufId(tp.buffers.len() as u32 - 1)
            })
            .collect();
        for &b in &fresh {
            tp.insts.push(Inst::new(Op::Alloc { buf: b }));
        }
        let (xv, ev, sv) = (
            tile(fresh[0], ROWS, COLS),
            tile(fresh[1], ROWS, COLS),
            tile(fresh[2], ROWS, COLS),
        );
        tp.insts.push(Inst::new(dma(
            DmaOperand::Tile(xv.clone()),
            hbm(x, ROWS, width, c * COLS, COLS),
        )));
        tp.insts.push(Inst::new(exp(ev.clone(), xv.clone())));
        tp.insts.push(Inst::new(add(sv.clone(), ev, xv)));
        tp.insts.push(Inst::new(dma(
            hbm(y, ROWS, width, c * COLS, COLS),
            DmaOperand::Tile(sv),
        )));
        for &b in &fresh {
            tp.insts.push(Inst::new(Op::Free { buf: b }));
        }
    }
    (m, tp)
}
