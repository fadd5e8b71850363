"""The two figures of :mod:`rewardagg.taylor`; matplotlib is imported inside the
functions only."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rewardagg.taylor.series import (
    _as_float64,
    _check_kappa,
    _cumulants_last,
    _prepare_row,
    _row_spread,
    _softmin_grid,
)
from rewardagg.taylor.verify import ExpansionResult

__all__ = ["plot_expansion", "plot_softmin"]


def _axes(ax: Any):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5.5, 4.0))
    return ax


def plot_expansion(result: ExpansionResult, ax: Any = None):
    r"""Plot :math:`|S_\kappa - S^{(n)}_\kappa|` against :math:`\kappa` on log-log axes.

    Lines: one solid line with markers per order (hollow markers: points left out of the
    fit), one dashed reference line :math:`\propto \kappa^{\text{expected}}` per order
    that has a fitted slope and an expected one (drawn a factor 4 below the data, so a
    correct series shows two parallel lines), and one dotted horizontal line at the
    rounding floor. Returns the matplotlib ``Axes``.
    """
    ax = _axes(ax)
    k = np.asarray(result.kappas)
    has_ref_label = False
    for i, n in enumerate(result.orders):
        color = f"C{i}"
        err = np.asarray(result.errors[n], dtype=np.float64)
        shown = np.where(err > 0, err, np.nan)
        use = np.asarray(result.fitted[n])
        s, e = result.slopes[n], result.expected[n]
        expect = "" if e is None else f" (expected {e})"
        label = f"order {n}: slope {s:.2f}" if math.isfinite(s) else f"order {n}: below rounding"
        label += expect
        ax.plot(
            k,
            shown,
            "-",
            color=color,
            label=label,
            marker="o",
            markersize=3,
            markevery=np.flatnonzero(use).tolist() or None,
        )
        if np.any(~use & np.isfinite(shown)):
            ax.scatter(k[~use], shown[~use], s=10, facecolors="none", edgecolors=color)
        if e is not None and math.isfinite(s):
            # through the geometric centre of the fitted points, shifted down by a factor
            # 4 so that it runs parallel to the data instead of hiding under it
            lk, le = np.log(k[use]).mean(), np.log(err[use]).mean()
            ref = np.exp(le + e * (np.log(k) - lk)) / 4
            label = "expected slope (dashed, offset)" if not has_ref_label else "_nolegend_"
            has_ref_label = True
            ax.plot(k, ref, "--", color=color, alpha=0.7, linewidth=1, label=label)
    ax.axhline(result.floor, color="0.5", linestyle=":", linewidth=1, label="rounding floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # a 1.5-decade axis crowds minor labels
    ax.set_xlabel(r"$\kappa$")
    ax.set_ylabel(r"$|S_\kappa - S^{(n)}_\kappa|$")
    ax.set_title("SoftMin cumulant series: truncation error")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith(("expected", "rounding")))
    ax.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        fontsize="small",
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
    )
    return ax


def plot_softmin(z: Any, *, kappas: Any = None, weights: Any = None, ax: Any = None):
    r"""Plot, for one row, the SoftMin :math:`S_\kappa`, the mean, the min and the
    variance-penalty approximation :math:`\bar z - \tfrac{\kappa}{2}\operatorname{Var}(z)`
    against :math:`\kappa` (log axis), with a vertical line at the convergence radius
    :math:`\pi / (\max z - \min z)`: five lines in all. Default grid: :math:`\kappa\,
    \text{spread}` from 0.01 to 100. Returns the matplotlib ``Axes``.
    """
    zz, v = _prepare_row(z, weights)
    spread = _row_spread(zz, v)
    if not spread > 0:
        raise ValueError("plot_softmin needs a row with at least two distinct present rewards")
    if kappas is None:
        grid = np.logspace(math.log10(1e-2 / spread), math.log10(1e2 / spread), 200)
    else:
        grid = np.sort(_check_kappa(kappas, allow_inf=False).ravel())
        grid = grid[grid > 0]
    w = None if weights is None else _as_float64(weights, "weights")
    kap = _cumulants_last(zz, v, 2)
    s = _softmin_grid(zz[None, :], grid, w)[:, 0]
    ax = _axes(ax)
    ax.plot(grid, s, "-", color="C0", linewidth=2, label=r"SoftMin $S_\kappa$")
    ax.plot(grid, np.full_like(grid, kap[0]), "--", color="C1", label="mean")
    ax.plot(grid, np.full_like(grid, zz[v > 0].min()), "--", color="C2", label="min")
    ax.plot(
        grid,
        kap[0] - grid / 2 * kap[1],
        ":",
        color="C3",
        linewidth=2,
        label=r"mean $- \frac{\kappa}{2}$ var",
    )
    ax.axvline(math.pi / spread, color="0.5", linewidth=1, label=r"$\pi/(\max z - \min z)$")
    ax.set_xscale("log")
    lo = zz[v > 0].min()
    ax.set_ylim(lo - 0.25 * spread, kap[0] + 0.25 * spread)
    ax.set_xlabel(r"$\kappa$")
    ax.set_ylabel("aggregate")
    ax.set_title("SoftMin between mean and min")
    ax.legend(fontsize="small")
    return ax
