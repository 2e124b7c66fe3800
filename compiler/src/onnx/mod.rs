//! ONNX input: the protobuf schema subset ([`proto`]), decoding of `.onnx` bytes, and the
//! importer that turns a model into a [`tessera_ir::graph::Graph`] ([`import_model`],
//! [`import_file`]).
//!
//! ```no_run
//! let graph = tessera_compiler::onnx::import_file(std::path::Path::new("model.onnx"))?;
//! println!("{}", tessera_ir::graph::print_graph(&graph));
//! # Ok::<(), tessera_compiler::onnx::ImportError>(())
//! ```

mod activation;
mod attention;
mod attrs;
mod conv;
mod cumsum;
#[cfg(test)]
mod decompose_tests;
mod einsum;
mod elementwise;
mod error;
mod fold;
mod hardmax;
mod import;
#[cfg(test)]
mod import_tests;
mod index;
mod loss;
mod movement;
mod norm;
mod ops;
mod pool_indices;
pub mod proto;
mod reduce;
mod resize;
mod rotary;
mod tensor;

pub use error::{ImportError, UnsupportedOp, UnsupportedOps};
pub use import::{
    MAX_OPSET, MIN_FULL_OPSET, import_file, import_file_custom, import_file_frozen, import_model,
    import_model_custom, import_model_frozen,
};
pub use ops::SUPPORTED_OPS;
pub use tensor::tensor_to_host;

use prost::Message;

/// Why a model could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The bytes are not a protobuf `ModelProto` (truncated, corrupt, or another kind of file).
    #[error("not a valid ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The model decoded but has no graph.
    #[error("the ONNX model has no graph")]
    NoGraph,
}

/// Decodes `.onnx` bytes into a [`proto::ModelProto`], requiring a graph.
pub fn decode_model(bytes: &[u8]) -> Result<proto::ModelProto, OnnxError> {
    let model = proto::ModelProto::decode(bytes)?;
    if model.graph.is_none() {
        return Err(OnnxError::NoGraph);
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::proto::*;
    use super::*;

    fn tiny_model() -> ModelProto {
        let x = ValueInfoProto {
            name: "x".into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: data_type::FLOAT,
                    shape: Some(TensorShapeProto {
                        dim: vec![tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(3)),
                            denotation: String::new(),
                        }],
                    }),
                })),
                denotation: String::new(),
            }),
            doc_string: String::new(),
        };
        let mut y = x.clone();
        y.name = "y".into();
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                name: "g".into(),
                node: vec![NodeProto {
                    input: vec!["x".into()],
                    output: vec!["y".into()],
                    name: "relu0".into(),
                    op_type: "Relu".into(),
                    ..Default::default()
                }],
                input: vec![x],
                output: vec![y],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn round_trips_through_protobuf_bytes() {
        let model = tiny_model();
        let bytes = model.encode_to_vec();
        let back = decode_model(&bytes).unwrap();
        assert_eq!(back, model);
        assert_eq!(back.graph.unwrap().node[0].op_type, "Relu");
    }

    #[test]
    fn truncated_and_random_bytes_are_errors() {
        let bytes = tiny_model().encode_to_vec();
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode_model(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let noise: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert!(decode_model(&noise).is_err());
        assert!(matches!(decode_model(&[]), Err(OnnxError::NoGraph)));
    }
}
