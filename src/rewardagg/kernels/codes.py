r"""The stage-2 reducer codes of the fused kernels (one name per integer the kernels read).

The method table (``rewardagg._src.methods``) gives each method with a fused kernel one of
these codes and the parameter slots ``(p0, p1)`` the kernels read; the kernels never see a
method by name. This module imports nothing from the rest of the library.

- ``SUM`` (0): :math:`\sum_k w_k x_k`;
- ``MEAN`` (1): :math:`\sum_k v_k x_k`;
- ``SOFTMIN`` (2, ``p0 = kappa``): :math:`-\kappa^{-1} \log \sum_k v_k e^{-\kappa x_k}`;
- ``MEAN_VARIANCE`` (3, ``p0 = lam``): the v-mean minus ``lam`` times the v-variance;
- ``MIN`` (4): :math:`\min_k x_k`;
- ``CVAR`` (5, ``p0 = alpha``): the v-weighted mean of the worst ``alpha`` share;
- ``POWER_MEAN`` (6, ``p0 = p``): :math:`(\sum_k v_k x_k^p)^{1/p}` for ``x >= 0``
  (``p = 0`` the geometric mean, ``p = -inf`` the min, 0 when some ``x = 0`` and ``p <= 0``).

(``v = w / sum w`` over the row's present positive-weight rewards; DESIGN.md sections 2
and 2b.) Every kernel raises on a value not listed here.
"""

from __future__ import annotations

import enum

__all__ = ["RAW_ONLY", "FusedCode"]


class FusedCode(enum.IntEnum):
    """Stage-2 reducer of the fused kernels."""

    SUM = 0
    MEAN = 1
    SOFTMIN = 2
    MEAN_VARIANCE = 3
    MIN = 4
    CVAR = 5
    POWER_MEAN = 6


RAW_ONLY = frozenset({FusedCode.POWER_MEAN})
"""Codes defined for non-negative raw rewards only (``order="reduce_then_normalize"``)."""
