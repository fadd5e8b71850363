r"""Summary statistics of the demo: means over seeds with a 95% Student t interval.

For ``n`` finite values :math:`x_1, \dots, x_n` (NaN values are ignored),

.. math::

    \bar x = \frac{1}{n} \sum_i x_i, \qquad
    h = t_{0.975,\, n-1} \sqrt{\frac{s^2}{n}}, \qquad
    s^2 = \frac{1}{n-1} \sum_i (x_i - \bar x)^2,

and the interval is :math:`[\bar x - h, \bar x + h]`. Seeds are independent runs, so this is
the textbook interval for the mean over seeds; it says nothing about other environments.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["mean_ci", "t_quantile_975"]

# Two-sided 95% Student t quantiles t_{0.975, df} for df = 1..30 (standard tables).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """``t_{0.975}`` with ``df`` degrees of freedom (normal 1.96 above 30; NaN below 1)."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= 30 else 1.96


def mean_ci(x: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width ``h`` of the 95% t interval over ``axis``, NaNs ignored.

    The half-width is NaN where fewer than two finite values are present; the mean is NaN
    where none is.

    >>> m, h = mean_ci(np.array([1.0, 2.0, 3.0]))
    >>> float(m), round(float(h), 3)  # t_{0.975,2} = 4.303, s = 1
    (2.0, 2.484)
    """
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    n = finite.sum(axis=axis)
    xs = np.where(finite, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = xs.sum(axis=axis) / n
        dev = np.where(finite, x - np.expand_dims(mean, axis), 0.0)
        var = (dev**2).sum(axis=axis) / (n - 1)
        tq = np.vectorize(lambda d: t_quantile_975(int(d)), otypes=[float])(n - 1)
        half = tq * np.sqrt(var / n)
    mean = np.where(n > 0, mean, np.nan)
    half = np.where(n > 1, half, np.nan)
    return mean, half
