"""Issue 26, the new user's path: ``rewardagg doctor``, the ``rvpo`` alias, and the other
checks that do not need a host framework (the host-specific ones are in
``test_issue26_hosts.py``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import rewardagg as ra
from rewardagg.cli import doctor, main

# ------------------------------------------------------------------------------ doctor

# transformers 5.10.4's own requirement line for Hugging Face's kernels (its METADATA)
TRANSFORMERS_510_KERNELS = 'kernels<0.13,>=0.12.0; extra == "kernels"'


def _fake_env(monkeypatch, versions, *, failing=None, requires=None):
    """Installed distributions ``versions``; importing a module in ``failing`` raises it."""
    failing = failing or {}
    imported = []

    def import_module(name):
        imported.append(name)
        if name in failing:
            raise failing[name]
        return object()

    monkeypatch.setattr(doctor, "installed_version", lambda d: versions.get(d))
    monkeypatch.setattr(doctor, "module_found", lambda m: m in versions)
    monkeypatch.setattr(
        doctor,
        "declared_requirements",
        lambda d: (requires or {}).get(d, []) if d in versions else [],
    )
    monkeypatch.setattr(doctor, "import_module", import_module)
    return imported


def test_issue26_doctor_prints_the_kernels_fix(monkeypatch, capsys):
    pytest.importorskip("packaging")
    _fake_env(
        monkeypatch,
        {"trl": "1.16.0", "transformers": "5.10.4", "kernels": "0.19.0"},
        failing={
            "rewardagg.integrations.trl": ValueError(
                "Either a revision or a version must be specified"
            )
        },
        requires={"transformers": ["numpy>=1.17", TRANSFORMERS_510_KERNELS]},
    )
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  kernels 0.19.0 is installed, but transformers 5.10.4 declares kernels" in out
    assert (
        "FAIL  trl 1.16.0: adapter import failed: ValueError: Either a revision or a version" in out
    )
    # the exact command, with the range transformers itself declares, under both lines
    assert out.count('fix: python -m pip install "kernels<0.13,>=0.12.0"') == 2
    assert "verl: not installed" in out and "openrlhf: not installed" in out


def test_issue26_doctor_kernels_in_range_is_clean(monkeypatch, capsys):
    pytest.importorskip("packaging")
    imported = _fake_env(
        monkeypatch,
        {"trl": "1.16.0", "transformers": "5.10.4", "kernels": "0.12.3"},
        requires={"transformers": [TRANSFORMERS_510_KERNELS]},
    )
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "ok    trl 1.16.0: adapter imports" in out and "kernels" not in out
    assert imported == ["rewardagg.integrations.trl"]


def test_issue26_doctor_real_transformers_range():
    """The range comes from the installed transformers' metadata, not from a table."""
    pytest.importorskip("packaging")
    if doctor.installed_version("transformers") is None:
        pytest.skip("transformers not installed")
    from packaging.requirements import Requirement

    declared = [
        Requirement(r) for r in doctor.declared_requirements("transformers") if "kernels" in r
    ]
    found = doctor._declared_range("transformers", "kernels")
    if not declared:
        assert found is None
    else:
        assert found == str(declared[0].specifier)


def test_issue26_doctor_missing_module_and_gpu_only(monkeypatch, capsys):
    err = ModuleNotFoundError("No module named 'hydra'", name="hydra")
    gpu = ModuleNotFoundError("No module named 'flash_attn'", name="flash_attn")
    _fake_env(
        monkeypatch,
        {"verl": "0.9.1", "openrlhf": "0.11.2"},
        failing={
            "rewardagg.integrations.verl._adapter": err,
            "rewardagg.integrations.openrlhf._adapter": gpu,
        },
    )
    assert main(["doctor", "--host", "verl", "--host", "openrlhf"]) == 1
    out = capsys.readouterr().out
    assert "fix: python -m pip install hydra" in out
    assert "flash-attn builds only with CUDA" in out
    assert "trl" not in out.split("\n", 1)[1]  # --host limits the check


def test_issue26_doctor_version_check_message_is_the_fix(monkeypatch, capsys):
    msg = "rewardagg.integrations.trl supports trl>=1.12; found trl 1.9. Install a tested "
    msg += "version (pip install 'trl>=1.12,<1.17')"
    _fake_env(
        monkeypatch, {"trl": "1.9.0"}, failing={"rewardagg.integrations.trl": ImportError(msg)}
    )
    assert main(["doctor", "--host", "trl"]) == 1
    out = capsys.readouterr().out
    assert "pip install 'trl>=1.12,<1.17'" in out and "the message above says how" in out


# ------------------------------------------------------------------------- rvpo alias


def test_issue26_rvpo_is_an_alias_of_softmin():
    rewards = np.random.default_rng(3).random((12, 3))
    rewards[2, 1] = np.nan
    a, info = ra.advantages(rewards, method="rvpo", group_size=4, kappa=2.0, return_info=True)
    b = ra.advantages(rewards, method="softmin", group_size=4, kappa=2.0)
    np.testing.assert_array_equal(a, b)
    assert info.method == "softmin"
    assert ra.get_aggregator("rvpo") is ra.get_aggregator("softmin")
    # listed once, under its own name; the alias shows in the error message as an alias
    assert "rvpo" not in ra.available_methods()
    with pytest.raises(ValueError, match=r"aliases: rvpo \(= softmin\)"):
        ra.advantages(rewards, method="rvp", group_size=4)
    with pytest.raises(ValueError, match="alias of the built-in 'softmin'"):
        ra.register_aggregator("rvpo", lambda z, *, weights=None: z[..., 0])


# ----------------------------------------------------------------------------- audit

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _audit(capsys, monkeypatch, *args):
    monkeypatch.chdir(ROOT)
    assert main(["audit", *args]) == 0
    return capsys.readouterr().out


def _wide_rollouts(tmp_path):
    """8 rewards with long names, 6 groups of 5: every built-in method runs."""
    rng = np.random.default_rng(26)
    names = [f"criterion_{k}_{'x' * k}" for k in range(8)]
    lines = ["prompt_id," + ",".join(names)]
    for g in range(6):
        for _ in range(5):
            lines.append(f"p{g}," + ",".join(f"{v:.3f}" for v in rng.random(8)))
    path = tmp_path / "wide.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_issue26_default_audit_report_fits_100_columns(capsys, monkeypatch, tmp_path):
    for target in ("examples/rollouts.jsonl", str(_wide_rollouts(tmp_path))):
        out = _audit(capsys, monkeypatch, target)
        wide = [line for line in out.splitlines() if len(line) > 100]
        assert not wide, wide
        folded = _audit(capsys, monkeypatch, target, "--spearman")
        assert not [line for line in folded.splitlines() if len(line) > 100]


def test_issue26_audit_lists_the_pairs_that_disagree_most(capsys, monkeypatch):
    import json

    out = _audit(capsys, monkeypatch, "examples/rollouts.jsonl")
    report = json.loads(_audit(capsys, monkeypatch, "examples/rollouts.jsonl", "--json"))
    labels = report["spearman"]["labels"]
    rho = np.array(report["spearman"]["matrix"], dtype=float)
    pairs = [(i, j) for i in range(len(labels)) for j in range(i + 1, len(labels))]
    pairs.sort(key=lambda ij: rho[ij])  # stable: ties in the table's order
    expected = [(rho[i, j], labels[i], labels[j]) for i, j in pairs[:5]]
    section = out.split("disagree most\n", 1)[1].split("\n\n", 1)[0].splitlines()[3:]
    shown = [(line[2:].rsplit(None, 1)) for line in section]
    assert [float(v) for _, v in shown] == [round(float(v), 3) for v, _, _ in expected]
    for (pair, _), (_, a, b) in zip(shown, expected, strict=True):
        assert pair.split()[0] == a.split()[0] and b.split()[0] in pair
    # the matrix is behind --spearman, every cell of it
    full = _audit(capsys, monkeypatch, "examples/rollouts.jsonl", "--spearman")
    assert full.count(f"{rho[0, 1]:.3f}") >= 2


def test_issue26_audit_plot_integer_counts_and_readable_labels(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rewardagg.audit import run_audit
    from rewardagg.audit.plots import make_figure

    x = np.random.default_rng(0).random((40, 4))
    rep = run_audit(x, np.repeat(np.arange(8), 5), reward_names=["a", "b", "c", "d"])
    assert len(rep.methods) >= 10
    fig = make_figure(rep)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    counts_ax, _, spearman_ax = fig.axes[:3]
    ticks = counts_ax.get_yticks()
    assert np.all(ticks == np.round(ticks)), ticks  # no 0.5, 1.5, ...
    for axis_labels in (spearman_ax.get_xticklabels(), spearman_ax.get_yticklabels()):
        boxes = [t.get_window_extent(renderer) for t in axis_labels]
        for first, second in itertools.pairwise(boxes):
            assert not first.overlaps(second), (first, second)
    plt.close(fig)
