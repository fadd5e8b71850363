"""Argument checking and conversion shared by every public function.

Each check raises a ``ValueError`` or ``TypeError`` that names the argument and what was
received, so a caller never meets an opaque numpy/torch error from deep inside a kernel.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardagg._src.namespace import Ops, is_torch, ops_for

__all__ = [
    "Prepared",
    "check_choice",
    "check_nonnegative",
    "prepare_rewards",
    "prepare_weights",
]


@dataclass(frozen=True)
class Restore:
    """Puts a computed array back into the caller's library, device and dtype."""

    library: str
    dtype: Any
    device: Any = None

    def __call__(self, x: Any) -> Any:
        if self.library == "torch":
            if isinstance(x, np.ndarray):  # computed by numpy on a CPU tensor's memory
                import torch

                return torch.from_numpy(np.ascontiguousarray(x)).to(self.dtype)
            return x.to(device=self.device, dtype=self.dtype)
        return np.asarray(x).astype(self.dtype, copy=False)


@dataclass(frozen=True)
class Prepared:
    """Rewards ready for computation.

    ``values`` is 2-D ``(N, K)`` in the compute dtype (float32 or float64), NaN where a
    reward is missing (``mask`` folded in). It may share memory with the caller's input
    and must never be written to. ``missing`` is the boolean NaN map, or ``None`` when no
    value is missing (the fast path).
    """

    ops: Ops
    values: Any
    missing: Any
    restore: Restore
    was_1d: bool

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_rewards(self) -> int:
        return int(self.values.shape[1])

    def cast_out(self, x):
        """Cast a computed array to the caller's library, device and dtype."""
        return self.restore(x)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _numpy_float(arr: np.ndarray, name: str) -> tuple[np.ndarray, Any]:
    """(compute array, output dtype) for a numpy array."""
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype == np.float64 or arr.dtype == np.float32:
            return arr, arr.dtype
        if arr.dtype.itemsize < 4:  # float16: compute in float32, give float16 back
            return arr.astype(np.float32), arr.dtype
        return arr.astype(np.float64), np.dtype(np.float64)  # longdouble
    if kind in "biu":
        return arr.astype(np.float64), np.dtype(np.float64)
    if kind == "O":
        try:
            out = arr.astype(np.float64)  # None -> NaN, as TRL does for a missing reward
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must hold numbers (None/NaN for missing); got {err}") from None
        return out, np.dtype(np.float64)
    raise TypeError(f"{name} must be a real numeric array; got dtype {arr.dtype}")


def _torch_float(t: Any, name: str) -> tuple[Any, Any]:
    import torch

    t = t.detach()
    if t.is_complex():
        raise TypeError(f"{name} must be a real numeric tensor; got dtype {t.dtype}")
    if t.device.type == "meta":
        raise ValueError(f"{name} is a tensor on the 'meta' device (no data); pass real values")
    if t.is_floating_point():
        if t.dtype in (torch.float32, torch.float64):
            return t, t.dtype
        return t.float(), t.dtype  # float16 / bfloat16: float32 compute, cast back
    return t.to(torch.float64), torch.float64  # integers and bools: exact up to 2^53


def as_float(x: Any, name: str, *, library: str = "auto") -> tuple[Any, Restore, Ops]:
    """Convert ``x`` to a float array to compute on: ``(array, restore, ops)``.

    ``library="auto"`` computes a CPU tensor with numpy on the tensor's own memory (no
    copy; numpy's kernels are the faster ones on CPU) and a tensor on any other device
    with torch; ``"torch"`` always uses torch for tensors; ``"numpy"`` requires CPU data.
    """
    if is_torch(x):
        arr, out = _torch_float(x, name)
        restore = Restore("torch", out, arr.device)
        if library == "torch":
            return arr, restore, ops_for(arr)
        if arr.device.type == "cpu":
            return arr.numpy(), restore, ops_for(None)
        if library == "numpy":
            raise ValueError(f"backend='numpy' cannot compute on {arr.device} tensors; use 'auto'")
        return arr, restore, ops_for(arr)
    if isinstance(x, np.ma.MaskedArray):  # a masked entry is a missing value
        arr, out = _numpy_float(np.ma.getdata(x), name)
        masked = np.ma.getmaskarray(x)
        if masked.any():
            arr = np.where(masked, np.nan, arr.astype(np.result_type(arr.dtype, np.float32)))
        return arr, Restore("numpy", out), ops_for(arr)
    if isinstance(x, np.ndarray):
        arr, out = _numpy_float(x, name)
        return arr, Restore("numpy", out), ops_for(arr)
    try:
        raw = np.asarray(x)
        if raw.dtype.kind in "OUSV":
            raw = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a numeric array, tensor or nested list; got {type(x).__name__} ({err})"
        ) from None
    arr, out = _numpy_float(raw, name)
    return arr, Restore("numpy", out), ops_for(arr)


def _first_bad(bad: np.ndarray) -> str:
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return f"row {idx[0]}" if len(idx) == 1 else "row {}, column {}".format(*idx)


def check_finite_or_nan(values: Any, ops: Ops, name: str) -> Any:
    """Raise on +-inf; return the NaN map, or ``None`` when every value is finite."""
    inf = ops.isinf(values)
    if ops.any(inf):
        raise ValueError(
            f"{name} contains +-inf at {_first_bad(ops.to_numpy(inf))} (shape {_shape(values)}); "
            "use NaN (or mask=False) for a missing reward"
        )
    nan = ops.isnan(values)
    return nan if ops.any(nan) else None


def prepare_rewards(
    rewards: Any,
    mask: Any = None,
    *,
    name: str = "rewards",
    library: str = "auto",
    check_finite: bool = True,
) -> Prepared:
    """Validate ``rewards`` (and ``mask``) and put them in the compute dtype, NaN = missing.

    ``check_finite=False`` skips the +-inf sweep and leaves ``missing`` as ``None``: only
    for callers whose next pass checks (the fused kernels of :mod:`rewardagg.kernels`).
    """
    values, restore, ops = as_float(rewards, name, library=library)
    was_1d = values.ndim == 1
    if was_1d:
        values = values.reshape(-1, 1)
    if values.ndim != 2:
        raise ValueError(
            f"{name} must be 1-D (N,) or 2-D (N, K) with one column per reward; "
            f"got shape {_shape(values)}"
        )
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(
            f"{name} is empty (shape {_shape(values)}); need at least one row and reward"
        )
    if mask is not None:
        values = _apply_mask(values, mask, ops, was_1d, name)
    missing = check_finite_or_nan(values, ops, name) if check_finite else None
    return Prepared(ops=ops, values=values, missing=missing, restore=restore, was_1d=was_1d)


def _apply_mask(values: Any, mask: Any, ops: Ops, was_1d: bool, name: str) -> Any:
    expected = (values.shape[0],) if was_1d else _shape(values)
    if is_torch(mask):
        m = mask.detach().cpu().numpy()
    else:
        m = np.asarray(mask)
    if m.dtype.kind not in "biu":
        raise TypeError(f"mask must be boolean (True = reward present); got dtype {m.dtype}")
    if tuple(m.shape) not in {expected, _shape(values)}:
        raise ValueError(f"mask must have the shape of {name} {expected}; got {tuple(m.shape)}")
    absent = (m == 0).reshape(values.shape)
    if not absent.any():
        return values
    return ops.where(ops.bool_like(absent, values), ops.nan, values)


def prepare_weights(weights: Any, n_rewards: int) -> np.ndarray | None:
    """Validate reward weights; ``None`` means all ones (returned as ``None``: fast path)."""
    if weights is None:
        return None
    if is_torch(weights):
        weights = weights.detach().cpu().numpy()
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"weights must be a sequence of {n_rewards} numbers; got {weights!r}"
        ) from None
    if w.ndim == 0 and n_rewards == 1:
        w = w.reshape(1)
    if w.shape != (n_rewards,):
        raise ValueError(f"weights must have shape ({n_rewards},), one per reward; got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be finite; got {w.tolist()}")
    if np.any(w < 0):
        raise ValueError(f"weights must be non-negative; got {w.tolist()}")
    if not np.any(w > 0):
        raise ValueError("weights are all zero: at least one reward needs a positive weight")
    return w


def check_nonnegative(value: Any, name: str, *, allow_inf: bool = False) -> float:
    """A non-negative real scalar (``inf`` only where allowed)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    v = float(value)
    if math.isnan(v) or v < 0 or (math.isinf(v) and not allow_inf):
        rule = (
            "a non-negative number (inf allowed)" if allow_inf else "a finite non-negative number"
        )
        raise ValueError(f"{name} must be {rule}; got {value!r}")
    return v


def check_real(value: Any, name: str) -> float:
    """A real number that is not NaN (``inf`` allowed)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name} must be a number, not NaN")
    return v


def check_unit_interval(value: Any, name: str) -> float:
    """A real number in ``(0, 1]``."""
    v = check_real(value, name)
    if not 0 < v <= 1:
        raise ValueError(f"{name} must be in (0, 1]; got {value!r}")
    return v


def check_bool(value: Any, name: str) -> bool:
    """``True`` or ``False`` (numpy bools too), nothing else: a string such as ``"False"``
    would otherwise count as true."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False; got {value!r}")


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def parse_real(
    value: Any, name: str, *, low: float | None = None, allow_inf: bool = False
) -> float:
    """``value`` from a config file or command line as a float (a string is converted):
    not NaN, finite unless ``allow_inf``, ``>= low`` when given; errors name ``name``
    (the host's setting)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number; got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        error = ValueError if isinstance(value, str) else TypeError
        raise error(f"{name} must be a number; got {value!r}") from None
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        rule = "a number (inf allowed)" if allow_inf else "a finite number"
        raise ValueError(f"{name} must be {rule}; got {value!r}")
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low:g}; got {value!r}")
    return v


def parse_flag(value: Any, name: str) -> bool:
    """A bool, or a config file's / command line's ``true``/``false`` (``1``/``0``,
    ``yes``/``no``, ``on``/``off``)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise TypeError(f"{name} must be true or false; got {value!r}")
