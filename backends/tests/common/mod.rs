//! A small builder for tile programs in tests: declare tensors and buffers, append
//! instructions, run on the emulator.
#![allow(dead_code)]

use std::collections::BTreeMap;
use tessera_backends::interp::{self, InterpError};
use tessera_ir::*;

/// A program under construction.
pub struct Prog {
    pub p: TileProgram,
}

impl Prog {
    pub fn new() -> Self {
        Prog {
            p: TileProgram::new("test"),
        }
    }

    fn tensor(&mut self, name: &str, dtype: DType, shape: &[usize], kind: TensorKind) -> TensorId {
        self.p.tensors.push(HbmTensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            kind,
        });
        TensorId(self.p.tensors.len() as u32 - 1)
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: &[usize]) -> TensorId {
        self.tensor(name, dtype, shape, TensorKind::Input)
    }

    pub fn output(&mut self, name: &str, dtype: DType, shape: &[usize]) -> TensorId {
        self.tensor(name, dtype, shape, TensorKind::Output)
    }

    /// Declares a buffer (not yet allocated).
    pub fn declare(
        &mut self,
        name: &str,
        space: Space,
        dtype: DType,
        partitions: u32,
        free: &[usize],
    ) -> BufId {
        self.p.buffers.push(Buffer {
            name: name.into(),
            space,
            dtype,
            partitions,
            free_shape: free.to_vec(),
            placement: None,
        });
        BufId(self.p.buffers.len() as u32 - 1)
    }

    /// Declares and allocates an SBUF buffer of `partitions x free` elements.
    pub fn sbuf(&mut self, name: &str, dtype: DType, partitions: u32, free: u32) -> BufId {
        let b = self.declare(name, Space::Sbuf, dtype, partitions, &[free as usize]);
        self.op(Op::Alloc { buf: b });
        b
    }

    /// Declares and allocates a PSUM buffer.
    pub fn psum(&mut self, name: &str, partitions: u32, free: u32) -> BufId {
        let b = self.declare(name, Space::Psum, DType::F32, partitions, &[free as usize]);
        self.op(Op::Alloc { buf: b });
        b
    }

    pub fn op(&mut self, op: Op) {
        self.p.insts.push(Inst::new(op));
    }

    /// Copies `[p, f]` of tensor `t` (row-major) into `buf` partitions 0..p.
    pub fn load(&mut self, buf: BufId, t: TensorId, p: u32, f: u32) {
        self.op(Op::DmaCopy {
            dst: DmaOperand::Tile(full(buf, p, f)),
            src: rows(t, p, f),
        });
    }

    /// Copies `buf`'s `[p, f]` to tensor `t` (row-major).
    pub fn store(&mut self, t: TensorId, buf: BufId, p: u32, f: u32) {
        self.op(Op::DmaCopy {
            dst: rows(t, p, f),
            src: DmaOperand::Tile(full(buf, p, f)),
        });
    }

    pub fn run(
        &self,
        inputs: Vec<(&str, HostTensor)>,
    ) -> Result<BTreeMap<String, HostTensor>, InterpError> {
        let inputs = inputs
            .into_iter()
            .map(|(n, t)| (n.to_string(), t))
            .collect();
        interp::run(&self.p, &TargetSpec::trn2(), &inputs)
    }

    /// Runs with the emulator's dynamic checks only (no static verifier).
    pub fn run_unverified(
        &self,
        inputs: Vec<(&str, HostTensor)>,
    ) -> Result<BTreeMap<String, HostTensor>, InterpError> {
        let inputs = inputs
            .into_iter()
            .map(|(n, t)| (n.to_string(), t))
            .collect();
        interp::run_unverified(&self.p, &inputs)
    }

    /// Runs and returns output `name` decoded, panicking on error (tests only).
    pub fn run_ok(&self, inputs: Vec<(&str, HostTensor)>, name: &str) -> Vec<f64> {
        match self.run(inputs) {
            Ok(out) => out[name].to_f64_vec(),
            Err(e) => panic!("run failed: {e}"),
        }
    }
}

/// A view of `buf`: `partitions` partitions from 0, free dims `(stride, size)`.
pub fn tile(buf: BufId, partitions: u32, dims: &[(i64, u32)]) -> TileAccess {
    TileAccess {
        buf,
        start_partition: 0,
        partitions,
        offset: 0,
        dims: dims.iter().map(|&(s, n)| Dim::new(s, n)).collect(),
    }
}

/// The contiguous `[p, f]` view of `buf`.
pub fn full(buf: BufId, p: u32, f: u32) -> TileAccess {
    tile(buf, p, &[(1, f)])
}

/// A `[p, f]` row-major view of tensor `t` from element 0.
pub fn rows(t: TensorId, p: u32, f: u32) -> DmaOperand {
    hbm(t, 0, &[(f as i64, p), (1, f)])
}

/// Any HBM view.
pub fn hbm(t: TensorId, offset: u64, dims: &[(i64, u32)]) -> DmaOperand {
    DmaOperand::Hbm(HbmAccess {
        tensor: t,
        offset,
        dims: dims.iter().map(|&(s, n)| Dim::new(s, n)).collect(),
    })
}

pub fn f32s(shape: &[usize], v: &[f64]) -> HostTensor {
    HostTensor::from_f64(DType::F32, shape, v)
}
