//! Typed access to a node's attributes, with errors naming the node, its op type and the
//! attribute.
//!
//! An attribute's declared `type` is checked when the producer set it; very old models (IR
//! version 1) leave it unset, and then the field the value was read from is trusted.

use super::ImportError;
use super::proto::{AttributeProto, AttributeType, NodeProto, TensorProto};

/// The attributes of one node.
pub struct Attrs<'a> {
    node: &'a NodeProto,
    /// The node's name for messages (the ONNX name or the generated one).
    name: &'a str,
}

impl<'a> Attrs<'a> {
    /// Wraps a node's attributes; `name` is the node's display name.
    pub fn new(node: &'a NodeProto, name: &'a str) -> Self {
        Attrs { node, name }
    }

    /// An attribute error for this node.
    pub fn error(&self, detail: impl Into<String>) -> ImportError {
        ImportError::attribute(self.name, &self.node.op_type, detail)
    }

    fn get(&self, key: &str, ty: AttributeType) -> Result<Option<&'a AttributeProto>, ImportError> {
        let Some(a) = self.node.attribute.iter().find(|a| a.name == key) else {
            return Ok(None);
        };
        if !a.ref_attr_name.is_empty() {
            return Err(self.error(format!(
                "attribute `{key}` refers to a function attribute (`{}`), which is only \
                 meaningful inside a function body",
                a.ref_attr_name
            )));
        }
        if a.r#type != AttributeType::Undefined as i32 && a.r#type != ty as i32 {
            let got = AttributeType::try_from(a.r#type)
                .map_or_else(|_| format!("type code {}", a.r#type), |t| format!("{t:?}"));
            return Err(self.error(format!(
                "attribute `{key}` must be of type {ty:?}, but it is {got}"
            )));
        }
        Ok(Some(a))
    }

    /// True when the node carries the attribute at all.
    pub fn has(&self, key: &str) -> bool {
        self.node.attribute.iter().any(|a| a.name == key)
    }

    /// An optional integer attribute.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ImportError> {
        Ok(self.get(key, AttributeType::Int)?.map(|a| a.i))
    }

    /// An integer attribute with a default.
    pub fn int_or(&self, key: &str, default: i64) -> Result<i64, ImportError> {
        Ok(self.int(key)?.unwrap_or(default))
    }

    /// A 0/1 flag attribute with a default; other values are errors.
    pub fn flag_or(&self, key: &str, default: bool) -> Result<bool, ImportError> {
        match self.int(key)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(v) => Err(self.error(format!("attribute `{key}` must be 0 or 1, got {v}"))),
        }
    }

    /// A required integer attribute.
    pub fn int_required(&self, key: &str) -> Result<i64, ImportError> {
        self.int(key)?
            .ok_or_else(|| self.error(format!("required attribute `{key}` is missing")))
    }

    /// An optional float attribute.
    pub fn float(&self, key: &str) -> Result<Option<f32>, ImportError> {
        Ok(self.get(key, AttributeType::Float)?.map(|a| a.f))
    }

    /// A float attribute with a default.
    pub fn float_or(&self, key: &str, default: f32) -> Result<f32, ImportError> {
        Ok(self.float(key)?.unwrap_or(default))
    }

    /// An optional list of integers.
    pub fn ints(&self, key: &str) -> Result<Option<&'a [i64]>, ImportError> {
        Ok(self
            .get(key, AttributeType::Ints)?
            .map(|a| a.ints.as_slice()))
    }

    /// An optional list of floats.
    pub fn floats(&self, key: &str) -> Result<Option<&'a [f32]>, ImportError> {
        Ok(self
            .get(key, AttributeType::Floats)?
            .map(|a| a.floats.as_slice()))
    }

    /// An optional string attribute (bytes, as ONNX stores them).
    pub fn string(&self, key: &str) -> Result<Option<&'a [u8]>, ImportError> {
        Ok(self
            .get(key, AttributeType::String)?
            .map(|a| a.s.as_slice()))
    }

    /// An optional tensor attribute.
    pub fn tensor(&self, key: &str) -> Result<Option<&'a TensorProto>, ImportError> {
        match self.get(key, AttributeType::Tensor)? {
            None => Ok(None),
            Some(a) => {
                a.t.as_ref()
                    .map(Some)
                    .ok_or_else(|| self.error(format!("attribute `{key}` holds no tensor")))
            }
        }
    }
}
