//! `exp` and `erf` in binary64 written so a loop over many values vectorises: no branches, no
//! table lookups, only additions, multiplications, comparisons and integer bit operations. The
//! interpreter applies them one value at a time and the jit a row at a time
//! ([`activation_row`]); both execute the same IEEE operations in the same order (Rust never
//! fuses a multiply and an add on its own), so the results are bit-identical whatever the
//! vector width.
//!
//! One branch is taken per row, not per value: arithmetic whose result is subnormal is slow on
//! x86 processors (a microcode assist of a hundred cycles or more, for every vector holding
//! such a lane), and `exp` of a large negative argument (a masked attention score) passes
//! through it on its way to 0. A row none of whose arguments give a subnormal result is computed
//! by a variant that never forms one ([`exp_normal`], the same values); only a row holding an
//! argument in [-746, -708) takes the general one.
//!
//! The polynomials use fused multiply-adds (`f64::mul_add`, exactly rounded everywhere: one
//! instruction where the processor has FMA, a correctly rounded library call where it does not),
//! so every host computes the same bits.
//!
//! Accuracy (tests below, against `libm`, itself within 1 ulp): `exp` within 2 ulp over
//! [-740, 709], `erf` within 3 ulp over [-7, 7]. The results are rounded to fp32 afterwards, so
//! they are the correctly rounded fp32 value except where the exact value lies within a few
//! binary64 ulp of a rounding boundary.
//!
//! The coefficients were computed for this file by `scripts/vmath_coefficients.py` (mpmath, 50
//! digits, rounded to binary64): the Taylor coefficients of `e^r` (`1/k!`) and of `erf`
//! (`2/sqrt(pi) (-1)^n / (n! (2n+1))`), and the 30-point Chebyshev interpolant of
//! `erfc(x) e^(x^2)` on [1, 6] expanded in powers (within 3.3e-16 relative by Horner's rule).

use tessera_ir::ActFunc;

/// `1/k!`, k = 0..=13: `e^r` for `|r| <= ln(2)/2` to below 2^-60 relative.
const EXP_TAYLOR: [f64; 14] = [
    1.0,
    1.0,
    0.5,
    0.16666666666666666,
    0.041666666666666664,
    0.008333333333333333,
    0.001388888888888889,
    0.0001984126984126984,
    2.48015873015873e-05,
    2.7557319223985893e-06,
    2.755731922398589e-07,
    2.505210838544172e-08,
    2.08767569878681e-09,
    1.6059043836821613e-10,
];

/// `ln 2` split for Cody and Waite's reduction: the high part has 32 significant bits, so
/// `n * LN2_HI` is exact for every `|n| < 2^21`.
const LN2_HI: f64 = 0.6931471803691238;
const LN2_LO: f64 = 1.9082149292705877e-10;

/// `2^52 + 2^51`: adding it to a value below 2^51 in magnitude rounds the value to an integer
/// (to nearest, ties to even), and that integer is the difference of the two bit patterns.
const MAGIC: f64 = 6755399441055744.0;

/// `sum c[k] x^k` as `even(x^2) + x odd(x^2)`, each half by Horner's rule with fused
/// multiply-adds: two independent chains of half the length.
#[inline(always)]
fn poly<const N: usize>(c: &[f64; N], x: f64) -> f64 {
    let x2 = x * x;
    let half = |start: usize| {
        let mut acc = 0.0;
        for k in (start..N).step_by(2).rev() {
            acc = f64::mul_add(acc, x2, c[k]);
        }
        acc
    };
    half(1).mul_add(x, half(0))
}

/// `2^m` for an integer-valued `m` in [-1022, 1023].
#[inline(always)]
fn pow2(m: f64) -> f64 {
    let i = (m + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits());
    f64::from_bits(i.wrapping_add(1023) << 52)
}

/// `e^x`. NaN stays NaN; overflow gives +inf, underflow gradual to 0.
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    if subnormal_range(x) {
        exp_any(x)
    } else {
        exp_normal(x)
    }
}

/// Arguments whose `e^x` may be subnormal: `e^-708` is above the smallest normal number
/// (2^-1022), `e^-746` rounds to 0.
#[inline(always)]
fn subnormal_range(x: f64) -> bool {
    (-746.0..-708.0).contains(&x)
}

/// `e^x` for an argument outside [`subnormal_range`]: the same value as [`exp_any`], but no
/// operation produces a subnormal number (which costs a processor a slow microcode assist, on
/// every lane of a vector that holds one): below the range the result is 0.
#[inline(always)]
fn exp_normal(x: f64) -> f64 {
    let y = exp_from(x, -708.0);
    if x < -746.0 { 0.0 } else { y }
}

/// `e^x` for any argument.
#[inline(always)]
fn exp_any(x: f64) -> f64 {
    // Below -746 the result is 0 anyway (the scaling below saturates).
    exp_from(x, -746.0)
}

/// `e^max(x, lo)` (NaN stays NaN; overflow gives +inf) for `lo` in [-746, -708].
#[inline(always)]
fn exp_from(x: f64, lo: f64) -> f64 {
    let xc = x.clamp(lo, 710.0);
    let n = xc.mul_add(std::f64::consts::LOG2_E, MAGIC) - MAGIC;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, xc));
    let p = poly(&EXP_TAYLOR, r);
    // 2^n in two factors so neither leaves the normal range; the second multiplication
    // rounds once into the subnormal range or to infinity.
    let half = (n * 0.5 + MAGIC) - MAGIC;
    let y = p * pow2(half) * pow2(n - half);
    if x.is_nan() { x } else { y }
}

/// `erf(x) = 2/sqrt(pi) sum (-1)^n x^(2n+1) / (n! (2n+1))`, n = 0..=17: below 2^-56 of the
/// sum for `|x| < 1`.
const ERF_TAYLOR: [f64; 18] = [
    std::f64::consts::FRAC_2_SQRT_PI,
    -0.37612638903183754,
    0.11283791670955126,
    -0.026866170645131252,
    0.005223977625442188,
    -0.0008548327023450853,
    0.00012055332981789664,
    -1.492565035840625e-05,
    1.6462114365889248e-06,
    -1.6365844691234924e-07,
    1.4807192815879218e-08,
    -1.2290555301717928e-09,
    9.422759064650411e-11,
    -6.7113668551641105e-12,
    4.4632242632864775e-13,
    -2.7835162072109215e-14,
    1.6342614095367152e-15,
    -9.063970842808673e-17,
];

/// `erfc(x) e^(x^2)` on [1, 6] as a polynomial in `u = (2x - 7) / 5`: the 30-point Chebyshev
/// interpolant, expanded in powers of `u` (its coefficients stay small, so Horner's rule loses
/// nothing: within 3.3e-16 relative).
const ERFC_POLY: [f64; 30] = [
    0.1552936556088943,
    -0.10330894458313124,
    0.0666320824531906,
    -0.04176678811943188,
    0.025495559643743348,
    -0.015182511545620832,
    0.00883342391529903,
    -0.005028067968654204,
    0.0028033262034199737,
    -0.001532515711226679,
    0.0008222550987233205,
    -0.00043336170490803185,
    0.00022453088978866036,
    -0.00011444247762230747,
    5.741680994974455e-05,
    -2.8376281485934893e-05,
    1.3832421918659423e-05,
    -6.6422186210437495e-06,
    3.1225510221476298e-06,
    -1.4615385561115369e-06,
    7.117053416590745e-07,
    -3.227264363656852e-07,
    1.0532664214626851e-07,
    -4.841629944913183e-08,
    5.158307441554354e-08,
    -2.1641342219954443e-08,
    -5.788800082379115e-09,
    2.203648393927714e-09,
    3.555964753024834e-09,
    -1.4479464300262855e-09,
];

/// The error function: the Taylor series for `|x| < 1`, else `1 - e^(-x^2) g(|x|)` with `g`
/// the polynomial for `erfc(x) e^(x^2)` (taken at 6 beyond 6, where `erfc` is below half an ulp
/// of 1). Both are computed and one is selected, so the code has no branch.
#[inline(always)]
pub fn erf(x: f64) -> f64 {
    erf_with(x, exp)
}

/// [`erf`] with `exp` for `e^(-x^2)`: any of this file's (they agree).
#[inline(always)]
fn erf_with(x: f64, exp: impl Fn(f64) -> f64) -> f64 {
    let x2 = x * x;
    let s = poly(&ERF_TAYLOR, x2);
    let small = x * s;
    let a = x.abs();
    let u = a.min(6.0).mul_add(0.4, -1.4);
    let g = poly(&ERFC_POLY, u);
    let large = (-exp(-x2)).mul_add(g, 1.0).copysign(x);
    let y = if a < 1.0 { small } else { large };
    if x.is_nan() { x } else { y }
}

/// `0.5 x (1 + erf(x / sqrt 2))` (the division as a multiplication by `1 / sqrt 2`).
#[inline(always)]
pub fn gelu(x: f64) -> f64 {
    gelu_with(x, exp)
}

#[inline(always)]
fn gelu_with(x: f64, exp: impl Fn(f64) -> f64) -> f64 {
    0.5 * x * (1.0 + erf_with(gelu_erf_arg(x), exp))
}

/// The argument of the `erf` inside `gelu(x)`.
#[inline(always)]
fn gelu_erf_arg(x: f64) -> f64 {
    x * std::f64::consts::FRAC_1_SQRT_2
}

/// The argument of the `exp` inside `gelu(x)` (that of `erf_with`'s `exp`).
#[inline(always)]
fn gelu_exp_arg(x: f64) -> f64 {
    let z = gelu_erf_arg(x);
    -(z * z)
}

/// Whether [`activation_row`] computes `func` in vector lanes (others go one value at a time
/// through [`super::semantics::activation`], with identical results).
pub fn vectorised(func: ActFunc) -> bool {
    matches!(func, ActFunc::Exp | ActFunc::Erf | ActFunc::Gelu)
}

/// `$f` applied to every value of `$xs` in place, as a plain loop: closures and `for_each`
/// are not inlined into the callers compiled for wider vectors, so this is a macro.
macro_rules! each {
    ($xs:expr, $f:expr) => {
        for x in $xs {
            *x = $f(*x);
        }
    };
}

/// `$fast` (with [`exp_normal`]) applied to every value of `$xs` when no value gives `exp` an
/// argument (`$arg`) in [`subnormal_range`], else `$any` (with [`exp_any`]): both give the
/// scalar function's result, the first without slow subnormal arithmetic.
macro_rules! split {
    ($xs:expr, $arg:expr, $fast:expr, $any:expr) => {{
        // Without short-circuiting, so the test is a vector comparison.
        if $xs
            .iter()
            .fold(false, |any, &x| any | subnormal_range($arg(x)))
        {
            each!($xs, $any);
        } else {
            each!($xs, $fast);
        }
    }};
}

#[inline(always)]
fn row_generic(func: ActFunc, xs: &mut [f64]) {
    match func {
        ActFunc::Exp => split!(xs, |x| x, exp_normal, exp_any),
        ActFunc::Erf => split!(xs, |x: f64| -(x * x), |x| erf_with(x, exp_normal), |x| {
            erf_with(x, exp_any)
        }),
        ActFunc::Gelu => split!(xs, gelu_exp_arg, |x| gelu_with(x, exp_normal), |x| {
            gelu_with(x, exp_any)
        }),
        f => each!(xs, |x| super::semantics::activation(f, x)),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn row_avx512(func: ActFunc, xs: &mut [f64]) {
    row_generic(func, xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_avx2(func: ActFunc, xs: &mut [f64]) {
    row_generic(func, xs)
}

/// `func` of every value of `xs`, in place: the same results as
/// [`super::semantics::activation`] on each, computed with the widest vectors the processor
/// has.
pub fn activation_row(func: ActFunc, xs: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F (checked just above).
            return unsafe { row_avx512(func, xs) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the processor has AVX2 and FMA (checked just above).
            return unsafe { row_avx2(func, xs) };
        }
    }
    row_generic(func, xs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in binary64 ulps (of the reference) between `got` and `want`.
    fn ulps(got: f64, want: f64) -> f64 {
        if got == want {
            return 0.0;
        }
        let ulp = f64::from_bits(want.abs().to_bits() + 1) - want.abs();
        (got - want).abs() / ulp
    }

    fn points(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f64> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f64 / n as f64)
    }

    /// Against libm (itself within 1 ulp): the documented bounds plus libm's own ulp.
    #[test]
    fn close_to_libm() {
        for x in points(-740.0, 709.0, 200_000).chain(points(-2.0, 2.0, 100_001)) {
            let e = ulps(exp(x), libm::exp(x));
            assert!(
                e <= 2.0,
                "exp({x}): {} vs {} ({e} ulp)",
                exp(x),
                libm::exp(x)
            );
        }
        for x in points(-7.0, 7.0, 200_001).chain(points(-1.1, 1.1, 100_001)) {
            let e = ulps(erf(x), libm::erf(x));
            assert!(
                e <= 3.0,
                "erf({x}): {} vs {} ({e} ulp)",
                erf(x),
                libm::erf(x)
            );
        }
    }

    #[test]
    fn edge_values() {
        assert!(exp(f64::NAN).is_nan() && erf(f64::NAN).is_nan());
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(710.0), f64::INFINITY);
        assert_eq!(exp(-746.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        // The smallest subnormal: e^-744.44 is about 2^-1074.
        assert_eq!(exp(-744.4400719213812), f64::from_bits(1));
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert_eq!(erf(0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(erf(-0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(erf(30.0), 1.0);
    }

    /// The two ways of computing `exp` agree bit for bit outside the subnormal range, so a
    /// row may take either for a vector that holds no argument inside it.
    #[test]
    fn exp_without_subnormals_agrees() {
        let specials = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -708.0,
            -746.1,
            -1e300,
            0.0,
        ];
        for x in points(-800.0, 720.0, 400_000).chain(specials) {
            if !subnormal_range(x) {
                assert_eq!(exp_normal(x).to_bits(), exp_any(x).to_bits(), "exp({x})");
            }
        }
    }

    /// A row gives each value's scalar result, bit for bit, in every vector width (tails too).
    #[test]
    fn rows_equal_scalars() {
        // Also arguments whose `exp` is subnormal (exp near -720; erf near 26.8; gelu near 38),
        // next to ordinary values in the same vector, and far below them (masked scores).
        let values: Vec<f64> = points(-12.0, 12.0, 1000)
            .chain([f64::NAN, f64::INFINITY, -0.0, 1e-310, 0.99999999, 1.0, 6.0])
            .chain([-720.0, 0.5, -745.5, -1e4, -708.0, -707.9, -746.0, -746.1])
            .chain([26.8, -27.0, 0.3, 38.0, -38.2, 1e3, -1e4])
            .chain(points(-760.0, -700.0, 300))
            .collect();
        // A row without them, but with arguments far below (taking the faster variant).
        let masked = [
            -1e4,
            0.5,
            -800.0,
            -746.1,
            3.0,
            f64::NAN,
            -1e300,
            2.0,
            -0.0,
            -707.0,
        ];
        for func in [ActFunc::Exp, ActFunc::Erf, ActFunc::Gelu, ActFunc::Tanh] {
            let rows = [1, 3, 7, 8, 9, 17, values.len()].map(|len| &values[..len]);
            for values in rows.into_iter().chain([&masked[..]]) {
                let mut row = values.to_vec();
                activation_row(func, &mut row);
                for (&x, &y) in values.iter().zip(&row) {
                    let want = super::super::semantics::activation(func, x);
                    assert_eq!(y.to_bits(), want.to_bits(), "{func:?}({x})");
                }
            }
        }
    }
}
