"""Exact identities of the SoftMin, checked on every row up to float64 rounding: the
derivative at ``kappa = 0``, monotonicity in ``kappa``, and the mean/min bounds (numpy
only)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardagg.taylor import series as _series
from rewardagg.taylor.series import (
    _EPS,
    _as_float64,
    _check_kappa,
    _cumulants_last,
    _prepare,
    _softmin_grid,
)

__all__ = [
    "IdentityCheck",
    "check_derivative_at_zero",
    "check_identities",
    "check_mean_softmin_min",
    "check_monotone_in_kappa",
]


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
    exact = _series._exact_softmin  # looked up per call: the one place tests substitute
    s0 = exact(zc, 0.0, w)
    s_h = exact(zc * h[:, None], 1.0, w) / h
    s_h2 = exact(zc * (h / 2)[:, None], 1.0, w) / (h / 2)
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
