"""What a demo run measured: per-seed metrics and learning curves, per scenario.

Every scenario family (the rubric testbed, the constraint-neglect toy) returns a
:class:`RunResult`: arrays indexed by (method, seed), so that runs over different seeds
(in different processes) merge by concatenation (:func:`merge_results`). The statistics
over seeds, the tidy rows and the table are built from these in
:mod:`rewardagg.demo.tidy` and :mod:`rewardagg.demo.report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from rewardagg.method_settings import MethodSpec

__all__ = ["METRICS", "RunResult", "merge_results"]

#: name -> (short description for the legend, higher is better).
METRICS: dict[str, tuple[str, bool]] = {
    "rubric_score": (
        "HealthBench score on held-out prompts, true verdicts: mean over prompts of points "
        "met / positive points, clipped to [0, 1]",
        True,
    ),
    "critical_met": ("P(critical criterion met), held-out prompts, true verdicts", True),
    "critical_drop": (
        "peak-to-final fall of critical_met over training (late-stage degradation)",
        False,
    ),
    "easy_met": ("P(easy criterion met), mean over held-out prompts' easy criteria", True),
    "extra_met": (
        "P(the stuck or trap criterion met) (stuck: 0.05 whatever the policy; trap: met "
        "only when the critical one fails)",
        True,
    ),
    "neglect": (
        "share of responses judged to fail the constraint, in groups where another met it, "
        "that still got a positive advantage (all updates)",
        False,
    ),
    "multiplier": ("final Lagrange multiplier of the constraint tracker", False),
    "format": ("P(format constraint met), mean over the prompts", True),
    "worst": ("mean over prompts of the smallest normalised expected reward", True),
    "verbose": ("mean normalised verbosity reward (word share of each window)", True),
}


def metric_description(name: str) -> str:
    """The legend line of a metric (per-prompt metrics ``format_p<i>`` included)."""
    if name.startswith("format_p") and name[len("format_p") :].isdigit():
        return f"P(format met) on prompt {name[len('format_p') :]}"
    return METRICS[name][0] if name in METRICS else name


@dataclass
class RunResult:
    """One scenario's measurements.

    Attributes:
        scenario: the scenario (:mod:`rewardagg.demo.scenarios`).
        methods: the settings, in the order of the method axis.
        seeds: the seeds, in the order of the seed axis.
        metrics: name -> ``(M, S)`` final values (NaN: undefined for that run).
        curves: name -> ``(C, M, S)`` values at the ``checkpoints``.
        checkpoints: ``(C,)`` number of updates done at each point of the curves.
        skipped: settings that could not run on this scenario, with the reason.
        final: name -> ``(M, S, ...)`` final policy parameters (the rubric's ``"mu"``,
            the toy's ``"theta"``).
    """

    scenario: Any
    methods: list[MethodSpec]
    seeds: list[int]
    metrics: dict[str, np.ndarray]
    curves: dict[str, np.ndarray]
    checkpoints: np.ndarray
    skipped: list[str] = field(default_factory=list)
    final: dict[str, np.ndarray] = field(default_factory=dict)


def merge_results(parts: Sequence[RunResult]) -> RunResult:
    """Join runs of one scenario over disjoint seeds, ordered by seed."""
    if not parts:
        raise ValueError("nothing to merge")
    first = parts[0]
    seeds = [s for p in parts for s in p.seeds]
    order = np.argsort(seeds, kind="stable")
    metrics = {
        k: np.concatenate([p.metrics[k] for p in parts], axis=1)[:, order] for k in first.metrics
    }
    curves = {
        k: np.concatenate([p.curves[k] for p in parts], axis=2)[:, :, order] for k in first.curves
    }
    final = {k: np.concatenate([p.final[k] for p in parts], axis=1)[:, order] for k in first.final}
    return replace(
        first, seeds=[seeds[i] for i in order], metrics=metrics, curves=curves, final=final
    )
