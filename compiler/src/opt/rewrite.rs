//! Rules and the saturation loop.
//!
//! A rule looks at one e-class (reading the e-graph) and proposes right-hand sides, each to be
//! made equal to some class: usually the one it looked at, several classes for multi-pattern
//! rules. Right-hand sides are type-checked node by node as they are added; one that does not
//! type-check, or whose type differs from its class's, is refused and counted, never added.
//!
//! The loop runs every rule over every class (in class-id order, so runs are deterministic),
//! applies what they proposed, rebuilds, and repeats until nothing changes (saturation), or a
//! bound is hit: iterations, e-nodes, or wall-clock time (a safety net set far above the other
//! two, since a time-bounded run would not be deterministic).

use super::lang::{EG, Op, TNode, infer};
use egg::Id;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tessera_ir::HostTensor;
use tessera_ir::graph::GraphOp;

/// A right-hand side: a term over existing classes.
#[derive(Clone, Debug)]
pub enum Rhs {
    /// An existing class.
    Class(Id),
    /// An operator applied to terms.
    Op(GraphOp, Vec<Rhs>),
    /// A new constant.
    Const(HostTensor),
}

impl Rhs {
    /// `op(children...)` over existing classes.
    pub fn op(op: GraphOp, children: &[Id]) -> Rhs {
        Rhs::Op(op, children.iter().map(|&c| Rhs::Class(c)).collect())
    }

    /// Adds the term; `None` (and nothing added for the failing node) when a node does not
    /// type-check.
    fn add(&self, eg: &mut EG) -> Option<Id> {
        match self {
            Rhs::Class(id) => Some(*id),
            Rhs::Const(t) => {
                let k = eg.analysis.tables.konst(t.clone());
                Some(eg.add(TNode {
                    op: Op::Const(k),
                    children: vec![],
                }))
            }
            Rhs::Op(op, children) => {
                let ids: Vec<Id> = children.iter().map(|c| c.add(eg)).collect::<Option<_>>()?;
                let types = infer(eg, op, &ids).ok()?;
                if types.is_empty() {
                    return None;
                }
                let k = eg.analysis.tables.op(op);
                Some(eg.add(TNode {
                    op: Op::Node(k),
                    children: ids,
                }))
            }
        }
    }
}

/// The themes rules are grouped in (one file each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Theme {
    /// Transpose/reshape chains, identities, broadcast simplification.
    Algebra,
    /// Written-out LayerNorm, GELU, SiLU, softmax, attention; BatchNorm into Conv.
    Recognition,
    /// Epilogues, element-wise chains, flash attention.
    Fusion,
    /// Matmuls sharing an input merged.
    Multi,
    /// Transposes folded into matmul operand roles.
    Layout,
    /// Alternative kernels (and configurations) for one operator, costed against each other.
    Kernel,
}

impl Theme {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Theme::Algebra => "algebra",
            Theme::Recognition => "recognition",
            Theme::Fusion => "fusion",
            Theme::Multi => "multi",
            Theme::Layout => "layout",
            Theme::Kernel => "kernel",
        }
    }
}

/// What rules may consult besides the e-graph.
pub struct Ctx<'a> {
    /// The target (kernel limits).
    pub target: &'a tessera_ir::TargetSpec,
}

/// A proposal: make `rhs` equal to class `target`.
pub type Proposal = (Id, Rhs);

/// A named rewrite rule.
pub struct Rule {
    /// Name, as reported by `--emit egraph`.
    pub name: &'static str,
    /// Its theme.
    pub theme: Theme,
    /// Only in the first this many iterations (multi-pattern rules, bounded as TENSAT does).
    pub max_iterations: Option<usize>,
    /// Looks at one class and proposes equalities.
    pub search: fn(&EG, Id, &Ctx) -> Vec<Proposal>,
}

/// Bounds of one saturation run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Iterations (each runs every rule over every class).
    pub iterations: usize,
    /// E-nodes: the run stops once the e-graph has more.
    pub nodes: usize,
    /// Wall-clock safety net.
    pub time: Duration,
}

/// Why saturation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An iteration changed nothing: every rule's consequences are in the e-graph.
    Saturated,
    /// The iteration bound.
    IterationLimit,
    /// The e-node bound.
    NodeLimit,
    /// The time bound.
    TimeLimit,
}

impl StopReason {
    /// As printed in reports.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Saturated => "saturated",
            StopReason::IterationLimit => "iteration limit",
            StopReason::NodeLimit => "e-node limit",
            StopReason::TimeLimit => "time limit",
        }
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunStats {
    /// Iterations run.
    pub iterations: usize,
    /// Why it stopped.
    pub stop: StopReason,
    /// Per rule: applications that changed the e-graph.
    pub fired: BTreeMap<&'static str, usize>,
    /// Right-hand sides refused as ill-typed.
    pub refused: usize,
    /// E-nodes and e-classes at the end.
    pub nodes: usize,
    /// E-classes at the end.
    pub classes: usize,
}

/// Runs `rules` to saturation or a bound.
pub fn run(eg: &mut EG, rules: &[&Rule], ctx: &Ctx, limits: Limits) -> RunStats {
    let start = Instant::now();
    let mut fired: BTreeMap<&'static str, usize> = rules.iter().map(|r| (r.name, 0)).collect();
    let mut refused = 0;
    let mut iterations = 0;
    let stop = loop {
        if iterations >= limits.iterations {
            break StopReason::IterationLimit;
        }
        if start.elapsed() > limits.time {
            break StopReason::TimeLimit;
        }
        iterations += 1;
        let mut classes: Vec<Id> = eg.classes().map(|c| c.id).collect();
        classes.sort_unstable();
        let mut proposals: Vec<(&'static str, Proposal)> = Vec::new();
        for rule in rules {
            if rule.max_iterations.is_some_and(|m| iterations > m) {
                continue;
            }
            for &c in &classes {
                for p in (rule.search)(eg, c, ctx) {
                    proposals.push((rule.name, p));
                }
            }
        }
        let mut changed = false;
        let mut over = false;
        for (name, (target, rhs)) in proposals {
            let before = eg.total_number_of_nodes();
            let target_ty = eg[target].data.types.clone();
            match rhs.add(eg) {
                Some(id) if eg[id].data.types == target_ty => {
                    let merged = eg.union(target, id);
                    if merged || eg.total_number_of_nodes() != before {
                        *fired.get_mut(name).expect("every rule has a counter") += 1;
                        changed = true;
                    }
                }
                _ => refused += 1,
            }
            if eg.total_number_of_nodes() > limits.nodes {
                over = true;
                break;
            }
        }
        eg.rebuild();
        if over {
            break StopReason::NodeLimit;
        }
        if !changed {
            break StopReason::Saturated;
        }
    };
    RunStats {
        iterations,
        stop,
        fired,
        refused,
        nodes: eg.total_number_of_nodes(),
        classes: eg.number_of_classes(),
    }
}
