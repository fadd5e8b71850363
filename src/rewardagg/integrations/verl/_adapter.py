"""Implementation of :mod:`rewardagg.integrations.verl` (imports verl).

See the package docstring.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Mapping
from enum import Enum
from typing import Any

import numpy as np
import torch
from verl.trainer.ppo import core_algos

import rewardagg
from rewardagg._src.conflict import TINY
from rewardagg.integrations._settings import (
    RVPO_METHOD,
    SHARED_OPTIONS,
    Spelling,
    parse_options,
    split_settings,
)
from rewardagg.integrations.verl import ESTIMATORS, SETUP_HOOK

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
    "uninstall",
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
_V1_HINT = (
    "verl's v1 / TransferQueue trainer (trainer.use_v1=True, the default in verl 0.9) "
    "does not pass reward_extra_info to advantage estimators; run the legacy trainer with "
    "trainer.use_v1=False."
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
    "originals": {},
    "last_info": None,
    "trackers": {},  # one ConstraintTracker per run: (constraints, reward names) -> tracker
    "last_tracker": None,
    "pending_metrics": {},
    "patched": {},  # (module or class, attribute) -> verl's original  # the last estimator call's, for verl's next compute_data_metrics
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


def _number(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"algorithm.rewardagg.{name}={value!r} must be a number") from None


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
        if weights is not None:
            weights = [float(w) for w in weights]
            n_keys = len(self.reward_keys) if self.reward_keys else 1
            if len(weights) != n_keys:
                raise ValueError(
                    f"algorithm.gdpo_reward_weights has {len(weights)} entries but "
                    f"algorithm.gdpo_reward_keys names {n_keys} reward(s)"
                )
        self.weights: list[float] | None = weights
        method = ra.get("method")
        if estimator == "rvpo" and method not in (None, RVPO_METHOD):
            raise ValueError(
                f"adv_estimator 'rvpo' is rewardagg's {RVPO_METHOD}; got "
                f"algorithm.rewardagg.method={method!r}: use adv_estimator=rewardagg for other "
                "methods"
            )
        split = split_settings(ra, spelling=SPELLING, host_options=HOST_OPTIONS)
        self.method = split.method
        self.kind = rewardagg.get_aggregator(split.method).kind
        self.method_params = split.params
        options = split.options
        self.batch_norm = str(options.get("batch_norm", "verl"))
        if self.batch_norm not in BATCH_NORMS:
            raise ValueError(
                f"algorithm.rewardagg.batch_norm={self.batch_norm!r}; choose from {BATCH_NORMS}"
            )
        self.singleton = str(options.get("singleton", "identity"))
        self.baseline = str(options.get("baseline", "mean"))
        self.eps = None if options.get("eps") is None else _number(options["eps"], "eps")
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
        where = (
            "install() ran in this process, so this call did not come through the wrapped "
            "ray_trainer.compute_advantage: " + _V1_HINT
            if _state["installed"]
            else "rewardagg.integrations.verl.install() has not run in this process. "
            + _INSTALL_HINT
        )
        raise RuntimeError(
            "rewardagg verl estimator: algorithm.gdpo_reward_keys="
            f"{settings.reward_keys} needs the reward components from non_tensor_batch, but "
            f"none was passed. {where}"
        )
    missing = [k for k in settings.reward_keys if k not in non_tensor_batch]
    if missing:
        hint = (
            _V1_HINT
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


def _centre(
    x: np.ndarray, group_ids: Any, settings: RewardAggVerlSettings, eps: float
) -> np.ndarray:
    """Each column of ``x`` minus its group mean (no scaling), with verl's conventions."""
    return np.asarray(
        rewardagg.group_standardize(
            x,
            group_ids=group_ids,
            eps=eps,
            correction=1,
            singleton=settings.singleton,
            baseline=settings.baseline,
            scale=False,
        )
    )


# -- GD2PO's conflict filter (DESIGN.md 2c), for what the core does not hand back -------------


def _conflict_mode(settings: RewardAggVerlSettings) -> tuple[str, float] | None:
    """``(mode, tau)`` of the filter the batch runs (the method's when not set), or None."""
    aggregator = rewardagg.get_aggregator(settings.method)
    mode = settings.pipeline.conflict or aggregator.conflict
    if mode is None:
        return None
    tau = settings.pipeline.conflict_threshold
    return mode, aggregator.conflict_threshold if tau is None else tau


def _conflict_drops(
    adv: np.ndarray, weights: list[float] | None, mode: str, tau: float
) -> np.ndarray:
    """Rows whose per-reward terms ``w_k adv_ik`` disagree in sign ("hard"), and mostly
    cancel ("snr": ``|sum| / (sum |.| + 1e-8) < tau``); NaN and zero weights take no part."""
    w = np.ones(adv.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    t = np.where(np.isnan(adv) | (w[None, :] <= 0), 0.0, adv * w[None, :])
    drop = (t > TINY).any(axis=1) & (t < -TINY).any(axis=1)
    if mode == "snr":
        drop &= np.abs(t.sum(axis=1)) / (np.abs(t).sum(axis=1) + TINY) < tau
    return np.asarray(drop, dtype=bool)


def _kept_share(drop: np.ndarray, scored: np.ndarray, group_ids: Any) -> np.ndarray:
    """Per row, its group's kept share rho: kept rows / rows with a score (1 if none)."""
    _, group = np.unique(np.asarray(group_ids), return_inverse=True)
    with_score = np.bincount(group, weights=scored.astype(np.float64))
    kept = np.bincount(group, weights=(scored & ~drop).astype(np.float64))
    rho = np.where(with_score > 0, kept / np.maximum(with_score, 1.0), 1.0)
    return rho[group]


def _core_drops(
    r: np.ndarray, group_ids: Any, settings: RewardAggVerlSettings, eps: float, s, info
) -> np.ndarray:
    """The rows the core's filter dropped, for the token mask of verl's whitening.

    ``AggregationInfo`` reports only their number, so the same test runs here on the same
    stage-1 z-scores; a row the core kept (its score is not 0) is never taken as dropped,
    and a count that still differs (a ratio within rounding of ``tau``) is logged.
    """
    mode, tau = _conflict_mode(settings)  # type: ignore[misc]
    z = rewardagg.group_standardize(
        r,
        group_ids=group_ids,
        eps=eps,
        correction=1,
        singleton=settings.singleton,
        baseline=settings.baseline,
    )
    drop = _conflict_drops(np.asarray(z), settings.weights, mode, tau)
    drop &= _has_reward(r, settings.weights) & (s == 0)
    if int(drop.sum()) != info.conflict_dropped:
        logger.warning(
            "rewardagg: the conflict filter dropped %d rows, the token mask of the "
            "whitening %d (a ratio within rounding of conflict_threshold); the others "
            "enter its statistics with advantage 0",
            info.conflict_dropped,
            int(drop.sum()),
        )
    return drop


# -- the row scores -----------------------------------------------------------------------


def _row_scores(
    r: np.ndarray,
    index: Any,
    settings: RewardAggVerlSettings,
    *,
    eps: float,
    scale_by_std: bool,
    multipliers: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, Any, np.ndarray]:
    """Stages 1-2 (and 3 for ``batch_norm="rows"``) in float64; 0 for rows without reward.

    Returns ``(scores, info, dropped)``: ``info`` is ``None`` for the centring-only path,
    ``dropped`` the rows the conflict filter dropped (all False without one).
    """
    group_ids = np.arange(r.shape[0]) if index is None else index
    if settings.kind == "sum_first" or scale_by_std:
        s, info = _core_scores(r, group_ids, settings, eps, scale_by_std, multipliers)
        if _conflict_mode(settings) is None:
            return s, info, np.zeros(r.shape[0], bool)
        return s, info, _core_drops(r, group_ids, settings, eps, s, info)
    return _centred_scores(r, group_ids, settings, eps, multipliers)


def _core_scores(r, group_ids, settings, eps, scale_by_std, multipliers):
    params = dict(settings.method_params)
    if settings.kind == "sum_first" and not scale_by_std:
        # verl's norm_adv_by_std_in_grpo=False is the sum-first method's centring-only scale
        params.setdefault("scale", "none")
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
    return np.asarray(s, dtype=np.float64), info


def _centred_scores(r, group_ids, settings, eps, multipliers):
    """``norm_adv_by_std_in_grpo=False``: stage 1 only centres each reward in its group (as
    verl's GDPO and GD2PO do with that flag); stage 2, the multipliers, the conflict filter
    (on the centred rewards, as GD2PO) and stage 3 follow as configured."""
    aggregator = rewardagg.get_aggregator(settings.method)
    params = aggregator.bind(settings.method_params)  # the method's defaults filled in
    centred = _centre(r, group_ids, settings, eps)
    if aggregator.check_order(settings.pipeline.order) == "normalize_then_reduce":
        s = np.asarray(aggregator.reduce(centred, weights=settings.weights, **params))
    else:  # reduce the raw rewards, then centre the score
        s = np.asarray(aggregator.reduce(r, weights=settings.weights, **params))
        s = _centre(s.astype(np.float64)[:, None], group_ids, settings, eps)[:, 0]
    s = s.astype(np.float64)
    for name, lam in (multipliers or {}).items():  # lambda_c times the centred reward c
        col = np.nan_to_num(centred[:, settings.reward_names.index(name)])
        s = s + lam * col
    drop = np.zeros(r.shape[0], bool)
    conflict = _conflict_mode(settings)
    if conflict is not None:
        scored = ~np.isnan(s)
        drop = _conflict_drops(centred, settings.weights, *conflict) & scored
        rho = _kept_share(drop, scored, group_ids) if settings.pipeline.reweight_groups else 1.0
        s = np.where(drop, np.nan, s * rho)
    if settings.pipeline.center == "group":  # each group's mean over its scored rows
        s = np.asarray(
            rewardagg.group_standardize(s[:, None], group_ids=group_ids, correction=0, scale=False)
        )[:, 0]
    if settings.batch_norm == "rows":
        s = _rows_stage3(s, eps, centre=settings.pipeline.center == "batch")
    return np.where(np.isnan(s), 0.0, s), None, drop


def _rows_stage3(s: np.ndarray, eps: float, *, centre: bool) -> np.ndarray:
    """Stage 3 over the rows with a score; ``centre=False`` (group-centred scores) only
    divides by their standard deviation (0 for all when fewer than two or all equal)."""
    if centre:
        return np.asarray(rewardagg.batch_standardize(s, eps=eps, correction=1), np.float64)
    scored = s[~np.isnan(s)]
    if scored.size < 2 or np.all(scored == scored[0]):
        return np.where(np.isnan(s), np.nan, 0.0)
    return s / (np.std(scored, ddof=1) + eps)


def _whiten_verl(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """verl's ``masked_whiten`` (token-weighted mean, Bessel variance, rsqrt(var + 1e-8))."""
    from verl.utils.torch_functional import masked_whiten

    if float(mask.sum()) < 2:  # verl raises here; there is nothing to whiten
        return torch.zeros_like(values)
    return masked_whiten(values, mask)


# -- constraint trackers: one per run in the driver process ---------------------------------


def _tracker(settings: RewardAggVerlSettings) -> rewardagg.ConstraintTracker | None:
    """The run's tracker for these settings (created on first use), or None."""
    if settings.constraints is None:
        return None
    key = (settings.constraints, tuple(settings.reward_names))
    with _lock:
        tracker = _state["trackers"].get(key)
        if tracker is None:
            tracker = settings.constraints.tracker(
                settings.reward_names, SPELLING.option("constraints")
            )
            _state["trackers"][key] = tracker
        _state["last_tracker"] = tracker
    return tracker


def constraint_tracker(config: Any = None) -> rewardagg.ConstraintTracker | None:
    """The :class:`rewardagg.ConstraintTracker` of a run in this process.

    Args:
        config: verl's ``algorithm`` config (``+algorithm.rewardagg.constraints...``); the
            tracker for its constraints, created if needed. ``None``: the tracker the last
            estimator call used.

    Returns:
        ``None`` without constraints (or, without ``config``, before any call).
    """
    if config is None:
        return _state["last_tracker"]
    estimator = _name(_cfg_get(config, "adv_estimator", "rewardagg"))
    estimator = estimator if estimator in ESTIMATORS else "rewardagg"
    return _tracker(RewardAggVerlSettings(config, estimator=estimator))


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
        tracker = _tracker(settings)
        s, info, dropped = _row_scores(
            r,
            index,
            settings,
            eps=eps,
            scale_by_std=norm_adv_by_std_in_grpo,
            multipliers=None if tracker is None else tracker.multipliers,
        )
        if tracker is not None:  # the driver holds the whole batch: no reduction needed
            tracker.update(r)
        _state["last_info"] = info
        _state["pending_metrics"] = _metrics(settings, info, tracker, dropped)
        mask = response_mask.to(token_level_rewards.dtype)
        keep = _has_reward(r, settings.weights) & ~dropped
        mask = mask * torch.as_tensor(keep, device=mask.device).to(mask.dtype)[:, None]
        scores = torch.as_tensor(s, device=mask.device).to(token_level_rewards.dtype)
        adv = scores[:, None] * mask
        if settings.batch_norm == "verl" and settings.kind != "sum_first":
            adv = _whiten_verl(adv, mask) * mask
    return adv, adv


def _metrics(settings, info, tracker, dropped) -> dict[str, float]:
    """What the wrapped ``compute_data_metrics`` adds to verl's step metrics."""
    out = {} if info is None else info.to_metrics(settings.reward_names, prefix="rewardagg/")
    if info is None and _conflict_mode(settings) is not None:
        out["rewardagg/conflict_dropped"] = float(dropped.sum())
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
    """Diagnostics of the last estimator call in this process (``None`` before any call,
    and for ``norm_adv_by_std_in_grpo=False``); ``last_info().to_metrics(names)`` gives a
    flat dict for a logger."""
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

    setattr(compute_advantage, "__wrapped__", original)  # noqa: B010
    setattr(compute_advantage, "__rewardagg_wrapper__", True)  # noqa: B010
    compute_advantage.__doc__ = (
        "verl's compute_advantage, wrapped by rewardagg.integrations.verl.install(): the "
        f"estimators {ESTIMATORS} also receive non_tensor_batch.\n\n{original.__doc__ or ''}"
    )
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


def _patch(module: Any) -> None:
    current = getattr(module, "compute_advantage", None)
    if current is None or getattr(current, "__rewardagg_wrapper__", False):
        return
    _state["originals"][module.__name__] = current
    module.compute_advantage = _wrap_compute_advantage(current)


# -- verl's step metrics and checkpoints -----------------------------------------------------


def _wrap_data_metrics(original):
    def compute_data_metrics(*args, **kwargs):
        metrics = original(*args, **kwargs)
        with _lock:
            pending, _state["pending_metrics"] = _state["pending_metrics"], {}
        metrics.update(pending)
        return metrics

    return compute_data_metrics


def _run_tracker(trainer: Any) -> rewardagg.ConstraintTracker | None:
    """The tracker of a ``RayPPOTrainer``'s run (None: not our estimator, no constraints)."""
    algorithm = trainer.config.algorithm
    estimator = _name(_cfg_get(algorithm, "adv_estimator"))
    if estimator not in ESTIMATORS:
        return None
    return _tracker(RewardAggVerlSettings(algorithm, estimator=estimator))


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
            folder = _step_folder(self, resuming=False)
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, CONSTRAINTS_FILE), "w") as f:
                json.dump(tracker.state_dict(), f)
        return original(self)

    return _save_checkpoint


def _wrap_load_checkpoint(original):
    def _load_checkpoint(self):
        out = original(self)
        tracker = _run_tracker(self)
        folder = None if tracker is None else _step_folder(self, resuming=True)
        if tracker is None or folder is None:
            return out
        path = os.path.join(folder, CONSTRAINTS_FILE)
        if not os.path.exists(path):
            logger.warning(
                "rewardagg: %s has no %s; the constraint multipliers start from constraint_init",
                folder,
                CONSTRAINTS_FILE,
            )
            return out
        with open(path) as f:
            tracker.load_state_dict(json.load(f))
        return out

    return _load_checkpoint


def _patch_attr(owner: Any, attr: str, wrap: Any) -> None:
    current = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
    if current is None or getattr(current, "__rewardagg_wrapper__", False):
        return
    wrapper = wrap(current)
    wrapper.__wrapped__ = current
    wrapper.__rewardagg_wrapper__ = True
    wrapper.__doc__ = current.__doc__
    setattr(owner, attr, wrapper)
    _state["patched"][(owner, attr)] = current


def install() -> None:
    """Register ``"rvpo"`` and ``"rewardagg"`` with verl and wrap ``compute_advantage``.

    Wraps ``verl.trainer.ppo.ray_trainer.compute_advantage`` (what the legacy trainer
    calls), and ``verl.trainer.ppo.v1.utils.compute_advantage`` when that module is already
    imported (its estimators still get no components there, see the module docstring).
    Also wraps ``ray_trainer.compute_data_metrics`` (the estimator's diagnostics and
    multipliers join verl's step metrics) and ``RayPPOTrainer._save_checkpoint`` /
    ``_load_checkpoint`` (the constraint tracker's state goes with verl's checkpoint).
    Idempotent and thread-safe; :func:`uninstall` reverts it.
    """
    with _lock:
        _register()
        from verl.trainer.ppo import ray_trainer

        _patch(ray_trainer)
        v1_utils = sys.modules.get("verl.trainer.ppo.v1.utils")
        if v1_utils is not None:
            _patch(v1_utils)
        _patch_attr(ray_trainer, "compute_data_metrics", _wrap_data_metrics)
        trainer = ray_trainer.RayPPOTrainer
        _patch_attr(trainer, "_save_checkpoint", _wrap_save_checkpoint)
        _patch_attr(trainer, "_load_checkpoint", _wrap_load_checkpoint)
        _state["installed"] = True


def uninstall() -> None:
    """Undo :func:`install`: restore verl's functions and unregister ours."""
    with _lock:
        for modname, original in list(_state["originals"].items()):
            module = sys.modules.get(modname)
            current = getattr(module, "compute_advantage", None)
            if module is not None and getattr(current, "__wrapped__", None) is original:
                setattr(module, "compute_advantage", original)  # noqa: B010
            del _state["originals"][modname]
        for (owner, attr), original in list(_state["patched"].items()):
            if getattr(getattr(owner, attr, None), "__wrapped__", None) is original:
                setattr(owner, attr, original)
            del _state["patched"][(owner, attr)]
        registry = core_algos.ADV_ESTIMATOR_REGISTRY
        for name, fn in _FUNCTIONS.items():
            if registry.get(name) is fn:
                del registry[name]
        _state["installed"] = False


def is_installed() -> bool:
    """Whether :func:`install` is in effect in this process."""
    from verl.trainer.ppo import ray_trainer

    return bool(
        _state["installed"]
        and getattr(ray_trainer.compute_advantage, "__rewardagg_wrapper__", False)
        and all(core_algos.ADV_ESTIMATOR_REGISTRY.get(n) is f for n, f in _FUNCTIONS.items())
    )
