"""An independent oracle for DESIGN.md section 2, written as plain loops in mpmath.

Nothing here imports rewardagg: it is the contract transcribed line by line, computed at
60 significant digits, so the library's float64 result can be held to 1e-9.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np

mp.mp.dps = 60


def _groups(n, group_size=None, group_ids=None):
    labels = [i // group_size for i in range(n)] if group_ids is None else list(group_ids)
    out: dict = {}
    for i, g in enumerate(labels):
        out.setdefault(g, []).append(i)
    return list(out.values())


def stage1(R, groups, *, eps, correction, singleton="zero", baseline="mean", scale=True):
    """Z[i, k] as mpf (None = missing)."""
    n_rows, k_count = R.shape
    Z = [[None] * k_count for _ in range(n_rows)]
    for rows in groups:
        for k in range(k_count):
            present = [i for i in rows if not math.isnan(R[i, k])]
            vals = [mp.mpf(float(R[i, k])) for i in present]
            n = len(vals)
            signal = n >= 2 and max(vals) > min(vals) and n - correction > 0
            for i, x in zip(present, vals, strict=True):
                if signal:
                    mu = mp.fsum(vals) / n
                    sigma = mp.sqrt(mp.fsum((y - mu) ** 2 for y in vals) / (n - correction))
                    centre = x - mu if baseline == "mean" else x - (mp.fsum(vals) - x) / (n - 1)
                    Z[i][k] = centre / (sigma + eps) if scale else centre
                elif singleton == "identity" and n == 1:
                    Z[i][k] = x / (1 + eps) if scale else x
                else:
                    Z[i][k] = mp.mpf(0)
    return Z


def _participating(zrow, w):
    return [(z, wk) for z, wk in zip(zrow, w, strict=True) if z is not None and wk > 0]


def _cvar(v, alpha):
    """DESIGN.md 2b: sort ascending, S = (1/alpha) sum_j x_(j) max(0, min(v_(j), alpha - c_(j-1)))."""
    alpha = mp.mpf(alpha)
    c = mp.mpf(0)
    total = mp.mpf(0)
    for x, vk in sorted(v, key=lambda pair: pair[0]):
        total += x * max(mp.mpf(0), min(vk, alpha - c))
        c += vk
    return total / alpha


def _power_mean(v, p):
    """DESIGN.md 2b: (sum_k v_k x_k^p)^(1/p); p = 0 geometric; a zero with p <= 0 gives 0."""
    xs = [x for x, _ in v]
    if any(x < 0 for x in xs):
        raise ValueError("negative value")
    if math.isinf(p):
        return min(xs) if p < 0 else max(xs)
    if p <= 0 and any(x == 0 for x in xs):
        return mp.mpf(0)
    if p == 0:
        return mp.exp(mp.fsum(vk * mp.log(x) for x, vk in v))
    pp = mp.mpf(p)
    return mp.fsum(vk * x**pp for x, vk in v) ** (1 / pp)


#: DESIGN.md 2c presets: (reducer, conflict filter, threshold)
PRESETS = {"gd2po": ("gdpo", "hard", 0.8), "gd2po_snr": ("gdpo", "snr", 0.8)}


def dropped(zrow, w, mode, tau):
    """DESIGN.md 2c: t = w Z over present positive-weight rewards; mixed signs (beyond 1e-8)
    drop the row ("hard"), or only when |sum t| / (sum |t| + 1e-8) < tau ("snr")."""
    t = [mp.mpf(wk) * z for z, wk in _participating(zrow, w)]
    mixed = any(x > 1e-8 for x in t) and any(x < -1e-8 for x in t)
    if mode == "hard" or not mixed:
        return mixed
    return abs(mp.fsum(t)) / (mp.fsum(abs(x) for x in t) + mp.mpf("1e-8")) < tau


def reduce_row(zrow, w, method, *, kappa=1.0, lam=0.5, alpha=0.25, p=-1.0):
    method = PRESETS.get(method, (method,))[0]
    pairs = _participating(zrow, w)
    if not pairs:
        return None
    total = mp.fsum(mp.mpf(wk) for _, wk in pairs)
    v = [(z, mp.mpf(wk) / total) for z, wk in pairs]
    mean = mp.fsum(z * vk for z, vk in v)
    if method == "gdpo":
        return mp.fsum(z * mp.mpf(wk) for z, wk in pairs)
    if method == "mean" or (method == "softmin" and kappa == 0):
        return mean
    if method == "min" or (method == "softmin" and math.isinf(kappa)):
        return min(z for z, _ in v)
    if method == "softmin":
        kap = mp.mpf(kappa)
        return -mp.log(mp.fsum(vk * mp.exp(-kap * z) for z, vk in v)) / kap
    if method == "mean_variance":
        return mean - lam * mp.fsum(vk * (z - mean) ** 2 for z, vk in v)
    if method == "cvar":
        return _cvar(v, alpha)
    if method == "power_mean":
        return _power_mean(v, p)
    raise ValueError(f"the oracle has no reducer {method!r}: add one (DESIGN.md) to test it")


#: every stage-2 reducer the oracle knows (registry-wide tests fail for one it does not)
REDUCERS = ("gdpo", "mean", "softmin", "mean_variance", "min", "cvar", "power_mean", *PRESETS)


def stage3(S, *, eps, correction, groups=None):
    """Batch z-score; with ``groups`` (center="group"), each group's mean of S is
    subtracted first and only the batch std divides."""
    idx = [i for i, s in enumerate(S) if s is not None]
    out = [mp.mpf(0)] * len(S)
    if groups is not None:
        S = _centre(S, groups)
    vals = [S[i] for i in idx]
    if len(vals) < 2 or max(vals) == min(vals):
        return out
    mu = mp.fsum(vals) / len(vals)
    sd = mp.sqrt(mp.fsum((s - mu) ** 2 for s in vals) / (len(vals) - correction))
    for i in idx:
        out[i] = ((S[i] - mu) if groups is None else S[i]) / (sd + eps)
    return out


def advantages(
    R,
    *,
    method="softmin",
    group_size=None,
    group_ids=None,
    weights=None,
    mask=None,
    eps=1e-6,
    correction=1,
    batch_norm=True,
    singleton="zero",
    baseline="mean",
    kappa=1.0,
    lam=0.5,
    alpha=0.25,
    p=-1.0,
    scale="group",
    order=None,
    center="batch",
    multipliers=None,
    conflict=None,
    conflict_threshold=None,
    reweight_groups=True,
    group_scale=True,
):
    """float64 advantages computed from ``R`` (any float dtype) at 60 digits.

    ``group_scale=False``: stage 1 only centres, R[i, k] - mu[g(i), k] (no division;
    the issue-23 contract); everything that reads stage 1 (the reducer in the default order,
    the raw-order score's group step, the multipliers' terms, the conflict test) reads the
    centred values.

    ``multipliers`` is ``{column index: lambda}``; ``order=None`` is the method's default
    (``"reduce_then_normalize"`` for power_mean, ``"normalize_then_reduce"`` otherwise)."""
    R = np.array(R, dtype=np.float64)
    if R.ndim == 1:
        R = R[:, None]
    if mask is not None:
        R = np.where(np.asarray(mask).reshape(R.shape), R, np.nan)
    n, k = R.shape
    w = [1.0] * k if weights is None else [float(x) for x in weights]
    groups = _groups(n, group_size, group_ids)
    if method == "grpo":
        s = []
        for i in range(n):
            # DESIGN.md 2: the sum over the PRESENT rewards; present rewards that all have
            # weight 0 make a score of 0, only a row with every reward missing has none
            pairs = [(R[i, j], w[j]) for j in range(k) if not math.isnan(R[i, j])]
            s.append(mp.fsum(mp.mpf(float(r)) * mp.mpf(wj) for r, wj in pairs) if pairs else None)
        col = np.array([np.nan if x is None else float(x) for x in s])[:, None]
        # the sum itself is rounded to float once, as the library sums in float
        Zs = stage1(
            col,
            groups,
            eps=eps,
            correction=correction,
            singleton=singleton,
            baseline=baseline,
            scale=scale == "group",
        )
        a = [z[0] if z[0] is not None else mp.mpf(0) for z in Zs]
        if scale == "batch":
            vals = [mp.mpf(float(x)) for x in col[:, 0] if not math.isnan(x)]
            if len(vals) >= 2 and max(vals) > min(vals):
                mu = mp.fsum(vals) / len(vals)
                sd = mp.sqrt(mp.fsum((x - mu) ** 2 for x in vals) / (len(vals) - correction))
                a = [x / (sd + eps) for x in a]
            else:
                a = [mp.mpf(0)] * n
        return np.array([float(x) for x in a])
    opts = dict(
        eps=eps, correction=correction, singleton=singleton, baseline=baseline, scale=group_scale
    )
    Z = stage1(R, groups, **opts)
    params = dict(kappa=kappa, lam=lam, alpha=alpha, p=p)
    order = order or (
        "reduce_then_normalize" if method == "power_mean" else "normalize_then_reduce"
    )
    if order == "normalize_then_reduce":
        S = [reduce_row(Z[i], w, method, **params) for i in range(n)]
    else:  # reduce the raw rewards, then standardise the score in its group (as stage 1)
        raw = [[None if math.isnan(x) else mp.mpf(float(x)) for x in row] for row in R]
        s = [reduce_row(raw[i], w, method, **params) for i in range(n)]
        col = np.array([np.nan if x is None else float(x) for x in s])[:, None]
        S = [z[0] for z in stage1(col, groups, **opts)]  # the score rounded to float once
    for c, lam_c in (multipliers or {}).items():
        S = [None if S[i] is None else S[i] + lam_c * (Z[i][c] or 0) for i in range(n)]
    _, mode, tau = PRESETS.get(method, (method, None, 0.8))
    mode = conflict or mode
    tau = tau if conflict_threshold is None else conflict_threshold
    if mode is not None:  # DESIGN.md 2c: drop conflicting rows, reweight groups by rho
        drop = [S[i] is not None and dropped(Z[i], w, mode, tau) for i in range(n)]
        for rows in groups:
            have = [i for i in rows if S[i] is not None]
            kept = [i for i in have if not drop[i]]
            rho = mp.mpf(len(kept)) / len(have) if have and reweight_groups else mp.mpf(1)
            for i in have:
                S[i] = None if drop[i] else rho * S[i]
    if batch_norm:
        A = stage3(S, eps=eps, correction=correction, groups=groups if center == "group" else None)
    elif center == "group":
        A = [mp.mpf(0) if s is None else s for s in _centre(S, groups)]
    else:
        A = [mp.mpf(0) if s is None else s for s in S]
    return np.array([float(x) for x in A])


def _centre(S, groups):
    """Each group's scores minus the group's mean over its rows that have one."""
    S = list(S)
    for rows in groups:
        have = [i for i in rows if S[i] is not None]
        if have:
            mu_g = mp.fsum(S[i] for i in have) / len(have)
            for i in have:
                S[i] = S[i] - mu_g
    return S


def zscores(R, **kw):
    """Stage 1 alone as float64 (NaN = missing)."""
    R = np.array(R, dtype=np.float64)
    groups = _groups(R.shape[0], kw.pop("group_size", None), kw.pop("group_ids", None))
    Z = stage1(R, groups, **kw)
    return np.array([[np.nan if z is None else float(z) for z in row] for row in Z])


def drops(R, *, mode, tau=0.8, weights=None, group_size=None, group_ids=None, **stage1_kw):
    """DESIGN.md 2c: the rows the conflict filter drops (rows with a score only), on the
    exact stage-1 values of ``R`` (``stage1_kw``: eps, correction, singleton, baseline,
    scale)."""
    R = np.array(R, dtype=np.float64)
    n, k = R.shape
    w = [1.0] * k if weights is None else [float(x) for x in weights]
    opts = dict(eps=1e-6, correction=1, **stage1_kw)
    Z = stage1(R, _groups(n, group_size, group_ids), **opts)
    return np.array(
        [bool(_participating(Z[i], w)) and dropped(Z[i], w, mode, tau) for i in range(n)]
    )
