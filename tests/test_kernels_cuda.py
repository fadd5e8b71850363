"""The compiled Triton kernel on a real GPU against the float64 torch reference (skipped
without CUDA). Run by benchmarks/gpu_check.sh; runtime a few seconds plus compilation."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
# triton is not imported here: tests/test_kernels_triton.py must import it first, with
# TRITON_INTERPRET=1, when both modules run in one process
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton"),
]
if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    pytest.skip(
        "TRITON_INTERPRET is set: the interpreter tests cover this", allow_module_level=True
    )

import rewardagg.kernels as K  # noqa: E402
from kernel_cases import METHODS, make_case  # noqa: E402

SHAPES = [([16] * 64, 17), ([1, 3, 16, 100, 300, 7], 5), ([8] * 32, 1), ([5, 9], 130)]
TOL = {torch.float64: 1e-9, torch.float32: 5e-5, torch.bfloat16: 5e-5, torch.float16: 5e-5}


# every method in float32, every dtype with softmin: each pair is one Triton compilation
PAIRS = [(m, torch.float32) for m in METHODS] + [
    ("softmin", d) for d in (torch.float64, torch.bfloat16, torch.float16)
]


@pytest.mark.parametrize("method, dtype", PAIRS, ids=lambda v: str(v))
@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_triton_cuda_matches_reference(method, shape, dtype):
    sizes, n_rew = SHAPES[shape]
    r, off, w = make_case(sizes, n_rew, seed=shape)
    x = torch.from_numpy(r).to(dtype)
    kw = {"kappa": 1.5} if method == "softmin" else {}
    want = K.stage12(x.double(), off, weights=w, method=method, backend="torch", **kw)
    got = K.stage12(x.cuda(), off, weights=w, method=method, backend="triton", **kw)
    assert got.is_cuda and got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(
        got.cpu().double(), want, rtol=TOL[dtype], atol=TOL[dtype], equal_nan=True
    )
    again = K.stage12(x.cuda(), off, weights=w, method=method, backend="triton", **kw)
    assert torch.equal(got.nan_to_num(7.0), again.nan_to_num(7.0))  # deterministic


def test_auto_picks_triton_on_cuda_and_raises_on_inf():
    r, off, w = make_case([16] * 4, 3, p_missing=0)
    x = torch.from_numpy(r).cuda()
    assert K.resolve_backend(x) == "triton"
    x[3, 1] = float("inf")
    with pytest.raises(ValueError, match="infinite"):
        K.stage12(x, off, weights=w, method="softmin")
    np.testing.assert_equal(K.available_backends(x)[0], "triton")
