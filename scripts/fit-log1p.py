#!/usr/bin/env python3
"""Fits the polynomial of simd::log1pUnit: log1p(e) ~ e q(e) on [0, 1], q of degree 9.

Least squares on Chebyshev nodes, reweighted towards the smallest largest relative error, then
the float32 coefficients evaluated as the kernel does (pairs of terms in powers of e^2, one
rounding per FMA) against float64 at 2M points. Prints the coefficients, lowest power first, and
the largest error in ulps. Run: python3 scripts/fit-log1p.py
"""
import numpy as np

DEGREE = 9


def log1p_over_e(x):
    safe = np.where(x == 0, 1.0, x)
    return np.where(x == 0, 1.0, np.log1p(safe) / safe)


def fit():
    nodes = 0.5 - 0.5 * np.cos(np.pi * (np.arange(4000) + 0.5) / 4000)
    weights = np.ones_like(nodes)
    for _ in range(60):
        a = np.vander(nodes, DEGREE + 1, increasing=True) * np.sqrt(weights)[:, None]
        c, *_ = np.linalg.lstsq(a, log1p_over_e(nodes) * np.sqrt(weights), rcond=None)
        err = np.abs(np.polyval(c[::-1], nodes) / log1p_over_e(nodes) - 1)
        weights = weights * (err / err.max() + 1e-3)
        weights /= weights.mean()
    return c.astype(np.float32)


def fma32(a, b, c):
    # A float32 product is exact in float64, so this rounds once, as an FMA does.
    return (a.astype(np.float64) * b + c).astype(np.float32)


def evaluate(c, e):
    e2 = (e.astype(np.float64) * e).astype(np.float32)
    pairs = [fma32(np.full_like(e, c[2 * i + 1]), e, np.full_like(e, c[2 * i])) for i in range(5)]
    q = pairs[4]
    for i in (3, 2, 1, 0):
        q = fma32(q, e2, pairs[i])
    return (q.astype(np.float64) * e).astype(np.float32)


def main():
    c = fit()
    e = np.linspace(0, 1, 2000001).astype(np.float32)
    exact = np.log1p(e.astype(np.float64))
    got = evaluate(c, e).astype(np.float64)
    ok = exact > 0
    ulps = np.abs(got[ok] - exact[ok]) / np.spacing(exact[ok].astype(np.float32)).astype(np.float64)
    print("coefficients:", ", ".join("%.9e" % v for v in c))
    print("largest error %.2f ulp, mean %.3f ulp" % (ulps.max(), ulps.mean()))


if __name__ == "__main__":
    main()
