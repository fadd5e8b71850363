"""The demo's printed table, legend, files (``demo.csv``, ``demo.json``) and figure.

Everything here is drawn from the tidy rows of :mod:`rewardagg.demo.tidy` (the figure
too), so ``demo.csv`` is the source of every number the tables show, and
``demo_seeds.csv`` (the per-seed values) the source of the paired verdicts. Cells are
``mean±h``: the mean over seeds and the half-width of its 95% t interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rewardagg import get_aggregator
from rewardagg.demo.results import RunResult, metric_description
from rewardagg.demo.scenarios import select_scenarios
from rewardagg.demo.settings import VARIANTS
from rewardagg.demo.stats import mean_ci
from rewardagg.demo.tidy import (
    VERDICT_FIELDS,
    VERDICT_METRICS,
    paired_verdicts,
    seed_rows,
    tidy_rows,
    verdict_lines,
    write_rows,
    write_seed_rows,
)
from rewardagg.method_settings import MethodSpec

__all__ = [
    "OUTPUT_FILES",
    "VERDICT_HEADER",
    "check_output_dir",
    "format_legend",
    "format_summary",
    "format_table",
    "format_verdicts",
    "plot_rows",
    "scenario_descriptions",
    "to_json_dict",
    "write_outputs",
]

OUTPUT_FILES = ("demo.csv", "demo_seeds.csv", "demo.json", "demo.png")
#: Metrics the figure plots, per family (each on [0, 1]).
PLOTTED = {
    "rubric": ("rubric_score", "critical_met", "neglect"),
    "neglect": ("format", "worst", "neglect"),
}
_MARKERS = ("o", "^", "x")


def scenario_descriptions() -> dict[str, str]:
    """Name -> description of every built-in scenario."""
    return {s.name: s.description for s in select_scenarios(["all"])}


def _cell(row: Mapping[str, Any] | None) -> str:
    if row is None or not math.isfinite(row["mean"]):
        return "–"
    half = (row["ci_high"] - row["ci_low"]) / 2
    if row["n_seeds"] < 2:
        return f"{row['mean']:.2f}"
    return f"{row['mean']:.2f}±{half:.2f}"


def _columns(metrics: list[str]) -> list[str]:
    """Table columns: the per-prompt format values share one column."""
    out = [m for m in metrics if not m.startswith("format_p")]
    if any(m.startswith("format_p") for m in metrics):
        out.insert(out.index("format") + 1 if "format" in out else 0, "per prompt")
    return out


def format_table(
    rows: Sequence[Mapping[str, Any]], *, descriptions: Mapping[str, str] | None = None
) -> str:
    """Plain-text tables, one per scenario, one line per setting."""
    descriptions = scenario_descriptions() if descriptions is None else descriptions
    blocks = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        mine = [r for r in rows if r["scenario"] == scenario]
        metrics = list(dict.fromkeys(r["metric"] for r in mine))
        methods = list(dict.fromkeys(r["method"] for r in mine))
        cell = {(r["method"], r["metric"]): r for r in mine}
        cols = _columns(metrics)
        lines = []
        for method in methods:
            cells = [method]
            for c in cols:
                if c == "per prompt":
                    per = [cell.get((method, m)) for m in metrics if m.startswith("format_p")]
                    cells.append(" ".join("–" if r is None else f"{r['mean']:.2f}" for r in per))
                else:
                    cells.append(_cell(cell.get((method, c))))
            lines.append(cells)
        header = ["method", *cols]
        widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]
        fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
        n = max(r["n_seeds"] for r in mine)
        desc = descriptions.get(scenario, "")
        title = f"== {scenario}" + (f": {desc}" if desc else "") + f" (mean ± 95% CI, {n} seeds)"
        body = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        body += [fmt.format(*cells) for cells in lines]
        blocks.append("\n".join([title, *body]))
    return "\n\n".join(blocks)


VERDICT_HEADER = (
    "verdicts (per scenario: the best mean against the runner-up by the mean of their "
    "per-seed differences, paired 95% t-interval; 'no clear difference' when it covers 0; "
    "critical_met 'not learned' when no setting ends above its start rate by more than "
    "its 95% CI):"
)


def format_verdicts(verdicts: Sequence[Mapping[str, Any]]) -> str:
    """The verdict lines (:func:`rewardagg.demo.tidy.verdict_lines`) of
    :func:`rewardagg.demo.tidy.paired_verdicts` under a header."""
    return "\n".join([VERDICT_HEADER, *verdict_lines(verdicts)])


def format_summary(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
    """One metric across scenarios: a line per setting, a column per scenario (the
    scenarios that measure ``metric``), cells ``mean±h``."""
    mine = [r for r in rows if r["metric"] == metric]
    scenarios = list(dict.fromkeys(r["scenario"] for r in mine))
    methods = list(dict.fromkeys(r["method"] for r in mine))
    cell = {(r["method"], r["scenario"]): r for r in mine}
    header = [metric, *scenarios]
    lines = [[m, *(_cell(cell.get((m, sc))) for sc in scenarios)] for m in methods]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    body = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    return "\n".join(body + [fmt.format(*cells) for cells in lines])


def _method_line(spec: MethodSpec) -> str:
    variant = next((v for v in VARIANTS if v.spec == spec), None)
    if variant is not None:
        return variant.description
    agg = get_aggregator(spec.method)
    params = ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in spec.params.items()
    )
    return agg.summary + (f" [{params}]" if params else "")


def format_legend(methods: Sequence[MethodSpec], metrics: Iterable[str]) -> str:
    """What the columns and the settings of the tables are."""
    metrics = list(dict.fromkeys(metrics))
    lines = ["columns:"]
    for m in _columns(metrics):
        if m == "per prompt":
            lines.append(
                "  per prompt: P(format met) on each prompt (they start at different rates)"
            )
        else:
            lines.append(f"  {m}: {metric_description(m)}")
    lines.append("methods:")
    width = max(len(s.label) for s in methods)
    lines += [f"  {s.label:<{width}}  {_method_line(s)}" for s in methods]
    same = _same_on_binary(methods)
    if len(same) > 1:
        lines.append(
            f"note: {' and '.join(same)} are the same rule on 0/1 rewards (the rubric's): "
            "with p <= 0 the power mean of a row is 1 when every criterion is met and 0 "
            "otherwise, so their rows are identical there (they differ on graded rewards)"
        )
    return "\n".join(lines)


def _same_on_binary(methods: Sequence[MethodSpec]) -> list[str]:
    """Labels of the ``power_mean`` settings with ``p <= 0`` and no options."""
    return [
        s.label
        for s in methods
        if s.method == "power_mean" and not s.options and float(s.params.get("p", 1.0)) <= 0
    ]


# ---------------------------------------------------------------------------- files
def check_output_dir(out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """``out_dir`` as a path, created if needed, after checking that the demo may write its
    files there: ``FileExistsError`` if one of :data:`OUTPUT_FILES` is already there
    (unless ``overwrite``), ``NotADirectoryError`` if ``out_dir`` is a file."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    there = [str(out / f) for f in OUTPUT_FILES if (out / f).exists()]
    if there and not overwrite:
        raise FileExistsError(
            f"{', '.join(there)} already exist; choose another --out folder or pass --overwrite"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _curve(x: np.ndarray) -> dict[str, list]:
    mu, half = mean_ci(x, axis=-1)
    half = np.nan_to_num(half)
    return {"mean": _clean(mu), "ci_low": _clean(mu - half), "ci_high": _clean(mu + half)}


def _clean(a: np.ndarray) -> list:
    return [None if not math.isfinite(v) else round(float(v), 6) for v in np.ravel(a)]


def to_json_dict(results: Sequence[RunResult], config: Any = None, **meta: Any) -> dict:
    """Everything the demo measured: settings, tidy rows and learning curves."""
    cfg = {} if config is None else asdict(config)
    if results:
        cfg["methods"] = [asdict(m) for m in results[0].methods]
    rows = tidy_rows(results)
    out: dict = {"config": cfg, "meta": meta, "rows": [_json_row(r) for r in rows]}
    out["verdicts"] = [
        {k: v[k] for k in VERDICT_FIELDS} | {k: v[k] for k in v if k not in VERDICT_FIELDS}
        for v in paired_verdicts(seed_rows(results))
    ]
    out["scenarios"] = [
        {
            "name": res.scenario.name,
            "family": res.scenario.family,
            "description": res.scenario.description,
            "parameters": {k: v for k, v in asdict(res.scenario).items() if k != "env"}
            | ({"env": asdict(res.scenario.env)} if hasattr(res.scenario, "env") else {}),
            "seeds": res.seeds,
            "skipped": res.skipped,
            "checkpoints": [int(c) for c in res.checkpoints],
            "curves": {
                spec.label: {k: _curve(v[:, m]) for k, v in res.curves.items()}
                for m, spec in enumerate(res.methods)
            },
        }
        for res in results
    ]
    return out


def _json_row(r: Mapping[str, Any]) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}


def write_outputs(
    results: Sequence[RunResult],
    config: Any,
    out_dir: str | Path,
    *,
    plot: bool = True,
    **meta: Any,
) -> dict[str, Path]:
    """Write ``demo.csv``, ``demo_seeds.csv``, ``demo.json`` and (``plot=True``)
    ``demo.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "demo.csv", "seeds": out / "demo_seeds.csv", "json": out / "demo.json"}
    rows = tidy_rows(results)
    write_rows(rows, paths["csv"])
    write_seed_rows(seed_rows(results), paths["seeds"])
    with open(paths["json"], "w") as f:
        json.dump(to_json_dict(results, config, **meta), f, indent=1)
    if plot:
        paths["png"] = out / "demo.png"
        plot_rows(rows, paths["png"], verdicts=paired_verdicts(seed_rows(results)))
    return paths


# ---------------------------------------------------------------------------- figure
def _kappa_rank(label: str, method: str) -> float | None:
    """Where a setting sits on the mean (kappa 0) -> min (kappa inf) ramp, or None."""
    if method == "mean":
        return 0.0
    if method == "min":
        return math.inf
    if label.startswith("softmin k=") and "+" not in label:
        return float(label.split("=", 1)[1].split()[0])
    return None


#: Colours of the settings outside the SoftMin ramp, by the first word of their label.
_FIXED_COLOURS = {
    "grpo": "black",
    "gdpo": "tab:red",
    "gdpo_point_weights": "darkred",
    "gdpo+lagrange": "tab:pink",
    "gd2po": "tab:brown",
    "gd2po_snr": "peru",
    "mean_var": "tab:purple",
    "cvar": "tab:orange",
    "power_mean": "tab:green",
    "tchebycheff": "tab:cyan",
    "softmin": "slategray",  # a SoftMin off the ramp (with a conflict filter)
}


def _colours(labels: Sequence[str]) -> dict[str, Any]:
    """A sequential ramp (Blues) for the SoftMin family ordered by kappa (mean = kappa 0,
    min = kappa inf); fixed colours for the others (:data:`_FIXED_COLOURS`, a setting's
    further settings lighter, evenly, at most half-way to white), tab10 for methods
    registered at run time."""
    import matplotlib
    from matplotlib.colors import to_rgba

    ramp = sorted((k, lab) for lab in labels if (k := _kappa_rank(lab, lab.split()[0])) is not None)
    blues = matplotlib.colormaps["Blues"]
    out: dict[str, Any] = {}
    for i, (_, lab) in enumerate(ramp):
        out[lab] = blues(0.3 + 0.7 * i / max(len(ramp) - 1, 1))
    seen: dict[str, int] = {}
    rest = [x for x in labels if x not in out]
    count = {h: sum(x.split()[0] == h for x in rest) for h in {x.split()[0] for x in rest}}
    other = matplotlib.colormaps["tab10"]
    for n, lab in enumerate(rest):
        head = lab.split()[0]
        base = to_rgba(_FIXED_COLOURS.get(head, other(n % 10)))
        shade = seen.get(head, 0)
        seen[head] = shade + 1
        lighter = 0.55 * shade / max(count[head] - 1, 1)  # at most 0.55 of the way to white
        out[lab] = (*(c + (1 - c) * lighter for c in base[:3]), 1.0)
    return out


def _takeaway(verdicts: Sequence[Mapping[str, Any]], scenario: str, metric: str) -> str:
    """A short paired verdict for a panel title."""
    v = next((v for v in verdicts if v["scenario"] == scenario and v["metric"] == metric), None)
    if v is None or v.get("runner_up") is None:
        return ""
    if v["kind"] == "not learned":
        return f"{metric}: not learned (start {v['start']:.2f})"
    if v["kind"] == "best":
        return f"{metric}: {v['best']} best ({v['diff']:+.3f})"
    return f"{metric}: no clear winner (top {v['best_mean']:.2f})"


def plot_rows(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    verdicts: Sequence[Mapping[str, Any]] = (),
) -> None:
    """One panel per scenario: each setting's final values (dots) with their 95% CIs
    (bars), settings down the y axis, metrics by marker; the panel title says who wins
    (``verdicts``: :func:`rewardagg.demo.tidy.paired_verdicts`). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colours = _colours(methods)
    ncols = min(4, len(scenarios))
    nrows = math.ceil(len(scenarios) / ncols)
    height = 0.9 + 0.2 * len(methods)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.4 * ncols + 1.6, height * nrows + 0.8), squeeze=False, sharey=True
    )
    ypos = {m: i for i, m in enumerate(methods)}
    for j, scenario in enumerate(scenarios):
        ax = axes[j // ncols, j % ncols]
        mine = [r for r in rows if r["scenario"] == scenario]
        family = "rubric" if any(r["metric"] == "rubric_score" for r in mine) else "neglect"
        plotted = PLOTTED[family]
        for r in mine:
            if r["metric"] not in plotted:
                continue
            k = plotted.index(r["metric"])
            y = ypos[r["method"]] + (k - 1) * 0.22
            ax.errorbar(
                r["mean"],
                y,
                xerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]],
                fmt=_MARKERS[k],
                color=colours[r["method"]],
                ms=4.5,
                lw=1.0,
                mfc="none" if k == 2 else colours[r["method"]],
            )
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(len(methods) - 0.5, -0.5)
        ax.set_yticks(range(len(methods)), methods, fontsize=7.5)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
        says = [_takeaway(verdicts, scenario, m) for m in VERDICT_METRICS[family]]
        ax.set_title("\n".join([scenario, *says]), fontsize=8)
    for j in range(len(scenarios), nrows * ncols):
        axes[j // ncols, j % ncols].set_visible(False)
    metrics = {r["metric"] for r in rows}
    families = [f for f in PLOTTED if any(m in metrics for m in PLOTTED[f][:2])]
    handles = [
        plt.Line2D(
            [], [], ls="none", marker=_MARKERS[k], color="0.3", mfc="none" if k == 2 else "0.3"
        )
        for k in range(3)
    ]
    labels = [" | ".join(dict.fromkeys(PLOTTED[f][k] for f in families)) for k in range(3)]
    labels[2] += " (lower is better)"
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False, fontsize=9)
    n = max(r["n_seeds"] for r in rows)
    fig.suptitle(
        f"rewardagg demo: final values, mean and 95% CI over {n} seeds\n"
        "(blues: the SoftMin family by kappa, mean = 0 ... min = inf)",
        fontsize=9.5,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    fig.savefig(path, dpi=80)
    plt.close(fig)
