"""Shared inputs and the float64 oracle for the kernel tests (tests/test_kernels*.py).

The oracle is the core's independent mpmath transcription of DESIGN.md section 2
(``tests/oracle.py``) applied to sorted groups; nothing here imports a kernel.
"""

from __future__ import annotations

import itertools

import numpy as np

METHODS = ("gdpo", "mean", "softmin", "mean_variance", "min")


def method_params(method, **given):
    """The parameters among ``given`` that ``method`` takes (read from the method table)."""
    import rewardagg

    takes = rewardagg.get_aggregator(method).params
    return {k: v for k, v in given.items() if k in takes}


def fused_call(method, **given):
    """``(code, slots)`` of the fused kernels for ``method`` with ``given`` parameters."""
    import rewardagg

    agg = rewardagg.get_aggregator(method)
    return agg.fused_args(agg.bind(method_params(method, **given)))


def make_case(sizes, n_rew, *, seed=0, p_missing=0.2, zero_weight=True, ties=True):
    """Rows sorted by group (``sizes`` rows each), NaN holes, integer-valued columns (ties,
    zero-spread cells) next to continuous ones, and weights with a zero."""
    rng = np.random.default_rng(seed)
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(off[-1])
    r = rng.standard_normal((n, n_rew)) * rng.uniform(0.1, 10, n_rew) + rng.normal(0, 5, n_rew)
    if ties and n_rew > 1:
        r[:, 0] = rng.integers(0, 2, n)  # pass/fail reward: many all-equal cells
    if p_missing:
        r[rng.random((n, n_rew)) < p_missing] = np.nan
    w = rng.uniform(0.2, 2.0, n_rew)
    if zero_weight and n_rew > 2:
        w[-1] = 0.0
    return r, off, w


def oracle_scores(
    r,
    off,
    w,
    method,
    *,
    kappa=1.0,
    lam=0.5,
    eps=1e-6,
    correction=1,
    singleton="zero",
    baseline="mean",
):
    import oracle  # mpmath, only where the oracle is used

    groups = [list(range(int(a), int(b))) for a, b in itertools.pairwise(off) if b > a]
    z = oracle.stage1(
        r, groups, eps=eps, correction=correction, singleton=singleton, baseline=baseline
    )
    out = np.full(r.shape[0], np.nan)
    for i, zrow in enumerate(z):
        s = oracle.reduce_row(zrow, list(w), method, kappa=kappa, lam=lam)
        if s is not None:
            out[i] = float(s)
    return out


def assert_scores(got, want, *, rtol, atol):
    got = np.asarray(got, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN rows differ")
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


def threshold_case(seed=0, n_groups=400):
    """float32 groups of 3 rows whose float64 Z on reward 0 sits around +-1e-8 for the
    middle row (``c - d, c +- k ulp(c), c + d``: Z = 2/3 k ulp(c) / d / sd-factor) and
    whose reward 1 is clearly negative there: the row is mixed exactly when its reward-0
    term passes 1e-8 (float32 arithmetic rounds such Z to noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_groups):
        c = np.float32(rng.choice([1.0, 2.0, 4.0]))
        d = np.float32(rng.uniform(4.0, 24.0))
        k = rng.choice([-2, -1, 1, 2])
        mid = np.float32(c + np.float32(k) * np.spacing(c))
        rows += [[c - d, 5.0], [mid, -3.0], [c + d, 4.0]]
    r = np.array(rows, dtype=np.float32)
    off = np.arange(0, len(rows) + 1, 3, dtype=np.int64)
    return r, off
