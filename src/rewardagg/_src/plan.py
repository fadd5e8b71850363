r"""Every argument of :func:`rewardagg.advantages` checked once, into a frozen :class:`Plan`.

The plan is what the executor (:mod:`rewardagg._src.executor`) runs, whatever the backend:
the method's table entry with its bound parameters (and the entry that computes it exactly
for them, e.g. softmin at :math:`\kappa = 0` is the mean), the stage order, stage-1 options
(including ``group_scale``: stage 1 standardises, or only centres), the constraint
multipliers as ``(cols, lams)``, the GD²PO conflict filter, stage 3 (``batch_norm``,
``center``), the reward weights, the group layout and the backend.

The plan chooses the backend. ``"auto"`` never picks one that cannot run the plan; an
explicit backend that cannot is a ``ValueError`` saying why, and only for a real limit:
a registered method has no fused kernel (its reducer is Python code), and Triton merges
reward blocks online, which an order statistic such as CVaR cannot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewardagg import kernels
from rewardagg._src.conflict import ConflictFilter, check_conflict
from rewardagg._src.grouping import GroupLayout, make_layout
from rewardagg._src.methods import Aggregator
from rewardagg._src.multipliers import resolve_multipliers
from rewardagg._src.normalisation import check_stage_options
from rewardagg._src.registry import get_aggregator
from rewardagg._src.validation import (
    Prepared,
    check_bool,
    check_choice,
    prepare_rewards,
    prepare_weights,
)
from rewardagg.kernels.codes import FusedCode

__all__ = ["CENTERS", "Plan", "Stage1", "make_plan"]

CENTERS = ("batch", "group")


@dataclass(frozen=True)
class Stage1:
    """Stage-1 options (DESIGN.md section 2): ``eps``, ``correction``, ``singleton``,
    ``baseline``, and ``scale`` (``False``: centre only, :math:`R - \\mu`)."""

    eps: float = 1e-6
    correction: float = 1.0
    singleton: str = "zero"
    baseline: str = "mean"
    scale: bool = True

    def kwargs(self) -> dict[str, Any]:
        """Keywords of :func:`rewardagg._src.normalisation.standardize_cells`."""
        return dict(
            eps=self.eps,
            correction=self.correction,
            singleton=self.singleton,
            baseline=self.baseline,
            scale=self.scale,
        )


@dataclass(frozen=True)
class Plan:
    """A checked, immutable description of one advantage computation.

    Attributes:
        method: the method's table entry; ``params`` its bound parameters.
        reducer: the entry that computes stage 2 exactly for ``params`` (``method`` itself
            unless a limit applies); ``reducer_params`` its parameters.
        order: ``"normalize_then_reduce"`` or ``"reduce_then_normalize"`` (grpo: the
            latter, composed as a weighted sum of the raw rewards).
        stage1: :class:`Stage1`.
        cols, lams: constraint multipliers :math:`\\lambda_c` on columns ``cols``.
        conflict: the GD²PO filter or ``None``.
        batch_norm, center: stage 3 (grpo has none: ``batch_norm=False``).
        grpo_scale: grpo's ``scale`` (``None`` for every other method).
        weights: ``(K,)`` float64 or ``None`` (all ones).
        layout: the group layout.
        backend: ``"numpy"``, ``"torch"``, ``"numba"`` or ``"triton"``.
        fused: the fused kernel runs stages 1-2 (``backend`` is numba or Triton and the
            plan is one the kernel contract carries); otherwise the array path of the
            input's library runs them.
    """

    method: Aggregator
    params: Mapping[str, Any]
    reducer: Aggregator
    reducer_params: Mapping[str, Any]
    order: str
    stage1: Stage1
    layout: GroupLayout = field(repr=False)
    backend: str
    fused: bool
    n_rewards: int
    cols: tuple[int, ...] = ()
    lams: tuple[float, ...] = ()
    conflict: ConflictFilter | None = None
    batch_norm: bool = True
    center: str = "batch"
    grpo_scale: str | None = None
    weights: np.ndarray | None = field(default=None, repr=False)
    return_info: bool = False
    process_group: Any = field(default=None, repr=False)

    @property
    def sum_first(self) -> bool:
        return self.method.kind == "sum_first"

    def weights_or_ones(self) -> np.ndarray:
        return np.ones(self.n_rewards) if self.weights is None else self.weights


REAL_LIMITS = {
    ("triton", FusedCode.CVAR): "its reduction is an order statistic that "
    "cannot be merged across the reward blocks Triton reduces online"
}
"""(backend, code) pairs a fused kernel cannot run by its nature."""


def fused_limit(method: Aggregator, backend: str) -> str:
    """Why the fused ``backend`` cannot run ``method`` at all ("" when it can): a real
    limit, not a missing feature."""
    if method.kind == "sum_first":
        return ""  # a composition: its stages 1-2 run on the array path of the input
    if method.fused.code is None:
        return (
            f"runs the methods with a fused kernel ({', '.join(fused_method_names())}); "
            f"method {method.name!r} is Python code with none"
        )
    why = REAL_LIMITS.get((backend, FusedCode(method.fused.code)), "")
    return f"has no kernel for method {method.name!r}: {why}" if why else ""


def fused_method_names() -> tuple[str, ...]:
    from rewardagg._src.registry import available_methods

    names = available_methods()
    return tuple(n for n in names if get_aggregator(n).fused.code is not None)


def kernel_carries(method: Aggregator, backend: str, *, scale: bool) -> bool:
    """Whether ``backend``'s fused kernel (:func:`rewardagg.kernels.fused_scores`) carries
    this plan; what it does not carry, without a real limit (grpo's composition, the
    centring-only stage 1, a code not written for that kernel yet), runs its stages 1-2 on
    the array path of the input's library, so every option runs under every backend."""
    if method.kind == "sum_first" or not scale or method.fused.code is None:
        return False
    return backend in method.fused.backends


def _choose_backend(
    backend: str, rewards: Any, method: Aggregator, scale: bool
) -> tuple[str, bool]:
    """``(backend, fused)``: the backend that runs the plan ("auto": the input's array
    library), and whether its fused kernel runs stages 1-2."""
    if backend == "auto":
        name = kernels.resolve_backend(rewards) if hasattr(rewards, "shape") else "numpy"
        if name in kernels.FUSED_BACKENDS and kernel_carries(method, name, scale=scale):
            return name, True
        return "auto", False
    if backend in kernels.FUSED_BACKENDS:
        kernels.resolve_backend(rewards, backend)  # a missing package or a wrong device
        why = fused_limit(method, backend)
        if why:
            raise ValueError(f"backend={backend!r} {why}; use backend='auto', 'numpy' or 'torch'")
        return backend, kernel_carries(method, backend, scale=scale)
    return backend, False


def make_plan(
    rewards: Any,
    *,
    method: str,
    group_size: Any,
    group_ids: Any,
    weights: Any,
    mask: Any,
    order: str | None,
    center: str,
    multipliers: Mapping[Any, float] | None,
    reward_names: Sequence[str] | None,
    conflict: str | None,
    conflict_threshold: float | None,
    reweight_groups: bool,
    eps: float,
    correction: float,
    batch_norm: bool,
    singleton: str,
    baseline: str,
    group_scale: bool,
    return_info: bool,
    backend: str,
    process_group: Any,
    method_params: Mapping[str, Any],
) -> tuple[Plan, Prepared]:
    """Check every argument once: ``(plan, prepared rewards)``."""
    entry = get_aggregator(method)
    params = entry.bind(method_params)
    batch_norm = check_bool(batch_norm, "batch_norm")
    return_info = check_bool(return_info, "return_info")
    group_scale = check_bool(group_scale, "group_scale")
    order = entry.check_order(order)
    center = check_choice(center, "center", CENTERS)
    check_choice(backend, "backend", kernels.BACKENDS)
    if entry.kind == "sum_first" and (center != "batch" or multipliers is not None):
        raise ValueError(
            f"method {entry.name!r} has no stage 3, so no center= or multipliers=; use "
            "method='gdpo' with order='reduce_then_normalize' (GRPO's score) instead"
        )
    if entry.kind == "sum_first" and not group_scale:
        raise ValueError(
            f"method {entry.name!r} sets its group scaling with scale='group'|'batch'|'none'; "
            "group_scale=False is for the z-score methods (use scale='none', Dr. GRPO)"
        )
    filt = check_conflict(entry, conflict, conflict_threshold, reweight_groups, order)
    eps, correction, singleton, baseline = check_stage_options(eps, correction, singleton, baseline)
    stage1 = Stage1(eps, correction, singleton, baseline, group_scale)
    limit = entry.limits(params) if entry.limits is not None else None
    reducer, reducer_params = (get_aggregator(limit[0]), limit[1]) if limit else (entry, params)
    name, fused = _choose_backend(backend, rewards, entry, group_scale)
    library = {"numba": "auto", "triton": "torch"}.get(backend, backend)
    prep = prepare_rewards(rewards, mask, library=library, check_finite=False)
    if not fused:  # stages 1-2 on the array path of the prepared rewards' library
        name = prep.ops.name
    w = prepare_weights(weights, prep.n_rewards)
    cols, lams = resolve_multipliers(multipliers, reward_names, prep.n_rewards)
    layout = make_layout(prep.n_rows, group_size, group_ids)
    plan = Plan(
        method=entry,
        params=params,
        reducer=reducer,
        reducer_params=reducer_params,
        order=order,
        stage1=stage1,
        layout=layout,
        backend=name,
        fused=fused,
        n_rewards=prep.n_rewards,
        cols=tuple(cols),
        lams=tuple(float(x) for x in lams),
        conflict=filt,
        batch_norm=batch_norm and entry.kind != "sum_first",
        center=center,
        grpo_scale=params["scale"] if entry.kind == "sum_first" else None,
        weights=w,
        return_info=return_info,
        process_group=process_group,
    )
    return plan, prep
