"""Stages 1-2 as one fused Triton kernel (CUDA tensors; CPU tensors under ``TRITON_INTERPRET=1``).

One program per group. For each block of rows and each block of rewards it computes the
cell statistics of that reward block over the whole group (count, min, max, then the mean
and the centred sum of squares of ``u = (x - min) / (max - min)``: a true two-pass
variance that cannot overflow), forms Z for the row block and folds it into per-row running
aggregates (online: a running min, weighted sums, and for softmin the expm1 sum rescaled
when the running min moves, for mean_variance Chan's weighted merge). A group that fits one
row block (the usual case, ``BLOCK_R`` = next power of two of the largest group, up to 256
rows) reads its rows from memory once; the repeated tile reads hit the cache. Larger groups
re-read their rows per row block. Input is cast to float32 (float64 for float64 input) on
load; no atomics, so results are identical run to run.

Only ``tl.load/store/where/sum/min/max/exp/log/sqrt`` (and ``tl.static_assert``) are used:
the kernel compiles with Triton 3.0 and later (tested under the 3.9 interpreter; the GPU image has 3.6).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["TRITON_CODES", "group_zscore", "stage12_triton"]

# Stage-2 codes: rewardagg.kernels.codes.FusedCode 0 weighted sum, 1 weighted mean,
# 2 softmin (p0 = kappa), 3 mean minus p0 * variance, 4 minimum, 6 power mean (p0 = p,
# raw order); any other code raises (CVaR's quantile cannot be merged across reward blocks).
TRITON_CODES = frozenset({0, 1, 2, 3, 4, 6})


@triton.jit
def _expm1_nonpos(y):
    # Kahan's expm1 from exp and log, for y <= 0 (y = -inf gives -1): accurate for tiny y
    u = tl.exp(y)
    um1 = u - 1.0
    safe_u = tl.where((u == 1.0) | (um1 == -1.0), 0.5, u)
    r = um1 * y / tl.log(safe_u)
    r = tl.where(um1 == -1.0, -1.0, r)
    return tl.where(u == 1.0, y, r)


@triton.jit
def _log1p_neg(t):
    # Kahan's log1p from log, for -1 < t <= 0
    u = 1.0 + t
    safe = tl.where(u == 1.0, 0.5, u)
    return tl.where(u == 1.0, t, tl.log(safe) * t / (safe - 1.0))


@triton.jit
def _stage12_kernel(
    r_ptr,
    off_ptr,
    w_ptr,
    lam_ptr,
    out_ptr,
    madd_ptr,
    bad_ptr,
    keep_ptr,
    n_rew,
    stride_r,
    p0,
    p1,
    eps,
    correction,
    tau,
    METHOD: tl.constexpr,
    CONFLICT: tl.constexpr,
    IDENTITY: tl.constexpr,
    LOO: tl.constexpr,
    RAW: tl.constexpr,
    MULT: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ACC: tl.constexpr,
):
    tl.static_assert((METHOD >= 0) & (METHOD <= 6) & (METHOD != 5), "unknown fused reducer code")
    g = tl.program_id(0)
    start = tl.load(off_ptr + g).to(tl.int64)
    end = tl.load(off_ptr + g + 1).to(tl.int64)
    ar = tl.arange(0, BLOCK_R)
    ak = tl.arange(0, BLOCK_K)
    n_bad = tl.zeros((BLOCK_K,), dtype=tl.int32)
    for rb in range(start, end, BLOCK_R):
        rows = rb + ar
        rmask = rows < end
        wsum = tl.zeros((BLOCK_R,), dtype=ACC)
        acc = tl.zeros((BLOCK_R,), dtype=ACC)
        zmin = tl.full((BLOCK_R,), float("inf"), dtype=ACC)
        tsum = tl.zeros((BLOCK_R,), dtype=ACC)  # softmin: sum w expm1(-kappa (z - zmin))
        mv_m2 = tl.zeros((BLOCK_R,), dtype=ACC)  # mean_variance: sum w (z - mean)^2
        pm_hi = tl.full((BLOCK_R,), float("-inf"), dtype=ACC)  # power mean: running max,
        pm_lo = tl.full((BLOCK_R,), float("inf"), dtype=ACC)  # min, sum w (x / ref)^p,
        pm_sum = tl.zeros((BLOCK_R,), dtype=ACC)  # sum w log x (p = 0), some x = 0,
        pm_log = tl.zeros((BLOCK_R,), dtype=ACC)  # some x < 0
        pm_zero = tl.zeros((BLOCK_R,), dtype=tl.int32)
        pm_neg = tl.zeros((BLOCK_R,), dtype=tl.int32)
        c_pos = tl.zeros((BLOCK_R,), dtype=tl.int32)  # GD2PO: some term w z > 1e-8
        c_neg = tl.zeros((BLOCK_R,), dtype=tl.int32)  # ... and some term < -1e-8
        c_abs = tl.zeros((BLOCK_R,), dtype=ACC)  # sum |w z| (the signed sum is acc)
        madd = tl.zeros((BLOCK_R,), dtype=ACC)  # sum_c lam_c Z_ic (0 where missing)
        for kb in range(0, n_rew, BLOCK_K):
            ks = kb + ak
            kmask = ks < n_rew
            # ---- stage 1 statistics of this reward block over the whole group ----------
            cnt = tl.zeros((BLOCK_K,), dtype=ACC)
            lo = tl.full((BLOCK_K,), float("inf"), dtype=ACC)
            hi = tl.full((BLOCK_K,), float("-inf"), dtype=ACC)
            for sb in range(start, end, BLOCK_R):
                srow = sb + ar
                m2d = (srow < end)[:, None] & kmask[None, :]
                x = tl.load(
                    r_ptr + srow[:, None] * stride_r + ks[None, :], mask=m2d, other=float("nan")
                ).to(ACC)
                pres = x == x
                cnt += tl.sum(pres.to(ACC), axis=0)
                lo = tl.minimum(lo, tl.min(tl.where(pres, x, float("inf")), axis=0))
                hi = tl.maximum(hi, tl.max(tl.where(pres, x, float("-inf")), axis=0))
            n_bad += ((lo == float("-inf")) | (hi == float("inf"))).to(tl.int32)
            signal = (hi > lo) & (cnt - correction > 0)
            inv = tl.where(signal, 1.0 / tl.where(signal, hi - lo, 1.0), 0.0)
            base = tl.where(signal, lo, 0.0)
            s1 = tl.zeros((BLOCK_K,), dtype=ACC)
            for sb in range(start, end, BLOCK_R):
                srow = sb + ar
                m2d = (srow < end)[:, None] & kmask[None, :]
                x = tl.load(
                    r_ptr + srow[:, None] * stride_r + ks[None, :], mask=m2d, other=float("nan")
                ).to(ACC)
                s1 += tl.sum(tl.where(x == x, (x - base[None, :]) * inv[None, :], 0.0), axis=0)
            mean_u = s1 / tl.maximum(cnt, 1.0)
            m2 = tl.zeros((BLOCK_K,), dtype=ACC)
            for sb in range(start, end, BLOCK_R):
                srow = sb + ar
                m2d = (srow < end)[:, None] & kmask[None, :]
                x = tl.load(
                    r_ptr + srow[:, None] * stride_r + ks[None, :], mask=m2d, other=float("nan")
                ).to(ACC)
                d = tl.where(x == x, (x - base[None, :]) * inv[None, :] - mean_u[None, :], 0.0)
                m2 += tl.sum(d * d, axis=0)
            sd = tl.sqrt(m2 / tl.where(cnt - correction > 0, cnt - correction, 1.0))
            fac = 1.0 / (sd + eps * inv)
            if LOO:
                fac = fac * cnt / (tl.maximum(cnt, 2.0) - 1.0)
            fac = tl.where(signal, fac, 0.0)
            # ---- Z of this row block, folded into the row aggregates --------------------
            m2d = rmask[:, None] & kmask[None, :]
            x = tl.load(
                r_ptr + rows[:, None] * stride_r + ks[None, :], mask=m2d, other=float("nan")
            ).to(ACC)
            z = ((x - base[None, :]) * inv[None, :] - mean_u[None, :]) * fac[None, :]
            if IDENTITY:
                z = tl.where((cnt == 1.0)[None, :], x / (1.0 + eps), z)
            if MULT:
                lk = tl.load(lam_ptr + ks, mask=kmask, other=0.0).to(ACC)
                madd += tl.sum(tl.where(x == x, lk[None, :] * z, 0.0), axis=1)
            if RAW:  # the reducer reads the raw rewards; Z only feeds the multipliers
                z = x
            wk = tl.load(w_ptr + ks, mask=kmask, other=0.0).to(ACC)
            use = (x == x) & (wk > 0.0)[None, :]
            wz = tl.where(use, wk[None, :], 0.0)
            zu = tl.where(use, z, 0.0)
            w_blk = tl.sum(wz, axis=1)
            a_blk = tl.sum(wz * zu, axis=1)
            if CONFLICT > 0:  # merges across reward blocks: two flags and a sum
                t = wz * zu
                c_pos = tl.maximum(c_pos, tl.max((t > 1e-8).to(tl.int32), axis=1))
                c_neg = tl.maximum(c_neg, tl.max((t < -1e-8).to(tl.int32), axis=1))
                c_abs += tl.sum(tl.abs(t), axis=1)
            if METHOD == 2:  # softmin, online in the running minimum
                m_blk = tl.min(tl.where(use, z, float("inf")), axis=1)
                m_new = tl.minimum(zmin, m_blk)
                delta = tl.where(wsum > 0.0, zmin - m_new, 0.0)
                tsum = tsum * tl.exp(-p0 * delta) + _expm1_nonpos(-p0 * delta) * wsum
                gap = tl.where(use, z - m_new[:, None], 0.0)
                tsum += tl.sum(wz * _expm1_nonpos(-p0 * gap), axis=1)
                zmin = m_new
            elif METHOD == 3:  # mean_variance: merge (weight, mean, M2) of the block
                m_blk = a_blk / tl.where(w_blk > 0.0, w_blk, 1.0)
                dv = tl.where(use, z - m_blk[:, None], 0.0)
                m2_blk = tl.sum(wz * dv * dv, axis=1)
                w_new = wsum + w_blk
                mean_old = acc / tl.where(wsum > 0.0, wsum, 1.0)
                dm = m_blk - mean_old
                mv_m2 = mv_m2 + m2_blk + dm * dm * wsum * w_blk / tl.where(w_new > 0.0, w_new, 1.0)
            elif METHOD == 4:
                zmin = tl.minimum(zmin, tl.min(tl.where(use, z, float("inf")), axis=1))
            elif METHOD == 6:  # power mean of raw x >= 0, scaled by the running max (p > 0)
                # or min (p < 0) so that no power overflows; rescaled when that moves
                pos = use & (z > 0.0)
                pm_zero = tl.maximum(pm_zero, tl.max((use & (z == 0.0)).to(tl.int32), axis=1))
                pm_neg = tl.maximum(pm_neg, tl.max((use & (z < 0.0)).to(tl.int32), axis=1))
                pm_log += tl.sum(tl.where(pos, wz * tl.log(tl.where(pos, z, 1.0)), 0.0), axis=1)
                hi_new = tl.maximum(pm_hi, tl.max(tl.where(use, z, float("-inf")), axis=1))
                lo_new = tl.minimum(pm_lo, tl.min(tl.where(pos, z, float("inf")), axis=1))
                ref_old = tl.where(p0 > 0.0, pm_hi, pm_lo)
                ref_new = tl.where(p0 > 0.0, hi_new, lo_new)
                ok_new = (ref_new > 0.0) & (ref_new < float("inf"))
                ok = (ref_old > 0.0) & (ref_old < float("inf")) & ok_new
                q = tl.where(ok, ref_old / tl.where(ok, ref_new, 1.0), 1.0)
                pm_sum = tl.where(ok, pm_sum * tl.exp(p0 * tl.log(q)), pm_sum)
                take = pos & ok_new[:, None]
                ratio = tl.where(take, z / tl.where(ok_new, ref_new, 1.0)[:, None], 1.0)
                pm_sum += tl.sum(tl.where(take, wz * tl.exp(p0 * tl.log(ratio)), 0.0), axis=1)
                pm_hi = hi_new
                pm_lo = lo_new
            wsum += w_blk
            acc += a_blk
        has = wsum > 0.0
        wdiv = tl.where(has, wsum, 1.0)
        if METHOD == 0:
            s = acc
        elif METHOD == 1:
            s = acc / wdiv
        elif METHOD == 2:
            s = zmin - _log1p_neg(tl.maximum(tsum / wdiv, -1.0)) / p0
        elif METHOD == 3:
            s = acc / wdiv - p0 * (mv_m2 / wdiv)
        elif METHOD == 4:
            s = zmin
        else:  # METHOD == 6: the power mean (p0 = p)
            ref = tl.where(p0 > 0.0, pm_hi, pm_lo)
            mean_p = tl.where(pm_sum > 0.0, pm_sum / wdiv, 1.0)
            p_safe = tl.where(p0 == 0.0, 1.0, p0)
            s = ref * tl.exp(tl.log(mean_p) / p_safe)
            s = tl.where(p0 == 0.0, tl.exp(pm_log / wdiv), s)
            s = tl.where(
                p0 == float("-inf"), tl.minimum(pm_lo, tl.where(pm_zero > 0, 0.0, pm_lo)), s
            )
            s = tl.where(p0 == float("inf"), pm_hi, s)
            s = tl.where((p0 <= 0.0) & (pm_zero > 0), 0.0, s)
            s = tl.where((p0 > 0.0) & (pm_hi == 0.0), 0.0, s)
            s = tl.where(pm_neg > 0, float("nan"), s)
        s = tl.where(has, s, float("nan"))
        if RAW:  # the group z-score of s follows (it spans row blocks)
            tl.store(madd_ptr + rows, madd, mask=rmask)
            tl.store(out_ptr + rows, s.to(madd_ptr.dtype.element_ty), mask=rmask)
        else:
            s = s + madd
            tl.store(out_ptr + rows, s.to(out_ptr.dtype.element_ty), mask=rmask)
        if CONFLICT > 0:
            mixed = (c_pos > 0) & (c_neg > 0)
            if CONFLICT == 2:
                mixed = mixed & (tl.abs(acc) / (c_abs + 1e-8) < tau)
            tl.store(keep_ptr + rows, tl.where(mixed, 0, 1).to(tl.uint8), mask=rmask)
    tl.store(bad_ptr + g, tl.sum(n_bad, axis=0))


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def group_zscore(s, offsets, *, eps, correction, identity, loo):
    """Each group's scores ``s`` (float64, NaN = no score) standardised inside the group as
    stage 1 standardises one reward (DESIGN.md section 2b's raw-reward order), with torch
    segment sums over the ``offsets``: ``(s - mu) / (sigma + eps)`` in the overflow-free
    form ``(u - mean u) / (sd u + eps / span)``, ``u = (s - min) / (max - min)``."""
    import torch

    n_groups = offsets.numel() - 1
    sizes = offsets[1:] - offsets[:-1]
    gid = torch.repeat_interleave(torch.arange(n_groups, device=s.device), sizes)
    present = s == s
    sp = torch.where(present, s, 0.0)

    def seg(v, how="sum"):
        if how == "sum":
            return torch.zeros(n_groups, dtype=v.dtype, device=v.device).index_add_(0, gid, v)
        fill = float("inf") if how == "amin" else float("-inf")
        init = torch.full((n_groups,), fill, dtype=v.dtype, device=v.device)
        return init.scatter_reduce_(0, gid, v, reduce=how, include_self=True)

    n = seg(present.to(s.dtype))
    lo = seg(torch.where(present, s, float("inf")), "amin")
    hi = seg(torch.where(present, s, float("-inf")), "amax")
    signal = (hi > lo) & (n - correction > 0)
    span = torch.where(signal, hi - lo, 1.0)
    u = torch.where(present, (sp - torch.where(signal, lo, 0.0)[gid]) / span[gid], 0.0)
    mean_u = seg(u) / torch.clamp(n, min=1.0)
    d = torch.where(present, u - mean_u[gid], 0.0)
    nd = n - correction
    sd = torch.sqrt(seg(d * d) / torch.where(nd > 0, nd, 1.0))
    fac = 1.0 / (sd + eps / span)
    if loo:
        fac = fac * n / (torch.clamp(n, min=2.0) - 1.0)
    z = d * torch.where(signal, fac, 0.0)[gid]
    if identity:
        z = torch.where((n == 1)[gid] & present, s / (1.0 + eps), z)
    return torch.where(present, z, float("nan"))


def stage12_triton(
    r,
    offsets,
    w,
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
    max_group: int | None = None,
    block_r: int | None = None,
    block_k: int | None = None,
):
    """``(S, per-group count of reward blocks holding +-inf, keep)``; torch tensors on one
    device. ``conflict`` 1 ("hard") or 2 ("snr", threshold ``tau``) runs GD²PO's test in
    the same pass: ``keep`` (uint8) is 0 for a dropped row, 1 otherwise. ``mult_cols`` /
    ``mult_lams`` add ``sum_c lam_c Z_ic`` (a sum across reward blocks); ``raw`` runs the
    raw-reward order (the reducer over the raw rewards in the pass, then the O(N) group
    z-score of the scores with torch segment sums, :func:`group_zscore`).

    float32 input is computed in float32, except with ``conflict`` (the test reads float64
    Z, so that float32 and float64 copies of the same values drop the same rows) or ``raw``
    (float64 sums for the scores): then in float64; the result is float32 either way.

    ``block_r`` / ``block_k`` override the tile shape (tests use them to reach the
    multi-block paths with small inputs).
    """
    import torch

    if int(code) not in TRITON_CODES:
        raise ValueError(
            f"the Triton kernel has no reducer code {code!r} (it runs {sorted(TRITON_CODES)}; "
            "CVaR is an order statistic that cannot be merged across reward blocks)"
        )
    if r.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        r = r.to(torch.float32)
    if r.stride(1) != 1:
        r = r.contiguous()
    n_rows, n_rew = r.shape
    offsets = offsets.to(device=r.device, dtype=torch.int64).contiguous()
    wide = r.dtype == torch.float64 or conflict > 0 or raw
    cdt = torch.float64 if wide else torch.float32
    w = w.to(device=r.device, dtype=cdt)
    lam = torch.zeros(max(n_rew, 1), dtype=torch.float64)
    for c, v in zip(mult_cols, mult_lams, strict=True):
        lam[int(c)] += float(v)
    lam = lam.to(device=r.device, dtype=cdt)
    n_groups = offsets.numel() - 1
    acc = tl.float64 if wide else tl.float32
    out = torch.empty(
        n_rows, device=r.device, dtype=torch.float64 if r.dtype == torch.float64 else torch.float32
    )
    bad = torch.zeros(max(n_groups, 1), device=r.device, dtype=torch.int32)
    keep = torch.ones(n_rows, device=r.device, dtype=torch.uint8)
    if n_groups == 0 or n_rows == 0:
        return out, bad, keep
    side = torch.empty(n_rows if raw else 1, device=r.device, dtype=torch.float64)
    s_raw = torch.empty(n_rows, device=r.device, dtype=torch.float64) if raw else out
    if max_group is None:
        max_group = int((offsets[1:] - offsets[:-1]).max())
    bk = block_k or min(_next_pow2(max(n_rew, 1)), 64)
    br = block_r or max(1, min(_next_pow2(max_group), 256, 4096 // bk))
    _stage12_kernel[(n_groups,)](
        r,
        offsets,
        w,
        lam,
        s_raw,
        side,
        bad,
        keep,
        n_rew,
        r.stride(0),
        float(slots[0]),
        float(slots[1]),
        float(eps),
        float(correction),
        float(tau),
        METHOD=int(code),
        CONFLICT=int(conflict),
        IDENTITY=bool(identity),
        LOO=bool(loo),
        RAW=bool(raw),
        MULT=len(mult_cols) > 0,
        BLOCK_R=br,
        BLOCK_K=bk,
        ACC=acc,
    )
    if raw:
        z = group_zscore(
            s_raw, offsets, eps=float(eps), correction=float(correction), identity=identity, loo=loo
        )
        out.copy_(z + side)
    return out, bad, keep
