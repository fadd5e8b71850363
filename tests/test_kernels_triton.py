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
from kernel_cases import METHODS, fused_call, make_case  # noqa: E402
from kernel_spec import stage12_reference  # noqa: E402
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
