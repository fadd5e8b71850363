"""The methods ``rewardagg demo`` compares: every setting of the method table, plus variants.

The table part is read off :func:`rewardagg.available_methods` through
:func:`rewardagg.method_settings.method_settings`: each method contributes one setting per
entry of its ``sweep``, so a method added to the table, or registered at run time with
:func:`rewardagg.register_aggregator`, is compared without editing the demo.

The variants (:data:`VARIANTS`) are options of the library that are not methods of the
table, each run as one extra setting:

- ``gdpo_point_weights``: GDPO with the rubric's own point values as weights,
  :math:`w_k = |p_k|` (HealthBench ships every criterion's points with its rubric, so a
  HealthBench user has them; rubric scenarios only);
- ``tchebycheff``: the SoftMin of the *raw* rewards, then the group z-score of that score
  (``order="reduce_then_normalize"``), the smooth Tchebycheff scalarisation (Lin et al.
  2024, arXiv 2402.19078). kappa is then in reward units: at kappa = 2 a failed
  criterion (reward 0) weighs :math:`e^2 \\approx 7.4` times a met one (reward 1), as a
  z-score of -1 next to one of +1 weighs in the z-score SoftMin at kappa = 1;
- ``gdpo_lagrange``: GDPO with a :class:`rewardagg.ConstraintTracker` on column 0 (the
  critical criterion, or the toy's format): the *informed* setting, it is told which
  column is the constraint, its target and the judge's flip rate. The target is 0.9 in
  true terms; the tracker sees judged rewards, whose rate under a judge flipping each
  verdict with probability :math:`\\varepsilon` is :math:`t(1-\\varepsilon) +
  (1-t)\\varepsilon` when the true rate is :math:`t`, so it is given that judged target
  (0.82 at :math:`\\varepsilon = 0.1`, reachable: a judged rate is at most
  :math:`1 - \\varepsilon`). The tracker's default dual step (0.1), multiplier at most
  20 (about the number of other rewards, so the constraint can outweigh all of them);
  one tracker per run, updated after every batch from the judged rewards;
- ``softmin_snr``: the SoftMin (kappa = 1) with GD²PO's ``"snr"`` conflict filter
  (threshold 0.8), a composition the library allows on every z-score method.

The method table's sweeps reach the regime where the SoftMin is close to its
second-order expansion: ``softmin`` at kappa 0.1, 0.25, 0.5, 1, 2 and ``mean_variance`` at
lam = kappa / 2 (its Taylor twin). ``--param`` replaces them as it replaces any sweep.

A setting is a :class:`~rewardagg.method_settings.MethodSpec`; variants carry their
options in ``MethodSpec.options``. ``weights="points"`` and the *controller* options are
read here (:func:`advantage_options`, :func:`make_controller`); the other options go to
:func:`rewardagg.advantages` unchanged. A controller is a per-run, stateful object with
``.advantages(rewards, **kw)`` (the method's keyword arguments) that returns the batch's
advantages and updates itself (a :class:`rewardagg.ConstraintTracker` is one): one per
(setting, seed), made fresh for each run by the factory registered for its option name
(:data:`CONTROLLERS`, :func:`register_controller`). ``constraint`` is built in.

Every label the demo prints is accepted by ``--methods`` as printed
(:func:`default_methods`): ``"softmin k=0.25"``, ``"gdpo+lagrange"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardagg import ConstraintTracker, available_methods, get_aggregator
from rewardagg.method_settings import (
    MethodSpec,
    _unique_labels,
    check_overrides,
    method_settings,
)

__all__ = [
    "CONTROLLERS",
    "OPT_IN_VARIANTS",
    "VARIANTS",
    "ControllerContext",
    "Variant",
    "advantage_options",
    "default_methods",
    "final_multipliers",
    "judged_target",
    "make_controller",
    "make_tracker",
    "register_controller",
    "skip_reason",
]


@dataclass(frozen=True)
class Variant:
    """An extra setting: the name ``--methods`` selects it by, its setting and a line for
    the legend. ``needs_points``: it runs only where the rewards have point values."""

    name: str
    spec: MethodSpec
    description: str
    needs_points: bool = False


CONSTRAINT = {"column": 0, "target": 0.9, "lr": 0.1, "lambda_max": 20.0}
"""The Lagrangian setting's constraint; ``target`` in true terms (:func:`judged_target`)."""


VARIANTS: tuple[Variant, ...] = (
    Variant(
        "gdpo_point_weights",
        MethodSpec("gdpo_point_weights", "gdpo", {}, {"weights": "points"}),
        "gdpo with weights |points|: the rubric's own points (HealthBench ships them)",
        needs_points=True,
    ),
    Variant(
        "tchebycheff",
        MethodSpec(
            "tchebycheff k=2", "softmin", {"kappa": 2.0}, {"order": "reduce_then_normalize"}
        ),
        "softmin of the raw rewards, then group z-score (order='reduce_then_normalize', "
        "smooth Tchebycheff; kappa in reward units)",
    ),
    Variant(
        "gdpo_lagrange",
        MethodSpec("gdpo+lagrange", "gdpo", {}, {"constraint": dict(CONSTRAINT)}),
        "gdpo with a ConstraintTracker on column 0, the informed setting (true target 0.9, "
        "given as the judged rate t(1-eps)+(1-t)eps for the judge's flip rate eps; lr 0.1, "
        "lambda_max 20; one tracker per run)",
    ),
    Variant(
        "softmin_snr",
        MethodSpec("softmin k=1+snr", "softmin", {"kappa": 1.0}, {"conflict": "snr"}),
        "softmin k=1 with GD2PO's conflict filter (conflict='snr', threshold 0.8)",
    ),
)


def _table_settings(
    names: Sequence[str], params: Mapping[str, Sequence[Any]] | None
) -> list[MethodSpec]:
    """The settings of the table methods ``names``: each method's sweep from the table, with
    ``params`` replacing its parameters' values
    (:func:`rewardagg.method_settings.method_settings`)."""
    params = dict(params or {})
    if params:
        check_overrides(names, params)
    out: list[MethodSpec] = []
    for name in names:
        own = {p: v for p, v in params.items() if p in get_aggregator(name).params}
        out += method_settings([name], own or None)
    return _unique_labels(out)


def _from_label(text: str) -> MethodSpec | None:
    """A table setting written as its label, ``"softmin k=0.25"`` or
    ``"cvar a=0.5"`` (symbols or parameter names; the label's head is the method's name or
    its short name); ``None`` when ``text`` is not one."""
    head, *assignments = text.split()
    for name in available_methods():
        agg = get_aggregator(name)
        if head not in (name, agg.short or name):
            continue
        by_symbol = {p.symbol or p.name: p.name for p in agg.specs} | {p: p for p in agg.params}
        given: dict[str, str] = {}
        for a in assignments:
            key, eq, value = a.partition("=")
            if not eq or key not in by_symbol:
                return None
            given[by_symbol[key]] = value
        try:
            return MethodSpec.from_table(name, given)
        except (TypeError, ValueError):
            return None
    return None


def default_methods(
    names: Sequence[str] | None = None,
    *,
    params: Mapping[str, Sequence[Any]] | None = None,
    variants: bool = True,
) -> list[MethodSpec]:
    """The settings to compare: the table's (in table order), then the variants.

    Args:
        names: registry names, variant names (:data:`VARIANTS`) and labels as the demo
            prints them (``"softmin k=0.25"``, ``"gdpo+lagrange"``, ``"tchebycheff k=2"``),
            any order; unknown ones raise ``ValueError``. A registry name selects the
            method's whole sweep (the table's), a label one
            setting. Default: every method of :func:`rewardagg.available_methods` and,
            with ``variants=True``, every variant.
        params: parameter name -> values, replacing that parameter's sweep in every
            selected *table* method that takes it (the command line's ``--param``);
            variants and settings named by label keep their own parameters.
        variants: include the variants when ``names`` is ``None``.
    """
    table = available_methods()
    every = VARIANTS + OPT_IN_VARIANTS
    by_name = {v.name: v for v in every} | {v.spec.label: v for v in every}
    if names is None:
        specs = _table_settings(table, params)
        return specs + ([v.spec for v in VARIANTS] if variants else [])
    names = list(dict.fromkeys(" ".join(n.split()) for n in names))
    labelled: dict[str, MethodSpec] = {}
    bad = []
    for n in names:
        if n in table or n in by_name:
            continue
        spec = _from_label(n)
        if spec is None:
            bad.append(n)
        else:
            labelled[n] = spec
    if bad:
        labels = ", ".join(s.label for s in _table_settings(table, None))
        raise ValueError(
            f"unknown {bad}; available: {', '.join(table)}; variants: "
            f"{', '.join(v.name for v in VARIANTS)}; or a label as printed ({labels}, "
            f"{', '.join(v.spec.label for v in VARIANTS)})"
        )
    wanted_table = sorted((n for n in names if n in table), key=table.index)
    specs = _table_settings(wanted_table, params) if wanted_table or params else []
    if params and not wanted_table:
        check_overrides([], params)
    for n in sorted(labelled, key=lambda n: table.index(labelled[n].method)):
        if labelled[n] not in specs:
            specs.append(labelled[n])
    specs.sort(key=lambda s: table.index(s.method))  # stable: sweep order kept
    wanted_variants = [v for v in every if v.name in names or v.spec.label in names]
    return _unique_labels(specs) + [v.spec for v in wanted_variants]


def skip_reason(spec: MethodSpec, *, nonnegative: bool, has_points: bool) -> str | None:
    """Why ``spec`` cannot run on a scenario's rewards (``None``: it can).

    ``nonnegative``: the scenario's rewards are never negative; ``has_points``: they have
    point values (``weights="points"``).
    """
    if get_aggregator(spec.method).nonnegative and not nonnegative:
        return f"{spec.label}: defined for non-negative rewards only"
    if spec.options.get("weights") == "points" and not has_points:
        return f"{spec.label}: the rewards have no point values"
    return None


def advantage_options(spec: MethodSpec, points: np.ndarray | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`rewardagg.advantages` for ``spec`` (its parameters
    and options), with ``weights="points"`` resolved to ``|points|`` and the controller
    options left out (see :func:`make_controller`)."""
    out = {**spec.params, **{k: v for k, v in spec.options.items() if k not in CONTROLLERS}}
    if isinstance(out.get("weights"), str):
        if out["weights"] != "points" or points is None:
            raise ValueError(f"{spec.label}: weights={out['weights']!r} needs point values")
        out["weights"] = np.abs(np.asarray(points, dtype=np.float64))
    return out


def judged_target(target: float, flip_rate: float) -> float:
    r"""The judged rate of a criterion met at the true rate ``target`` under a judge that
    flips each verdict with probability ``flip_rate`` :math:`\varepsilon`:
    :math:`t(1-\varepsilon) + (1-t)\varepsilon`.

    >>> round(judged_target(0.9, 0.1), 12)
    0.82
    """
    if not 0.0 <= flip_rate <= 1.0:
        raise ValueError(f"flip_rate must be in [0, 1], got {flip_rate}")
    return target * (1.0 - flip_rate) + (1.0 - target) * flip_rate


@dataclass(frozen=True)
class ControllerContext:
    """What a controller factory may know about the run: the judge's flip rate (0 on
    the toy and on a clean judge) and the number of reward columns."""

    judge_noise: float = 0.0
    n_rewards: int | None = None


ControllerFactory = Callable[[Any, MethodSpec, ControllerContext], Any]


def _constraint_tracker(
    options: Mapping[str, Any], spec: MethodSpec, ctx: ControllerContext
) -> ConstraintTracker:
    target = judged_target(options["target"], ctx.judge_noise)
    return ConstraintTracker(
        {options.get("column", 0): target},
        lr=options["lr"],
        lambda_max=options.get("lambda_max", np.inf),
    )


def _adaptive_weights(options: Mapping[str, Any], spec: MethodSpec, ctx: ControllerContext) -> Any:
    """:class:`rewardagg.AdaptiveWeights` (``options["params"]``: its parameters), combined
    with the Lagrangian setting's tracker when ``options["constraint"]`` is given."""
    from rewardagg import AdaptiveWeights, combine

    weights = AdaptiveWeights(ctx.n_rewards, **dict(options.get("params") or {}))
    if options.get("constraint") is None:
        return weights
    return combine(weights, _constraint_tracker(options["constraint"], spec, ctx))


#: option name -> factory ``(option value, spec, ControllerContext) -> controller``.
CONTROLLERS: dict[str, ControllerFactory] = {
    "constraint": _constraint_tracker,
    "adaptive": _adaptive_weights,
}

OPT_IN_VARIANTS: tuple[Variant, ...] = (
    Variant(
        "adaptive",
        MethodSpec("adaptive", "gdpo", {}, {"adaptive": {}}),
        "gdpo with rewardagg.AdaptiveWeights() (weights K softmax(-7 p) of the running pass "
        "rates, learning-progress guard with patience 40, a distrusted reward held at its "
        "plateau minus 0.1); told nothing",
    ),
    Variant(
        "adaptive_lagrange",
        MethodSpec("adaptive+lagrange", "gdpo", {}, {"adaptive": {"constraint": dict(CONSTRAINT)}}),
        "adaptive weights and gdpo+lagrange's tracker in one call (rewardagg.combine)",
    ),
)
"""Variants ``--methods`` selects by name or label, not run by default (issue 27)."""


def register_controller(option: str, factory: ControllerFactory) -> None:
    """Make ``MethodSpec.options[option]`` a controller option: each run of a setting
    with it gets ``factory(options[option], spec, context)``, an object with
    ``.advantages(rewards, **kw)`` (module docstring)."""
    CONTROLLERS[option] = factory


def make_controller(spec: MethodSpec, context: ControllerContext | None = None) -> Any:
    """A fresh controller for ``spec``'s controller option (``None`` when it has none);
    ``ValueError`` for a setting with two."""
    ctx = ControllerContext() if context is None else context
    mine = [o for o in spec.options if o in CONTROLLERS]
    if len(mine) > 1:
        raise ValueError(f"{spec.label}: more than one controller option: {mine}")
    return CONTROLLERS[mine[0]](spec.options[mine[0]], spec, ctx) if mine else None


def make_tracker(spec: MethodSpec, judge_noise: float = 0.0) -> Any:
    """:func:`make_controller` with a judge flipping verdicts with ``judge_noise``."""
    return make_controller(spec, ControllerContext(judge_noise=judge_noise))


def _multiplier(controller: Any) -> float:
    lams = getattr(controller, "multipliers", None)
    return float(next(iter(lams.values()))) if lams else np.nan


def final_multipliers(trackers: Sequence[Sequence[Any]]) -> np.ndarray | None:
    """``(M, S)`` multiplier of each run's controller (its first ``multipliers`` entry;
    NaN where a setting has none); ``None`` when no controller has multipliers."""
    lam = np.array([[_multiplier(t) for t in row] for row in trackers], dtype=np.float64).reshape(
        len(trackers), -1
    )
    return None if np.isnan(lam).all() else lam
