"""The Triton kernel against the torch reference under ``TRITON_INTERPRET=1`` (CPU tensors),
covering every dispatch path with a few programs per case: K=1, K not a power of two, K
larger than one reward block, group sizes 1/3/16/100 and a group larger than one row block,
ragged groups, NaNs, weights, leave-one-out/identity, fp32/bf16/fp16 cast on load.

Runtime: about 25 s (the interpreter costs milliseconds per program and tile op).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

if importlib.util.find_spec("triton") is None:
    pytest.skip("needs triton", allow_module_level=True)
# Triton picks interpreter or compiler when a function is decorated, including its own
# tl.zeros & co. at `import triton`: the variable must be set before that import.
_ALREADY = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
os.environ["TRITON_INTERPRET"] = "1"
torch = pytest.importorskip("torch")
if _ALREADY:  # triton was imported for the GPU earlier in this process: rerun in a fresh one

    @pytest.fixture(autouse=True)
    def _only_in_fresh_process(request):
        if request.node.name != "test_in_a_fresh_process":
            pytest.skip("run by test_in_a_fresh_process")

    def test_in_a_fresh_process():
        env = dict(os.environ, TRITON_INTERPRET="1")
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
            env=env,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


import rewardagg.kernels as K  # noqa: E402
from kernel_cases import METHODS, fused_call, make_case, threshold_case  # noqa: E402
from kernel_spec import fused_reference, stage12_reference  # noqa: E402
from rewardagg.kernels.triton_kernel import stage12_triton  # noqa: E402

TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-5, torch.float16: 2e-5}

CASES = {  # name: (group sizes, K, block_r, block_k)
    "K1_groups_1_3": ([1, 3, 2], 1, None, None),
    "K17_group16": ([16, 16], 17, None, None),
    "K10_two_k_blocks_ragged": ([3, 7, 16], 10, None, 4),
    "group100_four_row_blocks": ([100], 5, 32, None),
    "both_blocked": ([1, 40], 6, 16, 4),
}


def _both(r, off, w, dtype, **kw):
    x = torch.from_numpy(r).to(dtype)
    _name, (_, _, br, bk) = kw.pop("case")
    code, slots = fused_call(**kw)
    got, bad, _keep = stage12_triton(
        x,
        torch.from_numpy(off),
        torch.from_numpy(w),
        block_r=br,
        block_k=bk,
        identity=kw.get("singleton") == "identity",
        loo=kw.get("baseline") == "leave_one_out",
        code=code,
        slots=slots,
        **{k: v for k, v in kw.items() if k in ("eps", "correction")},
    )
    ref, n_inf = stage12_reference(x, off, weights=w, **kw)
    return got, bad, ref, n_inf


@pytest.fixture(autouse=True)
def _quiet_interpreter():
    with np.errstate(all="ignore"):  # the interpreter evaluates masked lanes with numpy
        yield


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", METHODS)
def test_matches_reference_fp64(case, method):
    sizes, n_rew, _, _ = CASES[case]
    r, off, w = make_case(sizes, n_rew, seed=len(case))
    got, bad, ref, _ = _both(
        r,
        off,
        w,
        torch.float64,
        case=(case, CASES[case]),
        method=method,
        kappa=1.3,
        lam=0.4,
        eps=1e-6,
        correction=1.0,
    )
    assert got.dtype == torch.float64 and int(bad.sum()) == 0
    torch.testing.assert_close(
        got, ref, rtol=TOL[torch.float64], atol=TOL[torch.float64], equal_nan=True
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", ["K17_group16", "K10_two_k_blocks_ragged"])
def test_low_precision_cast_on_load(case, dtype):
    sizes, n_rew, _, _ = CASES[case]
    r, off, w = make_case(sizes, n_rew, seed=1)
    for method in ("softmin", "mean_variance"):
        got, _, ref, _ = _both(
            r,
            off,
            w,
            dtype,
            case=(case, CASES[case]),
            method=method,
            kappa=2.0,
            lam=0.5,
            eps=1e-6,
            correction=1.0,
        )
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, ref, rtol=TOL[dtype], atol=TOL[dtype], equal_nan=True)


@pytest.mark.parametrize(
    "opts",
    [
        dict(singleton="identity", baseline="leave_one_out", correction=1.0),
        dict(correction=0.0, eps=0.01),
    ],
    ids=["identity-loo", "correction0"],
)
def test_stage1_options(opts):
    case = "both_blocked"
    r, off, w = make_case([1, 2, 40], 6, seed=2)
    got, _, ref, _ = _both(
        r,
        off,
        w,
        torch.float64,
        case=(case, CASES[case]),
        method="softmin",
        kappa=0.7,
        lam=0.5,
        **{"eps": 1e-6} | opts,
    )
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10, equal_nan=True)


@pytest.mark.parametrize("kappa", [1e-8, 50.0, 1e8])
def test_softmin_extreme_kappa_online_across_reward_blocks(kappa):
    case = "K10_two_k_blocks_ragged"
    r, off, w = make_case([3, 5], 10, seed=4)
    got, _, ref, _ = _both(
        r,
        off,
        w,
        torch.float64,
        case=(case, CASES[case]),
        method="softmin",
        kappa=kappa,
        lam=0.5,
        eps=1e-6,
        correction=1.0,
    )
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12, equal_nan=True)


def test_infinite_value_is_reported_and_stage12_raises():
    r, off, w = make_case([4, 4], 3, seed=2, p_missing=0)
    r[5, 2] = np.inf
    x = torch.from_numpy(r)
    _, bad, _keep = stage12_triton(
        x,
        torch.from_numpy(off),
        torch.from_numpy(w),
        code=2,  # softmin
        slots=(1.0, 0.0),
        eps=1e-6,
        correction=1.0,
        identity=False,
        loo=False,
    )
    assert bad.tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"infinite.*row 5, reward 2"):
        K.stage12(x, off, weights=w, method="softmin", backend="triton")


def test_stage12_dispatch_and_all_missing_rows():
    r, off, w = make_case([3, 16], 4, seed=8)
    r[0] = np.nan
    x = torch.from_numpy(r).float()
    got = K.stage12(x, off, weights=w, method="min", backend="triton")
    want = K.stage12(x, off, weights=w, method="min", backend="torch")
    assert torch.isnan(got[0]) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5, equal_nan=True)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("mode, tau", [("hard", 0.8), ("snr", 0.3), ("snr", 0.8)])
def test_conflict_filter_merges_across_reward_blocks(case, mode, tau):
    """GD²PO's test (DESIGN.md 2c) in the Triton pass equals the array path's, on the
    blocked shapes (several reward blocks and row blocks per group)."""
    sizes, n_rew, br, bk = CASES[case]
    r, off, w = make_case(sizes, n_rew, seed=len(case) + 3)
    x = torch.from_numpy(r)
    code, slots = fused_call("softmin", kappa=1.0)
    got, _, keep = stage12_triton(
        x,
        torch.from_numpy(off),
        torch.from_numpy(w),
        code=code,
        slots=slots,
        eps=1e-6,
        correction=1.0,
        identity=False,
        loo=False,
        conflict=1 if mode == "hard" else 2,
        tau=tau,
        block_r=br,
        block_k=bk,
    )
    want, keep_np = K.stage12(
        r,
        off,
        weights=w,
        method="softmin",
        backend="numpy",
        conflict=mode,
        conflict_threshold=tau,
        return_keep=True,
    )
    np.testing.assert_array_equal(keep.numpy().astype(bool), keep_np)
    torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-10, atol=1e-12, equal_nan=True)


def test_core_gd2po_on_triton_equals_array_path():
    import rewardagg

    r, off, w = make_case([1, 5, 16, 9], 6, seed=21)
    ids = np.repeat(np.arange(4), np.diff(off))
    for method in ("gd2po", "gd2po_snr"):
        got = rewardagg.advantages(
            torch.from_numpy(r), method=method, group_ids=ids, weights=w, backend="triton"
        )
        want = rewardagg.advantages(r, method=method, group_ids=ids, weights=w, backend="numpy")
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-9)


# ---- issue 23: multipliers, the raw-reward order, the float64 conflict rule -------------

FUSED_CODES = {  # code: (slots, the spec's method and parameters)
    0: ((0.0, 0.0), "gdpo", {}),
    1: ((0.0, 0.0), "mean", {}),
    2: ((1.3, 0.0), "softmin", {"kappa": 1.3}),
    3: ((0.4, 0.0), "mean_variance", {"lam": 0.4}),
    4: ((0.0, 0.0), "min", {}),
}
FUSED_TOL = {torch.float64: 1e-10, torch.float32: 2e-5}  # times 1 + |S|


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("order", ["normalize_then_reduce", "reduce_then_normalize"])
@pytest.mark.parametrize("code", sorted(FUSED_CODES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_issue23_multipliers_and_raw_order_across_blocks(case, code, order, dtype):
    """S = base + sum_c lam_c Z_ic with the base over Z or over the raw rewards (then the
    group z-score), merged across reward blocks and row blocks, against the spec."""
    sizes, n_rew, br, bk = CASES[case]
    r, off, w = make_case(sizes, n_rew, seed=len(case) + code)
    x = torch.from_numpy(r).to(dtype)
    slots, name, params = FUSED_CODES[code]
    pairs = ((0, 0.7), (n_rew - 1, 0.25), (0, 0.3))
    got, bad, _keep = stage12_triton(
        x,
        torch.from_numpy(off),
        torch.from_numpy(w),
        code=code,
        slots=slots,
        eps=1e-6,
        correction=1.0,
        identity=False,
        loo=False,
        raw=order == "reduce_then_normalize",
        mult_cols=tuple(c for c, _ in pairs),
        mult_lams=tuple(v for _, v in pairs),
        block_r=br,
        block_k=bk,
    )
    want, _ = fused_reference(
        x.double().numpy(), off, weights=w, method=name, order=order, multipliers=pairs, **params
    )
    assert got.dtype == dtype and int(bad.sum()) == 0
    g = got.double().numpy()
    np.testing.assert_array_equal(np.isnan(g), np.isnan(want))
    err = np.abs(g - want) / (1 + np.abs(want))
    assert np.nanmax(err) <= FUSED_TOL[dtype]


@pytest.mark.parametrize(
    "opts",
    [dict(singleton="identity", baseline="leave_one_out"), dict(correction=0.0, eps=0.01)],
    ids=["identity-loo", "correction0"],
)
def test_issue23_raw_order_stage1_rules_via_fused_scores(opts):
    r, off, w = make_case([1, 2, 40, 5], 6, seed=6)
    kw = dict(eps=1e-6, correction=1.0, singleton="zero", baseline="mean") | opts
    got, keep = K.fused_scores(
        torch.from_numpy(r),
        off,
        code=K.FusedCode.SOFTMIN,
        p0=0.7,
        weights=w,
        order="reduce_then_normalize",
        mult_cols=(2,),
        mult_lams=(0.5,),
        backend="triton",
        **kw,
    )
    want, _ = fused_reference(
        r,
        off,
        weights=w,
        method="softmin",
        kappa=0.7,
        order="reduce_then_normalize",
        multipliers=((2, 0.5),),
        **kw,
    )
    assert keep is None
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode, tau", [("hard", 0.8), ("snr", 1.0)])
def test_issue23_conflict_rule_float32_equals_float64_at_threshold(mode, tau):
    """The conflict test reads float64 Z in the Triton pass too: float32 and float64 copies
    of the same values drop the same rows, those of the float64 spec."""
    r32, off = threshold_case(n_groups=60)
    w = np.ones(2)
    _, want = fused_reference(r32, off, weights=w, method="mean", conflict=mode, tau=tau)
    kw = dict(
        code=K.FusedCode.MEAN,
        weights=w,
        eps=1e-6,
        correction=1.0,
        singleton="zero",
        baseline="mean",
        conflict=mode,
        conflict_threshold=tau,
        backend="triton",
    )
    s32, keep32 = K.fused_scores(torch.from_numpy(r32), off, **kw)
    _, keep64 = K.fused_scores(torch.from_numpy(r32.astype(np.float64)), off, **kw)
    assert s32.dtype == torch.float32
    np.testing.assert_array_equal(keep32, want)
    np.testing.assert_array_equal(keep64, want)
    assert (~want).any() and want[1::3].any()


def test_issue23_triton_refuses_cvar_saying_why():
    r, off, w = make_case([4, 4], 3, seed=1)
    kw = dict(weights=w, eps=1e-6, correction=1.0, singleton="zero", baseline="mean")
    with pytest.raises(ValueError, match="order statistic that cannot be merged"):
        K.fused_scores(
            torch.from_numpy(r), off, code=K.FusedCode.CVAR, p0=0.25, backend="triton", **kw
        )


@pytest.mark.parametrize("p", [-np.inf, -3.0, -1.0, 0.0, 0.5, 1.0, 2.5, np.inf])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_issue23_power_mean_online_across_reward_blocks(p, dtype):
    """DESIGN.md 2b's power mean, merged across reward blocks with a running max/min
    reference (rescaled when it moves), zeros and all."""
    rng = np.random.default_rng(7)
    r, off, w = make_case([1, 5, 16, 9, 30], 10, seed=8)
    r = np.abs(r)
    r[rng.random(r.shape) < 0.08] = 0.0
    x = torch.from_numpy(r).to(dtype)
    got, _, _ = stage12_triton(
        x,
        torch.from_numpy(off),
        torch.from_numpy(w),
        code=6,
        slots=(p, 0.0),
        eps=1e-6,
        correction=1.0,
        identity=False,
        loo=False,
        raw=True,
        mult_cols=(2,),
        mult_lams=(0.4,),
        block_r=8,
        block_k=4,
    )
    want, _ = fused_reference(
        x.double().numpy(),
        off,
        weights=w,
        method="power_mean",
        p=p,
        order="reduce_then_normalize",
        multipliers=((2, 0.4),),
    )
    g = got.double().numpy()
    np.testing.assert_array_equal(np.isnan(g), np.isnan(want))
    assert np.nanmax(np.abs(g - want) / (1 + np.abs(want))) <= FUSED_TOL[dtype]


def test_issue23_unknown_code_raises_in_the_triton_kernel():
    from rewardagg.kernels import triton_kernel as tk

    r, off, w = make_case([4, 4], 3, seed=1)
    x = torch.from_numpy(r)
    args = dict(slots=(0.0, 0.0), eps=1e-6, correction=1.0, identity=False, loo=False)
    with pytest.raises(ValueError, match="no reducer code 9"):
        stage12_triton(x, torch.from_numpy(off), torch.from_numpy(w), code=9, **args)
    with pytest.raises(Exception, match="unknown fused reducer code"):  # the kernel itself
        tk._stage12_kernel[(1,)](
            x,
            torch.from_numpy(off),
            torch.from_numpy(w),
            torch.zeros(3, dtype=torch.float64),
            torch.empty(8, dtype=torch.float64),
            torch.empty(1, dtype=torch.float64),
            torch.zeros(2, dtype=torch.int32),
            torch.ones(8, dtype=torch.uint8),
            3,
            x.stride(0),
            1.0,
            0.0,
            1e-6,
            1.0,
            0.8,
            METHOD=9,
            CONFLICT=0,
            IDENTITY=False,
            LOO=False,
            RAW=False,
            MULT=False,
            BLOCK_R=4,
            BLOCK_K=4,
            ACC=tk.tl.float64,
        )
