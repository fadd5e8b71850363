r"""Fused kernels for stages 1-2 (group z-score per reward, then the reward-axis reducer).

:func:`stage12` takes rows already sorted by group (``offsets``) and runs one backend:

============ ======================================= ===========================================
backend      runs on                                 needs
============ ======================================= ===========================================
``"numpy"``  numpy arrays                            nothing (the core's array path)
``"torch"``  torch tensors, any device               torch (the core's array path)
``"numba"``  numpy arrays, CPU tensors               numba (the ``fast`` extra); one compiled
                                                     pass, parallel over groups, cached on disk
``"triton"`` CUDA tensors (CPU under                 triton + torch; one fused pass
             ``TRITON_INTERPRET=1``)
============ ======================================= ===========================================

``backend="auto"`` picks Triton for CUDA tensors, numba for CPU inputs of at least
:data:`AUTO_NUMBA_MIN_ELEMENTS` rewards (by size only, never by what ran before), and the
core's array path otherwise; it never fails because numba, triton or CUDA is missing. Naming a
backend that cannot run raises :class:`RuntimeError` (missing package) or
:class:`ValueError` (wrong input), saying why. numba, triton and torch are imported only
when a backend needs them.

The first numba call of a process loads its compiled code from the on-disk cache (about
0.5 s) or, the very first time, compiles it (about 5 s); that call logs its time on the
``rewardagg.kernels`` logger and warns when it took over a second. Small inputs never
trigger it under ``"auto"``; :func:`warmup` does it up front.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import os
import sys
import warnings
from typing import Any

import numpy as np

from rewardagg.kernels.codes import RAW_ONLY, FusedCode

__all__ = [
    "AUTO_NUMBA_MIN_ELEMENTS",
    "BACKENDS",
    "CONFLICT_BACKENDS",
    "FUSED_BACKENDS",
    "ORDERS",
    "CompileWarning",
    "FusedCode",
    "available_backends",
    "fused_methods",
    "fused_scores",
    "resolve_backend",
    "stage12",
    "warmup",
]

BACKENDS = ("auto", "numpy", "torch", "numba", "triton")
FUSED_BACKENDS = ("numba", "triton")
CONFLICT_BACKENDS = ("numba", "triton")
"""Fused backends with the GD²PO conflict filter in their pass."""
AUTO_NUMBA_MIN_ELEMENTS = 1 << 15
"""``"auto"`` uses numba on CPU from this many rewards (N * K) on."""

ORDERS = ("normalize_then_reduce", "reduce_then_normalize")
"""Stage orders of :func:`fused_scores` (DESIGN.md section 2b)."""
TRITON_CODES = frozenset(FusedCode) - {FusedCode.CVAR}
"""Codes the Triton pass runs: it merges reward blocks online, which an order statistic
(CVaR's quantile) cannot."""
SINGLETONS = ("zero", "identity")
BASELINES = ("mean", "leave_one_out")

log = logging.getLogger("rewardagg.kernels")


def __getattr__(name: str) -> Any:
    # The by-name conveniences read the method table: they live in rewardagg.kernels.named,
    # a layer above both the kernels and rewardagg._src (which never imports it).
    if name in ("stage12", "fused_methods"):
        from rewardagg.kernels import named

        return getattr(named, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class CompileWarning(UserWarning):
    """A kernel call spent more than a second compiling or loading compiled code."""


def _has(module: str) -> bool:
    if module in sys.modules:  # None there means "blocked": not available
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available_backends(rewards: Any = None) -> tuple[str, ...]:
    """Backends that can run here (for ``rewards`` when given), fastest first."""
    names = []
    is_t = is_torch(rewards)
    cuda = is_t and rewards.device.type == "cuda"
    triton_ok = cuda or rewards is None or (is_t and _interpreting())
    if triton_ok and _has("triton") and _has("torch"):
        names.append("triton")
    if not cuda and _has("numba"):
        names.append("numba")
    if _has("torch") and (rewards is None or is_t):
        names.append("torch")
    if rewards is None or isinstance(rewards, np.ndarray):
        names.append("numpy")
    return tuple(names)


def _auto(rewards: Any, device: str) -> str:
    if device == "cuda":
        return "triton" if _has("triton") else "torch"
    if device != "cpu":
        return "torch"
    big = int(np.prod(rewards.shape)) >= AUTO_NUMBA_MIN_ELEMENTS
    if _has("numba") and big:  # by size only: the same input takes the same path always
        return "numba"
    return "torch" if is_torch(rewards) else "numpy"


def _why_not_numpy(rewards: Any, device: str) -> Exception | None:
    if is_torch(rewards):
        return ValueError(
            "backend='numpy' takes numpy arrays; got a torch tensor (use backend='torch' or 'auto')"
        )
    return None


def _why_not_torch(rewards: Any, device: str) -> Exception | None:
    if not _has("torch"):
        return RuntimeError("backend='torch' needs PyTorch: pip install torch")
    return None


def _why_not_numba(rewards: Any, device: str) -> Exception | None:
    if not _has("numba"):
        return RuntimeError("backend='numba' needs numba: pip install 'rewardagg[fast]'")
    if device != "cpu":
        return ValueError(f"backend='numba' runs on the CPU; got a tensor on {device!r}")
    return None


def _why_not_triton(rewards: Any, device: str) -> Exception | None:
    if not (_has("triton") and _has("torch")):
        return RuntimeError(
            "backend='triton' needs triton and torch: pip install 'rewardagg[triton]'"
        )
    if not is_torch(rewards):
        return ValueError(f"backend='triton' takes torch tensors; got {type(rewards).__name__}")
    if device != "cuda" and not (device == "cpu" and _interpreting()):
        return ValueError(
            f"backend='triton' needs a CUDA tensor; got one on {device!r} "
            "(CPU tensors only under TRITON_INTERPRET=1)"
        )
    return None


_REQUIREMENTS = {
    "numpy": _why_not_numpy,
    "torch": _why_not_torch,
    "numba": _why_not_numba,
    "triton": _why_not_triton,
}


def resolve_backend(rewards: Any, backend: str = "auto") -> str:
    """The backend :func:`stage12` runs for ``rewards``; raises when an explicit one cannot."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    device = rewards.device.type if is_torch(rewards) else "cpu"
    if backend == "auto":
        return _auto(rewards, device)
    err = _REQUIREMENTS[backend](rewards, device)
    if err is not None:
        raise err
    return backend


def _check(rewards, offsets, weights, eps, correction, singleton, baseline):
    for name, val in (("eps", eps), ("correction", correction)):
        if isinstance(val, bool) or not isinstance(val, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a real number; got {val!r}")
        if not (math.isfinite(val) and val >= 0):
            raise ValueError(f"{name} must be a finite non-negative number; got {val!r}")
    for name, val, choices in (
        ("singleton", singleton, SINGLETONS),
        ("baseline", baseline, BASELINES),
    ):
        if val not in choices:
            raise ValueError(f"{name} must be one of {choices}; got {val!r}")
    if len(rewards.shape) != 2:
        raise ValueError(f"rewards must be 2-D (N, K); got shape {tuple(rewards.shape)}")
    n_rows, n_rew = (int(s) for s in rewards.shape)
    kind = str(rewards.dtype)
    if not any(t in kind for t in ("float16", "float32", "float64")):
        raise TypeError(f"rewards must be a float array; got dtype {rewards.dtype}")
    off = np.asarray(offsets.cpu() if is_torch(offsets) else offsets)
    if off.ndim != 1 or off.size < 1 or not np.issubdtype(off.dtype, np.integer):
        raise ValueError(f"offsets must be a 1-D integer array; got {off.dtype} {off.shape}")
    if off[0] != 0 or off[-1] != n_rows or np.any(np.diff(off) < 0):
        raise ValueError(f"offsets must rise from 0 to N={n_rows}; got {off[:3]}...{off[-3:]}")
    w = np.asarray(weights.detach().cpu() if is_torch(weights) else weights, dtype=np.float64)
    if w.shape != (n_rew,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be {n_rew} finite non-negative numbers; got {w!r}")
    return off.astype(np.int64, copy=False), w


def _raise_inf(rewards) -> None:
    x = rewards.detach().float().cpu().numpy() if is_torch(rewards) else np.asarray(rewards)
    where = np.argwhere(np.isinf(x))
    n = len(where)
    i, k = (int(v) for v in where[0]) if n else (-1, -1)
    raise ValueError(
        f"rewards must be finite or NaN (missing); found {n} infinite value(s), "
        f"the first at sorted row {i}, reward {k}"
    )


def fused_scores(
    x_sorted: Any,
    offsets: Any,
    *,
    code: FusedCode | int,
    p0: float = 0.0,
    p1: float = 0.0,
    weights: Any,
    eps: float,
    correction: float,
    singleton: str,
    baseline: str,
    order: str = "normalize_then_reduce",
    mult_cols: tuple[int, ...] = (),
    mult_lams: tuple[float, ...] = (),
    conflict: str | None = None,
    conflict_threshold: float = 0.8,
    backend: str,
) -> tuple[Any, np.ndarray | None]:
    r"""Stages 1-2 of DESIGN.md in one fused pass, from a reducer code: the score :math:`S`
    of rows sorted by group, before stage 3 and before GD²PO's group reweighting.

    .. math::

        Z_{ik} = \frac{R_{ik} - \mu_{g(i)k}}{\sigma_{g(i)k} + \varepsilon}, \qquad
        S_i = b_i + \sum_c \lambda_c Z_{ic} \quad (Z_{ic} := 0 \text{ where missing})

    with the base score :math:`b_i = \operatorname{red}_k(Z_{ik}; v_{ik})` for
    ``order="normalize_then_reduce"``, and for ``order="reduce_then_normalize"`` the
    reducer over the row's raw rewards, :math:`s_i = \operatorname{red}_k(R_{ik}; v_{ik})`,
    standardised inside its group exactly as stage 1 standardises one reward (same
    ``eps``/``correction``/``singleton``/``baseline``; a group whose scores are all equal,
    or that has too few, gives 0); :math:`v_{ik} = w_k / \sum_{k \in P_i} w_k` over the
    row's present rewards :math:`P_i` with :math:`w_k > 0`.

    The conflict test (DESIGN.md section 2c) is evaluated on :math:`Z` computed in float64
    from the input values whatever the input dtype, so float32 and float64 copies of the
    same float32 values drop the same rows: with :math:`t_{ik} = w_k Z^{(64)}_{ik}` over
    :math:`P_i`, a row is *mixed* when some :math:`t_{ik} > 10^{-8}` and some
    :math:`t_{ik} < -10^{-8}`; ``"hard"`` drops every mixed row, ``"snr"`` a mixed row
    with :math:`|\sum_k t_{ik}| / (\sum_k |t_{ik}| + 10^{-8}) < \tau`.

    Args:
        x_sorted: ``(N, K)`` float numpy array or torch tensor (float16/bfloat16 are read as
            float32), rows sorted so that group ``g`` is ``x_sorted[offsets[g]:offsets[g+1]]``;
            NaN = missing. ``+-inf`` is a :class:`ValueError`.
        offsets: ``(n_groups + 1,)`` integers rising from 0 to N.
        code: the reducer, a :class:`FusedCode`; ``p0``, ``p1``: its parameter slots
            (softmin's ``kappa``, mean_variance's ``lam``, CVaR's ``alpha``, power_mean's
            ``p``).
        weights: ``(K,)`` finite non-negative weights.
        eps, correction, singleton, baseline: stage 1's options, as
            :func:`rewardagg.group_standardize` (``singleton`` ``"zero"``/``"identity"``,
            ``baseline`` ``"mean"``/``"leave_one_out"``).
        order: ``"normalize_then_reduce"`` or ``"reduce_then_normalize"``; the power mean
            runs in the second only, on non-negative rewards.
        mult_cols, mult_lams: the constrained columns and their multipliers
            :math:`\lambda_c` (a column may repeat: its terms add up).
        conflict: ``None``, ``"hard"`` or ``"snr"`` (order ``"normalize_then_reduce"``).
        conflict_threshold: the ``"snr"`` threshold :math:`\tau \in [0, 1]`.
        backend: ``"numba"`` (numpy arrays and CPU tensors) or ``"triton"`` (CUDA tensors;
            CPU tensors under ``TRITON_INTERPRET=1``). Triton has no CVaR (an order
            statistic cannot be merged across its reward blocks).

    Returns:
        ``(S, keep)``: ``S`` ``(N,)`` in the input's library and device, float64 for
        float64 input and float32 otherwise, sorted row order, NaN for a row without a
        present positive-weight reward; ``keep`` a numpy bool array ``(N,)`` (``False``:
        the conflict filter drops the row; ``True`` for rows without a score) when
        ``conflict`` is given, else ``None``.

    Raises:
        ValueError: an unknown code or option, a backend that cannot run the call (saying
            why), bad offsets/weights/multipliers, an infinite reward.
        RuntimeError: the backend's package is not installed.
    """
    job = _job(
        x_sorted,
        offsets,
        code=code,
        p0=p0,
        p1=p1,
        weights=weights,
        eps=eps,
        correction=correction,
        singleton=singleton,
        baseline=baseline,
        order=order,
        mult_cols=mult_cols,
        mult_lams=mult_lams,
        conflict=conflict,
        conflict_threshold=conflict_threshold,
        backend=backend,
    )
    s, bad, keep = _run_fused(x_sorted, job)
    if bad:
        _raise_inf(x_sorted)
    return s, (keep if conflict is not None else None)


@dataclasses.dataclass(frozen=True)
class _Job:
    """The validated, plain arguments of one fused pass (no method names: codes only)."""

    backend: str
    code: int
    slots: tuple[float, ...]
    off: np.ndarray
    w: np.ndarray
    eps: float
    correction: float
    identity: bool
    loo: bool
    raw: bool
    mult_cols: tuple[int, ...]
    mult_lams: tuple[float, ...]
    cmode: int
    tau: float


def _job(
    x_sorted,
    offsets,
    *,
    code,
    p0,
    p1,
    weights,
    eps,
    correction,
    singleton,
    baseline,
    order,
    mult_cols,
    mult_lams,
    conflict,
    conflict_threshold,
    backend,
) -> _Job:
    if backend not in FUSED_BACKENDS:
        raise ValueError(f"backend must be one of {FUSED_BACKENDS}; got {backend!r}")
    try:
        fcode = FusedCode(int(code))
    except (TypeError, ValueError):
        raise ValueError(
            f"code must be a FusedCode ({', '.join(f'{c.name}={c.value}' for c in FusedCode)}); "
            f"got {code!r}"
        ) from None
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}; got {order!r}")
    raw = order == "reduce_then_normalize"
    if fcode in RAW_ONLY and not raw:
        raise ValueError(
            f"code {fcode.name} is defined for non-negative raw rewards only: it needs "
            "order='reduce_then_normalize'"
        )
    slots = (float(p0), float(p1))
    off, w = _check(x_sorted, offsets, weights, eps, correction, singleton, baseline)
    n_rew = int(x_sorted.shape[1])
    cols = tuple(int(c) for c in mult_cols)
    lams = tuple(float(v) for v in mult_lams)
    if len(cols) != len(lams):
        raise ValueError(
            f"mult_cols and mult_lams must have the same length; got {len(cols)} and {len(lams)}"
        )
    if any(not 0 <= c < n_rew for c in cols) or not all(math.isfinite(v) for v in lams):
        raise ValueError(
            f"mult_cols must be columns in [0, {n_rew}) and mult_lams finite numbers; "
            f"got {cols} and {lams}"
        )
    if conflict not in (None, "hard", "snr"):
        raise ValueError(f"conflict must be None, 'hard' or 'snr'; got {conflict!r}")
    tau = float(conflict_threshold)
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"conflict_threshold must be in [0, 1]; got {conflict_threshold!r}")
    if conflict is not None and raw:
        raise ValueError(
            f"conflict={conflict!r} compares per-reward advantages (group z-scores); "
            "order='reduce_then_normalize' reduces the raw rewards instead"
        )
    name = resolve_backend(x_sorted, backend)
    if name == "triton" and fcode not in TRITON_CODES:
        raise ValueError(
            f"backend='triton' has no kernel for code {fcode.name}: its reduction is an order "
            "statistic that cannot be merged across reward blocks; use backend='numba' or "
            "the array path"
        )
    return _Job(
        backend=name,
        code=int(fcode),
        slots=slots,
        off=off,
        w=w,
        eps=float(eps),
        correction=float(correction),
        identity=singleton == "identity",
        loo=baseline == "leave_one_out",
        raw=raw,
        mult_cols=cols,
        mult_lams=lams,
        cmode=0 if conflict is None else 1 + ("hard", "snr").index(conflict),
        tau=tau,
    )


def _run_fused(rewards: Any, job: _Job) -> tuple[Any, int, np.ndarray]:
    """``(S, number of infinite rewards or bad cells, keep)`` of a validated job."""
    return (_run_numba if job.backend == "numba" else _run_triton)(rewards, job)


def _run_numba(rewards: Any, job: _Job) -> tuple[Any, int, np.ndarray]:
    from rewardagg.kernels import numba_kernel

    is_t = is_torch(rewards)
    if is_t:
        import torch

        x = rewards.detach()
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float32)
        x = x.contiguous().numpy()
    else:
        x = np.asarray(rewards)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float32)
    wide = x.dtype == np.float64 or job.cmode > 0
    key = numba_kernel._key(x.dtype, np.dtype(np.float64) if wide else x.dtype)
    first = not numba_kernel.is_warm(key)
    s_np, bad, keep = numba_kernel.stage12_numba(
        x,
        job.off,
        job.w,
        code=job.code,
        slots=job.slots,
        eps=job.eps,
        correction=job.correction,
        identity=job.identity,
        loo=job.loo,
        conflict=job.cmode,
        tau=job.tau,
        raw=job.raw,
        mult_cols=job.mult_cols,
        mult_lams=job.mult_lams,
    )
    if first:
        _report_compile(key, numba_kernel.last_first_call_seconds.get(key, 0.0))
    s: Any = s_np
    if is_t:
        import torch

        s = torch.from_numpy(s_np).to(rewards.device)
    return s, bad, keep.astype(bool)


def _report_compile(dtype: str, secs: float) -> None:
    log.info("numba kernel for %s ready in %.2f s", dtype, secs)
    if secs > 1.0:
        warnings.warn(
            f"rewardagg: the numba kernel for {dtype} took {secs:.1f} s to compile (once per "
            "machine; later processes load it from the on-disk cache). Call "
            "rewardagg.kernels.warmup() at start-up to pay it early.",
            CompileWarning,
            stacklevel=4,
        )


def _run_triton(rewards: Any, job: _Job) -> tuple[Any, int, np.ndarray]:
    import torch

    from rewardagg.kernels.triton_kernel import stage12_triton

    off = job.off
    max_group = int(np.max(np.diff(off))) if off.size > 1 else 1
    with torch.no_grad():
        s, bad_groups, keep = stage12_triton(
            rewards.detach(),
            torch.from_numpy(off),
            torch.from_numpy(job.w),
            code=job.code,
            slots=job.slots,
            eps=job.eps,
            correction=job.correction,
            identity=job.identity,
            loo=job.loo,
            conflict=job.cmode,
            tau=job.tau,
            raw=job.raw,
            mult_cols=job.mult_cols,
            mult_lams=job.mult_lams,
            max_group=max_group,
        )
    return s, int(bad_groups.sum()), keep.cpu().numpy().astype(bool)


def warmup(dtypes: tuple[str, ...] = ("float32", "float64")) -> dict[str, float]:
    """Compile or load the numba kernels now (no-op without numba); seconds per dtype."""
    if not _has("numba"):
        return {}
    from rewardagg.kernels import numba_kernel

    return numba_kernel.warmup(dtypes)
