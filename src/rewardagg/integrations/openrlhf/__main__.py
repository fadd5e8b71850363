"""``python -m rewardagg.integrations.openrlhf <train_ppo_ray flags>``: OpenRLHF's
``openrlhf.cli.train_ppo_ray`` with the estimators ``rvpo`` / ``rewardagg`` and their
``--rewardagg.*`` flags.

OpenRLHF builds its argument parser inside ``if __name__ == "__main__":``, so this launcher
runs that module as ``__main__`` (``runpy``) after

1. :func:`rewardagg.integrations.openrlhf.install` in this process;
2. wrapping ``argparse.ArgumentParser.parse_args`` for the duration of the run: on the
   parser that has ``--algo.advantage.estimator`` it adds ``rvpo`` and ``rewardagg`` to the
   choices and adds the ``--rewardagg.*`` flags, then checks them (and
   ``n_samples_per_prompt > 1``) before anything starts;
3. wrapping ``ray.init`` so that its ``runtime_env`` gets
   ``worker_process_setup_hook=rewardagg.integrations.openrlhf.setup_hook`` (the experience
   maker runs in OpenRLHF's ``PPOTrainer`` Ray actor).

Both wrappers are removed when the run ends.

``--rewardagg.drop FLAG`` drops ``FLAG`` (and its values) given earlier on the command line,
so a flag of the example's ``args.txt`` can be unset from ``run.sh``'s command line
(:mod:`rewardagg.integrations.openrlhf._argv`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import numbers
import runpy
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

logger = logging.getLogger("rewardagg.integrations.openrlhf")

HOST_MODULE = "openrlhf.cli.train_ppo_ray"
_ESTIMATOR_DEST = "algo.advantage.estimator"

#: The parsed (flat) namespace of the last run, for inspection.
last_args: argparse.Namespace | None = None


_PREFIX = "--rewardagg."
_GROUP_TITLE = "rewardagg (estimators rvpo / rewardagg)"


def _param_help(name: str, takers: list[tuple[str, Any]]) -> str:
    """``--rewardagg.<name>`` help: each method that takes it, its help and default."""
    from rewardagg.integrations._settings import param_help

    return param_help(name, takers).replace("%", "%%")  # argparse %-formats help strings


def _flag_type(takers: list[tuple[str, Any]]) -> Callable[[str], Any]:
    """A number for a parameter that every method taking it declares numeric, else the
    string; the value is checked later, for the chosen method (see :func:`check_args`)."""
    numeric = all(
        isinstance(spec.default, numbers.Real) and not isinstance(spec.default, bool)
        for _, spec in takers
    )
    return float if numeric else str


def _group(parser: argparse.ArgumentParser) -> tuple[Any, bool]:
    """Our argument group (created if missing) and whether it already existed."""
    for group in parser._action_groups:
        if group.title == _GROUP_TITLE:
            return group, True
    return parser.add_argument_group(_GROUP_TITLE), False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``rvpo`` / ``rewardagg`` to ``--algo.advantage.estimator`` and the
    ``--rewardagg.*`` flags to OpenRLHF's parser (idempotent).

    The flags are the adapter's own options plus one ``--rewardagg.<param>`` (default
    ``None``: the method's default) per parameter name of every method registered now,
    with the help text of the method table (:func:`rewardagg.available_methods`).
    """
    from rewardagg.integrations._settings import param_specs
    from rewardagg.integrations.openrlhf import ESTIMATORS
    from rewardagg.integrations.openrlhf._adapter import DEFAULTS

    for action in parser._actions:
        if action.dest == _ESTIMATOR_DEST and action.choices is not None:
            new = [e for e in ESTIMATORS if e not in action.choices]
            action.choices = [*action.choices, *new]
            if action.help and new:
                action.help += "; rvpo (RVPO SoftMin), rewardagg (any rewardagg method)"
    group, existed = _group(parser)
    if not existed:
        group.add_argument(
            "--rewardagg.reward_keys",
            nargs="+",
            default=None,
            help="reward_func extra_logs keys of the reward components "
            "(default: the scalar reward)",
        )
        group.add_argument(
            "--rewardagg.weights",
            type=float,
            nargs="+",
            default=None,
            help="one non-negative weight per reward key (default: all 1)",
        )
        group.add_argument(
            "--rewardagg.method",
            type=str,
            default=DEFAULTS["method"],
            help="a rewardagg method (rewardagg.available_methods(); rvpo: softmin only)",
        )
        group.add_argument(
            "--rewardagg.eps",
            type=float,
            default=DEFAULTS["eps"],
            help="epsilon of stages 1 and 3 (OpenRLHF's group_norm)",
        )
        group.add_argument(
            "--rewardagg.no_batch_norm",
            action="store_true",
            default=False,
            help="skip stage 3 (the batch z-score of the aggregated scores)",
        )
        _add_shared_arguments(group)
    dests = {a.dest for a in parser._actions}
    for name, takers in param_specs().items():
        if f"rewardagg.{name}" not in dests:
            group.add_argument(
                f"{_PREFIX}{name}",
                type=_flag_type(takers),
                default=None,
                metavar=name.upper(),
                help=_param_help(name, takers),
            )


def _add_shared_arguments(group: Any) -> None:
    """The options every adapter shares: order, centring, conflict filter, constraints
    (checked by the shared settings parser, with the method, in :func:`check_args`)."""
    from rewardagg._src.methods import CONFLICTS, ORDERS
    from rewardagg._src.pipeline import CENTERS
    from rewardagg.integrations._settings import CONSTRAINT_OPTIONS
    from rewardagg.integrations._settings import SHARED_OPTION_HELP as HELP

    group.add_argument("--rewardagg.order", choices=ORDERS, default=None, help=HELP["order"])
    group.add_argument("--rewardagg.center", choices=CENTERS, default=None, help=HELP["center"])
    group.add_argument(
        "--rewardagg.conflict", choices=CONFLICTS, default=None, help=HELP["conflict"]
    )
    group.add_argument(
        "--rewardagg.conflict_threshold",
        type=float,
        default=None,
        metavar="TAU",
        help=HELP["conflict_threshold"],
    )
    group.add_argument(
        "--rewardagg.reweight_groups",
        type=str,
        default=None,
        metavar="BOOL",
        help=HELP["reweight_groups"],
    )
    group.add_argument(
        "--rewardagg.constraints",
        nargs="+",
        action="extend",
        default=None,
        metavar="KEY=TARGET",
        help=f"{HELP['constraints']}; KEY=TARGET[,KEY=TARGET], repeatable",
    )
    for name in CONSTRAINT_OPTIONS[1:]:  # the tracker's settings
        group.add_argument(f"{_PREFIX}{name}", type=float, default=None, help=HELP[name])
    from rewardagg.integrations._controllers import ADAPTIVE_OPTION_HELP

    for name, text in ADAPTIVE_OPTION_HELP.items():  # adaptive weights (checked with the rest)
        group.add_argument(f"{_PREFIX}{name}", type=str, default=None, help=text)


def take_prefixed(extras: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``parse_known_args`` leftovers into ``--rewardagg.<name> VALUE`` (or
    ``--rewardagg.<name>=VALUE``) pairs, values kept as strings, and everything else.

    Raises:
        ValueError: a ``--rewardagg.<name>`` without a value.
    """
    pairs: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(extras):
        word = extras[i]
        if not word.startswith(_PREFIX):
            rest.append(word)
            i += 1
            continue
        name, eq, value = word[len(_PREFIX) :].partition("=")
        if not eq:
            if i + 1 >= len(extras) or extras[i + 1].startswith("--"):
                raise ValueError(f"{_PREFIX}{name} expects a value")
            value = extras[i + 1]
            i += 1
        pairs[name] = value
        i += 1
    return pairs, rest


def check_args(flat: argparse.Namespace) -> None:
    """Raise ``SystemExit`` for settings our estimators cannot run (before Ray starts).

    Runs the adapters' shared settings parser on ``args.rewardagg`` (unknown names, the
    method, its parameters' values), then stores the converted parameter values back in
    ``flat`` so the trainer actor receives numbers, not the strings of unknown flags.
    """
    from openrlhf.utils.config import hierarchize

    from rewardagg.integrations.openrlhf import ESTIMATORS
    from rewardagg.integrations.openrlhf._adapter import settings_from_args

    args = hierarchize(argparse.Namespace(**vars(flat)))
    estimator = args.algo.advantage.estimator
    if estimator not in ESTIMATORS:
        return
    if args.rollout.n_samples_per_prompt <= 1:
        raise SystemExit(
            f"rewardagg: --algo.advantage.estimator {estimator} normalises inside groups of "
            "--rollout.n_samples_per_prompt completions; it must be > 1"
        )
    try:
        settings = settings_from_args(args)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"rewardagg: {err}") from err
    for name, value in settings.method_params.items():
        setattr(flat, f"rewardagg.{name}", value)


@contextlib.contextmanager
def patched_parse_args() -> Iterator[None]:
    """Wrap ``ArgumentParser.parse_args`` so OpenRLHF's parser learns our flags.

    On OpenRLHF's parser (the one with ``--algo.advantage.estimator``) it parses with
    ``parse_known_args``: a ``--rewardagg.<name> VALUE`` that has no flag (a parameter
    of a method registered after the flags were added) is kept as a string and checked by
    :func:`check_args` like the others; any other unknown argument is refused as
    ``parse_args`` would.
    """
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        if not any(a.dest == _ESTIMATOR_DEST for a in self._actions):
            return original(self, args, namespace)
        add_arguments(self)
        parsed, extras = self.parse_known_args(args, namespace)
        try:
            pairs, rest = take_prefixed(extras)
        except ValueError as err:
            self.error(str(err))
        if rest:
            self.error(f"unrecognized arguments: {' '.join(rest)}")
        for name, value in pairs.items():
            setattr(parsed, f"rewardagg.{name}", value)
        check_args(parsed)
        global last_args
        last_args = parsed
        return parsed

    argparse.ArgumentParser.parse_args = parse_args  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]


@contextlib.contextmanager
def patched_ray_init() -> Iterator[None]:
    """Wrap ``ray.init`` so the job's runtime env runs our worker setup hook."""
    import ray

    from rewardagg.integrations.openrlhf import SETUP_HOOK

    original = ray.init

    def init(*args: Any, **kwargs: Any):
        env = dict(kwargs.get("runtime_env") or {})
        current = env.get("worker_process_setup_hook")
        if current in (None, SETUP_HOOK):
            env["worker_process_setup_hook"] = SETUP_HOOK
        else:
            logger.warning(
                "rewardagg: ray runtime_env already has worker_process_setup_hook=%r; keeping "
                "it: it must call %s itself",
                current,
                SETUP_HOOK,
            )
        kwargs["runtime_env"] = env
        return original(*args, **kwargs)

    ray.init = init
    try:
        yield
    finally:
        ray.init = original


def main(argv: Sequence[str] | None = None) -> None:
    """Install, then run ``openrlhf.cli.train_ppo_ray`` as ``__main__`` with ``argv``
    (default ``sys.argv[1:]``); ``--rewardagg.drop FLAG`` removes a flag set earlier on the
    command line (e.g. by ``args.txt``). Without an importable OpenRLHF (its models import
    ``flash_attn``, a GPU package) it prints one line saying so and exits 2, ``--help``
    included, instead of a traceback."""
    from rewardagg.integrations.openrlhf._argv import drop_flags

    try:
        args = drop_flags(list(sys.argv[1:] if argv is None else argv))
    except ValueError as err:
        raise SystemExit(f"rewardagg: {err}") from err
    try:
        from rewardagg.integrations.openrlhf import install

        install()
    except ImportError as err:
        print(
            f"python -m rewardagg.integrations.openrlhf: OpenRLHF cannot be imported here "
            f"({err}); install OpenRLHF with its GPU dependencies (flash-attn) to launch it "
            "or to list its flags; the --rewardagg.* flags are in "
            "docs/integrations_openrlhf.md",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    saved_argv = sys.argv
    sys.argv = [HOST_MODULE, *args]
    try:
        with patched_parse_args(), patched_ray_init():
            runpy.run_module(HOST_MODULE, run_name="__main__", alter_sys=False)
    finally:
        sys.argv = saved_argv


if __name__ == "__main__":
    main()
