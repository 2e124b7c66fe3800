//! Importer tests on models built here with the prost structs: errors, folding, old opsets, and
//! property tests that corrupt model bytes and build random node soups (never a panic).

use super::proto::tensor_shape_proto::{Dimension, dimension::Value as Dim};
use super::proto::*;
use super::*;
use proptest::prelude::*;
use prost::Message;
use std::collections::BTreeMap;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{GraphOp, evaluate};
use tessera_ir::host::HostTensor;

fn dims(d: &[i64]) -> Vec<Dimension> {
    d.iter()
        .map(|&v| Dimension {
            value: Some(Dim::DimValue(v)),
            denotation: String::new(),
        })
        .collect()
}

fn vi(name: &str, elem_type: i32, dim: Vec<Dimension>) -> ValueInfoProto {
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

fn f32_input(name: &str, shape: &[i64]) -> ValueInfoProto {
    vi(name, data_type::FLOAT, dims(shape))
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Tensor as i32,
        t: Some(t),
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    ins: &[&str],
    out: &str,
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        name: name.into(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

fn i64s(name: &str, shape: &[i64], v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: shape.to_vec(),
        data_type: data_type::INT64,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    input: Vec<ValueInfoProto>,
    output: Vec<ValueInfoProto>,
    initializer: Vec<TensorProto>,
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            node: nodes,
            input,
            output,
            initializer,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// `y = Reshape(x[6,4,5], Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))`, the exporter idiom.
fn flatten_batch_model() -> Vec<u8> {
    let minus_one = i64s("minus_one", &[1], &[-1]);
    model(
        13,
        vec![
            node("Shape", "shape", &["x"], "s", vec![]),
            node(
                "Gather",
                "gather",
                &["s", "zero"],
                "b",
                vec![attr_int("axis", 0)],
            ),
            node("Unsqueeze", "unsq", &["b", "axes"], "b1", vec![]),
            node(
                "Constant",
                "",
                &[],
                "m1",
                vec![attr_tensor("value", minus_one)],
            ),
            node(
                "Concat",
                "concat",
                &["b1", "m1"],
                "new_shape",
                vec![attr_int("axis", 0)],
            ),
            node("Reshape", "reshape", &["x", "new_shape"], "y", vec![]),
        ],
        vec![f32_input("x", &[6, 4, 5])],
        vec![f32_input("y", &[6, 20])],
        vec![i64s("zero", &[], &[0]), i64s("axes", &[1], &[0])],
    )
}

#[test]
fn shape_computations_fold_to_one_reshape() {
    let g = import_model(&flatten_batch_model(), None).unwrap();
    assert_eq!(g.nodes.len(), 1, "{}", tessera_ir::graph::print_graph(&g));
    assert_eq!(g.nodes[0].op, GraphOp::Reshape { shape: vec![6, 20] });
    assert_eq!(g.nodes[0].name, "reshape");
    assert!(g.constants.is_empty());
    assert_eq!(g.value(g.outputs[0]).name, "y");
}

#[test]
fn truncated_and_random_bytes_are_decode_errors() {
    let bytes = flatten_batch_model();
    for cut in [1, bytes.len() / 2, bytes.len() - 1] {
        let e = import_model(&bytes[..cut], None).unwrap_err();
        assert!(matches!(e, ImportError::Decode(_)), "cut at {cut}: {e}");
    }
    let noise: Vec<u8> = (0..300u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let e = import_model(&noise, None).unwrap_err();
    assert!(matches!(e, ImportError::Decode(_)), "{e}");
}

#[test]
fn symbolic_and_unknown_dims_name_the_input() {
    let mut sym = dims(&[3]);
    sym.insert(
        0,
        Dimension {
            value: Some(Dim::DimParam("batch".into())),
            denotation: String::new(),
        },
    );
    let bytes = model(
        17,
        vec![node("Relu", "r", &["x"], "y", vec![])],
        vec![vi("x", data_type::FLOAT, sym)],
        vec![f32_input("y", &[1, 3])],
        vec![],
    );
    let e = import_model(&bytes, None).unwrap_err();
    assert!(matches!(e, ImportError::Symbolic { dim: 0, .. }), "{e}");
    assert!(
        e.to_string().contains("\"x\"") && e.to_string().contains("batch"),
        "{e}"
    );

    let mut unknown = dims(&[2]);
    unknown.push(Dimension::default());
    let bytes = model(
        17,
        vec![node("Relu", "r", &["x"], "y", vec![])],
        vec![vi("x", data_type::FLOAT, unknown)],
        vec![],
        vec![],
    );
    let e = import_model(&bytes, None).unwrap_err();
    assert!(matches!(e, ImportError::Symbolic { dim: 1, .. }), "{e}");
}

#[test]
fn external_data_outside_the_folder_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let w = TensorProto {
        name: "w".into(),
        dims: vec![2],
        data_type: data_type::FLOAT,
        data_location: DataLocation::External as i32,
        external_data: vec![StringStringEntryProto {
            key: "location".into(),
            value: "../../etc/passwd".into(),
        }],
        ..Default::default()
    };
    let bytes = model(
        17,
        vec![node("Add", "add", &["x", "w"], "y", vec![])],
        vec![f32_input("x", &[2])],
        vec![f32_input("y", &[2])],
        vec![w],
    );
    let e = import_model(&bytes, Some(dir.path())).unwrap_err();
    assert!(matches!(e, ImportError::ExternalData { .. }), "{e}");
    assert!(e.to_string().contains("\"w\""), "{e}");
}

#[test]
fn opsets_outside_the_range_are_rejected() {
    let relu = || vec![node("Relu", "r", &["x"], "y", vec![])];
    let e = import_model(
        &model(29, relu(), vec![f32_input("x", &[2])], vec![], vec![]),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, ImportError::Opset { .. }), "{e}");
    let range = vec![node("Range", "rg", &["a", "a", "a"], "y", vec![])];
    let e = import_model(
        &model(10, range, vec![], vec![], vec![i64s("a", &[], &[1])]),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("\"rg\" (Range)"), "{e}");
}

#[test]
fn declared_output_shapes_are_checked() {
    let bytes = model(
        17,
        vec![node("Relu", "r", &["x"], "y", vec![])],
        vec![f32_input("x", &[2, 3])],
        vec![f32_input("y", &[3, 2])],
        vec![],
    );
    let e = import_model(&bytes, None).unwrap_err();
    assert!(matches!(e, ImportError::OutputMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("f32[3, 2]") && e.to_string().contains("f32[2, 3]"),
        "{e}"
    );
}

#[test]
fn unsupported_ops_are_collected_with_generated_names() {
    let bytes = model(
        17,
        vec![
            node("Det", "", &["x"], "a", vec![]),
            node("Relu", "r", &["a"], "b", vec![]),
            node("TfIdfVectorizer", "tfidf0", &["b"], "y", vec![]),
        ],
        vec![f32_input("x", &[2, 2])],
        vec![],
        vec![],
    );
    let e = import_model(&bytes, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported operators: Det (node \"Det_0\"), TfIdfVectorizer (node \"tfidf0\")"
    );
}

/// Opset 6 Add with `broadcast=1, axis=1`: B[3] lines up with A's axis 1, not its last axis.
#[test]
fn legacy_broadcast_with_axis() {
    let bytes = model(
        6,
        vec![node(
            "Add",
            "add",
            &["a", "b"],
            "y",
            vec![attr_int("broadcast", 1), attr_int("axis", 1)],
        )],
        vec![f32_input("a", &[2, 3, 4]), f32_input("b", &[3])],
        vec![f32_input("y", &[2, 3, 4])],
        vec![],
    );
    let g = import_model(&bytes, None).unwrap();
    let a = HostTensor::zeros(DType::F32, &[2, 3, 4]);
    let b = HostTensor::from_f64(DType::F32, &[3], &[1.0, 2.0, 3.0]);
    let out = evaluate(
        &g,
        &BTreeMap::from([("a".to_string(), a), ("b".to_string(), b)]),
    )
    .unwrap();
    let y = out["y"].to_f64_vec();
    assert_eq!(&y[..8], &[1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]);
}

/// IR-3 models list initializers among the inputs: they stay constants.
#[test]
fn initializers_listed_as_inputs_are_constants() {
    let w = TensorProto {
        name: "w".into(),
        dims: vec![2],
        data_type: data_type::FLOAT,
        float_data: vec![1.0, 2.0],
        ..Default::default()
    };
    let bytes = model(
        6,
        vec![node("Mul", "mul", &["x", "w"], "y", vec![])],
        vec![f32_input("x", &[2]), f32_input("w", &[2])],
        vec![f32_input("y", &[2])],
        vec![w],
    );
    let g = import_model(&bytes, None).unwrap();
    assert_eq!(g.inputs.len(), 1);
    assert_eq!(g.value(g.inputs[0]).name, "x");
    assert_eq!(g.constants.len(), 1);
}

/// A Gather whose data is computed at run time stays a node; a graph output that is an input
/// passes through (the lowering copies it).
#[test]
fn runtime_gather_and_pass_through_output() {
    let bytes = model(
        13,
        vec![node(
            "Gather",
            "g",
            &["x", "idx"],
            "y",
            vec![attr_int("axis", -1)],
        )],
        vec![f32_input("x", &[2, 5])],
        vec![f32_input("y", &[2, 2]), f32_input("x", &[2, 5])],
        vec![i64s("idx", &[2], &[4, -5])],
    );
    let g = import_model(&bytes, None).unwrap();
    assert_eq!(g.nodes.len(), 1);
    assert_eq!(g.nodes[0].op, GraphOp::Gather { axis: 1 });
    assert_eq!(g.outputs[1], g.inputs[0]);
}

/// Cast-1 names its target type with a string; Cast-6 with a code.
#[test]
fn cast_attribute_forms() {
    let to_str = AttributeProto {
        name: "to".into(),
        r#type: AttributeType::String as i32,
        s: b"INT32".to_vec(),
        ..Default::default()
    };
    for (opset, attr) in [
        (5, to_str),
        (13, attr_int("to", i64::from(data_type::INT32))),
    ] {
        let bytes = model(
            opset,
            vec![node("Cast", "c", &["x"], "y", vec![attr])],
            vec![f32_input("x", &[2])],
            vec![vi("y", data_type::INT32, dims(&[2]))],
            vec![],
        );
        let g = import_model(&bytes, None).unwrap();
        assert_eq!(
            g.nodes[0].op,
            GraphOp::Cast { to: DType::I32 },
            "opset {opset}"
        );
    }
}

#[test]
fn missing_attributes_and_inputs_name_the_node() {
    let bytes = model(
        13,
        vec![node("Concat", "cat", &["x", "x"], "y", vec![])],
        vec![f32_input("x", &[2])],
        vec![],
        vec![],
    );
    let e = import_model(&bytes, None).unwrap_err();
    assert!(matches!(e, ImportError::Attribute { .. }), "{e}");
    assert!(e.to_string().contains("\"cat\" (Concat)") && e.to_string().contains("`axis`"));
    let bytes = model(
        17,
        vec![node("Relu", "r", &["nowhere"], "y", vec![])],
        vec![],
        vec![],
        vec![],
    );
    assert!(matches!(
        import_model(&bytes, None),
        Err(ImportError::Malformed(_))
    ));
}

/// The ops a random model is built from, with their input counts.
const SOUP_OPS: [(&str, usize); 14] = [
    ("Relu", 1),
    ("Add", 2),
    ("MatMul", 2),
    ("Gemm", 3),
    ("Softmax", 1),
    ("Reshape", 2),
    ("Transpose", 1),
    ("Flatten", 1),
    ("Shape", 1),
    ("Gather", 2),
    ("Concat", 2),
    ("Unsqueeze", 2),
    ("ConstantOfShape", 1),
    ("Cast", 1),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Truncated or corrupted model bytes give errors (or, rarely, a model), never a panic.
    #[test]
    fn corrupt_bytes_never_panic(
        cut in 0usize..400,
        flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..6),
    ) {
        let mut bytes = flatten_batch_model();
        for (at, v) in flips {
            let i = at % bytes.len();
            bytes[i] = v;
        }
        bytes.truncate(cut.min(bytes.len()));
        let _ = import_model(&bytes, None);
    }

    /// Random wiring of supported ops with random attributes and constants: any result but a
    /// panic, and a graph that imports always verifies.
    #[test]
    fn random_node_soups_never_panic(
        ops in proptest::collection::vec(
            (0usize..SOUP_OPS.len(), proptest::collection::vec(0usize..8, 3), -3i64..4, 0i64..20),
            1..6,
        ),
        x_dims in proptest::collection::vec(0i64..4, 0..4),
        consts in proptest::collection::vec(-2i64..5, 0..4),
        opset in 1i64..22,
    ) {
        let mut names = vec!["x".to_string(), "k".to_string()];
        let mut nodes = Vec::new();
        for (i, (op, picks, int_attr, to)) in ops.iter().enumerate() {
            let (op_type, n_in) = SOUP_OPS[*op];
            let ins: Vec<&str> = picks[..n_in].iter().map(|p| names[p % names.len()].as_str()).collect();
            let out = format!("v{i}");
            let attrs = vec![
                attr_int("axis", *int_attr),
                attr_int("to", *to),
                attr_ints("perm", &[1, 0]),
                attr_int("transA", int_attr.rem_euclid(2)),
            ];
            nodes.push(node(op_type, "", &ins, &out, attrs));
            names.push(out);
        }
        let k = i64s("k", &[consts.len() as i64], &consts);
        let last = names.last().cloned().unwrap_or_default();
        let bytes = model(
            opset,
            nodes,
            vec![f32_input("x", &x_dims)],
            vec![ValueInfoProto { name: last, ..Default::default() }],
            vec![k],
        );
        if let Ok(g) = import_model(&bytes, None) {
            prop_assert!(tessera_ir::graph::verify_graph(&g).is_ok());
        }
    }
}

/// A Transpose of a uint64 constant folds while its values survive the evaluator's f64, and
/// stays a node (whose moves copy bytes) when one does not.
#[test]
fn uint64_constants_fold_only_when_f64_holds_them() {
    let transpose_of = |v: [u64; 2]| {
        let c = TensorProto {
            name: "c".into(),
            dims: vec![1, 2],
            data_type: data_type::UINT64,
            uint64_data: v.to_vec(),
            ..Default::default()
        };
        let bytes = model(
            13,
            vec![node("Transpose", "t", &["c"], "y", vec![])],
            vec![],
            vec![vi("y", data_type::UINT64, dims(&[2, 1]))],
            vec![c],
        );
        import_model(&bytes, None).unwrap()
    };
    let g = transpose_of([7, u64::MAX]);
    assert!(g.nodes.is_empty(), "{}", tessera_ir::graph::print_graph(&g));
    let y = &g.constants[&g.outputs[0]];
    assert_eq!(y.dtype, DType::U64);
    assert_eq!(y.data[8..], u64::MAX.to_le_bytes());
    let g = transpose_of([7, (1 << 53) + 1]);
    assert_eq!(g.nodes.len(), 1, "{}", tessera_ir::graph::print_graph(&g));
}
