"""The text report of ``rewardagg audit`` (:func:`format_report`): a header, the per-reward
table, the masked-failures table, the method pairs whose advantages rank completions most
differently (the full Spearman matrix with ``spearman=True``, folded into blocks of columns)
and the verdict, folded at ``"; "`` (every column is defined in ``docs/audit.md``). The
default report fits :data:`WIDTH` columns unless a reward or method name alone is wider."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rewardagg.audit.compute import AuditReport
from rewardagg.audit.verdict import audit_verdict, format_verdict

__all__ = ["TOP_PAIRS", "WIDTH", "fold", "fold_verdict", "format_report"]

#: The width the text report keeps to.
WIDTH = 100
#: How many method pairs the default report lists (lowest Spearman correlation first).
TOP_PAIRS = 5


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [
        fmt.format(*map(str, r)) for r in rows
    ]


def _pct(a: float, b: float) -> str:
    return "–" if b == 0 else f"{100.0 * a / b:.1f}%"


def _skipped_lines(skipped: Sequence[tuple[str, str]]) -> list[str]:
    """One line per method that could not run on the rewards, with the reason."""
    if not skipped:
        return []
    return ["  not run on these rewards:"] + [f"    {label} {why}" for label, why in skipped]


def format_report(rep: AuditReport, *, spearman: bool = False) -> str:
    """The text report printed by ``rewardagg audit`` (``spearman``: the whole Spearman
    matrix instead of the pairs that disagree most)."""
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
    out += fold(f"  (per reward in the order: {', '.join(names)})")
    out += _skipped_lines(rep.skipped)
    out.append("")

    out += _spearman_lines(rep, full=spearman)
    out.append("")
    out += fold_verdict(format_verdict(audit_verdict(rep)))
    return "\n".join(out)


def _rho(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:.3f}"


def _spearman_lines(rep: AuditReport, *, full: bool) -> list[str]:
    """The method pairs that disagree most (lowest Spearman correlation), or with
    ``full`` the whole matrix folded into blocks of columns that fit :data:`WIDTH`."""
    labels = [m.label for m in rep.methods]
    n = len(labels)
    if not full:
        pairs = [
            (rep.spearman[i, j], labels[i], labels[j])
            for i in range(n)
            for j in range(i + 1, n)
            if not math.isnan(rep.spearman[i, j])
        ]
        pairs.sort(key=lambda t: t[0])
        shown = pairs[:TOP_PAIRS]
        out = [
            "Spearman rank correlation of the advantages: the method pairs that disagree most",
            f"  ({len(shown)} of {len(pairs)} pairs, lowest first; --spearman prints the matrix)",
        ]
        if shown:
            wa = max(len("method"), *(len(a) for _, a, _ in shown))
            wb = max(len("method"), *(len(b) for _, _, b in shown))
            out.append(f"  {'method':<{wa}}  {'method':<{wb}}    rho")
            out.append(f"  {'-' * wa}  {'-' * wb}  -----")
            out += [f"  {a:<{wa}}  {b:<{wb}}  {_rho(v):>5}" for v, a, b in shown]
        return out
    out = ["Spearman rank correlation of the advantages"]
    first = max((len(x) for x in labels), default=0)
    start = 0
    while start < n:  # as many columns as fit, at least one
        width, stop = 2 + first, start
        while stop < n and (stop == start or width + 2 + max(len(labels[stop]), 5) <= WIDTH):
            width += 2 + max(len(labels[stop]), 5)
            stop += 1
        cols = range(start, stop)
        rows = [[labels[i]] + [_rho(rep.spearman[i, j]) for j in cols] for i in range(n)]
        if start:
            out.append("")
        out += ["  " + line for line in _table(["", *(labels[j] for j in cols)], rows)]
        start = stop
    return out


def fold(line: str, width: int = WIDTH) -> list[str]:
    """``line`` folded at spaces to fit ``width`` (continuation lines indented two spaces
    more than ``line``); a word longer than the width stays whole."""
    import textwrap

    indent = line[: len(line) - len(line.lstrip())]
    return textwrap.wrap(
        line,
        width,
        subsequent_indent=indent + "  ",
        break_long_words=False,
        break_on_hyphens=False,
    ) or [line]


def fold_verdict(line: str, width: int = WIDTH) -> list[str]:
    """The verdict ``line`` folded after ``"; "`` so that every line fits ``width``
    (continuation lines indented by two spaces); unchanged when it fits."""
    parts = line.split("; ")
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 2 + len(part) + 1 <= width:
            lines[-1] += "; " + part
        else:
            lines[-1] += ";"
            lines.append("  " + part)
    return lines
