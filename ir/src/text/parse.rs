//! The `.tile` parser: a recursive-descent reader over the lexer's tokens that builds a
//! [`TileProgram`] and resolves names as it goes.
//!
//! It checks only what the text itself can get wrong: syntax, number ranges, names used before
//! their declaration, and names declared twice. Hardware rules (partition limits, engines
//! allowed per opcode, PSUM access, ...) are the verifier's job, so a program that parses may
//! still be rejected by [`crate::verify`]. Every failure is a [`ParseError`] at the offending
//! token; no input makes the parser panic.

use super::ParseError;
use super::lex::{Tok, TokKind, lex};
use crate::access::{BufId, Dim, DmaOperand, HbmAccess, TensorId, TileAccess};
use crate::dtype::DType;
use crate::isa::{ActFunc, AffineExpr, AluOp, CmpOp, Engine, Op, ReduceOp, Scalar, ScalarStep};
use crate::program::{
    Buffer, HbmTensor, Inst, Placement, SourceLoc, Space, TensorKind, TileProgram,
};
use std::collections::HashMap;
use std::str::FromStr;

type Result<T> = std::result::Result<T, ParseError>;

/// Every opcode, as [`Op::opcode`] spells it, for the "unknown opcode" message.
const OPCODES: &str = "alloc, free, dma_copy, nc_matmul, nc_transpose, activation, \
                       tensor_tensor, tensor_scalar, tensor_reduce, tensor_copy, memset, iota, \
                       affine_select, select";

/// Parses a whole `.tile` source.
pub(super) fn parse(src: &str, file: &str) -> Result<TileProgram> {
    let toks = lex(src, file)?;
    let mut p = Parser {
        toks,
        pos: 0,
        file,
        tensors: HashMap::new(),
        buffers: HashMap::new(),
        program: TileProgram::default(),
    };
    p.program()?;
    Ok(p.program)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    file: &'a str,
    /// Declared tensors: id and the line of the declaration.
    tensors: HashMap<String, (TensorId, u32)>,
    /// Allocated buffers: id and the line of the `alloc`.
    buffers: HashMap<String, (BufId, u32)>,
    program: TileProgram,
}

impl Parser<'_> {
    // ----- token access -------------------------------------------------------------------

    fn peek(&self) -> &Tok {
        // The lexer always ends with Eof and `bump` never moves past it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if t.kind != TokKind::Eof {
            self.pos += 1;
        }
        t
    }

    fn error_at(&self, tok: &Tok, message: impl Into<String>) -> ParseError {
        ParseError {
            file: self.file.to_string(),
            line: tok.line,
            column: tok.column,
            message: message.into(),
        }
    }

    fn expected(&self, what: &str) -> ParseError {
        let t = self.peek();
        self.error_at(t, format!("expected {what}, found {}", t.describe()))
    }

    fn at_punct(&self, c: char) -> bool {
        self.peek().kind == TokKind::Punct(c)
    }

    fn punct(&mut self, c: char) -> Result<()> {
        if self.at_punct(c) {
            self.bump();
            Ok(())
        } else {
            Err(self.expected(&format!("`{c}`")))
        }
    }

    fn ident(&mut self, what: &str) -> Result<(String, Tok)> {
        match &self.peek().kind {
            TokKind::Ident(s) => {
                let s = s.clone();
                Ok((s, self.bump()))
            }
            _ => Err(self.expected(what)),
        }
    }

    fn keyword(&mut self, kw: &str) -> Result<()> {
        match &self.peek().kind {
            TokKind::Ident(s) if s == kw => {
                self.bump();
                Ok(())
            }
            _ => Err(self.expected(&format!("`{kw}`"))),
        }
    }

    /// `key=`, as in `axes=1`.
    fn key(&mut self, key: &str) -> Result<()> {
        self.keyword(key)?;
        self.punct('=')
    }

    fn skip_newlines(&mut self) {
        while self.peek().kind == TokKind::Newline {
            self.bump();
        }
    }

    /// A name token parsed by a `FromStr` impl whose error lists the valid names.
    fn named<T: FromStr>(&mut self, what: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let (s, tok) = self.ident(what)?;
        s.parse()
            .map_err(|e: T::Err| self.error_at(&tok, e.to_string()))
    }

    /// An integer that fits `T`.
    fn int<T: TryFrom<i128>>(&mut self, what: &str) -> Result<T> {
        let tok = self.peek().clone();
        let TokKind::Num(text) = &tok.kind else {
            return Err(self.expected(&format!("an integer ({what})")));
        };
        let ty = std::any::type_name::<T>();
        let value = match text.parse::<i128>() {
            Ok(v) => v,
            Err(_)
                if text
                    .trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
            {
                return Err(self.error_at(&tok, format!("{what} `{text}` does not fit {ty}")));
            }
            Err(_) => {
                return Err(self.error_at(
                    &tok,
                    format!("expected an integer ({what}), found `{text}`"),
                ));
            }
        };
        let v = T::try_from(value)
            .map_err(|_| self.error_at(&tok, format!("{what} `{text}` does not fit {ty}")))?;
        self.bump();
        Ok(v)
    }

    /// A float: anything `str::parse::<f64>` accepts, e.g. `1.5`, `-2e-3`, `inf`, `-inf`, `NaN`.
    fn float(&mut self, what: &str) -> Result<f64> {
        let tok = self.peek().clone();
        match &tok.kind {
            TokKind::Num(s) | TokKind::Ident(s) => match s.parse::<f64>() {
                Ok(v) => {
                    self.bump();
                    Ok(v)
                }
                Err(_) => {
                    Err(self.error_at(&tok, format!("expected a number ({what}), found `{s}`")))
                }
            },
            _ => Err(self.expected(&format!("a number ({what})"))),
        }
    }

    /// `INT (',' INT)*`, possibly empty, up to the closing `close`.
    fn int_list<T: TryFrom<i128>>(&mut self, what: &str, close: char) -> Result<Vec<T>> {
        let mut out = Vec::new();
        if self.at_punct(close) {
            return Ok(out);
        }
        loop {
            out.push(self.int(what)?);
            if !self.at_punct(',') {
                return Ok(out);
            }
            self.bump();
        }
    }

    // ----- program structure --------------------------------------------------------------

    fn program(&mut self) -> Result<()> {
        self.skip_newlines();
        self.keyword("kernel")?;
        self.program.name = self.ident("a kernel name")?.0;
        self.punct('{')?;
        loop {
            self.skip_newlines();
            match self.peek().kind {
                TokKind::Punct('}') => {
                    self.bump();
                    break;
                }
                TokKind::Eof => return Err(self.expected("`}` closing the kernel")),
                _ => self.statement()?,
            }
            match self.peek().kind {
                TokKind::Newline | TokKind::Punct('}') => {}
                _ => return Err(self.expected("the end of the line")),
            }
        }
        self.skip_newlines();
        if self.peek().kind != TokKind::Eof {
            return Err(self.expected("end of file after the kernel's `}`"));
        }
        Ok(())
    }

    fn statement(&mut self) -> Result<()> {
        let (word, tok) = self.ident("a declaration or an instruction")?;
        let loc = SourceLoc {
            file: self.file.to_string(),
            line: tok.line,
            column: tok.column,
        };
        let op = match word.as_str() {
            "input" => return self.tensor_decl(TensorKind::Input),
            "output" => return self.tensor_decl(TensorKind::Output),
            "scratch" => return self.tensor_decl(TensorKind::Scratch),
            "alloc" => self.alloc(tok.line)?,
            "free" => Op::Free {
                buf: self.buf_name()?,
            },
            _ => {
                let Some((engine, opcode)) = word.split_once('.') else {
                    return Err(self.error_at(
                        &tok,
                        format!(
                            "expected a declaration (input, output, scratch) or an instruction \
                             (alloc, free, ENGINE.OPCODE), found `{word}`"
                        ),
                    ));
                };
                let engine: Engine = engine
                    .parse()
                    .map_err(|e: crate::isa::UnknownName| self.error_at(&tok, e.to_string()))?;
                self.instruction(engine, opcode, &tok)?
            }
        };
        self.program.insts.push(Inst { op, loc: Some(loc) });
        Ok(())
    }

    fn tensor_decl(&mut self, kind: TensorKind) -> Result<()> {
        self.punct('@')?;
        let (name, tok) = self.ident("a tensor name")?;
        if let Some((_, line)) = self.tensors.get(&name) {
            return Err(self.error_at(
                &tok,
                format!("tensor `@{name}` is already declared on line {line}"),
            ));
        }
        self.punct(':')?;
        let dtype: DType = self.named("a dtype")?;
        self.punct('[')?;
        let shape = self.int_list("tensor dimension", ']')?;
        self.punct(']')?;
        let id = TensorId(self.program.tensors.len() as u32);
        self.tensors.insert(name.clone(), (id, tok.line));
        self.program.tensors.push(HbmTensor {
            name,
            dtype,
            shape,
            kind,
        });
        Ok(())
    }

    fn alloc(&mut self, line: u32) -> Result<Op> {
        self.punct('%')?;
        let (name, tok) = self.ident("a buffer name")?;
        if let Some((_, line)) = self.buffers.get(&name) {
            return Err(self.error_at(
                &tok,
                format!("buffer `%{name}` is already allocated on line {line}"),
            ));
        }
        self.punct(':')?;
        let space = match self.ident("a memory space (sbuf or psum)")? {
            (s, _) if s == "sbuf" => Space::Sbuf,
            (s, _) if s == "psum" => Space::Psum,
            (s, t) => {
                return Err(self.error_at(
                    &t,
                    format!("unknown memory space `{s}` (expected sbuf or psum)"),
                ));
            }
        };
        let dtype: DType = self.named("a dtype")?;
        self.punct('[')?;
        let partitions = self.int("partition count")?;
        let mut free_shape = Vec::new();
        while self.at_punct(',') {
            self.bump();
            free_shape.push(self.int("free dimension")?);
        }
        self.punct(']')?;
        let placement = if self.at_punct('@') {
            self.bump();
            let partition = self.int("placement partition")?;
            self.punct(':')?;
            Some(Placement {
                partition,
                byte_offset: self.int("placement byte offset")?,
            })
        } else {
            None
        };
        let buf = BufId(self.program.buffers.len() as u32);
        self.buffers.insert(name.clone(), (buf, line));
        self.program.buffers.push(Buffer {
            name,
            space,
            dtype,
            partitions,
            free_shape,
            placement,
        });
        Ok(Op::Alloc { buf })
    }

    fn instruction(&mut self, engine: Engine, opcode: &str, tok: &Tok) -> Result<Op> {
        let fixed = |required: Engine| -> Result<()> {
            if engine == required {
                Ok(())
            } else {
                Err(self.error_at(
                    tok,
                    format!("`{opcode}` runs only on {required}: write `{required}.{opcode}`"),
                ))
            }
        };
        Ok(match opcode {
            "alloc" | "free" => {
                return Err(self.error_at(tok, format!("`{opcode}` takes no engine prefix")));
            }
            "dma_copy" => {
                fixed(Engine::Dma)?;
                let dst = self.dma_operand()?;
                self.punct(',')?;
                Op::DmaCopy {
                    dst,
                    src: self.dma_operand()?,
                }
            }
            "nc_matmul" => {
                fixed(Engine::Pe)?;
                let [dst, stationary, moving] = self.tiles()?;
                let start = self.flag("start");
                let stop = self.flag("stop");
                Op::Matmul {
                    dst,
                    stationary,
                    moving,
                    start,
                    stop,
                }
            }
            "nc_transpose" => {
                fixed(Engine::Pe)?;
                let [dst, src] = self.tiles()?;
                Op::Transpose { dst, src }
            }
            "activation" => {
                fixed(Engine::Act)?;
                let [dst, src] = self.tiles()?;
                self.punct(',')?;
                let func: ActFunc = self.named("an activation function")?;
                self.punct(',')?;
                self.key("scale")?;
                let scale = self.scalar()?;
                self.punct(',')?;
                self.key("bias")?;
                let bias = self.scalar()?;
                let accum = if self.at_punct(',') {
                    self.bump();
                    self.key("accum")?;
                    Some(self.tile()?)
                } else {
                    None
                };
                Op::Activation {
                    dst,
                    src,
                    func,
                    scale,
                    bias,
                    accum,
                }
            }
            "tensor_tensor" => {
                let op: AluOp = self.named("an ALU operation")?;
                let [dst, lhs, rhs] = self.tiles()?;
                Op::TensorTensor {
                    engine,
                    op,
                    dst,
                    lhs,
                    rhs,
                }
            }
            "tensor_scalar" => {
                let [dst, src] = self.tiles()?;
                self.punct(',')?;
                let op0 = self.step()?;
                let op1 = if self.at_punct(',') {
                    self.bump();
                    Some(self.step()?)
                } else {
                    None
                };
                Op::TensorScalar {
                    engine,
                    dst,
                    src,
                    op0,
                    op1,
                }
            }
            "tensor_reduce" => {
                let op: ReduceOp = self.named("a reduction")?;
                let [dst, src] = self.tiles()?;
                self.punct(',')?;
                self.key("axes")?;
                Op::TensorReduce {
                    engine,
                    op,
                    dst,
                    src,
                    axes: self.int("axes")?,
                }
            }
            "tensor_copy" => {
                let [dst, src] = self.tiles()?;
                Op::TensorCopy { engine, dst, src }
            }
            "memset" => {
                let dst = self.tile()?;
                self.punct(',')?;
                Op::Memset {
                    engine,
                    dst,
                    value: self.float("memset value")?,
                }
            }
            "iota" => {
                let dst = self.tile()?;
                self.punct(',')?;
                Op::Iota {
                    engine,
                    dst,
                    expr: self.affine()?,
                }
            }
            "affine_select" => {
                let [dst, src] = self.tiles()?;
                self.punct(',')?;
                let expr = self.affine()?;
                let cmp: CmpOp = self.named("a comparison")?;
                self.punct(',')?;
                Op::AffineSelect {
                    engine,
                    dst,
                    src,
                    expr,
                    cmp,
                    fill: self.float("fill value")?,
                }
            }
            "select" => {
                let [dst, pred, on_true, on_false] = self.tiles()?;
                Op::Select {
                    engine,
                    dst,
                    pred,
                    on_true,
                    on_false,
                }
            }
            _ => {
                return Err(self.error_at(
                    tok,
                    format!("unknown opcode `{opcode}` (expected one of {OPCODES})"),
                ));
            }
        })
    }

    // ----- operands -----------------------------------------------------------------------

    /// An optional bare keyword such as `start`.
    fn flag(&mut self, word: &str) -> bool {
        if matches!(&self.peek().kind, TokKind::Ident(s) if s == word) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// `N` comma-separated tiles.
    fn tiles<const N: usize>(&mut self) -> Result<[TileAccess; N]> {
        let mut out = Vec::with_capacity(N);
        for i in 0..N {
            if i > 0 {
                self.punct(',')?;
            }
            out.push(self.tile()?);
        }
        // `out` has exactly N elements.
        out.try_into().map_err(|_| self.expected("a tile"))
    }

    fn buf_name(&mut self) -> Result<BufId> {
        self.punct('%')?;
        let (name, tok) = self.ident("a buffer name")?;
        match self.buffers.get(&name) {
            Some(&(id, _)) => Ok(id),
            None => Err(self.error_at(
                &tok,
                format!("unknown buffer `%{name}` (a buffer is declared by an earlier `alloc`)"),
            )),
        }
    }

    fn tensor_name(&mut self) -> Result<TensorId> {
        self.punct('@')?;
        let (name, tok) = self.ident("a tensor name")?;
        match self.tensors.get(&name) {
            Some(&(id, _)) => Ok(id),
            None => Err(self.error_at(
                &tok,
                format!("unknown tensor `@{name}` (tensors are declared by an earlier input, output or scratch line)"),
            )),
        }
    }

    /// `%name[p0:p1][offset; dims]`
    fn tile(&mut self) -> Result<TileAccess> {
        if !self.at_punct('%') {
            return Err(self.expected("a tile `%name[p0:p1][offset; stride*size, ...]`"));
        }
        let buf = self.buf_name()?;
        self.punct('[')?;
        let start_partition: u32 = self.int("first partition")?;
        self.punct(':')?;
        let end_tok = self.peek().clone();
        let end: u64 = self.int("partition end")?;
        let partitions = end
            .checked_sub(start_partition as u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                self.error_at(
                    &end_tok,
                    format!(
                        "partition range {start_partition}:{end} must have 0 to 2^32-1 partitions"
                    ),
                )
            })?;
        self.punct(']')?;
        let (offset, dims) = self.pattern()?;
        Ok(TileAccess {
            buf,
            start_partition,
            partitions,
            offset,
            dims,
        })
    }

    /// `[offset; stride*size, ...]`
    fn pattern(&mut self) -> Result<(u64, Vec<Dim>)> {
        self.punct('[')?;
        let offset = self.int("offset")?;
        self.punct(';')?;
        let mut dims = Vec::new();
        if !self.at_punct(']') {
            loop {
                let stride = self.int("stride")?;
                self.punct('*')?;
                dims.push(Dim {
                    stride,
                    size: self.int("size")?,
                });
                if !self.at_punct(',') {
                    break;
                }
                self.bump();
            }
        }
        self.punct(']')?;
        Ok((offset, dims))
    }

    fn dma_operand(&mut self) -> Result<DmaOperand> {
        if self.at_punct('%') {
            Ok(DmaOperand::Tile(self.tile()?))
        } else if self.at_punct('@') {
            let tensor = self.tensor_name()?;
            let (offset, dims) = self.pattern()?;
            Ok(DmaOperand::Hbm(HbmAccess {
                tensor,
                offset,
                dims,
            }))
        } else {
            Err(self.expected("a tile `%name[...][...]` or an HBM view `@name[...]`"))
        }
    }

    fn scalar(&mut self) -> Result<Scalar> {
        if self.at_punct('%') {
            Ok(Scalar::PerPartition(self.tile()?))
        } else {
            Ok(Scalar::Imm(self.float("a number or a `[P, 1]` tile")?))
        }
    }

    /// `ALUOP('.rev')? SCALAR`
    fn step(&mut self) -> Result<ScalarStep> {
        let (word, tok) = self.ident("an ALU operation")?;
        let (name, reverse) = match word.strip_suffix(".rev") {
            Some(name) => (name, true),
            None => (word.as_str(), false),
        };
        let op: AluOp = name
            .parse()
            .map_err(|e: crate::isa::UnknownName| self.error_at(&tok, e.to_string()))?;
        Ok(ScalarStep {
            op,
            operand: self.scalar()?,
            reverse,
        })
    }

    /// `affine(base, partition, [free, ...])`
    fn affine(&mut self) -> Result<AffineExpr> {
        self.keyword("affine")?;
        self.punct('(')?;
        let base = self.int("affine base")?;
        self.punct(',')?;
        let partition = self.int("partition coefficient")?;
        self.punct(',')?;
        self.punct('[')?;
        let free = self.int_list("free coefficient", ']')?;
        self.punct(']')?;
        self.punct(')')?;
        Ok(AffineExpr {
            base,
            partition,
            free,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "kernel k {\n  input @x: f32[4, 8]\n  alloc %t: sbuf f32[4, 8]\n";

    /// Parses `HEAD + body + "}"` and returns the error as `line:column: message`.
    fn error(body: &str) -> String {
        let src = format!("{HEAD}{body}\n}}\n");
        match parse(&src, "t.tile") {
            Ok(_) => panic!("expected an error for {body:?}"),
            Err(e) => format!("{}:{}: {}", e.line, e.column, e.message),
        }
    }

    #[test]
    fn locations_point_at_the_first_token() {
        let src = format!("{HEAD}\n    dve.memset %t[0:4][0; 1*8], 1.5\n  free %t\n}}\n");
        let p = parse(&src, "t.tile").unwrap();
        let locs: Vec<_> = p.insts.iter().map(|i| i.loc.clone().unwrap()).collect();
        assert_eq!(
            locs[0],
            SourceLoc {
                file: "t.tile".into(),
                line: 3,
                column: 3
            }
        );
        assert_eq!((locs[1].line, locs[1].column), (5, 5));
        assert_eq!((locs[2].line, locs[2].column), (6, 3));
    }

    #[test]
    fn unknown_names_list_the_choices() {
        let e = error("  dve.tensor_foo %t[0:4][0; 1*8]");
        assert!(
            e.starts_with("4:3: unknown opcode `tensor_foo` (expected one of alloc, free"),
            "{e}"
        );
        let e = error("  gpu.memset %t[0:4][0; 1*8], 0.0");
        assert!(
            e.starts_with("4:3: unknown engine `gpu` (expected one of pe, act"),
            "{e}"
        );
        let e =
            error("  act.activation %t[0:4][0; 1*8], %t[0:4][0; 1*8], swish, scale=1.0, bias=0.0");
        assert!(
            e.contains("unknown activation function `swish` (expected one of identity"),
            "{e}"
        );
        let e = error("  dve.tensor_scalar %t[0:4][0; 1*8], %t[0:4][0; 1*8], plus.rev 1.0");
        assert!(e.contains("unknown ALU operation `plus`"), "{e}");
        let e = error("  alloc %u: dram f32[4]");
        assert!(
            e.contains("unknown memory space `dram` (expected sbuf or psum)"),
            "{e}"
        );
        let e = error("  alloc %u: sbuf f64[4]");
        assert!(e.contains("unknown dtype `f64`"), "{e}");
    }

    #[test]
    fn names_are_declared_before_use_and_once() {
        assert_eq!(
            error("  dve.memset %u[0:4][0; 1*8], 0.0"),
            "4:15: unknown buffer `%u` (a buffer is declared by an earlier `alloc`)"
        );
        assert!(
            error("  dma.dma_copy @y[0;], %t[0:4][0;]").starts_with("4:17: unknown tensor `@y`")
        );
        assert_eq!(
            error("  alloc %t: psum f32[4]"),
            "4:10: buffer `%t` is already allocated on line 3"
        );
        assert_eq!(
            error("  output @x: f32[1]"),
            "4:11: tensor `@x` is already declared on line 2"
        );
    }

    #[test]
    fn fixed_engines_and_syntax_errors() {
        let e = error("  dve.nc_matmul %t[0:4][0;], %t[0:4][0;], %t[0:4][0;]");
        assert_eq!(e, "4:3: `nc_matmul` runs only on pe: write `pe.nc_matmul`");
        assert_eq!(
            error("  dve.alloc %u: sbuf f32[4]"),
            "4:3: `alloc` takes no engine prefix"
        );
        assert_eq!(
            error("  free %t extra"),
            "4:11: expected the end of the line, found `extra`"
        );
        assert_eq!(
            error("  dve.memset %t[2:1][0;], 0.0"),
            "4:19: partition range 2:1 must have 0 to 2^32-1 partitions"
        );
        assert_eq!(
            error("  dve.tensor_reduce sum %t[0:4][0;], %t[0:4][0;], axes=256"),
            "4:56: axes `256` does not fit u8"
        );
        assert_eq!(
            error("  dve.memset %t[0:4][1.5;], 0.0"),
            "4:22: expected an integer (offset), found `1.5`"
        );
        assert_eq!(
            error("  dve.memset %t[0:4][0;], x"),
            "4:27: expected a number (memset value), found `x`"
        );
        assert!(
            parse("kernel k {\n", "t")
                .unwrap_err()
                .message
                .contains("`}` closing the kernel")
        );
        assert!(
            parse("kernel k {\n}\nkernel", "t")
                .unwrap_err()
                .message
                .contains("end of file")
        );
        assert_eq!(
            parse("", "t").unwrap_err().message,
            "expected `kernel`, found end of file"
        );
    }

    #[test]
    fn floats_accept_rust_spellings() {
        for (text, want) in [
            ("-inf", f64::NEG_INFINITY),
            ("inf", f64::INFINITY),
            ("1e-7", 1e-7),
            ("-0.0", -0.0),
        ] {
            let src = format!("{HEAD}  dve.memset %t[0:4][0;], {text}\n}}\n");
            let p = parse(&src, "t").unwrap();
            let Op::Memset { value, .. } = p.insts[1].op else {
                panic!("not a memset")
            };
            assert_eq!(value.to_bits(), want.to_bits(), "{text}");
        }
        let src = format!("{HEAD}  dve.memset %t[0:4][0;], NaN\n}}\n");
        assert!(
            matches!(parse(&src, "t").unwrap().insts[1].op, Op::Memset { value, .. } if value.is_nan())
        );
    }
}
