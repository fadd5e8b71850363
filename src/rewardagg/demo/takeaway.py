"""The take-away of the demo's reference runs: one text, printed by ``rewardagg demo``
and shown verbatim in the README and ``docs/choosing.md`` (a test checks all three).

It summarises the shipped reference runs (:mod:`rewardagg.demo.reference`), not the run
that prints it; the numbers it quotes are checked against them by
``tests/test_demo_env.py``.
"""

from __future__ import annotations

__all__ = ["TAKEAWAY", "TAKEAWAY_HEADER"]

TAKEAWAY_HEADER = (
    "take-away of the reference runs (rewardagg demo's defaults; --scenario stuck,trap; "
    "--steps 600 on the k17-common pair):"
)

TAKEAWAY = """\
(to be written from the reference runs)"""
