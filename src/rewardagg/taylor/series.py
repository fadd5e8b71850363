r"""Taylor-expansion checks: the SoftMin is the mean minus a variance penalty.

RVPO (Montero, Jurczyk, Dhingra, "RVPO: Risk-Sensitive Alignment via Variance
Regularization", arXiv:2605.05750, 2026, https://arxiv.org/abs/2605.05750) aggregates
the K standardised rewards of a completion with the SoftMin

.. math::

    S_\kappa = -\frac{1}{\kappa} \log \sum_k v_k e^{-\kappa z_k}
             = -\frac{1}{\kappa} K_X(-\kappa),

where :math:`v_k` are the weights renormalised over the present rewards and
:math:`K_X(t) = \log \mathbb{E}_v e^{tX}` is the cumulant generating function of the
row's reward distribution (:math:`X = z_k` with probability :math:`v_k`). Expanding
:math:`K_X(t) = \sum_{n \ge 1} k_n t^n / n!` in the cumulants :math:`k_n` gives the
cumulant series

.. math::

    S_\kappa = \sum_{n \ge 1} \frac{(-\kappa)^{n-1}}{n!} k_n
             = k_1 - \frac{\kappa}{2} k_2 + \frac{\kappa^2}{6} k_3
               - \frac{\kappa^3}{24} k_4 + \dots

(:math:`k_1` mean, :math:`k_2` variance, :math:`k_3` third central moment,
:math:`k_4 = \mu_4 - 3 \mu_2^2`), so :math:`S_\kappa = \bar z - \tfrac{\kappa}{2}
\operatorname{Var}_v(z) + O(\kappa^2)`. The series converges at least for
:math:`\kappa < \pi / (\max z - \min z)`; the bound is reached by two equally weighted
rewards.

This module lets a user check that claim, and see where it stops holding, on their own
rewards: :func:`cumulants`, :func:`softmin_series`, :func:`verify_expansion` (measured
log-log slopes of the truncation errors against the slopes the cumulants predict), the
exact identities (:func:`check_derivative_at_zero`, :func:`check_monotone_in_kappa`,
:func:`check_mean_softmin_min`, all three in :func:`check_identities`) and two plots.

Everything here is float64 numpy; importing the module imports numpy only (matplotlib is
imported inside the plot functions). The exact SoftMin is :func:`rewardagg.softmin`.
NaN marks a missing reward; weights are renormalised over the present rewards with
positive weight, as in every ``rewardagg`` reducer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = [
    "ExpansionResult",
    "IdentityCheck",
    "check_derivative_at_zero",
    "check_identities",
    "check_mean_softmin_min",
    "check_monotone_in_kappa",
    "convergence_radius",
    "cumulants",
    "default_kappas",
    "plot_expansion",
    "plot_softmin",
    "softmin_series",
    "verify_expansion",
]

_EPS = float(np.finfo(np.float64).eps)

# verify_expansion: default window in units of x = kappa * (max z - min z) (DESIGN.md s.2).
_WINDOW_X = (1e-2, 0.3)
_WINDOW_POINTS = 25
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


# --------------------------------------------------------------------------------------
# input handling


def _as_float64(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a real numeric array; got {type(x).__name__}: {err}"
        ) from None
    return arr


def _prepare(z: Any, weights: Any, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Rewards moved to the last axis (float64, NaN = missing) and their renormalised
    weights ``v`` (same shape, 0 where missing or weight 0, rows summing to 1, or all 0
    for a row with no present positive-weight reward)."""
    z = _as_float64(z, "z")
    if z.ndim == 0:
        raise ValueError("z must have at least one axis (the rewards); got a scalar")
    try:
        z = np.moveaxis(z, axis, -1)
    except (ValueError, IndexError):  # numpy's AxisError is both
        raise ValueError(f"axis={axis} is out of range for z of shape {z.shape}") from None
    if np.isinf(z).any():
        raise ValueError("z must be finite or NaN (missing); got an infinite value")
    k = z.shape[-1]
    if weights is None:
        w = np.ones(k)
    else:
        w = _as_float64(weights, "weights")
        if w.shape != (k,):
            raise ValueError(
                f"weights must have shape ({k},), one entry per reward; got shape {w.shape}"
            )
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights must be finite and non-negative")
    present = ~np.isnan(z) & (w > 0)
    v = np.where(present, w, 0.0)
    total = v.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.where(total > 0, v / np.where(total > 0, total, 1.0), 0.0)
    return z, v


def _check_order(order: Any, name: str = "order") -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {order!r}")
    return int(order)


def _check_kappa(kappa: Any, *, allow_inf: bool) -> np.ndarray:
    k = _as_float64(kappa, "kappa")
    if np.isnan(k).any() or np.any(k < 0) or (not allow_inf and np.isinf(k).any()):
        kind = "non-negative" if allow_inf else "finite and non-negative"
        raise ValueError(f"kappa must be {kind}; got {kappa!r}")
    return k


# --------------------------------------------------------------------------------------
# cumulants and the series


@dataclass(frozen=True)
class _Scaled:
    """Cumulants in overflow-safe form: ``mean`` (k_1), a per-row ``scale`` s > 0 and
    ``kap[..., n - 1] = k_n / s**n`` for n >= 2 (``kap[..., 0]`` is 0). NaN rows have no
    reward."""

    mean: np.ndarray
    scale: np.ndarray
    kap: np.ndarray

    def unscaled(self) -> np.ndarray:
        order = self.kap.shape[-1]
        powers = np.arange(1, order + 1)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            out = self.kap * self.scale[..., None] ** powers
        out[..., 0] = self.mean
        return out


def _scaled_cumulants(z: np.ndarray, v: np.ndarray, order: int) -> _Scaled:
    """Cumulants k_1..k_order over the last axis (see :class:`_Scaled`)."""
    present = v > 0
    zz = np.where(present, z, 0.0)
    mean = np.sum(v * zz, axis=-1, keepdims=True)
    d = np.where(present, zz - mean, 0.0)
    # One refinement pass: the mean of the residuals is the rounding error of the mean.
    mean = mean + np.sum(v * d, axis=-1, keepdims=True)
    d = np.where(present, zz - mean, 0.0)
    # Work in units of the largest deviation, so that d**n neither overflows nor underflows.
    scale = np.max(np.abs(d), axis=-1, keepdims=True, initial=0.0)
    scale = np.where(scale > 0, scale, 1.0)
    d = d / scale
    # Central moments mu_0..mu_order (mu_1 = 0 by construction).
    rows = mean.shape[:-1]
    mu = [np.ones(rows), np.zeros(rows)]
    power = d.copy()
    for _ in range(2, order + 1):
        power = power * d
        mu.append(np.sum(v * power, axis=-1))
    # Moment -> cumulant recursion for the centred variable (k_1 = 0):
    #   k_n = mu_n - sum_{j=1}^{n-1} C(n-1, j-1) k_j mu_{n-j}.
    kap = [np.zeros(rows), np.zeros(rows)]  # index 0 unused
    for n in range(2, order + 1):
        acc = mu[n].copy()
        for j in range(2, n - 1):  # j = 1 and j = n-1 vanish: k_1 = mu_1 = 0
            acc -= math.comb(n - 1, j - 1) * kap[j] * mu[n - j]
        kap.append(acc)
    out = np.stack(kap[1:], axis=-1)
    mean = mean[..., 0]
    empty = ~np.any(present, axis=-1)
    out[empty] = np.nan
    mean = np.where(empty, np.nan, mean)
    return _Scaled(mean=mean, scale=scale[..., 0], kap=out)


def _cumulants_last(z: np.ndarray, v: np.ndarray, order: int) -> np.ndarray:
    """Cumulants k_1..k_order over the last axis; rows without reward give NaN."""
    return _scaled_cumulants(z, v, order).unscaled()


def cumulants(z: Any, *, weights: Any = None, order: int = 4, axis: int = -1) -> np.ndarray:
    r"""Weighted cumulants :math:`k_1, \dots, k_n` of each row's reward distribution.

    Row :math:`i` defines a discrete distribution: :math:`X = z_{ik}` with probability
    :math:`v_{ik} = w_k / \sum_{j \in P_i} w_j` over the present rewards
    :math:`P_i` (not NaN, positive weight). With central moments
    :math:`\mu_r = \sum_k v_{ik} (z_{ik} - k_1)^r`,

    .. math::

        k_1 = \sum_k v_{ik} z_{ik}, \qquad
        k_n = \mu_n - \sum_{j=2}^{n-2} \binom{n-1}{j-1} k_j \, \mu_{n-j} \quad (n \ge 2),

        \text{so } k_2 = \mu_2, \quad k_3 = \mu_3, \quad k_4 = \mu_4 - 3 \mu_2^2 .

    These are population (not Bessel-corrected) quantities, as the SoftMin series needs.

    Args:
      z: rewards, any shape; NaN marks a missing reward. Integers are promoted; the
        computation is float64. Infinite values are rejected.
      weights: ``w``, non-negative, shape ``(K,)`` (``K = z.shape[axis]``); default all
        ones.
      order: highest cumulant ``n`` to return (any integer >= 1).
      axis: the reward axis of ``z``.

    Returns:
      float64 array of shape ``z.shape`` without ``axis``, plus a last axis of length
      ``order``: ``out[..., n - 1]`` is :math:`k_n`. NaN for a row with no present
      positive-weight reward.

    Example:
      >>> cumulants([0.0, 1.0], order=4)  # a fair coin: mean, variance, skew, k4
      array([ 0.5  ,  0.25 ,  0.   , -0.125])
    """
    order = _check_order(order)
    zz, v = _prepare(z, weights, axis)
    return _cumulants_last(zz, v, order)


def _series(c: _Scaled, kappa: np.ndarray, order: int) -> np.ndarray:
    """sum_{n=1}^{order} (-kappa)^(n-1) k_n / n!, evaluated as
    k_1 + s * sum_{n>=2} (-kappa s)^(n-1) (k_n / s^n) / n! by Horner's rule."""
    t = -kappa * c.scale
    acc = np.zeros(np.broadcast_shapes(np.shape(t), c.mean.shape))
    for n in range(order, 1, -1):
        acc = (c.kap[..., n - 1] / math.factorial(n) + acc) * t
    return c.mean + c.scale * acc


def softmin_series(z: Any, kappa: Any, *, order: int, weights: Any = None) -> np.ndarray:
    r"""The cumulant series of the SoftMin, truncated after order ``order``.

    .. math::

        S^{(n)}_\kappa = \sum_{j=1}^{n} \frac{(-\kappa)^{j-1}}{j!} k_j
        = k_1 - \frac{\kappa}{2} k_2 + \frac{\kappa^2}{6} k_3 - \dots

    ``order=1`` is the weighted mean; ``order=2`` is ``mean_variance`` with
    ``lam = kappa / 2`` (the variance penalty of RVPO, Montero et al. 2026,
    arXiv:2605.05750).

    Args:
      z: rewards, reward axis last; NaN marks a missing reward.
      kappa: risk coefficient, finite and >= 0; a scalar or an array that broadcasts
        against the per-row result (``z.shape[:-1]``), e.g. shape ``(M, 1)`` against
        ``(N,)`` rows gives ``(M, N)``.
      order: number of series terms ``n`` (>= 1).
      weights: non-negative, shape ``(K,)``; default all ones.

    Returns:
      float64 array, the broadcast of ``z.shape[:-1]`` and ``kappa``'s shape; NaN for a
      row with no present positive-weight reward.
    """
    order = _check_order(order)
    k = _check_kappa(kappa, allow_inf=False)
    zz, v = _prepare(z, weights, -1)
    return _series(_scaled_cumulants(zz, v, order), k, order)


def convergence_radius(z: Any, *, weights: Any = None) -> np.ndarray:
    r"""A guaranteed convergence radius of the SoftMin series in :math:`\kappa`:
    :math:`\pi / (\max_k z_k - \min_k z_k)` over the present positive-weight rewards.

    The series converges for :math:`|\kappa|` below the distance from 0 to the nearest
    complex zero of :math:`\sum_k v_k e^{-\kappa z_k}`. For
    :math:`|\operatorname{Im}\kappa| (\max z - \min z) < \pi` all terms lie in one open
    half-plane, so there is no zero there and the radius is at least this bound; two
    equally weighted rewards attain it. ``inf`` for a row whose rewards are all equal,
    NaN for a row without reward.
    """
    zz, v = _prepare(z, weights, -1)
    present = v > 0
    hi = np.max(np.where(present, zz, -np.inf), axis=-1, initial=-np.inf)
    lo = np.min(np.where(present, zz, np.inf), axis=-1, initial=np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.pi / (hi - lo)
    return np.where(np.any(present, axis=-1), r, np.nan)


def default_kappas(z: Any, *, weights: Any = None, num: int = _WINDOW_POINTS) -> np.ndarray:
    r"""The default ``verify_expansion`` window for one row: ``num`` log-spaced values of
    :math:`\kappa` with :math:`\kappa (\max z - \min z)` from 0.01 to 0.3.

    The top stays a decade below the convergence radius :math:`\pi/(\max z - \min z)`,
    so the leading neglected term dominates each truncation error; the bottom keeps the
    order-1 to order-3 errors well above float64 rounding (order 4 is often only
    measurable in the upper part of the window, see :func:`verify_expansion`).
    """
    spread = _row_spread(*_prepare_row(z, weights))
    if not spread > 0:
        raise ValueError("default_kappas needs a row with at least two distinct present rewards")
    lo, hi = _WINDOW_X
    return np.logspace(math.log10(lo / spread), math.log10(hi / spread), int(num))


# --------------------------------------------------------------------------------------
# exact SoftMin (the core reducer)


def _exact_softmin(z: np.ndarray, kappa: float, weights: Any) -> np.ndarray:
    """rewardagg.softmin over the last axis of a 2-D float64 array (imported lazily, so
    this module stays importable while the package initialises)."""
    import rewardagg

    return np.asarray(rewardagg.softmin(z, kappa=kappa, weights=weights), dtype=np.float64)


def _softmin_grid(z: np.ndarray, kappas: np.ndarray, weights: Any) -> np.ndarray:
    """Exact SoftMin for each kappa: shape (len(kappas),) + z.shape[:-1]."""
    return np.stack([_exact_softmin(z, float(k), weights) for k in kappas], axis=0)


# --------------------------------------------------------------------------------------
# verify_expansion


def _prepare_row(z: Any, weights: Any) -> tuple[np.ndarray, np.ndarray]:
    zz, v = _prepare(z, weights, -1)
    if zz.ndim != 1:
        raise ValueError(f"expected one row of rewards (1-D, shape (K,)); got shape {zz.shape}")
    if not np.any(v > 0):
        raise ValueError("the row has no present reward with positive weight")
    return zz, v


def _row_spread(zz: np.ndarray, v: np.ndarray) -> float:
    present = zz[v > 0]
    return float(present.max() - present.min())


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


# --------------------------------------------------------------------------------------
# exact identities


@dataclass(frozen=True)
class IdentityCheck:
    """Outcome of one identity check: ``worst`` is the largest violation found (in the
    identity's own units, 0 when it holds exactly) and ``tol`` what rounding allows.
    ``bool(check)`` is ``check.ok``."""

    name: str
    ok: bool
    worst: float
    tol: float

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        state = "holds" if self.ok else "VIOLATED"
        return f"{self.name}: {state} (worst {self.worst:.3g}, tol {self.tol:.3g})"


def _rows(z: Any, weights: Any) -> tuple[np.ndarray, np.ndarray, Any, np.ndarray, np.ndarray]:
    """2-D rows with a reward (rows without one have no SoftMin and are dropped), their
    renormalised weights, the weights for the core, and per-row mean and spread."""
    zz, v = _prepare(z, weights, -1)
    n_rows = math.prod(zz.shape[:-1])
    zz = zz.reshape(n_rows, zz.shape[-1])
    v = v.reshape(n_rows, v.shape[-1])
    keep = np.any(v > 0, axis=-1)
    zz, v = zz[keep], v[keep]
    w = None if weights is None else _as_float64(weights, "weights")
    present = v > 0
    mean = _cumulants_last(zz, v, 1)[:, 0]
    hi = np.max(np.where(present, zz, -np.inf), axis=-1, initial=-np.inf)
    lo = np.min(np.where(present, zz, np.inf), axis=-1, initial=np.inf)
    return zz, v, w, mean, hi - lo


def _round_tol(mean: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """What float64 rounding allows a SoftMin value to move: 16 ulps of the row's scale,
    and at least the smallest normal number (a row of subnormal-scale values rounds in
    absolute steps; issue found by hypothesis on ``[0, 7e-304]``)."""
    return 16 * _EPS * (np.abs(mean) + spread) + np.finfo(np.float64).tiny


def _worst(name: str, violation: np.ndarray, tol: np.ndarray) -> IdentityCheck:
    """Summarise per-row violations (<= 0 where the identity holds) against per-row
    tolerances: report the row closest to failing."""
    violation = np.maximum(violation, 0.0)
    i = int(np.argmax(violation - tol))
    return IdentityCheck(name, bool(np.all(violation <= tol)), float(violation[i]), float(tol[i]))


def check_derivative_at_zero(z: Any, *, weights: Any = None) -> IdentityCheck:
    r"""Check :math:`\partial S_\kappa / \partial \kappa \,|_{\kappa=0} = -\tfrac12
    \operatorname{Var}_v(z)` on every row.

    The derivative is measured on the exact SoftMin (:func:`rewardagg.softmin`) by a
    Richardson-extrapolated forward difference, :math:`2 D(h/2) - D(h)` with
    :math:`D(h) = (S_h - S_0)/h` and :math:`h = 10^{-4}/\text{spread}`, on the row shifted
    by its mean (:math:`S` is shift-equivariant, so the derivative is unchanged and the
    difference loses no digits to a large mean). A per-row :math:`h` is applied by
    scaling the row, :math:`S_h(z) = S_1(h z)/h`. The remaining error is about
    :math:`h^2 |k_4| / 48 \le 10^{-10}\,\text{spread}^2`; ``tol`` is
    :math:`10^{-8}\,\text{spread}^2` per row.
    """
    name = "d softmin/d kappa at 0 == -var/2"
    zz, v, w, mean, spread = _rows(z, weights)
    if zz.shape[0] == 0:
        return IdentityCheck(name, True, 0.0, 0.0)
    zc = zz - mean[:, None]
    h = 1e-4 / np.where(spread > 0, spread, 1.0)
    var = _cumulants_last(zz, v, 2)[:, 1]
    s0 = _exact_softmin(zc, 0.0, w)
    s_h = _exact_softmin(zc * h[:, None], 1.0, w) / h
    s_h2 = _exact_softmin(zc * (h / 2)[:, None], 1.0, w) / (h / 2)
    deriv = 2.0 * (s_h2 - s0) / (h / 2) - (s_h - s0) / h
    tol = 1e-8 * spread**2 + 64 * _EPS * var
    return _worst(name, np.abs(deriv + var / 2), tol)


def _default_identity_kappas() -> np.ndarray:
    return np.concatenate([[0.0], np.logspace(-8, 8, 49), [np.inf]])


def _identity_grid(kappas: Any) -> np.ndarray:
    if kappas is None:
        return _default_identity_kappas()
    return np.sort(_check_kappa(kappas, allow_inf=True).ravel())


def check_monotone_in_kappa(z: Any, *, kappas: Any = None, weights: Any = None) -> IdentityCheck:
    r"""Check that :math:`S_\kappa` is non-increasing in :math:`\kappa` on every row.

    :math:`\partial S_\kappa / \partial \kappa = -\frac{1}{\kappa^2}
    \mathrm{KL}(\pi_\kappa \,\|\, v) \le 0` with :math:`\pi_\kappa \propto v\,e^{-\kappa z}`,
    so successive values on an increasing grid may only go down, up to float64 rounding
    (``tol`` :math:`= 16\,\epsilon\,(|\bar z| + \text{spread})` plus the smallest
    normal float64). Default grid: 0,
    :math:`10^{-8} \dots 10^{8}` (49 points) and :math:`\infty`.
    """
    name = "softmin non-increasing in kappa"
    grid = _identity_grid(kappas)
    zz, _, w, mean, spread = _rows(z, weights)
    if zz.shape[0] == 0 or grid.size < 2:
        return IdentityCheck(name, True, 0.0, 0.0)
    s = _softmin_grid(zz, grid, w)
    rise = np.max(np.diff(s, axis=0), axis=0)
    return _worst(name, rise, _round_tol(mean, spread))


def check_mean_softmin_min(z: Any, *, kappas: Any = None, weights: Any = None) -> IdentityCheck:
    r"""Check :math:`\bar z_v \ge S_\kappa \ge \min_k z_k` on every row and every
    :math:`\kappa` of the grid (Jensen's inequality, and
    :math:`\sum_k v_k e^{-\kappa z_k} \le e^{-\kappa \min z}`), up to
    ``tol`` :math:`= 16\,\epsilon\,(|\bar z| + \text{spread})` plus the smallest normal
    float64. Default grid as in
    :func:`check_monotone_in_kappa`.
    """
    name = "mean >= softmin >= min"
    grid = _identity_grid(kappas)
    zz, v, w, mean, spread = _rows(z, weights)
    if zz.shape[0] == 0 or grid.size == 0:
        return IdentityCheck(name, True, 0.0, 0.0)
    lo = np.min(np.where(v > 0, zz, np.inf), axis=-1)
    s = _softmin_grid(zz, grid, w)
    over_mean = np.max(s - mean[None, :], axis=0)
    under_min = np.max(lo[None, :] - s, axis=0)
    return _worst(name, np.maximum(over_mean, under_min), _round_tol(mean, spread))


def check_identities(
    z: Any, *, kappas: Any = None, weights: Any = None
) -> tuple[IdentityCheck, ...]:
    """The three exact identities on every row of ``z``: derivative at 0, monotonicity,
    and the mean/min bounds. Each element is truthy when its identity holds."""
    return (
        check_derivative_at_zero(z, weights=weights),
        check_monotone_in_kappa(z, kappas=kappas, weights=weights),
        check_mean_softmin_min(z, kappas=kappas, weights=weights),
    )


# --------------------------------------------------------------------------------------
# plots (matplotlib imported here only)


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
