"""The frozen plan (rewardagg._src.plan): checked once, chooses the backend, typed entries."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest

import rewardagg as ra
from rewardagg._src.methods import DisplayPart, FusedPart, MathPart
from rewardagg._src.plan import Plan, make_plan
from rewardagg.kernels import FusedCode

HAS_NUMBA = importlib.util.find_spec("numba") is not None


def _plan(rewards, **kw):
    args = dict(
        method="softmin",
        group_size=4,
        group_ids=None,
        weights=None,
        mask=None,
        order=None,
        center="batch",
        multipliers=None,
        reward_names=None,
        conflict=None,
        conflict_threshold=None,
        reweight_groups=True,
        eps=1e-6,
        correction=1,
        batch_norm=True,
        singleton="zero",
        baseline="mean",
        group_scale=True,
        return_info=False,
        backend="auto",
        process_group=None,
        method_params={},
    )
    args.update(kw)
    return make_plan(rewards, **args)[0]


def test_plan_is_frozen_and_resolves_limits():
    plan = _plan(np.zeros((8, 3)), method_params={"kappa": 0.0})
    assert isinstance(plan, Plan)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.order = "reduce_then_normalize"  # type: ignore[misc]
    assert plan.reducer.name == "mean"  # softmin at kappa 0 is the mean, exactly
    assert plan.backend == "numpy" and not plan.fused


@pytest.mark.skipif(not HAS_NUMBA, reason="needs numba")
def test_auto_takes_the_fused_pass_for_every_option_it_carries():
    big = np.random.default_rng(0).random((1 << 13, 8))
    for kw in (
        {},
        {"order": "reduce_then_normalize"},
        {"multipliers": {0: 1.0}},
        {"conflict": "snr"},
        {"return_info": True},
    ):
        plan = _plan(big, **kw)
        assert plan.backend == "numba" and plan.fused, kw
    # what the kernel does not carry runs on the array path of the input's library
    for kw in ({"group_scale": False}, {"method": "grpo", "method_params": {}}):
        plan = _plan(big, **kw)
        assert plan.backend == "numpy" and not plan.fused, kw


def test_explicit_backend_refused_only_for_a_real_limit():
    pytest.importorskip("triton")
    torch = pytest.importorskip("torch")
    x = torch.zeros((8, 3))
    import os

    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        with pytest.raises(ValueError, match="CUDA"):
            ra.advantages(x, group_size=4, method="cvar", backend="triton")
        return
    with pytest.raises(ValueError, match="order statistic"):
        ra.advantages(x, group_size=4, method="cvar", backend="triton")


def test_registered_method_has_no_fused_kernel_and_says_so():
    pytest.importorskip("numba")

    def plain(z, *, weights=None):
        return np.nanmean(z, axis=-1)

    ra.register_aggregator("plan_test_plain", plain)
    try:
        with pytest.raises(ValueError, match="Python code"):
            ra.advantages(np.zeros((8, 2)), group_size=4, method="plan_test_plain", backend="numba")
        # auto never picks a backend that cannot run the plan
        a = ra.advantages(
            np.random.default_rng(1).random((1 << 13, 4)), group_size=8, method="plan_test_plain"
        )
        assert np.all(np.isfinite(a))
    finally:
        ra.unregister_aggregator("plan_test_plain")


def test_group_scale_is_checked_and_refused_for_grpo():
    with pytest.raises(TypeError, match="group_scale"):
        ra.advantages(np.zeros((4, 2)), group_size=2, group_scale="no")
    with pytest.raises(ValueError, match="scale='none'"):
        ra.advantages(np.zeros((4, 2)), group_size=2, method="grpo", group_scale=False)


def test_method_entries_in_typed_parts():
    """Every entry reads as math / fused / display parts, and the fused part carries a
    FusedCode (never a bare integer)."""
    for name in ra.available_methods():
        entry = ra.get_aggregator(name)
        assert isinstance(entry.math, MathPart) and entry.math.kernel is not None
        assert isinstance(entry.fused, FusedPart) and isinstance(entry.display, DisplayPart)
        if entry.fused.code is not None:
            assert isinstance(entry.fused.code, FusedCode)
            assert len(entry.fused.slots) <= 2
        for setting in entry.display.sweep:
            entry.bind(setting)


def test_grpo_row_with_only_zero_weight_rewards_scores_zero():
    """DESIGN.md 2: grpo's s = sum_k w_k R_ik over the present rewards; a row whose present
    rewards all have weight 0 gets s = 0 (a score), not "no score"."""
    r = np.array([[1.0, np.nan], [np.nan, 5.0], [0.0, 2.0], [1.0, 1.0]])
    a = ra.advantages(r, group_size=4, method="grpo", weights=[1.0, 0.0], scale="none")
    # s = [1, 0, 0, 1]: mean 0.5 over all four rows
    np.testing.assert_allclose(a, [0.5, -0.5, -0.5, 0.5], rtol=0, atol=1e-15)
