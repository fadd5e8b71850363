"""The figure of ``rewardagg audit --plot`` (:func:`plot_report`); matplotlib is imported
inside the function only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rewardagg.audit.compute import AuditReport

__all__ = ["plot_report"]


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
