"""Running the demo: every scenario, every setting, every seed, on all cores.

The work is cut into units (one scenario, a chunk of its seeds: every setting trains in
lockstep on those seeds) that run in separate processes, ``workers`` at a time. A seed's
numbers do not depend on the chunk it ran in (each seed owns its random streams, and
:mod:`rewardagg.demo.engine` gives each seed exactly its own advantages), so any number
of workers gives the same results, bit for bit; the units are joined by seed.

Progress is counted in seed-updates as the work runs: every worker adds its unit's seeds
to a shared counter after each update, and the parent reports the counter's growth
while it waits (every :data:`POLL` seconds), so a progress bar moves per update, not per
finished unit.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from rewardagg._src.methods import BUILTINS
from rewardagg.demo.neglect_train import train_neglect
from rewardagg.demo.results import RunResult, merge_results
from rewardagg.demo.rubric_train import train_rubric
from rewardagg.demo.scenarios import NeglectScenario, RubricScenario
from rewardagg.demo.settings import default_methods, skip_reason
from rewardagg.method_settings import MethodSpec

__all__ = ["DemoConfig", "available_workers", "run_demo", "run_scenario", "total_work"]

Scenario = RubricScenario | NeglectScenario
POLL = 0.2
"""Seconds between two looks at the workers' progress counter."""

_COUNTER: Any = None  # a worker's shared progress counter (set by _init_worker)


def _init_worker(counter: Any) -> None:
    global _COUNTER
    _COUNTER = counter


def _count(n: int) -> None:
    if _COUNTER is not None:
        with _COUNTER.get_lock():
            _COUNTER.value += n


def _train_unit(scenario, methods, seeds, steps) -> RunResult:
    """A unit in a worker: progress counted per update into the shared counter."""
    return _train(scenario, methods, seeds, steps, lambda n: _count(n * len(seeds)))


def available_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class DemoConfig:
    """What to run on every scenario.

    Args:
        seeds: independent runs per setting (seed ``i`` is ``base_seed + i``).
        steps: updates per run; ``None``: each scenario's own (``RubricScenario.steps``).
        methods: the settings to compare; ``None``: :func:`default_methods`.
        base_seed: first seed.
        workers: processes; ``None``: every available core; 1 runs in this process.
    """

    seeds: int = 12
    steps: int | None = None
    methods: tuple[MethodSpec, ...] | None = None
    base_seed: int = 0
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    def method_list(self) -> list[MethodSpec]:
        return list(self.methods) if self.methods is not None else default_methods()

    def seed_list(self) -> list[int]:
        return [self.base_seed + i for i in range(self.seeds)]


def _runnable(
    scenario: Scenario, methods: Sequence[MethodSpec]
) -> tuple[list[MethodSpec], list[str]]:
    """The settings that can run on ``scenario``'s rewards, and why the others cannot."""
    kept: list[MethodSpec] = []
    skipped: list[str] = []
    for spec in methods:
        why = skip_reason(
            spec, nonnegative=scenario.nonnegative_rewards, has_points=scenario.has_points
        )
        if why:
            skipped.append(why)
        else:
            kept.append(spec)
    return kept, skipped


def _train(scenario, methods, seeds, steps, progress=None) -> RunResult:
    train = train_rubric if scenario.family == "rubric" else train_neglect
    return train(scenario, methods, seeds, steps=steps, progress=progress)


def run_scenario(
    scenario: Scenario,
    config: DemoConfig,
    *,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """One scenario, every seed, in this process. ``progress(n)`` after every update, with
    ``n`` the number of seeds it advanced."""
    methods, skipped = _runnable(scenario, config.method_list())
    seeds = config.seed_list()
    step = None if progress is None else (lambda n: progress(n * len(seeds)))
    res = _train(scenario, methods, seeds, config.steps, step)
    res.skipped = skipped
    return res


def _chunks(seeds: list[int], n: int) -> list[list[int]]:
    size = math.ceil(len(seeds) / n)
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


def _context():
    """``fork`` where the platform has it: workers then inherit methods registered at run
    time (a spawned worker would import a fresh registry)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork") if "fork" in methods else None


def run_demo(
    scenarios: Sequence[Scenario],
    config: DemoConfig,
    *,
    progress: Callable[[int], None] | None = None,
) -> list[RunResult]:
    """Run every scenario (module docstring); results in the order of ``scenarios``.

    ``progress(n)`` is called as work completes, ``n`` in seed-updates (the total is the
    sum over scenarios of seeds times steps).
    """
    workers = config.workers or available_workers()
    builtin = {a.name for a in BUILTINS}
    registered = any(m.method not in builtin for m in config.method_list())
    ctx = _context()
    if workers == 1 or (registered and ctx is None):
        return [run_scenario(sc, config, progress=progress) for sc in scenarios]

    seeds = config.seed_list()
    per = max(1, min(len(seeds), math.ceil(2 * workers / max(len(scenarios), 1))))
    units = []
    for i, sc in enumerate(scenarios):
        methods, _ = _runnable(sc, config.method_list())
        units += [(i, sc, methods, chunk) for chunk in _chunks(seeds, per)]
    # the costliest first (more criteria, more steps), so the last units are short ones
    units.sort(key=lambda u: -_cost(u[1], config.steps) * len(u[3]))
    parts: dict[int, list[RunResult]] = {i: [] for i in range(len(scenarios))}
    counter = (ctx or multiprocessing).Value("q", 0)
    reported = 0

    def report() -> None:
        nonlocal reported
        now = counter.value
        if progress is not None and now > reported:
            progress(now - reported)
        reported = now

    with ProcessPoolExecutor(
        max_workers=min(workers, len(units)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(counter,),
    ) as pool:
        futures = {
            pool.submit(_train_unit, sc, methods, chunk, config.steps): i
            for i, sc, methods, chunk in units
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=POLL, return_when=FIRST_COMPLETED)
            for fut in done:
                parts[futures[fut]].append(fut.result())
            report()
    report()
    out = []
    for i, sc in enumerate(scenarios):
        res = merge_results(parts[i])
        res.skipped = _runnable(sc, config.method_list())[1]
        out.append(res)
    return out


def _cost(scenario: Scenario, steps: int | None) -> float:
    width = scenario.n_criteria if isinstance(scenario, RubricScenario) else scenario.env.n_rewards
    return (steps or scenario.steps) * (width + 10)


def total_work(scenarios: Sequence[Scenario], config: DemoConfig) -> int:
    """The ``progress`` total of :func:`run_demo`: seeds times steps, summed."""
    return sum((config.steps or sc.steps) * config.seeds for sc in scenarios)
