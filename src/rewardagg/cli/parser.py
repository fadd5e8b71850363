"""The ``rewardagg`` command line: ``rewardagg demo`` and ``rewardagg audit FILE``.

Exit codes: 0 success; 2 bad usage, a bad input file or a missing optional dependency;
1 an unexpected error.

Adding a subcommand (for example ``bench``): write a ``configure(parser)`` function that
adds its arguments and a ``run(args) -> int`` function, and append one :class:`Command`
to :data:`COMMANDS`. ``configure`` and ``run`` may be callables or ``"module:function"``
strings; strings are imported only when needed, so ``rewardagg --help`` and the other
commands never import the new command's dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rewardagg._version import __version__

__all__ = ["COMMANDS", "Command", "UsageError", "build_parser", "main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
PLOT_EXTRA_HINT = 'pip install "rewardagg[plot]"'


class UsageError(Exception):
    """A problem the user can fix (bad option value, bad file, missing extra): exit code 2."""


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, argument set-up and runner.

    ``configure(parser)`` adds the arguments; ``run(args) -> int`` returns the exit code.
    Either may be a ``"module:function"`` string, imported lazily.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None] | str
    run: Callable[[argparse.Namespace], int] | str
    description: str = ""


def _resolve(target: Callable | str) -> Callable:
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


# ---------------------------------------------------------------------------- helpers
def _floats(text: str) -> list[float]:
    """``"0.5,1,2"`` -> [0.5, 1.0, 2.0] (argparse type for comma lists)."""
    try:
        return [float(t) for t in text.replace(" ", ",").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from None


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", ",").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _flatten(values: Sequence[Sequence] | None) -> list | None:
    if values is None:
        return None
    return [v for chunk in values for v in chunk]


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


# ---------------------------------------------------------------------------- demo
DEMO_DESCRIPTION = """\
Constraint neglect, reproduced: a tabular softmax policy writes 6-token responses for 4
prompts; one binary format constraint (the last 2 tokens must be <end>) competes with
K-1 noisy verbosity rewards (word counts). GRPO-style training (8 samples per prompt,
one policy-gradient step per batch) with the advantages of each method: grpo, gdpo,
softmin at several kappa, mean_variance, min. Same seeds for every method.
Default grid: K in {4, 17} x constraint met by {5%, 50%} of responses at the start
(the 50% scenarios are the control). Writes demo.png, demo.json, demo.csv into --out.
"""


def configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        default="demo-results",
        metavar="DIR",
        help="output folder for demo.png, demo.json, demo.csv (default: %(default)s)",
    )
    p.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        metavar="N",
        help="independent runs per method (default: 16; --quick: 3)",
    )
    p.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        metavar="N",
        help="policy-gradient updates per run (default: 300; --quick: 60)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small run (3 seeds x 60 steps) for tests and a first look",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("scenario")
    g.add_argument(
        "--rewards",
        type=_ints,
        default=None,
        metavar="K[,K...]",
        help="number(s) of rewards K, 2..17, one scenario each (default: 4,17)",
    )
    g.add_argument(
        "--difficulty",
        type=_floats,
        default=None,
        metavar="P[,P...]",
        help="probability of meeting the constraint at the start, one scenario each "
        "(default: 0.05,0.5; the larger one is the control)",
    )
    g.add_argument(
        "--kappa",
        type=_floats,
        default=None,
        metavar="K[,K...]",
        help="softmin kappa values (default: 0.5,1,2)",
    )
    g.add_argument("--lam", type=float, default=0.5, help="mean_variance lambda (default: 0.5)")
    g.add_argument(
        "--methods",
        type=_names,
        default=None,
        metavar="NAME[,NAME...]",
        help="subset of grpo,gdpo,mean,softmin,mean_variance,min (default: all but mean)",
    )
    g.add_argument("--prompts", type=_positive_int, default=4, help="prompts (default: 4)")
    g.add_argument("--group-size", type=int, default=8, help="samples per prompt (default: 8)")
    g.add_argument(
        "--length", type=_positive_int, default=6, help="tokens per response (default: 6)"
    )
    g.add_argument(
        "--constraint-length",
        type=_positive_int,
        default=2,
        help="final tokens that must be <end> (default: 2)",
    )
    g.add_argument(
        "--window",
        type=_positive_int,
        default=3,
        help="tokens counted by each verbosity reward (default: 3)",
    )
    g.add_argument(
        "--noise",
        type=float,
        default=1.0,
        help="std of the noise on verbosity rewards (default: 1.0)",
    )
    g.add_argument("--lr", type=float, default=0.3, help="policy step size (default: 0.3)")
    g.add_argument(
        "--threshold",
        type=float,
        default=0.9,
        help="constraint satisfaction counted as reached (default: 0.9)",
    )
    g.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")


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
    from rewardagg.demo.experiment import METHOD_ORDER

    seeds = args.seeds or (3 if args.quick else 16)
    steps = args.steps or (60 if args.quick else 300)
    rewards = args.rewards or [4, 17]
    difficulty = args.difficulty or [0.05, 0.5]
    kappas = args.kappa or [0.5, 1.0, 2.0]
    for k in rewards:
        if not 2 <= k <= MAX_REWARDS:
            raise UsageError(f"--rewards: each K must be in [2, {MAX_REWARDS}], got {k}")
    for d in difficulty:
        if not 0.0 < d < 1.0:
            raise UsageError(f"--difficulty: each value must be in (0, 1), got {d}")
    if any(k < 0 for k in kappas):
        raise UsageError(f"--kappa: values must be >= 0, got {kappas}")

    names = args.methods if args.methods is not None else [m for m in METHOD_ORDER if m != "mean"]
    bad = [m for m in names if m not in METHOD_ORDER]
    if bad:
        raise UsageError(f"--methods: unknown {bad}; available: {', '.join(METHOD_ORDER)}")
    methods = default_methods(kappas, args.lam, names)
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
        results = run_demo(scenarios, config, progress=bar.update)
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
AUDIT_DESCRIPTION = """\
Audit logged rollouts for constraint neglect. FILE has one row per completion
(CSV, JSONL, or Parquet with pyarrow): a group column (prompt id) and one column per
reward. Reports, per method, the masked failures (completions clearly below their
group on some reward, Z <= -1, or below a --threshold you give, that still get a
positive advantage), each reward's bottleneck share, zero-spread groups, and the
Spearman rank correlation of the advantages between methods.
"""


def configure_audit(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="rollouts: .csv, .tsv, .jsonl, .parquet")
    p.add_argument(
        "--format",
        choices=("csv", "jsonl", "parquet"),
        default=None,
        help="file format (default: from the extension)",
    )
    p.add_argument(
        "--group",
        default=None,
        metavar="COL",
        help="group (prompt id) column (default: the first of group, group_id, "
        "prompt_id, uid, prompt_idx, query_id, prompt)",
    )
    p.add_argument(
        "--rewards",
        type=_names,
        action="append",
        default=None,
        metavar="COL[,COL...]",
        help="reward columns (default: every numeric column but the group column)",
    )
    p.add_argument(
        "--exclude",
        type=_names,
        action="append",
        default=None,
        metavar="COL[,COL...]",
        help="columns never inferred as rewards",
    )
    p.add_argument(
        "--cost",
        type=_names,
        action="append",
        default=None,
        metavar="COL[,COL...]",
        help="lower-is-better columns, negated before aggregation (repeatable)",
    )
    p.add_argument(
        "--weights",
        default=None,
        metavar="W,W,... | COL=W,...",
        help="reward weights, in reward order or by name (default: all 1)",
    )
    p.add_argument(
        "--threshold",
        action="append",
        default=None,
        metavar="COL=VALUE",
        help="a completion fails COL when its value is below VALUE (above, for a "
        "cost); repeatable; VALUE alone applies to every reward",
    )
    p.add_argument(
        "--z-level",
        type=float,
        default=-1.0,
        help="a completion fails reward k when its group z-score is <= this "
        "(default: -1, as in DESIGN.md)",
    )
    p.add_argument(
        "--methods",
        type=_names,
        default=None,
        metavar="NAME[,NAME...]",
        help="methods to compare (default: grpo,gdpo,mean,softmin,mean_variance,min)",
    )
    p.add_argument(
        "--kappa",
        type=_floats,
        default=None,
        metavar="K[,K...]",
        help="softmin kappa values (default: 1)",
    )
    p.add_argument("--lam", type=float, default=0.5, help="mean_variance lambda (default: 0.5)")
    p.add_argument("--eps", type=float, default=1e-6, help="eps of stages 1 and 3 (default: 1e-6)")
    p.add_argument(
        "--plot",
        nargs="?",
        const="audit.png",
        default=None,
        metavar="PNG",
        help="also write a figure (default path: audit.png; needs matplotlib)",
    )


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
    import rewardagg
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
    known = set(rewardagg.available_methods())
    wanted = args.methods or ["grpo", "gdpo", "mean", "softmin", "mean_variance", "min"]
    bad = [m for m in wanted if m not in known]
    if bad:
        raise UsageError(f"--methods: unknown {bad}; available: {', '.join(sorted(known))}")
    methods = default_audit_methods(wanted, kappas=args.kappa or [1.0], lam=args.lam)
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


# ---------------------------------------------------------------------------- wiring
COMMANDS: list[Command] = [
    Command(
        "demo",
        "reproduce constraint neglect on a toy policy-gradient problem",
        configure_demo,
        run_demo_command,
        DEMO_DESCRIPTION,
    ),
    Command(
        "audit",
        "check logged rollouts for masked failures and method disagreement",
        configure_audit,
        run_audit_command,
        AUDIT_DESCRIPTION,
    ),
    # Command("bench", "...", "rewardagg.<module>:configure", "rewardagg.<module>:run"),
]


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="rewardagg",
        description="Multi-reward advantage aggregation (RVPO SoftMin, GDPO, GRPO, ...).",
    )
    parser.add_argument("--version", action="version", version=f"rewardagg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in commands if commands is not None else COMMANDS:
        sp = sub.add_parser(
            cmd.name,
            help=cmd.help,
            description=cmd.description or cmd.help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _resolve(cmd.configure)(sp)
        sp.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rewardagg`` script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage, 0 on --help
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(_resolve(args._run)(args))
    except UsageError as e:
        print(f"rewardagg {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
