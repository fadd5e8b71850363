r"""Training on the constraint-neglect toy (:class:`~rewardagg.demo.environment.ConstraintEnv`).

For every scenario, method and seed the loop trains the tabular policy for ``steps``
updates:

1. for each of the ``P`` prompts, sample a group of ``G`` responses from the policy;
2. score them with the ``K`` rule-based rewards, giving ``R`` of shape ``(P * G, K)``
   with rows grouped by prompt (``group_size=G``, the TRL layout);
3. turn ``R`` into one advantage per response with each method
   (:mod:`rewardagg.demo.engine`: exactly ``rewardagg.advantages(R, ...)`` per seed);
4. take one plain gradient-ascent step on the logits,
   ``theta[p] += lr * mean_g A[p, g] * grad log pi(x[p, g] | p)``
   (REINFORCE with the group advantages, on-policy, so no ratio clipping is needed).

All methods and seeds advance together as one array ``theta`` of shape
``(M, S, P, L, 2)``. Seed ``s`` owns a random stream of its own, and every method sees the
same stream (common random numbers: the same uniform draws decide the tokens, the same
normal draws are the judge's noise), so the methods are compared on paired runs and a
seed's numbers do not depend on how many seeds are run. The measurements are the exact
expected rewards of the policy (closed form, no sampling noise):

- ``format``: P(format met), mean over the prompts; ``format_p<i>``: on prompt ``i``
  alone (the prompts start at different rates, so a mean of 0.25 can be one prompt kept
  out of four);
- ``verbose``: the mean over the verbosity rewards of the expected word share of the
  window; ``worst``: the mean over prompts of the smallest normalised expected reward;
- ``neglect``: over all updates, the share of sampled responses that failed the format
  in a group where another response met it, yet got a positive advantage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rewardagg.demo.engine import per_seed_advantages
from rewardagg.demo.environment import END, end_probability
from rewardagg.demo.results import RunResult
from rewardagg.demo.rubric_train import neglect_counts
from rewardagg.demo.scenarios import NeglectScenario
from rewardagg.demo.settings import ControllerContext, final_multipliers, make_controller
from rewardagg.method_settings import MethodSpec

__all__ = ["train_neglect"]


def train_neglect(
    scenario: NeglectScenario,
    methods: Sequence[MethodSpec],
    seeds: Sequence[int],
    *,
    steps: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Train every setting of ``methods`` on the toy ``scenario`` for each of ``seeds``."""
    env = scenario.env
    T = scenario.steps if steps is None else steps
    M, S, P, G = len(methods), len(seeds), env.n_prompts, scenario.group_size
    L, K = env.length, env.n_rewards
    rngs = [np.random.default_rng(np.random.SeedSequence([s, *scenario.seed_key])) for s in seeds]
    context = ControllerContext(n_rewards=K)
    trackers = [[make_controller(spec, context) for _ in seeds] for spec in methods]

    theta = np.broadcast_to(env.initial_logits(), (M, S, P, L, 2)).copy()
    checkpoints = np.unique(np.r_[np.arange(0, T, scenario.eval_every), T])
    curves = {k: np.empty((len(checkpoints), M, S)) for k in ("format", "worst", "verbose")}
    failures = np.zeros((M, S))
    rewarded = np.zeros((M, S))

    def expected() -> tuple[np.ndarray, np.ndarray]:
        e = env.expected_rewards(theta)  # (M, S, P, K)
        return e, env.normalised(e)

    def record(i: int) -> None:
        e, n = expected()
        curves["format"][i] = e[..., 0].mean(axis=-1)
        curves["worst"][i] = n.min(axis=-1).mean(axis=-1)
        curves["verbose"][i] = n[..., 1:].mean(axis=(-2, -1))

    record(0)
    adv = np.empty((M, S, P * G))
    for t in range(T):
        u = np.stack([r.random((P, G, L)) for r in rngs])  # (S, P, G, L)
        z = np.stack([r.standard_normal((P, G, K - 1)) for r in rngs])  # (S, P, G, K-1)
        p_end = end_probability(theta)  # (M, S, P, L)
        is_end = u[None] < p_end[:, :, :, None, :]  # (M, S, P, G, L)
        tokens = np.where(is_end, END, 1 - END)
        rewards = env.rewards(tokens, z[None])  # (M, S, P, G, K)
        flat = rewards.reshape(M, S, P * G, K)
        for m, spec in enumerate(methods):
            adv[m] = per_seed_advantages(flat[m], spec, group_size=G, trackers=trackers[m])
        # grad of log pi wrt theta[..., l, v] is onehot(x_l)[v] - pi_l(v); with two tokens
        # the END and WORD components are opposite, so one array carries both.
        g_end = is_end.astype(np.float64) - p_end[:, :, :, None, :]  # (M, S, P, G, L)
        a = adv.reshape(M, S, P, G)
        step = scenario.lr * np.einsum("mspg,mspgl->mspl", a, g_end) / G
        theta[..., END] += step
        theta[..., 1 - END] -= step
        f, r = neglect_counts(rewards[..., 0], a)
        failures += f
        rewarded += r
        if t + 1 in checkpoints:
            record(int(np.searchsorted(checkpoints, t + 1)))
        if progress is not None:
            progress(1)

    e, _ = expected()
    with np.errstate(invalid="ignore", divide="ignore"):
        neglect = np.where(failures > 0, rewarded / np.maximum(failures, 1), np.nan)
    metrics = {
        "format": curves["format"][-1],
        **{f"format_p{p + 1}": e[..., p, 0] for p in range(P)},
        "verbose": curves["verbose"][-1],
        "worst": curves["worst"][-1],
        "neglect": neglect,
    }
    lam = final_multipliers(trackers)
    if lam is not None:
        metrics["multiplier"] = lam
    return RunResult(
        scenario, list(methods), list(seeds), metrics, curves, checkpoints, final={"theta": theta}
    )
