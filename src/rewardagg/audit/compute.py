"""``rewardagg audit``: does a batch of logged rewards suffer from constraint neglect?

Given the rewards of logged completions (``(N, K)``, grouped by prompt), the audit runs
every method through :func:`rewardagg.advantages` (``return_info=True``) and reports:

- **masked failures** (DESIGN.md section 2): completions that are clearly below their
  group on some reward, ``Z[i, k] <= z_level`` (stage-1 group z-score, default level -1),
  yet receive a positive advantage; in total and per reward. For ``z_level == -1`` the
  counts are the library's own ``AggregationInfo.masked_failures``.
- **threshold variant**: completions whose raw reward ``k`` is below a threshold you
  give (for a cost column, above it) that still receive a positive advantage.
- **bottleneck share** of each reward: the fraction of rows whose lowest ``Z`` is that
  reward (ties split), method-independent.
- **zero-spread groups**: per reward, the fraction of groups where the reward carries no
  signal (fewer than two present values, or all equal); and the groups with no signal on
  any reward.
- **distinct advantages per group** (mean): 1 means the group's completions all get the
  same advantage (GDPO's "advantage collapse").
- **rank agreement**: the Spearman rank correlation of the advantages of every pair of
  methods (ties get average ranks).

Costs (lower is better) are negated before aggregation, so every column is "higher is
better" for the methods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "AuditMethod",
    "AuditReport",
    "MethodAudit",
    "default_audit_methods",
    "format_report",
    "plot_report",
    "rankdata",
    "run_audit",
    "spearman",
]


@dataclass(frozen=True)
class AuditMethod:
    """A method to audit: a label, a registry name and its keyword parameters."""

    label: str
    method: str
    params: dict = field(default_factory=dict)


def default_audit_methods(
    methods: Sequence[str] = ("grpo", "gdpo", "mean", "softmin", "mean_variance", "min"),
    *,
    kappas: Sequence[float] = (1.0,),
    lam: float = 0.5,
) -> list[AuditMethod]:
    """One entry per method; ``softmin`` once per kappa, ``mean_variance`` with ``lam``."""
    out = []
    for m in methods:
        if m == "softmin":
            out += [AuditMethod(f"softmin k={k:g}", "softmin", {"kappa": float(k)}) for k in kappas]
        elif m == "mean_variance":
            out.append(AuditMethod(f"mean_var l={lam:g}", "mean_variance", {"lam": float(lam)}))
        else:
            out.append(AuditMethod(m, m))
    return out


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
    info0 = None
    for spec in methods:
        kwargs = dict(group_ids=codes, weights=w, eps=eps, **spec.params)
        adv, info = rewardagg.advantages(r, method=spec.method, return_info=True, **kwargs)
        adv = np.asarray(adv, dtype=np.float64)
        if info0 is None:
            info0 = info
        pos = adv > 0
        if z_level == -1.0:
            mf = int(info.masked_failures)
            mf_k = np.asarray(info.masked_failures_per_reward, dtype=np.int64)
        else:
            mf = int(np.count_nonzero(z_failed.any(axis=1) & pos))
            mf_k = np.count_nonzero(z_failed & pos[:, None], axis=0).astype(np.int64)
        distinct = float(np.mean(info.distinct_advantages_per_group))
        tm = tm_k = None
        if thr_failed is not None:
            tm = int(np.count_nonzero(thr_failed.any(axis=1) & pos))
            tm_k = np.count_nonzero(thr_failed & pos[:, None], axis=0).astype(np.int64)
        audits.append(
            MethodAudit(
                label=spec.label,
                advantages=adv,
                masked_failures=mf,
                masked_failures_per_reward=mf_k,
                threshold_masked=tm,
                threshold_masked_per_reward=tm_k,
                positive=int(np.count_nonzero(pos)),
                distinct_per_group_mean=distinct,
            )
        )
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
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [
        fmt.format(*map(str, r)) for r in rows
    ]


def _pct(a: float, b: float) -> str:
    return "–" if b == 0 else f"{100.0 * a / b:.1f}%"


def format_report(rep: AuditReport) -> str:
    """The text report printed by ``rewardagg audit``."""
    names = rep.reward_names
    out = [f"rewardagg audit: {rep.source}" if rep.source else "rewardagg audit"]
    lo, hi = rep.group_sizes
    out.append(
        f"  {rep.n_rows} completions in {rep.n_groups} groups "
        f"(size {lo}{'' if lo == hi else f'..{hi}'}), {len(names)} rewards"
    )
    if rep.costs:
        out.append(f"  costs (negated before aggregation): {', '.join(rep.costs)}")
    if np.any(rep.weights != 1):
        pairs = zip(names, rep.weights, strict=True)
        out.append("  weights: " + ", ".join(f"{n}={w:g}" for n, w in pairs))
    if rep.rows_without_reward:
        out.append(f"  rows without any reward (advantage 0): {rep.rows_without_reward}")
    out.append("")

    out.append("Per reward (method-independent)")
    header = ["reward", "missing", "bottleneck", "zero-spread groups", f"Z<={rep.z_level:g}"]
    if rep.thresholds:
        header.append("below threshold")
    rows = []
    for j, nm in enumerate(names):
        row = [
            nm + (" (cost)" if nm in rep.costs else ""),
            str(int(rep.missing_per_reward[j])),
            f"{rep.bottleneck_share[j]:.3f}",
            f"{rep.zero_spread_fraction[j]:.1%}",
            str(int(rep.z_failures_per_reward[j])),
        ]
        if rep.thresholds:
            t = rep.thresholds.get(nm)
            per = rep.threshold_failures_per_reward
            if t is None or per is None:
                row.append("–")
            else:
                op = ">" if nm in rep.costs else "<"
                row.append(f"{int(per[j])} ({op}{t:g})")
        rows.append(row)
    out += ["  " + line for line in _table(header, rows)]
    out.append(
        f"  groups with no signal on any reward: {rep.groups_without_signal} of {rep.n_groups}"
    )
    if hi <= 2 and rep.z_level <= -1.0:
        out.append(
            "  note: in groups of at most 2 a z-score is at most 0.71 in size, so no row "
            f"reaches Z<={rep.z_level:g}; use --threshold"
        )
    out.append(
        f"  rows failing some reward (Z<={rep.z_level:g}): {rep.z_failures} of {rep.n_rows}"
        + (
            f"; below a threshold: {rep.threshold_failures}"
            if rep.threshold_failures is not None
            else ""
        )
    )
    out.append("")

    out.append("Masked failures: completions that fail a reward yet get a positive advantage")
    header = ["method", f"masked (Z<={rep.z_level:g})", "of failing"]
    if rep.thresholds:
        header += ["masked (threshold)", "of failing"]
    header += ["per reward (Z)", "positive adv", "distinct adv/group"]
    rows = []
    for m in rep.methods:
        row = [m.label, str(m.masked_failures), _pct(m.masked_failures, rep.z_failures)]
        if rep.thresholds:
            row += [
                str(m.threshold_masked),
                _pct(m.threshold_masked or 0, rep.threshold_failures or 0),
            ]
        row += [
            " ".join(str(int(v)) for v in m.masked_failures_per_reward),
            _pct(m.positive, rep.n_rows),
            f"{m.distinct_per_group_mean:.2f}",
        ]
        rows.append(row)
    out += ["  " + line for line in _table(header, rows)]
    out.append(f"  (per reward in the order: {', '.join(names)})")
    out.append("")

    out.append("Spearman rank correlation of the advantages")
    labels = [m.label for m in rep.methods]
    rows = [
        [labels[i]] + ["–" if math.isnan(v) else f"{v:.3f}" for v in rep.spearman[i]]
        for i in range(len(labels))
    ]
    out += ["  " + line for line in _table(["", *labels], rows)]
    return "\n".join(out)


def plot_report(rep: AuditReport, path: str | Path) -> None:
    """Three panels: masked failures per method, bottleneck share per reward, Spearman."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels = [m.label for m in rep.methods]
    names = rep.reward_names
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax = axes[0]
    x = np.arange(len(labels))
    width = 0.8 / (2 if rep.thresholds else 1)
    ax.bar(x, [m.masked_failures for m in rep.methods], width, label=f"Z <= {rep.z_level:g}")
    if rep.thresholds:
        ax.bar(
            x + width,
            [m.threshold_masked or 0 for m in rep.methods],
            width,
            label="below threshold",
        )
    ax.set_xticks(x + (width / 2 if rep.thresholds else 0))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylabel("completions")
    ax.set_title("masked failures (fail a reward, positive advantage)", fontsize=10)
    ax.legend(frameon=False)
    ax = axes[1]
    y = np.arange(len(names))
    ax.barh(y, rep.bottleneck_share, color="tab:gray")
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlabel("fraction of rows whose lowest Z is this reward")
    ax.set_title("bottleneck share", fontsize=10)
    ax = axes[2]
    im = ax.imshow(rep.spearman, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            v = rep.spearman[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title("Spearman rank correlation of advantages", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"rewardagg audit: {Path(rep.source).name if rep.source else ''}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
