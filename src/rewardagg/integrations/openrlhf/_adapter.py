"""Implementation of :mod:`rewardagg.integrations.openrlhf` (imports openrlhf).

See the package docstring.
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
import warnings
from collections.abc import Mapping
from importlib import metadata
from types import SimpleNamespace
from typing import Any

import torch
from openrlhf.trainer.ppo_utils import experience_maker as _em
from openrlhf.trainer.ppo_utils.length_penalty import apply_length_penalties
from packaging.version import InvalidVersion, Version

import rewardagg
from rewardagg.integrations import _controllers as ctl
from rewardagg.integrations import _patching
from rewardagg.integrations._hooks import run_after_import
from rewardagg.integrations._settings import (
    DEFAULT_METHOD,
    RVPO_METHOD,
    SHARED_OPTIONS,
    Spelling,
    check_eps,
    check_weights,
    parse_options,
    split_settings,
)
from rewardagg.integrations.openrlhf import ESTIMATORS, SETUP_HOOK, TRAINER_MODULE

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
    "install_checkpoint_hooks",
    "is_installed",
    "run_controller",
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
    # adaptive reward weights (rewardagg.AdaptiveWeights; None: off / its defaults)
    **{name: None for name in ctl.ADAPTIVE_OPTIONS},
}
SPELLING = Spelling(method="--rewardagg.method", param="--rewardagg.{name}", group="--rewardagg")
#: The reward's name for constraints when ``--rewardagg.reward_keys`` is not set (K = 1).
REWARD_NAME = "reward"
#: The ``client_states`` key (OpenRLHF's checkpoint states) of the tracker's state.
CHECKPOINT_KEY = "rewardagg_constraints"
#: The ``client_states`` key of any other controller's state (adaptive weights, or both).
CONTROLLER_KEY = "rewardagg_controller"

#: The OpenRLHF versions this adapter is tested on; others get a warning at import.
SUPPORTED_OPENRLHF = ">=0.11,<0.12"
_MIN_OPENRLHF, _MAX_OPENRLHF = Version("0.11"), Version("0.12")
#: Where OpenRLHF turns a rollout's ``extra_logs`` into ``experience.info`` tensors.
SAMPLES_MODULE = "openrlhf.trainer.ppo_utils.samples_generator"

_lock = threading.RLock()
_state: dict[str, Any] = {"warned_penalty": False}


def check_openrlhf_version(found: str | None = None) -> bool:
    """Whether ``found`` (default: the installed openrlhf) is in :data:`SUPPORTED_OPENRLHF`;
    a ``UserWarning`` says so when it is not. The estimators run OpenRLHF's own
    ``compute_advantages_and_returns`` after the advantage scalar, and the test suite checks
    that path against its ``group_norm``, so another version may work; it is not tested."""
    if found is None:
        try:
            found = metadata.version("openrlhf")
        except metadata.PackageNotFoundError:
            found = "unknown"
    try:
        ok = _MIN_OPENRLHF <= Version(Version(found).base_version) < _MAX_OPENRLHF
    except InvalidVersion:
        ok = False
    if not ok:
        warnings.warn(
            f"rewardagg.integrations.openrlhf is tested on openrlhf{SUPPORTED_OPENRLHF} "
            f"(0.11.2); found openrlhf {found}. It calls OpenRLHF's own advantage code after "
            "its own step; run tests/test_integration_openrlhf.py against this version.",
            UserWarning,
            stacklevel=2,
        )
    return ok


check_openrlhf_version()


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
    if isinstance(s.weights, (int, float, str)):
        s.weights = [s.weights]
    if s.weights is not None and len(s.weights) != n_keys:
        raise ValueError(f"--rewardagg.weights has {len(s.weights)} values for {n_keys} reward(s)")
    s.weights = check_weights(s.weights, "--rewardagg.weights", n_keys)
    s.eps = check_eps(s.eps, "--rewardagg.eps")
    s.pipeline, s.constraints = parse_options(split.options, method=s.method, spelling=SPELLING)
    s.reward_names = list(s.reward_keys or [REWARD_NAME])
    if s.constraints is not None:  # unknown rewards fail with the flags
        s.constraints.resolve(s.reward_names, SPELLING.option("constraints"))
    s.adaptive = ctl.parse_adaptive({k: getattr(s, k) for k in ctl.ADAPTIVE_OPTIONS}, SPELLING.of)
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
    tracker: Any = None,
) -> tuple[list[torch.Tensor], rewardagg.AggregationInfo | None]:
    """One advantage per sample for OpenRLHF experiences, split like ``experiences``.

    Builds the ``(prompts, n_samples_per_prompt, K)`` reward tensor in prompt order (from
    ``experience.info[key]`` for each of ``--rewardagg.reward_keys``, or
    ``experience.rewards`` for K = 1) and applies :func:`rewardagg.advantages` with
    contiguous groups of ``n_samples_per_prompt`` and the order, centring and conflict
    filter of the settings. With a ``tracker`` (any controller: a
    :class:`rewardagg.ConstraintTracker`, :class:`rewardagg.AdaptiveWeights` or both
    combined) the batch gets its current multipliers and weights (times
    ``--rewardagg.weights``), then it takes one step on the batch (this process holds the
    whole step's experiences, so no reduction across ranks is needed).

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
    kwargs: dict[str, Any] = dict(
        method=s.method,
        group_size=n,
        weights=s.weights,
        eps=float(s.eps),
        correction=1,
        batch_norm=not s.no_batch_norm,
        return_info=True,
        **s.pipeline.kwargs(),
        **s.method_params,
    )
    if tracker is not None:
        ctl.check_batch(tracker, rows)  # a batch it would reject fails before any change
        kwargs = ctl.controlled_kwargs(kwargs, tracker.advantage_kwargs())
    adv, info = rewardagg.advantages(rows, **kwargs)
    if tracker is not None:
        tracker.update(rows)
    adv = adv.reshape(-1)[indices].to(torch.float32)
    return list(adv.split(exp_len)), info


def _length_penalties(experiences: list, args: Any, settings: SimpleNamespace) -> None:
    """OpenRLHF's own length penalties on the scalar rewards (at least fp32, as OpenRLHF);
    with ``reward_keys`` they do not reach the advantage, which a warning says once."""
    for exp in experiences:
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


def _no_length_penalties(experiences: list, args: Any) -> None:
    """Stands in for OpenRLHF's ``apply_length_penalties`` while its own method runs on the
    advantages (the penalties went into the rewards before the aggregation)."""


def _host_post_processing(maker: Any, experiences: list, advantages: list) -> None:
    """OpenRLHF's own ``compute_advantages_and_returns`` after its reward shaping, on our
    per-sample advantages: ``compute_reward`` (clipping, KL penalty on the last action
    token), ``get_cumulative_returns`` with gamma 1, ``advantages = returns``,
    ``info["return"]``, ``kl = None``; exactly its ``group_norm`` path.

    The method runs with ``experience.rewards`` set to the advantages, the experience maker's
    estimator set to ``group_norm`` (its per-token path) while ``args`` keeps ours (which no
    shaping branch of OpenRLHF matches, so the advantages pass through unchanged), and its
    length penalties switched off; the scalar rewards and their ``group_reward_std`` are put
    back afterwards.
    """
    current = _em.RemoteExperienceMaker.__dict__["compute_advantages_and_returns"]
    original = current.__wrapped__ if _patching.is_wrapper(current) else current
    rewards = [exp.rewards for exp in experiences]
    stds = [exp.info.get("group_reward_std") for exp in experiences]
    for exp, adv in zip(experiences, advantages, strict=True):
        exp.rewards = adv.to(exp.rewards.device, exp.rewards.dtype)
    estimator, penalties = maker.advantage_estimator, _em.apply_length_penalties
    with _lock:
        maker.advantage_estimator, _em.apply_length_penalties = "group_norm", _no_length_penalties
        try:
            original(maker, experiences)
        finally:
            maker.advantage_estimator, _em.apply_length_penalties = estimator, penalties
            for exp, reward, std in zip(experiences, rewards, stds, strict=True):
                exp.rewards = reward
                if std is None:
                    exp.info.pop("group_reward_std", None)
                else:
                    exp.info["group_reward_std"] = std


def _nan_free_info(experiences: list, keys: list[str]) -> None:
    """Each reward key's ``experience.info`` entry without NaN, so that the mean OpenRLHF
    logs for it is the mean over the present values: a missing value becomes the mean of
    the present values of the step's batch (0 when the reward is missing everywhere)."""
    for key in keys:
        values = torch.cat([exp.info[key].reshape(-1).double() for exp in experiences])
        missing = torch.isnan(values)
        if not bool(missing.any()):
            continue
        fill = float(values[~missing].mean()) if bool((~missing).any()) else 0.0
        for exp in experiences:
            value = exp.info[key]
            exp.info[key] = torch.where(torch.isnan(value), torch.full_like(value, fill), value)


def _compute_rewardagg(self, experiences: list) -> list:
    """OpenRLHF's group_norm path with the advantage scalar from rewardagg."""
    args = self.strategy.args
    settings = settings_from_args(args)
    _length_penalties(experiences, args, settings)

    n = args.rollout.n_samples_per_prompt
    exp_len = [len(exp.index) for exp in experiences]
    stds = None
    if n > 1:  # the same group_reward_std OpenRLHF logs (of the scalar rewards)
        indices = torch.tensor(list(itertools.chain.from_iterable(e.index for e in experiences)))
        raw = torch.cat([exp.rewards for exp in experiences], dim=0)
        ordered = torch.empty_like(raw)
        ordered[indices] = raw
        stds = ordered.reshape(-1, n).std(-1, keepdim=True).repeat(1, n).reshape(-1)[indices]

    tracker = _run_tracker(self, settings)
    per_exp, info = aggregate_experiences(experiences, args, settings, tracker)
    metrics = {} if info is None else info.to_metrics(settings.reward_keys, prefix="rewardagg/")
    if tracker is not None:
        metrics.update(tracker.metrics(prefix="rewardagg/"))
    if settings.reward_keys:
        _nan_free_info(experiences, settings.reward_keys)
    _host_post_processing(self, experiences, per_exp)
    per_exp_stds = [None] * len(experiences) if stds is None else stds.split(exp_len)
    for exp, std in zip(experiences, per_exp_stds, strict=True):
        if std is not None:
            exp.info["group_reward_std"] = std
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

    return compute_advantages_and_returns


# -- a reward_func's None: a missing reward (NaN), not a crash in OpenRLHF ------------------


def _reward_keys(args: Any) -> list[str]:
    """``--rewardagg.reward_keys`` of our estimators' runs (empty for other estimators)."""
    if args.algo.advantage.estimator not in ESTIMATORS:
        return []
    keys = getattr(getattr(args, "rewardagg", None), "reward_keys", None) or []
    return [keys] if isinstance(keys, str) else list(keys)


def missing_as_nan(extra_logs: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
    """``extra_logs`` with a ``None`` of each reward key replaced by NaN (a missing reward);
    other entries unchanged."""
    return {k: math.nan if v is None and k in keys else v for k, v in extra_logs.items()}


def _wrap_process_response(original):
    def _process_response_into_experience(self, response, **generate_kwargs):
        keys = _reward_keys(self.args)
        extra_logs = response.get("extra_logs") if isinstance(response, Mapping) else None
        if keys and extra_logs:
            response = {**response, "extra_logs": missing_as_nan(extra_logs, keys)}
        return original(self, response, **generate_kwargs)

    return _process_response_into_experience


# -- the controller (constraints, adaptive weights, both): one per run, on the experience
# -- maker; saved with checkpoints --------------------------------------------------------


def _run_tracker(maker: Any, settings: SimpleNamespace) -> Any:
    """The experience maker's controller for these settings (created on first use, from a
    restored checkpoint state when there is one), or None without one."""
    if settings.constraints is None and settings.adaptive is None:
        return None
    key = (settings.constraints, settings.adaptive, tuple(settings.reward_names))
    with _lock:
        if getattr(maker, "_rewardagg_tracker_key", None) != key:
            constraints = settings.constraints
            tracker = ctl.build_controller(
                None
                if constraints is None
                else constraints.tracker(settings.reward_names, SPELLING.option("constraints")),
                settings.adaptive,
                settings.reward_names,
            )
            restored = getattr(maker, "_rewardagg_restore", None)
            if restored is not None and tracker is not None:
                tracker.load_state_dict(restored)
                maker._rewardagg_restore = None
            maker._rewardagg_tracker, maker._rewardagg_tracker_key = tracker, key
        return maker._rewardagg_tracker


def run_controller(experience_maker: Any) -> Any:
    """The run's controller (:class:`rewardagg.AdaptiveWeights`,
    :class:`rewardagg.ConstraintTracker`, or both combined), kept on OpenRLHF's
    ``RemoteExperienceMaker`` (``trainer.experience_maker``); ``None`` before the first
    batch and without one."""
    return getattr(experience_maker, "_rewardagg_tracker", None)


def constraint_tracker(experience_maker: Any) -> rewardagg.ConstraintTracker | None:
    """The run's :class:`rewardagg.ConstraintTracker`, kept on OpenRLHF's
    ``RemoteExperienceMaker`` (``trainer.experience_maker``); ``None`` before the first
    batch and without constraints."""
    return ctl.find_part(run_controller(experience_maker), rewardagg.ConstraintTracker)


def _state_key(controller: Any) -> str:
    return CHECKPOINT_KEY if isinstance(controller, rewardagg.ConstraintTracker) else CONTROLLER_KEY


def _wrap_save_logs(original):
    def save_logs_and_checkpoints(self, global_step, logs_dict=None, client_states=None):
        tracker = run_controller(getattr(self, "experience_maker", None))
        if tracker is not None:  # the same dict reaches save_best_checkpoint
            client_states = {} if client_states is None else client_states
            client_states[_state_key(tracker)] = tracker.state_dict()
        return original(self, global_step, logs_dict, client_states)

    return save_logs_and_checkpoints


def _wrap_init_states(original):
    def init_checkpoint_states(self):
        states = original(self)
        saved = None
        if isinstance(states, dict):
            saved = states.get(CHECKPOINT_KEY, states.get(CONTROLLER_KEY))
        maker = getattr(self, "experience_maker", None)
        if saved is not None and maker is not None:
            tracker = run_controller(maker)
            if tracker is not None:
                tracker.load_state_dict(saved)
            else:  # the tracker is made with the first batch's settings
                maker._rewardagg_restore = saved
        return states

    return init_checkpoint_states


_MAKER_MODULE = "openrlhf.trainer.ppo_utils.experience_maker"
_MAKER_METHOD = (_MAKER_MODULE, "RemoteExperienceMaker", "compute_advantages_and_returns")
#: ``(module, class, method, wrap)`` on OpenRLHF's trainer side, wrapped once the module
#: has loaded: the checkpoints carry the constraint tracker's state, and a reward_func's
#: ``None`` for a reward key becomes a missing reward before OpenRLHF makes a tensor of it.
TRAINER_PATCHES = (
    (TRAINER_MODULE, "BasePPOTrainer", "save_logs_and_checkpoints", _wrap_save_logs),
    (TRAINER_MODULE, "BasePPOTrainer", "init_checkpoint_states", _wrap_init_states),
    (
        SAMPLES_MODULE,
        "SamplesGenerator",
        "_process_response_into_experience",
        _wrap_process_response,
    ),
)


def install_checkpoint_hooks() -> None:
    """Wrap OpenRLHF's trainer side (:data:`TRAINER_PATCHES`):
    ``BasePPOTrainer.save_logs_and_checkpoints`` (the tracker's state joins OpenRLHF's
    ``client_states``), ``init_checkpoint_states`` (restored from them) and
    ``SamplesGenerator._process_response_into_experience`` (``None`` -> NaN for the reward
    keys). Now if ``openrlhf.trainer.ppo_trainer`` is loaded, else right after it is."""
    if TRAINER_MODULE not in sys.modules:
        run_after_import(TRAINER_MODULE, install_checkpoint_hooks)
        return
    with _lock:  # a module still importing is patched by the setup hook's trigger
        for module, cls, attr, wrap in TRAINER_PATCHES:
            _patching.wrap_method(module, cls, attr, wrap)


def _uninstall_checkpoint_hooks() -> None:
    for module, cls, attr, _ in TRAINER_PATCHES:
        _patching.unwrap_method(module, cls, attr)


def install() -> None:
    """Wrap ``RemoteExperienceMaker.compute_advantages_and_returns`` for ``rvpo`` /
    ``rewardagg``; other estimators run OpenRLHF's method unchanged. Also wraps OpenRLHF's
    trainer side (:func:`install_checkpoint_hooks`). Idempotent; :func:`uninstall` reverts
    it."""
    with _lock:
        _patching.wrap_method(*_MAKER_METHOD, _wrap)
    install_checkpoint_hooks()


def uninstall() -> None:
    """Undo :func:`install`."""
    with _lock:
        _patching.unwrap_method(*_MAKER_METHOD)
        _uninstall_checkpoint_hooks()


def is_installed() -> bool:
    """Whether :func:`install` is in effect in this process: the experience maker's method
    and, where their modules are loaded, the trainer side's are wrapped."""
    methods = [_MAKER_METHOD, *(patch[:3] for patch in TRAINER_PATCHES)]
    return bool(_patching.method_is_wrapped(*_MAKER_METHOD)) and all(
        _patching.method_is_wrapped(*m) is not False for m in methods
    )
