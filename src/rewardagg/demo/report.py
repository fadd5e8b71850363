"""Tables, files and figure of ``rewardagg demo``.

Every statistic is a mean over seeds with the half-width of a 95% Student t interval
(``mean ± half``). "Final" means after the last update. The numbers:

- ``format``: probability that the policy meets the constraint (mean over prompts).
- ``verbose_j``: expected noise-free word count of verbosity reward ``j`` (0 to ``window``).
- ``worst``: mean over prompts of the smallest normalised expected reward.
- ``mean``: mean over the K normalised expected rewards.
- ``steps``: first update after which ``format`` >= threshold, averaged over the seeds that
  got there; ``reached`` says how many did.
- ``neglect``: over all updates, the share of sampled responses that failed the
  constraint in a group where another response met it, and still got a positive advantage.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rewardagg.demo.experiment import DemoConfig, ScenarioResult, mean_ci

__all__ = ["format_table", "plot_results", "summary_rows", "to_json_dict", "write_outputs"]

#: Above this many rewards the table shows the verbosity rewards' average, not each one.
MAX_REWARD_COLUMNS = 5


def summary_rows(results: Sequence[ScenarioResult]) -> list[dict]:
    """One flat dict per (scenario, method) with the final numbers (see module docstring)."""
    rows = []
    for res in results:
        env = res.scenario.env
        names = env.reward_names
        steps = res.steps_to_threshold()
        final = res.expected[-1]  # (M, S, K)
        for m, spec in enumerate(res.methods):
            row: dict = {"scenario": res.scenario.name, "method": spec.label}
            row["method_name"] = spec.method
            row.update({f"param_{k}": v for k, v in spec.params.items()})
            for k, name in enumerate(names):
                mu, ci = mean_ci(final[m, :, k])
                row[name], row[f"{name}_ci"] = float(mu), float(ci)
            mu, ci = mean_ci(final[m, :, 1:].mean(axis=-1))
            row["verbose_avg"], row["verbose_avg_ci"] = float(mu), float(ci)
            mu, ci = mean_ci(res.worst[-1, m])
            row["worst"], row["worst_ci"] = float(mu), float(ci)
            mu, ci = mean_ci(res.mean_normalised[-1, m])
            row["mean"], row["mean_ci"] = float(mu), float(ci)
            reached = np.isfinite(steps[m])
            row["threshold"] = res.threshold
            row["steps_to_threshold"] = (
                float(np.mean(steps[m][reached])) if reached.any() else math.nan
            )
            row["reached"] = int(reached.sum())
            row["seeds"] = len(res.seeds)
            mu, ci = mean_ci(_nanmean_first_axis(res.neglect[:, m]))
            row["neglect"], row["neglect_ci"] = float(mu), float(ci)
            rows.append(row)
    return rows


def _nanmean_first_axis(x: np.ndarray) -> np.ndarray:
    finite = np.isfinite(x)
    n = finite.sum(axis=0)
    total = np.where(finite, x, 0.0).sum(axis=0)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _pm(mu: float, ci: float, digits: int = 2) -> str:
    if not math.isfinite(mu):
        return "–"
    if not math.isfinite(ci):
        return f"{mu:.{digits}f}"
    return f"{mu:.{digits}f}±{ci:.{digits}f}"


def format_table(results: Sequence[ScenarioResult]) -> str:
    """Plain-text tables, one per scenario, one line per method."""
    rows = summary_rows(results)
    blocks = []
    for res in results:
        env = res.scenario.env
        names = env.reward_names
        reward_cols = list(names) if len(names) <= MAX_REWARD_COLUMNS else ["format", "verbose_avg"]
        thr = f"steps→{res.threshold:.0%}"
        header = ["method", *reward_cols, "worst", "mean", thr, "neglect"]
        lines = []
        for row in (r for r in rows if r["scenario"] == res.scenario.name):
            cells = [row["method"]]
            cells += [_pm(row[c], row[f"{c}_ci"]) for c in reward_cols]
            cells += [_pm(row["worst"], row["worst_ci"]), _pm(row["mean"], row["mean_ci"])]
            st = row["steps_to_threshold"]
            cells.append(
                f"{st:.0f} ({row['reached']}/{row['seeds']})"
                if math.isfinite(st)
                else f"never (0/{row['seeds']})"
            )
            cells.append(_pm(row["neglect"], row["neglect_ci"]))
            lines.append(cells)
        widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=False)]
        fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
        title = (
            f"== {res.scenario.name}: {res.scenario.description}; "
            f"{len(res.seeds)} seeds × {res.expected.shape[0] - 1} steps, "
            f"final values, mean ± 95% CI"
        )
        body = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        body += [fmt.format(*cells) for cells in lines]
        blocks.append("\n".join([title, *body]))
    return "\n\n".join(blocks)


def _curve(x: np.ndarray) -> dict:
    mu, ci = mean_ci(x, axis=-1)
    return {"mean": _clean(mu), "ci": _clean(ci)}


def _clean(a: np.ndarray) -> list:
    return [None if not math.isfinite(v) else round(float(v), 6) for v in np.ravel(a)]


def to_json_dict(results: Sequence[ScenarioResult], config: DemoConfig, **meta) -> dict:
    """Everything the demo measured: settings, summary rows and learning curves."""
    cfg = asdict(config)
    cfg["methods"] = [asdict(m) for m in results[0].methods] if results else []
    out: dict = {"config": cfg, "meta": meta, "summary": _json_safe(summary_rows(results))}
    out["scenarios"] = []
    for res in results:
        env = res.scenario.env
        sc = {
            "name": res.scenario.name,
            "description": res.scenario.description,
            "environment": asdict(env),
            "reward_names": list(env.reward_names),
            "seeds": res.seeds,
        }
        curves: dict[str, dict] = {}
        for m, spec in enumerate(res.methods):
            curves[spec.label] = {
                "format": _curve(res.satisfaction[:, m]),
                "mean": _curve(res.mean_normalised[:, m]),
                "worst": _curve(res.worst[:, m]),
                "final_per_seed": {
                    name: _clean(res.expected[-1, m, :, k])
                    for k, name in enumerate(env.reward_names)
                },
            }
        sc["curves"] = curves
        out["scenarios"].append(sc)
    return out


def _json_safe(rows: list[dict]) -> list[dict]:
    return [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        for r in rows
    ]


def write_outputs(
    results: Sequence[ScenarioResult],
    config: DemoConfig,
    out_dir: str | Path,
    *,
    plot: bool = True,
    **meta,
) -> dict[str, Path]:
    """Write ``demo.json``, ``demo.csv`` and (``plot=True``) ``demo.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "demo.json", "csv": out / "demo.csv"}
    with open(paths["json"], "w") as f:
        json.dump(to_json_dict(results, config, **meta), f, indent=1)
    rows = summary_rows(results)
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)
    if plot:
        paths["png"] = out / "demo.png"
        plot_results(results, paths["png"])
    return paths


def plot_results(results: Sequence[ScenarioResult], path: str | Path) -> None:
    """Learning curves: one column per scenario; rows: format satisfaction, worst, mean.

    Lines are means over seeds, bands the 95% t interval. Needs matplotlib.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(results)
    panels = (
        ("format", "constraint satisfaction"),
        ("worst", "worst normalised reward"),
        ("mean", "mean normalised reward"),
    )
    fig, axes = plt.subplots(
        len(panels), n, figsize=(3.6 * n + 0.6, 7.8), sharex="col", squeeze=False
    )
    cmap = plt.get_cmap("tab10")
    for j, res in enumerate(results):
        t = np.arange(res.expected.shape[0])
        series = {"format": res.satisfaction, "worst": res.worst, "mean": res.mean_normalised}
        for i, (key, label) in enumerate(panels):
            ax = axes[i, j]
            for m, spec in enumerate(res.methods):
                mu, ci = mean_ci(series[key][:, m], axis=-1)
                ci = np.nan_to_num(ci)
                ax.plot(t, mu, color=cmap(m % 10), lw=1.4, label=spec.label)
                ax.fill_between(t, mu - ci, mu + ci, color=cmap(m % 10), alpha=0.15, lw=0)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel(label)
            if i == 0:
                ax.set_title(res.scenario.name, fontsize=10)
            if i == len(panels) - 1:
                ax.set_xlabel("policy-gradient update")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), frameon=False)
    fig.suptitle(
        "rewardagg demo: a format constraint against verbosity rewards "
        f"(mean over {len(results[0].seeds)} seeds, 95% CI bands)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
