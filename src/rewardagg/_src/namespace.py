"""Array-library detection and the few operations the algorithms need.

The algorithms are written once against :class:`Ops`; :func:`ops_for` returns the numpy
or the torch flavour for the caller's arrays. Torch is only imported when the caller
already handed us a tensor (it is then in ``sys.modules``), in the spirit of einops'
backend detection.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

import numpy as np

__all__ = ["NumpyOps", "Ops", "TorchOps", "is_torch", "ops_for"]


def is_torch(x: Any) -> bool:
    """True when ``x`` is a ``torch.Tensor``, without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class Ops(Protocol):
    """The operations the algorithms use; :class:`NumpyOps` and :class:`TorchOps` provide
    them for numpy arrays and torch tensors (same names, same semantics)."""

    name: str
    nan: float
    inf: float

    def sum(self, x: Any, axis: int, keepdims: bool = False) -> Any: ...
    def sumsq(self, x: Any, axis: int, keepdims: bool = False) -> Any: ...
    def dot_last(self, x: Any, v: Any) -> Any: ...
    def count(self, p: Any, axis: int, keepdims: bool = False, dtype: Any = None) -> Any: ...
    def amin(self, x: Any, axis: int, keepdims: bool = False) -> Any: ...
    def amax(self, x: Any, axis: int, keepdims: bool = False) -> Any: ...
    def nanmin(self, x: Any, axis: int, keepdims: bool = False) -> Any: ...
    def nanmax(self, x: Any, axis: int, keepdims: bool = False) -> Any: ...
    def any(self, x: Any) -> bool: ...
    def expm1_(self, x: Any) -> Any: ...
    def isnan(self, x: Any) -> Any: ...
    def isinf(self, x: Any) -> Any: ...
    def sqrt(self, x: Any) -> Any: ...
    def exp(self, x: Any) -> Any: ...
    def expm1(self, x: Any) -> Any: ...
    def log1p(self, x: Any) -> Any: ...
    def log(self, x: Any) -> Any: ...
    def minimum(self, a: Any, b: Any) -> Any: ...
    def maximum(self, a: Any, b: Any) -> Any: ...
    def where(self, c: Any, a: Any, b: Any) -> Any: ...
    def argsort_last(self, x: Any) -> Any: ...
    def take_last(self, x: Any, idx: Any) -> Any: ...
    def cumsum_last(self, x: Any) -> Any: ...
    def fill_where(self, x: Any, p: Any, value: Any) -> Any: ...
    def indicator(self, p: Any, like: Any) -> Any: ...
    def fmax_(self, x: Any, value: float) -> Any: ...
    def nan_where_zero_(self, x: Any, keep: Any) -> Any: ...
    def zeros(self, shape: Any, like: Any) -> Any: ...
    def full(self, shape: Any, value: Any, like: Any) -> Any: ...
    def asarray(self, x: Any, like: Any) -> Any: ...
    def bool_like(self, m: np.ndarray, like: Any) -> Any: ...
    def index(self, x: Any, idx: Any) -> Any: ...
    def to_numpy(self, x: Any) -> np.ndarray: ...


class NumpyOps:
    """Numpy flavour. Every method mirrors the torch flavour one to one."""

    name = "numpy"
    nan = np.nan
    inf = np.inf

    def __init__(self) -> None:
        self.float64 = np.float64

    # reductions -------------------------------------------------------------
    @staticmethod
    def sum(x: Any, axis: int, keepdims: bool = False) -> Any:
        # numpy's strided add.reduce over a short axis is several times slower than einsum's
        # loop; einsum sums naively, so it is only used where the axis is short.
        axis = axis % x.ndim
        if x.ndim >= 2 and x.shape[axis] <= 64 and x.dtype.kind == "f":
            letters = "abcdefgh"[: x.ndim]
            out = np.einsum(f"{letters}->{letters.replace(letters[axis], '')}", x)
            return np.expand_dims(out, axis) if keepdims else out
        return np.add.reduce(x, axis=axis, keepdims=keepdims)  # type: ignore[call-overload]

    @classmethod
    def sumsq(cls, x: Any, axis: int, keepdims: bool = False) -> Any:
        """Sum of squares along ``axis`` without a squared temporary."""
        axis = axis % x.ndim
        letters = "abcdefgh"[: x.ndim]
        out = np.einsum(f"{letters},{letters}->{letters.replace(letters[axis], '')}", x, x)
        return np.expand_dims(out, axis) if keepdims else out

    @staticmethod
    def dot_last(x: Any, v: Any) -> Any:
        """``sum(x * v, axis=-1)`` for ``v`` broadcastable to ``x``, in one pass."""
        if v.ndim == 1:
            return x @ v
        return np.einsum("...k,...k->...", x, v)

    @staticmethod
    def count(p: Any, axis: int, keepdims: bool = False, dtype: Any = np.float64) -> Any:
        return np.count_nonzero(p, axis=axis, keepdims=keepdims).astype(dtype, copy=False)

    @staticmethod
    def amin(x: Any, axis: int, keepdims: bool = False) -> Any:
        return np.minimum.reduce(x, axis=axis, keepdims=keepdims)  # type: ignore[call-overload]

    @staticmethod
    def amax(x: Any, axis: int, keepdims: bool = False) -> Any:
        return np.maximum.reduce(x, axis=axis, keepdims=keepdims)  # type: ignore[call-overload]

    @staticmethod
    def nanmin(x: Any, axis: int, keepdims: bool = False) -> Any:
        # fmin ignores NaN; an all-NaN slice stays NaN (no warning, unlike np.nanmin).
        return np.fmin.reduce(x, axis=axis, keepdims=keepdims)  # type: ignore[call-overload]

    @staticmethod
    def nanmax(x: Any, axis: int, keepdims: bool = False) -> Any:
        return np.fmax.reduce(x, axis=axis, keepdims=keepdims)  # type: ignore[call-overload]

    @staticmethod
    def any(x) -> bool:
        return bool(np.any(x))

    # element-wise -----------------------------------------------------------
    @staticmethod
    def expm1_(x):
        """``expm1`` in place."""
        return np.expm1(x, out=x)

    @staticmethod
    def isnan(x: Any) -> Any:
        return np.isnan(x)

    @staticmethod
    def isinf(x: Any) -> Any:
        return np.isinf(x)

    @staticmethod
    def sqrt(x: Any) -> Any:
        return np.sqrt(x)

    @staticmethod
    def exp(x: Any) -> Any:
        return np.exp(x)

    @staticmethod
    def expm1(x: Any) -> Any:
        return np.expm1(x)

    @staticmethod
    def log1p(x: Any) -> Any:
        return np.log1p(x)

    @staticmethod
    def log(x: Any) -> Any:
        return np.log(x)

    @staticmethod
    def minimum(a: Any, b: Any) -> Any:
        return np.minimum(a, b)

    @staticmethod
    def maximum(a: Any, b: Any) -> Any:
        return np.maximum(a, b)

    @staticmethod
    def where(c: Any, a: Any, b: Any) -> Any:
        return np.where(c, a, b)

    # along the last (reward) axis ---------------------------------------------
    @staticmethod
    def argsort_last(x: Any) -> Any:
        """Stable ascending order along the last axis."""
        return np.argsort(x, axis=-1, kind="stable")

    @staticmethod
    def take_last(x: Any, idx: Any) -> Any:
        return np.take_along_axis(x, idx, axis=-1)

    @staticmethod
    def cumsum_last(x: Any) -> Any:
        return np.cumsum(x, axis=-1)

    @staticmethod
    def fill_where(x, p, value):
        """``x[p] = value`` in place; returns ``x``."""
        np.copyto(x, value, where=p)
        return x

    # masks by arithmetic: a masked copy or ``np.where`` on a scattered mask costs about
    # 1 ns per value, a multiplication a tenth of that
    @staticmethod
    def indicator(p, like):
        """1.0 where ``p`` is true, 0.0 elsewhere, in ``like``'s dtype."""
        return p.astype(like.dtype)

    @staticmethod
    def fmax_(x, value):
        """``fmax(x, value)`` in place (NaN becomes ``value``); returns ``x``."""
        return np.fmax(x, value, out=x)

    @staticmethod
    def nan_where_zero_(x, keep):
        """``x /= keep`` in place for a 0/1 ``keep``: entries with ``keep == 0`` (where ``x``
        is 0) become NaN, the others are unchanged; returns ``x``."""
        with np.errstate(invalid="ignore"):
            return np.divide(x, keep, out=x)

    # construction -----------------------------------------------------------
    @staticmethod
    def zeros(shape, like):
        return np.zeros(shape, dtype=like.dtype)

    @staticmethod
    def full(shape, value, like):
        return np.full(shape, value, dtype=like.dtype)

    @staticmethod
    def asarray(x, like):
        return np.asarray(x, dtype=like.dtype)

    @staticmethod
    def bool_like(m, like):
        """Boolean numpy ``m`` in ``like``'s library (and device)."""
        return np.asarray(m, dtype=bool)

    @staticmethod
    def index(x, idx):
        return x[idx]

    @staticmethod
    def to_numpy(x) -> np.ndarray:
        return np.asarray(x)


class TorchOps:
    """Torch flavour, built only for tensors the caller already holds."""

    name = "torch"
    nan = float("nan")
    inf = float("inf")

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.float64 = torch.float64

    def sum(self, x, axis, keepdims=False):
        return self.torch.sum(x, dim=axis, keepdim=keepdims)

    def sumsq(self, x, axis, keepdims=False):
        return self.torch.sum(x * x, dim=axis, keepdim=keepdims)

    def dot_last(self, x, v):
        return x @ v if v.ndim == 1 else self.torch.sum(x * v, dim=-1)

    def count(self, p, axis, keepdims=False, dtype=None):
        return self.torch.sum(p, dim=axis, keepdim=keepdims, dtype=dtype or self.torch.float64)

    def amin(self, x, axis, keepdims=False):
        return self.torch.amin(x, dim=axis, keepdim=keepdims)

    def amax(self, x, axis, keepdims=False):
        return self.torch.amax(x, dim=axis, keepdim=keepdims)

    def nanmin(self, x, axis, keepdims=False):
        filled = self.torch.where(self.torch.isnan(x), self.inf, x)
        out = self.torch.amin(filled, dim=axis, keepdim=keepdims)
        return self.torch.where(self.torch.isinf(out) & (out > 0), self.nan, out)

    def nanmax(self, x, axis, keepdims=False):
        filled = self.torch.where(self.torch.isnan(x), -self.inf, x)
        out = self.torch.amax(filled, dim=axis, keepdim=keepdims)
        return self.torch.where(self.torch.isinf(out) & (out < 0), self.nan, out)

    def any(self, x) -> bool:
        return bool(self.torch.any(x))

    def isnan(self, x):
        return self.torch.isnan(x)

    def isinf(self, x):
        return self.torch.isinf(x)

    def sqrt(self, x):
        return self.torch.sqrt(x)

    def exp(self, x):
        return self.torch.exp(x)

    def expm1(self, x):
        return self.torch.expm1(x)

    def expm1_(self, x):
        return x.expm1_()

    def log1p(self, x):
        return self.torch.log1p(x)

    def log(self, x):
        return self.torch.log(x)

    def minimum(self, a, b):
        return self.torch.minimum(*self._tensors(a, b))

    def maximum(self, a, b):
        return self.torch.maximum(*self._tensors(a, b))

    def _tensors(self, a, b):
        like = a if isinstance(a, self.torch.Tensor) else b
        return self.asarray(a, like), self.asarray(b, like)

    def argsort_last(self, x):
        return self.torch.argsort(x, dim=-1, stable=True)

    def take_last(self, x, idx):
        return self.torch.take_along_dim(x, idx, dim=-1)

    def cumsum_last(self, x):
        return self.torch.cumsum(x, dim=-1)

    def where(self, c, a, b):
        torch = self.torch
        if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
            raise TypeError("TorchOps.where needs at least one tensor operand")
        return torch.where(c, a, b)

    def fill_where(self, x, p, value):
        return x.masked_fill_(p, value)

    def indicator(self, p, like):
        return p.to(like.dtype)

    def fmax_(self, x, value):
        return self.torch.fmax(x, self.torch.tensor(value, dtype=x.dtype, device=x.device), out=x)

    def nan_where_zero_(self, x, keep):
        return x.div_(keep)

    def zeros(self, shape, like):
        return self.torch.zeros(shape, dtype=like.dtype, device=like.device)

    def full(self, shape, value, like):
        return self.torch.full(shape, value, dtype=like.dtype, device=like.device)

    def asarray(self, x, like):
        return self.torch.as_tensor(x, dtype=like.dtype, device=like.device)

    def bool_like(self, m, like):
        return self.torch.as_tensor(np.asarray(m, dtype=bool)).to(like.device)

    def index(self, x, idx):
        if isinstance(idx, np.ndarray):
            idx = self.torch.from_numpy(idx).to(x.device)
        return x[idx]

    @staticmethod
    def to_numpy(x) -> np.ndarray:
        return x.detach().cpu().numpy()


_NUMPY = NumpyOps()
_TORCH: TorchOps | None = None


def ops_for(x: Any) -> Ops:
    """The operation set for ``x``'s array library (torch for tensors, numpy otherwise)."""
    global _TORCH
    if is_torch(x):
        if _TORCH is None:
            _TORCH = TorchOps()
        return _TORCH
    return _NUMPY
