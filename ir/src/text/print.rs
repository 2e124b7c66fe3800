//! The `.tile` printer: one canonical text for each program, so golden files can be compared
//! byte for byte and `print(parse(print(p))) == print(p)`.
//!
//! Buffers have no declaration of their own: a buffer is written once, in its `alloc` line, and
//! the parser numbers buffers in the order of those lines. A program whose buffers are not in
//! alloc order therefore prints fine but parses back with its buffers renumbered. For a buffer
//! with no `alloc` instruction the printer invents one (just before the buffer's first use, or
//! before the closing `}` if it is never used), so the output always parses.

use crate::access::{BufId, Dim, DmaOperand, HbmAccess, TensorId, TileAccess};
use crate::isa::{AffineExpr, Op, Scalar, ScalarStep};
use crate::program::{Buffer, TileProgram};
use std::fmt::Write;

/// Prints `program`; see the module documentation for buffers without an `alloc`.
pub(super) fn print(program: &TileProgram) -> String {
    let mut p = Printer {
        program,
        out: String::new(),
    };
    p.out.push_str(&format!("kernel {} {{\n", program.name));
    for t in &program.tensors {
        p.line(format_args!(
            "{} @{}: {}[{}]",
            t.kind.name(),
            t.name,
            t.dtype,
            join(&t.shape)
        ));
    }
    let mut allocated: Vec<bool> = vec![false; program.buffers.len()];
    for inst in &program.insts {
        if let Op::Alloc { buf } = inst.op
            && let Some(a) = allocated.get_mut(buf.0 as usize)
        {
            *a = true;
        }
    }
    for inst in &program.insts {
        let mut used: Vec<BufId> = inst.op.tile_operands().iter().map(|o| o.tile.buf).collect();
        if let Op::Free { buf } = inst.op {
            used.push(buf);
        }
        for buf in used {
            if let Some(a) = allocated.get_mut(buf.0 as usize)
                && !*a
            {
                *a = true;
                p.alloc(buf);
            }
        }
        p.op(&inst.op);
    }
    for (i, a) in allocated.iter().enumerate() {
        if !a {
            p.alloc(BufId(i as u32));
        }
    }
    p.out.push_str("}\n");
    p.out
}

struct Printer<'a> {
    program: &'a TileProgram,
    out: String,
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Printer<'_> {
    fn line(&mut self, args: std::fmt::Arguments<'_>) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "  {args}");
    }

    /// `%name`; an id outside the program (a malformed program) prints as a name the parser
    /// will reject rather than making the printer panic.
    fn buf(&self, id: BufId) -> String {
        match self.program.buffers.get(id.0 as usize) {
            Some(b) => format!("%{}", b.name),
            None => format!("%invalid_buffer_{}", id.0),
        }
    }

    fn tensor(&self, id: TensorId) -> String {
        match self.program.tensors.get(id.0 as usize) {
            Some(t) => format!("@{}", t.name),
            None => format!("@invalid_tensor_{}", id.0),
        }
    }

    fn alloc(&mut self, id: BufId) {
        let Some(b) = self.program.buffers.get(id.0 as usize) else {
            let name = self.buf(id);
            self.line(format_args!("alloc {name}"));
            return;
        };
        let Buffer {
            name,
            space,
            dtype,
            partitions,
            free_shape,
            placement,
        } = b;
        let mut shape = partitions.to_string();
        for d in free_shape {
            let _ = write!(shape, ", {d}");
        }
        let place = match placement {
            Some(pl) => format!(" @{}:{}", pl.partition, pl.byte_offset),
            None => String::new(),
        };
        self.line(format_args!(
            "alloc %{name}: {} {dtype}[{shape}]{place}",
            space.name()
        ));
    }

    fn tile(&self, t: &TileAccess) -> String {
        let end = t.start_partition as u64 + t.partitions as u64;
        format!(
            "{}[{}:{end}]{}",
            self.buf(t.buf),
            t.start_partition,
            pattern(t.offset, &t.dims)
        )
    }

    fn hbm(&self, h: &HbmAccess) -> String {
        format!("{}{}", self.tensor(h.tensor), pattern(h.offset, &h.dims))
    }

    fn dma(&self, d: &DmaOperand) -> String {
        match d {
            DmaOperand::Hbm(h) => self.hbm(h),
            DmaOperand::Tile(t) => self.tile(t),
        }
    }

    fn scalar(&self, s: &Scalar) -> String {
        match s {
            Scalar::Imm(v) => format!("{v:?}"),
            Scalar::PerPartition(t) => self.tile(t),
        }
    }

    fn step(&self, s: &ScalarStep) -> String {
        let rev = if s.reverse { ".rev" } else { "" };
        format!("{}{rev} {}", s.op, self.scalar(&s.operand))
    }

    fn op(&mut self, op: &Op) {
        let text = match op {
            Op::Alloc { buf } => {
                self.alloc(*buf);
                return;
            }
            Op::Free { buf } => format!("free {}", self.buf(*buf)),
            Op::DmaCopy { dst, src } => format!("{}, {}", self.dma(dst), self.dma(src)),
            Op::Matmul {
                dst,
                stationary,
                moving,
                start,
                stop,
            } => {
                let mut s = format!(
                    "{}, {}, {}",
                    self.tile(dst),
                    self.tile(stationary),
                    self.tile(moving)
                );
                if *start {
                    s.push_str(" start");
                }
                if *stop {
                    s.push_str(" stop");
                }
                s
            }
            Op::Transpose { dst, src } | Op::TensorCopy { dst, src, .. } => {
                format!("{}, {}", self.tile(dst), self.tile(src))
            }
            Op::Activation {
                dst,
                src,
                func,
                scale,
                bias,
                accum,
            } => {
                let mut s = format!(
                    "{}, {}, {func}, scale={}, bias={}",
                    self.tile(dst),
                    self.tile(src),
                    self.scalar(scale),
                    self.scalar(bias)
                );
                if let Some(a) = accum {
                    let _ = write!(s, ", accum={}", self.tile(a));
                }
                s
            }
            Op::TensorTensor {
                op, dst, lhs, rhs, ..
            } => {
                format!(
                    "{op} {}, {}, {}",
                    self.tile(dst),
                    self.tile(lhs),
                    self.tile(rhs)
                )
            }
            Op::TensorScalar {
                dst, src, op0, op1, ..
            } => {
                let mut s = format!("{}, {}, {}", self.tile(dst), self.tile(src), self.step(op0));
                if let Some(step) = op1 {
                    let _ = write!(s, ", {}", self.step(step));
                }
                s
            }
            Op::TensorReduce {
                op, dst, src, axes, ..
            } => {
                format!("{op} {}, {}, axes={axes}", self.tile(dst), self.tile(src))
            }
            Op::Memset { dst, value, .. } => format!("{}, {value:?}", self.tile(dst)),
            Op::Iota { dst, expr, .. } => format!("{}, {}", self.tile(dst), affine(expr)),
            Op::AffineSelect {
                dst,
                src,
                expr,
                cmp,
                fill,
                ..
            } => format!(
                "{}, {}, {} {cmp}, {fill:?}",
                self.tile(dst),
                self.tile(src),
                affine(expr)
            ),
            Op::Select {
                dst,
                pred,
                on_true,
                on_false,
                ..
            } => format!(
                "{}, {}, {}, {}",
                self.tile(dst),
                self.tile(pred),
                self.tile(on_true),
                self.tile(on_false)
            ),
        };
        match op {
            Op::Free { .. } => self.line(format_args!("{text}")),
            _ => {
                // Every other opcode runs on an engine (`Op::engine` is `Some`).
                let engine = op.engine().map_or("", |e| e.name());
                self.line(format_args!("{engine}.{} {text}", op.opcode()));
            }
        }
    }
}

/// `[offset; stride*size, ...]`, or `[offset;]` without dims.
fn pattern(offset: u64, dims: &[Dim]) -> String {
    if dims.is_empty() {
        return format!("[{offset};]");
    }
    let dims: Vec<String> = dims
        .iter()
        .map(|d| format!("{}*{}", d.stride, d.size))
        .collect();
    format!("[{offset}; {}]", dims.join(", "))
}

fn affine(e: &AffineExpr) -> String {
    format!("affine({}, {}, [{}])", e.base, e.partition, join(&e.free))
}

/// Prints a machine program for `tessera inspect --emit isa`: tensors (scratch with its arena
/// offset), placed buffers, then each queue's instructions with their waits and origin. This
/// listing is for reading; it is not parsed back.
pub(super) fn print_machine(m: &crate::machine::MachineProgram) -> String {
    let shell = TileProgram {
        name: m.name.clone(),
        tensors: m.tensors.clone(),
        buffers: m.buffers.clone(),
        insts: Vec::new(),
    };
    let mut p = Printer {
        program: &shell,
        out: String::new(),
    };
    let _ = writeln!(
        p.out,
        "machine {} {{  # {} instructions, scratch arena {} bytes",
        m.name,
        m.inst_count(),
        m.scratch_bytes
    );
    for (t, off) in m.tensors.iter().zip(&m.hbm_offsets) {
        let at = off.map_or(String::new(), |o| format!(" @arena {o}"));
        p.line(format_args!(
            "{} @{}: {}[{}]{at}",
            t.kind.name(),
            t.name,
            t.dtype,
            join(&t.shape)
        ));
    }
    for b in &m.buffers {
        let at = b.placement.map_or(String::new(), |pl| {
            format!(" @ {}:{}", pl.partition, pl.byte_offset)
        });
        p.line(format_args!(
            "buffer %{}: {} {}[{}, {}]{at}",
            b.name,
            b.space.name(),
            b.dtype,
            b.partitions,
            join(&b.free_shape)
        ));
    }
    for q in &m.queues {
        if q.insts.is_empty() {
            continue;
        }
        p.line(format_args!("queue {} {{", q.name));
        for (i, inst) in q.insts.iter().enumerate() {
            let mut one = Printer {
                program: &shell,
                out: String::new(),
            };
            one.op(&inst.op);
            let waits: Vec<String> = inst
                .waits
                .iter()
                .map(|w| {
                    let name = m
                        .queues
                        .get(w.queue.0 as usize)
                        .map_or("?", |q| q.name.as_str());
                    format!("{name}>={}", w.count)
                })
                .collect();
            let wait = if waits.is_empty() {
                String::new()
            } else {
                format!("wait {} | ", waits.join(", "))
            };
            p.line(format_args!(
                "  [{i}] {wait}{}  # {} tile #{}",
                one.out.trim(),
                inst.origin.node,
                inst.origin.tile_index
            ));
        }
        p.line(format_args!("}}"));
    }
    p.out.push_str("}\n");
    p.out
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use crate::access::Dim;
    use crate::dtype::DType;
    use crate::isa::Engine;
    use crate::program::{Inst, Space};

    fn buffer(name: &str) -> Buffer {
        Buffer {
            name: name.into(),
            space: Space::Sbuf,
            dtype: DType::F32,
            partitions: 4,
            free_shape: vec![8],
            placement: None,
        }
    }

    fn memset(buf: u32) -> Inst {
        let dst = TileAccess {
            buf: BufId(buf),
            start_partition: 0,
            partitions: 4,
            offset: 0,
            dims: vec![Dim::new(1, 8)],
        };
        Inst::new(Op::Memset {
            engine: Engine::Dve,
            dst,
            value: 1.0,
        })
    }

    #[test]
    fn buffers_without_alloc_get_one_before_first_use() {
        let p = TileProgram {
            name: "k".into(),
            tensors: vec![],
            buffers: vec![buffer("a"), buffer("b"), buffer("never_used")],
            insts: vec![memset(1), Inst::new(Op::Alloc { buf: BufId(0) }), memset(0)],
        };
        let text = print(&p);
        assert_eq!(
            text,
            "kernel k {\n  alloc %b: sbuf f32[4, 8]\n  dve.memset %b[0:4][0; 1*8], 1.0\n  \
             alloc %a: sbuf f32[4, 8]\n  dve.memset %a[0:4][0; 1*8], 1.0\n  \
             alloc %never_used: sbuf f32[4, 8]\n}\n"
        );
        // The text parses, into a program with the invented allocs (so buffers renumbered).
        let back = parse(&text, "t").unwrap();
        assert_eq!(back.insts.len(), 5);
        assert_eq!(print(&back), text);
    }

    #[test]
    fn ids_outside_the_program_do_not_panic() {
        let p = TileProgram {
            name: "k".into(),
            tensors: vec![],
            buffers: vec![],
            insts: vec![memset(7), Inst::new(Op::Free { buf: BufId(3) })],
        };
        let text = print(&p);
        assert!(text.contains("%invalid_buffer_7[0:4]"), "{text}");
        assert!(parse(&text, "t").is_err());
    }
}
