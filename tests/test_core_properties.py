"""Invariants of the aggregation (hypothesis): affine invariance, permutation
equivariance, the kappa limits, and the reductions to simpler methods."""

import math

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import rewardagg as ra
from registry_cases import domain, methods, z_score_methods

STANDARDIZED = z_score_methods()  # affine invariance per (group, reward) holds for these
ALL = methods()


@st.composite
def batches(draw, max_groups=4, max_g=6, max_k=5, nan=True):
    n_groups = draw(st.integers(1, max_groups))
    g = draw(st.integers(2, max_g))
    k = draw(st.integers(1, max_k))
    # small integers: ties and zero-spread cells are common, and affine maps stay exact
    R = draw(arrays(np.float64, (n_groups * g, k), elements=st.integers(-4, 4).map(float)))
    if nan:
        holes = draw(arrays(np.bool_, R.shape, elements=st.booleans()))
        R = np.where(holes & (draw(st.floats(0, 1)) < 0.5), np.nan, R)
    w = draw(arrays(np.float64, (k,), elements=st.sampled_from([0.5, 1.0, 2.0, 3.0])))
    return R, g, w


@given(batches(), st.sampled_from(STANDARDIZED), st.data())
def test_positive_affine_map_per_group_and_reward_changes_nothing(batch, method, data):
    R, g, w = batch
    n_groups, k = R.shape[0] // g, R.shape[1]
    a = data.draw(arrays(np.float64, (n_groups, 1, k), elements=st.sampled_from([0.5, 2.0, 4.0])))
    b = data.draw(arrays(np.float64, (n_groups, 1, k), elements=st.integers(-8, 8).map(float)))
    R2 = (R.reshape(n_groups, g, k) * a + b).reshape(R.shape)
    kw = dict(group_size=g, weights=w, eps=0.0)
    np.testing.assert_allclose(
        ra.advantages(R2, method=method, **kw), ra.advantages(R, method=method, **kw), atol=1e-9
    )


@given(batches(), st.sampled_from(ALL), st.randoms(use_true_random=False))
def test_permuting_rows_inside_groups_permutes_the_output(batch, method, rnd):
    R, g, w = batch
    R = domain(method, R)
    perm = np.arange(R.shape[0])
    for start in range(0, R.shape[0], g):
        block = list(perm[start : start + g])
        rnd.shuffle(block)
        perm[start : start + g] = block
    out = ra.advantages(R, method=method, group_size=g, weights=w)
    np.testing.assert_allclose(
        ra.advantages(R[perm], method=method, group_size=g, weights=w), out[perm], atol=1e-12
    )


@given(batches(), st.sampled_from(ALL), st.randoms(use_true_random=False))
def test_permuting_reward_columns_with_their_weights_changes_nothing(batch, method, rnd):
    R, g, w = batch
    R = domain(method, R)
    cols = list(range(R.shape[1]))
    rnd.shuffle(cols)
    out = ra.advantages(R, method=method, group_size=g, weights=w)
    np.testing.assert_allclose(
        ra.advantages(R[:, cols], method=method, group_size=g, weights=w[cols]), out, atol=1e-10
    )


@given(batches())
def test_group_ids_in_any_order_equal_contiguous_groups(batch):
    R, g, w = batch
    labels = np.repeat(np.arange(R.shape[0] // g), g)
    order = np.random.default_rng(R.shape[0]).permutation(R.shape[0])
    out = ra.advantages(R, group_size=g, weights=w)
    np.testing.assert_allclose(
        ra.advantages(R[order], group_ids=labels[order], weights=w), out[order], atol=1e-12
    )


@given(batches())
def test_kappa_to_zero_gives_mean(batch):
    R, g, w = batch
    # compared before stage 3, which would blow up the O(kappa) gap of a batch whose mean
    # scores are all equal
    kw = dict(group_size=g, weights=w, batch_norm=False)
    np.testing.assert_allclose(
        ra.softmin_advantages(R, kappa=1e-9, **kw), ra.mean_advantages(R, **kw), atol=1e-8
    )


@given(batches(), st.sampled_from([1e3, 1e5, 1e8]))
def test_large_kappa_approaches_min(batch, kappa):
    R, g, w = batch
    kw = dict(group_size=g, weights=w, batch_norm=False)
    soft, low = ra.softmin_advantages(R, kappa=kappa, **kw), ra.min_advantages(R, **kw)
    # S_min <= softmin <= S_min + log(1 / v_min) / kappa, and 1/v_min <= sum(w) / min(w > 0)
    bound = math.log(w.sum() / w[w > 0].min()) / kappa + 1e-12
    assert np.all(soft >= low - 1e-12) and np.all(soft - low <= bound)


@given(batches())
def test_mean_variance_with_lam_zero_is_mean(batch):
    R, g, w = batch
    kw = dict(group_size=g, weights=w)
    np.testing.assert_allclose(
        ra.mean_variance_advantages(R, lam=0.0, **kw), ra.mean_advantages(R, **kw), atol=1e-12
    )


@given(batches(max_k=1), st.sampled_from(STANDARDIZED))
def test_one_reward_reduces_to_group_then_batch_zscore(batch, method):
    R, g, _ = batch
    z = ra.group_standardize(R, group_size=g)[:, 0]
    expected = ra.batch_standardize(z)
    np.testing.assert_allclose(ra.advantages(R, method=method, group_size=g), expected, atol=1e-12)


@given(batches(nan=False), st.sampled_from([0.1, 1.0, 5.0]))
def test_softmin_lies_between_min_and_mean(batch, kappa):
    R, g, w = batch
    z = ra.group_standardize(R, group_size=g)
    soft = ra.softmin(z, kappa=kappa, weights=w)
    assume(np.all(np.isfinite(soft)))
    assert np.all(soft <= ra.weighted_mean(z, weights=w) + 1e-12)
    assert np.all(soft >= ra.weighted_min(z, weights=w) - 1e-12)


@given(batches(), st.sampled_from(ALL), st.sampled_from(["auto", "torch"]))
def test_numpy_and_torch_agree(batch, method, backend):
    """'auto' computes CPU tensors with numpy; 'torch' forces the torch operations (the
    path CUDA tensors take), so both are checked here on CPU."""
    import torch

    R, g, w = batch
    R = domain(method, R)
    a_np = ra.advantages(R, method=method, group_size=g, weights=w)
    t = torch.from_numpy(R)
    a_t = ra.advantages(
        t, method=method, group_size=g, weights=torch.from_numpy(w), backend=backend
    )
    assert isinstance(a_t, torch.Tensor) and a_t.dtype == torch.float64
    np.testing.assert_allclose(a_t.numpy(), a_np, atol=1e-12)
    labels = np.repeat(np.arange(R.shape[0] // g), g)[::-1].copy()
    a_ids = ra.advantages(
        t, method=method, group_ids=torch.from_numpy(labels), weights=w, backend=backend
    )
    np.testing.assert_allclose(
        a_ids.numpy(), ra.advantages(R, method=method, group_ids=labels, weights=w), atol=1e-12
    )
