"""The shipped example ``examples/rollouts.jsonl`` audited as the docs show it (issue 16).

Doctest-style: every ``$ rewardagg ...`` command in a ``console`` block of ``docs/audit.md``
is run from the repository's root and must print exactly the lines under it; the verdict
line the README shows must be the last line ``rewardagg audit examples/rollouts.jsonl``
prints. The lists the rollout-format page gives (missing-value words, group and
bookkeeping column names) must be the reader's. Runtime: about 1 s.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from rewardagg.cli import main
from rewardagg.rollouts_io import (
    _MISSING,
    BOOKKEEPING_COLUMNS,
    EXTENSIONS,
    FORMATS,
    GROUP_COLUMN_CANDIDATES,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rollouts.jsonl"


def _console_examples(path: Path) -> list[tuple[str, str]]:
    """``(command, expected output)`` of each ``$ `` line of the ``console`` blocks."""
    out = []
    for block in re.findall(r"```console\n(.*?)```", path.read_text(), flags=re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, expected = chunk.partition("\n")
            out.append((command, expected.rstrip("\n")))
    return out


def _run(command: str, capsys, monkeypatch) -> str:
    args = shlex.split(command)
    assert args[0] == "rewardagg", command
    monkeypatch.chdir(ROOT)  # the docs' paths are relative to the repository's root
    assert main(args[1:]) == 0, capsys.readouterr().err
    return capsys.readouterr().out.rstrip("\n")


AUDIT_PAGE_EXAMPLES = _console_examples(ROOT / "docs" / "audit.md")


def test_the_audit_page_shows_commands():
    assert AUDIT_PAGE_EXAMPLES, "docs/audit.md has no console example"
    assert all("examples/rollouts.jsonl" in cmd for cmd, _ in AUDIT_PAGE_EXAMPLES)


@pytest.mark.parametrize(("command", "expected"), AUDIT_PAGE_EXAMPLES)
def test_audit_page_example_prints_what_the_page_shows(command, expected, capsys, monkeypatch):
    assert _run(command, capsys, monkeypatch) == expected


def test_the_example_verdict(capsys, monkeypatch):
    out = _run("rewardagg audit examples/rollouts.jsonl", capsys, monkeypatch)
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("verdict: "))
    folded = lines[start:]  # issue 26: folded after "; " to fit 100 columns
    assert all(len(line) <= 100 for line in folded)
    verdict = " ".join(line.strip() for line in folded)
    assert verdict.startswith("verdict: gdpo rewards 2 of the 3 rows that fail format (Z<=-1); ")
    assert "; softmin k=1 0;" in verdict and "; min 0;" in verdict
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```text\nverdict: gdpo rewards", 1)[1].split("```", 1)[0]
    shown = ("verdict: gdpo rewards" + block).rstrip("\n").splitlines()
    assert shown == folded, "the README's verdict is not what the example prints"


def test_the_rollout_page_lists_what_the_reader_uses():
    text = (ROOT / "docs" / "rollouts.md").read_text()
    flat = " ".join(text.split())
    groups = ", ".join(f"`{c}`" for c in GROUP_COLUMN_CANDIDATES)
    assert groups in flat
    listed = re.search(r"these bookkeeping names \(compared without case\): (.*?)\. ", flat)
    assert listed is not None
    assert set(re.findall(r"`([a-z_]+)`", listed.group(1))) == BOOKKEEPING_COLUMNS
    for word in _MISSING - {""}:
        assert f"`{word}`" in text, word
    for fmt in FORMATS:
        exts = sorted(e for e, f in EXTENSIONS.items() if f == fmt)
        row = next(line for line in text.splitlines() if line.startswith(f"| `{fmt}` |"))
        assert sorted(re.findall(r"`(\.[a-z]+)`", row)) == exts, fmt
    assert "rewardagg audit examples/rollouts.jsonl" in text and EXAMPLE.is_file()
