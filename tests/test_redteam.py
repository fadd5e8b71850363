"""Issue 24: a fast sampled run of scripts/redteam.py (the full campaign is
``python scripts/redteam.py --cases 3000 --seed 24``): no opaque error, silent wrong
result or hang outside the defects other helpers own (tagged "[known ...]")."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpmath")
pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "redteam.py"


def _redteam():
    spec = importlib.util.spec_from_file_location("redteam", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["redteam"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [1, 2])
def test_issue24_redteam_sample(seed):
    rt = _redteam()
    tally, bad = rt.run(60, seed, timeout=120.0, out=io.StringIO())
    assert sum(tally.values()) == 60
    unexplained = [b for b in bad if "[known" not in b[3]]
    assert not unexplained, "\n".join(f"{b[0]} {b[2]} -> {b[3]}" for b in unexplained)
    assert tally["correct"] + tally["clear_error"] >= 40


def test_issue24_redteam_reference_is_independent_and_right():
    """The script's reference agrees with hand-computed values (so a "correct" verdict
    means something): GDPO on two groups, softmin at kappa 0 = mean."""
    import numpy as np

    rt = _redteam()
    R = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    base = dict(
        order="normalize_then_reduce",
        prm={},
        w=[1.0, 1.0],
        eps=0.0,
        correction=1.0,
        singleton="zero",
        baseline="mean",
        center="batch",
        batch_norm=False,
        mult={},
        scale="group",
    )
    z = 0.5 / np.sqrt(0.5)  # two values 0/1: mean 0.5, Bessel sd sqrt(0.5)
    got = rt.ref_advantages(R, [[0, 1], [2, 3]], dict(base, method="gdpo"))
    np.testing.assert_allclose(got, [0.0, 0.0, 2 * z, -2 * z], atol=1e-15)
    got = rt.ref_advantages(R, [[0, 1], [2, 3]], dict(base, method="softmin", prm={"kappa": 0.0}))
    np.testing.assert_allclose(got, [0.0, 0.0, z, -z], atol=1e-15)
