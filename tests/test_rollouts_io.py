"""The rollout reader (``rewardagg.rollouts_io``): bad files, label types, memory, fuzz.

Runtime: about 5 s, most of it the fuzz test (2,000 hypothesis examples in every profile).

One regression test per defect of issue 14, item 2 (each failed before the fix with an
exception other than ``RolloutFileError``, a wrong message or too much memory): binary
file named .csv, Latin-1 CSV, UTF-16 CSV, Parquet read as CSV, a 400-digit JSON integer,
JSON nested 100,000 deep, FIFOs and devices reported as "empty file", ~40x the file size
in memory, and group labels stringified (``1`` and ``"1"`` merged). The command line's
side (exit code 2, output paths, ``--z-level nan``) is in ``test_audit_cli.py``.
"""

from __future__ import annotations

import codecs
import collections
import json
import os
import pathlib
import stat
import tempfile
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewardagg._src.grouping import _labels_to_index
from rewardagg.audit import run_audit
from rewardagg.rollouts_io import (
    RolloutFileError,
    describe_file_kind,
    load_rollouts,
    read_records,
)

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover - the Parquet tests skip
    pa = pq = None

needs_pyarrow = pytest.mark.skipif(pa is None, reason="pyarrow is not installed")


def _write(tmp_path: pathlib.Path, name: str, data: bytes | str) -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _check(data) -> None:
    """Invariants of every successful read."""
    n, k = data.rewards.shape
    assert data.rewards.dtype == np.float64 and k == len(data.reward_names) >= 1
    assert not np.any(np.isinf(data.rewards))
    assert data.group_labels.shape == (n,) and data.lines.shape == (n,)
    assert np.all(np.diff(data.lines) > 0)
    codes = data.group_codes()
    assert codes.dtype == np.int64 and codes.shape == (n,)
    # the same groups as the core makes of the labels
    np.testing.assert_array_equal(codes, _labels_to_index(data.group_labels, n))


# ----------------------------------------------------------------------------- item 2
def test_binary_file_named_csv(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    with pytest.raises(RolloutFileError, match=r"noise\.csv: contains NUL bytes"):
        load_rollouts(_write(tmp_path, "noise.csv", noise))
    no_nul = noise.replace(b"\x00", b"\x01")
    with pytest.raises(RolloutFileError, match=r"line \d+: not UTF-8 text \(byte 0x"):
        load_rollouts(_write(tmp_path, "noise2.csv", no_nul))


def test_latin1_csv_names_the_line_and_the_byte(tmp_path):
    path = _write(tmp_path, "latin1.csv", "group,a,note\n0,1,ok\n0,2,caf\xe9\n".encode("latin-1"))
    with pytest.raises(RolloutFileError, match=r"line 3: not UTF-8 text \(byte 0xe9 at byte 8"):
        load_rollouts(path)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_utf16_and_utf32_csv(tmp_path, encoding):
    path = _write(tmp_path, "wide.csv", "group,a\n0,1\n0,2\n".encode(encoding))
    with pytest.raises(RolloutFileError, match=f"is {encoding.upper()} text; save it as UTF-8"):
        load_rollouts(path)
    no_bom = "group,a\n0,1\n".encode(encoding + "-le")
    with pytest.raises(RolloutFileError, match="NUL bytes"):
        load_rollouts(_write(tmp_path, "wide2.csv", no_bom))


def test_utf8_with_bom_is_fine(tmp_path):
    data = load_rollouts(_write(tmp_path, "bom.csv", codecs.BOM_UTF8 + b"group,a\n0,1\n0,2\n"))
    assert data.group_column == "group" and data.rewards[:, 0].tolist() == [1.0, 2.0]


def test_parquet_read_as_csv(tmp_path):
    # the bytes of a Parquet file start and end with PAR1 (no pyarrow needed to fake one)
    fake = b"PAR1\x15\x04\x15\xff\xfe\x00" + bytes(range(128, 256)) + b"\x00\x00PAR1"
    path = _write(tmp_path, "rollouts.parquet", fake)
    for fmt in ("csv", "jsonl"):
        with pytest.raises(RolloutFileError, match="is a Parquet file, not text; read it with"):
            load_rollouts(path, fmt=fmt)


def test_gzip_read_as_csv(tmp_path):
    import gzip

    path = _write(tmp_path, "r.csv", gzip.compress(b"group,a\n0,1\n"))
    with pytest.raises(RolloutFileError, match="gzip-compressed; decompress it first"):
        load_rollouts(path)


def test_400_digit_json_integer(tmp_path):
    big = "9" * 400
    path = _write(tmp_path, "big.jsonl", f'{{"group": 0, "a": 1}}\n{{"group": 0, "a": {big}}}\n')
    with pytest.raises(
        RolloutFileError,
        match=r"row 2 \(line 2\): column 'a' has an integer of about 400 digits, outside the "
        "float64 range",
    ):
        load_rollouts(path)
    # as a group label a big integer is just a label
    ok = _write(tmp_path, "label.jsonl", f'{{"group": {big}, "a": 1}}\n{{"group": 1, "a": 2}}\n')
    data = load_rollouts(ok)
    assert data.group_codes().tolist() == [0, 1] and data.group_labels[0] == int(big)
    # beyond Python's 4300-digit limit json itself refuses it
    huge = _write(tmp_path, "huge.jsonl", f'{{"group": 0, "a": {"9" * 5000}}}\n')
    with pytest.raises(RolloutFileError, match=r"line 1: not valid JSON \(Exceeds the limit"):
        load_rollouts(huge)


def test_json_nested_100000_deep(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    path = _write(tmp_path, "deep.jsonl", f'{{"group": 0, "a": 1}}\n{{"group": 0, "a": {deep}}}\n')
    with pytest.raises(RolloutFileError, match="line 2: JSON nested too deeply"):
        load_rollouts(path)


def test_json_infinity_and_out_of_range_text(tmp_path):
    path = _write(tmp_path, "inf.jsonl", '{"group": 0, "a": 1e400}\n')
    with pytest.raises(RolloutFileError, match="'a' is infinite or outside the float64 range"):
        load_rollouts(path)
    path = _write(tmp_path, "inf.csv", "group,a\n0,1\n0,-1e999\n")
    with pytest.raises(RolloutFileError, match=r"row 2 \(line 3\): column 'a' is infinite"):
        load_rollouts(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_named_and_never_read(tmp_path):
    fifo = tmp_path / "rollouts.csv"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would block
    with pytest.raises(RolloutFileError, match=r"is a FIFO \(named pipe\), not a regular file"):
        load_rollouts(fifo)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_devices_are_named(tmp_path):
    for dev in ("/dev/null", "/dev/zero"):
        if os.path.exists(dev):
            with pytest.raises(RolloutFileError, match="is a character device, not a regular"):
                load_rollouts(dev, fmt="csv")


def test_describe_file_kind():
    assert describe_file_kind(stat.S_IFREG | 0o644) == ""
    assert describe_file_kind(stat.S_IFDIR) == "a directory"
    assert describe_file_kind(stat.S_IFIFO) == "a FIFO (named pipe)"
    assert describe_file_kind(stat.S_IFBLK) == "a block device"
    assert describe_file_kind(stat.S_IFSOCK) == "a socket"


def _rows_csv(path: pathlib.Path, n: int, k: int = 4) -> None:
    rng = np.random.default_rng(0)
    r = np.round(rng.normal(size=(n, k)), 6)
    with open(path, "w") as f:
        f.write("prompt_id,completion," + ",".join(f"r{j}" for j in range(k)) + "\n")
        for i in range(n):
            f.write(f"p{i // 8},some text {i}," + ",".join(repr(float(x)) for x in r[i]) + "\n")


def test_memory_stays_within_a_few_times_the_file_size(tmp_path):
    # Before: a dict of strings per row, ~40x the file size. Now column arrays.
    path = tmp_path / "big.csv"
    _rows_csv(path, 20_000)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        data = load_rollouts(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.n_rows == 20_000 and data.reward_names == ["r0", "r1", "r2", "r3"]
    assert peak < 5 * size, f"peak {peak / size:.1f}x the file size"


# ----------------------------------------------------------------------------- labels
def test_json_labels_keep_their_type(tmp_path):
    rows = [
        {"group": 1, "a": 1}, {"group": "1", "a": 2}, {"group": 1.0, "a": 3},
        {"group": True, "a": 4}, {"group": "1", "a": 5}, {"group": [1, "x"], "a": 6},
        {"group": [1, "x"], "a": 7}, {"group": {"p": 1}, "a": 8},
    ]  # fmt: skip
    path = _write(tmp_path, "typed.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    data = load_rollouts(path)
    _check(data)
    # 1 == 1.0 == True (one group), "1" another, as Python dict keys and the core
    assert data.group_codes().tolist() == [0, 1, 0, 0, 1, 2, 2, 3]
    assert data.group_labels[5] == (1, "x") and data.group_labels[7] == frozenset({("p", 1)})
    rep = run_audit(data.rewards, data.group_labels)
    assert rep.n_groups == 4


def test_csv_group_column_of_numbers_is_numeric(tmp_path):
    path = _write(tmp_path, "n.csv", "group,a\n1,1\n1.0,2\n 2,3\n2e0,4\n01,5\n")
    data = load_rollouts(path)
    _check(data)
    assert data.group_codes().tolist() == [0, 0, 1, 1, 0]
    assert data.group_labels[0] == 1 and isinstance(data.group_labels[0], int)


def test_csv_group_column_with_text_keeps_the_text(tmp_path):
    path = _write(tmp_path, "t.csv", "group,a\n1,1\n1.0,2\np1,3\np1 ,4\n1,5\nnan,6\n")
    data = load_rollouts(path)
    assert data.group_codes().tolist() == [0, 1, 2, 3, 0, 4]
    assert data.group_labels.tolist() == ["1", "1.0", "p1", "p1 ", "1", "nan"]


def test_run_audit_groups_labels_like_the_core():
    # before: labels stringified, so 1 and "1" were one group, 1 and 1.0 two
    labels = [1, "1", 1.0, True, float("nan"), float("nan")]
    r = np.arange(12, dtype=float).reshape(6, 2)
    rep = run_audit(r, labels, methods=[])
    assert rep.n_groups == 3 and rep.group_sizes == (1, 3)


@pytest.mark.parametrize("value", ["", "  ", None])
def test_missing_group_value_is_an_error(tmp_path, value):
    rows = [{"group": 0, "a": 1}, {"group": value, "a": 2}]
    path = _write(tmp_path, "g.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RolloutFileError, match=r"row 2 \(line 2\): empty group value"):
        load_rollouts(path)


def test_group_column_appearing_late_in_jsonl(tmp_path):
    rows = [{"uid": "a", "r": 1}, {"uid": "a", "r": 2, "group": 5}]
    path = _write(tmp_path, "late.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        RolloutFileError, match=r"row 1 \(line 1\): empty group value in column 'group'"
    ):
        load_rollouts(path)
    assert load_rollouts(path, group="uid").group_codes().tolist() == [0, 0]


def test_columns_missing_from_some_jsonl_lines_are_missing_rewards(tmp_path):
    rows = [{"group": 0, "a": 1}, {"group": 0, "a": 2, "b": "x"}, {"group": 0, "b": 3}]
    path = _write(tmp_path, "sparse.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    data = load_rollouts(path)  # b's first value is text: not a reward
    assert data.reward_names == ["a"] and np.isnan(data.rewards[2, 0])
    with pytest.raises(RolloutFileError, match=r"row 2 \(line 2\): column 'b' has the non-numeric"):
        load_rollouts(path, rewards=["a", "b"])


def test_tsv_by_extension_and_by_format(tmp_path):
    """The format, not the extension, decides the delimiter (issue 16)."""
    tsv = "group\tformat\tlength\n0\t1\t100\n0\t0\t250\n1\t1\t80\n"
    by_ext = load_rollouts(_write(tmp_path, "r.tsv", tsv))
    by_fmt = load_rollouts(_write(tmp_path, "r.txt", tsv), fmt="tsv")
    want = load_rollouts(_write(tmp_path, "r.csv", tsv.replace("\t", ",")))
    for data in (by_ext, by_fmt):
        assert data.reward_names == ["format", "length"]
        np.testing.assert_array_equal(data.rewards, want.rewards)
        assert data.group_codes().tolist() == want.group_codes().tolist()
    # --format csv on a .tsv file reads commas: one column, named by the whole header.
    with pytest.raises(RolloutFileError, match="no group column found"):
        load_rollouts(tmp_path / "r.tsv", fmt="csv")
    with pytest.raises(RolloutFileError, match="use csv, tsv, jsonl or parquet"):
        load_rollouts(tmp_path / "r.tsv", fmt="xlsx")
    with pytest.raises(RolloutFileError, match=r"pass --format csv\|tsv\|jsonl\|parquet"):
        load_rollouts(tmp_path / "r.txt")


def test_read_records_limit(tmp_path):
    path = _write(tmp_path, "r.jsonl", "".join(f'{{"group": {i}, "a": {i}}}\n' for i in range(5)))
    columns, records, lines = read_records(path, limit=2)
    assert columns == ["group", "a"] and [r["a"] for r in records] == [0, 1] and lines == [1, 2]


def test_read_records_keeps_every_cell(tmp_path):
    path = _write(tmp_path, "r.csv", "group,a,text\n0,1,hi\n\n1,2,there\n")
    columns, records, lines = read_records(path)
    assert columns == ["group", "a", "text"] and lines == [2, 4]
    assert records[1] == {"group": "1", "a": "2", "text": "there"}


# ----------------------------------------------------------------------------- parquet
@needs_pyarrow
def test_parquet_typed_labels_and_row_groups(tmp_path):
    path = tmp_path / "r.parquet"
    table = pa.table({"uid": ["a", "b", "a", "c", "b", "d", "x", "e"], "r": np.arange(8.0)})
    pq.write_table(table, path, row_group_size=3)  # a dictionary per row group
    data = load_rollouts(path)
    _check(data)
    assert data.group_codes().tolist() == [0, 1, 0, 2, 1, 3, 4, 5]
    ints = tmp_path / "i.parquet"
    pq.write_table(pa.table({"uid": [1, 2, 1], "r": [1.0, 2.0, 3.0], "s": ["a", "b", "c"]}), ints)
    data = load_rollouts(ints)
    assert data.reward_names == ["r"] and data.group_labels.tolist() == [1, 2, 1]


@needs_pyarrow
@pytest.mark.parametrize(
    ("columns", "kwargs", "message"),
    [
        ({"uid": [1, None], "r": [1.0, 2.0]}, {}, r"row 2 \(line 3\): empty group value"),
        ({"uid": [1.0, float("nan")], "r": [1.0, 2.0]}, {}, "empty group value"),
        ({"uid": ["a", ""], "r": [1.0, 2.0]}, {}, "empty group value"),
        (
            {"uid": [1, 2], "r": [1.0, float("inf")]},
            {},
            r"row 2 \(line 3\): column 'r' is infinite",
        ),
        ({"uid": [1, 2], "r": ["1.5", "x"]}, {}, "column 'r' has the non-numeric value 'x'"),
        ({"uid": [1, 2], "r": [[1], [2]]}, {"rewards": ["r"]}, "non-numeric value"),
    ],
)
def test_parquet_bad_cells(tmp_path, columns, kwargs, message):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(RolloutFileError, match=message):
        load_rollouts(path, **kwargs)


@needs_pyarrow
def test_parquet_numbers_nulls_and_booleans(tmp_path):
    path = tmp_path / "n.parquet"
    cols = {
        "uid": ["a", "a", "b"],
        "ok": [True, False, None],
        "n": [1, None, 3],
        "text": ["1", "2", None],
    }
    pq.write_table(pa.table(cols), path)
    data = load_rollouts(path)
    assert data.reward_names == ["ok", "n", "text"]
    np.testing.assert_array_equal(data.rewards, [[1, 1, 1], [0, np.nan, 2], [np.nan, 3, np.nan]])


def test_corrupt_parquet(tmp_path):
    path = _write(tmp_path, "bad.parquet", b"PAR1 not really")
    match = "cannot read as Parquet" if pa is not None else "pip install pyarrow"
    with pytest.raises(RolloutFileError, match=match):
        load_rollouts(path)


# ----------------------------------------------------------------------------- fuzz
NAMES = st.sampled_from(["group", "uid", "a", "b", "step", "Prompt", "", " a ", "é", "a,b"])
NUMBERS = st.one_of(
    st.integers(-9, 9).map(str),
    st.floats(-10, 10).map(lambda x: f"{x:.3g}"),
    st.sampled_from(["", "nan", "NA", "null", "true", "False", "1e-3", " 3 "]),
)
ODD_CELLS = st.one_of(
    st.sampled_from(
        ["inf", "-inf", "1e400", "1_0", "abc", '"', '""', '"a,b"', "\r", "\n", "\x00", "é",
         "9" * 400, "0x10", "--1"]
    ),
    st.text(max_size=3),
)  # fmt: skip
CELLS = st.one_of(NUMBERS, NUMBERS, NUMBERS, ODD_CELLS)
JSON_VALUES = st.one_of(
    st.integers(-9, 9), st.floats(-10, 10), st.none(), st.booleans(), st.integers(-9, 9),
    st.sampled_from([10**400, 10**30, float("inf"), float("nan"), "1.5", "x", "", [1], {"k": 1}]),
)  # fmt: skip


@st.composite
def near_csv(draw) -> bytes:
    """A CSV that is mostly right: unique header names (often a group column), rows of the
    header's width (now and then not), numbers in most cells, UTF-8 (now and then not)."""
    header = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    cells = CELLS
    if draw(st.booleans()):  # a group and a reward column, numbers only
        header = ["group", "a", *[h for h in header if h not in ("group", "a")]]
        cells = NUMBERS
    width = len(header) + (draw(st.sampled_from([-1, 1])) if draw(st.integers(0, 9)) == 0 else 0)
    rows = draw(st.lists(st.lists(cells, min_size=width, max_size=width), min_size=1, max_size=5))
    sep = draw(st.sampled_from([",", ",", ",", "\t", ";"]))
    end = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    text = end.join(sep.join(r) for r in [header, *rows])
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


@st.composite
def near_jsonl(draw) -> bytes:
    """JSON lines that are mostly objects with a group and numbers; now and then a line
    that is not an object, or nested deeper than json allows."""
    keys = st.sampled_from(["group", "uid", "a", "b", "step", "é"])
    numbers = st.one_of(st.integers(-9, 9), st.floats(-10, 10), JSON_VALUES)
    likely = st.fixed_dictionaries(
        {
            "group": st.one_of(st.integers(0, 2), st.sampled_from(["p", "1", 1.0, True])),
            "a": numbers,
        },
        optional={"b": numbers, "uid": JSON_VALUES, "text": st.text(max_size=3)},
    )
    objects = st.one_of(likely, likely, likely, st.dictionaries(keys, JSON_VALUES, max_size=4))
    records = draw(st.lists(st.one_of(objects, objects, objects, st.sampled_from([[1], "x", 1])),
                            min_size=1, max_size=5))  # fmt: skip
    lines = [json.dumps(r) for r in records]
    if draw(st.integers(0, 30)) == 0:
        depth = draw(st.integers(500, 3000))
        lines.append('{"group": 0, "a": ' + "[" * depth + "]" * depth + "}")
    return "\n".join(lines).encode()


@st.composite
def mutated(draw, base) -> bytes:
    """``base``, and now and then a few random bytes put in or cut out."""
    data = draw(base)
    if data and draw(st.integers(0, 3)) == 0:
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.binary(max_size=3)) + data[i + draw(st.integers(0, 2)) :]
    return data


FILES = st.one_of(
    st.tuples(st.binary(max_size=200), st.sampled_from([".csv", ".jsonl", ".parquet", ".tsv"])),
    st.tuples(mutated(near_csv()), st.sampled_from([".csv", ".csv", ".tsv"])),
    st.tuples(mutated(near_jsonl()), st.just(".jsonl")),
)
KWARGS = st.one_of(
    st.just({}),
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "group": NAMES,
            "rewards": st.lists(NAMES, max_size=3),
            "exclude": st.lists(NAMES, max_size=2),
            "fmt": st.sampled_from(["csv", "jsonl", "parquet"]),
        },
    ),
)


def test_fuzz_the_reader_returns_rollouts_or_a_rollout_file_error():
    """Random bytes and near-valid CSV/JSONL: a result or RolloutFileError, nothing else."""
    outcomes: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:

        @settings(
            max_examples=2000,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(file=FILES, kwargs=KWARGS)
        def check(file, kwargs):
            data, suffix = file
            path = pathlib.Path(tmp) / f"rollouts{suffix}"
            path.write_bytes(data)
            try:
                result = load_rollouts(path, **kwargs)
            except RolloutFileError as e:
                assert str(e).startswith(f"{path}: ") or str(e).startswith(f"{path.name}")
                outcomes["RolloutFileError"] += 1
                return
            _check(result)
            outcomes["rollouts"] += 1

        check()
    print(f"\nfuzz: {sum(outcomes.values())} examples: {dict(outcomes)}")
    assert sum(outcomes.values()) >= 2000
    assert outcomes["rollouts"] > 0 and outcomes["RolloutFileError"] > 0
