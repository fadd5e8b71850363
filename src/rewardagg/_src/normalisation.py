r"""Stage 1 (per-reward group standardisation) and the cell standardisation it shares
with stage 3 (:mod:`rewardagg._src.stage3`, batch standardisation).

Both stages are the same operation on different cells: a *cell* is the set of present values
that share a mean and a standard deviation (one reward inside one group for stage 1, all
rows for stage 3).

.. math::

    z_i = \frac{x_i - \mu}{\sigma + \varepsilon}, \qquad
    \mu = \frac{1}{n}\sum_{j \in P} x_j, \qquad
    \sigma = \sqrt{\frac{1}{n - c}\sum_{j \in P} (x_j - \mu)^2}

over the present values ``P`` of the cell (``n = |P|``, ``c`` = ``correction``). A cell
with ``max == min`` (tested exactly) or with ``n - c <= 0`` carries no signal and gives
exactly 0. The values are shifted by the cell minimum and scaled by its range before any
sum, so an all-equal cell is 0 at any magnitude and no square overflows for finite input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rewardagg._src.grouping import GroupLayout, make_layout
from rewardagg._src.namespace import Ops
from rewardagg._src.validation import check_choice, check_nonnegative, prepare_rewards

__all__ = ["group_standardize"]

SINGLETONS = ("zero", "identity")
BASELINES = ("mean", "leave_one_out")


def _squares_may_leave_range(span: Any, n: int, ops: Ops) -> bool:
    """Could a sum of ``n`` squared deviations overflow, or a square underflow?"""
    info = np.finfo(ops.to_numpy(span[(0,) * span.ndim]).dtype)
    big = float(ops.amax(span.reshape(-1), 0))
    small = float(ops.amin(span.reshape(-1), 0))
    return big * big * max(n, 1) > float(info.max) * 1e-6 or small * small < float(info.tiny) * 1e6


def standardize_cells(
    x: Any,
    missing: Any,
    *,
    axis: int,
    ops: Ops,
    eps: float,
    correction: float,
    singleton: str = "zero",
    baseline: str = "mean",
    scale: bool = True,
) -> tuple[Any, Any]:
    """Standardise ``x`` along ``axis`` (each slice along it is a cell).

    ``missing`` is the NaN map of ``x`` or ``None`` (nothing missing). Returns
    ``(z, signal)``: ``z`` a new array (NaN where missing) and ``signal`` the boolean
    "this cell carries signal" with ``axis`` kept as a length-1 dimension.
    ``scale=False`` only centres (``z = x - mu``); ``baseline="leave_one_out"`` measures
    each value against the mean of the *other* present values of its cell, which is the
    centred value times ``n / (n - 1)``.
    """
    if missing is None:
        n = float(x.shape[axis])
        lo = ops.amin(x, axis, keepdims=True)
        hi = ops.amax(x, axis, keepdims=True)
        signal = (hi > lo) & (n >= 2 and n - correction > 0)
        n_div, n_safe = max(n - correction, 1.0), max(n, 1.0)
    else:
        keep = ops.indicator(~missing, like=x)  # 1.0 present, 0.0 missing: masks by products
        n = ops.sum(keep, axis, keepdims=True)
        lo = ops.nanmin(x, axis, keepdims=True)
        hi = ops.nanmax(x, axis, keepdims=True)
        signal = (hi > lo) & (n - correction > 0)
        n_div = ops.where(n - correction > 0, n - correction, 1.0)
        n_safe = ops.where(n > 0, n, 1.0)
    with np.errstate(over="ignore"):
        span = ops.where(signal, hi - lo, 1.0)
    if ops.any(ops.isinf(span)):
        raise ValueError(
            "the values of a group (or of the batch) span more than the largest "
            f"{x.dtype} number (max - min overflows); rescale the rewards"
        )
    d = x - lo  # exactly 0 throughout an all-equal cell
    if _squares_may_leave_range(span, x.shape[axis], ops):
        d /= span  # every present value of a signal cell now lies in [0, 1]
    else:
        span = span * 0.0 + 1.0  # the shift alone keeps every square in range
    if missing is not None:
        ops.fmax_(d, 0.0)  # missing (NaN) -> 0; every present d = (x - min) / ... is >= 0
    d -= ops.sum(d, axis, keepdims=True) / n_safe
    if missing is not None:
        d *= keep
    if scale:
        sd = ops.sqrt(ops.sumsq(d, axis, keepdims=True) / n_div)
        # eps as an array: torch computes scalar / tensor as scalar * (1 / tensor), and
        # 1 / (a subnormal span) overflows (0 * inf = NaN at eps = 0)
        factor = 1.0 / ops.where(signal, sd + (span * 0.0 + eps) / span, 1.0)
    else:
        factor = span
    if baseline == "leave_one_out":  # signal cells have n >= 2
        factor = factor * (
            n / (ops.where(n > 1, n, 2.0) - 1.0) if missing is not None else n / max(n - 1.0, 1.0)
        )
    d *= ops.where(signal, factor, 0.0)
    if singleton == "identity":  # verl: a one-value cell has mean 0 and std 1
        raw = x / (1.0 + eps) if scale else x
        if missing is None and n == 1:
            d = raw * 1.0  # a fresh array, never the caller's
        elif missing is not None:
            ones = (n == 1) & ~missing
            if ops.any(ones):
                d = ops.where(ones, raw, d)
    if missing is not None:
        ops.nan_where_zero_(d, keep)  # the missing entries are 0 here: 0 / 0
    return d, signal


def check_stage_options(eps: Any, correction: Any, singleton: Any, baseline: Any) -> tuple:
    return (
        check_nonnegative(eps, "eps"),
        check_nonnegative(correction, "correction"),
        check_choice(singleton, "singleton", SINGLETONS),
        check_choice(baseline, "baseline", BASELINES),
    )


def standardize_sorted(
    x: Any,
    missing: Any,
    layout: GroupLayout,
    ops: Ops,
    **options: Any,
) -> tuple[Any, list]:
    """Stage 1 on rows already in ``layout``'s sorted order: ``(Z, per-bucket signal)``,
    each signal of shape ``(groups in bucket, 1, K)``."""
    if len(layout.buckets) == 1:
        b = layout.buckets[0]
        blk = x.reshape(b.n_groups, b.size, -1)
        mblk = None if missing is None else missing.reshape(b.n_groups, b.size, -1)
        z, signal = standardize_cells(blk, mblk, axis=1, ops=ops, **options)
        return z.reshape(x.shape), [signal]
    z = ops.zeros(x.shape, like=x)
    signals = []
    for b, blk in layout.blocks(x):
        mblk = None if missing is None else missing[b.start : b.stop].reshape(blk.shape)
        zb, signal = standardize_cells(blk, mblk, axis=1, ops=ops, **options)
        z[b.start : b.stop] = zb.reshape(-1, *tuple(x.shape[1:]))
        signals.append(signal)
    return z, signals


def group_standardize(
    rewards: Any,
    *,
    group_size: int | None = None,
    group_ids: Any = None,
    mask: Any = None,
    eps: float = 1e-6,
    correction: float = 1,
    singleton: str = "zero",
    baseline: str = "mean",
    scale: bool = True,
):
    r"""Stage 1: standardise each reward inside each group (GDPO's decoupled normalisation).

    .. math::

        Z_{ik} = \frac{R_{ik} - \mu_{g(i)k}}{\sigma_{g(i)k} + \varepsilon}

    with :math:`\mu, \sigma` over the present entries of reward :math:`k` in row
    :math:`i`'s group :math:`g(i)`, :math:`\sigma` with Bessel's ``correction``.

    Args:
        rewards: ``(N, K)`` rewards (``(N,)`` means K = 1); numpy, torch or nested lists.
            NaN marks a missing reward.
        group_size: rows ``[0:G]`` are group 0, ``[G:2G]`` group 1, ... (TRL, OpenRLHF).
        group_ids: one label per row, any order, uneven sizes (verl's ``uid``).
        mask: boolean like ``rewards``; ``False`` marks a missing reward.
        eps: :math:`\varepsilon`, added to the standard deviation.
        correction: degrees of freedom subtracted from the count (1 = Bessel).
        singleton: ``"zero"`` (a cell with fewer than two values gives 0) or
            ``"identity"`` (verl: a one-row cell has mean 0 and std 1).
        baseline: ``"mean"`` or ``"leave_one_out"`` (RLOO: :math:`\mu` is the mean of
            the other present rows).
        scale: ``False`` only centres (Dr. GRPO).

    Returns:
        ``Z`` with the shape, array library and dtype of ``rewards``; NaN where missing,
        exactly 0 in cells with ``max == min`` or fewer than two present values.

    Examples:
        >>> import numpy as np
        >>> from rewardagg import group_standardize
        >>> R = np.array([[0.0, 1.0], [1.0, 0.5], [1.0, 0.0],
        ...               [1.0, 1.0], [0.0, np.nan], [1.0, 1.0]])  # NaN: missing
        >>> group_standardize(R, group_size=3).round(3)  # reward 1 of group 1: all equal
        array([[-1.155,  1.   ],
               [ 0.577,  0.   ],
               [ 0.577, -1.   ],
               [ 0.577,  0.   ],
               [-1.155,    nan],
               [ 0.577,  0.   ]])

    References:
        Liu et al., "GDPO: Group reward-Decoupled Normalization Policy Optimization for
        Multi-reward RL Optimization", 2026, https://arxiv.org/abs/2601.05242
    """
    prep = prepare_rewards(rewards, mask)
    eps, correction, singleton, baseline = check_stage_options(eps, correction, singleton, baseline)
    layout = make_layout(prep.n_rows, group_size, group_ids)
    ops = prep.ops
    missing = None if prep.missing is None else layout.sort_rows(prep.missing, ops)
    z, _ = standardize_sorted(
        layout.sort_rows(prep.values, ops),
        missing,
        layout,
        ops,
        eps=eps,
        correction=correction,
        singleton=singleton,
        baseline=baseline,
        scale=bool(scale),
    )
    z = prep.cast_out(layout.unsort_rows(z, prep.ops))
    return z.reshape(-1) if prep.was_1d else z
