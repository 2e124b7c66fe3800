//! MLIR code generation (cargo feature `mlir`): the same template kernels as the Cranelift
//! generator, written as MLIR (`func`, `scf`, `memref`, `arith`, `math`, `vector`), lowered to
//! the LLVM dialect and compiled by MLIR's ExecutionEngine through `melior`.
//!
//! One kernel per [`KernelKey`], as for Cranelift; the kernels a program needs are generated
//! into one module and compiled together, once, before the program runs.
//!
//! **Signature.** `func.func @kN(%a0: memref<?xT0>, ..., %imm: memref<?xf64>)`: one 1-D memref
//! per memory operand whose element 0 is the operand's element 0 (so the planned byte strides
//! become element strides: a key whose strides are not multiples of its operand's element size
//! is not generated and its instructions fall back), then the immediates. f32 operands are
//! `memref<?xf32>`; bf16 operands are `memref<?xi16>`, decoded by shifting into the high half
//! of an f32 and encoded with the same round-to-nearest-even bit rule as the Cranelift
//! generator and `half::bf16::from_f32`; copies move `i8`/`i16`/`i32`/`i64` elements.
//!
//! **Arithmetic.** The same rules as the Cranelift generator (and so as interp): `arith.addf`
//! and friends in f32, `arith.maximumf`/`minimumf` (NaN-propagating, -0 below +0) for max/min,
//! activations in f64 with relu inline and every other function a call to interp's definition
//! (`tessera_jit_activation`, registered with the engine), reductions accumulated in f64 in
//! element order (`scf.for` with `iter_args`). No fast-math flags, so LLVM neither reassociates
//! nor contracts. The innermost loop of f32 element-wise work is `vector<8xf32>`
//! (`vector.load`/`vector.store`, `vector.broadcast` for a stride-0 source) with a scalar tail.

use super::plan::{Arg, Body, KernelKey};
use melior::ExecutionEngine;
use melior::dialect::DialectRegistry;
use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::{
    parse_pass_pipeline, register_all_dialects, register_all_llvm_translations, register_all_passes,
};
use tessera_ir::isa::ALL_ACT_FUNCS;
use tessera_ir::{ActFunc, AluOp, DType, ReduceOp};

/// The packed entry point MLIR's ExecutionEngine makes for each function: `args[k]` points to
/// the k-th scalar of the lowered signature (five per memref: allocated and aligned pointers,
/// offset, size, stride).
pub(crate) type PackedFn = unsafe extern "C" fn(*mut *mut ());

/// Lanes of the vectorised innermost loop.
const LANES: u64 = 8;

/// The lowering from the dialects the kernels use to the LLVM dialect.
const PIPELINE: &str = "builtin.module(convert-vector-to-scf,convert-scf-to-cf,\
    convert-vector-to-llvm,convert-math-to-llvm,expand-strided-metadata,\
    finalize-memref-to-llvm,convert-arith-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,\
    reconcile-unrealized-casts)";

/// The MLIR context and the engines holding the compiled code (kept as long as the kernels
/// may be called).
pub(crate) struct MlirCompiler {
    engines: Vec<ExecutionEngine>,
    context: melior::Context,
    next: usize,
}

impl MlirCompiler {
    pub fn new() -> Result<Self, String> {
        let registry = DialectRegistry::new();
        register_all_dialects(&registry);
        let context = melior::Context::new();
        context.append_dialect_registry(&registry);
        context.load_all_available_dialects();
        register_all_llvm_translations(&context);
        register_all_passes();
        Ok(MlirCompiler {
            engines: Vec::new(),
            context,
            next: 0,
        })
    }

    /// Compiles `keys` in one module; `None` for a key MLIR kernels do not cover.
    pub fn compile(&mut self, keys: &[&KernelKey]) -> Result<Vec<Option<PackedFn>>, String> {
        let names: Vec<Option<String>> = keys
            .iter()
            .map(|key| {
                generates(key).then(|| {
                    self.next += 1;
                    format!("k{}", self.next - 1)
                })
            })
            .collect();
        let named: Vec<(&str, &KernelKey)> = names
            .iter()
            .zip(keys)
            .filter_map(|(n, k)| n.as_deref().map(|n| (n, *k)))
            .collect();
        if named.is_empty() {
            return Ok(vec![None; keys.len()]);
        }
        let text = module_text(&named);
        let mut module = Module::parse(&self.context, &text)
            .ok_or_else(|| format!("generated MLIR does not parse:\n{text}"))?;
        if !module.as_operation().verify() {
            return Err(format!("generated MLIR does not verify:\n{text}"));
        }
        let pm = PassManager::new(&self.context);
        parse_pass_pipeline(pm.as_operation_pass_manager(), PIPELINE)
            .map_err(|e| format!("MLIR pass pipeline: {e}"))?;
        pm.run(&mut module)
            .map_err(|e| format!("lowering the kernels to LLVM: {e}"))?;
        let engine = ExecutionEngine::new(&module, 3, &[], false);
        // SAFETY: the symbol is a function with the C signature (i32, f64) -> f64 that the
        // module declares as `func.func private @tessera_jit_activation(i32, f64) -> f64`.
        unsafe {
            engine.register_symbol(
                "tessera_jit_activation",
                super::codegen::ACTIVATION_CALLBACK as *mut (),
            );
        }
        let mut out = Vec::with_capacity(keys.len());
        for name in &names {
            out.push(match name {
                None => None,
                Some(n) => {
                    let f = engine.lookup(&format!("_mlir_{n}"));
                    if f.is_null() {
                        return Err(format!("the engine has no entry point for kernel {n}"));
                    }
                    // SAFETY: `_mlir_<name>` is the packed wrapper the engine generates for
                    // every function: it takes one pointer to an array of argument pointers;
                    // the engine owning it is kept in `self.engines`.
                    Some(unsafe { std::mem::transmute::<*mut (), PackedFn>(f) })
                }
            });
        }
        self.engines.push(engine);
        Ok(out)
    }
}

/// The MLIR module (before lowering) holding one function per named kernel.
pub(crate) fn module_text(kernels: &[(&str, &KernelKey)]) -> String {
    let mut s = String::from("module {\n");
    if kernels
        .iter()
        .any(|(_, k)| matches!(k.body, Body::Act(_) | Body::ActAccum(_)))
    {
        s.push_str("  func.func private @tessera_jit_activation(i32, f64) -> f64\n");
    }
    for (name, key) in kernels {
        if let Some(f) = kernel_text(name, key) {
            s.push_str(&f);
        }
    }
    s.push_str("}\n");
    s
}

/// Whether [`kernel_text`] generates `key`.
pub(crate) fn generates(key: &KernelKey) -> bool {
    Gen::new(key).is_some()
}

/// One kernel as an MLIR function, or `None` when its strides are not whole elements.
pub(crate) fn kernel_text(name: &str, key: &KernelKey) -> Option<String> {
    let mut g = Gen::new(key)?;
    g.function(name);
    Some(g.out)
}

/// How a memory operand is typed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Elem {
    F32,
    /// bf16 held as its bits.
    Bf16,
    /// Raw bits of a copy, `i<bits>`.
    Int(u32),
}

impl Elem {
    fn mlir(self) -> String {
        match self {
            Elem::F32 => "f32".into(),
            Elem::Bf16 => "i16".into(),
            Elem::Int(b) => format!("i{b}"),
        }
    }

    fn bytes(self) -> i64 {
        match self {
            Elem::F32 => 4,
            Elem::Bf16 => 2,
            Elem::Int(b) => i64::from(b / 8),
        }
    }
}

/// A loop position: a constant (a loop of one iteration, not emitted) or an induction variable.
#[derive(Clone, Copy)]
enum At<'a> {
    Const(u64),
    Var(&'a str),
}

struct Gen<'k> {
    key: &'k KernelKey,
    /// For each argument: its memory operand index (`Arg::Mem`).
    mem_index: Vec<Option<usize>>,
    /// Element type of each memory operand.
    elems: Vec<Elem>,
    /// Element strides of each memory operand for each dimension of the shape.
    strides: Vec<Vec<i64>>,
    /// For reductions: `(size, element stride of each memory operand)` of the inner dims.
    inner: Vec<(u64, Vec<i64>)>,
    /// The immediates, loaded in the entry block (`Arg::Imm` slot -> SSA name of the f64).
    imms: Vec<String>,
    out: String,
    indent: usize,
    next: usize,
    vector: bool,
}

impl<'k> Gen<'k> {
    fn new(key: &'k KernelKey) -> Option<Self> {
        let mut mem_index = Vec::new();
        let mut elems = Vec::new();
        let mut byte_strides = Vec::new();
        for a in &key.args {
            match a {
                Arg::Mem { dtype, strides } => {
                    mem_index.push(Some(elems.len()));
                    elems.push(match (&key.body, dtype) {
                        (Body::Copy { width }, _) => Elem::Int(u32::from(*width) * 8),
                        (_, DType::F32) => Elem::F32,
                        (_, DType::Bf16) => Elem::Bf16,
                        _ => return None,
                    });
                    byte_strides.push(strides.clone());
                }
                Arg::Imm(_) => mem_index.push(None),
            }
        }
        let whole = |bytes: i64, e: Elem| (bytes % e.bytes() == 0).then(|| bytes / e.bytes());
        let strides = byte_strides
            .iter()
            .zip(&elems)
            .map(|(s, &e)| s.iter().map(|&b| whole(b, e)).collect::<Option<Vec<_>>>())
            .collect::<Option<Vec<_>>>()?;
        let inner = key
            .inner
            .iter()
            .map(|(n, s)| {
                let es = s
                    .iter()
                    .zip(&elems)
                    .map(|(&b, &e)| whole(b, e))
                    .collect::<Option<Vec<_>>>()?;
                Some((*n, es))
            })
            .collect::<Option<Vec<_>>>()?;
        // The Cranelift generator's condition for its f32x4 loop: 4-byte operands (f32, or the
        // bits of a copy), the destination contiguous and each source contiguous or broadcast.
        let vector = super::codegen::simd_ok(key);
        Some(Gen {
            key,
            mem_index,
            elems,
            strides,
            inner,
            imms: Vec::new(),
            out: String::new(),
            indent: 2,
            next: 0,
            vector,
        })
    }

    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("%v{}", self.next - 1)
    }

    fn line(&mut self, text: &str) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// `name = <text>`, returning the fresh name.
    fn def(&mut self, text: &str) -> String {
        let v = self.fresh();
        self.line(&format!("{v} = {text}"));
        v
    }

    fn index(&mut self, n: i64) -> String {
        self.def(&format!("arith.constant {n} : index"))
    }

    fn memref(&self, m: usize) -> String {
        format!("memref<?x{}>", self.elems[m].mlir())
    }

    fn function(&mut self, name: &str) {
        let mut params: Vec<String> = (0..self.elems.len())
            .map(|m| format!("%a{m}: {}", self.memref(m)))
            .collect();
        params.push("%imm: memref<?xf64>".into());
        let header = format!("func.func @{name}({}) {{", params.join(", "));
        self.indent = 1;
        self.line(&header);
        self.indent = 2;
        let nimm = self
            .key
            .args
            .iter()
            .filter(|a| matches!(a, Arg::Imm(_)))
            .count();
        for k in 0..nimm {
            let c = self.index(k as i64);
            let v = self.def(&format!("memref.load %imm[{c}] : memref<?xf64>"));
            self.imms.push(v);
        }
        let zero = self.index(0);
        let idx = vec![zero; self.elems.len()];
        let dims: Vec<(u64, Vec<i64>)> = (0..self.key.shape.len())
            .map(|d| {
                (
                    self.key.shape[d],
                    self.strides.iter().map(|s| s[d]).collect(),
                )
            })
            .collect();
        match self.key.body {
            Body::Reduce(op) => self.nest(&dims, idx, &mut |g, p| g.reduce(op, p)),
            Body::ActAccum(func) => self.nest(&dims, idx, &mut |g, p| g.act_accum(func, p)),
            _ => match dims.split_last() {
                None => self.element(&idx, false),
                Some(((n, strides), outer)) => {
                    let (n, strides) = (*n, strides.clone());
                    self.nest(outer, idx, &mut |g, p| g.innermost(n, &strides, p));
                }
            },
        }
        self.line("return");
        self.indent = 1;
        self.line("}");
    }

    /// The innermost loop of element-wise work: vectors of `LANES` then a scalar tail.
    fn innermost(&mut self, n: u64, strides: &[i64], p: &[String]) {
        if self.vector && n >= LANES {
            let body = n - n % LANES;
            self.counted(0, body, LANES, strides, p, &mut |g, q| g.element(q, true));
            if body < n {
                self.counted(body, n, 1, strides, p, &mut |g, q| g.element(q, false));
            }
        } else {
            self.counted(0, n, 1, strides, p, &mut |g, q| g.element(q, false));
        }
    }

    /// Nested loops over `dims`, calling `inner` with each operand's element index.
    fn nest(
        &mut self,
        dims: &[(u64, Vec<i64>)],
        idx: Vec<String>,
        inner: &mut dyn FnMut(&mut Self, &[String]),
    ) {
        match dims.split_first() {
            None => inner(self, &idx),
            Some(((n, strides), rest)) => {
                let (n, strides, rest) = (*n, strides.clone(), rest.to_vec());
                self.counted(0, n, 1, &strides, &idx, &mut |g, q| {
                    g.nest(&rest, q.to_vec(), inner)
                });
            }
        }
    }

    /// `scf.for %i = from to to step step { body(idx + i * strides) }`.
    fn counted(
        &mut self,
        from: u64,
        to: u64,
        step: u64,
        strides: &[i64],
        idx: &[String],
        body: &mut dyn FnMut(&mut Self, &[String]),
    ) {
        if to - from == step {
            // One iteration: no loop.
            let q = self.offsets(idx, strides, At::Const(from));
            body(self, &q);
            return;
        }
        let (lo, hi, st) = (
            self.index(from as i64),
            self.index(to as i64),
            self.index(step as i64),
        );
        let i = self.fresh();
        self.line(&format!("scf.for {i} = {lo} to {hi} step {st} {{"));
        self.indent += 1;
        let q = self.offsets(idx, strides, At::Var(&i));
        body(self, &q);
        self.indent -= 1;
        self.line("}");
    }

    /// `idx[m] + i * strides[m]` for every operand (`i` a constant when `constant`).
    fn offsets(&mut self, idx: &[String], strides: &[i64], at: At<'_>) -> Vec<String> {
        let mut out = Vec::with_capacity(idx.len());
        for (m, base) in idx.iter().enumerate() {
            let s = strides[m];
            let step = match at {
                _ if s == 0 => None,
                At::Const(0) => None,
                At::Const(k) => Some(self.index((k as i64).saturating_mul(s))),
                At::Var(i) if s == 1 => Some(i.to_string()),
                At::Var(i) => {
                    let c = self.index(s);
                    Some(self.def(&format!("arith.muli {i}, {c} : index")))
                }
            };
            let Some(step) = step else {
                out.push(base.clone());
                continue;
            };
            out.push(self.def(&format!("arith.addi {base}, {step} : index")));
        }
        out
    }

    /// Argument `arg` as f32 (or `vector<8xf32>`).
    fn load_f32(&mut self, arg: usize, p: &[String], vector: bool) -> String {
        let vty = format!("vector<{LANES}xf32>");
        match (
            self.key.args.get(arg),
            self.mem_index.get(arg).copied().flatten(),
        ) {
            (Some(Arg::Mem { .. }), Some(m)) => {
                let mt = self.memref(m);
                let at = &p[m];
                let scalar = match self.elems[m] {
                    Elem::Bf16 => {
                        let h = self.def(&format!("memref.load %a{m}[{at}] : {mt}"));
                        let w = self.def(&format!("arith.extui {h} : i16 to i32"));
                        let c = self.def("arith.constant 16 : i32");
                        let bits = self.def(&format!("arith.shli {w}, {c} : i32"));
                        self.def(&format!("arith.bitcast {bits} : i32 to f32"))
                    }
                    _ if vector && self.strides[m].last().copied() == Some(2) => {
                        // Every other element: elements 0..LANES and LANES - 1..2 * LANES - 1
                        // loaded (nothing past the last element read), the even ones of the
                        // first and the odd ones of the second kept.
                        let c = self.index(LANES as i64 - 1);
                        let at2 = self.def(&format!("arith.addi {at}, {c} : index"));
                        let lo = self.def(&format!("vector.load %a{m}[{at}] : {mt}, {vty}"));
                        let hi = self.def(&format!("vector.load %a{m}[{at2}] : {mt}, {vty}"));
                        let picks: Vec<String> = (0..LANES / 2)
                            .map(|j| 2 * j)
                            .chain((0..LANES / 2).map(|j| LANES + 2 * j + 1))
                            .map(|j| j.to_string())
                            .collect();
                        return self.def(&format!(
                            "vector.shuffle {lo}, {hi} [{}] : {vty}, {vty}",
                            picks.join(", ")
                        ));
                    }
                    _ if vector && self.strides[m].last().copied().unwrap_or(0) != 0 => {
                        return self.def(&format!("vector.load %a{m}[{at}] : {mt}, {vty}"));
                    }
                    _ => self.def(&format!("memref.load %a{m}[{at}] : {mt}")),
                };
                if vector {
                    self.def(&format!("vector.broadcast {scalar} : f32 to {vty}"))
                } else {
                    scalar
                }
            }
            (Some(Arg::Imm(slot)), _) => {
                let x = self.imms.get(*slot as usize).cloned().unwrap_or_default();
                let v = self.def(&format!("arith.truncf {x} : f64 to f32"));
                if vector {
                    self.def(&format!("vector.broadcast {v} : f32 to {vty}"))
                } else {
                    v
                }
            }
            _ => self.def("arith.constant 0x7FC00000 : f32"),
        }
    }

    fn load_f64(&mut self, arg: usize, p: &[String]) -> String {
        if let Some(Arg::Imm(slot)) = self.key.args.get(arg) {
            return self.imms.get(*slot as usize).cloned().unwrap_or_default();
        }
        let x = self.load_f32(arg, p, false);
        self.def(&format!("arith.extf {x} : f32 to f64"))
    }

    /// Stores an f32 (or vector) value to memory argument `arg`, rounding to its dtype.
    fn store_to(&mut self, arg: usize, p: &[String], v: &str, vector: bool) {
        let Some(m) = self.mem_index.get(arg).copied().flatten() else {
            return;
        };
        let mt = self.memref(m);
        let at = p[m].clone();
        if self.elems[m] == Elem::Bf16 {
            let h = self.bf16_bits(v);
            self.line(&format!("memref.store {h}, %a{m}[{at}] : {mt}"));
        } else if vector {
            let vty = format!("vector<{LANES}x{}>", self.elems[m].mlir());
            self.line(&format!("vector.store {v}, %a{m}[{at}] : {mt}, {vty}"));
        } else {
            self.line(&format!("memref.store {v}, %a{m}[{at}] : {mt}"));
        }
    }

    fn element(&mut self, p: &[String], vector: bool) {
        match self.key.body.clone() {
            Body::Copy { .. } => {
                let (mt, et) = (self.memref(1), self.elems[1].mlir());
                let src_stride = self.strides[1].last().copied().unwrap_or(0);
                let v = if vector && src_stride != 0 {
                    self.def(&format!(
                        "vector.load %a1[{}] : {mt}, vector<{LANES}x{et}>",
                        p[1]
                    ))
                } else {
                    let s = self.def(&format!("memref.load %a1[{}] : {mt}", p[1]));
                    if vector {
                        self.def(&format!(
                            "vector.broadcast {s} : {et} to vector<{LANES}x{et}>"
                        ))
                    } else {
                        s
                    }
                };
                self.store_to(0, p, &v, vector);
            }
            Body::Convert => {
                let v = self.load_f32(1, p, false);
                self.store_to(0, p, &v, false);
            }
            Body::Memset => {
                let v = self.load_f32(1, p, vector);
                self.store_to(0, p, &v, vector);
            }
            Body::Binary(op) => {
                let x = self.load_f32(1, p, vector);
                let y = self.load_f32(2, p, vector);
                let r = self.alu(op, &x, &y, vector);
                self.store_to(0, p, &r, vector);
            }
            Body::Scalar(steps) => {
                let mut x = self.load_f32(1, p, vector);
                for (k, &(op, reverse)) in steps.iter().enumerate() {
                    let c = self.load_f32(2 + k, p, vector);
                    x = if reverse {
                        self.alu(op, &c, &x, vector)
                    } else {
                        self.alu(op, &x, &c, vector)
                    };
                }
                self.store_to(0, p, &x, vector);
            }
            Body::Act(func) => {
                let r = self.act_value(func, p, vector);
                self.store_to(0, p, &r, vector);
            }
            Body::Reduce(_) | Body::ActAccum(_) => {}
        }
    }

    fn alu(&mut self, op: AluOp, x: &str, y: &str, vector: bool) -> String {
        let name = match op {
            AluOp::Add => "addf",
            AluOp::Sub => "subf",
            AluOp::Mul => "mulf",
            AluOp::Div => "divf",
            AluOp::Max => "maximumf",
            // Planning only emits the operations of `alu_supported`.
            _ => "minimumf",
        };
        let ty = if vector {
            format!("vector<{LANES}xf32>")
        } else {
            "f32".into()
        };
        self.def(&format!("arith.{name} {x}, {y} : {ty}"))
    }

    /// `func(src * scale + bias)` in f64 like interp, rounded to f32; with `vector` (only for
    /// the functions `simd_act` admits) on `vector<8xf64>` lanes, each computed as the scalar
    /// form computes it.
    fn act_value(&mut self, func: ActFunc, p: &[String], vector: bool) -> String {
        let (x, scale, bias) = if vector {
            let (f64v, f32v) = (
                format!("vector<{LANES}xf64>"),
                format!("vector<{LANES}xf32>"),
            );
            let x = self.load_f32(1, p, true);
            let x = self.def(&format!("arith.extf {x} : {f32v} to {f64v}"));
            let scale = self.load_f64(2, p);
            let scale = self.def(&format!("vector.broadcast {scale} : f64 to {f64v}"));
            let bias = self.load_f64(3, p);
            let bias = self.def(&format!("vector.broadcast {bias} : f64 to {f64v}"));
            (x, scale, bias)
        } else {
            (
                self.load_f64(1, p),
                self.load_f64(2, p),
                self.load_f64(3, p),
            )
        };
        let (ty, narrow) = if vector {
            (
                format!("vector<{LANES}xf64>"),
                format!("vector<{LANES}xf32>"),
            )
        } else {
            ("f64".to_string(), "f32".to_string())
        };
        let xs = self.def(&format!("arith.mulf {x}, {scale} : {ty}"));
        let y = self.def(&format!("arith.addf {xs}, {bias} : {ty}"));
        let z = match func {
            ActFunc::Identity => y,
            ActFunc::Relu => {
                let zero = self.def("arith.constant 0.0 : f64");
                let zero = if vector {
                    self.def(&format!("vector.broadcast {zero} : f64 to {ty}"))
                } else {
                    zero
                };
                let keep = self.def(&format!("arith.cmpf ugt, {y}, {zero} : {ty}"));
                let keep_ty = if vector {
                    format!("vector<{LANES}xi1>, {ty}")
                } else {
                    ty.clone()
                };
                self.def(&format!("arith.select {keep}, {y}, {zero} : {keep_ty}"))
            }
            ActFunc::Square => self.def(&format!("arith.mulf {y}, {y} : {ty}")),
            f => {
                let code = ALL_ACT_FUNCS.iter().position(|&g| g == f).unwrap_or(0);
                let c = self.def(&format!("arith.constant {code} : i32"));
                self.def(&format!(
                    "func.call @tessera_jit_activation({c}, {y}) : (i32, f64) -> f64"
                ))
            }
        };
        self.def(&format!("arith.truncf {z} : {ty} to {narrow}"))
    }

    /// `scf.for` over the inner dims carrying an f64 accumulator; returns the final value.
    fn accumulate(
        &mut self,
        dims: &[(u64, Vec<i64>)],
        idx: &[String],
        acc: String,
        step: &mut dyn FnMut(&mut Self, &[String], &str) -> String,
    ) -> String {
        match dims.split_first() {
            None => step(self, idx, &acc),
            Some(((n, strides), rest)) => {
                let (n, strides, rest) = (*n, strides.clone(), rest.to_vec());
                let (lo, hi, one) = (self.index(0), self.index(n as i64), self.index(1));
                let (i, a, r) = (self.fresh(), self.fresh(), self.fresh());
                self.line(&format!(
                    "{r} = scf.for {i} = {lo} to {hi} step {one} iter_args({a} = {acc}) -> (f64) {{"
                ));
                self.indent += 1;
                let q = self.offsets(idx, &strides, At::Var(&i));
                let next = self.accumulate(&rest, &q, a, step);
                self.line(&format!("scf.yield {next} : f64"));
                self.indent -= 1;
                self.line("}");
                r
            }
        }
    }

    fn reduce(&mut self, op: ReduceOp, p: &[String]) {
        let ident = match op {
            ReduceOp::Sum => "0.0",
            ReduceOp::Prod => "1.0",
            ReduceOp::Max => "0xFFF0000000000000",
            ReduceOp::Min => "0x7FF0000000000000",
        };
        let init = self.def(&format!("arith.constant {ident} : f64"));
        let inner = self.inner.clone();
        let name = match op {
            ReduceOp::Sum => "addf",
            ReduceOp::Prod => "mulf",
            ReduceOp::Max => "maximumf",
            ReduceOp::Min => "minimumf",
        };
        let total = self.accumulate(&inner, p, init, &mut |g, q, a| {
            let x = g.load_f64(1, q);
            g.def(&format!("arith.{name} {a}, {x} : f64"))
        });
        let r = self.def(&format!("arith.truncf {total} : f64 to f32"));
        self.store_to(0, p, &r, false);
    }

    /// One partition of an accumulating activation: store each result and the f64 sum of the
    /// results (rounded once) to `accum`, the last argument.
    fn act_accum(&mut self, func: ActFunc, p: &[String]) {
        let init = self.def("arith.constant 0.0 : f64");
        let inner = self.inner.clone();
        let total = self.accumulate(&inner, p, init, &mut |g, q, a| {
            let y = g.act_value(func, q, false);
            g.store_to(0, q, &y, false);
            let yd = g.def(&format!("arith.extf {y} : f32 to f64"));
            g.def(&format!("arith.addf {a}, {yd} : f64"))
        });
        let r = self.def(&format!("arith.truncf {total} : f64 to f32"));
        let last = self.key.args.len() - 1;
        self.store_to(last, p, &r, false);
    }

    /// The bf16 encoding (as i16) of an f32 value: NaN keeps its high bits and is made quiet;
    /// otherwise round to nearest, ties to even.
    fn bf16_bits(&mut self, x: &str) -> String {
        let c = |g: &mut Self, v: u32| g.def(&format!("arith.constant {v} : i32"));
        let bits = self.def(&format!("arith.bitcast {x} : f32 to i32"));
        let m_abs = c(self, 0x7fff_ffff);
        let abs = self.def(&format!("arith.andi {bits}, {m_abs} : i32"));
        let inf = c(self, 0x7f80_0000);
        let is_nan = self.def(&format!("arith.cmpi ugt, {abs}, {inf} : i32"));
        let sixteen = c(self, 16);
        let hi = self.def(&format!("arith.shrui {bits}, {sixteen} : i32"));
        let q = c(self, 0x40);
        let quiet = self.def(&format!("arith.ori {hi}, {q} : i32"));
        let rb = c(self, 0x8000);
        let round_bit = self.def(&format!("arith.andi {bits}, {rb} : i32"));
        let zero = c(self, 0);
        let round_set = self.def(&format!("arith.cmpi ne, {round_bit}, {zero} : i32"));
        let rm = c(self, 0x1_7fff);
        let rest = self.def(&format!("arith.andi {bits}, {rm} : i32"));
        let rest_set = self.def(&format!("arith.cmpi ne, {rest}, {zero} : i32"));
        let up = self.def(&format!("arith.andi {round_set}, {rest_set} : i1"));
        let up = self.def(&format!("arith.extui {up} : i1 to i32"));
        let rounded = self.def(&format!("arith.addi {hi}, {up} : i32"));
        let r = self.def(&format!("arith.select {is_nan}, {quiet}, {rounded} : i32"));
        self.def(&format!("arith.trunci {r} : i32 to i16"))
    }
}
