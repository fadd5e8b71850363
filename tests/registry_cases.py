"""The methods under test, read from the registry (optax-style registry-wide tests): a new
table entry, or a method registered before the tests are collected, is covered by every
test that uses these lists, without edits."""

from __future__ import annotations

import contextlib

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


def _positive(value, name):
    if not value > 0:  # also NaN
        raise ValueError(f"{name} must be > 0; got {value!r}")
    return float(value)


@contextlib.contextmanager
def tempered_method(name: str):
    """A method registered for the duration of a ``with`` block (issue 11): the SoftMin at
    temperature ``tau`` (kappa = 1 / tau), a parameter no built-in has, with its own check;
    unregistered afterwards so that registry-wide tests never see it."""

    def tempered_softmin(z, *, weights=None, tau=0.3):
        return ra.softmin(z, kappa=1.0 / tau, weights=weights)

    ra.register_aggregator(name, tempered_softmin, params={"tau": 0.3}, checks={"tau": _positive})
    try:
        yield name
    finally:
        if name in ra.available_methods():
            ra.unregister_aggregator(name)
