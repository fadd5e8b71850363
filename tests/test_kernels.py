"""rewardagg.kernels.stage12 on CPU: the numpy/torch reference and the numba kernel against
the float64 oracle, every dispatch rule of backend="auto", and the argument checks.

Runtime: about 10 s (plus a one-time numba compile of ~10 s when its cache is cold).
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import rewardagg.kernels as K
from kernel_cases import METHODS, assert_scores, make_case, method_params, oracle_scores

torch = pytest.importorskip("torch")
HAS_NUMBA = K._has("numba")
CPU_BACKENDS = ["numpy", "torch"] + (["numba"] if HAS_NUMBA else [])

SHAPES = {  # name: (group sizes, K)
    "contiguous16_K17": ([16] * 6, 17),
    "ragged_1_3_16_100": ([1, 3, 16, 100, 2], 5),
    "K1": ([4, 4, 7], 1),
    "K2_singletons": ([1, 1, 2, 5], 2),
}


def _run(backend, r, off, w, **kw):
    x = torch.from_numpy(r) if backend == "torch" else r
    s = K.stage12(x, off, weights=w, backend=backend, **kw)
    return s.numpy() if backend == "torch" else s


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("method", METHODS)
def test_matches_oracle(backend, shape, method):
    sizes, n_rew = SHAPES[shape]
    r, off, w = make_case(sizes, n_rew, seed=len(shape))
    kw = dict(method=method, **method_params(method, kappa=1.7, lam=0.3))
    assert_scores(
        _run(backend, r, off, w, **kw), oracle_scores(r, off, w, **kw), rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    "opts",
    [
        dict(singleton="identity"),
        dict(baseline="leave_one_out"),
        dict(correction=0),
        dict(correction=2, eps=0.1),
        dict(singleton="identity", baseline="leave_one_out"),
    ],
    ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()),
)
def test_stage1_options(backend, opts):
    r, off, w = make_case([1, 2, 3, 16, 40], 4, seed=3)
    for method in ("mean", "softmin"):
        assert_scores(
            _run(backend, r, off, w, method=method, **opts),
            oracle_scores(r, off, w, method, **opts),
            rtol=1e-9,
            atol=1e-9,
        )


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kappa", [0.0, 1e-8, 1e-3, 30.0, 1e8, math.inf])
def test_softmin_kappa_range(backend, kappa):
    r, off, w = make_case([16] * 3, 6, seed=5)
    got = _run(backend, r, off, w, method="softmin", kappa=kappa)
    if kappa == 0:
        want = _run(backend, r, off, w, method="mean")
    elif math.isinf(kappa):
        want = _run(backend, r, off, w, method="min")
    else:
        want = oracle_scores(r, off, w, "softmin", kappa=kappa)
    assert_scores(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_zero_spread_exact_and_no_overflow(backend):
    r = np.full((8, 3), 1e300)
    r[:, 1] = np.array([1, -1, 1, -1, 1, -1, 1, -1]) * 1e300  # squares would overflow
    r[:, 2] = 0.1  # sigma = 0 exactly is not needed: max == min decides
    off = np.array([0, 8])
    s = _run(backend, r, off, np.array([1.0, 0.0, 1.0]), method="gdpo")
    assert np.all(s == 0.0)
    s = _run(backend, r, off, np.array([0.0, 1.0, 0.0]), method="gdpo")
    sd = np.std([1, -1] * 4, ddof=1)
    np.testing.assert_allclose(s, np.array([1, -1] * 4) / sd, rtol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_rows_without_reward_are_nan(backend):
    r, off, w = make_case([4, 4], 3, seed=1, p_missing=0)
    r[0] = np.nan
    r[5, :2] = np.nan  # only the zero-weight reward present
    s = _run(backend, r, off, w, method="softmin")
    assert np.isnan(s[0]) and np.isnan(s[5]) and np.isfinite(np.delete(s, [0, 5])).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_low_precision_input(backend, dtype):
    if dtype == "bfloat16" and backend != "torch":
        pytest.skip("numpy has no bfloat16")
    r, off, w = make_case([16] * 4, 5, seed=7)
    if backend == "torch":
        x = torch.from_numpy(r).to(getattr(torch, dtype))
        seen = x.double().numpy()
    else:
        x = r.astype(dtype)
        seen = x.astype(np.float64)
    s = K.stage12(x, off, weights=w, method="softmin", backend=backend)
    assert s.dtype in (np.float32, torch.float32)
    got = s.numpy() if backend == "torch" else s
    assert_scores(got, oracle_scores(seen, off, w, "softmin"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_infinite_reward_raises_unless_validate_false(backend):
    r, off, w = make_case([4, 4], 3, seed=2, p_missing=0)
    r[6, 1] = -np.inf
    x = torch.from_numpy(r) if backend == "torch" else r
    with pytest.raises(ValueError, match=r"infinite.*row 6, reward 1"):
        K.stage12(x, off, weights=w, method="softmin", backend=backend)
    s = K.stage12(x, off, weights=w, method="softmin", backend=backend, validate=False)
    assert np.isfinite(np.asarray(s)[:4]).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_no_writeback_deterministic_and_library_kept(backend):
    r, off, w = make_case([16] * 8, 17, seed=4)
    x = torch.from_numpy(r.copy()) if backend == "torch" else r.copy()
    a = K.stage12(x, off, weights=w, method="softmin", backend=backend)
    b = K.stage12(x, off, weights=w, method="softmin", backend=backend)
    assert type(a) is type(x) and a.dtype == x.dtype and a.shape == (r.shape[0],)
    np.testing.assert_array_equal(np.asarray(x), r)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_numba_takes_cpu_tensors_and_large_ragged_batches():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 40, 3000)
    r, off, w = make_case(sizes, 9, seed=9)
    ref = K.stage12(r, off, weights=w, method="mean_variance", backend="numpy")
    got = K.stage12(torch.from_numpy(r), off, weights=w, method="mean_variance", backend="numba")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_numba_threads_split_at_group_boundaries_bit_identical():
    import numba

    rng = np.random.default_rng(5)
    r, off, w = make_case(rng.integers(1, 60, 2500), 7, seed=5)
    results = []
    before = numba.get_num_threads()
    try:
        for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            results.append(
                K.stage12(r.astype(np.float32), off, weights=w, method="softmin", backend="numba")
            )
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(results[0], results[-1])


def test_matches_core_advantages():
    import rewardagg

    r, off, w = make_case([16] * 5, 4, seed=11)
    for name in ("gdpo", "softmin", "min"):
        s = K.stage12(r, off, weights=w, method=name, backend="numpy")
        core = rewardagg.advantages(r, method=name, group_size=16, weights=w, batch_norm=False)
        np.testing.assert_allclose(np.nan_to_num(s), core, rtol=1e-12, atol=1e-12)


# ---- dispatch ----------------------------------------------------------------------------


def test_auto_picks_by_size_not_by_process_history():
    """Issue 14 (7): a compiled numba kernel used to pull small inputs onto numba, so the
    same call depended on what ran before in the process."""
    r, _off, _w = make_case([4] * 4, 3)
    K.warmup()
    assert K.resolve_backend(r) == "numpy"
    assert K.resolve_backend(torch.from_numpy(r)) == "torch"


def test_auto_large_cpu_input_uses_numba_when_installed():
    r = np.zeros((K.AUTO_NUMBA_MIN_ELEMENTS, 1))
    assert K.resolve_backend(r) == ("numba" if HAS_NUMBA else "numpy")


def test_explicit_backend_errors_are_clear(monkeypatch):
    r, off, w = make_case([4] * 2, 2)
    with pytest.raises(ValueError, match="backend must be one of"):
        K.stage12(r, off, weights=w, method="softmin", backend="cuda")
    with pytest.raises(ValueError, match="numpy arrays"):
        K.stage12(torch.from_numpy(r), off, weights=w, method="softmin", backend="numpy")
    if K._has("triton"):
        with pytest.raises(ValueError, match="takes torch tensors"):
            K.stage12(r, off, weights=w, method="softmin", backend="triton")
        if not torch.cuda.is_available():
            monkeypatch.delenv("TRITON_INTERPRET", raising=False)
            with pytest.raises(ValueError, match="needs a CUDA tensor"):
                K.stage12(torch.from_numpy(r), off, weights=w, method="softmin", backend="triton")
    monkeypatch.setattr(K, "_has", lambda name: name not in ("numba", "triton"))
    with pytest.raises(RuntimeError, match="needs numba"):
        K.stage12(r, off, weights=w, method="softmin", backend="numba")
    with pytest.raises(RuntimeError, match="needs triton"):
        K.stage12(torch.from_numpy(r), off, weights=w, method="softmin", backend="triton")
    big = np.zeros((K.AUTO_NUMBA_MIN_ELEMENTS, 1))
    assert K.resolve_backend(big) == "numpy"  # auto never fails on a missing package
    assert "numba" not in K.available_backends(r)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(method="sum"), "method"),
        (dict(kappa=-1.0), "kappa"),
        (dict(eps=-1e-6), "eps"),
        (dict(singleton="one"), "singleton"),
        (dict(baseline="median"), "baseline"),
        (dict(offsets=np.array([0, 3, 7])), "offsets"),
        (dict(offsets=np.array([0, 5, 3, 8])), "offsets"),
        (dict(weights=np.array([1.0, -1.0])), "weights"),
        (dict(weights=np.ones(3)), "weights"),
    ],
)
def test_bad_arguments(bad, match):
    r, off, w = make_case([4] * 2, 2)
    kw = dict(offsets=off, weights=w, method="softmin") | bad
    with pytest.raises(ValueError, match=match):
        K.stage12(r, kw.pop("offsets"), **kw)


def test_import_is_light():
    code = (
        "import sys, rewardagg.kernels; "
        "print([m for m in ('torch', 'numba', 'triton') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- the core's backend= argument ------------------------------------------------------


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("method", ["gdpo", "mean", "softmin", "mean_variance", "min"])
def test_core_numba_backend_equals_array_path(method):
    import rewardagg

    rng = np.random.default_rng(3)
    r = rng.standard_normal((300, 5))
    r[rng.random(r.shape) < 0.2] = np.nan
    mask = rng.random(r.shape) > 0.1
    ids = rng.integers(0, 40, 300)  # ragged, unsorted groups
    kw = dict(
        method=method,
        group_ids=ids,
        mask=mask,
        weights=[1, 2, 0, 1, 0.5],
        singleton="identity",
        baseline="leave_one_out",
    )
    want = rewardagg.advantages(r, backend="numpy", **kw)
    got = rewardagg.advantages(r, backend="numba", **kw)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    got_t, info = rewardagg.advantages(
        torch.from_numpy(r).float(), backend="numba", return_info=True, **kw
    )
    np.testing.assert_allclose(got_t.numpy(), want, rtol=1e-4, atol=1e-4)
    assert info.n_rows == 300


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_core_auto_fuses_large_inputs_and_validates_inside_the_pass():
    import rewardagg

    r = np.random.default_rng(0).standard_normal((K.AUTO_NUMBA_MIN_ELEMENTS // 4, 4))
    a = rewardagg.advantages(r, group_size=16)
    np.testing.assert_allclose(
        a, rewardagg.advantages(r, group_size=16, backend="numpy"), rtol=1e-9, atol=1e-9
    )
    r[100, 2] = np.inf
    with pytest.raises(ValueError, match=r"inf at row 100, column 2"):  # the caller's row
        rewardagg.advantages(r, group_size=16)
    r[100, 2] = 0.5  # grpo is a composition in the executor: it runs under every backend
    np.testing.assert_allclose(
        rewardagg.advantages(r, group_size=16, method="grpo", backend="numba"),
        rewardagg.advantages(r, group_size=16, method="grpo", backend="numpy"),
        rtol=0,
        atol=1e-12,
    )
