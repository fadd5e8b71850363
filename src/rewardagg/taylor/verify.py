"""``verify_expansion``: measured log-log slopes of the series' truncation errors against
the slopes the cumulants predict (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from rewardagg.taylor.series import (
    _EPS,
    _as_float64,
    _check_order,
    _prepare_row,
    _row_spread,
    _scaled_cumulants,
    _series,
    _softmin_grid,
    default_kappas,
)

__all__ = ["ExpansionResult", "verify_expansion"]

# A truncation error below _FLOOR_FACTOR * eps * (|mean| + spread) is float64 rounding,
# not series: such points are left out of the slope fit.
_FLOOR_FACTOR = 256.0
# A fit needs this many points above the floor, spanning this factor in kappa.
_MIN_FIT_POINTS = 4
_MIN_FIT_SPAN = 3.0
# A cumulant counts as zero (for the expected slope) below this times s**n, s the row's
# largest deviation from its mean.
_ZERO_CUMULANT_RTOL = 1e-9
# How far above an order to look for the first non-zero cumulant.
_SEARCH_ABOVE = 8


def _freeze(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class ExpansionResult:
    r"""What :func:`verify_expansion` measured for one row (immutable).

    Attributes:
      kappas: the :math:`\kappa` grid, shape ``(M,)``.
      errors: ``{order: |exact - truncated series|}``, arrays of shape ``(M,)``.
      slopes: ``{order: fitted log-log slope}``; NaN where fewer than 4 points spanning a
        factor 3 in :math:`\kappa` lie above the rounding floor.
      expected: ``{order: j - 1}`` where :math:`j` is the first cumulant index above the
        order with :math:`k_j \ne 0`; ``None`` if none within 8 orders.
      fitted: ``{order: bool mask of the points used in the fit}``.
      cumulants: :math:`k_1, \dots` of the row (enough to find every expected slope).
      spread: :math:`\max z - \min z` over the present rewards.
      radius: :math:`\pi / \text{spread}`, a guaranteed convergence radius.
      floor: absolute error below which float64 rounding dominates.
      tol: allowed :math:`|\text{slope} - \text{expected}|`.
      ok: every order with a measured slope and an expected one agrees within ``tol``, and
        at least one order was measured.
    """

    kappas: np.ndarray
    errors: Mapping[int, np.ndarray]
    slopes: Mapping[int, float]
    expected: Mapping[int, int | None]
    fitted: Mapping[int, np.ndarray] = field(repr=False)
    cumulants: np.ndarray = field(repr=False)
    n_rewards: int
    spread: float
    radius: float
    floor: float
    tol: float
    ok: bool

    @property
    def orders(self) -> tuple[int, ...]:
        return tuple(self.errors)

    def order_ok(self, order: int) -> bool | None:
        """True/False for a measured order, None when it could not be measured."""
        s, e = self.slopes[order], self.expected[order]
        if e is None or not math.isfinite(s):
            return None
        return abs(s - e) <= self.tol

    def __str__(self) -> str:
        k = self.kappas
        kap = "  ".join(f"k{n}={c:+.4g}" for n, c in enumerate(self.cumulants[:5], start=1))
        lines = [
            f"verify_expansion: K={self.n_rewards} rewards, spread={self.spread:.4g}, "
            f"radius pi/spread={self.radius:.4g}",
            f"kappa in [{k.min():.3g}, {k.max():.3g}] ({k.size} points), "
            f"rounding floor {self.floor:.2g}, tol {self.tol:g}",
            f"cumulants: {kap}",
            "order  expected  slope   fitted  max|error|  ok",
        ]
        for n in self.orders:
            e = self.expected[n]
            s = self.slopes[n]
            status = self.order_ok(n)
            if status is None:
                verdict = "n/a (no k_j found)" if e is None else "n/a (rounding)"
            else:
                verdict = "yes" if status else "no"
            lines.append(
                f"{n:>5}  {('-' if e is None else str(e)):>8}  "
                f"{(f'{s:.3f}' if math.isfinite(s) else 'n/a'):>6}  "
                f"{int(self.fitted[n].sum()):>3}/{k.size:<3}  "
                f"{float(np.max(self.errors[n])):>10.3g}  "
                f"{verdict}"
            )
        lines.append(f"ok: {self.ok}")
        return "\n".join(lines)


def _fit_slope(kappas: np.ndarray, err: np.ndarray, floor: float) -> tuple[float, np.ndarray]:
    use = np.isfinite(err) & (err > floor)
    if use.sum() < _MIN_FIT_POINTS or kappas[use].max() < _MIN_FIT_SPAN * kappas[use].min():
        return float("nan"), use
    slope = np.polyfit(np.log(kappas[use]), np.log(err[use]), 1)[0]
    return float(slope), use


def _expected_slope(scaled_kap: np.ndarray, order: int) -> int | None:
    """j - 1 for the first j > order with k_j / s^j clearly non-zero (s: the row's largest
    deviation from its mean, between half the spread and the spread)."""
    for j in range(order + 1, order + _SEARCH_ABOVE + 1):
        if abs(scaled_kap[j - 1]) > _ZERO_CUMULANT_RTOL:
            return j - 1
    return None


def verify_expansion(
    z: Any,
    *,
    kappas: Any = None,
    orders: Sequence[int] = (1, 2, 3, 4),
    weights: Any = None,
    tol: float = 0.3,
) -> ExpansionResult:
    r"""Check the cumulant series of the SoftMin against the exact SoftMin on one row.

    For each order :math:`n` the truncation error
    :math:`e_n(\kappa) = |S_\kappa - S^{(n)}_\kappa|` (exact :func:`rewardagg.softmin`
    against :func:`softmin_series`) is measured on a grid of :math:`\kappa` and a line is
    fitted to :math:`\log e_n` against :math:`\log \kappa`. Inside the convergence
    radius the leading neglected term dominates,

    .. math::

        e_n(\kappa) \approx \frac{\kappa^{\,j-1}}{j!} |k_j|, \qquad
        j = \min\{ m > n : k_m \ne 0 \},

    so the slope should be :math:`j - 1`: usually :math:`n`, but 3 for order 2 on a
    symmetric row (:math:`k_3 = 0`). This is the numerical form of RVPO's claim
    (Montero, Jurczyk, Dhingra 2026, arXiv:2605.05750) that the SoftMin is the mean minus
    :math:`\tfrac{\kappa}{2}` times the variance, up to :math:`O(\kappa^2)`.

    Points whose error is below the float64 rounding floor
    (:math:`256\,\epsilon\,(|k_1| + \text{spread})`) are left out of the fit; an order
    with fewer than 4 points left spanning a factor 3 gets slope NaN ("not measurable"),
    which happens to order 4 on rows with a small spread relative to their mean, or with
    a tiny :math:`k_5`.

    Args:
      z: one row of rewards, shape ``(K,)``; NaN marks a missing reward. At least two
        distinct present rewards.
      kappas: the grid, positive and finite; default :func:`default_kappas`
        (:math:`\kappa \cdot \text{spread}` from 0.01 to 0.3, 25 points).
      orders: series orders to check (integers >= 1).
      weights: non-negative, shape ``(K,)``; default all ones.
      tol: allowed :math:`|\text{slope} - \text{expected}|`.

    Returns:
      :class:`ExpansionResult`; ``print(result)`` shows a table.

    Example:
      >>> import numpy as np
      >>> r = verify_expansion(np.random.default_rng(0).standard_normal(17))
      >>> r.ok, r.expected[2]
      (True, 2)
    """
    zz, v = _prepare_row(z, weights)
    spread = _row_spread(zz, v)
    if not spread > 0:
        raise ValueError(
            "verify_expansion needs a row with at least two distinct present rewards "
            "(all present rewards are equal: the SoftMin equals the mean for every kappa)"
        )
    orders = tuple(_check_order(n, "orders") for n in orders)
    if not orders:
        raise ValueError("orders must name at least one order")
    if kappas is None:
        grid = default_kappas(zz, weights=weights)
    else:
        grid = _as_float64(kappas, "kappas").ravel()
        if grid.size < 2 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
            raise ValueError("kappas must hold at least two positive finite values")
        grid = np.sort(grid)
    if not tol > 0:
        raise ValueError(f"tol must be positive; got {tol!r}")

    top = max(orders) + _SEARCH_ABOVE
    c = _scaled_cumulants(zz, v, top)
    w = None if weights is None else _as_float64(weights, "weights")
    exact = _softmin_grid(zz[None, :], grid, w)[:, 0]
    floor = _FLOOR_FACTOR * _EPS * (abs(float(c.mean)) + spread)

    errors, slopes, expected, fitted = {}, {}, {}, {}
    for n in orders:
        err = np.abs(exact - _series(c, grid, n))
        slope, use = _fit_slope(grid, err, floor)
        errors[n] = _freeze(err)
        slopes[n] = slope
        expected[n] = _expected_slope(c.kap, n)
        use = use.copy()
        use.setflags(write=False)
        fitted[n] = use

    checked = []
    for n in orders:
        e = expected[n]
        if e is not None and math.isfinite(slopes[n]):
            checked.append(abs(slopes[n] - e) <= tol)
    return ExpansionResult(
        kappas=_freeze(grid),
        errors=MappingProxyType(errors),
        slopes=MappingProxyType(slopes),
        expected=MappingProxyType(expected),
        fitted=MappingProxyType(fitted),
        cumulants=_freeze(c.unscaled()),
        n_rewards=int(np.sum(v > 0)),
        spread=spread,
        radius=math.pi / spread,
        floor=floor,
        tol=float(tol),
        ok=bool(checked) and all(checked),
    )
