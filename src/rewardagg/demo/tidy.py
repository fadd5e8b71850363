"""The demo's numbers as tidy rows, and the verdict drawn from them.

One row per (scenario, setting, metric): ``scenario``, ``method`` (the setting's label),
``metric``, ``mean``, ``ci_low``, ``ci_high`` (the 95% t interval over seeds,
:mod:`rewardagg.demo.stats`) and ``n_seeds`` (the seeds with a finite value). This is
what ``demo.csv`` holds and what the table and the figure are drawn from, so any of
them can be rebuilt from the file (:func:`read_rows`, or ``pandas.read_csv``).

The verdicts are drawn from the per-seed values (``demo_seeds.csv``, :func:`seed_rows`:
one row per scenario, setting, verdict metric and seed, with the value at the start of
training), because the settings are *paired*: every setting of a scenario trains on the
same seeds with the same random numbers. :func:`paired_verdicts` compares, per scenario
and metric, the setting with the best mean (the *best*) and the next one (the
*runner-up*; settings whose every per-seed value equals the best's, up to
:data:`SAME`, are named with it, not ranked after it) by the mean of their per-seed differences and its 95% t-interval
(:func:`rewardagg.demo.stats.paired_ci`):

- ``"best"`` when the interval excludes 0;
- ``"no clear difference"`` when it covers 0;
- ``"not learned"`` (``critical_met`` only, :data:`LEARNED_METRICS`): no setting ends
  above the start rate by more than its CI, that is no setting's 95% interval of its
  final mean (the table's ``mean±h``) lies above the mean start rate (the same for every
  setting: the same draws, the same start); then who is "best" among settings that did
  not move means nothing. (A paired gain of +0.002 that is "significant" over 12 seeds
  is not learning a criterion.)

The earlier rule, "best" only when the two settings' own intervals do not overlap
(:func:`verdict`), ignores the pairing and is kept for comparison: on paired runs it
calls differences unclear that the paired interval resolves.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rewardagg.demo.results import METRICS, RunResult
from rewardagg.demo.stats import mean_ci, paired_ci

__all__ = [
    "FIELDS",
    "LEARNED_METRICS",
    "SEED_FIELDS",
    "VERDICT_FIELDS",
    "VERDICT_METRICS",
    "paired_verdicts",
    "read_rows",
    "read_seed_rows",
    "seed_rows",
    "tidy_rows",
    "verdict",
    "verdict_lines",
    "verdict_text",
    "write_rows",
    "write_seed_rows",
]

FIELDS = ("scenario", "method", "metric", "mean", "ci_low", "ci_high", "n_seeds")
#: The metrics each family's verdict line is about.
VERDICT_METRICS = {"rubric": ("rubric_score", "critical_met"), "neglect": ("format", "worst")}
DIGITS = 6
SEED_FIELDS = ("scenario", "method", "metric", "seed", "value", "start")
SEED_DIGITS = 9
#: Metrics on which a verdict first asks whether any setting moved from the start rate.
LEARNED_METRICS = ("critical_met",)
#: The keys of every verdict of :func:`paired_verdicts` (``demo.json``'s ``verdicts``).
VERDICT_FIELDS = ("scenario", "metric", "kind", "best", "runner_up", "diff", "ci_low", "ci_high")


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


def verdict(rows: Sequence[Mapping[str, Any]], scenario: str, metric: str) -> str:
    """The earlier, *unpaired* rule (module docstring), kept for comparison: the setting
    with the best mean on ``metric`` in ``scenario`` is "best" when its own interval does
    not overlap the runner-up's. The demo prints :func:`paired_verdicts` instead.
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


# ---------------------------------------------------------------------------- per seed
def _round_seed(x: float) -> float:
    return round(float(x), SEED_DIGITS) if math.isfinite(x) else math.nan


def seed_rows(results: Sequence[RunResult]) -> list[dict]:
    """One row per (scenario, setting, verdict metric, seed): ``value`` (final) and
    ``start`` (the metric's learning curve before the first update; NaN without a curve),
    rounded to :data:`SEED_DIGITS` digits. The verdicts are drawn from these."""
    out = []
    for res in results:
        for name in VERDICT_METRICS[res.scenario.family]:
            if name not in res.metrics:
                continue
            curve = res.curves.get(name)
            for m, spec in enumerate(res.methods):
                for s, seed in enumerate(res.seeds):
                    start = math.nan if curve is None else float(curve[0, m, s])
                    out.append(
                        {
                            "scenario": res.scenario.name,
                            "method": spec.label,
                            "metric": name,
                            "seed": int(seed),
                            "value": _round_seed(res.metrics[name][m, s]),
                            "start": _round_seed(start),
                        }
                    )
    return out


def write_seed_rows(rows: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    """``rows`` of :func:`seed_rows` as CSV with the :data:`SEED_FIELDS` header."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SEED_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows({k: r[k] for k in SEED_FIELDS} for r in rows)


def read_seed_rows(path: str | Path) -> list[dict]:
    """Rows from a ``demo_seeds.csv`` (numbers converted back)."""
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row: dict = {k: r[k] for k in ("scenario", "method", "metric")}
            row["seed"] = int(r["seed"])
            row.update({k: float(r[k]) for k in ("value", "start")})
            out.append(row)
    return out


def _by_method(mine: Sequence[Mapping[str, Any]], key: str) -> dict[str, np.ndarray]:
    """Method -> its ``key`` values ordered by seed (NaN where a seed is missing)."""
    seeds = sorted({r["seed"] for r in mine})
    pos = {s: i for i, s in enumerate(seeds)}
    out: dict[str, np.ndarray] = {}
    for r in mine:
        a = out.setdefault(r["method"], np.full(len(seeds), np.nan))
        a[pos[r["seed"]]] = r[key]
    return out


SAME = 1e-6
"""Per-seed values closer than this on every seed count as the same setting's (rules that
are one rule on these rewards, such as ``gdpo`` and ``mean`` with no reward missing,
differ by rounding only)."""
HAIR = 0.005
"""A paired difference below this is shown as below the tables' two decimals."""


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    both = np.isfinite(a) & np.isfinite(b)
    return bool(
        np.array_equal(np.isfinite(a), np.isfinite(b)) and np.all(np.abs(a - b)[both] <= SAME)
    )


def _verdict(scenario: str, metric: str, mine: Sequence[Mapping[str, Any]]) -> dict:
    higher = METRICS.get(metric, ("", True))[1]
    values = _by_method(mine, "value")
    with np.errstate(invalid="ignore"):
        means = {
            m: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for m, v in values.items()
        }
    ranked = sorted(
        (m for m in values if math.isfinite(means[m])),
        key=lambda m: -means[m] if higher else means[m],
    )
    out: dict[str, Any] = {"scenario": scenario, "metric": metric}
    if not ranked:
        return {**out, "kind": "no clear difference", "best": None, "runner_up": None,
                "diff": None, "ci_low": None, "ci_high": None}  # fmt: skip
    best = ranked[0]
    same = [m for m in ranked[1:] if _same(values[m], values[best])]
    others = [m for m in ranked[1:] if m not in same]
    runner = others[0] if others else None
    if runner is None:
        diff = lo = hi = math.nan
    else:
        diff, lo, hi = paired_ci(values[best], values[runner])
    kind = "best" if (lo > 0 or hi < 0) or runner is None else "no clear difference"
    extra: dict[str, Any] = {}
    if metric in LEARNED_METRICS:
        starts = _by_method(mine, "start")
        start_all = np.concatenate([v for v in starts.values()])
        if np.isfinite(start_all).any() and math.isfinite(lo):  # 2 seeds or more
            start = float(np.nanmean(start_all))
            extra["start"] = _round(start)
            finals = [mean_ci(v[np.isfinite(v)]) for v in values.values()]
            if not any(float(m) - float(h) > start for m, h in finals):
                kind = "not learned"
    out.update(
        kind=kind,
        best=best,
        runner_up=runner,
        diff=_round(diff),
        ci_low=_round(lo),
        ci_high=_round(hi),
        best_mean=_round(means[best]),
        runner_up_mean=None if runner is None else _round(means[runner]),
        same_as=same,
        **extra,
    )
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()
    }


def paired_verdicts(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The verdicts (module docstring) of every scenario of the per-seed ``rows``
    (:func:`seed_rows`), in scenario order, each on its family's :data:`VERDICT_METRICS`.

    Each verdict has the keys :data:`VERDICT_FIELDS` (``diff``: mean over seeds of best
    minus runner-up, ``ci_low``/``ci_high`` its paired 95% t-interval; ``None`` where
    undefined), plus ``best_mean``, ``runner_up_mean``, ``same_as`` (settings with the
    best's per-seed values) and, on :data:`LEARNED_METRICS`, ``start`` (the mean start
    value).
    """
    out = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        here = [r for r in rows if r["scenario"] == scenario]
        for metric in dict.fromkeys(r["metric"] for r in here):
            out.append(_verdict(scenario, metric, [r for r in here if r["metric"] == metric]))
    return out


def _named(v: Mapping[str, Any]) -> str:
    same = v.get("same_as") or []
    return v["best"] + (f" (= {', '.join(same)})" if same else "")


def verdict_text(v: Mapping[str, Any]) -> str:
    """One verdict of :func:`paired_verdicts` as a phrase.

    >>> verdict_text({"metric": "m", "kind": "best", "best": "a", "runner_up": "b",
    ...               "best_mean": 0.8, "runner_up_mean": 0.6, "diff": 0.2,
    ...               "ci_low": 0.15, "ci_high": 0.25})
    'm: a best, 0.80 vs 0.60 (b), paired diff +0.200 [+0.150, +0.250]'
    """
    metric, kind = v["metric"], v["kind"]
    if v.get("best") is None:
        return f"{metric}: not measured"
    if kind == "not learned":
        return (
            f"{metric}: no method learned it (start {v['start']:.2f}; top {_named(v)} "
            f"{v['best_mean']:.2f})"
        )
    if v.get("runner_up") is None:
        return f"{metric}: {_named(v)} {v['best_mean']:.2f} (the only setting)"
    if v.get("ci_low") is None:
        ci = f"paired diff {v['diff']:+.3f}, one seed: no interval"
    else:
        ci = f"paired diff {v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"
    if kind == "best":
        hair = ", a margin the tables' 2 decimals do not show" if abs(v["diff"]) < HAIR else ""
        return (
            f"{metric}: {_named(v)} best, {v['best_mean']:.2f} vs {v['runner_up_mean']:.2f} "
            f"({v['runner_up']}), {ci}{hair}"
        )
    return (
        f"{metric}: no clear difference between {_named(v)} {v['best_mean']:.2f} and "
        f"{v['runner_up']} {v['runner_up_mean']:.2f} ({ci})"
    )


def verdict_lines(verdicts: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per scenario: its verdicts (:func:`paired_verdicts`), joined by ``; ``."""
    out = []
    for scenario in dict.fromkeys(v["scenario"] for v in verdicts):
        parts = [verdict_text(v) for v in verdicts if v["scenario"] == scenario]
        out.append(f"{scenario}: " + "; ".join(parts))
    return out
