"""The kernels by method name: :func:`stage12` and :func:`fused_methods`.

These conveniences read the method table (``rewardagg._src.registry``) and run the core's
array path for ``backend="numpy"``/``"torch"``; they are a layer above both
:mod:`rewardagg.kernels` (whose fused pass, :func:`rewardagg.kernels.fused_scores`, takes a
reducer code and imports nothing from ``rewardagg._src``) and ``rewardagg._src`` (whose
modules never import this one). ``rewardagg.kernels.stage12`` and
``rewardagg.kernels.fused_methods`` resolve here on first use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rewardagg._src.aggregators import row_weights
from rewardagg._src.conflict import check_conflict, conflict_rows
from rewardagg._src.grouping import make_layout
from rewardagg._src.namespace import ops_for
from rewardagg._src.normalisation import check_stage_options, standardize_sorted
from rewardagg._src.registry import _REGISTRY, get_aggregator
from rewardagg.kernels import (
    CONFLICT_BACKENDS,
    FUSED_BACKENDS,
    _check,
    _Job,
    _raise_inf,
    _run_fused,
    is_torch,
    resolve_backend,
)

__all__ = ["fused_methods", "stage12"]


def fused_methods() -> tuple[str, ...]:
    """Names of the registered methods with a fused kernel (a ``fused_code`` in the table)."""
    return tuple(name for name, a in _REGISTRY.items() if a.fused_code is not None)


def _fused_backends(agg: Any) -> tuple[str, ...]:
    return agg.fused_backends if agg.fused_code is not None else ()


def stage12(
    rewards: Any,
    offsets: Any,
    *,
    weights: Any,
    method: str,
    eps: float = 1e-6,
    correction: float = 1,
    singleton: str = "zero",
    baseline: str = "mean",
    backend: str = "auto",
    validate: bool = True,
    conflict: str | None = None,
    conflict_threshold: float = 0.8,
    return_keep: bool = False,
    **params: Any,
) -> Any:
    r"""Stages 1-2 of DESIGN.md in one pass: the per-row score :math:`S` of sorted rows.

    .. math::

        Z_{ik} = \frac{R_{ik} - \mu_{g(i)k}}{\sigma_{g(i)k} + \varepsilon}, \qquad
        S_i = \operatorname{agg}_k(Z_{ik};\ v_{ik} = w_k / \textstyle\sum_{k \in P_i} w_k)

    Args:
        rewards: ``(N, K)`` float numpy array or torch tensor (float16/bfloat16 are read as
            float32); rows sorted so that group ``g`` is ``rewards[offsets[g]:offsets[g+1]]``;
            NaN = missing.
        offsets: ``(n_groups + 1,)`` integers from 0 to N (contiguous groups of ``G`` rows:
            ``arange(0, N + 1, G)``).
        weights: ``(K,)`` non-negative weights :math:`w` (a reward with weight 0 is ignored
            in stage 2).
        method: a z-score method of :func:`rewardagg.available_methods` (its entry in the
            method table); the fused backends run those of :func:`fused_methods`.
        eps, correction, singleton, baseline: as :func:`rewardagg.group_standardize`.
        backend: ``"auto"``, ``"numpy"``, ``"torch"``, ``"numba"`` or ``"triton"``.
        validate: raise :class:`ValueError` when a reward is infinite (the check is fused
            into the pass); ``False`` lets infinities propagate as NaN.
        conflict: GD²PO's conflict test per row, ``"hard"`` or ``"snr"`` (DESIGN.md
            section 2c), in the same pass; its verdict comes back with ``return_keep``.
        conflict_threshold: the ``"snr"`` threshold :math:`\tau \in [0, 1]`.
        return_keep: also return ``keep`` ``(N,)`` boolean (numpy): ``False`` for a row
            the conflict filter drops.
        **params: the method's parameters (``kappa=`` for softmin, ``lam=`` for
            mean_variance), validated as :func:`rewardagg.advantages` does.

    Returns:
        ``S`` ``(N,)`` in the input's library and device, float64 for float64 input and
        float32 otherwise, in the sorted row order; NaN for a row without a present
        positive-weight reward. With ``return_keep=True``: ``(S, keep)``.
    """
    agg = get_aggregator(method)
    if agg.kind != "standardized":
        raise ValueError(f"method {method!r} is not a z-score method (stages 1-2)")
    agg.check_order("normalize_then_reduce")  # stages 1-2 reduce z-scores
    bound = agg.bind(params)
    if agg.limits is not None and (limit := agg.limits(bound)) is not None:
        agg, bound = get_aggregator(limit[0]), limit[1]
    check_stage_options(eps, correction, singleton, baseline)
    off, w = _check(rewards, offsets, weights, eps, correction, singleton, baseline)
    if backend in FUSED_BACKENDS and backend not in _fused_backends(agg):
        if agg.fused_code is None:
            raise ValueError(
                f"backend={backend!r} runs the methods with a fused kernel "
                f"({', '.join(fused_methods())}); method {method!r} needs backend='numpy' "
                "or 'torch'"
            )
        raise ValueError(
            f"backend={backend!r} has no kernel for method {method!r}: its reduction is an "
            "order statistic that cannot be merged across reward blocks; use "
            "backend='auto', 'numpy' or 'torch'"
        )
    filt = _conflict_filter(agg, conflict, conflict_threshold)
    if filt is not None and backend in FUSED_BACKENDS and backend not in CONFLICT_BACKENDS:
        raise ValueError(
            f"backend={backend!r} has no conflict filter yet (the numba pass and the array "
            "path have it); use backend='auto', 'numba', 'numpy' or 'torch'"
        )
    name = resolve_backend(rewards, backend)
    if name in FUSED_BACKENDS and (
        name not in _fused_backends(agg) or (filt is not None and name not in CONFLICT_BACKENDS)
    ):  # "auto": the array path in the input's library
        name = "torch" if is_torch(rewards) else "numpy"
    if name in FUSED_BACKENDS:
        code, slots = agg.fused_args(bound)
        job = _Job(
            backend=name,
            code=code,
            slots=slots,
            off=off,
            w=w,
            eps=float(eps),
            correction=float(correction),
            identity=singleton == "identity",
            loo=baseline == "leave_one_out",
            raw=False,
            mult_cols=(),
            mult_lams=(),
            cmode=0 if filt is None else 1 + ("hard", "snr").index(filt.mode),
            tau=0.8 if filt is None else filt.tau,
        )
        s, bad, keep = _run_fused(rewards, job)
    else:
        stage1 = dict(eps=float(eps), correction=float(correction))
        s, bad, keep = _run_array(
            rewards,
            off,
            w,
            agg,
            bound,
            stage1,
            singleton=singleton,
            baseline=baseline,
            filt=filt,
            lib=name,
        )
    if validate and bad:
        _raise_inf(rewards)
    return (s, keep) if return_keep else s


def _conflict_filter(agg: Any, conflict: Any, threshold: Any) -> Any:
    return check_conflict(agg, conflict, threshold, True, "normalize_then_reduce")


def _run_array(rewards, off, w, agg, params, stage1, *, singleton, baseline, filt, lib):
    """The core's array path (stage 1 by cells, then the table's reducer), on sorted rows."""
    x = rewards
    to_numpy = lib == "torch" and not is_torch(x)
    if to_numpy:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(x))
    ops = ops_for(x)
    x = ops.asarray(x, like=x)
    if ops.name == "torch":
        x = x.detach()
        if x.dtype not in (ops.torch.float32, ops.torch.float64):
            x = x.to(ops.torch.float32)
    elif x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    keep = np.ones(int(x.shape[0]), dtype=bool)
    inf = ops.isinf(x)
    n_inf = int(inf.sum())
    if n_inf:  # validate=False: a cell holding +-inf has no score (NaN rows below)
        x = ops.where(inf, ops.nan, x)
    missing = ops.isnan(x)
    missing = missing if ops.any(missing) else None
    groups = np.repeat(np.arange(off.size - 1), np.diff(off))
    layout = make_layout(int(x.shape[0]), group_ids=groups) if off.size > 1 else None
    with np.errstate(all="ignore"):
        if layout is None or x.shape[0] == 0:
            s = ops.full((int(x.shape[0]),), ops.nan, like=x)
        else:
            xs = layout.sort_rows(x, ops)
            ms = None if missing is None else layout.sort_rows(missing, ops)
            z, _ = standardize_sorted(
                xs, ms, layout, ops, singleton=singleton, baseline=baseline, **stage1
            )
            rw = row_weights(z, w, ops, ms)
            s = layout.unsort_rows(agg.kernel(z, rw, ops, **params), ops)
            if filt is not None:
                drop = layout.unsort_rows(conflict_rows(z, rw, ops, filt)[0], ops)
                keep = ~np.asarray(ops.to_numpy(drop), dtype=bool)
    if n_inf:
        bad_groups = np.zeros(off.size - 1)
        np.add.at(bad_groups, groups, ops.to_numpy(inf).any(1))
        s = ops.where(ops.bool_like(bad_groups[groups] > 0, s), ops.nan, s)
    if to_numpy:
        s = s.numpy()
    return s, n_inf, keep
