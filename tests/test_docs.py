"""The documentation: docstring examples run, the API reference is complete, the site builds.

- ``test_docstring_examples``: every ``>>>`` example in the docstrings of every importable
  ``rewardagg`` module (modules whose host framework is missing are skipped; ``__main__``
  modules are never imported), run with :mod:`doctest` (``ELLIPSIS``,
  ``NORMALIZE_WHITESPACE``). About 1 s.
- ``test_api_reference_lists_every_public_name``: ``docs/api.md`` names every entry of the
  public ``__all__`` lists. Instant.
- ``test_docs_build``: ``sphinx-build -W --keep-going -b html`` into a temp dir, with any
  HTTP(S) request sent to a dead proxy so that a build that tries the network fails. The
  build executes the notebooks and the ``{code-cell}`` pages: 20-60 s on two CPUs. Skipped
  when sphinx, myst-nb, furo or ipykernel is not installed (the ``docs``
  extra), unless ``REWARDAGG_REQUIRE_DOCS=1`` (CI), which turns the skip into a failure.
  The command-line page (generated from the argument parsers by ``scripts/render_docs.py``,
  checked by ``tests/test_doc_pages.py``) must show every option of every command.
- ``test_readme_set_up``: the README's set-up has exactly two commands, the test command is
  the one ``.ci/run`` runs, verbatim, and each extra the README lists is in
  ``pyproject.toml``. Instant.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import importlib.util
import os
import pathlib
import pkgutil
import re
import subprocess
import sys

import pytest

import rewardagg

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE_DIR = pathlib.Path(rewardagg.__path__[0])

DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_names() -> list[str]:
    names = ["rewardagg"]
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="rewardagg."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # importing a __main__ runs the command line
        names.append(info.name)
    return sorted(names)


def _collect_doctests() -> tuple[list, list[str]]:
    tests, skipped = [], []
    finder = doctest.DocTestFinder(exclude_empty=True)
    for name in _module_names():
        try:
            module = importlib.import_module(name)
        except ImportError:  # an adapter whose host framework is not installed
            skipped.append(name)
            continue
        for test in finder.find(module, name):
            if test.examples:
                tests.append(test)
    return sorted(tests, key=lambda t: t.name), skipped


DOCTESTS, SKIPPED_MODULES = _collect_doctests()


def test_doctests_found():
    # The public entry points carry examples; a refactor that drops them all should fail.
    names = {t.name for t in DOCTESTS}
    for required in (
        "rewardagg._src.aggregators.softmin",
        "rewardagg._src.aggregators.weighted_sum",
        "rewardagg.taylor.verify_expansion",
    ):
        assert required in names, f"no doctest found for {required}"


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_examples(test):
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    report: list[str] = []
    # Fresh globals per docstring, as `python -m doctest` does.
    test.globs = dict(test.globs)
    result = runner.run(test, out=report.append, clear_globs=True)
    assert result.failed == 0, "".join(report)


# ----------------------------------------------------------------------- API reference


def _all_of(module_name: str) -> list[str]:
    """``__all__`` of a module, read from its source when importing it needs a host."""
    try:
        return list(importlib.import_module(module_name).__all__)
    except ImportError:
        spec = importlib.util.find_spec(module_name)
        assert spec is not None and spec.origin is not None, module_name
        tree = ast.parse(pathlib.Path(spec.origin).read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                return list(ast.literal_eval(node.value))
        raise AssertionError(f"{module_name} has no literal __all__") from None


PUBLIC_MODULES = [
    "rewardagg",
    "rewardagg.taylor",
    "rewardagg.kernels",
    "rewardagg.integrations.trl",
    "rewardagg.integrations.verl",
    "rewardagg.integrations.openrlhf",
]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_api_reference_lists_every_public_name(module_name):
    text = (DOCS / "api.md").read_text()
    if module_name != "rewardagg":
        assert re.search(rf"^\.\. automodule:: {re.escape(module_name)}$", text, re.M), (
            f"docs/api.md has no section for {module_name}"
        )
    listed = set(re.findall(r"^ {3}~?([A-Za-z_][A-Za-z0-9_]*)$", text, re.M))
    listed |= set(re.findall(r"^\.\. py:data:: ([A-Za-z_][A-Za-z0-9_]*)$", text, re.M))
    missing = [n for n in _all_of(module_name) if n != "__version__" and n not in listed]
    assert not missing, f"docs/api.md does not list {module_name}: {missing}"


# --------------------------------------------------------------------------- the build


def _have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


DOCS_TOOLS = ("sphinx", "myst_nb", "furo", "ipykernel")


@pytest.mark.slow
def test_docs_build(tmp_path):
    if not _have(*DOCS_TOOLS):
        # CI sets REWARDAGG_REQUIRE_DOCS=1 so that a missing docs extra fails, not skips.
        if os.environ.get("REWARDAGG_REQUIRE_DOCS") == "1":
            pytest.fail(f"REWARDAGG_REQUIRE_DOCS=1 but not installed: one of {DOCS_TOOLS}")
        pytest.skip("the docs extra (sphinx, myst-nb, furo) and ipykernel are needed")
    out = tmp_path / "html"
    env = dict(os.environ)
    # Offline: a build that fetches anything over HTTP(S) hits a dead proxy and warns,
    # and -W turns the warning into a failure.
    dead = "http://127.0.0.1:9"
    env.update(HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead)
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    env["IPYTHONDIR"] = str(tmp_path / ".ipython")
    env["MPLCONFIGDIR"] = str(tmp_path / ".matplotlib")
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-j",
        "auto",
        "-W",
        "--keep-going",
        "-q",
        "-b",
        "html",
        "-d",
        str(tmp_path / "doctrees"),
        str(DOCS),
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    log = "\n".join(
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if "IPKernelApp" not in line  # the kernels' start-up chatter, not Sphinx warnings
    )
    assert proc.returncode == 0, f"sphinx-build failed:\n{log[-8000:]}"

    # The pages the site promises, rendered with their outputs.
    pages = ("index", "quickstart", "api", "changelog", "missing_rewards", "diagnostics")
    for page in (*pages, "cli", "rollouts", "audit"):
        assert (out / f"{page}.html").is_file(), page
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        html = (out / "notebooks" / f"{notebook.stem}.html").read_text()
        assert "<img" in html, f"{notebook.name}: no figure in the rendered notebook"
    quick = (out / "quickstart.html").read_text()
    assert "RVPO: [" in quick, "quickstart.html: the outputs in the page are missing"
    assert "Changelog" in (out / "changelog.html").read_text()

    # The command-line reference (the parsers' --help, committed): every option of every
    # command is on the rendered page.
    import html

    from rewardagg.cli import build_parser

    cli = html.unescape(re.sub(r"<[^>]+>", "", (out / "cli.html").read_text()))
    parser = build_parser()
    commands = next(a for a in parser._actions if a.choices and a.dest == "command")
    for name, sub in [("rewardagg", parser), *commands.choices.items()]:
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in cli, (name, flag)
    assert "trainer.rollout_data_dir" in cli


# ----------------------------------------------------------------------- the README


def _set_up_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]


def test_readme_set_up():
    section = _set_up_section()
    commands = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    assert len(commands) == 2, commands
    demo, tests = commands
    assert "\n" not in demo and demo.endswith("rewardagg demo")
    assert "\n" not in tests and tests.endswith("python -m pytest")
    # PyTorch's CPU index as an extra index: Linux takes its +cpu wheel, macOS PyPI's.
    assert "--extra-index-url https://download.pytorch.org/whl/cpu --retries 1" in tests
    assert " --index-url" not in tests
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    marker = next(i for i, line in enumerate(ci) if line.startswith("# The README's test command"))
    ran = next(line for line in ci[marker:] if not line.startswith("#"))
    assert ran == tests, "README's test command and .ci/run's differ"
    assert "python3 -m venv .venv && source .venv/bin/activate" in section
    pyproject = (ROOT / "pyproject.toml").read_text()
    extras = re.findall(r"^\| `([a-z]+)` \|", section, flags=re.M)
    assert extras and all(re.search(rf"^{e} = \[", pyproject, flags=re.M) for e in extras)
    for link in ("docs/quickstart.md", "docs/choosing.md", "docs/diagnostics.md", "docs/cli.md"):
        assert f"]({link})" in section and (ROOT / link).is_file(), link
