"""The argument parser of the ``rewardagg`` command line: the subcommands' options.

Only argparse set-up lives here (what each option is, its type and help); the commands
themselves are in :mod:`rewardagg.cli.commands`, imported when a command runs. The method
options (``--methods``, ``--param NAME=V1,V2``) are read off the method table, so a method
added to the table or registered before the parser is built is offered like a built-in.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rewardagg._src.registry import available_methods
from rewardagg.cli.doctor import DESCRIPTION as DOCTOR_DESCRIPTION
from rewardagg.method_settings import parameters_taken
from rewardagg.rollouts_io import FORMATS
from rewardagg.trainer_logs import TRAINERS

__all__ = [
    "COMMANDS",
    "PARAM_ALIASES",
    "Command",
    "UsageError",
    "add_method_options",
    "build_parser",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
PLOT_EXTRA_HINT = 'pip install matplotlib tqdm (the "plot" extra)'


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
    """``target`` itself, or the function a ``"module:function"`` string names."""
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


def _names(text: str) -> list[str]:
    """``"a, b,,c"`` -> ["a", "b", "c"]."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _assignment(text: str) -> tuple[str, list[str]]:
    """``"kappa=0.5,1"`` -> ("kappa", ["0.5", "1"]) (argparse type of ``--param``); the
    values stay strings until the method table converts them."""
    name, sep, values = text.partition("=")
    name, items = name.strip(), _names(values)
    if not sep or not name or not items:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE[,VALUE...], got {text!r}")
    return name, items


def _alias(name: str) -> Callable[[str], tuple[str, list[Any]]]:
    """argparse type of ``--<name> V1,V2``: the same as ``--param <name>=V1,V2``."""

    def parse(text: str) -> tuple[str, list[Any]]:
        return name, list(_floats(text))

    parse.__name__ = name  # argparse names the type in its error messages
    return parse


# ---------------------------------------------------------------------------- methods
PARAM_ALIASES = ("kappa", "lam")
"""Method parameters that keep a flag of their own, from before ``--param`` existed:
``--kappa 0.5,1`` is ``--param kappa=0.5,1`` (comma-separated numbers)."""


def _param_help() -> str:
    """Help of ``--param``, listing every method parameter of the table."""
    taken = parameters_taken(available_methods())
    listed = "; ".join(f"{p} ({', '.join(m)})" for p, m in taken.items())
    return (
        "compare these values of method parameter NAME, instead of the values the method "
        "table sweeps, for every selected method that takes it (repeatable; the last "
        f"wins for a NAME). Parameters: {listed}".replace("%", "%%")
    )


def add_method_options(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    default: str,
    extra: Sequence[str] = (),
) -> None:
    """``--methods``, ``--param`` and the :data:`PARAM_ALIASES` flags, read off the
    method table. ``default`` says, for the help, which methods run by default; ``extra``
    names further choices of ``--methods`` (the demo's variants)."""
    choices = ", ".join(available_methods()) + (f"; variants: {', '.join(extra)}" if extra else "")
    p.add_argument(
        "--methods",
        type=_names,
        default=None,
        metavar="NAME[,NAME...]",
        help=f"methods to compare, of {choices} (default: {default})",
    )
    p.add_argument(
        "--param",
        dest="params",
        action="append",
        type=_assignment,
        default=None,
        metavar="NAME=V[,V...]",
        help=_param_help(),
    )
    for name in PARAM_ALIASES:
        p.add_argument(
            f"--{name}",
            dest="params",
            action="append",
            type=_alias(name),
            metavar="V[,V...]",
            help=f"the same as --param {name}=V[,V...]",
        )


# ---------------------------------------------------------------------------- demo
DEMO_DESCRIPTION = """\
Every advantage method of the library, trained on the same problems and compared.

Default: a HealthBench-style rubric testbed (numpy only). Each prompt has K binary
criteria with points (one critical at +10, easy ones at +1..+5, negative ones at -2..-8,
some absent per prompt); responses are feature vectors (verbosity, care, accuracy) drawn
from a Gaussian policy shared by all prompts; verbosity drives the easy criteria and
works against the critical one; an LLM-judge model flips each verdict with probability
eps (the training rewards) while evaluation uses the true verdicts on held-out prompts.
Eight scenarios: K in {17, 5} x critical met by {10%, 70%} at the start x judge noise
{0, 0.1}. --scenario stuck and --scenario trap run two further families (a criterion no
policy can move; an easy criterion met only by responses that fail the critical one),
--scenario neglect the earlier format-vs-verbosity toy, --scenario all every one.

Methods: each method of the method table at each setting its sweep lists (a method
registered at run time included), plus gdpo_point_weights, tchebycheff, gdpo_lagrange
and softmin_snr (option variants; see the legend). Same seeds and random numbers for
every method. Prints one table per scenario, a legend, one summary per headline metric
and one line of paired verdicts per scenario (best against runner-up by the mean of
per-seed differences, 95% t-interval), then the take-away of the reference runs, and
writes demo.csv (tidy rows), demo_seeds.csv (per-seed values), demo.json (with the
verdicts) and demo.png into --out.
"""


DEMO_VARIANTS = ("gdpo_point_weights", "tchebycheff", "gdpo_lagrange", "softmin_snr")
"""The demo's option variants (``rewardagg.demo.settings.VARIANTS``), named here so that
building the parser does not import the demo."""


def configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder for demo.csv, demo_seeds.csv, demo.json, demo.png (default: "
        "demo-results; "
        "--quick: demo-results-quick); files already there are an error",
    )
    p.add_argument("--overwrite", action="store_true", help="replace demo.* files already in --out")
    p.add_argument(
        "--scenario",
        type=_names,
        default=None,
        metavar="NAME[,NAME...]",
        help="rubric (default: the 8 testbed scenarios), stuck or trap (4 each: K = 17 and "
        "5, clean and noisy), neglect (the toy's 4), all, or scenario names such as "
        "k17-rare-noisy, trap-k5-noisy, neglect-k17-control",
    )
    p.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        metavar="N",
        help="independent runs per method (default: 12; --quick: 3)",
    )
    p.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        metavar="N",
        help="policy updates per run (default: 200 on the rubric, 300 on the toy; --quick: "
        "40); docs/choosing.md shows --steps 600 on k17-common-clean,k17-common-noisy",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a first look in a few seconds: 2 rubric scenarios, 3 seeds x 40 steps",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="processes (default: every available core; 1: no subprocess)",
    )
    p.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    p.add_argument(
        "--no-plot",
        dest="plot",
        action="store_false",
        help="no demo.png (the table and the CSV/JSON need numpy only)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_method_options(
        p,
        default="every method of the table at its sweep (softmin at kappa 0.1, 0.25, 0.5, 1, "
        "2 and mean_variance at lam = kappa/2 in the demo), then the variants; a label as "
        "the demo prints it, such as 'softmin k=0.25' or gdpo+lagrange, selects one setting",
        extra=DEMO_VARIANTS,
    )


# ---------------------------------------------------------------------------- audit
AUDIT_DESCRIPTION = """\
Audit logged rollouts for constraint neglect. FILE has one row per completion
(CSV, TSV, JSONL, or Parquet with pyarrow): a group column (prompt id) and one column
per reward. With --from verl or --from trl, FILE is that trainer's log instead: a
folder of per-step files or one of them.

Reports, per method, the masked failures (completions clearly below their group on
some reward, Z <= -1, or below a --threshold you give, that still get a positive
advantage), each reward's bottleneck share, zero-spread groups, and the Spearman rank
correlation of the advantages between methods; the last line is the verdict: how many
rows failing one reward each method still rewards. --json prints all of it as one JSON
object instead. A method defined for non-negative rewards only (a power mean) is
skipped, with a note, on rewards with a negative value.

The file format and every column of the report: the documentation's pages "The rollout
file" and "Reading the audit" (in the source repository: docs/rollouts.md, docs/audit.md).
"""


def configure_audit(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "file",
        metavar="FILE",
        help="rollouts: .csv, .tsv, .jsonl (.ndjson, .json) or .parquet; with --from, a "
        "trainer's log folder or one of its files",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="file format (default: from the extension; tsv is CSV with tabs)",
    )
    p.add_argument(
        "--from",
        dest="trainer",
        choices=tuple(TRAINERS),
        default=None,
        metavar="TRAINER",
        help="read a trainer's log: verl (the <step>.jsonl dumps of "
        "trainer.rollout_data_dir; groups by prompt, rewards from the reward-extra-info "
        "keys) or trl (the completions/completions_<step>.parquet tables of "
        "log_completions=True; groups by prompt, one reward per reward function)",
    )
    p.add_argument(
        "--step",
        type=int,
        default=None,
        metavar="N",
        help="with --from and a folder: audit training step N only (default: every step; "
        "the groups of different steps are kept apart)",
    )
    p.add_argument(
        "--group",
        default=None,
        metavar="COL",
        help="group (prompt id) column (default: the first of group, group_id, "
        "prompt_id, uid, prompt_idx, query_id, prompt; --from verl: uid if logged, else "
        "input; --from trl: prompt)",
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
        "(default: -1, the library's masked-failure level)",
    )
    add_method_options(p, default="all")
    p.add_argument("--eps", type=float, default=1e-6, help="eps of stages 1 and 3 (default: 1e-6)")
    p.add_argument(
        "--plot",
        nargs="?",
        const="audit.png",
        default=None,
        metavar="PNG",
        help="also write a figure (default path: audit.png; needs matplotlib)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON object (every number of the text report, and "
        "the verdict) instead of the text, for scripts",
    )
    p.add_argument(
        "--spearman",
        action="store_true",
        help="print the whole Spearman rank-correlation matrix of the methods' advantages "
        "(folded into blocks of columns) instead of the 5 method pairs that disagree most",
    )


# ---------------------------------------------------------------------------- wiring
COMMANDS: list[Command] = [
    Command(
        "demo",
        "compare every method on a rubric testbed (and the constraint-neglect toy)",
        configure_demo,
        "rewardagg.cli.commands:run_demo_command",
        DEMO_DESCRIPTION,
    ),
    Command(
        "audit",
        "check logged rollouts for masked failures and method disagreement",
        configure_audit,
        "rewardagg.cli.commands:run_audit_command",
        AUDIT_DESCRIPTION,
    ),
    Command(
        "doctor",
        "import each installed host adapter (TRL, verl, OpenRLHF); print the fix if one fails",
        "rewardagg.cli.doctor:configure",
        "rewardagg.cli.doctor:run",
        DOCTOR_DESCRIPTION,
    ),
    Command(
        "toolcall",
        "a tiny LM learns tool calls under six rule-based rewards on TRL (needs the trl extra)",
        "rewardagg.toolcall.cli:configure",
        "rewardagg.toolcall.cli:run_command",
        "",
    ),
    # Command("bench", "...", "rewardagg.<module>:configure", "rewardagg.<module>:run"),
]


class _VersionAction(argparse.Action):
    """``--version``: :func:`rewardagg.cli.version.version_report`, then exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from rewardagg.cli.version import version_report

        print(version_report())
        parser.exit()


class _TopParser(argparse.ArgumentParser):
    """The top-level parser: an unknown option after a command is reported by that
    command's parser (``rewardagg demo --quikc`` shows the demo's usage, not the top
    level's)."""

    commands: dict[str, argparse.ArgumentParser]

    def parse_args(self, args=None, namespace=None):
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            owner = self.commands.get(getattr(ns, "command", None) or "", self)
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
        return ns


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    parser = _TopParser(
        prog="rewardagg",
        description="Multi-reward advantage aggregation (RVPO SoftMin, GDPO, GRPO, ...).",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version and the optional backends found (numba, triton, torch), "
        "one line each, and exit",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show log messages on stderr (such as the numba kernel's compile time, "
        "which is otherwise logged, not printed)",
    )
    parser.commands = {}
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
        parser.commands[cmd.name] = sp
    return parser
