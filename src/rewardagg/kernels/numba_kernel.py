"""Stages 1-2 as one compiled CPU pass (numba, cached on disk, threads over groups).

Layout: tiles of groups. Consecutive groups of one size G are taken ``m`` at a time (a
*tile*, about :data:`TILE_VALUES` rewards) and copied once, transposed, into a
``(K, G, m)`` buffer that stays in the L1/L2 cache. Every loop that computes then runs over
the ``m`` groups of the tile, the innermost axis: a cell's statistics accumulate over the G
rows (axis 1) and a row's aggregate over the K rewards (axis 0) as element-wise vector
operations, with no horizontal reduction, and missing rewards (NaN) are handled with
selects rather than branches, so LLVM compiles the loops to SIMD code. Main memory sees
each reward once.

Arithmetic: float32 input is computed in float32 (the tile, Z, the exp and log, a row's
K-term sums) with the cell sums over a group's rows in float64; float64 input in float64.
Against the float64 pass, float32 results are within about 1.4e-6 (relative to 1 + |S|;
the tests require 1e-5). Z is kept relative to a shift that is a value of its cell,
``Z = ((x * sc - x0 * sc) - m) * f``, so a large common offset cancels exactly once. exp
and log are branch-free polynomials (libm calls would stop the vectorisation). Same
formulas as the core (DESIGN.md section 2; tests/kernel_spec.py).

Threads: the tiles are cut from the offsets alone and the threads take runs of whole
tiles, so each group is computed by the same lane of the same tile whatever the thread
count, and results are bit-identical for any number of threads.

Importing this module imports numba (about 0.5 s). The first call for a dtype compiles
(several seconds) or loads the on-disk cache (``__pycache__`` beside this file, or
``NUMBA_CACHE_DIR``); :func:`warmup` does it up front.
"""

from __future__ import annotations

import itertools
import math
import os
import time

import numba
import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

__all__ = ["is_warm", "stage12_numba", "tiles", "warmup"]

# Stage-2 codes: rewardagg.kernels.codes.FusedCode (0 weighted sum, 1 weighted mean,
# 2 softmin (p0 = kappa), 3 mean minus p0 * variance, 4 minimum, 5 CVaR (p0 = alpha),
# 6 power mean (p0 = p, raw order only)); any other code raises.

TILE_VALUES = 1 << 16
"""Rewards per tile (256 KiB of float32): the tile and its per-cell and per-row arrays stay
in the L2 cache while every pass runs over them."""

_warm: set[str] = set()  # dtypes already compiled or loaded in this process
last_first_call_seconds: dict[str, float] = {}

# FMA contraction only: no reassociation, so every lane computes the same bits as the
# scalar code would, whatever its position in a vector.
_FM = {"contract"}


# --------------------------------------------------------------- branch-free exp and log


@intrinsic
def _float_bits(typingctx, x):
    """The bits of a float32/float64 as an int32/int64 (a bit cast, not a conversion)."""
    ity = {types.float32: types.int32, types.float64: types.int64}.get(x)
    if ity is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(ity))

    return ity(x), codegen


@intrinsic
def _bits_float(typingctx, i):
    """The float32/float64 whose bits are the int32/int64 ``i`` (a bit cast)."""
    fty = {types.int32: types.float32, types.int64: types.float64}.get(i)
    if fty is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(fty))

    return fty(i), codegen


@njit(inline="always", cache=True, fastmath=_FM)
def _expm1_neg64(y):
    """``expm1(y)`` for ``y <= 0`` (``-inf`` allowed) in float64, relative error below
    3e-16: ``y > -ln2/2``: a degree-13 Taylor series; otherwise ``y = n ln2 + q`` and
    ``expm1(y) = 2^n expm1(q) + (2^n - 1)``, ``y`` clamped at -40 (where the result already
    rounds to -1) and ``2^n`` written into the exponent bits."""
    small = y > -0.34657359027997264
    yc = max(y, -40.0)
    n = np.floor(yc * 1.4426950408889634 + 0.5)
    q = (yc - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10
    q = y if small else q
    p = 1.0 / 6227020800.0
    p = p * q + 1.0 / 479001600.0
    p = p * q + 1.0 / 39916800.0
    p = p * q + 1.0 / 3628800.0
    p = p * q + 1.0 / 362880.0
    p = p * q + 1.0 / 40320.0
    p = p * q + 1.0 / 5040.0
    p = p * q + 1.0 / 720.0
    p = p * q + 1.0 / 120.0
    p = p * q + 1.0 / 24.0
    p = p * q + 1.0 / 6.0
    p = p * q + 0.5
    em = q + q * q * p
    s = _bits_float(np.int64((np.int64(n) + 1023) << 52))
    s = 1.0 if small else s
    return s * em + (s - 1.0)


@njit(inline="always", cache=True, fastmath=_FM)
def _expm1_neg32(y):
    """float32 twin of :func:`_expm1_neg64` (relative error below 1e-7): degree 7,
    ``y`` clamped at -17.5 where expm1 rounds to -1 in float32; ``n * ln2_hi`` is exact
    (ln2_hi ends in 7 zero bits and ``|n| <= 26``)."""
    one = np.float32(1.0)
    small = y > np.float32(-0.34657359)
    yc = max(y, np.float32(-17.5))
    n = np.floor(yc * np.float32(1.4426950) + np.float32(0.5))
    q = (yc - n * np.float32(0.693145752)) - n * np.float32(1.42860677e-06)
    q = y if small else q
    p = np.float32(1.0 / 5040.0)
    p = p * q + np.float32(1.0 / 720.0)
    p = p * q + np.float32(1.0 / 120.0)
    p = p * q + np.float32(1.0 / 24.0)
    p = p * q + np.float32(1.0 / 6.0)
    p = p * q + np.float32(0.5)
    em = q + q * q * p
    s = _bits_float(np.int32((np.int32(n) + 127) << 23))
    s = one if small else s
    return s * em + (s - one)


@njit(inline="always", cache=True, fastmath=_FM)
def _log64(u):
    """``log(u)`` for normal ``u > 0`` in float64, about 2 ulp: ``u = 2^e f`` from the bits,
    ``f`` in ``[sqrt(1/2), sqrt(2))``, then ``log f = 2 atanh(s)``, ``s = (f - 1) / (f + 1)``,
    ``|s| < 0.172``, to ``s^23``."""
    b = _float_bits(u)
    e = np.float64((b >> 52) - 1023)
    f = _bits_float(np.int64((b & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000))
    c = f > 1.4142135623730951
    f = f * 0.5 if c else f
    e = e + 1.0 if c else e
    s = (f - 1.0) / (f + 1.0)
    s2 = s * s
    p = 1.0 / 23.0
    p = p * s2 + 1.0 / 21.0
    p = p * s2 + 1.0 / 19.0
    p = p * s2 + 1.0 / 17.0
    p = p * s2 + 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    two_s = s + s
    return e * 6.93147180369123816490e-01 + (
        two_s + two_s * s2 * p + e * 1.90821492927058770002e-10
    )


@njit(inline="always", cache=True, fastmath=_FM)
def _log32(u):
    """float32 twin of :func:`_log64` (to ``s^11``)."""
    one = np.float32(1.0)
    b = _float_bits(u)
    e = np.float32((b >> 23) - 127)
    f = _bits_float(np.int32((b & 0x7FFFFF) | 0x3F800000))
    c = f > np.float32(1.41421356)
    f = f * np.float32(0.5) if c else f
    e = e + one if c else e
    s = (f - one) / (f + one)
    s2 = s * s
    p = np.float32(1.0 / 11.0)
    p = p * s2 + np.float32(1.0 / 9.0)
    p = p * s2 + np.float32(1.0 / 7.0)
    p = p * s2 + np.float32(1.0 / 5.0)
    p = p * s2 + np.float32(1.0 / 3.0)
    two_s = s + s
    return e * np.float32(0.693145752) + (two_s + two_s * s2 * p + e * np.float32(1.42860677e-06))


def _expm1_neg(y):  # dispatched by the dtype of y (compiled code only)
    raise NotImplementedError


def _log(u):  # dispatched by the dtype of u (compiled code only)
    raise NotImplementedError


@overload(_expm1_neg, inline="always")
def _expm1_neg_by_dtype(y):
    if y == types.float32:
        return lambda y: _expm1_neg32(y)
    return lambda y: _expm1_neg64(y)


@overload(_log, inline="always")
def _log_by_dtype(u):
    if u == types.float32:
        return lambda u: _log32(u)
    return lambda u: _log64(u)


# ------------------------------------------------------------------------- the passes


@njit(cache=True, nogil=True, fastmath=_FM)
def _load(r, r0, t):
    """``t[k, i, j] = r[r0 + j * G + i, k]``: the tile, transposed (contiguous stores,
    strided loads). Up to K = 8, 64 groups at a time, so that the rows being read stay in
    L1; beyond, the whole tile at once, so that each strided loop is long (measured)."""
    n_rew, g, m = t.shape
    if n_rew > 8:
        for k in range(n_rew):
            for i in range(g):
                tk = t[k, i]
                for j in range(m):
                    tk[j] = r[r0 + j * g + i, k]
        return
    for j0 in range(0, m, 64):
        j1 = min(j0 + 64, m)
        for k in range(n_rew):
            for i in range(g):
                tk = t[k, i]
                for j in range(j0, j1):
                    tk[j] = r[r0 + j * g + i, k]


@njit(cache=True, nogil=True, fastmath=_FM)
def _load_padded(r, offsets, g0, t):
    """The tile of groups ``g0 ..`` of uneven sizes: ``t[k, i, j] = r[offsets[g0 + j] + i, k]``,
    NaN (missing) beyond the group's own size."""
    n_rew, g, m = t.shape
    nan = t.dtype.type(np.nan)
    for k in range(n_rew):
        for i in range(g):
            tk = t[k, i]
            for j in range(m):
                start = offsets[g0 + j]
                tk[j] = r[start + i, k] if start + i < offsets[g0 + j + 1] else nan


@njit(cache=True, nogil=True, fastmath=_FM)
def _first_present(t, k, j):
    """The first present value of cell ``(k, j)`` (0 for an empty cell)."""
    for i in range(t.shape[1]):
        x = t[k, i, j]
        if x == x:
            return x
    return t.dtype.type(0.0)


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FM)
def _rescaled_moments(t, k, j, x0, sc):
    """``(s1, s2)`` of ``d = x * sc - x0 * sc`` over the present values of cell ``(k, j)``:
    the rescue of a float64 cell whose squares overflowed (values beyond 1e154) or reached
    the subnormal range (deviations below about 1e-146)."""
    s1 = 0.0
    s2 = 0.0
    for i in range(t.shape[1]):
        x = np.float64(t[k, i, j])
        if x == x:
            d = x * sc - x0 * sc
            s1 += d
            s2 += d * d
    return s1, s2


_F64_TINY_S2 = 2.0**-968
"""A float64 cell whose ``sum d^2`` is below this (deviations below about 1e-146) lost
bits to subnormal squares (or all of them: a spread of 1e-300 squares to 0, and 1 / sd
overflowed): its moments are recomputed with ``d`` scaled up by ``_F64_UP``."""

_F64_UP = 2.0**600
"""Exact for such a cell: every ``|x| < 2^-431`` there (``x - x0 < 2^-484`` with
``x != x0`` bounds ``|x|`` by 2^53 units of it), so ``x * 2^600`` neither overflows nor
rounds, and ``d * 2^600 >= 2^-474`` squares to a normal number."""

_F32_RESCALE = 2.0**100
"""A float32 cell whose ``sum d^2`` exceeds this (a spread beyond about 1e15) is computed
in units scaled by a power of 2: from about 1e38, ``x - x0``, the mean or ``1 / sd`` would
leave float32's range."""


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FM)
def _cells(t, eps, correction, identity, loo, exact_range, sh, sc, cen, fac, acc):
    """Stage-1 parameters of every cell of the tile: ``Z = ((x * sc - sh) - cen) * fac``
    (``sh = x0 * sc`` with ``x0`` a present value of the cell; a cell without signal gets
    ``fac = 0``, or ``1 / (1 + eps)`` for verl's one-row cell). Returns the number of
    cells holding +-inf.

    float32 input (``exact_range`` False): ``d = x - x0`` in float64 is 0 only for
    ``x == x0`` and its square neither overflows nor underflows, so ``sum d^2 > 0`` is
    exactly ``max > min``. float64 input tracks min and max for that test and rescues a
    cell whose squares overflowed.
    """
    n_rew, g, m = t.shape
    ft = t.dtype.type
    cnt, s1, s2, lo, hi = acc[0], acc[1], acc[2], acc[3], acc[4]
    n_bad = 0
    for k in range(n_rew):
        x0 = sh[k]  # the shift first, scaled below
        t0 = t[k, 0]
        for j in range(m):
            x0[j] = t0[j]
        for j in range(m):  # rare: the group's first row misses this reward
            if x0[j] != x0[j]:
                x0[j] = _first_present(t, k, j)
        for j in range(m):
            cnt[j] = 0.0
            s1[j] = 0.0
            s2[j] = 0.0
            lo[j] = np.inf
            hi[j] = -np.inf
        for i in range(0, g, 2):  # two rows per pass: half the accumulator traffic
            second = i + 1 < g
            ta = t[k, i]
            tb = t[k, i + 1 if second else i]
            for j in range(m):
                xs = np.float64(x0[j])
                xa = ta[j]
                xb = tb[j]
                pa = xa == xa
                pb = (xb == xb) & second
                da = np.float64(xa) - xs
                db = np.float64(xb) - xs
                da = da if pa else 0.0
                db = db if pb else 0.0
                cnt[j] += (1.0 if pa else 0.0) + (1.0 if pb else 0.0)
                s1[j] += da + db
                s2[j] += da * da + db * db
        if exact_range:
            for i in range(g):
                ti = t[k, i]
                for j in range(m):
                    x = np.float64(ti[j])
                    lo[j] = x if x < lo[j] else lo[j]  # NaN compares False: skipped
                    hi[j] = x if x > hi[j] else hi[j]
        sck = sc[k]
        cenk = cen[k]
        fack = fac[k]
        for j in range(m):  # per cell, with selects only
            n = cnt[j]
            nd = n - correction
            has = hi[j] > lo[j] if exact_range else s2[j] > 0.0
            signal = has & (nd > 0.0)
            mu = s1[j] / (n if n > 0.0 else 1.0)
            var = (s2[j] - s1[j] * mu) / (nd if nd > 0.0 else 1.0)
            sd = math.sqrt(var if var > 0.0 else 0.0)
            f = 1.0 / (sd + eps)
            if loo:
                f = f * (n / (n - 1.0 if n > 1.0 else 1.0))
            single = identity & (n == 1.0)
            f0 = 1.0 / (1.0 + eps) if single else 0.0
            fack[j] = ft(f if signal else f0)
            cenk[j] = ft(mu if signal else 0.0)
            x0[j] = x0[j] if signal else ft(0.0)
            sck[j] = ft(1.0)
        for j in range(m):  # +-inf in the cell; float64 squares that overflowed
            if exact_range:
                bad = lo[j] == -np.inf or hi[j] == np.inf
                out_of_range = not (s2[j] < np.inf) or s2[j] < _F64_TINY_S2
                if not bad and out_of_range and hi[j] > lo[j] and cnt[j] - correction > 0:
                    # squares that overflowed: d = (x - x0) / (max - min); squares near or
                    # in the subnormal range: d = (x - x0) * 2^600 (exact)
                    big = not (s2[j] < np.inf)
                    s = 0.5 / (0.5 * hi[j] - 0.5 * lo[j]) if big else _F64_UP
                    a, b = _rescaled_moments(t, k, j, np.float64(x0[j]), s)
                    n = cnt[j]
                    mu = a / n
                    var = (b - a * mu) / (n - correction)
                    f = 1.0 / (math.sqrt(var if var > 0.0 else 0.0) + eps * s)
                    if loo:
                        f *= n / (n - 1.0)
                    fack[j] = ft(f)
                    cenk[j] = ft(mu)
                    sck[j] = ft(s)
            else:
                bad = not (s2[j] < np.inf)
                if not bad and s2[j] > _F32_RESCALE and cnt[j] - correction > 0:
                    # float32 Z in range: d, its mean and 1/sd scaled by a power of 2 (exact)
                    s = 2.0 ** -math.floor(0.5 * math.log2(s2[j]))
                    n = cnt[j]
                    mu = s1[j] / n
                    var = (s2[j] - s1[j] * mu) / (n - correction)
                    f = 1.0 / ((math.sqrt(var if var > 0.0 else 0.0) + eps) * s)
                    if loo:
                        f *= n / (n - 1.0)
                    fack[j] = ft(f)
                    cenk[j] = ft(mu * s)
                    sck[j] = ft(s)
            n_bad += 1 if bad else 0
        for j in range(m):
            x0[j] = x0[j] * sck[j]
    return n_bad


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FM)
def _row_z(t, i, w, sh, sc, cen, fac, z, wsum, acc, zmin, want_acc):
    """Z of row ``i`` of every group of the tile into ``z`` (K, m) (+inf where the reward
    is missing or has weight 0), with the row's weight total, min Z and, when
    ``want_acc``, ``sum w Z``.

    Row sums are in the input's dtype: K terms of one row (float32: relative error below
    K * 6e-8), unlike the cell sums over a group's rows, which are float64."""
    n_rew, _, m = t.shape
    ft = t.dtype.type
    inf = ft(np.inf)
    zero = ft(0.0)
    for j in range(m):
        wsum[j] = zero
        acc[j] = zero
        zmin[j] = inf
    for k in range(n_rew):
        zk = z[k]
        wk = ft(w[k])
        if not wk > zero:
            for j in range(m):
                zk[j] = inf
            continue
        xk = t[k, i]
        shk = sh[k]
        sck = sc[k]
        cenk = cen[k]
        fack = fac[k]
        for j in range(m):
            x = xk[j]
            p = x == x
            zz = ((x * sck[j] - shk[j]) - cenk[j]) * fack[j]
            zz = zz if p else inf
            zk[j] = zz
            wsum[j] += wk if p else zero
            if want_acc:  # loop-invariant: LLVM unswitches it
                acc[j] += wk * zz if p else zero
            zmin[j] = zz if zz < zmin[j] else zmin[j]


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FM)
def _row_raw(t, i, w, z, wsum, acc, zmin, shift, want_acc):
    """:func:`_row_z` for the raw-reward order: the raw values of row ``i`` into ``z``
    (+inf where missing or of weight 0), with the same row totals; with ``shift`` relative
    to the row's minimum ``m`` (``z = x - m``, ``acc = sum w (x - m)``, ``m`` into
    ``shift`` and ``zmin = 0``), so that a float32 reducer errs relative to the row's
    spread, not to the rewards' magnitude (every reducer but the power mean moves with a
    common shift: ``S(x) = S(x - m) + m``, the weighted sum by ``m sum w``)."""
    n_rew, _, m = t.shape
    ft = t.dtype.type
    inf = ft(np.inf)
    zero = ft(0.0)
    do_shift = shift.shape[0] > 0
    for j in range(m):
        wsum[j] = zero
        acc[j] = zero
        zmin[j] = inf
    for k in range(n_rew):
        wk = ft(w[k])
        if not wk > zero:
            continue
        xk = t[k, i]
        for j in range(m):
            x = xk[j]
            p = x == x
            wsum[j] += wk if p else zero
            zz = x if p else inf
            zmin[j] = zz if zz < zmin[j] else zmin[j]
    if do_shift:
        for j in range(m):
            shift[j] = zmin[j] if wsum[j] > zero else zero
            zmin[j] = zero if wsum[j] > zero else inf
    for k in range(n_rew):
        zk = z[k]
        wk = ft(w[k])
        if not wk > zero:
            for j in range(m):
                zk[j] = inf
            continue
        xk = t[k, i]
        if do_shift:
            for j in range(m):
                x = xk[j]
                p = x == x
                zz = x - shift[j] if p else inf
                zk[j] = zz
                if want_acc:
                    acc[j] += wk * zz if p else zero
        else:
            for j in range(m):
                x = xk[j]
                p = x == x
                zz = x if p else inf
                zk[j] = zz
                if want_acc:
                    acc[j] += wk * zz if p else zero


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FM)
def _row_mult(t, i, mcols, mlams, sh, sc, cen, fac, out):
    """``out = sum_c lam_c Z_ic`` over the constrained columns (0 where missing), whatever
    the columns' weights."""
    m = t.shape[2]
    ft = t.dtype.type
    zero = ft(0.0)
    for j in range(m):
        out[j] = zero
    for c in range(mcols.shape[0]):
        k = mcols[c]
        lam = ft(mlams[c])
        xk = t[k, i]
        shk = sh[k]
        sck = sc[k]
        cenk = cen[k]
        fack = fac[k]
        for j in range(m):
            x = xk[j]
            zz = ((x * sck[j] - shk[j]) - cenk[j]) * fack[j]
            out[j] += lam * zz if x == x else zero


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FM)
def _power_mean(z, w, p, wsum, s):
    """``S = (sum_k v_k x_k^p)^(1/p)`` of raw values ``x >= 0`` (DESIGN.md 2b), in float64
    and scaled by the row's max (``p > 0``) or min (``p < 0``) so that no power overflows;
    ``p = 0`` the geometric mean, ``p = +-inf`` the max/min, 0 when some ``x = 0`` and
    ``p <= 0``. A negative ``x`` gives NaN (the caller refuses such input)."""
    n_rew, m = z.shape
    ft = s.dtype.type
    for j in range(m):
        if not wsum[j] > 0.0:
            s[j] = ft(np.nan)
            continue
        lo = np.inf
        hi = -np.inf
        for k in range(n_rew):
            x = np.float64(z[k, j])
            if w[k] > 0.0 and x < np.inf:
                lo = min(lo, x)
                hi = max(hi, x)
        if lo < 0.0:
            s[j] = ft(np.nan)
        elif p == -np.inf:
            s[j] = ft(lo)
        elif p == np.inf:
            s[j] = ft(hi)
        elif p <= 0.0 and lo == 0.0:
            s[j] = ft(0.0)
        elif p > 0.0 and hi == 0.0:
            s[j] = ft(0.0)
        elif p == 0.0:
            acc = 0.0
            for k in range(n_rew):
                x = np.float64(z[k, j])
                if w[k] > 0.0 and x < np.inf:
                    acc += w[k] * math.log(x)
            s[j] = ft(math.exp(acc / np.float64(wsum[j])))
        else:
            ref = hi if p > 0.0 else lo  # every (x / ref)^p <= 1
            acc = 0.0
            for k in range(n_rew):
                x = np.float64(z[k, j])
                if w[k] > 0.0 and x < np.inf:
                    acc += w[k] * math.exp(p * math.log(x / ref)) if x > 0.0 else 0.0
            s[j] = ft(ref * math.exp(math.log(acc / np.float64(wsum[j])) / p))


@njit(cache=True, nogil=True, error_model="numpy")
def _group_z(sraw, offsets, g0, eps, correction, identity, loo, out, madd):
    """The raw-reward order's second step: each group's scores ``sraw`` (``(G, m)``,
    float64, NaN = no score) standardised inside the group exactly as stage 1 standardises
    one reward, in float64, plus the multiplier terms ``madd``; written to ``out``."""
    m = sraw.shape[1]
    for j in range(m):
        start = offsets[g0 + j]
        size = offsets[g0 + j + 1] - start
        n = 0.0
        lo = np.inf
        hi = -np.inf
        for i in range(size):
            x = sraw[i, j]
            if x == x:
                n += 1.0
                lo = min(lo, x)
                hi = max(hi, x)
        signal = (hi > lo) and (n - correction > 0.0)
        span = hi - lo if signal else 1.0
        if not span < np.inf:  # scores beyond half the float64 range: halve first
            span = 0.5 * hi - 0.5 * lo
            scale = 0.5 / span
        else:
            scale = 1.0 / span
        base = lo if signal else 0.0
        s1 = 0.0
        for i in range(size):
            x = sraw[i, j]
            if x == x:
                s1 += (x * scale - base * scale) if signal else 0.0
        mean_u = s1 / (n if n > 0.0 else 1.0)
        m2 = 0.0
        for i in range(size):
            x = sraw[i, j]
            if x == x:
                d = (x * scale - base * scale) - mean_u
                m2 += d * d
        nd = n - correction
        sd = math.sqrt(m2 / (nd if nd > 0.0 else 1.0))
        f = 1.0 / (sd + eps * scale)
        if loo:
            f *= n / ((n if n > 2.0 else 2.0) - 1.0)
        for i in range(size):
            x = sraw[i, j]
            if not x == x:
                out[start + i] = np.nan
                continue
            if identity and n == 1.0:
                zz = x / (1.0 + eps)
            elif signal:
                zz = ((x * scale - base * scale) - mean_u) * f
            else:
                zz = 0.0
            out[start + i] = zz + madd[i, j]


U_EXACT = 2.0**-10
"""Rows whose softmin sum ``u = sum_k v_k exp(-kappa (Z_k - m))`` falls below this (a
minimum of small weight under a large kappa: ``u >= v`` of the minimum) are recomputed in
float64 from ``u`` itself, which is where ``1 + sum_k v_k expm1(...)`` loses digits."""


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FM)
def _softmin_exact(z, w, kappa, wsum, zmin, j):
    """``m - log(sum_k v_k exp(-kappa (Z_k - m))) / kappa`` of lane ``j`` in float64."""
    u = 0.0
    m = np.float64(zmin[j])
    for k in range(z.shape[0]):
        zz = np.float64(z[k, j])
        if w[k] > 0.0 and zz < np.inf:
            u += w[k] * math.exp(-kappa * (zz - m))
    return m - math.log(u / np.float64(wsum[j])) / kappa


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FM)
def _softmin(z, w, kappa, wsum, zmin, s, u):
    """``S = m - log1p(sum_k v_k expm1(-kappa (Z_k - m))) / kappa``, m the row min (the
    form accurate for every kappa from 1e-8 to 1e8); ``u`` is scratch."""
    n_rew, m = z.shape
    ft = z.dtype.type
    inf = ft(np.inf)
    zero = ft(0.0)
    one = ft(1.0)
    neg_kappa = ft(-kappa)
    for j in range(m):
        s[j] = zero
    for k in range(n_rew):
        wk = ft(w[k])
        if not wk > zero:
            continue
        zk = z[k]
        for j in range(m):
            zz = zk[j]
            e = _expm1_neg(neg_kappa * (zz - zmin[j]))
            s[j] += wk * e if zz < inf else zero
    kap = ft(kappa)
    floor = ft(U_EXACT)
    for j in range(m):
        q = s[j] / wsum[j]  # in [-1, 0]
        uj = one + q
        u[j] = uj
        # log1p(q) as log(u) corrected by the rounding of u = 1 + q
        lg = _log(uj if uj >= floor else one) - ((uj - one) - q) / uj
        s[j] = zmin[j] - lg / kap
    for j in range(m):
        if not u[j] >= floor and wsum[j] > zero:
            s[j] = ft(_softmin_exact(z, w, kappa, wsum, zmin, j))


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FM)
def _mean_variance(z, w, lam, wsum, acc, s):
    """``S = mean - lam * sum_k v_k (Z_k - mean)^2``."""
    n_rew, m = z.shape
    ft = z.dtype.type
    inf = ft(np.inf)
    zero = ft(0.0)
    for j in range(m):
        s[j] = zero
    for k in range(n_rew):
        wk = ft(w[k])
        if not wk > zero:
            continue
        zk = z[k]
        for j in range(m):
            zz = zk[j]
            dv = zz - acc[j] / wsum[j]
            s[j] += wk * dv * dv if zz < inf else zero
    lm = ft(lam)
    for j in range(m):
        s[j] = acc[j] / wsum[j] - lm * (s[j] / wsum[j])


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FM)
def _cvar(z, w, alpha, wsum, s, q, tmp):
    """CVaR by its quantile form (Rockafellar-Uryasev): with ``cap = alpha * sum w`` and
    ``q`` the smallest present ``Z_k`` whose weight at or below it reaches ``cap``,
    ``S = q - sum_k w_k max(q - Z_k, 0) / cap``, equal to the mean of the worst alpha
    share (at a tie of ``cap`` either neighbour gives the same S); a comparison per pair
    of rewards, vectorised over the tile's groups, instead of a sort per row."""
    n_rew, m = z.shape
    ft = z.dtype.type
    inf = ft(np.inf)
    zero = ft(0.0)
    al = ft(alpha)
    for j in range(m):
        q[j] = inf
    for k in range(n_rew):
        if not w[k] > 0.0:
            continue
        zk = z[k]
        for j in range(m):
            tmp[j] = zero
        for k2 in range(n_rew):
            w2 = ft(w[k2])
            if not w2 > zero:
                continue
            z2 = z[k2]
            for j in range(m):
                tmp[j] += w2 if z2[j] <= zk[j] else zero
        for j in range(m):
            zz = zk[j]
            take = (zz < inf) & (tmp[j] >= al * wsum[j]) & (zz < q[j])
            q[j] = zz if take else q[j]
    for j in range(m):
        s[j] = zero
    for k in range(n_rew):
        wk = ft(w[k])
        if not wk > zero:
            continue
        zk = z[k]
        for j in range(m):
            gap = q[j] - zk[j]  # -inf for a missing reward
            s[j] += wk * gap if gap > zero else zero
    for j in range(m):
        s[j] = q[j] - s[j] / (al * wsum[j])


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FM)
def _conflict(z, w, cmode, tau, keep, pos, neg, tsum, tabs):
    """GD²PO: ``keep = 0`` where the terms ``w_k Z_k`` disagree in sign (and, for "snr",
    ``|sum| / (sum |.| + 1e-8) < tau``); ``pos`` .. ``tabs`` are scratch."""
    n_rew, m = z.shape
    inf = z.dtype.type(np.inf)
    for j in range(m):
        pos[j] = False
        neg[j] = False
        tsum[j] = 0.0
        tabs[j] = 0.0
    for k in range(n_rew):
        wk = w[k]
        if not wk > 0.0:
            continue
        zk = z[k]
        for j in range(m):
            zz = zk[j]
            tk = wk * np.float64(zz) if zz < inf else 0.0  # float64: as the array path
            pos[j] |= tk > 1e-8
            neg[j] |= tk < -1e-8
            tsum[j] += tk
            tabs[j] += abs(tk)
    for j in range(m):
        mixed = pos[j] & neg[j]
        drop = mixed & ((cmode == 1) | (abs(tsum[j]) / (tabs[j] + 1e-8) < tau))
        keep[j] = 0 if drop else 1


@njit(cache=True, nogil=True)
def _tile_rows(offsets, g0, m):
    """``(rows of the tile's largest group, all groups of one size)``."""
    g = offsets[g0 + 1] - offsets[g0]
    even = True
    for j in range(1, m):
        size = offsets[g0 + j + 1] - offsets[g0 + j]
        even &= size == g
        g = max(g, size)
    return g, even


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FM)
def _stage12(
    r,
    offsets,
    tile_starts,
    w,
    code,
    p0,
    p1,
    eps,
    correction,
    identity,
    loo,
    cmode,
    tau,
    raw,
    mcols,
    mlams,
    proto,
    exact_range,
    out,
    keep,
    t_begin,
    t_end,
):
    """Tiles ``t_begin`` to ``t_end`` (groups ``tile_starts[t]`` to ``tile_starts[t+1]``):
    ``out`` (S) and ``keep``; returns the number of cells with +-inf. The tile is computed
    in ``proto``'s dtype (float64 for float32 input where the conflict test or the raw
    order needs it: the values are exact in float64); ``raw`` selects the raw-reward order;
    ``mcols``/``mlams`` the multiplier terms."""
    n_rew = r.shape[1]
    ft = proto.dtype.type
    big = 1
    m_max = 1
    g_max = 1
    for t in range(t_begin, t_end):
        mt = tile_starts[t + 1] - tile_starts[t]
        gt = _tile_rows(offsets, tile_starts[t], mt)[0]
        big = max(big, n_rew * gt * mt)
        m_max = max(m_max, mt)
        g_max = max(g_max, gt)
    # scratch, reused by every tile (flat, reshaped per tile so that numba sees C layout)
    buf = np.empty(big, proto.dtype)
    params = np.empty((5, n_rew * m_max), proto.dtype)  # sh, sc, cen, fac, Z
    cells = np.empty((5, m_max))
    rows = np.empty((5, m_max), proto.dtype)
    conflict_sums = np.empty((2, m_max))
    zmin_buf = np.empty(m_max, proto.dtype)
    q_buf = np.empty(m_max, proto.dtype)
    kp_buf = np.empty(m_max, np.uint8)
    flags = np.empty((2, m_max), np.bool_)
    n_side = g_max * m_max if raw else 1
    sraw_buf = np.empty(n_side)  # raw order: the tile's scores and multiplier terms
    madd_buf = np.empty(n_side)
    shift_buf = np.empty(m_max if raw and code != 6 else 0, proto.dtype)
    s64_buf = np.empty(m_max)
    n_bad = 0
    nan = ft(np.nan)
    for t in range(t_begin, t_end):
        g0 = tile_starts[t]
        m = tile_starts[t + 1] - g0
        g, even = _tile_rows(offsets, g0, m)
        if g == 0:
            continue
        tile = buf[: n_rew * g * m].reshape((n_rew, g, m))
        if even:
            _load(r, offsets[g0], tile)
        else:
            _load_padded(r, offsets, g0, tile)
        shm = params[0, : n_rew * m].reshape((n_rew, m))
        scm = params[1, : n_rew * m].reshape((n_rew, m))
        cenm = params[2, : n_rew * m].reshape((n_rew, m))
        facm = params[3, : n_rew * m].reshape((n_rew, m))
        z = params[4, : n_rew * m].reshape((n_rew, m))
        acc5 = (cells[0, :m], cells[1, :m], cells[2, :m], cells[3, :m], cells[4, :m])
        n_bad += _cells(
            tile, eps, correction, identity, loo, exact_range, shm, scm, cenm, facm, acc5
        )
        wsum, acc, s, tmp, madd = rows[0, :m], rows[1, :m], rows[2, :m], rows[3, :m], rows[4, :m]
        zmin, q, kp = zmin_buf[:m], q_buf[:m], kp_buf[:m]
        sraw = sraw_buf[: g * m].reshape((g, m)) if raw else sraw_buf[:1].reshape((1, 1))
        mside = madd_buf[: g * m].reshape((g, m)) if raw else madd_buf[:1].reshape((1, 1))
        want_acc = code in (0, 1, 3) or (code == 2 and p0 == 0.0)
        for i in range(g):
            if raw:
                _row_raw(
                    tile,
                    i,
                    w,
                    z,
                    wsum,
                    acc,
                    zmin,
                    shift_buf[: min(m, shift_buf.shape[0])],
                    want_acc,
                )
            else:
                _row_z(tile, i, w, shm, scm, cenm, facm, z, wsum, acc, zmin, want_acc)
            if code == 0:
                for j in range(m):
                    s[j] = acc[j]
            elif code == 1 or (code == 2 and p0 == 0.0):
                for j in range(m):
                    s[j] = acc[j] / wsum[j]
            elif code == 4 or (code == 2 and p0 == np.inf):
                for j in range(m):
                    s[j] = zmin[j]
            elif code == 2:
                _softmin(z, w, p0, wsum, zmin, s, tmp)
            elif code == 3:
                _mean_variance(z, w, p0, wsum, acc, s)
            elif code == 5:
                _cvar(z, w, p0, wsum, s, q, tmp)
            elif code == 6:
                _power_mean(z, w, p0, wsum, s64_buf[:m])
            else:
                raise ValueError("rewardagg.kernels: unknown fused reducer code")
            if mcols.shape[0] > 0:
                _row_mult(tile, i, mcols, mlams, shm, scm, cenm, facm, madd)
            else:
                for j in range(m):
                    madd[j] = ft(0.0)
            if cmode > 0:
                if raw:  # the test reads Z: the stage-1 values of the row
                    _row_z(tile, i, w, shm, scm, cenm, facm, z, tmp, acc, q, False)
                _conflict(
                    z,
                    w,
                    cmode,
                    tau,
                    kp,
                    flags[0, :m],
                    flags[1, :m],
                    conflict_sums[0, :m],
                    conflict_sums[1, :m],
                )
            for j in range(m):
                row = offsets[g0 + j] + i
                if row < offsets[g0 + j + 1]:  # not a padding row
                    if raw:
                        if code == 6:
                            sj = s64_buf[j]
                        elif code == 0:  # S(x) = S(x - m) + m sum w
                            sj = np.float64(s[j]) + np.float64(shift_buf[j]) * np.float64(wsum[j])
                        else:
                            sj = np.float64(s[j]) + np.float64(shift_buf[j])
                        sraw[i, j] = sj if wsum[j] > 0.0 else np.nan
                        mside[i, j] = np.float64(madd[j])
                    else:
                        out[row] = s[j] + madd[j] if wsum[j] > 0.0 else nan
                    keep[row] = kp[j] if cmode > 0 and wsum[j] > 0.0 else 1
        if raw:
            _group_z(sraw, offsets, g0, eps, correction, identity, loo, out, mside)
    return n_bad


@njit(cache=True)
def _cut_tiles(offsets, n_rewards, budget):
    n_groups = offsets.shape[0] - 1
    out = np.empty(n_groups + 1, np.int64)
    n_tiles = 0
    g = 0
    while g < n_groups:
        size = offsets[g + 1] - offsets[g]
        cap = max(1, budget // max(1, size * n_rewards))
        cap = cap - cap % 16 if cap >= 16 else cap
        hi = size
        real = size
        m = 1
        while g + m < n_groups and m < cap:
            nxt = offsets[g + m + 1] - offsets[g + m]
            b = max(hi, nxt)
            # at least half of the padded tile is real rows; within twice the budget
            if (m + 1) * b > 2 * (real + nxt) or (m + 1) * b * n_rewards > 2 * budget:
                break
            hi = b
            real += nxt
            m += 1
        out[n_tiles] = g
        n_tiles += 1
        g += m
    out[n_tiles] = n_groups
    return out[: n_tiles + 1].copy()


def tiles(offsets: np.ndarray, n_rewards: int, budget: int = TILE_VALUES) -> np.ndarray:
    """Start group of each tile, plus the number of groups. A tile is a run of consecutive
    groups, the shorter ones padded with missing rows to the longest (so that uneven groups
    in any order still fill vectors) as long as at least half of the tile's rows are real,
    cut every ``budget // (G * K)`` groups (a multiple of 16 where that is at least 16, so
    that vector loops have no remainder; G the first group's size). A function of the
    offsets only."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.shape[0] < 2:
        return np.zeros(1, np.int64)
    return _cut_tiles(offsets, int(n_rewards), int(budget))


def is_warm(dtype: str) -> bool:
    """Whether the kernel for ``dtype`` ("float32"/"float64") is ready in this process."""
    return dtype in _warm


def stage12_numba(
    r: np.ndarray,
    offsets: np.ndarray,
    w: np.ndarray,
    *,
    code: int,
    slots: tuple[float, ...],
    eps: float,
    correction: float,
    identity: bool,
    loo: bool,
    conflict: int = 0,
    tau: float = 0.8,
    raw: bool = False,
    mult_cols: tuple[int, ...] = (),
    mult_lams: tuple[float, ...] = (),
) -> tuple[np.ndarray, int, np.ndarray]:
    """``(S, number of cells holding +-inf, keep)``; ``r`` C-contiguous float32/float64.

    ``conflict`` 0 (none), 1 (GD²PO "hard") or 2 ("snr" with threshold ``tau``) fills
    ``keep`` (uint8, 0 for a row the filter drops) in the same pass; ``raw`` runs the
    raw-reward order (stage 2 on the rewards, then the group z-score of the score);
    ``mult_cols``/``mult_lams`` add the terms ``sum_c lam_c Z_ic``. float32 input is
    computed in float32, except with ``conflict``: then its tiles are float64 (the values
    are exact there), so that the conflict test sees float64 Z; the result is float32
    either way. The raw order reduces each row relative to its minimum (exact shift) and
    standardises the scores in float64.

    Large batches are cut into runs of whole tiles (balanced by rows, a few per thread) and
    run on a small thread pool: the compiled function releases the GIL. numba's own
    ``parallel=True`` runtime is not used: under torch it would start a second OpenMP
    runtime whose spinning threads slow both down by several times.
    """
    if int(code) not in _CODES:
        raise ValueError(f"unknown fused reducer code {code!r}; known: {sorted(_CODES)}")
    if r.dtype not in (np.float32, np.float64):
        r = r.astype(np.float32)
    r = np.ascontiguousarray(r)
    wide = r.dtype == np.float64 or conflict > 0
    compute = np.dtype(np.float64 if wide else np.float32)
    key = _key(r.dtype, compute)
    out = np.empty(r.shape[0], dtype=r.dtype)
    keep = np.empty(r.shape[0], dtype=np.uint8)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    starts = tiles(offsets, r.shape[1])
    args = (
        r,
        offsets,
        starts,
        np.ascontiguousarray(w, np.float64),
        int(code),
        float(slots[0]),
        float(slots[1]),
        float(eps),
        float(correction),
        bool(identity),
        bool(loo),
        int(conflict),
        float(tau),
        bool(raw),
        np.asarray(mult_cols, dtype=np.int64).reshape(-1),
        np.asarray(mult_lams, dtype=np.float64).reshape(-1),
        np.empty(0, compute),
        compute == np.float64,  # exact min/max per cell (float32: sum d^2 > 0 is exact)
        out,
        keep,
    )
    n_tiles = starts.shape[0] - 1
    n_threads = min(threads(), n_tiles, max(1, r.size // MIN_ELEMENTS_PER_THREAD))
    t0 = time.perf_counter()
    if n_threads <= 1:
        bad = _stage12(*args, 0, n_tiles)
    else:  # runs of whole tiles with about the same number of rows, a few per thread so
        # that a thread slowed by another process does not hold up the call
        n_jobs = min(n_tiles, n_threads * JOBS_PER_THREAD)
        row_at = offsets[starts]
        cuts = np.searchsorted(row_at, np.linspace(0, r.shape[0], n_jobs + 1)[1:-1])
        bounds = [0, *sorted(set(int(c) for c in cuts)), n_tiles]
        jobs = [
            _pool().submit(_stage12, *args, lo, hi)
            for lo, hi in itertools.pairwise(bounds)
            if hi > lo
        ]
        bad = sum(j.result() for j in jobs)
    if key not in _warm:
        _warm.add(key)
        last_first_call_seconds[key] = time.perf_counter() - t0
    return out, int(bad), keep


_CODES = frozenset(range(7))
"""The reducer codes the pass implements (:class:`rewardagg.kernels.codes.FusedCode`)."""


def _key(dtype: np.dtype, compute: np.dtype) -> str:
    """The compiled variant: ``"float32"``, ``"float64"`` or ``"float32+float64"`` (float32
    input in float64 tiles)."""
    name = np.dtype(dtype).name
    return name if np.dtype(compute) == np.dtype(dtype) else f"{name}+{np.dtype(compute).name}"


MIN_ELEMENTS_PER_THREAD = 1 << 14
JOBS_PER_THREAD = 4
_POOL: list = []


def threads() -> int:
    """Threads a call may use: ``NUMBA_NUM_THREADS``, or :func:`numba.set_num_threads` once
    numba's threading layer runs.

    ``numba.get_num_threads()`` would launch that layer, and its OpenMP flavour sets the
    process's OpenMP thread count, which torch reads as its own: a call under
    ``NUMBA_NUM_THREADS=1`` left ``torch.get_num_threads() == 1`` for the rest of the
    process. So the layer's count is asked only when someone else started it."""
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", False):
        return max(1, numba.get_num_threads())
    return max(1, int(numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]


def _forget_pool_in_child() -> None:
    """A forked child inherits the pool object but not its threads: jobs submitted to it
    would wait forever. The child starts a pool of its own on its first threaded call."""
    _POOL.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _pool():
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(
            ThreadPoolExecutor(
                max_workers=numba.config.NUMBA_NUM_THREADS, thread_name_prefix="rewardagg-numba"
            )
        )
    return _POOL[0]


def warmup(
    dtypes: tuple[str, ...] = ("float32", "float64", "float32+float64"),
) -> dict[str, float]:
    """Compile (or load from the on-disk cache) the kernels now; returns seconds per
    variant (``"float32+float64"``: float32 input in float64 tiles, the conflict
    test's)."""
    times = {}
    for dt in dtypes:
        if dt in _warm:
            times[dt] = 0.0
            continue
        r = np.zeros((2, 1), dtype=dt.split("+")[0])
        t0 = time.perf_counter()
        stage12_numba(
            r,
            np.array([0, 2], np.int64),
            np.ones(1),
            code=2,
            slots=(1.0, 0.0),
            eps=1e-6,
            correction=1.0,
            identity=False,
            loo=False,
            conflict=1 if "+" in dt else 0,
        )
        times[dt] = time.perf_counter() - t0
    return times
