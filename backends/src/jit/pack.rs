//! Frozen weights, copied once into the layout the matmul streams fastest.
//!
//! A convolution's weight chunk (a matmul's stationary operand) is 128 rows of 512 bytes, each
//! a whole weight row apart in its input tensor (`[C_in, tap, C_out]`: 18 KiB in ResNet-50's
//! last stage), so every row lies in its own page. At batch 1 every weight is read once a run,
//! from memory, and rows scattered that way arrive slowly even when asked for a matmul ahead: a
//! 128x128x49 matmul took 26 us with its weights asked for during the previous one, 15 us with
//! them in cache; laid out contiguously and asked for the same way, 15.2 us (microbenchmark on
//! the CI machine kind).
//!
//! The jit cannot know by itself that an input holds the same bytes in the next run, so it
//! copies only tensors a caller names in a [`Frozen`] (the runtime names a model's weights,
//! which a session never changes), and keeps the copies for as long as runs are given the same
//! `Frozen`. Planning lists the chunks (stationary operands read from an input tensor, rows
//! apart: [`Panel::worth_prefetching`]) in run order, one entry per distinct chunk, so the
//! copies lie in the order the matmuls read them.

use super::Frozen;
use super::Step;
use super::matmul::Panel;
use super::memory::{JitMemory, Loc};
use std::collections::HashMap;
use tessera_ir::MachineProgram;

/// The packed copies of one planned program.
#[derive(Debug, Default)]
pub(crate) struct Packs {
    /// Distinct chunks in first-use order: the panel, the tensor it reads, its offset in
    /// `data` (f32 elements).
    entries: Vec<(Panel, usize, usize)>,
    /// Elements of all copies.
    len: usize,
    data: Vec<f32>,
    /// The [`Frozen`] whose tensors `data` holds copies of.
    made_for: Option<u64>,
    /// Per entry: whether `data` holds its copy (its tensor is frozen).
    copied: Vec<bool>,
}

impl Packs {
    /// Lists the chunks of the matmuls in `steps` worth packing, in the run `order`, and
    /// points each matmul at its chunk's entry.
    pub fn plan(order: &[(usize, usize)], steps: &mut [Vec<Step>]) -> Packs {
        let mut packs = Packs::default();
        let mut seen: HashMap<Panel, usize> = HashMap::new();
        for &(q, i) in order {
            let Some(Step::Matmul(p)) = steps.get_mut(q).and_then(|s| s.get_mut(i)) else {
                continue;
            };
            // `prefetch[0]`: forwarded to an input tensor, rows apart.
            let (true, Loc::Tensor(tensor)) = (p.prefetch[0], p.stationary.loc()) else {
                continue;
            };
            let entry = *seen.entry(p.stationary.clone()).or_insert_with(|| {
                packs
                    .entries
                    .push((p.stationary.clone(), tensor, packs.len));
                packs.len += p.stationary.rows() * p.stationary.free();
                packs.entries.len() - 1
            });
            p.packed = Some(entry);
        }
        packs
    }

    /// Makes the copies of `frozen`'s tensors, unless they were made for it already; returns
    /// how many chunks it copied. `mem` holds this run's inputs.
    pub fn refresh(
        &mut self,
        frozen: &Frozen,
        program: &MachineProgram,
        mem: &JitMemory<'_>,
    ) -> Option<u64> {
        if self.made_for == Some(frozen.id) || self.entries.is_empty() {
            return Some(0);
        }
        self.made_for = None;
        self.copied = self
            .entries
            .iter()
            .map(|(_, tensor, _)| {
                let name = program.tensors.get(*tensor).map(|t| &t.name);
                name.is_some_and(|name| frozen.names.contains(name))
            })
            .collect();
        if self.copied.contains(&true) {
            self.data.resize(self.len, 0.0);
        }
        let mut made = 0;
        for ((panel, _, at), _) in self.entries.iter().zip(&self.copied).filter(|e| *e.1) {
            let len = panel.rows() * panel.free();
            panel.gather_into(mem, self.data.get_mut(*at..*at + len)?)?;
            made += 1;
        }
        self.made_for = Some(frozen.id);
        Some(made)
    }

    /// The copy of `entry`, `rows x free` row-major, if made.
    pub fn get(&self, entry: usize) -> Option<&[f32]> {
        let (panel, _, at) = self.entries.get(entry)?;
        if self.made_for.is_none() || !*self.copied.get(entry)? {
            return None;
        }
        self.data.get(*at..*at + panel.rows() * panel.free())
    }
}
