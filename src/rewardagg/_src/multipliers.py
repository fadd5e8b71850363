"""Lagrange multipliers as plain arguments: which reward column each one names.

``advantages(..., multipliers={column: lambda}, reward_names=...)`` adds
:math:`\\lambda_c Z_{ic}` to every score before stage 3 (DESIGN.md section 2b); a column is
an integer index or a name from ``reward_names``. The stateful tracker that adapts the
multipliers across steps is :mod:`rewardagg._src.constraints`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from rewardagg._src.validation import check_nonnegative

__all__ = ["check_names", "resolve_columns", "resolve_multipliers"]


def check_names(reward_names: Sequence[str] | None, n_rewards: int | None) -> list[str] | None:
    """``reward_names`` as a list, checked: one distinct name per column (when ``n_rewards``
    is known), not a bare string."""
    if reward_names is None:
        return None
    if isinstance(reward_names, str):
        raise TypeError("reward_names must be a sequence of strings, one per reward; got a string")
    names = list(reward_names)
    if n_rewards is not None and len(names) != n_rewards:
        raise ValueError(
            f"reward_names must have one name per reward column (K={n_rewards}); got {len(names)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"reward_names must be distinct; got {names}")
    return names


def resolve_columns(
    keys: Sequence[Any], reward_names: Sequence[str] | None, n_rewards: int | None, what: str
) -> list[int]:
    """Column index of each key: an integer index (negative counts from the end) or a name
    from ``reward_names``; a ``ValueError`` naming ``what`` otherwise."""
    names = check_names(reward_names, n_rewards)
    cols = []
    for key in keys:
        if isinstance(key, str):
            if names is None:
                raise ValueError(
                    f"{what}: column {key!r} is a name; pass reward_names= to name the columns"
                )
            if key not in names:
                raise ValueError(f"{what}: unknown reward name {key!r}; known: {names}")
            col = names.index(key)
        elif isinstance(key, numbers.Integral) and not isinstance(key, bool):
            col = int(key)
            if n_rewards is not None:
                if not -n_rewards <= col < n_rewards:
                    raise ValueError(
                        f"{what}: column {col} is out of range for K={n_rewards} rewards"
                    )
                col %= n_rewards
        else:
            raise TypeError(f"{what}: a column is an integer index or a reward name; got {key!r}")
        cols.append(col)
    if len(set(cols)) != len(cols):
        raise ValueError(f"{what}: a column is named twice ({list(keys)})")
    return cols


def resolve_multipliers(
    multipliers: Mapping[Any, float] | None,
    reward_names: Sequence[str] | None,
    n_rewards: int,
) -> tuple[list[int], list[float]]:
    """``(columns, lambdas)`` of ``multipliers`` (``{column: lambda}``), validated:
    columns in range or known names, each lambda a finite number >= 0."""
    if multipliers is None:
        check_names(reward_names, n_rewards)
        return [], []
    if not isinstance(multipliers, Mapping):
        raise TypeError(
            f"multipliers must be a mapping {{column: lambda}}; got {type(multipliers).__name__}"
        )
    cols = resolve_columns(list(multipliers), reward_names, n_rewards, "multipliers")
    lams = [check_nonnegative(v, f"multipliers[{k!r}]") for k, v in multipliers.items()]
    return cols, lams
