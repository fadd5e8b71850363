"""The reference runs: ``demo.csv`` of ``rewardagg demo`` with its defaults (the rubric
testbed) and of ``rewardagg demo --scenario neglect`` (the toy), shipped with the
package, so that the numbers quoted in the README, the docs and notebook 02 can be shown
and checked without training (``tests/test_demo_env.py`` compares every table the docs
show with these files).

To refresh them after a change that moves the numbers::

    rewardagg demo --out /tmp/ref && cp /tmp/ref/demo.csv src/rewardagg/demo/data/default_run.csv
    rewardagg demo --scenario neglect --out /tmp/neg \\
        && cp /tmp/neg/demo.csv src/rewardagg/demo/data/neglect_run.csv

then update the docs' tables from the printed output.
"""

from __future__ import annotations

from pathlib import Path

from rewardagg.demo.tidy import read_rows

__all__ = ["REFERENCE_CSV", "REFERENCE_NEGLECT_CSV", "reference_rows"]

_DATA = Path(__file__).with_name("data")
REFERENCE_CSV = _DATA / "default_run.csv"
"""``demo.csv`` of ``rewardagg demo`` (default scenarios, settings, seeds and steps)."""
REFERENCE_NEGLECT_CSV = _DATA / "neglect_run.csv"
"""``demo.csv`` of ``rewardagg demo --scenario neglect`` (otherwise defaults)."""


def reference_rows(family: str = "rubric") -> list[dict]:
    """The tidy rows of a reference run: ``"rubric"`` (:data:`REFERENCE_CSV`) or
    ``"neglect"`` (:data:`REFERENCE_NEGLECT_CSV`)."""
    paths = {"rubric": REFERENCE_CSV, "neglect": REFERENCE_NEGLECT_CSV}
    if family not in paths:
        raise ValueError(f"family must be one of {list(paths)}, got {family!r}")
    return read_rows(paths[family])
