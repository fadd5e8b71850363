"""Implementation of :mod:`rewardagg.integrations.verl` (imports verl).

See the package docstring.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Mapping
from enum import Enum
from typing import Any

import numpy as np
import torch
from verl.trainer.ppo import core_algos

import rewardagg
from rewardagg._src.adaptive import merge_weights
from rewardagg.integrations import _controllers as ctl
from rewardagg.integrations import _patching
from rewardagg.integrations._hooks import run_after_import
from rewardagg.integrations._settings import (
    RVPO_METHOD,
    SHARED_OPTIONS,
    Spelling,
    check_choice,
    check_stage_options,
    check_weights,
    parse_options,
    split_settings,
)
from rewardagg.integrations.verl import ESTIMATORS, SETUP_HOOK, _v1

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
    "uninstall",
    "unpatched",
]

logger = logging.getLogger(__name__)


BATCH_NORMS = ("verl", "rows", "none")
#: ``algorithm.rewardagg`` options of the adapter itself and those every adapter shares
#: (order, center, conflict filter, constraints); every other name is ``method`` or a
#: parameter of a registered method (read from the method table when the config is read).
HOST_OPTIONS = ("batch_norm", "singleton", "baseline", "eps", *SHARED_OPTIONS)
#: The reward's name for constraints when ``gdpo_reward_keys`` is not set (K = 1).
SCORE_NAME = "score"
#: The file, in each ``global_step_<N>`` checkpoint folder, with the tracker's state.
CONSTRAINTS_FILE = "rewardagg_constraints.json"
SPELLING = Spelling(
    method="algorithm.rewardagg.method",
    param="algorithm.rewardagg.{name}",
    group="algorithm.rewardagg",
)
#: verl's own estimator that reads the reward components (it gets them on v1 too).
VERL_GDPO = "gdpo"
WEIGHTS_SETTING = "algorithm.gdpo_reward_weights"
_V1_HINT = (
    "verl's v1 trainer (trainer.use_v1=True) passes the reward components to the estimators "
    "only when rewardagg.integrations.verl.install() has run in its TaskRunner process after "
    "verl.trainer.ppo.v1.trainer_base was imported (the launcher's Ray setup hook does this)."
)
_INSTALL_HINT = (
    "Call rewardagg.integrations.verl.install() in the process that runs compute_advantage "
    "(verl's TaskRunner Ray actor): launch with `python -m rewardagg.integrations.verl ...`, "
    "or add runtime_env worker_process_setup_hook="
    f"{SETUP_HOOK!r} to ray.init (Hydra: "
    f"+ray_kwargs.ray_init.runtime_env.worker_process_setup_hook={SETUP_HOOK})."
)

_lock = threading.RLock()
_state: dict[str, Any] = {
    "installed": False,
    "last_info": None,
    "trackers": {},  # one ConstraintTracker per run: (constraints, reward names) -> tracker
    "last_tracker": None,
    # the last estimator call's metrics, for verl's next compute_data_metrics (legacy) or the
    # metrics dict of the v1 trainer's _compute_advantage
    "pending_metrics": {},
    "wrappers": {},  # verl's original function -> its wrapper (one for all its bindings)
}


# --------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------


def _cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg.get(key)`` for DictConfig, verl's dataclass configs and plain mappings."""
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    get = getattr(cfg, "get", None)
    if callable(get):
        try:
            return get(key, default)
        except Exception:  # a struct config that refuses unknown keys
            return default
    return getattr(cfg, key, default)


def _plain(value: Any) -> Any:
    """OmegaConf containers -> Python lists/dicts (without importing omegaconf)."""
    if value is None or isinstance(value, (str, bytes, int, float, bool)):
        return value
    if isinstance(value, Mapping) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__"):
        return [_plain(v) for v in value]
    return value


def _weights(weights: Any, reward_keys: list[str] | None) -> list[float] | None:
    """``algorithm.gdpo_reward_weights``: one per reward key (one without keys), finite,
    non-negative, at least one positive (the core's rule, checked with the config)."""
    if weights is None:
        return None
    if isinstance(weights, (int, float, str)):
        weights = [weights]
    n_keys = len(reward_keys) if reward_keys else 1
    if len(weights) != n_keys:
        raise ValueError(
            f"{WEIGHTS_SETTING} has {len(weights)} entries but algorithm.gdpo_reward_keys "
            f"names {n_keys} reward(s)"
        )
    return check_weights(weights, WEIGHTS_SETTING, n_keys)


class RewardAggVerlSettings:
    """Resolved estimator settings (from ``algorithm.*`` and ``algorithm.rewardagg.*``).

    ``algorithm.rewardagg`` is split by the adapters' shared parser
    (``rewardagg.integrations._settings``): ``method``, the adapter's options
    (``HOST_OPTIONS``) and any parameter the chosen method's table entry takes, so
    ``+algorithm.rewardagg.<param>=...`` works for every registered method's parameters,
    converted and validated here (at config time), not at the first batch.

    Attributes:
        reward_keys: ``non_tensor_batch`` keys of the K components (``None``: K = 1 from
            ``token_level_rewards``).
        weights: ``(K,)`` weights or ``None`` (all ones).
        method: rewardagg method name.
        kind: the method's kind in the table (``"standardized"`` or ``"sum_first"``).
        method_params: the method parameters that were set (validated; the method's
            defaults fill in the rest).
        batch_norm: ``"verl"``, ``"rows"`` or ``"none"``.
        singleton, baseline, eps: stage-1 options.
        pipeline: order, center and conflict filter
            (:class:`~rewardagg.integrations._settings.PipelineOptions`).
        constraints: ``None``, or the constraints and their tracker's settings
            (:class:`~rewardagg.integrations._settings.ConstraintOptions`), their rewards
            checked against ``reward_names``.
        reward_names: the reward columns' names: ``reward_keys``, or ``["score"]``.
    """

    def __init__(self, config: Any, *, estimator: str) -> None:
        keys = _plain(_cfg_get(config, "gdpo_reward_keys"))
        weights = _plain(_cfg_get(config, "gdpo_reward_weights"))
        ra = _plain(_cfg_get(config, "rewardagg")) or {}
        if not isinstance(ra, dict):
            raise TypeError(f"algorithm.rewardagg must be a mapping, got {type(ra).__name__}")
        if keys is not None and isinstance(keys, str):
            keys = [keys]
        self.reward_keys: list[str] | None = [str(k) for k in keys] if keys else None
        self.weights: list[float] | None = _weights(weights, self.reward_keys)
        method = ra.get("method")
        if estimator == "rvpo" and method not in (None, RVPO_METHOD):
            raise ValueError(
                f"adv_estimator 'rvpo' is rewardagg's {RVPO_METHOD}; got "
                f"algorithm.rewardagg.method={method!r}: use adv_estimator=rewardagg for other "
                "methods"
            )
        # adaptive weights: +algorithm.rewardagg.adaptive=true or .adaptive.<tau|beta|...>=...
        self.adaptive = ctl.parse_adaptive_setting(
            ra.pop("adaptive", None), SPELLING.of("adaptive")
        )
        split = split_settings(ra, spelling=SPELLING, host_options=HOST_OPTIONS)
        self.method = split.method
        self.kind = rewardagg.get_aggregator(split.method).kind
        self.method_params = split.params
        options = split.options
        self.batch_norm = check_choice(
            str(options.get("batch_norm", "verl")), SPELLING.of("batch_norm"), BATCH_NORMS
        )
        stage = check_stage_options(
            eps=options.get("eps"),
            singleton=options.get("singleton", "identity"),
            baseline=options.get("baseline", "mean"),
            settings={name: SPELLING.of(name) for name in ("eps", "singleton", "baseline")},
        )
        self.singleton: str = stage["singleton"]
        self.baseline: str = stage["baseline"]
        self.eps: float | None = stage.get("eps")
        self.pipeline, self.constraints = parse_options(
            options, method=self.method, spelling=SPELLING
        )
        self.reward_names = list(self.reward_keys or [SCORE_NAME])
        if self.constraints is not None:  # unknown rewards fail with the config
            self.constraints.resolve(self.reward_names, SPELLING.option("constraints"))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"RewardAggVerlSettings({fields})"


# --------------------------------------------------------------------------------------
# estimators
# --------------------------------------------------------------------------------------


def _column(values: Any, key: str, n: int) -> np.ndarray:
    """One ``non_tensor_batch`` entry -> float64 ``(n,)``, ``None`` -> NaN."""
    arr = np.asarray(values)
    if arr.shape[:1] != (n,):
        raise ValueError(f"non_tensor_batch[{key!r}] has shape {arr.shape}, expected ({n},)")
    if arr.dtype.kind in "biuf":
        return arr.reshape(n).astype(np.float64)
    out = np.empty(n, dtype=np.float64)
    for i, v in enumerate(arr.reshape(n)):
        if v is None:
            out[i] = np.nan
        else:
            try:
                out[i] = float(v)
            except (TypeError, ValueError) as err:
                raise TypeError(
                    f"non_tensor_batch[{key!r}][{i}] = {v!r} is not a number; reward "
                    "components must be numbers, or None for a missing reward"
                ) from err
    return out


def _rewards_matrix(
    settings: RewardAggVerlSettings,
    token_level_rewards: torch.Tensor,
    non_tensor_batch: Mapping[str, Any] | None,
) -> np.ndarray:
    n = token_level_rewards.shape[0]
    if settings.reward_keys is None:  # K = 1: the sequence score
        return token_level_rewards.detach().sum(dim=-1).double().cpu().numpy()[:, None]
    if non_tensor_batch is None:
        raise RuntimeError(
            "rewardagg verl estimator: algorithm.gdpo_reward_keys="
            f"{settings.reward_keys} needs the reward components from non_tensor_batch, but "
            "none was passed: this call did not come through rewardagg's wrapper of verl's "
            f"compute_advantage. {_why_unwrapped()}"
        )
    missing = [k for k in settings.reward_keys if k not in non_tensor_batch]
    if missing:
        hint = (
            f"{_V1_HINT} {_why_unwrapped()}"
            if set(non_tensor_batch) <= {"uid"}
            else (
                "Use reward.reward_manager.name=gdpo and make compute_score return a dict with "
                "these keys."
            )
        )
        raise KeyError(
            f"rewardagg verl estimator: reward key(s) {missing} not in non_tensor_batch "
            f"(available: {sorted(non_tensor_batch)}). {hint}"
        )
    cols = [_column(non_tensor_batch[k], k, n) for k in settings.reward_keys]
    return np.stack(cols, axis=1)


def _has_reward(r: np.ndarray, weights: list[float] | None) -> np.ndarray:
    present = ~np.isnan(r)
    if weights is not None:
        present &= np.asarray(weights, dtype=np.float64)[None, :] > 0
    return present.any(axis=1)


# -- the row scores: the core's, with verl's conventions -----------------------------------


def _row_scores(
    r: np.ndarray,
    index: Any,
    settings: RewardAggVerlSettings,
    *,
    eps: float,
    scale_by_std: bool,
    multipliers: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, Any, np.ndarray]:
    """Stages 1-2 (and 3 for ``batch_norm="rows"``) by the core in float64; 0 for rows
    without reward. ``norm_adv_by_std_in_grpo=False`` is the core's centring-only stage 1
    (``group_scale=False``; grpo's ``scale="none"``), as verl's GDPO and GD2PO read it.

    Returns ``(scores, info, dropped)``: ``dropped`` the rows the conflict filter dropped
    (``info.dropped``; all False without a filter).
    """
    group_ids = np.arange(r.shape[0]) if index is None else index
    params = dict(settings.method_params)
    if settings.kind == "sum_first":
        if not scale_by_std:
            params.setdefault("scale", "none")
    else:
        params["group_scale"] = scale_by_std
    s, info = rewardagg.advantages(
        r,
        method=settings.method,
        group_ids=group_ids,
        weights=settings.weights,
        eps=eps,
        correction=1,
        batch_norm=settings.batch_norm == "rows",
        singleton=settings.singleton,
        baseline=settings.baseline,
        multipliers=multipliers or None,
        reward_names=settings.reward_names if multipliers else None,
        return_info=True,
        **settings.pipeline.kwargs(),
        **params,
    )
    dropped = np.zeros(r.shape[0], bool) if info.dropped is None else info.dropped
    return np.asarray(s, dtype=np.float64), info, dropped


def _whiten_verl(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """verl's ``masked_whiten`` (token-weighted mean, Bessel variance, rsqrt(var + 1e-8))."""
    from verl.utils.torch_functional import masked_whiten

    if float(mask.sum()) < 2:  # verl raises here; there is nothing to whiten
        return torch.zeros_like(values)
    return masked_whiten(values, mask)


# -- controllers (constraint tracker, adaptive weights, both): one per run in the driver ----


def _controller(settings: RewardAggVerlSettings) -> Any:
    """The run's controller for these settings (created on first use), or None."""
    if settings.constraints is None and settings.adaptive is None:
        return None
    key = (settings.constraints, settings.adaptive, tuple(settings.reward_names))
    with _lock:
        controller = _state["trackers"].get(key)
        if controller is None:
            tracker = (
                None
                if settings.constraints is None
                else settings.constraints.tracker(
                    settings.reward_names, SPELLING.option("constraints")
                )
            )
            controller = ctl.build_controller(tracker, settings.adaptive, settings.reward_names)
            _state["trackers"][key] = controller
        _state["last_tracker"] = controller
    return controller


def _tracker(settings: RewardAggVerlSettings) -> rewardagg.ConstraintTracker | None:
    """The run's constraint tracker for these settings (created on first use), or None."""
    return ctl.find_part(_controller(settings), rewardagg.ConstraintTracker)


def run_controller(config: Any = None) -> Any:
    """The controller of a run in this process: its :class:`rewardagg.AdaptiveWeights`
    (``+algorithm.rewardagg.adaptive...``), its :class:`rewardagg.ConstraintTracker`, or both
    combined (:func:`rewardagg.combine`); ``None`` without either. ``config`` as for
    :func:`constraint_tracker`."""
    if config is None:
        return _state["last_tracker"]
    estimator = _name(_cfg_get(config, "adv_estimator", "rewardagg"))
    estimator = estimator if estimator in ESTIMATORS else "rewardagg"
    return _controller(RewardAggVerlSettings(config, estimator=estimator))


def constraint_tracker(config: Any = None) -> rewardagg.ConstraintTracker | None:
    """The :class:`rewardagg.ConstraintTracker` of a run in this process.

    Args:
        config: verl's ``algorithm`` config (``+algorithm.rewardagg.constraints...``); the
            tracker for its constraints, created if needed. ``None``: the tracker the last
            estimator call used.

    Returns:
        ``None`` without constraints (or, without ``config``, before any call).
    """
    return ctl.find_part(run_controller(config), rewardagg.ConstraintTracker)


def reset_constraint_trackers() -> None:
    """Forget every tracker of this process (a new run starts from ``constraint_init``)."""
    with _lock:
        _state["trackers"].clear()
        _state["last_tracker"] = None


def _estimate(
    estimator: str,
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool | None = None,
    config: Any = None,
    non_tensor_batch: Mapping[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    settings = RewardAggVerlSettings(config, estimator=estimator)
    if norm_adv_by_std_in_grpo is None:
        norm_adv_by_std_in_grpo = bool(_cfg_get(config, "norm_adv_by_std_in_grpo", True))
    eps = settings.eps if settings.eps is not None else float(epsilon)
    with torch.no_grad():
        r = _rewards_matrix(settings, token_level_rewards, non_tensor_batch)
        controller = _controller(settings)
        controls = {} if controller is None else controller.advantage_kwargs()
        if controller is not None:
            ctl.check_batch(controller, r)  # a batch it would reject fails before any change
        if "weights" in controls:  # adaptive weights times gdpo_reward_weights, this batch
            settings = copy.copy(settings)
            settings.weights = [
                float(w) for w in merge_weights(settings.weights, controls["weights"])
            ]
        s, info, dropped = _row_scores(
            r,
            index,
            settings,
            eps=eps,
            scale_by_std=norm_adv_by_std_in_grpo,
            multipliers=controls.get("multipliers"),
        )
        if controller is not None:  # the driver holds the whole batch: no reduction needed
            controller.update(r)
        _state["last_info"] = info
        _state["pending_metrics"] = _metrics(settings, r, info, controller, dropped)
        mask = response_mask.to(token_level_rewards.dtype)
        keep = _has_reward(r, settings.weights) & ~dropped
        mask = mask * torch.as_tensor(keep, device=mask.device).to(mask.dtype)[:, None]
        scores = torch.as_tensor(s, device=mask.device).to(token_level_rewards.dtype)
        adv = scores[:, None] * mask
        if settings.batch_norm == "verl" and settings.kind != "sum_first":
            adv = _whiten_verl(adv, mask) * mask
    return adv, adv


def _reward_metrics(r: np.ndarray, names: list[str], prefix: str = "rewardagg/") -> dict:
    """Per-reward curves of a batch, as verl logs ``gdpo/<key>/*`` for its own ``gdpo``:
    ``<prefix>reward_mean|reward_std|reward_min|reward_max/<name>`` over the present values
    (left out for a reward missing in every row) and ``<prefix>reward_missing/<name>``, the
    share of rows where it is missing."""
    out: dict[str, float] = {}
    for name, column in zip(names, np.asarray(r, dtype=np.float64).T, strict=True):
        present = column[~np.isnan(column)]
        out[f"{prefix}reward_missing/{name}"] = 1.0 - present.size / max(column.size, 1)
        if present.size:
            out[f"{prefix}reward_mean/{name}"] = float(present.mean())
            out[f"{prefix}reward_std/{name}"] = float(present.std())
            out[f"{prefix}reward_min/{name}"] = float(present.min())
            out[f"{prefix}reward_max/{name}"] = float(present.max())
    return out


def _metrics(settings, r, info, tracker, dropped) -> dict[str, float]:
    """What joins verl's step metrics: the core's diagnostics, the per-reward curves, the
    conflict filter's and the constraint tracker's numbers, all under ``rewardagg/``."""
    out = _reward_metrics(r, settings.reward_names)
    if info is not None:
        out.update(info.to_metrics(settings.reward_names, prefix="rewardagg/"))
    if tracker is not None:
        out.update(tracker.metrics(prefix="rewardagg/"))
    return out


def compute_rewardagg_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool | None = None,
    config: Any = None,
    non_tensor_batch: Mapping[str, Any] | None = None,
    batch: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""verl advantage estimator ``"rewardagg"``: any rewardagg method on verl's batch.

    .. math::

        Z_{ik} = \frac{R_{ik} - \mu_{g(i)k}}{\sigma_{g(i)k} + \varepsilon}, \quad
        S_i = \operatorname{agg}_k(Z_{ik}; w), \quad
        A_{it} = \operatorname{whiten}_{\text{mask}}(S_i \, m_{it}) \, m_{it}

    with :math:`R_{ik}` = ``non_tensor_batch[gdpo_reward_keys[k]][i]``, :math:`g(i)` =
    ``index[i]`` (verl's ``uid``), :math:`w` = ``gdpo_reward_weights``, :math:`m` =
    ``response_mask``, :math:`\varepsilon` = ``epsilon`` and ``agg`` the reducer of
    ``algorithm.rewardagg.method`` (default ``softmin``).

    Args:
        token_level_rewards: ``(B, T)``; used only when no ``gdpo_reward_keys`` are set
            (K = 1: its row sums).
        response_mask: ``(B, T)`` response-token mask.
        index: ``(B,)`` group labels (``uid``); ``None``: every row is its own group.
        epsilon: stage-1 epsilon (verl passes 1e-6).
        norm_adv_by_std_in_grpo: ``False`` only centres in the group; ``None`` reads
            ``config.norm_adv_by_std_in_grpo`` (default ``True``).
        config: verl's ``algorithm`` config.
        non_tensor_batch: ``DataProto.non_tensor_batch`` with the reward components.
        batch: unused (accepted for verl's calling convention).
        **kwargs: other keyword arguments verl may pass (ignored).

    Returns:
        ``(advantages, returns)``, both the same ``(B, T)`` tensor, zero outside
        ``response_mask``.
    """
    return _estimate(
        "rewardagg",
        token_level_rewards,
        response_mask,
        index,
        epsilon,
        norm_adv_by_std_in_grpo,
        config,
        non_tensor_batch,
    )


def compute_rvpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool | None = None,
    config: Any = None,
    non_tensor_batch: Mapping[str, Any] | None = None,
    batch: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""verl advantage estimator ``"rvpo"``: RVPO's SoftMin over the group z-scores.

    :func:`compute_rewardagg_advantage` with RVPO's SoftMin as the method:
    :math:`S_i = -\frac{1}{\kappa}\log\sum_k v_{ik} e^{-\kappa Z_{ik}}` with
    :math:`\kappa` = ``algorithm.rewardagg.kappa`` (default 1). Same arguments and
    return value as :func:`compute_rewardagg_advantage`.
    """
    return _estimate(
        "rvpo",
        token_level_rewards,
        response_mask,
        index,
        epsilon,
        norm_adv_by_std_in_grpo,
        config,
        non_tensor_batch,
    )


compute_rewardagg_advantage.__rewardagg_estimator__ = "rewardagg"  # type: ignore[attr-defined]
compute_rvpo_advantage.__rewardagg_estimator__ = "rvpo"  # type: ignore[attr-defined]
_FUNCTIONS = {"rvpo": compute_rvpo_advantage, "rewardagg": compute_rewardagg_advantage}


def last_info() -> rewardagg.AggregationInfo | None:
    """Diagnostics of the last estimator call in this process (``None`` before any call);
    ``last_info().to_metrics(names)`` gives a flat dict for a logger."""
    return _state["last_info"]


# --------------------------------------------------------------------------------------
# install / uninstall
# --------------------------------------------------------------------------------------


def _name(adv_estimator: Any) -> Any:
    return adv_estimator.value if isinstance(adv_estimator, Enum) else adv_estimator


def _ours(adv_estimator: Any) -> bool:
    name = _name(adv_estimator)
    if not isinstance(name, str):
        return False
    fn = core_algos.ADV_ESTIMATOR_REGISTRY.get(name)
    return getattr(fn, "__rewardagg_estimator__", None) is not None


def _wrap_compute_advantage(original):
    def compute_advantage(
        data,
        adv_estimator,
        gamma: float = 1.0,
        lam: float = 1.0,
        num_repeat: int = 1,
        norm_adv_by_std_in_grpo: bool = True,
        config=None,
    ):
        if not _ours(adv_estimator):
            return original(
                data,
                adv_estimator=adv_estimator,
                gamma=gamma,
                lam=lam,
                num_repeat=num_repeat,
                norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
                config=config,
            )
        if "response_mask" not in data.batch.keys():
            from verl.trainer.ppo.ray_trainer import compute_response_mask

            data.batch["response_mask"] = compute_response_mask(data)
        fn = core_algos.get_adv_estimator_fn(_name(adv_estimator))
        advantages, returns = fn(
            token_level_rewards=data.batch["token_level_rewards"],
            response_mask=data.batch["response_mask"],
            index=data.non_tensor_batch.get("uid"),
            norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
            config=config,
            non_tensor_batch=data.non_tensor_batch,
            batch=data.batch,
        )
        data.batch["advantages"] = advantages
        data.batch["returns"] = returns
        return data

    return compute_advantage


def _register() -> None:
    registry = core_algos.ADV_ESTIMATOR_REGISTRY
    for name, fn in _FUNCTIONS.items():
        current = registry.get(name)
        if current is fn:
            continue
        if current is not None and getattr(current, "__rewardagg_estimator__", None) != name:
            raise ValueError(
                f"verl already has an advantage estimator named {name!r} ({current!r}) that is "
                "not rewardagg's; unregister it first"
            )
        if current is not None:  # ours from a reloaded copy of this module
            del registry[name]
        core_algos.register_adv_est(name)(fn)


# -- verl's step metrics and checkpoints -----------------------------------------------------


def _take_pending_metrics() -> dict[str, float]:
    with _lock:
        pending, _state["pending_metrics"] = _state["pending_metrics"], {}
    return pending


def _wrap_data_metrics(original):
    def compute_data_metrics(*args, **kwargs):
        metrics = original(*args, **kwargs)
        metrics.update(_take_pending_metrics())
        return metrics

    return compute_data_metrics


def _run_tracker(trainer: Any) -> Any:
    """The controller of a verl trainer's run (None: not our estimator, no controller)."""
    algorithm = trainer.config.algorithm
    estimator = _name(_cfg_get(algorithm, "adv_estimator"))
    if estimator not in ESTIMATORS:
        return None
    return _controller(RewardAggVerlSettings(algorithm, estimator=estimator))


def _step_folder(trainer: Any, *, resuming: bool) -> str | None:
    """``global_step_<N>`` of the trainer's checkpoint, as verl's own save / load find it
    (``None`` when a load did not resume)."""
    cfg = trainer.config.trainer
    mode = _cfg_get(cfg, "resume_mode", "auto")
    if resuming and (mode == "disable" or not trainer.global_steps):
        return None
    folder = os.path.join(cfg.default_local_dir, f"global_step_{trainer.global_steps}")
    if resuming and mode == "resume_path":
        folder = str(cfg.resume_from_path)
    return folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)


def _wrap_save_checkpoint(original):
    def _save_checkpoint(self):
        tracker = _run_tracker(self)
        if tracker is not None:  # before verl marks the step as the latest checkpoint
            ctl.save_controller(tracker, _step_folder(self, resuming=False))
        return original(self)

    return _save_checkpoint


def _wrap_load_checkpoint(original):
    def _load_checkpoint(self):
        out = original(self)
        tracker = _run_tracker(self)
        folder = None if tracker is None else _step_folder(self, resuming=True)
        if tracker is None or folder is None:
            return out
        if ctl.load_controller(tracker, folder) is None:
            logger.warning("rewardagg: %s", ctl.missing_message(tracker, folder))
        return out

    return _load_checkpoint


# -- the v1 trainer: components from TransferQueue, metrics into its step metrics -----------


def _v1_reward_keys(algorithm: Any, estimator: Any) -> list[str] | None:
    """The component keys a v1 batch must carry: ``gdpo_reward_keys`` for our estimators
    and verl's ``gdpo`` (``None``: another estimator, or K = 1)."""
    if estimator not in (*ESTIMATORS, VERL_GDPO):
        return None
    keys = _plain(_cfg_get(algorithm, "gdpo_reward_keys"))
    if not keys:
        return None
    return [str(keys)] if isinstance(keys, str) else [str(k) for k in keys]


def _v1_batch(algorithm: Any, estimator: Any, batch: Any) -> _v1.V1Batch | None:
    """The components of a v1 ``KVBatchMeta`` from TransferQueue (``None``: not needed);
    for our estimators verl's padding rows are missing in every reward."""
    keys = _v1_reward_keys(algorithm, estimator)
    if keys is None:
        return None
    columns = _v1.fetch_components(keys, batch.keys, batch.partition_id)
    if estimator in ESTIMATORS:
        columns = _v1.padding_as_missing(columns, batch.tags)
    return _v1.V1Batch(tuple(batch.keys), columns)


def _wrap_v1_compute_advantage(original):
    def _compute_advantage(self, batch, metrics):
        algorithm = self.config.algorithm
        estimator = _name(_cfg_get(algorithm, "adv_estimator"))
        with _v1.using_batch(_v1_batch(algorithm, estimator, batch)):
            out = original(self, batch, metrics)
        if estimator in ESTIMATORS:  # our metrics join the v1 step's
            metrics.update(_take_pending_metrics())
        return out

    return _compute_advantage


def _wrap_multi_trajectories(original):
    def compute_advantage_for_multi_trajectories(data, batch_keys, *args, **kwargs):
        pending = _v1.current_batch()
        if pending is not None and tuple(batch_keys) == pending.keys:
            estimator = kwargs.get("adv_estimator", args[0] if args else None)
            _v1.add_components(data, pending.columns, for_gdpo=_name(estimator) == VERL_GDPO)
        return original(data, batch_keys, *args, **kwargs)

    return compute_advantage_for_multi_trajectories


# -- what install() wraps ----------------------------------------------------------------------

_RAY_TRAINER = "verl.trainer.ppo.ray_trainer"
#: ``(home module, function, wrap)``: wrapped in its home module and in every module that
#: imported it by name (verl's legacy and v1 trainers, the separation recipe of the
#: one-step-off-policy and fully-async trainers, your own code).
FUNCTION_PATCHES = (
    (_RAY_TRAINER, "compute_advantage", _wrap_compute_advantage),
    ("verl.trainer.ppo.metric_utils", "compute_data_metrics", _wrap_data_metrics),
    (_v1.UTILS_MODULE, "compute_advantage_for_multi_trajectories", _wrap_multi_trajectories),
)
#: ``(module, class, method, wrap)``.
METHOD_PATCHES = (
    (_RAY_TRAINER, "RayPPOTrainer", "_save_checkpoint", _wrap_save_checkpoint),
    (_RAY_TRAINER, "RayPPOTrainer", "_load_checkpoint", _wrap_load_checkpoint),
    (_v1.TRAINER_MODULE, "PPOTrainer", "_compute_advantage", _wrap_v1_compute_advantage),
    (_v1.TRAINER_MODULE, "PPOTrainer", "_save_checkpoint", _wrap_save_checkpoint),
    (_v1.TRAINER_MODULE, "PPOTrainer", "_load_checkpoint", _wrap_load_checkpoint),
)
#: Modules patched when they are imported after install() (the others it imports itself).
LATER_MODULES = (_v1.UTILS_MODULE, _v1.TRAINER_MODULE)


def _patch_loaded() -> None:
    """Wrap what :data:`FUNCTION_PATCHES` and :data:`METHOD_PATCHES` name in the modules
    loaded now (a module still importing is wrapped by the hook on it)."""
    for module, attr, wrap in FUNCTION_PATCHES:
        _patching.wrap_function(module, attr, wrap, _state["wrappers"])
    for module, cls, attr, wrap in METHOD_PATCHES:
        _patching.wrap_method(module, cls, attr, wrap)


def _reinstall() -> None:
    """After-import hook: wrap a module imported after :func:`install`."""
    with _lock:
        if _state["installed"]:
            _patch_loaded()


def unpatched() -> list[str]:
    """What :func:`install` wraps but is verl's own now, in the modules loaded now (empty:
    everything is wrapped), e.g. ``["verl.experimental.separation.ray_trainer.compute_advantage"]``
    for a copy imported by name before :func:`install` and not wrapped since."""
    out: list[str] = []
    for module, attr, _ in FUNCTION_PATCHES:
        out += _patching.unwrapped_bindings(module, attr)
    for module, cls, attr, _ in METHOD_PATCHES:
        if _patching.method_is_wrapped(module, cls, attr) is False:
            out.append(f"{module}.{cls}.{attr}")
    return out


def _why_unwrapped() -> str:
    """For an error message: why a call may have missed the wrappers."""
    if not _state["installed"]:
        return f"rewardagg.integrations.verl.install() has not run in this process. {_INSTALL_HINT}"
    missing = unpatched()
    if missing:
        return (
            f"install() ran, but these are verl's own, not wrapped: {missing}; call install() "
            "again after importing them (is_installed() is False until then)."
        )
    return (
        "install() ran and every verl binding it knows is wrapped; a caller that computes "
        "advantages without verl's compute_advantage must pass non_tensor_batch itself."
    )


def install() -> None:
    """Register ``"rvpo"`` and ``"rewardagg"`` with verl and wrap what verl's trainers call.

    Wraps, in their home module and in every loaded module that imported them by name (the
    legacy trainer, the separation recipe used by the one-step-off-policy and fully-async
    trainers, ``verl.trainer.ppo.v1.utils``, your own code):

    * ``compute_advantage``: our estimators also get ``non_tensor_batch`` (the reward
      components), ``batch`` and ``norm_adv_by_std_in_grpo``; other estimators run verl's;
    * ``compute_data_metrics``: our diagnostics and per-reward curves join verl's step
      metrics;
    * ``compute_advantage_for_multi_trajectories`` and the v1 trainer's
      ``PPOTrainer._compute_advantage``: the components reach the estimators on the v1
      trainer too (ours and verl's ``gdpo``), and our metrics its step metrics;
    * ``_save_checkpoint`` / ``_load_checkpoint`` of both trainers: the constraint
      tracker's state goes with verl's checkpoints.

    verl modules among these that are imported later are wrapped right after their import.
    Idempotent and thread-safe; :func:`uninstall` reverts it, :func:`is_installed` checks it.
    """
    with _lock:
        _register()
        from verl.trainer.ppo import metric_utils, ray_trainer  # noqa: F401 - loaded to patch

        _state["installed"] = True
        _patch_loaded()
        for module in LATER_MODULES:
            run_after_import(module, _reinstall)


def uninstall() -> None:
    """Undo :func:`install`: restore verl's functions and methods, unregister ours."""
    with _lock:
        _state["installed"] = False
        for _, attr, _ in FUNCTION_PATCHES:
            _patching.unwrap_function(attr)
        for module, cls, attr, _ in METHOD_PATCHES:
            _patching.unwrap_method(module, cls, attr)
        registry = core_algos.ADV_ESTIMATOR_REGISTRY
        for name, fn in _FUNCTIONS.items():
            if registry.get(name) is fn:
                del registry[name]


def is_installed() -> bool:
    """Whether :func:`install` is in effect in this process: our estimators are registered
    and every binding it wraps, in every loaded module, is wrapped (see :func:`unpatched`)."""
    return bool(
        _state["installed"]
        and all(core_algos.ADV_ESTIMATOR_REGISTRY.get(n) is f for n, f in _FUNCTIONS.items())
        and _patching.loaded(_RAY_TRAINER, "compute_advantage") is not None
        and not unpatched()
    )
