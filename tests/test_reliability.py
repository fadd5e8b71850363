"""Regression tests for the reliability issue (issue 14): each test is named after the
defect it pins, with a reproducer from the red-team pass."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import oracle
import rewardagg as ra
from rewardagg import kernels

torch = pytest.importorskip("torch")
HAS_NUMBA = "numba" in kernels.available_backends()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.skipif(not HAS_NUMBA, reason="the thread pool is numba's")
def test_issue14_1_forked_child_finishes_a_threaded_call():
    """The numba thread pool survived fork() without its threads: the child hung."""
    code = textwrap.dedent(
        """
        import os, numpy as np, rewardagg as ra
        r = np.random.default_rng(0).normal(size=(2**16, 8))
        a = ra.softmin_advantages(r, group_size=16)  # threaded numba call in the parent
        pid = os.fork()
        if pid == 0:
            b = ra.softmin_advantages(r, group_size=16)
            os._exit(0 if np.array_equal(a, b) else 3)
        _, status = os.waitpid(pid, 0)
        raise SystemExit(os.waitstatus_to_exitcode(status))
        """
    )
    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("offset", [1e6, 1e9, 1e12, 1e15])
def test_issue14_3_fused_kernel_is_exact_at_large_offsets(offset):
    """The numba pass rebuilt mu = x0 + m / sc and computed x - mu: ~1e-16 * offset /
    spread lost (1.2e-4 at 1e12)."""
    rng = np.random.default_rng(int(np.log10(offset)))
    R = rng.normal(size=(96, 5))
    R[rng.random(R.shape) < 0.1] = np.nan
    R = R + offset
    want = oracle.advantages(R, group_size=8)
    for backend in ("numba", "numpy"):
        got = ra.advantages(R, group_size=8, backend=backend)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_issue14_4_integers_are_computed_in_float64(lib):
    """Integer torch tensors were computed in float32: 2^24 + 1 collapsed onto 2^24."""
    R = np.array([[16777216, 0], [16777217, 0], [16777216, 1], [16777217, 1]], dtype=np.int64)
    x = torch.from_numpy(R) if lib == "torch" else R
    a = ra.gdpo_advantages(x, group_size=4)
    assert a.dtype in (np.float64, torch.float64)
    want = oracle.advantages(R.astype(np.float64), method="gdpo", group_size=4)
    np.testing.assert_allclose(np.asarray(a), want, atol=1e-12)
    assert np.count_nonzero(np.asarray(a)) == 2  # float32 read every row as equal: all 0


def test_issue14_5_masked_array_entries_are_missing():
    R = np.ma.masked_array(
        [[1.0, 0.0], [0.0, 1.0], [1.0, 5.0], [0.5, 0.2]],
        mask=[[False, False], [False, False], [False, True], [False, False]],
    )
    want = ra.advantages(np.where(np.ma.getmaskarray(R), np.nan, R.data), group_size=4)
    np.testing.assert_array_equal(ra.advantages(R, group_size=4), want)
    assert not np.array_equal(ra.advantages(R.data, group_size=4), want)


@pytest.mark.parametrize(
    "labels, n_groups",
    [
        ([np.float64(1.0), 1.0, 2.0, 2], 2),
        (np.array([np.float64(1.0), 1.0, 2.0, 2.0]), 2),
        ([1, 1.0, True, 2], 2),
        (np.array([1, 1.0, True, 2]), 2),
        ([float("nan"), float("nan"), 1, 1], 2),
        (np.array([np.nan, np.nan, 1.0, 1.0]), 2),
        ([1, "1", 1, "1"], 2),
    ],
)
def test_issue14_6_labels_group_by_value_like_a_dict(labels, n_groups):
    """Group identity depended on the label's type and container (1, 1.0 and True were
    three groups as a list, one as an array; each NaN object was a group of its own)."""
    R = np.arange(8.0).reshape(4, 2)
    _, info = ra.advantages(R, group_ids=labels, return_info=True)
    assert info.n_groups == n_groups


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_issue14_7_auto_does_not_depend_on_process_history():
    code = textwrap.dedent(
        """
        import numpy as np, rewardagg as ra, rewardagg.kernels as K
        r = np.random.default_rng(0).normal(size=(64, 4)) + 1e9
        before = ra.advantages(r, group_size=8)
        K.warmup()
        ra.advantages(np.random.default_rng(1).normal(size=(2**14, 4)), group_size=16)
        after = ra.advantages(r, group_size=8)
        raise SystemExit(0 if np.array_equal(before, after) else 3)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("name", ["batch_norm", "return_info"])
@pytest.mark.parametrize("value", ["False", 0, None])
def test_issue14_8_strict_bools(name, value):
    with pytest.raises(TypeError, match=name):
        ra.advantages(np.zeros((4, 2)), group_size=2, **{name: value})


def test_issue14_8_meta_tensor_is_a_clear_error():
    with pytest.raises(ValueError, match="meta"):
        ra.advantages(torch.zeros(4, 2, device="meta"), group_size=2)


# ---- issue 24: the constraint tracker never sticks and loads nothing invalid -------------


def _good_state(**change):
    state = {"keys": [0], "multipliers": [0.5], "integral": [0.5], "prev_error": [None]}
    state["step"] = 3
    state.update(change)
    return state


@pytest.mark.parametrize(
    "batch",
    [
        np.array([[-np.inf, 1.0], [0.0, 1.0]]),
        np.array([[np.inf, 1.0], [0.0, 1.0]]),
    ],
)
def test_issue24_tracker_refuses_a_non_finite_batch_and_keeps_working(batch):
    """A -inf reward stored a NaN/inf multiplier and the next step refused it for ever."""
    t = ra.ConstraintTracker({0: 0.5}, lr=1.0, lambda_max=2.0)
    t.update(np.array([[0.0, 1.0], [0.0, 0.0]]))
    before = t.state_dict()
    with pytest.raises(ValueError, match="column 0"):
        t.update(batch)
    assert t.state_dict() == before  # all or nothing
    t.update(np.array([[1.0, 1.0], [1.0, 0.0]]))  # not stuck: 0.5 + (0.5 - 1) = 0
    assert t.multipliers == {0: 0.0} and t.step == 2


def test_issue24_tracker_overflow_is_clamped_to_lambda_max():
    """lr * error overflowing float64 stored inf/NaN."""
    t = ra.ConstraintTracker({0: 0.5}, lr=1e308, lambda_max=3.0, kd=1e300)
    t.update(np.array([[-1e308], [-1e308]]))  # error ~ 1e308; lr * error = inf
    assert t.multipliers == {0: 3.0}
    t.update(np.array([[1e308], [1e308]]))  # derivative term (-2e308) overflows too
    assert t.multipliers == {0: 0.0}
    assert all(np.isfinite(v) for v in t.state_dict()["prev_error"])
    t.update(np.array([[0.0], [1.0]]))
    assert all(map(np.isfinite, t.multipliers.values()))
    unbounded = ra.ConstraintTracker({0: 0.5}, lr=1e308)
    with pytest.raises(ValueError, match="lambda_max"):
        unbounded.update(np.array([[-1e308], [-1e308]]))
    assert unbounded.multipliers == {0: 0.0} and unbounded.step == 0


@pytest.mark.parametrize(
    "rewards, exc, match",
    [
        (np.zeros(4), ValueError, r"rewards must be 2-D.*\(4,\)"),
        (np.zeros((2, 2, 2)), ValueError, "rewards must be 2-D"),
        ([[1.0, 2.0], [3.0]], ValueError, "rewards"),
        (np.array([["a", "b"]]), TypeError, "rewards"),
        (np.zeros((4, 1)), ValueError, "out of range"),
    ],
)
def test_issue24_tracker_wrong_shapes_are_clear_errors(rewards, exc, match):
    """update(np.zeros(4)) raised IndexError."""
    with pytest.raises(exc, match=match):
        ra.ConstraintTracker({1: 0.5}).update(rewards)


def test_issue24_tracker_mask_shape_is_checked():
    with pytest.raises(ValueError, match="mask"):
        ra.ConstraintTracker({0: 0.5}).update(np.zeros((4, 2)), mask=np.ones((3, 2), bool))


@pytest.mark.parametrize(
    "state, exc, match",
    [
        ({k: v for k, v in _good_state().items() if k != "integral"}, ValueError, "integral"),
        (_good_state(extra=1), ValueError, "extra"),
        (_good_state(multipliers=[-0.1]), ValueError, r"multipliers'\]\[0\]"),
        (_good_state(multipliers=[float("nan")]), ValueError, r"multipliers'\]\[0\]"),
        (_good_state(multipliers=[float("inf")]), ValueError, r"multipliers'\]\[0\]"),
        (_good_state(multipliers=[2.5]), ValueError, "lambda_max"),
        (_good_state(integral=[-1.0]), ValueError, r"integral'\]\[0\]"),
        (_good_state(integral=[]), ValueError, "integral"),
        (_good_state(multipliers=None), TypeError, "multipliers"),
        (_good_state(multipliers=["1"]), TypeError, "multipliers"),
        (_good_state(prev_error=None), TypeError, "prev_error"),
        (_good_state(prev_error=[float("nan")]), ValueError, "prev_error"),
        (_good_state(step=-1), ValueError, "step"),
        (_good_state(step=1.5), TypeError, "step"),
        (_good_state(step=True), TypeError, "step"),
        (_good_state(keys=[1]), ValueError, "keys"),
        (None, TypeError, "state"),
    ],
)
def test_issue24_load_state_dict_validates_and_is_atomic(state, exc, match):
    """Negative/NaN/inf/too-large multipliers and a negative step were accepted; partial
    state failed with KeyError / zip() / NoneType errors, half-loaded."""
    t = ra.ConstraintTracker({0: 0.5}, lr=1.0, lambda_max=2.0)
    t.update(np.array([[0.0], [0.0]]))
    before = t.state_dict()
    with pytest.raises(exc, match=match):
        t.load_state_dict(state)
    assert t.state_dict() == before
    t.load_state_dict(_good_state())  # the good one loads
    assert t.multipliers == {0: 0.5} and t.step == 3


@pytest.mark.parametrize(
    "call",
    [
        lambda R: ra.advantages(R, group_size=4, process_group="x"),
        lambda R: ra.advantages(R, group_size=4, backend="torch", process_group="x"),
        lambda R: ra.batch_standardize(R[:, 0], process_group="x"),
        lambda R: ra.ConstraintTracker({0: 0.5}).update(R, process_group="x"),
    ],
)
def test_issue24_process_group_type_is_checked(call):
    """process_group="x" failed inside torch.distributed without naming the argument."""
    R = np.random.default_rng(0).normal(size=(8, 3))
    with pytest.raises(TypeError, match=r"process_group must be None or a torch\.distributed"):
        call(R)


# ---- issue 24: power_mean against mpmath ------------------------------------------------


def _mp_power_mean(x, w, p):
    """(sum v x^p)^(1/p) in 80 digits, v = w / sum w renormalised exactly (float64 v does
    not sum to 1, and (1 + 1e-16)^(1/p) is far from 1 for tiny p)."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(80):
        xs = [mpmath.mpf(float(a)) for a in x]
        vs = [mpmath.mpf(float(b)) for b in w]
        vs = [b / sum(vs) for b in vs]
        if p == 0:
            return float(mpmath.exp(sum(b * mpmath.log(a) for a, b in zip(xs, vs, strict=True))))
        q = mpmath.mpf(p)
        return float(sum(b * a**q for a, b in zip(xs, vs, strict=True)) ** (1 / q))


@pytest.mark.parametrize("offset", [0.0, 1.0, 1e6, 1e12])
@pytest.mark.parametrize(
    "p", [-50.0, -7.0, -1.0, -0.3, -1e-7, -1e-9, -1e-12, 0.0, 1e-12, 1e-9, 0.5, 1.0, 3.0, 50.0]
)
def test_issue24_power_mean_matches_mpmath(offset, p):
    """The log-domain formula was ~1e-2 off at an offset of 1e12 (p = 0.5) and p = 1e-12
    differed from p = 0 by 3.6e-4: the error must be 1e-9 relative, and within one unit in
    the last place plus 1e-12 of the row's spread (what the offset leaves resolvable)."""
    rng = np.random.default_rng(int(abs(p) * 1e3) + int(offset % 97))
    x = rng.random((6, 4)) * 3 + offset
    x[0, 1] = np.nan  # a missing value
    w = np.array([1.0, 2.0, 0.5, 1.5])
    got = ra.power_mean(x, p=p, weights=w)
    for row, s in zip(x, got, strict=True):
        present = ~np.isnan(row)
        want = _mp_power_mean(row[present], w[present], p)
        spread = np.nanmax(row) - np.nanmin(row)
        assert abs(s - want) <= 1e-9 * abs(want)
        assert abs(s - want) <= np.spacing(want) + 1e-12 * spread, (s, want)


def test_issue24_power_mean_is_continuous_at_p_zero():
    x = np.array([[0.3, 2.0, 7.5, 1.0], [1e12 + 1, 1e12 + 3, 1e12, 1e12 + 2]])
    g0 = ra.power_mean(x, p=0.0)
    for p in (1e-12, -1e-12, 1e-15):
        np.testing.assert_allclose(ra.power_mean(x, p=p), g0, rtol=1e-11, atol=0)


# ---- issue 24: every backend agrees at the extremes --------------------------------------

BACKENDS24 = ["numpy", "torch"] + (["numba"] if HAS_NUMBA else [])


def _run(R, backend, **kw):
    x = torch.from_numpy(R) if backend == "torch" else R
    return np.asarray(ra.advantages(x, backend=backend, **kw), dtype=np.float64)


@pytest.mark.parametrize("scale", [1e-160, 1e-300, 1e-310, 1e-320])
@pytest.mark.parametrize("backend", BACKENDS24)
@pytest.mark.parametrize("method", ["softmin", "gdpo"])
def test_issue24_eps0_subnormal_magnitudes_on_every_backend(scale, backend, method):
    """eps=0 with values below ~1e-154: torch returned all zeros at 1e-310 (0 * (1 / a
    subnormal span) = NaN), numba was 9e-5 off at 1e-160 (subnormal squares) and raised
    "score overflowed" at 1e-300 (the squares were 0, 1 / sd = inf)."""
    rng = np.random.default_rng(7)
    R = rng.normal(size=(24, 3))
    R[rng.random(R.shape) < 0.1] = np.nan
    kw = dict(group_size=4, eps=0.0, method=method)
    tiny = R * scale
    # the same values scaled up by a power of 2 (exact): at eps=0 the problem is scale-free
    want = oracle.advantages(np.ldexp(tiny, -int(np.floor(np.log2(scale)))), **kw)
    got = _run(tiny, backend, **kw)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got, _run(tiny, "numpy", **kw), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kappa", [5e-324, 1e-310, 1e-300, 1e-40])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", BACKENDS24)
def test_issue24_subnormal_kappa_is_the_mean(kappa, dtype, backend):
    """kappa = 5e-324 was accepted but was 1.08 away from the mean (numba and numpy
    disagreed by 1.0): kappa (Z - m) is subnormal and the division by kappa amplifies its
    rounding; in float32, kappa = 1e-300 gave the row minimum. Below 2^-126 the pipeline's
    softmin is the mean (bound in aggregators.KAPPA_MEAN_LIMIT)."""
    R = np.random.default_rng(3).normal(size=(32, 4)).astype(dtype)
    got = _run(R, backend, group_size=4, method="softmin", kappa=kappa)
    np.testing.assert_array_equal(got, _run(R, backend, group_size=4, method="mean"))
    want = oracle.advantages(R.astype(np.float64), group_size=4, method="mean")
    np.testing.assert_allclose(got, want, atol=1e-12 if dtype == "float64" else 1e-5)
    z = R - R.mean(1, keepdims=True)
    if kappa < 2.0**-1022 or dtype == "float32":  # the reducer's limit: its dtype's tiny
        np.testing.assert_array_equal(ra.softmin(z, kappa=kappa), ra.weighted_mean(z))
    else:
        np.testing.assert_allclose(ra.softmin(z, kappa=kappa), ra.weighted_mean(z), atol=1e-15)


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-13), ("float32", 2e-6)])
def test_issue24_smallest_normal_float32_kappa_is_still_accurate(dtype, tol):
    """Just above the limit the formula runs: within rounding of the mean."""
    R = np.random.default_rng(4).normal(size=(32, 4)).astype(dtype)
    want = oracle.advantages(R.astype(np.float64), group_size=4, method="mean")
    for backend in BACKENDS24:
        got = _run(R, backend, group_size=4, method="softmin", kappa=2.0**-126)
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("method", ["mean", "softmin", "min", "cvar", "power_mean"])
def test_issue24_float32_raw_order_sums_in_float64(backend, method):
    """order='reduce_then_normalize' on float32 input at an offset of 1e6: float32 and
    float64 copies of the same float32 values differed by 0.87."""
    rng = np.random.default_rng(5)
    R = (rng.random((64, 3)) * 4 + 1e6).astype(np.float32)
    kw = dict(group_size=8, method=method, order="reduce_then_normalize")
    got32 = _run(R, backend, **kw)
    got64 = _run(R.astype(np.float64), backend, **kw)
    np.testing.assert_allclose(got32, got64, rtol=0, atol=1e-6)  # float32 output rounding


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_issue24_numba_call_leaves_torch_thread_count_alone():
    """A numba call under NUMBA_NUM_THREADS=1 set torch's thread count to 1 for the rest
    of the process (numba.get_num_threads() launched the OpenMP threading layer)."""
    code = textwrap.dedent(
        """
        import torch
        before = torch.get_num_threads()
        import numpy as np, rewardagg as ra
        r = np.random.default_rng(0).normal(size=(2**15, 4))
        ra.advantages(r, group_size=8, backend="numba")
        raise SystemExit(0 if before == torch.get_num_threads() else 3)
        """
    )
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    env.pop("OMP_NUM_THREADS", None)
    if (os.cpu_count() or 1) < 2:
        pytest.skip("torch runs one thread on one core: nothing to change")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]


# ---- issue 24: the command lines --------------------------------------------------------


def _src_env():
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))


def test_issue24_version_into_a_closed_pipe_prints_no_traceback():
    """`rewardagg --version | head -1` printed a BrokenPipeError traceback: here the pipe's
    reader is closed before the command writes, every time."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "rewardagg", "--version"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=_src_env(),
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr


def test_issue24_openrlhf_help_without_flash_attn_is_one_clear_line():
    pytest.importorskip("openrlhf")
    code = "import sys; sys.modules['flash_attn'] = None\n" + (
        "import runpy; sys.argv = ['x', '--help']\n"
        "runpy.run_module('rewardagg.integrations.openrlhf', run_name='__main__')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_src_env()
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "OpenRLHF cannot be imported" in lines[0], out.stderr
    assert "flash_attn" in lines[0]


@pytest.mark.parametrize("level", ["2", "0", "1e-300"])
def test_issue24_audit_z_level_is_range_checked(level, capsys):
    """`rewardagg audit --z-level 2` was accepted and marked every row as failing."""
    from rewardagg.cli import main

    path = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "rollouts.jsonl")
    assert main(["audit", path, "--z-level", level]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rewardagg audit: error: --z-level: expected a negative number"), err


def test_issue24_subcommand_typo_shows_the_subcommand_usage(capsys):
    """`rewardagg demo --quikc` showed the top-level usage."""
    from rewardagg.cli import main

    assert main(["demo", "--quikc"]) == 2
    err = capsys.readouterr().err
    assert "usage: rewardagg demo" in err and "--quikc" in err
    assert main(["--quikc"]) == 2
    assert "usage: rewardagg [-h]" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_issue24_group_centred_stage3_with_huge_scores(backend):
    """center='group' standardised with a sum of squares that overflowed (scores beyond
    ~1e154, e.g. verl's identity singleton on rewards of 1e100 squared by mean_variance):
    every advantage came back 0. Found by scripts/redteam.py."""
    rng = np.random.default_rng(11)
    R = rng.normal(size=(8, 3)) * 1e100
    R[[0, 3], [1, 2]] = np.nan  # one-value cells: Z = R / (1 + eps), ~1e100
    kw = dict(method="mean_variance", lam=3.0, group_size=2, singleton="identity")
    kw.update(center="group", eps=1e-4, correction=0.0)
    want = oracle.advantages(R, **kw)
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(_run(R, backend, **kw), want, rtol=0, atol=1e-9)


def test_issue24_tracker_takes_lists_with_none_as_missing():
    t = ra.ConstraintTracker({0: 0.5}, lr=1.0)
    t.update([[None, 1.0], [1.0, 2.0], [0.0, None]])
    assert t.last_means == {0: 0.5} and t.multipliers == {0: 0.0}
    with pytest.raises(TypeError, match="rewards"):
        t.update([["a", 1.0]])


def test_issue24_public_softmin_keeps_tiny_kappa_on_huge_spreads():
    """The reducer takes values of any spread: kappa = 1e-152 on values of 1e150 is a real
    risk aversion (kappa * spread ~ 1e-2), not the mean."""
    z = np.random.default_rng(8).standard_normal((3, 9)) * 1e150
    got = ra.softmin(z, kappa=1e-152)
    want = ra.softmin(z / 1e150, kappa=1e-2) * 1e150
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.all(got < ra.weighted_mean(z) - 1e145)
