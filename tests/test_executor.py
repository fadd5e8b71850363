"""The one executor (rewardagg._src.executor): every option on every backend.

Regression tests for issue 23 live here; the full option x backend product is
tests/test_matrix.py.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import rewardagg as ra

HAS_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="needs numba")


@needs_numba
def test_issue23_constraint_tracker_on_fused_path():
    """ConstraintTracker at an ordinary batch size with numba installed: the multipliers'
    terms crashed on the fused path (``x`` was built only on the array path)."""
    rng = np.random.default_rng(23)
    r = rng.random((4096, 8))
    adv = ra.ConstraintTracker({0: 0.9}).advantages(r, group_size=8)
    assert adv.shape == (4096,) and np.all(np.isfinite(adv))


@needs_numba
@pytest.mark.parametrize("backend", ["numba", "auto"])
def test_issue23_multipliers_on_fused_path(backend):
    """``multipliers=`` on the fused path equals the numpy path (float64, 1e-9)."""
    rng = np.random.default_rng(5)
    r = rng.random((4096, 17))
    kw = dict(group_size=8, multipliers={0: 0.7, 3: 0.2})
    want = ra.advantages(r, backend="numpy", **kw)
    got = ra.advantages(r, backend=backend, **kw)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


@needs_numba
def test_issue23_constraint_tracker_auto_equals_numpy():
    """Done-when of issue 23: ``ConstraintTracker(...).advantages`` at N = 4096, K = 17 with
    numba installed and backend="auto" equals the numpy path to 1e-9 (float64 input)."""
    rng = np.random.default_rng(17)
    batches = [rng.random((4096, 17)) for _ in range(3)]
    fused, plain = (ra.ConstraintTracker({0: 0.9, 5: 0.8}) for _ in range(2))
    for r in batches:  # the multipliers grow from 0 after the first batch
        got = fused.advantages(r, group_size=8, backend="auto")
        want = plain.advantages(r, group_size=8, backend="numpy")
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert all(lam > 0 for lam in fused.multipliers.values())
