"""Why the demo's methods learn differently: the advantage of one response, in isolation.

The learning curves of ``rewardagg demo`` are the sum of many per-response credit
assignments. This module isolates one of them. A group of ``G`` responses to a prompt
contains ``n_meeting`` responses that meet the format constraint at the smallest cost
(``word`` everywhere except the last ``c`` positions, which are ``<end>``) and
``G - n_meeting`` verbose ones that break it (``word`` everywhere). Their rewards get the
environment's noise; ``n_prompts`` such groups form a batch; each method turns the batch
into advantages. Averaged over ``draws`` batches this gives, per method, the mean
advantage of a response that meets the constraint and of one that does not:

- ``n_meeting = 1`` asks "is a rare success reinforced?" (discovering a constraint);
- ``n_meeting = G - 1`` asks "is a rare failure punished?" (keeping a constraint).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import rewardagg
from rewardagg.demo.engine import per_seed_advantages
from rewardagg.demo.environment import END, WORD, ConstraintEnv
from rewardagg.demo.settings import default_methods
from rewardagg.method_settings import MethodSpec

__all__ = ["ProbeResult", "probe_advantages"]


@dataclass(frozen=True)
class ProbeResult:
    """Mean advantage of the meeting and of the failing responses, per method label."""

    n_meeting: int
    group_size: int
    meeting: dict[str, float]
    failing: dict[str, float]


def probe_advantages(
    env: ConstraintEnv,
    *,
    n_meeting: int,
    group_size: int = 8,
    n_prompts: int = 4,
    draws: int = 500,
    methods: Sequence[MethodSpec] | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Mean advantages in the constructed groups described in the module docstring.

    ``methods`` default to the settings of the method table (no variants) that take
    signed rewards (the environment's noise makes rewards negative). A setting with a
    ``constraint`` option runs as its method alone (a fresh tracker's multiplier is 0).
    """
    if not 1 <= n_meeting < group_size:
        raise ValueError(f"n_meeting must be in [1, group_size - 1], got {n_meeting}")
    if methods is None:
        methods = [
            m
            for m in default_methods(variants=False)
            if not rewardagg.get_aggregator(m.method).nonnegative
        ]
    methods = list(methods)
    meets = np.full(env.length, WORD)
    meets[env.length - env.constraint_length :] = END
    fails = np.full(env.length, WORD)
    tokens = np.stack([meets] * n_meeting + [fails] * (group_size - n_meeting))
    tokens = np.broadcast_to(tokens, (n_prompts, group_size, env.length))
    rng = np.random.default_rng(seed)
    k = env.n_rewards
    sums = np.zeros((len(methods), 2))
    for _ in range(draws):
        noise = rng.standard_normal((n_prompts, group_size, k - 1))
        rewards = env.rewards(tokens, noise).reshape(n_prompts * group_size, k)
        for m, spec in enumerate(methods):
            adv = per_seed_advantages(rewards[None], spec, group_size=group_size)
            adv = adv.reshape(n_prompts, group_size)
            sums[m, 0] += adv[:, :n_meeting].mean()
            sums[m, 1] += adv[:, n_meeting:].mean()
    means = sums / draws
    return ProbeResult(
        n_meeting=n_meeting,
        group_size=group_size,
        meeting={s.label: float(means[m, 0]) for m, s in enumerate(methods)},
        failing={s.label: float(means[m, 1]) for m, s in enumerate(methods)},
    )
