"""Tests for rewardagg.taylor: cumulants, the SoftMin series, verify_expansion, the exact
identities and the plots.

The exact SoftMin is the core's ``rewardagg.softmin``. ``_softmin_oracle`` below is an
independent float64 expm1/log1p transcription of DESIGN.md section 2: it checks the core
reducer that every function here relies on, and builds the deliberately wrong SoftMins
that show the checks can fail.

Runtime: about 3 s on one CPU core (hypothesis profile "default").
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import rewardagg
from rewardagg import taylor

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _softmin_oracle(z, kappa, weights=None):
    """S = m - log1p(sum_k v_k expm1(-kappa (z_k - m))) / kappa over the last axis,
    m = min of the present rewards; kappa = 0 -> weighted mean, inf -> min."""
    z = np.asarray(z, dtype=np.float64)
    one_row = z.ndim == 1
    z = np.atleast_2d(z)
    w = np.ones(z.shape[-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    present = ~np.isnan(z) & (w > 0)
    v = np.where(present, w, 0.0)
    total = v.sum(axis=-1, keepdims=True)
    out = np.full(z.shape[0], np.nan)
    has = total[:, 0] > 0
    v = v[has] / total[has]
    zz = np.where(present[has], z[has], 0.0)
    m = np.min(np.where(present[has], z[has], np.inf), axis=-1)
    if kappa == 0:
        s = np.sum(v * zz, axis=-1)
    elif math.isinf(kappa):
        s = m
    else:
        d = np.where(present[has], zz - m[:, None], 0.0)
        s = m - np.log1p(np.sum(v * np.expm1(-kappa * d), axis=-1)) / kappa
    out[has] = s
    return out[0] if one_row else out


# ----------------------------------------------------------------------------- strategies


@st.composite
def reward_rows(draw, min_k=2, max_k=20):
    """One row of rewards on a random scale and offset, at least two distinct values."""
    k = draw(st.integers(min_k, max_k))
    base = draw(
        st.lists(st.floats(-3, 3, allow_nan=False, allow_subnormal=False), min_size=k, max_size=k)
    )
    scale = 10.0 ** draw(st.floats(-2, 2))
    shift = draw(st.floats(-100, 100))
    z = shift + scale * np.asarray(base)
    assume(np.ptp(z) > 1e-3 * scale)
    return z


@st.composite
def reward_matrices(draw):
    """(N, K) rewards with some missing entries and random non-negative weights."""
    n = draw(st.integers(1, 6))
    k = draw(st.integers(1, 8))
    vals = draw(
        st.lists(
            st.floats(-20, 20, allow_nan=False, allow_subnormal=False),
            min_size=n * k,
            max_size=n * k,
        )
    )
    z = np.asarray(vals).reshape(n, k)
    missing = np.asarray(draw(st.lists(st.booleans(), min_size=n * k, max_size=n * k)))
    z[missing.reshape(n, k)] = np.nan
    weights = draw(
        st.none() | st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]), min_size=k, max_size=k)
    )
    return z, None if weights is None else np.asarray(weights)


def _series_dominated(kap, n, kappa_max, ratio=0.2):
    """True when the first neglected term of order n, k_{n+1} kappa^n / (n+1)!, dominates
    the next three terms by 1/ratio over the whole window: the 'clearly non-zero next
    cumulant' condition under which the fitted slope must be n."""
    lead = abs(kap[n]) / math.factorial(n + 1)
    if lead == 0:
        return False
    rest = sum(kappa_max**m * abs(kap[n + m]) / math.factorial(n + 1 + m) for m in range(1, 4))
    return rest <= ratio * lead


# ----------------------------------------------------------------------------- exact SoftMin


@pytest.mark.parametrize("kappa", [0.0, 1e-8, 1e-4, 0.1, 1.0, 10.0, 1e4, 1e8, math.inf])
def test_core_softmin_matches_independent_oracle(kappa):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((64, 7)) * 2.0
    z[rng.random(z.shape) < 0.2] = np.nan
    w = np.array([1.0, 2.0, 0.0, 0.5, 1.0, 3.0, 1.0])
    got = np.asarray(rewardagg.softmin(z, kappa=kappa, weights=w), dtype=np.float64)
    want = _softmin_oracle(z, kappa, w)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- cumulants


def test_cumulants_of_a_biased_coin_match_closed_form():
    # X ~ Bernoulli(p) written as rewards [0, 1] with weights [1-p, p].
    p = 0.3
    q = p * (1 - p)
    want = [p, q, q * (1 - 2 * p), q * (1 - 6 * q), q * (1 - 2 * p) * (1 - 12 * q)]
    got = taylor.cumulants([0.0, 1.0], weights=[1 - p, p], order=5)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


@SETTINGS
@given(reward_rows())
def test_cumulants_match_moment_formulas(z):
    k1, k2, k3, k4 = taylor.cumulants(z, order=4)
    d = z - z.mean()
    m2, m3, m4 = (np.mean(d**r) for r in (2, 3, 4))
    scale = np.ptp(z)
    assert k1 == pytest.approx(z.mean(), abs=1e-12 * (abs(z.mean()) + scale))
    assert k2 == pytest.approx(m2, rel=1e-10, abs=1e-12 * scale**2)
    assert k3 == pytest.approx(m3, rel=1e-9, abs=1e-12 * scale**3)
    assert k4 == pytest.approx(m4 - 3 * m2**2, rel=1e-9, abs=1e-12 * scale**4)


@SETTINGS
@given(reward_rows(), st.floats(-50, 50), st.floats(0.1, 10))
def test_cumulants_shift_and_scale(z, c, a):
    base = taylor.cumulants(z, order=5)
    moved = taylor.cumulants(a * z + c, order=5)
    spread = np.ptp(z)
    assert moved[0] == pytest.approx(
        a * base[0] + c, abs=1e-9 * (abs(c) + a * (abs(base[0]) + spread))
    )
    for n in range(2, 6):
        assert moved[n - 1] == pytest.approx(a**n * base[n - 1], abs=1e-9 * (a * spread) ** n)


@SETTINGS
@given(reward_matrices())
def test_cumulants_drop_missing_and_zero_weight_rewards(zw):
    z, w = zw
    got = taylor.cumulants(z, weights=w, order=3)
    for i, row in enumerate(z):
        keep = ~np.isnan(row) & (np.ones(row.size, bool) if w is None else w > 0)
        if not keep.any():
            assert np.all(np.isnan(got[i]))
            continue
        sub_w = None if w is None else w[keep]
        np.testing.assert_allclose(
            got[i], taylor.cumulants(row[keep], weights=sub_w, order=3), rtol=1e-12, atol=1e-12
        )


def test_cumulants_axis_and_shape():
    z = np.random.default_rng(1).standard_normal((3, 5, 4))
    out = taylor.cumulants(z, order=3)
    assert out.shape == (3, 5, 3)
    np.testing.assert_allclose(taylor.cumulants(np.moveaxis(z, -1, 0), order=3, axis=0), out)


def test_cumulants_reject_bad_arguments():
    with pytest.raises(ValueError, match="order"):
        taylor.cumulants([1.0, 2.0], order=0)
    with pytest.raises(ValueError, match="weights"):
        taylor.cumulants([1.0, 2.0], weights=[1.0])
    with pytest.raises(ValueError, match="weights"):
        taylor.cumulants([1.0, 2.0], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="finite"):
        taylor.cumulants([1.0, np.inf])
    with pytest.raises(ValueError, match="axis"):
        taylor.cumulants([1.0, 2.0], axis=3)


# ----------------------------------------------------------------------------- the series


@SETTINGS
@given(reward_matrices(), st.floats(0, 3))
def test_series_low_orders_are_mean_and_mean_variance(zw, kappa):
    z, w = zw
    kap = taylor.cumulants(z, weights=w, order=2)
    np.testing.assert_allclose(taylor.softmin_series(z, kappa, order=1, weights=w), kap[:, 0])
    np.testing.assert_allclose(
        taylor.softmin_series(z, kappa, order=2, weights=w),
        kap[:, 0] - kappa / 2 * kap[:, 1],
        rtol=1e-12,
        atol=1e-12,
    )


def test_series_kappa_broadcasts_against_rows():
    z = np.random.default_rng(2).standard_normal((5, 6))
    kappas = np.array([0.0, 0.1, 0.2])[:, None]
    out = taylor.softmin_series(z, kappas, order=3)
    assert out.shape == (3, 5)
    np.testing.assert_allclose(out[1], taylor.softmin_series(z, 0.1, order=3))
    with pytest.raises(ValueError, match="kappa"):
        taylor.softmin_series(z, -1.0, order=2)


def test_series_converges_to_exact_softmin_inside_radius():
    z = np.array([-1.2, 0.3, 0.5, 2.0, -0.1])
    kappa = 0.5 * float(taylor.convergence_radius(z))
    exact = _softmin_oracle(z, kappa)
    err = [abs(float(taylor.softmin_series(z, kappa, order=n)) - exact) for n in (2, 6, 12, 24)]
    assert err[-1] < 1e-6 and err == sorted(err, reverse=True)


def test_convergence_radius_is_sharp_for_two_equal_rewards():
    # S = mean - log(cosh(kappa d / 2)) / kappa: log cosh has radius pi/2 in kappa d / 2.
    z = np.array([0.0, 2.0])
    assert float(taylor.convergence_radius(z)) == pytest.approx(math.pi / 2)
    inside = [
        abs(float(taylor.softmin_series(z, 1.4, order=n)) - _softmin_oracle(z, 1.4))
        for n in (10, 30)
    ]
    outside = [
        abs(float(taylor.softmin_series(z, 1.8, order=n)) - _softmin_oracle(z, 1.8))
        for n in (10, 30)
    ]
    assert inside[1] < inside[0] and outside[1] > outside[0]


# ----------------------------------------------------------------------------- verify_expansion


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reward_rows(min_k=3))
def test_verify_expansion_slopes_match_the_next_cumulant(z):
    result = taylor.verify_expansion(z)
    kap = taylor.cumulants(z, order=12)
    kappa_max = float(result.kappas.max())
    checked = 0
    for n in (1, 2, 3, 4):
        if not _series_dominated(kap, n, kappa_max):
            continue
        assert result.expected[n] == n
        slope = result.slopes[n]
        if n == 4 and not math.isfinite(slope):
            continue  # order 4 can sink below float64 rounding in the default window
        assert abs(slope - n) <= 0.3, str(result)
        checked += 1
    assume(checked > 0)


@SETTINGS
@given(
    st.lists(st.floats(0.05, 3), min_size=1, max_size=8),
    st.booleans(),
    st.floats(-5, 5),
)
def test_verify_expansion_symmetric_row_order2_slope_jumps_to_3(half, centre, shift):
    half = np.asarray(half)
    z = shift + np.concatenate([half, -half, [0.0] if centre else []])
    kap = taylor.cumulants(z, order=8)
    assume(abs(kap[3]) >= 0.1 * kap[1] ** 2)  # k4 clearly non-zero
    result = taylor.verify_expansion(z)
    assume(_series_dominated(kap, 3, float(result.kappas.max())))
    assert result.expected[2] == 3 and result.expected[3] == 3
    assert abs(result.slopes[2] - 3) <= 0.3, str(result)
    assert abs(result.slopes[1] - 1) <= 0.3


def test_verify_expansion_seeded_17_reward_row():
    z = np.random.default_rng(0).standard_normal(17)
    result = taylor.verify_expansion(z)
    assert result.ok
    assert dict(result.expected) == {1: 1, 2: 2, 3: 3, 4: 4}
    for n in (1, 2, 3, 4):
        assert abs(result.slopes[n] - n) < 0.1
    text = str(result)
    assert "K=17" in text and "ok: True" in text
    assert len(text.splitlines()) == 4 + 4 + 1


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1e3, 1e30, 1e150])
def test_verify_expansion_is_scale_free(scale):
    # The series is homogeneous: z -> a z, kappa -> kappa / a leaves every slope unchanged,
    # and cumulants are computed in units of the row's spread, so d**n never overflows.
    z = np.random.default_rng(8).standard_normal(9)
    ref = taylor.verify_expansion(z)
    got = taylor.verify_expansion(scale * z)
    np.testing.assert_allclose(got.kappas * scale, ref.kappas, rtol=1e-12)
    for n in ref.orders:
        assert got.expected[n] == ref.expected[n]
        assert got.slopes[n] == pytest.approx(ref.slopes[n], abs=0.02)
    assert got.ok


def test_verify_expansion_reports_rounding_dominated_orders():
    # Spread 1e-6 on a mean of 1e3: float64 resolves the order-1 error only.
    z = 1e3 + 1e-6 * np.random.default_rng(8).standard_normal(9)
    result = taylor.verify_expansion(z)
    assert math.isfinite(result.slopes[1]) and abs(result.slopes[1] - 1) < 0.3
    assert all(math.isnan(result.slopes[n]) for n in (2, 3, 4))
    assert result.order_ok(4) is None and result.ok
    assert "n/a (rounding)" in str(result)


def test_inputs_from_torch_and_integers():
    torch = pytest.importorskip("torch")
    z = np.random.default_rng(9).standard_normal(6)
    t = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    np.testing.assert_array_equal(taylor.cumulants(t), taylor.cumulants(z))
    assert taylor.verify_expansion(t).ok
    np.testing.assert_allclose(taylor.cumulants([1, 2, 4], order=2), [7 / 3, 14 / 9])


def test_empty_reward_axis_gives_nan_rows():
    z = np.zeros((2, 0))
    assert np.all(np.isnan(taylor.cumulants(z, order=3)))
    assert np.all(np.isnan(taylor.softmin_series(z, 0.5, order=2)))
    assert all(taylor.check_identities(z))


def test_verify_expansion_result_is_frozen():
    result = taylor.verify_expansion(np.random.default_rng(1).standard_normal(9))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ok = False
    with pytest.raises(TypeError):
        result.slopes[1] = 0.0
    with pytest.raises(ValueError):
        result.errors[1][0] = 0.0
    with pytest.raises(ValueError):
        result.kappas[0] = 0.0


def test_verify_expansion_handles_missing_rewards_and_weights():
    rng = np.random.default_rng(4)
    z = rng.standard_normal(10)
    w = rng.uniform(0.5, 2.0, 10)
    with_gap = np.concatenate([z, [np.nan]])
    a = taylor.verify_expansion(with_gap, weights=np.concatenate([w, [1.0]]))
    b = taylor.verify_expansion(z, weights=w)
    assert a.n_rewards == 10 and a.ok and b.ok
    np.testing.assert_allclose(a.errors[2], b.errors[2], rtol=1e-9, atol=1e-15)


def test_verify_expansion_custom_grid_and_orders():
    z = np.random.default_rng(5).standard_normal(6)
    result = taylor.verify_expansion(z, kappas=[0.02, 0.01, 0.04, 0.03, 0.05], orders=(1, 2))
    assert result.orders == (1, 2)
    np.testing.assert_array_equal(result.kappas, [0.01, 0.02, 0.03, 0.04, 0.05])


def test_verify_expansion_flags_a_wrong_series(monkeypatch):
    # If the SoftMin were mean - kappa * var (a factor 2 off), order 2 would show slope 1.
    wrong = lambda z, kappa, w: _softmin_oracle(z, kappa, w) - kappa * np.nanvar(z, axis=-1) / 2  # noqa: E731
    monkeypatch.setattr(taylor.series, "_exact_softmin", wrong)
    result = taylor.verify_expansion(np.random.default_rng(6).standard_normal(8))
    assert not result.ok
    assert abs(result.slopes[2] - 1) < 0.1


@pytest.mark.parametrize(
    ("z", "match"),
    [
        (np.ones(5), "distinct"),
        (np.ones((2, 3)), "one row"),
        (np.array([np.nan, np.nan]), "no present reward"),
    ],
)
def test_verify_expansion_rejects_degenerate_rows(z, match):
    with pytest.raises(ValueError, match=match):
        taylor.verify_expansion(z)


def test_verify_expansion_rejects_bad_grid():
    with pytest.raises(ValueError, match="kappas"):
        taylor.verify_expansion([0.0, 1.0], kappas=[0.1, -0.1])


# ----------------------------------------------------------------------------- identities


@SETTINGS
@given(reward_matrices())
def test_identities_hold(zw):
    z, w = zw
    for check in taylor.check_identities(z, weights=w):
        assert check, str(check)


@SETTINGS
@given(reward_rows(), st.floats(-1e3, 1e3))
def test_derivative_at_zero_is_minus_half_variance_at_any_offset(z, shift):
    check = taylor.check_derivative_at_zero((z + shift)[None, :])
    assert check.ok, str(check)


def test_identity_checks_catch_a_broken_softmin(monkeypatch):
    z = np.random.default_rng(7).standard_normal((4, 5))

    # "softmin" that rises with kappa and leaves [min, mean]: all three checks must fail.
    def broken(z, kappa, w):
        return _softmin_oracle(z, 0.0, w) + min(kappa, 1e3) * np.nanvar(z, axis=-1)

    monkeypatch.setattr(taylor.series, "_exact_softmin", broken)
    results = taylor.check_identities(z)
    assert [bool(c) for c in results] == [False, False, False]
    assert "VIOLATED" in str(results[0])


def test_identities_on_rows_without_reward():
    z = np.full((2, 3), np.nan)
    assert all(taylor.check_identities(z))


# ----------------------------------------------------------------------------- plots


@pytest.fixture
def plt():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_plot_expansion_draws_one_line_per_order_plus_references(plt):
    result = taylor.verify_expansion(np.random.default_rng(0).standard_normal(17))
    ax = taylor.plot_expansion(result)
    n_refs = sum(
        result.expected[n] is not None and math.isfinite(result.slopes[n]) for n in result.orders
    )
    assert n_refs == 4
    assert len(ax.get_lines()) == len(result.orders) + n_refs + 1  # + the rounding floor
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_plot_expansion_uses_the_given_axes(plt):
    _, axes = plt.subplots(1, 2)
    result = taylor.verify_expansion([0.0, 1.0, 3.0], orders=(1, 2))
    assert taylor.plot_expansion(result, ax=axes[1]) is axes[1]
    assert len(axes[0].get_lines()) == 0


def test_plot_softmin_draws_five_lines(plt):
    ax = taylor.plot_softmin(np.random.default_rng(0).standard_normal(17))
    assert len(ax.get_lines()) == 5


# ----------------------------------------------------------------------------- import hygiene


def test_importing_taylor_imports_numpy_only():
    code = (
        "import sys, rewardagg.taylor\n"
        "heavy = {'matplotlib', 'scipy', 'torch', 'triton', 'numba'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    parent = str(pathlib.Path(rewardagg.__path__[0]).resolve().parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [parent, os.environ.get("PYTHONPATH")])),
    }
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_identities_hold_on_a_subnormal_scale_row():
    """Regression: hypothesis found [0, 7.24e-304] failing monotonicity by 2.9e-317, a
    rounding step of subnormal arithmetic that a purely relative tolerance rejected."""
    for check in taylor.check_identities(np.array([[0.0, 7.24445352e-304]])):
        assert check, str(check)
