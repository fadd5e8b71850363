"""``python -m rewardagg.integrations.verl <hydra overrides>``: verl's ``main_ppo`` with
rewardagg's estimators installed in every Ray worker.

The same command line as ``python -m verl.trainer.main_ppo``. Before handing over to verl's
own ``main`` this launcher

1. calls :func:`rewardagg.integrations.verl.install` in this process;
2. wraps ``verl.trainer.main_ppo.validate_config`` and ``run_ppo`` (both called by verl's
   ``main`` with the composed config) so that, when ``algorithm.adv_estimator`` is ``rvpo``
   or ``rewardagg``, it refuses ``trainer.use_v1=True`` (and bad ``algorithm.rewardagg``
   settings) before Ray starts, and adds
   ``worker_process_setup_hook=rewardagg.integrations.verl.setup_hook`` to
   ``ray_kwargs.ray_init.runtime_env`` (verl merges it into the ``ray.init`` runtime env).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("rewardagg.integrations.verl")


def check_config(config: Any) -> None:
    """Raise ``SystemExit`` with an explanation for configurations our estimators cannot run.

    Args:
        config: verl's composed top-level PPO config (``DictConfig``).
    """
    from rewardagg.integrations.verl import ESTIMATORS
    from rewardagg.integrations.verl._adapter import _V1_HINT, RewardAggVerlSettings

    estimator = str(config.algorithm.adv_estimator)
    if estimator not in ESTIMATORS:
        return
    trainer = config.get("trainer", {})
    if trainer.get("use_v1", False):
        raise SystemExit(f"rewardagg: algorithm.adv_estimator={estimator}: {_V1_HINT}")
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

    install()
    from verl.trainer import main_ppo

    original_validate = main_ppo.validate_config
    original_run = main_ppo.run_ppo

    def validate_config(config, *args, **kwargs):
        check_config(config)  # ours first: it explains more than verl's checks would
        return original_validate(config, *args, **kwargs)

    def run_ppo(config, *args, **kwargs):
        if str(config.algorithm.adv_estimator) in ("rvpo", "rewardagg"):
            add_setup_hook(config)
        return original_run(config, *args, **kwargs)

    args = list(sys.argv[1:] if argv is None else argv)
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
