//! Import of Einsum (opset 12) as Transpose, Reshape, ReduceSum and MatMul graph ops.
//!
//! Per onnx/docs/Operators.md (Einsum): the equation is `term1,term2,...->output` in numpy's
//! notation, lower and upper case letters are labels, `...` stands for the broadcast leading
//! axes, and without `->` the output is `...` followed by the labels used exactly once, in
//! alphabetical order. Operands are contracted pairwise, left to right: a label only one
//! operand has and nothing later needs is summed away first (ReduceSum); then both operands
//! are permuted to `[batch..., kept, contracted]` and `[batch..., contracted, kept]`, the kept
//! and contracted groups flattened, and one MatMul (batch axes broadcast) does the rest (a
//! broadcast Mul when nothing is summed: outer and element-wise products).
//! What remains is summed over labels the output lacks and permuted into the output's order.
//! A label repeated within one term (a diagonal, `ii->i`) is taken first, as a product with an
//! identity mask summed over one of the two axes.

use super::ImportError;
use super::import::{Importer, NodeCx};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{BinaryOp, GraphOp, ReduceKind, ReduceSpec, ValueId};
use tessera_ir::host::HostTensor;

/// An axis label: a letter of the equation, or the `k`-th axis of the ellipsis counted from its
/// last axis (so ellipses of different lengths align from the right, as numpy broadcasts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Label {
    /// `...` axis `k` from the end.
    Ellipsis(usize),
    /// A letter.
    Letter(char),
}

/// One side of the equation: its labels in order, and whether it held `...` (and where).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    /// Letters before the ellipsis (all of them when there is none).
    pub before: Vec<char>,
    /// Letters after the ellipsis, when there is one.
    pub after: Option<Vec<char>>,
}

impl Term {
    /// The labels of an operand of rank `rank` (the ellipsis takes what the letters leave).
    fn labels(&self, rank: usize) -> Result<Vec<Label>, String> {
        let letters = self.before.len() + self.after.as_ref().map_or(0, Vec::len);
        let mut out: Vec<Label> = self.before.iter().map(|&c| Label::Letter(c)).collect();
        match &self.after {
            None if letters != rank => Err(format!(
                "the term has {letters} labels for an operand of rank {rank}"
            )),
            None => Ok(out),
            Some(_) if letters > rank => Err(format!(
                "the term has {letters} labels for an operand of rank {rank}"
            )),
            Some(after) => {
                let e = rank - letters;
                out.extend((0..e).rev().map(Label::Ellipsis));
                out.extend(after.iter().map(|&c| Label::Letter(c)));
                Ok(out)
            }
        }
    }
}

/// A parsed equation: the input terms and the explicit output, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equation {
    /// One term per operand.
    pub inputs: Vec<Term>,
    /// The output after `->`; `None` in implicit mode.
    pub output: Option<Term>,
}

fn parse_term(s: &str) -> Result<Term, String> {
    let (before, after) = match s.split_once("...") {
        Some((b, a)) => (b, Some(a)),
        None => (s, None),
    };
    let letters = |t: &str| -> Result<Vec<char>, String> {
        t.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    Ok(c)
                } else {
                    Err(format!("`{c}` is not a label (letters and `...` only)"))
                }
            })
            .collect()
    };
    Ok(Term {
        before: letters(before)?,
        after: after.map(letters).transpose()?,
    })
}

/// Parses an Einsum equation (spaces are ignored).
pub fn parse(equation: &str) -> Result<Equation, String> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    Ok(Equation {
        inputs: lhs.split(',').map(parse_term).collect::<Result<_, _>>()?,
        output: rhs.map(parse_term).transpose()?,
    })
}

/// An operand during the contraction: its value and one label per axis.
struct Operand {
    v: ValueId,
    labels: Vec<Label>,
}

fn sub(cx: &NodeCx, step: &str) -> String {
    format!("{}/{step}", cx.name)
}

fn permute(
    imp: &mut Importer,
    cx: &NodeCx,
    step: &str,
    op: Operand,
    order: &[Label],
) -> Result<Operand, ImportError> {
    let perm: Vec<usize> = order
        .iter()
        .map(|l| op.labels.iter().position(|m| m == l).unwrap_or(usize::MAX))
        .collect();
    if perm.iter().enumerate().all(|(i, &p)| i == p) && perm.len() == op.labels.len() {
        return Ok(op);
    }
    let v = imp.emit(cx, &sub(cx, step), GraphOp::Transpose { perm }, &[op.v])?;
    Ok(Operand {
        v,
        labels: order.to_vec(),
    })
}

/// Sums `op` over every label `keep` rejects.
fn sum_out(
    imp: &mut Importer,
    cx: &NodeCx,
    step: &str,
    op: Operand,
    keep: impl Fn(&Label) -> bool,
) -> Result<Operand, ImportError> {
    let axes: Vec<usize> = (0..op.labels.len())
        .filter(|&i| !keep(&op.labels[i]))
        .collect();
    if axes.is_empty() {
        return Ok(op);
    }
    let labels = op.labels.iter().copied().filter(|l| keep(l)).collect();
    let spec = ReduceSpec {
        kind: ReduceKind::Sum,
        axes,
        keepdims: false,
    };
    let v = imp.emit(cx, &sub(cx, step), GraphOp::Reduce(spec), &[op.v])?;
    Ok(Operand { v, labels })
}

fn size_of(imp: &Importer, op: &Operand, l: Label) -> usize {
    let i = op.labels.iter().position(|&m| m == l).unwrap_or(0);
    imp.ty(op.v).shape[i]
}

/// Takes the diagonal for every label `op` repeats (`ii->i`): the operand times an identity
/// mask over the two axes, summed over the second (each result is `1 * x` plus zeros, exact for
/// finite values), until every label appears once.
fn diagonals(
    imp: &mut Importer,
    cx: &NodeCx,
    operand: usize,
    mut op: Operand,
) -> Result<Operand, ImportError> {
    let mut step = 0;
    while let Some((first, second)) = (0..op.labels.len()).find_map(|j| {
        (0..j)
            .find(|&i| op.labels[i] == op.labels[j])
            .map(|i| (i, j))
    }) {
        let ty = imp.ty(op.v).clone();
        let n = ty.shape[first];
        if ty.shape[second] != n {
            return Err(cx.shape_err(format!(
                "operand {operand} repeats a label over axes of sizes {n} and {}",
                ty.shape[second]
            )));
        }
        let mut mask_shape = vec![1; ty.shape.len()];
        mask_shape[first] = n;
        mask_shape[second] = n;
        let eye: Vec<f64> = (0..n * n)
            .map(|k| f64::from(u8::from(k / n == k % n)))
            .collect();
        let tag = format!("diag{operand}_{step}");
        let eye = imp.constant(
            &sub(cx, &format!("{tag}/eye")),
            HostTensor::from_f64(ty.dtype, &mask_shape, &eye),
        );
        let masked = imp.emit(
            cx,
            &sub(cx, &format!("{tag}/mask")),
            GraphOp::Binary(BinaryOp::Mul),
            &[op.v, eye],
        )?;
        let spec = ReduceSpec {
            kind: ReduceKind::Sum,
            axes: vec![second],
            keepdims: false,
        };
        let v = imp.emit(cx, &sub(cx, &tag), GraphOp::Reduce(spec), &[masked])?;
        op.labels.remove(second);
        op = Operand {
            v,
            labels: op.labels,
        };
        step += 1;
    }
    Ok(op)
}

/// Contracts `a` and `b`, keeping the labels `needed` names (the output's and later operands').
fn contract(
    imp: &mut Importer,
    cx: &NodeCx,
    step: usize,
    a: Operand,
    b: Operand,
    needed: &[Label],
) -> Result<Operand, ImportError> {
    let dtype = imp.ty(a.v).dtype;
    let (labels_a, labels_b) = (a.labels.clone(), b.labels.clone());
    let in_a = |l: &Label| labels_a.contains(l);
    let in_b = |l: &Label| labels_b.contains(l);
    let is_needed = |l: &Label| needed.contains(l);
    // Labels one side has alone and nothing needs: sum them away first.
    let a = sum_out(imp, cx, &format!("step{step}/sum_a"), a, |l| {
        in_b(l) || is_needed(l)
    })?;
    let b = sum_out(imp, cx, &format!("step{step}/sum_b"), b, |l| {
        in_a(l) || is_needed(l)
    })?;
    let batch: Vec<Label> = a
        .labels
        .iter()
        .copied()
        .filter(|l| b.labels.contains(l) && is_needed(l))
        .collect();
    let contracted: Vec<Label> = a
        .labels
        .iter()
        .copied()
        .filter(|l| b.labels.contains(l) && !is_needed(l))
        .collect();
    let a_kept: Vec<Label> = a
        .labels
        .iter()
        .copied()
        .filter(|l| !b.labels.contains(l))
        .collect();
    let b_kept: Vec<Label> = b
        .labels
        .iter()
        .copied()
        .filter(|l| !a.labels.contains(l))
        .collect();
    for &l in &contracted {
        let (sa, sb) = (size_of(imp, &a, l), size_of(imp, &b, l));
        if sa != sb {
            return Err(cx.shape_err(format!(
                "a summed label has size {sa} in one operand and {sb} in the other"
            )));
        }
    }
    let k: usize = contracted.iter().map(|&l| size_of(imp, &a, l)).product();
    let m: usize = a_kept.iter().map(|&l| size_of(imp, &a, l)).product();
    let n: usize = b_kept.iter().map(|&l| size_of(imp, &b, l)).product();
    let a_batch: Vec<usize> = batch.iter().map(|&l| size_of(imp, &a, l)).collect();
    let b_batch: Vec<usize> = batch.iter().map(|&l| size_of(imp, &b, l)).collect();
    let order_a: Vec<Label> = [&batch[..], &a_kept, &contracted].concat();
    let order_b: Vec<Label> = [&batch[..], &contracted, &b_kept].concat();
    let a = permute(imp, cx, &format!("step{step}/perm_a"), a, &order_a)?;
    let b = permute(imp, cx, &format!("step{step}/perm_b"), b, &order_b)?;
    let a3 = [&a_batch[..], &[m, k]].concat();
    let b3 = [&b_batch[..], &[k, n]].concat();
    let av = reshape(imp, cx, &format!("step{step}/a_mk"), a.v, a3)?;
    let bv = reshape(imp, cx, &format!("step{step}/b_kn"), b.v, b3)?;
    let prod = if k == 1 && contracted.is_empty() {
        // Nothing is summed (an outer or element-wise product): [.., M, 1] * [.., 1, N]
        // broadcasts on the vector engine instead of K=1 matmuls.
        imp.emit(
            cx,
            &sub(cx, &format!("step{step}/product")),
            GraphOp::Binary(BinaryOp::Mul),
            &[av, bv],
        )?
    } else if matches!(dtype, DType::F32 | DType::Bf16) {
        imp.emit(
            cx,
            &sub(cx, &format!("step{step}/matmul")),
            GraphOp::MatMul,
            &[av, bv],
        )?
    } else {
        return Err(ImportError::Type {
            what: format!("node \"{}\" (Einsum)", cx.name),
            elem_type: dtype.to_string(),
            detail: " (a contraction is a tensor-engine matmul, which reads f32 or bf16)".into(),
        });
    };
    // Unflatten [batch..., M, N] into [batch..., a_kept..., b_kept...].
    let batch_out: Vec<usize> = a_batch
        .iter()
        .zip(&b_batch)
        .map(|(x, y)| *x.max(y))
        .collect();
    let kept_a: Vec<usize> = a_kept.iter().map(|&l| size_of(imp, &a, l)).collect();
    let kept_b: Vec<usize> = b_kept.iter().map(|&l| size_of(imp, &b, l)).collect();
    let shape = [&batch_out[..], &kept_a, &kept_b].concat();
    let v = reshape(imp, cx, &format!("step{step}/unflatten"), prod, shape)?;
    Ok(Operand {
        v,
        labels: [&batch[..], &a_kept, &b_kept].concat(),
    })
}

fn reshape(
    imp: &mut Importer,
    cx: &NodeCx,
    step: &str,
    v: ValueId,
    shape: Vec<usize>,
) -> Result<ValueId, ImportError> {
    if imp.ty(v).shape == shape {
        return Ok(v);
    }
    imp.emit(cx, &sub(cx, step), GraphOp::Reshape { shape }, &[v])
}

/// Einsum (opset 12).
pub fn einsum(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let eq = cx
        .attrs
        .string("equation")?
        .ok_or_else(|| cx.attr_err("required attribute `equation` is missing"))?;
    let eq = String::from_utf8_lossy(eq).to_string();
    let parsed = parse(&eq).map_err(|e| cx.attr_err(format!("equation `{eq}`: {e}")))?;
    let n_inputs = cx.proto.input.len();
    if parsed.inputs.len() != n_inputs {
        return Err(cx.attr_err(format!(
            "equation `{eq}` has {} terms for {n_inputs} inputs",
            parsed.inputs.len()
        )));
    }
    let mut operands = Vec::with_capacity(n_inputs);
    // How often each letter is written (a repeated one counts twice even within one term).
    let mut count = std::collections::BTreeMap::new();
    for term in &parsed.inputs {
        for &c in term.before.iter().chain(term.after.iter().flatten()) {
            *count.entry(c).or_insert(0) += 1;
        }
    }
    for (i, term) in parsed.inputs.iter().enumerate() {
        let v = cx.input(i)?;
        let rank = imp.ty(v).shape.len();
        let labels = term
            .labels(rank)
            .map_err(|e| cx.shape_err(format!("equation `{eq}`, operand {i}: {e}")))?;
        operands.push(diagonals(imp, cx, i, Operand { v, labels })?);
    }
    let ellipsis_rank = operands
        .iter()
        .flat_map(|o| &o.labels)
        .filter_map(|l| match l {
            Label::Ellipsis(k) => Some(k + 1),
            Label::Letter(_) => None,
        })
        .max()
        .unwrap_or(0);
    let output: Vec<Label> = match &parsed.output {
        Some(t) => {
            // An output without `...` sums the broadcast axes away (as numpy does).
            let mut out: Vec<Label> = t.before.iter().map(|&c| Label::Letter(c)).collect();
            if let Some(after) = &t.after {
                out.extend((0..ellipsis_rank).rev().map(Label::Ellipsis));
                out.extend(after.iter().map(|&c| Label::Letter(c)));
            }
            out
        }
        None => {
            // Implicit mode: `...`, then the letters used exactly once, alphabetically.
            let mut out: Vec<Label> = (0..ellipsis_rank).rev().map(Label::Ellipsis).collect();
            // The map iterates in ASCII order, upper case first, as numpy orders them.
            out.extend(
                count
                    .into_iter()
                    .filter(|&(_, n)| n == 1)
                    .map(|(c, _)| Label::Letter(c)),
            );
            out
        }
    };
    for l in &output {
        if !operands.iter().any(|o| o.labels.contains(l)) {
            return Err(cx.attr_err(format!(
                "equation `{eq}`: output label {l:?} appears in no operand"
            )));
        }
    }
    let mut sorted = output.clone();
    sorted.sort();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(cx.attr_err(format!("equation `{eq}` repeats an output label")));
    }
    let mut rest = operands.into_iter();
    let Some(mut acc) = rest.next() else {
        return Err(cx.attr_err("Einsum needs at least one input"));
    };
    let later: Vec<Operand> = rest.collect();
    for (step, b) in later.iter().enumerate() {
        let mut needed = output.clone();
        for o in &later[step + 1..] {
            needed.extend(o.labels.iter().copied());
        }
        let b = Operand {
            v: b.v,
            labels: b.labels.clone(),
        };
        acc = contract(imp, cx, step, acc, b, &needed)?;
    }
    let acc = sum_out(imp, cx, "sum", acc, |l| output.contains(l))?;
    Ok(permute(imp, cx, "perm", acc, &output)?.v)
}

#[cfg(test)]
mod tests {
    use super::super::resize::tests::{attr_s, run_node};
    use super::*;

    fn einsum2(eq: &str, a: (&[usize], &[f64]), b: (&[usize], &[f64])) -> HostTensor {
        run_node(
            "Einsum",
            12,
            vec![attr_s("equation", eq)],
            &["a", "b"],
            &[("a", DType::F32, a.0, a.1), ("b", DType::F32, b.0, b.1)],
            vec![],
        )
        .unwrap()
    }

    #[test]
    fn contractions_match_hand_computed_products() {
        // [[1, 2], [3, 4]] . [[5, 6], [7, 8]] = [[19, 22], [43, 50]].
        let a: (&[usize], &[f64]) = (&[2, 2], &[1., 2., 3., 4.]);
        let b: (&[usize], &[f64]) = (&[2, 2], &[5., 6., 7., 8.]);
        assert_eq!(
            einsum2("ij,jk->ik", a, b).to_f64_vec(),
            [19., 22., 43., 50.]
        );
        // Transposed result: (A.B)^T.
        assert_eq!(
            einsum2("ij,jk->ki", a, b).to_f64_vec(),
            [19., 43., 22., 50.]
        );
        // Implicit output of `ij,ij` is empty: the sum of the element-wise product, 70.
        let y = einsum2("ij,ij", a, b);
        assert_eq!((y.shape.clone(), y.to_f64_vec()), (vec![], vec![70.]));
        // Outer product, and a label summed within one operand first (row sums [3, 7] of A
        // times B's column entries).
        assert_eq!(
            einsum2("i,k->ik", (&[2], &[1., 2.]), (&[2], &[3., 4.])).to_f64_vec(),
            [3., 4., 6., 8.]
        );
        assert_eq!(
            einsum2("ij,kl->ik", a, b).to_f64_vec(),
            [33., 45., 77., 105.]
        );
        // Ellipsis broadcasting: a batch of two [1, 2] rows times one [2, 1] column.
        let y = einsum2(
            "...ij,jk->...ik",
            (&[2, 1, 2], &[1., 2., 3., 4.]),
            (&[2, 1], &[1., 1.]),
        );
        assert_eq!(
            (y.shape.clone(), y.to_f64_vec()),
            (vec![2, 1, 1], vec![3., 7.])
        );
    }

    #[test]
    fn diagonals_and_traces() {
        let one = |eq: &str| {
            run_node(
                "Einsum",
                12,
                vec![attr_s("equation", eq)],
                &["a"],
                &[("a", DType::F32, &[2, 2], &[1., 2., 3., 4.])],
                vec![],
            )
            .unwrap()
            .to_f64_vec()
        };
        // The diagonal of [[1, 2], [3, 4]] is [1, 4], its trace 5.
        assert_eq!(one("ii->i"), [1., 4.]);
        assert_eq!(one("ii"), [5.]);
    }

    #[test]
    fn equations_parse_with_ellipsis_and_spaces() {
        let e = parse("bij, bjk -> bik").unwrap();
        assert_eq!(e.inputs.len(), 2);
        assert_eq!(e.inputs[0].before, vec!['b', 'i', 'j']);
        assert_eq!(e.output.unwrap().before, vec!['b', 'i', 'k']);
        let e = parse("...ii ->...i").unwrap();
        assert_eq!(e.inputs[0].before, Vec::<char>::new());
        assert_eq!(e.inputs[0].after, Some(vec!['i', 'i']));
        assert!(parse("i1,i").is_err());
    }

    #[test]
    fn ellipsis_takes_the_leading_axes_right_aligned() {
        let t = parse("...ij").unwrap().inputs.remove(0);
        assert_eq!(
            t.labels(4).unwrap(),
            vec![
                Label::Ellipsis(1),
                Label::Ellipsis(0),
                Label::Letter('i'),
                Label::Letter('j')
            ]
        );
        assert!(t.labels(1).is_err());
    }
}
