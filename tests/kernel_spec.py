r"""The kernel specification: stages 1-2 written out plainly, for the fused-kernel tests.

Plain, obvious and vectorised over groups with segment reductions (``index_add_`` and
``scatter_reduce_``); every statistic in float64 whatever the input dtype. It runs on any
torch device (the GPU test compares Triton with it there) and the same lines run on numpy
arrays (segment sums by ``np.add.reduceat``). Nothing here imports rewardagg.

Stage 1, for each (group, reward) *cell* with present values :math:`P` (``n = |P|``):

.. math::

    Z_{ik} = \frac{R_{ik} - \mu}{\sigma + \varepsilon}
           = \frac{u_{ik} - \bar u}{\sigma_u + \varepsilon / (\max - \min)},
    \qquad u_{ik} = \frac{R_{ik} - \min}{\max - \min} \in [0, 1]

(the right-hand form is the same number; it cannot overflow for finite input). A cell with
``max == min`` or ``n - correction <= 0`` gives exactly 0; a one-value cell gives
:math:`R / (1 + \varepsilon)` with ``singleton="identity"``. ``baseline="leave_one_out"``
multiplies the centred value by :math:`n / (n - 1)`.

Stage 2 over the present rewards of a row with positive weight, :math:`v = w / \sum w`:
``gdpo`` :math:`\sum w Z`, ``mean`` :math:`\sum v Z`, ``softmin``
:math:`m - \log(1 + \sum v\,\mathrm{expm1}(-\kappa (Z - m))) / \kappa` with
:math:`m = \min Z`, ``mean_variance`` :math:`\bar Z - \lambda \sum v (Z - \bar Z)^2`,
``min`` :math:`\min Z`, ``cvar`` the v-weighted mean of the worst ``alpha`` share
(DESIGN.md 2b), ``power_mean`` :math:`(\sum v x^p)^{1/p}` (raw order only, ``x >= 0``;
``p = 0`` geometric, ``p = -inf`` min, 0 when some ``x = 0`` and ``p <= 0``). A row without
such a reward gives NaN.

:func:`fused_reference` adds DESIGN.md 2b and 2c: the raw-reward order (the reducer over
the raw rewards, then the score standardised inside its group by the stage-1 rule above),
the multiplier terms :math:`\sum_c \lambda_c Z_{ic}` (0 where missing) and GD²PO's
conflict test on float64 Z (``t = w Z`` over present positive-weight rewards; mixed when
some ``t > 1e-8`` and some ``t < -1e-8``; ``"snr"`` drops a mixed row only when
``|sum t| / (sum |t| + 1e-8) < tau``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["METHODS", "fused_reference", "stage12_reference"]

METHODS = ("gdpo", "mean", "softmin", "mean_variance", "min")
ALL_METHODS = (*METHODS, "cvar", "power_mean")


def _segments(x, offsets):
    """Library namespace and segment reductions over the row groups of sorted ``x``."""
    if isinstance(x, np.ndarray):
        off = np.unique(np.asarray(offsets, dtype=np.int64))  # empty groups hold no row
        starts = off[:-1]
        gid = np.repeat(np.arange(starts.size), np.diff(off))

        def seg(v, how):
            if v.shape[0] == 0:
                return v[:0]
            return {"sum": np.add, "min": np.minimum, "max": np.maximum}[how].reduceat(v, starts, 0)

        return np, gid, seg

    import torch

    off = torch.as_tensor(offsets, dtype=torch.int64).to(x.device)
    n_groups = off.numel() - 1
    gid = torch.repeat_interleave(torch.arange(n_groups, device=x.device), off[1:] - off[:-1])
    idx = gid[:, None].expand(x.shape)

    def seg(v, how):
        if how == "sum":
            acc = torch.zeros(n_groups, v.shape[1], dtype=v.dtype, device=v.device)
            return acc.index_add_(0, gid, v)
        fill = math.inf if how == "min" else -math.inf
        init = torch.full((n_groups, v.shape[1]), fill, dtype=v.dtype, device=v.device)
        return init.scatter_reduce_(0, idx, v, reduce="a" + how, include_self=True)

    return torch, gid, seg


def stage12_reference(
    rewards: Any,
    offsets: Any,
    *,
    weights: Any,
    method: str,
    kappa: float = 1.0,
    lam: float = 0.5,
    eps: float = 1e-6,
    correction: float = 1,
    singleton: str = "zero",
    baseline: str = "mean",
) -> tuple[Any, int]:
    """Stages 1-2 on rows sorted by group; returns ``(S, number of infinite rewards)``.

    ``rewards`` is a torch tensor or a numpy array ``(N, K)`` (NaN = missing), ``offsets``
    ``(n_groups + 1,)`` int64 group boundaries, ``weights`` ``(K,)``. ``S`` ``(N,)`` is in
    the input's library and device: float64 for float64 input, float32 otherwise. The same
    lines run on numpy and torch. Arguments are assumed valid
    (the tests pass valid ones).
    """
    xp, gid, seg = _segments(rewards, offsets)
    if xp is np:
        with np.errstate(all="ignore"):  # NaN = missing flows through the arithmetic
            return _body(
                xp,
                gid,
                seg,
                rewards,
                weights,
                method,
                kappa,
                lam,
                eps,
                correction,
                singleton,
                baseline,
            )
    return _body(
        xp, gid, seg, rewards, weights, method, kappa, lam, eps, correction, singleton, baseline
    )


def fused_reference(
    rewards: Any,
    offsets: Any,
    *,
    weights: Any,
    method: str,
    order: str = "normalize_then_reduce",
    multipliers: Any = (),
    conflict: str | None = None,
    tau: float = 0.8,
    kappa: float = 1.0,
    lam: float = 0.5,
    alpha: float = 0.25,
    p: float = -1.0,
    eps: float = 1e-6,
    correction: float = 1,
    singleton: str = "zero",
    baseline: str = "mean",
) -> tuple[Any, Any]:
    """``(S, keep)`` of :func:`rewardagg.kernels.fused_scores`'s contract, in float64 numpy
    (``rewards`` a numpy array; ``multipliers`` pairs ``(column, lambda)``; ``keep`` None
    without ``conflict``)."""
    xp, gid, seg = _segments(np.asarray(rewards), offsets)
    x = np.asarray(rewards, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(x.shape[1])
    with np.errstate(all="ignore"):
        z = _stage1(xp, gid, seg, x, eps, correction, singleton, baseline)
        vals = x if order == "reduce_then_normalize" else z
        s = _reduce(xp, vals, ~np.isnan(x) & (w > 0), w, method, kappa, lam, alpha, p)
        if order == "reduce_then_normalize":  # the score standardised in its group
            s = _stage1(xp, gid, seg, s[:, None], eps, correction, singleton, baseline)[:, 0]
        for c, lam_c in multipliers:
            s = s + lam_c * np.where(np.isnan(z[:, c]), 0.0, z[:, c])
        keep = None
        if conflict is not None:
            use = ~np.isnan(x) & (w > 0)
            t = np.where(use, w * z, 0.0)
            mixed = (t > 1e-8).any(1) & (t < -1e-8).any(1)
            if conflict == "snr":
                mixed &= np.abs(t.sum(1)) / (np.abs(t).sum(1) + 1e-8) < tau
            keep = ~(mixed & ~np.isnan(s))
    return s, keep


def _stage1(xp, gid, seg, x, eps, correction, singleton, baseline):
    """Z of stage 1 (float64) for every present value of ``x``; NaN where missing."""
    present = ~xp.isnan(x)
    inf = math.inf
    n = seg(present * 1.0, "sum")
    lo = seg(xp.where(present, x, inf), "min")
    hi = seg(xp.where(present, x, -inf), "max")
    signal = (hi > lo) & (n - correction > 0)
    span = xp.where(signal, hi - lo, 1.0)
    u = xp.where(present, (x - xp.where(signal, lo, 0.0)[gid]) / span[gid], 0.0)
    mean_u = seg(u, "sum") / xp.where(n > 1, n, 1.0)
    d = xp.where(present, u - mean_u[gid], 0.0)
    sd_u = xp.sqrt(seg(d * d, "sum") / xp.where(n - correction > 0, n - correction, 1.0))
    factor = 1.0 / (sd_u + eps / span)
    if baseline == "leave_one_out":
        factor = factor * n / (xp.where(n > 2, n, 2.0) - 1.0)
    z = d * xp.where(signal, factor, 0.0)[gid]
    if singleton == "identity":
        z = xp.where((n == 1)[gid] & present, x / (1.0 + eps), z)
    return xp.where(present, z, math.nan)


def _reduce(xp, vals, use, w, method, kappa, lam, alpha, p):
    """The stage-2 reducer of every row over ``vals`` where ``use`` (numpy, float64)."""
    inf = math.inf
    wu = np.where(use, w, 0.0)
    total = wu.sum(1)
    has = total > 0
    v = wu / np.where(has, total, 1.0)[:, None]
    zu = np.where(use, vals, 0.0)
    zmin = np.amin(np.where(use, vals, inf), 1) if vals.shape[1] else total + inf
    mean = (v * zu).sum(1)
    if method == "gdpo":
        s = (wu * zu).sum(1)
    elif method == "mean" or (method == "softmin" and kappa == 0):
        s = mean
    elif method == "min" or (method == "softmin" and math.isinf(kappa)):
        s = zmin
    elif method == "softmin":
        gap = np.where(use, vals - zmin[:, None], 0.0)
        s = zmin - np.log1p((v * np.expm1(-kappa * gap)).sum(1)) / kappa
    elif method == "mean_variance":
        s = mean - lam * (v * np.where(use, vals - mean[:, None], 0.0) ** 2).sum(1)
    elif method == "cvar":  # sort each row; S = sum_j x_(j) max(0, min(v_(j), alpha - c_(j-1)))
        key = np.where(use, vals, inf)
        order = np.argsort(key, axis=1, kind="stable")
        xs = np.take_along_axis(np.where(use, vals, 0.0), order, 1)
        vs = np.take_along_axis(v, order, 1)
        before = np.cumsum(vs, 1) - vs
        s = (xs * np.maximum(0.0, np.minimum(vs, alpha - before))).sum(1) / alpha
    elif method == "power_mean":
        xz = np.where(use, vals, 1.0)
        if math.isinf(p):
            s = zmin if p < 0 else np.amax(np.where(use, vals, -inf), 1)
        elif p == 0:
            s = np.exp((v * np.log(xz)).sum(1))
        else:
            s = ((v * np.where(use, xz**p, 0.0)).sum(1)) ** (1.0 / p)
        zero = (use & (vals == 0)).any(1)
        if p <= 0:
            s = np.where(zero, 0.0, s)
    else:
        raise ValueError(f"method must be one of {ALL_METHODS}; got {method!r}")
    return np.where(has, s, math.nan)


def _body(xp, gid, seg, rewards, weights, method, kappa, lam, eps, correction, singleton, baseline):
    if xp is np:
        x = np.asarray(rewards, dtype=np.float64)
        out_dtype = np.float64 if rewards.dtype == np.float64 else np.float32
        w = np.asarray(weights, dtype=np.float64).reshape(x.shape[1])
    else:
        out_dtype = xp.float64 if rewards.dtype == xp.float64 else xp.float32
        x = rewards.to(xp.float64)
        w = xp.as_tensor(weights).to(device=x.device, dtype=xp.float64).reshape(x.shape[1])
    n_inf = int(xp.isinf(x).sum())
    inf = math.inf

    # ---- stage 1: per-cell statistics over the present values ----------------------------
    present = ~xp.isnan(x)
    n = seg(present * 1.0, "sum")
    lo = seg(xp.where(present, x, inf), "min")
    hi = seg(xp.where(present, x, -inf), "max")
    signal = (hi > lo) & (n - correction > 0)
    span = xp.where(signal, hi - lo, 1.0)
    u = xp.where(present, (x - xp.where(signal, lo, 0.0)[gid]) / span[gid], 0.0)
    mean_u = seg(u, "sum") / xp.where(n > 1, n, 1.0)
    d = xp.where(present, u - mean_u[gid], 0.0)
    sd_u = xp.sqrt(seg(d * d, "sum") / xp.where(n - correction > 0, n - correction, 1.0))
    factor = 1.0 / (sd_u + eps / span)
    if baseline == "leave_one_out":
        factor = factor * n / (xp.where(n > 2, n, 2.0) - 1.0)
    z = d * xp.where(signal, factor, 0.0)[gid]
    if singleton == "identity":
        z = xp.where((n == 1)[gid] & present, x / (1.0 + eps), z)

    # ---- stage 2: aggregate each row over its present positive-weight rewards ------------
    use = present & (w > 0)
    wu = xp.where(use, w, 0.0)
    total = wu.sum(1)
    has = total > 0
    v = wu / xp.where(has, total, 1.0)[:, None]
    zu = xp.where(use, z, 0.0)
    zmin = xp.amin(xp.where(use, z, inf), 1) if x.shape[1] else total + inf
    mean = (v * zu).sum(1)
    if method == "gdpo":
        s = (wu * zu).sum(1)
    elif method == "mean" or (method == "softmin" and kappa == 0):
        s = mean
    elif method == "min" or (method == "softmin" and math.isinf(kappa)):
        s = zmin
    elif method == "softmin":
        gap = xp.where(use, z - zmin[:, None], 0.0)
        s = zmin - xp.log1p((v * xp.expm1(-kappa * gap)).sum(1)) / kappa
    elif method == "mean_variance":
        s = mean - lam * (v * xp.where(use, z - mean[:, None], 0.0) ** 2).sum(1)
    else:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    s = xp.where(has, s, math.nan)
    return (s.astype(out_dtype) if xp is np else s.to(out_dtype)), n_inf
