//! Address assignment: SBUF and PSUM buffers get byte offsets from their `alloc`/`free`
//! lifetimes, HBM scratch tensors get offsets in one arena from their first and last use.
//!
//! Freed space is reused, which is what lets a model run in a fixed on-chip budget; reuse also
//! creates write-after-read hazards between the old and new occupant, which the semaphore pass
//! orders. A rotating cursor (next fit) spreads consecutive buffers over the memory, so a
//! buffer freed a moment ago is not immediately overwritten by the next one and independent
//! tiles can overlap in time.

/// A free-list allocator over `[0, capacity)` with next-fit placement.
#[derive(Debug)]
pub struct RangeAllocator {
    capacity: u64,
    align: u64,
    /// Free ranges `(start, end)`, sorted and coalesced.
    free: Vec<(u64, u64)>,
    cursor: u64,
}

impl RangeAllocator {
    /// An empty allocator of `capacity` bytes; every block starts at a multiple of `align`.
    pub fn new(capacity: u64, align: u64) -> Self {
        RangeAllocator {
            capacity,
            align: align.max(1),
            free: vec![(0, capacity)],
            cursor: 0,
        }
    }

    /// Reserves `size` bytes (rounded up to the alignment); `None` when no free range fits.
    pub fn alloc(&mut self, size: u64) -> Option<u64> {
        let size = size.max(1).div_ceil(self.align) * self.align;
        // Next fit: the first fitting range at or after the cursor, else the first from 0.
        let fits = |&(s, e): &(u64, u64), from: u64| {
            let start = s.max(from).div_ceil(self.align) * self.align;
            (start + size <= e).then_some(start)
        };
        let start = self
            .free
            .iter()
            .find_map(|r| fits(r, self.cursor))
            .or_else(|| self.free.iter().find_map(|r| fits(r, 0)))?;
        self.take(start, start + size);
        self.cursor = if start + size >= self.capacity {
            0
        } else {
            start + size
        };
        Some(start)
    }

    /// Returns `[start, start + size)` (rounded as `alloc` rounded it) to the free list.
    pub fn release(&mut self, start: u64, size: u64) {
        let end = start + size.max(1).div_ceil(self.align) * self.align;
        let at = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(at, (start, end));
        // Coalesce neighbours.
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.free.len());
        for &(s, e) in &self.free {
            match merged.last_mut() {
                Some(last) if last.1 >= s => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.free = merged;
    }

    /// Removes `[start, end)`, which lies inside one free range, from the free list.
    fn take(&mut self, start: u64, end: u64) {
        let Some(i) = self.free.iter().position(|&(s, e)| s <= start && end <= e) else {
            return;
        };
        let (s, e) = self.free.remove(i);
        if end < e {
            self.free.insert(i, (end, e));
        }
        if s < start {
            self.free.insert(i, (s, start));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_fit_rotates_and_reuses_after_wrap() {
        let mut a = RangeAllocator::new(100, 10);
        let x = a.alloc(30).unwrap();
        a.release(x, 30);
        // Next fit does not go back to 0 while there is room after the cursor.
        let y = a.alloc(30).unwrap();
        assert_eq!((x, y), (0, 30));
        let z = a.alloc(40).unwrap();
        assert_eq!(z, 60);
        // Only [0, 30) is free now; the search wraps around to it.
        assert_eq!(a.alloc(30), Some(0));
        assert_eq!(a.alloc(10), None);
        a.release(y, 30);
        a.release(z, 40);
        assert_eq!(a.alloc(70), Some(30));
    }

    #[test]
    fn alignment_rounds_sizes_and_starts() {
        let mut a = RangeAllocator::new(4096, 2048);
        assert_eq!(a.alloc(4), Some(0));
        assert_eq!(a.alloc(2049), None);
        assert_eq!(a.alloc(1), Some(2048));
    }
}
