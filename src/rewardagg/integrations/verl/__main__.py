"""``python -m rewardagg.integrations.verl <hydra overrides>``: verl's ``main_ppo`` with
rewardagg's estimators installed in every Ray worker.

The same command line as ``python -m verl.trainer.main_ppo`` (``--config-path`` /
``--config-name`` included, for a YAML file that extends verl's ``ppo_trainer``). Before
handing over to verl's own ``main`` this launcher

1. calls :func:`rewardagg.integrations.verl.install` in this process;
2. wraps ``verl.trainer.main_ppo.validate_config`` and ``run_ppo`` (both called by verl's
   ``main`` with the composed config) so that, when ``algorithm.adv_estimator`` is ``rvpo``
   or ``rewardagg``, the ``algorithm.rewardagg`` settings and the reward weights are
   checked before Ray starts (:func:`check_config`), and
   ``worker_process_setup_hook=rewardagg.integrations.verl.setup_hook`` is added to
   ``ray_kwargs.ray_init.runtime_env`` (verl merges it into the ``ray.init`` runtime env)
   for our estimators and for verl's ``gdpo`` on the v1 trainer (which needs the hook to get
   the reward components there). Both trainers work: the v1 trainer
   (``trainer.use_v1=True``, verl's default) and the legacy one.

``--help`` first lists rewardagg's settings, then verl's Hydra help.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("rewardagg.integrations.verl")

#: The adapter's own ``algorithm.rewardagg`` options and the reward keys, for ``--help``.
HOST_HELP = {
    "batch_norm": "stage 3: verl (verl's token-weighted masked_whiten, default), rows "
    "(rewardagg's per-row batch z-score) or none",
    "singleton": "a one-row group: identity (mean 0, std 1, as verl; default) or zero",
    "baseline": "mean (default) or leave_one_out (RLOO)",
    "eps": "epsilon >= 0 of stage 1 (and of stage 3 with rows); default verl's 1e-6",
}


def help_text() -> str:
    """rewardagg's part of ``--help``: the estimators and every setting, with the ``+``
    Hydra needs (the method parameters read from the method table now)."""
    from rewardagg.integrations._settings import Spelling, help_lines

    spelling = Spelling(
        method="+algorithm.rewardagg.method=NAME",
        param="+algorithm.rewardagg.{name}=VALUE",
        group="+algorithm.rewardagg",
        renamed=(("constraints", "+algorithm.rewardagg.constraints.KEY=TARGET"),),
    )
    keys = [
        (
            "+algorithm.gdpo_reward_keys=[K1,K2,...]",
            "compute_score dict keys of the K reward components (with "
            "reward.reward_manager.name=gdpo); default: one reward, the score",
        ),
        (
            "+algorithm.gdpo_reward_weights=[W1,...]",
            "one weight per key, >= 0, one > 0 (default 1)",
        ),
    ]
    return "\n".join(
        [
            "rewardagg: python -m rewardagg.integrations.verl is verl's main_ppo with the "
            "advantage estimators",
            "algorithm.adv_estimator=rvpo (RVPO's SoftMin) or rewardagg (any rewardagg "
            "method), installed in every Ray worker (v1 and legacy trainers).",
            "",
            "rewardagg settings (all optional; a method parameter applies to the methods "
            "named with it):",
            *help_lines(spelling, HOST_HELP, leading=keys),
            "",
            "verl's options follow.",
            "",
        ]
    )


def check_config(config: Any) -> None:
    """Raise ``SystemExit`` with an explanation for settings our estimators cannot run.

    Every value is checked here, before Ray starts: the method and its parameters, the
    adapter's and the shared options, ``algorithm.gdpo_reward_weights``.

    Args:
        config: verl's composed top-level PPO config (``DictConfig``).
    """
    from rewardagg.integrations.verl import ESTIMATORS
    from rewardagg.integrations.verl._adapter import RewardAggVerlSettings

    estimator = str(config.algorithm.adv_estimator)
    if estimator not in ESTIMATORS:
        return
    try:
        settings = RewardAggVerlSettings(config.algorithm, estimator=estimator)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"rewardagg: {err}") from err
    if settings.reward_keys is None:
        logger.warning(
            "rewardagg: algorithm.gdpo_reward_keys is not set: %s uses one reward "
            "(token_level_rewards); set it (with reward.reward_manager.name=gdpo) to "
            "aggregate several reward components",
            estimator,
        )


def needs_setup_hook(config: Any) -> bool:
    """Whether the Ray workers need our setup hook: our estimators, and verl's ``gdpo``
    on the v1 trainer (its components come from TransferQueue through our wrappers)."""
    from rewardagg.integrations.verl import ESTIMATORS

    estimator = str(config.algorithm.adv_estimator)
    v1 = bool(config.get("trainer", {}).get("use_v1", False))
    return estimator in ESTIMATORS or (estimator == "gdpo" and v1)


def add_setup_hook(config: Any) -> None:
    """Put our Ray ``worker_process_setup_hook`` into ``config.ray_kwargs.ray_init.runtime_env``."""
    import ray
    from omegaconf import open_dict

    from rewardagg.integrations.verl import SETUP_HOOK

    if ray.is_initialized():
        logger.warning(
            "rewardagg: Ray is already initialised, so %s cannot be added to its runtime "
            "env; make sure the job's runtime_env has worker_process_setup_hook=%r",
            SETUP_HOOK,
            SETUP_HOOK,
        )
        return
    with open_dict(config):
        ray_init = config.setdefault("ray_kwargs", {}).setdefault("ray_init", {})
        runtime_env = ray_init.get("runtime_env")
        if runtime_env is None:
            ray_init["runtime_env"] = {}
            runtime_env = ray_init["runtime_env"]
        with open_dict(runtime_env):
            current = runtime_env.get("worker_process_setup_hook")
            if current in (None, SETUP_HOOK):
                runtime_env["worker_process_setup_hook"] = SETUP_HOOK
            else:
                logger.warning(
                    "rewardagg: ray runtime_env already has worker_process_setup_hook=%r; "
                    "keeping it: it must call %s itself",
                    current,
                    SETUP_HOOK,
                )


def main(argv: Sequence[str] | None = None) -> None:
    """Install, then run verl's ``main_ppo.main`` with ``argv`` (default ``sys.argv[1:]``)."""
    from rewardagg.integrations.verl import install

    args = list(sys.argv[1:] if argv is None else argv)
    if "--help" in args or "-h" in args:
        print(help_text())
    install()
    from verl.trainer import main_ppo

    original_validate = main_ppo.validate_config
    original_run = main_ppo.run_ppo

    def validate_config(config, *args, **kwargs):
        check_config(config)  # ours first: it explains more than verl's checks would
        return original_validate(config, *args, **kwargs)

    def run_ppo(config, *args, **kwargs):
        if needs_setup_hook(config):
            add_setup_hook(config)
        return original_run(config, *args, **kwargs)

    saved_argv = sys.argv
    main_ppo.validate_config, main_ppo.run_ppo = validate_config, run_ppo
    sys.argv = ["rewardagg.integrations.verl", *args]
    try:
        main_ppo.main()  # Hydra reads sys.argv
    finally:
        sys.argv = saved_argv
        main_ppo.validate_config, main_ppo.run_ppo = original_validate, original_run


if __name__ == "__main__":
    main()
