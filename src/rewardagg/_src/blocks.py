r"""Stages 1-2 of the numpy array path, one block of whole groups at a time.

Why blocks, and why this layout. numpy reduces a short axis (the G rows of a group, the K
rewards of a row) with one tiny inner loop per output value, 10-50 times slower than a pass
over contiguous memory, and standardising the whole batch at once needs several
temporaries the size of the input. So each block of ``m`` equal-size groups (about
:data:`BLOCK_VALUES` rewards) is copied, transposed, into a ``(K, G, m)`` buffer:

- a group statistic reduces axis 1 and a row's aggregate reduces axis 0: both are sums of
  contiguous vectors of length ``m`` (numpy's fast path);
- ``buffer.reshape(K, G * m).T`` is the block's ``(rows, K)`` matrix that the stage-2
  reducers of :mod:`rewardagg._src.aggregators` take, unchanged (numpy keeps the column-major
  layout through every element-wise step and reduces it as vectors);
- the block fits in the L2 cache, and only the per-row scores ``(N,)`` outlive it, so the
  peak extra memory is a few blocks plus a few ``(N,)`` vectors, whatever N and K.

A block is computed in float32 when the rewards are float32 and its groups have at most
:data:`FLOAT32_MAX_TERMS` rows and rewards (every sum is then short), in float64 otherwise; the
per-row scores and stage 3 are float64. The formulas are those of
:func:`rewardagg._src.normalisation.standardize_cells` and the reducers' kernels, called as
they are (so the cell's span keeps every square in range, and an all-equal cell is exactly
0, in either dtype).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardagg._src.aggregators import row_weights
from rewardagg._src.conflict import ConflictFilter, conflict_rows
from rewardagg._src.grouping import GroupLayout
from rewardagg._src.methods import Aggregator
from rewardagg._src.namespace import NumpyOps
from rewardagg._src.normalisation import standardize_cells
from rewardagg._src.validation import check_finite_or_nan

__all__ = ["BLOCK_VALUES", "BlockPlan", "block_scores", "iter_blocks", "to_block_rows"]

BLOCK_VALUES = 1 << 16
"""Rewards per block (fewer only where a single group is larger): with the float64
temporaries of a block, about 2 MiB, the size of a core's L2 cache."""

_NP = NumpyOps()


@dataclass(frozen=True)
class BlockPlan:
    """What to compute for each block: the stage-2 ``reducer`` with its ``params``, in
    ``order``, stage-1 options ``stage1``, optional constraint terms ``sum_c lams[c] *
    Z[:, cols[c]]`` and an optional GD²PO ``conflict`` filter."""

    reducer: Aggregator
    params: dict
    order: str
    stage1: dict
    weights: np.ndarray | None = None
    cols: Sequence[int] = ()
    lams: Sequence[float] = ()
    conflict: ConflictFilter | None = None
    dtype: Any = None
    """The rewards' dtype: every score must fit in it (:func:`finite_scores`)."""


def _blocks(layout: GroupLayout, n_rewards: int, budget: int) -> Iterator[tuple[int, int, int]]:
    """``(first sorted row, group size G, number of groups m)`` of each block: runs of
    whole groups of one bucket holding about ``budget`` rewards."""
    for b in layout.buckets:
        per = max(1, budget // max(1, b.size * n_rewards))
        for j in range(0, b.n_groups, per):
            yield b.start + j * b.size, b.size, min(per, b.n_groups - j)


def _load(values: np.ndarray, rows: Any, g: int, m: int, out: np.ndarray) -> np.ndarray:
    """The block's rewards as ``(K, G, m)`` float64: ``out[k, i, j]`` is reward ``k`` of
    row ``i`` of the block's ``j``-th group (one strided copy that also casts)."""
    src = values[rows]
    np.copyto(out, src.reshape(m, g, values.shape[1]).transpose(2, 1, 0))
    return out


def _missing(xt: np.ndarray, values: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """``(NaN map or None, too large)``: ``None`` when nothing is missing; ``too large``
    when a float32 block holds a value whose differences could overflow float32 (the
    block is then computed in float64). +-inf raises, naming the caller's row and column
    (the full check runs only on that error path)."""
    big = np.finfo(xt.dtype).max / 2 if xt.dtype == np.float32 else np.inf
    ok = np.abs(xt) < big  # False for NaN, +-inf and (float32) |x| >= max / 2
    if ok.all():
        return None, False
    missing = np.isnan(xt)
    if np.isinf(xt).any():
        check_finite_or_nan(values, _NP, "rewards")  # raises with the first bad position
    return (missing if missing.any() else None), bool((~ok & ~missing).any())


def _buffer(bufs: dict, dtype: Any, shape: tuple[int, int, int]) -> np.ndarray:
    """A ``shape`` view of the reusable buffer for ``dtype`` (grown when too small)."""
    size = shape[0] * shape[1] * shape[2]
    if bufs.get(dtype, np.empty(0)).size < size:
        bufs[dtype] = np.empty(size, dtype)
    return bufs[dtype][:size].reshape(shape)


def _as_rows(a: np.ndarray) -> np.ndarray:
    """``(K, G, m)`` -> the block's ``(G * m, K)`` matrix (a column-major view), block row
    ``i * m + j`` being row ``i`` of group ``j``."""
    return a.reshape(a.shape[0], -1).T


def _constraint_terms(xt, missing, z, plan: BlockPlan) -> np.ndarray:
    r""":math:`\sum_c \lambda_c Z_{ic}` per block row (``Z`` 0 where missing); only the
    constrained columns are standardised when stage 1 did not run."""
    cols = list(plan.cols)
    if z is None:
        zc, _ = standardize_cells(
            xt[cols], None if missing is None else missing[cols], axis=1, ops=_NP, **plan.stage1
        )
    else:
        zc = z[cols]
    zc = np.where(np.isnan(zc), 0.0, zc)
    return np.asarray(plan.lams, dtype=np.float64) @ zc.reshape(len(cols), -1)


def _block(xt: np.ndarray, missing: np.ndarray | None, plan: BlockPlan):
    """Stages 1-2 of one block: ``(S, dropped rows or None)`` in block-row order."""
    _, g, m = xt.shape
    z = None
    if plan.order == "normalize_then_reduce":
        z, _ = standardize_cells(xt, missing, axis=1, ops=_NP, **plan.stage1)
        vals = _as_rows(z)
    else:
        vals = _as_rows(xt)
    miss = None if missing is None else _as_rows(missing)
    rw = row_weights(vals, plan.weights, _NP, miss)
    kernel = plan.reducer.kernel
    assert kernel is not None  # every table entry has one
    s = kernel(vals, rw, _NP, **plan.params)
    if plan.order == "reduce_then_normalize":  # the row's score, standardised in its group
        s = finite_scores(s, plan.reducer.name, plan.dtype).reshape(1, g, m)
        s_missing = np.isnan(s)
        s, _ = standardize_cells(
            s, s_missing if s_missing.any() else None, axis=1, ops=_NP, **plan.stage1
        )
        s = s.reshape(-1)
    if plan.cols:
        s = s + _constraint_terms(xt, missing, z, plan)
    drop = None
    if plan.conflict is not None:  # the verdict on float64 stage-1 values (DESIGN.md 2c)
        if z is None or z.dtype != np.float64:
            z64, _ = standardize_cells(
                xt.astype(np.float64), missing, axis=1, ops=_NP, **plan.stage1
            )
            vals, rw = _as_rows(z64), row_weights(_as_rows(z64), plan.weights, _NP, miss)
        drop = conflict_rows(vals, rw, _NP, plan.conflict)[0]
    return s, drop


def finite_scores(s: Any, method: str, dtype: Any = None) -> Any:
    """Stage 2 must not overflow silently: a score beyond the largest number of ``dtype``
    (the rewards' dtype when ``s`` is computed in a wider one; default ``s``'s own, where
    overflow shows as +-inf) is a clear error, whatever the backend."""
    if dtype is not None and np.dtype(dtype).itemsize < s.dtype.itemsize:
        big = float(np.finfo(dtype).max)
        over = (s > big) | (s < -big)
    else:  # one pass (numpy array or torch tensor)
        over = np.isinf(s) if isinstance(s, np.ndarray) else s.isinf()
    if bool(over.any()):
        name = s.dtype if dtype is None else np.dtype(dtype)
        raise ValueError(
            f"method {method!r}: a row's score overflowed {name} (rewards or z-scores too "
            "large for the dtype); rescale the rewards or pass float64"
        )
    return s


def block_scores(
    values: np.ndarray, layout: GroupLayout, plan: BlockPlan, *, budget: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-row scores ``S`` (stages 1-2 and the constraint terms) of ``values`` ``(N, K)``
    (the caller's rows; NaN = missing, +-inf raises), in ``layout``'s sorted row order,
    float64, NaN for a row without a score; and the rows the conflict filter drops
    (``None`` without a filter). ``budget``: rewards per block (default
    :data:`BLOCK_VALUES`)."""
    n = values.shape[0]
    s = np.empty(n)
    drop = None if plan.conflict is None else np.zeros(n, dtype=bool)
    # the raw-reward order reduces raw values (at any offset): float64 sums for every dtype
    raw = plan.order == "reduce_then_normalize"
    dt = np.float64 if raw else None
    for r0, g, m, xt, missing in iter_blocks(values, layout, budget=budget, dtype=dt):
        r1 = r0 + g * m
        sb, db = _block(xt, missing, plan)
        # block row i * m + j is sorted row r0 + j * G + i
        s[r0:r1].reshape(m, g)[...] = sb.reshape(g, m).T
        if drop is not None:
            drop[r0:r1].reshape(m, g)[...] = db.reshape(g, m).T
    return s, drop


def iter_blocks(
    values: np.ndarray, layout: GroupLayout, *, budget: int | None = None, dtype: Any = None
) -> Iterator[tuple[int, int, int, np.ndarray, np.ndarray | None]]:
    """``(first sorted row r0, G, m, xt, NaN map or None)`` of each block of ``m`` whole
    groups of ``G`` rows: ``xt`` ``(K, G, m)`` in the block's compute dtype (``dtype`` when
    given), a reused buffer valid until the next block. +-inf raises, naming the caller's
    row."""
    k = values.shape[1]
    budget = BLOCK_VALUES if budget is None else budget
    bufs: dict[Any, np.ndarray] = {}  # one buffer per compute dtype, reused by every block
    for r0, g, m in _blocks(layout, k, budget):
        r1 = r0 + g * m
        dt = compute_dtype(values.dtype, g, k) if dtype is None else np.dtype(dtype)
        rows = slice(r0, r1) if layout.perm is None else layout.perm[r0:r1]
        xt = _load(values, rows, g, m, _buffer(bufs, dt, (k, g, m)))
        missing, too_large = _missing(xt, values)
        if too_large:  # float32 values near its max: this block in float64
            xt = _load(values, rows, g, m, _buffer(bufs, np.dtype(np.float64), (k, g, m)))
        yield r0, g, m, xt, missing


def to_block_rows(v: np.ndarray, r0: int, g: int, m: int) -> np.ndarray:
    """Sorted rows ``r0 : r0 + G m`` of the vector ``v`` in block-row order (block row
    ``i m + j`` is sorted row ``r0 + j G + i``)."""
    return v[r0 : r0 + g * m].reshape(m, g).T.reshape(-1)


FLOAT32_MAX_TERMS = 64
"""float32 rewards are computed in float32 when groups have at most this many rows and
rows this many rewards: each sum then has at most 64 terms (relative error within 64 ulp,
4e-6, even in the worst case; the squares are kept in range by the cell's span as in
float64); longer sums, and every other dtype, in float64."""


def compute_dtype(dtype: Any, group_size: int, n_rewards: int) -> Any:
    """The dtype a block of groups of ``group_size`` rows and ``n_rewards`` rewards is
    computed in."""
    short = max(group_size, n_rewards) <= FLOAT32_MAX_TERMS
    if dtype == np.float32 and short:
        return np.dtype(np.float32)
    return np.dtype(np.float64)
