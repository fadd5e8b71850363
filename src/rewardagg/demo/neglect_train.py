"""The training loop of ``rewardagg demo``: GRPO-style policy gradient, one run per method.

For every scenario, method and seed the loop trains the tabular policy of
:class:`~rewardagg.demo.environment.ConstraintEnv` for ``steps`` updates:

1. for each of the ``P`` prompts, sample a group of ``G`` responses from the policy;
2. score them with the ``K`` rule-based rewards, giving ``R`` of shape ``(P * G, K)``
   with rows grouped by prompt (``group_size=G``, the TRL layout);
3. turn ``R`` into one advantage per response with
   ``rewardagg.advantages(R, method=..., group_size=G, ...)``;
4. take one plain gradient-ascent step on the logits,
   ``theta[p] += lr * mean_g A[p, g] * grad log pi(x[p, g] | p)``
   (REINFORCE with the group advantages, on-policy, so no ratio clipping is needed).

All methods and seeds advance together as one array ``theta`` of shape
``(methods, seeds, P, L, 2)``. Seed ``s`` owns a random stream of its own, and every method
sees the same stream (common random numbers: the same uniform draws decide the tokens, the
same normal draws are the judge's noise), so the methods are compared on paired runs and a
seed's numbers do not depend on how many seeds are run. The learning curves are the exact
expected rewards of the policy (closed form, no sampling noise) after each update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardagg._src.registry import available_methods, get_aggregator
from rewardagg.demo.environment import END, ConstraintEnv, end_probability
from rewardagg.method_settings import MethodSpec, check_methods, method_settings

__all__ = [
    "DemoConfig",
    "MethodSpec",
    "Scenario",
    "ScenarioResult",
    "default_methods",
    "default_scenarios",
    "run_demo",
    "run_scenario",
]


#: Left out of the default list: ``mean`` is softmin at kappa 0, so the default table
#: shows the softmin family once (README's demo tables).
DEFAULT_EXCLUDED = ("mean",)


def default_methods(
    names: Sequence[str] | None = None,
    *,
    params: Mapping[str, Sequence[Any]] | None = None,
) -> list[MethodSpec]:
    """The methods to compare, in the order of the method table, one entry per setting of
    each method's ``sweep`` (see :mod:`rewardagg.method_settings`).

    Args:
        names: registry names (any order; unknown ones raise ``ValueError``). Default:
            every method of :func:`rewardagg.available_methods` (built-ins, then registered
            ones) but :data:`DEFAULT_EXCLUDED` and the methods the table marks as defined
            for non-negative values only (``nonnegative``: the demo's rewards carry
            Gaussian noise). Named, those run too (with ``noise=0`` the rewards are
            non-negative).
        params: parameter name -> values, replacing that parameter's sweep in every
            selected method that takes it (the command line's ``--param NAME=V1,V2``).
    """
    table = available_methods()
    if names is None:
        names = [
            n for n in table if n not in DEFAULT_EXCLUDED and not get_aggregator(n).nonnegative
        ]
    names = check_methods(names)
    return method_settings(sorted(names, key=table.index), params)


@dataclass(frozen=True)
class Scenario:
    """A named environment: the main (hard constraint) scenario or the control."""

    name: str
    env: ConstraintEnv
    description: str = ""


def default_scenarios(
    *,
    n_rewards: Sequence[int] = (4, 17),
    difficulty: Sequence[float] = (0.05, 0.5),
    **env_kwargs,
) -> list[Scenario]:
    """One scenario per pair (number of rewards, starting constraint satisfaction).

    The default grid crosses K = 4 and K = 17 rewards with a rare constraint (met by 5% of
    the responses at the start, the main case) and an easy one (50%, the control), all
    other environment parameters equal (``env_kwargs`` go to every
    :class:`~rewardagg.demo.environment.ConstraintEnv`).
    """
    out = []
    for k in n_rewards:
        for d in difficulty:
            env = ConstraintEnv(n_rewards=int(k), initial_satisfaction=float(d), **env_kwargs)
            out.append(
                Scenario(
                    f"K={k}, start {_pct(d)}",
                    env,
                    f"{k} rewards; format constraint met by {_pct(d)} of responses at the start",
                )
            )
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"


@dataclass(frozen=True)
class DemoConfig:
    """Everything but the environment: training length, seeds, methods, evaluation.

    Args:
        seeds: number of independent runs per method (seed ``i`` is ``base_seed + i``).
        steps: policy-gradient updates per run.
        group_size: ``G``, responses sampled per prompt per step.
        lr: step size of the plain gradient ascent on the logits.
        methods: the methods to compare; ``None`` means :func:`default_methods`.
        threshold: constraint satisfaction for "steps to threshold".
        base_seed: first seed.
    """

    seeds: int = 16
    steps: int = 300
    group_size: int = 8
    lr: float = 0.3
    methods: tuple[MethodSpec, ...] | None = None
    threshold: float = 0.9
    base_seed: int = 0

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {self.group_size}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")

    def method_list(self) -> list[MethodSpec]:
        return list(self.methods) if self.methods is not None else default_methods()


@dataclass
class ScenarioResult:
    """Learning curves and summary of one scenario.

    Attributes:
        scenario: the scenario that was run.
        methods: the methods, in the order of the first axis of the arrays.
        expected: ``(steps + 1, M, S, K)`` exact expected rewards (mean over prompts)
            before the first and after every update.
        worst: ``(steps + 1, M, S)`` mean over prompts of the smallest normalised
            expected reward.
        neglect: ``(steps, M, S)`` fraction of sampled responses that fail the constraint
            in a group where another response meets it, yet get a positive advantage
            (NaN at a step with no such response).
        seeds: the seeds used.
        threshold: the constraint satisfaction counted by :meth:`steps_to_threshold`.
    """

    scenario: Scenario
    methods: list[MethodSpec]
    expected: np.ndarray
    worst: np.ndarray
    neglect: np.ndarray
    seeds: list[int]
    threshold: float

    @property
    def satisfaction(self) -> np.ndarray:
        """``(steps + 1, M, S)`` probability of meeting the constraint, mean over prompts."""
        return self.expected[..., 0]

    @property
    def mean_normalised(self) -> np.ndarray:
        """``(steps + 1, M, S)`` mean over the K rewards of the normalised expected rewards."""
        return self.scenario.env.normalised(self.expected).mean(axis=-1)

    def steps_to_threshold(self) -> np.ndarray:
        """``(M, S)`` first update after which satisfaction >= threshold (NaN: never)."""
        hit = self.satisfaction >= self.threshold
        first = np.argmax(hit, axis=0).astype(np.float64)
        first[~hit.any(axis=0)] = np.nan
        return first


def _advantage_fn() -> Callable[..., np.ndarray]:
    import rewardagg

    return rewardagg.advantages


def run_scenario(
    scenario: Scenario,
    config: DemoConfig,
    *,
    progress: Callable[[int], None] | None = None,
    advantages: Callable[..., np.ndarray] | None = None,
) -> ScenarioResult:
    """Train every method of ``config`` on ``scenario``; see the module docstring.

    ``progress(n)`` is called after each update with ``n = 1``. ``advantages`` replaces
    ``rewardagg.advantages`` (for tests).
    """
    adv_fn = advantages if advantages is not None else _advantage_fn()
    env = scenario.env
    methods = config.method_list()
    M, S, P, G = len(methods), config.seeds, env.n_prompts, config.group_size
    L, K, T = env.length, env.n_rewards, config.steps
    seeds = [config.base_seed + i for i in range(S)]
    rngs = [np.random.default_rng(np.random.SeedSequence([s, K, L])) for s in seeds]

    theta = np.broadcast_to(env.initial_logits(), (M, S, P, L, 2)).copy()
    expected = np.empty((T + 1, M, S, K))
    worst = np.empty((T + 1, M, S))
    neglect = np.full((T, M, S), np.nan)

    def record(t: int) -> None:
        e = env.expected_rewards(theta)  # (M, S, P, K)
        expected[t] = e.mean(axis=2)
        worst[t] = env.normalised(e).min(axis=-1).mean(axis=-1)

    record(0)
    adv = np.empty((M, S, P, G))
    for t in range(T):
        u = np.stack([r.random((P, G, L)) for r in rngs])  # (S, P, G, L)
        z = np.stack([r.standard_normal((P, G, K - 1)) for r in rngs])  # (S, P, G, K-1)
        p_end = end_probability(theta)  # (M, S, P, L)
        is_end = u[None] < p_end[:, :, :, None, :]  # (M, S, P, G, L)
        tokens = np.where(is_end, END, 1 - END)
        rewards = env.rewards(tokens, z[None])  # (M, S, P, G, K)
        flat = rewards.reshape(M, S, P * G, K)
        for m, spec in enumerate(methods):
            for s in range(S):
                a = adv_fn(flat[m, s], method=spec.method, group_size=G, **spec.params)
                adv[m, s] = np.asarray(a, dtype=np.float64).reshape(P, G)
        # grad of log pi wrt theta[..., l, v] is onehot(x_l)[v] - pi_l(v); with two tokens
        # the END and WORD components are opposite, so one array carries both.
        g_end = is_end.astype(np.float64) - p_end[:, :, :, None, :]  # (M, S, P, G, L)
        step = config.lr * np.einsum("mspg,mspgl->mspl", adv, g_end) / G
        theta[..., END] += step
        theta[..., 1 - END] -= step
        neglect[t] = _neglect_rate(rewards[..., 0], adv)
        record(t + 1)
        if progress is not None:
            progress(1)
    return ScenarioResult(scenario, methods, expected, worst, neglect, seeds, config.threshold)


def _neglect_rate(fmt: np.ndarray, adv: np.ndarray) -> np.ndarray:
    """Share of constraint failures rewarded anyway, among groups where the constraint varies.

    ``fmt`` and ``adv`` are ``(M, S, P, G)``; returns ``(M, S)`` (NaN where undefined).
    """
    varies = fmt.max(axis=-1, keepdims=True) > fmt.min(axis=-1, keepdims=True)
    failed = varies & (fmt == 0.0)
    n = failed.sum(axis=(-2, -1))
    pos = (failed & (adv > 0)).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, pos / np.maximum(n, 1), np.nan)


def run_demo(
    scenarios: Sequence[Scenario],
    config: DemoConfig,
    *,
    progress: Callable[[int], None] | None = None,
    advantages: Callable[..., np.ndarray] | None = None,
) -> list[ScenarioResult]:
    """Run :func:`run_scenario` for each scenario, in order."""
    return [run_scenario(sc, config, progress=progress, advantages=advantages) for sc in scenarios]


# ---------------------------------------------------------------------- statistics
# Two-sided 95% Student t quantiles t_{0.975, df} for df = 1..30 (standard tables).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """``t_{0.975}`` with ``df`` degrees of freedom (normal 1.96 above 30; NaN below 1)."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= 30 else 1.96


def mean_ci(x: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width of the 95% t confidence interval over ``axis``, NaNs ignored.

    The half-width is NaN where fewer than two finite values are present.
    """
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    n = finite.sum(axis=axis)
    xs = np.where(finite, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = xs.sum(axis=axis) / n
        dev = np.where(finite, x - np.expand_dims(mean, axis), 0.0)
        var = (dev**2).sum(axis=axis) / (n - 1)
        tq = np.vectorize(lambda d: t_quantile_975(int(d)), otypes=[float])(n - 1)
        half = tq * np.sqrt(var / n)
    mean = np.where(n > 0, mean, np.nan)
    half = np.where(n > 1, half, np.nan)
    return mean, half
