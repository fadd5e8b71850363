"""DESIGN.md section 2c: GD²PO's conflict filter and group reweighting, against the mpmath
oracle (tests/oracle.py, written from the design) and its defining properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import oracle
import rewardagg as ra
from rewardagg import kernels

torch = pytest.importorskip("torch")
HAS_NUMBA = "numba" in kernels.available_backends()
BACKENDS = ["numpy", "torch"] + (["numba"] if HAS_NUMBA else [])


def ragged(seed, k=4):
    rng = np.random.default_rng(seed)
    sizes = np.array([1, 2, 5, 8, 3, 6])
    labels = np.repeat(np.arange(sizes.size), sizes)
    rng.shuffle(labels)
    R = rng.normal(size=(labels.size, k))
    R[:, 0] = rng.integers(0, 2, labels.size)  # pass/fail: zero-spread cells, ties
    R[rng.random(R.shape) < 0.15] = np.nan
    w = rng.uniform(0.3, 2.0, k)
    w[-1] = 0.0  # a zero weight never votes
    return R, labels, w


def run(backend, R, **kw):
    x = torch.from_numpy(R) if backend == "torch" else R
    out = ra.advantages(x, backend=backend, **kw)
    return out.numpy() if isinstance(out, torch.Tensor) else out


def close(got, ref, tol=1e-9):
    err = np.abs(np.asarray(got, np.float64) - ref) / (1.0 + np.abs(ref))
    assert err.max() <= tol, f"max rel err {err.max():.3g}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["gdpo", "mean", "softmin"])
@pytest.mark.parametrize(
    "conflict, tau", [("hard", None), ("snr", 0.0), ("snr", 0.3), ("snr", 0.8), ("snr", 1.0)]
)
@pytest.mark.parametrize("reweight", [True, False])
def test_matches_oracle(backend, method, conflict, tau, reweight):
    for seed in range(2):
        R, labels, w = ragged(seed)
        kw = dict(
            method=method,
            group_ids=labels,
            weights=w,
            conflict=conflict,
            conflict_threshold=tau,
            reweight_groups=reweight,
        )
        close(run(backend, R, **kw), oracle.advantages(R, **kw))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("preset", ["gd2po", "gd2po_snr"])
@pytest.mark.parametrize(
    "options", [{}, {"center": "group"}, {"batch_norm": False}, {"singleton": "identity"}]
)
def test_presets_match_oracle(backend, preset, options):
    R, labels, w = ragged(3)
    kw = dict(method=preset, group_ids=labels, weights=w, **options)
    close(run(backend, R, **kw), oracle.advantages(R, **kw))


def test_presets_are_gdpo_with_the_filter():
    R, labels, w = ragged(4)
    kw = dict(group_ids=labels, weights=w)
    np.testing.assert_array_equal(
        ra.advantages(R, method="gd2po", **kw),
        ra.advantages(R, method="gdpo", conflict="hard", **kw),
    )
    np.testing.assert_array_equal(
        ra.advantages(R, method="gd2po_snr", **kw),
        ra.advantages(R, method="gdpo", conflict="snr", conflict_threshold=0.8, **kw),
    )


def test_hand_computed_group():
    """One group of four, two rewards: rows 0 and 3 agree in sign, rows 1 and 2 conflict.
    Group z-scores of [1, 0, 0, 1] are +-0.866 (Bessel), of [1, 0, 1, 0] the same."""
    R = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    a, info = ra.advantages(
        R, method="gdpo", group_size=4, conflict="hard", batch_norm=False, return_info=True
    )
    z = 0.5 / np.sqrt(1.0 / 3.0) / (1 + 2e-6 * np.sqrt(3))  # ~0.866
    np.testing.assert_allclose(a, [0.5 * 2 * z, 0.0, 0.0, -0.5 * 2 * z], rtol=1e-5)
    assert a[1] == 0.0 and a[2] == 0.0  # dropped rows are exactly 0
    assert info.conflict_dropped == 2 and info.conflict_rho.tolist() == [0.5]
    np.testing.assert_allclose(info.conflict_per_reward, [0.5, 0.5])
    m = info.to_metrics()
    assert m["conflict_dropped_share"] == 0.5 and m["conflict_rho/min"] == 0.5


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_numba_keeps_the_test_in_its_pass():
    R, _labels, w = ragged(5)
    off = np.array([0, 8, 20, len(R)])
    s, keep = kernels.stage12(
        R, off, weights=w, method="gdpo", backend="numba", conflict="snr", return_keep=True
    )
    s2, keep2 = kernels.stage12(
        R, off, weights=w, method="gdpo", backend="numpy", conflict="snr", return_keep=True
    )
    np.testing.assert_array_equal(keep, keep2)
    np.testing.assert_allclose(s, s2, atol=1e-12)
    assert keep.dtype == bool and not keep.all()


# ---- properties --------------------------------------------------------------------------


@st.composite
def batches(draw, max_k=5):
    n_groups = draw(st.integers(1, 4))
    g = draw(st.integers(2, 6))
    k = draw(st.integers(1, max_k))
    R = draw(arrays(np.float64, (n_groups * g, k), elements=st.integers(-3, 3).map(float)))
    holes = draw(arrays(np.bool_, R.shape, elements=st.booleans()))
    R = np.where(holes & draw(st.booleans()), np.nan, R)
    w = draw(arrays(np.float64, (k,), elements=st.sampled_from([0.0, 0.5, 1.0, 2.0])))
    if not np.any(w > 0):
        w[0] = 1.0
    return R, g, w


@given(batches(), st.sampled_from(["gdpo", "softmin", "mean"]))
def test_threshold_zero_is_no_filter_and_one_is_hard(batch, method):
    R, g, w = batch
    kw = dict(method=method, group_size=g, weights=w)
    np.testing.assert_array_equal(
        ra.advantages(R, conflict="snr", conflict_threshold=0.0, **kw), ra.advantages(R, **kw)
    )
    np.testing.assert_array_equal(
        ra.advantages(R, conflict="snr", conflict_threshold=1.0, **kw),
        ra.advantages(R, conflict="hard", **kw),
    )


@given(batches(max_k=1), st.sampled_from(["hard", "snr"]))
def test_one_reward_drops_nothing(batch, mode):
    R, g, w = batch
    kw = dict(method="gdpo", group_size=g, weights=w)
    np.testing.assert_array_equal(ra.advantages(R, conflict=mode, **kw), ra.advantages(R, **kw))


@given(batches(), st.sampled_from(["hard", "snr"]), st.sampled_from(["gdpo", "softmin"]))
def test_rows_that_agree_are_kept_and_dropped_rows_are_zero(batch, mode, method):
    R, g, w = batch
    kw = dict(method=method, group_size=g, weights=w, conflict=mode, batch_norm=False)
    z = ra.group_standardize(R, group_size=g)
    t = np.where(np.isnan(z) | (w == 0), 0.0, z * w)
    agree = ~((t > 1e-8).any(1) & (t < -1e-8).any(1))
    a, info = ra.advantages(R, reweight_groups=False, return_info=True, **kw)
    plain = ra.advantages(R, method=method, group_size=g, weights=w, batch_norm=False)
    np.testing.assert_array_equal(a[agree], plain[agree])  # kept: unchanged without rho
    dropped = ~agree if mode == "hard" else np.zeros(len(a), bool)
    assert np.all(a[dropped] == 0.0)
    assert info.conflict_dropped <= int((~agree).sum())


# ---- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(conflict="soft"), ValueError, "conflict"),
        (dict(conflict="snr", conflict_threshold=1.5), ValueError, "conflict_threshold"),
        (dict(conflict="snr", conflict_threshold=-0.1), ValueError, "conflict_threshold"),
        (dict(conflict="snr", conflict_threshold=float("nan")), ValueError, "conflict_threshold"),
        (dict(conflict="hard", reweight_groups="yes"), TypeError, "reweight_groups"),
        (dict(conflict="hard", order="reduce_then_normalize"), ValueError, "per-reward"),
        (dict(conflict="hard", method="grpo"), ValueError, "per-reward"),
        (dict(method="gd2po", order="reduce_then_normalize"), ValueError, "z-scores"),
    ],
)
def test_bad_input_names_the_argument(kwargs, err, match):
    R = np.random.default_rng(0).normal(size=(8, 3))
    kwargs = {"method": "gdpo", **kwargs}
    with pytest.raises(err, match=match):
        ra.advantages(R, group_size=4, **kwargs)


# ---- the dtype-independent rule (issue 23): the verdict on float64 stage-1 values --------


def _threshold_batch(n_groups=40, seed=23):
    """Groups of 3 rows, 2 rewards, float32 values whose z-score terms sit on the sign
    threshold 1e-8: reward 0 is ``[-1, 1, d]`` with ``d`` in [1e-8, 6e-8], so row 2's
    z-score is about ``2 d / 3`` in exact arithmetic (above 1e-8 for most ``d``) but 0 in
    float32 arithmetic (``1 + d`` rounds to 1); reward 1 ``[1, 1, 0]`` makes row 2's
    other term clearly negative; with tau = 1 "snr" drops a row whose ratio is 1 - 5e-8."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(1e-8, 6e-8, n_groups).astype(np.float32)
    r = np.zeros((3 * n_groups, 2), np.float32)
    r[0::3, 0], r[1::3, 0], r[2::3, 0] = -1.0, 1.0, d
    r[0::3, 1], r[1::3, 1], r[2::3, 1] = 1.0, 1.0, 0.0
    return r


@pytest.mark.parametrize("mode", ["hard", "snr"])
def test_issue23_conflict_rule_same_rows_for_float32_and_float64(mode):
    """float32 and float64 copies of the same float32 values drop the same rows on numpy
    and torch (and numba when installed), equal to the oracle's verdict (exact arithmetic
    on the same values); the batch then gives the same advantages within float32."""
    r32 = _threshold_batch()
    r64 = r32.astype(np.float64)
    z32 = ra.group_standardize(r32, group_size=3)
    assert np.any(np.abs(z32[2::3, 0]) <= 1e-8)  # float32 arithmetic: on the threshold
    kw = dict(method="gdpo", group_size=3, conflict=mode, conflict_threshold=1.0)
    want = oracle.drops(r64, mode=mode, tau=1.0, group_size=3)
    assert want[2::3].sum() > 10  # the exact verdict drops most threshold rows
    backends = ["numpy", "torch"] + (["numba"] if "numba" in kernels.available_backends() else [])
    for backend in backends:
        for r in (r32, r64):
            x = torch.from_numpy(r) if backend == "torch" else r
            _, info = ra.advantages(x, backend=backend, return_info=True, **kw)
            np.testing.assert_array_equal(info.dropped, want, err_msg=f"{backend} {r.dtype}")


def test_issue23_dropped_mask_in_callers_row_order():
    """``info.dropped`` is the caller's row order (shuffled labels), None without a filter,
    and its rows get advantage exactly 0."""
    R, labels, w = ragged(3)
    adv, info = ra.advantages(R, method="gd2po", group_ids=labels, weights=w, return_info=True)
    assert info.dropped.shape == (R.shape[0],) and info.dropped.dtype == bool
    assert int(info.dropped.sum()) == info.conflict_dropped > 0
    assert np.all(adv[info.dropped] == 0.0)
    want = oracle.drops(R, mode="hard", weights=w, group_ids=labels)
    np.testing.assert_array_equal(info.dropped, want)
    _, plain = ra.advantages(R, group_ids=labels, return_info=True)
    assert plain.dropped is None
