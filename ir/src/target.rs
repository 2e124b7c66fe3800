//! The machine description: every number the verifier, the emulator and (later) the cost rules
//! need, for the two presets `trn1` (NeuronCore-v2, also Inferentia2) and `trn2` (NeuronCore-v3).
//!
//! Sources, all public AWS Neuron documentation ("awsdocs-neuron"):
//! - NeuronCore-v2 architecture page (Trn1/Inf2): engine clocks, SBUF 24 MiB, PSUM 2 MiB, tensor
//!   engine 128x128, bf16/fp16 92 TFLOPS, fp32 23 TFLOPS.
//! - NeuronCore-v3 architecture page (Trn2): SBUF 28 MiB, bf16 79 TFLOPS, fp8 158 TFLOPS,
//!   fp32 20 TFLOPS, engine clocks.
//! - Trainium / Trainium2 chip pages: HBM bandwidth per chip, cores per chip, DMA engines.
//! - NKI programming model and `nki.isa` pages: 128 partitions, PSUM 8 banks of 2 KiB per
//!   partition, `nc_matmul` limits (stationary free <= 128, moving free <= 512), partition start
//!   rules for access patterns, up to 4 free dimensions in an access pattern.

use std::fmt;
use std::str::FromStr;

/// All machine numbers of one NeuronCore generation.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetSpec {
    /// Preset name (`trn1`, `trn2`).
    pub name: &'static str,
    /// SBUF and PSUM partitions (rows of the on-chip memories, lanes of the engines).
    pub partitions: u32,
    /// SBUF bytes per partition.
    pub sbuf_partition_bytes: u64,
    /// PSUM bytes per partition.
    pub psum_partition_bytes: u64,
    /// PSUM banks per partition; matmul accumulation stays within one bank.
    pub psum_banks: u32,
    /// Bytes of one PSUM bank in one partition (2 KiB: 512 fp32 accumulators).
    pub psum_bank_bytes: u64,
    /// Most free dimensions an access pattern may have.
    pub max_free_dims: usize,
    /// `nc_matmul`: contraction size K, the partitions of stationary and moving (<= 128).
    pub matmul_max_k: u32,
    /// `nc_matmul`: stationary free size M, the partitions of the result (<= 128).
    pub matmul_max_m: u32,
    /// `nc_matmul`: moving free size N, the free size of the result (<= 512).
    pub matmul_max_n: u32,
    /// `nc_transpose` on the tensor engine: most partitions and most free elements of the input.
    pub transpose_max: u32,
    /// Tensor engine (PE) clock, Hz.
    pub pe_hz: f64,
    /// Vector engine (DVE) clock, Hz.
    pub dve_hz: f64,
    /// Scalar/activation engine (ACT) clock, Hz.
    pub act_hz: f64,
    /// GpSimd engine (POOL) clock, Hz.
    pub pool_hz: f64,
    /// Tensor engine peak, dense bf16/fp16 FLOP/s.
    pub pe_bf16_flops: f64,
    /// Tensor engine peak, fp8 FLOP/s (equal to bf16 where the generation has no fast fp8).
    pub pe_fp8_flops: f64,
    /// Tensor engine peak, fp32 FLOP/s.
    pub pe_fp32_flops: f64,
    /// DMA engines per core.
    pub dma_engines: u32,
    /// Queues per DMA engine.
    pub dma_queues_per_engine: u32,
    /// Bandwidth of one DMA engine, bytes/s.
    pub dma_engine_bytes_per_s: f64,
    /// Total DMA bandwidth of one core, bytes/s.
    pub dma_core_bytes_per_s: f64,
    /// HBM bandwidth of the whole chip, bytes/s.
    pub hbm_chip_bytes_per_s: f64,
    /// NeuronCores sharing that HBM bandwidth.
    pub cores_per_chip: u32,
}

const KIB: u64 = 1024;

impl TargetSpec {
    /// NeuronCore-v2 (Trainium1, Inferentia2).
    pub fn trn1() -> Self {
        TargetSpec {
            name: "trn1",
            partitions: 128,
            // 24 MiB SBUF = 128 partitions x 192 KiB (NeuronCore-v2 architecture page).
            sbuf_partition_bytes: 192 * KIB,
            // PSUM 2 MiB = 128 x 16 KiB, 8 banks of 2 KiB (NKI programming model).
            psum_partition_bytes: 16 * KIB,
            psum_banks: 8,
            psum_bank_bytes: 2 * KIB,
            max_free_dims: 4,
            matmul_max_k: 128,
            matmul_max_m: 128,
            matmul_max_n: 512,
            transpose_max: 128,
            pe_hz: 2.8e9,
            dve_hz: 1.12e9,
            act_hz: 1.4e9,
            pool_hz: 1.4e9,
            // 92 TFLOPS bf16/fp16, 23 TFLOPS fp32 per core; no separate fp8 rate on v2.
            pe_bf16_flops: 92e12,
            pe_fp8_flops: 92e12,
            pe_fp32_flops: 23e12,
            dma_engines: 16,
            dma_queues_per_engine: 16,
            dma_engine_bytes_per_s: 27e9,
            dma_core_bytes_per_s: 272e9,
            // Trainium1: 820 GB/s HBM for 2 NeuronCores.
            hbm_chip_bytes_per_s: 820e9,
            cores_per_chip: 2,
        }
    }

    /// NeuronCore-v3 (Trainium2). The default target.
    pub fn trn2() -> Self {
        TargetSpec {
            name: "trn2",
            // 28 MiB SBUF = 128 partitions x 224 KiB (NeuronCore-v3 architecture page).
            sbuf_partition_bytes: 224 * KIB,
            pe_hz: 2.4e9,
            dve_hz: 0.96e9,
            act_hz: 1.2e9,
            pool_hz: 1.2e9,
            pe_bf16_flops: 79e12,
            pe_fp8_flops: 158e12,
            pe_fp32_flops: 20e12,
            dma_core_bytes_per_s: 368e9,
            // Trainium2: 2.9 TB/s HBM for 8 NeuronCores.
            hbm_chip_bytes_per_s: 2.9e12,
            cores_per_chip: 8,
            ..TargetSpec::trn1()
        }
    }

    /// The preset with this name.
    pub fn by_name(name: &str) -> Result<Self, UnknownTarget> {
        match name {
            "trn1" | "inf2" => Ok(Self::trn1()),
            "trn2" => Ok(Self::trn2()),
            _ => Err(UnknownTarget(name.to_string())),
        }
    }

    /// HBM bandwidth available to one core when every core streams at once, bytes/s.
    pub fn hbm_core_bytes_per_s(&self) -> f64 {
        self.hbm_chip_bytes_per_s / self.cores_per_chip as f64
    }
}

impl Default for TargetSpec {
    fn default() -> Self {
        Self::trn2()
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// The error for a target name that is not a preset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown target `{0}` (expected trn1, inf2 or trn2)")]
pub struct UnknownTarget(pub String);

impl FromStr for TargetSpec {
    type Err = UnknownTarget;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::by_name(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_match_the_published_totals() {
        let t1 = TargetSpec::trn1();
        assert_eq!(
            t1.sbuf_partition_bytes * t1.partitions as u64,
            24 * 1024 * 1024
        );
        let t2 = TargetSpec::trn2();
        assert_eq!(
            t2.sbuf_partition_bytes * t2.partitions as u64,
            28 * 1024 * 1024
        );
        assert_eq!(
            t2.psum_banks as u64 * t2.psum_bank_bytes,
            t2.psum_partition_bytes
        );
        // 512 fp32 accumulators per bank is the matmul N limit.
        assert_eq!(t2.psum_bank_bytes / 4, t2.matmul_max_n as u64);
    }

    #[test]
    fn presets_by_name() {
        assert_eq!(TargetSpec::by_name("trn1").unwrap().name, "trn1");
        assert_eq!("trn2".parse::<TargetSpec>().unwrap(), TargetSpec::default());
        assert!(TargetSpec::by_name("h100").is_err());
    }
}
