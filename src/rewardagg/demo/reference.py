"""The reference runs, shipped with the package, so that the numbers quoted in the
README, the docs and notebook 02 can be shown and checked without training
(``tests/test_demo_env.py`` compares every table and verdict the docs show with these
files). Each run is a ``demo.csv`` (tidy rows) and its ``demo_seeds.csv`` (the per-seed
values the paired verdicts are drawn from):

- ``rubric``: ``rewardagg demo`` with its defaults (``default_run.csv``, ``default_seeds.csv``);
- ``extras``: ``rewardagg demo --scenario stuck,trap`` (``extras_run.csv``, ``extras_seeds.csv``);
- ``long``: ``rewardagg demo --scenario k17-common-clean,k17-common-noisy --steps 600``
  (``long_run.csv``, ``long_seeds.csv``);
- ``neglect``: ``rewardagg demo --scenario neglect`` (the toy; ``neglect_run.csv``,
  ``neglect_seeds.csv``).

To refresh one after a change that moves the numbers (``rubric`` shown)::

    rewardagg demo --out /tmp/ref --no-plot
    cp /tmp/ref/demo.csv src/rewardagg/demo/data/default_run.csv
    cp /tmp/ref/demo_seeds.csv src/rewardagg/demo/data/default_seeds.csv

then update the docs' tables from the printed output.
"""

from __future__ import annotations

from pathlib import Path

from rewardagg.demo.tidy import read_rows, read_seed_rows

__all__ = [
    "REFERENCE_ARGS",
    "REFERENCE_CSV",
    "REFERENCE_FILES",
    "REFERENCE_NEGLECT_CSV",
    "reference_rows",
    "reference_seed_rows",
]

_DATA = Path(__file__).with_name("data")
#: family -> (tidy rows, per-seed rows) files.
REFERENCE_FILES = {
    "rubric": (_DATA / "default_run.csv", _DATA / "default_seeds.csv"),
    "extras": (_DATA / "extras_run.csv", _DATA / "extras_seeds.csv"),
    "long": (_DATA / "long_run.csv", _DATA / "long_seeds.csv"),
    "neglect": (_DATA / "neglect_run.csv", _DATA / "neglect_seeds.csv"),
}
#: family -> the ``rewardagg demo`` arguments of its reference run (after the defaults).
REFERENCE_ARGS = {
    "rubric": (),
    "extras": ("--scenario", "stuck,trap"),
    "long": ("--scenario", "k17-common-clean,k17-common-noisy", "--steps", "600"),
    "neglect": ("--scenario", "neglect"),
}
REFERENCE_CSV = REFERENCE_FILES["rubric"][0]
"""``demo.csv`` of ``rewardagg demo`` (default scenarios, settings, seeds and steps)."""
REFERENCE_NEGLECT_CSV = REFERENCE_FILES["neglect"][0]
"""``demo.csv`` of ``rewardagg demo --scenario neglect`` (otherwise defaults)."""


def _check(family: str) -> None:
    if family not in REFERENCE_FILES:
        raise ValueError(f"family must be one of {list(REFERENCE_FILES)}, got {family!r}")


def reference_rows(family: str = "rubric") -> list[dict]:
    """The tidy rows of a reference run (module docstring)."""
    _check(family)
    return read_rows(REFERENCE_FILES[family][0])


def reference_seed_rows(family: str = "rubric") -> list[dict]:
    """The per-seed rows of a reference run (module docstring); the verdicts are
    ``paired_verdicts(reference_seed_rows(family))``."""
    _check(family)
    return read_seed_rows(REFERENCE_FILES[family][1])
