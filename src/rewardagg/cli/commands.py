"""The commands of the ``rewardagg`` command line: what ``rewardagg demo`` and
``rewardagg audit FILE`` do with their parsed arguments (:mod:`rewardagg.cli.parser`).

Each ``run_*_command(args) -> int`` returns the exit code and raises
:class:`~rewardagg.cli.parser.UsageError` for a problem the user can fix. The demo and the
audit are imported inside the functions, so ``rewardagg --help`` imports neither.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rewardagg._version import __version__
from rewardagg.cli.parser import EXIT_OK, PLOT_EXTRA_HINT, UsageError, _names
from rewardagg.method_settings import MethodSpec, check_methods

__all__ = ["run_audit_command", "run_demo_command", "select_methods"]


def _flatten(values: Sequence[Sequence] | None) -> list | None:
    """The chunks of a repeatable comma-list option as one list (``None`` if not given)."""
    if values is None:
        return None
    return [v for chunk in values for v in chunk]


def select_methods(
    args: argparse.Namespace, build: Callable[..., list[MethodSpec]]
) -> list[MethodSpec]:
    """The method settings of ``--methods`` and ``--param`` (and its aliases), built by
    ``build(names, params=...)``; a :class:`UsageError` names the option at fault."""
    if args.methods is not None:
        try:
            check_methods(args.methods)
        except ValueError as e:
            raise UsageError(f"--methods: {e}") from None
    overrides: dict[str, list[Any]] = dict(args.params or [])  # the last one wins
    try:
        return build(args.methods, params=overrides)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--param: {e}") from None


# ---------------------------------------------------------------------------- demo
def _require_plot_extra() -> None:
    missing = []
    for mod in ("matplotlib", "tqdm"):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise UsageError(
            f"the demo needs {' and '.join(missing)} (the 'plot' extra): {PLOT_EXTRA_HINT}"
        )


def run_demo_command(args: argparse.Namespace) -> int:
    """``rewardagg demo``: train, print the table, write demo.png/json/csv."""
    _require_plot_extra()
    from tqdm import tqdm

    from rewardagg.demo import (
        DemoConfig,
        default_methods,
        default_scenarios,
        format_table,
        run_demo,
        write_outputs,
    )
    from rewardagg.demo.environment import MAX_REWARDS

    seeds = args.seeds or (3 if args.quick else 16)
    steps = args.steps or (60 if args.quick else 300)
    rewards = args.rewards or [4, 17]
    difficulty = args.difficulty or [0.05, 0.5]
    for k in rewards:
        if not 2 <= k <= MAX_REWARDS:
            raise UsageError(f"--rewards: each K must be in [2, {MAX_REWARDS}], got {k}")
    for d in difficulty:
        if not 0.0 < d < 1.0:
            raise UsageError(f"--difficulty: each value must be in (0, 1), got {d}")
    methods = select_methods(args, default_methods)
    try:
        config = DemoConfig(
            seeds=seeds,
            steps=steps,
            group_size=args.group_size,
            lr=args.lr,
            methods=tuple(methods),
            threshold=args.threshold,
            base_seed=args.seed,
        )
        scenarios = default_scenarios(
            n_rewards=rewards,
            difficulty=difficulty,
            n_prompts=args.prompts,
            length=args.length,
            constraint_length=args.constraint_length,
            window=args.window,
            noise=args.noise,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None

    t0 = time.perf_counter()
    with tqdm(
        total=steps * len(scenarios),
        disable=args.quiet,
        desc="training",
        unit="step",
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    ) as bar:
        try:
            results = run_demo(scenarios, config, progress=bar.update)
        except ValueError as e:  # a selected method that cannot take the demo's rewards
            raise UsageError(f"a method failed on the demo's rewards: {e}") from None
    elapsed = time.perf_counter() - t0
    print(format_table(results))
    paths = write_outputs(
        results, config, args.out, rewardagg_version=__version__, train_seconds=round(elapsed, 2)
    )
    print()
    print(
        f"{len(methods)} methods x {seeds} seeds x {steps} steps x {len(scenarios)} scenarios "
        f"trained in {elapsed:.1f} s."
    )
    print("wrote " + ", ".join(str(paths[k]) for k in ("png", "json", "csv")))
    return EXIT_OK


# ---------------------------------------------------------------------------- audit
def _parse_weights(text: str | None, names: list[str]) -> list[float] | None:
    if text is None:
        return None
    parts = _names(text)
    if parts and all("=" in p for p in parts):
        w = dict.fromkeys(names, 1.0)
        for part in parts:
            key, _, val = part.partition("=")
            if key not in w:
                raise UsageError(f"--weights: unknown reward {key!r}; rewards are {names}")
            try:
                w[key] = float(val)
            except ValueError:
                raise UsageError(f"--weights: {part!r} is not NAME=NUMBER") from None
        return [w[n] for n in names]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise UsageError(f"--weights: expected numbers or NAME=NUMBER, got {text!r}") from None
    if len(vals) != len(names):
        raise UsageError(f"--weights: {len(vals)} values for {len(names)} rewards ({names})")
    return vals


def _parse_thresholds(items: list[str] | None, names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        try:
            if sep:
                if key not in names:
                    raise UsageError(f"--threshold: unknown reward {key!r}; rewards are {names}")
                out[key] = float(val)
            else:
                out.update(dict.fromkeys(names, float(item)))
        except ValueError:
            raise UsageError(f"--threshold: expected COL=VALUE or VALUE, got {item!r}") from None
    return out


def run_audit_command(args: argparse.Namespace) -> int:
    """``rewardagg audit FILE``: print the report, optionally write the figure."""
    from rewardagg.audit import default_audit_methods, format_report, plot_report, run_audit
    from rewardagg.rollouts_io import RolloutFileError, load_rollouts

    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError(f"--plot needs matplotlib: {PLOT_EXTRA_HINT}") from None
    costs = _flatten(args.cost) or []
    try:
        data = load_rollouts(
            args.file,
            group=args.group,
            rewards=_flatten(args.rewards),
            exclude=_flatten(args.exclude) or [],
            fmt=args.format,
        )
    except RolloutFileError as e:
        raise UsageError(str(e)) from None
    names = data.reward_names
    unknown = [c for c in costs if c not in names]
    if unknown:
        raise UsageError(f"--cost: {unknown} not among the reward columns {names}")
    methods = select_methods(args, default_audit_methods)
    try:
        report = run_audit(
            data.rewards,
            data.group_codes(),
            reward_names=names,
            costs=costs,
            weights=_parse_weights(args.weights, names),
            methods=methods,
            thresholds=_parse_thresholds(args.threshold, names),
            z_level=args.z_level,
            eps=args.eps,
            source=data.source,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if data.inferred:
        print(f"reward columns (inferred): {', '.join(names)}; group column: {data.group_column}")
    print(format_report(report))
    if args.plot is not None:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot_report(report, args.plot)
        print(f"\nwrote {args.plot}")
    return EXIT_OK
