"""Implementation of :mod:`rewardagg.integrations.openrlhf` (imports openrlhf).

See the package docstring.
"""

from __future__ import annotations

import itertools
import sys
import threading
from types import SimpleNamespace
from typing import Any

import torch
from openrlhf.models.utils import compute_reward
from openrlhf.trainer.ppo_utils import experience_maker as _em
from openrlhf.trainer.ppo_utils.length_penalty import apply_length_penalties

import rewardagg
from rewardagg.integrations._hooks import run_after_import
from rewardagg.integrations._settings import (
    DEFAULT_METHOD,
    RVPO_METHOD,
    SHARED_OPTIONS,
    Spelling,
    parse_options,
    split_settings,
)
from rewardagg.integrations.openrlhf import ESTIMATORS, SETUP_HOOK, TRAINER_MODULE

__all__ = [
    "CHECKPOINT_KEY",
    "DEFAULTS",
    "ESTIMATORS",
    "SETUP_HOOK",
    "aggregate_experiences",
    "constraint_tracker",
    "install",
    "install_checkpoint_hooks",
    "is_installed",
    "settings_from_args",
    "uninstall",
]

#: ``args.rewardagg`` defaults of the adapter's own options (what the launcher's flags for
#: them default to). Method parameters are not listed: ``--rewardagg.<param>`` exists for
#: every parameter of every registered method, default ``None`` (the method's default).
DEFAULTS = {
    "reward_keys": None,
    "weights": None,
    "method": DEFAULT_METHOD,
    "eps": 1e-9,
    "no_batch_norm": False,
    # shared with the other adapters (None: the method's / the tracker's default)
    **{name: None for name in SHARED_OPTIONS},
}
SPELLING = Spelling(method="--rewardagg.method", param="--rewardagg.{name}", group="--rewardagg")
#: The reward's name for constraints when ``--rewardagg.reward_keys`` is not set (K = 1).
REWARD_NAME = "reward"
#: The ``client_states`` key (OpenRLHF's checkpoint states) of the tracker's state.
CHECKPOINT_KEY = "rewardagg_constraints"

_lock = threading.RLock()
_state: dict[str, Any] = {"original": None, "warned_penalty": False}


def settings_from_args(args: Any) -> SimpleNamespace:
    """Validated ``args.rewardagg`` settings (defaults filled in) for ``args``' estimator.

    ``args.rewardagg`` is split by the adapters' shared parser
    (``rewardagg.integrations._settings``): ``method``, the options in :data:`DEFAULTS`
    and any parameter the method's table entry takes (a string, as an unknown
    ``--rewardagg.<param>`` flag arrives, is converted to the parameter's type). ``None``
    means not set.

    Returns:
        A namespace with the :data:`DEFAULTS` keys, ``method_params`` (the parameters
        that were set, validated; the method's defaults fill in the rest), ``pipeline``
        (order, center, conflict filter), ``constraints`` (``None`` without) and
        ``reward_names`` (``reward_keys``, or ``["reward"]``).
    """
    estimator = args.algo.advantage.estimator
    given = getattr(args, "rewardagg", None)
    given = dict(vars(given)) if given is not None else {}
    method = given.get("method")
    if estimator == "rvpo" and method not in (None, RVPO_METHOD):
        raise ValueError(
            f"--algo.advantage.estimator rvpo is rewardagg's {RVPO_METHOD}; got "
            f"--rewardagg.method {method}: use --algo.advantage.estimator rewardagg for "
            "other methods"
        )
    host = [k for k in DEFAULTS if k != "method"]
    split = split_settings(given, spelling=SPELLING, host_options=host)
    s = SimpleNamespace(**{**DEFAULTS, **split.options})
    s.method = split.method
    s.method_params = split.params
    if isinstance(s.reward_keys, str):
        s.reward_keys = [s.reward_keys]
    n_keys = len(s.reward_keys) if s.reward_keys else 1
    if s.weights is not None and len(s.weights) != n_keys:
        raise ValueError(f"--rewardagg.weights has {len(s.weights)} values for {n_keys} reward(s)")
    s.pipeline, s.constraints = parse_options(split.options, method=s.method, spelling=SPELLING)
    s.reward_names = list(s.reward_keys or [REWARD_NAME])
    if s.constraints is not None:  # unknown rewards fail with the flags
        s.constraints.resolve(s.reward_names, SPELLING.option("constraints"))
    return s


def _info_column(experiences: list, key: str) -> torch.Tensor:
    cols = []
    for j, exp in enumerate(experiences):
        if key not in exp.info:
            raise KeyError(
                f"rewardagg: reward key {key!r} is not in experience.info of experience {j} "
                f"(has: {sorted(exp.info)}); return it from reward_func in "
                "'extra_logs' for every sample"
            )
        cols.append(torch.as_tensor(exp.info[key]).reshape(-1).to("cpu", torch.float64))
    return torch.cat(cols)


@torch.no_grad()
def aggregate_experiences(
    experiences: list,
    args: Any,
    settings: SimpleNamespace | None = None,
    tracker: rewardagg.ConstraintTracker | None = None,
) -> tuple[list[torch.Tensor], rewardagg.AggregationInfo | None]:
    """One advantage per sample for OpenRLHF experiences, split like ``experiences``.

    Builds the ``(prompts, n_samples_per_prompt, K)`` reward tensor in prompt order (from
    ``experience.info[key]`` for each of ``--rewardagg.reward_keys``, or
    ``experience.rewards`` for K = 1) and applies :func:`rewardagg.advantages` with
    contiguous groups of ``n_samples_per_prompt`` and the order, centring and conflict
    filter of the settings. With a ``tracker`` the batch gets its current multipliers,
    then the tracker takes one step on the batch means (this process holds the whole
    step's experiences, so no reduction across ranks is needed).

    Returns:
        ``(per_experience_advantages, info)``: a list of ``(B_j,)`` float tensors in each
        experience's sample order, and the batch's :class:`rewardagg.AggregationInfo`
        (``None`` when the core computes none).
    """
    s = settings or settings_from_args(args)
    n = int(args.rollout.n_samples_per_prompt)
    exp_len = [len(exp.index) for exp in experiences]
    indices = torch.tensor(list(itertools.chain.from_iterable(exp.index for exp in experiences)))
    if s.reward_keys:
        raw = torch.stack([_info_column(experiences, k) for k in s.reward_keys], dim=1)
    else:
        raw = torch.cat([exp.rewards.reshape(-1) for exp in experiences]).to(torch.float64)[:, None]
    total = raw.shape[0]
    if total % n:
        raise ValueError(
            f"rewardagg: {total} samples are not whole groups of n_samples_per_prompt={n}"
        )
    ordered = torch.empty_like(raw)
    ordered[indices] = raw  # prompt order, as OpenRLHF's group_norm
    grouped = ordered.reshape(-1, n, raw.shape[1])  # (prompts, n_samples, K)
    rows = grouped.reshape(-1, raw.shape[1])
    constraints: dict[str, Any] = {}
    if tracker is not None:
        constraints = dict(multipliers=tracker.multipliers, reward_names=s.reward_names)
    adv, info = rewardagg.advantages(
        rows,
        method=s.method,
        group_size=n,
        weights=s.weights,
        eps=float(s.eps),
        correction=1,
        batch_norm=not s.no_batch_norm,
        return_info=True,
        **constraints,
        **s.pipeline.kwargs(),
        **s.method_params,
    )
    if tracker is not None:
        tracker.update(rows)
    adv = adv.reshape(-1)[indices].to(torch.float32)
    return list(adv.split(exp_len)), info


def _compute_rewardagg(self, experiences: list) -> list:
    """OpenRLHF's group_norm path with the advantage scalar from rewardagg."""
    args = self.strategy.args
    settings = settings_from_args(args)
    for exp in experiences:  # as OpenRLHF: at least fp32 for rewards
        exp.rewards = exp.rewards.to(torch.promote_types(exp.rewards.dtype, torch.float32))
    before = [exp.rewards.clone() for exp in experiences]
    apply_length_penalties(experiences, args)
    changed = any(not torch.equal(b, e.rewards) for b, e in zip(before, experiences, strict=True))
    if changed and settings.reward_keys and not _state["warned_penalty"]:
        _em.logger.warning(
            "rewardagg: length penalties changed the scalar rewards, which do not reach the "
            "rewardagg advantage (built from --rewardagg.reward_keys); return the penalty as "
            "a reward component instead"
        )
        _state["warned_penalty"] = True

    n = args.rollout.n_samples_per_prompt
    exp_len = [len(exp.index) for exp in experiences]
    if n > 1:  # the same group_reward_std OpenRLHF logs (of the scalar rewards)
        indices = torch.tensor(list(itertools.chain.from_iterable(e.index for e in experiences)))
        raw = torch.cat([exp.rewards for exp in experiences], dim=0)
        ordered = torch.empty_like(raw)
        ordered[indices] = raw
        stds = ordered.reshape(-1, n).std(-1, keepdim=True).repeat(1, n).reshape(-1)[indices]
        for exp, std in zip(experiences, stds.split(exp_len), strict=True):
            exp.info["group_reward_std"] = std

    tracker = _run_tracker(self, settings)
    per_exp, info = aggregate_experiences(experiences, args, settings, tracker)
    metrics = {} if info is None else info.to_metrics(settings.reward_keys, prefix="rewardagg/")
    if tracker is not None:
        metrics.update(tracker.metrics(prefix="rewardagg/"))
    if args.algo.advantage.gamma != 1.0:
        _em.logger.warning(f"gamma is set to 1.0 for {args.algo.advantage.estimator}")
        args.algo.advantage.gamma = 1.0
    for exp, adv in zip(experiences, per_exp, strict=True):
        reward = compute_reward(
            adv.to(exp.rewards.device),
            self.kl_ctl.value,
            exp.kl,
            action_mask=exp.action_mask,
            reward_clip_range=args.reward.clip_range,
        )
        exp.returns = self.get_cumulative_returns(reward, exp.action_mask, 1.0)
        exp.advantages = exp.returns.clone()
        exp.info["return"] = reward.sum(dim=-1)
        exp.kl = None
        b = len(exp.index)
        for key, value in metrics.items():
            exp.info[key] = torch.full((b,), float(value))
    return experiences


def _wrap(original):
    def compute_advantages_and_returns(self, experiences):
        if self.strategy.args.algo.advantage.estimator in ESTIMATORS:
            with torch.no_grad():
                return _compute_rewardagg(self, experiences)
        return original(self, experiences)

    setattr(compute_advantages_and_returns, "__wrapped__", original)  # noqa: B010
    setattr(compute_advantages_and_returns, "__rewardagg_wrapper__", True)  # noqa: B010
    compute_advantages_and_returns.__doc__ = original.__doc__
    return compute_advantages_and_returns


# -- the constraint tracker: one per run, on the experience maker; saved with checkpoints ---


def _run_tracker(maker: Any, settings: SimpleNamespace) -> rewardagg.ConstraintTracker | None:
    """The experience maker's tracker for these settings (created on first use, from a
    restored checkpoint state when there is one), or None without constraints."""
    if settings.constraints is None:
        return None
    key = (settings.constraints, tuple(settings.reward_names))
    with _lock:
        if getattr(maker, "_rewardagg_tracker_key", None) != key:
            tracker = settings.constraints.tracker(
                settings.reward_names, SPELLING.option("constraints")
            )
            restored = getattr(maker, "_rewardagg_restore", None)
            if restored is not None:
                tracker.load_state_dict(restored)
                maker._rewardagg_restore = None
            maker._rewardagg_tracker, maker._rewardagg_tracker_key = tracker, key
        return maker._rewardagg_tracker


def constraint_tracker(experience_maker: Any) -> rewardagg.ConstraintTracker | None:
    """The run's :class:`rewardagg.ConstraintTracker`, kept on OpenRLHF's
    ``RemoteExperienceMaker`` (``trainer.experience_maker``); ``None`` before the first
    batch and without constraints."""
    return getattr(experience_maker, "_rewardagg_tracker", None)


def _wrap_save_logs(original):
    def save_logs_and_checkpoints(self, global_step, logs_dict=None, client_states=None):
        tracker = constraint_tracker(getattr(self, "experience_maker", None))
        if tracker is not None:  # the same dict reaches save_best_checkpoint
            client_states = {} if client_states is None else client_states
            client_states[CHECKPOINT_KEY] = tracker.state_dict()
        return original(self, global_step, logs_dict, client_states)

    return save_logs_and_checkpoints


def _wrap_init_states(original):
    def init_checkpoint_states(self):
        states = original(self)
        saved = states.get(CHECKPOINT_KEY) if isinstance(states, dict) else None
        maker = getattr(self, "experience_maker", None)
        if saved is not None and maker is not None:
            tracker = constraint_tracker(maker)
            if tracker is not None:
                tracker.load_state_dict(saved)
            else:  # the tracker is made with the first batch's settings
                maker._rewardagg_restore = saved
        return states

    return init_checkpoint_states


_TRAINER_HOOKS = {
    "save_logs_and_checkpoints": _wrap_save_logs,
    "init_checkpoint_states": _wrap_init_states,
}


def install_checkpoint_hooks() -> None:
    """Wrap ``BasePPOTrainer.save_logs_and_checkpoints`` (the tracker's state joins
    OpenRLHF's ``client_states``) and ``init_checkpoint_states`` (restored from them).
    Now if ``openrlhf.trainer.ppo_trainer`` is loaded, else right after it is."""
    module = sys.modules.get(TRAINER_MODULE)
    if module is None:
        run_after_import(TRAINER_MODULE, install_checkpoint_hooks)
        return
    base = getattr(module, "BasePPOTrainer", None)
    if base is None:  # the module is still importing: the setup hook's trigger patches it
        return
    with _lock:
        for attr, wrap in _TRAINER_HOOKS.items():
            current = base.__dict__.get(attr)
            if current is None or getattr(current, "__rewardagg_wrapper__", False):
                continue
            wrapper = wrap(current)
            wrapper.__wrapped__ = current
            wrapper.__rewardagg_wrapper__ = True
            wrapper.__doc__ = current.__doc__
            setattr(base, attr, wrapper)


def _uninstall_checkpoint_hooks() -> None:
    module = sys.modules.get(TRAINER_MODULE)
    base = getattr(module, "BasePPOTrainer", None)
    if base is None:
        return
    for attr in _TRAINER_HOOKS:
        current = base.__dict__.get(attr)
        if getattr(current, "__rewardagg_wrapper__", False):
            setattr(base, attr, current.__wrapped__)


def install() -> None:
    """Wrap ``RemoteExperienceMaker.compute_advantages_and_returns`` for ``rvpo`` /
    ``rewardagg``; other estimators run OpenRLHF's method unchanged. Also installs the
    checkpoint hooks of the constraint tracker (:func:`install_checkpoint_hooks`).
    Idempotent; :func:`uninstall` reverts it."""
    with _lock:
        cls = _em.RemoteExperienceMaker
        current = cls.__dict__["compute_advantages_and_returns"]
        if not getattr(current, "__rewardagg_wrapper__", False):
            _state["original"] = current
            cls.compute_advantages_and_returns = _wrap(current)
    install_checkpoint_hooks()


def uninstall() -> None:
    """Undo :func:`install`."""
    with _lock:
        cls = _em.RemoteExperienceMaker
        current = cls.__dict__["compute_advantages_and_returns"]
        if getattr(current, "__rewardagg_wrapper__", False):
            cls.compute_advantages_and_returns = current.__wrapped__
        _state["original"] = None
        _uninstall_checkpoint_hooks()


def is_installed() -> bool:
    """Whether :func:`install` is in effect in this process."""
    current = _em.RemoteExperienceMaker.__dict__["compute_advantages_and_returns"]
    return bool(getattr(current, "__rewardagg_wrapper__", False))
