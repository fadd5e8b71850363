r"""Stage 2: reduce the reward axis (the LAST axis) of standardised rewards to one score.

Notation: ``z`` holds :math:`Z_{ik}` with NaN for a missing reward; ``weights`` holds
:math:`w_k \ge 0`. Only the present rewards of row :math:`i` with positive weight,
:math:`P_i`, take part, with renormalised weights

.. math::

    v_{ik} = \frac{w_k}{\sum_{j \in P_i} w_j}.

A row with no such reward has no score: the reducers return NaN there.

Each reducer exists twice: a private kernel working on already-validated arrays (used by
the advantage pipeline, no extra passes over the data) and the public function, which
validates its arguments first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardagg._src.namespace import Ops
from rewardagg._src.validation import (
    as_float,
    check_finite_or_nan,
    check_nonnegative,
    check_real,
    check_unit_interval,
    prepare_weights,
)

__all__ = [
    "cvar",
    "mean_variance",
    "power_mean",
    "softmin",
    "weighted_mean",
    "weighted_min",
    "weighted_sum",
]


@dataclass(frozen=True)
class RowWeights:
    """Which rewards take part in each row and with which weight.

    ``present`` is the boolean map of :math:`P_i` (``None``: every reward of every row),
    ``v`` the renormalised weights (broadcastable against ``z``), ``w`` the raw weights
    (broadcastable), ``has`` the rows with at least one reward (``None``: all rows).
    """

    present: Any
    v: Any
    w: Any
    has: Any
    weights: np.ndarray | None = None

    def filled(self, z: Any, ops: Ops, value: float = 0.0) -> Any:
        """``z`` with every non-participating entry replaced by ``value``."""
        return z if self.present is None else ops.where(self.present, z, value)

    def finish(self, s: Any, ops: Ops) -> Any:
        """NaN for rows without a reward."""
        return s if self.has is None else ops.where(self.has, s, ops.nan)


def row_weights(z: Any, weights: np.ndarray | None, ops: Ops, missing: Any = None) -> RowWeights:
    """Build :class:`RowWeights` for ``z`` (``missing``: its NaN map, or ``None`` if none)."""
    k = z.shape[-1]
    w_np = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    all_positive = bool(np.all(w_np > 0))
    w = ops.asarray(w_np, like=z)
    if missing is None and all_positive:
        return RowWeights(present=None, v=w / float(w_np.sum()), w=w, has=None, weights=weights)
    if missing is None:
        present = w > 0  # broadcasts over the rows
    else:
        present = ~missing if all_positive else ~missing & (w > 0)
    wz = ops.where(present, w, 0.0)
    total = ops.sum(wz, -1, keepdims=True)
    has = total[..., 0] > 0
    v = wz / ops.where(total > 0, total, 1.0)
    has = None if bool(has.all()) else has
    return RowWeights(present=present, v=v, w=w, has=has, weights=weights)


# ----------------------------------------------------------------------------- kernels


def weighted_sum_kernel(z, rw: RowWeights, ops):
    return rw.finish(ops.dot_last(rw.filled(z, ops), rw.w), ops)


def weighted_mean_kernel(z, rw: RowWeights, ops):
    return rw.finish(ops.dot_last(rw.filled(z, ops), rw.v), ops)


def weighted_min_kernel(z, rw: RowWeights, ops):
    return rw.finish(ops.amin(rw.filled(z, ops, ops.inf), -1), ops)


def mean_variance_kernel(z, rw: RowWeights, ops, *, lam: float):
    zf = rw.filled(z, ops)
    mean = ops.dot_last(zf, rw.v)[..., None]
    dev = rw.filled(zf - mean, ops)
    dev *= dev
    return rw.finish(mean[..., 0] - lam * ops.dot_last(dev, rw.v), ops)


KAPPA_MEAN_LIMIT = 2.0**-126
r"""Below this (the smallest normal float32, ~1.2e-38) the advantage pipeline computes
softmin as the mean, on every backend and dtype (the public :func:`softmin` reducer, which
takes values of any spread, uses the smallest normal number of its input's dtype).

Why the mean is the answer there: with :math:`D` the spread of a row's values,
:math:`0 \le \text{mean} - \text{softmin}_\kappa \le \kappa D^2 / 8` (Hoeffding's
lemma bounds the log-moment generating function), so below the limit the difference is
under :math:`2^{-129} D^2`. For z-scores (:math:`D \le 2\sqrt{n} < 2^{33}`) that is
below :math:`2^{-63}`, far under the resolution of any score stage 3 can tell apart; for
the raw order (kappa in reward units, float64 sums) it is below an ulp of the spread
while :math:`D < 2^{76}` (about 7.6e22).

Why the formula is not: :math:`\kappa (Z_k - m)` is subnormal (float64 below
:math:`2^{-1022}`) or underflows to 0 (float32 below :math:`2^{-126}`; the log1p/expm1
form then returns the row minimum), and the division by :math:`\kappa` turns that
rounding into an error of order 1 (kappa = 5e-324 was 1.08 away from the mean in
float64; kappa = 1e-300 gave the minimum in float32). Above the limit the rounding costs
at most :math:`2^{-149} / \kappa \le 2^{-23}` per term in float32 and much less in
float64."""


def _smallest_normal(z: Any) -> float:
    return 2.0**-126 if str(z.dtype) in ("float32", "torch.float32") else 2.0**-1022


def softmin_kernel(z, rw: RowWeights, ops, *, kappa: float):
    """``m - log1p(sum_k v_k expm1(-kappa (z_k - m))) / kappa`` with ``m`` the row minimum:
    accurate for every kappa from 1e-8 to 1e8 (a max-shifted log-sum-exp is not); the
    mean below the smallest normal number of ``z``'s dtype, where ``kappa (z - m)``
    underflows (the advantage pipeline already maps ``kappa < KAPPA_MEAN_LIMIT`` to the
    mean: its z-scores have a bounded spread). Values of any spread reach this kernel
    through :func:`softmin`, so the float64 limit stays at 2^-1022 (the mean is exact
    there for spreads below 2^968)."""
    if kappa < _smallest_normal(z):
        return weighted_mean_kernel(z, rw, ops)
    if math.isinf(kappa):
        return weighted_min_kernel(z, rw, ops)
    m = ops.amin(rw.filled(z, ops, ops.inf), -1, keepdims=True)
    if rw.has is not None:
        m = ops.where(ops.isinf(m), 0.0, m)
    t = rw.filled(z - m, ops)
    t *= -kappa
    s = ops.dot_last(ops.expm1_(t), rw.v)
    return rw.finish(m[..., 0] - ops.log1p(s) / kappa, ops)


def _cvar_shares(z, rw: RowWeights, ops, alpha: float):
    """Sorted order and the weight each sorted value gets in the worst ``alpha`` share:
    ``max(0, min(v_(j), alpha - c_(j-1)))`` with ``c`` the running sum of sorted weights."""
    order = ops.argsort_last(rw.filled(z, ops, ops.inf))
    v = rw.v if rw.present is not None else rw.v + 0.0 * z
    vs = ops.take_last(ops.where(z == z, v, 0.0), order)
    before = ops.cumsum_last(vs) - vs  # c_(j-1)
    share = ops.maximum(ops.minimum(vs, alpha - before), 0.0)
    return order, share


def cvar_kernel(z, rw: RowWeights, ops, *, alpha: float):
    order, share = _cvar_shares(z, rw, ops, alpha)
    zs = ops.take_last(rw.filled(z, ops), order)
    return rw.finish(ops.sum(zs * share, -1) / alpha, ops)


def _check_power_input(x, rw: RowWeights, ops) -> None:
    if ops.any(rw.filled(x, ops) < 0):
        raise ValueError(
            "power_mean is defined for non-negative values only: use it with "
            "order='reduce_then_normalize' on non-negative rewards (z-scores are negative "
            "by construction); a negative reward was found"
        )


def power_mean_kernel(x, rw: RowWeights, ops, *, p: float):
    r"""``(sum_k v_k x_k^p)^(1/p)`` around a reference value of the row, accurate for every
    ``p`` (the series around ``p = 0`` included) and at any offset:

    .. math::

        L_k = \log(x_k / x_0), \quad T = \sum_k v_k\, \operatorname{expm1}(p L_k), \quad
        S = x_0 + x_0 \operatorname{expm1}\big(\operatorname{log1p}(T) / p\big)

    with :math:`x_0` the row's largest value for ``p > 0`` and its smallest positive value
    for ``p < 0`` (so :math:`p L_k \le 0`: nothing overflows, :math:`T > -1`) and
    :math:`L_k = \operatorname{log1p}((x_k - x_0)/x_0)` when :math:`x_k / x_0 \in
    (1/2, 2)` (:math:`x_k - x_0` is exact there). The error of :math:`\log S` is a few
    units of :math:`10^{-16} \max_k |L_k|`, uniformly in ``p``: ``log1p(T) / p`` tends to
    :math:`\sum_k v_k L_k` (the geometric mean, ``p = 0``) without cancellation, and at an
    offset of :math:`10^{12}` the score is exact to its last bits relative to the row's
    spread (a log-domain ``exp(log(sum v x^p) / p)`` lost about :math:`10^{-2}` there)."""
    _check_power_input(x, rw, ops)
    if math.isinf(p):
        if p < 0:
            return weighted_min_kernel(x, rw, ops)
        return rw.finish(ops.amax(rw.filled(x, ops, -ops.inf), -1), ops)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # masked lanes
        return _power_mean_finite_p(x, rw, ops, p)


def _power_mean_finite_p(x, rw: RowWeights, ops, p: float):
    ones = rw.filled(x, ops, 1.0)
    zero = ones == 0  # participating zeros
    any_zero = ops.amax(ops.where(zero, 1.0, 0.0 * ones), -1) > 0
    if p > 0:  # x0 = the largest participating value
        x0 = ops.amax(rw.filled(x, ops, -ops.inf), -1, keepdims=True)
    else:  # x0 = the smallest participating positive value
        x0 = ops.amin(ops.where(zero, ops.inf, rw.filled(x, ops, ops.inf)), -1, keepdims=True)
    none = ops.isinf(x0) | (x0 == 0)  # no participating value, or every one 0
    x0 = ops.where(none, 1.0, x0)
    xf = ops.where(zero, x0, rw.filled(x, ops, -1.0))
    xf = ops.where(xf < 0, x0, xf)  # zeros and non-participating entries: L = 0 (v = 0)
    ratio = xf / x0
    near = (ratio > 0.5) & (ratio < 2.0)
    log_near = ops.log1p(ops.where(near, (xf - x0) / x0, 0.0))
    log_far = ops.log(ops.where(near, 1.0, xf)) - ops.log(x0)
    big_l = ops.where(near, log_near, log_far)
    if p == 0:
        u = ops.dot_last(big_l, rw.v)
    else:
        term = ops.expm1(p * big_l)
        if p > 0:  # a zero adds 0^p = 0: expm1(-inf) = -1
            term = ops.where(zero, -1.0, term)
        u = ops.log1p(ops.dot_last(term, rw.v)) / p
    u = u[..., None]
    big = u >= 700.0  # only p < 0 with a tiny x0: x0 * e^u without overflowing e^u
    s = ops.where(big, ops.exp(ops.minimum(u, 1e4) + ops.log(x0)), 0.0)
    s = ops.where(big, s, x0 + x0 * ops.expm1(ops.minimum(u, 700.0)))
    s = ops.where(none, 0.0, s)[..., 0]  # every participating value 0: the mean is 0
    if p <= 0:  # one zero: the mean is 0
        s = ops.where(any_zero, 0.0, s)
    return rw.finish(s, ops)


# --------------------------------------------------------------- attention: dS_i / dZ_ik


def _ties(z, rw: RowWeights, ops):
    """Weights ``v`` restricted to each row's minimum, renormalised (kappa -> inf limit)."""
    zf = rw.filled(z, ops, ops.inf)
    at_min = zf == ops.amin(zf, -1, keepdims=True)
    vt = ops.where(at_min, rw.v, 0.0)
    total = ops.sum(vt, -1, keepdims=True)
    return vt / ops.where(total > 0, total, 1.0)


def weighted_sum_attention(z, rw, ops):
    return ops.where(z == z, rw.w, 0.0)


def weighted_mean_attention(z, rw, ops):
    return ops.where(z == z, rw.v, 0.0)


def weighted_min_attention(z, rw, ops):
    return _ties(z, rw, ops)


def softmin_attention(z, rw, ops, *, kappa: float):
    r""":math:`\pi_{ik} = v_{ik} e^{-\kappa Z_{ik}} / \sum_j v_{ij} e^{-\kappa Z_{ij}}`."""
    if kappa < _smallest_normal(z):
        return weighted_mean_attention(z, rw, ops)
    if math.isinf(kappa):
        return _ties(z, rw, ops)
    m = ops.amin(rw.filled(z, ops, ops.inf), -1, keepdims=True)
    m = ops.where(ops.isinf(m), 0.0, m)
    p = rw.filled(ops.exp(-kappa * (rw.filled(z, ops) - m)) * rw.v, ops)
    total = ops.sum(p, -1, keepdims=True)
    return p / ops.where(total > 0, total, 1.0)


def mean_variance_attention(z, rw, ops, *, lam: float):
    r""":math:`v_{ik}\,(1 - 2\lambda (Z_{ik} - \bar Z_i))` (the mean's own gradient cancels)."""
    zf = rw.filled(z, ops)
    mean = ops.sum(zf * rw.v, -1, keepdims=True)
    return rw.filled(rw.v * (1.0 - 2.0 * lam * (zf - mean)), ops)


def cvar_attention(z, rw, ops, *, alpha: float):
    r""":math:`\partial S / \partial Z_{ik}`: the share of reward :math:`k` in the worst
    ``alpha`` mass divided by ``alpha`` (a subgradient at ties)."""
    order, share = _cvar_shares(z, rw, ops, alpha)
    back = ops.argsort_last(order)
    return rw.filled(ops.take_last(share / alpha, back), ops)


def power_mean_attention(x, rw, ops, *, p: float):
    r""":math:`\partial S / \partial x_{ik} = v_{ik} (x_{ik} / S_i)^{p - 1}` (0 where
    :math:`x = 0` or :math:`S = 0`; the min's one-hot at :math:`p = -\infty`)."""
    if math.isinf(p):
        return _ties(x, rw, ops) if p < 0 else _ties(-x, rw, ops)
    s = power_mean_kernel(x, rw, ops, p=p)[..., None]
    xf = rw.filled(x, ops, 0.0)
    ok = (xf > 0) & (s > 0)
    ratio = ops.where(ok, xf / ops.where(ok, s, 1.0), 1.0)
    return rw.filled(ops.where(ok, rw.v * ops.exp((p - 1.0) * ops.log(ratio)), 0.0), ops)


# --------------------------------------------------------------------------- public API


def _reduce(kernel, z: Any, weights: Any, **params: Any):
    arr, restore, ops = as_float(z, "z")
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise ValueError(
            f"z must have a non-empty last (reward) axis; got shape {tuple(arr.shape)}"
        )
    missing = check_finite_or_nan(arr, ops, "z")
    w = prepare_weights(weights, int(arr.shape[-1]))
    rw = row_weights(arr, w, ops, missing)
    out = kernel(arr, rw, ops, **params)
    return restore(out)


def weighted_sum(z: Any, *, weights: Any = None):
    r"""GDPO's aggregation, exactly as TRL and verl add normalised rewards.

    .. math:: S_i = \sum_{k \in P_i} w_k Z_{ik}

    Args:
        z: ``(..., K)`` standardised rewards, NaN = missing.
        weights: ``(K,)`` non-negative weights :math:`w_k` (default all ones).

    Returns:
        ``(...)`` scores; NaN for rows with no present positive-weight reward.

    Examples:
        >>> import numpy as np
        >>> from rewardagg import weighted_sum
        >>> z = np.array([[1.0, -1.0, 0.5], [0.2, np.nan, 0.4]])  # NaN: missing
        >>> weighted_sum(z)
        array([0.5, 0.6])
        >>> weighted_sum(z, weights=[2.0, 1.0, 1.0])
        array([1.5, 0.8])
    """
    return _reduce(weighted_sum_kernel, z, weights)


def weighted_mean(z: Any, *, weights: Any = None):
    r"""Weighted mean over the present rewards.

    .. math:: S_i = \sum_{k \in P_i} v_{ik} Z_{ik}

    Args:
        z: ``(..., K)`` standardised rewards, NaN = missing.
        weights: ``(K,)`` non-negative weights (renormalised per row to :math:`v_{ik}`).

    Returns:
        ``(...)`` scores; NaN for rows with no present positive-weight reward.

    Examples:
        >>> import numpy as np
        >>> from rewardagg import weighted_mean
        >>> z = np.array([[1.0, -1.0, 0.5], [0.2, np.nan, 0.4]])  # NaN: missing
        >>> weighted_mean(z).round(4)  # row 1: the mean of its two present rewards
        array([0.1667, 0.3   ])
    """
    return _reduce(weighted_mean_kernel, z, weights)


def weighted_min(z: Any, *, weights: Any = None):
    r"""The worst present reward (the :math:`\kappa \to \infty` limit of :func:`softmin`).

    .. math:: S_i = \min_{k \in P_i} Z_{ik}

    Args:
        z: ``(..., K)`` standardised rewards, NaN = missing.
        weights: ``(K,)`` non-negative weights; only which are positive matters.

    Returns:
        ``(...)`` scores; NaN for rows with no present positive-weight reward.

    Examples:
        >>> import numpy as np
        >>> from rewardagg import weighted_min
        >>> z = np.array([[1.0, -1.0, 0.5], [0.2, np.nan, 0.4]])  # NaN: missing
        >>> weighted_min(z)
        array([-1. ,  0.2])
        >>> weighted_min(z, weights=[1.0, 0.0, 1.0])  # a zero weight drops the reward
        array([0.5, 0.2])
    """
    return _reduce(weighted_min_kernel, z, weights)


def mean_variance(z: Any, *, lam: float, weights: Any = None):
    r"""Mean minus an explicit variance penalty: the second-order twin of :func:`softmin`
    (``lam = kappa / 2``).

    .. math::

        S_i = \bar Z_i - \lambda \sum_{k \in P_i} v_{ik} (Z_{ik} - \bar Z_i)^2, \qquad
        \bar Z_i = \sum_{k \in P_i} v_{ik} Z_{ik}

    The variance is the :math:`v`-weighted *population* variance.

    Args:
        z: ``(..., K)`` standardised rewards, NaN = missing.
        lam: :math:`\lambda \ge 0`; 0 gives :func:`weighted_mean`.
        weights: ``(K,)`` non-negative weights.

    Returns:
        ``(...)`` scores; NaN for rows with no present positive-weight reward.

    Examples:
        >>> import numpy as np
        >>> from rewardagg import mean_variance
        >>> z = np.array([[1.0, -1.0, 0.5], [0.2, np.nan, 0.4]])  # NaN: missing
        >>> mean_variance(z, lam=0.5).round(4)
        array([-0.1944,  0.295 ])
    """
    lam = check_nonnegative(lam, "lam")
    return _reduce(mean_variance_kernel, z, weights, lam=lam)


def softmin(z: Any, *, kappa: float, weights: Any = None):
    r"""RVPO's SoftMin: a weighted log-sum-exp of the negated rewards.

    .. math::

        S_i = -\frac{1}{\kappa} \log \sum_{k \in P_i} v_{ik}\, e^{-\kappa Z_{ik}}
            = m_i - \frac{1}{\kappa}
              \operatorname{log1p}\Big(\sum_{k \in P_i} v_{ik}\,
              \operatorname{expm1}\big(-\kappa (Z_{ik} - m_i)\big)\Big)

    with :math:`m_i = \min_{k \in P_i} Z_{ik}`. The second form is accurate for every
    :math:`\kappa` from 1e-8 to 1e8. For small :math:`\kappa` it is
    :math:`\bar Z_i - \tfrac{\kappa}{2}\operatorname{Var}_v(Z_i) + O(\kappa^2)`:
    the mean minus a variance penalty (see :mod:`rewardagg.taylor`).

    Args:
        z: ``(..., K)`` standardised rewards, NaN = missing.
        kappa: risk coefficient :math:`\kappa \ge 0` (temperature :math:`1/\kappa`);
            ``0`` gives :func:`weighted_mean` exactly, ``inf`` gives :func:`weighted_min`.
        weights: ``(K,)`` non-negative weights (renormalised per row to :math:`v_{ik}`).

    Returns:
        ``(...)`` scores; NaN for rows with no present positive-weight reward.

    Examples:
        >>> import numpy as np
        >>> from rewardagg import softmin
        >>> z = np.array([[1.0, -1.0, 0.5], [0.2, np.nan, 0.4]])  # NaN: missing
        >>> softmin(z, kappa=1.0).round(4)  # below the mean, above the min
        array([-0.2077,  0.295 ])
        >>> softmin(z, kappa=0.0).round(4), softmin(z, kappa=np.inf)  # mean and min
        (array([0.1667, 0.3   ]), array([-1. ,  0.2]))

    References:
        Montero, Jurczyk, Dhingra, "RVPO: Risk-Sensitive Alignment via Variance
        Regularization", 2026, https://arxiv.org/abs/2605.05750
    """
    kappa = check_nonnegative(kappa, "kappa", allow_inf=True)
    return _reduce(softmin_kernel, z, weights, kappa=kappa)


def cvar(z: Any, *, alpha: float = 0.25, weights: Any = None):
    r"""Conditional value at risk: the :math:`v`-weighted mean of the worst ``alpha`` share
    of a row's values.

    Sort the present values ascending, :math:`x_{(1)} \le x_{(2)} \le \dots`, with their
    weights :math:`v_{(j)}` and running sums :math:`c_j = v_{(1)} + \dots + v_{(j)}`
    (:math:`c_0 = 0`):

    .. math::

        S_i = \frac{1}{\alpha} \sum_j x_{(j)} \max\big(0, \min(v_{(j)}, \alpha - c_{j-1})\big)

    ``alpha = 1`` is :func:`weighted_mean` exactly; ``alpha -> 0`` tends to
    :func:`weighted_min`. Unlike the SoftMin it ignores how far the better values are
    above the tail.

    Args:
        z: ``(..., K)`` values (z-scores or raw rewards), NaN = missing.
        alpha: tail mass :math:`\alpha \in (0, 1]`.
        weights: ``(K,)`` non-negative weights (renormalised per row to :math:`v_{ik}`).

    Returns:
        ``(...)`` scores; NaN for rows with no present positive-weight reward.

    Examples:
        >>> import numpy as np
        >>> from rewardagg import cvar
        >>> z = np.array([[1.0, -1.0, 0.5, 0.0], [0.2, np.nan, 0.4, 0.6]])
        >>> cvar(z, alpha=0.5)  # mean of the worst half (two of four, or 1.5 of three)
        array([-0.5       ,  0.26666667])
        >>> cvar(z, alpha=1.0).round(4)  # the mean
        array([0.125, 0.4  ])

    References:
        Rockafellar, Uryasev, "Optimization of conditional value-at-risk", Journal of Risk
        2(3), 2000.
    """
    alpha = check_unit_interval(alpha, "alpha")
    return _reduce(cvar_kernel, z, weights, alpha=alpha)


def power_mean(x: Any, *, p: float = -1.0, weights: Any = None):
    r"""Weighted power (Hölder) mean of non-negative values.

    .. math::

        S_i = \Big(\sum_{k \in P_i} v_{ik}\, x_{ik}^{\,p}\Big)^{1/p}

    ``p = 1`` is the weighted mean, ``p = 0`` the weighted geometric mean
    :math:`\exp \sum_k v_{ik} \log x_{ik}`, ``p = -1`` the harmonic mean, ``p = -inf``
    the minimum. For ``p <= 0`` a zero value makes the row's mean 0: one failed criterion
    cannot be bought back. Defined for :math:`x \ge 0` only, so in the advantage pipeline
    it reduces RAW rewards (``order="reduce_then_normalize"``).

    Args:
        x: ``(..., K)`` non-negative values, NaN = missing.
        p: the exponent, any real number or ``-inf``/``inf`` (not NaN).
        weights: ``(K,)`` non-negative weights (renormalised per row to :math:`v_{ik}`).

    Returns:
        ``(...)`` scores; NaN for rows with no present positive-weight value.

    Raises:
        ValueError: a negative value (z-scores are negative by construction).

    Examples:
        >>> import numpy as np
        >>> from rewardagg import power_mean
        >>> x = np.array([[1.0, 0.25], [1.0, 0.0]])
        >>> power_mean(x, p=-1.0)  # harmonic: 2 / (1 + 4); a zero gives 0
        array([0.4, 0. ])
        >>> power_mean(x, p=0.0), power_mean(x, p=1.0)  # geometric, arithmetic
        (array([0.5, 0. ]), array([0.625, 0.5  ]))

    References:
        Fan, Kroer, et al., "Welfare and fairness in multi-objective reinforcement
        learning", 2022, https://arxiv.org/abs/2212.01382 (power-mean welfare).
    """
    p = check_real(p, "p")
    return _reduce(power_mean_kernel, x, weights, p=p)
