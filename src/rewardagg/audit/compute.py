"""The audit's measurements: :func:`run_audit` and the records it returns (numpy only).

See :mod:`rewardagg.audit` for what is measured and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewardagg._src.registry import get_aggregator
from rewardagg.method_settings import MethodSpec, method_settings

__all__ = [
    "AuditMethod",
    "AuditReport",
    "MethodAudit",
    "default_audit_methods",
    "rankdata",
    "run_audit",
    "spearman",
]

AuditMethod = MethodSpec
"""A method to audit: a label, a registry name and its keyword parameters (the
:class:`~rewardagg.method_settings.MethodSpec` of the demo, under the audit's name)."""


def default_audit_methods(
    methods: Sequence[str] | None = None,
    *,
    params: Mapping[str, Sequence[Any]] | None = None,
) -> list[AuditMethod]:
    """One entry per setting of each method's ``sweep``, in the order of ``methods``.

    Args:
        methods: registry names (default: every method of
            :func:`rewardagg.available_methods`, built-ins first, then registered ones).
        params: parameter name -> values, replacing that parameter's sweep in every method
            that takes it (the command line's ``--param NAME=V1,V2``); see
            :func:`rewardagg.method_settings.method_settings`.
    """
    return method_settings(methods, params)


@dataclass
class MethodAudit:
    """The audit of one method; counts are numbers of rows (completions)."""

    label: str
    advantages: np.ndarray
    masked_failures: int
    masked_failures_per_reward: np.ndarray
    threshold_masked: int | None
    threshold_masked_per_reward: np.ndarray | None
    positive: int
    distinct_per_group_mean: float


@dataclass
class AuditReport:
    """Everything :func:`run_audit` measured; :func:`format_report` renders it."""

    reward_names: list[str]
    costs: list[str]
    weights: np.ndarray
    n_rows: int
    n_groups: int
    group_sizes: tuple[int, int]
    missing_per_reward: np.ndarray
    rows_without_reward: int
    z_level: float
    z_failures: int
    z_failures_per_reward: np.ndarray
    thresholds: dict[str, float]
    threshold_failures: int | None
    threshold_failures_per_reward: np.ndarray | None
    bottleneck_share: np.ndarray
    zero_spread_fraction: np.ndarray
    groups_without_signal: int
    methods: list[MethodAudit]
    spearman: np.ndarray
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """``(label, reason)`` of each method that cannot run on these rewards (one the table
    marks as defined for non-negative values, on rewards with a negative value); the
    other methods are reported as usual."""


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x`` (1-D), ties get the average of their ranks (numpy only)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Boundaries of runs of equal values in sorted order.
    new = np.concatenate([[True], xs[1:] != xs[:-1]]) if n else np.zeros(0, bool)
    run_id = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.concatenate([starts[1:], [n]])
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = avg[run_id]
    return ranks


def spearman(columns: np.ndarray) -> np.ndarray:
    """Spearman rank correlation matrix of the columns of ``(n, m)`` (NaN for a constant column)."""
    a = np.asarray(columns, dtype=np.float64)
    r = np.column_stack([rankdata(a[:, j]) for j in range(a.shape[1])]) if a.size else a
    r = r - r.mean(axis=0, keepdims=True)
    norm = np.sqrt((r**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = (r.T @ r) / np.outer(norm, norm)
    c[:, norm == 0] = np.nan
    c[norm == 0, :] = np.nan
    return np.clip(c, -1.0, 1.0)


def _no_signal_cells(
    rewards: np.ndarray, codes: np.ndarray, n_groups: int, present: np.ndarray
) -> np.ndarray:
    """``(n_groups, K)``: True where a (group, reward) cell has < 2 present values or max == min."""
    k = rewards.shape[1]
    counts = np.zeros((n_groups, k))
    np.add.at(counts, codes, present.astype(np.float64))
    hi = np.full((n_groups, k), -np.inf)
    lo = np.full((n_groups, k), np.inf)
    np.maximum.at(hi, codes, np.where(present, rewards, -np.inf))
    np.minimum.at(lo, codes, np.where(present, rewards, np.inf))
    return (counts < 2) | (hi == lo)


def run_audit(
    rewards: np.ndarray,
    group_ids: np.ndarray,
    *,
    reward_names: Sequence[str] | None = None,
    costs: Sequence[str] = (),
    weights: Sequence[float] | None = None,
    methods: Sequence[AuditMethod] | None = None,
    thresholds: Mapping[str, float] | None = None,
    z_level: float = -1.0,
    eps: float = 1e-6,
    source: str = "",
) -> AuditReport:
    """Audit rewards ``(N, K)`` grouped by ``group_ids`` ``(N,)``; see the module docstring.

    Args:
        rewards: raw rewards as logged; NaN marks a missing reward.
        group_ids: one group label per row (any hashable labels).
        reward_names: K names (default ``r0 .. r{K-1}``).
        costs: names of lower-is-better columns; negated before aggregation.
        weights: ``(K,)`` non-negative reward weights passed to every method.
        methods: what to audit (default :func:`default_audit_methods`).
        thresholds: reward name -> threshold on the raw value; a row fails reward ``k``
            when its value is below the threshold (above it for a cost).
        z_level: a row fails reward ``k`` when ``Z[i, k] <= z_level``.
        eps: the library's ``eps`` (stage 1 and 3).
    """
    import rewardagg

    raw = np.asarray(rewards, dtype=np.float64)
    if raw.ndim != 2:
        raise ValueError(f"rewards must be (N, K), got shape {raw.shape}")
    n, k = raw.shape
    names = list(reward_names) if reward_names is not None else [f"r{j}" for j in range(k)]
    if len(names) != k:
        raise ValueError(f"reward_names has {len(names)} names for {k} columns")
    unknown = [c for c in list(costs) + list(thresholds or {}) if c not in names]
    if unknown:
        raise ValueError(f"unknown reward name(s) {unknown}; rewards are {names}")
    sign = np.array([-1.0 if nm in set(costs) else 1.0 for nm in names])
    r = raw * sign
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (k,):
        raise ValueError(f"weights has shape {w.shape}, expected ({k},)")
    if np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    _, codes = np.unique(np.asarray(group_ids).astype(str), return_inverse=True)
    codes = codes.reshape(-1)
    if codes.shape[0] != n:
        raise ValueError(f"group_ids has {codes.shape[0]} labels for {n} rows")
    n_groups = int(codes.max()) + 1 if n else 0
    sizes = np.bincount(codes, minlength=n_groups)
    methods = list(methods) if methods is not None else default_audit_methods()

    active = w > 0
    present = np.isfinite(r) & active[None, :]
    no_signal = _no_signal_cells(r, codes, n_groups, present)
    z = np.asarray(rewardagg.group_standardize(r, group_ids=codes, eps=eps), dtype=np.float64)
    z_failed = present & (np.nan_to_num(z, nan=np.inf) <= z_level)

    thr_failed = None
    if thresholds:
        thr_failed = np.zeros((n, k), dtype=bool)
        for name, t in thresholds.items():
            j = names.index(name)
            col = raw[:, j]
            bad = (col > t) if sign[j] < 0 else (col < t)
            thr_failed[:, j] = bad & np.isfinite(col)

    audits: list[MethodAudit] = []
    skipped: list[tuple[str, str]] = []
    info0 = None
    for spec in methods:
        why = _cannot_run(spec.method, r[:, active])
        if why:
            skipped.append((spec.label, why))
            continue
        kwargs = dict(group_ids=codes, weights=w, eps=eps, **spec.params)
        adv, info = rewardagg.advantages(r, method=spec.method, return_info=True, **kwargs)
        if info0 is None:
            info0 = info
        audits.append(_audit_one(spec.label, adv, info, z_level, z_failed, thr_failed))
    if methods and not audits:
        raise ValueError(f"no method can run on these rewards: {skipped[0][0]} {skipped[0][1]}")
    rho = spearman(np.column_stack([a.advantages for a in audits])) if audits else np.zeros((0, 0))
    return AuditReport(
        reward_names=names,
        costs=[c for c in names if c in set(costs)],
        weights=w,
        n_rows=n,
        n_groups=n_groups,
        group_sizes=(int(sizes.min()) if n else 0, int(sizes.max()) if n else 0),
        missing_per_reward=np.count_nonzero(~np.isfinite(raw), axis=0),
        rows_without_reward=int(np.count_nonzero(~present.any(axis=1))),
        z_level=float(z_level),
        z_failures=int(np.count_nonzero(z_failed.any(axis=1))),
        z_failures_per_reward=np.count_nonzero(z_failed, axis=0),
        thresholds=dict(thresholds or {}),
        threshold_failures=None
        if thr_failed is None
        else int(np.count_nonzero(thr_failed.any(axis=1))),
        threshold_failures_per_reward=None
        if thr_failed is None
        else np.count_nonzero(thr_failed, axis=0),
        bottleneck_share=np.asarray(info0.bottleneck_share if info0 else np.full(k, np.nan)),
        zero_spread_fraction=np.asarray(
            info0.zero_spread_fraction if info0 else no_signal.mean(axis=0), dtype=np.float64
        ),
        groups_without_signal=int(np.count_nonzero(no_signal[:, active].all(axis=1)))
        if n_groups
        else 0,
        methods=audits,
        spearman=rho,
        source=source,
        skipped=skipped,
    )


def _cannot_run(method: str, rewards: np.ndarray) -> str:
    """Why ``method`` cannot run on ``rewards`` (as aggregated: costs negated, weight-0
    columns left out), or ``""``: the table marks the reducers defined for non-negative
    values only."""
    if get_aggregator(method).nonnegative and np.any(rewards < 0):
        return "is defined for non-negative rewards only, and these have negative values"
    return ""


def _audit_one(
    label: str,
    adv: Any,
    info: Any,
    z_level: float,
    z_failed: np.ndarray,
    thr_failed: np.ndarray | None,
) -> MethodAudit:
    """The counts of one method from its advantages and ``AggregationInfo``: at
    ``z_level == -1`` the masked failures are the library's own; otherwise counted here
    from ``z_failed`` (rows x rewards, failing at ``z_level``)."""
    adv = np.asarray(adv, dtype=np.float64)
    pos = adv > 0
    if z_level == -1.0:
        mf = int(info.masked_failures)
        mf_k = np.asarray(info.masked_failures_per_reward, dtype=np.int64)
    else:
        mf = int(np.count_nonzero(z_failed.any(axis=1) & pos))
        mf_k = np.count_nonzero(z_failed & pos[:, None], axis=0).astype(np.int64)
    tm = tm_k = None
    if thr_failed is not None:
        tm = int(np.count_nonzero(thr_failed.any(axis=1) & pos))
        tm_k = np.count_nonzero(thr_failed & pos[:, None], axis=0).astype(np.int64)
    return MethodAudit(
        label=label,
        advantages=adv,
        masked_failures=mf,
        masked_failures_per_reward=mf_k,
        threshold_masked=tm,
        threshold_masked_per_reward=tm_k,
        positive=int(np.count_nonzero(pos)),
        distinct_per_group_mean=float(np.mean(info.distinct_advantages_per_group)),
    )
