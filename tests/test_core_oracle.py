"""Every method against the mpmath oracle of tests/oracle.py (DESIGN.md section 2)."""

import math

import numpy as np
import pytest
import scipy.special

import oracle
import rewardagg as ra
from registry_cases import domain, methods, settings

METHODS = methods()
KAPPAS = [0.0, 1e-8, 1.0, 1e3, 1e8, math.inf]


def _param_grid(method):
    """Each setting of the method's sweep (from the table), and softmin across kappas."""
    grid = [p for m, p in settings() if m == method]
    return grid + ([{"kappa": k} for k in KAPPAS] if method == "softmin" else [])


def test_the_oracle_covers_every_registered_method():
    missing = [m for m in METHODS if m != "grpo" and m not in oracle.REDUCERS]
    assert not missing, f"tests/oracle.py has no reducer for {missing}: add one from DESIGN.md"


def random_batch(seed, n_groups=5, k=4, ragged=True, nan_frac=0.15, scale=1.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, n_groups) if ragged else np.full(n_groups, 4)
    labels = np.repeat(np.arange(n_groups), sizes)
    rng.shuffle(labels)
    R = rng.normal(size=(labels.size, k)) * scale
    R[:, 0] = np.round(R[:, 0])  # a reward with many ties, as a pass/fail rule gives
    R[rng.random(R.shape) < nan_frac] = np.nan
    R[labels == labels[0], 1] = 3.0 * scale  # an all-equal cell
    w = rng.uniform(0.0, 2.0, k)
    w[0] = 0.0 if k > 2 else w[0]
    return R.astype(dtype), labels, w


def check(got, ref, tol):
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == ref.shape
    assert np.all(np.isfinite(got))
    err = np.abs(got - ref) / (1.0 + np.abs(ref))
    assert err.max() <= tol, f"max rel err {err.max():.3g}"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", range(3))
def test_float64_matches_oracle(method, seed):
    R, labels, w = random_batch(seed)
    R = domain(method, R)
    kw = dict(group_ids=labels, weights=w)
    for extra in _param_grid(method):
        got = ra.advantages(R, method=method, **kw, **extra)
        ref = oracle.advantages(R, method=method, **kw, **extra)
        check(got, ref, 1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_float32_matches_oracle_on_same_inputs(method):
    R, labels, w = random_batch(7, dtype=np.float32)
    R = domain(method, R)
    for extra in _param_grid(method):
        got = ra.advantages(R, method=method, group_ids=labels, weights=w, **extra)
        assert got.dtype == np.float32
        check(got, oracle.advantages(R, method=method, group_ids=labels, weights=w, **extra), 1e-5)


@pytest.mark.parametrize(
    "scale,dtype", [(1e30, np.float64), (1e-30, np.float64), (1e18, np.float32)]
)
def test_extreme_magnitudes_do_not_overflow(scale, dtype):
    R, labels, _ = random_batch(3, scale=scale, dtype=dtype)
    for method in ("softmin", "gdpo", "grpo"):
        got = ra.advantages(R, method=method, group_ids=labels)
        tol = 1e-9 if dtype == np.float64 else 1e-4
        check(got, oracle.advantages(R, method=method, group_ids=labels), tol)


@pytest.mark.parametrize("value", [0.0, 1.0, -7.25, 1e30, -3e-300, 0.1])
def test_all_equal_cells_are_exactly_zero(value):
    R = np.full((8, 3), value)
    R[:, 2] = np.arange(8.0)  # one reward with signal
    z = ra.group_standardize(R, group_size=4)
    assert np.all(z[:, :2] == 0.0)
    R32 = np.full((6, 2), np.float32(value if abs(value) < 1e38 else 1e18))
    assert np.all(ra.group_standardize(R32, group_size=3) == 0.0)


@pytest.mark.parametrize(
    "options",
    [
        dict(singleton="identity"),
        dict(baseline="leave_one_out"),
        dict(correction=0),
        dict(eps=0.0),
        dict(eps=1e-4),
        dict(batch_norm=False),
    ],
)
def test_options_match_oracle(options):
    R, labels, w = random_batch(11)
    got = ra.advantages(R, method="softmin", group_ids=labels, weights=w, kappa=2.0, **options)
    check(
        got,
        oracle.advantages(R, method="softmin", group_ids=labels, weights=w, kappa=2.0, **options),
        1e-9,
    )


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_scales_match_oracle(scale):
    R, labels, w = random_batch(5)
    got = ra.grpo_advantages(R, group_ids=labels, weights=w, scale=scale)
    check(got, oracle.advantages(R, method="grpo", group_ids=labels, weights=w, scale=scale), 1e-9)


def test_group_standardize_matches_oracle_contiguous_and_ragged():
    R, labels, _ = random_batch(2)
    z = ra.group_standardize(R, group_ids=labels)
    ref = oracle.zscores(R, group_ids=labels, eps=1e-6, correction=1)
    np.testing.assert_array_equal(np.isnan(z), np.isnan(ref))
    np.testing.assert_allclose(z, ref, rtol=1e-12, atol=1e-12, equal_nan=True)
    R2 = np.random.default_rng(0).normal(size=(12, 3))
    ref2 = oracle.zscores(R2, group_size=4, eps=1e-6, correction=1)
    np.testing.assert_allclose(ra.group_standardize(R2, group_size=4), ref2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kappa", [1e-4, 0.3, 1.0, 10.0, 1e3])
def test_softmin_matches_scipy_logsumexp(kappa):
    rng = np.random.default_rng(int(kappa * 1000) % 97)
    z = rng.normal(size=(50, 6))
    z[rng.random(z.shape) < 0.2] = np.nan
    w = rng.uniform(0.1, 2.0, 6)
    present = ~np.isnan(z)
    b = np.where(present, w, 0.0)
    b = b / b.sum(axis=1, keepdims=True)
    ref = -scipy.special.logsumexp(np.where(present, -kappa * z, -np.inf), b=b, axis=1) / kappa
    np.testing.assert_allclose(ra.softmin(z, kappa=kappa, weights=w), ref, rtol=1e-10, atol=1e-10)


def test_softmin_limits_are_exact():
    z = np.random.default_rng(1).normal(size=(30, 5))
    w = np.arange(1.0, 6.0)
    assert np.array_equal(ra.softmin(z, kappa=0.0, weights=w), ra.weighted_mean(z, weights=w))
    assert np.array_equal(ra.softmin(z, kappa=math.inf, weights=w), ra.weighted_min(z, weights=w))


def test_softmin_small_kappa_float32_keeps_the_mean():
    # a max-shifted log-sum-exp returns garbage here: log(1 + O(1e-8)) rounds to 0 in float32
    z = np.random.default_rng(2).normal(size=(100, 4)).astype(np.float32)
    got = ra.softmin(z, kappa=1e-8)
    np.testing.assert_allclose(got, z.astype(np.float64).mean(axis=1), rtol=0, atol=2e-6)


def test_rows_without_reward_get_zero_and_are_counted():
    R = np.array([[1.0, np.nan], [2.0, 5.0], [np.nan, np.nan], [0.0, 1.0]])
    adv, info = ra.advantages(R, group_size=4, return_info=True)
    assert adv[2] == 0.0 and np.all(np.isfinite(adv))
    assert info.rows_without_reward == 1
    ref = oracle.advantages(R, group_size=4)
    check(adv, ref, 1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_torch_operations_match_oracle(method):
    """backend='torch' (the path of CUDA tensors) on CPU, float64 and float32."""
    import torch

    R, labels, w = random_batch(13)
    R = domain(method, R)
    for dtype, tol in [(torch.float64, 1e-9), (torch.float32, 1e-4)]:
        t = torch.tensor(R, dtype=dtype)
        for extra in _param_grid(method):
            got = ra.advantages(
                t, method=method, group_ids=labels, weights=w, backend="torch", **extra
            )
            assert got.dtype == dtype
            ref = oracle.advantages(
                t.double().numpy(), method=method, group_ids=labels, weights=w, **extra
            )
            check(got.double().numpy(), ref, tol)
