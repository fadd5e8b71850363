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
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import runpy
import sys
from collections.abc import Iterator, Sequence
from typing import Any

logger = logging.getLogger("rewardagg.integrations.openrlhf")

HOST_MODULE = "openrlhf.cli.train_ppo_ray"
_ESTIMATOR_DEST = "algo.advantage.estimator"

#: The parsed (flat) namespace of the last run, for inspection.
last_args: argparse.Namespace | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``rvpo`` / ``rewardagg`` to ``--algo.advantage.estimator`` and the
    ``--rewardagg.*`` flags to OpenRLHF's parser (idempotent)."""
    from rewardagg.integrations.openrlhf import ESTIMATORS

    for action in parser._actions:
        if action.dest == _ESTIMATOR_DEST and action.choices is not None:
            action.choices = [*action.choices, *(e for e in ESTIMATORS if e not in action.choices)]
            if action.help:
                action.help += "; rvpo (RVPO SoftMin), rewardagg (any rewardagg method)"
    if any(a.dest.startswith("rewardagg.") for a in parser._actions):
        return
    group = parser.add_argument_group("rewardagg (estimators rvpo / rewardagg)")
    group.add_argument(
        "--rewardagg.reward_keys",
        nargs="+",
        default=None,
        help="reward_func extra_logs keys of the reward components (default: the scalar reward)",
    )
    group.add_argument("--rewardagg.weights", type=float, nargs="+", default=None)
    group.add_argument("--rewardagg.method", type=str, default="softmin")
    group.add_argument("--rewardagg.kappa", type=float, default=None, help="softmin kappa (1.0)")
    group.add_argument("--rewardagg.lam", type=float, default=None, help="mean_variance lam (0.5)")
    group.add_argument(
        "--rewardagg.scale", type=str, default=None, choices=["group", "batch", "none"]
    )
    group.add_argument("--rewardagg.eps", type=float, default=1e-9)
    group.add_argument("--rewardagg.no_batch_norm", action="store_true", default=False)


def check_args(flat: argparse.Namespace) -> None:
    """Raise ``SystemExit`` for settings our estimators cannot run (before Ray starts)."""
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
        settings_from_args(args)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"rewardagg: {err}") from err


@contextlib.contextmanager
def patched_parse_args() -> Iterator[None]:
    """Wrap ``ArgumentParser.parse_args`` so OpenRLHF's parser learns our flags."""
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        if not any(a.dest == _ESTIMATOR_DEST for a in self._actions):
            return original(self, args, namespace)
        add_arguments(self)
        parsed = original(self, args, namespace)
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
    (default ``sys.argv[1:]``)."""
    from rewardagg.integrations.openrlhf import install

    install()
    args = list(sys.argv[1:] if argv is None else argv)
    saved_argv = sys.argv
    sys.argv = [HOST_MODULE, *args]
    try:
        with patched_parse_args(), patched_ray_init():
            runpy.run_module(HOST_MODULE, run_name="__main__", alter_sys=False)
    finally:
        sys.argv = saved_argv


if __name__ == "__main__":
    main()
