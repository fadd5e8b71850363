r"""Training on the rubric testbed: GRPO-style updates of a shared Gaussian policy.

For each seed: draw the rubric's criteria, 64 training prompts and 64 held-out prompts
(:mod:`rewardagg.demo.rubric`); then, for every update,

1. sample ``prompts_per_step`` training prompts (without replacement) and ``G``
   responses :math:`x = \mu + \sigma \epsilon` for each (:mod:`rewardagg.demo.policy`);
2. decide the true verdicts (met when :math:`b_{pk} + a_k \cdot x + \xi > 0`), let the
   judge flip each with probability ``eps``, and turn the judged verdicts into reward
   columns (:mod:`rewardagg.demo.judge`): ``R`` of shape ``(B * G, K)``, rows grouped by
   prompt (``group_size=G``), NaN for criteria a prompt's rubric does not have;
3. turn ``R`` into advantages with each method (:mod:`rewardagg.demo.engine`);
4. take one REINFORCE step on :math:`\mu`.

All methods and seeds advance together (``mu`` has shape ``(M, S, D)``). Seed ``s`` owns its
random streams, and every method sees the same draws (the same prompts, the same
:math:`\epsilon`, :math:`\xi` and judge flips: common random numbers), so methods are
compared on paired runs and a seed's numbers do not depend on the other seeds.

Evaluation (every ``eval_every`` updates, and before the first) is exact and uses the
true verdicts: on the held-out prompts, the probability that each criterion is met under
the policy (closed form), from which

- ``critical_met``: mean over held-out prompts of P(critical met);
- ``easy_met``: mean over held-out (prompt, easy criterion of its rubric) of P(met);
- ``extra_met`` (``stuck`` and ``trap`` scenarios): P(the extra criterion met);
- ``rubric_score``: the HealthBench score (:mod:`rewardagg.demo.healthbench`) in the limit
  of many responses per prompt. The score of a response is linear in its verdicts, so
  its expectation is the same formula applied to the met probabilities; the clip to
  [0, 1] applies to the mean over prompts.

``critical_drop`` is the largest value of the ``critical_met`` curve minus its final value
(0 when the curve ends at its peak). ``neglect`` counts, over all updates, the responses
judged to fail the critical criterion in a group where another response was judged to
meet it, and the share of them that got a positive advantage. ``multiplier`` is the
final multiplier of a setting's constraint tracker (NaN for the other settings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rewardagg.demo.engine import per_seed_advantages
from rewardagg.demo.healthbench import healthbench_score
from rewardagg.demo.judge import judge_verdicts, reward_columns
from rewardagg.demo.policy import policy_step, sample_features
from rewardagg.demo.results import RunResult
from rewardagg.demo.rubric import (
    CRITICAL,
    FEATURES,
    Criteria,
    Prompts,
    make_criteria,
    make_prompts,
    met_logits,
    met_probability,
)
from rewardagg.demo.scenarios import RubricScenario
from rewardagg.demo.settings import ControllerContext, final_multipliers, make_controller
from rewardagg.method_settings import MethodSpec

__all__ = ["RubricWorld", "draw_world", "evaluate", "neglect_counts", "train_rubric"]


class RubricWorld:
    """One seed's rubric: its criteria, training prompts and held-out prompts."""

    def __init__(self, criteria: Criteria, train: Prompts, heldout: Prompts) -> None:
        self.criteria = criteria
        self.train = train
        self.heldout = heldout


def _rng(seed: int, stream: int, key: tuple[int, ...]) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *key]))


def draw_world(scenario: RubricScenario, seed: int) -> RubricWorld:
    """The rubric, training prompts and held-out prompts of ``seed`` (its own stream)."""
    rng = _rng(seed, 0, scenario.seed_key)
    kw = {"prompt_spread": scenario.prompt_spread}
    criteria = make_criteria(
        rng,
        scenario.n_criteria,
        scenario.critical_rate,
        policy_std=scenario.policy_std,
        extra=scenario.extra,
        **kw,
    )
    train = make_prompts(rng, criteria, scenario.n_train, presence=scenario.presence, **kw)
    heldout = make_prompts(rng, criteria, scenario.n_heldout, presence=scenario.presence, **kw)
    return RubricWorld(criteria, train, heldout)


def evaluate(world: RubricWorld, mu: np.ndarray, sigma: float) -> dict[str, np.ndarray]:
    """``critical_met``, ``easy_met`` and ``rubric_score`` of the policies ``mu``
    ``(..., D)`` on the held-out prompts, exact, true verdicts (module docstring)."""
    c, h = world.criteria, world.heldout
    p = met_probability(h.offsets, c.loadings, mu[..., None, :], sigma)  # (..., P, K)
    easy = h.present & c.mask("easy")
    out = {
        "critical_met": p[..., CRITICAL].mean(axis=-1),
        "easy_met": np.where(easy, p, 0.0).sum(axis=(-2, -1)) / easy.sum(),
        "rubric_score": healthbench_score(p, c.points, h.present, axis=-1),
    }
    if c.extra is not None:
        out["extra_met"] = p[..., c.extra].mean(axis=-1)
    return out


def neglect_counts(critical: np.ndarray, adv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(failures, rewarded)``: judged critical failures ``(critical == 0)`` in groups where
    another response was judged to meet it, and those of them with a positive advantage
    (above :data:`POSITIVE`: an advantage that is 0 up to rounding is not a reward);
    ``critical`` and ``adv`` are ``(..., B, G)``, the counts sum over the last two axes."""
    varies = critical.max(axis=-1, keepdims=True) > critical.min(axis=-1, keepdims=True)
    failed = varies & (critical == 0.0)
    return failed.sum(axis=(-2, -1)), (failed & (adv > POSITIVE)).sum(axis=(-2, -1))


POSITIVE = 1e-9
"""Advantages at or below this count as not positive (rounding of an exact 0)."""


def train_rubric(
    scenario: RubricScenario,
    methods: Sequence[MethodSpec],
    seeds: Sequence[int],
    *,
    steps: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Train every setting of ``methods`` on ``scenario`` for each of ``seeds``."""
    sc = scenario
    T = sc.steps if steps is None else steps
    M, S, D, K = len(methods), len(seeds), len(FEATURES), sc.n_criteria
    B, G, sigma = sc.prompts_per_step, sc.group_size, sc.policy_std
    worlds = [draw_world(sc, s) for s in seeds]
    rngs = [_rng(s, 1, sc.seed_key) for s in seeds]
    points = np.stack([w.criteria.points for w in worlds])  # (S, K)
    loadings = np.stack([w.criteria.loadings for w in worlds])  # (S, K, D)
    context = ControllerContext(judge_noise=sc.judge_noise, n_rewards=K)
    trackers = [[make_controller(spec, context) for _ in seeds] for spec in methods]

    checkpoints = np.unique(np.r_[np.arange(0, T, sc.eval_every), T])
    names = ["critical_met", "easy_met", "rubric_score"]
    extra = worlds[0].criteria.extra
    if extra is not None:
        names.append("extra_met")
    curves = {k: np.empty((len(checkpoints), M, S)) for k in names}
    mu = np.zeros((M, S, D))
    failures = np.zeros((M, S))
    rewarded = np.zeros((M, S))

    def record(i: int) -> None:
        for s, w in enumerate(worlds):
            for name, v in evaluate(w, mu[:, s], sigma).items():
                curves[name][i, :, s] = v

    record(0)
    adv = np.empty((M, S, B * G))
    for t in range(T):
        idx = np.stack([r.choice(sc.n_train, B, replace=False) for r in rngs])  # (S, B)
        eps = np.stack([r.standard_normal((B, G, D)) for r in rngs])  # (S, B, G, D)
        xi = np.stack([r.standard_normal((B, G, K)) for r in rngs])  # (S, B, G, K)
        u = np.stack([r.random((B, G, K)) for r in rngs])  # judge flips
        if extra is not None and sc.extra == "trap":
            xi[..., extra] = -xi[..., CRITICAL]  # met when the critical fails by the margin
        offsets = np.stack([w.train.offsets[i] for w, i in zip(worlds, idx, strict=True)])
        present = np.stack([w.train.present[i] for w, i in zip(worlds, idx, strict=True)])
        x = sample_features(mu[:, :, None, None, :], eps[None], sigma)  # (M, S, B, G, D)
        logit = met_logits(offsets[None, :, :, None, :], loadings[None, :, None, None], x)
        met = logit + xi[None] > 0
        judged = judge_verdicts(met, sc.judge_noise, u[None])
        rewards = reward_columns(judged, points[None, :, None, None], present[None, :, :, None])
        flat = rewards.reshape(M, S, B * G, K)
        for m, spec in enumerate(methods):
            adv[m] = per_seed_advantages(
                flat[m], spec, group_size=G, points=points, trackers=trackers[m]
            )
        f, r = neglect_counts(rewards[..., CRITICAL], adv.reshape(M, S, B, G))
        failures += f
        rewarded += r
        mu = policy_step(mu, adv, eps.reshape(S, B * G, D)[None], sigma, sc.lr)
        if t + 1 in checkpoints:
            record(int(np.searchsorted(checkpoints, t + 1)))
        if progress is not None:
            progress(1)

    with np.errstate(invalid="ignore", divide="ignore"):
        neglect = np.where(failures > 0, rewarded / np.maximum(failures, 1), np.nan)
    crit = curves["critical_met"]
    metrics = {
        "rubric_score": curves["rubric_score"][-1],
        "critical_met": crit[-1],
        "critical_drop": crit.max(axis=0) - crit[-1],
        "easy_met": curves["easy_met"][-1],
        **({} if extra is None else {"extra_met": curves["extra_met"][-1]}),
        "neglect": neglect,
    }
    lam = final_multipliers(trackers)
    if lam is not None:
        metrics["multiplier"] = lam
    return RunResult(sc, list(methods), list(seeds), metrics, curves, checkpoints, final={"mu": mu})
