//! The tile matmul's own AVX-512 kernel: `dst[i][j] (+)= sum_l stationary[l][i] * moving[l][j]`
//! for the tensor engine's shapes (`k, m <= 128` partitions), used for short rows (`n <=
//! SHORT`).
//!
//! The `gemm` crate's sgemm packs both operands into its blocked layouts on every call, which
//! for a 128x128x49 chunk (a late ResNet-50 stage) is a large share of the work; this kernel
//! packs nothing (every operand row is contiguous f32, which is how tile layouts lie) and asks
//! for the next matmul's operands one cache line per step of its inner loop, so they arrive
//! while it computes instead of the core waiting on a burst of prefetches first. On ResNet-50
//! (weights copied by `pack`) it made a run 2.3% faster than the sgemm on the same chunks
//! (A/B, six rounds); on rows of 196 or 504 the sgemm was as fast or faster, so longer rows
//! stay with it.
//!
//! `dst` is computed in register blocks of `R` rows by `V` vectors of 16 columns, the columns in
//! each vector contiguous in both `moving` and `dst`: for each `l`, the block loads `V` vectors
//! of `moving`'s row `l` and multiplies them by each of `R` broadcast values of `stationary`'s
//! row `l`, fused multiply-adds into `R * V` accumulators. Column tails use masked loads and
//! stores, which neither read nor write (nor fault on) the lanes masked off. Each block of
//! columns is done for all rows before the next (the block of `moving` stays in L1).
//!
//! Each element is one fp32 chain of fused multiply-adds in order `l = 0, 1, ...` starting
//! from zero, then added to `dst` when accumulating: within the error bound the callers document
//! (`K * 2^-24 * sum_l |s_l m_l|` per element).

/// Rows up to this long (`n`) go to [`matmul`]; longer ones ran as fast or faster in the `gemm`
/// crate's sgemm (ResNet-50's 128x128x196 and x504 chunks, measured in place).
pub(crate) const SHORT: usize = 64;

/// Whether [`matmul`] may be called on this host (AVX-512F, checked once).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVX512: OnceLock<bool> = OnceLock::new();
        *AVX512.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// One tile matmul's operands: element `(r, e)` of each lies at `ptr + r * stride + e` (f32
/// elements, rows `stride` apart).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operands {
    /// `k x m`.
    pub stationary: *const f32,
    pub stationary_stride: usize,
    /// `k x n`.
    pub moving: *const f32,
    pub moving_stride: usize,
    /// `m x n`.
    pub dst: *mut f32,
    pub dst_stride: usize,
}

/// Cache lines to ask for while the kernel computes (the next matmul's operands, coming from
/// memory), one per step of its inner loop: `rows` rows of `row_bytes` bytes from `base`,
/// `pitch` bytes apart. A prefetch never faults, whatever the address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lines {
    base: *const u8,
    rows: usize,
    row_bytes: usize,
    pitch: usize,
    /// The next line: row `r`, `at` bytes from the row's first line.
    r: usize,
    at: usize,
}

impl Lines {
    pub fn new(base: *const u8, rows: usize, row_bytes: usize, pitch: usize) -> Lines {
        Lines {
            base,
            rows: if row_bytes == 0 { 0 } else { rows },
            row_bytes,
            pitch,
            r: 0,
            at: 0,
        }
    }

    /// The next line's address, if any are left.
    #[inline(always)]
    fn next(&mut self) -> Option<*const u8> {
        if self.r >= self.rows {
            return None;
        }
        let row = self.base.wrapping_add(self.r * self.pitch);
        // Lines from the one holding the row's first byte to the one holding its last.
        let first = row.wrapping_sub(row as usize % 64);
        let line = first.wrapping_add(self.at);
        self.at += 64;
        if line.wrapping_add(64) >= row.wrapping_add(self.row_bytes) {
            self.at = 0;
            self.r += 1;
        }
        Some(line)
    }
}

/// Up to two panels' [`Lines`], asked for in turn.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Prefetch {
    pub panels: [Option<Lines>; 2],
}

impl Prefetch {
    #[inline(always)]
    fn next(&mut self) -> Option<*const u8> {
        for lines in self.panels.iter_mut().flatten() {
            if let Some(line) = lines.next() {
                return Some(line);
            }
        }
        None
    }

    /// Asks for one line, if any are left.
    #[inline(always)]
    fn one(&mut self) {
        if let Some(line) = self.next() {
            hint(line);
        }
    }

    /// Asks for every line left.
    pub fn all(&mut self) {
        while let Some(line) = self.next() {
            hint(line);
        }
    }
}

/// A hint to load the cache line holding `at` (no access is made; any address is fine).
#[inline(always)]
pub(crate) fn hint(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch only hints the cache and never faults; `sse` is part of the
        // x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
    }
}

/// `dst = stationary^T moving`, or `dst += stationary^T moving` when `accumulate`.
///
/// # Safety
/// [`available`] returned true; every element `(r, e)` of each operand (`r` below its row
/// count, `e` below its row length: `k x m`, `k x n`, `m x n`) is valid f32 memory, readable
/// (and for `dst` writable) at 4-byte alignment; `dst` overlaps neither operand; nothing else
/// accesses `dst` during the call.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    ops: Operands,
    accumulate: bool,
    prefetch: &mut Prefetch,
) {
    // Register blocks of 6 rows by 4 vectors, chosen by measurement (128x128x49, stationary
    // cold and warm; 8x3, 12x2, 4x4 and 7x4 tried): up to `SHORT` columns, one block covers
    // every column, so each stationary value is read once.
    // SAFETY: forwarded from the caller.
    unsafe { x86::blocks::<6, 4>(m, n, k, ops, accumulate, prefetch) }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn matmul(_: usize, _: usize, _: usize, _: Operands, _: bool, _: &mut Prefetch) {
    unreachable!("tilemm::available() is false off x86_64")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Operands, Prefetch};
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
        _mm512_set1_ps, _mm512_setzero_ps,
    };

    /// Lane mask of the columns `16 * v ..` of the `left` still to do.
    fn mask(left: usize, v: usize) -> u16 {
        match left.saturating_sub(16 * v) {
            l if l >= 16 => u16::MAX,
            l => ((1u32 << l) - 1) as u16,
        }
    }

    /// All of `dst` in blocks of `R` rows (single rows for the last `m % R`) by up to `V`
    /// vectors.
    ///
    /// # Safety
    /// As [`super::matmul`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn blocks<const R: usize, const V: usize>(
        m: usize,
        n: usize,
        k: usize,
        ops: Operands,
        accumulate: bool,
        prefetch: &mut Prefetch,
    ) {
        let mut j = 0;
        while j < n {
            let left = n - j;
            let vectors = left.div_ceil(16).min(V);
            let masks: [u16; V] = std::array::from_fn(|v| mask(left, v));
            let mut i = 0;
            while i < m {
                let rows = if i + R <= m { R } else { 1 };
                // SAFETY: rows `i .. i + rows` of `dst` and columns `i .. i + rows` of
                // `stationary` exist (`i + rows <= m`); columns from `j` are masked to the
                // `left` that exist; everything else is the caller's guarantee.
                unsafe {
                    let at = Operands {
                        stationary: ops.stationary.add(i),
                        moving: ops.moving.add(j),
                        dst: ops.dst.add(i * ops.dst_stride + j),
                        ..ops
                    };
                    match (rows == R, vectors) {
                        (true, 4) => block::<R, 4>(k, at, &masks, accumulate, prefetch),
                        (true, 3) => block::<R, 3>(k, at, &masks, accumulate, prefetch),
                        (true, 2) => block::<R, 2>(k, at, &masks, accumulate, prefetch),
                        (true, _) => block::<R, 1>(k, at, &masks, accumulate, prefetch),
                        (false, 4) => block::<1, 4>(k, at, &masks, accumulate, prefetch),
                        (false, 3) => block::<1, 3>(k, at, &masks, accumulate, prefetch),
                        (false, 2) => block::<1, 2>(k, at, &masks, accumulate, prefetch),
                        (false, _) => block::<1, 1>(k, at, &masks, accumulate, prefetch),
                    }
                }
                i += rows;
            }
            j += 16 * vectors;
        }
        prefetch.all();
    }

    /// `R` rows by `VB` vectors of `dst` at the operands' base pointers, column masks from
    /// `masks` (at least `VB` of them).
    ///
    /// # Safety
    /// As [`super::matmul`], for `R` rows of `dst` and `stationary`'s columns, and the columns
    /// `masks` enable.
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const R: usize, const VB: usize>(
        k: usize,
        ops: Operands,
        masks: &[u16],
        accumulate: bool,
        prefetch: &mut Prefetch,
    ) {
        let mut acc: [[__m512; VB]; R] = [[_mm512_setzero_ps(); VB]; R];
        // SAFETY: row `l < k` of `moving` is read in the masked columns only, row `l` of
        // `stationary` in its first `R` columns only, `dst` in its first `R` rows' masked
        // columns only: all inside the operands by the caller's guarantee (masked-off lanes
        // are neither accessed nor fault).
        unsafe {
            for l in 0..k {
                prefetch.one();
                let row = ops.moving.add(l * ops.moving_stride);
                let b: [__m512; VB] =
                    std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], row.add(16 * v)));
                let s = ops.stationary.add(l * ops.stationary_stride);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_ps(*s.add(r));
                    for (acc, &b) in acc.iter_mut().zip(&b) {
                        *acc = _mm512_fmadd_ps(a, b, *acc);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let row = ops.dst.add(r * ops.dst_stride);
                for (v, &sum) in acc.iter().enumerate() {
                    let at = row.add(16 * v);
                    let value = if accumulate {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], at), sum)
                    } else {
                        sum
                    };
                    _mm512_mask_storeu_ps(at, masks[v], value);
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic values in [-1, 1) from a seed (a 64-bit LCG's high bits).
    fn values(seed: u64, len: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every cache line of each row (misaligned, shorter than a line, straddling two) is asked
    /// for once, in order.
    #[test]
    fn lines_cover_each_row_once() {
        // Never dereferenced: only the addresses are compared.
        let base = std::ptr::without_provenance::<u8>(1 << 20);
        for (offset, bytes) in [(0, 512), (32, 512), (60, 8), (0, 64), (63, 2), (5, 1)] {
            let mut lines = Lines::new(base.wrapping_add(offset), 3, bytes, 1000);
            let got: Vec<usize> = std::iter::from_fn(|| lines.next())
                .map(|p| p as usize)
                .collect();
            let want: Vec<usize> = (0..3)
                .flat_map(|r| {
                    let lo = (1 << 20) + offset + r * 1000;
                    (lo / 64..=(lo + bytes - 1) / 64).map(|line| line * 64)
                })
                .collect();
            assert_eq!(got, want, "offset {offset}, {bytes} bytes");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Every shape, stride and accumulation mode equals an f64 reference within the fp32
        /// chain's bound, and no element outside `dst`'s `m x n` (the padding of each row, the
        /// rows past `m`) changes.
        #[test]
        fn matches_an_f64_reference(
            m in 1usize..=128,
            n in 1usize..=200,
            k in 1usize..=128,
            pads in (0usize..20, 0usize..20, 0usize..20),
            accumulate: bool,
            seed: u64,
        ) {
            prop_assume!(available());
            let (ls, lm, ld) = (m + pads.0, n + pads.1, n + pads.2);
            let s = values(seed, k * ls);
            let mv = values(seed ^ 1, k * lm);
            let mut d = values(seed ^ 2, (m + 1) * ld);
            let before = d.clone();
            let ops = Operands {
                stationary: s.as_ptr(),
                stationary_stride: ls,
                moving: mv.as_ptr(),
                moving_stride: lm,
                dst: d.as_mut_ptr(),
                dst_stride: ld,
            };
            // SAFETY: AVX-512 is available; each operand holds its rows at its stride (`dst`
            // one row more, to see nothing past `m` is written).
            unsafe { matmul(m, n, k, ops, accumulate, &mut Prefetch::default()) };
            for i in 0..=m {
                for j in 0..ld {
                    let got = d[i * ld + j];
                    if i == m || j >= n {
                        prop_assert_eq!(got.to_bits(), before[i * ld + j].to_bits(), "({}, {}) outside dst changed", i, j);
                        continue;
                    }
                    let (mut sum, mut abs) = (0f64, 0f64);
                    for l in 0..k {
                        let p = s[l * ls + i] as f64 * mv[l * lm + j] as f64;
                        sum += p;
                        abs += p.abs();
                    }
                    let old = if accumulate { before[i * ld + j] as f64 } else { 0.0 };
                    let want = old + sum;
                    // K roundings of the chain, one of the final addition.
                    let bound = (k as f64 + 1.0) * 2f64.powi(-24) * (abs + old.abs()) + 1e-30;
                    prop_assert!(
                        (got as f64 - want).abs() <= bound,
                        "({}, {}): got {}, want {} (bound {})", i, j, got, want, bound
                    );
                }
            }
        }
    }
}
