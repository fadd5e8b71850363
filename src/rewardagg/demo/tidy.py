"""The demo's numbers as tidy rows, and the verdict drawn from them.

One row per (scenario, setting, metric): ``scenario``, ``method`` (the setting's label),
``metric``, ``mean``, ``ci_low``, ``ci_high`` (the 95% t interval over seeds,
:mod:`rewardagg.demo.stats`) and ``n_seeds`` (the seeds with a finite value). This is
what ``demo.csv`` holds and what the table, the verdicts and the figure are drawn from,
so any of them can be rebuilt from the file (:func:`read_rows`, or ``pandas.read_csv``).
A verdict (:func:`verdict`) names, per scenario, the setting
with the best mean on a metric and its margin over the runner-up, or says "no clear
difference" when their intervals overlap.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rewardagg.demo.results import METRICS, RunResult
from rewardagg.demo.stats import mean_ci

__all__ = [
    "FIELDS",
    "VERDICT_METRICS",
    "read_rows",
    "tidy_rows",
    "verdict",
    "verdict_lines",
    "write_rows",
]

FIELDS = ("scenario", "method", "metric", "mean", "ci_low", "ci_high", "n_seeds")
#: The metrics each family's verdict line is about.
VERDICT_METRICS = {"rubric": ("rubric_score", "critical_met"), "neglect": ("format", "worst")}
DIGITS = 6


def _round(x: float) -> float:
    return round(float(x), DIGITS) if math.isfinite(x) else math.nan


def tidy_rows(results: Sequence[RunResult]) -> list[dict]:
    """One row per (scenario, setting, metric), in scenario, setting, metric order; a
    metric that is NaN for every seed of a setting (``multiplier`` without a tracker) has
    no row."""
    rows = []
    for res in results:
        for m, spec in enumerate(res.methods):
            for name, values in res.metrics.items():
                v = np.asarray(values[m], dtype=np.float64)
                n = int(np.isfinite(v).sum())
                if n == 0:
                    continue
                mu, half = (float(a) for a in mean_ci(v))
                h = half if math.isfinite(half) else 0.0
                rows.append(
                    {
                        "scenario": res.scenario.name,
                        "method": spec.label,
                        "metric": name,
                        "mean": _round(mu),
                        "ci_low": _round(mu - h),
                        "ci_high": _round(mu + h),
                        "n_seeds": n,
                    }
                )
    return rows


def write_rows(rows: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    """``rows`` as CSV with the :data:`FIELDS` header."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows({k: r[k] for k in FIELDS} for r in rows)


def read_rows(path: str | Path) -> list[dict]:
    """Rows from a ``demo.csv`` (numbers converted back)."""
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row: dict = {k: r[k] for k in ("scenario", "method", "metric")}
            row.update({k: float(r[k]) for k in ("mean", "ci_low", "ci_high")})
            row["n_seeds"] = int(r["n_seeds"])
            out.append(row)
    return out


def _family(metrics: Iterable[str]) -> str:
    return "rubric" if "rubric_score" in set(metrics) else "neglect"


def verdict(rows: Sequence[Mapping[str, Any]], scenario: str, metric: str) -> str:
    """Who is best on ``metric`` in ``scenario`` (module docstring), as a phrase.

    The leader is the setting with the best mean (highest, or lowest for a metric where
    lower is better); it is "best" when its interval does not overlap the runner-up's.
    """
    mine = [r for r in rows if r["scenario"] == scenario and r["metric"] == metric]
    if not mine:
        return f"{metric}: not measured"
    higher = METRICS.get(metric, ("", True))[1]
    ranked = sorted(mine, key=lambda r: -r["mean"] if higher else r["mean"])
    best = ranked[0]
    if len(ranked) == 1:
        return f"{metric}: {best['method']} {best['mean']:.2f} (the only setting)"
    second = ranked[1]
    apart = best["ci_low"] > second["ci_high"] if higher else best["ci_high"] < second["ci_low"]
    if not apart:
        close = [
            r["method"]
            for r in ranked
            if (r["ci_high"] >= best["ci_low"] if higher else r["ci_low"] <= best["ci_high"])
        ]
        named = ", ".join(f"{r['method']} {r['mean']:.2f}" for r in ranked[:2])
        if len(close) == 2:
            return f"{metric}: no clear difference between {named.replace(', ', ' and ')}"
        return f"{metric}: no clear difference among the top {len(close)} ({named}, ...)"
    gap = best["mean"] - second["mean"]
    d = 2 if abs(gap) >= 0.01 else 3  # a margin below 0.01 is shown, not rounded away
    return (
        f"{metric}: {best['method']} best, {best['mean']:.{d}f} vs {second['mean']:.{d}f} "
        f"({second['method']}), {gap:+.{d}f}"
    )


def verdict_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per scenario: the verdicts on its family's :data:`VERDICT_METRICS`."""
    out = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        metrics = [r["metric"] for r in rows if r["scenario"] == scenario]
        parts = [verdict(rows, scenario, m) for m in VERDICT_METRICS[_family(metrics)]]
        out.append(f"{scenario}: " + "; ".join(parts))
    return out
