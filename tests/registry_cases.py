"""The methods under test, read from the registry (optax-style registry-wide tests): a new
table entry, or a method registered before the tests are collected, is covered by every
test that uses these lists, without edits."""

from __future__ import annotations

import numpy as np

import rewardagg as ra


def methods() -> tuple[str, ...]:
    """Every registered method."""
    return ra.available_methods()


def settings() -> list[tuple[str, dict]]:
    """``(method, params)`` for every method and every setting of its sweep."""
    return [(m, dict(p)) for m in methods() for p in ra.get_aggregator(m).sweep]


def z_score_methods() -> list[str]:
    """Methods that reduce group z-scores (stages 1-2-3, order normalize_then_reduce)."""
    return [
        m
        for m in methods()
        if ra.get_aggregator(m).kind == "standardized"
        and "normalize_then_reduce" in ra.get_aggregator(m).orders
    ]


def domain(method: str, R: np.ndarray) -> np.ndarray:
    """``R`` moved into the method's domain (absolute values for non-negative reducers)."""
    return np.abs(R) if ra.get_aggregator(method).nonnegative else R
