r"""The run's numbers: tidy rows, paired verdicts, ``toolcall.csv``/``toolcall.json``, the
printed tables and a figure.

Rows (``toolcall.csv``, and ``rows`` in ``toolcall.json``): one per (setting, metric) with
``method`` (the setting's label), ``metric``, ``mean``, ``ci_low``, ``ci_high`` (95% t
interval over seeds, :func:`rewardagg.demo.stats.mean_ci`) and ``n_seeds``. Metrics are
the held-out rates of :data:`rewardagg.toolcall.evaluation.METRICS` under greedy decoding
(``format``, ..., ``exact_call``) and sampling (the same names with ``_sampled``).

Paired verdicts. Every setting of a seed starts from the same warm start and sees the same
prompts, so setting :math:`a` is compared with a baseline :math:`b` by the per-seed
differences :math:`d_s = m_{a,s} - m_{b,s}`: their mean :math:`\bar d` and 95% t interval
:math:`\bar d \pm t_{0.975,n-1} s_d / \sqrt n`. The verdict is ``"higher"`` or ``"lower"``
when the interval excludes 0 and ``"no clear difference"`` otherwise; the baselines are the
warm start (``"start"``: did training move the metric) and ``gdpo`` (when it ran).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rewardagg.demo.stats import mean_ci
from rewardagg.toolcall.evaluation import METRICS
from rewardagg.toolcall.runner import SeedResult

__all__ = [
    "ALL_METRICS",
    "FIELDS",
    "TABLE_METRICS",
    "build_report",
    "markdown_tables",
    "paired_verdicts",
    "plot",
    "read_rows",
    "text_report",
    "tidy_rows",
    "write_outputs",
]

FIELDS = ("method", "metric", "mean", "ci_low", "ci_high", "n_seeds")
ALL_METRICS = (*METRICS, *(f"{m}_sampled" for m in METRICS))
#: The columns of the printed and documented tables.
TABLE_METRICS = ALL_METRICS
DIGITS = 6
BASELINE = "gdpo"


def _round(x: float) -> float:
    return round(float(x), DIGITS) if math.isfinite(x) else math.nan


def _summary(values: Sequence[float]) -> tuple[float, float, float, int]:
    v = np.asarray(values, dtype=np.float64)
    n = int(np.isfinite(v).sum())
    mu, half = (float(a) for a in mean_ci(v))
    h = half if math.isfinite(half) else 0.0
    return _round(mu), _round(mu - h), _round(mu + h), n


def tidy_rows(results: Sequence[SeedResult], labels: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (setting, metric), settings in ``labels`` order, metrics in
    :data:`ALL_METRICS` order (module docstring)."""
    rows = []
    for label in labels:
        for metric in ALL_METRICS:
            values = [r.rates[label][metric] for r in results if metric in r.rates.get(label, {})]
            if not values:
                continue
            mean, lo, hi, n = _summary(values)
            rows.append(
                {"method": label, "metric": metric, "mean": mean, "ci_low": lo, "ci_high": hi}
                | {"n_seeds": n}
            )
    return rows


def start_rates(results: Sequence[SeedResult]) -> dict[str, float]:
    """The warm start's rate of every metric, averaged over seeds."""
    return {m: _round(float(np.mean([r.start[m] for r in results]))) for m in ALL_METRICS}


def paired_verdicts(results: Sequence[SeedResult], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per setting, baseline and metric: mean per-seed difference, its t interval and the
    verdict (module docstring)."""
    out = []
    baselines = ["start"] + ([BASELINE] if BASELINE in labels else [])
    for base in baselines:
        for label in labels:
            if label == base:
                continue
            for metric in ALL_METRICS:
                diffs = [
                    r.rates[label][metric]
                    - (r.start[metric] if base == "start" else r.rates[base][metric])
                    for r in results
                ]
                mean, lo, hi, n = _summary(diffs)
                if n < 2:  # no interval from one seed
                    lo = hi = math.nan
                verdict = "higher" if lo > 0 else "lower" if hi < 0 else "no clear difference"
                out.append(
                    {
                        "method": label,
                        "baseline": base,
                        "metric": metric,
                        "mean_diff": mean,
                        "ci_low": lo,
                        "ci_high": hi,
                        "n_seeds": n,
                        "verdict": verdict,
                    }
                )
    return out


def _mean_curves(results: Sequence[SeedResult], label: str) -> dict[str, list[float]]:
    names = results[0].curves.get(label, {}).keys()
    out = {}
    for name in names:
        series = [r.curves[label][name] for r in results if name in r.curves.get(label, {})]
        width = min(len(s) for s in series)
        out[name] = [_round(x) for x in np.mean([s[:width] for s in series], axis=0)]
    return out


def build_report(
    results: Sequence[SeedResult],
    labels: Sequence[str],
    *,
    settings: Mapping[str, Any],
    run: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything ``toolcall.json`` holds: ``rows``, ``start`` (metric -> warm-start rate,
    mean over seeds), ``start_by_seed``, ``settings`` (label -> trainer config fields),
    ``run`` (sizes, seeds, device, wall time, machine), ``curves`` (label -> name -> mean
    over seeds per training step), ``verdicts`` and ``seconds`` (per seed and phase)."""
    return {
        "rows": tidy_rows(results, labels),
        "start": start_rates(results),
        "start_by_seed": {
            str(r.seed): {m: _round(r.start[m]) for m in ALL_METRICS} for r in results
        },
        "settings": dict(settings),
        "run": dict(run),
        "curves": {label: _mean_curves(results, label) for label in labels},
        "verdicts": paired_verdicts(results, labels),
        "seconds": {
            str(r.seed): {k: {a: round(b, 2) for a, b in v.items()} for k, v in r.seconds.items()}
            for r in results
        },
    }


def write_outputs(report: Mapping[str, Any], out: str | Path) -> list[Path]:
    """``toolcall.csv`` and ``toolcall.json`` in ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "toolcall.csv", out / "toolcall.json"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: r[k] for k in FIELDS} for r in report["rows"])
    json_path.write_text(json.dumps(report, indent=1, allow_nan=True) + "\n")
    return [csv_path, json_path]


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows from a ``toolcall.csv`` (numbers converted back)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row: dict[str, Any] = {"method": r["method"], "metric": r["metric"]}
            row.update({k: float(r[k]) for k in ("mean", "ci_low", "ci_high")})
            row["n_seeds"] = int(r["n_seeds"])
            rows.append(row)
    return rows


def _cell(row: Mapping[str, Any]) -> str:
    half = (row["ci_high"] - row["ci_low"]) / 2
    return f"{row['mean']:.2f} ± {half:.2f}"


def markdown_tables(report: Mapping[str, Any]) -> str:
    """The greedy and the sampled table (mean ± half-width of the 95% interval over seeds,
    the warm start first) and the verdicts against the baselines, as Markdown; what the
    docs show and what a test compares with the reference run."""
    rows = report["rows"]
    labels = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["method"], r["metric"]): r for r in rows}
    parts = []
    for title, suffix in (("greedy decoding", ""), ("sampling (temperature 1)", "_sampled")):
        metrics = [f"{m}{suffix}" for m in METRICS]
        head = "| setting | " + " | ".join(m.removesuffix(suffix) for m in metrics) + " |"
        lines = [f"Held-out rates, {title}:", "", head, "|" + "---|" * (len(metrics) + 1)]
        lines.append(
            "| warm start | " + " | ".join(f"{report['start'][m]:.2f}" for m in metrics) + " |"
        )
        for label in labels:
            cells = [_cell(by[(label, m)]) if (label, m) in by else "" for m in metrics]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    for base in dict.fromkeys(v["baseline"] for v in report["verdicts"]):
        lines = [
            f"Paired differences against {'the warm start' if base == 'start' else base} "
            "(mean of per-seed differences, 95% t interval; * = interval excludes 0):",
            "",
        ]
        metrics = ["format", "values", "budget", "polite", "exact_call"]
        metrics += [f"{m}_sampled" for m in metrics]
        lines.append("| setting | " + " | ".join(metrics) + " |")
        lines.append("|" + "---|" * (len(metrics) + 1))
        mine = {(v["method"], v["metric"]): v for v in report["verdicts"] if v["baseline"] == base}
        for label in labels:
            if (label, "format") not in mine:
                continue
            cells = []
            for m in metrics:
                v = mine[(label, m)]
                star = "*" if v["verdict"] != "no clear difference" else ""
                ci = (
                    f" [{v['ci_low']:+.2f}, {v['ci_high']:+.2f}]"
                    if math.isfinite(v["ci_low"])
                    else ""
                )
                cells.append(f"{v['mean_diff']:+.2f}{star}{ci}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def text_report(report: Mapping[str, Any]) -> str:
    """What ``rewardagg toolcall`` prints: the run line, then :func:`markdown_tables`."""
    run = report["run"]
    head = (
        f"toolcall: {len(run['seeds'])} seed(s), {run['steps']} steps, model {run['model_size']}, "
        f"device {run['device']}, wall {run['wall_seconds']:.0f} s"
    )
    return head + "\n\n" + markdown_tables(report)


def plot(report: Mapping[str, Any], path: str | Path) -> Path | None:
    """Learning curves (training-batch means per step) of ``format``, ``values``, ``budget``
    and ``polite`` per setting, to ``path``; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = ("format", "values", "budget", "polite")
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), sharex=True)
    for ax, name in zip(axes, names, strict=True):
        for label, curves in report["curves"].items():
            if name in curves:
                ax.plot(range(1, len(curves[name]) + 1), curves[name], label=label)
        ax.axhline(report["start"][f"{name}_sampled"], color="grey", ls=":", lw=1)
        ax.set_title(f"{name} (training batches)")
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
