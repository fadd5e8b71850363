"""Docs readable on GitHub (issue 26): the quick start's outputs and the command-line
reference are committed in the markdown, and must be what this version prints.

Both are written by ``scripts/render_docs.py``; these tests run it with ``--check`` in a
separate process (the quick start registers a method, which must not leak into this one).
A failure means: run ``python scripts/render_docs.py`` and commit the result.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "render_docs.py"


def _render(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )


def _load_script():
    spec = importlib.util.spec_from_file_location("render_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_issue26_quickstart_outputs_are_what_the_code_prints():
    pytest.importorskip("torch")  # the page has a torch section
    render = _load_script()
    text = render.QUICKSTART.read_text()
    assert "```{code-cell}" not in text, "the quick start is plain markdown now"
    code = re.findall(r"```python\n", text)
    outputs = re.findall(r"```python\n.*?```\n\n```text\n", text, flags=re.S)
    assert len(code) >= 8 and len(outputs) >= 8, (len(code), len(outputs))
    res = _render("--check")
    assert "docs/quickstart.md" not in res.stderr, res.stderr


def test_issue26_cli_reference_is_current():
    render = _load_script()
    text = render.CLI.read_text()
    shown = re.search(r"<!-- argparse of Python (\d+)\.(\d+) -->", text)
    assert shown, "docs/cli.md has no generated reference"
    if tuple(map(int, shown.groups())) != sys.version_info[:2]:
        pytest.skip(f"docs/cli.md shows argparse of Python {'.'.join(shown.groups())}")
    from rewardagg.cli import build_parser

    res = _render("--check")
    assert "docs/cli.md" not in res.stderr, res.stderr
    # every option of every command is on the page
    parser = build_parser()
    commands = next(a for a in parser._actions if a.choices and a.dest == "command")
    for name, sub in [("rewardagg", parser), *commands.choices.items()]:
        assert f"### `{'rewardagg ' + name if name != 'rewardagg' else name}`" in text
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in text, (name, flag)


def test_issue26_render_check_reports_a_stale_page(tmp_path, monkeypatch):
    render = _load_script()
    page = tmp_path / "cli.md"
    page.write_text(render.CLI.read_text().replace("--json", "--jsn", 1))
    monkeypatch.setattr(render, "CLI", page)
    monkeypatch.setattr(render, "QUICKSTART", tmp_path / "quick.md")
    (tmp_path / "quick.md").write_text("# nothing to run\n")
    monkeypatch.setattr(render, "ROOT", tmp_path)
    assert render.main(["--check"]) == 1
    assert render.main([]) == 0 and "--jsn" not in page.read_text()
