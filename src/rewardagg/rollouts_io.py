"""Reading logged rollouts for ``rewardagg audit``: CSV, TSV, JSONL and (with pyarrow) Parquet.

A rollout file has one row per completion: a group column (the prompt id, verl's
``uid``) and one numeric column per reward. Other columns (prompt text, completion text,
ids) may be present and are ignored unless named.

**Formats** (:data:`FORMATS`), from the extension unless given: ``csv`` (``.csv``), ``tsv``
(``.tsv``: CSV with tabs), ``jsonl`` (``.jsonl``, ``.ndjson``, ``.json``: one JSON object
per line) and ``parquet`` (``.parquet``, ``.pq``; needs pyarrow). The format decides the
delimiter, not the extension: ``fmt="tsv"`` reads any file as tab-separated.

Cells are parsed strictly, so that a bad file fails loudly instead of silently:

- empty cell, ``nan``, ``NaN``, ``null``, ``None``, ``NA`` (any case) or JSON ``null``:
  a missing reward (NaN), which the aggregation skips for that row;
- ``true`` / ``false`` (or JSON booleans): 1.0 / 0.0;
- anything else that ``float()`` rejects raises :class:`RolloutFileError` naming the
  column, the data row (1-based) and the line of the file; so do infinite values and
  integers outside the float64 range.

Reward columns, when not given, are inferred: every column other than the group column,
the excluded columns and a few well-known bookkeeping names (``step``, ``index``, ``id``,
``seed``, ``advantage``...) whose first non-empty value is a number or a boolean.

**Group labels** keep the type the file gives them, so that the audit groups rows as
:func:`rewardagg.advantages` does with ``group_ids``: by value, like the keys of a Python
dict (``1``, ``1.0`` and ``true`` are one group; ``1`` and ``"1"`` are two):

- JSONL and Parquet: the values as stored; JSON numbers are numbers and strings are
  strings (a JSON array label is a tuple, a JSON object label a frozenset of its items);
- CSV (and TSV) has only text, so: a group column whose every value is a decimal number
  (``12``, ``-3``, ``1.0``, ``2.5e3``, surrounding spaces allowed) is read as numbers, so
  ``1`` and ``1.0`` are one group (as pandas reads such a column); any other group column
  is kept as the exact text of each cell (``p1`` and ``p1 `` are two groups).

A missing group value (empty cell, JSON ``null``, NaN) is an error.

**Memory.** CSV and JSONL are read line by line straight into column arrays (8 bytes a
value); text columns that are not needed are not kept, group labels are stored once per
group. Peak memory stays within a few times the file size. Parquet reads only the group
and reward columns.

**Errors.** Every problem with the file is a :class:`RolloutFileError` (a ``ValueError``)
whose message starts with the path: no such file; not a regular file (a directory, a
FIFO, a device or a socket; these are never read, so a FIFO cannot block); an empty file;
not UTF-8 text (with the line and the byte); a Parquet, gzip or zip file, or UTF-16/32
text, read as CSV/JSONL; JSON nested too deeply; a malformed line; a bad cell.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import os
import re
import stat
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from rewardagg._src.grouping import _label_key, _labels_to_index

__all__ = [
    "FORMATS",
    "GROUP_COLUMN_CANDIDATES",
    "RolloutFileError",
    "Rollouts",
    "describe_file_kind",
    "load_rollouts",
    "read_records",
]

#: The formats :func:`load_rollouts` reads (``fmt=``; the command line's ``--format``).
FORMATS = ("csv", "tsv", "jsonl", "parquet")
#: The format of each file extension (lower case).
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
#: The text formats and their delimiter (JSONL has none).
_DELIMITERS = {"csv": ",", "tsv": "\t"}
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
_BOOLS = {"true": 1.0, "false": 0.0}
_SNIFF_BYTES = 4096
_UTF8_HINT = "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in.csv > out.csv)"
#: Leading bytes of files that are not UTF-8 text, and what to say about them.
_NOT_TEXT = (
    (codecs.BOM_UTF32_LE, "is UTF-32 text; save it as UTF-8"),
    (codecs.BOM_UTF32_BE, "is UTF-32 text; save it as UTF-8"),
    (codecs.BOM_UTF16_LE, "is UTF-16 text; save it as UTF-8"),
    (codecs.BOM_UTF16_BE, "is UTF-16 text; save it as UTF-8"),
    (b"\x1f\x8b", "is gzip-compressed; decompress it first"),
    (b"PK\x03\x04", "is a zip archive; extract it first"),
)
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")
_FLOAT_TEXT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")


class RolloutFileError(ValueError):
    """A rollout file that cannot be audited (the CLI prints it and exits with code 2)."""


@dataclass
class Rollouts:
    """Rewards of logged completions, ready for :func:`rewardagg.advantages`.

    Attributes:
        rewards: ``(N, K)`` float64, NaN where missing, cost columns NOT yet negated.
        group_labels: ``(N,)`` object array: each row's group label, typed as the module
            docstring says (one object per group: rows of a group share the label of its
            first row, so ``1`` and ``1.0`` in one JSONL file both show as ``1``).
        reward_names: the K column names.
        group_column: name of the group column.
        inferred: whether the reward columns were inferred.
        source: the file read.
        lines: ``(N,)`` line of the file each row came from (for messages).
        group_index: ``(N,)`` int64 group number of each row, in order of first
            appearance (``None``: computed from ``group_labels``).
    """

    rewards: np.ndarray
    group_labels: np.ndarray
    reward_names: list[str]
    group_column: str
    inferred: bool = False
    source: str = ""
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    group_index: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_rows(self) -> int:
        return int(self.rewards.shape[0])

    def group_codes(self) -> np.ndarray:
        """``(N,)`` int64 group number of each row (order of first appearance), grouping
        labels by value exactly as :func:`rewardagg.advantages` does with ``group_ids``."""
        if self.group_index is not None:
            return self.group_index
        return _labels_to_index(self.group_labels, self.n_rows)


# ---------------------------------------------------------------------------- opening
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def describe_file_kind(mode: int) -> str:
    """What an ``st_mode`` is, in words (``"a FIFO (named pipe)"``...); ``""`` for a
    regular file."""
    if stat.S_ISREG(mode):
        return ""
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


def _os_error(p: Path, err: OSError) -> RolloutFileError:
    """An ``OSError`` met opening ``p``, as a :class:`RolloutFileError`."""
    if isinstance(err, FileNotFoundError):
        return RolloutFileError(f"{p}: no such file")
    if isinstance(err, NotADirectoryError):
        return RolloutFileError(f"{p}: no such file (a part of the path is not a directory)")
    if isinstance(err, PermissionError):
        return RolloutFileError(f"{p}: permission denied")
    return RolloutFileError(f"{p}: cannot open ({err.strerror or err})")


def _regular_or_error(p: Path, mode: int) -> None:
    kind = describe_file_kind(mode)
    if kind == "a directory":
        raise RolloutFileError(f"{p}: is a directory, not a file")
    if kind:
        raise RolloutFileError(f"{p}: is {kind}, not a regular file; save the rollouts to a file")


def open_regular_file(path: str | Path) -> tuple[IO[bytes], int]:
    """Open ``path`` for reading bytes; ``(file, size)``. Anything but a regular file is
    refused without blocking: the path is checked first, then opened non-blocking and
    checked again, so a FIFO never waits for a writer."""
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except OSError as e:
        raise _os_error(p, e) from None
    except ValueError as e:  # an embedded NUL byte
        raise RolloutFileError(f"{p!r}: invalid path ({e})") from None
    _regular_or_error(p, mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except OSError as e:
        raise _os_error(p, e) from None
    try:
        st = os.fstat(fd)
        _regular_or_error(p, st.st_mode)
        return os.fdopen(fd, "rb"), int(st.st_size)
    except BaseException:
        os.close(fd)
        raise


def _detect_format(path: Path, fmt: str | None) -> str:
    """One of :data:`FORMATS`: ``fmt`` when given, else the one of the extension."""
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise RolloutFileError(
                f"{path}: unknown format {fmt!r}; use {', '.join(FORMATS[:-1])} or {FORMATS[-1]}"
            )
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz"):
        raise RolloutFileError(f"{path}: compressed files are not supported; decompress first")
    ext = suffixes[-1] if suffixes else ""
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    raise RolloutFileError(
        f"{path}: cannot tell the format from the extension {ext!r}; "
        f"pass --format {'|'.join(FORMATS)}"
    )


def _not_text(head: bytes, tail: bytes, kind: str) -> str:
    """Why a file starting with ``head`` and ending with ``tail`` cannot be ``kind``
    (csv or jsonl) text, or ``""``."""
    if head.startswith(b"PAR1") and tail.endswith(b"PAR1"):
        return "is a Parquet file, not text; read it with --format parquet"
    why = next((words for magic, words in _NOT_TEXT if head.startswith(magic)), "")
    if not why and b"\x00" in head:
        why = "contains NUL bytes: a binary file, or UTF-16/32 text without a byte-order mark"
    return f"{why} (read as {kind.upper()})" if why else ""


def _sniff(f: IO[bytes], size: int) -> tuple[bytes, bytes]:
    """The first and last few bytes of ``f`` (left at its start)."""
    head = f.read(_SNIFF_BYTES)
    tail = head[-4:]
    if size > _SNIFF_BYTES:
        f.seek(max(size - 4, 0))
        tail = f.read(4)
    f.seek(0)
    return head, tail


def _decode_error(p: Path, f: IO[bytes]) -> RolloutFileError:
    """Where ``f``'s first byte that is not UTF-8 is (line and byte), as an error."""
    f.seek(0)
    for lineno, raw in enumerate(f, start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return RolloutFileError(
                f"{p}: line {lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte "
                f"{e.start + 1} of the line); {_UTF8_HINT}"
            )
    return RolloutFileError(f"{p}: not UTF-8 text; {_UTF8_HINT}")


# ---------------------------------------------------------------------------- cells
def _short(value: object, limit: int = 60) -> str:
    """``repr(value)``, shortened for a message (never fails)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {int((value.bit_length() - 1) * math.log10(2)) + 1} digits"
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        return f"a {type(value).__name__}"
    if len(text) > limit:
        text = f"{text[: limit - 20]}...{text[-10:]} ({len(text)} characters)"
    return text


@dataclass(frozen=True)
class _Bad:
    """A reward cell that cannot be used: what is wrong, and whether it is a number (an
    infinite or out-of-range number still makes the column a reward column)."""

    message: str
    number: bool


def _cell_value(value: object) -> float | _Bad:
    """A reward cell as float64 (NaN for missing), or :class:`_Bad`."""
    if value is None:
        return math.nan
    try:
        x = float(value)  # type: ignore[arg-type]
    except OverflowError:
        return _Bad(f"has {_short(value)}, outside the float64 range", True)
    except (TypeError, ValueError):
        if not isinstance(value, str):
            return _Bad(f"has the non-numeric value {_short(value)}", False)
        low = value.strip().lower()
        if low in _MISSING:
            return math.nan
        if low in _BOOLS:
            return _BOOLS[low]
        return _Bad(f"has the non-numeric value {_short(value)}", False)
    if math.isinf(x):
        return _Bad(f"is infinite or outside the float64 range ({_short(value)})", True)
    return x


def parse_number(value: object) -> float | None:
    """A cell as float (NaN for missing); ``None`` when it is not a usable number."""
    x = _cell_value(value)
    if not isinstance(x, _Bad):
        return x
    try:
        return float(value) if x.number else None  # type: ignore[arg-type]
    except (OverflowError, TypeError, ValueError):  # an integer beyond float64
        return None


def _hashable(value: Any) -> Any:
    """A JSON value as a dict key: arrays as tuples, objects as frozensets of items."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return frozenset((k, _hashable(v)) for k, v in value.items())
    return value


def _label(value: Any) -> Any:
    """A group cell as a label, or ``None`` when it is missing (null, blank, NaN)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return _hashable(value)


def _csv_number(text: str) -> int | float | None:
    """A CSV group cell as a number when it is a decimal number, else ``None``."""
    try:
        if _INT_TEXT.fullmatch(text):
            return int(text)
        if _FLOAT_TEXT.fullmatch(text):
            x = float(text)
            return x if math.isfinite(x) else None
    except ValueError:  # an integer longer than Python converts
        return None
    return None


# ---------------------------------------------------------------------------- columns
#: A problem with a row: (row index, line, message).
_Problem = tuple[int, int, str]


class _Numbers:
    """One column read as float64 (NaN where missing), until a cell cannot be used: then
    the first such cell is kept as :attr:`problem` and the values are dropped."""

    __slots__ = ("name", "number", "problem", "values")

    def __init__(self, name: str, n_before: int) -> None:
        self.name = name
        self.values: array | None = array("d", [math.nan]) * n_before
        self.problem: _Problem | None = None
        self.number = False  # the first non-missing value is a number (set when known)

    def add(self, value: object, row: int, line: int) -> None:
        """Append the cell of data row ``row``; rows skipped before it are missing."""
        values = self.values
        if values is None:
            return
        if len(values) < row:
            values.extend(array("d", [math.nan]) * (row - len(values)))
        x = _cell_value(value)
        if isinstance(x, _Bad):
            self._give_up(x, row, line)
        else:
            values.append(x)

    def _give_up(self, bad: _Bad, row: int, line: int) -> None:
        assert self.values is not None
        self.number = bool(np.any(~np.isnan(np.frombuffer(self.values)))) or bad.number
        self.problem = (row, line, f"column {self.name!r} {bad.message}")
        self.values = None

    def finish(self, n_rows: int) -> np.ndarray | None:
        """The values padded to ``n_rows`` (``None`` after a problem)."""
        if self.values is None:
            return None
        if isinstance(self.values, np.ndarray):  # read whole (Parquet)
            self.number = bool(np.any(~np.isnan(self.values)))
            return self.values
        if len(self.values) < n_rows:
            self.values.extend(array("d", [math.nan]) * (n_rows - len(self.values)))
        out = np.frombuffer(self.values, dtype=np.float64)
        self.number = bool(np.any(~np.isnan(out)))
        return out


class _Labels:
    """One column read as group labels: a code per row (-1: missing) and one key per
    group, numbered in order of first appearance."""

    __slots__ = ("codes", "index", "name", "problem")

    def __init__(self, name: str, n_before: int, first_line: int) -> None:
        self.name = name
        self.index: dict[Any, int] = {}
        self.codes = array("q", [-1]) * n_before
        self.problem: _Problem | None = (0, first_line, self._empty()) if n_before else None

    def _empty(self) -> str:
        return f"empty group value in column {self.name!r}"

    def add(self, value: object, row: int, line: int) -> None:
        key = _label(value)
        if key is None:
            if self.problem is None:
                self.problem = (row, line, self._empty())
            self.codes.append(-1)
            return
        self.codes.append(self.index.setdefault(key, len(self.index)))


def _fold_labels(codes: np.ndarray, keys: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Merge the groups whose keys are equal as dict keys (``1`` and ``1.0``, every NaN),
    keeping the order of first appearance and the first key of each."""
    merged: dict[Any, int] = {}
    remap = np.fromiter(
        (merged.setdefault(_label_key(k), len(merged)) for k in keys), np.int64, len(keys)
    )
    firsts: dict[int, Any] = {}
    for k, code in zip(keys, remap.tolist(), strict=True):
        firsts.setdefault(code, k)
    return remap[codes], [firsts[i] for i in range(len(firsts))]


def _csv_label_keys(keys: list[Any]) -> list[Any]:
    """CSV group labels (text) as numbers when every one is a decimal number."""
    numbers = [_csv_number(k) if isinstance(k, str) else None for k in keys]
    return keys if any(x is None for x in numbers) else numbers


# ---------------------------------------------------------------------------- streaming
class _Columns:
    """Rows of a CSV or JSONL file, added one at a time, kept as column arrays.

    Keeps numbers for the columns that may be rewards (the named ones, or every column but
    the group, the excluded and the bookkeeping ones) and labels for the group column (the
    named one, or the best :data:`GROUP_COLUMN_CANDIDATES` seen so far)."""

    def __init__(
        self, group: str | None, rewards: Sequence[str] | None, exclude: Sequence[str]
    ) -> None:
        self.group = group
        self.wanted = None if rewards is None else set(rewards)
        self.skip = set(exclude) | ({group} if group is not None else set())
        self.columns: list[str] = []
        self.seen: set[str] = set()
        self.numbers: dict[str, _Numbers] = {}
        self.labels: dict[str, _Labels] = {}
        self.lines = array("q")
        self.n_rows = 0

    def _keeps_numbers(self, name: str) -> bool:
        if self.wanted is not None:
            return name in self.wanted
        return name not in self.skip and name.lower() not in BOOKKEEPING_COLUMNS

    def _rank(self, name: str) -> int | None:
        """Priority of ``name`` as the group column (0 best), ``None``: never the group."""
        if self.group is not None:
            return 0 if name == self.group else None
        low = name.lower()
        return GROUP_COLUMN_CANDIDATES.index(low) if low in GROUP_COLUMN_CANDIDATES else None

    def _new_column(self, name: str, line: int) -> None:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise RolloutFileError(
                f"line {line}: the column name {name!r} is not valid Unicode"
            ) from None
        self.seen.add(name)
        self.columns.append(name)
        if self._keeps_numbers(name):
            self.numbers[name] = _Numbers(name, self.n_rows)
        rank = self._rank(name)
        if rank is None:
            return
        if any((r := self._rank(n)) is not None and r <= rank for n in self.labels):
            return  # only the best group column so far is kept
        self.labels = {name: _Labels(name, self.n_rows, self.lines[0] if self.n_rows else line)}

    def add(self, record: dict[str, Any], line: int) -> None:
        """Add one data row (column name -> cell) read from line ``line``."""
        row = self.n_rows
        numbers = self.numbers
        for name, value in record.items():
            col = numbers.get(name)
            if col is None:
                if name in self.seen:
                    continue
                self._new_column(name, line)
                col = numbers.get(name)
                if col is None:
                    continue
            col.add(value, row, line)
        for lab in self.labels.values():
            lab.add(record.get(lab.name), row, line)
        self.lines.append(line)
        self.n_rows = row + 1


def _csv_records(
    text: Iterator[str] | IO[str], p: Path, delimiter: str
) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, record)`` of each data row of a CSV text stream (blank rows skipped)."""
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            raise RolloutFileError(f"{p}: empty file")
        header = [h.strip() for h in header]
        if not any(header):
            raise RolloutFileError(f"{p}: line 1: empty header")
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise RolloutFileError(f"{p}: line 1: duplicate column name(s) {dupes}")
        for row in reader:
            if not "".join(row).strip():
                continue
            if len(row) != len(header):
                raise RolloutFileError(
                    f"{p}: line {reader.line_num}: {len(row)} fields, the header has {len(header)}"
                )
            yield reader.line_num, dict(zip(header, row, strict=True))
    except csv.Error as e:
        raise RolloutFileError(f"{p}: line {reader.line_num}: {e}") from None


def _json_line(line: str, lineno: int, p: Path) -> dict[str, Any]:
    """One JSONL line as a JSON object."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise RolloutFileError(f"{p}: line {lineno}: not valid JSON ({e.msg})") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise RolloutFileError(f"{p}: line {lineno}: not valid JSON ({e})") from None
    except RecursionError:
        raise RolloutFileError(f"{p}: line {lineno}: JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise RolloutFileError(
            f"{p}: line {lineno}: expected a JSON object per line, got {type(obj).__name__}"
        )
    return obj


def _jsonl_records(text: IO[str], p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, record)`` of each non-blank line of a JSONL text stream."""
    for lineno, line in enumerate(text, start=1):
        if line.strip():
            yield lineno, _json_line(line, lineno, p)


def _records(f: IO[bytes], p: Path, kind: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, record)`` of each data row of a CSV or JSONL file; a decoding error is a
    :class:`RolloutFileError` naming the line and the byte."""
    delimiter = _DELIMITERS.get(kind)
    with io.TextIOWrapper(f, encoding="utf-8-sig", newline="" if delimiter else None) as t:
        try:
            if delimiter:
                yield from _csv_records(t, p, delimiter)
            else:
                yield from _jsonl_records(t, p)
        except UnicodeDecodeError:
            raise _decode_error(p, f) from None


def _stream(
    f: IO[bytes],
    p: Path,
    kind: str,
    group: str | None,
    rewards: Sequence[str] | None,
    exclude: Sequence[str],
) -> _Columns:
    """Read a CSV or JSONL file into :class:`_Columns`."""
    cols = _Columns(group, rewards, exclude)
    for line, record in _records(f, p, kind):
        try:
            cols.add(record, line)
        except RecursionError:  # a label nested almost as deep as json allows
            raise RolloutFileError(f"{p}: line {line}: JSON nested too deeply") from None
        except RolloutFileError as e:
            raise RolloutFileError(f"{p}: {e}") from None
    if cols.n_rows == 0:
        raise RolloutFileError(
            f"{p}: no data rows (only a header)"
            if kind in _DELIMITERS
            else f"{p}: empty file (no JSON lines)"
        )
    return cols


# ---------------------------------------------------------------------------- parquet
def _pyarrow(p: Path) -> Any:
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet
    except ImportError:
        raise RolloutFileError(f"{p}: reading Parquet needs pyarrow: pip install pyarrow") from None
    return pyarrow


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _arrow_is_number(pa: Any, t: Any) -> bool:
    ty = pa.types
    return bool(ty.is_integer(t) or ty.is_floating(t) or ty.is_boolean(t) or ty.is_decimal(t))


def _arrow_numbers(pa: Any, name: str, col: Any) -> _Numbers:
    """A Parquet column as :class:`_Numbers`: numeric types converted by Arrow, any other
    type cell by cell as a JSON value would be."""
    out = _Numbers(name, 0)
    if _arrow_is_number(pa, col.type) or pa.types.is_null(col.type):
        x = np.array(pa.compute.cast(col, pa.float64(), safe=False).to_numpy(), copy=True)
        bad = np.flatnonzero(np.isinf(x))
        if bad.size:
            i = int(bad[0])
            out._give_up(_Bad(f"is infinite or outside the float64 range ({x[i]})", True), i, i + 2)
        else:
            out.values = x  # type: ignore[assignment]  # an array, already complete
        return out
    for i, value in enumerate(col.to_pylist()):
        out.add(value, i, i + 2)
        if out.values is None:
            break
    return out


def _arrow_labels(pa: Any, name: str, col: Any) -> tuple[np.ndarray, list[Any], _Problem | None]:
    """A Parquet group column as ``(codes, keys, first problem)``."""
    labels = _Labels(name, 0, 0)
    try:
        if pa.types.is_dictionary(col.type):  # read dictionary-encoded (text)
            enc = col.unify_dictionaries().combine_chunks()
        else:
            enc = col.combine_chunks().dictionary_encode()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        enc = None
    if enc is None:  # nested types: one value at a time
        for i, value in enumerate(col.to_pylist()):
            labels.add(value, i, i + 2)
        return np.frombuffer(labels.codes, dtype=np.int64), list(labels.index), labels.problem
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    keys = [_label(v) for v in enc.dictionary.to_pylist()]
    missing = [i for i, k in enumerate(keys) if k is None]
    codes[np.isin(codes, missing)] = -1
    problem = None
    if np.any(codes < 0):
        i = int(np.argmax(codes < 0))
        problem = (i, i + 2, labels._empty())
    return codes, keys, problem


def _read_column(pf: Any, name: str) -> Any:
    """Column ``name`` of Parquet file ``pf``, read alone and on one thread (a threaded
    read of every column at once holds several times the data)."""
    return pf.read(columns=[name], use_threads=False).column(0)


def _read_labels(pa: Any, f: IO[bytes], pf: Any, name: str) -> Any:
    """Column ``name`` of the Parquet file ``f`` (read as ``pf``); text is read
    dictionary-encoded (a string per distinct value, not per row)."""
    t = pf.schema_arrow.field(name).type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        f.seek(0)
        pf = pa.parquet.ParquetFile(f, pre_buffer=False, read_dictionary=[name])
    return _read_column(pf, name)


def _parquet_schema(p: Path, f: IO[bytes]) -> tuple[Any, Any, list[str]]:
    pa = _pyarrow(p)
    try:
        pf = pa.parquet.ParquetFile(f, pre_buffer=False)
        columns = list(pf.schema_arrow.names)
        n_rows = pf.metadata.num_rows
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise RolloutFileError(f"{p}: cannot read as Parquet ({_first_line(e)})") from None
    if n_rows == 0:
        raise RolloutFileError(f"{p}: empty file (no rows)")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise RolloutFileError(f"{p}: duplicate column name(s) {dupes}")
    return pa, pf, columns


def _first_text_is_number(pf: Any, name: str) -> bool:
    """Whether the first non-missing value of text column ``name`` is a number."""
    for batch in pf.iter_batches(batch_size=1024, columns=[name]):
        for value in batch.column(0).to_pylist():
            x = _cell_value(value)
            if isinstance(x, _Bad):
                return x.number
            if not math.isnan(x):
                return True
    return False


def _parquet_reward_columns(pa: Any, pf: Any, columns: Sequence[str], skip: set[str]) -> list[str]:
    """The columns inferred as rewards: numeric or boolean ones, and text ones whose first
    non-missing value is a number (bookkeeping names and ``skip`` left out)."""
    out = []
    for name, t in zip(columns, pf.schema_arrow.types, strict=True):
        if name in skip or name.lower() in BOOKKEEPING_COLUMNS:
            continue
        text = pa.types.is_string(t) or pa.types.is_large_string(t)
        if _arrow_is_number(pa, t) or (text and _first_text_is_number(pf, name)):
            out.append(name)
    return out


def _parquet(
    f: IO[bytes], p: Path, group: str | None, rewards: Sequence[str] | None, exclude: Sequence[str]
) -> Rollouts:
    """Read the group and reward columns of a Parquet file."""
    pa, pf, columns = _parquet_schema(p, f)
    group = _check_columns(p, columns, group, rewards, exclude)
    try:
        inferred = rewards is None
        if rewards is None:
            rewards = _parquet_reward_columns(pa, pf, columns, {group, *exclude})
        numbers = {}
        for c in rewards:  # copied out of Arrow's memory, which is then given back
            numbers[c] = _arrow_numbers(pa, c, _read_column(pf, c))
            pa.default_memory_pool().release_unused()
        codes, keys, problem = _arrow_labels(pa, group, _read_labels(pa, f, pf, group))
        pa.default_memory_pool().release_unused()
    except RolloutFileError:
        raise
    except Exception as e:
        raise RolloutFileError(f"{p}: cannot read as Parquet ({_first_line(e)})") from None
    n = codes.shape[0]
    if inferred:  # as for CSV: only the columns whose first present value is a number
        for col in numbers.values():
            col.finish(n)
        rewards = [c for c in rewards if numbers[c].number]
    lines = np.arange(2, n + 2, dtype=np.int64)  # no lines: "line" = data row + 1, as in a CSV
    return _assemble(
        p, columns, numbers, (codes, keys, problem), lines, group, rewards, inferred, csv=False
    )


# ---------------------------------------------------------------------------- assembly
def infer_group_column(columns: Sequence[str]) -> str | None:
    """The first of :data:`GROUP_COLUMN_CANDIDATES` present (case-insensitive), else None."""
    lower = {c.lower(): c for c in columns}
    for cand in GROUP_COLUMN_CANDIDATES:
        if cand in lower:
            return lower[cand]
    return None


def _check_columns(
    p: Path,
    columns: Sequence[str],
    group: str | None,
    rewards: Sequence[str] | None,
    exclude: Sequence[str],
) -> str:
    """The group column (named or inferred), after checking that every named column
    exists; raises :class:`RolloutFileError`."""
    colset = set(columns)

    def missing(name: str, what: str) -> RolloutFileError:
        return RolloutFileError(
            f"{p}: {what} column {name!r} not found; columns are: {', '.join(columns)}"
        )

    if group is None:
        group = infer_group_column(columns)
        if group is None:
            raise RolloutFileError(
                f"{p}: no group column found (tried {', '.join(GROUP_COLUMN_CANDIDATES)}); "
                f"name it with --group; columns are: {', '.join(columns)}"
            )
    elif group not in colset:
        raise missing(group, "group")
    for name in exclude:
        if name not in colset:
            raise missing(name, "excluded")
    if rewards is not None:
        if not rewards:
            raise RolloutFileError(f"{p}: --rewards names no column")
        for name in rewards:
            if name not in colset:
                raise missing(name, "reward")
        if group in rewards:
            raise RolloutFileError(f"{p}: {group!r} is both the group and a reward column")
        dupes = sorted({n for n in rewards if list(rewards).count(n) > 1})
        if dupes:
            raise RolloutFileError(f"{p}: reward column(s) named twice: {dupes}")
    return group


def _first_problem(problems: Sequence[_Problem | None]) -> _Problem | None:
    """The problem of the earliest row (the first listed on a tie)."""
    found = [(pr[0], i, pr) for i, pr in enumerate(problems) if pr is not None]
    return min(found)[2] if found else None


def _assemble(
    p: Path,
    columns: Sequence[str],
    numbers: dict[str, _Numbers],
    labels: tuple[np.ndarray, list[Any], _Problem | None],
    lines: np.ndarray,
    group: str,
    names: Sequence[str],
    inferred: bool,
    *,
    csv: bool,
) -> Rollouts:
    """Check the chosen columns and build :class:`Rollouts` (freeing the columns)."""
    n = lines.shape[0]
    codes, keys, label_problem = labels
    if not names:
        raise RolloutFileError(
            f"{p}: no numeric reward columns found besides the group column {group!r}; "
            "name them with --rewards"
        )
    bad = _first_problem([label_problem, *(numbers[c].problem for c in names)])
    if bad is not None:
        row, line, message = bad
        raise RolloutFileError(f"{p}: row {row + 1} (line {line}): {message}")
    values = np.empty((n, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        col = numbers.pop(name).finish(n)
        values[:, j] = col if col is not None else np.nan
    codes, keys = _fold_labels(codes, _csv_label_keys(keys) if csv else keys)
    table = np.empty(len(keys), dtype=object)
    for i, key in enumerate(keys):
        table[i] = key
    return Rollouts(
        rewards=values,
        group_labels=table[codes],
        reward_names=list(names),
        group_column=group,
        inferred=inferred,
        source=str(p),
        lines=lines,
        group_index=codes,
    )


def _from_columns(
    p: Path,
    cols: _Columns,
    kind: str,
    group: str | None,
    rewards: Sequence[str] | None,
    exclude: Sequence[str],
) -> Rollouts:
    """:class:`Rollouts` from the columns of a CSV or JSONL file."""
    group = _check_columns(p, cols.columns, group, rewards, exclude)
    numbers = cols.numbers
    if rewards is None:
        for col in numbers.values():
            col.finish(cols.n_rows)  # decides .number for the columns still read
        names = [c for c in cols.columns if c != group and c in numbers and numbers[c].number]
    else:
        names = list(rewards)
    lab = cols.labels[group]
    labels = (np.frombuffer(lab.codes, dtype=np.int64), list(lab.index), lab.problem)
    lines = np.frombuffer(cols.lines, dtype=np.int64)
    return _assemble(
        p,
        cols.columns,
        numbers,
        labels,
        lines,
        group,
        names,
        rewards is None,
        csv=kind in _DELIMITERS,
    )


# ---------------------------------------------------------------------------- public API
def load_rollouts(
    path: str | Path,
    *,
    group: str | None = None,
    rewards: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    fmt: str | None = None,
) -> Rollouts:
    """Read ``path`` and pick the group and reward columns; raises :class:`RolloutFileError`
    (a ``ValueError``) for anything wrong with the file (see the module docstring)."""
    p = Path(path)
    f, size = open_regular_file(p)
    with f:
        kind = _detect_format(p, fmt)
        if size == 0:
            raise RolloutFileError(f"{p}: empty file")
        if kind == "parquet":
            return _parquet(f, p, group, rewards, exclude)
        why = _not_text(*_sniff(f, size), kind)
        if why:
            raise RolloutFileError(f"{p}: {why}")
        cols = _stream(f, p, kind, group, rewards, exclude)
    return _from_columns(p, cols, kind, group, rewards, exclude)


def read_records(
    path: str | Path, fmt: str | None = None, *, limit: int | None = None
) -> tuple[list[str], list[dict], list[int]]:
    """Read a rollout file into ``(columns, records, line_numbers)``, every cell kept.

    ``records`` are dicts from column name to raw value (a string for CSV, a JSON value
    for JSONL, a Python value for Parquet). Raises :class:`RolloutFileError` as
    :func:`load_rollouts` does. It holds every cell as a Python object: for large files
    use :func:`load_rollouts`, which keeps only the needed columns as arrays, or read the
    first ``limit`` records only (``columns`` are then those seen in them).
    """
    p = Path(path)
    f, size = open_regular_file(p)
    with f:
        kind = _detect_format(p, fmt)
        if size == 0:
            raise RolloutFileError(f"{p}: empty file")
        if kind == "parquet":
            _, pf, columns = _parquet_schema(p, f)
            try:
                if limit is None:
                    records = pf.read().to_pylist()
                else:
                    batches = pf.iter_batches(batch_size=max(limit, 1))
                    records = next(batches).to_pylist()[:limit]
            except Exception as e:
                raise RolloutFileError(f"{p}: cannot read as Parquet ({_first_line(e)})") from None
            return columns, records, list(range(2, len(records) + 2))
        why = _not_text(*_sniff(f, size), kind)
        if why:
            raise RolloutFileError(f"{p}: {why}")
        known: dict[str, None] = {}
        records, lines = [], []
        for line, record in _records(f, p, kind):
            if limit is not None and len(records) >= limit:
                break
            known.update(dict.fromkeys(record))
            records.append(record)
            lines.append(line)
    if not records:
        raise RolloutFileError(f"{p}: no data rows")
    return list(known), records, lines
