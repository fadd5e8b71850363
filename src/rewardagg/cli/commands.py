"""The commands of the ``rewardagg`` command line: what ``rewardagg demo`` and
``rewardagg audit FILE`` do with their parsed arguments (:mod:`rewardagg.cli.parser`).

Each ``run_*_command(args) -> int`` returns the exit code and raises
:class:`~rewardagg.cli.parser.UsageError` for a problem the user can fix. The demo and the
audit are imported inside the functions, so ``rewardagg --help`` imports neither.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rewardagg._version import __version__
from rewardagg.cli.parser import EXIT_OK, PLOT_EXTRA_HINT, UsageError, _names
from rewardagg.cli.paths import check_output_file, make_parent_dirs
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
            f"the demo's figure needs {' and '.join(missing)} (the 'plot' extra): "
            f"{PLOT_EXTRA_HINT}, or run with --no-plot"
        )


def _demo_methods(args: argparse.Namespace) -> list[MethodSpec]:
    from rewardagg.demo import default_methods

    if args.methods is not None:
        try:
            default_methods(args.methods, params=None)
        except ValueError as e:
            raise UsageError(f"--methods: {e}") from None
    overrides: dict[str, list[Any]] = dict(args.params or [])  # the last one wins
    try:
        return default_methods(args.methods, params=overrides or None)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--param: {e}") from None


def _progress_bar(total: int, quiet: bool) -> Any:
    """A tqdm bar on stderr, or a stand-in with ``update`` when quiet or without tqdm."""
    if not quiet:
        try:
            from tqdm import tqdm

            return tqdm(
                total=total,
                desc="training",
                unit="seed-step",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )
        except ImportError:
            pass
    return _NoBar()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def run_demo_command(args: argparse.Namespace) -> int:
    """``rewardagg demo``: train, print the tables and verdicts, write demo.csv/json/png."""
    from rewardagg.demo import (
        DemoConfig,
        check_output_dir,
        format_legend,
        format_summary,
        format_table,
        format_verdicts,
        run_demo,
        select_scenarios,
        tidy_rows,
        write_outputs,
    )
    from rewardagg.demo.runner import total_work
    from rewardagg.demo.scenarios import QUICK_SCENARIOS
    from rewardagg.demo.takeaway import TAKEAWAY_HEADER, takeaway_text
    from rewardagg.demo.tidy import VERDICT_METRICS, paired_verdicts, seed_rows

    names = args.scenario or (list(QUICK_SCENARIOS) if args.quick else ["rubric"])
    try:
        scenarios = select_scenarios(names)
    except ValueError as e:
        raise UsageError(f"--scenario: {e}") from None
    methods = _demo_methods(args)
    config = DemoConfig(
        seeds=args.seeds or (3 if args.quick else DemoConfig.seeds),
        steps=args.steps or (40 if args.quick else None),
        methods=tuple(methods),
        base_seed=args.seed,
        workers=args.workers,
    )
    if args.plot:
        _require_plot_extra()
    out = args.out or ("demo-results-quick" if args.quick else "demo-results")
    try:
        out_dir = check_output_dir(out, overwrite=args.overwrite)
    except (FileExistsError, NotADirectoryError, OSError) as e:
        raise UsageError(f"--out: {e}") from None

    t0 = time.perf_counter()
    with _progress_bar(total_work(scenarios, config), args.quiet) as bar:
        try:
            results = run_demo(scenarios, config, progress=bar.update)
        except ValueError as e:  # a selected method that cannot take the demo's rewards
            raise UsageError(f"a method failed on the demo's rewards: {e}") from None
    elapsed = time.perf_counter() - t0
    rows = tidy_rows(results)
    print(format_table(rows))
    for res in results:
        for why in res.skipped:
            print(f"{res.scenario.name}: skipped {why}")
    print()
    print(format_legend(methods, [r["metric"] for r in rows]))
    for family in dict.fromkeys(res.scenario.family for res in results):
        for metric in VERDICT_METRICS[family]:
            print()
            print(f"summary: {metric} (mean ± 95% CI) per scenario")
            print(format_summary([r for r in rows if r["metric"] == metric], metric))
    print()
    print(format_verdicts(paired_verdicts(seed_rows(results))))
    if any(res.scenario.family == "rubric" for res in results):
        print()
        print(TAKEAWAY_HEADER)
        print(takeaway_text())
    paths = write_outputs(
        results,
        config,
        out_dir,
        plot=args.plot,
        rewardagg_version=__version__,
        train_seconds=round(elapsed, 2),
    )
    steps = "/".join(str(n) for n in sorted({config.steps or sc.steps for sc in scenarios}))
    print()
    print(
        f"{len(methods)} settings x {config.seeds} seeds x {steps} steps x {len(scenarios)} "
        f"scenarios trained in {elapsed:.1f} s."
    )
    print("wrote " + ", ".join(str(p) for p in paths.values()))
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
        vals = [w[n] for n in names]
    else:
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise UsageError(f"--weights: expected numbers or NAME=NUMBER, got {text!r}") from None
        if len(vals) != len(names):
            raise UsageError(f"--weights: {len(vals)} values for {len(names)} rewards ({names})")
    if not all(math.isfinite(v) and v >= 0 for v in vals):
        raise UsageError(f"--weights: expected finite non-negative numbers, got {text!r}")
    return vals


def _parse_thresholds(items: list[str] | None, names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        try:
            value = float(val if sep else item)
        except ValueError:
            raise UsageError(f"--threshold: expected COL=VALUE or VALUE, got {item!r}") from None
        if not math.isfinite(value):
            raise UsageError(f"--threshold: expected a finite number, got {item!r}")
        if sep and key not in names:
            raise UsageError(f"--threshold: unknown reward {key!r}; rewards are {names}")
        out.update({key: value} if sep else dict.fromkeys(names, value))
    return out


def _plot_path(text: str) -> Path:
    """The figure's path, checked before any work: matplotlib must be installed and know
    the extension (none: its default format's, as ``savefig`` adds it), and the file must
    be writable."""
    try:
        import matplotlib
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise UsageError(f"--plot needs matplotlib: {PLOT_EXTRA_HINT}") from None
    path = check_output_file(text)
    formats = FigureCanvasBase.get_supported_filetypes()
    if not path.suffix:
        path = check_output_file(f"{text}.{matplotlib.rcParams['savefig.format']}")
    elif path.suffix[1:].lower() not in formats:
        raise UsageError(
            f"{text}: --plot cannot write {path.suffix!r} files; use one of "
            f"{', '.join('.' + f for f in sorted(formats))}"
        )
    return path


def _check_source_options(args: argparse.Namespace) -> None:
    """``--format`` is for rollout files, ``--step`` for trainer logs."""
    if args.trainer is not None and args.format is not None:
        raise UsageError(f"--format does not apply with --from {args.trainer} (it reads its own)")
    if args.trainer is None and args.step is not None:
        raise UsageError("--step needs --from verl or --from trl (a folder of per-step logs)")


def _load(args: argparse.Namespace) -> Any:
    """The rollouts of ``args.file`` (a rollout file, or a trainer's log with ``--from``);
    a bad file is a :class:`UsageError` naming it."""
    from rewardagg.rollouts_io import RolloutFileError, load_rollouts

    columns: dict[str, Any] = dict(
        group=args.group, rewards=_flatten(args.rewards), exclude=_flatten(args.exclude) or []
    )
    try:
        if args.trainer is not None:
            from rewardagg.trainer_logs import load_trainer_log

            return load_trainer_log(args.trainer, args.file, step=args.step, **columns)
        return load_rollouts(args.file, fmt=args.format, **columns)
    except RolloutFileError as e:
        raise UsageError(str(e)) from None


def run_audit_command(args: argparse.Namespace) -> int:
    """``rewardagg audit FILE``: print the report (text ending with the verdict, or JSON
    with ``--json``), optionally write the figure. The options and the figure's path are
    checked before the file is read."""
    from rewardagg.audit import (
        default_audit_methods,
        format_report,
        plot_report,
        report_to_dict,
        run_audit,
    )
    from rewardagg.audit.report import fold

    _check_source_options(args)
    if not math.isfinite(args.z_level):
        raise UsageError(f"--z-level: expected a finite number, got {args.z_level}")
    if args.z_level >= 0:  # at 0 every row of a cell without signal (Z = 0) would fail
        raise UsageError(
            f"--z-level: expected a negative number (a failure is a group z-score clearly "
            f"below the group's mean; default -1), got {args.z_level}"
        )
    if not (math.isfinite(args.eps) and args.eps >= 0):
        raise UsageError(f"--eps: expected a finite non-negative number, got {args.eps}")
    plot = _plot_path(args.plot) if args.plot is not None else None
    methods = select_methods(args, default_audit_methods)
    costs = _flatten(args.cost) or []
    data = _load(args)
    names, source = data.reward_names, data.source
    unknown = [c for c in costs if c not in names]
    if unknown:
        raise UsageError(f"--cost: {unknown} not among the reward columns {names}")
    columns = {
        "group_column": data.group_column,
        "reward_columns": names,
        "inferred": data.inferred,
    }
    inferred = (
        f"reward columns (inferred): {', '.join(names)}; group column: {data.group_column}"
        if data.inferred
        else ""
    )
    rewards, codes = data.rewards, data.group_codes()
    del data  # the labels and line numbers are not needed any more
    try:
        report = run_audit(
            rewards,
            codes,
            reward_names=names,
            costs=costs,
            weights=_parse_weights(args.weights, names),
            methods=methods,
            thresholds=_parse_thresholds(args.threshold, names),
            z_level=args.z_level,
            eps=args.eps,
            source=source,
            keep_advantages=False,  # the report and the figure do not use them
        )
    except ValueError as e:  # the options are checked: it is about the file's values
        raise UsageError(f"{source}: {e}") from None
    if args.json:
        out = {"rewardagg": __version__, "input": columns, **report_to_dict(report)}
        print(json.dumps(out, indent=2, allow_nan=False))
    else:
        if inferred:
            print("\n".join(fold(inferred)))
        print(format_report(report, spearman=args.spearman))
    if plot is not None:
        make_parent_dirs(plot)
        try:
            plot_report(report, plot)
        except OSError as e:
            raise UsageError(f"{plot}: cannot write the figure ({e.strerror or e})") from None
        # with --json, stdout holds the JSON object only
        print(f"\nwrote {plot}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK
