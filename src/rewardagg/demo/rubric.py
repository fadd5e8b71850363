r"""The rubric of the testbed: criteria with points, prompts, and when a response meets them.

This is the HealthBench-style part of ``rewardagg demo`` (the default scenarios). A
*response* is a feature vector :math:`x \in \mathbb R^3` (:data:`FEATURES`):

- ``verbosity``: the latent verbosity factor: how long and elaborate the response is;
- ``care``: what the critical criterion asks for (for example, putting the safety advice
  first and plainly);
- ``accuracy``: avoiding wrong or unsupported claims.

A *rubric* has :math:`K` binary criteria (``n_criteria``), the same kinds for every prompt
(:data:`ROLES`), in this column order:

- column 0, the **critical** criterion: +10 points. Verbosity works against it, care for
  it: loadings :math:`a_0 = (-1, 1, 0)`.
- ``easy`` criteria (most of the rubric): 1 to 5 points each; verbosity drives them,
  with a loading drawn from :math:`\mathcal U(0.5, 1.5)`: :math:`a_k = (\alpha_k, 0, 0)`.
- ``negative`` criteria (``max(1, round(K / 5))`` of them, the last columns): an undesirable
  behaviour, -2 to -8 points when met. Verbosity makes them likelier, accuracy less likely:
  :math:`a_k = (\beta_k, 0, -\gamma_k)`, :math:`\beta_k \sim \mathcal U(0.25, 0.75)`,
  :math:`\gamma_k \sim \mathcal U(0.5, 1.5)`.

So a policy gains on many easy criteria by being verbose, and pays on one critical
criterion (and a few negative ones) unless it also learns care (and accuracy). Care helps
nothing but the critical criterion: its only learning signal is the critical column.

Two scenario families replace the last easy criterion by an ``extra`` one (so :math:`K`
is unchanged), always part of the rubric:

- ``stuck``: +5 points, met with probability 0.05 *whatever the policy does* (loadings
  0): a bottleneck nobody can move; a rule that chases the rarest criterion blindly
  spends its weight there.
- ``trap``: +3 points, met only by verbose, careless responses that *fail* the critical
  criterion: loadings :math:`-a_0 = (1, -1, 0)`, offsets :math:`-b_{p0} - m` (margin
  :math:`m = 0.5`) and, per response, the critical criterion's own noise with the sign
  flipped, so it is met exactly when :math:`b_{p0} + a_0 \cdot x + \xi_0 < -m`: when the
  critical criterion fails by more than :math:`m`. An easy criterion in direct conflict
  with the critical one.

When a response meets a criterion (a probit model). Prompt :math:`p` gives criterion
:math:`k` an offset :math:`b_{pk}`; a response with features :math:`x` meets it when

.. math::

    b_{pk} + a_k \cdot x + \xi_{k} > 0, \qquad \xi_k \sim \mathcal N(0, 1)

(independently per response and criterion), that is with probability
:math:`\Phi(b_{pk} + a_k \cdot x)`. Under the policy :math:`x \sim \mathcal N(\mu, \sigma^2 I)`
the probability is exact in closed form,

.. math::

    P(\text{met}) = \Phi\!\left(\frac{b_{pk} + a_k \cdot \mu}{\sqrt{1 + \sigma^2 \lVert a_k \rVert^2}}\right),

which the evaluation uses (no sampling noise). Offsets are
:math:`b_{pk} = c_k + \tau \varepsilon_{pk}` with :math:`\varepsilon_{pk} \sim \mathcal N(0, 1)`
(``prompt_spread`` :math:`\tau`) and :math:`c_k` chosen so that, at the start
(:math:`\mu = 0`), criterion :math:`k` is met with probability ``rate_k`` on average over
prompts: :math:`c_k = \Phi^{-1}(\text{rate}_k) \sqrt{1 + \sigma^2 \lVert a_k \rVert^2 + \tau^2}`.
The start rates are ``critical_rate`` for the critical criterion, :math:`\mathcal U(0.3, 0.7)`
for the easy ones and :math:`\mathcal U(0.2, 0.4)` for the negative ones (met = bad).

Prompts. Every prompt's rubric has the critical criterion; each other criterion belongs to
it with probability ``presence`` (absent: its reward is missing, NaN), so :math:`K` varies
per prompt. Training prompts and held-out prompts are drawn the same way and are disjoint.

All draws come from the caller's ``numpy.random.Generator``: a seed fixes the rubric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = [
    "CRITICAL",
    "EXTRAS",
    "FEATURES",
    "ROLES",
    "Criteria",
    "Prompts",
    "make_criteria",
    "make_prompts",
    "met_logits",
    "met_probability",
    "normal_cdf",
    "role_counts",
]

FEATURES = ("verbosity", "care", "accuracy")
VERBOSITY, CARE, ACCURACY = 0, 1, 2
CRITICAL = 0
"""Column of the critical criterion."""
ROLES = ("critical", "easy", "negative", "stuck", "trap")
EXTRAS = ("stuck", "trap")
"""The extra criteria a scenario family may add (module docstring)."""

CRITICAL_POINTS = 10.0
EASY_POINTS = (1, 5)
NEGATIVE_POINTS = (2, 8)
EASY_RATE = (0.3, 0.7)
NEGATIVE_RATE = (0.2, 0.4)
STUCK_POINTS, STUCK_RATE = 5.0, 0.05
TRAP_POINTS, TRAP_MARGIN = 3.0, 0.5

_erfc = np.frompyfunc(math.erfc, 1, 1)


def normal_cdf(x: np.ndarray) -> np.ndarray:
    r""":math:`\Phi(x) = \tfrac12 \operatorname{erfc}(-x / \sqrt 2)`, elementwise, in float64
    (``math.erfc``: accurate in both tails)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * np.asarray(_erfc(-x / math.sqrt(2.0)), dtype=np.float64)


def role_counts(n_criteria: int) -> tuple[int, int, int]:
    """``(critical, easy, negative)`` criteria in a rubric of ``n_criteria`` (>= 3).

    >>> role_counts(5), role_counts(17)
    ((1, 3, 1), (1, 13, 3))
    """
    if n_criteria < 3:
        raise ValueError(f"n_criteria must be >= 3, got {n_criteria}")
    n_neg = max(1, round(n_criteria / 5))
    return 1, n_criteria - 1 - n_neg, n_neg


@dataclass(frozen=True)
class Criteria:
    """The criteria of one rubric (the same for every prompt).

    Attributes:
        points: ``(K,)`` HealthBench points (negative: an undesirable behaviour).
        loadings: ``(K, 3)`` :math:`a_k`, on the :data:`FEATURES`.
        centre: ``(K,)`` :math:`c_k`, the mean offset over prompts.
        roles: ``(K,)`` each criterion's role, one of :data:`ROLES`.
    """

    points: np.ndarray
    loadings: np.ndarray
    centre: np.ndarray
    roles: tuple[str, ...]

    @property
    def n_criteria(self) -> int:
        return len(self.roles)

    def mask(self, role: str) -> np.ndarray:
        """``(K,)`` boolean: the criteria with ``role``."""
        return np.array([r == role for r in self.roles])

    @property
    def extra(self) -> int | None:
        """Column of the ``stuck`` or ``trap`` criterion (``None``: the rubric has none)."""
        return next((k for k, r in enumerate(self.roles) if r in EXTRAS), None)


@dataclass(frozen=True)
class Prompts:
    """A set of prompts: each one's offsets and which criteria its rubric has.

    Attributes:
        offsets: ``(P, K)`` :math:`b_{pk}`.
        present: ``(P, K)`` boolean; column :data:`CRITICAL` is always True.
    """

    offsets: np.ndarray
    present: np.ndarray

    @property
    def n_prompts(self) -> int:
        return self.offsets.shape[0]


def make_criteria(
    rng: np.random.Generator,
    n_criteria: int,
    critical_rate: float,
    *,
    prompt_spread: float = 0.5,
    policy_std: float = 1.0,
    extra: str | None = None,
) -> Criteria:
    """Draw a rubric's criteria (module docstring): points, loadings and centres;
    ``extra`` (``"stuck"`` or ``"trap"``) replaces the last easy criterion."""
    if not 0.0 < critical_rate < 1.0:
        raise ValueError(f"critical_rate must be in (0, 1), got {critical_rate}")
    if extra is not None and extra not in EXTRAS:
        raise ValueError(f"extra must be None or one of {EXTRAS}, got {extra!r}")
    _, n_easy, n_neg = role_counts(n_criteria)
    n_easy -= extra is not None
    roles = ("critical",) + ("easy",) * n_easy + ((extra,) if extra else ()) + ("negative",) * n_neg
    points = np.empty(n_criteria)
    loadings = np.zeros((n_criteria, len(FEATURES)))
    rate = np.empty(n_criteria)
    points[CRITICAL] = CRITICAL_POINTS
    loadings[CRITICAL, VERBOSITY], loadings[CRITICAL, CARE] = -1.0, 1.0
    rate[CRITICAL] = critical_rate
    easy = slice(1, 1 + n_easy)
    points[easy] = rng.integers(EASY_POINTS[0], EASY_POINTS[1] + 1, n_easy)
    loadings[easy, VERBOSITY] = rng.uniform(0.5, 1.5, n_easy)
    rate[easy] = rng.uniform(*EASY_RATE, n_easy)
    neg = slice(n_criteria - n_neg, n_criteria)
    points[neg] = -rng.integers(NEGATIVE_POINTS[0], NEGATIVE_POINTS[1] + 1, n_neg)
    loadings[neg, VERBOSITY] = rng.uniform(0.25, 0.75, n_neg)
    loadings[neg, ACCURACY] = -rng.uniform(0.5, 1.5, n_neg)
    rate[neg] = rng.uniform(*NEGATIVE_RATE, n_neg)
    if extra is not None:
        k = 1 + n_easy
        points[k] = STUCK_POINTS if extra == "stuck" else TRAP_POINTS
        loadings[k] = 0.0 if extra == "stuck" else -loadings[CRITICAL]
        rate[k] = STUCK_RATE if extra == "stuck" else 0.5  # the trap's centre is set below
    scale = np.sqrt(1.0 + policy_std**2 * (loadings**2).sum(axis=1) + prompt_spread**2)
    inv = NormalDist().inv_cdf
    centre = np.array([inv(float(r)) for r in rate]) * scale
    if extra == "trap":
        centre[1 + n_easy] = -centre[CRITICAL] - TRAP_MARGIN
    return Criteria(points, loadings, centre, roles)


def make_prompts(
    rng: np.random.Generator,
    criteria: Criteria,
    n_prompts: int,
    *,
    presence: float = 0.75,
    prompt_spread: float = 0.5,
) -> Prompts:
    """Draw ``n_prompts`` prompts: offsets around the criteria's centres and which
    criteria each rubric has (module docstring)."""
    if not 0.0 < presence <= 1.0:
        raise ValueError(f"presence must be in (0, 1], got {presence}")
    k = criteria.n_criteria
    offsets = criteria.centre + prompt_spread * rng.standard_normal((n_prompts, k))
    present = rng.random((n_prompts, k)) < presence
    present[:, CRITICAL] = True
    extra = criteria.extra
    if extra is not None:
        present[:, extra] = True
        if criteria.roles[extra] == "trap":
            offsets[:, extra] = -offsets[:, CRITICAL] - TRAP_MARGIN
    return Prompts(offsets, present)


def met_logits(offsets: np.ndarray, loadings: np.ndarray, x: np.ndarray) -> np.ndarray:
    r""":math:`b_{pk} + a_k \cdot x`: ``offsets`` ``(..., K)``, ``loadings`` ``(..., K, D)``
    and features ``x`` ``(..., D)`` broadcast to ``(..., K)``; a response meets criterion
    ``k`` when this plus a standard normal draw is positive."""
    return offsets + np.einsum("...kd,...d->...k", loadings, x)


def met_probability(
    offsets: np.ndarray, loadings: np.ndarray, mu: np.ndarray, sigma: float
) -> np.ndarray:
    r"""Exact :math:`P(\text{met})` under the policy :math:`\mathcal N(\mu, \sigma^2 I)`
    (module docstring); shapes as in :func:`met_logits` with ``mu`` for ``x``."""
    norm = np.sqrt(1.0 + sigma**2 * (np.asarray(loadings) ** 2).sum(axis=-1))
    return normal_cdf(met_logits(offsets, loadings, mu) / norm)
