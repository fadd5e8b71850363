"""What an aggregation did to a batch, as plain numbers a logger can take.

All quantities are computed in float64 numpy from the stage-1 scores ``Z``, the
participation weights, and the final advantages ``A`` (see ``DESIGN.md``, diagnostics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewardagg._src.aggregators import row_weights
from rewardagg._src.blocks import _as_rows, iter_blocks, to_block_rows
from rewardagg._src.conflict import conflict_rows
from rewardagg._src.namespace import NumpyOps
from rewardagg._src.normalisation import standardize_cells

_NP = NumpyOps()

__all__ = ["AggregationInfo", "blocked_info"]

#: Advantages closer than this, relative to the larger magnitude, count as one value.
DISTINCT_RTOL = 1e-6
_DISTINCT_ATOL = 1e-12


@dataclass(frozen=True)
class AggregationInfo:
    """Per-batch diagnostics of an advantage computation (``return_info=True``).

    Attributes:
        method: the method name.
        params: the method parameters used (e.g. ``{"kappa": 1.0}``).
        n_rows: completions in the batch.
        n_groups: groups in the batch.
        rows_without_reward: rows with no present positive-weight reward (advantage 0).
        bottleneck_share: ``(K,)`` fraction of rows with rewards whose lowest ``Z`` is
            reward ``k`` (ties split evenly). Method-independent: which reward holds rows back.
        attention: ``(K,)`` mean over rows with rewards of :math:`\\partial S_i/\\partial Z_{ik}`
            (NaN for a registered method without an attention function).
        zero_spread_fraction: ``(K,)`` fraction of groups whose reward-``k`` cell carries no
            signal (fewer than two present values, or all equal).
        masked_failures: rows with some :math:`Z_{ik} \\le -1` that still get a positive
            advantage.
        masked_failures_per_reward: ``(K,)`` the same, per reward.
        distinct_advantages_per_group: ``(n_groups,)`` distinct advantage values in each group
            (values within 1e-6 relative count as one): 1 means the group gives no signal
            (GDPO's "advantage collapse").
        conflict_dropped: rows the GD²PO conflict filter dropped (0 without a filter).
        conflict_rho: ``(n_groups,)`` each group's kept share :math:`\\rho_g` (groups in
            order of first appearance); ``None`` without a filter.
        conflict_per_reward: ``(K,)`` share of the dropped rows in which reward ``k``'s
            term opposed the sign of the row's sum (which rewards were in conflict);
            ``None`` without a filter.
        dropped: ``(N,)`` bool in the caller's row order, ``True`` for each row the
            conflict filter dropped (advantage 0); ``None`` without a filter.
    """

    method: str
    params: Mapping[str, Any]
    n_rows: int
    n_groups: int
    rows_without_reward: int
    bottleneck_share: np.ndarray
    attention: np.ndarray
    zero_spread_fraction: np.ndarray
    masked_failures: int
    masked_failures_per_reward: np.ndarray
    distinct_advantages_per_group: np.ndarray = field(repr=False)
    conflict_dropped: int = 0
    conflict_rho: np.ndarray | None = field(default=None, repr=False)
    conflict_per_reward: np.ndarray | None = None
    dropped: np.ndarray | None = field(default=None, repr=False)

    def to_metrics(
        self, reward_names: Sequence[str] | None = None, prefix: str = ""
    ) -> dict[str, float]:
        """A flat ``{name: float}`` dict, e.g. ``{"bottleneck_share/format": 0.4, ...}``.

        Args:
            reward_names: one name per reward (default ``"0"``, ``"1"``, ...).
            prefix: prepended to every key (e.g. ``"rewardagg/"``).
        """
        k = self.bottleneck_share.shape[0]
        names = (
            [str(i) for i in range(k)] if reward_names is None else [str(n) for n in reward_names]
        )
        if len(names) != k:
            raise ValueError(
                f"reward_names must have {k} entries, one per reward; got {len(names)}"
            )
        out: dict[str, float] = {
            "n_rows": float(self.n_rows),
            "n_groups": float(self.n_groups),
            "rows_without_reward": float(self.rows_without_reward),
            "masked_failures": float(self.masked_failures),
            "distinct_advantages_per_group/mean": float(
                np.mean(self.distinct_advantages_per_group)
            ),
            "distinct_advantages_per_group/min": float(np.min(self.distinct_advantages_per_group)),
            "collapsed_group_fraction": float(np.mean(self.distinct_advantages_per_group <= 1)),
        }
        for key, value in self.params.items():
            if isinstance(value, (int, float)):
                out[f"method/{key}"] = float(value)
        if self.conflict_rho is not None:
            out["conflict_dropped"] = float(self.conflict_dropped)
            out["conflict_dropped_share"] = self.conflict_dropped / max(self.n_rows, 1)
            out["conflict_rho/mean"] = float(np.mean(self.conflict_rho))
            out["conflict_rho/min"] = float(np.min(self.conflict_rho))
        per_reward = {
            "bottleneck_share": self.bottleneck_share,
            "attention": self.attention,
            "zero_spread_fraction": self.zero_spread_fraction,
            "masked_failures": self.masked_failures_per_reward,
        }
        if self.conflict_per_reward is not None:
            per_reward["conflict"] = self.conflict_per_reward
        for metric, values in per_reward.items():
            for name, value in zip(names, values, strict=True):
                out[f"{metric}/{name}"] = float(value)
        return {prefix + key: value for key, value in out.items()}


def _distinct_counts(a_sorted: np.ndarray, layout) -> np.ndarray:
    counts = np.empty(layout.n_groups, dtype=np.int64)
    pos = 0
    for b, blk in layout.blocks(a_sorted):
        v = np.sort(blk, axis=1)
        gap = np.abs(np.diff(v, axis=1))
        tol = DISTINCT_RTOL * np.maximum(np.abs(v[:, 1:]), np.abs(v[:, :-1])) + _DISTINCT_ATOL
        counts[pos : pos + b.n_groups] = 1 + np.count_nonzero(gap > tol, axis=1)
        pos += b.n_groups
    out = np.empty_like(counts)
    out[layout.group_index] = counts
    return out


def _attention_rows(plan: Any, x_rows: Any, z_rows: Any, rw: Any, miss: Any) -> Any:
    """``dS/dZ`` of the reducer at the values it reduced (``dS/dR`` for the raw-reward
    order; grpo's only parameter acts after its sum, so its attention is the weights)."""
    entry = plan.method
    if entry.attention is None:
        return None
    att = plan.reducer.attention if plan.reducer is not entry else entry.attention
    if entry.kind == "sum_first":
        return att(z_rows, rw, _NP)
    if plan.order == "reduce_then_normalize":
        return att(x_rows, row_weights(x_rows, plan.weights, _NP, miss), _NP, **plan.reducer_params)
    return att(z_rows, rw, _NP, **plan.reducer_params)


def _info_params(plan: Any) -> dict[str, Any]:
    params = {**plan.params, "order": plan.order}
    if not plan.sum_first:
        params["center"] = plan.center
    params.update({f"multiplier/{c}": lam for c, lam in zip(plan.cols, plan.lams, strict=True)})
    if plan.conflict is not None:
        params.update(conflict=plan.conflict.mode, conflict_threshold=plan.conflict.tau)
    return params


def blocked_info(
    plan: Any,
    values: np.ndarray,
    adv_sorted: np.ndarray,
    drop_sorted: np.ndarray | None,
    rho: np.ndarray | None,
) -> AggregationInfo:
    """:class:`AggregationInfo` of a computation (``plan``) on the caller's ``values``
    ``(N, K)`` numpy, from the sorted advantages and conflict verdict, computed one block of
    whole groups at a time in float64: the extra memory is a few blocks and a few ``(N,)``
    vectors, whatever ``K`` (DESIGN.md, diagnostics)."""
    layout = plan.layout
    n, k = values.shape
    a_sorted = np.asarray(adv_sorted, dtype=np.float64)
    n_with = 0
    bottleneck = np.zeros(k)
    att_sum = np.zeros(k)
    no_signal = np.zeros(k)
    failed_pos = np.zeros(k, dtype=np.int64)
    masked = 0
    opposing = np.zeros(k)
    stage1 = plan.stage1.kwargs()
    filt = plan.conflict
    has_att = plan.method.attention is not None
    for r0, g, m, xt, missing in iter_blocks(values, layout, dtype=np.float64):
        zt, signal = standardize_cells(xt, missing, axis=1, ops=_NP, **stage1)
        no_signal += (~np.asarray(signal)).reshape(k, -1).sum(axis=1)
        z = _as_rows(zt)
        miss = None if missing is None else _as_rows(missing)
        rw = row_weights(z, plan.weights, _NP, miss)
        present = np.broadcast_to(
            np.ones(z.shape, bool) if rw.present is None else rw.present, z.shape
        )
        has = present.any(axis=1)
        n_with += int(has.sum())
        zf = np.where(present, z, np.inf)
        ties = (zf == zf.min(axis=1, keepdims=True)) & present
        share = ties / np.maximum(ties.sum(axis=1, keepdims=True), 1)
        bottleneck += share[has].sum(axis=0)
        if has_att:
            att = _attention_rows(plan, _as_rows(xt), z, rw, miss)
            att_sum += np.broadcast_to(np.asarray(att, dtype=np.float64), z.shape)[has].sum(axis=0)
        a = to_block_rows(a_sorted, r0, g, m)
        failed = present & (z <= -1.0)
        positive = (a > 0)[:, None]
        failed_pos += np.count_nonzero(failed & positive, axis=0)
        masked += int(np.count_nonzero(failed.any(axis=1) & positive[:, 0]))
        if filt is not None and drop_sorted is not None:
            db = to_block_rows(drop_sorted, r0, g, m)
            if db.any():
                _, opp = conflict_rows(z, rw, _NP, filt)
                opposing += np.broadcast_to(opp, z.shape)[db].sum(axis=0)
    denom = max(n_with, 1)
    extra: dict[str, Any] = {}
    if filt is not None and drop_sorted is not None and rho is not None:
        n_drop = int(drop_sorted.sum())
        rho_orig = np.empty_like(rho)
        rho_orig[layout.group_index] = rho
        extra = dict(
            conflict_dropped=n_drop,
            conflict_rho=rho_orig,
            conflict_per_reward=opposing / max(n_drop, 1),
            dropped=np.asarray(layout.unsort_rows(drop_sorted, _NP), dtype=bool),
        )
    return AggregationInfo(
        method=plan.method.name,
        params=_info_params(plan),
        n_rows=n,
        n_groups=layout.n_groups,
        rows_without_reward=n - n_with,
        bottleneck_share=bottleneck / denom,
        attention=att_sum / denom if has_att else np.full(k, np.nan),
        zero_spread_fraction=no_signal / max(layout.n_groups, 1),
        masked_failures=masked,
        masked_failures_per_reward=failed_pos,
        distinct_advantages_per_group=_distinct_counts(a_sorted, layout),
        **extra,
    )
