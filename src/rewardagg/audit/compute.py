"""The audit's measurements: :func:`run_audit` and the records it returns (numpy only).

See :mod:`rewardagg.audit` for what is measured and why.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewardagg._src.diagnostics import _distinct_counts
from rewardagg._src.grouping import GroupLayout, _labels_to_index, make_layout
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
    """The audit of one method; counts are numbers of rows (completions).

    ``advantages`` is ``None`` when :func:`run_audit` was asked not to keep them
    (``keep_advantages=False``, as the command line does to save memory)."""

    label: str
    advantages: np.ndarray | None
    masked_failures: int
    masked_failures_per_reward: np.ndarray
    threshold_masked: int | None
    threshold_masked_per_reward: np.ndarray | None
    positive: int
    distinct_per_group_mean: float
    method: str = ""
    """The registry name of the method (``label`` adds its parameters)."""
    params: dict[str, Any] = field(default_factory=dict)
    """The method's keyword parameters for this setting."""


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


def _centred_rank(x: np.ndarray) -> np.ndarray:
    """Ranks of ``x`` minus their mean ``(n + 1) / 2``: float32 when ``n < 2^23`` (exact:
    multiples of 1/2 below 2^22 in size), to halve the memory of large audits."""
    n = x.shape[0]
    dtype = np.float32 if n < 2**23 else np.float64
    return (rankdata(x) - (n + 1) / 2.0).astype(dtype)


def _rank_correlation(ranks: Sequence[np.ndarray], chunk: int = 1 << 16) -> np.ndarray:
    """Correlation matrix of centred ranks (``m`` arrays of length ``n``), their Gram
    matrix summed in float64 a block of rows at a time; NaN for a constant column."""
    m = len(ranks)
    n = ranks[0].shape[0] if m else 0
    g = np.zeros((m, m))
    for start in range(0, n, chunk):
        block = np.column_stack([r[start : start + chunk] for r in ranks]).astype(np.float64)
        g += block.T @ block
    norm = np.sqrt(np.diag(g))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = g / np.outer(norm, norm)
    c[:, norm == 0] = np.nan
    c[norm == 0, :] = np.nan
    return np.clip(c, -1.0, 1.0)


def spearman(columns: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Spearman rank correlation matrix of the columns of ``(n, m)``, or of a sequence of
    ``m`` arrays of length ``n``; NaN for a constant column."""
    if isinstance(columns, np.ndarray):
        a = np.asarray(columns, dtype=np.float64)
        cols = [a[:, j] for j in range(a.shape[1])]
    else:
        cols = [np.asarray(c, dtype=np.float64).reshape(-1) for c in columns]
    return _rank_correlation([_centred_rank(c) for c in cols])


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


def _group_codes(group_ids: Any, n: int) -> np.ndarray:
    """Group number of each row, grouping labels by value exactly as
    :func:`rewardagg.advantages` does (``1``, ``1.0`` and ``True`` one group, ``1`` and
    ``"1"`` two, every NaN one group)."""
    n_labels = len(group_ids)
    if n_labels != n:
        raise ValueError(f"group_ids has {n_labels} labels for {n} rows")
    return _labels_to_index(group_ids, n)


def _z_failures(
    r: np.ndarray, codes: np.ndarray, present: np.ndarray, z_level: float, eps: float
) -> np.ndarray:
    """``(N, K)``: present rewards whose stage-1 group z-score is ``<= z_level``."""
    import rewardagg

    z = np.asarray(rewardagg.group_standardize(r, group_ids=codes, eps=eps), dtype=np.float64)
    return present & (np.nan_to_num(z, nan=np.inf) <= z_level)


#: Rows per call when the method-independent diagnostics are computed chunk by chunk.
DIAGNOSTIC_CHUNK_ROWS = 1 << 17


def _chunks_of_groups(codes: np.ndarray, n_groups: int, rows: int) -> list[np.ndarray]:
    """The row indices of consecutive runs of whole groups, about ``rows`` rows each."""
    sizes = np.bincount(codes, minlength=n_groups)
    chunk_of_group = (np.cumsum(sizes) - sizes) // max(rows, 1)
    if n_groups == 0 or chunk_of_group[-1] == 0:
        return [np.arange(codes.shape[0])]
    row_chunk = chunk_of_group[codes]
    order = np.argsort(row_chunk, kind="stable")
    bounds = np.searchsorted(row_chunk[order], np.arange(int(chunk_of_group[-1]) + 2))
    return [order[lo:hi] for lo, hi in itertools.pairwise(bounds) if hi > lo]


def _method_independent(
    r: np.ndarray, codes: np.ndarray, n_groups: int, spec: AuditMethod, kwargs: dict
) -> tuple[np.ndarray, np.ndarray]:
    """``(bottleneck_share, zero_spread_fraction)`` of the library's ``AggregationInfo``
    for ``spec`` (both independent of the method), computed on chunks of whole groups:
    they only depend on stage 1, which is per group, and ``return_info`` on a whole large
    batch holds several ``(N, K)`` arrays at once."""
    import rewardagg

    k = r.shape[1]
    bottleneck, zero_spread = np.zeros(k), np.zeros(k)
    rows_with, groups = 0, 0
    for rows in _chunks_of_groups(codes, n_groups, DIAGNOSTIC_CHUNK_ROWS):
        _, info = rewardagg.advantages(
            r[rows], method=spec.method, return_info=True, backend="numpy",
            **{**kwargs, "group_ids": codes[rows]}, **spec.params,
        )  # fmt: skip
        with_reward = info.n_rows - info.rows_without_reward
        bottleneck += np.asarray(info.bottleneck_share) * with_reward
        zero_spread += np.asarray(info.zero_spread_fraction, dtype=np.float64) * info.n_groups
        rows_with, groups = rows_with + with_reward, groups + info.n_groups
    return bottleneck / max(rows_with, 1), zero_spread / max(groups, 1)


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
    keep_advantages: bool = True,
) -> AuditReport:
    """Audit rewards ``(N, K)`` grouped by ``group_ids`` ``(N,)``; see the module docstring.

    Args:
        rewards: raw rewards as logged; NaN marks a missing reward.
        group_ids: one group label per row (any hashable labels, grouped by value as
            :func:`rewardagg.advantages` groups them: ``1`` and ``1.0`` one group, ``1``
            and ``"1"`` two).
        reward_names: K names (default ``r0 .. r{K-1}``).
        costs: names of lower-is-better columns; negated before aggregation.
        weights: ``(K,)`` non-negative reward weights passed to every method.
        methods: what to audit (default :func:`default_audit_methods`).
        thresholds: reward name -> finite threshold on the raw value; a row fails reward
            ``k`` when its value is below the threshold (above it for a cost).
        z_level: a row fails reward ``k`` when ``Z[i, k] <= z_level`` (a finite number).
        eps: the library's ``eps`` (stage 1 and 3).
        keep_advantages: keep each method's advantages in its :class:`MethodAudit`
            (``False``: ``None``, and the audit holds 4 bytes a row per method instead of
            12, for large files).
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
    if not np.isfinite(z_level):
        raise ValueError(f"z_level must be a finite number, got {z_level}")
    bad = {c: t for c, t in (thresholds or {}).items() if not np.isfinite(t)}
    if bad:
        raise ValueError(f"thresholds must be finite numbers, got {bad}")
    sign = np.array([-1.0 if nm in set(costs) else 1.0 for nm in names])
    r = raw * sign if np.any(sign < 0) else raw  # no copy without costs
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (k,):
        raise ValueError(f"weights has shape {w.shape}, expected ({k},)")
    if np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    codes = _group_codes(group_ids, n)
    n_groups = int(codes.max()) + 1 if n else 0
    sizes = np.bincount(codes, minlength=n_groups)
    methods = list(methods) if methods is not None else default_audit_methods()

    active = w > 0
    present = np.isfinite(r) & active[None, :]
    no_signal = _no_signal_cells(r, codes, n_groups, present)
    z_failed = _z_failures(r, codes, present, z_level, eps)

    thr_failed = None
    if thresholds:
        thr_failed = np.zeros((n, k), dtype=bool)
        for name, t in thresholds.items():
            j = names.index(name)
            col = raw[:, j]
            bad_rows = (col > t) if sign[j] < 0 else (col < t)
            thr_failed[:, j] = bad_rows & np.isfinite(col)

    layout = make_layout(n, group_ids=codes) if n else None
    kwargs: dict[str, Any] = dict(group_ids=codes, weights=w, eps=eps)
    audits: list[MethodAudit] = []
    skipped: list[tuple[str, str]] = []
    ran: list[AuditMethod] = []
    ranks: list[np.ndarray] = []
    for spec in methods:
        why = _cannot_run(spec.method, r[:, active])
        if why:
            skipped.append((spec.label, why))
            continue
        adv = np.asarray(
            rewardagg.advantages(r, method=spec.method, backend="numpy", **kwargs, **spec.params),
            dtype=np.float64,
        )
        audits.append(_audit_one(spec.label, adv, layout, z_failed, thr_failed))
        audits[-1].method, audits[-1].params = spec.method, dict(spec.params)
        ranks.append(_centred_rank(adv))
        if not keep_advantages:
            audits[-1].advantages = None
        ran.append(spec)
        del adv
    if methods and not audits:
        raise ValueError(f"no method can run on these rewards: {skipped[0][0]} {skipped[0][1]}")
    if ran and n:
        bottleneck, zero_spread = _method_independent(r, codes, n_groups, ran[0], kwargs)
    else:
        bottleneck, zero_spread = np.full(k, np.nan), no_signal.mean(axis=0)
    rho = _rank_correlation(ranks) if audits else np.zeros((0, 0))
    del ranks
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
        bottleneck_share=bottleneck,
        zero_spread_fraction=np.asarray(zero_spread, dtype=np.float64),
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


def _distinct_per_group_mean(adv: np.ndarray, layout: GroupLayout | None) -> float:
    """Mean over groups of the number of distinct advantages in the group (values within
    the library's relative tolerance count as one), as ``AggregationInfo`` counts them."""
    if layout is None:
        return float("nan")
    ordered = adv if layout.perm is None else adv[layout.perm]
    return float(np.mean(_distinct_counts(ordered, layout)))


def _audit_one(
    label: str,
    adv: Any,
    layout: GroupLayout | None,
    z_failed: np.ndarray,
    thr_failed: np.ndarray | None,
) -> MethodAudit:
    """The counts of one method from its advantages: a masked failure is a row failing
    some reward (``z_failed``, rows x rewards; ``thr_failed`` for the thresholds) with a
    positive advantage; at ``z_level == -1`` these equal the library's
    ``AggregationInfo.masked_failures`` (tested)."""
    adv = np.asarray(adv, dtype=np.float64)
    pos = adv > 0
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
        distinct_per_group_mean=_distinct_per_group_mean(adv, layout),
    )
