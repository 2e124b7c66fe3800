//! Import of the indexing operators with value indices: GatherElements, GatherND,
//! ScatterElements (and its predecessor Scatter), ScatterND, OneHot and TopK.
//!
//! Per onnx/docs/Operators.md and Changelog.md: GatherElements-11/-13, GatherND-11 (with
//! `batch_dims` from GatherND-12), Scatter-9 (deprecated by ScatterElements-11, same meaning),
//! ScatterElements-11 (`reduction` add/mul from -16, max/min from -18), ScatterND-11 (same
//! reduction steps), OneHot-9/-11 (negative axis and indices from -11), TopK-1 (`k` attribute),
//! TopK-10 (`k` input), TopK-11 (`largest`, `sorted`, negative axis).

use super::ImportError;
use super::fold;
use super::import::{Importer, NodeCx};
use super::ops::const_ints;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{
    BinaryOp, ElementwiseOp, GraphOp, IndexOp, ScatterReduction, TensorType, ValueId,
};
use tessera_ir::host::HostTensor;

/// The first ai.onnx opset of the operators this file imports; `None` for the others.
pub fn since_opset(op_type: &str) -> Option<i64> {
    Some(match op_type {
        "TopK" => 1,
        "Scatter" | "OneHot" => 9,
        "GatherElements" | "GatherND" | "ScatterElements" | "ScatterND" => 11,
        _ => return None,
    })
}

/// Converts one of the operators [`since_opset`] names.
pub fn convert(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    match cx.op_type() {
        "GatherElements" => {
            inputs(cx, 2)?;
            let data = cx.input(0)?;
            let axis = axis_of(imp, cx, data, 0)?;
            let op = GraphOp::Index(IndexOp::GatherElements { axis });
            imp.emit(cx, cx.name, op, &[data, cx.input(1)?])
        }
        "GatherND" => {
            inputs(cx, 2)?;
            let batch_dims = if imp.opset >= 12 {
                cx.attrs.int_or("batch_dims", 0)?
            } else {
                0
            };
            let batch_dims = usize::try_from(batch_dims)
                .map_err(|_| cx.attr_err(format!("batch_dims {batch_dims} is negative")))?;
            let op = GraphOp::Index(IndexOp::GatherNd { batch_dims });
            imp.emit(cx, cx.name, op, &[cx.input(0)?, cx.input(1)?])
        }
        "Scatter" | "ScatterElements" => {
            inputs(cx, 3)?;
            let data = cx.input(0)?;
            let axis = axis_of(imp, cx, data, 0)?;
            let reduction = reduction(imp, cx)?;
            let op = GraphOp::Index(IndexOp::ScatterElements { axis, reduction });
            imp.emit(cx, cx.name, op, &[data, cx.input(1)?, cx.input(2)?])
        }
        "ScatterND" => {
            inputs(cx, 3)?;
            let reduction = reduction(imp, cx)?;
            let op = GraphOp::Index(IndexOp::ScatterNd { reduction });
            imp.emit(cx, cx.name, op, &[cx.input(0)?, cx.input(1)?, cx.input(2)?])
        }
        "OneHot" => one_hot(imp, cx),
        "TopK" => top_k(imp, cx),
        other => Err(cx.attr_err(format!("operator {other} is not an indexing operator"))),
    }
}

fn inputs(cx: &NodeCx, n: usize) -> Result<(), ImportError> {
    let got = cx.proto.input.len();
    if got == n {
        Ok(())
    } else {
        Err(cx.attr_err(format!("expects {n} inputs, the node lists {got}")))
    }
}

fn axis_of(imp: &Importer, cx: &NodeCx, v: ValueId, default: i64) -> Result<usize, ImportError> {
    let rank = imp.ty(v).shape.len();
    let a = cx.attrs.int_or("axis", default)?;
    fold::normalize_axis(a, rank)
        .ok_or_else(|| cx.attr_err(format!("axis {a} is out of range for rank {rank}")))
}

/// `reduction` (ScatterElements/ScatterND-16: none, add, mul; -18: max, min).
fn reduction(imp: &Importer, cx: &NodeCx) -> Result<ScatterReduction, ImportError> {
    let Some(s) = cx.attrs.string("reduction")? else {
        return Ok(ScatterReduction::None);
    };
    let r = match s {
        b"none" => ScatterReduction::None,
        b"add" => ScatterReduction::Add,
        b"mul" => ScatterReduction::Mul,
        b"max" => ScatterReduction::Max,
        b"min" => ScatterReduction::Min,
        other => {
            return Err(cx.attr_err(format!(
                "reduction `{}` is not none, add, mul, max or min",
                String::from_utf8_lossy(other)
            )));
        }
    };
    let since = match r {
        ScatterReduction::None => 1,
        ScatterReduction::Add | ScatterReduction::Mul => 16,
        ScatterReduction::Max | ScatterReduction::Min => 18,
    };
    if imp.opset < since {
        return Err(cx.attr_err(format!(
            "reduction `{}` arrives with opset {since}; the model imports opset {}",
            r.name(),
            imp.opset
        )));
    }
    Ok(r)
}

/// A constant scalar of `dtype` named after the node.
fn scalar(imp: &mut Importer, cx: &NodeCx, what: &str, dtype: DType, v: f64) -> ValueId {
    imp.constant(
        &format!("{}/{what}", cx.name),
        HostTensor::from_f64(dtype, &[], &[v]),
    )
}

/// OneHot as existing operators: `Where(Equal(wrap(indices), range), on, off)`, the indices
/// reshaped to put a size-1 axis where the depth axis goes and `range` = 0..depth along it.
/// `depth` must be known at compile time (it is the result's shape). Indices are cast to int64
/// first (non-integer indices are cast); from OneHot-11 a negative one counts from the end.
/// Indices outside the range match nothing and give an all-`off` row.
fn one_hot(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    inputs(cx, 3)?;
    let (idx, depth_v, values) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let depth_t = imp
        .constant_of(depth_v)
        .ok_or_else(|| ImportError::NeedsConstant {
            node: cx.name.to_string(),
            op_type: cx.op_type().to_string(),
            what: "depth".into(),
            value: imp.graph.value(depth_v).name.clone(),
        })?;
    if depth_t.elems() != 1 {
        return Err(cx.shape_err(format!(
            "depth must hold one value, it has shape {:?}",
            depth_t.shape
        )));
    }
    let d = depth_t.get(0).trunc();
    if !(1.0..=f64::from(u32::MAX)).contains(&d) {
        return Err(cx.attr_err(format!("depth {d} must be a positive integer")));
    }
    let depth = d as usize;
    let vt = imp.ty(values).clone();
    if vt.elems() != 2 || vt.shape.len() != 1 {
        return Err(cx.shape_err(format!(
            "values must be [off, on] (shape [2]), it is {:?}",
            vt.shape
        )));
    }
    let ishape = imp.ty(idx).shape.clone();
    let rank = ishape.len() + 1;
    let a = cx.attrs.int_or("axis", -1)?;
    let axis = fold::normalize_axis(a, rank)
        .ok_or_else(|| cx.attr_err(format!("axis {a} is out of range for rank {rank}")))?;
    let name = |s: &str| format!("{}/{s}", cx.name);
    let mut i = idx;
    if imp.ty(i).dtype != DType::I64 {
        i = imp.emit(cx, &name("cast"), GraphOp::Cast { to: DType::I64 }, &[i])?;
    }
    // wrapped = i < 0 ? i + depth : i (OneHot-11; at OneHot-9 a negative index is out of range
    // and matches nothing, as it stands).
    let wrapped = if imp.opset >= 11 {
        let zero = scalar(imp, cx, "zero", DType::I64, 0.0);
        let dep = scalar(imp, cx, "depth", DType::I64, depth as f64);
        let less = GraphOp::Elementwise(ElementwiseOp::Less);
        let neg = imp.emit(cx, &name("neg"), less, &[i, zero])?;
        let add = GraphOp::Binary(BinaryOp::Add);
        let shifted = imp.emit(cx, &name("shift"), add, &[i, dep])?;
        let pick = GraphOp::Elementwise(ElementwiseOp::Where);
        imp.emit(cx, &name("wrap"), pick, &[neg, shifted, i])?
    } else {
        i
    };
    let mut shape = ishape.clone();
    shape.insert(axis, 1);
    let col = imp.emit(
        cx,
        &name("unsqueeze"),
        GraphOp::Reshape { shape },
        &[wrapped],
    )?;
    let mut rshape = vec![1; rank];
    rshape[axis] = depth;
    let range: Vec<i64> = (0..depth as i64).collect();
    let range = imp.constant(&name("range"), fold::i64_tensor(&rshape, &range));
    let hot = imp.emit(
        cx,
        &name("eq"),
        GraphOp::Elementwise(ElementwiseOp::Equal),
        &[col, range],
    )?;
    let pick = |imp: &mut Importer, what: &str, at: f64| -> Result<ValueId, ImportError> {
        let k = scalar(imp, cx, &format!("{what}_index"), DType::I64, at);
        imp.emit(cx, &name(what), GraphOp::Gather { axis: 0 }, &[values, k])
    };
    let off = pick(imp, "off", 0.0)?;
    let on = pick(imp, "on", 1.0)?;
    imp.emit(
        cx,
        cx.name,
        GraphOp::Elementwise(ElementwiseOp::Where),
        &[hot, on, off],
    )
}

/// TopK: `k` is an attribute before opset 10 and an input after (it must be a compile-time
/// constant: it is the results' shape); `largest`/`sorted` from TopK-11. Two results: values
/// and int64 indices.
fn top_k(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let x = cx.input(0)?;
    let k = if imp.opset >= 10 {
        inputs(cx, 2)?;
        let ks = const_ints(imp, cx, cx.input(1)?, "k")?;
        match ks.as_slice() {
            [k] => *k,
            _ => return Err(cx.shape_err(format!("k must hold one value, it holds {ks:?}"))),
        }
    } else {
        inputs(cx, 1)?;
        cx.attrs.int_required("k")?
    };
    let k = usize::try_from(k).map_err(|_| cx.attr_err(format!("k = {k} is negative")))?;
    let axis = axis_of(imp, cx, x, -1)?;
    let (largest, sorted) = if imp.opset >= 11 {
        (
            cx.attrs.flag_or("largest", true)?,
            cx.attrs.flag_or("sorted", true)?,
        )
    } else {
        (true, true)
    };
    let op = GraphOp::Index(IndexOp::TopK {
        axis,
        k,
        largest,
        sorted,
    });
    let types: Vec<&TensorType> = vec![imp.ty(x)];
    op.infer(&types).map_err(|e| cx.shape_err(e.to_string()))?;
    let outs = imp
        .graph
        .add_node(cx.name, op, &[x])
        .map_err(|e| cx.shape_err(e.to_string()))?;
    for &v in &outs {
        let fresh = imp.fresh(cx.name);
        if let Some(value) = imp.graph.values.get_mut(v.0 as usize) {
            value.name = fresh;
        }
    }
    let [values, indices] = outs[..] else {
        return Err(cx.shape_err("TopK gives two results"));
    };
    imp.extra_outputs = vec![indices];
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::super::import_model;
    use super::super::proto::tensor_shape_proto::{Dimension, dimension::Value as Dim};
    use super::super::proto::*;
    use super::*;
    use prost::Message;
    use std::collections::BTreeMap;
    use tessera_ir::graph::evaluate;

    fn vi(name: &str, elem_type: i32, shape: &[i64]) -> ValueInfoProto {
        let dim = shape
            .iter()
            .map(|&v| Dimension {
                value: Some(Dim::DimValue(v)),
                denotation: String::new(),
            })
            .collect();
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type,
                    shape: Some(TensorShapeProto { dim }),
                })),
                denotation: String::new(),
            }),
            doc_string: String::new(),
        }
    }

    fn attr(name: &str, i: Option<i64>, s: Option<&str>) -> AttributeProto {
        match (i, s) {
            (Some(i), _) => AttributeProto {
                name: name.into(),
                r#type: AttributeType::Int as i32,
                i,
                ..Default::default()
            },
            (_, s) => AttributeProto {
                name: name.into(),
                r#type: AttributeType::String as i32,
                s: s.unwrap_or_default().as_bytes().to_vec(),
                ..Default::default()
            },
        }
    }

    fn tensor(name: &str, data_type: i32, shape: &[i64], v: &[f64]) -> TensorProto {
        let mut t = TensorProto {
            name: name.into(),
            dims: shape.to_vec(),
            data_type,
            ..Default::default()
        };
        if data_type == data_type::INT64 {
            t.int64_data = v.iter().map(|&x| x as i64).collect();
        } else {
            t.float_data = v.iter().map(|&x| x as f32).collect();
        }
        t
    }

    struct M {
        opset: i64,
        op: &'static str,
        ins: Vec<&'static str>,
        outs: Vec<&'static str>,
        attrs: Vec<AttributeProto>,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        inits: Vec<TensorProto>,
    }

    fn import(m: M) -> Result<tessera_ir::graph::Graph, ImportError> {
        let bytes = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: m.opset,
            }],
            graph: Some(GraphProto {
                name: "g".into(),
                node: vec![NodeProto {
                    input: m.ins.iter().map(|s| s.to_string()).collect(),
                    output: m.outs.iter().map(|s| s.to_string()).collect(),
                    name: "n".into(),
                    op_type: m.op.into(),
                    attribute: m.attrs,
                    ..Default::default()
                }],
                input: m.inputs,
                output: m.outputs,
                initializer: m.inits,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        import_model(&bytes, None)
    }

    fn scatter(opset: i64, reduction: &str) -> Result<tessera_ir::graph::Graph, ImportError> {
        import(M {
            opset,
            op: "ScatterElements",
            ins: vec!["d", "i", "u"],
            outs: vec!["y"],
            attrs: vec![attr("reduction", None, Some(reduction))],
            inputs: vec![
                vi("d", data_type::FLOAT, &[2, 3]),
                vi("i", data_type::INT64, &[1, 3]),
                vi("u", data_type::FLOAT, &[1, 3]),
            ],
            outputs: vec![vi("y", data_type::FLOAT, &[2, 3])],
            inits: vec![],
        })
    }

    #[test]
    fn scatter_reductions_are_checked_against_the_opset() {
        assert!(scatter(18, "max").is_ok());
        let err = scatter(16, "max").unwrap_err().to_string();
        assert!(err.contains("\"n\"") && err.contains("opset 18"), "{err}");
        let err = scatter(18, "xor").unwrap_err().to_string();
        assert!(err.contains("reduction `xor`"), "{err}");
    }

    fn one_hot(depth_is_input: bool) -> Result<tessera_ir::graph::Graph, ImportError> {
        one_hot_at(11, depth_is_input)
    }

    fn one_hot_at(
        opset: i64,
        depth_is_input: bool,
    ) -> Result<tessera_ir::graph::Graph, ImportError> {
        let mut inputs = vec![vi("idx", data_type::INT64, &[3])];
        let mut inits = vec![tensor("values", data_type::FLOAT, &[2], &[2.0, 7.0])];
        if depth_is_input {
            inputs.push(vi("depth", data_type::FLOAT, &[]));
        } else {
            inits.push(tensor("depth", data_type::FLOAT, &[], &[3.0]));
        }
        import(M {
            opset,
            op: "OneHot",
            ins: vec!["idx", "depth", "values"],
            outs: vec!["y"],
            attrs: vec![],
            inputs,
            outputs: vec![vi("y", data_type::FLOAT, &[3, 3])],
            inits,
        })
    }

    #[test]
    fn one_hot_needs_a_constant_depth_and_wraps_negative_indices() {
        assert!(matches!(
            one_hot(true),
            Err(ImportError::NeedsConstant { ref what, .. }) if what == "depth"
        ));
        let g = one_hot(false).unwrap();
        let idx = HostTensor::from_f64(DType::I64, &[3], &[-1.0, 0.0, 5.0]);
        let out = evaluate(&g, &BTreeMap::from([("idx".to_string(), idx)])).unwrap();
        // -1 wraps to 2; 5 is outside [-3, 3), an all-off row. off = 2, on = 7.
        assert_eq!(
            out["y"].to_f64_vec(),
            [2.0, 2.0, 7.0, 7.0, 2.0, 2.0, 2.0, 2.0, 2.0]
        );
        // OneHot-9 does not wrap: -1 is out of range.
        let g = one_hot_at(9, false).unwrap();
        let idx = HostTensor::from_f64(DType::I64, &[3], &[-1.0, 0.0, 5.0]);
        let out = evaluate(&g, &BTreeMap::from([("idx".to_string(), idx)])).unwrap();
        assert_eq!(&out["y"].to_f64_vec()[..3], [2.0, 2.0, 2.0]);
    }

    fn top_k(k: f64) -> Result<tessera_ir::graph::Graph, ImportError> {
        import(M {
            opset: 11,
            op: "TopK",
            ins: vec!["x", "k"],
            outs: vec!["v", "i"],
            attrs: vec![attr("largest", Some(0), None)],
            inputs: vec![vi("x", data_type::FLOAT, &[2, 3])],
            outputs: vec![
                vi("v", data_type::FLOAT, &[2, 2]),
                vi("i", data_type::INT64, &[2, 2]),
            ],
            inits: vec![tensor("k", data_type::INT64, &[1], &[k])],
        })
    }

    #[test]
    fn top_k_gives_values_and_indices() {
        let g = top_k(2.0).unwrap();
        let x = HostTensor::from_f64(DType::F32, &[2, 3], &[3.0, 1.0, 2.0, 5.0, 5.0, 4.0]);
        let out = evaluate(&g, &BTreeMap::from([("x".to_string(), x)])).unwrap();
        // Smallest two of each row; row 1's tie of 5s does not reach the top two.
        assert_eq!(out["v"].to_f64_vec(), [1.0, 2.0, 4.0, 5.0]);
        assert_eq!(out["i"].to_f64_vec(), [1.0, 2.0, 2.0, 0.0]);
        let err = top_k(4.0).unwrap_err().to_string();
        assert!(err.contains("k = 4"), "{err}");
    }
}
