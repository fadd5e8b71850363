r"""verl adapter: advantage estimators ``"rvpo"`` and ``"rewardagg"`` for verl's PPO trainer.

Supported verl versions: ``0.9.x`` (tested on verl 0.9.1), both trainers: the v1 trainer
(``trainer.use_v1=True``, verl's default; it needs ``transferqueue``) and the legacy one
(``trainer.use_v1=False``). Importing this module imports verl's ``core_algos`` (and torch);
``import rewardagg`` never does.

Usage (Hydra overrides on verl's own ``ppo_trainer`` config)::

    python -m rewardagg.integrations.verl \
        algorithm.adv_estimator=rvpo \
        reward.reward_manager.name=gdpo \
        '+algorithm.gdpo_reward_keys=[format,correct,safe]' \
        '+algorithm.gdpo_reward_weights=[1.0,1.0,1.0]' \
        +algorithm.rewardagg.kappa=1.0 \
        ...  # the rest of a normal verl command line

``gdpo_reward_keys``, ``gdpo_reward_weights`` and ``rewardagg`` are not keys of verl's
YAML, so a command line adds them with ``+``; a YAML file that extends ``ppo_trainer``
(``examples/verl_qwen2.5_gsm8k_rvpo/rvpo_trainer.yaml``) sets them without.
``python -m rewardagg.integrations.verl`` is ``python -m verl.trainer.main_ppo`` plus
:func:`install` in every Ray worker (see "Running inside verl's Ray driver" below);
``--help`` lists every rewardagg setting, then verl's help.

Where the rewards come from. verl's GDPO reward manager (``reward.reward_manager.name=gdpo``)
calls the user's ``compute_score``; when it returns a dict, every key becomes a
``reward_extra_info`` entry: the legacy trainer copies those into
``batch.non_tensor_batch`` as one numpy array per key, the v1 trainer keeps them in
TransferQueue with each trajectory (``extra_fields["reward_extra_info"]``), from where
:func:`install`'s wrappers read them for the advantage step. ``algorithm.gdpo_reward_keys``
names the keys that are reward components (K of them), ``algorithm.gdpo_reward_weights``
their weights. A value ``None`` (or NaN) is a missing reward (the criterion does not apply
to this prompt, or the judge failed). Without ``gdpo_reward_keys`` the estimators fall back
to one reward, the sequence score ``token_level_rewards.sum(-1)`` (K = 1).

Settings (``+algorithm.rewardagg.<name>=...``; all optional):

=============== ============ ==========================================================
name            default      meaning
=============== ============ ==========================================================
``method``      ``softmin``  any :func:`rewardagg.available_methods` name (``"rvpo"``
                             accepts only ``softmin``)
``<param>``     the method's any parameter the chosen method takes (see
                             ``rewardagg.get_aggregator(method).params``)
``batch_norm``  ``verl``     stage 3: ``verl`` = verl's token-weighted ``masked_whiten``
                             (as verl's GDPO), ``rows`` = rewardagg's per-row batch
                             z-score, ``none`` = no stage 3
``singleton``   ``identity`` a one-row group has mean 0 / std 1 (verl); or ``zero``
``baseline``    ``mean``     or ``leave_one_out`` (RLOO)
``eps``         1e-6         epsilon (>= 0) of stage 1 (and of stage 3 with ``rows``)
=============== ============ ==========================================================

The options every adapter shares (:func:`rewardagg.advantages`; DESIGN.md 2b, 2c):
``order`` (``normalize_then_reduce`` / ``reduce_then_normalize``), ``center`` (``batch`` /
``group``), GD²PO's ``conflict`` filter (``hard`` / ``snr``, with ``conflict_threshold`` and
``reweight_groups``; ``method=gd2po`` / ``gd2po_snr`` have one), and Lagrangian
``constraints.<key>=<target>`` (``<key>`` a ``gdpo_reward_keys`` name or a column index) with
``constraint_lr``, ``constraint_lambda_max``, ``constraint_init``, ``constraint_kp``,
``constraint_kd``. A conflict filter drops rows from verl's token-weighted whitening (their
advantage is exactly 0). The run's :class:`rewardagg.ConstraintTracker` lives in the driver
process (:func:`constraint_tracker`), whose ``compute_advantage`` sees the whole batch; its
state is saved as ``rewardagg_constraints.json`` in verl's ``global_step_<N>`` checkpoint
folders and restored on resume (both trainers).

Adaptive reward weights (:class:`rewardagg.AdaptiveWeights`, DESIGN.md 2d; rewards in
[0, 1]): ``+algorithm.rewardagg.adaptive=true`` (defaults) or
``+algorithm.rewardagg.adaptive.patience=20`` (and ``tau``, ``beta``, ``z``,
``plateau_margin``: a number, or ``null``/``none`` for no plateau hold, DESIGN.md 2d
exactly; ``enabled``, default true). The weights multiply ``gdpo_reward_weights``; with constraints both run
together. The run's one controller (:func:`run_controller`: adaptive weights, tracker, or
both combined) lives in the driver, logs ``rewardagg/weight/<key>`` and
``rewardagg/trusted/<key>``, and is saved as ``rewardagg_controller.json``
(``rewardagg_constraints.json`` for a tracker alone) in the same checkpoint folders.

Method parameters are read from rewardagg's method table when the settings are read, not
from a list in this adapter, so a method registered with
``rewardagg.register_aggregator(name, fn, params={"tau": 0.3})`` is configured with
``+algorithm.rewardagg.method=name +algorithm.rewardagg.tau=0.5`` (register it in the
launching process and in the ``TaskRunner`` actor). Values are converted (``"0.5"`` -> 0.5)
and validated at once, with the core's rules: an unknown name, a parameter the method does
not take, a bad value (a negative ``kappa``, a negative or non-finite ``eps``, an unknown
``singleton`` / ``baseline`` / ``batch_norm``, negative, non-finite or all-zero
``gdpo_reward_weights``) is an error naming the setting, raised before Ray starts with the
launcher. The parsing is the adapters' shared ``rewardagg.integrations._settings``.

Metrics. Each step's metrics get, under ``rewardagg/``, the core's diagnostics
(:meth:`rewardagg.AggregationInfo.to_metrics`: ``rewardagg/<metric>`` and
``rewardagg/<metric>/<key>``, e.g. ``rewardagg/bottleneck_share/safe``), each reward's
``reward_mean``, ``reward_std``, ``reward_min``, ``reward_max`` over its present values and
``reward_missing`` share (``rewardagg/reward_mean/<key>``; what verl logs as
``gdpo/<key>/*`` for its own ``gdpo`` only), the conflict filter's numbers and the
constraint multipliers (``rewardagg/lambda/<key>``, ``rewardagg/constraint_mean/<key>``).

``algorithm.norm_adv_by_std_in_grpo=False`` only centres each reward in its group (as
verl's GDPO does with that flag); multipliers and a conflict filter then act on the
centred rewards (as GD²PO's code does with that flag).

Conventions reproduced from verl (``compute_gdpo_outcome_advantage``): eps ``1e-6``,
unbiased (Bessel) std, a group of one row has mean 0 and std 1, groups are verl's ``uid``
(any order, uneven sizes), the weighted per-row score is broadcast over the response tokens
and whitened with ``verl.utils.torch_functional.masked_whiten`` (token-weighted mean,
Bessel variance, ``rsqrt(var + 1e-8)``), then masked by ``response_mask``. With those
defaults ``method="gdpo"`` equals verl's ``gdpo`` estimator (parity-tested to 1e-5; verl
computes zero-spread groups in float32 as ``(r - mean) / 1e-6``, which is exactly 0 only
when the mean is exact, we give exactly 0). Differences on inputs verl does not accept: a
row with no present reward gets advantage 0 and is left out of the whitening statistics;
a batch with fewer than two unmasked tokens gets advantages 0 (verl raises).

Why :func:`install` is needed. verl 0.9.1's ``compute_advantage`` passes
``non_tensor_batch`` (where the components are) only to the estimator named ``"gdpo"``, and
the v1 trainer does not read the components from TransferQueue at all. :func:`install`
registers the two estimators with verl's own ``register_adv_est`` and wraps, in their home
module and in every module that imported them by name (the separation recipe of the
one-step-off-policy and fully-async trainers, ``verl.trainer.ppo.v1.utils``, your code):
``compute_advantage`` (for these estimators only it also passes ``non_tensor_batch``,
``batch`` and ``norm_adv_by_std_in_grpo``; every other estimator goes to verl's function
unchanged), ``compute_data_metrics`` (our metrics join the step's), the v1 trainer's
``PPOTrainer._compute_advantage`` and ``compute_advantage_for_multi_trajectories`` (the
components reach the estimators there, ours and verl's ``gdpo``; our metrics join the v1
step's), and both trainers' ``_save_checkpoint`` / ``_load_checkpoint`` (the tracker's
state). Modules among these imported later are wrapped right after their import. It is
idempotent, :func:`uninstall` undoes it, :func:`is_installed` checks every binding and
:func:`unpatched` lists the ones that are verl's own.

Running inside verl's Ray driver. ``compute_advantage`` runs inside verl's ``TaskRunner``, a
Ray actor, i.e. another process than the one you launch, so :func:`install` must run there:

* ``python -m rewardagg.integrations.verl <hydra overrides>`` (recommended): installs in the
  launching process, adds ``worker_process_setup_hook=rewardagg.integrations.verl.setup_hook``
  to ``ray_kwargs.ray_init.runtime_env`` (for our estimators, and for verl's ``gdpo`` on the
  v1 trainer) and calls verl's own ``main_ppo.main``. Bad settings fail before Ray starts.
* your own launcher: ``ray.init(runtime_env={"worker_process_setup_hook":
  "rewardagg.integrations.verl.setup_hook", ...})`` or the Hydra override
  ``+ray_kwargs.ray_init.runtime_env.worker_process_setup_hook=rewardagg.integrations.verl.setup_hook``
  with ``python -m verl.trainer.main_ppo`` (or a recipe's ``main_ppo``). :func:`setup_hook`
  is cheap: it installs only in the processes that import verl's trainers. With an already
  running Ray cluster (``ray.init(address=...)``) the hook must be in the job's runtime env.

Trainer paths (verl 0.9.1), all tested on CPU with verl's own code:

* v1 trainer (``trainer.use_v1=True``, ``TaskRunnerV1``, every ``trainer.v1.trainer_mode``):
  ``PPOTrainer._compute_advantage`` on a real TransferQueue, the components stored by
  verl's agent loop (``extra_fields["reward_extra_info"]``) or as fields of their own (a
  colocated reward model), in a Ray worker set up by the hook; verl's ``gdpo`` gets them
  too, and equals itself on the legacy trainer.
* legacy trainer (``trainer.use_v1=False``, ``RayPPOTrainer`` via ``main_ppo_v0``).
* separation recipe (``SeparateRayPPOTrainer._fit_compute_advantage``, used by
  one-step-off-policy and fully-async training).

What the CPU tests cannot run is a whole training step (rollout engines and model workers
need GPUs); the advantage step, the metrics, the checkpoints and the hook are verl's own
code paths here.

References:
    Montero, Jurczyk, Dhingra, "RVPO: Risk-Sensitive Alignment via Variance
    Regularization", 2026, https://arxiv.org/abs/2605.05750
"""

from __future__ import annotations

import importlib
from typing import Any

from rewardagg.integrations._hooks import lazy_attribute, run_after_import

__all__ = [
    "CONSTRAINTS_FILE",
    "ESTIMATORS",
    "SETUP_HOOK",
    "RewardAggVerlSettings",
    "compute_rewardagg_advantage",
    "compute_rvpo_advantage",
    "constraint_tracker",
    "install",
    "is_installed",
    "last_info",
    "reset_constraint_trackers",
    "run_controller",
    "setup_hook",
    "uninstall",
    "unpatched",
]

#: Estimator names this adapter adds to verl.
ESTIMATORS = ("rvpo", "rewardagg")
#: Dotted path to give Ray as ``runtime_env["worker_process_setup_hook"]``.
SETUP_HOOK = "rewardagg.integrations.verl.setup_hook"

# Everything else lives in ``_adapter``, which imports verl; this file stays light so
# that Ray can run :func:`setup_hook` in every worker process cheaply.
_LAZY = frozenset(__all__) - {"ESTIMATORS", "SETUP_HOOK", "setup_hook"}
_TRIGGER = "verl.trainer.ppo.ray_trainer"
#: verl's v1 trainer module: it imports ``_TRIGGER`` while it loads, so ``install()`` runs
#: again once it has finished (its ``PPOTrainer`` is defined only then).
_V1_TRIGGER = "verl.trainer.ppo.v1.trainer_base"


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return sorted(__all__)


def _install() -> None:
    importlib.import_module(f"{__name__}._adapter").install()


def setup_hook() -> None:
    """Ray ``worker_process_setup_hook``: ``install()`` in this worker process.

    Installs at once if ``verl.trainer.ppo.ray_trainer`` is already imported,
    otherwise right after it is, and again right after verl's v1 trainer
    (``verl.trainer.ppo.v1.trainer_base``) is, so Ray workers that import neither (rollout
    engines, ...) pay nothing: this module imports neither verl nor torch.
    """
    run_after_import(_TRIGGER, _install)
    run_after_import(_V1_TRIGGER, _install)
