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
- The SoftMin of group z-scores (this library's softmin, RVPO's rule as we read it)
  lost to GDPO at K = 17 with a common critical criterion at every kappa from 0.25 up:
  k17-common-clean rubric_score {n[rubric|k17-common-clean|softmin k=0.25|rubric_score]} (kappa 0.25) to {n[rubric|k17-common-clean|softmin k=2|rubric_score]} (kappa 2) vs GDPO's {n[rubric|k17-common-clean|gdpo|rubric_score]},
  critical_met {n[rubric|k17-common-clean|softmin k=0.25|critical_met]} to {n[rubric|k17-common-clean|softmin k=2|critical_met]} vs {n[rubric|k17-common-clean|gdpo|critical_met]}. At kappa 0.1 (nearly the mean) it is close to GDPO
  ({n[rubric|k17-common-clean|softmin k=0.1|rubric_score]}, {n[rubric|k17-common-clean|softmin k=0.1|critical_met]}); at K = 5 it ties GDPO.
- The SoftMin of the raw rewards (tchebycheff k=2, reduce then standardise; RVPO's text
  does not say which order it means) did not lose: {n[rubric|k17-common-clean|tchebycheff k=2|rubric_score]} vs {n[rubric|k17-common-clean|gdpo|rubric_score]}, critical_met {n[rubric|k17-common-clean|tchebycheff k=2|critical_met]} vs {n[rubric|k17-common-clean|gdpo|critical_met]}
  (k17-common-clean), the best of the rules that treat the criteria alike there.
- gdpo_point_weights weighs each criterion by the rubric's own points, which HealthBench
  ships with every rubric: the best rubric_score at k17-common ({n[rubric|k17-common-clean|gdpo_point_weights|rubric_score]} clean, {n[rubric|k17-common-noisy|gdpo_point_weights|rubric_score]} noisy)
  and k5-rare ({n[rubric|k5-rare-clean|gdpo_point_weights|rubric_score]}, {n[rubric|k5-rare-noisy|gdpo_point_weights|rubric_score]}).
- gdpo+lagrange is the informed setting (told the critical column, its target and the
  judge's flip rate): the best critical_met at k17-common ({n[rubric|k17-common-clean|gdpo+lagrange|critical_met]} / {n[rubric|k17-common-noisy|gdpo+lagrange|critical_met]})
  and k5-rare ({n[rubric|k5-rare-clean|gdpo+lagrange|critical_met]} / {n[rubric|k5-rare-noisy|gdpo+lagrange|critical_met]}); at k5-common the points lead by 0.01-0.02.
- k17-rare says one thing: a critical criterion met by 10% among 16 others is learned by
  no setting in 200 updates, informed ones included ("not learned"). Its rubric_score
  differences are the easy criteria's; it cannot rank rules on discovering a criterion.
- At 600 updates (k17-common pair) GDPO's critical_met reaches {n[long|k17-common-clean|gdpo|critical_met]} clean, {n[long|k17-common-noisy|gdpo|critical_met]} noisy:
  part of the gap was speed. The SoftMin of z-scores catches up at kappa <= 0.5 clean
  ({n[long|k17-common-clean|softmin k=0.5|critical_met]}) but not at kappa 1 ({n[long|k17-common-clean|softmin k=1|critical_met]}) or 2 ({n[long|k17-common-clean|softmin k=2|critical_met]}); noisy, kappa 1 ends at {n[long|k17-common-noisy|softmin k=1|critical_met]}.
- trap (an easy criterion met only by responses that fail the critical one): at K = 17
  every uninformed rule that moves the policy falls in (GDPO's critical_met {n[extras|trap-k17-clean|gdpo|critical_met]}; power_mean
  and the GD2PO filters stay near the start, {n[extras|trap-k17-clean|gd2po|critical_met]}, by barely learning); at K = 5 the
  SoftMin at kappa >= 1, min and cvar escape it ({n[extras|trap-k5-clean|softmin k=1|critical_met]}-{n[extras|trap-k5-clean|softmin k=2|critical_met]} vs GDPO's {n[extras|trap-k5-clean|gdpo|critical_met]}), the one
  place where the SoftMin of z-scores beat GDPO. stuck (a criterion no policy can move)
  leaves the ranking as it is without it."""


@lru_cache(maxsize=1)
def _means() -> dict[tuple[str, str, str, str], float]:
    from rewardagg.demo.reference import REFERENCE_FILES, reference_rows

    out: dict[tuple[str, str, str, str], float] = {}
    for family in REFERENCE_FILES:
        for r in reference_rows(family):
            out[(family, r["scenario"], r["method"], r["metric"])] = r["mean"]
    return out


class _Numbers:
    """``{n[family|scenario|method|metric]}`` in the template: that reference run's mean,
    2 decimals (``family`` as in :data:`rewardagg.demo.reference.REFERENCE_FILES`)."""

    def __getitem__(self, key: str) -> str:
        family, scenario, method, metric = key.split("|")
        return f"{_means()[(family, scenario, method, metric)]:.2f}"


def takeaway_text() -> str:
    """The take-away, its numbers read from the shipped reference runs."""
    return _TEMPLATE.format(n=_Numbers())


def __getattr__(name: str) -> Any:
    if name == "TAKEAWAY":  # read lazily: importing the demo reads no data file
        return takeaway_text()
    raise AttributeError(name)
