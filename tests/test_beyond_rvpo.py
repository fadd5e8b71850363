"""DESIGN.md section 2b: the stage order, group centring, CVaR, the power mean and the
Lagrangian constraints, against the mpmath oracle (tests/oracle.py, written from the
design, not from the implementation) and hand-derived values."""

from __future__ import annotations

import itertools
import math

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


def ragged_batch(seed, k=5, nonnegative=False):
    """Ragged, shuffled groups (one singleton), NaN holes, a tie-heavy column, weights
    with a zero."""
    rng = np.random.default_rng(seed)
    sizes = np.array([1, 3, 4, 6, 5, 2])
    labels = np.repeat(np.arange(sizes.size), sizes)
    rng.shuffle(labels)
    R = rng.normal(size=(labels.size, k))
    R[:, 0] = rng.integers(0, 2, labels.size)  # pass/fail
    if nonnegative:
        R = np.abs(R)
        R[rng.random(R.shape) < 0.1] = 0.0  # some criteria failed outright
    R[rng.random(R.shape) < 0.15] = np.nan
    w = rng.uniform(0.3, 2.0, k)
    w[-1] = 0.0
    return R, labels, w


def close(got, ref, tol=1e-9):
    got = np.asarray(got, dtype=np.float64)
    err = np.abs(got - ref) / (1.0 + np.abs(ref))
    assert err.max() <= tol, f"max rel err {err.max():.3g}"


def _as(lib, R):
    return torch.from_numpy(R) if lib == "torch" else R


def _np(x):
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# ---- oracle: every new option on the array paths (numpy, torch) ------------------------

CASES = [
    ("cvar", {"alpha": 0.25}, {}),
    ("cvar", {"alpha": 0.6}, {"order": "reduce_then_normalize"}),
    ("cvar", {"alpha": 1e-3}, {"center": "group"}),
    ("softmin", {"kappa": 2.0}, {"order": "reduce_then_normalize"}),
    ("gdpo", {}, {"order": "reduce_then_normalize", "center": "group"}),
    ("mean_variance", {"lam": 0.3}, {"center": "group"}),
    ("min", {}, {"order": "reduce_then_normalize", "batch_norm": False}),
    ("softmin", {"kappa": 1.0}, {"multipliers": {0: 0.7, 2: 0.2}}),
    ("softmin", {"kappa": 1.0}, {"multipliers": {0: 1.5}, "order": "reduce_then_normalize"}),
    ("gdpo", {}, {"multipliers": {0: 2.0}, "center": "group", "batch_norm": False}),
    ("mean", {}, {"singleton": "identity", "baseline": "leave_one_out", "center": "group"}),
    ("softmin", {"kappa": 0.5}, {"order": "reduce_then_normalize", "correction": 0}),
]


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("method, params, options", CASES, ids=str)
@pytest.mark.parametrize("seed", range(2))
def test_options_match_oracle(lib, method, params, options, seed):
    R, labels, w = ragged_batch(seed)
    kw = dict(group_ids=labels, weights=w, **options)
    got = ra.advantages(_as(lib, R), method=method, **kw, **params)
    close(_np(got), oracle.advantages(R, method=method, **kw, **params))


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("p", [-math.inf, -4.0, -1.0, 0.0, 0.5, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("center", ["batch", "group"])
def test_power_mean_matches_oracle(lib, p, center):
    R, labels, w = ragged_batch(3, nonnegative=True)
    kw = dict(group_ids=labels, weights=w, center=center, p=p)
    got = ra.advantages(_as(lib, R), method="power_mean", **kw)
    close(_np(got), oracle.advantages(R, method="power_mean", **kw))


@pytest.mark.parametrize("alpha", [1e-6, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_cvar_reducer_matches_oracle(alpha):
    R, _, w = ragged_batch(4)
    got = ra.cvar(R, alpha=alpha, weights=w)
    for i, row in enumerate(R):
        zrow = [None if math.isnan(x) else oracle.mp.mpf(float(x)) for x in row]
        want = oracle.reduce_row(zrow, list(w), "cvar", alpha=alpha)
        assert (want is None) == np.isnan(got[i])
        if want is not None:
            assert abs(got[i] - float(want)) <= 1e-12 * (1 + abs(float(want)))


def test_cvar_hand_computed():
    # values 4, 1, 3 with weights 1, 2, 1 -> v = 1/4, 1/2, 1/4; sorted: 1 (1/2), 3 (1/4), 4 (1/4)
    x = np.array([[4.0, 1.0, 3.0]])
    w = [1.0, 2.0, 1.0]
    assert ra.cvar(x, alpha=0.5, weights=w)[0] == pytest.approx(1.0)
    # alpha = 0.6: 1 * 0.5 + 3 * 0.1, divided by 0.6
    assert ra.cvar(x, alpha=0.6, weights=w)[0] == pytest.approx((0.5 + 0.3) / 0.6)
    assert ra.cvar(x, alpha=1.0, weights=w)[0] == pytest.approx(2.25)


def test_power_mean_hand_computed():
    x = np.array([[1.0, 4.0], [2.0, 0.0], [9.0, 1.0]])
    np.testing.assert_allclose(ra.power_mean(x, p=1.0), [2.5, 1.0, 5.0])
    np.testing.assert_allclose(ra.power_mean(x, p=0.0), [2.0, 0.0, 3.0])
    np.testing.assert_allclose(ra.power_mean(x, p=-1.0), [1.6, 0.0, 1.8])
    np.testing.assert_allclose(ra.power_mean(x, p=-np.inf), [1.0, 0.0, 1.0])
    # no overflow at huge |p|: the max and the min
    np.testing.assert_allclose(ra.power_mean(x * 1e100, p=500.0), [4e100, 2e100, 9e100], rtol=1e-2)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("alpha", [1e-3, 0.25, 0.6, 1.0])
def test_numba_cvar_matches_array_path_and_oracle(alpha):
    R, labels, w = ragged_batch(5, k=7)
    kw = dict(group_ids=labels, weights=w, alpha=alpha, singleton="identity")
    want = oracle.advantages(R, method="cvar", **kw)
    close(ra.advantages(R, method="cvar", backend="numba", **kw), want)
    close(ra.advantages(R, method="cvar", backend="numpy", **kw), want)
    t = ra.advantages(torch.from_numpy(R).float(), method="cvar", backend="numba", **kw)
    close(t.numpy(), want, 1e-4)


def test_triton_says_why_it_has_no_cvar_and_auto_falls_back():
    x = torch.zeros(4, 2)
    off = np.array([0, 4])
    if "triton" not in kernels.available_backends():
        pytest.skip("triton not installed")
    with pytest.raises(ValueError, match="order statistic"):
        kernels.stage12(x, off, weights=[1.0, 1.0], method="cvar", backend="triton")


def test_issue23_numba_runs_the_raw_reward_order():
    """Issue 23: backend="numba" runs order="reduce_then_normalize" (it was refused)."""
    pytest.importorskip("numba")
    R, labels, w = ragged_batch(0)
    kw = dict(method="softmin", group_ids=labels, weights=w, order="reduce_then_normalize")
    got = ra.advantages(R, backend="numba", **kw)
    np.testing.assert_allclose(got, oracle.advantages(R, **kw), rtol=0, atol=1e-9)


def test_stage12_refuses_power_mean_of_z_scores():
    R, _labels, _w = ragged_batch(0)
    with pytest.raises(ValueError, match="power_mean"):
        kernels.stage12(
            np.abs(R[:4]),
            np.array([0, 4]),
            weights=np.ones(5),
            method="power_mean",
            backend="numpy",
        )


# ---- equivalences ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_gdpo_reduce_then_normalize_without_stage3_is_grpo(seed):
    """DESIGN.md 2b: weighted_sum on raw rewards, then the group z-score, is GRPO."""
    R, labels, w = ragged_batch(seed)
    for opts in ({}, {"baseline": "leave_one_out"}, {"singleton": "identity"}):
        a = ra.advantages(
            R,
            method="gdpo",
            order="reduce_then_normalize",
            batch_norm=False,
            group_ids=labels,
            weights=w,
            **opts,
        )
        b = ra.grpo_advantages(R, scale="group", group_ids=labels, weights=w, **opts)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)


def test_group_centring_changes_nothing_for_gdpo_without_missing_rewards():
    R, labels, w = ragged_batch(1)
    R = np.nan_to_num(R, nan=0.5)
    a = ra.gdpo_advantages(R, group_ids=labels, weights=w, center="group")
    b = ra.gdpo_advantages(R, group_ids=labels, weights=w)
    np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("method", ["softmin", "cvar", "min", "power_mean"])
def test_group_centring_sums_to_zero_in_every_group(method):
    R, labels, w = ragged_batch(2, nonnegative=True)
    a = ra.advantages(R, method=method, group_ids=labels, weights=w, center="group")
    for g in np.unique(labels):
        assert abs(a[labels == g].sum()) < 1e-12


def test_limits_are_exact():
    R, labels, w = ragged_batch(6, nonnegative=True)
    kw = dict(group_ids=labels, weights=w)
    np.testing.assert_array_equal(
        ra.cvar_advantages(R, alpha=1.0, **kw), ra.mean_advantages(R, **kw)
    )
    raw = dict(order="reduce_then_normalize", **kw)
    np.testing.assert_array_equal(
        ra.power_mean_advantages(R, p=1.0, **kw), ra.mean_advantages(R, **raw)
    )
    np.testing.assert_array_equal(
        ra.power_mean_advantages(R, p=-np.inf, **kw), ra.min_advantages(R, **raw)
    )


@st.composite
def rows(draw, nonnegative=False):
    k = draw(st.integers(1, 6))
    lo = 0.0 if nonnegative else -5.0
    x = draw(arrays(np.float64, (3, k), elements=st.floats(lo, 5.0, allow_nan=False)))
    w = draw(arrays(np.float64, (k,), elements=st.sampled_from([0.5, 1.0, 2.0])))
    return x, w


@given(rows())
def test_cvar_lies_between_min_and_mean_and_tends_to_min(batch):
    x, w = batch
    lo, mean = ra.weighted_min(x), ra.weighted_mean(x, weights=w)
    for alpha in (1e-9, 0.3, 0.7, 1.0):
        c = ra.cvar(x, alpha=alpha, weights=w)
        assert np.all(c >= lo - 1e-9) and np.all(c <= mean + 1e-9)
    # below the smallest weight share, CVaR is the minimum (up to rounding)
    np.testing.assert_allclose(ra.cvar(x, alpha=1e-9, weights=w), lo, atol=1e-9)
    np.testing.assert_allclose(ra.cvar(x, alpha=1.0, weights=w), mean, atol=1e-12)


@given(rows(nonnegative=True))
def test_power_mean_is_monotone_in_p_and_tends_to_min(batch):
    x, w = batch
    ps = [-np.inf, -200.0, -4.0, -1.0, 0.0, 1.0, 2.0]
    means = [ra.power_mean(x, p=p, weights=w) for p in ps]
    for lo, hi in itertools.pairwise(means):
        assert np.all(lo <= hi * (1 + 1e-9) + 1e-12)
    np.testing.assert_allclose(means[-2], ra.weighted_mean(x, weights=w), atol=1e-12)
    # (sum v x^p)^(1/p) >= min and <= min * v_min^(1/p): within a factor of the min
    gap = (w.min() / w.sum()) ** (1 / -200.0)
    assert np.all(means[1] <= means[0] * gap + 1e-12)


# ---- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda R: ra.cvar_advantages(R, group_size=4, alpha=0.0), "alpha"),
        (lambda R: ra.cvar_advantages(R, group_size=4, alpha=1.5), "alpha"),
        (lambda R: ra.power_mean_advantages(np.abs(R), group_size=4, p=np.nan), "p"),
        (lambda R: ra.power_mean_advantages(R - 10, group_size=4), "non-negative"),
        (
            lambda R: ra.advantages(
                np.abs(R), method="power_mean", group_size=4, order="normalize_then_reduce"
            ),
            "z-scores are negative",
        ),
        (lambda R: ra.advantages(R, group_size=4, order="sideways"), "order"),
        (lambda R: ra.advantages(R, group_size=4, center="prompt"), "center"),
        (lambda R: ra.advantages(R, group_size=4, multipliers={3: 1.0}), "out of range"),
        (
            lambda R: ra.advantages(
                R, group_size=4, multipliers={"safety": 1.0}, reward_names=["a", "b", "c"]
            ),
            "unknown reward name",
        ),
        (lambda R: ra.advantages(R, group_size=4, multipliers={"a": 1.0}), "reward_names"),
        (lambda R: ra.advantages(R, group_size=4, multipliers={0: -0.5}), r"multipliers\[0\]"),
        (lambda R: ra.advantages(R, group_size=4, reward_names=["a", "b"]), "reward_names"),
        (lambda R: ra.grpo_advantages(R, group_size=4, multipliers={0: 1.0}), "no stage 3"),
        (lambda R: ra.ConstraintTracker({0: 0.5}, lr=-1.0), "lr"),
        (lambda R: ra.ConstraintTracker({0: np.nan}), r"targets\[0\]"),
        (lambda R: ra.ConstraintTracker({}), "targets"),
        (lambda R: ra.ConstraintTracker({0: 0.5}, init=-1.0), "init"),
        (lambda R: ra.ConstraintTracker({5: 0.5}).update(R), "out of range"),
        (lambda R: ra.ConstraintTracker({"x": 0.5}).update(R), "reward_names"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    R = np.random.default_rng(0).normal(size=(8, 3))
    with pytest.raises((ValueError, TypeError), match=match):
        call(R)


# ---- the constraint tracker --------------------------------------------------------------


def _trajectory(batches, targets, lr, lam_max, kp, kd):
    """DESIGN.md 2b update rule, written out: e = t - mean; I = clip(I + lr e);
    lambda = clip(I + kp e + kd (e - e_prev))."""
    lam = {c: 0.0 for c in targets}
    integral = dict(lam)
    prev = {c: None for c in targets}
    history = []
    for R in batches:
        history.append(dict(lam))
        for c, t in targets.items():
            col = R[:, c]
            e = t - np.nanmean(col)
            integral[c] = min(max(integral[c] + lr * e, 0.0), lam_max)
            d = 0.0 if prev[c] is None else e - prev[c]
            lam[c] = min(max(integral[c] + kp * e + kd * d, 0.0), lam_max)
            prev[c] = e
    return history, lam


@pytest.mark.parametrize("kp, kd", [(0.0, 0.0), (0.5, 0.2)])
def test_tracker_trajectory_equals_the_update_rule(kp, kd):
    rng = np.random.default_rng(0)
    batches = []
    for step in range(6):
        R = rng.normal(size=(12, 3))
        R[:, 0] = rng.random(12) < 0.2 + 0.1 * step  # the constraint gets met more often
        R[rng.random(R.shape) < 0.1] = np.nan
        batches.append(R)
    targets = {0: 0.6, 2: -0.1}
    history, final = _trajectory(batches, targets, 0.8, 1.5, kp, kd)
    tracker = ra.ConstraintTracker(targets, lr=0.8, lambda_max=1.5, kp=kp, kd=kd)
    for R, lam in zip(batches, history, strict=True):
        assert tracker.multipliers == pytest.approx(lam, abs=1e-15)
        got = tracker.advantages(R, method="softmin", group_size=4)
        want = ra.advantages(R, method="softmin", group_size=4, multipliers=lam)
        np.testing.assert_array_equal(got, want)
    assert tracker.multipliers == pytest.approx(final, abs=1e-15)
    assert tracker.step == 6
    assert tracker.multipliers[0] > 0  # the rare constraint pulled its multiplier up


def test_tracker_names_state_dict_and_metrics():
    names = ["format", "correct"]
    t = ra.ConstraintTracker({"format": 0.9}, lr=1.0, reward_names=names)
    R = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    t.advantages(R, group_size=2, method="gdpo")
    assert t.multipliers == {"format": pytest.approx(0.4)}
    assert t.metrics() == {
        "rewardagg/lambda/format": pytest.approx(0.4),
        "rewardagg/constraint_mean/format": 0.5,
    }
    state = t.state_dict()
    fresh = ra.ConstraintTracker({"format": 0.9}, lr=1.0, reward_names=names)
    fresh.load_state_dict(state)
    assert fresh.multipliers == t.multipliers and fresh.step == 1
    t.update(R)
    fresh.update(R)
    assert fresh.multipliers == t.multipliers
    with pytest.raises(ValueError, match="state_dict is for constraints"):
        ra.ConstraintTracker({"correct": 0.5}, reward_names=names).load_state_dict(state)


def test_tracker_mask_and_fully_missing_constraint():
    R = np.array([[1.0, np.nan], [0.0, np.nan], [1.0, np.nan], [1.0, np.nan]])
    t = ra.ConstraintTracker({0: 1.0, 1: 0.5}, lr=1.0)
    mask = np.array([[True, True], [False, True], [True, True], [True, True]])
    t.update(R, mask=mask)  # column 0: the masked 0 does not count -> mean 1
    assert t.multipliers == {0: 0.0, 1: 0.0}
    assert t.last_means == {0: 1.0}


def test_multipliers_push_a_failed_constraint_down():
    """A completion that fails the constraint but wins everywhere else: GDPO rewards it,
    a large enough multiplier does not."""
    R = np.array(
        [[0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    )
    assert ra.gdpo_advantages(R, group_size=4)[0] > 0
    assert ra.gdpo_advantages(R, group_size=4, multipliers={0: 3.0})[0] < 0
