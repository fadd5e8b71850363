"""Output paths of the command line, checked before any work is done.

A command that writes files checks their paths first, so that a bad path fails in a
second with a clear message instead of with a traceback after the work:

- :func:`output_file_problem` / :func:`check_output_file`: a file to write (``--plot``);
- :func:`output_dir_problem` / :func:`check_output_dir`: a folder to write files into
  (``--out DIR``); missing folders are fine when they can be created;
- :func:`make_parent_dirs` creates the missing folders when it is time to write.

Nothing is created by the checks. A problem is a :class:`~rewardagg.cli.parser.UsageError`
whose message starts with the path (the command line prints
``rewardagg COMMAND: error: PATH: <what is wrong>`` and exits with code 2).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rewardagg.cli.parser import UsageError
from rewardagg.rollouts_io import describe_file_kind

__all__ = [
    "check_output_dir",
    "check_output_file",
    "make_parent_dirs",
    "output_dir_problem",
    "output_file_problem",
]


def _stat(path: Path) -> os.stat_result | str | None:
    """``os.stat(path)``, ``None`` when it does not exist, or what went wrong."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        return f"cannot check {path} ({e.strerror or e})"
    except ValueError as e:  # an embedded NUL byte
        return f"invalid path ({e})"


def output_dir_problem(folder: str | Path) -> str:
    """What keeps files from being written into ``folder`` (``""`` when nothing): the
    folder, or its nearest existing parent when it is missing, must be a writable folder."""
    folder = Path(folder)
    for d in (folder, *folder.parents):
        st = _stat(d)
        if st is None:
            continue
        if isinstance(st, str):
            return st
        if not stat.S_ISDIR(st.st_mode):
            kind = describe_file_kind(st.st_mode) or "a file"
            return f"{d} is {kind}, not a folder"
        if not os.access(d, os.W_OK | os.X_OK):
            return f"no permission to write in the folder {d}"
        return ""
    return ""


def output_file_problem(path: str | Path) -> str:
    """What keeps ``path`` from being written as a file (``""`` when nothing): not a
    folder, FIFO or device, writable if it exists, in a folder that can be written to."""
    text = str(path)
    if not text or text.endswith(("/", os.sep)):
        return "names a folder; give a file name"
    p = Path(text)
    st = _stat(p)
    if isinstance(st, str):
        return st
    if st is None:
        return output_dir_problem(p.parent)
    kind = describe_file_kind(st.st_mode)
    if kind:
        return f"is {kind}, not a file that can be written"
    if not os.access(p, os.W_OK):
        return "exists and is not writable (permission denied)"
    return ""


def check_output_file(path: str | Path) -> Path:
    """``path`` as a :class:`~pathlib.Path`, or a :class:`UsageError` saying why it
    cannot be written (see :func:`output_file_problem`)."""
    problem = output_file_problem(path)
    if problem:
        raise UsageError(f"{path}: {problem}")
    return Path(path)


def check_output_dir(folder: str | Path) -> Path:
    """``folder`` as a :class:`~pathlib.Path`, or a :class:`UsageError` saying why files
    cannot be written into it (see :func:`output_dir_problem`)."""
    problem = output_dir_problem(folder)
    if problem:
        raise UsageError(f"{folder}: {problem}")
    return Path(folder)


def make_parent_dirs(path: str | Path) -> None:
    """Create the missing folders above ``path``; a :class:`UsageError` if that fails."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{path}: cannot create its folder ({e.strerror or e})") from None
