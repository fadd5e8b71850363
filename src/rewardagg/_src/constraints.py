r"""Constraints on declared rewards: Lagrange multipliers added to the score, and a tracker
that adapts them across training steps (dual ascent, optionally PID).

A constraint names one reward column :math:`c` and a target :math:`t_c`: the policy should
keep the batch mean of :math:`R_{:,c}` at or above :math:`t_c`. With multipliers
:math:`\lambda_c \ge 0` the score before stage 3 becomes

.. math::

    S_i \leftarrow S_i + \sum_c \lambda_c Z_{ic}

(:math:`Z` of stage 1, 0 where missing): a completion that fails the constraint is pushed
down in proportion to :math:`\lambda_c`, whatever it scores elsewhere. The tracker applies
the current multipliers to a batch, then takes one step on each:

.. math::

    e_c = t_c - \bar R_c, \qquad
    I_c \leftarrow \operatorname{clip}(I_c + \eta\, e_c, 0, \lambda_{\max}), \qquad
    \lambda_c = \operatorname{clip}(I_c + K_p e_c + K_d (e_c - e_c^{\text{prev}}), 0, \lambda_{\max})

with :math:`\bar R_c` the mean over the batch's present rows (across data-parallel ranks
when a process group is given). With :math:`K_p = K_d = 0` this is plain projected dual
ascent, :math:`\lambda_c \leftarrow \operatorname{clip}(\lambda_c + \eta (t_c - \bar R_c),
0, \lambda_{\max})`.

References:
    Dai et al., "Safe RLHF: Safe Reinforcement Learning from Human Feedback", 2023,
    https://arxiv.org/abs/2310.12773;
    Moskovitz et al., "Confronting Reward Model Overoptimization with Constrained RLHF",
    2023, https://arxiv.org/abs/2310.04373;
    Stooke, Achiam, Abbeel, "Responsive Safety in Reinforcement Learning by PID Lagrangian
    Methods", ICML 2020, https://arxiv.org/abs/2007.03964
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rewardagg._src.multipliers import check_names, resolve_columns
from rewardagg._src.namespace import is_torch
from rewardagg._src.pipeline import advantages
from rewardagg._src.validation import check_nonnegative, check_real

__all__ = ["ConstraintTracker"]


def _column_means(rewards: Any, cols: list[int], mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(sums, counts)`` of the present values of each column (NaN or mask False absent)."""
    if is_torch(rewards):
        r = rewards.detach().to("cpu").double().numpy()
    else:
        r = np.asarray(rewards, dtype=np.float64)
    r = r.reshape(r.shape[0], -1)[:, cols]
    present = ~np.isnan(r)
    if mask is not None:
        m = mask.detach().cpu().numpy() if is_torch(mask) else np.asarray(mask)
        present &= m.reshape(r.shape[0], -1)[:, cols].astype(bool)
    return np.where(present, r, 0.0).sum(0), present.sum(0).astype(np.float64)


class ConstraintTracker:
    r"""Lagrange multipliers for declared constraints, carried across training steps.

    ``tracker.advantages(rewards, **kwargs)`` computes :func:`rewardagg.advantages` with
    ``multipliers=tracker.multipliers``, THEN updates each multiplier from the batch mean of
    its reward (see the module docstring for the rule). Save ``state_dict()`` with the
    trainer's checkpoint and restore it with ``load_state_dict()``.

    Args:
        targets: ``{column: target}``; a column is an integer index or a name from
            ``reward_names``. The constraint asks for ``mean(R[:, column]) >= target``.
        lr: dual step size :math:`\eta \ge 0` (the integral gain).
        lambda_max: upper clip of every multiplier (``inf``: none).
        init: the multipliers' starting value (>= 0), or ``{column: value}``.
        kp: proportional gain :math:`K_p \ge 0` (PID Lagrangian); 0 = plain dual ascent.
        kd: derivative gain :math:`K_d \ge 0`.
        reward_names: the names of the reward columns, when ``targets`` uses names.

    Examples:
        >>> import numpy as np
        >>> import rewardagg as ra
        >>> tracker = ra.ConstraintTracker({"format": 0.9}, lr=1.0,
        ...                                reward_names=["format", "correct"])
        >>> R = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> adv = tracker.advantages(R, group_size=2, method="gdpo")
        >>> tracker.multipliers  # format met by half the batch: 0 + 1.0 * (0.9 - 0.5)
        {'format': 0.4}
    """

    def __init__(
        self,
        targets: Mapping[Any, float],
        *,
        lr: float = 0.1,
        lambda_max: float = math.inf,
        init: float | Mapping[Any, float] = 0.0,
        kp: float = 0.0,
        kd: float = 0.0,
        reward_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(targets, Mapping) or not targets:
            raise ValueError("targets must be a non-empty mapping {column: target}")
        self.reward_names = check_names(reward_names, None)
        resolve_columns(list(targets), self.reward_names, None, "targets")  # types, names
        self.targets = {k: check_real(v, f"targets[{k!r}]") for k, v in targets.items()}
        for k, t in self.targets.items():
            if math.isinf(t):
                raise ValueError(f"targets[{k!r}] must be finite; got {t}")
        self.lr = check_nonnegative(lr, "lr")
        self.lambda_max = check_nonnegative(lambda_max, "lambda_max", allow_inf=True)
        self.kp = check_nonnegative(kp, "kp")
        self.kd = check_nonnegative(kd, "kd")
        start = init if isinstance(init, Mapping) else {k: init for k in self.targets}
        unknown = set(start) - set(self.targets)
        if unknown:
            raise ValueError(f"init names columns without a target: {sorted(map(str, unknown))}")
        self._integral = {
            k: min(check_nonnegative(start.get(k, 0.0), f"init[{k!r}]"), self.lambda_max)
            for k in self.targets
        }
        self._lambda = dict(self._integral)
        self._prev_error: dict[Any, float | None] = {k: None for k in self.targets}
        self.step = 0
        self.last_means: dict[Any, float] = {}

    @property
    def multipliers(self) -> dict[Any, float]:
        """The multipliers the next batch gets, ``{column: lambda}``."""
        return dict(self._lambda)

    def advantage_kwargs(self) -> dict[str, Any]:
        """What this controller adds to a :func:`rewardagg.advantages` call (the controller
        protocol, :func:`rewardagg.combine`): the current multipliers and the reward names."""
        out: dict[str, Any] = {"multipliers": self.multipliers}
        if self.reward_names is not None:
            out["reward_names"] = list(self.reward_names)
        return out

    def advantages(self, rewards: Any, **kwargs: Any) -> Any:
        """:func:`rewardagg.advantages` with the current multipliers, then :meth:`update`
        from this batch. ``kwargs`` are those of :func:`rewardagg.advantages`
        (``process_group`` also reduces the constraint means across ranks)."""
        if "multipliers" in kwargs:
            raise TypeError("ConstraintTracker.advantages sets multipliers itself")
        names = kwargs.pop("reward_names", None) or self.reward_names
        out = advantages(rewards, multipliers=self.multipliers, reward_names=names, **kwargs)
        self.update(rewards, mask=kwargs.get("mask"), process_group=kwargs.get("process_group"))
        return out

    def update(
        self, rewards: Any, *, mask: Any = None, process_group: Any = None
    ) -> dict[Any, float]:
        """One step of every multiplier from the batch means of the constrained rewards
        (``(N, K)`` rewards, NaN or ``mask=False`` = missing). A constraint whose reward is
        missing in the whole batch keeps its multiplier. Returns the new multipliers."""
        n_rewards = int(rewards.shape[1]) if hasattr(rewards, "shape") else len(rewards[0])
        cols = resolve_columns(list(self.targets), self.reward_names, n_rewards, "targets")
        sums, counts = _column_means(rewards, cols, mask)
        if process_group is not None:
            sums, counts = _all_reduce(sums, counts, process_group)
        self.last_means = {}
        for (key, target), total, n in zip(self.targets.items(), sums, counts, strict=True):
            if n == 0:
                continue
            mean = float(total / n)
            self.last_means[key] = mean
            error = target - mean
            integral = min(max(self._integral[key] + self.lr * error, 0.0), self.lambda_max)
            prev = self._prev_error[key]
            deriv = 0.0 if prev is None else error - prev
            self._integral[key] = integral
            value = integral + self.kp * error + self.kd * deriv
            self._lambda[key] = min(max(value, 0.0), self.lambda_max)
            self._prev_error[key] = error
        self.step += 1
        return self.multipliers

    def metrics(self, prefix: str = "rewardagg/") -> dict[str, float]:
        """``{prefix + "lambda/<column>": ..., prefix + "constraint_mean/<column>": ...}``."""
        out = {f"{prefix}lambda/{k}": float(v) for k, v in self._lambda.items()}
        out.update({f"{prefix}constraint_mean/{k}": v for k, v in self.last_means.items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs: plain Python numbers and lists."""
        keys = list(self.targets)
        return {
            "keys": keys,
            "multipliers": [self._lambda[k] for k in keys],
            "integral": [self._integral[k] for k in keys],
            "prev_error": [self._prev_error[k] for k in keys],
            "step": self.step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from a tracker with the same targets."""
        keys = list(state["keys"])
        if keys != list(self.targets):
            raise ValueError(
                f"state_dict is for constraints {keys}; this tracker has {list(self.targets)}"
            )
        self._lambda = dict(zip(keys, map(float, state["multipliers"]), strict=True))
        self._integral = dict(zip(keys, map(float, state["integral"]), strict=True))
        self._prev_error = dict(
            zip(keys, (None if e is None else float(e) for e in state["prev_error"]), strict=True)
        )
        self.step = int(state["step"])

    def __repr__(self) -> str:
        return (
            f"ConstraintTracker(targets={self.targets}, multipliers={self.multipliers}, "
            f"step={self.step})"
        )


def _all_reduce(sums: np.ndarray, counts: np.ndarray, process_group: Any):
    import torch
    import torch.distributed as dist

    both = torch.from_numpy(np.concatenate([sums, counts]))
    if dist.get_backend(process_group) == "nccl":
        both = both.cuda()
    dist.all_reduce(both, group=process_group)
    total = both.cpu().numpy()
    return total[: sums.size], total[sums.size :]
