"""Issue 20: the numpy path (a block of whole groups at a time) and the tiled numba pass.

Each test pins one property the speed work must not trade away: results independent of
the block, tile and thread split; float32 within 1e-5 of float64; the branch-free exp and
log; the numpy path's peak memory below the input's size.
"""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

import rewardagg as ra
from kernel_cases import make_case
from rewardagg import kernels
from rewardagg._src import blocks
from rewardagg._src.grouping import make_layout

HAS_NUMBA = "numba" in kernels.available_backends()
FUSED = [
    m
    for m in kernels.fused_methods()
    if m not in ("gd2po", "gd2po_snr") and "normalize_then_reduce" in ra.get_aggregator(m).orders
]


def _rel_err(got, want):
    got = np.asarray(got, dtype=np.float64)
    return float(np.max(np.abs(got - want) / (1.0 + np.abs(want)), initial=0.0))


def _batch(seed, n_groups=60, k=6, ragged=True, nan_frac=0.1):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9, n_groups) if ragged else np.full(n_groups, 8)
    labels = np.repeat(np.arange(n_groups), sizes)
    rng.shuffle(labels)
    r = rng.normal(size=(labels.size, k)) * rng.uniform(0.1, 10, k) + rng.normal(0, 5, k)
    r[:, 0] = rng.integers(0, 2, labels.size)  # pass/fail: ties and all-equal cells
    r[rng.random(r.shape) < nan_frac] = np.nan
    w = rng.uniform(0.2, 2.0, k)
    w[-1] = 0.0
    return r, labels, w


# ---- the numpy path, a block of groups at a time -------------------------------------


OPTIONS = [
    {},
    {"order": "reduce_then_normalize"},
    {"center": "group"},
    {"multipliers": {1: 0.7}},
    {"singleton": "identity", "baseline": "leave_one_out"},
    {"conflict": "snr", "conflict_threshold": 0.5},
    {"batch_norm": False, "correction": 0},
]


@pytest.mark.parametrize("method", ["gdpo", "mean", "softmin", "mean_variance", "min", "cvar"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda d: "-".join(d) or "defaults")
def test_numpy_blocks_do_not_change_the_result(monkeypatch, method, opts):
    """One group per block and one block for everything give the same advantages."""
    r, labels, w = _batch(1)
    kw = dict(method=method, group_ids=labels, weights=w, backend="numpy", **opts)
    whole = ra.advantages(r, **kw)
    calls = []
    block = blocks._block
    monkeypatch.setattr(blocks, "_block", lambda *a: calls.append(1) or block(*a))
    monkeypatch.setattr(blocks, "BLOCK_VALUES", 1)
    one_group_each = ra.advantages(r, **kw)
    assert len(calls) == np.unique(labels).size  # one block per group
    np.testing.assert_allclose(one_group_each, whole, rtol=1e-12, atol=1e-12)


def test_numpy_blocks_gather_shuffled_groups_from_the_callers_rows():
    """Shuffled ragged groups: blocks read their rows through the layout's permutation
    (no sorted copy of the input) and agree with the same rows given already sorted."""
    r, labels, w = _batch(2)
    layout = make_layout(r.shape[0], group_ids=labels)
    assert layout.perm is not None
    plan = blocks.BlockPlan(
        ra.get_aggregator("softmin"), {"kappa": 1.0}, "normalize_then_reduce", _stage1(), w
    )
    s, _ = blocks.block_scores(r, layout, plan, budget=7)
    presorted = make_layout(r.shape[0], group_ids=labels[layout.perm])
    assert presorted.perm is None
    s2, _ = blocks.block_scores(r[layout.perm], presorted, plan)
    np.testing.assert_allclose(s, s2, rtol=1e-12, atol=1e-12, equal_nan=True)


def _stage1():
    return dict(eps=1e-6, correction=1.0, singleton="zero", baseline="mean")


@pytest.mark.parametrize("method", ["gdpo", "softmin", "mean_variance", "min", "cvar"])
def test_numpy_float32_within_1e5_of_float64(method):
    r, labels, w = _batch(3, n_groups=300)
    r32 = r.astype(np.float32)
    got = ra.advantages(r32, method=method, group_ids=labels, weights=w, backend="numpy")
    assert got.dtype == np.float32
    want = ra.advantages(r32.astype(np.float64), method=method, group_ids=labels, weights=w)
    assert _rel_err(got, want) <= 1e-5


def test_numpy_all_equal_cells_exactly_zero_in_float32():
    r = np.full((64, 3), 1e6 + 0.5, dtype=np.float32)
    r[:, 1] = np.tile([1.0, 2.0, 3.0, 4.0], 16)
    z = ra.advantages(r, method="gdpo", group_size=4, weights=[1.0, 0.0, 1.0], backend="numpy")
    assert np.all(z == 0.0)


def test_numpy_float32_near_its_max_is_computed_not_refused():
    """A float32 block whose differences would overflow float32 is computed in float64,
    as the numba pass computes it (it used to raise "span more than the largest")."""
    r = np.tile(np.array([[3e38, 1.0], [-3e38, 2.0], [1e38, 3.0], [0.0, 5.0]], np.float32), (8, 1))
    got = ra.advantages(r, method="gdpo", group_size=4, backend="numpy")
    want = ra.advantages(r.astype(np.float64), method="gdpo", group_size=4, backend="numpy")
    assert got.dtype == np.float32 and np.all(np.isfinite(got))
    assert _rel_err(got, want) <= 1e-6


def test_numpy_path_peak_memory_below_the_input():
    """Issue 20: the numpy path (numba absent) holds blocks and (N,) vectors only."""
    r = np.random.default_rng(0).normal(size=(1 << 17, 17)).astype(np.float32)
    ra.advantages(r[:1024], group_size=16, backend="numpy")  # imports and caches first
    tracemalloc.start()
    try:
        ra.advantages(r, group_size=16, backend="numpy")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < r.nbytes, f"peak {peak / 2**20:.1f} MiB for a {r.nbytes / 2**20:.1f} MiB input"


def test_layout_offsets_are_the_bucket_starts():
    labels = np.array([3, 3, 1, 2, 2, 2, 1, 0, 5, 5])
    layout = make_layout(labels.size, group_ids=labels)
    sizes = np.diff(layout.offsets)
    assert layout.offsets[0] == 0 and layout.offsets[-1] == labels.size
    assert sizes.tolist() == sorted(sizes.tolist()) and sizes.sum() == labels.size
    assert layout.offsets.size == layout.n_groups + 1


# ---- the tiled numba pass -------------------------------------------------------------

needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")


@needs_numba
def test_tiles_cover_every_group_at_least_half_real_rows():
    from rewardagg.kernels.numba_kernel import tiles

    rng = np.random.default_rng(0)
    sizes = np.concatenate(
        [[16] * 300, [3] * 5, [16] * 40, [200] * 3, [0], [7], rng.integers(1, 40, 500)]
    )
    off = np.concatenate([[0], np.cumsum(sizes)])
    t = tiles(off, 17, budget=4096)
    assert t[0] == 0 and t[-1] == sizes.size and np.all(np.diff(t) > 0)
    for a, b in itertools.pairwise(t):
        s = sizes[a:b]
        assert s.max() * s.size <= 2 * s.sum() or s.size == 1  # padding at most doubles it
        assert (b - a) == 1 or s.max() * 17 * (b - a) <= 2 * 4096
    # an even run is cut every budget // (G K) groups, rounded down to a multiple of 16
    assert t[1] - t[0] == 4096 // (16 * 17) == 15  # below 16: not rounded
    assert tiles(off, 17, budget=1 << 14)[1] == 48  # 60 rounded down


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_uneven_groups_in_any_order_match_the_array_path(dtype):
    """Tiles mixing group sizes (padded with missing rows) give the array path's scores."""
    rng = np.random.default_rng(3)
    r, off, w = make_case(rng.integers(1, 40, 400), 5, seed=3)
    r = r.astype(dtype)
    for method, extra in (("softmin", {}), ("cvar", {}), ("mean_variance", {})):
        kw = dict(weights=w, method=method, singleton="identity", **extra)
        got = kernels.stage12(r, off, backend="numba", **kw)
        want = kernels.stage12(r.astype(np.float64), off, backend="numpy", **kw)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(want)
        assert _rel_err(got[ok], want[ok]) <= (1e-9 if dtype == "float64" else 1e-5)
    _, keep = kernels.stage12(
        r, off, weights=w, method="gdpo", backend="numba", conflict="hard", return_keep=True
    )
    _, want_keep = kernels.stage12(
        r.astype(np.float64),
        off,
        weights=w,
        method="gdpo",
        backend="numpy",
        conflict="hard",
        return_keep=True,
    )
    assert np.mean(keep == want_keep) >= 0.999


@needs_numba
@pytest.mark.parametrize("k", [3, 17])
@pytest.mark.parametrize("method", FUSED)
def test_numba_float32_within_1e5_of_float64(method, k):
    """float32 arithmetic (float64 cell sums) against the float64 pass, itself checked
    against the mpmath oracle at 1e-9 in tests/test_kernels.py; several tiles."""
    r, off, w = make_case([16] * 200 + [5] * 30, k, seed=k)
    r32 = r.astype(np.float32)
    kw = dict(weights=w, method=method, backend="numba")
    got = kernels.stage12(r32, off, **kw)
    want = kernels.stage12(r32.astype(np.float64), off, **kw)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert _rel_err(got[ok], want[ok]) <= 1e-5


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_conflict_filter_float32_keeps_the_same_rows(dtype):
    r, off, w = make_case([16] * 120, 5, seed=8)
    kw = dict(weights=w, method="gdpo", return_keep=True, conflict="snr", conflict_threshold=0.5)
    _, keep = kernels.stage12(r.astype(dtype), off, backend="numba", **kw)
    _, want = kernels.stage12(r.astype(dtype).astype(np.float64), off, backend="numpy", **kw)
    assert np.mean(keep == want) >= 0.999


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method", ["softmin", "cvar", "mean_variance"])
def test_numba_bit_identical_for_any_thread_count_on_long_runs(dtype, method):
    import numba

    r, off, w = make_case([16] * 1500 + [4] * 700, 9, seed=12)
    r = r.astype(dtype)
    before = numba.get_num_threads()
    results = []
    try:
        for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            results.append(kernels.stage12(r, off, weights=w, method=method, backend="numba"))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(results[0], results[-1])


@needs_numba
def test_branch_free_exp_and_log_accuracy():
    from numba import njit

    from rewardagg.kernels import numba_kernel as nk

    @njit
    def run(x64, x32):
        out = np.empty((4, max(x64.size, x32.size)))
        for i in range(x64.size):
            out[0, i] = nk._expm1_neg64(-x64[i])
            out[1, i] = nk._log64(x64[i])
        for i in range(x32.size):
            out[2, i] = nk._expm1_neg32(-x32[i])
            out[3, i] = nk._log32(x32[i])
        return out

    x64 = np.concatenate([np.geomspace(1e-300, 1.99, 4000), 1 - np.geomspace(1e-17, 0.5, 500)])
    x64 = np.concatenate([x64, [50.0, 745.0]])
    x32 = np.concatenate([np.geomspace(1e-37, 1.99, 4000), 1 - np.geomspace(1e-8, 0.5, 500)])
    x32 = np.concatenate([x32, [20.0, 80.0]]).astype(np.float32)
    out = run(x64, x32)
    n64, n32 = x64.size, x32.size
    x32d = x32.astype(np.float64)
    assert _rel(out[0, :n64], np.expm1(-x64)) < 4e-16
    assert _rel(out[1, :n64], np.log(x64)) < 4e-16
    assert _rel(out[2, :n32], np.expm1(-x32d)) < 2e-7
    assert _rel(out[3, :n32], np.log(x32d)) < 2e-7
    assert np.expm1(-np.inf) == -1.0 and run(np.array([np.inf]), x32[:1])[0, 0] == -1.0


def _rel(got, want):
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-300)))


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_softmin_tiny_weight_at_large_kappa(dtype):
    """``u = sum v exp(...)`` far below 1: the rows take the exact float64 fallback."""
    r, off, _ = make_case([8] * 40, 4, seed=4, p_missing=0.0)
    w = np.array([1e-7, 1.0, 1.0, 1.0])
    kw = dict(weights=w, method="softmin", kappa=1e3)
    got = kernels.stage12(r.astype(dtype), off, backend="numba", **kw)
    want = kernels.stage12(r.astype(dtype).astype(np.float64), off, backend="numpy", **kw)
    assert _rel_err(got, want) <= (1e-9 if dtype == "float64" else 1e-5)


@needs_numba
@pytest.mark.parametrize("scale", [1e-30, 1e18, 1e30, 1e38])
def test_numba_float32_extreme_magnitudes(scale):
    """float32 arithmetic keeps Z in range at any finite magnitude (large spreads are
    rescaled by a power of 2) and all-equal cells exactly 0."""
    r, off, w = make_case([16] * 40, 4, seed=6, p_missing=0.1)
    r = (r / np.nanmax(np.abs(r)) * scale * 3).astype(np.float32)
    r[:16, 1] = np.float32(scale * 3) * np.tile([1, -1], 8)  # x - x0 beyond float32's max
    r[:16, 2] = np.float32(scale)  # an all-equal cell
    kw = dict(weights=w, method="softmin")
    got = kernels.stage12(r, off, backend="numba", **kw)
    want = kernels.stage12(r.astype(np.float64), off, backend="numba", **kw)
    assert np.all(np.isfinite(got[~np.isnan(want)]))
    assert _rel_err(got[~np.isnan(want)], want[~np.isnan(want)]) <= 1e-5
    z_equal = kernels.stage12(
        r[:16], off[:2], weights=[0.0, 0.0, 1.0, 0.0], method="mean", backend="numba"
    )
    assert np.all(z_equal == 0.0)
