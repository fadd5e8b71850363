"""Issue 26, the new user's path: ``rewardagg doctor``, the ``rvpo`` alias, and the other
checks that do not need a host framework (the host-specific ones are in
``test_issue26_hosts.py``)."""

from __future__ import annotations

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
