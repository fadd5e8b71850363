r"""From ``(N, K)`` rewards to one advantage per completion.

Every named method is a composition of the public stages: :func:`group_standardize`
(stage 1), a reducer from :mod:`rewardagg._src.aggregators` (stage 2) and
:func:`batch_standardize` (stage 3). ``"grpo"`` sums first and normalises inside the group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rewardagg import kernels
from rewardagg._src.aggregators import row_weights, weighted_sum_kernel
from rewardagg._src.blocks import BlockPlan, block_scores, finite_scores
from rewardagg._src.conflict import check_conflict, conflict_rows, reweight
from rewardagg._src.diagnostics import AggregationInfo, compute_info
from rewardagg._src.grouping import GroupLayout, make_layout
from rewardagg._src.methods import Aggregator
from rewardagg._src.multipliers import resolve_multipliers
from rewardagg._src.namespace import Ops
from rewardagg._src.normalisation import check_stage_options, standardize_sorted
from rewardagg._src.registry import get_aggregator
from rewardagg._src.stage3 import standardize_scores
from rewardagg._src.validation import (
    check_bool,
    check_choice,
    check_finite_or_nan,
    prepare_rewards,
    prepare_weights,
)

CENTERS = ("batch", "group")

__all__ = [
    "advantages",
    "cvar_advantages",
    "gdpo_advantages",
    "grpo_advantages",
    "mean_advantages",
    "mean_variance_advantages",
    "min_advantages",
    "power_mean_advantages",
    "softmin_advantages",
]


def _no_grad(ops):
    return ops.torch.no_grad() if ops.name == "torch" else contextlib.nullcontext()


def _fused_backend(
    backend: str, agg: Aggregator, rewards: Any, return_info: bool, order: str, filt: Any
) -> str | None:
    """The rewardagg.kernels backend that runs stages 1-2 in one pass, or None (array path).

    "auto" takes it when the kernels pick numba (CPU, large input) or Triton (CUDA) for a
    method with a fused code and no diagnostics are asked for (they need the z-scores);
    "numba"/"triton" insist on it.
    """
    if backend in kernels.FUSED_BACKENDS:
        why = _not_fused(agg, backend, order, filt)
        if why:
            raise ValueError(f"backend={backend!r} {why}; use backend='auto', 'numpy' or 'torch'")
        return backend
    if backend != "auto" or return_info or not hasattr(rewards, "shape"):
        return None
    name = kernels.resolve_backend(rewards)
    fusable = name in kernels.FUSED_BACKENDS and not _not_fused(agg, name, order, filt)
    return name if fusable else None


def _not_fused(agg: Aggregator, backend: str, order: str, filt: Any = None) -> str:
    """Why ``backend`` cannot run ``agg`` in ``order`` ("" when it can)."""
    if agg.fused_code is None:
        return (
            f"runs the methods with a fused kernel ({', '.join(kernels.fused_methods())}); "
            f"method {agg.name!r} has none"
        )
    if backend not in agg.fused_backends:
        return f"has no kernel for method {agg.name!r} (an order statistic over reward blocks)"
    if order != "normalize_then_reduce":
        return f"fuses stages 1-2 (order='normalize_then_reduce'); got order={order!r}"
    if filt is not None and backend not in kernels.CONFLICT_BACKENDS:
        return "has no conflict filter yet (the numba pass and the array path have it)"
    return ""


def _sorted_rewards(prep, layout: GroupLayout) -> tuple[Any, Any]:
    """``(rewards, NaN map or None)`` in sorted row order; +-inf raises, naming the
    caller's row."""
    missing = check_finite_or_nan(prep.values, prep.ops, "rewards")
    x = layout.sort_rows(prep.values, prep.ops)
    return x, None if missing is None else layout.sort_rows(missing, prep.ops)


def _group_scores(s, layout: GroupLayout, ops: Ops, *, scale: bool, **stage1: Any) -> Any:
    """Per-row scores standardised (or only centred) inside their group, exactly as stage 1
    standardises one reward; NaN stays NaN."""
    s_missing = ops.isnan(s)
    s_missing = s_missing[:, None] if ops.any(s_missing) else None
    out, _ = standardize_sorted(s[:, None], s_missing, layout, ops, scale=scale, **stage1)
    return out[:, 0]


def _grpo_scores(
    x, missing, w, layout: GroupLayout, ops, *, scale: str, eps, correction, singleton, baseline
):
    """Sum the raw rewards, then normalise each row's sum inside its group."""
    rw = row_weights(x, w, ops, missing)
    s = finite_scores(weighted_sum_kernel(x, rw, ops), "grpo")
    stage1 = dict(eps=eps, correction=correction, singleton=singleton, baseline=baseline)
    adv = _group_scores(s, layout, ops, scale=scale == "group", **stage1)
    s = s[:, None]
    if scale == "batch":  # TRL scale_rewards="batch": divide by the std of all row sums
        sd = standardize_scale(s[:, 0], ops, correction=correction)
        adv = adv / (sd + eps) if sd > 0 else adv * 0.0
    return ops.where(ops.isnan(adv), 0.0, adv)


def standardize_scale(s, ops, *, correction: float) -> float:
    """Standard deviation of the non-NaN entries of 1-D ``s`` (0 when undefined)."""
    keep = ops.to_numpy(s)
    keep = keep[~np.isnan(keep)].astype(np.float64)
    if keep.size - correction <= 0 or keep.size < 2:
        return 0.0
    return float(np.std(keep - keep.min(), ddof=correction))


def _check_stage3_options(agg: Aggregator, center: str, multipliers: Any) -> None:
    if agg.kind == "sum_first" and (center != "batch" or multipliers is not None):
        raise ValueError(
            f"method {agg.name!r} has no stage 3, so no center= or multipliers=; use "
            "method='gdpo' with order='reduce_then_normalize' (GRPO's score) instead"
        )


def _constraint_terms(x, missing, z, layout, ops, cols, lams, stage1) -> Any:
    r""":math:`\sum_c \lambda_c Z_{ic}` with :math:`Z` of stage 1, 0 where missing; only the
    constrained columns are standardised when stage 1 did not run."""
    if z is None:
        xc = x[:, cols]
        mc = None if missing is None else missing[:, cols]
        zc, _ = standardize_sorted(xc, mc, layout, ops, **stage1)
    else:
        zc = z[:, cols]
    zc = ops.where(ops.isnan(zc), 0.0, zc)
    return ops.dot_last(zc, ops.asarray(np.asarray(lams), like=zc))


def _stage3(s, layout, ops, batch_norm, center, eps, correction, process_group) -> Any:
    """Stage 3 as configured; rows without a score get 0."""
    if center == "group":  # the group mean over its rows with a score (no dof involved)
        s = _group_scores(s, layout, ops, scale=False, eps=eps, correction=0.0)
    if not batch_norm:
        return ops.where(ops.isnan(s), 0.0, s)
    return standardize_scores(
        s,
        ops,
        eps=eps,
        correction=correction,
        process_group=process_group,
        centre=center == "batch",
    )


def _attention(agg, reducer, params, order, x, z, w, rw, missing, ops) -> Any:
    """``dS/dZ`` of the reducer at the values it reduced (``dS/dR`` for the raw-reward
    order; grpo's only parameter acts after its sum, so its attention is the weights)."""
    if agg.attention is None:
        return None
    att = reducer.attention if reducer is not agg else agg.attention
    if agg.kind == "sum_first":
        return att(z, rw, ops)
    if order == "reduce_then_normalize":
        return att(x, row_weights(x, w, ops, missing), ops, **params)
    return att(z, rw, ops, **params)


def _fused_scores(x, layout, agg: Aggregator, params, w, n_rewards, backend, stage1, prep, filt):
    """Stages 1-2 in one kernel pass (sorted rows): ``(S, dropped rows or None)``."""
    opts: dict[str, Any] = {}
    if filt is not None:
        opts = dict(conflict=filt.mode, conflict_threshold=filt.tau, return_keep=True)
    try:
        out = kernels.stage12(
            x,
            layout.offsets,
            weights=[1.0] * n_rewards if w is None else w,
            method=agg.name,
            backend=backend,
            **stage1,
            **opts,
            **params,
        )
    except ValueError:
        # the kernel found +-inf in its pass; name the caller's row, not the sorted one
        check_finite_or_nan(prep.values, prep.ops, "rewards")
        raise
    if filt is None:
        return out, None
    s, keep = out
    return s, ~keep


def advantages(
    rewards: Any,
    *,
    method: str = "softmin",
    group_size: int | None = None,
    group_ids: Any = None,
    weights: Any = None,
    mask: Any = None,
    order: str | None = None,
    center: str = "batch",
    multipliers: Mapping[Any, float] | None = None,
    reward_names: Sequence[str] | None = None,
    conflict: str | None = None,
    conflict_threshold: float | None = None,
    reweight_groups: bool = True,
    eps: float = 1e-6,
    correction: float = 1,
    batch_norm: bool = True,
    singleton: str = "zero",
    baseline: str = "mean",
    return_info: bool = False,
    backend: str = "auto",
    process_group: Any = None,
    **method_params: Any,
) -> Any:
    r"""Advantages of a batch of completions scored by several rewards.

    Stage 1 standardises each reward inside each group, stage 2 reduces the rewards of a
    row to one score with the method's reducer, stage 3 standardises the scores over the
    batch:

    .. math::

        Z_{ik} = \frac{R_{ik} - \mu_{g(i)k}}{\sigma_{g(i)k} + \varepsilon}, \qquad
        S_i = \operatorname{agg}_k(Z_{ik}; v_{ik}), \qquad
        A_i = \frac{S_i - \operatorname{mean}(S)}{\operatorname{std}(S) + \varepsilon}.

    ``order="reduce_then_normalize"`` runs stage 2 on the raw rewards instead and
    standardises each row's score inside its group (as stage 1 does one reward), then
    stage 3; with ``softmin`` this is the smooth Tchebycheff scalarisation, with ``gdpo``
    and ``batch_norm=False`` it is GRPO. ``multipliers={c: lambda_c}`` adds
    :math:`\lambda_c Z_{ic}` to the score before stage 3 (Lagrangian constraints; see
    :class:`ConstraintTracker` to adapt them across steps).

    ``method="grpo"`` instead sums the raw rewards, :math:`s_i = \sum_k w_k R_{ik}`, and
    normalises :math:`s` inside the group (``scale="group"``), only centres it
    (``"none"``, Dr. GRPO), or divides by the batch std (``"batch"``); it has no stage 3.

    Args:
        rewards: ``(N, K)`` rewards, one column per reward signal (``(N,)``: K = 1); numpy,
            torch or nested lists. NaN (or ``None`` in a list) marks a missing reward.
        method: a name from :func:`available_methods` (``"softmin"`` is RVPO).
        group_size: contiguous groups of ``G`` rows (TRL, OpenRLHF layout).
        group_ids: one label per row, any order, uneven sizes (verl's ``uid``).
        weights: ``(K,)`` non-negative reward weights :math:`w_k` (default all ones).
        mask: boolean ``(N, K)``; ``False`` marks a missing reward.
        order: ``"normalize_then_reduce"`` (z-score each reward, then reduce) or
            ``"reduce_then_normalize"`` (reduce the raw rewards, then z-score the score in
            its group); ``None``: the method's default (DESIGN.md section 2b).
        center: stage 3 centring: ``"batch"`` (subtract the batch mean) or ``"group"``
            (subtract each group's mean, so every group's advantages sum to zero, then
            divide by the batch std of the centred scores).
        multipliers: ``{column: lambda}`` with ``lambda >= 0``: adds
            :math:`\lambda_c Z_{ic}` (0 where missing) to every score before stage 3.
            A column is an integer index or a name from ``reward_names``.
        reward_names: ``(K,)`` names of the reward columns (for ``multipliers``).
        conflict: GD²PO's conflict filter (DESIGN.md section 2c) on the per-reward
            z-scores: ``"hard"`` drops every row whose terms :math:`w_k Z_{ik}` disagree in
            sign, ``"snr"`` only those whose terms mostly cancel
            (:math:`|\sum_k t_{ik}| / \sum_k |t_{ik}| <` ``conflict_threshold``); dropped
            rows get advantage 0 and take no part in stage 3. ``None``: the method's
            default (``"gd2po"`` is gdpo with ``"hard"``, ``"gd2po_snr"`` with ``"snr"``).
        conflict_threshold: :math:`\tau \in [0, 1]` of ``"snr"`` (``None``: the method's,
            0.8); 0 drops nothing, 1 equals ``"hard"``.
        reweight_groups: scale each kept row's score by its group's kept share
            :math:`\rho_g` (GD²PO); ``False`` keeps the scores.
        eps: :math:`\varepsilon` of stages 1 and 3.
        correction: degrees of freedom of every std (1 = Bessel, as torch/TRL/verl).
        batch_norm: apply stage 3; ``False`` returns :math:`S` (0 for rows without one).
        singleton: ``"zero"``, or ``"identity"`` for verl's one-row-group convention.
        baseline: ``"mean"`` or ``"leave_one_out"`` (RLOO).
        return_info: also return an :class:`AggregationInfo`.
        backend: ``"auto"``, ``"numpy"``, ``"torch"`` (the array path in that library),
            ``"numba"`` or ``"triton"`` (stages 1-2 fused in one pass, see
            :mod:`rewardagg.kernels`). ``"auto"`` takes numba for large CPU inputs and
            Triton for CUDA tensors when installed, and the input's library otherwise.
        process_group: ``torch.distributed`` group for stage 3 across ranks.
        **method_params: the method's parameters, from its entry in the method table
            (``rewardagg.get_aggregator(method).params``): ``kappa`` (softmin, default 1),
            ``lam`` (mean_variance), ``alpha`` (cvar), ``p`` (power_mean), ``scale``
            (grpo), or those of a registered method.

    Returns:
        ``(N,)`` advantages in the input's library, device and float dtype (float64 for
        lists, integers and bools, numpy or torch; bf16/fp16 are computed in float32),
        without autograd history; a masked entry of a ``numpy.ma.MaskedArray`` is missing;
        rows without any reward get 0. With ``return_info=True``: ``(advantages, info)``.

    Examples:
        >>> import numpy as np
        >>> import rewardagg as ra
        >>> R = np.array([[0.0, 1.0], [1.0, 0.5], [1.0, 0.0],   # prompt 0: format, correct
        ...               [1.0, 1.0], [0.0, 0.2], [1.0, 0.6]])  # prompt 1
        >>> ra.advantages(R, group_size=3).round(3)  # RVPO (softmin, kappa=1)
        array([-0.622,  0.58 , -0.51 ,  1.342, -1.37 ,  0.58 ])
        >>> ra.advantages(R, method="gdpo", group_ids=[0, 0, 0, 1, 1, 1]).round(3)
        array([-0.122,  0.456, -0.334,  1.247, -1.703,  0.456])
        >>> adv, info = ra.advantages(R, group_size=3, return_info=True)
        >>> info.n_groups, info.rows_without_reward
        (2, 0)

    References:
        Montero, Jurczyk, Dhingra, "RVPO: Risk-Sensitive Alignment via Variance
        Regularization", 2026, https://arxiv.org/abs/2605.05750
    """
    agg = get_aggregator(method)
    params = agg.bind(method_params)
    batch_norm = check_bool(batch_norm, "batch_norm")
    return_info = check_bool(return_info, "return_info")
    order = agg.check_order(order)
    center = check_choice(center, "center", CENTERS)
    check_choice(backend, "backend", kernels.BACKENDS)
    _check_stage3_options(agg, center, multipliers)
    filt = check_conflict(agg, conflict, conflict_threshold, reweight_groups, order)
    fused = _fused_backend(backend, agg, rewards, return_info, order, filt)  # None: array path
    prep = prepare_rewards(
        rewards,
        mask,
        library={"numba": "auto", "triton": "torch"}.get(backend, backend),
        check_finite=False,  # the kernel's pass or the blocks check it; grpo checks below
    )
    ops = prep.ops
    # numpy computes stages 1-2 a block of groups at a time (rewardagg._src.blocks)
    blocked = fused is None and ops.name == "numpy" and agg.kind != "sum_first"
    w = prepare_weights(weights, prep.n_rewards)
    cols, lams = resolve_multipliers(multipliers, reward_names, prep.n_rewards)
    eps, correction, singleton, baseline = check_stage_options(eps, correction, singleton, baseline)
    layout = make_layout(prep.n_rows, group_size, group_ids)
    stage1: dict[str, Any] = dict(
        eps=eps, correction=correction, singleton=singleton, baseline=baseline
    )
    # the entry that computes stage 2 exactly for these parameters (cvar at alpha=1: mean)
    limit = agg.limits(params) if agg.limits is not None else None
    reducer, reducer_params = (get_aggregator(limit[0]), limit[1]) if limit else (agg, params)
    assert reducer.kernel is not None  # every table entry has one
    # overflow is detected below and raised as a ValueError, not left as a warning + NaN
    with _no_grad(ops), np.errstate(over="ignore", invalid="ignore"):
        x: Any = None  # the rewards in sorted row order, made only where a path needs them
        missing: Any = None
        if fused is None and not blocked:
            x, missing = _sorted_rewards(prep, layout)
        z: Any = None
        opposing: Any = None
        if agg.kind == "sum_first":
            adv = _grpo_scores(x, missing, w, layout, ops, scale=params["scale"], **stage1)
        else:
            drop = None
            if fused is not None:
                s, drop = _fused_scores(
                    layout.sort_rows(prep.values, ops),
                    layout,
                    agg,
                    params,
                    w,
                    prep.n_rewards,
                    fused,
                    stage1,
                    prep,
                    filt,
                )
            elif blocked:
                plan = BlockPlan(
                    reducer, reducer_params, order, stage1, w, cols, lams, filt, prep.values.dtype
                )
                s, drop = block_scores(prep.values, layout, plan)
            elif order == "normalize_then_reduce":
                z, signals = standardize_sorted(x, missing, layout, ops, **stage1)
                rw = row_weights(z, w, ops, missing)
                s = reducer.kernel(z, rw, ops, **reducer_params)
            else:  # raw order: float64 sums whatever the input dtype (as the kernels)
                x64 = x.double() if ops.name == "torch" else x.astype(np.float64)
                s = reducer.kernel(x64, row_weights(x64, w, ops, missing), ops, **reducer_params)
                s = _group_scores(finite_scores(s, agg.name), layout, ops, scale=True, **stage1)
            if cols and not blocked:
                s = s + _constraint_terms(x, missing, z, layout, ops, cols, lams, stage1)
            s = finite_scores(s, agg.name, prep.values.dtype if blocked else None)
            if filt is not None:
                if drop is None:
                    drop, opposing = conflict_rows(z, rw, ops, filt)
                s, rho = reweight(s, drop, layout, ops, filt)
            adv = _stage3(s, layout, ops, batch_norm, center, eps, correction, process_group)
        out = prep.cast_out(layout.unsort_rows(adv, ops))
        if not return_info:
            return out
        if x is None:  # the diagnostics are about the per-reward z-scores of every row
            x, missing = _sorted_rewards(prep, layout)
        if z is None:
            z, signals = standardize_sorted(x, missing, layout, ops, **stage1)
        rw = row_weights(z, w, ops, missing)
        attention = _attention(agg, reducer, reducer_params, order, x, z, w, rw, missing, ops)
        info_params = {**params, "order": order}
        if agg.kind != "sum_first":
            info_params["center"] = center
        info_params.update({f"multiplier/{c}": lam for c, lam in zip(cols, lams, strict=True)})
        if filt is not None:
            info_params.update(conflict=filt.mode, conflict_threshold=filt.tau)
            if opposing is None:  # the array path's per-reward view (diagnostics only)
                _, opposing = conflict_rows(z, rw, ops, filt)
        info = compute_info(
            method=agg.name,
            params=info_params,
            conflict=None if filt is None else (drop, opposing, rho),
            z=z,
            row_weights=rw,
            attention=attention,
            adv_sorted=adv,
            signals=signals,
            layout=layout,
            ops=ops,
        )
    return out, info


def _named(method: str, doc: str):
    def fn(rewards: Any, **kwargs: Any):
        if "method" in kwargs:
            raise TypeError(f"{method}_advantages() does not take 'method'")
        return advantages(rewards, method=method, **kwargs)

    fn.__name__ = fn.__qualname__ = f"{method}_advantages"
    fn.__doc__ = doc
    return fn


def softmin_advantages(
    rewards: Any,
    *,
    group_size: int | None = None,
    group_ids: Any = None,
    kappa: float = 1.0,
    weights: Any = None,
    mask: Any = None,
    eps: float = 1e-6,
    correction: float = 1,
    batch_norm: bool = True,
    **options: Any,
):
    r"""RVPO advantages: group z-score per reward, SoftMin over rewards, batch z-score.

    .. math::

        S_i = -\frac{1}{\kappa}\log\sum_{k} v_{ik}\, e^{-\kappa Z_{ik}}
            \approx \bar Z_i - \frac{\kappa}{2}\operatorname{Var}_v(Z_i)

    so a completion cannot buy its way past a failed reward with high scores elsewhere.
    ``kappa=0`` is :func:`mean_advantages`, ``kappa=inf`` is :func:`min_advantages`.
    Arguments as :func:`advantages`; ``options`` takes its remaining keywords
    (``singleton``, ``baseline``, ``return_info``, ``backend``, ``process_group``).

    Examples:
        >>> import numpy as np
        >>> import rewardagg as ra
        >>> R = np.array([[0.0, 1.0], [1.0, 0.5], [1.0, 0.0],   # prompt 0: format, correct
        ...               [1.0, 1.0], [0.0, 0.2], [1.0, 0.6]])  # prompt 1
        >>> ra.softmin_advantages(R, group_size=3, kappa=1.0).round(3)  # row 0 failed format
        array([-0.622,  0.58 , -0.51 ,  1.342, -1.37 ,  0.58 ])

    References:
        Montero, Jurczyk, Dhingra, "RVPO: Risk-Sensitive Alignment via Variance
        Regularization", 2026, https://arxiv.org/abs/2605.05750
    """
    return advantages(
        rewards,
        method="softmin",
        group_size=group_size,
        group_ids=group_ids,
        kappa=kappa,
        weights=weights,
        mask=mask,
        eps=eps,
        correction=correction,
        batch_norm=batch_norm,
        **options,
    )


def mean_variance_advantages(rewards: Any, *, lam: float = 0.5, **kwargs: Any):
    r"""Mean minus an explicit variance penalty over the group z-scores, then batch z-score.

    .. math:: S_i = \bar Z_i - \lambda \operatorname{Var}_v(Z_i)

    With ``lam = kappa / 2`` it is the second-order Taylor twin of
    :func:`softmin_advantages`. Other arguments as :func:`advantages`.

    Examples:
        >>> import numpy as np
        >>> import rewardagg as ra
        >>> R = np.array([[0.0, 1.0], [1.0, 0.5], [1.0, 0.0],   # prompt 0: format, correct
        ...               [1.0, 1.0], [0.0, 0.2], [1.0, 0.6]])  # prompt 1
        >>> ra.mean_variance_advantages(R, group_size=3, lam=0.5).round(3)
        array([-0.707,  0.595, -0.512,  1.342, -1.315,  0.595])
    """
    return advantages(rewards, method="mean_variance", lam=lam, **kwargs)


def cvar_advantages(rewards: Any, *, alpha: float = 0.25, **kwargs: Any) -> Any:
    r"""CVaR of each row's group z-scores (the mean of its worst ``alpha`` share), then
    batch z-score.

    .. math::

        S_i = \frac{1}{\alpha} \sum_j Z_{i(j)} \max\big(0, \min(v_{i(j)},
        \alpha - c_{i,j-1})\big)

    over the row's values sorted ascending with running weight sums :math:`c`. ``alpha=1``
    is :func:`mean_advantages`; small ``alpha`` approaches :func:`min_advantages`. With
    ``order="reduce_then_normalize"`` it reduces the raw rewards instead. Other arguments
    as :func:`advantages`.

    Examples:
        >>> import numpy as np
        >>> import rewardagg as ra
        >>> R = np.array([[0.0, 1.0], [1.0, 0.5], [1.0, 0.0],   # prompt 0: format, correct
        ...               [1.0, 1.0], [0.0, 0.2], [1.0, 0.6]])  # prompt 1
        >>> ra.cvar_advantages(R, group_size=3, alpha=0.5).round(3)  # worst of two: the min
        array([-0.942,  0.613, -0.734,  1.391, -0.942,  0.613])

    References:
        Rockafellar, Uryasev, "Optimization of conditional value-at-risk", Journal of Risk
        2(3), 2000.
    """
    return advantages(rewards, method="cvar", alpha=alpha, **kwargs)


def power_mean_advantages(rewards: Any, *, p: float = -1.0, **kwargs: Any) -> Any:
    r"""Power mean of each row's RAW rewards, standardised inside its group, then batch
    z-score (``order="reduce_then_normalize"``, the only order it has).

    .. math::

        s_i = \Big(\sum_{k \in P_i} v_{ik} R_{ik}^{\,p}\Big)^{1/p}, \qquad
        S_i = \frac{s_i - \mu_{g(i)}}{\sigma_{g(i)} + \varepsilon}

    ``p = 1`` is the mean, ``p = 0`` the geometric mean, ``p = -inf`` the min; for
    ``p <= 0`` one reward at 0 takes the score to 0 (a failed criterion cannot be bought
    back). Rewards must be non-negative (a ``ValueError`` says so otherwise). Other
    arguments as :func:`advantages`.

    Examples:
        >>> import numpy as np
        >>> import rewardagg as ra
        >>> R = np.array([[0.0, 1.0], [1.0, 0.5], [1.0, 0.0],   # prompt 0: format, correct
        ...               [1.0, 1.0], [0.0, 0.2], [1.0, 0.6]])  # prompt 1
        >>> ra.power_mean_advantages(R, group_size=3, p=0.0).round(3)  # geometric mean
        array([-0.645,  1.291, -0.645,  0.871, -1.261,  0.39 ])

    References:
        Fan et al., "Welfare and Fairness in Multi-objective Reinforcement Learning", 2022,
        https://arxiv.org/abs/2212.01382
    """
    return advantages(rewards, method="power_mean", p=p, **kwargs)


def grpo_advantages(rewards: Any, *, scale: str = "group", **kwargs: Any):
    r"""Classic GRPO (TRL's default ``sum_then_normalize``): sum the rewards, then normalise
    inside the group; no batch stage.

    .. math::

        s_i = \sum_{k \in P_i} w_k R_{ik}, \qquad
        A_i = \frac{s_i - \mu_{g(i)}}{\sigma + \varepsilon}

    with :math:`\sigma` the group std (``scale="group"``), the batch std (``"batch"``), or
    no division at all (``"none"``, Dr. GRPO). Other arguments as :func:`advantages`.

    Examples:
        >>> import numpy as np
        >>> import rewardagg as ra
        >>> R = np.array([[0.0, 1.0], [1.0, 0.5], [1.0, 0.0],   # prompt 0: format, correct
        ...               [1.0, 1.0], [0.0, 0.2], [1.0, 0.6]])  # prompt 1
        >>> ra.grpo_advantages(R, group_size=3).round(3)
        array([-0.577,  1.155, -0.577,  0.776, -1.129,  0.353])
        >>> ra.grpo_advantages(R, group_size=3, scale="none").round(3)  # Dr. GRPO
        array([-0.167,  0.333, -0.167,  0.733, -1.067,  0.333])

    References:
        Shao et al., "DeepSeekMath", 2024, https://arxiv.org/abs/2402.03300;
        Liu et al., "Understanding R1-Zero-Like Training" (Dr. GRPO), 2025,
        https://arxiv.org/abs/2503.20783
    """
    return advantages(rewards, method="grpo", scale=scale, **kwargs)


gdpo_advantages = _named(
    "gdpo",
    r"""GDPO advantages: group z-score per reward, weighted **sum**, batch z-score.

    .. math:: S_i = \sum_{k \in P_i} w_k Z_{ik}

    Exactly TRL's ``multi_objective_aggregation="normalize_then_sum"`` and verl's ``gdpo``
    up to their eps. Arguments as :func:`advantages`.

    Examples:
        >>> import numpy as np
        >>> import rewardagg as ra
        >>> R = np.array([[0.0, 1.0], [1.0, 0.5], [1.0, 0.0],   # prompt 0: format, correct
        ...               [1.0, 1.0], [0.0, 0.2], [1.0, 0.6]])  # prompt 1
        >>> ra.gdpo_advantages(R, group_size=3).round(3)  # row 0 failed format
        array([-0.122,  0.456, -0.334,  1.247, -1.703,  0.456])

    References:
        Liu et al., "GDPO: Group reward-Decoupled Normalization Policy Optimization for
        Multi-reward RL Optimization", 2026, https://arxiv.org/abs/2601.05242
    """,
)
mean_advantages = _named(
    "mean",
    r"""Group z-score per reward, weighted **mean**, batch z-score.

    .. math:: S_i = \sum_{k \in P_i} v_{ik} Z_{ik}

    The :math:`\kappa \to 0` limit of :func:`softmin_advantages`. Arguments as
    :func:`advantages`.

    Examples:
        >>> import numpy as np
        >>> import rewardagg as ra
        >>> R = np.array([[0.0, 1.0], [1.0, 0.5], [1.0, 0.0],   # prompt 0: format, correct
        ...               [1.0, 1.0], [0.0, 0.2], [1.0, 0.6]])  # prompt 1
        >>> ra.mean_advantages(R, group_size=3).round(3)  # = GDPO: no reward missing
        array([-0.122,  0.456, -0.334,  1.247, -1.703,  0.456])
    """,
)
min_advantages = _named(
    "min",
    r"""Group z-score per reward, **worst** reward, batch z-score.

    .. math:: S_i = \min_{k \in P_i} Z_{ik}

    The :math:`\kappa \to \infty` limit of :func:`softmin_advantages`. Arguments as
    :func:`advantages`.

    Examples:
        >>> import numpy as np
        >>> import rewardagg as ra
        >>> R = np.array([[0.0, 1.0], [1.0, 0.5], [1.0, 0.0],   # prompt 0: format, correct
        ...               [1.0, 1.0], [0.0, 0.2], [1.0, 0.6]])  # prompt 1
        >>> ra.min_advantages(R, group_size=3).round(3)
        array([-0.942,  0.613, -0.734,  1.391, -0.942,  0.613])
    """,
)

_ = AggregationInfo  # re-exported by the package
