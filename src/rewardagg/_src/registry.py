"""Name -> aggregation method, for config-driven callers (trainer configs, the CLI).

A method is stage 1 (group z-score), a stage-2 reducer over the reward axis, then stage 3
(batch z-score); ``"grpo"`` is the other order (sum the raw rewards, then normalise in the
group) and has no stage 3.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from rewardagg._src import aggregators as agg
from rewardagg._src.validation import check_choice, check_nonnegative

__all__ = ["Aggregator", "available_methods", "get_aggregator", "register_aggregator"]

SCALES = ("group", "batch", "none")


@dataclass(frozen=True)
class Aggregator:
    """A registered method.

    Attributes:
        name: registry key.
        reduce: public reducer ``reduce(z, *, weights, **params)`` over the last axis.
        params: accepted method parameters and their defaults.
        kind: ``"standardized"`` (stages 1-2-3) or ``"sum_first"`` (GRPO).
        kernel: private reducer on validated arrays ``kernel(z, row_weights, ops, **params)``.
        attention: private ``dS/dZ`` on validated arrays, same signature as ``kernel``;
            ``None`` when unknown (diagnostics then report NaN).
    """

    name: str
    reduce: Callable[..., Any]
    params: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "standardized"
    kernel: Callable[..., Any] | None = None
    attention: Callable[..., Any] | None = None

    def bind(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults updated with ``given``; unknown names raise ``TypeError``."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            takes = ", ".join(self.params) or "no parameters"
            raise TypeError(
                f"method {self.name!r} does not take {', '.join(unknown)}; it takes: {takes}"
            )
        params = {**self.params, **given}
        for name, value in params.items():
            if name in ("kappa",):
                params[name] = check_nonnegative(value, name, allow_inf=True)
            elif name in ("lam",):
                params[name] = check_nonnegative(value, name)
            elif name == "scale":
                params[name] = check_choice(value, "scale", SCALES)
        return params


_REGISTRY: dict[str, Aggregator] = {}


def _add(a: Aggregator) -> None:
    _REGISTRY[a.name] = a


def register_aggregator(
    name: str,
    fn: Callable[..., Any],
    *,
    attention: Callable[..., Any] | None = None,
    params: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Aggregator:
    """Register a stage-2 reducer under ``name`` so ``advantages(method=name)`` finds it.

    Args:
        name: the method name.
        fn: ``fn(z, *, weights=None, **params)`` reducing the last axis of standardised
            rewards (NaN = missing) to one score per row (NaN = no score), returning an
            array of the input's library.
        attention: optional ``attention(z, *, weights=None, **params)`` returning
            :math:`\\partial S_i / \\partial Z_{ik}` with the shape of ``z``, for the
            diagnostics (``attention`` is NaN without it).
        params: the method parameters ``fn`` accepts, with defaults.
        overwrite: replace an existing method of that name.

    Returns:
        The registered :class:`Aggregator`.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string; got {name!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable; got {fn!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"method {name!r} is already registered; pass overwrite=True to replace it"
        )
    if "weights" not in inspect.signature(fn).parameters:
        raise TypeError(f"fn must accept a keyword argument 'weights'; got {fn!r}")

    def kernel(z, rw, ops, **kw):  # the private signature, on validated arrays
        return _checked_output(name, fn(z, weights=rw.weights, **kw), z, ops)

    def user_attention(z, rw, ops, **kw):
        return attention(z, weights=rw.weights, **kw)

    a = Aggregator(
        name=name,
        reduce=fn,
        params=MappingProxyType(dict(params or {})),
        kernel=kernel,
        attention=None if attention is None else user_attention,
    )
    _REGISTRY[name] = a
    return a


def _checked_output(name: str, s: Any, z: Any, ops: Any) -> Any:
    """A registered reducer must return one finite-or-NaN score per row of ``z``."""
    expected = tuple(z.shape[:-1])
    try:
        s = ops.asarray(s, like=z)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"method {name!r} must return an array of scores; got {type(s).__name__} ({err})"
        ) from None
    if tuple(s.shape) != expected:
        raise ValueError(
            f"method {name!r} must return one score per row, shape {expected}; got {tuple(s.shape)}"
        )
    if ops.any(ops.isinf(s)):
        raise ValueError(f"method {name!r} returned +-inf scores (NaN marks a row without score)")
    return s


def get_aggregator(name: str) -> Aggregator:
    """The registered method ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown method {name!r}; available: {', '.join(available_methods())}"
        ) from None


def available_methods() -> tuple[str, ...]:
    """Names of every registered method, built-ins first."""
    return tuple(_REGISTRY)


_add(
    Aggregator(
        "grpo",
        agg.weighted_sum,
        MappingProxyType({"scale": "group"}),
        "sum_first",
        agg.weighted_sum_kernel,
        agg.weighted_sum_attention,
    )
)
_add(
    Aggregator(
        "gdpo",
        agg.weighted_sum,
        MappingProxyType({}),
        "standardized",
        agg.weighted_sum_kernel,
        agg.weighted_sum_attention,
    )
)
_add(
    Aggregator(
        "mean",
        agg.weighted_mean,
        MappingProxyType({}),
        "standardized",
        agg.weighted_mean_kernel,
        agg.weighted_mean_attention,
    )
)
_add(
    Aggregator(
        "softmin",
        agg.softmin,
        MappingProxyType({"kappa": 1.0}),
        "standardized",
        agg.softmin_kernel,
        agg.softmin_attention,
    )
)
_add(
    Aggregator(
        "mean_variance",
        agg.mean_variance,
        MappingProxyType({"lam": 0.5}),
        "standardized",
        agg.mean_variance_kernel,
        agg.mean_variance_attention,
    )
)
_add(
    Aggregator(
        "min",
        agg.weighted_min,
        MappingProxyType({}),
        "standardized",
        agg.weighted_min_kernel,
        agg.weighted_min_attention,
    )
)
