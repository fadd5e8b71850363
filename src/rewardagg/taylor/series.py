"""Input handling, the cumulants and the SoftMin's cumulant series (numpy only).

The shared machinery of :mod:`rewardagg.taylor`: rewards to float64 with NaN for missing
and renormalised weights, overflow-safe cumulants, the truncated series
(:func:`softmin_series`), the convergence radius, the default ``kappa`` window and the
exact SoftMin on a grid of ``kappa`` (:func:`rewardagg.softmin`, imported lazily).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["convergence_radius", "cumulants", "default_kappas", "softmin_series"]

_EPS = float(np.finfo(np.float64).eps)

# verify_expansion: default window in units of x = kappa * (max z - min z) (DESIGN.md s.2).
_WINDOW_X = (1e-2, 0.3)
_WINDOW_POINTS = 25


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
# one row


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
