r"""Stage 3: standardise the per-row scores over the batch, in one process or across
``torch.distributed`` ranks.

.. math::

    A_i = \frac{S_i - \operatorname{mean}(S)}{\operatorname{std}(S) + \varepsilon}

over the rows that have a score. Across ranks, each rank reduces its own scores to five
float64 numbers — count :math:`n`, mean :math:`\bar x`,
:math:`M_2 = \sum (x - \bar x)^2`, min and max — and the ranks exchange only those (one
``all_gather`` of a length-5 tensor; never the batch). They are merged in rank order with
Chan, Golub and LeVeque's pairwise formula, so every rank holds the same bits:

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

from rewardagg._src.namespace import Ops, is_torch
from rewardagg._src.normalisation import standardize_cells
from rewardagg._src.validation import as_float, check_finite_or_nan, check_nonnegative

__all__ = [
    "batch_standardize",
    "batch_standardize_distributed",
    "check_process_group",
    "combine_moments",
    "global_moments",
    "local_moments",
    "standardize_scores",
]


def check_process_group(process_group: Any, name: str = "process_group") -> None:
    """``None`` or a ``torch.distributed`` process group; a ``TypeError`` naming ``name``
    otherwise (checked where the argument enters, not deep inside a collective)."""
    if process_group is None:
        return
    try:
        from torch.distributed import ProcessGroup

        ok = isinstance(process_group, ProcessGroup)
    except ImportError:  # torch without distributed support: nothing can be a group
        ok = False
    if not ok:
        raise TypeError(
            f"{name} must be None or a torch.distributed ProcessGroup (e.g. "
            f"torch.distributed.group.WORLD); got {type(process_group).__name__}: "
            f"{process_group!r:.80}"
        )


def standardize_scores(
    s: Any,
    ops: Ops,
    *,
    eps: float,
    correction: float,
    process_group: Any = None,
    centre: bool = True,
) -> Any:
    """Stage 3 on a 1-D array of scores (NaN = row without a score): rows without a
    score get 0, as do all rows when fewer than two have a score or all are equal.
    ``centre=False`` only divides by the std (scores already centred, e.g. per group)."""
    check_process_group(process_group)
    if process_group is not None or not centre:  # count/mean/M2, merged across ranks
        return batch_standardize_distributed(
            s, eps=eps, correction=correction, process_group=process_group, centre=centre
        )
    missing = ops.isnan(s)
    if not ops.any(missing):
        missing = None
    a, _ = standardize_cells(s, missing, axis=0, ops=ops, eps=eps, correction=correction)
    if missing is not None:
        ops.fill_where(a, missing, 0.0)
    return a


def batch_standardize(
    scores: Any,
    *,
    eps: float = 1e-6,
    correction: float = 1,
    process_group: Any = None,
):
    r"""Stage 3: standardise per-row scores over the whole batch (GDPO, RVPO).

    .. math::

        A_i = \frac{S_i - \operatorname{mean}(S)}{\operatorname{std}(S) + \varepsilon}

    over the rows that have a score. Rows whose score is NaN (no present reward) get 0; all
    rows get 0 when fewer than two have a score or when all scores are equal.

    Args:
        scores: ``(N,)`` per-row scores, numpy/torch/list; NaN = no score.
        eps: :math:`\varepsilon`.
        correction: degrees of freedom of the standard deviation (1 = Bessel).
        process_group: a ``torch.distributed`` group: statistics are combined across its
            ranks (count, mean and centred sum of squares; no gather of the batch).

    Returns:
        ``A`` with the shape, library and dtype of ``scores``.

    Examples:
        >>> import numpy as np
        >>> from rewardagg import batch_standardize
        >>> batch_standardize(np.array([0.5, -1.0, np.nan, 2.0])).round(4)  # NaN: no score
        array([ 0., -1.,  0.,  1.])
    """
    s, restore, ops = as_float(scores, "scores")
    if s.ndim != 1 or s.shape[0] == 0:
        raise ValueError(f"scores must be a non-empty 1-D array; got shape {tuple(s.shape)}")
    check_finite_or_nan(s, ops, "scores")
    eps = check_nonnegative(eps, "eps")
    correction = check_nonnegative(correction, "correction")
    a = standardize_scores(s, ops, eps=eps, correction=correction, process_group=process_group)
    return restore(a)


def local_moments(scores: Any) -> np.ndarray:
    """``[n, mean, M2, min, max]`` (float64) of the non-NaN entries of 1-D ``scores``."""
    x = scores.detach().double().cpu().numpy() if is_torch(scores) else scores
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return np.array([0.0, 0.0, 0.0, math.inf, -math.inf])
    lo, hi = float(x.min()), float(x.max())
    mean = float(np.mean(x))
    m2 = float(np.sum((x - mean) ** 2))
    return np.array([float(x.size), mean, m2, lo, hi])


def _scaled_sd(scores: Any, correction: float) -> float:
    """The std of the non-NaN scores whose squared deviations overflow float64 (scores
    beyond ~1e154): computed in units of a power of 2 near the largest deviation."""
    x = scores.detach().double().cpu().numpy() if is_torch(scores) else scores
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    x = x[~np.isnan(x)]
    d = x - np.mean(x)
    unit = 2.0 ** math.floor(math.log2(float(np.max(np.abs(d)))))
    return unit * math.sqrt(float(np.sum((d / unit) ** 2)) / (x.size - correction))


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
    scores: Any,
    *,
    eps: float = 1e-6,
    correction: float = 1,
    process_group: Any,
    centre: bool = True,
) -> Any:
    r"""Stage 3 with global statistics: :math:`A = (S - \bar S) / (\mathrm{std}(S) + \varepsilon)`.

    ``scores`` is this rank's ``(N_rank,)`` numpy array or torch tensor (NaN = no score).
    Rows without a score get 0; every rank gets 0 everywhere when fewer than two rows of
    the whole group have a score, when all are equal, or when ``n - correction <= 0``.
    Returns the input's library, device and dtype. Every rank must call it (a collective);
    ``process_group=None`` uses this process's scores only. ``centre=False`` divides by
    the std without subtracting the mean (scores already centred per group).
    """
    check_process_group(process_group)
    if process_group is None:
        n, mean, m2, lo, hi = local_moments(scores)
    else:
        n, mean, m2, lo, hi = global_moments(scores, process_group)
    signal = n >= 2 and hi > lo and n - correction > 0
    sd = math.sqrt(m2 / (n - correction)) if signal else 1.0
    if signal and not math.isfinite(sd) and process_group is None:  # squares overflowed
        sd = _scaled_sd(scores, correction)
    mean = mean if centre else 0.0
    if is_torch(scores):
        import torch

        s = scores.detach()
        a = (s.double() - mean) / (sd + eps) if signal else torch.zeros_like(s, dtype=torch.float64)
        a = torch.where(torch.isnan(s), 0.0, a)
        return a.to(s.dtype)
    s = np.asarray(scores)
    with np.errstate(invalid="ignore"):
        a = (s.astype(np.float64) - mean) / (sd + eps) if signal else np.zeros(s.shape)
    return np.where(np.isnan(s), 0.0, a).astype(s.dtype if s.dtype.kind == "f" else np.float64)
