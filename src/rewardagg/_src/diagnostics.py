"""What an aggregation did to a batch, as plain numbers a logger can take.

All quantities are computed in float64 numpy from the stage-1 scores ``Z``, the
participation weights, and the final advantages ``A`` (see ``DESIGN.md``, diagnostics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["AggregationInfo"]

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


def compute_info(
    *,
    method: str,
    params: Mapping[str, Any],
    z: Any,
    row_weights,
    attention: Any,
    adv_sorted: Any,
    signals: list,
    layout,
    ops,
    conflict: tuple | None = None,
) -> AggregationInfo:
    """Assemble :class:`AggregationInfo` from the pipeline's sorted-order intermediates."""
    z = ops.to_numpy(z).astype(np.float64)
    a = ops.to_numpy(adv_sorted).astype(np.float64)
    n, k = z.shape
    present = np.broadcast_to(
        np.ones((n, k), bool) if row_weights.present is None else ops.to_numpy(row_weights.present),
        (n, k),
    )
    has = present.any(axis=1)
    n_with = int(has.sum())
    zf = np.where(present, z, np.inf)
    ties = (zf == zf.min(axis=1, keepdims=True)) & present
    share = ties / np.maximum(ties.sum(axis=1, keepdims=True), 1)
    denom = max(n_with, 1)
    bottleneck = share[has].sum(axis=0) / denom
    if attention is None:
        att = np.full(k, np.nan)
    else:
        att_rows = np.broadcast_to(ops.to_numpy(attention).astype(np.float64), (n, k))
        att = att_rows[has].sum(axis=0) / denom
    no_signal = np.concatenate([~ops.to_numpy(s).reshape(-1, k) for s in signals], axis=0)
    failed = present & (z <= -1.0)
    positive = (a > 0)[:, None]
    per_reward = np.count_nonzero(failed & positive, axis=0)
    extra: dict[str, Any] = {}
    if conflict is not None:  # (dropped rows, opposing terms, rho in sorted group order)
        drop, opposing, rho = conflict
        dropped = np.asarray(drop if isinstance(drop, np.ndarray) else ops.to_numpy(drop), bool)
        opp = np.broadcast_to(np.asarray(ops.to_numpy(opposing), dtype=bool), (n, k))
        rho_orig = np.empty_like(rho)
        rho_orig[layout.group_index] = rho
        extra = dict(
            conflict_dropped=int(dropped.sum()),
            conflict_rho=rho_orig,
            conflict_per_reward=opp[dropped].sum(axis=0) / max(int(dropped.sum()), 1),
        )
    return AggregationInfo(
        method=method,
        params=dict(params),
        n_rows=n,
        n_groups=layout.n_groups,
        rows_without_reward=n - n_with,
        bottleneck_share=bottleneck,
        attention=att,
        zero_spread_fraction=no_signal.mean(axis=0),
        masked_failures=int(np.count_nonzero(failed.any(axis=1) & positive[:, 0])),
        masked_failures_per_reward=per_reward.astype(np.int64),
        distinct_advantages_per_group=_distinct_counts(a, layout),
        **extra,
    )
