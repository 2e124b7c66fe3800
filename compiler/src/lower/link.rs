//! Linking: kernels from the library are standalone tile programs with their own tensor names
//! (`a`, `b`, `c`, `x`, `y`, ...). The linker appends a kernel to the whole-graph program,
//! binding each kernel tensor to a graph tensor at an element offset, renaming the kernel's
//! buffers under the node's name, and remembering which node every instruction came from.

use tessera_ir::{BufId, HbmTensor, Inst, TensorId, TensorKind, TileProgram};

/// The whole-graph tile program under construction.
#[derive(Debug, Default)]
pub struct Linker {
    /// The program so far.
    pub program: TileProgram,
    /// For each instruction, the graph node it was lowered from.
    pub origins: Vec<String>,
    /// Buffer names taken so far (a node may link several kernels with the same buffer names).
    buffer_names: std::collections::BTreeSet<String>,
    /// Next numeric suffix for each repeated buffer name.
    next_suffix: std::collections::BTreeMap<String, u64>,
}

/// Binds kernel tensor `name` to graph tensor `tensor`, starting at element `offset`.
#[derive(Clone, Debug)]
pub struct Binding<'a> {
    /// The kernel's tensor name.
    pub name: &'a str,
    /// The graph program's tensor.
    pub tensor: TensorId,
    /// Element offset within it (kernel tensors are contiguous row-major blocks).
    pub offset: u64,
}

impl<'a> Binding<'a> {
    /// A binding at offset 0.
    pub fn whole(name: &'a str, tensor: TensorId) -> Self {
        Binding {
            name,
            tensor,
            offset: 0,
        }
    }
}

impl Linker {
    /// A linker for a program called `name`.
    pub fn new(name: &str) -> Self {
        Linker {
            program: TileProgram::new(name),
            origins: Vec::new(),
            buffer_names: Default::default(),
            next_suffix: Default::default(),
        }
    }

    /// Adds a tensor (its name made valid for the text format and unique).
    pub fn add_tensor(
        &mut self,
        name: &str,
        dtype: tessera_ir::DType,
        shape: &[usize],
        kind: TensorKind,
    ) -> TensorId {
        let base = sanitize(name);
        let mut unique = base.clone();
        let mut n = 1;
        while self.program.tensors.iter().any(|t| t.name == unique) {
            unique = format!("{base}.{n}");
            n += 1;
        }
        self.program.tensors.push(HbmTensor {
            name: unique,
            dtype,
            shape: shape.to_vec(),
            kind,
        });
        TensorId(self.program.tensors.len() as u32 - 1)
    }

    /// Appends `kernel` for graph node `node`. Every kernel tensor must be bound; a binding's
    /// dtype must match and its element range must lie inside the graph tensor.
    pub fn link(
        &mut self,
        node: &str,
        kernel: &TileProgram,
        bindings: &[Binding<'_>],
    ) -> Result<(), String> {
        let mut map: Vec<(TensorId, u64)> = Vec::with_capacity(kernel.tensors.len());
        for kt in &kernel.tensors {
            let b = bindings.iter().find(|b| b.name == kt.name).ok_or_else(|| {
                format!("kernel `{}` tensor @{} is not bound", kernel.name, kt.name)
            })?;
            let gt = self
                .program
                .tensors
                .get(b.tensor.0 as usize)
                .ok_or_else(|| format!("binding for @{} names no tensor", kt.name))?;
            if gt.dtype != kt.dtype {
                return Err(format!(
                    "kernel `{}` tensor @{} is {} but the graph tensor @{} is {}",
                    kernel.name, kt.name, kt.dtype, gt.name, gt.dtype
                ));
            }
            if b.offset.saturating_add(kt.elems()) > gt.elems() {
                return Err(format!(
                    "kernel `{}` tensor @{} ({} elements at offset {}) does not fit in @{} ({} elements)",
                    kernel.name,
                    kt.name,
                    kt.elems(),
                    b.offset,
                    gt.name,
                    gt.elems()
                ));
            }
            map.push((b.tensor, b.offset));
        }
        let buf_base = self.program.buffers.len() as u32;
        let prefix = sanitize(node);
        for b in &kernel.buffers {
            let mut b = b.clone();
            let base = format!("{prefix}.{}", b.name);
            let mut name = base.clone();
            if self.buffer_names.contains(&name) {
                // Resume numbering where this name left off, so linking one kernel many times
                // (a batched matmul) stays linear.
                let n = self.next_suffix.entry(base.clone()).or_insert(1);
                loop {
                    name = format!("{base}.{n}");
                    *n += 1;
                    if !self.buffer_names.contains(&name) {
                        break;
                    }
                }
            }
            self.buffer_names.insert(name.clone());
            b.name = name;
            self.program.buffers.push(b);
        }
        for inst in &kernel.insts {
            let mut op = inst.op.clone();
            op.remap(
                |b| BufId(b.0 + buf_base),
                |h| {
                    if let Some(&(t, off)) = map.get(h.tensor.0 as usize) {
                        h.tensor = t;
                        h.offset += off;
                    }
                },
            );
            self.program.insts.push(Inst {
                op,
                loc: inst.loc.clone(),
            });
            self.origins.push(node.to_string());
        }
        Ok(())
    }
}

/// A name the `.tile` format accepts: `[A-Za-z_][A-Za-z0-9_.]*`, other characters become `_`.
pub fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_valid_and_unique() {
        assert_eq!(sanitize("ffn/y:0"), "ffn_y_0");
        assert_eq!(sanitize("0weight"), "_0weight");
        let mut l = Linker::new("g");
        let a = l.add_tensor("x/y", tessera_ir::DType::F32, &[2], TensorKind::Input);
        let b = l.add_tensor("x:y", tessera_ir::DType::F32, &[2], TensorKind::Input);
        assert_eq!(l.program.tensor(a).name, "x_y");
        assert_eq!(l.program.tensor(b).name, "x_y.1");
    }
}
