r"""OpenRLHF adapter: advantage estimators ``rvpo`` and ``rewardagg`` for OpenRLHF's PPO.

Supported OpenRLHF versions: ``0.11.x`` (tested on openrlhf 0.11.2; another version gets a
warning at import, :data:`SUPPORTED_OPENRLHF`). Importing this module imports OpenRLHF's
experience maker (and torch, ray, deepspeed); ``import rewardagg`` never does.

Usage::

    python -m rewardagg.integrations.openrlhf \
        --algo.advantage.estimator rvpo \
        --rollout.n_samples_per_prompt 8 \
        --reward.remote_url examples/openrlhf_qwen2.5_rvpo/reward_func.py \
        --rewardagg.reward_keys format correct safe \
        --rewardagg.kappa 1.0 \
        ...  # the rest of a normal openrlhf.cli.train_ppo_ray command line

Where the rewards come from. A ``reward_func(queries, prompts, labels)`` file (given as
``--reward.remote_url``) returns ``{"rewards": ..., "scores": ..., "extra_logs": {...}}``;
OpenRLHF turns every ``extra_logs`` entry into a per-sample tensor in ``experience.info``.
``--rewardagg.reward_keys`` names the entries that are reward components (K of them); the
estimator stacks them into a ``(prompts, n_samples_per_prompt, K)`` tensor in prompt order
(OpenRLHF's ``experience.index``), aggregates with :func:`rewardagg.advantages` and then
runs OpenRLHF's own ``compute_advantages_and_returns`` on the advantages, its ``group_norm``
path after the reward shaping: ``compute_reward`` (reward clipping ``--reward.clip_range``, KL
penalty, placed on the last action token) and ``get_cumulative_returns`` with gamma 1,
``advantages = returns``, no whitening across the batch. A ``None`` or NaN component is a
missing reward (:func:`install` turns a reward key's ``None`` into NaN before OpenRLHF makes a
tensor of it, which it cannot do with ``None``); after the aggregation a missing value in
``experience.info`` is replaced by the mean of that key's present values in the step's batch,
so the mean OpenRLHF logs for the key is the mean over the present values, not NaN. Without
``--rewardagg.reward_keys`` the scalar ``experience.rewards`` is the only reward (K = 1).
The scalar ``rewards`` is still what OpenRLHF logs as ``reward`` and what dynamic filtering
reads; return e.g. the sum of the components there.

Flags added by the launcher (stored in ``args.rewardagg``):

============================= ========== =================================================
flag                          default    meaning
============================= ========== =================================================
``--rewardagg.reward_keys``   none       ``extra_logs`` keys of the K components
``--rewardagg.weights``       all 1      K non-negative weights
``--rewardagg.method``        softmin    any :func:`rewardagg.available_methods` name
                                         (``rvpo`` accepts only softmin)
``--rewardagg.<param>``       method's   one flag per parameter name of the methods
                                         registered when the launcher parses
``--rewardagg.eps``           1e-9       epsilon (>= 0) of stages 1 and 3 (OpenRLHF's
                                         group_norm)
``--rewardagg.no_batch_norm`` off        skip stage 3 (batch z-score of the scores)
============================= ========== =================================================

The launcher also adds the options every adapter shares (:func:`rewardagg.advantages`;
DESIGN.md 2b, 2c): ``--rewardagg.order``, ``--rewardagg.center``, GD²PO's
``--rewardagg.conflict`` filter (``hard`` / ``snr``; ``--rewardagg.method gd2po`` /
``gd2po_snr`` have one) with ``--rewardagg.conflict_threshold`` and
``--rewardagg.reweight_groups true|false``, and Lagrangian ``--rewardagg.constraints
KEY=TARGET[,KEY=TARGET]`` (repeatable; ``KEY`` a reward key or a column index) with
``--rewardagg.constraint_lr``, ``constraint_lambda_max``, ``constraint_init``,
``constraint_kp``, ``constraint_kd``. The run's :class:`rewardagg.ConstraintTracker` lives on
the experience maker (:func:`constraint_tracker`), which aggregates every step's
experiences together; its state travels in OpenRLHF's checkpoint ``client_states`` (key
:data:`CHECKPOINT_KEY`) and is restored on resume.

Adaptive reward weights (:class:`rewardagg.AdaptiveWeights`, DESIGN.md 2d; rewards in
[0, 1]): ``--rewardagg.adaptive true`` with ``--rewardagg.adaptive_tau``,
``adaptive_beta``, ``adaptive_patience``, ``adaptive_z``, ``adaptive_plateau_margin``
(a number, or ``none``: no plateau hold, DESIGN.md 2d exactly). The weights multiply
``--rewardagg.weights``; with constraints both run together as the run's one controller
(:func:`run_controller`), logged as ``rewardagg/weight/<key>`` and
``rewardagg/trusted/<key>``, saved under :data:`CONTROLLER_KEY` (a tracker alone: under
:data:`CHECKPOINT_KEY`).

The ``--rewardagg.<param>`` flags come from rewardagg's method table (help text included),
so a method registered (``rewardagg.register_aggregator``) before the launcher parses has
its parameters as flags (``--help`` lists them all); a ``--rewardagg.<name> VALUE`` without a
flag is kept as a string and checked like the others. Bad values (a negative ``kappa``, a
negative or non-finite ``eps``, negative, non-finite or all-zero ``weights``) are refused
there, before Ray starts, naming the flag. :func:`settings_from_args` (the adapters' shared settings
parser) converts and validates them; the launcher runs it before Ray starts, the estimator
on every batch (so the method must be registered in OpenRLHF's ``PPOTrainer`` actor too).
:data:`DEFAULTS` lists the adapter's own options only.

Conventions reproduced from OpenRLHF's ``group_norm``: contiguous groups of
``n_samples_per_prompt`` rows in prompt order, ``eps = 1e-9`` added to ``.std(-1)``
(Bessel). With K = 1 and ``method="grpo"`` the estimator is OpenRLHF's ``group_norm``
(parity-tested on real ``Experience`` objects; OpenRLHF computes zero-spread groups in
float32 as ``(r - mean) / 1e-9``, exactly 0 only when the mean is exact, we give exactly 0).

Per-batch diagnostics go to ``experience.info["rewardagg/<metric>"]`` (the same value for
every sample), which OpenRLHF's actor logs with its other ``info`` entries.

Length penalties (``--reward.overlong_buffer_len``, ``--reward.stop_properly_penalty_coef``)
change the scalar ``rewards`` only, so with ``reward_keys`` they do not reach the
advantage; a warning says so. Return such a penalty as a component instead.

Why :func:`install` and a launcher. OpenRLHF computes advantages inline in
``RemoteExperienceMaker.compute_advantages_and_returns`` and its CLI accepts a fixed list of
estimators. :func:`install` wraps that method: for ``rvpo`` / ``rewardagg`` it runs the
steps above (OpenRLHF's own ``apply_length_penalties``, the aggregation, then OpenRLHF's
own method on the advantages), for every other estimator it calls OpenRLHF's method
unchanged; it also wraps ``SamplesGenerator._process_response_into_experience`` (the
``None`` handling above) and the trainer's checkpoint methods. The experience maker lives in
the ``PPOTrainer`` Ray actor, so the launcher also
adds ``worker_process_setup_hook=rewardagg.integrations.openrlhf.setup_hook`` to the
``ray.init`` runtime env (when you start Ray yourself, add it there).

References:
    Montero, Jurczyk, Dhingra, "RVPO: Risk-Sensitive Alignment via Variance
    Regularization", 2026, https://arxiv.org/abs/2605.05750
"""

from __future__ import annotations

import importlib
from typing import Any

from rewardagg.integrations._hooks import lazy_attribute, run_after_import

__all__ = [
    "CHECKPOINT_KEY",
    "CONTROLLER_KEY",
    "DEFAULTS",
    "ESTIMATORS",
    "SETUP_HOOK",
    "SUPPORTED_OPENRLHF",
    "aggregate_experiences",
    "constraint_tracker",
    "install",
    "is_installed",
    "run_controller",
    "settings_from_args",
    "setup_hook",
    "uninstall",
]

#: Estimator names this adapter adds to OpenRLHF.
ESTIMATORS = ("rvpo", "rewardagg")
#: Dotted path to give Ray as ``runtime_env["worker_process_setup_hook"]``.
SETUP_HOOK = "rewardagg.integrations.openrlhf.setup_hook"
#: OpenRLHF's trainer module, whose checkpoints carry the constraint tracker's state.
TRAINER_MODULE = "openrlhf.trainer.ppo_trainer"

# Everything else lives in ``_adapter``, which imports OpenRLHF; this file stays light so
# that Ray can run :func:`setup_hook` in every worker process cheaply.
_LAZY = frozenset(__all__) - {"ESTIMATORS", "SETUP_HOOK", "setup_hook"}
_TRIGGER = "openrlhf.trainer.ppo_utils.experience_maker"


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return sorted(__all__)


def _install() -> None:
    importlib.import_module(f"{__name__}._adapter").install()


def _install_checkpoint_hooks() -> None:
    importlib.import_module(f"{__name__}._adapter").install_checkpoint_hooks()


def setup_hook() -> None:
    """Ray ``worker_process_setup_hook``: ``install()`` in this worker process.

    Installs at once if ``openrlhf.trainer.ppo_utils.experience_maker`` is already imported,
    otherwise right after it is, so Ray workers that never import it (rollout engines, ...)
    pay nothing: this module imports neither OpenRLHF nor torch. The trainer's checkpoint
    hooks (the constraint tracker's state) go in once ``openrlhf.trainer.ppo_trainer``
    has loaded (it imports the experience maker while it loads).
    """
    run_after_import(TRAINER_MODULE, _install_checkpoint_hooks)
    run_after_import(_TRIGGER, _install)
