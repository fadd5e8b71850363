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

import importlib.util
import logging
import math
import os
import sys
import warnings
from typing import Any

import numpy as np

from rewardagg._src.namespace import is_torch

__all__ = [
    "AUTO_NUMBA_MIN_ELEMENTS",
    "BACKENDS",
    "CONFLICT_BACKENDS",
    "FUSED_BACKENDS",
    "CompileWarning",
    "available_backends",
    "fused_methods",
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

log = logging.getLogger("rewardagg.kernels")


def fused_methods() -> tuple[str, ...]:
    """Names of the registered methods with a fused kernel (a ``fused_code`` in the table)."""
    from rewardagg._src.registry import _REGISTRY

    return tuple(name for name, a in _REGISTRY.items() if a.fused_code is not None)


class CompileWarning(UserWarning):
    """A kernel call spent more than a second compiling or loading compiled code."""


def _fused_backends(agg: Any) -> tuple[str, ...]:
    return agg.fused_backends if agg.fused_code is not None else ()


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
    from rewardagg._src.normalisation import check_stage_options

    check_stage_options(eps, correction, singleton, baseline)
    for name, val in (("eps", eps), ("correction", correction)):
        if not math.isfinite(val):
            raise ValueError(f"{name} must be a finite non-negative number; got {val!r}")
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


def stage12(
    rewards: Any,
    offsets: Any,
    *,
    weights: Any,
    method: str,
    eps: float = 1e-6,
    correction: float = 1,
    singleton: str = "zero",
    baseline: str = "mean",
    backend: str = "auto",
    validate: bool = True,
    conflict: str | None = None,
    conflict_threshold: float = 0.8,
    return_keep: bool = False,
    **params: Any,
) -> Any:
    r"""Stages 1-2 of DESIGN.md in one pass: the per-row score :math:`S` of sorted rows.

    .. math::

        Z_{ik} = \frac{R_{ik} - \mu_{g(i)k}}{\sigma_{g(i)k} + \varepsilon}, \qquad
        S_i = \operatorname{agg}_k(Z_{ik};\ v_{ik} = w_k / \textstyle\sum_{k \in P_i} w_k)

    Args:
        rewards: ``(N, K)`` float numpy array or torch tensor (float16/bfloat16 are read as
            float32); rows sorted so that group ``g`` is ``rewards[offsets[g]:offsets[g+1]]``;
            NaN = missing.
        offsets: ``(n_groups + 1,)`` integers from 0 to N (contiguous groups of ``G`` rows:
            ``arange(0, N + 1, G)``).
        weights: ``(K,)`` non-negative weights :math:`w` (a reward with weight 0 is ignored
            in stage 2).
        method: a z-score method of :func:`rewardagg.available_methods` (its entry in the
            method table); the fused backends run those of :func:`fused_methods`.
        eps, correction, singleton, baseline: as :func:`rewardagg.group_standardize`.
        backend: ``"auto"``, ``"numpy"``, ``"torch"``, ``"numba"`` or ``"triton"``.
        validate: raise :class:`ValueError` when a reward is infinite (the check is fused
            into the pass); ``False`` lets infinities propagate as NaN.
        conflict: GD²PO's conflict test per row, ``"hard"`` or ``"snr"`` (DESIGN.md
            section 2c), in the same pass; its verdict comes back with ``return_keep``.
        conflict_threshold: the ``"snr"`` threshold :math:`\tau \in [0, 1]`.
        return_keep: also return ``keep`` ``(N,)`` boolean (numpy): ``False`` for a row
            the conflict filter drops.
        **params: the method's parameters (``kappa=`` for softmin, ``lam=`` for
            mean_variance), validated as :func:`rewardagg.advantages` does.

    Returns:
        ``S`` ``(N,)`` in the input's library and device, float64 for float64 input and
        float32 otherwise, in the sorted row order; NaN for a row without a present
        positive-weight reward. With ``return_keep=True``: ``(S, keep)``.
    """
    from rewardagg._src.registry import get_aggregator

    agg = get_aggregator(method)
    if agg.kind != "standardized":
        raise ValueError(f"method {method!r} is not a z-score method (stages 1-2)")
    agg.check_order("normalize_then_reduce")  # stages 1-2 reduce z-scores
    bound = agg.bind(params)
    if agg.limits is not None and (limit := agg.limits(bound)) is not None:
        agg, bound = get_aggregator(limit[0]), limit[1]
    off, w = _check(rewards, offsets, weights, eps, correction, singleton, baseline)
    if backend in FUSED_BACKENDS and backend not in _fused_backends(agg):
        if agg.fused_code is None:
            raise ValueError(
                f"backend={backend!r} runs the methods with a fused kernel "
                f"({', '.join(fused_methods())}); method {method!r} needs backend='numpy' "
                "or 'torch'"
            )
        raise ValueError(
            f"backend={backend!r} has no kernel for method {method!r}: its reduction is an "
            "order statistic that cannot be merged across reward blocks; use "
            "backend='auto', 'numpy' or 'torch'"
        )
    filt = _conflict_filter(agg, conflict, conflict_threshold)
    if filt is not None and backend in FUSED_BACKENDS and backend not in CONFLICT_BACKENDS:
        raise ValueError(
            f"backend={backend!r} has no conflict filter yet (the numba pass and the array "
            "path have it); use backend='auto', 'numba', 'numpy' or 'torch'"
        )
    name = resolve_backend(rewards, backend)
    if name in FUSED_BACKENDS and (
        name not in _fused_backends(agg) or (filt is not None and name not in CONFLICT_BACKENDS)
    ):  # "auto": the array path in the input's library
        name = "torch" if is_torch(rewards) else "numpy"
    stage1 = dict(eps=float(eps), correction=float(correction))
    opts = dict(singleton=singleton, baseline=baseline, validate=validate, filt=filt)
    s, bad, keep = _RUNNERS[name](rewards, off, w, agg, bound, stage1, **opts)
    if validate and bad:
        _raise_inf(rewards)
    return (s, keep) if return_keep else s


def _conflict_filter(agg: Any, conflict: Any, threshold: Any) -> Any:
    from rewardagg._src.conflict import check_conflict

    return check_conflict(agg, conflict, threshold, True, "normalize_then_reduce")


def _run_array(rewards, off, w, agg, params, stage1, *, singleton, baseline, validate, filt, lib):
    """The core's array path (stage 1 by cells, then the table's reducer), on sorted rows."""
    from rewardagg._src.aggregators import row_weights
    from rewardagg._src.conflict import conflict_rows
    from rewardagg._src.grouping import make_layout
    from rewardagg._src.namespace import ops_for
    from rewardagg._src.normalisation import standardize_sorted

    x = rewards
    to_numpy = lib == "torch" and not is_torch(x)
    if to_numpy:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(x))
    ops = ops_for(x)
    x = ops.asarray(x, like=x)
    if ops.name == "torch":
        x = x.detach()
        if x.dtype not in (ops.torch.float32, ops.torch.float64):
            x = x.to(ops.torch.float32)
    elif x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    keep = np.ones(int(x.shape[0]), dtype=bool)
    inf = ops.isinf(x)
    n_inf = int(inf.sum())
    if n_inf:  # validate=False: a cell holding +-inf has no score (NaN rows below)
        x = ops.where(inf, ops.nan, x)
    missing = ops.isnan(x)
    missing = missing if ops.any(missing) else None
    groups = np.repeat(np.arange(off.size - 1), np.diff(off))
    layout = make_layout(int(x.shape[0]), group_ids=groups) if off.size > 1 else None
    with np.errstate(all="ignore"):
        if layout is None or x.shape[0] == 0:
            s = ops.full((int(x.shape[0]),), ops.nan, like=x)
        else:
            xs = layout.sort_rows(x, ops)
            ms = None if missing is None else layout.sort_rows(missing, ops)
            z, _ = standardize_sorted(
                xs, ms, layout, ops, singleton=singleton, baseline=baseline, **stage1
            )
            rw = row_weights(z, w, ops, ms)
            s = layout.unsort_rows(agg.kernel(z, rw, ops, **params), ops)
            if filt is not None:
                drop = layout.unsort_rows(conflict_rows(z, rw, ops, filt)[0], ops)
                keep = ~np.asarray(ops.to_numpy(drop), dtype=bool)
    if n_inf:
        bad_groups = np.zeros(off.size - 1)
        np.add.at(bad_groups, groups, ops.to_numpy(inf).any(1))
        s = ops.where(ops.bool_like(bad_groups[groups] > 0, s), ops.nan, s)
    if to_numpy:
        s = s.numpy()
    return s, n_inf, keep


def _run_numba(rewards, off, w, agg, params, stage1, *, singleton, baseline, validate, filt):
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
    code, slots = agg.fused_args(params)
    first = not numba_kernel.is_warm(x.dtype.name)
    s, bad, keep = numba_kernel.stage12_numba(
        x,
        off,
        w,
        code=code,
        slots=slots,
        identity=singleton == "identity",
        loo=baseline == "leave_one_out",
        conflict=0 if filt is None else 1 + ("hard", "snr").index(filt.mode),
        tau=0.8 if filt is None else filt.tau,
        **stage1,
    )
    if first:
        _report_compile(x.dtype.name, numba_kernel.last_first_call_seconds.get(x.dtype.name, 0.0))
    if is_t:
        import torch

        s = torch.from_numpy(s).to(rewards.device)
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


def _run_triton(rewards, off, w, agg, params, stage1, *, singleton, baseline, validate, filt):
    import torch

    from rewardagg.kernels.triton_kernel import stage12_triton

    code, slots = agg.fused_args(params)
    max_group = int(np.max(np.diff(off))) if off.size > 1 else 1
    with torch.no_grad():
        s, bad_groups, keep = stage12_triton(
            rewards.detach(),
            torch.from_numpy(off),
            torch.from_numpy(w),
            code=code,
            slots=slots,
            identity=singleton == "identity",
            loo=baseline == "leave_one_out",
            conflict=0 if filt is None else 1 + ("hard", "snr").index(filt.mode),
            tau=0.8 if filt is None else filt.tau,
            max_group=max_group,
            **stage1,
        )
    return s, (int(bad_groups.sum()) if validate else 0), keep.cpu().numpy().astype(bool)


_RUNNERS = {
    "numpy": lambda *a, **k: _run_array(*a, lib="numpy", **k),
    "torch": lambda *a, **k: _run_array(*a, lib="torch", **k),
    "numba": _run_numba,
    "triton": _run_triton,
}
"""Backend name -> runner ``(rewards, offsets, weights, entry, params, stage1, **options)``
returning ``(S, number of infinite rewards or bad cells, keep)``."""


def warmup(dtypes: tuple[str, ...] = ("float32", "float64")) -> dict[str, float]:
    """Compile or load the numba kernels now (no-op without numba); seconds per dtype."""
    if not _has("numba"):
        return {}
    from rewardagg.kernels import numba_kernel

    return numba_kernel.warmup(dtypes)
