//! Whole kernels and properties: a tiled matmul against a loop reference that mirrors its
//! accumulation order exactly, and element-wise arithmetic on random shapes against plain f32.

mod common;

use common::*;
use proptest::prelude::*;
use std::time::Instant;
use tessera_ir::*;

const TK: usize = 128;
const TM: usize = 128;
const TN: usize = 512;

/// c[M, N] = a[M, K] . b[K, N], tiled as the tensor engine wants it: stationary a^T tiles
/// [K<=128, M<=128] loaded through a transposed HBM view, moving b tiles [K, N<=512], K tiles
/// accumulated in one PSUM tile, then copied out through SBUF.
fn tiled_matmul(m: usize, k: usize, n: usize) -> Prog {
    let mut g = Prog::new();
    let a = g.input("a", DType::F32, &[m, k]);
    let b = g.input("b", DType::F32, &[k, n]);
    let c = g.output("c", DType::F32, &[m, n]);
    let st = g.sbuf("st", DType::F32, TK as u32, TM as u32);
    let mv = g.sbuf("mv", DType::F32, TK as u32, TN as u32);
    let ps = g.psum("ps", TM as u32, TN as u32);
    let ot = g.sbuf("ot", DType::F32, TM as u32, TN as u32);
    for mi in (0..m).step_by(TM) {
        let mt = TM.min(m - mi) as u32;
        for ni in (0..n).step_by(TN) {
            let nt = TN.min(n - ni) as u32;
            for ki in (0..k).step_by(TK) {
                let kt = TK.min(k - ki) as u32;
                // stationary[kk, mm] = a[mi + mm, ki + kk]
                g.op(Op::DmaCopy {
                    dst: DmaOperand::Tile(full(st, kt, mt)),
                    src: hbm(a, (mi * k + ki) as u64, &[(1, kt), (k as i64, mt)]),
                });
                g.op(Op::DmaCopy {
                    dst: DmaOperand::Tile(full(mv, kt, nt)),
                    src: hbm(b, (ki * n + ni) as u64, &[(n as i64, kt), (1, nt)]),
                });
                g.op(Op::Matmul {
                    dst: full(ps, mt, nt),
                    stationary: full(st, kt, mt),
                    moving: full(mv, kt, nt),
                    start: ki == 0,
                    stop: ki + TK >= k,
                });
            }
            g.op(Op::TensorCopy {
                engine: Engine::Act,
                dst: full(ot, mt, nt),
                src: full(ps, mt, nt),
            });
            g.op(Op::DmaCopy {
                dst: hbm(c, (mi * n + ni) as u64, &[(n as i64, mt), (1, nt)]),
                src: DmaOperand::Tile(full(ot, mt, nt)),
            });
        }
    }
    for buf in [st, mv, ps, ot] {
        g.op(Op::Free { buf });
    }
    g
}

/// The same result computed directly: each K tile's dot product summed in f64 and rounded to
/// f32, the tiles accumulated in f32 (the PSUM semantics).
fn reference(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for ki in (0..k).step_by(TK) {
                let part: f64 = (ki..k.min(ki + TK))
                    .map(|kk| a[i * k + kk] * b[kk * n + j])
                    .sum();
                acc = if ki == 0 {
                    part as f32
                } else {
                    (acc as f64 + part as f32 as f64) as f32
                };
            }
            c[i * n + j] = acc as f64;
        }
    }
    c
}

/// Deterministic values in [-1, 1), exact in f32.
fn values(count: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..count)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f64 / (1u64 << 24) as f64) * 2.0 - 1.0
        })
        .collect()
}

fn check_matmul(m: usize, k: usize, n: usize) {
    let g = tiled_matmul(m, k, n);
    let (a, b) = (values(m * k, 1), values(k * n, 2));
    let start = Instant::now();
    let c = g.run_ok(
        vec![("a", f32s(&[m, k], &a)), ("b", f32s(&[k, n], &b))],
        "c",
    );
    eprintln!(
        "tiled matmul {m}x{k}x{n}: {:?} in the emulator",
        start.elapsed()
    );
    assert_eq!(c, reference(&a, &b, m, k, n));
}

#[test]
fn tiled_matmul_with_edge_tiles() {
    check_matmul(200, 300, 530);
}

#[test]
fn tiled_matmul_512() {
    check_matmul(512, 512, 512);
}

fn elementwise(op: AluOp, p: u32, f: u32, dst: DType) -> Prog {
    let mut g = Prog::new();
    let x = g.input("x", DType::F32, &[p as usize, f as usize]);
    let y = g.input("y", DType::F32, &[p as usize, f as usize]);
    let z = g.output("z", dst, &[p as usize, f as usize]);
    let (xt, yt) = (
        g.sbuf("xt", DType::F32, p, f),
        g.sbuf("yt", DType::F32, p, f),
    );
    let zt = g.sbuf("zt", dst, p, f);
    g.load(xt, x, p, f);
    g.load(yt, y, p, f);
    g.op(Op::TensorTensor {
        engine: Engine::Dve,
        op,
        dst: full(zt, p, f),
        lhs: full(xt, p, f),
        rhs: full(yt, p, f),
    });
    g.store(z, zt, p, f);
    g
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Element-wise f32 arithmetic equals native f32 arithmetic exactly (f64 then one rounding
    /// is the correctly rounded f32 result), and a bf16 destination rounds that f32 value.
    #[test]
    fn tensor_tensor_matches_native_f32(
        p in 1u32..=8,
        f in 1u32..=24,
        op in prop::sample::select(vec![AluOp::Add, AluOp::Sub, AluOp::Mul, AluOp::Div, AluOp::Max]),
        bf16_dst in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let n = (p * f) as usize;
        let scale = |v: Vec<f64>| v.into_iter().map(|x| (x * 1000.0) as f32 as f64).collect::<Vec<_>>();
        let (xs, ys) = (scale(values(n, seed)), scale(values(n, seed ^ 0x5555)));
        let dst = if bf16_dst { DType::Bf16 } else { DType::F32 };
        let g = elementwise(op, p, f, dst);
        let shape = [p as usize, f as usize];
        let got = g.run_ok(vec![("x", f32s(&shape, &xs)), ("y", f32s(&shape, &ys))], "z");
        for i in 0..n {
            let (a, b) = (xs[i] as f32, ys[i] as f32);
            let r = match op {
                AluOp::Add => a + b,
                AluOp::Sub => a - b,
                AluOp::Mul => a * b,
                AluOp::Div => a / b,
                _ => a.max(b),
            };
            let want = if bf16_dst { half::bf16::from_f32(r).to_f64() } else { r as f64 };
            prop_assert_eq!(got[i].to_bits(), want.to_bits(), "element {}: {} {} {}", i, a, op, b);
        }
    }

    /// Small untiled matmuls agree with the loop reference exactly.
    #[test]
    fn small_matmul_matches_reference(m in 1usize..=20, k in 1usize..=20, n in 1usize..=20, seed in any::<u64>()) {
        let g = tiled_matmul(m, k, n);
        let (a, b) = (values(m * k, seed), values(k * n, seed.wrapping_add(1)));
        let c = g.run_ok(vec![("a", f32s(&[m, k], &a)), ("b", f32s(&[k, n], &b))], "c");
        prop_assert_eq!(c, reference(&a, &b, m, k, n));
    }
}
