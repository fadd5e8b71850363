"""The methods ``rewardagg demo`` compares: every setting of the method table, plus variants.

The table part is read off :func:`rewardagg.available_methods` through
:func:`rewardagg.method_settings.method_settings`: each method contributes one setting per
entry of its ``sweep``, so a method added to the table, or registered at run time with
:func:`rewardagg.register_aggregator`, is compared without editing the demo.

The variants (:data:`VARIANTS`) are options of the library that are not methods of the
table, each run as one extra setting:

- ``gdpo_point_weights``: GDPO with the rubric's point values as weights,
  :math:`w_k = |p_k|` (the informed-weights reference: it knows what the evaluation
  values; rubric scenarios only);
- ``tchebycheff``: the SoftMin of the *raw* rewards, then the group z-score of that score
  (``order="reduce_then_normalize"``), the smooth Tchebycheff scalarisation (Lin et al.
  2024, arXiv 2402.19078). kappa is then in reward units: at kappa = 2 a failed
  criterion (reward 0) weighs :math:`e^2 \\approx 7.4` times a met one (reward 1), as a
  z-score of -1 next to one of +1 weighs in the z-score SoftMin at kappa = 1;
- ``gdpo_lagrange``: GDPO with a :class:`rewardagg.ConstraintTracker` on column 0 (the
  critical criterion, or the toy's format), target 0.9, the tracker's default dual step
  (0.1), multiplier at most 20 (about the number of other rewards, so the constraint can
  outweigh all of them; a cap also stops a judge's noise, which keeps the judged rate
  below the target, from growing it without bound): one tracker per run, updated after
  every batch from the judged rewards;
- ``softmin_snr``: the SoftMin (kappa = 1) with GD²PO's ``"snr"`` conflict filter
  (threshold 0.8), a composition the library allows on every z-score method.

A setting is a :class:`~rewardagg.method_settings.MethodSpec`; variants carry their
options in ``MethodSpec.options``. ``weights="points"`` and ``constraint={...}`` are read
here (:func:`advantage_options`, :func:`make_tracker`); the other options go to
:func:`rewardagg.advantages` unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardagg import ConstraintTracker, available_methods, get_aggregator
from rewardagg.method_settings import MethodSpec, method_settings

__all__ = [
    "VARIANTS",
    "Variant",
    "advantage_options",
    "default_methods",
    "final_multipliers",
    "make_tracker",
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

VARIANTS: tuple[Variant, ...] = (
    Variant(
        "gdpo_point_weights",
        MethodSpec("gdpo_point_weights", "gdpo", {}, {"weights": "points"}),
        "gdpo with weights |points| (the informed-weights reference)",
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
        "gdpo with a ConstraintTracker on column 0 (target 0.9, lr 0.1, lambda_max 20; "
        "one tracker per run)",
    ),
    Variant(
        "softmin_snr",
        MethodSpec("softmin k=1+snr", "softmin", {"kappa": 1.0}, {"conflict": "snr"}),
        "softmin k=1 with GD2PO's conflict filter (conflict='snr', threshold 0.8)",
    ),
)


def default_methods(
    names: Sequence[str] | None = None,
    *,
    params: Mapping[str, Sequence[Any]] | None = None,
    variants: bool = True,
) -> list[MethodSpec]:
    """The settings to compare: the table's (in table order), then the variants.

    Args:
        names: registry names and/or variant names (:data:`VARIANTS`), any order; unknown
            ones raise ``ValueError``. Default: every method of
            :func:`rewardagg.available_methods` and, with ``variants=True``, every variant.
        params: parameter name -> values, replacing that parameter's sweep in every
            selected *table* method that takes it (the command line's ``--param``);
            variants keep their own parameters.
        variants: include the variants when ``names`` is ``None``.
    """
    table = available_methods()
    by_name = {v.name: v for v in VARIANTS}
    if names is None:
        wanted_table, wanted_variants = list(table), list(by_name) if variants else []
    else:
        names = list(dict.fromkeys(names))
        bad = [n for n in names if n not in table and n not in by_name]
        if bad:
            raise ValueError(
                f"unknown {bad}; available: {', '.join(table)}; variants: {', '.join(by_name)}"
            )
        wanted_table = sorted((n for n in names if n in table), key=table.index)
        wanted_variants = [n for n in by_name if n in names]
    specs = method_settings(wanted_table, params) if wanted_table or params else []
    return specs + [by_name[n].spec for n in wanted_variants]


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
    and options), with ``weights="points"`` resolved to ``|points|`` and the
    ``constraint`` option left out (see :func:`make_tracker`)."""
    out = {**spec.params, **{k: v for k, v in spec.options.items() if k != "constraint"}}
    if isinstance(out.get("weights"), str):
        if out["weights"] != "points" or points is None:
            raise ValueError(f"{spec.label}: weights={out['weights']!r} needs point values")
        out["weights"] = np.abs(np.asarray(points, dtype=np.float64))
    return out


def make_tracker(spec: MethodSpec) -> ConstraintTracker | None:
    """A fresh :class:`rewardagg.ConstraintTracker` for ``spec``'s ``constraint`` option
    (``None`` when it has none)."""
    c = spec.options.get("constraint")
    if c is None:
        return None
    return ConstraintTracker(
        {c.get("column", 0): c["target"]}, lr=c["lr"], lambda_max=c.get("lambda_max", np.inf)
    )


def final_multipliers(trackers: Sequence[Sequence[ConstraintTracker | None]]) -> np.ndarray | None:
    """``(M, S)`` multiplier of each run's tracker (NaN where a setting has none);
    ``None`` when no setting has a tracker."""
    if all(t is None for row in trackers for t in row):
        return None
    return np.array(
        [
            [np.nan if t is None else float(next(iter(t.multipliers.values()))) for t in row]
            for row in trackers
        ],
        dtype=np.float64,
    ).reshape(len(trackers), -1)
