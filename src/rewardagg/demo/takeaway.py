"""The take-away of the demo's reference runs: one text, printed by ``rewardagg demo``
and shown verbatim in the README and ``docs/choosing.md`` (a test checks all three).

It summarises the shipped reference runs (:mod:`rewardagg.demo.reference`), not the run
that prints it. Its numbers are filled in from those files (:func:`takeaway_text`), so
they cannot drift from the tables; the words were written from the same runs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

__all__ = ["TAKEAWAY_HEADER", "takeaway_text"]  # and TAKEAWAY, read lazily

TAKEAWAY_HEADER = (
    "take-away of the reference runs (rewardagg demo's defaults; --scenario stuck,trap; "
    "--steps 600 on the k17-common pair):"
)

_TEMPLATE = """\
(to be written from the reference runs)"""


@lru_cache(maxsize=1)
def _means() -> dict[tuple[str, str, str], float]:
    from rewardagg.demo.reference import REFERENCE_FILES, reference_rows

    out: dict[tuple[str, str, str], float] = {}
    for family in REFERENCE_FILES:
        for r in reference_rows(family):
            out[(r["scenario"], r["method"], r["metric"])] = r["mean"]
    return out


class _Numbers:
    """``{n[scenario|method|metric]}`` in the template: that reference mean, 2 decimals."""

    def __getitem__(self, key: str) -> str:
        scenario, method, metric = key.split("|")
        return f"{_means()[(scenario, method, metric)]:.2f}"


def takeaway_text() -> str:
    """The take-away, its numbers read from the shipped reference runs."""
    return _TEMPLATE.format(n=_Numbers())


def __getattr__(name: str) -> Any:
    if name == "TAKEAWAY":  # read lazily: importing the demo reads no data file
        return takeaway_text()
    raise AttributeError(name)
