r"""The HealthBench score of rubric-graded responses.

HealthBench (Arora et al., "HealthBench: Evaluating Large Language Models Towards Improved
Human Health", OpenAI 2025, https://arxiv.org/abs/2505.08775) grades each response to a
conversation against that conversation's rubric: criteria :math:`k` with points
:math:`p_k` (negative for undesirable behaviour), each judged met (:math:`m_k = 1`) or not.
A response's score is the points it earns over the points it could earn,

.. math::

    s = \frac{\sum_k p_k\, m_k}{\sum_{k:\ p_k > 0} p_k},

over the criteria of its conversation (a negative criterion that is met subtracts its
points, so :math:`s` can be negative), and the benchmark's score is the mean of :math:`s`
over the examples, clipped to :math:`[0, 1]`. The clip applies to the mean, as in the
reference implementation (``healthbench_eval.py`` of openai/simple-evals, whose
``_compute_clipped_stats`` clips ``np.mean(values)``), not to each response.
"""

from __future__ import annotations

import numpy as np

__all__ = ["healthbench_score", "response_scores"]


def response_scores(met: np.ndarray, points: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Unclipped score :math:`s` of each response, over the last axis (the criteria).

    Args:
        met: ``(..., K)`` verdicts, True (1) where criterion ``k`` is met; probabilities of
            being met give the expected score (the score is linear in the verdicts).
        points: ``(..., K)`` points of each criterion (broadcast against ``met``).
        present: ``(..., K)`` boolean, True where the criterion belongs to the rubric.

    Returns:
        ``(...)`` scores; NaN where no present criterion has positive points.

    >>> pts = np.array([10.0, 5.0, -5.0])
    >>> response_scores(np.array([[1, 1, 0], [0, 1, 1]]), pts, np.ones(3, bool))
    array([1., 0.])
    """
    met = np.asarray(met, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    present = np.asarray(present, dtype=bool)
    earned = np.where(present, points * met, 0.0).sum(axis=-1)
    possible = np.where(present & (points > 0), points, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(possible > 0, earned / possible, np.nan)


def healthbench_score(
    met: np.ndarray, points: np.ndarray, present: np.ndarray, axis: int | tuple[int, ...] = -1
) -> np.ndarray:
    """The benchmark score: the mean of :func:`response_scores` over ``axis`` of the
    responses (the examples), clipped to ``[0, 1]``.

    ``met``, ``points`` and ``present`` are as in :func:`response_scores`; ``axis`` indexes
    the response dimensions of the result of :func:`response_scores` (the criteria axis
    is gone by then).

    >>> pts = np.array([10.0, 5.0, -5.0])
    >>> met = np.array([[0, 0, 1], [1, 0, 0]])  # scores -1/3 and 2/3
    >>> float(healthbench_score(met, pts, np.ones(3, bool), axis=0))
    0.16666666666666666
    """
    return np.clip(np.nanmean(response_scores(met, points, present), axis=axis), 0.0, 1.0)
