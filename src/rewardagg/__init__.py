"""rewardagg: several rewards per completion -> one advantage, for critic-free RLHF.

RVPO's SoftMin (``softmin_advantages``), GDPO, GRPO and friends as small pure functions
for numpy and torch. Importing this package imports numpy only.

Reference: Montero, Jurczyk, Dhingra, "RVPO: Risk-Sensitive Alignment via Variance
Regularization", 2026, https://arxiv.org/abs/2605.05750
"""

from rewardagg._src.adaptive import AdaptiveWeights
from rewardagg._src.aggregators import (
    cvar,
    mean_variance,
    power_mean,
    softmin,
    weighted_mean,
    weighted_min,
    weighted_sum,
)
from rewardagg._src.constraints import ConstraintTracker
from rewardagg._src.controllers import CombinedController, Controller, combine
from rewardagg._src.diagnostics import AggregationInfo
from rewardagg._src.normalisation import group_standardize
from rewardagg._src.pipeline import (
    advantages,
    cvar_advantages,
    gdpo_advantages,
    grpo_advantages,
    mean_advantages,
    mean_variance_advantages,
    min_advantages,
    power_mean_advantages,
    softmin_advantages,
)
from rewardagg._src.registry import (
    Aggregator,
    available_methods,
    get_aggregator,
    register_aggregator,
    unregister_aggregator,
)
from rewardagg._src.stage3 import batch_standardize
from rewardagg._src.tokens import expand_to_tokens
from rewardagg._version import __version__

__all__ = [
    "AdaptiveWeights",
    "AggregationInfo",
    "Aggregator",
    "CombinedController",
    "ConstraintTracker",
    "Controller",
    "__version__",
    "advantages",
    "available_methods",
    "batch_standardize",
    "combine",
    "cvar",
    "cvar_advantages",
    "expand_to_tokens",
    "gdpo_advantages",
    "get_aggregator",
    "group_standardize",
    "grpo_advantages",
    "mean_advantages",
    "mean_variance",
    "mean_variance_advantages",
    "min_advantages",
    "power_mean",
    "power_mean_advantages",
    "register_aggregator",
    "softmin",
    "softmin_advantages",
    "unregister_aggregator",
    "weighted_mean",
    "weighted_min",
    "weighted_sum",
]
