"""TRL adapter: a drop-in ``GRPOTrainer`` whose advantages come from rewardagg.

Supported TRL versions: ``>=1.12``; the functional tests pass on 1.12 to 1.16 (1.15.0 only
where its Triton log-prob kernel can run: on CPU it needs ``TRITON_INTERPRET=1`` when triton
is installed, a TRL matter that 1.16 fixed). A later version is accepted with a warning as
long as ``GRPOTrainer`` has the two private methods the trainer overrides, with the
parameters it passes on (:data:`TRL_HOOKS`); otherwise the import fails and says which.
Importing this module imports TRL (and torch, transformers); ``import rewardagg`` never does.

Usage::

    from rewardagg.integrations.trl import RewardAggGRPOConfig, RewardAggGRPOTrainer

    args = RewardAggGRPOConfig(output_dir="out", num_generations=8,
                               advantage_method="softmin", kappa=1.0)
    trainer = RewardAggGRPOTrainer(model=..., reward_funcs=[fmt, correct, safe],
                                   args=args, train_dataset=ds)
    trainer.train()

Method parameters. ``advantage_params`` (a dict, or a JSON object string from a command
line) takes any parameter of the chosen method, read from the method table, so a method
registered at run time with its own parameters is configured like a built-in one::

    rewardagg.register_aggregator("tempered", tempered, params={"tau": 0.3})
    args = RewardAggGRPOConfig(..., advantage_method="tempered", advantage_params={"tau": 0.5})

The values are converted and validated when the config is built, with the core's rules:
a bad method parameter, ``advantage_eps`` (negative, NaN, infinite), ``advantage_baseline``,
``advantage_singleton``, ``advantage_correction`` or ``reward_weights`` (negative,
non-finite, all zero) fails there, naming the field, not at the first batch. The ``kappa``
and ``lam`` fields are shortcuts, passed only to a method that takes them and only where
``advantage_params`` does not set them.

From a command line. TRL 1.16's ``trl grpo`` command runs ``trl/scripts/grpo.py``, which
builds ``GRPOTrainer`` itself and offers no hook for another trainer class, so the entry
point is a Python script (``examples/trl_rvpo_qwen25.py``). TRL's own ``TrlParser`` parses
TRL's GRPO script arguments and every ``RewardAggGRPOConfig`` field (``--advantage_method``,
``--kappa``, ``--advantage_params '{"kappa": 2}'``, ...) for such a script::

    from trl import ModelConfig, TrlParser
    from trl.scripts.grpo import GRPOScriptArguments

    parser = TrlParser((GRPOScriptArguments, RewardAggGRPOConfig, ModelConfig))
    script_args, args, model_args = parser.parse_args_and_config()
    trainer = RewardAggGRPOTrainer(model=model_args.model_name_or_path, args=args,
                                   reward_funcs=[...], train_dataset=...)

Stage order, centring, conflict filter, constraints (DESIGN.md sections 2b, 2c)::

    args = RewardAggGRPOConfig(..., advantage_method="softmin",
                               advantage_order="reduce_then_normalize",  # or the method's
                               advantage_center="group",                 # or "batch"
                               advantage_conflict="snr",                 # GD2PO's filter
                               advantage_conflict_threshold=0.8,
                               advantage_constraints={"fmt": 0.95},      # mean(fmt) >= 0.95
                               constraint_lr=0.5)

``advantage_constraints`` keys are reward function names as TRL names them
(``trainer.reward_func_names``; a repeated name gets ``_1``, ``_2``, ...) or column indices.
The trainer keeps one :class:`rewardagg.ConstraintTracker` (``trainer.constraint_tracker``):
every training generation batch gets the current multipliers, then one dual-ascent step on
the batch means. TRL gathers the rewards of every process before the advantages, so every
process sees the same batch means and holds the same multipliers; no extra reduction is
needed. The tracker's state is written to ``rewardagg_constraints.json`` in every checkpoint
folder and read back by ``trainer.train(resume_from_checkpoint=...)`` (the hooks TRL uses
for its own adaptive-entropy state). Evaluation batches get the multipliers without updating
them.

Adaptive weights (DESIGN.md section 2d; rewards in [0, 1])::

    args = RewardAggGRPOConfig(..., advantage_method="gdpo", advantage_adaptive=True,
                               adaptive_patience=40)      # adaptive_tau, _beta, _z too

``adaptive_plateau_margin`` sets the plateau hold (default 0.1; ``"none"``: no hold,
DESIGN.md 2d's rule exactly).

The trainer runs one controller (``trainer.controller``): the adaptive weights
(``trainer.adaptive_weights``, times ``reward_weights``), the constraint tracker, or both
together. It is applied and updated like the tracker, logs ``rewardagg/weight/<reward>``,
``rewardagg/trusted/<reward>`` and ``rewardagg/pass_rate/<reward>``, and is saved in
``rewardagg_controller.json`` (``rewardagg_constraints.json`` for a tracker alone).

How it hooks into TRL. TRL 1.16 computes advantages inline, inside the long
``GRPOTrainer._generate_and_score_completions``; there is no smaller hook that receives the
per-reward-function rewards and returns advantages. Copying that method would pin us to one
TRL release line by line, so the trainer instead

1. overrides ``_calculate_rewards`` only to keep a reference to what it returns: the
   (N_total, K) float32 tensor of per-function rewards, already gathered across processes,
   with ``NaN`` where a reward function returned ``None``;
2. wraps ``_generate_and_score_completions``: lets TRL run it whole (generation, reference
   log-probs, its own advantages, its logging), then recomputes the advantages of the whole
   gathered batch with :func:`rewardagg.advantages`, slices this process's rows exactly as
   TRL does (``process_index * local_batch``, contiguous) and replaces ``"advantages"`` in
   the returned batch. The per-completion advantages TRL keeps for its completions table
   are replaced by ours too, so the table shows the advantages that reached the loss.

TRL's own computation is a few vector operations on the reward tensor, so computing it and
discarding it costs nothing measurable; in exchange the adapter depends only on two private
methods' *signatures* and the ``"advantages"`` key, which the version check below guards.
TRL's ``reward``, ``reward_std``, ``rewards/<name>/mean|std`` metrics are about the raw
rewards and stay valid; ``frac_reward_zero_std`` keeps TRL's meaning (spread of TRL's
aggregated reward), see ``rewardagg/zero_spread_fraction/<name>`` for the per-reward view.

Conventions reproduced from TRL: ``eps = 1e-4`` (``advantage_eps``), Bessel standard
deviation, a reward function's ``None`` is a missing reward, a completion with no reward at
all gets advantage 0, ``reward_weights`` weight the reward functions, ``scale_rewards``
selects the scale of ``advantage_method="grpo"``. With those defaults
``advantage_method="gdpo"`` reproduces ``multi_objective_aggregation="normalize_then_sum"``
and ``"grpo"`` reproduces TRL's default ``"sum_then_normalize"`` (parity tested to 1e-5;
TRL computes zero-spread cells inexactly in float32, we give exactly 0 there).
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import trl
from packaging.version import InvalidVersion, Version
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOConfig, GRPOTrainer

import rewardagg
from rewardagg._src.registry import ALIASES
from rewardagg.integrations import _controllers as ctl
from rewardagg.integrations._settings import (
    DEFAULT_METHOD,
    ConstraintOptions,
    PipelineOptions,
    Spelling,
    check_shortcut,
    check_stage_options,
    check_weights,
    param_specs,
    parse_options,
    resolve_method,
    split_settings,
)

__all__ = [
    "CONSTRAINTS_FILE",
    "SUPPORTED_TRL",
    "TESTED_TRL",
    "TRL_HOOKS",
    "RewardAggBatch",
    "RewardAggGRPOConfig",
    "RewardAggGRPOTrainer",
]

SUPPORTED_TRL = ">=1.12"
"""TRL versions the adapter accepts; 1.12 to 1.16 pass its functional tests. A later one
is accepted with a warning as long as the private methods it overrides are there with the
parameters it passes on (:data:`TRL_HOOKS`)."""
TESTED_TRL = ">=1.12,<1.17"
_MIN_TRL, _TESTED_BELOW = Version("1.12"), Version("1.17")
_SKIP_CHECK_ENV = "REWARDAGG_SKIP_TRL_VERSION_CHECK"
#: The private ``GRPOTrainer`` methods the trainer overrides and the parameters it passes
#: on to them: what it truly depends on in TRL's internals.
TRL_HOOKS = {
    "_calculate_rewards": ("inputs", "prompts", "completions", "completion_ids_list"),
    "_generate_and_score_completions": ("inputs",),
}


def _hook_problems(cls: type = GRPOTrainer) -> list[str]:
    """How ``cls`` differs from what the trainer overrides (empty: nothing)."""
    problems = []
    for name, expected in TRL_HOOKS.items():
        method = getattr(cls, name, None)
        if not callable(method):
            problems.append(f"GRPOTrainer.{name} is missing")
            continue
        try:
            params = tuple(inspect.signature(method).parameters)[1:]  # after self
        except (TypeError, ValueError):
            params = ()
        if params != expected:
            problems.append(f"GRPOTrainer.{name}{params} is not {name}{expected}")
    return problems


def _trl_version(found: str) -> Version | None:
    try:
        return Version(Version(found).base_version)
    except InvalidVersion:
        return None


def _check_trl(cls: type = GRPOTrainer) -> None:
    """Refuse a TRL older than 1.12, or one whose ``GRPOTrainer`` lacks the private methods
    (with their parameters) the trainer overrides; warn for a version above the tested
    range (1.12 to 1.16)."""
    if os.environ.get(_SKIP_CHECK_ENV, "") == "1":
        return
    found = getattr(trl, "__version__", "unknown")
    version = _trl_version(found)
    problems = _hook_problems(cls)
    if version is None or version < _MIN_TRL or problems:
        raise ImportError(
            f"rewardagg.integrations.trl supports trl{SUPPORTED_TRL} (tested on 1.12 to "
            f"1.16); found trl {found}"
            + (f": {'; '.join(problems)}" if problems else "")
            + f". Install a tested version (pip install 'trl{TESTED_TRL}'), or set "
            f"{_SKIP_CHECK_ENV}=1 to try anyway at your own risk."
        )
    if version >= _TESTED_BELOW:
        warnings.warn(
            f"rewardagg.integrations.trl is tested on trl 1.12 to 1.16; found trl {found}. "
            "Its GRPOTrainer has the methods the adapter overrides, and every batch checks "
            "that TRL still returns 'advantages'; run tests/test_integration_trl.py against it.",
            UserWarning,
            stacklevel=2,
        )


_check_trl()


#: The config field of each shared option (``rewardagg.integrations._settings``).
OPTION_FIELDS = {
    "order": "advantage_order",
    "center": "advantage_center",
    "conflict": "advantage_conflict",
    "conflict_threshold": "advantage_conflict_threshold",
    "reweight_groups": "advantage_reweight_groups",
    "constraints": "advantage_constraints",
    "constraint_lr": "constraint_lr",
    "constraint_lambda_max": "constraint_lambda_max",
    "constraint_init": "constraint_init",
    "constraint_kp": "constraint_kp",
    "constraint_kd": "constraint_kd",
}
#: How this adapter names its settings in messages (the config's field names).
SPELLING = Spelling(
    method="advantage_method",
    param="advantage_params[{name!r}]",
    group="advantage_params",
    renamed=tuple(OPTION_FIELDS.items()),
)
#: The file, in each checkpoint folder, that holds the constraint tracker's state.
CONSTRAINTS_FILE = "rewardagg_constraints.json"
#: Config fields that set the method parameter of the same name when the method takes it
#: and ``advantage_params`` does not (RVPO's risk coefficient and the variance penalty).
SHORTCUTS = ("kappa", "lam")
#: The method parameter TRL's own ``scale_rewards`` sets (the sum-first method's scale).
_SCALE_PARAM = "scale"
#: The metric of the multipliers applied to a batch (``method/multiplier/<reward>``).
_MULTIPLIER = "method/multiplier"


def _json_dict(value: Any, name: str) -> dict[str, Any]:
    """A dict field given as a dict, a JSON object string (command line) or ``None``."""
    if value is None:
        return {}
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} must be a JSON object; got {value!r} ({err})") from None
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict or a JSON object; got {value!r}")
    return dict(value)


#: The backends :func:`rewardagg.advantages` takes (``rewardagg.kernels.BACKENDS``).
BACKENDS = ("auto", "numpy", "torch", "numba", "triton")


def _check_backend(backend: Any, use_cpu: bool) -> str:
    """``advantage_backend`` checked when the config is built: a known name whose package is
    installed and that runs on the tensors the trainer passes (torch, on the training
    device: CUDA when one is visible and ``use_cpu`` is not set)."""
    import importlib.util

    if backend not in BACKENDS:
        raise ValueError(f"advantage_backend must be one of {BACKENDS}; got {backend!r}")
    cuda = torch.cuda.is_available() and not use_cpu
    if backend == "numpy":
        raise ValueError(
            "advantage_backend='numpy' takes numpy arrays, but the trainer passes torch "
            "tensors; use 'auto' or 'torch'"
        )
    if backend == "numba":
        if importlib.util.find_spec("numba") is None:
            raise ValueError(
                "advantage_backend='numba' needs numba: pip install numba (the 'fast' extra)"
            )
        if cuda:
            raise ValueError(
                "advantage_backend='numba' runs on the CPU, but the trainer's rewards are on "
                "CUDA (set use_cpu=True, or use 'auto')"
            )
    if backend == "triton":
        if importlib.util.find_spec("triton") is None:
            raise ValueError(
                "advantage_backend='triton' needs triton: pip install triton (the 'triton' extra)"
            )
        if not cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                "advantage_backend='triton' needs the rewards on CUDA, but the trainer runs on "
                "the CPU (no CUDA device, or use_cpu=True); use 'auto' (or TRITON_INTERPRET=1)"
            )
    return str(backend)


@dataclass
class RewardAggGRPOConfig(GRPOConfig):
    r"""``GRPOConfig`` plus the rewardagg advantage options.

    Every ``GRPOConfig`` field keeps its meaning, with two exceptions: the advantage is
    chosen by ``advantage_method`` (TRL's ``multi_objective_aggregation`` is not used), and
    ``scale_rewards`` only applies to the methods that take a ``scale`` parameter (the
    sum-first ``"grpo"``).

    The method's parameters are read from the method table, so a method registered with
    ``rewardagg.register_aggregator(name, fn, params={"tau": 0.3})`` before building the
    config is configured like a built-in one:
    ``RewardAggGRPOConfig(advantage_method=name, advantage_params={"tau": 0.5})``. Every
    parameter value is converted (``"0.5"`` -> 0.5, as a command line gives it) and
    validated in ``__post_init__``, not at the first batch.

    Parameters:
        advantage_method: a name from ``rewardagg.available_methods()`` (built in, or
            registered with ``rewardagg.register_aggregator`` before building this
            config). Default: RVPO's SoftMin. An alias (``"rvpo"``) is stored as the
            method's own name (``"softmin"``).
        advantage_params: the method's parameters, a dict or a JSON object string
            (``'{"kappa": 2.0}'``); any name the method takes. A name that only other
            methods take, or that no method takes, is an error.
        kappa: shortcut for ``advantage_params["kappa"]``, the risk coefficient of RVPO's
            SoftMin (``kappa >= 0``; 0 = mean, ``inf`` = min). Passed only to a method that
            takes ``kappa`` and only when ``advantage_params`` does not set it.
        lam: shortcut for ``advantage_params["lam"]``, the variance penalty of the
            mean-variance method (``lam >= 0``; ``kappa / 2`` is the second-order twin of
            the SoftMin); same rules as ``kappa``.
        advantage_eps: the ``eps`` of both standardisations. Default ``1e-4``, TRL's.
        advantage_correction: degrees-of-freedom correction of the standard deviations
            (1 = Bessel, TRL's).
        advantage_batch_norm: standardise the aggregated score over the batch (stage 3).
        advantage_baseline: ``"mean"`` or ``"leave_one_out"`` (RLOO) group baseline.
        advantage_singleton: ``"zero"`` or ``"identity"``; how a one-row group is treated.
        advantage_backend: rewardagg backend: ``"auto"``, ``"torch"``, ``"numba"`` (CPU
            training, numba installed) or ``"triton"`` (CUDA, triton installed); checked
            when the config is built (``"numpy"`` is refused: the trainer passes tensors).
        advantage_kwargs: older spelling of ``advantage_params`` (same role, merged with
            it; a name set in both is an error; an unknown name raises ``TypeError``).
        advantage_order: ``"normalize_then_reduce"`` or ``"reduce_then_normalize"``
            (reduce the raw rewards, then z-score the score in its group); ``None``: the
            method's.
        advantage_center: stage-3 centring, ``"batch"`` or ``"group"`` (every group's
            advantages sum to zero).
        advantage_conflict: GD²PO's conflict filter, ``"hard"`` or ``"snr"`` (``None``: the
            method's; ``gd2po`` and ``gd2po_snr`` have one).
        advantage_conflict_threshold: ``tau`` in [0, 1] of ``"snr"`` (``None``: 0.8).
        advantage_reweight_groups: scale each group's kept rows by its kept share.
        advantage_constraints: ``{reward: target}`` (dict, JSON object or
            ``"KEY=TARGET,..."``): keep the batch mean of that reward ``>= target`` with a
            Lagrange multiplier the trainer adapts. A reward is a reward function's name
            (``trainer.reward_func_names``) or a column index.
        constraint_lr: dual step size of the multipliers (default 0.1).
        constraint_lambda_max: upper clip of the multipliers (default ``inf``).
        constraint_init: the multipliers' starting value (default 0).
        constraint_kp, constraint_kd: proportional and derivative gains (PID Lagrangian;
            default 0, plain dual ascent).
        advantage_adaptive: adaptive reward weights (:class:`rewardagg.AdaptiveWeights`,
            DESIGN.md 2d; rewards in [0, 1]), times ``reward_weights``; with
            ``advantage_constraints`` both run together.
        adaptive_tau, adaptive_beta, adaptive_patience, adaptive_z: its parameters
            (``None``: 7, 0.9, 40, 3).
        adaptive_plateau_margin: its plateau hold's margin (``None``: 0.1; ``"none"``: no
            hold, DESIGN.md 2d's rule exactly).
        log_rewardagg_metrics: log the rewardagg diagnostics every step.
    """

    advantage_method: str = field(
        default=DEFAULT_METHOD,
        metadata={"help": "rewardagg advantage method (see rewardagg.available_methods())."},
    )
    advantage_params: dict | str | None = field(
        default=None,
        metadata={
            "help": "The method's parameters (dict or JSON object), any name the method "
            "takes, a registered method's own parameters included."
        },
    )
    kappa: float = field(
        default=1.0,
        metadata={"help": "Risk coefficient of RVPO's SoftMin; shortcut of advantage_params."},
    )
    lam: float = field(
        default=0.5,
        metadata={"help": "Variance penalty (mean-variance); shortcut of advantage_params."},
    )
    advantage_eps: float = field(
        default=1e-4, metadata={"help": "eps of the group and batch standardisations (TRL: 1e-4)."}
    )
    advantage_correction: int = field(
        default=1, metadata={"help": "Degrees-of-freedom correction of the std (1 = Bessel)."}
    )
    advantage_batch_norm: bool = field(
        default=True, metadata={"help": "Standardise aggregated scores over the batch."}
    )
    advantage_baseline: str = field(
        default="mean", metadata={"help": "Group baseline: 'mean' or 'leave_one_out'."}
    )
    advantage_singleton: str = field(
        default="zero", metadata={"help": "One-row groups: 'zero' or 'identity' (verl's)."}
    )
    advantage_backend: str = field(
        default="auto", metadata={"help": "rewardagg backend: 'auto', 'torch', 'triton', ..."}
    )
    advantage_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Older spelling of advantage_params (dict or JSON)."},
    )
    advantage_order: str | None = field(
        default=None,
        metadata={
            "help": "'normalize_then_reduce' or 'reduce_then_normalize' (default: method's)."
        },
    )
    advantage_center: str = field(
        default="batch", metadata={"help": "Stage-3 centring: 'batch' or 'group'."}
    )
    advantage_conflict: str | None = field(
        default=None, metadata={"help": "GD2PO conflict filter: 'hard' or 'snr'."}
    )
    advantage_conflict_threshold: float | None = field(
        default=None, metadata={"help": "tau in [0, 1] of the 'snr' filter (default 0.8)."}
    )
    advantage_reweight_groups: bool = field(
        default=True, metadata={"help": "Scale each group's kept rows by its kept share."}
    )
    advantage_constraints: dict | str | None = field(
        default=None,
        metadata={
            "help": "Constraints {reward: target} (dict, JSON or 'KEY=TARGET,...'): keep "
            "mean(reward) >= target with an adapted Lagrange multiplier."
        },
    )
    constraint_lr: float | None = field(
        default=None, metadata={"help": "Dual step size of the multipliers (default 0.1)."}
    )
    constraint_lambda_max: float | None = field(
        default=None, metadata={"help": "Upper clip of the multipliers (default inf)."}
    )
    constraint_init: float | None = field(
        default=None, metadata={"help": "Starting value of the multipliers (default 0)."}
    )
    constraint_kp: float | None = field(
        default=None, metadata={"help": "Proportional gain (PID Lagrangian, default 0)."}
    )
    constraint_kd: float | None = field(
        default=None, metadata={"help": "Derivative gain (PID Lagrangian, default 0)."}
    )
    advantage_adaptive: bool = field(
        default=False, metadata={"help": ctl.ADAPTIVE_OPTION_HELP["adaptive"]}
    )
    adaptive_tau: float | None = field(
        default=None, metadata={"help": ctl.ADAPTIVE_OPTION_HELP["adaptive_tau"]}
    )
    adaptive_beta: float | None = field(
        default=None, metadata={"help": ctl.ADAPTIVE_OPTION_HELP["adaptive_beta"]}
    )
    adaptive_patience: int | None = field(
        default=None, metadata={"help": ctl.ADAPTIVE_OPTION_HELP["adaptive_patience"]}
    )
    adaptive_z: float | None = field(
        default=None, metadata={"help": ctl.ADAPTIVE_OPTION_HELP["adaptive_z"]}
    )
    adaptive_plateau_margin: float | str | None = field(
        default=None, metadata={"help": ctl.ADAPTIVE_OPTION_HELP["adaptive_plateau_margin"]}
    )
    log_rewardagg_metrics: bool = field(
        default=True, metadata={"help": "Log rewardagg diagnostics under 'rewardagg/...'."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("advantage_params", "advantage_kwargs"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _json_dict(value, name))
        # a method alias (``"rvpo"``: RVPO's SoftMin) is stored under the method's own name
        self.advantage_method = ALIASES.get(self.advantage_method, self.advantage_method)
        aggregator = resolve_method(self.advantage_method, SPELLING)
        self.advantage_backend = _check_backend(self.advantage_backend, self.use_cpu)
        for name in SHORTCUTS:  # validated by the table even where the method ignores them
            setattr(self, name, check_shortcut(name, getattr(self, name), aggregator.name))
        # the core's rules for stage 1 and the weights, with this config's field names
        stage = check_stage_options(
            eps=self.advantage_eps,
            singleton=self.advantage_singleton,
            baseline=self.advantage_baseline,
            settings={
                "eps": "advantage_eps",
                "singleton": "advantage_singleton",
                "baseline": "advantage_baseline",
            },
        )
        self.advantage_eps = stage["eps"]
        if self.advantage_correction is None or not 0 <= self.advantage_correction < math.inf:
            raise ValueError(
                f"advantage_correction must be a finite number >= 0; got {self.advantage_correction!r}"
            )
        for name in ("advantage_batch_norm", "log_rewardagg_metrics"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False; got {getattr(self, name)!r}")
        self.reward_weights = check_weights(self.reward_weights, "reward_weights")
        # unknown or invalid method parameters and shared options fail here, not at the
        # first batch
        aggregator.bind(self._method_params())
        self.rewardagg_options()
        self.rewardagg_adaptive()
        if aggregator.kind == "sum_first" and self.multi_objective_aggregation != (
            "sum_then_normalize"
        ):
            raise ValueError(
                f"advantage_method={aggregator.name!r} sums the rewards first (TRL's "
                "'sum_then_normalize') but "
                f"multi_objective_aggregation={self.multi_objective_aggregation!r} was requested; "
                "use advantage_method='gdpo' for TRL's 'normalize_then_sum'."
            )
        if _SCALE_PARAM not in aggregator.params and self.scale_rewards != "group":
            takers = [m for m, _ in param_specs().get(_SCALE_PARAM, [])]
            warnings.warn(
                f"scale_rewards={self.scale_rewards!r} only applies to the methods that take "
                f"a {_SCALE_PARAM!r} parameter ({', '.join(takers) or 'none registered'}); "
                f"{aggregator.name!r} does not (a z-score method standardises each reward "
                "within its group and, with advantage_batch_norm, the aggregate over the "
                "batch).",
                UserWarning,
                stacklevel=3,
            )

    def rewardagg_kwargs(self) -> dict[str, Any]:
        """Keyword arguments this config passes to :func:`rewardagg.advantages`."""
        kwargs: dict[str, Any] = {
            "method": self.advantage_method,
            "eps": self.advantage_eps,
            "correction": self.advantage_correction,
            "batch_norm": self.advantage_batch_norm,
            "baseline": self.advantage_baseline,
            "singleton": self.advantage_singleton,
            "backend": self.advantage_backend,
        }
        kwargs.update(self.rewardagg_options()[0].kwargs())
        kwargs.update(self._method_params())
        return kwargs

    def rewardagg_options(self) -> tuple[PipelineOptions, ConstraintOptions | None]:
        """The stage order, centring and conflict filter, and the constraints (``None``
        without), converted and checked against the method by the shared settings parser;
        reward names in the constraints are resolved by the trainer."""
        given = {option: getattr(self, name) for option, name in OPTION_FIELDS.items()}
        return parse_options(given, method=self.advantage_method, spelling=SPELLING)

    def rewardagg_adaptive(self) -> ctl.AdaptiveOptions | None:
        """The adaptive weights' settings (``None`` unless ``advantage_adaptive``)."""
        fields = {k: "advantage_adaptive" if k == "adaptive" else k for k in ctl.ADAPTIVE_OPTIONS}
        given = {k: getattr(self, f) for k, f in fields.items()}
        return ctl.parse_adaptive(given, fields.__getitem__)

    def _method_params(self) -> dict[str, Any]:
        """The method's own parameters: the config fields that stand for a parameter
        (``kappa``, ``lam``, ``scale_rewards`` as ``scale``) where the method takes it,
        overridden by ``advantage_params`` (converted and validated by the shared settings
        parser) and ``advantage_kwargs`` (checked by ``bind``)."""
        aggregator = rewardagg.get_aggregator(self.advantage_method)
        fields = {**{name: name for name in SHORTCUTS}, _SCALE_PARAM: "scale_rewards"}
        params = {p: getattr(self, f) for p, f in fields.items() if p in aggregator.params}
        raw = self.advantage_params if isinstance(self.advantage_params, Mapping) else {}
        explicit = split_settings(raw, spelling=SPELLING, method=aggregator.name).params
        legacy = dict(self.advantage_kwargs) if isinstance(self.advantage_kwargs, Mapping) else {}
        both = sorted(set(explicit) & set(legacy))
        if both:
            raise ValueError(
                f"{both} set in both advantage_params and advantage_kwargs; use advantage_params"
            )
        return {**params, **explicit, **legacy}


@dataclass(frozen=True)
class RewardAggBatch:
    """What the trainer computed for its latest generation batch (``trainer.last_batch``).

    Attributes:
        mode: ``"train"`` or ``"eval"``.
        rewards: (N_total, K) gathered rewards, NaN = missing (what TRL logs).
        advantages: (N_total,) rewardagg advantages of the whole gathered batch.
        local_advantages: (N_local,) the slice of this process, as passed to the loss.
        host_advantages: (N_local,) what TRL itself would have used for this slice.
        info: the ``rewardagg.AggregationInfo`` of the batch.
        metrics: the metrics logged for the batch (without the ``rewardagg/`` prefix).
        multipliers: the constraint multipliers applied to the batch (``None`` without
            constraints); the tracker has updated them since, for a training batch.
        weights: the adaptive weights applied to the batch (``None`` without
            ``advantage_adaptive``), before ``reward_weights``.
    """

    mode: str
    rewards: torch.Tensor
    advantages: torch.Tensor
    local_advantages: torch.Tensor
    host_advantages: torch.Tensor
    info: Any
    metrics: Mapping[str, float]
    multipliers: Mapping[str, float] | None = None
    weights: Sequence[float] | None = None


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            out.append(f"{name}_{seen[name]}")
        else:
            seen[name] = 0
            out.append(name)
    return out


class RewardAggGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` that turns TRL's per-reward-function rewards into advantages with
    :func:`rewardagg.advantages`; see the module docstring for how it hooks into TRL.

    Takes the same arguments as ``GRPOTrainer``; ``args`` is required and must be a
    :class:`RewardAggGRPOConfig`.

    Every generation batch logs, through TRL's own metrics (so they reach every
    ``report_to`` backend, averaged over the logging interval like TRL's), the keys of
    ``AggregationInfo.to_metrics`` under ``rewardagg/``: ``rewardagg/<metric>`` and
    ``rewardagg/<metric>/<reward function name>`` (bottleneck share, attention,
    zero-spread fraction, masked failures, rows without reward, distinct advantages per
    group, method parameters).

    With constraints (``advantage_constraints``) it also logs ``rewardagg/lambda/<reward>``
    (the multiplier after this batch's update) and ``rewardagg/constraint_mean/<reward>``
    (this batch's mean of the constrained reward) for training batches; with a conflict
    filter, ``rewardagg/conflict_dropped`` and the other ``conflict*`` keys.

    With a single reward function every built-in z-score method (every method but the
    sum-first one) reduces to the group z-score of that reward, standardised over the
    batch: the method's parameters have no effect. It works, and the trainer says so once
    with a warning (for every z-score method, registered ones included).

    Attributes:
        constraint_tracker: the run's :class:`rewardagg.ConstraintTracker` (``None``
            without constraints), saved in and restored from TRL checkpoints.
        adaptive_weights: the run's :class:`rewardagg.AdaptiveWeights` (``None`` without
            ``advantage_adaptive``).
        controller: the one controller the trainer runs (``None``, the tracker, the
            adaptive weights, or both combined): applied to every batch, updated from
            training batches, logged (``rewardagg/weight/<reward>``,
            ``rewardagg/trusted/<reward>``, ``rewardagg/lambda/<reward>``, ...) and saved
            with every checkpoint.
    """

    args: RewardAggGRPOConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("args", args[2] if len(args) >= 3 else None)
        if not isinstance(config, RewardAggGRPOConfig):
            raise TypeError(
                "RewardAggGRPOTrainer needs args=RewardAggGRPOConfig(...) (it takes every "
                "GRPOConfig argument plus advantage_method, advantage_params, ...); got "
                f"{type(config).__name__}."
            )
        super().__init__(*args, **kwargs)
        self._rewardagg_gathered: torch.Tensor | None = None
        self.last_batch: RewardAggBatch | None = None
        self._rewardagg_kwargs = self.args.rewardagg_kwargs()
        self._rewardagg_names = _unique_names(list(self.reward_func_names))
        # checked by the config already; again here, one per reward function, in case
        # they were changed since (to penalise, flip the sign inside the reward function)
        check_weights(
            self.reward_weights.detach().cpu().tolist(), "reward_weights", len(self.reward_funcs)
        )
        constraints = self.args.rewardagg_options()[1]
        self.constraint_tracker: rewardagg.ConstraintTracker | None = (
            None
            if constraints is None
            else constraints.tracker(self._rewardagg_names, OPTION_FIELDS["constraints"])
        )
        self.controller = ctl.build_controller(
            self.constraint_tracker, self.args.rewardagg_adaptive(), self._rewardagg_names
        )
        self.adaptive_weights = ctl.find_part(self.controller, rewardagg.AdaptiveWeights)
        n_funcs = len(self.reward_func_names)
        method = self.args.advantage_method
        if n_funcs == 1 and rewardagg.get_aggregator(method).kind == "standardized":
            warnings.warn(
                f"Only one reward function: advantage_method={method!r} aggregates one "
                "reward per completion, so the built-in methods reduce to that reward's group "
                "z-score standardised over the batch (their parameters have no effect). Add "
                "reward functions to make the method matter.",
                UserWarning,
                stacklevel=2,
            )

    # -- the two hooks ---------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        self._rewardagg_gathered = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        self._rewardagg_gathered = None
        output = super()._generate_and_score_completions(inputs)
        rewards = self._rewardagg_gathered
        self._rewardagg_gathered = None
        if rewards is None or "advantages" not in output:
            raise RuntimeError(
                "TRL's GRPOTrainer did not go through _calculate_rewards / return 'advantages'; "
                f"this TRL version ({trl.__version__}) is not supported by rewardagg "
                f"(supported: trl{SUPPORTED_TRL})."
            )
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        host_local = output["advantages"]
        n_local = host_local.shape[0]
        n_total = rewards.shape[0]
        start = self.accelerator.process_index * n_local
        if host_local.dim() != 1 or start + n_local > n_total:
            raise RuntimeError(
                f"Unexpected TRL batch layout: local advantages {tuple(host_local.shape)}, "
                f"gathered rewards {tuple(rewards.shape)}, "
                f"process {self.accelerator.process_index}."
            )

        tracker, controller = self.constraint_tracker, self.controller
        applied = None if tracker is None else tracker.multipliers
        adaptive = self.adaptive_weights
        applied_weights = None if adaptive is None else list(adaptive.weights)
        advantages, info = self.compute_advantages(rewards, group_size=group_size)
        if controller is not None and mode == "train":
            # every process holds the gathered batch, so the means agree without a reduction
            controller.update(rewards.detach())
        local = advantages[start : start + n_local].to(host_local.device, host_local.dtype)
        output["advantages"] = local

        # TRL's completions table keeps the gathered advantages of this batch at the end.
        logged = self._logs["advantages"]
        for _ in range(min(n_total, len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())

        metrics: dict[str, float] = {}
        if self.args.log_rewardagg_metrics:
            metrics = self.rewardagg_metrics(info)
            if controller is not None and mode == "train":
                metrics.update(controller.metrics(prefix=""))
            for key, value in metrics.items():
                self._metrics[mode][f"rewardagg/{key}"].append(value)

        self.last_batch = RewardAggBatch(
            mode=mode,
            rewards=rewards.detach(),
            advantages=advantages.detach(),
            local_advantages=local.detach(),
            host_advantages=host_local.detach(),
            info=info,
            metrics=metrics,
            multipliers=applied,
            weights=applied_weights,
        )
        return output

    # -- checkpoints: the controller's state ------------------------------------------------
    def _save_checkpoint(self, model, trial):
        if self.controller is not None and self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial),
                f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}",
            )
            ctl.save_controller(self.controller, folder)
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):
        # called on every process when train(resume_from_checkpoint=...) resumes
        super()._load_optimizer_and_scheduler(checkpoint)
        if self.controller is None or checkpoint is None:
            return
        if ctl.load_controller(self.controller, checkpoint) is None:
            warnings.warn(
                ctl.missing_message(self.controller, checkpoint), UserWarning, stacklevel=2
            )

    # -- overridable pieces ----------------------------------------------------------------
    def compute_advantages(
        self, rewards: torch.Tensor, *, group_size: int
    ) -> tuple[torch.Tensor, Any]:
        """Advantages of the whole gathered batch: ``rewards`` is (N_total, K), NaN = missing,
        rows in groups of ``group_size`` consecutive completions. Returns ``(adv, info)`` with
        ``adv`` shaped (N_total,) float64 (float32 on devices without float64)."""
        dtype = torch.float32 if rewards.device.type == "mps" else torch.float64
        weights = self.reward_weights.to(rewards.device, dtype)
        kwargs: dict[str, Any] = dict(
            group_size=group_size, weights=weights, return_info=True, **self._rewardagg_kwargs
        )
        if self.controller is not None:  # the controller's current weights/multipliers (pure)
            kwargs = ctl.controlled_kwargs(kwargs, self.controller.advantage_kwargs())
        adv, info = rewardagg.advantages(rewards.detach().to(dtype), **kwargs)
        return adv, info

    def rewardagg_metrics(self, info: Any) -> dict[str, float]:
        """Flat float metrics (keys without the ``rewardagg/`` prefix) for one batch.

        The constraint multipliers applied to the batch, which the core names by column
        (``method/multiplier/<index>``), are named by reward: ``method/multiplier/<name>``.
        """
        metrics = dict(info.to_metrics(reward_names=self._rewardagg_names))
        out: dict[str, float] = {}
        for key, value in metrics.items():
            head, _, col = key.rpartition("/")
            if head == _MULTIPLIER and col.isdigit() and int(col) < len(self._rewardagg_names):
                key = f"{head}/{self._rewardagg_names[int(col)]}"
            out[key] = float(value)
        return out
