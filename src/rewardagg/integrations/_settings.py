"""One parser for the rewardagg settings of every adapter (TRL, verl, OpenRLHF).

A host hands over its raw rewardagg settings: verl's ``algorithm.rewardagg`` mapping,
OpenRLHF's ``args.rewardagg`` namespace, TRL's ``advantage_params``. :func:`split_settings`
splits them into

* the method name, checked against :func:`rewardagg.available_methods`;
* the method's parameters: any name the method's table entry takes, converted and
  validated by :meth:`~rewardagg._src.methods.Aggregator.parse` (``"0.5"`` -> 0.5,
  ``"inf"`` -> inf; a negative ``kappa`` or a NaN fails here, at configuration time, not at
  the first batch);
* the host's own options (``reward_keys``, ``batch_norm``, ``eps``, ...), left to the host.

Nothing here names a method parameter: what is a parameter, of which method, with which
default, type and check, is read from the method table at call time, so a method
registered at run time (``rewardagg.register_aggregator("tempered", fn, params={"tau":
0.3})``) is configurable through every host, and is rejected again once unregistered.

A value ``None`` means "not given" (the method's default applies): OpenRLHF's namespace
holds every flag, ``None`` when unset, and may hold flags of methods registered in the
launching process only. Each message names the setting as the host spells it
(:class:`Spelling`). This module imports neither torch nor a host.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import rewardagg
from rewardagg._src.methods import Aggregator, Param, parse_value

__all__ = [
    "DEFAULT_METHOD",
    "RVPO_METHOD",
    "Settings",
    "Spelling",
    "check_shortcut",
    "known_settings",
    "param_specs",
    "parse_method_params",
    "resolve_method",
    "split_settings",
]

RVPO_METHOD = "softmin"
"""The method of the hosts' ``rvpo`` estimator (RVPO is the SoftMin of the z-scores)."""

DEFAULT_METHOD = RVPO_METHOD
"""The method an adapter runs when none is configured."""


@dataclass(frozen=True)
class Spelling:
    """How a host spells its rewardagg settings in error messages.

    Attributes:
        method: the setting that names the method (``"algorithm.rewardagg.method"``).
        param: a method parameter's setting, with ``{name}`` (``"--rewardagg.{name}"``).
        group: the settings as a whole, for "unknown ... setting(s)" (``"algorithm.rewardagg"``).
    """

    method: str
    param: str
    group: str

    def of(self, name: str) -> str:
        """The setting of parameter ``name`` (``"algorithm.rewardagg.kappa"``)."""
        return self.param.format(name=name)


@dataclass(frozen=True)
class Settings:
    """Raw host settings, split.

    Attributes:
        method: the method name (registered).
        params: the method parameters that were given, converted and validated (the
            method's defaults are not filled in: ``Aggregator.bind`` does that).
        options: the host options that were given (not ``None``), as given.
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


def param_specs(methods: Iterable[str] | None = None) -> dict[str, list[tuple[str, Param]]]:
    """Every parameter name some method takes -> ``(method, Param)`` for each method that
    takes it, in table order (default: every registered method)."""
    names = rewardagg.available_methods() if methods is None else methods
    out: dict[str, list[tuple[str, Param]]] = {}
    for method in names:
        for spec in rewardagg.get_aggregator(method).specs:
            out.setdefault(spec.name, []).append((method, spec))
    return out


def known_settings(host_options: Iterable[str], *, with_method: bool = True) -> list[str]:
    """The setting names a host accepts: ``method``, its own options, then the union of the
    parameter names of every registered method (read now, not at import)."""
    names = (["method"] if with_method else []) + list(host_options) + list(param_specs())
    return list(dict.fromkeys(names))


def resolve_method(name: Any, spelling: Spelling) -> Aggregator:
    """The registered method ``name``; ``ValueError`` listing the registered ones otherwise."""
    available = rewardagg.available_methods()
    if not isinstance(name, str) or name not in available:
        raise ValueError(
            f"{spelling.method}={name!r} is not a registered rewardagg method; available: "
            f"{list(available)} (register your own with rewardagg.register_aggregator in "
            "every process that reads these settings)"
        )
    return rewardagg.get_aggregator(name)


def parse_method_params(
    aggregator: Aggregator, given: Mapping[str, Any], spelling: Spelling
) -> dict[str, Any]:
    """``given`` converted and validated as ``aggregator``'s parameters.

    Raises:
        ValueError: a name the method does not take (with what it takes), or a bad value.
        TypeError: a value of the wrong type. Both name the setting as the host spells it.
    """
    takes = list(aggregator.params)
    for name in given:
        if name not in aggregator.params:
            raise ValueError(
                f"{spelling.of(name)} does not apply to method {aggregator.name!r} "
                f"(it takes: {', '.join(takes) or 'no parameters'})"
            )
    parsed = {}
    for name, value in given.items():
        try:
            parsed[name] = aggregator.parse({name: value})[name]
        except (TypeError, ValueError) as err:
            raise type(err)(f"{spelling.of(name)}={value!r}: {err}") from None
    try:
        aggregator.bind(parsed)  # the full set, defaults included, as the batch will see it
    except (TypeError, ValueError) as err:
        raise type(err)(f"{spelling.group}: {err}") from None
    return parsed


def split_settings(
    raw: Mapping[str, Any],
    *,
    spelling: Spelling,
    host_options: Iterable[str] = (),
    method: str | None = None,
) -> Settings:
    """Split a host's raw rewardagg settings into method, method parameters and options.

    Args:
        raw: name -> value; ``None`` values count as not given.
        spelling: how the host names its settings in messages.
        host_options: the host's own option names (not method parameters).
        method: the method name when the host keeps it outside ``raw`` (TRL's
            ``advantage_method``); otherwise ``raw["method"]``, default
            :data:`DEFAULT_METHOD`.

    Raises:
        ValueError: in this order: an unregistered method; an unknown name (listing the
            known ones: ``method``, the host options and every registered method's
            parameter names); a parameter the method does not take; a bad value.
        TypeError: a parameter value of the wrong type.
    """
    host_options = tuple(host_options)
    given = {str(k): v for k, v in raw.items() if v is not None}
    in_raw = method is None
    # the method first: its parameters are unknown names when it is not registered here
    aggregator = resolve_method(given.pop("method", DEFAULT_METHOD) if in_raw else method, spelling)
    known = known_settings(host_options, with_method=in_raw)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown {spelling.group} setting(s) {unknown}; known: {known}")
    options = {k: v for k, v in given.items() if k in host_options}
    params = {k: v for k, v in given.items() if k not in host_options}
    return Settings(aggregator.name, parse_method_params(aggregator, params, spelling), options)


def check_shortcut(name: str, value: Any, method: str) -> Any:
    """Validate a host's shortcut field for parameter ``name`` (TRL's ``kappa``) through
    the table, also when ``method`` does not take it: with the ``Param`` of ``method`` if
    it takes ``name``, else of the first registered method that does. Returns the
    converted value (``value`` unchanged when no registered method takes ``name``)."""
    aggregator = rewardagg.get_aggregator(method)
    if name in aggregator.params:
        return parse_value(aggregator.spec(name), value)
    takers = param_specs().get(name)
    return parse_value(takers[0][1], value) if takers else value
