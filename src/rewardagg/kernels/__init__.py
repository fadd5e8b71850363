r"""Fused kernels for stages 1-2 (group z-score per reward, then the reward-axis reducer).

:func:`stage12` takes rows already sorted by group (``offsets``) and runs one backend:

============ ======================================= ===========================================
backend      runs on                                 needs
============ ======================================= ===========================================
``"numpy"``  numpy arrays                            nothing (the reference, in numpy)
``"torch"``  torch tensors, any device               torch (:mod:`.reference`, the spec)
``"numba"``  numpy arrays, CPU tensors               numba (the ``fast`` extra); one compiled
                                                     pass, parallel over groups, cached on disk
``"triton"`` CUDA tensors (CPU under                 triton + torch; one fused pass
             ``TRITON_INTERPRET=1``)
============ ======================================= ===========================================

``backend="auto"`` picks Triton for CUDA tensors, numba for CPU inputs of at least
:data:`AUTO_NUMBA_MIN_ELEMENTS` rewards (or once numba is compiled in this process), and the
reference otherwise; it never fails because numba, triton or CUDA is missing. Naming a
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
import numbers
import os
import sys
import warnings
from typing import Any

import numpy as np

__all__ = [
    "AUTO_NUMBA_MIN_ELEMENTS",
    "BACKENDS",
    "METHODS",
    "CompileWarning",
    "available_backends",
    "resolve_backend",
    "stage12",
    "warmup",
]

METHODS = ("weighted_sum", "weighted_mean", "softmin", "mean_variance", "weighted_min")
BACKENDS = ("auto", "numpy", "torch", "numba", "triton")
AUTO_NUMBA_MIN_ELEMENTS = 1 << 15
"""``"auto"`` uses numba on CPU from this many rewards (N * K) on (or once it is warm)."""

log = logging.getLogger("rewardagg.kernels")


class CompileWarning(UserWarning):
    """A kernel call spent more than a second compiling or loading compiled code."""


def _has(module: str) -> bool:
    if module in sys.modules:  # None there means "blocked": not available
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available_backends(rewards: Any = None) -> tuple[str, ...]:
    """Backends that can run here (for ``rewards`` when given), fastest first."""
    names = []
    is_t = _is_torch(rewards)
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


def _numba_warm(dtype_name: str) -> bool:
    mod = sys.modules.get("rewardagg.kernels.numba_kernel")
    return mod is not None and mod.is_warm(dtype_name)


def resolve_backend(rewards: Any, backend: str = "auto") -> str:
    """The backend :func:`stage12` runs for ``rewards``; raises when an explicit one cannot."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    is_t = _is_torch(rewards)
    device = rewards.device.type if is_t else "cpu"
    if backend == "auto":
        if device == "cuda":
            return "triton" if _has("triton") else "torch"
        if device != "cpu":
            return "torch"
        dt = "float64" if str(rewards.dtype).endswith("float64") else "float32"
        big = int(np.prod(rewards.shape)) >= AUTO_NUMBA_MIN_ELEMENTS
        if _has("numba") and (big or _numba_warm(dt)):
            return "numba"
        return "torch" if is_t else "numpy"
    if backend == "numpy":
        if is_t:
            raise ValueError(
                "backend='numpy' takes numpy arrays; got a torch tensor "
                "(use backend='torch' or 'auto')"
            )
    elif backend == "torch":
        if not _has("torch"):
            raise RuntimeError("backend='torch' needs PyTorch: pip install torch")
    elif backend == "numba":
        if not _has("numba"):
            raise RuntimeError("backend='numba' needs numba: pip install 'rewardagg[fast]'")
        if device != "cpu":
            raise ValueError(f"backend='numba' runs on the CPU; got a tensor on {device!r}")
    elif backend == "triton":
        if not (_has("triton") and _has("torch")):
            raise RuntimeError(
                "backend='triton' needs triton and torch: pip install 'rewardagg[triton]'"
            )
        if not is_t:
            raise ValueError(f"backend='triton' takes torch tensors; got {type(rewards).__name__}")
        if device != "cuda" and not (device == "cpu" and _interpreting()):
            raise ValueError(
                f"backend='triton' needs a CUDA tensor; got one on {device!r} "
                "(CPU tensors only under TRITON_INTERPRET=1)"
            )
    return backend


def _real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check(rewards, offsets, weights, method, kappa, lam, eps, correction, singleton, baseline):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if singleton not in ("zero", "identity"):
        raise ValueError(f"singleton must be 'zero' or 'identity'; got {singleton!r}")
    if baseline not in ("mean", "leave_one_out"):
        raise ValueError(f"baseline must be 'mean' or 'leave_one_out'; got {baseline!r}")
    for name, val in (("eps", eps), ("correction", correction)):
        if not (_real(val) and math.isfinite(val) and val >= 0):
            raise ValueError(f"{name} must be a finite non-negative number; got {val!r}")
    if not (_real(kappa) and kappa >= 0):
        raise ValueError(f"kappa must be >= 0 (inf allowed); got {kappa!r}")
    if not (_real(lam) and math.isfinite(lam)):
        raise ValueError(f"lam must be a finite number; got {lam!r}")
    if len(rewards.shape) != 2:
        raise ValueError(f"rewards must be 2-D (N, K); got shape {tuple(rewards.shape)}")
    n_rows, n_rew = (int(s) for s in rewards.shape)
    kind = str(rewards.dtype)
    if not any(t in kind for t in ("float16", "float32", "float64")):
        raise TypeError(f"rewards must be a float array; got dtype {rewards.dtype}")
    off = np.asarray(offsets.cpu() if _is_torch(offsets) else offsets)
    if off.ndim != 1 or off.size < 1 or not np.issubdtype(off.dtype, np.integer):
        raise ValueError(f"offsets must be a 1-D integer array; got {off.dtype} {off.shape}")
    if off[0] != 0 or off[-1] != n_rows or np.any(np.diff(off) < 0):
        raise ValueError(f"offsets must rise from 0 to N={n_rows}; got {off[:3]}...{off[-3:]}")
    w = np.asarray(weights.detach().cpu() if _is_torch(weights) else weights, dtype=np.float64)
    if w.shape != (n_rew,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be {n_rew} finite non-negative numbers; got {w!r}")
    return off.astype(np.int64, copy=False), w


def _raise_inf(rewards) -> None:
    x = rewards.detach().float().cpu().numpy() if _is_torch(rewards) else np.asarray(rewards)
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
    kappa: float = 1.0,
    lam: float = 0.5,
    eps: float = 1e-6,
    correction: float = 1,
    singleton: str = "zero",
    baseline: str = "mean",
    backend: str = "auto",
    validate: bool = True,
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
        method: ``"weighted_sum"`` (GDPO), ``"weighted_mean"``, ``"softmin"`` (RVPO),
            ``"mean_variance"`` or ``"weighted_min"``.
        kappa: softmin risk coefficient; 0 gives the weighted mean, ``inf`` the minimum.
        lam: mean_variance penalty :math:`\lambda`.
        eps, correction, singleton, baseline: as :func:`rewardagg.group_standardize`.
        backend: ``"auto"``, ``"numpy"``, ``"torch"``, ``"numba"`` or ``"triton"``.
        validate: raise :class:`ValueError` when a reward is infinite (the check is fused
            into the pass); ``False`` lets infinities propagate as NaN.

    Returns:
        ``S`` ``(N,)`` in the input's library and device, float64 for float64 input and
        float32 otherwise, in the sorted row order; NaN for a row without a present
        positive-weight reward.
    """
    off, w = _check(
        rewards, offsets, weights, method, kappa, lam, eps, correction, singleton, baseline
    )
    if method == "softmin" and kappa == 0:
        method = "weighted_mean"
    elif method == "softmin" and math.isinf(kappa):
        method = "weighted_min"
    name = resolve_backend(rewards, backend)
    opts: dict[str, Any] = dict(
        method=method,
        kappa=float(kappa),
        lam=float(lam),
        eps=float(eps),
        correction=float(correction),
    )
    identity, loo = singleton == "identity", baseline == "leave_one_out"
    if name in ("numpy", "torch"):
        from rewardagg.kernels.reference import stage12_reference

        x = rewards
        if name == "torch" and not _is_torch(x):
            import torch

            x = torch.from_numpy(np.ascontiguousarray(x))
        s, bad = stage12_reference(
            x, off, weights=w, singleton=singleton, baseline=baseline, **opts
        )
        if name == "torch" and not _is_torch(rewards):
            s = s.numpy()
    elif name == "numba":
        from rewardagg.kernels import numba_kernel

        is_t = _is_torch(rewards)
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
        first = not numba_kernel.is_warm(x.dtype.name)
        s, bad = numba_kernel.stage12_numba(x, off, w, identity=identity, loo=loo, **opts)
        if first:
            secs = numba_kernel.last_first_call_seconds.get(x.dtype.name, 0.0)
            log.info("numba kernel for %s ready in %.2f s", x.dtype.name, secs)
            if secs > 1.0:
                warnings.warn(
                    f"rewardagg: the numba kernel for {x.dtype.name} took {secs:.1f} s to "
                    "compile (once per machine; later processes load it from the on-disk "
                    "cache). Call rewardagg.kernels.warmup() at start-up to pay it early.",
                    CompileWarning,
                    stacklevel=2,
                )
        if is_t:
            import torch

            s = torch.from_numpy(s).to(rewards.device)
    else:
        import torch

        from rewardagg.kernels.triton_kernel import stage12_triton

        max_group = int(np.max(np.diff(off))) if off.size > 1 else 1
        with torch.no_grad():
            s, bad_groups = stage12_triton(
                rewards.detach(),
                torch.from_numpy(off),
                torch.from_numpy(w),
                identity=identity,
                loo=loo,
                max_group=max_group,
                **opts,
            )
        bad = int(bad_groups.sum()) if validate else 0
    if validate and bad:
        _raise_inf(rewards)
    return s


def warmup(dtypes: tuple[str, ...] = ("float32", "float64")) -> dict[str, float]:
    """Compile or load the numba kernels now (no-op without numba); seconds per dtype."""
    if not _has("numba"):
        return {}
    from rewardagg.kernels import numba_kernel

    return numba_kernel.warmup(dtypes)
