"""Method settings: which methods, with which parameters, a comparison runs.

``rewardagg demo`` and ``rewardagg audit`` run several methods side by side. A *setting*
(:class:`MethodSpec`) is one method of the method table with one set of parameters and a
display label. The settings are read off the table (:func:`rewardagg.get_aggregator`), so
a method added to the table or registered at run time with
:func:`rewardagg.register_aggregator` is compared like a built-in one:

- each method contributes one setting per entry of its ``sweep`` (the parameter values
  its table entry says are worth comparing);
- ``overrides`` (``{"name": [v1, v2, ...]}``, the command line's ``--param name=v1,v2``)
  replace the values of that parameter in the sweep of every selected method that takes
  it; a parameter no selected method takes is an error;
- the label is the table's (:meth:`rewardagg.Aggregator.label`), with the parameters it
  does not show appended when two settings would otherwise share a label.

Values may be strings (from a command line): they are converted and validated by the
table (:meth:`rewardagg.Aggregator.parse`).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rewardagg._src.registry import available_methods, get_aggregator

__all__ = [
    "MethodSpec",
    "check_methods",
    "check_overrides",
    "expand_sweep",
    "method_settings",
    "parameters_taken",
]


@dataclass(frozen=True)
class MethodSpec:
    """One method of a comparison: a display label, a registry name and its parameters.

    ``params`` holds the parameters the setting gives (validated); the method's defaults
    fill in the rest when it runs. ``options`` holds further keyword arguments of
    :func:`rewardagg.advantages` that make this setting a variant of the method
    (``order``, ``center``, ``conflict``, ``weights``, ...); the table's settings have none.
    ``rewardagg demo`` reads two options of its own, resolved per scenario:
    ``weights="points"`` (the rubric's point values) and ``constraint={...}`` (a
    :class:`rewardagg.ConstraintTracker` on the constraint column; see
    :mod:`rewardagg.demo.settings`).
    """

    label: str
    method: str
    params: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    @classmethod
    def from_table(cls, method: str, params: Mapping[str, Any] | None = None) -> MethodSpec:
        """The setting of the registered ``method`` with ``params`` (strings converted and
        validated by the table), labelled by the table's :meth:`~rewardagg.Aggregator.label`
        (defaults filled in for the label only)."""
        agg = get_aggregator(method)
        given = agg.parse(params or {})
        return cls(agg.label(agg.bind(given)), method, given)


def check_methods(names: Iterable[str]) -> list[str]:
    """``names`` without repeats, in order; ``ValueError`` naming the unknown ones."""
    known = available_methods()
    names = list(dict.fromkeys(names))
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"unknown {bad}; available: {', '.join(known)}")
    return names


def parameters_taken(names: Iterable[str]) -> dict[str, list[str]]:
    """Parameter name -> the methods among ``names`` that take it, in table order."""
    out: dict[str, list[str]] = {}
    for name in names:
        for param in get_aggregator(name).params:
            out.setdefault(param, []).append(name)
    return out


def check_overrides(names: Iterable[str], overrides: Mapping[str, Any]) -> None:
    """``ValueError`` when no method of ``names`` takes a parameter of ``overrides``; the
    message lists the parameters they do take."""
    taken = parameters_taken(names)
    bad = sorted(set(overrides) - set(taken))
    if bad:
        offer = "; ".join(f"{p} ({', '.join(m)})" for p, m in taken.items())
        takes = f"they take: {offer}" if offer else "they take no parameters"
        raise ValueError(f"no selected method takes {', '.join(map(repr, bad))}; {takes}")


def expand_sweep(
    sweep: Sequence[Mapping[str, Any]], overrides: Mapping[str, Sequence[Any]]
) -> list[dict[str, Any]]:
    """The settings of one method: each entry of ``sweep`` with the overridden parameters
    replaced by every combination of their values, repeats dropped, in order.

    >>> expand_sweep([{"k": 1}, {"k": 2}], {"k": [4]})
    [{'k': 4}]
    >>> expand_sweep([{}], {"a": [1, 2], "b": [0]})
    [{'a': 1, 'b': 0}, {'a': 2, 'b': 0}]
    """
    names = list(overrides)
    out: list[dict[str, Any]] = []
    for setting in sweep:
        kept = {k: v for k, v in setting.items() if k not in overrides}
        for values in itertools.product(*(overrides[n] for n in names)):
            candidate = {**kept, **dict(zip(names, values, strict=True))}
            if candidate not in out:
                out.append(candidate)
    return out


def _as_values(name: str, values: Any) -> list[Any]:
    """An override's values as a non-empty list (a single value is a list of one)."""
    out = list(values) if isinstance(values, (list, tuple)) else [values]
    if not out:
        raise ValueError(f"no values given for {name!r}")
    return out


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _long_label(spec: MethodSpec) -> str:
    """The label plus the parameters it does not show (those without a symbol)."""
    agg = get_aggregator(spec.method)
    hidden = [f"{n}={_shown(v)}" for n, v in spec.params.items() if not agg.spec(n).symbol]
    return " ".join([spec.label, *hidden])


def _unique_labels(specs: list[MethodSpec]) -> list[MethodSpec]:
    """Settings whose label is shared get their hidden parameters appended."""
    counts = Counter(s.label for s in specs)
    return [s if counts[s.label] == 1 else replace(s, label=_long_label(s)) for s in specs]


def method_settings(
    names: Iterable[str] | None = None,
    overrides: Mapping[str, Sequence[Any]] | None = None,
) -> list[MethodSpec]:
    """One :class:`MethodSpec` per setting of each method of ``names`` (default: every
    method of :func:`rewardagg.available_methods`), in the order of ``names``.

    Args:
        names: registry names; repeats are dropped.
        overrides: parameter name -> values (a list, or one value; strings are converted by
            the table), replacing that parameter's values in the sweep of every method of ``names`` that takes it.

    Raises:
        ValueError: an unknown method, a parameter no selected method takes, or a value the
            table rejects (``TypeError`` for a value of the wrong type).
    """
    names = check_methods(available_methods() if names is None else names)
    overrides = {p: _as_values(p, v) for p, v in (overrides or {}).items()}
    check_overrides(names, overrides)
    specs = []
    for name in names:
        agg = get_aggregator(name)
        own = {
            p: [agg.parse({p: v})[p] for v in values]
            for p, values in overrides.items()
            if p in agg.params
        }
        specs += [MethodSpec.from_table(name, s) for s in expand_sweep(agg.sweep, own)]
    return _unique_labels(specs)
