"""The committed reference run of ``rewardagg toolcall`` (``data/reference.json``, with its
tidy rows also in ``data/reference.csv``), so the numbers that ``docs/toolcall.md`` shows
can be checked without training (``tests/test_toolcall.py`` compares the page's tables
with :func:`rewardagg.toolcall.report.markdown_tables` of this file).

To refresh it after a change that moves the numbers (the command the reference records
in ``run``)::

    rewardagg toolcall --out /tmp/tc && cp /tmp/tc/toolcall.json \\
        src/rewardagg/toolcall/data/reference.json \\
        && cp /tmp/tc/toolcall.csv src/rewardagg/toolcall/data/reference.csv

then paste the printed tables into ``docs/toolcall.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["REFERENCE_CSV", "REFERENCE_JSON", "reference_report"]

_DATA = Path(__file__).with_name("data")
REFERENCE_JSON = _DATA / "reference.json"
REFERENCE_CSV = _DATA / "reference.csv"


def reference_report() -> dict[str, Any]:
    """The reference run's ``toolcall.json``."""
    return dict(json.loads(REFERENCE_JSON.read_text()))
