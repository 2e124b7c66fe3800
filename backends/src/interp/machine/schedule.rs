//! Which instruction runs next: the queues' readiness under semaphore waits, and the seeded
//! generator that picks among the ready queues.
//!
//! A queue is *ready* when its next instruction's waits all hold (every waited queue has
//! completed at least the count). Completion counts only grow, so a ready queue stays ready
//! until it runs; the [`Scheduler`] therefore keeps an explicit ready list and, for each blocked
//! queue, registers it on the one queue whose count it is waiting for. Completing an
//! instruction re-examines only the queues registered on that queue, so a run costs
//! O(instructions x waits + completions x queues) regardless of how the waits are arranged.

use tessera_ir::{MachineInst, Queue, Wait};

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
/// OOPSLA 2014): a 64-bit counter advanced by the golden-ratio increment and passed through a
/// bijective mixing function. Tiny, fast, every seed (including 0) gives a good stream, and the
/// stream is the same on every host, which is all a reproducible interleaving needs.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`), by taking the high half of a 64x64-bit product; the bias
    /// is below `n / 2^64`, far under anything a test of interleavings could notice.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// Readiness of every queue during one (real or simulated) execution.
#[derive(Debug)]
pub(crate) struct Scheduler<'p> {
    queues: &'p [Queue],
    /// Instructions completed per queue.
    done: Vec<u32>,
    /// Queues whose next instruction may start now.
    ready: Vec<usize>,
    /// Per queue `w`: the blocked queues waiting for `w` to reach a count, with that count.
    waiting: Vec<Vec<(u32, usize)>>,
}

impl<'p> Scheduler<'p> {
    /// Nothing completed yet.
    pub fn new(queues: &'p [Queue]) -> Self {
        let mut s = Scheduler {
            queues,
            done: vec![0; queues.len()],
            ready: Vec::new(),
            waiting: vec![Vec::new(); queues.len()],
        };
        for q in 0..queues.len() {
            s.arm(q);
        }
        s
    }

    fn next_inst(&self, q: usize) -> Option<&'p MachineInst> {
        let done = *self.done.get(q)?;
        self.queues.get(q)?.insts.get(done as usize)
    }

    /// The first wait of `inst` that does not hold yet. A wait on a queue that does not exist
    /// never holds (the structural check rejects such programs before they get here).
    fn first_unmet(&self, inst: &'p MachineInst) -> Option<&'p Wait> {
        inst.waits.iter().find(|w| {
            self.done
                .get(w.queue.0 as usize)
                .is_none_or(|&d| d < w.count)
        })
    }

    /// Files queue `q` as ready or as waiting on its first unmet wait (or nowhere if finished).
    fn arm(&mut self, q: usize) {
        let Some(inst) = self.next_inst(q) else {
            return;
        };
        match self.first_unmet(inst) {
            None => self.ready.push(q),
            Some(w) => {
                if let Some(list) = self.waiting.get_mut(w.queue.0 as usize) {
                    list.push((w.count, q));
                }
            }
        }
    }

    /// How many queues are ready.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Removes ready queue number `slot` and returns it with the index of its next instruction.
    pub fn take(&mut self, slot: usize) -> Option<(usize, u32)> {
        if slot >= self.ready.len() {
            return None;
        }
        let q = self.ready.swap_remove(slot);
        Some((q, *self.done.get(q)?))
    }

    /// Records that queue `q` (taken with [`Self::take`]) completed its instruction.
    pub fn complete(&mut self, q: usize) {
        let Some(d) = self.done.get_mut(q) else {
            return;
        };
        *d += 1;
        let done = *d;
        self.arm(q);
        let Some(list) = self.waiting.get_mut(q) else {
            return;
        };
        let (woken, still): (Vec<_>, Vec<_>) = std::mem::take(list)
            .into_iter()
            .partition(|&(count, _)| count <= done);
        *list = still;
        for (_, w) in woken {
            // Re-arming checks the queue's remaining waits; it may block on another queue.
            self.arm(w);
        }
    }

    /// Completed instructions of queue `q`.
    pub fn done(&self, q: usize) -> u32 {
        self.done.get(q).copied().unwrap_or(0)
    }

    /// Every unfinished queue with the index of its next instruction and the wait that blocks
    /// it (meaningful once no queue is ready).
    pub fn blocked(&self) -> Vec<(usize, u32, Wait)> {
        (0..self.queues.len())
            .filter_map(|q| {
                let inst = self.next_inst(q)?;
                let w = self.first_unmet(inst)?;
                Some((q, self.done(q), *w))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_reproducible_and_in_range() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(SplitMix64::new(8).next_u64(), xs[0]);
        let mut c = SplitMix64::new(0);
        let mut seen = [false; 5];
        for _ in 0..200 {
            let k = c.below(5);
            assert!(k < 5);
            seen[k] = true;
        }
        assert!(seen.iter().all(|&s| s), "every slot is reachable");
    }
}
