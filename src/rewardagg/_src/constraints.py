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
import numbers
import sys
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from rewardagg._src.multipliers import check_names, resolve_columns
from rewardagg._src.namespace import is_torch
from rewardagg._src.pipeline import advantages
from rewardagg._src.stage3 import check_process_group
from rewardagg._src.validation import check_nonnegative, check_real

__all__ = ["ConstraintTracker"]


def _as_2d(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 ``(N, K)`` numpy array, or a clear error naming ``name``."""
    if is_torch(x):
        if x.is_complex():
            raise TypeError(f"{name} must hold real numbers; got a tensor of dtype {x.dtype}")
        arr = x.detach().to("cpu").double().numpy()
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as err:  # ragged nested lists
            raise ValueError(
                f"{name} must be an (N, K) array; got {type(x).__name__}: {err}"
            ) from None
        if arr.dtype.kind == "O":  # nested lists: None is a missing reward (NaN)
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError):
                raise TypeError(f"{name} must hold real numbers (None = missing)") from None
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N rows, K rewards); got shape {tuple(arr.shape)}")
    return arr


def _column_means(rewards: Any, cols: list[int], mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(sums, counts)`` of the present values of each column (NaN or mask False absent),
    with ``sums / counts`` the batch mean (a column whose sum overflows float64 comes as
    ``(mean, 1)``). A ``+-inf`` value is a ``ValueError`` naming the column."""
    r = _as_2d(rewards, "rewards")[:, cols]
    present = ~np.isnan(r)
    if mask is not None:
        m = mask.detach().cpu().numpy() if is_torch(mask) else np.asarray(mask)
        if m.dtype.kind != "b":
            raise TypeError(f"mask must be a boolean array; got dtype {m.dtype}")
        if m.ndim != 2 or m.shape[0] != r.shape[0]:
            raise ValueError(
                f"mask must have the shape of rewards ({r.shape[0]}, K); got {tuple(m.shape)}"
            )
        present &= m[:, cols]
    bad = present & np.isinf(r)
    if bad.any():
        j = int(np.argmax(bad.any(0)))
        raise ValueError(
            f"rewards: column {cols[j]} holds a non-finite value ({r[bad[:, j], j][0]}); a "
            "constraint's batch mean must be finite (use NaN or mask=False for a missing reward)"
        )
    vals = np.where(present, r, 0.0)
    counts = present.sum(0).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        sums = vals.sum(0)
        if not np.all(np.isfinite(sums)):  # finite values whose sum overflows float64
            means = (vals / np.maximum(counts, 1.0)).sum(0)  # |partial sums| <= max |x|
            sums = np.where(np.isfinite(sums), sums, means)
            counts = np.where(np.isfinite(vals.sum(0)), counts, np.minimum(counts, 1.0))
    return sums, counts


def _batch_mean(key: Any, total: float, n: float) -> float:
    mean = float(total / n)
    if not math.isfinite(mean):
        raise ValueError(
            f"rewards: the batch mean of constraint {key!r} is not finite ({mean}); the "
            "multipliers were not changed"
        )
    return mean


_FMAX = sys.float_info.max


def _pid_step(
    integral: float,
    target: float,
    mean: float,
    prev: float | None,
    gains: tuple[float, float, float],
    lambda_max: float,
) -> tuple[float, float, float]:
    """``(I', lambda', e)`` of the update rule with ``e = target - mean``, all finite.

    Float arithmetic as written; where an intermediate is not finite (a huge ``lr`` or
    error overflows float64) the same rule in exact rational arithmetic, clipped to
    ``[0, lambda_max]``, so an overflow lands on ``lambda_max``. The error kept for the
    next derivative term is clipped to the float64 range. ``OverflowError`` when a value
    has no finite float64 result (only possible with ``lambda_max = inf``)."""
    lr, kp, kd = gains
    error = target - mean
    i_new = min(max(integral + lr * error, 0.0), lambda_max)
    deriv = 0.0 if prev is None else error - prev
    lam = min(max(i_new + kp * error + kd * deriv, 0.0), lambda_max)
    if all(map(math.isfinite, (error, i_new, lam))):
        return i_new, lam, error
    q_err = Fraction(target) - Fraction(mean)
    q_max = None if math.isinf(lambda_max) else Fraction(lambda_max)

    def clip(v: Fraction) -> Fraction:
        v = max(v, Fraction(0))
        return v if q_max is None else min(v, q_max)

    q_i = clip(Fraction(integral) + Fraction(lr) * q_err)
    q_d = Fraction(0) if prev is None else q_err - Fraction(prev)
    q_lam = clip(q_i + Fraction(kp) * q_err + Fraction(kd) * q_d)
    e_kept = float(min(max(q_err, Fraction(-_FMAX)), Fraction(_FMAX)))
    return float(q_i), float(q_lam), e_kept


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
        missing in the whole batch (an empty batch included) keeps its multiplier.
        Returns the new multipliers.

        Raises:
            ValueError: ``rewards`` not 2-D, a constrained reward that is ``+-inf`` or whose
                batch mean is not finite, or a multiplier that would overflow float64
                (``lambda_max=inf``). The tracker is then left unchanged (an update is all
                or nothing), so one bad batch never leaves a non-finite multiplier behind.
                A finite overflow (huge ``lr`` or error) is clipped to ``lambda_max``.
        """
        check_process_group(process_group)
        arr = _as_2d(rewards, "rewards")
        cols = resolve_columns(list(self.targets), self.reward_names, arr.shape[1], "targets")
        sums, counts = _column_means(arr, cols, mask)
        if process_group is not None:
            sums, counts = _all_reduce(sums, counts, process_group)
        means: dict[Any, float] = {}
        new: dict[Any, tuple[float, float, float]] = {}
        gains = (self.lr, self.kp, self.kd)
        for (key, target), total, n in zip(self.targets.items(), sums, counts, strict=True):
            if n == 0:
                continue
            means[key] = mean = _batch_mean(key, total, n)
            try:
                new[key] = _pid_step(
                    self._integral[key], target, mean, self._prev_error[key], gains, self.lambda_max
                )
            except OverflowError:
                raise ValueError(
                    f"the multiplier of constraint {key!r} overflows float64 (lr={self.lr}, "
                    f"batch mean {mean}); set a finite lambda_max. The multipliers were not "
                    "changed"
                ) from None
        for key, (integral, lam, error) in new.items():  # commit: all checks passed
            self._integral[key], self._lambda[key], self._prev_error[key] = integral, lam, error
        self.last_means = means
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
        """Restore a :meth:`state_dict` taken from a tracker with the same targets (also
        after a round trip through JSON).

        Every key and value is checked before anything changes (all or nothing): the keys
        ``keys``, ``multipliers``, ``integral``, ``prev_error`` and ``step`` and no other;
        one finite entry per constraint, multipliers and integral in ``[0, lambda_max]``,
        ``prev_error`` finite or ``None``, ``step`` an integer ``>= 0``.

        Raises:
            ValueError, TypeError: naming the offending key (``state['multipliers'][1]``).
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"state must be a mapping (from state_dict()); got {type(state).__name__}"
            )
        want = ("keys", "multipliers", "integral", "prev_error", "step")
        missing = [k for k in want if k not in state]
        extra = sorted(map(str, set(state) - set(want)))
        if missing or extra:
            raise ValueError(
                f"state: missing keys {missing}, unknown keys {extra}; a tracker's state has "
                f"exactly {list(want)}"
            )
        n = len(self.targets)
        keys = _state_list(state, "keys", n)
        if keys != list(self.targets):
            raise ValueError(
                f"state['keys']: state_dict is for constraints {keys}; this tracker has "
                f"{list(self.targets)}"
            )
        lam = [
            self._state_value(v, f"state['multipliers'][{j}]")
            for j, v in enumerate(_state_list(state, "multipliers", n))
        ]
        integral = [
            self._state_value(v, f"state['integral'][{j}]")
            for j, v in enumerate(_state_list(state, "integral", n))
        ]
        prev = [
            None if v is None else _state_real(v, f"state['prev_error'][{j}]")
            for j, v in enumerate(_state_list(state, "prev_error", n))
        ]
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"state['step'] must be an integer; got {step!r}")
        if step < 0:
            raise ValueError(f"state['step'] must be >= 0; got {step}")
        self._lambda = dict(zip(keys, lam, strict=True))
        self._integral = dict(zip(keys, integral, strict=True))
        self._prev_error = dict(zip(keys, prev, strict=True))
        self.step = int(step)

    def _state_value(self, value: Any, name: str) -> float:
        v = _state_real(value, name)
        if not 0.0 <= v <= self.lambda_max:
            raise ValueError(f"{name} must be in [0, lambda_max={self.lambda_max}]; got {value!r}")
        return v

    def __repr__(self) -> str:
        return (
            f"ConstraintTracker(targets={self.targets}, multipliers={self.multipliers}, "
            f"step={self.step})"
        )


def _state_list(state: Mapping[str, Any], key: str, n: int) -> list[Any]:
    value = state[key]
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise TypeError(f"state[{key!r}] must be a list; got {type(value).__name__}")
    if len(value) != n:
        raise ValueError(
            f"state[{key!r}] must have one entry per constraint ({n}); got {len(value)}"
        )
    return list(value)


def _state_real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return v


def _all_reduce(sums: np.ndarray, counts: np.ndarray, process_group: Any):
    import torch
    import torch.distributed as dist

    both = torch.from_numpy(np.concatenate([sums, counts]))
    if dist.get_backend(process_group) == "nccl":
        both = both.cuda()
    dist.all_reduce(both, group=process_group)
    total = both.cpu().numpy()
    return total[: sums.size], total[sums.size :]
