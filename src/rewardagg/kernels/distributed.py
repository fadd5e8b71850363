r"""Stage 3 across ``torch.distributed`` ranks: combine count, mean and centred sum of squares.

Each rank reduces its own scores to five float64 numbers — count :math:`n`, mean
:math:`\bar x`, :math:`M_2 = \sum (x - \bar x)^2`, min and max — and the ranks exchange
only those (one ``all_gather`` of a length-5 tensor; never the batch). They are merged in
rank order with Chan, Golub and LeVeque's pairwise formula, so every rank holds the same
bits:

.. math::

    n = n_a + n_b, \qquad \delta = \bar x_b - \bar x_a, \qquad
    \bar x = \bar x_a + \delta \frac{n_b}{n}, \qquad
    M_2 = M_{2,a} + M_{2,b} + \delta^2 \frac{n_a n_b}{n}

(Chan, Golub, LeVeque, "Updating formulae and a pairwise algorithm for computing sample
variances", 1979). This is right for trainers whose groups stay on one rank (stage 1 is
then local) and whose stage 3 should see the global batch, as a single process would.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["batch_standardize_distributed", "combine_moments", "global_moments", "local_moments"]


def local_moments(scores: Any) -> np.ndarray:
    """``[n, mean, M2, min, max]`` (float64) of the non-NaN entries of 1-D ``scores``."""
    x = scores.detach().double().cpu().numpy() if hasattr(scores, "detach") else scores
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return np.array([0.0, 0.0, 0.0, math.inf, -math.inf])
    lo, hi = float(x.min()), float(x.max())
    mean = float(np.mean(x))
    m2 = float(np.sum((x - mean) ** 2))
    return np.array([float(x.size), mean, m2, lo, hi])


def combine_moments(parts: Any) -> np.ndarray:
    """Merge rows of ``[n, mean, M2, min, max]`` in order (Chan's formula)."""
    n, mean, m2, lo, hi = 0.0, 0.0, 0.0, math.inf, -math.inf
    for nb, mb, m2b, lob, hib in np.asarray(parts, dtype=np.float64).reshape(-1, 5):
        if nb == 0:
            continue
        tot = n + nb
        delta = mb - mean
        mean = mean + delta * (nb / tot)
        m2 = m2 + m2b + delta * delta * (n * nb / tot)
        n, lo, hi = tot, min(lo, lob), max(hi, hib)
    return np.array([n, mean, m2, lo, hi])


def global_moments(scores: Any, process_group: Any) -> np.ndarray:
    """``[n, mean, M2, min, max]`` of the non-NaN scores of every rank in ``process_group``."""
    import torch
    import torch.distributed as dist

    mine = torch.from_numpy(local_moments(scores))
    if dist.get_backend(process_group) == "nccl":
        mine = mine.cuda()
    parts = [torch.empty_like(mine) for _ in range(dist.get_world_size(process_group))]
    dist.all_gather(parts, mine, group=process_group)
    return combine_moments(torch.stack(parts).cpu().numpy())


def batch_standardize_distributed(
    scores: Any, *, eps: float = 1e-6, correction: float = 1, process_group: Any
) -> Any:
    r"""Stage 3 with global statistics: :math:`A = (S - \bar S) / (\mathrm{std}(S) + \varepsilon)`.

    ``scores`` is this rank's ``(N_rank,)`` numpy array or torch tensor (NaN = no score).
    Rows without a score get 0; every rank gets 0 everywhere when fewer than two rows of
    the whole group have a score, when all are equal, or when ``n - correction <= 0``.
    Returns the input's library, device and dtype. Every rank must call it (a collective).
    """
    n, mean, m2, lo, hi = global_moments(scores, process_group)
    signal = n >= 2 and hi > lo and n - correction > 0
    sd = math.sqrt(m2 / (n - correction)) if signal else 1.0
    if hasattr(scores, "detach"):
        import torch

        s = scores.detach()
        a = (s.double() - mean) / (sd + eps) if signal else torch.zeros_like(s, dtype=torch.float64)
        a = torch.where(torch.isnan(s), 0.0, a)
        return a.to(s.dtype)
    s = np.asarray(scores)
    with np.errstate(invalid="ignore"):
        a = (s.astype(np.float64) - mean) / (sd + eps) if signal else np.zeros(s.shape)
    return np.where(np.isnan(s), 0.0, a).astype(s.dtype if s.dtype.kind == "f" else np.float64)
