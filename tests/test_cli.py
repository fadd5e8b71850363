"""The ``rewardagg`` command line, run as a user runs it: ``python -m rewardagg ...``.

Runtime: about 12 s (each subprocess pays the interpreter start; ``demo --quick`` trains
2 rubric scenarios x every setting (18) x 3 seeds x 40 steps in about half a second).
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import resource
import subprocess
import sys

import pytest

import rewardagg
from rewardagg.cli import COMMANDS, Command, build_parser, main
from rewardagg.demo import default_methods
from rewardagg.demo.scenarios import QUICK_SCENARIOS
from rewardagg.demo.takeaway import TAKEAWAY, TAKEAWAY_HEADER

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "audit_rollouts.csv"
PACKAGE_PARENT = str(pathlib.Path(rewardagg.__path__[0]).resolve().parent)


def run_cli(*args, cwd=None, extra_path=None, timeout=120):
    env = dict(os.environ)
    paths = [p for p in (extra_path, PACKAGE_PARENT, env.get("PYTHONPATH")) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("MPLBACKEND", None)
    return subprocess.run(
        [sys.executable, "-m", "rewardagg", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
    )  # fmt: skip


# ----------------------------------------------------------------------------- help
@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"], ["audit", "--help"]])
def test_help_exits_zero(args):
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert "usage: rewardagg" in res.stdout


def test_top_level_help_lists_the_commands():
    out = run_cli("--help").stdout
    assert "demo" in out and "audit" in out


def test_no_command_and_unknown_command_exit_two():
    assert run_cli().returncode == 2
    res = run_cli("frobnicate")
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_version_lists_the_optional_backends_one_line_each():
    res = run_cli("--version")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"rewardagg {rewardagg.__version__} (Python ")
    assert [line.split(maxsplit=1)[0].rstrip(":") for line in lines[1:]] == [
        "numba",
        "triton",
        "torch",
    ]
    for line in lines[1:]:
        assert ": found (" in line or ": not found (" in line, line


def test_version_line_of_a_missing_backend(monkeypatch):
    from rewardagg.cli import version

    monkeypatch.setattr(version.importlib.util, "find_spec", lambda name: None)
    assert version.backend_line("numba", "fast", "x", "the array path on CPU") == (
        'numba: not found (the "fast" extra installs it; without it: the array path on CPU)'
    )


WARN_SCRIPT = """
import sys, warnings
from rewardagg.cli import main, parser
from rewardagg.kernels import CompileWarning

class NumbaPerformanceWarning(UserWarning):
    pass

NumbaPerformanceWarning.__module__ = "numba.core.errors"

def run(args):
    warnings.warn("the numba kernel for float64 took 3.1 s to compile", CompileWarning)
    warnings.warn("a parallel loop ran serially", NumbaPerformanceWarning)
    warnings.warn("something the user should see", UserWarning)
    return 0

parser.COMMANDS.append(parser.Command("warn", "emit warnings", lambda p: None, run))
sys.exit(main(sys.argv[1:]))
"""


def test_compile_warnings_are_logged_not_printed():
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    quiet = subprocess.run(
        [sys.executable, "-c", WARN_SCRIPT, "warn"], capture_output=True, text=True, env=env
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "CompileWarning" not in quiet.stderr and "compile" not in quiet.stderr
    assert "NumbaPerformanceWarning" not in quiet.stderr
    assert "UserWarning: something the user should see" in quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", WARN_SCRIPT, "-v", "warn"], capture_output=True, text=True, env=env
    )
    assert loud.returncode == 0, loud.stderr
    assert (
        "rewardagg: rewardagg.cli: CompileWarning: the numba kernel for float64 took 3.1 s "
        "to compile" in loud.stderr
    )
    assert "NumbaPerformanceWarning: a parallel loop ran serially" in loud.stderr


def test_in_process_main_returns_exit_codes(capsys):
    assert main(["--help"]) == 0
    assert main([]) == 2
    assert main(["demo", "--scenario", "k18"]) == 2
    assert "unknown scenario ['k18']" in capsys.readouterr().err


def test_new_commands_plug_in_lazily():
    ran = {}
    cmd = Command(
        "bench", "a test command",
        configure=lambda p: p.add_argument("--n", type=int, default=1),
        run=lambda args: ran.setdefault("n", args.n) and 0,
    )  # fmt: skip
    parser = build_parser([*COMMANDS, cmd])
    args = parser.parse_args(["bench", "--n", "3"])
    assert args._run(args) == 0 and ran == {"n": 3}


# ----------------------------------------------------------------------------- demo
def test_the_parser_names_the_demo_variants():
    from rewardagg.cli.parser import DEMO_VARIANTS
    from rewardagg.demo import VARIANTS

    assert tuple(v.name for v in VARIANTS) == DEMO_VARIANTS


def test_demo_quick_writes_its_files_in_its_own_folder(tmp_path):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = run_cli("demo", "--quick", "--quiet", cwd=tmp_path)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert res.returncode == 0, res.stderr
    # CPU time (its worker processes included), not wall time: the machine may be shared.
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert cpu < 15, f"demo --quick used {cpu:.1f} s of CPU"  # about 5 s (24 settings)
    assert res.stderr == ""  # --quiet: no progress bar
    out = tmp_path / "demo-results-quick"
    assert {p.name for p in out.iterdir()} == {
        "demo.png", "demo.json", "demo.csv", "demo_seeds.csv"
    }  # fmt: skip
    for name in QUICK_SCENARIOS:
        assert f"== {name}:" in res.stdout
    verdicts = res.stdout.split("verdicts (")[1].splitlines()[1:]
    assert [v.split(":")[0] for v in verdicts[: len(QUICK_SCENARIOS)]] == list(QUICK_SCENARIOS)
    for label in ("grpo", "gdpo", "softmin k=1", "gdpo_point_weights", "gdpo+lagrange"):
        assert f"\n{label} " in res.stdout
    assert "summary: rubric_score" in res.stdout
    with open(out / "demo.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["scenario", "method", "metric", "mean", "ci_low", "ci_high", "n_seeds"]
    assert {r["method"] for r in rows} == {m.label for m in default_methods()}
    data = json.loads((out / "demo.json").read_text())
    assert data["config"]["seeds"] == 3 and data["config"]["steps"] == 40
    # issue 25: paired verdicts in the JSON, the take-away printed after them
    assert [(v["scenario"], v["metric"]) for v in data["verdicts"]] == [
        (sc, m) for sc in QUICK_SCENARIOS for m in ("rubric_score", "critical_met")
    ]
    assert {v["kind"] for v in data["verdicts"]} <= {"best", "no clear difference", "not learned"}
    assert TAKEAWAY_HEADER + "\n" + TAKEAWAY + "\n" in res.stdout
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Run again: the files are there, so it stops before training, exit 2.
    again = run_cli("demo", "--quick", "--quiet", cwd=tmp_path)
    assert again.returncode == 2 and "already exist" in again.stderr
    assert "--overwrite" in again.stderr and again.stdout == ""


def test_demo_neglect_scenario_methods_and_progress_bar(tmp_path):
    res = run_cli(
        "demo", "--scenario", "neglect-k17-control", "--seeds", "2", "--steps", "5",
        "--kappa", "4", "--methods", "gdpo,softmin,mean,gdpo_lagrange,gdpo_point_weights",
        "--workers", "1", "--out", tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "training" in res.stderr  # tqdm writes to stderr
    rows = list(csv.DictReader(open(tmp_path / "demo.csv", newline="")))
    assert list(dict.fromkeys(r["method"] for r in rows)) == [
        "gdpo", "mean", "softmin k=4", "gdpo+lagrange"
    ]  # fmt: skip
    assert "skipped gdpo_point_weights: the rewards have no point values" in res.stdout
    assert "per prompt" in res.stdout and "format_p4" in {r["metric"] for r in rows}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "k9"], "--scenario: unknown scenario ['k9']"),
        (["--methods", "gdpo,nope"], "unknown ['nope']"),
        (["--seeds", "0"], "positive integer"),
        (["--kappa", "a,b"], "expected numbers"),
        (["--param", "kappa"], "expected NAME=VALUE"),
        (["--param", "kappa=-1"], "--param: kappa must be a non-negative number"),
        (["--param", "nope=1"], "--param: no selected method takes 'nope'; they take: "),
        (["--methods", "gdpo", "--lam", "0.5"], "no selected method takes 'lam'"),
    ],
)
def test_demo_bad_options_exit_two(tmp_path, args, message):
    res = run_cli("demo", "--quiet", "--out", tmp_path, *args)
    assert res.returncode == 2
    assert message in res.stderr


def _demo_labels(tmp_path, *args):
    """The method labels of a tiny in-process demo run with ``args``."""
    out = tmp_path / "-".join(args).replace("=", "_").replace(",", "_")
    small = ["--seeds", "1", "--steps", "2", "--scenario", "k5-common-clean", "--no-plot"]
    assert main(["demo", "--quiet", "--workers", "1", "--out", str(out), *small, *args]) == 0
    rows = csv.DictReader(open(out / "demo.csv", newline=""))
    return list(dict.fromkeys(r["method"] for r in rows))


def test_issue25_labels_as_printed_are_accepted_by_methods(tmp_path, capsys):
    labels = ["gdpo+lagrange", "softmin k=0.25", "mean_var l=0.125", "tchebycheff k=2"]
    assert _demo_labels(tmp_path, "--methods", ",".join(labels)) == [
        "softmin k=0.25", "mean_var l=0.125", "tchebycheff k=2", "gdpo+lagrange"
    ]  # fmt: skip


def test_param_flag_and_its_aliases_agree(tmp_path, capsys):
    wanted = ["--methods", "mean_variance,softmin"]
    by_param = _demo_labels(tmp_path, *wanted, "--param", "kappa=4,0.5", "--param", "lam=1")
    by_alias = _demo_labels(tmp_path, *wanted, "--kappa", "4,0.5", "--lam", "1")
    assert by_param == by_alias == ["softmin k=4", "softmin k=0.5", "mean_var l=1"]
    # Repeated: the last one wins.
    assert _demo_labels(tmp_path, "--methods", "softmin", "--kappa", "1", "--param", "kappa=2") == [
        "softmin k=2"
    ]


def test_a_method_registered_at_run_time_is_in_the_demo_and_the_audit(tmp_path, capsys):
    def tail(z, *, weights=None, sharpness=1.0):
        """A SoftMin at 3 x sharpness (a registered method for this test)."""
        return rewardagg.softmin(z, kappa=3 * sharpness, weights=weights)

    name = "test_cli_tail"
    rewardagg.register_aggregator(
        name, tail, params={"sharpness": 1.0}, sweep=({"sharpness": 0.5}, {"sharpness": 2.0})
    )
    try:
        labels = _demo_labels(tmp_path)
        n_variants = 4
        assert labels[-n_variants - 2 : -n_variants] == [
            f"{name} sharpness=0.5", f"{name} sharpness=2"
        ]  # fmt: skip
        assert _demo_labels(tmp_path, "--methods", name, "--param", "sharpness=3") == [
            f"{name} sharpness=3"
        ]
        capsys.readouterr()
        assert main(["audit", str(FIXTURE), "--cost", "length"]) == 0
        out = capsys.readouterr().out
        assert f"{name} sharpness=0.5" in out and f"{name} sharpness=2" in out
        assert main(["audit", str(FIXTURE), "--methods", f"gdpo,{name}", "--param", "x=1"]) == 2
        assert "they take: sharpness (test_cli_tail)" in capsys.readouterr().err
        assert main(["audit", "--help"]) == 0
        assert f"sharpness ({name})" in " ".join(capsys.readouterr().out.split())
    finally:
        rewardagg.unregister_aggregator(name)
    assert main(["audit", str(FIXTURE), "--methods", name]) == 2  # gone again


def test_demo_without_the_plot_extra(tmp_path):
    # A fake matplotlib that fails to import, first on the path.
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    res = run_cli("demo", "--quick", "--out", tmp_path / "out", extra_path=str(fake))
    assert res.returncode == 2
    assert "pip install matplotlib tqdm" in res.stderr and "--no-plot" in res.stderr
    assert not (tmp_path / "out").exists()
    # --no-plot: the table and the CSV/JSON need numpy only.
    res = run_cli(
        "demo", "--quick", "--no-plot", "--quiet", "--out", tmp_path / "out",
        extra_path=str(fake),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "demo.json", "demo.csv", "demo_seeds.csv"
    }  # fmt: skip


# ----------------------------------------------------------------------------- audit
def test_audit_fixture_report_and_plot(tmp_path):
    png = tmp_path / "figs" / "audit.png"
    res = run_cli(
        "audit", FIXTURE, "--cost", "length", "--threshold", "format=1",
        "--threshold", "length=200", "--plot", png,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "reward columns (inferred): format, helpfulness, length" in out
    assert "12 completions in 3 groups (size 4), 3 rewards" in out
    gdpo = next(line for line in out.splitlines() if line.strip().startswith("gdpo"))
    assert gdpo.split()[1:3] == ["1", "25.0%"]  # 1 of the 4 failing rows is masked
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_audit_named_columns_weights_and_methods():
    res = run_cli(
        "audit", FIXTURE, "--group", "prompt_id", "--rewards", "format,helpfulness",
        "--weights", "helpfulness=2", "--methods", "gdpo,softmin", "--kappa", "0.5,4",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "weights: format=1, helpfulness=2" in res.stdout
    assert "softmin k=0.5" in res.stdout and "softmin k=4" in res.stdout
    assert "inferred" not in res.stdout


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("", [], "empty file"),
        ("group,a\n0,1\n0,oops\n", [], "row 2 (line 3): column 'a' has the non-numeric value"),
        ("group,a\n0,1\n", ["--rewards", "b"], "reward column 'b' not found"),
        ("group,a\n0,1\n", ["--cost", "b"], "--cost: ['b'] not among the reward columns"),
        ("group,a,b\n0,1,2\n", ["--weights", "1,2,3"], "3 values for 2 rewards"),
        ("group,a\n0,1\n", ["--threshold", "zz=1"], "unknown reward 'zz'"),
        ("group,a\n0,1\n", ["--methods", "nope"], "unknown ['nope']"),
        ("group,a\n0,1\n", ["--param", "nope=1"], "--param: no selected method takes 'nope'"),
    ],
)  # fmt: skip
def test_audit_bad_input_exits_two(tmp_path, content, args, message):
    path = tmp_path / "r.csv"
    path.write_text(content)
    res = run_cli("audit", path, *args)
    assert res.returncode == 2, res.stdout
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_audit_help_names_only_files_in_the_repository():
    out = run_cli("audit", "--help").stdout
    assert "DESIGN.md" not in out
    for page in ("docs/rollouts.md", "docs/audit.md"):
        assert page in out and (pathlib.Path(__file__).parents[1] / page).is_file()
    assert "{csv,tsv,jsonl,parquet}" in out and "--from" in out and "--json" in out


def test_audit_json_is_one_object_with_the_verdict(tmp_path):
    png = tmp_path / "a.png"
    res = run_cli("audit", FIXTURE, "--methods", "gdpo,softmin", "--json", "--plot", png)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)  # the figure's path went to stderr
    assert f"wrote {png}" in res.stderr and png.is_file()
    text = run_cli("audit", FIXTURE, "--methods", "gdpo,softmin").stdout
    assert out["verdict"]["text"] == text.splitlines()[-1]
    assert out["input"]["reward_columns"] == ["format", "helpfulness", "length"]
    assert [m["label"] for m in out["methods"]] == out["spearman"]["labels"]
    assert out["rows"] == 12 and out["groups"] == 3


def test_audit_missing_file_exits_two(tmp_path):
    res = run_cli("audit", tmp_path / "nope.jsonl")
    assert res.returncode == 2 and "no such file" in res.stderr


def test_cli_and_demo_modules_import_no_plotting_or_torch():
    code = (
        "import sys, rewardagg.cli, rewardagg.demo, rewardagg.audit, rewardagg.rollouts_io;"
        "rewardagg.cli.build_parser();"
        "print(sorted(m for m in ('matplotlib', 'tqdm', 'torch', 'scipy') if m in sys.modules))"
    )
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
