"""Groups of completions: ``group_size`` (contiguous, as TRL and OpenRLHF lay rows out) or
``group_ids`` (any labels, any order, uneven sizes, as verl's ``uid``).

Internally rows are sorted once so that groups of equal size sit next to each other; each
run of equal-size groups (a *bucket*) is then a dense ``(groups, size, K)`` block and every
per-group statistic is a plain reduction over axis 1. Contiguous groups are one bucket and
need no sorting at all.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardagg._src.namespace import is_torch

__all__ = ["Bucket", "GroupLayout", "make_layout"]


@dataclass(frozen=True)
class Bucket:
    """``n_groups`` consecutive groups of ``size`` rows starting at sorted row ``start``."""

    start: int
    n_groups: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.n_groups * self.size


@dataclass(frozen=True)
class GroupLayout:
    """Where each group's rows are after sorting.

    ``perm[j]`` is the original row of sorted row ``j`` (``None``: already sorted).
    ``group_index[b]`` is the group number (order of first appearance) of the ``b``-th group
    in sorted order.
    """

    n_rows: int
    n_groups: int
    buckets: tuple[Bucket, ...]
    perm: np.ndarray | None
    group_index: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        """Start row of each group in sorted order, plus ``n_rows`` (length n_groups + 1)."""
        # buckets are consecutive (each starts where the previous stops): no sort needed
        starts = [b.start + np.arange(b.n_groups, dtype=np.int64) * b.size for b in self.buckets]
        return np.concatenate([*starts, np.array([self.n_rows], dtype=np.int64)])

    def sort_rows(self, x: Any, ops) -> Any:
        """Rows of ``x`` in sorted order (a view when already sorted)."""
        return x if self.perm is None else ops.index(x, self.perm)

    def unsort_rows(self, x: Any, ops) -> Any:
        """Inverse of :meth:`sort_rows` along the first axis."""
        if self.perm is None:
            return x
        out = ops.zeros(x.shape, like=x)
        if ops.name == "torch":
            out[ops.torch.from_numpy(self.perm).to(x.device)] = x
        else:
            out[self.perm] = x
        return out

    def blocks(self, x: Any):
        """``(bucket, view)`` pairs; ``view`` has shape ``(n_groups, size) + x.shape[1:]``."""
        for b in self.buckets:
            yield b, x[b.start : b.stop].reshape((b.n_groups, b.size, *tuple(x.shape[1:])))


def _check_group_size(group_size: Any, n_rows: int) -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral):
        raise TypeError(f"group_size must be a positive integer; got {group_size!r}")
    g = int(group_size)
    if g <= 0:
        raise ValueError(f"group_size must be a positive integer; got {g}")
    if n_rows % g:
        raise ValueError(
            f"the number of rows N={n_rows} is not divisible by group_size={g}; "
            "pass group_ids for uneven groups"
        )
    return g


_NAN = object()  # the one key every NaN label maps to


def _label_key(v: Any) -> Any:
    """A label as a dict key: equal values are one group, as in a Python dict (1, 1.0,
    True and numpy's 1.0 are one group; 1 and "1" are two), and every NaN is one group."""
    if isinstance(v, (float, np.floating)) and v != v:
        return _NAN
    return v


def _labels_to_index(ids: Any, n_rows: int) -> np.ndarray:
    """Group number of each row, numbered by first appearance. Labels are grouped by value
    like the keys of a Python dict, whatever the container (list, array, tensor)."""
    if is_torch(ids):
        ids = ids.detach().cpu().numpy()
    if isinstance(ids, np.ndarray):
        arr = ids
    else:
        labels = list(ids) if not isinstance(ids, (str, bytes)) else [ids]
        arr = np.empty(len(labels), dtype=object)
        arr[:] = labels  # keeps tuples and mixed types as they are (no string coercion)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
            arr = arr.astype(np.int64)
        elif all(isinstance(v, str) for v in labels):
            arr = arr.astype(str)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(
            f"group_ids must be 1-D with one label per row, length N={n_rows}; "
            f"got shape {arr.shape}"
        )
    if arr.dtype == object:  # any hashable labels (tuples, mixed types): hash, never sort
        seen: dict[Any, int] = {}
        try:
            return np.fromiter(
                (seen.setdefault(_label_key(v), len(seen)) for v in arr.tolist()), np.int64, n_rows
            )
        except TypeError as err:
            raise TypeError(f"group_ids labels must be hashable; {err}") from None
    _, first, inverse = np.unique(arr, return_index=True, return_inverse=True)
    rank = np.empty_like(first)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.reshape(-1)].astype(np.int64)


def make_layout(n_rows: int, group_size: Any = None, group_ids: Any = None) -> GroupLayout:
    """Validate the grouping arguments and build the sorted layout."""
    if (group_size is None) == (group_ids is None):
        which = "both" if group_size is not None else "neither"
        raise ValueError(
            f"pass exactly one of group_size (contiguous groups) or group_ids (labels); got {which}"
        )
    if group_size is not None:
        g = _check_group_size(group_size, n_rows)
        n = n_rows // g
        return GroupLayout(n_rows, n, (Bucket(0, n, g),), None, np.arange(n))
    index = _labels_to_index(group_ids, n_rows)
    n_groups = int(index.max()) + 1
    sizes = np.bincount(index, minlength=n_groups)
    # sort rows by (group size, group number); stable keeps row order inside a group
    key = sizes[index] * n_groups + index
    order = np.argsort(key, kind="stable")
    group_order = np.lexsort((np.arange(n_groups), sizes))
    buckets, start = [], 0
    for size in np.unique(sizes):
        count = int(np.count_nonzero(sizes == size))
        buckets.append(Bucket(start, count, int(size)))
        start += count * int(size)
    perm = None if np.array_equal(order, np.arange(n_rows)) else order
    return GroupLayout(n_rows, n_groups, tuple(buckets), perm, group_order.astype(np.int64))
