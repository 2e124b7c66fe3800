//! The e-graph language and its analysis.
//!
//! One e-node is an operator applied to e-classes. Operators are graph inputs, constants,
//! graph operators (primitive or fused, attributes included) and `Get(k)`, the k-th result of a
//! multi-result node. Attributes do not fit egg's `Ord + Hash` language requirements directly
//! (they hold floats and vectors), so operators and constants are interned in tables owned by
//! the analysis and an e-node holds their index: two e-nodes are equal exactly when their
//! operators (compared by their full attribute text) and children are equal.
//!
//! The analysis carries every class's result types (one per result, so multi-result nodes fit)
//! and, for classes known at compile time, the constant. Constant classes get a `Const` leaf
//! (cost nothing), which is how constant folding works here.

use egg::{Analysis, DidMerge, EGraph, Id, Language};
use std::collections::HashMap;
use std::sync::Arc;
use tessera_ir::HostTensor;
use tessera_ir::graph::{GraphOp, TensorType};

/// What an e-node computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// The k-th graph input.
    Input(u32),
    /// The k-th interned constant.
    Const(u32),
    /// The k-th interned graph operator.
    Node(u32),
    /// The k-th result of the child (a multi-result node).
    Get(u32),
}

/// An e-node: an operator and its operand classes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TNode {
    /// The operator.
    pub op: Op,
    /// Operand classes, positionally.
    pub children: Vec<Id>,
}

impl Language for TNode {
    type Discriminant = Op;

    fn discriminant(&self) -> Op {
        self.op
    }

    fn matches(&self, other: &Self) -> bool {
        self.op == other.op && self.children.len() == other.children.len()
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

/// Largest constant (elements) computed at compile time by folding.
const FOLD_LIMIT: usize = 1 << 16;

/// Per-class facts.
#[derive(Clone, Debug, PartialEq)]
pub struct Data {
    /// The type of each result (one for most operators).
    pub types: Vec<TensorType>,
    /// The constant this class is, when known at compile time.
    pub konst: Option<u32>,
}

impl Data {
    /// The (first) result type.
    pub fn ty(&self) -> &TensorType {
        &self.types[0]
    }
}

/// Interned operators and constants, and what the graph's inputs are.
#[derive(Debug, Default)]
pub struct Tables {
    /// Graph input types, by input position.
    pub inputs: Vec<TensorType>,
    /// Interned operators.
    pub ops: Vec<GraphOp>,
    op_index: HashMap<String, u32>,
    /// Interned constants.
    pub consts: Vec<Arc<HostTensor>>,
    /// Constants by type and a hash of their bytes (several on a collision).
    const_index: HashMap<(String, u64), Vec<u32>>,
    /// Constants folded (for the report).
    pub folded: usize,
}

impl Tables {
    /// The index of `op`, interning it.
    pub fn op(&mut self, op: &GraphOp) -> u32 {
        let key = format!("{op:?}");
        if let Some(&k) = self.op_index.get(&key) {
            return k;
        }
        self.ops.push(op.clone());
        let k = self.ops.len() as u32 - 1;
        self.op_index.insert(key, k);
        k
    }

    /// The index of a constant, interning it (equal data shares one index).
    pub fn konst(&mut self, t: HostTensor) -> u32 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        t.data.hash(&mut h);
        let key = (format!("{}{:?}", t.dtype, t.shape), h.finish());
        let same = self.const_index.get(&key).and_then(|ks| {
            ks.iter()
                .copied()
                .find(|&k| self.consts[k as usize].data == t.data)
        });
        if let Some(k) = same {
            return k;
        }
        self.consts.push(Arc::new(t));
        let k = self.consts.len() as u32 - 1;
        self.const_index.entry(key).or_default().push(k);
        k
    }
}

/// The analysis: types and constants.
#[derive(Debug, Default)]
pub struct TypeAnalysis {
    /// Operator and constant tables.
    pub tables: Tables,
}

/// The e-graph the optimiser works on.
pub type EG = EGraph<TNode, TypeAnalysis>;

/// The result types of `op` applied to classes of `children` types, or why not.
pub fn infer(
    eg: &EG,
    op: &GraphOp,
    children: &[Id],
) -> Result<Vec<TensorType>, tessera_ir::graph::ShapeError> {
    let mut types = Vec::with_capacity(children.len());
    for &c in children {
        let d = &eg[c].data;
        if d.types.len() != 1 {
            return Err(tessera_ir::graph::ShapeError::Mismatch(
                "an operand with several results".into(),
            ));
        }
        types.push(&d.types[0]);
    }
    op.infer(&types)
}

impl Analysis<TNode> for TypeAnalysis {
    type Data = Data;

    fn make(egraph: &mut EG, enode: &TNode, _id: Id) -> Data {
        let t = &egraph.analysis.tables;
        match enode.op {
            Op::Input(k) => Data {
                types: vec![t.inputs[k as usize].clone()],
                konst: None,
            },
            Op::Const(k) => {
                let c = &t.consts[k as usize];
                Data {
                    types: vec![TensorType::new(c.dtype, &c.shape)],
                    konst: Some(k),
                }
            }
            Op::Get(k) => Data {
                types: egraph[enode.children[0]]
                    .data
                    .types
                    .get(k as usize)
                    .cloned()
                    .into_iter()
                    .collect(),
                konst: None,
            },
            Op::Node(k) => {
                let op = t.ops[k as usize].clone();
                // Every node is type-checked before it is added (`Rhs::add`), so an error here is
                // a bug; the class then has no types and no rule matches it.
                let types = infer(egraph, &op, &enode.children).unwrap_or_default();
                let konst = fold(egraph, &op, &enode.children, &types);
                Data { types, konst }
            }
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut changed_a = false;
        if a.types.is_empty() && !b.types.is_empty() {
            a.types = b.types.clone();
            changed_a = true;
        }
        let changed_b = a.konst.is_some() && b.konst.is_none();
        if a.konst.is_none() && b.konst.is_some() {
            a.konst = b.konst;
            changed_a = true;
        }
        DidMerge(changed_a, changed_b)
    }

    fn modify(egraph: &mut EG, id: Id) {
        if let Some(k) = egraph[id].data.konst {
            let leaf = egraph.add(TNode {
                op: Op::Const(k),
                children: vec![],
            });
            egraph.union(id, leaf);
        }
    }
}

/// Folds `op` over constant operands when the result is small.
fn fold(eg: &mut EG, op: &GraphOp, children: &[Id], types: &[TensorType]) -> Option<u32> {
    if types.len() != 1 || types[0].elems() > FOLD_LIMIT || children.is_empty() {
        return None;
    }
    let consts: Vec<u32> = children
        .iter()
        .map(|&c| eg[c].data.konst)
        .collect::<Option<_>>()?;
    let mut g = tessera_ir::graph::Graph::new("fold");
    let ids: Vec<_> = consts
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            g.add_constant(
                format!("c{i}"),
                (*eg.analysis.tables.consts[k as usize]).clone(),
            )
        })
        .collect();
    let out = g.add_node("fold", op.clone(), &ids).ok()?;
    g.outputs.push(out[0]);
    let result = tessera_ir::graph::evaluate(&g, &Default::default()).ok()?;
    let t = result.into_values().next()?;
    eg.analysis.tables.folded += 1;
    Some(eg.analysis.tables.konst(t))
}

/// The class's constant, when it is one.
pub fn const_of(eg: &EG, id: Id) -> Option<&HostTensor> {
    eg[id]
        .data
        .konst
        .map(|k| &*eg.analysis.tables.consts[k as usize])
}

/// The value of a constant class whose elements are all equal (a splat), e.g. the `0.5` of a
/// written-out GELU whatever its broadcast shape.
pub fn splat_of(eg: &EG, id: Id) -> Option<f64> {
    let c = const_of(eg, id)?;
    if !c.dtype.is_float() {
        return None;
    }
    // Compared as bytes, stopping at the first difference: rules ask this of every constant
    // operand, weights included, and decoding those whole made it a third of ResNet-50's
    // compile time. (Byte equality is value equality here but for +-0 and NaN payloads, and a
    // NaN splat is refused below.)
    let size = c.dtype.size_bytes();
    let first = c.data.get(..size)?;
    if !c.data.chunks_exact(size).all(|e| e == first) {
        return None;
    }
    let v = c.get(0);
    (!v.is_nan()).then_some(v)
}

/// The graph operators among the class's e-nodes, with their children.
pub fn ops_in<'a>(eg: &'a EG, id: Id) -> impl Iterator<Item = (&'a GraphOp, &'a [Id])> + 'a {
    eg[id].nodes.iter().filter_map(move |n| match n.op {
        Op::Node(k) => Some((&eg.analysis.tables.ops[k as usize], n.children.as_slice())),
        _ => None,
    })
}
