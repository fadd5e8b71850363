"""Name -> aggregation method, for config-driven callers (trainer configs, the CLI).

The registry holds the entries of the method table (:mod:`rewardagg._src.methods`): the
built-ins first, then the methods registered at run time with
:func:`register_aggregator`. Every consumer (pipeline, kernels, adapters, CLI, demo,
audit, tests) finds methods here, so a registered method is configurable wherever a
built-in one is.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from rewardagg._src.methods import BUILTINS, Aggregator, Param

__all__ = [
    "Aggregator",
    "available_methods",
    "get_aggregator",
    "register_aggregator",
    "unregister_aggregator",
]

_REGISTRY: dict[str, Aggregator] = {a.name: a for a in BUILTINS}
#: Other names of registered methods, resolved by :func:`get_aggregator` (not listed by
#: :func:`available_methods`, which lists each method once): RVPO's SoftMin is verl's
#: and OpenRLHF's estimator ``rvpo``.
ALIASES: dict[str, str] = {"rvpo": "softmin"}


def register_aggregator(
    name: str,
    fn: Callable[..., Any],
    *,
    attention: Callable[..., Any] | None = None,
    params: Mapping[str, Any] | None = None,
    checks: Mapping[str, Callable[[Any, str], Any]] | None = None,
    sweep: tuple[Mapping[str, Any], ...] | None = None,
    overwrite: bool = False,
) -> Aggregator:
    """Register a stage-2 reducer under ``name`` so ``advantages(method=name)`` finds it.

    The method is then configurable everywhere a built-in one is: ``advantages(method=name,
    **params)``, TRL's ``RewardAggGRPOConfig(advantage_method=name, advantage_params=...)``,
    verl's ``+algorithm.rewardagg.<param>=...``, OpenRLHF's ``--rewardagg.<param>``, the
    audit and the demo (``--methods``). It runs on the array path (numpy or torch).

    Args:
        name: the method name.
        fn: ``fn(z, *, weights=None, **params)`` reducing the last axis of standardised
            rewards (NaN = missing) to one score per row (NaN = no score), returning an
            array of the input's library.
        attention: optional ``attention(z, *, weights=None, **params)`` returning
            :math:`\\partial S_i / \\partial Z_{ik}` with the shape of ``z``, for the
            diagnostics (``attention`` is NaN without it).
        params: the method parameters ``fn`` accepts, with defaults. A numeric default
            makes the parameter a real number (NaN rejected; strings from a command line
            are converted), a string default a string.
        checks: optional validators ``check(value, name) -> value`` per parameter, raising
            ``ValueError``/``TypeError`` that names it (e.g. "alpha must be in (0, 1]").
        sweep: parameter settings the demo and the audit compare (default: the defaults).
        overwrite: replace an existing method of that name (built-ins cannot be replaced).

    Returns:
        The registered :class:`Aggregator`.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string; got {name!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable; got {fn!r}")
    if name in _BUILTIN_NAMES:
        raise ValueError(f"method {name!r} is built in and cannot be replaced")
    if name in ALIASES:
        raise ValueError(f"method {name!r} is an alias of the built-in {ALIASES[name]!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"method {name!r} is already registered; pass overwrite=True to replace it"
        )
    if "weights" not in inspect.signature(fn).parameters:
        raise TypeError(f"fn must accept a keyword argument 'weights'; got {fn!r}")
    params = dict(params or {})
    checks = dict(checks or {})
    unknown = sorted(set(checks) - set(params))
    if unknown:
        raise ValueError(f"checks name parameters not in params: {unknown}")
    specs = tuple(Param.infer(n, d, checks.get(n)) for n, d in params.items())

    def kernel(z, rw, ops, **kw):  # the private signature, on validated arrays
        return _checked_output(name, fn(z, weights=rw.weights, **kw), z, ops)

    def user_attention(z, rw, ops, **kw):
        return attention(z, weights=rw.weights, **kw)

    a = Aggregator(
        name=name,
        reduce=fn,
        kernel=kernel,
        attention=None if attention is None else user_attention,
        specs=specs,
        sweep=tuple(sweep) if sweep else ({},),
        summary=(inspect.getdoc(fn) or "").split("\n", 1)[0],
    )
    for setting in a.sweep:
        a.bind(setting)  # a bad sweep fails here, not in the middle of a demo
    _REGISTRY[name] = a
    return a


def unregister_aggregator(name: str) -> None:
    """Remove a method added with :func:`register_aggregator`.

    Raises:
        ValueError: ``name`` is built in or not registered.
    """
    if name in _BUILTIN_NAMES:
        raise ValueError(f"method {name!r} is built in and cannot be unregistered")
    if name not in _REGISTRY:
        raise ValueError(f"method {name!r} is not registered")
    del _REGISTRY[name]


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
    """The registered method ``name`` (or the method an alias of :data:`ALIASES` names:
    ``"rvpo"`` is ``"softmin"``); ``ValueError`` listing the known names otherwise."""
    try:
        return _REGISTRY[ALIASES.get(name, name)]
    except (KeyError, TypeError):
        aliases = ", ".join(f"{a} (= {m})" for a, m in ALIASES.items())
        raise ValueError(
            f"unknown method {name!r}; available: {', '.join(available_methods())}; "
            f"aliases: {aliases}"
        ) from None


def available_methods() -> tuple[str, ...]:
    """Names of every registered method, built-ins first."""
    return tuple(_REGISTRY)


_BUILTIN_NAMES = frozenset(_REGISTRY)
