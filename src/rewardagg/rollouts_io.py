"""Reading logged rollouts for ``rewardagg audit``: CSV, JSONL and (with pyarrow) Parquet.

A rollout file has one row per completion: a group column (the prompt id, verl's
``uid``) and one numeric column per reward. Other columns (prompt text, completion text,
ids) may be present and are ignored unless named.

Cells are parsed strictly, so that a bad file fails loudly instead of silently:

- empty cell, ``nan``, ``NaN``, ``null``, ``None``, ``NA`` (any case) or JSON ``null``:
  a missing reward (NaN), which the aggregation skips for that row;
- ``true`` / ``false`` (or JSON booleans): 1.0 / 0.0;
- anything else that ``float()`` rejects raises :class:`RolloutFileError` naming the
  column, the data row (1-based) and the line of the file.

Reward columns, when not given, are inferred: every column other than the group column,
the excluded columns and a few well-known bookkeeping names (``step``, ``index``, ``id``,
``seed``, ``advantage``...) whose first non-empty value is a number or a boolean.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "GROUP_COLUMN_CANDIDATES",
    "RolloutFileError",
    "Rollouts",
    "load_rollouts",
    "read_records",
]

#: Tried in this order when no group column is given.
GROUP_COLUMN_CANDIDATES = (
    "group",
    "group_id",
    "prompt_id",
    "uid",
    "prompt_idx",
    "query_id",
    "prompt",
)
#: Never inferred as rewards (case-insensitive); name them explicitly to use them anyway.
BOOKKEEPING_COLUMNS = frozenset(
    {"step", "global_step", "index", "idx", "id", "row", "row_id", "sample", "sample_id",
     "completion_id", "seed", "epoch", "iteration", "advantage", "advantages", "weight"}
)  # fmt: skip
_MISSING = frozenset({"", "nan", "null", "none", "na", "n/a"})
_TRUE, _FALSE = frozenset({"true"}), frozenset({"false"})


class RolloutFileError(ValueError):
    """A rollout file that cannot be audited (the CLI prints it and exits with code 2)."""


@dataclass
class Rollouts:
    """Rewards of logged completions, ready for :func:`rewardagg.advantages`.

    Attributes:
        rewards: ``(N, K)`` float64, NaN where missing, cost columns NOT yet negated.
        group_labels: ``(N,)`` object array of the group column's values, as read.
        reward_names: the K column names.
        group_column: name of the group column.
        inferred: whether the reward columns were inferred.
        source: the file read.
        lines: ``(N,)`` line of the file each row came from (for messages).
    """

    rewards: np.ndarray
    group_labels: np.ndarray
    reward_names: list[str]
    group_column: str
    inferred: bool = False
    source: str = ""
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_rows(self) -> int:
        return int(self.rewards.shape[0])

    def group_codes(self) -> np.ndarray:
        """``(N,)`` int64 codes of the group labels (first appearance order not kept)."""
        _, codes = np.unique(self.group_labels.astype(str), return_inverse=True)
        return codes.astype(np.int64).reshape(-1)


def _detect_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in ("csv", "jsonl", "parquet"):
            raise RolloutFileError(f"unknown format {fmt!r}; use csv, jsonl or parquet")
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz"):
        raise RolloutFileError(f"{path}: compressed files are not supported; decompress first")
    ext = suffixes[-1] if suffixes else ""
    if ext in (".csv", ".tsv"):
        return "csv"
    if ext in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if ext in (".parquet", ".pq"):
        return "parquet"
    raise RolloutFileError(
        f"{path}: cannot tell the format from the extension {ext!r}; "
        "pass --format csv|jsonl|parquet"
    )


def read_records(
    path: str | Path, fmt: str | None = None
) -> tuple[list[str], list[dict], list[int]]:
    """Read a rollout file into ``(columns, records, line_numbers)``.

    ``records`` are dicts from column name to raw value (a string for CSV, a JSON value
    for JSONL, a Python value for Parquet). Raises :class:`RolloutFileError` for a missing
    or empty file, a CSV without header, a JSONL line that is not a JSON object.
    """
    p = Path(path)
    if not p.exists():
        raise RolloutFileError(f"{p}: no such file")
    if p.is_dir():
        raise RolloutFileError(f"{p}: is a directory, not a file")
    kind = _detect_format(p, fmt)
    if kind == "parquet":
        return _read_parquet(p)
    if p.stat().st_size == 0:
        raise RolloutFileError(f"{p}: empty file")
    return _read_csv(p) if kind == "csv" else _read_jsonl(p)


def _read_csv(p: Path) -> tuple[list[str], list[dict], list[int]]:
    delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
    with open(p, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise RolloutFileError(f"{p}: empty file") from None
        except csv.Error as e:
            raise RolloutFileError(f"{p}: line 1: {e}") from None
        header = [h.strip() for h in header]
        if not any(header):
            raise RolloutFileError(f"{p}: line 1: empty header")
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise RolloutFileError(f"{p}: line 1: duplicate column name(s) {dupes}")
        records, lines = [], []
        try:
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise RolloutFileError(
                        f"{p}: line {reader.line_num}: {len(row)} fields, "
                        f"the header has {len(header)}"
                    )
                records.append(dict(zip(header, row, strict=True)))
                lines.append(reader.line_num)
        except csv.Error as e:
            raise RolloutFileError(f"{p}: line {reader.line_num}: {e}") from None
    if not records:
        raise RolloutFileError(f"{p}: no data rows (only a header)")
    return header, records, lines


def _read_jsonl(p: Path) -> tuple[list[str], list[dict], list[int]]:
    columns: list[str] = []
    seen: set[str] = set()
    records, lines = [], []
    with open(p, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise RolloutFileError(f"{p}: line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise RolloutFileError(
                    f"{p}: line {lineno}: expected a JSON object per line, got {type(obj).__name__}"
                )
            for k in obj:
                if k not in seen:
                    seen.add(k)
                    columns.append(k)
            records.append(obj)
            lines.append(lineno)
    if not records:
        raise RolloutFileError(f"{p}: empty file (no JSON lines)")
    return columns, records, lines


def _read_parquet(p: Path) -> tuple[list[str], list[dict], list[int]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RolloutFileError(f"{p}: reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise RolloutFileError(f"{p}: cannot read as Parquet ({e})") from None
    if table.num_rows == 0:
        raise RolloutFileError(f"{p}: empty file (no rows)")
    records = table.to_pylist()
    # Parquet has no lines; number rows so that "line" = data row + 1, as in a CSV.
    return list(table.column_names), records, list(range(2, len(records) + 2))


def parse_number(value: object) -> float | None:
    """A cell as float (NaN for missing); ``None`` when it is not a number."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        low = s.lower()
        if low in _MISSING:
            return math.nan
        if low in _TRUE:
            return 1.0
        if low in _FALSE:
            return 0.0
        try:
            return float(s)
        except ValueError:
            return None
    return None


def _is_missing(value: object) -> bool:
    x = parse_number(value)
    return x is not None and math.isnan(x)


def infer_group_column(columns: Sequence[str]) -> str | None:
    """The first of :data:`GROUP_COLUMN_CANDIDATES` present (case-insensitive), else None."""
    lower = {c.lower(): c for c in columns}
    for cand in GROUP_COLUMN_CANDIDATES:
        if cand in lower:
            return lower[cand]
    return None


def infer_reward_columns(
    columns: Sequence[str], records: Sequence[dict], *, skip: Sequence[str] = ()
) -> list[str]:
    """Columns whose first non-missing value is a number or boolean (see module docstring)."""
    skip_set = set(skip)
    out = []
    for c in columns:
        if c in skip_set or c.lower() in BOOKKEEPING_COLUMNS:
            continue
        first = next((r[c] for r in records if c in r and not _is_missing(r[c])), None)
        if first is not None and parse_number(first) is not None:
            out.append(c)
    return out


def load_rollouts(
    path: str | Path,
    *,
    group: str | None = None,
    rewards: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    fmt: str | None = None,
) -> Rollouts:
    """Read ``path`` and pick the group and reward columns; raises :class:`RolloutFileError`."""
    columns, records, lines = read_records(path, fmt)
    colset = set(columns)

    def missing(name: str, what: str) -> RolloutFileError:
        return RolloutFileError(
            f"{path}: {what} column {name!r} not found; columns are: {', '.join(columns)}"
        )

    if group is None:
        group = infer_group_column(columns)
        if group is None:
            raise RolloutFileError(
                f"{path}: no group column found (tried {', '.join(GROUP_COLUMN_CANDIDATES)}); "
                f"name it with --group; columns are: {', '.join(columns)}"
            )
    elif group not in colset:
        raise missing(group, "group")
    for name in exclude:
        if name not in colset:
            raise missing(name, "excluded")

    inferred = rewards is None
    if rewards is None:
        names = infer_reward_columns(columns, records, skip=[group, *exclude])
        if not names:
            raise RolloutFileError(
                f"{path}: no numeric reward columns found besides the group column {group!r}; "
                "name them with --rewards"
            )
    else:
        names = list(rewards)
        if not names:
            raise RolloutFileError(f"{path}: --rewards names no column")
        for name in names:
            if name not in colset:
                raise missing(name, "reward")
        if group in names:
            raise RolloutFileError(f"{path}: {group!r} is both the group and a reward column")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise RolloutFileError(f"{path}: reward column(s) named twice: {dupes}")

    n, k = len(records), len(names)
    values = np.empty((n, k), dtype=np.float64)
    labels = np.empty(n, dtype=object)
    for i, rec in enumerate(records):
        g = rec.get(group)
        if (
            g is None
            or (isinstance(g, str) and not g.strip())
            or (isinstance(g, float) and math.isnan(g))
        ):
            raise RolloutFileError(
                f"{path}: row {i + 1} (line {lines[i]}): empty group value in column {group!r}"
            )
        labels[i] = g if not isinstance(g, (list, dict)) else json.dumps(g, sort_keys=True)
        for j, name in enumerate(names):
            x = parse_number(rec.get(name))
            if x is None:
                raise RolloutFileError(
                    f"{path}: row {i + 1} (line {lines[i]}): column {name!r} has the "
                    f"non-numeric value {rec.get(name)!r}"
                )
            if math.isinf(x):
                raise RolloutFileError(
                    f"{path}: row {i + 1} (line {lines[i]}): column {name!r} is infinite ({x})"
                )
            values[i, j] = x
    return Rollouts(
        rewards=values,
        group_labels=labels,
        reward_names=names,
        group_column=group,
        inferred=inferred,
        source=str(path),
        lines=np.asarray(lines, dtype=np.int64),
    )
