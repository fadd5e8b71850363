r"""The testbed's policy: a Gaussian over response features, shared by every prompt.

A response is drawn as :math:`x = \mu + \sigma \epsilon`, :math:`\epsilon \sim \mathcal N(0, I)`:
the parameters :math:`\mu` (one vector, the same for every prompt) are what training
changes; :math:`\sigma` is fixed. Because the parameters do not depend on the prompt, the
policy can be evaluated on prompts it never saw.

One update is REINFORCE with the batch's advantages :math:`A_i` (GRPO-style, on-policy,
so no ratio clipping is needed):

.. math::

    \nabla_\mu \log \pi(x_i) = \frac{x_i - \mu}{\sigma^2} = \frac{\epsilon_i}{\sigma},
    \qquad
    \mu \leftarrow \mu + \eta \, \frac{1}{N} \sum_{i=1}^{N} A_i \, \frac{\epsilon_i}{\sigma}.
"""

from __future__ import annotations

import numpy as np

__all__ = ["policy_step", "sample_features"]


def sample_features(mu: np.ndarray, noise: np.ndarray, sigma: float) -> np.ndarray:
    r"""Responses :math:`x = \mu + \sigma \epsilon`: ``mu`` ``(..., D)`` broadcast against
    standard-normal ``noise`` ``(..., D)``."""
    return mu + sigma * noise


def policy_step(
    mu: np.ndarray, adv: np.ndarray, noise: np.ndarray, sigma: float, lr: float
) -> np.ndarray:
    r"""The updated :math:`\mu` after one REINFORCE step (module docstring).

    Args:
        mu: ``(..., D)`` current parameters.
        adv: ``(..., N)`` advantages of the batch's ``N`` responses.
        noise: ``(..., N, D)`` the :math:`\epsilon_i` the responses were drawn with.
        sigma: the policy's standard deviation.
        lr: step size :math:`\eta`.

    >>> policy_step(np.zeros(2), np.array([1.0, -1.0]), np.array([[1.0, 0.0], [-1.0, 2.0]]),
    ...             sigma=1.0, lr=0.5)
    array([ 0.5, -0.5])
    """
    grad = np.einsum("...n,...nd->...d", adv, noise) / (sigma * adv.shape[-1])
    return mu + lr * grad
