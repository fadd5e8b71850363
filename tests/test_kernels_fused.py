"""rewardagg.kernels.fused_scores on numba (issue 23): every reducer code in both stage
orders, with multipliers, against the float64 specification (tests/kernel_spec.py, written
from DESIGN.md 2, 2b and 2c), the float64 conflict rule at its threshold, unknown codes, and
the layering (the fused layer imports nothing from rewardagg._src).

Shapes reach every dispatch path of the numba pass: several tiles (more than
``TILE_VALUES`` rewards), uneven groups padded inside a tile, singletons, NaN holes, a
zero weight. The Triton twin of these tests is in tests/test_kernels_triton.py.
"""

from __future__ import annotations

import ast
import math
import pathlib

import numpy as np
import pytest

import rewardagg.kernels as K
from kernel_cases import make_case, threshold_case
from kernel_spec import fused_reference
from rewardagg.kernels import FusedCode

HAS_NUMBA = K._has("numba")
pytestmark = pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")

SRC = pathlib.Path(K.__file__).parent
STAGE1 = dict(eps=1e-6, correction=1.0, singleton="zero", baseline="mean")
TOL = {"float64": 1e-9, "float32": 2e-5}  # float32: |got - want| <= tol * (1 + |want|)

SHAPES = {  # name: (group sizes, K)
    "multi_tile_G16_K5": ([16] * 1000, 5),  # 80,000 rewards: two tiles
    "uneven_singletons_K4": ([1, 3, 16, 7, 1, 40, 2, 9] * 3, 4),
    "K1": ([4, 1, 7, 5], 1),
    "K17": ([16] * 8, 17),
}

# code, its slots, the spec's name and parameters
CODES = {
    "sum": (FusedCode.SUM, (0.0, 0.0), "gdpo", {}),
    "mean": (FusedCode.MEAN, (0.0, 0.0), "mean", {}),
    "softmin": (FusedCode.SOFTMIN, (1.3, 0.0), "softmin", dict(kappa=1.3)),
    "mean_variance": (FusedCode.MEAN_VARIANCE, (0.4, 0.0), "mean_variance", dict(lam=0.4)),
    "min": (FusedCode.MIN, (0.0, 0.0), "min", {}),
    "cvar": (FusedCode.CVAR, (0.3, 0.0), "cvar", dict(alpha=0.3)),
}


def _case(shape, dtype, seed=0):
    sizes, n_rew = SHAPES[shape]
    r, off, w = make_case(sizes, n_rew, seed=seed)
    return r.astype(dtype), off, w


def _check(got, want, dtype):
    got = np.asarray(got, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN rows differ")
    tol = TOL[dtype]
    ok = np.isnan(want) | (np.abs(got - want) <= tol * (1 + np.abs(want)))
    assert ok.all(), f"{(~ok).sum()} rows off; worst {np.nanmax(np.abs(got - want)):.3g}"


def _mults(n_rew):
    """Two constrained columns (one of them twice, one with weight 0 in make_case)."""
    return ((0, 0.7), (n_rew - 1, 0.25), (0, 0.3)) if n_rew > 1 else ((0, 0.5),)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mult", [False, True], ids=["plain", "mult"])
@pytest.mark.parametrize("order", ["normalize_then_reduce", "reduce_then_normalize"])
@pytest.mark.parametrize("code", sorted(CODES))
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_issue23_fused_matches_spec(shape, code, order, mult, dtype):
    r, off, w = _case(shape, dtype, seed=len(shape) + len(code))
    fcode, (p0, p1), name, params = CODES[code]
    pairs = _mults(r.shape[1]) if mult else ()
    got, keep = K.fused_scores(
        r,
        off,
        code=fcode,
        p0=p0,
        p1=p1,
        weights=w,
        order=order,
        mult_cols=tuple(c for c, _ in pairs),
        mult_lams=tuple(v for _, v in pairs),
        backend="numba",
        **STAGE1,
    )
    assert keep is None and got.dtype == r.dtype
    want, _ = fused_reference(
        r, off, weights=w, method=name, order=order, multipliers=pairs, **params, **STAGE1
    )
    _check(got, want, dtype)


@pytest.mark.parametrize(
    "opts",
    [
        dict(singleton="identity"),
        dict(baseline="leave_one_out"),
        dict(correction=0.0, eps=0.01),
        dict(singleton="identity", baseline="leave_one_out"),
    ],
    ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()),
)
def test_raw_order_stage1_rules_on_the_score(opts):
    """The group z-score of the raw-order score follows stage 1's singleton, baseline,
    correction and eps options (DESIGN.md 2b: "exactly as stage 1 standardises one reward")."""
    r, off, w = _case("uneven_singletons_K4", "float64", seed=3)
    kw = STAGE1 | opts
    got, _ = K.fused_scores(
        r,
        off,
        code=FusedCode.SOFTMIN,
        p0=0.8,
        weights=w,
        order="reduce_then_normalize",
        mult_cols=(1,),
        mult_lams=(0.5,),
        backend="numba",
        **kw,
    )
    want, _ = fused_reference(
        r,
        off,
        weights=w,
        method="softmin",
        kappa=0.8,
        order="reduce_then_normalize",
        multipliers=((1, 0.5),),
        **kw,
    )
    _check(got, want, "float64")


def test_raw_order_zero_spread_group_is_exactly_zero():
    """A group whose raw scores are all equal carries no signal: S = 0 exactly, at any
    magnitude (and the float32 input too)."""
    r = np.array([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0], [5.0, 1e6], [0.0, 7.0], [1e6, 5.0]])
    off = np.array([0, 3, 6])
    for dtype in ("float64", "float32"):
        s, _ = K.fused_scores(
            r.astype(dtype),
            off,
            code=FusedCode.SUM,
            weights=np.ones(2),
            order="reduce_then_normalize",
            backend="numba",
            **STAGE1,
        )
        assert np.all(s[:3] == 0.0) and np.all(s[3:] != 0.0)


@pytest.mark.parametrize("p", [-math.inf, -3.0, -1.0, 0.0, 0.5, 1.0, 2.5, math.inf])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_power_mean_raw_order(p, dtype):
    """DESIGN.md 2b: (sum v x^p)^(1/p) of non-negative rewards; p = 0 geometric, p = -inf
    min; a zero with p <= 0 gives 0."""
    rng = np.random.default_rng(7)
    r, off, w = make_case([1, 5, 16, 16, 9, 30], 5, seed=8)
    r = np.abs(r)
    r[rng.random(r.shape) < 0.08] = 0.0
    r = r.astype(dtype)
    got, _ = K.fused_scores(
        r,
        off,
        code=FusedCode.POWER_MEAN,
        p0=p,
        weights=w,
        order="reduce_then_normalize",
        mult_cols=(2,),
        mult_lams=(0.4,),
        backend="numba",
        **STAGE1,
    )
    want, _ = fused_reference(
        r,
        off,
        weights=w,
        method="power_mean",
        p=p,
        order="reduce_then_normalize",
        multipliers=((2, 0.4),),
        **STAGE1,
    )
    _check(got, want, dtype)


@pytest.mark.parametrize("mode, tau", [("hard", 0.8), ("snr", 1.0)])
def test_issue23_conflict_rule_float32_equals_float64_at_threshold(mode, tau):
    r32, off = threshold_case()
    w = np.ones(2)
    _, want = fused_reference(r32, off, weights=w, method="mean", conflict=mode, tau=tau)
    # the reward-0 terms of the middle rows straddle the threshold (not within rounding)
    x = r32.astype(np.float64)
    t = fused_reference(x, off, weights=np.array([1.0, 0.0]), method="gdpo")[0][1::3]
    assert (np.abs(t) > 1e-8).any() and (np.abs(t) < 1e-8).any()
    assert np.all(np.abs(np.abs(t) - 1e-8) > 1e-14)
    # float32 arithmetic cannot tell these terms apart from 0: the rule needs float64 Z
    g = r32[:, 0].reshape(-1, 3)
    z32 = (g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + np.float32(1e-6))
    assert not np.array_equal(np.abs(z32[:, 1]) > 1e-8, np.abs(t) > 1e-8)
    kw = dict(code=FusedCode.MEAN, weights=w, conflict=mode, conflict_threshold=tau, **STAGE1)
    _, keep32 = K.fused_scores(r32, off, backend="numba", **kw)
    _, keep64 = K.fused_scores(x, off, backend="numba", **kw)
    np.testing.assert_array_equal(keep32, want)
    np.testing.assert_array_equal(keep64, want)
    assert keep32.dtype == bool and (~keep32).any() and keep32[1::3].any()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mode, tau", [("hard", 0.8), ("snr", 0.3), ("snr", 0.8)])
def test_conflict_matches_spec_with_multipliers(mode, tau, dtype):
    r, off, w = _case("uneven_singletons_K4", dtype, seed=5)
    s, keep = K.fused_scores(
        r,
        off,
        code=FusedCode.SOFTMIN,
        p0=1.0,
        weights=w,
        mult_cols=(1,),
        mult_lams=(0.6,),
        conflict=mode,
        conflict_threshold=tau,
        backend="numba",
        **STAGE1,
    )
    want_s, want_keep = fused_reference(
        r,
        off,
        weights=w,
        method="softmin",
        kappa=1.0,
        multipliers=((1, 0.6),),
        conflict=mode,
        tau=tau,
        **STAGE1,
    )
    np.testing.assert_array_equal(keep, want_keep)
    _check(s, want_s, dtype)


def test_torch_cpu_tensor_in_torch_out():
    torch = pytest.importorskip("torch")
    r, off, w = _case("K17", "float32", seed=2)
    s, _ = K.fused_scores(
        torch.from_numpy(r),
        off,
        code=FusedCode.SOFTMIN,
        p0=1.0,
        weights=w,
        order="reduce_then_normalize",
        backend="numba",
        **STAGE1,
    )
    assert isinstance(s, torch.Tensor) and s.dtype == torch.float32
    want, _ = fused_reference(
        r, off, weights=w, method="softmin", order="reduce_then_normalize", **STAGE1
    )
    _check(s.numpy(), want, "float32")


# ---- errors --------------------------------------------------------------------------


def _call(**over):
    r, off, w = make_case([4, 4], 3, seed=1)
    kw = dict(code=FusedCode.MEAN, weights=w, backend="numba", **STAGE1) | over
    return K.fused_scores(kw.pop("x", r), off, **kw)


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(code=7), "code must be a FusedCode"),
        (dict(code=-1), "code must be a FusedCode"),
        (dict(code=FusedCode.POWER_MEAN), "reduce_then_normalize"),
        (dict(order="reduce"), "order must be one of"),
        (dict(mult_cols=(0,), mult_lams=()), "same length"),
        (dict(mult_cols=(3,), mult_lams=(1.0,)), "mult_cols"),
        (dict(mult_cols=(0,), mult_lams=(math.nan,)), "mult_lams"),
        (dict(conflict="soft"), "conflict must be"),
        (dict(conflict="hard", conflict_threshold=1.5), "conflict_threshold"),
        (dict(conflict="hard", order="reduce_then_normalize"), "per-reward advantages"),
        (dict(backend="numpy"), "backend must be one of"),
        (dict(singleton="one"), "singleton"),
        (dict(eps=-1.0), "eps"),
    ],
)
def test_bad_arguments(over, match):
    with pytest.raises(ValueError, match=match):
        _call(**over)


def test_infinite_reward_raises():
    r, _, _ = make_case([4, 4], 3, seed=1, p_missing=0)
    r[5, 1] = np.inf
    with pytest.raises(ValueError, match=r"infinite.*row 5, reward 1"):
        _call(x=r)
    with pytest.raises(ValueError, match="infinite"):
        _call(x=r, order="reduce_then_normalize", mult_cols=(1,), mult_lams=(1.0,))


def test_issue23_unknown_code_raises_inside_the_numba_pass():
    """The compiled pass itself refuses a code it does not implement (it used to compute
    mean_variance for any unknown code)."""
    from rewardagg.kernels import numba_kernel as nk

    r = np.zeros((4, 2))
    off = np.array([0, 4], np.int64)
    with pytest.raises(ValueError, match="unknown fused reducer code"):
        nk._stage12(
            r,
            off,
            nk.tiles(off, 2),
            np.ones(2),
            9,
            0.0,
            0.0,
            1e-6,
            1.0,
            False,
            False,
            0,
            0.8,
            False,
            np.zeros(0, np.int64),
            np.zeros(0),
            np.empty(0),
            True,
            np.empty(4),
            np.empty(4, np.uint8),
            0,
            1,
        )
    with pytest.raises(ValueError, match="unknown fused reducer code"):
        nk.stage12_numba(
            r,
            off,
            np.ones(2),
            code=9,
            slots=(0.0, 0.0),
            eps=1e-6,
            correction=1.0,
            identity=False,
            loo=False,
        )


def test_codes_match_the_method_table():
    """FusedCode's values are the method table's codes (the core resolves names to them)."""
    import rewardagg

    names = dict(
        gdpo="SUM", mean="MEAN", softmin="SOFTMIN", mean_variance="MEAN_VARIANCE", min="MIN"
    )
    names["cvar"] = "CVAR"
    for name, member in names.items():
        assert rewardagg.get_aggregator(name).fused_code == FusedCode[member].value


def test_issue23_fused_layer_imports_nothing_from_src():
    """The fused layer (kernels/__init__, codes, numba_kernel, triton_kernel) has no import
    of rewardagg._src anywhere, not even inside functions; only kernels/named.py (the
    by-name conveniences) reads the method table, and no module of _src imports it."""
    for name in ("__init__.py", "codes.py", "numba_kernel.py", "triton_kernel.py"):
        tree = ast.parse((SRC / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            assert not any(m.startswith("rewardagg._src") for m in mods), (name, mods)
    for path in (SRC.parent / "_src").glob("*.py"):
        assert "kernels.named" not in path.read_text(), path


@pytest.mark.parametrize("code", ["sum", "mean", "softmin", "mean_variance", "cvar"])
def test_raw_order_float32_errs_relative_to_the_spread_not_the_offset(code):
    """float32 rewards around 1e4 with unit spread: the raw-order pass reduces each row
    relative to its minimum, so its error is float32's relative to the spread (a plain
    float32 reduction would be off by about 1e4 * 6e-8 = 6e-4 in S)."""
    r, off, w = make_case([16] * 40, 6, seed=4, zero_weight=False)
    r = (r / np.nanstd(r, 0) + 1e4).astype(np.float32)
    fcode, (p0, _p1), name, params = CODES[code]
    got, _ = K.fused_scores(
        r,
        off,
        code=fcode,
        p0=p0,
        weights=w,
        order="reduce_then_normalize",
        backend="numba",
        **STAGE1,
    )
    want, _ = fused_reference(
        r, off, weights=w, method=name, order="reduce_then_normalize", **params, **STAGE1
    )
    _check(got, want, "float32")


def test_raw_order_and_multipliers_bit_identical_for_any_thread_count():
    import numba

    rng = np.random.default_rng(5)
    r, off, w = make_case(rng.integers(1, 60, 2500), 7, seed=5)
    kw = dict(
        code=FusedCode.SOFTMIN,
        p0=1.0,
        weights=w,
        order="reduce_then_normalize",
        mult_cols=(2,),
        mult_lams=(0.5,),
        backend="numba",
        **STAGE1,
    )
    before = numba.get_num_threads()
    results = []
    try:
        for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            results.append(K.fused_scores(r.astype(np.float32), off, **kw)[0])
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(results[0], results[-1])
