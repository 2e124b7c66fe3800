//! Extraction: one e-node per needed class, chosen by estimated target time, counting a class
//! shared by several consumers once (greedy DAG extraction), then rebuilt into a graph that is
//! checked to be acyclic and well-typed.
//!
//! Greedy DAG: a class's candidate cost is the set of classes its e-node needs (itself and,
//! transitively, its operands' choices) with each class's own cost, summed; the cheapest
//! candidate wins, ties going to the first e-node in the class's (sorted) order. Sets are
//! recomputed until no choice improves. An e-node whose operand set already contains its own
//! class would close a cycle and is not a candidate.
//!
//! Greedy choices are per class: a class may take a detour around a shared class that another
//! output needs anyway. A local search then tries each alternative of each chosen class against
//! the whole plan's cost (every reachable class once), keeping changes that lower it and stay
//! acyclic.

use super::lang::{EG, Op, TNode};
use egg::Id;
use egg::Language as _;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use tessera_ir::graph::{Graph, GraphOp, TensorType, ValueId};

/// Sorted `(class, own cost)` pairs.
type CostSet = Rc<Vec<(Id, f64)>>;

fn merge(a: &[(Id, f64)], b: &[(Id, f64)]) -> Vec<(Id, f64)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The chosen e-node of each needed class.
#[derive(Debug)]
pub struct Choice {
    /// Class to chosen e-node (children canonical).
    pub chosen: HashMap<Id, TNode>,
    /// Estimated total (each needed class once), ns.
    pub total_ns: f64,
    /// Estimated cost of each chosen class's own e-node, ns.
    pub own_ns: HashMap<Id, f64>,
}

/// Why extraction failed (an optimiser bug; the caller falls back to the unoptimised graph).
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Some output class has no acyclic choice.
    #[error("no acyclic plan computes output class {0}")]
    NoPlan(usize),
    /// The rebuilt graph failed type inference.
    #[error("the extracted plan is ill-typed: {0}")]
    IllTyped(String),
    /// The rebuilt graph has a cycle.
    #[error("the extracted plan has a cycle through class {0}")]
    Cycle(usize),
}

/// Greedy DAG extraction of `roots` with `cost` per e-node (ns).
pub fn extract(
    eg: &EG,
    roots: &[Id],
    cost: &mut dyn FnMut(&EG, &TNode) -> f64,
) -> Result<Choice, ExtractError> {
    let mut classes: Vec<Id> = eg.classes().map(|c| c.id).collect();
    classes.sort_unstable();
    // Own costs of every e-node, once.
    let mut node_cost: HashMap<(Id, usize), f64> = HashMap::new();
    for &c in &classes {
        for (i, n) in eg[c].nodes.iter().enumerate() {
            node_cost.insert((c, i), cost(eg, n));
        }
    }
    let mut best: HashMap<Id, (f64, CostSet, usize)> = HashMap::new();
    loop {
        let mut changed = false;
        for &c in &classes {
            for (i, n) in eg[c].nodes.iter().enumerate() {
                let mut set: Vec<(Id, f64)> = Vec::new();
                let mut ok = true;
                for &ch in &n.children {
                    let ch = eg.find(ch);
                    match best.get(&ch) {
                        Some((_, s, _)) => set = merge(&set, s),
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok || set.binary_search_by(|e| e.0.cmp(&c)).is_ok() {
                    continue;
                }
                set = merge(&set, &[(c, node_cost[&(c, i)])]);
                let total: f64 = set.iter().map(|e| e.1).sum();
                let better = match best.get(&c) {
                    None => true,
                    Some((t, _, _)) => total < *t * (1.0 - 1e-9) - 1e-9,
                };
                if better {
                    best.insert(c, (total, Rc::new(set), i));
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut pick: HashMap<Id, usize> = best.iter().map(|(&c, b)| (c, b.2)).collect();
    let roots: Vec<Id> = roots.iter().map(|&r| eg.find(r)).collect();
    for &r in &roots {
        if !pick.contains_key(&r) {
            return Err(ExtractError::NoPlan(usize::from(r)));
        }
    }
    // Local improvement: greedy choices are made per class, so a class may avoid a shared
    // class another root needs anyway. Try every alternative of every chosen class against the
    // whole plan's cost, keeping changes that lower it (and stay acyclic), until none does.
    let mut current = plan_cost(eg, &roots, &pick, &node_cost).ok_or(ExtractError::Cycle(0))?;
    for _ in 0..4 {
        let mut improved = false;
        let mut reachable: Vec<Id> = current.1.clone();
        reachable.sort_unstable();
        for c in reachable {
            let keep = pick[&c];
            for i in 0..eg[c].nodes.len() {
                if i == keep
                    || eg[c].nodes[i]
                        .children
                        .iter()
                        .any(|&ch| !pick.contains_key(&eg.find(ch)))
                {
                    continue;
                }
                let was = pick.insert(c, i).expect("chosen");
                match plan_cost(eg, &roots, &pick, &node_cost) {
                    Some(p) if p.0 < current.0 * (1.0 - 1e-9) - 1e-9 => {
                        current = p;
                        improved = true;
                    }
                    _ => {
                        pick.insert(c, was);
                    }
                }
            }
        }
        if !improved {
            break;
        }
    }
    let mut chosen = HashMap::new();
    let mut own_ns = HashMap::new();
    for &c in &current.1 {
        let i = pick[&c];
        let n = eg[c].nodes[i].clone().map_children(|ch| eg.find(ch));
        chosen.insert(c, n);
        own_ns.insert(c, node_cost[&(c, i)]);
    }
    Ok(Choice {
        chosen,
        total_ns: current.0,
        own_ns,
    })
}

/// The cost of the plan `pick` makes of `roots` (each reachable class once) and the classes
/// it reaches; `None` when the choices form a cycle.
fn plan_cost(
    eg: &EG,
    roots: &[Id],
    pick: &HashMap<Id, usize>,
    node_cost: &HashMap<(Id, usize), f64>,
) -> Option<(f64, Vec<Id>)> {
    // 1: on the current path, 2: done.
    let mut state: HashMap<Id, u8> = HashMap::new();
    let mut order = Vec::new();
    let mut total = 0.0;
    for &r in roots {
        let mut stack: Vec<(Id, bool)> = vec![(r, false)];
        while let Some((c, leaving)) = stack.pop() {
            if leaving {
                state.insert(c, 2);
                order.push(c);
                let i = *pick.get(&c)?;
                total += node_cost[&(c, i)];
                continue;
            }
            match state.get(&c) {
                Some(2) => continue,
                Some(_) => return None,
                None => {}
            }
            state.insert(c, 1);
            stack.push((c, true));
            let i = *pick.get(&c)?;
            for &ch in &eg[c].nodes[i].children {
                let ch = eg.find(ch);
                match state.get(&ch) {
                    Some(2) => {}
                    Some(_) => return None,
                    None => stack.push((ch, false)),
                }
            }
        }
    }
    Some((total, order))
}

/// Names the rebuilt graph gives things.
#[derive(Debug, Default)]
pub struct Names {
    /// Original node name per class.
    pub nodes: BTreeMap<Id, String>,
    /// Original value name per class.
    pub values: BTreeMap<Id, String>,
    /// Original name per constant.
    pub consts: BTreeMap<u32, String>,
}

/// Rebuilds a graph from the choice. `inputs` are the original graph inputs (name and type) and
/// `outputs` the output classes with their names.
pub fn rebuild(
    eg: &EG,
    choice: &Choice,
    name: &str,
    inputs: &[(String, TensorType)],
    outputs: &[(Id, String)],
    names: &Names,
) -> Result<Graph, ExtractError> {
    let mut b = Builder {
        eg,
        choice,
        names,
        g: Graph::new(name),
        done: HashMap::new(),
        consts: HashMap::new(),
        state: HashMap::new(),
        used_nodes: HashMap::new(),
        used_values: HashMap::new(),
    };
    for (n, t) in inputs {
        b.g.add_input(n.clone(), t.clone());
        *b.used_values.entry(n.clone()).or_default() += 1;
    }
    let mut outs = Vec::new();
    for (root, _) in outputs {
        let c = eg.find(*root);
        b.visit(c, &format!("class{}", usize::from(c)))?;
        outs.push(b.done[&c].clone());
    }
    // Each output keeps its name; an output whose value is another's, an input, or a constant
    // gets its own Identity node.
    let mut taken: std::collections::BTreeSet<ValueId> = Default::default();
    for ((_, out_name), vals) in outputs.iter().zip(outs) {
        let v = vals[0];
        let is_node_result = b.g.nodes.iter().any(|n| n.outputs.contains(&v));
        let v = if !is_node_result || taken.contains(&v) || b.g.inputs.contains(&v) {
            b.g.add_node(out_name.clone(), GraphOp::Identity, &[v])
                .map_err(|e| ExtractError::IllTyped(e.to_string()))?[0]
        } else {
            v
        };
        if b.g.value(v).name != *out_name {
            // Free the name if another value holds it, then take it.
            if let Some(other) = b.g.values.iter().position(|x| x.name == *out_name) {
                b.g.values[other].name = format!("{out_name}~{other}");
            }
            b.g.values[v.0 as usize].name = out_name.clone();
        }
        taken.insert(v);
        b.g.outputs.push(v);
    }
    Ok(b.g)
}

struct Builder<'a> {
    eg: &'a EG,
    choice: &'a Choice,
    names: &'a Names,
    g: Graph,
    done: HashMap<Id, Vec<ValueId>>,
    consts: HashMap<u32, ValueId>,
    /// Classes being visited (a cycle if met again).
    state: HashMap<Id, bool>,
    used_nodes: HashMap<String, usize>,
    used_values: HashMap<String, usize>,
}

/// `base`, or `base~k` when `base` is taken.
fn fresh(used: &mut HashMap<String, usize>, base: &str) -> String {
    let n = used.entry(base.to_string()).or_default();
    *n += 1;
    if *n == 1 {
        base.to_string()
    } else {
        format!("{base}~{}", *n - 1)
    }
}

impl Builder<'_> {
    /// Builds class `c` (whose consumer is called `parent`).
    fn visit(&mut self, c: Id, parent: &str) -> Result<(), ExtractError> {
        if self.done.contains_key(&c) {
            return Ok(());
        }
        if self.state.insert(c, true).is_some() {
            return Err(ExtractError::Cycle(usize::from(c)));
        }
        let node = self
            .choice
            .chosen
            .get(&c)
            .ok_or(ExtractError::NoPlan(usize::from(c)))?
            .clone();
        let op_name = match node.op {
            Op::Node(k) => self.eg.analysis.tables.ops[k as usize]
                .name()
                .to_lowercase(),
            Op::Get(k) => format!("get{k}"),
            _ => "value".into(),
        };
        let node_name = self
            .names
            .nodes
            .get(&c)
            .cloned()
            .unwrap_or_else(|| format!("{parent}/{op_name}"));
        for &ch in &node.children {
            self.visit(ch, &node_name)?;
        }
        let vals = match node.op {
            Op::Input(k) => vec![self.g.inputs[k as usize]],
            Op::Const(k) => {
                if let Some(&v) = self.consts.get(&k) {
                    vec![v]
                } else {
                    let base = self
                        .names
                        .consts
                        .get(&k)
                        .cloned()
                        .unwrap_or_else(|| format!("{node_name}.const"));
                    let name = fresh(&mut self.used_values, &base);
                    let t = (*self.eg.analysis.tables.consts[k as usize]).clone();
                    let v = self.g.add_constant(name, t);
                    self.consts.insert(k, v);
                    vec![v]
                }
            }
            Op::Get(k) => {
                let v = self.done[&node.children[0]][k as usize];
                if let Some(n) = self.names.values.get(&c) {
                    self.g.values[v.0 as usize].name = fresh(&mut self.used_values, n);
                }
                vec![v]
            }
            Op::Node(k) => {
                let op = self.eg.analysis.tables.ops[k as usize].clone();
                let ins: Vec<ValueId> = node.children.iter().map(|ch| self.done[ch][0]).collect();
                let name = fresh(&mut self.used_nodes, &node_name);
                let outs = self
                    .g
                    .add_node(name, op, &ins)
                    .map_err(|e| ExtractError::IllTyped(e.to_string()))?;
                let expect = &self.eg[c].data.types;
                let got: Vec<&TensorType> = outs.iter().map(|&v| self.g.ty(v)).collect();
                if got.len() != expect.len() || got.iter().zip(expect).any(|(a, b)| *a != b) {
                    return Err(ExtractError::IllTyped(format!(
                        "node `{node_name}` gives {got:?}, its class has {expect:?}"
                    )));
                }
                for (i, &v) in outs.iter().enumerate() {
                    let base = match (i, self.names.values.get(&c)) {
                        (0, Some(v)) => v.clone(),
                        (0, None) => node_name.clone(),
                        (i, _) => format!("{node_name}:{i}"),
                    };
                    self.g.values[v.0 as usize].name = fresh(&mut self.used_values, &base);
                }
                outs
            }
        };
        self.done.insert(c, vals);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opt::lang::{TNode, TypeAnalysis};
    use tessera_ir::DType;
    use tessera_ir::graph::{BinaryOp, UnaryOp};

    fn node(eg: &mut EG, op: GraphOp, children: &[Id]) -> Id {
        let k = eg.analysis.tables.op(&op);
        eg.add(TNode {
            op: Op::Node(k),
            children: children.to_vec(),
        })
    }

    /// `s = expensive(x)` feeds two outputs. Output `b` could also be computed without `s` at
    /// a little more than `b`'s own cost through `s`; counting `s` once (it is needed by `c`
    /// anyway), going through `s` is cheaper, while a tree cost, charging `s` to `b` too,
    /// would pick the detour.
    #[test]
    fn a_shared_class_is_paid_once() {
        let mut a = TypeAnalysis::default();
        a.tables.inputs = vec![TensorType::new(DType::F32, &[4])];
        let mut eg = EG::new(a);
        let x = eg.add(TNode {
            op: Op::Input(0),
            children: vec![],
        });
        let s = node(&mut eg, GraphOp::Unary(UnaryOp::Exp), &[x]);
        let b = node(&mut eg, GraphOp::Unary(UnaryOp::Relu), &[s]);
        let c = node(&mut eg, GraphOp::Unary(UnaryOp::Tanh), &[s]);
        let detour = node(&mut eg, GraphOp::Binary(BinaryOp::Add), &[x, x]);
        eg.union(b, detour);
        eg.rebuild();
        let mut cost = |eg: &EG, n: &TNode| match n.op {
            Op::Node(k) => match eg.analysis.tables.ops[k as usize] {
                GraphOp::Unary(UnaryOp::Exp) => 10.0,
                GraphOp::Binary(_) => 2.0,
                _ => 1.0,
            },
            _ => 0.0,
        };
        let choice = extract(&eg, &[b, c], &mut cost).unwrap();
        let b = eg.find(b);
        assert_eq!(
            choice.chosen[&b].children,
            vec![eg.find(s)],
            "b goes through s"
        );
        // s (10) + relu (1) + tanh (1), not s + tanh + the detour (2).
        assert_eq!(choice.total_ns, 12.0);
        // Alone, b takes the detour: 2 < 10 + 1.
        let alone = extract(&eg, &[b], &mut cost).unwrap();
        assert_eq!(alone.total_ns, 2.0);
    }

    /// `x = x * 1` puts a cycle in the e-graph; extraction still finds the acyclic choice.
    #[test]
    fn cycles_are_not_chosen() {
        let mut a = TypeAnalysis::default();
        a.tables.inputs = vec![TensorType::new(DType::F32, &[4])];
        let mut eg = EG::new(a);
        let x = eg.add(TNode {
            op: Op::Input(0),
            children: vec![],
        });
        let r = node(&mut eg, GraphOp::Unary(UnaryOp::Relu), &[x]);
        let one = {
            let k =
                eg.analysis
                    .tables
                    .konst(tessera_ir::HostTensor::from_f64(DType::F32, &[], &[1.0]));
            eg.add(TNode {
                op: Op::Const(k),
                children: vec![],
            })
        };
        let m = node(&mut eg, GraphOp::Binary(BinaryOp::Mul), &[r, one]);
        eg.union(r, m);
        eg.rebuild();
        let mut cost = |_: &EG, n: &TNode| {
            if matches!(n.op, Op::Node(_)) {
                1.0
            } else {
                0.0
            }
        };
        let choice = extract(&eg, &[r], &mut cost).unwrap();
        let r = eg.find(r);
        assert_eq!(choice.chosen[&r].children, vec![eg.find(x)]);
    }
}
