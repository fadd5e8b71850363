"""The matrix of issue 23: every method at every setting of its sweep x every option x every
backend x float64/float32, against the independent oracle (tests/oracle.py).

An option a method cannot take is asserted to raise a ValueError. CI runs a sample of the
full product drawn with a fixed seed (:data:`CI_CASES` cases); ``REWARDAGG_FULL_MATRIX=1``
runs it whole. Triton runs under ``TRITON_INTERPRET=1`` in a fresh process (the variable
must be set before triton is imported): the Triton cases of the same sample run there
through :func:`test_triton_cases_in_an_interpreter_process`.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
import subprocess
import sys
import zlib

import numpy as np
import pytest

import oracle
import rewardagg as ra
from rewardagg import kernels

FULL = os.environ.get("REWARDAGG_FULL_MATRIX", "0") not in ("", "0")
IN_TRITON_PROCESS = os.environ.get("REWARDAGG_MATRIX_TRITON") == "1"
CI_CASES = 400
"""Cases of the CI sample (fixed seed), before the Triton ones run in their own process."""

HAS = {m: importlib.util.find_spec(m) is not None for m in ("torch", "numba", "triton")}

# -- the method settings: each method at each setting of its sweep (grpo: its scales) -------

METHOD_SETTINGS: list[tuple[str, dict]] = []
for _name in ra.available_methods():
    _entry = ra.get_aggregator(_name)
    if _name not in oracle.REDUCERS and _name != "grpo":
        continue  # a method registered at run time by another test module
    _sweep = [{"scale": s} for s in ("group", "batch", "none")] if _name == "grpo" else _entry.sweep
    METHOD_SETTINGS += [(_name, dict(p)) for p in _sweep]

# -- the options: name -> (keywords of advantages, data variant) ----------------------------

W = np.array([1.5, 0.0, 0.7])  # a zero weight: that reward never takes part
OPTIONS: dict[str, dict] = {
    "plain": {},
    "order_flip": {"order": "flip"},
    "center_group": {"center": "group"},
    "multipliers": {"multipliers": {0: 0.7, 2: 0.3}},
    "conflict_hard": {"conflict": "hard"},
    "conflict_hard_no_reweight": {"conflict": "hard", "reweight_groups": False},
    "conflict_snr": {"conflict": "snr", "conflict_threshold": 0.6},
    "conflict_snr_no_reweight": {
        "conflict": "snr",
        "conflict_threshold": 0.6,
        "reweight_groups": False,
    },
    "conflict_x_multipliers": {"conflict": "snr", "multipliers": {1: 0.5}},
    "weights": {"weights": W},
    "nan": {"data": "nan"},
    "ragged_labels": {"data": "ragged"},
    "singleton_identity": {"data": "ragged", "singleton": "identity"},
    "leave_one_out": {"baseline": "leave_one_out"},
    "batch_norm_off": {"batch_norm": False},
    "group_scale_off": {"group_scale": False},
    "group_scale_off_x_conflict": {"group_scale": False, "conflict": "hard", "data": "nan"},
}

BACKENDS = ("numpy", "torch", "numba", "triton")
DTYPES = ("float64", "float32")


def _data(variant: str, method: str):
    """Small batches (fast oracle, few Triton programs) with ties, an all-equal cell and,
    per variant, NaN or shuffled uneven labelled groups with a singleton. Values are
    float32 numbers, so the float32 and float64 runs share one oracle."""
    rng = np.random.default_rng(zlib.crc32(f"{variant}/{method}".encode()))
    sizes = [4, 4, 4] if variant != "ragged" else [1, 3, 5, 2]
    n = sum(sizes)
    r = rng.uniform(0.0, 1.0, (n, 3))
    r[:, 0] = np.round(r[:, 0] * 2) / 2  # a pass/half/fail reward: ties
    r[: sizes[0], 1] = 0.25  # an all-equal cell
    if variant == "nan":
        r[rng.random(r.shape) < 0.2] = np.nan
        r[1, :] = np.nan  # a row without any reward
    r = r.astype(np.float32).astype(np.float64)
    if variant == "ragged":
        labels = np.repeat(np.arange(len(sizes)) * 7 + 3, sizes)  # labels, not 0..G-1
        rng.shuffle(labels)
        return r, dict(group_ids=labels)
    return r, dict(group_size=4)


def _expect_raise(method: str, opts: dict, backend: str) -> str:
    """The ValueError's expected text when the combination is invalid, else ""."""
    entry = ra.get_aggregator(method)
    grpo = entry.kind == "sum_first"
    order = opts.get("order")
    if order is not None and order not in entry.orders:
        return "order"
    if grpo and ("center" in opts or "multipliers" in opts or opts.get("group_scale") is False):
        return "grpo"
    if "conflict" in opts and (grpo or (order or entry.order) != "normalize_then_reduce"):
        return "per-reward"
    if backend == "triton" and entry.fused_code == kernels.FusedCode.CVAR:
        return "order statistic"
    return ""


def _cases():
    out = []
    for (method, params), opt, backend, dtype in itertools.product(
        METHOD_SETTINGS, OPTIONS, BACKENDS, DTYPES
    ):
        label = "-".join([method, *(f"{k}{v}" for k, v in params.items()), opt])
        out.append(
            pytest.param(method, params, opt, backend, dtype, id=f"{label}-{backend}-{dtype}")
        )
    return out


ALL_CASES = _cases()
if FULL:
    SELECTED = ALL_CASES
else:
    SELECTED = random.Random(23).sample(ALL_CASES, CI_CASES)
SELECTED = [
    c for c in SELECTED if (c.values[3] == "triton") == IN_TRITON_PROCESS
]  # Triton cases run in their own process


def _flip(method: str) -> str:
    default = ra.get_aggregator(method).order
    orders = ("normalize_then_reduce", "reduce_then_normalize")
    return orders[1 - orders.index(default)]


def _call(method, params, opt, backend, dtype):
    opts = dict(OPTIONS[opt])
    variant = opts.pop("data", "")
    if opts.get("order") == "flip":
        opts["order"] = _flip(method)
    r, groups = _data(variant, method)
    return r, groups, opts


@pytest.mark.parametrize(("method", "params", "opt", "backend", "dtype"), SELECTED)
def test_matrix(method, params, opt, backend, dtype, monkeypatch):
    if backend != "numpy" and not HAS["torch"] and backend in ("torch", "triton"):
        pytest.skip("needs torch")
    if backend in ("numba", "triton") and not HAS[backend]:
        pytest.skip(f"needs {backend}")
    r, groups, opts = _call(method, params, opt, backend, dtype)
    x = r.astype(dtype)
    if backend in ("torch", "triton"):
        import torch

        x = torch.from_numpy(x)
    calls = []
    fused = kernels.fused_scores
    monkeypatch.setattr(kernels, "fused_scores", lambda *a, **k: calls.append(1) or fused(*a, **k))
    kw = dict(method=method, backend=backend, **groups, **params, **opts)
    why = _expect_raise(method, opts, backend)
    if why:
        with pytest.raises(ValueError, match=why):
            ra.advantages(x, **kw)
        return
    got = ra.advantages(x, **kw)
    got = np.asarray(got.numpy() if hasattr(got, "numpy") else got, dtype=np.float64)
    ref = oracle.advantages(r, method=method, **groups, **params, **opts)
    tol = 1e-9 if dtype == "float64" else 2e-4
    err = np.abs(got - ref) / (1.0 + np.abs(ref))
    assert err.max() <= tol, f"max rel err {err.max():.3g}\ngot {got}\nref {ref}"
    # the fused backends run their kernel whenever the kernel carries the plan
    entry = ra.get_aggregator(method)
    carried = (
        backend in ("numba", "triton")
        and entry.kind != "sum_first"
        and opts.get("group_scale", True)
        and backend in entry.fused_backends
    )
    assert bool(calls) == carried, f"fused kernel called {len(calls)}x, expected {carried}"


@pytest.mark.skipif(IN_TRITON_PROCESS, reason="this process runs the Triton cases")
def test_triton_cases_in_an_interpreter_process():
    """The sample's Triton cases, in a fresh process with ``TRITON_INTERPRET=1``."""
    if not (HAS["triton"] and HAS["torch"]):
        pytest.skip("needs triton and torch")
    env = dict(os.environ, TRITON_INTERPRET="1", REWARDAGG_MATRIX_TRITON="1")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", __file__],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout


def test_matrix_size():
    """The product's size, and the CI sample covers every backend, dtype and option."""
    n_full = len(METHOD_SETTINGS) * len(OPTIONS) * len(BACKENDS) * len(DTYPES)
    assert len(ALL_CASES) == n_full
    sample = ALL_CASES if FULL else random.Random(23).sample(ALL_CASES, CI_CASES)
    assert {c.values[3] for c in sample} == set(BACKENDS)
    assert {c.values[4] for c in sample} == set(DTYPES)
    assert {c.values[2] for c in sample} == set(OPTIONS)
    print(f"matrix: {n_full} cases in full, {len(sample)} in CI")
