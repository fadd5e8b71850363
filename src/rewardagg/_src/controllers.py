r"""Controllers: stateful objects that set some arguments of :func:`rewardagg.advantages` from
the batches seen so far, and the way to run several of them together.

A controller (:class:`Controller`) contributes arguments to a batch's
:func:`~rewardagg.advantages` call (:meth:`~Controller.advantage_kwargs`: reward weights for
:class:`~rewardagg.AdaptiveWeights`, Lagrange multipliers for
:class:`~rewardagg.ConstraintTracker`), then updates its state from the batch
(:meth:`~Controller.update`). It reports plain numbers for a logger
(:meth:`~Controller.metrics`) and saves its state in JSON types
(:meth:`~Controller.state_dict`). :func:`combine` runs several at once: for a batch,

.. math::

    w = w^{\text{caller}} \odot \prod_j w^{(j)}, \qquad
    \lambda = \bigcup_j \lambda^{(j)}

(weights multiply elementwise; multipliers of different controllers name different rewards),
then every controller updates from the same batch. So
``ra.combine(ra.AdaptiveWeights(), ra.ConstraintTracker({"safety": 0.9}))`` puts adaptive
weights and a declared constraint in one call. Adapters hold one controller through this
protocol, whatever it is.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rewardagg._src.adaptive import merge_weights
from rewardagg._src.pipeline import advantages

__all__ = ["CombinedController", "Controller", "combine", "controlled_kwargs"]


@runtime_checkable
class Controller(Protocol):
    """What a controller offers (:class:`~rewardagg.AdaptiveWeights` and
    :class:`~rewardagg.ConstraintTracker` are controllers; :func:`combine` makes one of
    several)."""

    def advantage_kwargs(self) -> dict[str, Any]:
        """The arguments it sets on the next :func:`rewardagg.advantages` call
        (``weights``, ``multipliers``, ``reward_names``)."""
        ...

    def advantages(self, rewards: Any, **kwargs: Any) -> Any:
        """:func:`rewardagg.advantages` with :meth:`advantage_kwargs`, then :meth:`update`."""
        ...

    def update(self, rewards: Any, *, mask: Any = None, process_group: Any = None) -> Any:
        """One step of the state from a batch of ``(N, K)`` rewards."""
        ...

    def metrics(self, prefix: str = "rewardagg/") -> dict[str, float]:
        """Plain numbers for a logger, keys starting with ``prefix``."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The state in JSON types."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (checked before anything changes)."""
        ...


def controlled_kwargs(kwargs: Mapping[str, Any], controls: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` of an :func:`rewardagg.advantages` call with a controller's
    ``controls`` (its :meth:`~Controller.advantage_kwargs`) applied: ``weights`` multiply the
    caller's, ``multipliers`` join the caller's (a reward named by both is a ``ValueError``),
    ``reward_names`` must agree with the caller's."""
    out = dict(kwargs)
    if "weights" in controls:
        out["weights"] = merge_weights(out.get("weights"), np.asarray(controls["weights"]))
    if "multipliers" in controls:
        mine, theirs = dict(controls["multipliers"]), dict(out.get("multipliers") or {})
        both = set(mine) & set(theirs)
        if both:
            raise ValueError(f"multipliers: reward(s) {sorted(map(str, both))} set twice")
        out["multipliers"] = {**theirs, **mine}
    names = controls.get("reward_names")
    if names is not None:
        given = out.get("reward_names")
        if given is not None and list(given) != list(names):
            raise ValueError(f"reward_names {list(given)} differ from a controller's {list(names)}")
        out["reward_names"] = list(names)
    unknown = set(controls) - {"weights", "multipliers", "reward_names"}
    if unknown:
        raise ValueError(f"a controller set unknown advantages() argument(s) {sorted(unknown)}")
    return out


class CombinedController:
    """Several controllers run as one (see :func:`combine`)."""

    def __init__(self, controllers: Sequence[Controller]) -> None:
        self.controllers = list(controllers)

    def advantage_kwargs(self) -> dict[str, Any]:
        """Every controller's arguments, joined (weights multiplied)."""
        out: dict[str, Any] = {}
        for c in self.controllers:
            out = controlled_kwargs(out, c.advantage_kwargs())
        return {k: v for k, v in out.items() if v is not None}

    def check_batch(self, rewards: Any, mask: Any = None) -> None:
        """Each controller's check of the batch (those that have one)."""
        for c in self.controllers:
            check = getattr(c, "check_batch", None)
            if check is not None:
                check(rewards, mask)

    def advantages(self, rewards: Any, *, method: str = "gdpo", **kwargs: Any) -> Any:
        """:func:`rewardagg.advantages` with every controller's arguments (weights multiplied
        with any ``weights=`` given), then every controller's :meth:`update` from the batch.
        A batch one of them rejects changes none of them."""
        self.check_batch(rewards, kwargs.get("mask"))
        out = advantages(
            rewards, method=method, **controlled_kwargs(kwargs, self.advantage_kwargs())
        )
        self.update(rewards, mask=kwargs.get("mask"), process_group=kwargs.get("process_group"))
        return out

    def update(self, rewards: Any, *, mask: Any = None, process_group: Any = None) -> None:
        """Every controller's update from the same batch (each from its own state before it)."""
        self.check_batch(rewards, mask)
        for c in self.controllers:
            c.update(rewards, mask=mask, process_group=process_group)

    def metrics(self, prefix: str = "rewardagg/") -> dict[str, float]:
        """Every controller's metrics in one dict."""
        out: dict[str, float] = {}
        for c in self.controllers:
            out.update(c.metrics(prefix=prefix))
        return out

    def state_dict(self) -> dict[str, Any]:
        """``{"controllers": [each controller's state_dict]}``."""
        return {"controllers": [c.state_dict() for c in self.controllers]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore every controller; all states are checked (on copies) before any loads."""
        parts = state.get("controllers") if isinstance(state, Mapping) else None
        if not isinstance(parts, list) or len(parts) != len(self.controllers):
            raise ValueError(
                f"state_dict['controllers'] must be a list of {len(self.controllers)} states"
            )
        for c, part in zip(self.controllers, parts, strict=True):
            copy.deepcopy(c).load_state_dict(part)
        for c, part in zip(self.controllers, parts, strict=True):
            c.load_state_dict(part)

    def __repr__(self) -> str:
        return f"combine({', '.join(map(repr, self.controllers))})"


def combine(*controllers: Controller) -> CombinedController:
    """Run several controllers as one: for each batch, the weights of all of them (multiplied)
    and the multipliers of all of them go into one :func:`rewardagg.advantages` call, then
    each updates from the batch.

    Examples:
        >>> import numpy as np
        >>> import rewardagg as ra
        >>> names = ["format", "correct"]
        >>> ctl = ra.combine(ra.AdaptiveWeights(reward_names=names),
        ...                  ra.ConstraintTracker({"format": 0.9}, lr=1.0, reward_names=names))
        >>> R = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
        >>> adv = ctl.advantages(R, group_size=2)
        >>> {k: round(v, 3) for k, v in ctl.metrics().items() if "lambda" in k or "weight" in k}
        {'rewardagg/weight/format': 0.296, 'rewardagg/weight/correct': 1.704, 'rewardagg/lambda/format': 0.4}
    """
    if not controllers:
        raise ValueError("combine needs at least one controller")
    for c in controllers:
        if not isinstance(c, Controller):
            raise TypeError(f"combine takes controllers; got {type(c).__name__}")
    return CombinedController(controllers)
