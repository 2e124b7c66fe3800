//! The import driver: decode, check opsets and operator support up front, bind initializers and
//! graph inputs, convert node by node (folding what is constant), check the declared outputs,
//! drop dead constants and verify.
//!
//! [`Importer::emit`] is the one place nodes enter the graph: it infers the result type with
//! [`GraphOp::infer`] and folds the node to a constant when every operand is one.

use super::attrs::Attrs;
use super::error::{UnsupportedOp, UnsupportedOps};
use super::fold::{self, FOLD_COST_LIMIT, FOLD_LIMIT};
use super::proto::tensor_shape_proto::dimension::Value as Dim;
use super::proto::{GraphProto, NodeProto, ValueInfoProto, data_type, type_proto};
use super::tensor::{checked_elems, dtype_of, tensor_to_host};
use super::{ImportError, decode_model, ops};
use crate::custom::CustomOps;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use tessera_ir::graph::{CustomAttr, CustomOp, Graph, GraphOp, TensorType, ValueId, verify_graph};
use tessera_ir::host::HostTensor;

/// The newest ai.onnx opset tessera imports: that of the `onnx` 1.23 package the tests are
/// generated with. Opsets 22 to 28 mostly widen type lists (bfloat16, 4-bit and 8-bit floats)
/// and add operators; an operator whose meaning changed is handled (or refused) by its own
/// conversion, and the node conformance tests check the numbers at these opsets.
pub const MAX_OPSET: i64 = 28;
/// The oldest opset the importer is fully tested at; older models (IR version 3, opsets 1 to 6)
/// are accepted node by node where the operator's meaning is unchanged.
pub const MIN_FULL_OPSET: i64 = 7;

/// Imports ONNX model bytes into a graph. `model_dir` is the folder external data paths are
/// relative to; without it, a model with external data is an error.
pub fn import_model(bytes: &[u8], model_dir: Option<&Path>) -> Result<Graph, ImportError> {
    import_model_frozen(bytes, model_dir, &BTreeMap::new())
}

/// [`import_model`] with some graph inputs fixed at compile time: each input named in `frozen`
/// becomes a constant with that value (dtype and shape must match its declaration). This is
/// how a model whose shapes depend on an input (a Reshape whose target shape is an input) is
/// specialised for known values.
pub fn import_model_frozen(
    bytes: &[u8],
    model_dir: Option<&Path>,
    frozen: &BTreeMap<String, HostTensor>,
) -> Result<Graph, ImportError> {
    import_model_custom(bytes, model_dir, frozen, &CustomOps::new())
}

/// [`import_model_frozen`] accepting the custom operators registered in `custom`: each node of
/// a registered `(domain, op_type)` becomes a [`GraphOp::Custom`] node whose result types the
/// registered shape rule gives.
pub fn import_model_custom(
    bytes: &[u8],
    model_dir: Option<&Path>,
    frozen: &BTreeMap<String, HostTensor>,
    custom: &CustomOps,
) -> Result<Graph, ImportError> {
    let model = decode_model(bytes)?;
    let Some(gp) = model.graph.as_ref() else {
        return Err(ImportError::Decode(super::OnnxError::NoGraph));
    };
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| ImportError::Opset {
            detail: "the model imports no ai.onnx opset".into(),
        })?;
    if !(1..=MAX_OPSET).contains(&opset) {
        return Err(ImportError::Opset {
            detail: format!(
                "the model imports ai.onnx opset {opset}; tessera imports opsets \
                 {MIN_FULL_OPSET} to {MAX_OPSET} (and 1 to 6 for operators whose meaning is \
                 unchanged)"
            ),
        });
    }
    let names = node_names(gp);
    check_operators(gp, &names, opset, custom)?;
    let mut imp = Importer::new(gp, opset, model_dir);
    imp.custom = custom.clone();
    imp.bind_initializers(gp)?;
    imp.bind_inputs(gp, frozen)?;
    for (node, name) in gp.node.iter().zip(&names) {
        imp.convert_node(node, name)?;
    }
    imp.bind_outputs(gp)?;
    let graph = compact(imp.graph);
    verify_graph(&graph)?;
    Ok(graph)
}

/// Reads and imports an `.onnx` file; external data resolves against the file's folder.
pub fn import_file(path: &Path) -> Result<Graph, ImportError> {
    import_file_frozen(path, &BTreeMap::new())
}

/// [`import_file`] with frozen inputs (see [`import_model_frozen`]).
pub fn import_file_frozen(
    path: &Path,
    frozen: &BTreeMap<String, HostTensor>,
) -> Result<Graph, ImportError> {
    import_file_custom(path, frozen, &CustomOps::new())
}

/// [`import_file_frozen`] with custom operators (see [`import_model_custom`]).
pub fn import_file_custom(
    path: &Path,
    frozen: &BTreeMap<String, HostTensor>,
    custom: &CustomOps,
) -> Result<Graph, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    import_model_custom(&bytes, Some(dir), frozen, custom)
}

/// Each node's name for messages: its own, or `<op_type>_<index>` when empty.
fn node_names(gp: &GraphProto) -> Vec<String> {
    gp.node
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if n.name.is_empty() {
                format!("{}_{i}", n.op_type)
            } else {
                n.name.clone()
            }
        })
        .collect()
}

/// Rejects, in one error, every node whose operator is not imported; then every node whose
/// operator did not exist yet at the model's opset.
fn check_operators(
    gp: &GraphProto,
    names: &[String],
    opset: i64,
    custom: &CustomOps,
) -> Result<(), ImportError> {
    let unsupported: Vec<UnsupportedOp> = gp
        .node
        .iter()
        .zip(names)
        .filter(|(n, _)| custom.get(&n.domain, &n.op_type).is_none())
        .filter(|(n, _)| {
            !(n.domain.is_empty() || n.domain == "ai.onnx")
                || ops::since_opset(&n.op_type).is_none()
        })
        .map(|(n, name)| UnsupportedOp {
            op_type: n.op_type.clone(),
            node: name.clone(),
            domain: n.domain.clone(),
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(ImportError::Unsupported(UnsupportedOps(unsupported)));
    }
    for (n, name) in gp.node.iter().zip(names) {
        if custom.get(&n.domain, &n.op_type).is_some() {
            continue;
        }
        if let Some(since) = ops::since_opset(&n.op_type)
            && opset < since
        {
            return Err(ImportError::Opset {
                detail: format!(
                    "node \"{name}\" ({}): the operator first appears in ai.onnx opset {since}, \
                     but the model imports opset {opset}",
                    n.op_type
                ),
            });
        }
    }
    Ok(())
}

/// The node being converted, as [`ops`] sees it.
pub struct NodeCx<'a> {
    /// The node's display name.
    pub name: &'a str,
    /// The ONNX node.
    pub proto: &'a NodeProto,
    /// Its attributes.
    pub attrs: Attrs<'a>,
    /// Its inputs by position; `None` for an omitted optional input (empty name).
    pub inputs: Vec<Option<ValueId>>,
}

impl NodeCx<'_> {
    /// The ONNX op type.
    pub fn op_type(&self) -> &str {
        &self.proto.op_type
    }

    /// A shape error for this node.
    pub fn shape_err(&self, detail: impl Into<String>) -> ImportError {
        ImportError::shape(self.name, self.op_type(), detail)
    }

    /// An attribute (or missing input) error for this node.
    pub fn attr_err(&self, detail: impl Into<String>) -> ImportError {
        ImportError::attribute(self.name, self.op_type(), detail)
    }

    /// The required input at `i`.
    pub fn input(&self, i: usize) -> Result<ValueId, ImportError> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| self.attr_err(format!("required input {i} is missing")))
    }

    /// The optional input at `i`.
    pub fn opt_input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }
}

/// Import state: the graph being built and the ONNX name of every value so far.
pub struct Importer<'m> {
    /// The graph being built.
    pub graph: Graph,
    /// The model's ai.onnx opset.
    pub opset: i64,
    model_dir: Option<&'m Path>,
    /// ONNX tensor name to value.
    env: HashMap<String, ValueId>,
    /// Every name in use or reserved (all ONNX tensor names), so generated names never collide.
    taken: HashSet<String>,
    /// The custom operators nodes may use.
    pub custom: CustomOps,
    /// Results beyond the first that the node being converted produced (e.g. LayerNormalization's
    /// Mean and InvStdDev), in output order; a converter sets it, `convert_node` binds them.
    pub extra_outputs: Vec<ValueId>,
}

impl<'m> Importer<'m> {
    fn new(gp: &GraphProto, opset: i64, model_dir: Option<&'m Path>) -> Self {
        let mut taken = HashSet::new();
        let io = gp.input.iter().chain(&gp.output).map(|v| v.name.clone());
        let inits = gp.initializer.iter().map(|t| t.name.clone());
        let outs = gp.node.iter().flat_map(|n| n.output.iter().cloned());
        taken.extend(io.chain(inits).chain(outs));
        Importer {
            graph: Graph::new(gp.name.clone()),
            opset,
            model_dir,
            env: HashMap::new(),
            taken,
            custom: CustomOps::new(),
            extra_outputs: Vec::new(),
        }
    }

    /// A node of a registered custom operator: the shape rule gives its result types; results
    /// beyond the first become extra outputs.
    fn convert_custom(
        &mut self,
        cx: &NodeCx,
        kernel: &dyn crate::custom::CustomKernel,
    ) -> Result<ValueId, ImportError> {
        let mut inputs = Vec::new();
        for (k, v) in cx.inputs.iter().enumerate() {
            match v {
                Some(v) => inputs.push(*v),
                None => {
                    return Err(cx.attr_err(format!(
                        "input {k} is omitted; custom operators take every input they list"
                    )));
                }
            }
        }
        let types: Vec<TensorType> = inputs.iter().map(|&v| self.graph.ty(v).clone()).collect();
        let attrs = custom_attrs(cx.proto);
        let outputs = kernel
            .infer(&types, &attrs)
            .map_err(|e| cx.shape_err(format!("the registered shape rule refused it: {e}")))?;
        if outputs.is_empty() {
            return Err(cx.shape_err("the registered shape rule gave no results"));
        }
        let op = GraphOp::Custom(Box::new(CustomOp {
            domain: cx.proto.domain.clone(),
            op_type: cx.proto.op_type.clone(),
            attrs,
            inputs: types,
            outputs: outputs.clone(),
            est_ns: 0.0,
        }));
        // Never folded, even on constant operands: the evaluator has no definition of it.
        let outs = self
            .graph
            .add_node(cx.name, op, &inputs)
            .map_err(|e| cx.shape_err(e.to_string()))?;
        for &v in &outs {
            let name = self.fresh(cx.name);
            if let Some(value) = self.graph.values.get_mut(v.0 as usize) {
                value.name = name;
            }
        }
        let (&first, rest) = outs
            .split_first()
            .ok_or_else(|| cx.shape_err("the operator gives no result"))?;
        self.extra_outputs = rest.to_vec();
        Ok(first)
    }

    /// A value name starting with `base` that no ONNX tensor or earlier value has.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.taken.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    /// The folder external data resolves against.
    pub fn model_dir(&self) -> Option<&'m Path> {
        self.model_dir
    }

    /// The type of a value.
    pub fn ty(&self, v: ValueId) -> &TensorType {
        self.graph.ty(v)
    }

    /// The tensor of a constant value.
    pub fn constant_of(&self, v: ValueId) -> Option<&HostTensor> {
        self.graph.constants.get(&v)
    }

    /// Adds a constant named after `base`.
    pub fn constant(&mut self, base: &str, t: HostTensor) -> ValueId {
        let name = self.fresh(base);
        self.graph.add_constant(name, t)
    }

    /// Applies `op` to `inputs` as part of node `cx`: a new node named `node_name`, or a
    /// constant when every input is constant, the result is small enough to hold, and the
    /// inputs' values survive the evaluator's f64 ([`fold::survives_f64`]).
    pub fn emit(
        &mut self,
        cx: &NodeCx,
        node_name: &str,
        op: GraphOp,
        inputs: &[ValueId],
    ) -> Result<ValueId, ImportError> {
        let types: Vec<&TensorType> = inputs.iter().map(|&v| self.graph.ty(v)).collect();
        let out = op
            .infer(&types)
            .map_err(|e| cx.shape_err(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| cx.shape_err("the operator gives no result"))?;
        let elems = checked_elems(&out.shape).ok_or_else(|| {
            cx.shape_err(format!("the result shape {:?} is too large", out.shape))
        })?;
        let small = elems <= FOLD_LIMIT && fold::fold_cost(&op, &types, elems) <= FOLD_COST_LIMIT;
        let operands: Option<Vec<&HostTensor>> =
            inputs.iter().map(|v| self.graph.constants.get(v)).collect();
        let foldable = |o: &Vec<&HostTensor>| {
            !o.is_empty() && small && o.iter().all(|t| fold::survives_f64(t))
        };
        if let Some(operands) = operands.filter(foldable) {
            let t = fold::evaluate_one(&op, &operands).map_err(|e| cx.shape_err(e))?;
            return Ok(self.constant(node_name, t));
        }
        let outs = self
            .graph
            .add_node(node_name, op, inputs)
            .map_err(|e| cx.shape_err(e.to_string()))?;
        let v = *outs
            .first()
            .ok_or_else(|| cx.shape_err("the operator gives no result"))?;
        // add_node names results after the node; node and tensor names are separate namespaces
        // in ONNX, so rename to a name no tensor has.
        let name = self.fresh(node_name);
        if let Some(value) = self.graph.values.get_mut(v.0 as usize) {
            value.name = name;
        }
        Ok(v)
    }

    fn bind(&mut self, name: &str, v: ValueId) -> Result<(), ImportError> {
        if self.env.insert(name.to_string(), v).is_some() {
            return Err(ImportError::Malformed(format!(
                "tensor \"{name}\" is defined more than once"
            )));
        }
        Ok(())
    }

    /// Initializers become constants under their own names. IR version 3 models also list them
    /// as graph inputs; [`Self::bind_inputs`] skips those.
    fn bind_initializers(&mut self, gp: &GraphProto) -> Result<(), ImportError> {
        if let Some(s) = gp.sparse_initializer.first() {
            let name = s.values.as_ref().map_or("", |v| v.name.as_str());
            return Err(ImportError::Type {
                what: format!("initializer \"{name}\""),
                elem_type: "sparse tensor".into(),
                detail: " (store it as a dense initializer)".into(),
            });
        }
        for t in &gp.initializer {
            let host = tensor_to_host(t, self.model_dir)?;
            let v = self.graph.add_constant(t.name.clone(), host);
            self.bind(&t.name, v)?;
        }
        Ok(())
    }

    fn bind_inputs(
        &mut self,
        gp: &GraphProto,
        frozen: &BTreeMap<String, HostTensor>,
    ) -> Result<(), ImportError> {
        for info in &gp.input {
            if self.env.contains_key(&info.name) && self.constant_of_name(&info.name) {
                continue;
            }
            let ty = input_type(info)?;
            if let Some(t) = frozen.get(&info.name) {
                if t.dtype != ty.dtype || t.shape != ty.shape {
                    return Err(ImportError::Malformed(format!(
                        "graph input \"{}\" is {ty} but the value fixed for it is {}{:?}",
                        info.name, t.dtype, t.shape
                    )));
                }
                let v = self.graph.add_constant(info.name.clone(), t.clone());
                self.bind(&info.name, v)?;
                continue;
            }
            let v = self.graph.add_input(info.name.clone(), ty);
            self.bind(&info.name, v)?;
        }
        Ok(())
    }

    fn constant_of_name(&self, name: &str) -> bool {
        self.env
            .get(name)
            .is_some_and(|v| self.graph.constants.contains_key(v))
    }

    fn convert_node(&mut self, node: &NodeProto, name: &str) -> Result<(), ImportError> {
        let inputs = node
            .input
            .iter()
            .map(|i| {
                if i.is_empty() {
                    return Ok(None);
                }
                self.env.get(i).copied().map(Some).ok_or_else(|| {
                    ImportError::Malformed(format!(
                        "node \"{name}\" ({}) uses \"{i}\", which no graph input, initializer \
                         or earlier node defines",
                        node.op_type
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cx = NodeCx {
            name,
            proto: node,
            attrs: Attrs::new(node, name),
            inputs,
        };
        let first_new = self.graph.values.len();
        self.extra_outputs.clear();
        let result = match self.custom.get(&node.domain, &node.op_type).cloned() {
            Some(kernel) => self.convert_custom(&cx, kernel.as_ref())?,
            None => ops::convert(self, &cx)?,
        };
        let extra = std::mem::take(&mut self.extra_outputs);
        // Output 0 is the converter's result; outputs 1.. (when the model asks for them) are the
        // extra results it reported. An empty name means the output is not wanted.
        let Some(out_name) = node.output.first().filter(|o| !o.is_empty()) else {
            return Err(cx.attr_err("the node's first output has no name"));
        };
        for (k, name) in node.output.iter().enumerate().skip(1) {
            if name.is_empty() {
                continue;
            }
            let Some(&v) = extra.get(k - 1) else {
                return Err(cx.attr_err(format!(
                    "output {k} (\"{name}\") is not supported for this operator; only the first output is produced"
                )));
            };
            let v = self.emit(&cx, name, GraphOp::Identity, &[v])?;
            if let Some(value) = self.graph.values.get_mut(v.0 as usize) {
                value.name = name.clone();
            }
            self.bind(name, v)?;
        }
        // A result that existed before this node (an operand passed through) gets its own
        // value, so every ONNX name, graph outputs included, names exactly one value.
        let v = if (result.0 as usize) < first_new {
            self.emit(&cx, name, GraphOp::Identity, &[result])?
        } else {
            result
        };
        if let Some(value) = self.graph.values.get_mut(v.0 as usize) {
            value.name = out_name.clone();
        }
        self.bind(out_name, v)
    }

    fn bind_outputs(&mut self, gp: &GraphProto) -> Result<(), ImportError> {
        for info in &gp.output {
            let v = *self.env.get(&info.name).ok_or_else(|| {
                ImportError::Malformed(format!(
                    "graph output \"{}\" is not produced by any node, input or initializer",
                    info.name
                ))
            })?;
            check_declared(info, self.graph.ty(v))?;
            self.graph.outputs.push(v);
        }
        Ok(())
    }
}

fn tensor_type(info: &ValueInfoProto) -> Option<&type_proto::Tensor> {
    match info.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => Some(t),
    }
}

/// A graph input's static type; symbolic or unknown dims are errors.
fn input_type(info: &ValueInfoProto) -> Result<TensorType, ImportError> {
    let name = &info.name;
    let t = tensor_type(info)
        .ok_or_else(|| ImportError::Malformed(format!("graph input \"{name}\" is not a tensor")))?;
    // Inputs are supplied by the caller in their declared type, so unlike initializers a double
    // input cannot be narrowed silently.
    let dtype = dtype_of(t.elem_type)
        .filter(|_| t.elem_type != data_type::DOUBLE)
        .ok_or_else(|| ImportError::Type {
            what: format!("graph input \"{name}\""),
            elem_type: data_type::name(t.elem_type).to_string(),
            detail: String::new(),
        })?;
    let dims = &t
        .shape
        .as_ref()
        .ok_or_else(|| ImportError::Symbolic {
            input: name.clone(),
            dim: 0,
            what: "unknown (the input declares no shape at all)".into(),
        })?
        .dim;
    let mut shape = Vec::with_capacity(dims.len());
    for (i, d) in dims.iter().enumerate() {
        let what = match &d.value {
            Some(Dim::DimValue(v)) if *v >= 0 => {
                shape.push(*v as usize);
                continue;
            }
            Some(Dim::DimValue(v)) => format!("negative ({v})"),
            Some(Dim::DimParam(p)) => format!("symbolic (\"{p}\")"),
            None => "unknown".to_string(),
        };
        return Err(ImportError::Symbolic {
            input: name.clone(),
            dim: i,
            what,
        });
    }
    if checked_elems(&shape).is_none() {
        return Err(ImportError::Malformed(format!(
            "graph input \"{name}\" has shape {shape:?}, which is too large"
        )));
    }
    Ok(TensorType { dtype, shape })
}

/// Compares a declared output type with the inferred one. Unknown or symbolic declared dims
/// match anything; the element type and rank must agree.
fn check_declared(info: &ValueInfoProto, inferred: &TensorType) -> Result<(), ImportError> {
    let Some(t) = tensor_type(info) else {
        return Ok(());
    };
    let mismatch = |declared: String| ImportError::OutputMismatch {
        output: info.name.clone(),
        declared,
        inferred: inferred.to_string(),
    };
    let declared_dtype = dtype_of(t.elem_type);
    if t.elem_type != data_type::UNDEFINED && declared_dtype != Some(inferred.dtype) {
        return Err(mismatch(data_type::name(t.elem_type).to_string()));
    }
    let Some(shape) = &t.shape else {
        return Ok(());
    };
    let dims: Vec<Option<i64>> = shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(Dim::DimValue(v)) => Some(v),
            _ => None,
        })
        .collect();
    let agrees = dims.len() == inferred.shape.len()
        && dims
            .iter()
            .zip(&inferred.shape)
            .all(|(d, &s)| d.is_none_or(|d| d == s as i64));
    if !agrees {
        let text: Vec<String> = dims
            .iter()
            .map(|d| d.map_or_else(|| "?".to_string(), |d| d.to_string()))
            .collect();
        let dtype = declared_dtype.map_or("?".to_string(), |d| d.to_string());
        return Err(mismatch(format!("{dtype}[{}]", text.join(", "))));
    }
    Ok(())
}

/// Rebuilds the graph without constants nothing uses (folded intermediates, unused
/// initializers), renumbering values in their original order.
fn compact(g: Graph) -> Graph {
    let mut live: HashSet<ValueId> = g.inputs.iter().chain(&g.outputs).copied().collect();
    for n in &g.nodes {
        live.extend(n.inputs.iter().chain(&n.outputs).copied());
    }
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    let mut out = Graph::new(g.name);
    for (i, v) in g.values.into_iter().enumerate() {
        let old = ValueId(i as u32);
        if live.contains(&old) {
            map.insert(old, ValueId(out.values.len() as u32));
            out.values.push(v);
        }
    }
    let m = |v: &ValueId| map.get(v).copied().unwrap_or(*v);
    out.inputs = g.inputs.iter().map(m).collect();
    out.outputs = g.outputs.iter().map(m).collect();
    out.constants = g
        .constants
        .into_iter()
        .filter(|(v, _)| live.contains(v))
        .map(|(v, t)| (m(&v), t))
        .collect::<BTreeMap<_, _>>();
    out.nodes = g
        .nodes
        .into_iter()
        .map(|mut n| {
            n.inputs = n.inputs.iter().map(m).collect();
            n.outputs = n.outputs.iter().map(m).collect();
            n
        })
        .collect();
    out
}

/// A node's attributes as a custom operator sees them (graph, tensor and sparse attributes are
/// left out).
fn custom_attrs(node: &NodeProto) -> Vec<(String, CustomAttr)> {
    // AttributeProto.AttributeType: FLOAT 1, INT 2, STRING 3, FLOATS 6, INTS 7 (onnx.proto).
    node.attribute
        .iter()
        .filter_map(|a| {
            let v = match a.r#type {
                1 => CustomAttr::Float(f64::from(a.f)),
                2 => CustomAttr::Int(a.i),
                3 => CustomAttr::Str(String::from_utf8_lossy(&a.s).into_owned()),
                6 => CustomAttr::Floats(a.floats.iter().map(|&f| f64::from(f)).collect()),
                7 => CustomAttr::Ints(a.ints.clone()),
                _ => return None,
            };
            Some((a.name.clone(), v))
        })
        .collect()
}
