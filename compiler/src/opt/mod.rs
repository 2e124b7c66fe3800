//! The e-graph optimiser: lowering decisions made by equality saturation (`egg`) and extraction
//! by estimated target time.
//!
//! The imported graph is put into an e-graph ([`lang`]); rules ([`rules`], one file per theme)
//! add equivalent forms: simplifications, recognised compositions (LayerNorm, GELU, softmax,
//! BatchNorm folded into convolutions), fused kernels (epilogues, element-wise regions, flash
//! attention) and operand layouts. Extraction ([`extract`]) then picks, per needed class, the
//! form with the least estimated kernel time ([`cost`]), counting shared classes once, and
//! rebuilds a graph that lowering turns into kernels op by op.
//!
//! Levels: `-O0` skips all this (op by op, the baseline); `-O1` runs cleanup, recognition and
//! fusion; `-O2` adds layout rules; `-O3` raises the saturation budgets.

pub mod cost;
pub mod extract;
pub mod lang;
pub mod rewrite;
pub mod rules;

use egg::Id;
use egg::Language as _;
use extract::{Names, extract, rebuild};
use lang::{EG, Op, TNode, TypeAnalysis};
use rewrite::{Ctx, Limits, RunStats, Theme, run};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;
use tessera_ir::TargetSpec;
use tessera_ir::graph::{Graph, GraphOp, TensorType};

/// Why optimisation failed (an optimiser bug, reported rather than hidden).
#[derive(Debug, thiserror::Error)]
pub enum OptError {
    /// The graph could not be put into the e-graph.
    #[error("the optimiser could not represent node `{node}`: {detail}")]
    Build {
        /// Node name.
        node: String,
        /// What went wrong.
        detail: String,
    },
    /// Extraction failed.
    #[error("the optimiser's plan is invalid: {0}")]
    Extract(#[from] extract::ExtractError),
    /// The rebuilt graph failed verification.
    #[error("the optimised graph is invalid: {0}")]
    Verify(String),
}

/// One kernel of the chosen plan.
#[derive(Clone, Debug)]
pub struct PlanEntry {
    /// Node name.
    pub node: String,
    /// The operator (fused forms with their configuration).
    pub op: String,
    /// Result type.
    pub ty: String,
    /// Estimated time, ns.
    pub est_ns: f64,
}

/// What the optimiser did, for `tessera inspect --emit egraph`.
#[derive(Clone, Debug)]
pub struct Report {
    /// The level.
    pub level: u8,
    /// E-nodes and classes of the initial e-graph.
    pub initial: (usize, usize),
    /// The saturation run.
    pub run: RunStats,
    /// Constants folded by the analysis.
    pub folded: usize,
    /// Estimated total of the op-by-op graph, ns.
    pub before_ns: f64,
    /// Estimated total of the chosen plan, ns.
    pub after_ns: f64,
    /// The plan, in execution order.
    pub plan: Vec<PlanEntry>,
}

impl Report {
    /// The report as text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "e-graph optimiser at -O{}", self.level);
        let _ = writeln!(
            s,
            "  initial     {} e-nodes in {} classes",
            self.initial.0, self.initial.1
        );
        let _ = writeln!(
            s,
            "  saturation  {} iteration(s), stopped: {}; {} e-nodes in {} classes",
            self.run.iterations,
            self.run.stop.name(),
            self.run.nodes,
            self.run.classes
        );
        let _ = writeln!(
            s,
            "  refused     {} ill-typed right-hand side(s); {} constant(s) folded",
            self.run.refused, self.folded
        );
        let _ = writeln!(
            s,
            "  estimate    {:.1} us op by op -> {:.1} us chosen ({:.2}x)",
            self.before_ns / 1e3,
            self.after_ns / 1e3,
            self.before_ns / self.after_ns.max(1e-9)
        );
        let _ = writeln!(s, "\nrules fired (applications that changed the e-graph)");
        for (name, n) in &self.run.fired {
            let _ = writeln!(s, "  {name:<28} {n}");
        }
        let _ = writeln!(s, "\nplan ({} kernels)", self.plan.len());
        for p in &self.plan {
            let _ = writeln!(
                s,
                "  {:>10.2} us  {:<40} {} -> {}",
                p.est_ns / 1e3,
                p.op,
                p.node,
                p.ty
            );
        }
        s
    }
}

/// The optimised graph and what happened.
#[derive(Debug)]
pub struct Optimized {
    /// The graph to lower.
    pub graph: Graph,
    /// The report (`None` at `-O0`).
    pub report: Option<Report>,
}

fn themes(level: u8) -> Vec<Theme> {
    match level {
        0 => vec![],
        1 => vec![Theme::Algebra, Theme::Recognition, Theme::Fusion],
        _ => vec![
            Theme::Algebra,
            Theme::Recognition,
            Theme::Fusion,
            Theme::Layout,
            Theme::Multi,
            Theme::Kernel,
        ],
    }
}

fn limits(level: u8) -> Limits {
    if level >= 3 {
        Limits {
            iterations: 32,
            nodes: 400_000,
            time: Duration::from_secs(120),
        }
    } else {
        Limits {
            iterations: 8,
            nodes: 60_000,
            time: Duration::from_secs(30),
        }
    }
}

/// A graph in an e-graph: the e-graph, its output classes with their names, and the names to
/// give back.
type Built = (EG, Vec<(Id, String)>, Names);

/// Puts the graph into an e-graph.
fn build(graph: &Graph) -> Result<Built, OptError> {
    let mut analysis = TypeAnalysis::default();
    analysis.tables.inputs = graph.inputs.iter().map(|&v| graph.ty(v).clone()).collect();
    let mut eg = EG::new(analysis);
    let mut names = Names::default();
    let mut class: BTreeMap<tessera_ir::graph::ValueId, Id> = BTreeMap::new();
    for (k, &v) in graph.inputs.iter().enumerate() {
        let id = eg.add(TNode {
            op: Op::Input(k as u32),
            children: vec![],
        });
        class.insert(v, id);
    }
    for (&v, t) in &graph.constants {
        let k = eg.analysis.tables.konst(t.clone());
        names
            .consts
            .entry(k)
            .or_insert_with(|| graph.value(v).name.clone());
        let id = eg.add(TNode {
            op: Op::Const(k),
            children: vec![],
        });
        class.insert(v, id);
    }
    for node in &graph.nodes {
        let children: Vec<Id> = node
            .inputs
            .iter()
            .map(|v| {
                class.get(v).copied().ok_or_else(|| OptError::Build {
                    node: node.name.clone(),
                    detail: format!("operand `{}` is not defined before", graph.value(*v).name),
                })
            })
            .collect::<Result<_, _>>()?;
        lang::infer(&eg, &node.op, &children).map_err(|e| OptError::Build {
            node: node.name.clone(),
            detail: e.to_string(),
        })?;
        let k = eg.analysis.tables.op(&node.op);
        let id = eg.add(TNode {
            op: Op::Node(k),
            children,
        });
        names.nodes.entry(id).or_insert_with(|| node.name.clone());
        if node.outputs.len() == 1 {
            class.insert(node.outputs[0], id);
        } else {
            for (i, &o) in node.outputs.iter().enumerate() {
                let g = eg.add(TNode {
                    op: Op::Get(i as u32),
                    children: vec![id],
                });
                class.insert(o, g);
            }
        }
    }
    for &v in graph
        .inputs
        .iter()
        .chain(graph.nodes.iter().flat_map(|n| &n.outputs))
    {
        names
            .values
            .entry(class[&v])
            .or_insert_with(|| graph.value(v).name.clone());
    }
    let outputs = graph
        .outputs
        .iter()
        .map(|v| (class[v], graph.value(*v).name.clone()))
        .collect();
    eg.rebuild();
    Ok((eg, outputs, names))
}

/// Names keyed by canonical classes (the first name of merged classes wins).
fn canonical(eg: &EG, names: Names) -> Names {
    let canon = |m: BTreeMap<Id, String>| {
        let mut out = BTreeMap::new();
        for (id, n) in m {
            out.entry(eg.find(id)).or_insert(n);
        }
        out
    };
    Names {
        nodes: canon(names.nodes),
        values: canon(names.values),
        consts: names.consts,
    }
}

/// Whether lowering has a kernel for this e-node (fused forms it cannot lower cost infinity).
fn lowerable(eg: &EG, n: &TNode) -> bool {
    match n.op {
        Op::Node(k) => match &eg.analysis.tables.ops[k as usize] {
            GraphOp::Fused(f) => {
                let ins: Vec<&TensorType> = n.children.iter().map(|&c| eg[c].data.ty()).collect();
                // Convolution weights are rearranged at compile time: they must be constants.
                let weights_known = !matches!(f, tessera_ir::graph::FusedOp::Conv(_))
                    || eg[n.children[1]].data.konst.is_some();
                weights_known && crate::lower::fused_supported(f, &ins)
            }
            _ => true,
        },
        _ => true,
    }
}

/// Adds, to every class, the custom node a registered kernel offers for one of its e-nodes.
fn add_custom_alternatives(eg: &mut EG, custom: &crate::custom::CustomOps, target: &TargetSpec) {
    let mut found = Vec::new();
    for class in eg.classes() {
        for n in &class.nodes {
            let Op::Node(k) = n.op else { continue };
            let op = &eg.analysis.tables.ops[k as usize];
            let ins: Vec<TensorType> = n
                .children
                .iter()
                .map(|&c| eg[c].data.ty().clone())
                .collect();
            if let Some(alt) =
                crate::custom::alternative(custom, op, &ins, &class.data.types, target)
            {
                found.push((class.id, n.children.clone(), alt));
            }
        }
    }
    for (id, children, alt) in found {
        let k = eg.analysis.tables.op(&GraphOp::Custom(Box::new(alt)));
        let added = eg.add(TNode {
            op: Op::Node(k),
            children,
        });
        eg.union(id, added);
    }
    eg.rebuild();
}

/// Optimises `graph` at `level` (0 to 3).
pub fn optimize(graph: &Graph, target: &TargetSpec, level: u8) -> Result<Optimized, OptError> {
    optimize_with(graph, target, level, &crate::custom::CustomOps::new())
}

/// [`optimize`] with custom operators: after saturation, every e-node a registered kernel
/// offers to compute ([`crate::custom::CustomKernel::alternative_for`]) gets the custom node as
/// an alternative in its class, and extraction weighs the estimates.
pub fn optimize_with(
    graph: &Graph,
    target: &TargetSpec,
    level: u8,
    custom: &crate::custom::CustomOps,
) -> Result<Optimized, OptError> {
    if level == 0 {
        return Ok(Optimized {
            graph: graph.clone(),
            report: None,
        });
    }
    let (mut eg, outputs, names) = build(graph)?;
    let initial = (eg.total_number_of_nodes(), eg.number_of_classes());
    let roots: Vec<Id> = outputs.iter().map(|o| o.0).collect();
    // The op-by-op estimate: every original node once.
    let before_ns: f64 = graph
        .nodes
        .iter()
        .map(|n| {
            let ins: Vec<&TensorType> = n.inputs.iter().map(|&v| graph.ty(v)).collect();
            let outs: Vec<TensorType> = n.outputs.iter().map(|&v| graph.ty(v).clone()).collect();
            cost::op_ns(&n.op, &ins, &outs, target)
        })
        .sum();
    let rules = rules::rules(&themes(level));
    let stats = run(&mut eg, &rules, &Ctx { target }, limits(level));
    if !custom.is_empty() {
        add_custom_alternatives(&mut eg, custom, target);
    }
    let names = canonical(&eg, names);
    let mut cost_fn = |eg: &EG, n: &TNode| {
        if lowerable(eg, n) {
            cost::enode_ns(eg, n, target)
        } else {
            f64::INFINITY
        }
    };
    let choice = extract(&eg, &roots, &mut cost_fn)?;
    let inputs: Vec<(String, TensorType)> = graph
        .inputs
        .iter()
        .map(|&v| (graph.value(v).name.clone(), graph.ty(v).clone()))
        .collect();
    let outputs: Vec<(Id, String)> = outputs
        .into_iter()
        .map(|(id, n)| (eg.find(id), n))
        .collect();
    let mut g = rebuild(&eg, &choice, &graph.name, &inputs, &outputs, &names)?;
    g.name = graph.name.clone();
    tessera_ir::graph::verify_graph(&g).map_err(|e| OptError::Verify(e.to_string()))?;
    let plan = g
        .nodes
        .iter()
        .map(|n| {
            let ins: Vec<&TensorType> = n.inputs.iter().map(|&v| g.ty(v)).collect();
            let outs: Vec<TensorType> = n.outputs.iter().map(|&v| g.ty(v).clone()).collect();
            PlanEntry {
                node: n.name.clone(),
                op: match &n.op {
                    GraphOp::Fused(f) => f.to_string(),
                    GraphOp::Custom(c) => c.qualified(),
                    op => op.name().to_string(),
                },
                ty: outs
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                est_ns: cost::op_ns(&n.op, &ins, &outs, target),
            }
        })
        .collect();
    let report = Report {
        level,
        initial,
        run: stats,
        folded: eg.analysis.tables.folded,
        before_ns,
        after_ns: choice.total_ns,
        plan,
    };
    Ok(Optimized {
        graph: g,
        report: Some(report),
    })
}

/// Runs only the named rules on `graph` and extracts, preferring e-nodes the rules added over
/// the graph's own (each new e-node costs nothing, each original one 1): the rewritten graph,
/// for checking a rule's right-hand sides against its left-hand sides with the reference
/// evaluator. Unknown rule names are an error.
pub fn rewrite_with(
    graph: &Graph,
    target: &TargetSpec,
    rule_names: &[&str],
) -> Result<(Graph, RunStats), String> {
    let all = rules::rules(&themes(3));
    let chosen: Vec<&rewrite::Rule> = rule_names
        .iter()
        .map(|n| {
            all.iter()
                .copied()
                .find(|r| r.name == *n)
                .ok_or_else(|| format!("no rule `{n}`"))
        })
        .collect::<Result<_, _>>()?;
    let (mut eg, outputs, names) = build(graph).map_err(|e| e.to_string())?;
    let original: std::collections::HashSet<TNode> =
        eg.classes().flat_map(|c| c.nodes.iter().cloned()).collect();
    let stats = run(&mut eg, &chosen, &Ctx { target }, limits(1));
    let names = canonical(&eg, names);
    let roots: Vec<Id> = outputs.iter().map(|o| eg.find(o.0)).collect();
    let original: std::collections::HashSet<TNode> = original
        .into_iter()
        .map(|o| o.map_children(|c| eg.find(c)))
        .collect();
    let mut cost_fn = |eg: &EG, n: &TNode| {
        let old = original.contains(&n.clone().map_children(|c| eg.find(c)));
        if matches!(n.op, Op::Input(_) | Op::Const(_)) {
            0.0
        } else if old {
            1.0
        } else {
            0.0
        }
    };
    let choice = extract(&eg, &roots, &mut cost_fn).map_err(|e| e.to_string())?;
    let inputs: Vec<(String, TensorType)> = graph
        .inputs
        .iter()
        .map(|&v| (graph.value(v).name.clone(), graph.ty(v).clone()))
        .collect();
    let outputs: Vec<(Id, String)> = outputs
        .into_iter()
        .map(|(id, n)| (eg.find(id), n))
        .collect();
    let g =
        rebuild(&eg, &choice, &graph.name, &inputs, &outputs, &names).map_err(|e| e.to_string())?;
    tessera_ir::graph::verify_graph(&g).map_err(|e| e.to_string())?;
    Ok((g, stats))
}

/// The names of every rule, in order.
pub fn rule_names() -> Vec<&'static str> {
    rules::rules(&themes(3)).iter().map(|r| r.name).collect()
}
