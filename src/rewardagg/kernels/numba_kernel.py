"""Stages 1-2 as one compiled CPU pass (numba, cached on disk, threads over groups).

Large batches are split into runs of groups, one per thread (a thread pool; the compiled
function releases the GIL); inside a group the rows are
read three times while they sit in L1 (count/min/max, then the sums of the rescaled
values, then Z and the row aggregate), so main memory sees each reward once. All
arithmetic is float64. Same formulas as the core (DESIGN.md section 2; tests/kernel_spec.py).

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
from numba import njit

__all__ = ["is_warm", "stage12_numba", "warmup"]

# Stage-2 codes are the method table's ``fused_code`` (rewardagg._src.methods): 0 weighted
# sum, 1 weighted mean, 2 softmin (p0 = kappa), 3 mean minus p0 * variance, 4 minimum,
# 5 CVaR (p0 = alpha).

_warm: set[str] = set()  # dtypes already compiled or loaded in this process
last_first_call_seconds: dict[str, float] = {}


_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10


@njit(inline="always", cache=True, fastmath={"contract"})
def _expm1_neg(y):
    """``expm1(y)`` for ``y <= 0`` (``-inf`` allowed), branch-free so that loops over it
    vectorise: relative error below 3e-16 (libm's ``expm1`` is a 5x slower call).

    ``y > -ln2/2``: the Taylor series of expm1 to degree 13; otherwise ``y = n ln2 + q`` and
    ``expm1(y) = 2^n expm1(q) + (2^n - 1)``, with ``y`` clamped at -40 (where the result
    already rounds to -1) and ``2^n`` built from the bits of ``-n``.
    """
    small = y > -0.34657359027997264
    yc = max(y, -40.0)
    n = math.floor(yc * 1.4426950408889634 + 0.5)
    q = (yc - n * _LN2_HI) - n * _LN2_LO
    if small:
        q = y
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
    m = np.int64(-n)
    s = 1.0
    s *= 0.5 if (m & 1) else 1.0
    s *= 0.25 if (m & 2) else 1.0
    s *= 0.0625 if (m & 4) else 1.0
    s *= 0.00390625 if (m & 8) else 1.0
    s *= 1.52587890625e-05 if (m & 16) else 1.0
    s *= 2.3283064365386963e-10 if (m & 32) else 1.0
    if small:
        s = 1.0
    return s * em + (s - 1.0)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _stage12(
    r,
    offsets,
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
    out,
    keep,
    g_begin,
    g_end,
):
    n_rew = r.shape[1]
    # per cell: Z = ((x - x0) * sc - m) * fac, everything relative to the shift x0 so a
    # large common offset cancels exactly once (in x - x0), never again
    shift = np.empty(n_rew, np.float64)
    scale = np.empty(n_rew, np.float64)
    centre = np.empty(n_rew, np.float64)
    fac = np.empty(n_rew, np.float64)
    zrow = np.empty(n_rew, np.float64)
    wrow = np.empty(n_rew, np.float64)
    bz = np.empty(n_rew, np.float64)  # CVaR's sorted tail buffer
    bw = np.empty(n_rew, np.float64)
    n_bad = 0
    for g in range(g_begin, g_end):
        r0 = offsets[g]
        r1 = offsets[g + 1]
        # pass 1, one cell at a time (the group's rows sit in L1): count, min, max and
        # the first two sums of the values shifted by the cell's first present value
        for k in range(n_rew):
            n = 0.0
            lo = math.inf
            hi = -math.inf
            x0 = 0.0
            for i in range(r0, r1):  # the shift: the cell's first present value
                x = np.float64(r[i, k])
                if x == x:
                    x0 = x
                    break
            s1 = 0.0
            s2 = 0.0
            for i in range(r0, r1):
                x = np.float64(r[i, k])
                if x == x:
                    n += 1.0
                    lo = min(lo, x)
                    hi = max(hi, x)
                    d = x - x0
                    s1 += d
                    s2 += d * d
            if lo == -math.inf or hi == math.inf:
                n_bad += 1
            if hi > lo and n - correction > 0:
                sc = 1.0  # d = (x - x0) * sc
                if not (s2 < math.inf):  # |x| beyond 1e154: redo with sc = 1 / (max - min)
                    c2 = 1.0 / (0.5 * hi - 0.5 * lo)
                    sc = 0.5 * c2
                    s1 = 0.0
                    s2 = 0.0
                    for i in range(r0, r1):
                        x = np.float64(r[i, k])
                        if x == x:
                            d = x * sc - x0 * sc
                            s1 += d
                            s2 += d * d
                m = s1 / n
                var = (s2 - s1 * m) / (n - correction)
                sd = math.sqrt(var) if var > 0.0 else 0.0
                f = 1.0 / (sd + eps * sc)
                if loo:
                    f *= n / (n - 1.0)
                shift[k] = x0
                scale[k] = sc
                centre[k] = m
                fac[k] = f
            else:  # identity singleton: Z = x / (1 + eps); no signal: exactly 0
                shift[k] = 0.0
                scale[k] = 1.0
                centre[k] = 0.0
                fac[k] = 1.0 / (1.0 + eps) if identity and n == 1.0 else 0.0
        # pass 2: Z of each row, then the row's aggregate
        for i in range(r0, r1):
            wsum = 0.0
            acc = 0.0
            zmin = math.inf
            for k in range(n_rew):
                x = np.float64(r[i, k])
                wk = w[k]
                if x == x and wk > 0.0:
                    z = (x * scale[k] - shift[k] * scale[k] - centre[k]) * fac[k]
                    zrow[k] = z
                    wrow[k] = wk
                    wsum += wk
                    acc += wk * z
                    zmin = min(zmin, z)
                else:
                    zrow[k] = math.inf
                    wrow[k] = 0.0
            keep[i] = 1
            if wsum <= 0.0:
                out[i] = math.nan
                continue
            if cmode > 0:  # GD2PO: do the terms w_k Z_k disagree in sign (and cancel)?
                pos = False
                neg = False
                tsum = 0.0
                tabs = 0.0
                for k in range(n_rew):
                    if wrow[k] > 0.0:
                        tk = wrow[k] * zrow[k]
                        pos |= tk > 1e-8
                        neg |= tk < -1e-8
                        tsum += tk
                        tabs += abs(tk)
                if pos and neg and (cmode == 1 or abs(tsum) / (tabs + 1e-8) < tau):
                    keep[i] = 0
            if code == 0:
                s = acc
            elif code == 1:
                s = acc / wsum
            elif code == 4:
                s = zmin
            elif code == 2:
                kappa = p0
                if kappa == 0.0:
                    s = acc / wsum
                elif kappa == math.inf:
                    s = zmin
                else:
                    t = 0.0
                    for k in range(n_rew):  # unused rewards: z = inf, weight 0
                        t += wrow[k] * _expm1_neg(-kappa * (zrow[k] - zmin))
                    # log1p(q) as log(1 + q) corrected by the rounding of 1 + q (one
                    # ulp-accurate; libm's log1p is a slower call that blocks inlining)
                    q = t / wsum
                    u = 1.0 + q
                    s = zmin - (math.log(u) - ((u - 1.0) - q) / u) / kappa
            elif code == 5:  # CVaR: the worst p0 of the weight, kept in a sorted buffer
                # (bz, bw) holds the smallest values seen so far, trimmed to the fewest whose
                # weight reaches cap; a value above a full buffer's largest is skipped (one
                # compare, the usual case), so a row costs about K + (p0 K)^2, not a sort
                cap = p0 * wsum
                m = 0
                held = 0.0
                for k in range(n_rew):
                    wk = wrow[k]
                    if wk <= 0.0:
                        continue
                    zk = zrow[k]
                    if held >= cap and zk >= bz[m - 1]:  # after a tail that is complete
                        continue
                    j = m
                    while j > 0 and bz[j - 1] > zk:  # stable: after equal values
                        bz[j] = bz[j - 1]
                        bw[j] = bw[j - 1]
                        j -= 1
                    bz[j] = zk
                    bw[j] = wk
                    m += 1
                    held += wk
                    while m > 1 and held - bw[m - 1] >= cap:
                        m -= 1
                        held -= bw[m]
                c = 0.0
                t = 0.0
                for j in range(m):
                    t += bz[j] * max(min(bw[j], cap - c), 0.0)
                    c += bw[j]
                s = t / cap
            else:
                mean = acc / wsum
                t = 0.0
                for k in range(n_rew):
                    z = zrow[k]
                    if wrow[k] > 0.0:
                        t += wrow[k] * (z - mean) * (z - mean)
                s = mean - p0 * (t / wsum)
            out[i] = s
    return n_bad


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
) -> tuple[np.ndarray, int, np.ndarray]:
    """``(S, number of cells holding +-inf, keep)``; ``r`` C-contiguous float32/float64.

    ``conflict`` 0 (none), 1 (GD²PO "hard") or 2 ("snr" with threshold ``tau``) fills
    ``keep`` (uint8, 0 for a row the filter drops) in the same pass.

    Large batches are cut into one contiguous run of groups per thread (balanced by rows)
    and run on a small thread pool: the compiled function releases the GIL. numba's own
    ``parallel=True`` runtime is not used: under torch it would start a second OpenMP
    runtime whose spinning threads slow both down by several times.
    """
    if r.dtype not in (np.float32, np.float64):
        r = r.astype(np.float32)
    r = np.ascontiguousarray(r)
    key = r.dtype.name
    out = np.empty(r.shape[0], dtype=r.dtype)
    keep = np.empty(r.shape[0], dtype=np.uint8)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    args = (
        r,
        offsets,
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
        out,
        keep,
    )
    n_groups = offsets.shape[0] - 1
    n_threads = min(threads(), n_groups, max(1, r.size // MIN_ELEMENTS_PER_THREAD))
    t0 = time.perf_counter()
    if n_threads <= 1:
        bad = _stage12(*args, 0, n_groups)
    else:  # split at group boundaries into runs of about the same number of rows
        cuts = np.searchsorted(offsets, np.linspace(0, r.shape[0], n_threads + 1)[1:-1])
        bounds = [0, *sorted(set(int(c) for c in cuts)), n_groups]
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


MIN_ELEMENTS_PER_THREAD = 1 << 14
_POOL: list = []


def threads() -> int:
    """Threads a call may use: ``NUMBA_NUM_THREADS`` / :func:`numba.set_num_threads`."""
    return max(1, numba.get_num_threads())


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


def warmup(dtypes: tuple[str, ...] = ("float32", "float64")) -> dict[str, float]:
    """Compile (or load from the on-disk cache) the kernels now; returns seconds per dtype."""
    times = {}
    for dt in dtypes:
        if dt in _warm:
            times[dt] = 0.0
            continue
        r = np.zeros((2, 1), dtype=dt)
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
        )
        times[dt] = time.perf_counter() - t0
    return times
