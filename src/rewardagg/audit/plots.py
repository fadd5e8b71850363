"""The figure of ``rewardagg audit --plot`` (:func:`plot_report`); matplotlib is imported
inside the function only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rewardagg.audit.compute import AuditReport

__all__ = ["ANNOTATE_UP_TO", "make_figure", "plot_report"]


def plot_report(rep: AuditReport, path: str | Path) -> None:
    """Three panels: masked failures per method, bottleneck share per reward, Spearman."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = make_figure(rep)
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: Methods up to which the Spearman panel writes each correlation in its cell.
ANNOTATE_UP_TO = 8


def make_figure(rep: AuditReport):
    """The audit figure (a matplotlib ``Figure``): the counts on integer axes, the method
    names small enough, and rotated, not to overlap, the Spearman values written in the
    cells for up to :data:`ANNOTATE_UP_TO` methods (a colour scale beyond)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    labels = [m.label for m in rep.methods]
    names = rep.reward_names
    n = len(labels)
    small = 8 if n <= 10 else 7
    fig = plt.figure(figsize=(17, 6.2), layout="constrained")
    grid = fig.add_gridspec(1, 3, width_ratios=[1.2, 0.8, 1.3])
    ax = fig.add_subplot(grid[0])
    x = np.arange(n)
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
    ax.set_xticklabels(labels, rotation=90, fontsize=small)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: 0, 1, 2, ...
    ax.set_ylabel("completions")
    ax.set_title("masked failures (fail a reward, positive advantage)", fontsize=10)
    ax.legend(frameon=False)
    ax = fig.add_subplot(grid[1])
    y = np.arange(len(names))
    ax.barh(y, rep.bottleneck_share, color="tab:gray")
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=small)
    ax.invert_yaxis()
    ax.set_xlabel("fraction of rows whose lowest Z is this reward")
    ax.set_title("bottleneck share", fontsize=10)
    ax = fig.add_subplot(grid[2])
    im = ax.imshow(rep.spearman, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(n))
    ax.set_xticklabels(labels, rotation=90, fontsize=small)
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels, fontsize=small)
    if n <= ANNOTATE_UP_TO:
        for i in range(n):
            for j in range(n):
                v = rep.spearman[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title("Spearman rank correlation of advantages", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"rewardagg audit: {Path(rep.source).name if rep.source else ''}", fontsize=11)
    return fig
