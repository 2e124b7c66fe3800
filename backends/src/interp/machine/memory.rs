//! Physical memory of a machine-program run: SBUF and PSUM as `partitions x bytes` arrays, one
//! byte array per Input/Output tensor, and the HBM scratch arena shared by all Scratch tensors.
//!
//! Unlike the tile level, nothing here belongs to a buffer: a buffer is only a placement, a
//! window onto the physical arrays. Two buffers placed at the same addresses therefore alias for
//! real, which is what makes a missing wait between a buffer's last use and the next buffer's
//! first write observable (and what the race detector looks for).
//!
//! Poison is tracked per byte (one bit each): a read of any byte never written is a
//! [`InterpError::PoisonRead`]. Operands resolve through the same checked resolvers as the tile
//! level (`super::super::memory::resolve_tile`), against the buffer's declared shape, so a
//! view can never leave its buffer; the buffer itself was checked to lie inside its memory by
//! `tessera_ir::check_machine_program`.

use crate::interp::error::{Ctx, InterpError, PoisonedElement};
use crate::interp::exec::Store;
use crate::interp::memory::{
    MAX_STORAGE_BYTES, RegionKey, RegionShape, View, check_inputs, check_len, checked_product,
    resolve_hbm, resolve_tile, unflatten,
};
use std::collections::BTreeMap;
use tessera_ir::{
    HbmAccess, HostTensor, MachineProgram, Space, TargetSpec, TensorKind, TileAccess,
};

/// One physical memory: bytes plus one "initialised" bit per byte.
#[derive(Debug)]
struct Bank {
    data: Vec<u8>,
    init: Vec<u64>,
}

impl Bank {
    /// `bytes` poisoned bytes, or `BadProgram` when they exceed the emulator's limit.
    fn poisoned(what: &str, bytes: u64) -> Result<Bank, InterpError> {
        let too_large = || InterpError::BadProgram {
            detail: format!(
                "{what} needs {bytes} bytes, more than the emulator's limit of {MAX_STORAGE_BYTES}"
            ),
        };
        if bytes > MAX_STORAGE_BYTES {
            return Err(too_large());
        }
        let n = usize::try_from(bytes).map_err(|_| too_large())?;
        // Zeroed allocations are lazily mapped, so a 28 MiB SBUF costs only the pages touched.
        Ok(Bank {
            data: vec![0; n],
            init: vec![0; n.div_ceil(64)],
        })
    }

    /// Storage holding `data`, every byte initialised.
    fn initialised(data: Vec<u8>) -> Bank {
        Bank {
            init: vec![u64::MAX; data.len().div_ceil(64)],
            data,
        }
    }

    fn is_init(&self, at: usize) -> bool {
        self.init
            .get(at / 64)
            .is_some_and(|word| word & (1 << (at % 64)) != 0)
    }

    /// The `w` bytes at `at`, if all are in range and initialised.
    fn get(&self, at: usize, w: usize) -> Option<&[u8]> {
        let end = at.checked_add(w)?;
        let bytes = self.data.get(at..end)?;
        (at..end).all(|i| self.is_init(i)).then_some(bytes)
    }

    /// Stores `src` at `at` and marks it initialised; false if out of range.
    fn put(&mut self, at: usize, src: &[u8]) -> bool {
        let Some(dst) = at
            .checked_add(src.len())
            .and_then(|end| self.data.get_mut(at..end))
        else {
            return false;
        };
        dst.copy_from_slice(src);
        for i in at..at + src.len() {
            if let Some(word) = self.init.get_mut(i / 64) {
                *word |= 1 << (i % 64);
            }
        }
        true
    }

    /// The first byte never written, if any.
    fn first_unwritten(&self) -> Option<usize> {
        (0..self.data.len()).find(|&i| !self.is_init(i))
    }
}

/// Which physical memory a view lands in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Loc {
    Sbuf,
    Psum,
    /// The HBM scratch arena.
    Arena,
    /// An Input or Output tensor's own storage.
    Tensor(usize),
}

/// Where a resolved view sits physically: element `o` of the view's partition `r` is at byte
/// `(first_partition + r) * partition_bytes + byte_base + o * dtype size` of `loc`'s array.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placed {
    pub loc: Loc,
    /// Absolute first partition (0 for HBM).
    pub first_partition: u64,
    /// Byte offset of element 0 within each partition (within the arena for scratch tensors).
    pub byte_base: u64,
    /// Bytes per partition of the memory (0 for HBM, which has one row).
    pub partition_bytes: u64,
}

/// One element of a view: its byte address, and its partition (relative to the buffer) and
/// element offset, which messages use.
#[derive(Clone, Copy, Debug)]
struct Address {
    at: usize,
    row: usize,
    element: usize,
}

/// All memories of one machine-program run.
#[derive(Debug)]
pub(crate) struct MachineMemory<'p> {
    program: &'p MachineProgram,
    sbuf_partition_bytes: u64,
    psum_partition_bytes: u64,
    sbuf: Bank,
    psum: Bank,
    arena: Bank,
    /// Input and Output tensors; `None` for scratch tensors, which live in the arena.
    tensors: Vec<Option<Bank>>,
    /// `%buffer` names, precomputed for messages.
    buffer_names: Vec<String>,
    /// `@tensor` names.
    tensor_names: Vec<String>,
}

impl<'p> MachineMemory<'p> {
    /// Poisoned on-chip memories and arena; inputs copied in (checked against declarations).
    pub fn new<I: crate::TensorSet + ?Sized>(
        program: &'p MachineProgram,
        target: &TargetSpec,
        inputs: &I,
    ) -> Result<Self, InterpError> {
        check_inputs(&program.tensors, inputs)?;
        let parts = target.partitions as u64;
        let sbuf = Bank::poisoned("SBUF", parts.saturating_mul(target.sbuf_partition_bytes))?;
        let psum = Bank::poisoned("PSUM", parts.saturating_mul(target.psum_partition_bytes))?;
        let arena = Bank::poisoned("the HBM scratch arena", program.scratch_bytes)?;
        let mut tensors = Vec::with_capacity(program.tensors.len());
        for t in &program.tensors {
            let bank = match t.kind {
                TensorKind::Scratch => None,
                // check_inputs guaranteed the byte count.
                TensorKind::Input => Some(Bank::initialised(
                    inputs
                        .tensor(&t.name)
                        .map(|h| h.data.clone())
                        .unwrap_or_default(),
                )),
                TensorKind::Output => Some(Bank::poisoned(
                    &format!("@{}", t.name),
                    checked_product(&t.shape).saturating_mul(t.dtype.size_bytes() as u64),
                )?),
            };
            tensors.push(bank);
        }
        Ok(MachineMemory {
            program,
            sbuf_partition_bytes: target.sbuf_partition_bytes,
            psum_partition_bytes: target.psum_partition_bytes,
            sbuf,
            psum,
            arena,
            tensors,
            buffer_names: program
                .buffers
                .iter()
                .map(|b| format!("%{}", b.name))
                .collect(),
            tensor_names: program
                .tensors
                .iter()
                .map(|t| format!("@{}", t.name))
                .collect(),
        })
    }

    /// `%buffer` or `@tensor` of a view.
    pub fn name(&self, key: RegionKey) -> &str {
        let name = match key {
            RegionKey::Buffer(i) => self.buffer_names.get(i),
            RegionKey::Tensor(i) => self.tensor_names.get(i),
        };
        name.map_or("?", String::as_str)
    }

    /// Where a resolved view sits, or `None` for a view this memory did not resolve.
    pub fn placed(&self, view: &View) -> Option<Placed> {
        match view.key {
            RegionKey::Buffer(i) => {
                let b = self.program.buffers.get(i)?;
                let p = b.placement?;
                let (loc, partition_bytes) = match b.space {
                    Space::Sbuf => (Loc::Sbuf, self.sbuf_partition_bytes),
                    Space::Psum => (Loc::Psum, self.psum_partition_bytes),
                };
                Some(Placed {
                    loc,
                    first_partition: (p.partition as u64).checked_add(view.first_row as u64)?,
                    byte_base: p.byte_offset,
                    partition_bytes,
                })
            }
            RegionKey::Tensor(i) => {
                let t = self.program.tensors.get(i)?;
                let (loc, byte_base) = match t.kind {
                    TensorKind::Scratch => (Loc::Arena, (*self.program.hbm_offsets.get(i)?)?),
                    TensorKind::Input | TensorKind::Output => (Loc::Tensor(i), 0),
                };
                Some(Placed {
                    loc,
                    first_partition: 0,
                    byte_base,
                    partition_bytes: 0,
                })
            }
        }
    }

    /// Bytes per partition of `loc` (all its bytes for HBM), for sizing the race detector's
    /// address index.
    pub fn extent(&self, loc: Loc) -> u64 {
        match loc {
            Loc::Sbuf => self.sbuf_partition_bytes,
            Loc::Psum => self.psum_partition_bytes,
            Loc::Arena | Loc::Tensor(_) => self.bank(loc).map_or(0, |b| b.data.len() as u64),
        }
    }

    fn bank(&self, loc: Loc) -> Option<&Bank> {
        match loc {
            Loc::Sbuf => Some(&self.sbuf),
            Loc::Psum => Some(&self.psum),
            Loc::Arena => Some(&self.arena),
            Loc::Tensor(i) => self.tensors.get(i)?.as_ref(),
        }
    }

    fn bank_mut(&mut self, loc: Loc) -> Option<&mut Bank> {
        match loc {
            Loc::Sbuf => Some(&mut self.sbuf),
            Loc::Psum => Some(&mut self.psum),
            Loc::Arena => Some(&mut self.arena),
            Loc::Tensor(i) => self.tensors.get_mut(i)?.as_mut(),
        }
    }

    /// The byte address of every element of the view, in element order, with its partition
    /// (relative to the buffer) and element offset for poison messages.
    fn addresses(&self, ctx: Ctx<'_>, view: &View) -> Result<(Loc, Vec<Address>), InterpError> {
        let internal = || ctx.bad(format!("internal: `{}` has no physical address", view.role));
        let placed = self.placed(view).ok_or_else(internal)?;
        let w = view.dtype.size_bytes() as u64;
        let mut out = Vec::with_capacity(view.len());
        for r in 0..view.rows {
            let row_base = placed
                .first_partition
                .checked_add(r as u64)
                .and_then(|p| p.checked_mul(placed.partition_bytes))
                .and_then(|b| b.checked_add(placed.byte_base))
                .ok_or_else(internal)?;
            for &o in &view.offsets {
                let at = (o as u64)
                    .checked_mul(w)
                    .and_then(|b| b.checked_add(row_base))
                    .and_then(|b| usize::try_from(b).ok())
                    .ok_or_else(internal)?;
                out.push(Address {
                    at,
                    row: view.first_row + r,
                    element: o,
                });
            }
        }
        Ok((placed.loc, out))
    }

    /// Every Output tensor, each checked to be fully written.
    pub fn outputs(self) -> Result<BTreeMap<String, HostTensor>, InterpError> {
        let mut out = BTreeMap::new();
        for (t, bank) in self.program.tensors.iter().zip(self.tensors) {
            let (TensorKind::Output, Some(bank)) = (t.kind, bank) else {
                continue;
            };
            if let Some(byte) = bank.first_unwritten() {
                let element = byte / t.dtype.size_bytes();
                return Err(InterpError::OutputNotWritten {
                    name: t.name.clone(),
                    element: element as u64,
                    index: unflatten(element, &t.shape),
                });
            }
            out.insert(
                t.name.clone(),
                HostTensor {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    data: bank.data,
                },
            );
        }
        Ok(out)
    }
}

impl Store for MachineMemory<'_> {
    fn tile_view(
        &self,
        ctx: Ctx<'_>,
        role: &'static str,
        t: &TileAccess,
    ) -> Result<View, InterpError> {
        let slot = t.buf.0 as usize;
        let b = self
            .program
            .buffers
            .get(slot)
            .ok_or_else(|| InterpError::UnknownId {
                site: ctx.site(),
                role,
                what: format!("buffer #{}", t.buf.0),
            })?;
        let key = RegionKey::Buffer(slot);
        let shape = RegionShape {
            name: self.name(key),
            dtype: b.dtype,
            rows: b.partitions as u64,
            row_elems: checked_product(&b.free_shape),
        };
        resolve_tile(ctx, role, key, shape, t)
    }

    fn hbm_view(
        &self,
        ctx: Ctx<'_>,
        role: &'static str,
        h: &HbmAccess,
    ) -> Result<View, InterpError> {
        let slot = h.tensor.0 as usize;
        let t = self
            .program
            .tensors
            .get(slot)
            .ok_or_else(|| InterpError::UnknownId {
                site: ctx.site(),
                role,
                what: format!("tensor #{}", h.tensor.0),
            })?;
        let shape = RegionShape {
            name: self.name(RegionKey::Tensor(slot)),
            dtype: t.dtype,
            rows: 1,
            row_elems: checked_product(&t.shape),
        };
        resolve_hbm(ctx, role, slot, shape, h)
    }

    fn read_bytes(&self, ctx: Ctx<'_>, view: &View) -> Result<Vec<u8>, InterpError> {
        let (loc, addresses) = self.addresses(ctx, view)?;
        let bank = self
            .bank(loc)
            .ok_or_else(|| ctx.bad(format!("internal: no storage for `{}`", view.role)))?;
        let w = view.dtype.size_bytes();
        let mut out = Vec::with_capacity(addresses.len() * w);
        for Address { at, row, element } in addresses {
            match bank.get(at, w) {
                Some(bytes) => out.extend_from_slice(bytes),
                None => {
                    let hbm = matches!(view.key, RegionKey::Tensor(_));
                    return Err(InterpError::PoisonRead {
                        site: ctx.site(),
                        role: view.role,
                        element: PoisonedElement {
                            name: self.name(view.key).to_string(),
                            partition: (!hbm).then_some(row as u32),
                            element: element as u64,
                        },
                    });
                }
            }
        }
        Ok(out)
    }

    fn write_bytes(&mut self, ctx: Ctx<'_>, view: &View, bytes: &[u8]) -> Result<(), InterpError> {
        let w = view.dtype.size_bytes();
        check_len(ctx, view, bytes.len() / w)?;
        let (loc, addresses) = self.addresses(ctx, view)?;
        let internal = || ctx.bad(format!("internal: `{}` lies outside memory", view.role));
        let bank = self.bank_mut(loc).ok_or_else(internal)?;
        for (a, src) in addresses.into_iter().zip(bytes.chunks_exact(w)) {
            if !bank.put(a.at, src) {
                return Err(internal());
            }
        }
        Ok(())
    }
}
