"""``rewardagg audit``: every bad file or path is ``rewardagg audit: error: PATH: ...`` and
exit code 2, checked before any work (issue 14, item 2).

Runtime: about 3 s (two subprocesses; the rest runs :func:`rewardagg.cli.main` in-process,
where any exception other than the clean exit would fail the test).

Each case below failed before the fix: a traceback and exit code 1 (binary or Latin-1 or
UTF-16 CSV, Parquet read as CSV, a 400-digit JSON integer, JSON nested 100,000 deep,
``--plot afile/x.png``), "empty file" for a FIFO or a device, or no error at all
(``--z-level nan``).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

import rewardagg
from rewardagg.cli import main
from rewardagg.cli.parser import UsageError
from rewardagg.cli.paths import (
    check_output_dir,
    check_output_file,
    output_dir_problem,
    output_file_problem,
)

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "audit_rollouts.csv"
PACKAGE_PARENT = str(pathlib.Path(rewardagg.__path__[0]).resolve().parent)
FAST = ["--methods", "gdpo"]
BAD_FILES = {
    "binary.csv": bytes(range(256)) * 8,
    "latin1.csv": "group,a\n0,1\n0,caf\xe9\n".encode("latin-1"),
    "utf16.csv": "group,a\n0,1\n0,2\n".encode("utf-16"),
    "parquet.csv": b"PAR1\x15\x04\x15\xff\xfe" + bytes(range(128, 256)) + b"PAR1",
    "bigint.jsonl": ('{"group": 0, "a": ' + "9" * 400 + "}\n").encode(),
    "deep.jsonl": ('{"group": 0, "a": ' + "[" * 100_000 + "]" * 100_000 + "}\n").encode(),
}
MESSAGES = {
    "binary.csv": "contains NUL bytes",
    "latin1.csv": "line 3: not UTF-8 text (byte 0xe9",
    "utf16.csv": "is UTF-16 text; save it as UTF-8",
    "parquet.csv": "is a Parquet file, not text; read it with --format parquet",
    "bigint.jsonl": "has an integer of about 400 digits, outside the float64 range",
    "deep.jsonl": "line 1: JSON nested too deeply",
}


def run_cli(*args, timeout=60):
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    return subprocess.run(
        [sys.executable, "-m", "rewardagg", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip


def _error(capsys, path) -> str:
    err = capsys.readouterr().err
    prefix = f"rewardagg audit: error: {path}: "
    assert err.startswith(prefix), err
    return err[len(prefix) :]


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_exit_two_with_the_path_and_the_reason(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    assert main(["audit", str(path), *FAST]) == 2
    assert MESSAGES[name] in _error(capsys, path)


def test_parquet_read_with_format_csv(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"group": [0, 0], "a": [1.0, 2.0]}), path)
    assert main(["audit", str(path), "--format", "csv", *FAST]) == 2
    assert "is a Parquet file" in _error(capsys, path)
    assert main(["audit", str(path), *FAST]) == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_and_device_are_named_in_a_real_process(tmp_path):
    fifo = tmp_path / "rollouts.jsonl"
    os.mkfifo(fifo)  # no writer: reading it would block; the timeout turns that into a failure
    res = run_cli("audit", fifo, *FAST, timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (
        f"rewardagg audit: error: {fifo}: is a FIFO (named pipe), not a regular file; "
        "save the rollouts to a file"
    )
    if os.path.exists("/dev/null"):
        res = run_cli("audit", "/dev/null", "--format", "csv", *FAST)
        assert res.returncode == 2 and "is a character device" in res.stderr
        assert "empty file" not in res.stderr


def test_binary_file_in_a_real_process(tmp_path):
    path = tmp_path / "noise.csv"
    path.write_bytes(bytes(range(1, 256)) * 20)
    res = run_cli("audit", path, *FAST)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith(
        f"rewardagg audit: error: {path}: line 2: not UTF-8 text (byte 0x80"
    )


# ----------------------------------------------------------------------------- outputs
def test_plot_under_a_file_is_refused_before_reading(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    plot = afile / "x.png"
    # the input does not even exist: the output path is checked first
    assert main(["audit", str(tmp_path / "missing.csv"), "--plot", str(plot), *FAST]) == 2
    assert _error(capsys, plot) == f"{afile} is a file, not a folder\n"
    assert main(["audit", str(FIXTURE), "--plot", str(afile / "deeper" / "x.png"), *FAST]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("folder", "is a directory, not a file that can be written"),
        ("x.foo", "--plot cannot write '.foo' files; use one of"),
        ("slash/", "names a folder; give a file name"),
    ],
)
def test_plot_paths_that_cannot_be_written(tmp_path, capsys, target, message):
    pytest.importorskip("matplotlib")
    (tmp_path / "folder").mkdir()
    plot = f"{tmp_path}/{target}"
    assert main(["audit", str(FIXTURE), "--plot", plot, *FAST]) == 2
    assert message in _error(capsys, plot)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_plot_to_a_device(capsys):
    pytest.importorskip("matplotlib")
    assert main(["audit", str(FIXTURE), "--plot", "/dev/null", *FAST]) == 2
    assert "is a character device" in _error(capsys, "/dev/null")


def test_plot_without_extension_is_written_as_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["audit", str(FIXTURE), "--plot", str(tmp_path / "new" / "fig"), *FAST]) == 0
    png = tmp_path / "new" / "fig.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {png}" in capsys.readouterr().out


def test_plot_write_error_at_the_end_is_clean(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    import rewardagg.audit

    def fail(report, path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(rewardagg.audit, "plot_report", fail)
    plot = tmp_path / "x.png"
    assert main(["audit", str(FIXTURE), "--plot", str(plot), *FAST]) == 2
    assert _error(capsys, plot) == "cannot write the figure (Permission denied)\n"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_outputs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "old.png").write_bytes(b"")
    (locked / "old.png").chmod(0o444)
    locked.chmod(0o555)
    try:
        for plot in (locked / "new.png", locked / "sub" / "new.png", locked / "old.png"):
            assert main(["audit", str(FIXTURE), "--plot", str(plot), *FAST]) == 2
            assert "permission" in _error(capsys, plot).lower()
    finally:
        locked.chmod(0o755)


def test_output_path_helpers(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert output_file_problem(tmp_path / "a" / "b" / "x.png") == ""  # folders can be made
    assert output_dir_problem(tmp_path / "new" / "deeper") == ""
    assert output_dir_problem(afile) == f"{afile} is a file, not a folder"
    assert output_dir_problem(afile / "sub") == f"{afile} is a file, not a folder"
    assert output_file_problem(tmp_path) == "is a directory, not a file that can be written"
    with pytest.raises(UsageError, match=f"^{afile}/x.png: {afile} is a file"):
        check_output_file(afile / "x.png")
    with pytest.raises(UsageError, match=f"^{afile}: {afile} is a file, not a folder"):
        check_output_dir(afile)
    assert check_output_dir(tmp_path / "new") == tmp_path / "new"
    # permissions (as root os.access says yes to everything, so pretend)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert output_file_problem(afile) == "exists and is not writable (permission denied)"
    assert output_file_problem(tmp_path / "new.png") == (
        f"no permission to write in the folder {tmp_path}"
    )


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--z-level", "nan"], "--z-level: expected a finite number, got nan"),
        (["--z-level=-inf"], "--z-level: expected a finite number, got -inf"),
        (["--threshold", "format=nan"], "--threshold: expected a finite number, got 'format=nan'"),
        (["--threshold", "inf"], "--threshold: expected a finite number, got 'inf'"),
    ],
)
def test_non_finite_levels_are_usage_errors(capsys, args, message):
    assert main(["audit", str(FIXTURE), *args, *FAST]) == 2
    assert capsys.readouterr().err == f"rewardagg audit: error: {message}\n"


def test_bad_methods_are_reported_before_the_file_is_read(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "missing.csv"), "--methods", "nope"]) == 2
    assert "--methods: unknown ['nope']" in capsys.readouterr().err


def test_values_out_of_range_for_the_methods_name_the_file(tmp_path, capsys):
    path = tmp_path / "huge.csv"
    path.write_text("group,a\n0,1e308\n0,-1e308\n0,0\n")
    assert main(["audit", str(path), *FAST]) == 2
    assert _error(capsys, path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eps", "nan"], "--eps: expected a finite non-negative number, got nan"),
        (["--weights", "1,nan,1"], "--weights: expected finite non-negative numbers"),
        (["--weights", "format=-1"], "--weights: expected finite non-negative numbers"),
    ],
)
def test_bad_eps_and_weights_are_usage_errors(capsys, args, message):
    assert main(["audit", str(FIXTURE), *args, *FAST]) == 2
    assert message in capsys.readouterr().err
