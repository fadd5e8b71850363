"""The scenarios of ``rewardagg demo``: the rubric testbed (default) and the neglect toy.

Rubric scenarios (:class:`RubricScenario`, :mod:`rewardagg.demo.rubric`) cross three
factors, two levels each, eight scenarios named ``k{K}-{rare|common}-{clean|noisy}``:

- criteria per rubric, ``K`` = 17 (RVPO's setting: up to 17 judged rubric rewards) or 5;
- the critical criterion's start rate, ``rare`` (met by about 10% of responses at the
  start: it has to be discovered) or ``common`` (about 70%: it has to be kept);
- the judge, ``clean`` (verdicts exact) or ``noisy`` (each verdict flipped with
  probability 0.1).

Two further rubric families add one ``extra`` criterion (:mod:`rewardagg.demo.rubric`)
to the ``common`` scenarios (critical met by about 70% at the start), at K = 17 and 5,
clean and noisy: ``stuck`` (``stuck-k17-clean``, ...: a criterion met with probability
0.05 whatever the policy does) and ``trap`` (``trap-k17-clean``, ...: an easy criterion
met only by verbose responses that fail the critical one). They test what the default
grid cannot: a rule that chases the rarest criterion blindly, or whose weights follow
the criteria's pass rates, meets a bottleneck it cannot move, and one that works against
the constraint.

Neglect scenarios (:class:`NeglectScenario`, :mod:`rewardagg.demo.environment`) are the
earlier toy: a format constraint against K - 1 verbosity rewards on 6-token responses,
K = 4 or 17 crossed with the format met by 5% (rare) or 50% (control) at the start.

Scenarios of one factor pair share their random numbers (the rubric, the prompts, every
draw of the training loop): ``k17-rare-clean`` and ``k17-rare-noisy`` differ only in the
judge's flips, so their difference is the noise's effect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rewardagg.demo.environment import ConstraintEnv
from rewardagg.demo.rubric import EXTRAS

__all__ = [
    "FAMILIES",
    "QUICK_SCENARIOS",
    "NeglectScenario",
    "RubricScenario",
    "extra_scenarios",
    "neglect_scenarios",
    "rubric_scenarios",
    "select_scenarios",
]


@dataclass(frozen=True)
class RubricScenario:
    """A rubric-testbed scenario and its training set-up.

    Args:
        name: short name (``--scenario``).
        n_criteria: ``K``, criteria per rubric (>= 3).
        critical_rate: start probability of meeting the critical criterion, on average
            over prompts.
        judge_noise: the judge's flip probability ``eps`` (training rewards only).
        presence: probability that a non-critical criterion belongs to a prompt's rubric.
        prompt_spread: std of the per-prompt offsets (probit units).
        policy_std: ``sigma`` of the Gaussian policy.
        n_train: training prompts; ``n_heldout``: held-out prompts (evaluation only).
        prompts_per_step: prompts sampled (without replacement) for each update.
        group_size: ``G``, responses per prompt.
        lr: policy step size.
        steps: updates per run (``--steps`` overrides).
        eval_every: updates between two points of the learning curves.
        extra: ``None``, ``"stuck"`` or ``"trap"``: the extra criterion
            (:mod:`rewardagg.demo.rubric`).
    """

    name: str
    n_criteria: int = 17
    critical_rate: float = 0.1
    judge_noise: float = 0.0
    presence: float = 0.75
    prompt_spread: float = 0.5
    policy_std: float = 1.0
    n_train: int = 64
    n_heldout: int = 64
    prompts_per_step: int = 8
    group_size: int = 8
    lr: float = 0.1
    steps: int = 200
    eval_every: int = 10
    extra: str | None = None
    family: str = field(default="rubric", init=False)

    def __post_init__(self) -> None:
        if self.extra is not None and self.extra not in EXTRAS:
            raise ValueError(f"extra must be None or one of {EXTRAS}, got {self.extra!r}")
        if self.n_criteria < 3 + (self.extra is not None):
            raise ValueError(f"n_criteria must be >= 3, got {self.n_criteria}")
        if not 0.0 < self.critical_rate < 1.0:
            raise ValueError(f"critical_rate must be in (0, 1), got {self.critical_rate}")
        if not 0.0 <= self.judge_noise < 0.5:
            raise ValueError(f"judge_noise must be in [0, 0.5), got {self.judge_noise}")
        if not 1 <= self.prompts_per_step <= self.n_train:
            raise ValueError(
                f"prompts_per_step must be in [1, n_train={self.n_train}], "
                f"got {self.prompts_per_step}"
            )
        if self.group_size < 2 or self.n_heldout < 1 or self.eval_every < 1:
            raise ValueError("group_size must be >= 2, n_heldout and eval_every >= 1")

    @property
    def description(self) -> str:
        judge = f"judge flips {self.judge_noise:.0%}" if self.judge_noise else "exact judge"
        extra = {
            None: "",
            "stuck": ", one stuck at 5% whatever the policy",
            "trap": ", one trap met only when the critical fails",
        }[self.extra]
        return (
            f"{self.n_criteria} criteria, critical met by {self.critical_rate:.0%} "
            f"at the start{extra}, {judge}"
        )

    @property
    def seed_key(self) -> tuple[int, ...]:
        """Mixed into every seed's random streams; the judge noise is left out on purpose
        (clean and noisy scenarios share their draws)."""
        key = (1, self.n_criteria, round(self.critical_rate * 1000))
        return key if self.extra is None else (*key, 1 + EXTRAS.index(self.extra))

    nonnegative_rewards = True
    has_points = True


@dataclass(frozen=True)
class NeglectScenario:
    """A scenario of the constraint-neglect toy (:class:`ConstraintEnv`) and its set-up."""

    name: str
    env: ConstraintEnv
    group_size: int = 8
    lr: float = 0.3
    steps: int = 300
    eval_every: int = 10
    family: str = field(default="neglect", init=False)

    @property
    def description(self) -> str:
        e = self.env
        return (
            f"{e.n_rewards} rewards, format met by {e.initial_satisfaction:.0%} at the start, "
            f"{e.n_prompts} prompts"
        )

    @property
    def seed_key(self) -> tuple[int, ...]:
        return (self.env.n_rewards, self.env.length)

    @property
    def nonnegative_rewards(self) -> bool:
        return self.env.noise == 0

    has_points = False


def rubric_scenarios(
    n_criteria: Sequence[int] = (17, 5),
    critical_rates: Sequence[tuple[str, float]] = (("rare", 0.1), ("common", 0.7)),
    judge_noise: Sequence[tuple[str, float]] = (("clean", 0.0), ("noisy", 0.1)),
    **kwargs,
) -> list[RubricScenario]:
    """The default grid (module docstring); ``kwargs`` go to every scenario."""
    return [
        RubricScenario(
            f"k{k}-{rate_name}-{noise_name}",
            n_criteria=k,
            critical_rate=rate,
            judge_noise=noise,
            **kwargs,
        )
        for k in n_criteria
        for rate_name, rate in critical_rates
        for noise_name, noise in judge_noise
    ]


def extra_scenarios(
    extra: str,
    n_criteria: Sequence[int] = (17, 5),
    judge_noise: Sequence[tuple[str, float]] = (("clean", 0.0), ("noisy", 0.1)),
    critical_rate: float = 0.7,
    **kwargs,
) -> list[RubricScenario]:
    """The ``stuck`` or ``trap`` family (module docstring): ``{extra}-k{K}-{clean|noisy}``."""
    return [
        RubricScenario(
            f"{extra}-k{k}-{noise_name}",
            n_criteria=k,
            critical_rate=critical_rate,
            judge_noise=noise,
            extra=extra,
            **kwargs,
        )
        for k in n_criteria
        for noise_name, noise in judge_noise
    ]


def neglect_scenarios(
    n_rewards: Sequence[int] = (4, 17),
    difficulty: Sequence[tuple[str, float]] = (("rare", 0.05), ("control", 0.5)),
    **env_kwargs,
) -> list[NeglectScenario]:
    """The toy's grid: K = 4 and 17 rewards x the format met by 5% or 50% at the start."""
    return [
        NeglectScenario(
            f"neglect-k{k}-{name}",
            ConstraintEnv(n_rewards=int(k), initial_satisfaction=float(d), **env_kwargs),
        )
        for k in n_rewards
        for name, d in difficulty
    ]


FAMILIES: dict[str, Callable[[], Sequence[RubricScenario | NeglectScenario]]] = {
    "rubric": rubric_scenarios,
    "stuck": lambda: extra_scenarios("stuck"),
    "trap": lambda: extra_scenarios("trap"),
    "neglect": neglect_scenarios,
}
QUICK_SCENARIOS = ("k17-rare-noisy", "k17-common-noisy")


def select_scenarios(names: Sequence[str]) -> list[RubricScenario | NeglectScenario]:
    """Scenarios by family (``rubric``, ``stuck``, ``trap``, ``neglect``, ``all``) or by
    name, in order, without repeats; ``ValueError`` naming the unknown ones and listing
    the known."""
    known = {s.name: s for f in FAMILIES.values() for s in f()}
    out: dict[str, RubricScenario | NeglectScenario] = {}
    bad = []
    for name in names:
        if name == "all":
            out.update(known)
        elif name in FAMILIES:
            out.update({s.name: s for s in FAMILIES[name]()})
        elif name in known:
            out[name] = known[name]
        else:
            bad.append(name)
    if bad:
        raise ValueError(
            f"unknown scenario {bad}; use {', '.join(FAMILIES)}, all or a name: {', '.join(known)}"
        )
    return list(out.values())
