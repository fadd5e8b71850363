r"""Taylor-expansion checks: the SoftMin is the mean minus a variance penalty.

RVPO (Montero, Jurczyk, Dhingra, "RVPO: Risk-Sensitive Alignment via Variance
Regularization", arXiv:2605.05750, 2026, https://arxiv.org/abs/2605.05750) aggregates
the K standardised rewards of a completion with the SoftMin

.. math::

    S_\kappa = -\frac{1}{\kappa} \log \sum_k v_k e^{-\kappa z_k}
             = -\frac{1}{\kappa} K_X(-\kappa),

where :math:`v_k` are the weights renormalised over the present rewards and
:math:`K_X(t) = \log \mathbb{E}_v e^{tX}` is the cumulant generating function of the
row's reward distribution (:math:`X = z_k` with probability :math:`v_k`). Expanding
:math:`K_X(t) = \sum_{n \ge 1} k_n t^n / n!` in the cumulants :math:`k_n` gives the
cumulant series

.. math::

    S_\kappa = \sum_{n \ge 1} \frac{(-\kappa)^{n-1}}{n!} k_n
             = k_1 - \frac{\kappa}{2} k_2 + \frac{\kappa^2}{6} k_3
               - \frac{\kappa^3}{24} k_4 + \dots

(:math:`k_1` mean, :math:`k_2` variance, :math:`k_3` third central moment,
:math:`k_4 = \mu_4 - 3 \mu_2^2`), so :math:`S_\kappa = \bar z - \tfrac{\kappa}{2}
\operatorname{Var}_v(z) + O(\kappa^2)`. The series converges at least for
:math:`\kappa < \pi / (\max z - \min z)`; the bound is reached by two equally weighted
rewards. The paper shows the second-order form (mean minus a variance penalty); the full
series, the radius and the error slopes checked here are this library's derivation.

This module lets a user check that claim, and see where it stops holding, on their own
rewards: :func:`cumulants`, :func:`softmin_series`, :func:`verify_expansion` (measured
log-log slopes of the truncation errors against the slopes the cumulants predict), the
exact identities (:func:`check_derivative_at_zero`, :func:`check_monotone_in_kappa`,
:func:`check_mean_softmin_min`, all three in :func:`check_identities`) and two plots.

Everything here is float64 numpy; importing the module imports numpy only (matplotlib is
imported inside the plot functions). The exact SoftMin is :func:`rewardagg.softmin`.
NaN marks a missing reward; weights are renormalised over the present rewards with
positive weight, as in every ``rewardagg`` reducer.

The code is split by concern: :mod:`~rewardagg.taylor.series` (input handling, cumulants,
the series, the convergence radius), :mod:`~rewardagg.taylor.verify`
(:func:`verify_expansion`), :mod:`~rewardagg.taylor.identities` (the exact identities)
and :mod:`~rewardagg.taylor.plots`. Import from ``rewardagg.taylor``: the public names
below report it as their module (so doctests, reprs and the API reference name them
``rewardagg.taylor.<name>``).
"""

from __future__ import annotations

from rewardagg.taylor.identities import (
    IdentityCheck,
    check_derivative_at_zero,
    check_identities,
    check_mean_softmin_min,
    check_monotone_in_kappa,
)
from rewardagg.taylor.plots import plot_expansion, plot_softmin
from rewardagg.taylor.series import (
    convergence_radius,
    cumulants,
    default_kappas,
    softmin_series,
)
from rewardagg.taylor.verify import ExpansionResult, verify_expansion

__all__ = [
    "ExpansionResult",
    "IdentityCheck",
    "check_derivative_at_zero",
    "check_identities",
    "check_mean_softmin_min",
    "check_monotone_in_kappa",
    "convergence_radius",
    "cumulants",
    "default_kappas",
    "plot_expansion",
    "plot_softmin",
    "softmin_series",
    "verify_expansion",
]


def _adopt(names: list[str]) -> None:
    """Make each public object report this package as its module (``__module__``), the
    path users import it from."""
    namespace = globals()
    for name in names:
        namespace[name].__module__ = __name__


_adopt(__all__)
