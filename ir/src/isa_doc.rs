//! The generated part of the ISA reference (`docs/isa.md`, between its `generated` markers):
//! the instruction table, every instruction in the text format, and the operation lists, all
//! taken from the definitions in this crate so the page cannot drift from them. The test
//! `ir/tests/isa_reference.rs` fails when the page differs from [`reference`] (run it with
//! `TESSERA_BLESS=1` to rewrite the page).

use crate::isa::{ALL_ACT_FUNCS, ALL_ALU_OPS, ALL_CMP_OPS, ALL_REDUCE_OPS, Op};

/// A kernel using every instruction once (with the engines' usual choices), in the `.tile`
/// text format. It passes the verifier, and runs (`tessera kernel run`).
pub const TOUR: &str = r#"
kernel isa_tour {
  input @x: f32[4, 8]
  output @y: f32[4, 8]
  output @yt: f32[8, 4]
  alloc %a: sbuf f32[4, 8]
  alloc %b: sbuf f32[4, 8]
  alloc %mask: sbuf f32[4, 8]
  alloc %bias: sbuf f32[4, 1]
  alloc %sum: sbuf f32[4, 1]
  alloc %rowmax: sbuf f32[4, 1]
  alloc %prod: psum f32[4, 8]
  alloc %tr: psum f32[8, 4]
  alloc %at: sbuf f32[8, 4]
  dma.dma_copy %a[0:4][0; 1*8], @x[0; 8*4, 1*8]
  pool.iota %b[0:4][0; 1*8], affine(0, 8, [1])
  dve.memset %bias[0:4][0; 1*1], 0.5
  act.activation %b[0:4][0; 1*8], %b[0:4][0; 1*8], exp, scale=0.01, bias=%bias[0:4][0; 1*1], accum=%sum[0:4][0; 1*1]
  dve.tensor_scalar %b[0:4][0; 1*8], %b[0:4][0; 1*8], div %sum[0:4][0; 1*1], sub.rev 1.0
  pool.tensor_tensor add %b[0:4][0; 1*8], %b[0:4][0; 1*8], %a[0:4][0; 1*8]
  dve.tensor_reduce max %rowmax[0:4][0; 1*1], %b[0:4][0; 1*8], axes=1
  pe.nc_matmul %prod[0:4][0; 1*8], %a[0:4][0; 1*4], %b[0:4][0; 1*8] start stop
  dve.tensor_tensor add %b[0:4][0; 1*8], %b[0:4][0; 1*8], %prod[0:4][0; 1*8]
  pool.affine_select %b[0:4][0; 1*8], %b[0:4][0; 1*8], affine(0, 1, [-1]) ge, -inf
  dve.tensor_tensor gt %mask[0:4][0; 1*8], %a[0:4][0; 1*8], %rowmax[0:4][0; 0*8]
  dve.select %b[0:4][0; 1*8], %mask[0:4][0; 1*8], %a[0:4][0; 1*8], %b[0:4][0; 1*8]
  pe.nc_transpose %tr[0:8][0; 1*4], %a[0:4][0; 1*8]
  act.tensor_copy %at[0:8][0; 1*4], %tr[0:8][0; 1*4]
  dma.dma_copy @y[0; 8*4, 1*8], %b[0:4][0; 1*8]
  dma.dma_copy @yt[0; 4*8, 1*4], %at[0:8][0; 1*4]
  free %at
  free %tr
  free %prod
  free %rowmax
  free %sum
  free %bias
  free %mask
  free %b
  free %a
}
"#;

/// What an instruction does, one line, as the reference table says it.
pub fn summary(op: &Op) -> &'static str {
    match op {
        Op::Alloc { .. } => "start of a buffer's lifetime: its memory is reserved and poisoned",
        Op::Free { .. } => "end of a buffer's lifetime",
        Op::DmaCopy { .. } => {
            "copy element by element in element order, converting dtype; HBM<->SBUF, SBUF<->SBUF, HBM<->HBM"
        }
        Op::Matmul { .. } => {
            "`dst[M,N] (+)= stationary[K,M]^T . moving[K,N]`, K on partitions; `start` overwrites, otherwise accumulates; `stop` ends the group"
        }
        Op::Transpose { .. } => "`dst[f,p] = src[p,f]`, src in SBUF (<= 128 x 128), dst in PSUM",
        Op::Activation { .. } => {
            "`dst = func(src * scale + bias)`; scale/bias immediate or per-partition `[P,1]`; `accum[p]` = sum of partition p's results"
        }
        Op::TensorTensor { .. } => "`dst = lhs op rhs`, element-wise",
        Op::TensorScalar { .. } => {
            "`dst = (src op0 s0) op1 s1`; a step's operand is an immediate or per-partition `[P,1]`; `.rev` swaps its operands (`s op x`)"
        }
        Op::TensorReduce { .. } => {
            "reduce the trailing `axes` free dims of src (sum, max, min, prod) into dst"
        }
        Op::TensorCopy { .. } => "`dst = src` with dtype conversion (e.g. PSUM fp32 -> SBUF bf16)",
        Op::Memset { .. } => "`dst = value`, rounded to dst's dtype",
        Op::Iota { .. } => {
            "`dst[p, i..] = b + cp*p + sum c_k i_k` (p relative to dst's first partition)"
        }
        Op::AffineSelect { .. } => {
            "`dst = (expr cmp 0) ? src : fill`; e.g. a causal mask keeps `p - j >= 0`"
        }
        Op::Select { .. } => "`dst = pred != 0 ? on_true : on_false`",
    }
}

fn names<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> String {
    all.iter()
        .map(|&x| format!("`{}`", name(x)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The generated Markdown (without the markers).
pub fn reference() -> String {
    let mut out = String::new();
    out.push_str("| opcode | engines | meaning |\n|---|---|---|\n");
    let program = match crate::text::parse(TOUR, "isa_tour.tile") {
        Ok(p) => p,
        Err(e) => return format!("the tour does not parse: {e}\n"),
    };
    let mut seen = std::collections::BTreeSet::new();
    for inst in &program.insts {
        let op = &inst.op;
        if matches!(op, Op::Alloc { .. } | Op::Free { .. }) || !seen.insert(op.opcode()) {
            continue;
        }
        let engines: Vec<String> = op
            .allowed_engines()
            .iter()
            .map(|e| e.name().to_uppercase())
            .collect();
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            op.opcode(),
            engines.join(", "),
            summary(op)
        ));
    }
    out.push_str(
        "\nEvery instruction in the text format (`docs/tile-format.md`), in a kernel that passes \
         the verifier and runs (`tessera kernel run`):\n\n```text\n",
    );
    out.push_str(TOUR.trim_start_matches('\n'));
    out.push_str("```\n\n");
    out.push_str(&format!(
        "ALU operations (`tensor_tensor`, `tensor_scalar`): {}.\n\n",
        names(&ALL_ALU_OPS, |o| o.name())
    ));
    out.push_str(&format!(
        "Activation functions: {}.\n\n",
        names(&ALL_ACT_FUNCS, |f| f.name())
    ));
    out.push_str(&format!(
        "Reductions (`tensor_reduce`): {}. Comparisons (`affine_select`): {}.\n",
        names(&ALL_REDUCE_OPS, |o| o.name()),
        names(&ALL_CMP_OPS, |o| o.name())
    ));
    out
}
