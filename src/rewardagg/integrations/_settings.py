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

:func:`parse_options` then reads the options every host shares (DESIGN.md sections 2b and
2c): the stage order, the stage-3 centring, GD²PO's conflict filter and the Lagrangian
constraints with their tracker's settings (:data:`PIPELINE_OPTIONS`,
:data:`CONSTRAINT_OPTIONS`), converted, checked against the method, and named in messages as
the host spells them.

:func:`check_stage_options` and :func:`check_weights` apply the core's rules for stage 1
(``eps``, ``singleton``, ``baseline``) and the reward weights (finite, non-negative, one
positive) with the host's names, so a bad value fails where the settings are read, before
any batch. :func:`help_lines` renders every setting for a launcher's ``--help``.

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

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import rewardagg
from rewardagg._src.conflict import check_conflict
from rewardagg._src.methods import CONFLICTS, ORDERS, Aggregator, Param, parse_value
from rewardagg._src.normalisation import BASELINES, SINGLETONS
from rewardagg._src.pipeline import CENTERS
from rewardagg._src.registry import ALIASES
from rewardagg._src.validation import check_choice, parse_flag, parse_real, prepare_weights

__all__ = [
    "CONSTRAINT_OPTIONS",
    "DEFAULT_METHOD",
    "PIPELINE_OPTIONS",
    "RVPO_METHOD",
    "SHARED_OPTIONS",
    "SHARED_OPTION_HELP",
    "ConstraintOptions",
    "PipelineOptions",
    "Settings",
    "Spelling",
    "check_choice",
    "check_eps",
    "check_shortcut",
    "check_stage_options",
    "check_weights",
    "help_lines",
    "known_settings",
    "param_help",
    "param_specs",
    "parse_method_params",
    "parse_options",
    "parse_targets",
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
    renamed: tuple[tuple[str, str], ...] = ()
    """``(option, setting)`` pairs for a host whose shared options are spelt otherwise
    than its method parameters (TRL: ``("order", "advantage_order")``)."""

    def of(self, name: str) -> str:
        """The setting of parameter ``name`` (``"algorithm.rewardagg.kappa"``)."""
        return self.param.format(name=name)

    def option(self, name: str) -> str:
        """The setting of shared option ``name`` (:data:`SHARED_OPTIONS`)."""
        return dict(self.renamed).get(name) or self.of(name)


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


def param_help(name: str, takers: list[tuple[str, Param]]) -> str:
    """Help for method parameter ``name``: each method that takes it, its help and default."""
    return " | ".join(
        f"{spec.help or name} [{method}; default {spec.default!r}]" for method, spec in takers
    )


def help_lines(
    spelling: Spelling,
    host_options: Mapping[str, str],
    leading: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """One ``--help`` line (``"  <setting>  <help>"``) per rewardagg setting as the host
    spells it: ``leading`` (``(setting, help)`` pairs), ``method``, the host's own options
    (``host_options``: name -> help), the shared options and each parameter name of the
    methods registered now."""
    rows = list(leading)
    rows.append((spelling.method, f"one of {', '.join(rewardagg.available_methods())}"))
    rows += [(spelling.option(name), text) for name, text in host_options.items()]
    rows += [(spelling.option(name), text) for name, text in SHARED_OPTION_HELP.items()]
    rows += [
        (spelling.of(name), param_help(name, takers)) for name, takers in param_specs().items()
    ]
    width = max(len(setting) for setting, _ in rows)
    return [f"  {setting.ljust(width)}  {text}" for setting, text in rows]


def resolve_method(name: Any, spelling: Spelling) -> Aggregator:
    """The registered method ``name`` (an alias of :data:`~rewardagg._src.registry.ALIASES`,
    ``"rvpo"``, gives the method it names: RVPO's SoftMin); ``ValueError`` listing the
    registered ones otherwise."""
    available = rewardagg.available_methods()
    if not isinstance(name, str) or ALIASES.get(name, name) not in available:
        aliases = ", ".join(f"{a} (= {m})" for a, m in ALIASES.items())
        raise ValueError(
            f"{spelling.method}={name!r} is not a registered rewardagg method; available: "
            f"{list(available)}, aliases: {aliases} (register your own with "
            "rewardagg.register_aggregator in every process that reads these settings)"
        )
    return rewardagg.get_aggregator(ALIASES.get(name, name))


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


# --------------------------------------------------------------------------------------
# options every host shares: stage order and centring, conflict filter, constraints
# --------------------------------------------------------------------------------------

#: Options of :func:`rewardagg.advantages` every host passes through (DESIGN.md 2b, 2c).
PIPELINE_OPTIONS = ("order", "center", "conflict", "conflict_threshold", "reweight_groups")
#: Lagrangian constraints (``{reward: target}``) and their tracker's settings (DESIGN.md 2b).
CONSTRAINT_OPTIONS = (
    "constraints",
    "constraint_lr",
    "constraint_lambda_max",
    "constraint_init",
    "constraint_kp",
    "constraint_kd",
)
SHARED_OPTIONS = PIPELINE_OPTIONS + CONSTRAINT_OPTIONS
#: One line of help per shared option, for the launchers' ``--help``.
SHARED_OPTION_HELP = {
    "order": "normalize_then_reduce (z-score each reward, then reduce) or reduce_then_normalize "
    "(reduce the raw rewards, then z-score the score in its group); default: the method's",
    "center": "stage-3 centring: batch (default) or group (each group's advantages sum to 0)",
    "conflict": "GD2PO's conflict filter, hard or snr (default: the method's; gd2po: hard, "
    "gd2po_snr: snr)",
    "conflict_threshold": "tau in [0, 1] of the snr filter (default 0.8)",
    "reweight_groups": "scale each group's kept rows by its kept share: true (default) or false",
    "constraints": "constraints mean(reward KEY) >= TARGET, KEY a reward key or a column index",
    "constraint_lr": "dual step size of the multipliers (default 0.1)",
    "constraint_lambda_max": "upper clip of the multipliers (default inf)",
    "constraint_init": "starting value of the multipliers (default 0)",
    "constraint_kp": "proportional gain, PID Lagrangian (default 0)",
    "constraint_kd": "derivative gain, PID Lagrangian (default 0)",
}


@dataclass(frozen=True)
class PipelineOptions:
    """The stage order, stage-3 centring and conflict filter (``None``: the method's)."""

    order: str | None = None
    center: str = "batch"
    conflict: str | None = None
    conflict_threshold: float | None = None
    reweight_groups: bool = True

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`rewardagg.advantages`."""
        return {
            "order": self.order,
            "center": self.center,
            "conflict": self.conflict,
            "conflict_threshold": self.conflict_threshold,
            "reweight_groups": self.reweight_groups,
        }


@dataclass(frozen=True)
class ConstraintOptions:
    """Constraints ``mean(R[:, reward]) >= target`` and their tracker's settings.

    Attributes:
        targets: ``(reward, target)`` pairs; a reward is a name, or a column index (an
            ``int``, or a string of digits that is not a reward name).
        lr, lambda_max, init, kp, kd: as :class:`rewardagg.ConstraintTracker` takes them.
    """

    targets: tuple[tuple[str | int, float], ...]
    lr: float = 0.1
    lambda_max: float = math.inf
    init: float = 0.0
    kp: float = 0.0
    kd: float = 0.0

    def resolve(self, reward_names: Sequence[str], setting: str = "constraints") -> dict:
        """``{reward name: target}`` for the host's reward names (one per column).

        Raises:
            ValueError: an unknown name or an index out of range (listing the rewards), or
                two constraints on one reward; ``setting`` names the setting.
        """
        names = [str(n) for n in reward_names]
        out: dict[str, float] = {}
        for key, target in self.targets:
            name = _column_name(key, names, setting)
            if name in out:
                raise ValueError(f"{setting}: reward {name!r} is constrained twice")
            out[name] = target
        return out

    def tracker(self, reward_names: Sequence[str], setting: str = "constraints"):
        """A fresh :class:`rewardagg.ConstraintTracker` over the host's rewards, keyed by
        reward name (so its metrics read ``lambda/<name>``)."""
        return rewardagg.ConstraintTracker(
            self.resolve(reward_names, setting),
            lr=self.lr,
            lambda_max=self.lambda_max,
            init=self.init,
            kp=self.kp,
            kd=self.kd,
            reward_names=[str(n) for n in reward_names],
        )


def _column_name(key: str | int, names: list[str], setting: str) -> str:
    if isinstance(key, str) and key in names:
        return key
    index = _as_index(key)
    if index is None:
        raise ValueError(f"{setting}: unknown reward {key!r}; the rewards are {names}")
    if not -len(names) <= index < len(names):
        raise ValueError(
            f"{setting}: reward index {index} is out of range for {len(names)} reward(s) {names}"
        )
    return names[index]


def _as_index(key: Any) -> int | None:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    return None


# --------------------------------------------------------------------------------------
# stage-1 options and reward weights: the core's rules, checked with the host's names
# --------------------------------------------------------------------------------------


def check_eps(value: Any, setting: str) -> float | None:
    """An epsilon: ``None`` (the host's default), or a finite number ``>= 0`` (a command
    line's string is converted); errors name ``setting``."""
    return None if value is None else parse_real(value, setting, low=0.0)


def check_stage_options(
    *,
    eps: Any = None,
    singleton: Any = None,
    baseline: Any = None,
    settings: Mapping[str, str],
) -> dict[str, Any]:
    """Stage 1's ``eps``, ``singleton`` and ``baseline`` as the core takes them
    (:func:`rewardagg.group_standardize`), checked by the core's rules before any batch.

    Args:
        eps, singleton, baseline: the host's values; ``None`` = not given (left out).
        settings: option name -> the host's setting for messages
            (``{"eps": "algorithm.rewardagg.eps", ...}``).

    Returns:
        The given options, converted (``eps`` a float).

    Raises:
        ValueError, TypeError: a negative, NaN or infinite ``eps``; a ``singleton`` or
            ``baseline`` the core does not know, naming the setting.
    """
    out: dict[str, Any] = {}
    if eps is not None:
        out["eps"] = check_eps(eps, settings["eps"])
    if singleton is not None:
        out["singleton"] = check_choice(singleton, settings["singleton"], SINGLETONS)
    if baseline is not None:
        out["baseline"] = check_choice(baseline, settings["baseline"], BASELINES)
    return out


def check_weights(weights: Any, setting: str, n_rewards: int | None = None) -> list[float] | None:
    """Reward weights as the core accepts them: ``None`` (all ones), or finite numbers,
    non-negative with at least one positive, one per reward when ``n_rewards`` is given
    (a command line's strings are converted). Errors name ``setting``."""
    if weights is None:
        return None
    if isinstance(weights, (str, bytes, Mapping)) or not isinstance(weights, Iterable):
        raise TypeError(f"{setting} must be a list of numbers; got {weights!r}")
    values = [parse_real(w, f"{setting}[{i}]") for i, w in enumerate(weights)]
    try:
        prepare_weights(values, len(values) if n_rewards is None else n_rewards)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{setting}: {err}") from None
    return values


def parse_targets(value: Any, setting: str) -> tuple[tuple[str | int, float], ...]:
    """Constraint targets from a host: a mapping ``{reward: target}``, a JSON object string,
    ``"KEY=TARGET[,KEY=TARGET]"``, or a list of such strings (a repeated command-line
    flag). Targets are finite numbers; keys are reward names or column indices."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{setting} must be a JSON object; got {value!r} ({err})") from None
    if isinstance(value, str):
        value = [value]
    pairs: list[tuple[Any, Any]] = []
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, (list, tuple)):
        for item in value:
            for part in str(item).split(","):
                key, eq, target = part.partition("=")
                if not eq or not key.strip():
                    raise ValueError(f"{setting} takes KEY=TARGET pairs; got {part!r}")
                pairs.append((key.strip(), target.strip()))
    else:
        raise TypeError(
            f"{setting} must be a mapping {{reward: target}} or KEY=TARGET pairs; got {value!r}"
        )
    out: list[tuple[str | int, float]] = []
    for key, target in pairs:
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise TypeError(f"{setting}: a reward is a name or a column index; got {key!r}")
        out.append((key, parse_real(target, f"{setting}[{key!r}]")))
    if len({str(k) for k, _ in out}) != len(out):
        raise ValueError(f"{setting}: a reward is named twice ({[k for k, _ in out]})")
    return tuple(out)


def _pipeline(given: Mapping[str, Any], aggregator: Aggregator, spelling: Spelling):
    name = spelling.option
    order = given.get("order")
    if order is not None:
        order = check_choice(order, name("order"), ORDERS)
        try:
            aggregator.check_order(order)
        except ValueError as err:
            raise ValueError(f"{name('order')}={order!r}: {err}") from None
    center = check_choice(given.get("center", "batch"), name("center"), CENTERS)
    conflict = given.get("conflict")
    if conflict is not None:
        conflict = check_choice(conflict, name("conflict"), CONFLICTS)
    tau = given.get("conflict_threshold")
    if tau is not None:
        tau = parse_real(tau, name("conflict_threshold"))
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"{name('conflict_threshold')} must be in [0, 1]; got {tau!r}")
    reweight = parse_flag(given.get("reweight_groups", True), name("reweight_groups"))
    if aggregator.kind == "sum_first" and center != "batch":
        raise ValueError(
            f"{name('center')}={center!r}: method {aggregator.name!r} sums the rewards first "
            "and has no stage 3; use method 'gdpo' with order 'reduce_then_normalize' (GRPO's "
            "score) instead"
        )
    try:
        filt = check_conflict(aggregator, conflict, tau, reweight, aggregator.check_order(order))
    except ValueError as err:  # a filter on a method or order without per-reward z-scores
        which = name("conflict") if conflict is not None else name("order")
        raise ValueError(f"{which}: {err}") from None
    if filt is None and tau is not None:
        raise ValueError(
            f"{name('conflict_threshold')} applies to a conflict filter: set "
            f"{name('conflict')} ('snr'), or a method with one (gd2po_snr)"
        )
    return PipelineOptions(order, center, conflict, tau, reweight)


def _constraints(given: Mapping[str, Any], aggregator: Aggregator, spelling: Spelling):
    name = spelling.option
    raw = given.get("constraints")
    targets = () if raw is None else parse_targets(raw, name("constraints"))
    tuning = [k for k in CONSTRAINT_OPTIONS[1:] if given.get(k) is not None]
    if not targets:
        if tuning:
            raise ValueError(
                f"{', '.join(name(k) for k in tuning)} set without {name('constraints')}"
            )
        return None
    if aggregator.kind == "sum_first":
        raise ValueError(
            f"{name('constraints')}: method {aggregator.name!r} sums the rewards first and "
            "has no per-reward z-scores to weight; use a z-score method (gdpo with order "
            "'reduce_then_normalize' is GRPO's score)"
        )
    lr = parse_real(given.get("constraint_lr", 0.1), name("constraint_lr"), low=0.0)
    lam_max = parse_real(
        given.get("constraint_lambda_max", math.inf),
        name("constraint_lambda_max"),
        low=0.0,
        allow_inf=True,
    )
    init = parse_real(given.get("constraint_init", 0.0), name("constraint_init"), low=0.0)
    kp = parse_real(given.get("constraint_kp", 0.0), name("constraint_kp"), low=0.0)
    kd = parse_real(given.get("constraint_kd", 0.0), name("constraint_kd"), low=0.0)
    options = ConstraintOptions(targets, lr, lam_max, init, kp, kd)
    names = [str(k) for k, _ in targets]
    try:  # the tracker's own checks, with the keys as stand-in reward names
        options.tracker(names, name("constraints"))
    except (TypeError, ValueError) as err:
        raise type(err)(f"{spelling.group}: {err}") from None
    return options


def parse_options(
    given: Mapping[str, Any], *, method: str, spelling: Spelling
) -> tuple[PipelineOptions, ConstraintOptions | None]:
    """The shared options of a host's settings (:data:`SHARED_OPTIONS` names; ``None`` or
    absent = not given), converted and checked against ``method``: the order the method
    can run in, a centring or constraints only for a method with stage 3, a conflict filter
    only on per-reward z-scores, a threshold in [0, 1] only with a filter, non-negative
    tracker settings, finite targets. Reward names in the constraints are resolved later,
    against the host's rewards (:meth:`ConstraintOptions.resolve`).

    Returns:
        ``(pipeline, constraints)``; ``constraints`` is ``None`` without constraints.

    Raises:
        ValueError, TypeError: naming the setting as the host spells it.
    """
    given = {k: v for k, v in given.items() if v is not None}
    aggregator = rewardagg.get_aggregator(method)
    return _pipeline(given, aggregator, spelling), _constraints(given, aggregator, spelling)
