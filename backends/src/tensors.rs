//! The named host tensors a program runs on.

use std::collections::BTreeMap;
use tessera_ir::HostTensor;

/// Host tensors by name, owned or borrowed: the backends read their inputs through this, so a
/// caller holding large tensors elsewhere (a runtime session's weights) binds them by
/// reference instead of copying them into a map every run.
pub trait TensorSet {
    /// The tensor called `name`.
    fn tensor(&self, name: &str) -> Option<&HostTensor>;
    /// Every name, in order.
    fn names(&self) -> Vec<&str>;
}

impl TensorSet for BTreeMap<String, HostTensor> {
    fn tensor(&self, name: &str) -> Option<&HostTensor> {
        self.get(name)
    }
    fn names(&self) -> Vec<&str> {
        self.keys().map(String::as_str).collect()
    }
}

impl TensorSet for BTreeMap<String, &HostTensor> {
    fn tensor(&self, name: &str) -> Option<&HostTensor> {
        self.get(name).copied()
    }
    fn names(&self) -> Vec<&str> {
        self.keys().map(String::as_str).collect()
    }
}
