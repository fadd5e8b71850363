r"""From ``(N, K)`` rewards to one advantage per completion.

Every named method is a composition of the public stages: :func:`group_standardize`
(stage 1), a reducer from :mod:`rewardagg._src.aggregators` (stage 2) and
:func:`batch_standardize` (stage 3). ``"grpo"`` sums first and normalises inside the group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rewardagg._src.diagnostics import AggregationInfo
from rewardagg._src.executor import execute
from rewardagg._src.methods import ALPHA, KAPPA, LAM, POWER, SCALE
from rewardagg._src.plan import CENTERS as CENTERS  # re-exported (settings, CLI)
from rewardagg._src.plan import make_plan

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
    group_scale: bool = True,
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
        group_scale: ``False`` runs stage 1 as a centring only,
            :math:`Z_{ik} = R_{ik} - \mu_{g(i)k}` (no division by the group std; verl's
            ``norm_adv_by_std_in_grpo=False`` for the z-score methods): the constraint
            terms and the conflict filter then read the centred rewards, and the
            raw-reward order centres the score in its group. grpo sets its own
            (``scale=``).
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
    plan, prep = make_plan(
        rewards,
        method=method,
        group_size=group_size,
        group_ids=group_ids,
        weights=weights,
        mask=mask,
        order=order,
        center=center,
        multipliers=multipliers,
        reward_names=reward_names,
        conflict=conflict,
        conflict_threshold=conflict_threshold,
        reweight_groups=reweight_groups,
        eps=eps,
        correction=correction,
        batch_norm=batch_norm,
        singleton=singleton,
        baseline=baseline,
        group_scale=group_scale,
        return_info=return_info,
        backend=backend,
        process_group=process_group,
        method_params=method_params,
    )
    out, info = execute(plan, prep)
    return out if info is None else (out, info)


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
    kappa: float = KAPPA.default,
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


def mean_variance_advantages(rewards: Any, *, lam: float = LAM.default, **kwargs: Any):
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


def cvar_advantages(rewards: Any, *, alpha: float = ALPHA.default, **kwargs: Any) -> Any:
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


def power_mean_advantages(rewards: Any, *, p: float = POWER.default, **kwargs: Any) -> Any:
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


def grpo_advantages(rewards: Any, *, scale: str = SCALE.default, **kwargs: Any):
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
