//! Cranelift code generation: one native function per [`KernelKey`].
//!
//! Every kernel has the signature `extern "C" fn(ptrs: *const *mut u8, imms: *const f64)`:
//! `ptrs` holds the byte address of element 0 of each memory operand (destination first) and
//! `imms` the immediates. The body is a nest of counted loops, one per dimension of the key's
//! shape, each advancing every operand's pointer by its byte stride. The innermost loop of f32
//! element-wise work runs four lanes at a time (`f32x4` loads, arithmetic and stores; a source
//! with stride 0 is splatted) followed by an unrolled scalar tail.
//!
//! Arithmetic follows interp's rules (`interp::semantics`): f32 element-wise operations are
//! single f32 instructions, which equal interp's f64-then-round for add/sub/mul/div (binary64 has
//! more than twice binary32's precision, so the double rounding is innocuous) and for max/min
//! (Cranelift's `fmax`/`fmin` propagate NaN and order -0 below +0, as interp's `max`/`min` do).
//! Activations compute `x * scale + bias` in f64 exactly as interp does; relu, identity and
//! square are inline, every other function calls back into [`crate::interp::semantics::activation`] so the
//! results are bit-identical. Reductions accumulate in f64 in element order and round once.
//! Stores to bf16 round the f32 value to nearest even with the same bit rule as
//! `half::bf16::from_f32` (the rule `DType::encode` uses).

use super::plan::{Arg, Body, KernelKey};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, ConstantData, Endianness, FuncRef, InstBuilder, MemFlagsData, Type, UserFuncName,
    Value, types,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};
use tessera_ir::isa::ALL_ACT_FUNCS;
use tessera_ir::{ActFunc, AluOp, DType, ReduceOp};

/// A compiled kernel.
pub(crate) type KernelFn = unsafe extern "C" fn(*const *mut u8, *const f64);

/// The activation callback, for code generators that register it by address.
#[cfg(feature = "mlir")]
pub(crate) const ACTIVATION_CALLBACK: extern "C" fn(u32, f64) -> f64 = tessera_jit_activation;

/// The activation callback the generated code imports: interp's definition of every function.
extern "C" fn tessera_jit_activation(func: u32, x: f64) -> f64 {
    match ALL_ACT_FUNCS.get(func as usize) {
        Some(&f) => crate::interp::semantics::activation(f, x),
        None => f64::NAN,
    }
}

/// The Cranelift JIT module and the contexts reused across compilations.
pub(crate) struct Compiler {
    module: JITModule,
    ctx: cranelift_codegen::Context,
    fctx: FunctionBuilderContext,
    activation: FuncId,
    next: u32,
}

impl Compiler {
    /// A JIT for the host machine, optimising for speed.
    pub fn new() -> Result<Self, String> {
        let mut flags = settings::builder();
        for (k, v) in [
            ("opt_level", "speed"),
            ("use_colocated_libcalls", "false"),
            ("is_pic", "false"),
        ] {
            flags.set(k, v).map_err(|e| e.to_string())?;
        }
        let isa = cranelift_native::builder()
            .map_err(|e| format!("host machine is not supported: {e}"))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| e.to_string())?;
        let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
        builder.symbol(
            "tessera_jit_activation",
            tessera_jit_activation as *const u8,
        );
        let mut module = JITModule::new(builder);
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(types::I32));
        sig.params.push(AbiParam::new(types::F64));
        sig.returns.push(AbiParam::new(types::F64));
        let activation = module
            .declare_function("tessera_jit_activation", Linkage::Import, &sig)
            .map_err(|e| e.to_string())?;
        Ok(Compiler {
            ctx: module.make_context(),
            module,
            fctx: FunctionBuilderContext::new(),
            activation,
            next: 0,
        })
    }

    /// Compiles the kernel for `key`.
    pub fn compile(&mut self, key: &KernelKey) -> Result<KernelFn, String> {
        let tc = self.module.target_config();
        let ptr = tc.pointer_type();
        let mut sig = self.module.make_signature();
        sig.params.push(AbiParam::new(ptr));
        sig.params.push(AbiParam::new(ptr));
        let name = format!("kernel{}", self.next);
        self.next += 1;
        let id = self
            .module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(|e| e.to_string())?;
        self.module.clear_context(&mut self.ctx);
        self.ctx.func.signature = sig;
        self.ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let act = matches!(key.body, Body::Act(_) | Body::ActAccum(_))
                .then(|| self.module.declare_func_in_func(self.activation, b.func));
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let (ptrs, imms) = (b.block_params(entry)[0], b.block_params(entry)[1]);
            let mut g = Gen::new(key, ptr, act);
            g.prologue(&mut b, ptrs, imms);
            g.body(&mut b);
            b.ins().return_(&[]);
            b.seal_all_blocks();
            b.finalize(tc);
        }
        self.module
            .define_function(id, &mut self.ctx)
            .map_err(|e| format!("{e:?}"))?;
        self.module.clear_context(&mut self.ctx);
        self.module
            .finalize_definitions()
            .map_err(|e| e.to_string())?;
        let code = self.module.get_finalized_function(id);
        // SAFETY: `code` is the entry of the function just defined with the signature
        // (pointer, pointer) -> () in the ISA's default calling convention, which is the C
        // convention of the host; the module owning the code lives as long as `self`.
        Ok(unsafe { std::mem::transmute::<*const u8, KernelFn>(code) })
    }
}

/// Vectors an iteration of a long vectorised innermost loop.
const VECTOR_UNROLL: u64 = 4;

/// Innermost loops of at most this many scalar elements are unrolled.
const UNROLL: u64 = 16;

/// The operands' pointers `t` steps of `strides` past `ptrs`.
fn offsets(b: &mut FunctionBuilder<'_>, ptrs: &[Value], strides: &[i64], t: i64) -> Vec<Value> {
    ptrs.iter()
        .zip(strides)
        .map(|(&v, &s)| b.ins().iadd_imm_s(v, s * t))
        .collect()
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Generation state of one kernel.
struct Gen<'k> {
    key: &'k KernelKey,
    ptr: Type,
    act: Option<FuncRef>,
    /// For each argument: its index among the memory operands (for `Arg::Mem`).
    mem_index: Vec<Option<usize>>,
    /// Base pointers of the memory operands, loaded in the entry block.
    bases: Vec<Value>,
    /// Immediates as f64, loaded in the entry block.
    imms: Vec<Value>,
    simd: bool,
}

/// Element-wise operations compiled inline.
pub(crate) fn alu_supported(op: AluOp) -> bool {
    matches!(
        op,
        AluOp::Add | AluOp::Sub | AluOp::Mul | AluOp::Div | AluOp::Max | AluOp::Min
    )
}

impl<'k> Gen<'k> {
    fn new(key: &'k KernelKey, ptr: Type, act: Option<FuncRef>) -> Self {
        let mut n = 0;
        let mem_index = key
            .args
            .iter()
            .map(|a| match a {
                Arg::Mem { .. } => {
                    n += 1;
                    Some(n - 1)
                }
                Arg::Imm(_) => None,
            })
            .collect();
        Gen {
            key,
            ptr,
            act,
            mem_index,
            bases: Vec::new(),
            imms: Vec::new(),
            simd: simd_ok(key),
        }
    }

    fn prologue(&mut self, b: &mut FunctionBuilder<'_>, ptrs: Value, imms: Value) {
        let w = self.ptr.bytes() as i32;
        let nmem = self.mem_index.iter().flatten().count();
        for k in 0..nmem {
            self.bases
                .push(b.ins().load(self.ptr, flags(), ptrs, k as i32 * w));
        }
        let nimm = self
            .key
            .args
            .iter()
            .filter(|a| matches!(a, Arg::Imm(_)))
            .count();
        for k in 0..nimm {
            self.imms
                .push(b.ins().load(types::F64, flags(), imms, k as i32 * 8));
        }
    }

    /// Loop dimensions with the strides of the memory operands.
    fn dims(&self) -> Vec<(u64, Vec<i64>)> {
        (0..self.key.shape.len())
            .map(|d| {
                let strides = self
                    .key
                    .args
                    .iter()
                    .filter_map(|a| match a {
                        Arg::Mem { strides, .. } => Some(strides[d]),
                        Arg::Imm(_) => None,
                    })
                    .collect();
                (self.key.shape[d], strides)
            })
            .collect()
    }

    fn body(&self, b: &mut FunctionBuilder<'_>) {
        let dims = self.dims();
        let bases = self.bases.clone();
        match self.key.body {
            Body::Reduce(op) => {
                self.nest(b, &dims, bases, &mut |b, p| self.reduce(b, op, p));
                return;
            }
            Body::ActAccum(func) => {
                self.nest(b, &dims, bases, &mut |b, p| self.act_accum(b, func, p));
                return;
            }
            _ => {}
        }
        match dims.split_last() {
            None => self.element(b, &bases, false),
            Some(((n, strides), outer)) => {
                let (n, strides) = (*n, strides.clone());
                self.nest(b, outer, bases, &mut |b, p| {
                    if self.simd && n >= 4 {
                        let vstrides: Vec<i64> = strides.iter().map(|s| s * 4).collect();
                        // Long rows: VECTOR_UNROLL vectors an iteration (fewer loop
                        // instructions per vector), then the remaining vectors one at a time.
                        let wide = match n / 4 / VECTOR_UNROLL {
                            w if w >= 2 => w,
                            _ => 0,
                        };
                        let mut start = p.to_vec();
                        if wide > 0 {
                            let ustrides: Vec<i64> =
                                vstrides.iter().map(|s| s * VECTOR_UNROLL as i64).collect();
                            start = self.counted(b, wide, &ustrides, start, &mut |b, q| {
                                for t in 0..VECTOR_UNROLL as i64 {
                                    let q = offsets(b, q, &vstrides, t);
                                    self.element(b, &q, true);
                                }
                            });
                        }
                        let done = wide * VECTOR_UNROLL;
                        let after = self.counted(b, n / 4 - done, &vstrides, start, &mut |b, q| {
                            self.element(b, q, true)
                        });
                        for t in 0..(n % 4) as i64 {
                            let q = offsets(b, &after, &strides, t);
                            self.element(b, &q, false);
                        }
                    } else if n <= UNROLL {
                        // Short scalar rows (a transposing copy's tiles): unrolled, the
                        // offsets folded into the loads' and stores' addresses.
                        for t in 0..n as i64 {
                            let q = offsets(b, p, &strides, t);
                            self.element(b, &q, false);
                        }
                    } else {
                        self.counted(b, n, &strides, p.to_vec(), &mut |b, q| {
                            self.element(b, q, false)
                        });
                    }
                });
            }
        }
    }

    /// Nested counted loops over `dims`, calling `inner` with the operands' pointers.
    fn nest(
        &self,
        b: &mut FunctionBuilder<'_>,
        dims: &[(u64, Vec<i64>)],
        ptrs: Vec<Value>,
        inner: &mut dyn FnMut(&mut FunctionBuilder<'_>, &[Value]),
    ) {
        match dims.split_first() {
            None => inner(b, &ptrs),
            Some(((n, strides), rest)) => {
                self.counted(b, *n, strides, ptrs, &mut |b, p| {
                    self.nest(b, rest, p.to_vec(), inner)
                });
            }
        }
    }

    /// `for i in 0..n { body(ptrs); ptrs += strides }`; returns the pointers after the loop.
    fn counted(
        &self,
        b: &mut FunctionBuilder<'_>,
        n: u64,
        strides: &[i64],
        ptrs: Vec<Value>,
        body: &mut dyn FnMut(&mut FunctionBuilder<'_>, &[Value]),
    ) -> Vec<Value> {
        if n == 1 {
            body(b, &ptrs);
            return ptrs
                .iter()
                .zip(strides)
                .map(|(&p, &s)| b.ins().iadd_imm_s(p, s))
                .collect();
        }
        let i = b.declare_var(types::I64);
        let zero = b.ins().iconst(types::I64, 0);
        b.def_var(i, zero);
        let vars: Vec<_> = ptrs
            .iter()
            .map(|&p| {
                let v = b.declare_var(self.ptr);
                b.def_var(v, p);
                v
            })
            .collect();
        let (header, body_block, exit) = (b.create_block(), b.create_block(), b.create_block());
        b.ins().jump(header, &[]);
        b.switch_to_block(header);
        let iv = b.use_var(i);
        let more = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, iv, n as i64);
        b.ins().brif(more, body_block, &[], exit, &[]);
        b.switch_to_block(body_block);
        let cur: Vec<Value> = vars.iter().map(|&v| b.use_var(v)).collect();
        body(b, &cur);
        for (&v, &s) in vars.iter().zip(strides) {
            let p = b.use_var(v);
            let next = b.ins().iadd_imm_s(p, s);
            b.def_var(v, next);
        }
        let iv = b.use_var(i);
        let next = b.ins().iadd_imm_s(iv, 1);
        b.def_var(i, next);
        b.ins().jump(header, &[]);
        b.switch_to_block(exit);
        vars.iter().map(|&v| b.use_var(v)).collect()
    }

    fn dtype(&self, arg: usize) -> Option<DType> {
        match self.key.args.get(arg)? {
            Arg::Mem { dtype, .. } => Some(*dtype),
            Arg::Imm(_) => None,
        }
    }

    fn inner_stride(&self, arg: usize) -> i64 {
        match self.key.args.get(arg) {
            Some(Arg::Mem { strides, .. }) => strides.last().copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// Argument `arg` as f32 (or f32x4 when `vector`).
    fn load_f32(
        &self,
        b: &mut FunctionBuilder<'_>,
        arg: usize,
        p: &[Value],
        vector: bool,
    ) -> Value {
        let v = match (
            self.key.args.get(arg),
            self.mem_index.get(arg).copied().flatten(),
        ) {
            (Some(Arg::Mem { dtype, .. }), Some(m)) => {
                let at = p[m];
                match dtype {
                    DType::Bf16 => {
                        let h = b.ins().load(types::I16, flags(), at, 0);
                        let w = b.ins().uextend(types::I32, h);
                        let bits = b.ins().ishl_imm_u(w, 16);
                        b.ins().bitcast(types::F32, MemFlagsData::new(), bits)
                    }
                    _ if vector && self.inner_stride(arg) == 8 => {
                        // Every other element (a stride-2 window): elements 0..=3 and 3..=6
                        // loaded (no byte past element 6 read), lanes 0, 2 of the first and
                        // 1, 3 of the second kept.
                        let little = MemFlagsData::new().with_endianness(Endianness::Little);
                        let lo = b.ins().load(types::I8X16, flags(), at, 0);
                        let hi = b.ins().load(types::I8X16, flags(), at, 12);
                        const EVEN: [u8; 16] =
                            [0, 1, 2, 3, 8, 9, 10, 11, 20, 21, 22, 23, 28, 29, 30, 31];
                        let mask = b
                            .func
                            .dfg
                            .immediates
                            .push(ConstantData::from(EVEN.to_vec()));
                        let r = b.ins().shuffle(lo, hi, mask);
                        return b.ins().bitcast(types::F32X4, little, r);
                    }
                    _ if vector && self.inner_stride(arg) != 0 => {
                        return b.ins().load(types::F32X4, flags(), at, 0);
                    }
                    _ => b.ins().load(types::F32, flags(), at, 0),
                }
            }
            (Some(Arg::Imm(slot)), _) => {
                let x = self.imms[*slot as usize];
                b.ins().fdemote(types::F32, x)
            }
            _ => b.ins().f32const(f32::NAN),
        };
        if vector {
            b.ins().splat(types::F32X4, v)
        } else {
            v
        }
    }

    /// Argument `arg` as f64 (scalar only).
    fn load_f64(&self, b: &mut FunctionBuilder<'_>, arg: usize, p: &[Value]) -> Value {
        if let Some(Arg::Imm(slot)) = self.key.args.get(arg) {
            return self.imms[*slot as usize];
        }
        let x = self.load_f32(b, arg, p, false);
        b.ins().fpromote(types::F64, x)
    }

    /// Stores an f32 (or f32x4) value to the destination, rounding to its dtype.
    fn store(&self, b: &mut FunctionBuilder<'_>, p: &[Value], v: Value) {
        self.store_to(b, 0, p, v);
    }

    /// Stores an f32 (or f32x4) value to memory argument `arg`, rounding to its dtype.
    fn store_to(&self, b: &mut FunctionBuilder<'_>, arg: usize, p: &[Value], v: Value) {
        let Some(m) = self.mem_index.get(arg).copied().flatten() else {
            return;
        };
        let at = p[m];
        if self.dtype(arg) == Some(DType::Bf16) {
            let h = bf16_bits(b, v);
            b.ins().store(flags(), h, at, 0);
        } else {
            b.ins().store(flags(), v, at, 0);
        }
    }

    fn element(&self, b: &mut FunctionBuilder<'_>, p: &[Value], vector: bool) {
        match &self.key.body {
            Body::Copy { width } => {
                let ty = match (width, vector) {
                    (4, true) => types::I32X4,
                    (1, _) => types::I8,
                    (2, _) => types::I16,
                    (4, _) => types::I32,
                    _ => types::I64,
                };
                let v = if vector && self.inner_stride(1) == 0 {
                    let s = b.ins().load(types::I32, flags(), p[1], 0);
                    b.ins().splat(types::I32X4, s)
                } else {
                    b.ins().load(ty, flags(), p[1], 0)
                };
                b.ins().store(flags(), v, p[0], 0);
            }
            Body::Convert => {
                let v = self.load_f32(b, 1, p, false);
                self.store(b, p, v);
            }
            Body::Memset => {
                let v = self.load_f32(b, 1, p, vector);
                self.store(b, p, v);
            }
            Body::Binary(op) => {
                let x = self.load_f32(b, 1, p, vector);
                let y = self.load_f32(b, 2, p, vector);
                let r = alu(b, *op, x, y);
                self.store(b, p, r);
            }
            Body::Scalar(steps) => {
                let mut x = self.load_f32(b, 1, p, vector);
                for (k, &(op, reverse)) in steps.iter().enumerate() {
                    let c = self.load_f32(b, 2 + k, p, vector);
                    x = if reverse {
                        alu(b, op, c, x)
                    } else {
                        alu(b, op, x, c)
                    };
                }
                self.store(b, p, x);
            }
            Body::Act(func) if vector => {
                let r = self.act_value_x4(b, *func, p);
                self.store(b, p, r);
            }
            Body::Act(func) => {
                let r = self.act_value(b, *func, p);
                self.store(b, p, r);
            }
            Body::Reduce(_) | Body::ActAccum(_) => {}
        }
    }

    /// `func(src * scale + bias)` in f64 like interp, rounded to f32.
    fn act_value(&self, b: &mut FunctionBuilder<'_>, func: ActFunc, p: &[Value]) -> Value {
        let x = self.load_f64(b, 1, p);
        let scale = self.load_f64(b, 2, p);
        let bias = self.load_f64(b, 3, p);
        let xs = b.ins().fmul(x, scale);
        let y = b.ins().fadd(xs, bias);
        let z = match func {
            ActFunc::Identity => y,
            ActFunc::Relu => {
                let zero = b.ins().f64const(0.0);
                let keep = b.ins().fcmp(FloatCC::UnorderedOrGreaterThan, y, zero);
                b.ins().select(keep, y, zero)
            }
            ActFunc::Square => b.ins().fmul(y, y),
            f => {
                let code = ALL_ACT_FUNCS.iter().position(|&g| g == f).unwrap_or(0);
                let code = b.ins().iconst(types::I32, code as i64);
                match self.act {
                    Some(callee) => {
                        let call = b.ins().call(callee, &[code, y]);
                        b.inst_results(call)[0]
                    }
                    None => y,
                }
            }
        };
        b.ins().fdemote(types::F32, z)
    }

    /// [`Self::act_value`] on four lanes, for the functions [`simd_act`] admits: the f32x4
    /// source is widened to two f64x2 halves, each computed with the same f64 operations as
    /// the scalar form (so every lane is bit-identical to it), narrowed and joined again.
    fn act_value_x4(&self, b: &mut FunctionBuilder<'_>, func: ActFunc, p: &[Value]) -> Value {
        let little = MemFlagsData::new().with_endianness(Endianness::Little);
        let x = self.load_f32(b, 1, p, true);
        let scale = self.load_f64(b, 2, p);
        let scale = b.ins().splat(types::F64X2, scale);
        let bias = self.load_f64(b, 3, p);
        let bias = b.ins().splat(types::F64X2, bias);
        // Byte shuffles (`shuffle` picks bytes of `a ++ b` by index).
        let shuffle = |b: &mut FunctionBuilder<'_>, u: Value, v: Value, idx: [u8; 16]| {
            let u = b.ins().bitcast(types::I8X16, little, u);
            let v = b.ins().bitcast(types::I8X16, little, v);
            let mask = b.func.dfg.immediates.push(ConstantData::from(idx.to_vec()));
            let r = b.ins().shuffle(u, v, mask);
            b.ins().bitcast(types::F32X4, little, r)
        };
        const HIGH_PAIR: [u8; 16] = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];
        const JOIN_LOW_PAIRS: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23];
        let high = shuffle(b, x, x, HIGH_PAIR);
        let half = |b: &mut FunctionBuilder<'_>, v: Value| {
            let v = b.ins().fvpromote_low(v);
            let xs = b.ins().fmul(v, scale);
            let y = b.ins().fadd(xs, bias);
            let y = match func {
                ActFunc::Relu => {
                    let zero = b.ins().f64const(0.0);
                    let zero = b.ins().splat(types::F64X2, zero);
                    let keep = b.ins().fcmp(FloatCC::UnorderedOrGreaterThan, y, zero);
                    let keep = b.ins().bitcast(types::F64X2, little, keep);
                    b.ins().bitselect(keep, y, zero)
                }
                ActFunc::Square => b.ins().fmul(y, y),
                // `simd_act` admits Identity, Relu and Square only.
                _ => y,
            };
            b.ins().fvdemote(y)
        };
        let lo = half(b, x);
        let hi = half(b, high);
        shuffle(b, lo, hi, JOIN_LOW_PAIRS)
    }

    /// One partition of an accumulating activation: store each result, sum them in f64 and
    /// store the sum (rounded once) to `accum`, the last argument.
    fn act_accum(&self, b: &mut FunctionBuilder<'_>, func: ActFunc, p: &[Value]) {
        let acc = b.declare_var(types::F64);
        let zero = b.ins().f64const(0.0);
        b.def_var(acc, zero);
        let dims = self.key.inner.clone();
        self.nest(b, &dims, p.to_vec(), &mut |b, q| {
            let y = self.act_value(b, func, q);
            self.store(b, q, y);
            let y = b.ins().fpromote(types::F64, y);
            let a = b.use_var(acc);
            let sum = b.ins().fadd(a, y);
            b.def_var(acc, sum);
        });
        let a = b.use_var(acc);
        let r = b.ins().fdemote(types::F32, a);
        self.store_to(b, self.key.args.len() - 1, p, r);
    }

    fn reduce(&self, b: &mut FunctionBuilder<'_>, op: ReduceOp, p: &[Value]) {
        let ident = match op {
            ReduceOp::Sum => 0.0,
            ReduceOp::Prod => 1.0,
            ReduceOp::Max => f64::NEG_INFINITY,
            ReduceOp::Min => f64::INFINITY,
        };
        let acc = b.declare_var(types::F64);
        let init = b.ins().f64const(ident);
        b.def_var(acc, init);
        let dims = self.key.inner.clone();
        self.nest(b, &dims, p.to_vec(), &mut |b, q| {
            let x = self.load_f64(b, 1, q);
            let a = b.use_var(acc);
            let r = match op {
                ReduceOp::Sum => b.ins().fadd(a, x),
                ReduceOp::Prod => b.ins().fmul(a, x),
                ReduceOp::Max => b.ins().fmax(a, x),
                ReduceOp::Min => b.ins().fmin(a, x),
            };
            b.def_var(acc, r);
        });
        let a = b.use_var(acc);
        let r = b.ins().fdemote(types::F32, a);
        self.store(b, p, r);
    }
}

fn alu(b: &mut FunctionBuilder<'_>, op: AluOp, x: Value, y: Value) -> Value {
    match op {
        AluOp::Add => b.ins().fadd(x, y),
        AluOp::Sub => b.ins().fsub(x, y),
        AluOp::Mul => b.ins().fmul(x, y),
        AluOp::Div => b.ins().fdiv(x, y),
        AluOp::Max => b.ins().fmax(x, y),
        // Planning only emits the operations of `alu_supported`.
        _ => b.ins().fmin(x, y),
    }
}

/// The bf16 encoding (as i16) of an f32 value: NaN keeps its high bits and is made quiet;
/// otherwise round to nearest, ties to even.
fn bf16_bits(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let bits = b.ins().bitcast(types::I32, MemFlagsData::new(), x);
    let abs = b.ins().band_imm_u(bits, 0x7fff_ffff);
    let is_nan = b
        .ins()
        .icmp_imm_s(IntCC::UnsignedGreaterThan, abs, 0x7f80_0000);
    let hi = b.ins().ushr_imm_u(bits, 16);
    let quiet = b.ins().bor_imm_u(hi, 0x40);
    let round_bit = b.ins().band_imm_u(bits, 0x8000);
    let round_set = b.ins().icmp_imm_s(IntCC::NotEqual, round_bit, 0);
    let rest = b.ins().band_imm_u(bits, 0x1_7fff);
    let rest_set = b.ins().icmp_imm_s(IntCC::NotEqual, rest, 0);
    let up = b.ins().band(round_set, rest_set);
    let up = b.ins().uextend(types::I32, up);
    let rounded = b.ins().iadd(hi, up);
    let r = b.ins().select(is_nan, quiet, rounded);
    b.ins().ireduce(types::I16, r)
}

/// The activation functions with a vector form: those computed inline (no call per element).
pub(crate) fn simd_act(func: ActFunc) -> bool {
    matches!(func, ActFunc::Identity | ActFunc::Relu | ActFunc::Square)
}

/// Whether the innermost loop may run four f32 lanes at a time: every memory operand is a
/// 4-byte type, the destination is contiguous and each source contiguous or broadcast (stride
/// 0), and the body has an `f32x4` form.
pub(crate) fn simd_ok(key: &KernelKey) -> bool {
    let body_ok = match &key.body {
        Body::Copy { width } => *width == 4,
        Body::Binary(op) => alu_supported(*op),
        Body::Scalar(steps) => steps.iter().all(|(op, _)| alu_supported(*op)),
        Body::Memset => true,
        Body::Act(func) => simd_act(*func),
        Body::Convert | Body::Reduce(_) | Body::ActAccum(_) => false,
    };
    if !body_ok || key.shape.is_empty() {
        return false;
    }
    key.args.iter().enumerate().all(|(i, a)| match a {
        Arg::Imm(_) => true,
        Arg::Mem { dtype, strides } => {
            let inner = strides.last().copied().unwrap_or(0);
            let four = dtype.size_bytes() == 4
                && (matches!(key.body, Body::Copy { .. }) || *dtype == DType::F32);
            // Sources read through `load_f32` may also take every other element.
            let halves = i > 0 && inner == 8 && !matches!(key.body, Body::Copy { .. });
            four && (inner == 4 || (i > 0 && inner == 0) || halves)
        }
    })
}
