r"""The LLM judge of the rubric testbed, and the reward columns it produces.

A judge reads a response and says, for each criterion of the rubric, whether it is met.
The testbed's judge is right with probability :math:`1 - \varepsilon` and flips the true
verdict :math:`m_k` with probability :math:`\varepsilon`, independently for every
(response, criterion):

.. math::

    \hat m_k = m_k \oplus [u_k < \varepsilon], \qquad u_k \sim \mathcal U(0, 1).

Training sees only :math:`\hat m` (the rewards), evaluation only :math:`m` (the truth).

Reward columns. Column :math:`k` is 1 when the judged *outcome* of criterion :math:`k` is
good and 0 otherwise: met for a criterion with positive points, not met for one with
negative points (an undesirable behaviour the response avoided). So every reward is in
:math:`\{0, 1\}`, higher is better, and non-negative (the power mean can run); a criterion
that is not part of a prompt's rubric is missing (NaN), so :math:`K` varies per prompt.
The points themselves enter only through the weights of the reference setting
``gdpo_point_weights`` (:math:`w_k = |p_k|`) and through the evaluation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["judge_verdicts", "reward_columns"]


def judge_verdicts(met: np.ndarray, eps: float, u: np.ndarray) -> np.ndarray:
    """The judge's verdicts: ``met`` flipped where ``u < eps``.

    Args:
        met: boolean true verdicts.
        eps: flip probability in ``[0, 1]`` (0: a perfect judge).
        u: uniform draws in ``[0, 1)``, shaped like ``met`` (the caller's random stream).

    >>> judge_verdicts(np.array([True, True, False]), 0.5, np.array([0.1, 0.9, 0.2]))
    array([False,  True,  True])
    """
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1], got {eps}")
    return np.asarray(met, dtype=bool) ^ (np.asarray(u) < eps)


def reward_columns(verdicts: np.ndarray, points: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Rewards ``(..., K)``: 1.0 where the judged outcome is good, 0.0 where it is bad,
    NaN where the criterion is absent from the prompt's rubric.

    >>> reward_columns(np.array([True, True, False]), np.array([10.0, -5.0, 3.0]),
    ...                np.array([True, True, False]))
    array([ 1.,  0., nan])
    """
    verdicts = np.asarray(verdicts, dtype=bool)
    good = np.where(np.asarray(points) > 0, verdicts, ~verdicts)
    return np.where(np.asarray(present, dtype=bool), good.astype(np.float64), np.nan)
