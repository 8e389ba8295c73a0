#!/usr/bin/env python3
"""Fits the polynomials of our own in native/cpu/simd.h, and prints their coefficients (lowest
power first) and largest errors in ulps as the kernels evaluate them (float32, one rounding per
FMA), against float64 at 2M points:

  log1pUnit:   log1p(e) ~ e q(e) on [0, 1], q of degree 9, in pairs of terms in powers of e^2;
  expSoftmax:  exp(r) ~ 1 + r + r^2 q(r) on [-ln2/2, ln2/2], q of degree 3.

Each is least squares on Chebyshev nodes, reweighted towards the smallest largest relative error.
Run: python3 scripts/fit-polynomials.py
"""
import numpy as np

LOG1P_DEGREE = 9
EXP_Q_DEGREE = 3
HALF_LN2 = np.log(2) / 2


def log1p_over_e(x):
    safe = np.where(x == 0, 1.0, x)
    return np.where(x == 0, 1.0, np.log1p(safe) / safe)


def reweighted_fit(nodes, degree, target, scale, relative_error, rounds):
    """Least squares of scale * (poly - target), reweighted towards the smallest largest error."""
    weights = np.ones_like(nodes)
    for _ in range(rounds):
        a = np.vander(nodes, degree + 1, increasing=True) * (scale * np.sqrt(weights))[:, None]
        c, *_ = np.linalg.lstsq(a, target * scale * np.sqrt(weights), rcond=None)
        err = relative_error(c)
        weights = weights * (err / err.max() + 1e-3)
        weights /= weights.mean()
    return c.astype(np.float32)


def fit_log1p():
    nodes = 0.5 - 0.5 * np.cos(np.pi * (np.arange(4000) + 0.5) / 4000)
    target = log1p_over_e(nodes)
    return reweighted_fit(nodes, LOG1P_DEGREE, target, np.ones_like(nodes),
                          lambda c: np.abs(np.polyval(c[::-1], nodes) / target - 1), rounds=60)


def fit_exp():
    r = HALF_LN2 * np.cos(np.pi * (np.arange(6000) + 0.5) / 6000)
    r = r[np.abs(r) > 1e-4]
    target = (np.exp(r) - 1 - r) / r**2
    scale = r**2 / np.exp(r)  # the error of q, as a relative error of exp
    return reweighted_fit(r, EXP_Q_DEGREE, target, scale,
                          lambda c: np.abs((1 + r + r**2 * np.polyval(c[::-1], r)) / np.exp(r) - 1), rounds=80)


def fma32(a, b, c):
    # A float32 product is exact in float64, so this rounds once, as an FMA does.
    return (a.astype(np.float64) * b + c).astype(np.float32)


def evaluate_log1p(c, e):
    e2 = (e.astype(np.float64) * e).astype(np.float32)
    pairs = [fma32(np.full_like(e, c[2 * i + 1]), e, np.full_like(e, c[2 * i])) for i in range(5)]
    q = pairs[4]
    for i in (3, 2, 1, 0):
        q = fma32(q, e2, pairs[i])
    return (q.astype(np.float64) * e).astype(np.float32)


def evaluate_exp(c, r):
    r2 = (r.astype(np.float64) * r).astype(np.float32)
    a = fma32(np.full_like(r, c[1]), r, c[0])
    b = fma32(np.full_like(r, c[3]), r, c[2])
    q = fma32(r2, b, a)
    return (fma32(q, r2, r).astype(np.float64) + 1).astype(np.float32)


def report(name, c, got, exact):
    ok = exact > 0
    ulps = np.abs(got[ok] - exact[ok]) / np.spacing(exact[ok].astype(np.float32)).astype(np.float64)
    print("%s coefficients: %s" % (name, ", ".join("%.10e" % v for v in c)))
    print("%s largest error %.2f ulp, mean %.3f ulp" % (name, ulps.max(), ulps.mean()))


def main():
    e = np.linspace(0, 1, 2000001).astype(np.float32)
    c = fit_log1p()
    report("log1pUnit", c, evaluate_log1p(c, e).astype(np.float64), np.log1p(e.astype(np.float64)))
    r = np.linspace(-HALF_LN2, HALF_LN2, 2000001).astype(np.float32)
    c = fit_exp()
    report("expSoftmax", c, evaluate_exp(c, r).astype(np.float64), np.exp(r.astype(np.float64)))


if __name__ == "__main__":
    main()
