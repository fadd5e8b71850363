r"""Advantages for many independent runs at once: one method, one batch per seed.

The demo trains every method on ``S`` seeds in lockstep; at each update each seed has its
own batch of rewards, ``R[s]`` of shape ``(N, K)``, and needs exactly the advantages that
``rewardagg.advantages(R[s], ...)`` gives. Calling it ``S`` times per method and update
costs mostly call overhead (the batches are small), so where it is exact the seeds are
stacked into one call:

- stages 1 and 2 act within a group or a row, so the ``S`` batches, stacked as ``S * N``
  rows (``S * N / G`` groups), give the same stage-2 scores as ``S`` calls; the call runs
  with ``batch_norm=False`` and returns the scores :math:`S_i`;
- stage 3 then runs per seed with :func:`rewardagg.batch_standardize`, the function the
  pipeline itself uses for ``center="batch"``:
  :math:`A_i = (S_i - \bar S) / (\operatorname{std}(S) + \varepsilon)` over that seed's rows.

``grpo`` (no stage 3) stacks as is unless ``scale="batch"``. A setting whose stage 3 is not
the plain batch one (a conflict filter drops rows from it; ``center="group"``), that
carries state per run (a controller: a constraint tracker, :mod:`rewardagg.demo.settings`) or whose weights differ between seeds
(``weights="points"`` on rubrics drawn per seed) is computed seed by seed. Every call uses
the numpy array path (``backend="numpy"``), so a seed's numbers do not depend on how many
seeds share the call (``backend="auto"`` would switch to a fused kernel on large inputs).
``tests/test_demo_env.py`` checks the stacked path against per-seed calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import rewardagg
from rewardagg.demo.settings import CONTROLLERS, advantage_options
from rewardagg.method_settings import MethodSpec

__all__ = ["per_seed_advantages", "stackable"]

BACKEND = "numpy"


def stackable(spec: MethodSpec) -> bool:
    """Whether the seeds of ``spec`` can share one call (module docstring)."""
    agg = rewardagg.get_aggregator(spec.method)
    opts = spec.options
    if any(o in CONTROLLERS for o in opts):
        return False
    if agg.kind == "sum_first":
        return {**agg.params, **spec.params}.get("scale") != "batch"
    conflict = opts.get("conflict", agg.conflict)
    return conflict is None and opts.get("center", "batch") == "batch"


def per_seed_advantages(
    rewards: np.ndarray,
    spec: MethodSpec,
    *,
    group_size: int,
    points: np.ndarray | None = None,
    trackers: Sequence[Any] | None = None,
) -> np.ndarray:
    """``(S, N)`` advantages of ``rewards`` ``(S, N, K)``: seed ``s`` gets exactly
    ``rewardagg.advantages(rewards[s], method=spec.method, group_size=group_size, ...)``
    with ``spec``'s parameters and options.

    Args:
        rewards: one batch per seed, rows grouped contiguously by ``group_size``.
        spec: the setting (:mod:`rewardagg.demo.settings`).
        group_size: ``G``.
        points: ``(S, K)`` point values per seed (for ``weights="points"``).
        trackers: one controller per seed for a setting with a controller option (a
            :class:`rewardagg.ConstraintTracker` for ``constraint``,
            :func:`rewardagg.demo.settings.make_controller`); each seed's
            ``.advantages(rewards, method=..., group_size=..., **options)`` gives its
            advantages (and updates the controller with its seed's batch).
    """
    n_seeds, n_rows, n_rewards = rewards.shape
    out = np.empty((n_seeds, n_rows))
    uses_points = spec.options.get("weights") == "points"
    shared_points = not uses_points or points is None or bool(np.all(points == points[:1]))
    if stackable(spec) and shared_points:
        kw = advantage_options(spec, None if points is None else points[0])
        flat = rewards.reshape(n_seeds * n_rows, n_rewards)
        # stage 3 runs below, per seed (unless the setting switches it off)
        stage3_on = kw.pop("batch_norm", True) is not False
        standardized = rewardagg.get_aggregator(spec.method).kind != "sum_first"
        if standardized:
            kw["batch_norm"] = False
        s = np.asarray(
            rewardagg.advantages(
                flat, method=spec.method, group_size=group_size, backend=BACKEND, **kw
            )
        ).reshape(n_seeds, n_rows)
        if not standardized or not stage3_on:
            return s
        stage3 = {k: kw[k] for k in ("eps", "correction") if k in kw}
        for i in range(n_seeds):
            out[i] = rewardagg.batch_standardize(s[i], **stage3)
        return out
    for i in range(n_seeds):
        kw = advantage_options(spec, None if points is None else points[i])
        if trackers is not None and trackers[i] is not None:
            a = trackers[i].advantages(
                rewards[i], method=spec.method, group_size=group_size, backend=BACKEND, **kw
            )
        else:
            a = rewardagg.advantages(
                rewards[i], method=spec.method, group_size=group_size, backend=BACKEND, **kw
            )
        out[i] = np.asarray(a)
    return out
