r"""GD²PO's conflict filter and group reweighting (DESIGN.md section 2c).

A completion whose per-reward advantages disagree in sign gets a score that is the sum of
opposite signals; GD²PO drops it instead, and scales each prompt's update by the share of
its completions that survive. With :math:`t_{ik} = w_k Z_{ik}` over the present rewards
with :math:`w_k > 0`:

.. math::

    \text{mixed}_i = (\exists k:\ t_{ik} > 10^{-8}) \wedge (\exists k:\ t_{ik} < -10^{-8})

``"hard"`` drops every mixed row; ``"snr"`` drops a mixed row only when its terms mostly
cancel, :math:`|\sum_k t_{ik}| / (\sum_k |t_{ik}| + 10^{-8}) < \tau`. Then

.. math::

    \rho_g = \frac{\#\{\text{kept rows of } g\}}{\#\{\text{rows of } g \text{ with a score}\}},
    \qquad S'_i = \rho_{g(i)} S_i \ \text{(kept rows)}

(:math:`\rho = 1` with ``reweight_groups=False``); dropped rows take no part in stage 3
and get advantage exactly 0.

Reference: Liu et al., "Mitigating Multi-Reward Conflicts via Group-Dynamic
reward-Decoupled Policy Optimization", 2026, https://arxiv.org/abs/2606.16771
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardagg._src.methods import CONFLICTS, Aggregator
from rewardagg._src.namespace import Ops
from rewardagg._src.validation import check_bool, check_choice, check_real

__all__ = ["ConflictFilter", "check_conflict", "conflict_rows", "reweight"]

TINY = 1e-8
"""GD²PO's sign and ratio tolerance (their code's constant)."""


@dataclass(frozen=True)
class ConflictFilter:
    """The resolved options: ``mode`` ``"hard"``/``"snr"``, ``tau`` and ``reweight``."""

    mode: str
    tau: float
    reweight: bool


def check_conflict(
    agg: Aggregator, conflict: Any, threshold: Any, reweight_groups: Any, order: str
) -> ConflictFilter | None:
    """The filter to run (``None``: none). ``conflict=None`` and ``threshold=None`` take the
    method's defaults (``"gd2po"`` is gdpo with ``"hard"``)."""
    reweight_groups = check_bool(reweight_groups, "reweight_groups")
    mode = agg.conflict if conflict is None else check_choice(conflict, "conflict", CONFLICTS)
    tau = (
        agg.conflict_threshold if threshold is None else check_real(threshold, "conflict_threshold")
    )
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"conflict_threshold must be in [0, 1]; got {threshold!r}")
    if mode is None:
        return None
    if agg.kind == "sum_first" or order != "normalize_then_reduce":
        raise ValueError(
            f"conflict={mode!r} compares per-reward advantages (group z-scores), which "
            f"method {agg.name!r} with order={order!r} does not have; use a z-score method "
            "with order='normalize_then_reduce'"
        )
    return ConflictFilter(mode, tau, reweight_groups)


def conflict_rows(z: Any, rw: Any, ops: Ops, filt: ConflictFilter) -> tuple[Any, Any]:
    """``(drop, opposing)``: the rows the filter drops ``(N,)`` and, per row and reward,
    whether the reward's term has the sign opposite to the row's sum (the rewards "in
    conflict"), both boolean in ``z``'s library."""
    t = rw.filled(z, ops) * rw.w
    pos = ops.amax(ops.where(t > TINY, 1.0, 0.0 * t), -1) > 0
    neg = ops.amax(ops.where(t < -TINY, 1.0, 0.0 * t), -1) > 0
    drop = pos & neg
    total = ops.sum(t, -1)
    if filt.mode == "snr":
        ratio = ops.where(total < 0, -total, total) / (ops.sum(ops.where(t < 0, -t, t), -1) + TINY)
        drop = drop & (ratio < filt.tau)
    if rw.has is not None:
        drop = drop & rw.has
    opposing = ops.where(total[..., None] >= 0, t < -TINY, t > TINY)
    return drop, opposing


def reweight(
    s: Any, drop: Any, layout: Any, ops: Ops, filt: ConflictFilter
) -> tuple[Any, np.ndarray]:
    """``(S', rho)``: dropped rows lose their score (NaN, so stage 3 skips them and they
    get advantage 0), kept rows are scaled by their group's kept share ``rho`` (per group,
    in sorted group order). ``s`` and ``drop`` are in sorted row order."""
    drop_np = np.asarray(drop if isinstance(drop, np.ndarray) else ops.to_numpy(drop), bool)
    has = ~np.isnan(np.asarray(ops.to_numpy(s), dtype=np.float64))
    off = layout.offsets
    sizes = np.diff(off)
    starts = off[:-1][sizes > 0]
    with_score = np.add.reduceat(has.astype(np.float64), starts) if starts.size else np.zeros(0)
    kept = (
        np.add.reduceat((has & ~drop_np).astype(np.float64), starts) if starts.size else with_score
    )
    rho = np.where(with_score > 0, kept / np.maximum(with_score, 1.0), 1.0)
    if not filt.reweight:
        rho = np.ones_like(rho)
    factor = np.repeat(rho, sizes[sizes > 0])
    out = ops.where(ops.bool_like(drop_np, s), ops.nan, s * ops.asarray(factor, like=s))
    return out, rho
