"""Adapters that plug rewardagg into RL trainers.

Each adapter is a submodule that imports its host framework (TRL, verl, OpenRLHF) only when
the submodule itself is imported, so ``import rewardagg.integrations`` stays free of them::

    from rewardagg.integrations.trl import RewardAggGRPOConfig, RewardAggGRPOTrainer
"""

from __future__ import annotations

import importlib
from types import ModuleType

# One entry per adapter submodule (imported on first attribute access).
_ADAPTERS = ("trl", "verl", "openrlhf")

__all__ = list(_ADAPTERS)


def __getattr__(name: str) -> ModuleType:
    if name in _ADAPTERS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
