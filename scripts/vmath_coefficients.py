"""Derives the constants of backends/src/interp/vmath.rs (not run by CI).

    pip install mpmath
    python3 scripts/vmath_coefficients.py

Prints, as Rust literals rounded to binary64:
- EXP_TAYLOR: 1/k! for k = 0..=13 (the Taylor series of e^r, |r| <= ln(2)/2);
- LN2_HI / LN2_LO: ln 2 split for Cody and Waite's reduction, the high part with 32
  significant bits so n * LN2_HI is exact for |n| < 2^21;
- ERF_TAYLOR: 2/sqrt(pi) (-1)^n / (n! (2n+1)) for n = 0..=17 (erf(x) = x * sum a_n x^(2n));
- ERFC_POLY: the 30-point Chebyshev interpolant of erfc(x) e^(x^2) on [1, 6], expanded in
  powers of u = (2x - 7) / 5, and its largest relative error on a grid of 3000 points when
  evaluated by Horner's rule in binary64.
"""

import mpmath as mp

mp.mp.dps = 50
N = 30
A, B = 1, 6


def g(x):
    return mp.erfc(x) * mp.exp(x * x)


def chebyshev_interpolant(f, a, b, n):
    """Coefficients c_j of sum c_j T_j(u) interpolating f at the n Chebyshev nodes."""
    nodes = [mp.cos(mp.pi * (k + mp.mpf(1) / 2) / n) for k in range(n)]
    values = [f((b - a) / 2 * u + (a + b) / 2) for u in nodes]
    c = []
    for j in range(n):
        s = mp.fsum(values[k] * mp.cos(mp.pi * j * (k + mp.mpf(1) / 2) / n) for k in range(n))
        c.append(2 * s / n)
    c[0] /= 2
    return c


def to_powers(c):
    """sum c_j T_j(u) as coefficients of u^k."""
    t = [[mp.mpf(1)], [mp.mpf(0), mp.mpf(1)]]
    while len(t) < len(c):
        prev, before = t[-1], t[-2]
        nxt = [mp.mpf(0)] + [2 * v for v in prev]
        for i, v in enumerate(before):
            nxt[i] -= v
        t.append(nxt)
    out = [mp.mpf(0)] * len(c)
    for cj, tj in zip(c, t):
        for i, v in enumerate(tj):
            out[i] += cj * v
    return out


def rust(name, values):
    body = "".join(f"    {float(v)!r},\n" for v in values)
    return f"const {name}: [f64; {len(values)}] = [\n{body}];"


def main():
    print(rust("EXP_TAYLOR", [1 / mp.factorial(k) for k in range(14)]))
    m, e = mp.frexp(mp.log(2))
    hi = mp.floor(m * 2**32) / 2**32 * 2**e
    print(f"const LN2_HI: f64 = {float(hi)!r};")
    print(f"const LN2_LO: f64 = {float(mp.log(2) - hi)!r};")
    erf_taylor = [2 / mp.sqrt(mp.pi) * (-1) ** n / (mp.factorial(n) * (2 * n + 1)) for n in range(18)]
    print(rust("ERF_TAYLOR", erf_taylor))
    powers = [float(v) for v in to_powers(chebyshev_interpolant(g, A, B, N))]
    print(rust("ERFC_POLY", powers))
    worst = 0.0
    for i in range(3000):
        x = A + (B - A) * i / 2999
        u = (2 * x - (A + B)) / (B - A)
        v = powers[-1]
        for c in reversed(powers[:-1]):
            v = v * u + c
        exact = g(mp.mpf(x))
        worst = max(worst, abs(float((v - exact) / exact)))
    print(f"// ERFC_POLY: largest relative error {worst:.2e}")


if __name__ == "__main__":
    main()
