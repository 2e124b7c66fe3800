//! Tests of the operators imported as small graphs (attention.rs, loss.rs, rotary.rs,
//! activation.rs, pool_indices.rs, f16 Softmax in ops.rs): one-node models
//! built here, imported, and run through the graph evaluator. Expected values come from the
//! ONNX reference evaluator (`onnx.reference.ReferenceEvaluator`, onnx 1.2x, with ml_dtypes for
//! bf16) on the same inputs, or are derived by hand where the comment says so.

use super::proto::*;
use super::*;
use std::collections::BTreeMap;
use tessera_ir::dtype::DType;
use tessera_ir::graph::evaluate;
use tessera_ir::host::HostTensor;

fn value(name: &str, elem_type: i32, shape: Option<&[i64]>) -> ValueInfoProto {
    let shape = shape.map(|s| TensorShapeProto {
        dim: s
            .iter()
            .map(|&v| tensor_shape_proto::Dimension {
                value: Some(tensor_shape_proto::dimension::Value::DimValue(v)),
                denotation: String::new(),
            })
            .collect(),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape,
            })),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

fn string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// One graph input: its name and its value (which gives the declared type and shape).
type Feed<'a> = (&'a str, HostTensor);

fn elem_type(d: DType) -> i32 {
    match d {
        DType::F32 => data_type::FLOAT,
        DType::Bf16 => data_type::BFLOAT16,
        DType::F16 => data_type::FLOAT16,
        DType::I32 => data_type::INT32,
        DType::I64 => data_type::INT64,
        DType::Bool => data_type::BOOL,
        other => panic!("no test type for {other}"),
    }
}

/// A model of one `op` node; `inputs` lists the node's inputs by position ("" for an omitted
/// one), `feeds` the graph inputs.
fn one_node(
    opset: i64,
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<AttributeProto>,
    feeds: &[Feed],
) -> Vec<u8> {
    let input = feeds
        .iter()
        .map(|(n, t)| {
            let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            value(n, elem_type(t.dtype), Some(&shape))
        })
        .collect();
    let output = outputs
        .iter()
        .filter(|o| !o.is_empty())
        .map(|o| value(o, data_type::UNDEFINED, None))
        .collect();
    use prost::Message;
    ModelProto {
        ir_version: 9,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            node: vec![NodeProto {
                input: inputs.iter().map(|s| s.to_string()).collect(),
                output: outputs.iter().map(|s| s.to_string()).collect(),
                name: "n0".into(),
                op_type: op.into(),
                attribute,
                ..Default::default()
            }],
            input,
            output,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn run(bytes: &[u8], feeds: &[Feed]) -> BTreeMap<String, HostTensor> {
    let g = import_model(bytes, None).unwrap();
    let inputs = feeds
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    evaluate(&g, &inputs).unwrap()
}

/// The deterministic values the reference was run on: `((7 i mod 11) - 5) / 4`, times `mul`
/// plus `add`, rounded to `dtype`.
fn pattern(dtype: DType, shape: &[usize], mul: f64, add: f64) -> HostTensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|i| (((i * 7) % 11) as f64 - 5.0) / 4.0 * mul + add)
        .collect();
    HostTensor::from_f64(dtype, shape, &v)
}

fn f32s(shape: &[usize], mul: f64, add: f64) -> HostTensor {
    pattern(DType::F32, shape, mul, add)
}

fn ints(dtype: DType, shape: &[usize], v: &[i64]) -> HostTensor {
    let v: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    HostTensor::from_f64(dtype, shape, &v)
}

fn bools(shape: &[usize], v: &[bool]) -> HostTensor {
    let v: Vec<f64> = v.iter().map(|&b| f64::from(u8::from(b))).collect();
    HostTensor::from_f64(DType::Bool, shape, &v)
}

fn assert_close(got: &HostTensor, shape: &[usize], want: &[f64], rtol: f64) {
    assert_eq!(got.shape, shape);
    for (i, (g, w)) in got.to_f64_vec().iter().zip(want).enumerate() {
        let ok = g == w || (g - w).abs() <= 1e-6 + rtol * w.abs();
        assert!(
            ok,
            "element {i}: got {g}, want {w} (all: {:?})",
            got.to_f64_vec()
        );
    }
}

const NEG_INF: f64 = f64::NEG_INFINITY;

/// 3-D grouped-query attention (2 query heads share 1 K/V head) with a past cache, causal
/// masking offset by the past length, and a boolean mask shorter than the total length
/// (padded with False); mode 2 exposes the biased scores with their -inf.
#[test]
fn attention_gqa_3d_past_causal_short_bool_mask() {
    let feeds = [
        ("q", f32s(&[1, 2, 4], 1.0, 0.0)),
        ("k", f32s(&[1, 2, 2], 0.5, 0.0)),
        ("v", f32s(&[1, 2, 2], 1.0, 1.0)),
        ("mask", bools(&[2, 2], &[true, false, true, true])),
        ("pk", f32s(&[1, 1, 1, 2], 1.0, -0.5)),
        ("pv", f32s(&[1, 1, 1, 2], 2.0, 0.0)),
    ];
    let bytes = one_node(
        23,
        "Attention",
        &["q", "k", "v", "mask", "pk", "pv"],
        &["y", "present_key", "present_value", "qk"],
        vec![
            int("q_num_heads", 2),
            int("kv_num_heads", 1),
            int("is_causal", 1),
            int("qk_matmul_output_mode", 2),
        ],
        &feeds,
    );
    let out = run(&bytes, &feeds);
    // Query 0 attends key 0 only, so its rows are exactly present_value[0] = [-2.5, 1].
    let y = [
        -2.5,
        1.0,
        -2.5,
        1.0,
        -1.3377248048782349,
        1.2582833766937256,
        -0.9497274160385132,
        1.3445050716400146,
    ];
    assert_close(&out["y"], &[1, 2, 4], &y, 1e-5);
    let pk = [-1.75, 0.0, -0.625, 0.25, -0.25, 0.625];
    assert_close(&out["present_key"], &[1, 1, 3, 2], &pk, 0.0);
    let pv = [-2.5, 1.0, -0.25, 1.5, 0.5, 2.25];
    assert_close(&out["present_value"], &[1, 1, 3, 2], &pv, 0.0);
    let qk = [
        1.5467960834503174,
        NEG_INF,
        NEG_INF,
        -0.30935922265052795,
        -0.24306796491146088,
        NEG_INF,
        0.6187184453010559,
        NEG_INF,
        NEG_INF,
        -1.2374368906021118,
        -0.4419417381286621,
        NEG_INF,
    ];
    assert_close(&out["qk"], &[1, 2, 2, 3], &qk, 1e-5);
}

/// A query row with no attended key gives zeros in Y and in the mode-3 probabilities, not NaN
/// (Attention-24 errata). Hand-derived: row 1 attends key 0 alone, so its probabilities are
/// [1, 0] and its output is V's row 0, [-1.25, 0.5].
#[test]
fn attention_fully_masked_row_is_zero() {
    let feeds = [
        ("q", f32s(&[1, 1, 2, 2], 1.0, 0.0)),
        ("k", f32s(&[1, 1, 2, 2], 0.5, 0.0)),
        ("v", f32s(&[1, 1, 2, 2], 1.0, 0.0)),
        ("mask", bools(&[2, 2], &[false, false, true, false])),
    ];
    let bytes = one_node(
        24,
        "Attention",
        &["q", "k", "v", "mask"],
        &["y", "", "", "probs"],
        vec![int("qk_matmul_output_mode", 3)],
        &feeds,
    );
    let out = run(&bytes, &feeds);
    assert_close(&out["y"], &[1, 1, 2, 2], &[0.0, 0.0, -1.25, 0.5], 0.0);
    assert_close(&out["probs"], &[1, 1, 2, 2], &[0.0, 0.0, 1.0, 0.0], 0.0);
}

/// An external cache: `nonpad_kv_seqlen` hides the padded keys of each batch and moves the
/// causal frontier to `n[b] - S`.
#[test]
fn attention_nonpad_kv_seqlen_decode() {
    let feeds = [
        ("q", f32s(&[2, 2, 1, 2], 1.0, 0.0)),
        ("k", f32s(&[2, 1, 3, 2], 0.5, 0.0)),
        ("v", f32s(&[2, 1, 3, 2], 1.0, 1.0)),
        ("n", ints(DType::I64, &[2], &[2, 3])),
    ];
    let bytes = one_node(
        24,
        "Attention",
        &["q", "k", "v", "", "", "", "n"],
        &["y"],
        vec![int("is_causal", 1)],
        &feeds,
    );
    let out = run(&bytes, &feeds);
    let y = [
        0.08783359825611115,
        1.8378336429595947,
        0.16216638684272766,
        1.9121663570404053,
        1.0004552602767944,
        0.6441953182220459,
        1.1621057987213135,
        0.7969515323638916,
    ];
    assert_close(&out["y"], &[2, 2, 1, 2], &y, 1e-5);
}

/// bf16 attention reproduces the reference's bf16 rounding exactly (every softmax step rounded,
/// the denominator summed key by key). With these inputs a denominator summed in f32 and
/// rounded once changes 4 of the 8 results in the last bit, and a softmax computed in f32
/// more (checked with numpy and ml_dtypes).
#[test]
fn attention_bf16_rounds_like_the_reference() {
    let feeds = [
        ("q", pattern(DType::Bf16, &[1, 1, 2, 4], 1.0, 0.0)),
        ("k", pattern(DType::Bf16, &[1, 1, 5, 4], 0.75, 0.0)),
        ("v", pattern(DType::Bf16, &[1, 1, 5, 4], 1.0, 0.3)),
    ];
    let bytes = one_node(23, "Attention", &["q", "k", "v"], &["y"], vec![], &feeds);
    let out = run(&bytes, &feeds);
    let y = [
        -0.55859375,
        0.71484375,
        0.1923828125,
        0.66015625,
        0.203125,
        0.1591796875,
        0.95703125,
        0.2578125,
    ];
    assert_close(&out["y"], &[1, 1, 2, 4], &y, 0.0);
}

#[test]
fn attention_errors_name_the_node() {
    let feeds = [
        ("q", f32s(&[1, 2, 4], 1.0, 0.0)),
        ("k", f32s(&[1, 2, 4], 1.0, 0.0)),
        ("v", f32s(&[1, 2, 4], 1.0, 0.0)),
    ];
    // 3-D inputs without head counts.
    let bytes = one_node(23, "Attention", &["q", "k", "v"], &["y"], vec![], &feeds);
    let e = import_model(&bytes, None).unwrap_err().to_string();
    assert!(e.contains("n0") && e.contains("q_num_heads"), "{e}");
    // 3 query heads cannot share 2 K/V heads.
    let feeds = [
        ("q", f32s(&[1, 3, 2, 2], 1.0, 0.0)),
        ("k", f32s(&[1, 2, 2, 2], 1.0, 0.0)),
        ("v", f32s(&[1, 2, 2, 2], 1.0, 0.0)),
    ];
    let bytes = one_node(23, "Attention", &["q", "k", "v"], &["y"], vec![], &feeds);
    let e = import_model(&bytes, None).unwrap_err().to_string();
    assert!(e.contains("n0") && e.contains("multiple"), "{e}");
    // A mask with a batch of 3 would broadcast the scores of batch 1 instead of masking them.
    let feeds = [
        ("q", f32s(&[1, 1, 2, 2], 1.0, 0.0)),
        ("k", f32s(&[1, 1, 2, 2], 1.0, 0.0)),
        ("v", f32s(&[1, 1, 2, 2], 1.0, 0.0)),
        ("mask", f32s(&[3, 1, 2, 2], 1.0, 0.0)),
    ];
    let bytes = one_node(
        23,
        "Attention",
        &["q", "k", "v", "mask"],
        &["y"],
        vec![],
        &feeds,
    );
    let e = import_model(&bytes, None).unwrap_err().to_string();
    assert!(e.contains("n0") && e.contains("does not broadcast"), "{e}");
}

/// Weighted mean with an ignored class: sum(-w[t] x[t]) / sum(w[t]) over the kept elements.
#[test]
fn nll_loss_weighted_mean_with_ignore_index() {
    let feeds = [
        ("x", f32s(&[2, 3, 2], 1.0, 0.0)),
        ("t", ints(DType::I64, &[2, 2], &[0, 1, 2, 2])),
        (
            "w",
            HostTensor::from_f64(DType::F32, &[3], &[0.5, 1.0, 2.0]),
        ),
    ];
    let bytes = one_node(
        22,
        "NegativeLogLikelihoodLoss",
        &["x", "t", "w"],
        &["loss"],
        vec![string("reduction", "mean"), int("ignore_index", 1)],
        &feeds,
    );
    let out = run(&bytes, &feeds);
    assert_close(&out["loss"], &[], &[0.8055555820465088], 1e-6);
}

#[test]
fn softmax_cross_entropy_none_with_log_prob() {
    let feeds = [
        ("x", f32s(&[2, 3], 1.0, 0.0)),
        ("t", ints(DType::I64, &[2], &[2, 0])),
    ];
    let bytes = one_node(
        13,
        "SoftmaxCrossEntropyLoss",
        &["x", "t"],
        &["loss", "log_prob"],
        vec![string("reduction", "none")],
        &feeds,
    );
    let out = run(&bytes, &feeds);
    assert_close(
        &out["loss"],
        &[2],
        &[1.4328556060791016, 0.40760597586631775],
        1e-6,
    );
    let lp = [
        -2.1828553676605225,
        -0.4328555166721344,
        -1.4328556060791016,
        -0.40760597586631775,
        -1.4076060056686401,
        -2.4076058864593506,
    ];
    assert_close(&out["log_prob"], &[2, 3], &lp, 1e-6);
}

/// int32 targets, a negative ignore_index (outside the classes) and a summed, weighted loss.
#[test]
fn softmax_cross_entropy_sum_weighted_negative_ignore_index() {
    let feeds = [
        ("x", f32s(&[3, 3, 2], 1.0, 0.0)),
        ("t", ints(DType::I32, &[3, 2], &[0, -1, 2, 1, 1, 1])),
        (
            "w",
            HostTensor::from_f64(DType::F32, &[3], &[0.5, 1.0, 2.0]),
        ),
    ];
    let bytes = one_node(
        13,
        "SoftmaxCrossEntropyLoss",
        &["x", "t", "w"],
        &["loss"],
        vec![string("reduction", "sum"), int("ignore_index", -1)],
        &feeds,
    );
    let out = run(&bytes, &feeds);
    assert_close(&out["loss"], &[], &[6.445479393005371], 1e-6);
}

#[test]
fn loss_rejects_an_unknown_reduction() {
    let feeds = [
        ("x", f32s(&[2, 3], 1.0, 0.0)),
        ("t", ints(DType::I64, &[2], &[2, 0])),
    ];
    let bytes = one_node(
        13,
        "NegativeLogLikelihoodLoss",
        &["x", "t"],
        &["loss"],
        vec![string("reduction", "average")],
        &feeds,
    );
    let e = import_model(&bytes, None).unwrap_err().to_string();
    assert!(e.contains("n0") && e.contains("average"), "{e}");
}

/// Interleaved lanes, a partial rotation (4 of 6 lanes; the last two pass through) and caches
/// gathered at run-time position ids.
#[test]
fn rotary_embedding_interleaved_partial_with_positions() {
    let feeds = [
        ("x", f32s(&[1, 2, 2, 6], 1.0, 0.0)),
        ("cos", f32s(&[5, 2], 0.5, 0.0)),
        ("sin", f32s(&[5, 2], 0.25, 0.1)),
        ("pos", ints(DType::I64, &[1, 2], &[3, 1])),
    ];
    let bytes = one_node(
        23,
        "RotaryEmbedding",
        &["x", "cos", "sin", "pos"],
        &["y"],
        vec![int("interleaved", 1), int("rotary_embedding_dim", 4)],
        &feeds,
    );
    let out = run(&bytes, &feeds);
    let y = [
        -0.800000011920929,
        -0.1875,
        -0.125,
        -0.05000000074505806,
        0.25,
        -0.75,
        -0.25,
        -0.02499999850988388,
        -0.934374988079071,
        0.05625000596046448,
        -0.25,
        -1.25,
        0.42500001192092896,
        -0.07500000298023224,
        -0.02500000037252903,
        0.125,
        -0.75,
        1.0,
        -0.02499999850988388,
        0.25,
        0.5718749761581421,
        0.15312498807907104,
        -1.25,
        0.5,
    ];
    assert_close(&out["y"], &[1, 2, 2, 6], &y, 1e-6);
}

/// 3-D input split in heads, halves rotated, caches given per batch and position.
#[test]
fn rotary_embedding_3d_without_positions() {
    let feeds = [
        ("x", f32s(&[1, 2, 8], 1.0, 0.0)),
        ("cos", f32s(&[1, 2, 2], 0.5, 0.0)),
        ("sin", f32s(&[1, 2, 2], 0.25, 0.1)),
    ];
    let bytes = one_node(
        23,
        "RotaryEmbedding",
        &["x", "cos", "sin"],
        &["y"],
        vec![int("num_heads", 2)],
        &feeds,
    );
    let out = run(&bytes, &feeds);
    let y = [
        0.675000011920929,
        -0.15625,
        0.578125,
        0.42500001192092896,
        0.05625000596046448,
        -0.1875,
        -0.6781250238418579,
        -0.16874998807907104,
        0.24375000596046448,
        0.984375,
        0.08749999850988388,
        -0.47187501192092896,
        -0.09375,
        -0.4156250059604645,
        -0.32499998807907104,
        -0.04999999701976776,
    ];
    assert_close(&out["y"], &[1, 2, 8], &y, 1e-6);
}

#[test]
fn swish_with_alpha() {
    let feeds = [("x", f32s(&[4], 1.0, 0.0))];
    let bytes = one_node(
        24,
        "Swish",
        &["x"],
        &["y"],
        vec![float("alpha", 0.5)],
        &feeds,
    );
    let out = run(&bytes, &feeds);
    let y = [
        -0.4358064532279968,
        0.281088262796402,
        -0.21891172230243683,
        0.814193606376648,
    ];
    assert_close(&out["y"], &[4], &y, 1e-6);
}

/// Hand-derived: x = [-1.25, 0.5, -0.75, 1.25, -0.25] keeps only what is strictly above 0.5.
#[test]
fn thresholded_relu_is_strict() {
    let feeds = [("x", f32s(&[5], 1.0, 0.0))];
    let bytes = one_node(
        22,
        "ThresholdedRelu",
        &["x"],
        &["y"],
        vec![float("alpha", 0.5)],
        &feeds,
    );
    let out = run(&bytes, &feeds);
    assert_close(&out["y"], &[5], &[0.0, 0.0, 0.0, 1.25, 0.0], 0.0);
}

/// MaxPool's Indices with padding, ceil_mode and ties, in both storage orders; channel 1 starts
/// with a window of only -inf (the first valid tap wins, not the padding). Expected values from
/// the ONNX reference evaluator (MaxPool-12).
#[test]
fn max_pool_indices_pads_ceil_ties_and_storage_order() {
    let mut v: Vec<f64> = (0..40)
        .map(|i| (((i * 7) % 11) as f64 - 5.0) / 4.0)
        .collect();
    for i in [0, 20, 21, 25, 26] {
        v[i] = NEG_INF;
    }
    let feeds = [("x", HostTensor::from_f64(DType::F32, &[1, 2, 4, 5], &v))];
    let y = [
        1.0, 1.25, 1.25, 1.0, 1.0, 1.25, 0.25, 1.0, 0.0, NEG_INF, 1.0, 1.0, 1.25, 1.25, 1.0, 1.25,
        1.25, 1.0,
    ];
    let want: [[f64; 18]; 2] = [
        [
            6.0, 3.0, 3.0, 6.0, 6.0, 14.0, 15.0, 17.0, 18.0, 20.0, 28.0, 28.0, 36.0, 36.0, 28.0,
            36.0, 36.0, 39.0,
        ],
        [
            5.0, 12.0, 12.0, 5.0, 5.0, 18.0, 3.0, 11.0, 15.0, 20.0, 33.0, 33.0, 27.0, 27.0, 33.0,
            27.0, 27.0, 39.0,
        ],
    ];
    for (order, indices) in want.iter().enumerate() {
        let bytes = one_node(
            12,
            "MaxPool",
            &["x"],
            &["y", "i"],
            vec![
                AttributeProto {
                    name: "kernel_shape".into(),
                    r#type: AttributeType::Ints as i32,
                    ints: vec![3, 3],
                    ..Default::default()
                },
                AttributeProto {
                    name: "strides".into(),
                    r#type: AttributeType::Ints as i32,
                    ints: vec![2, 2],
                    ..Default::default()
                },
                AttributeProto {
                    name: "pads".into(),
                    r#type: AttributeType::Ints as i32,
                    ints: vec![1, 1, 1, 1],
                    ..Default::default()
                },
                int("ceil_mode", 1),
                int("storage_order", order as i64),
            ],
            &feeds,
        );
        let out = run(&bytes, &feeds);
        assert_eq!(out["i"].dtype, DType::I64);
        assert_eq!(out["i"].shape, [1, 2, 3, 3]);
        assert_eq!(
            out["i"].to_f64_vec(),
            indices.to_vec(),
            "storage_order {order}"
        );
        assert_close(&out["y"], &[1, 2, 3, 3], &y, 0.0);
    }
}

#[test]
fn max_pool_indices_reject_a_bad_storage_order() {
    let feeds = [("x", f32s(&[1, 1, 2, 2], 1.0, 0.0))];
    let bytes = one_node(
        12,
        "MaxPool",
        &["x"],
        &["y", "i"],
        vec![
            AttributeProto {
                name: "kernel_shape".into(),
                r#type: AttributeType::Ints as i32,
                ints: vec![2, 2],
                ..Default::default()
            },
            int("storage_order", 2),
        ],
        &feeds,
    );
    let err = import_model(&bytes, None).unwrap_err().to_string();
    assert!(err.contains("storage_order 2"), "{err}");
}

/// f16 Softmax rounds every step to f16 as the reference does (12 of these 24 results differ
/// from the correctly rounded softmax). Input `(((7 i mod 11) - 5) / 4) * 1.3 + 0.1` in f16;
/// expected values from the ONNX reference evaluator (Softmax-13).
#[test]
fn softmax_f16_rounds_each_step_like_the_reference() {
    let feeds = [("x", pattern(DType::F16, &[3, 8], 1.3, 0.1))];
    let bytes = one_node(13, "Softmax", &["x"], &["y"], vec![], &feeds);
    let out = run(&bytes, &feeds);
    let y = [
        0.013916015625,
        0.1353759765625,
        0.036956787109375,
        0.35888671875,
        0.09783935546875,
        0.0266571044921875,
        0.259521484375,
        0.07061767578125,
        0.0213623046875,
        0.2081298828125,
        0.05670166015625,
        0.0154571533203125,
        0.150390625,
        0.041015625,
        0.3984375,
        0.108642578125,
        0.034912109375,
        0.33984375,
        0.09246826171875,
        0.0251922607421875,
        0.245361328125,
        0.06689453125,
        0.018218994140625,
        0.1773681640625,
    ];
    assert_eq!(out["y"].dtype, DType::F16);
    assert_eq!(out["y"].shape, [3, 8]);
    assert_eq!(out["y"].to_f64_vec(), y.to_vec());
}
