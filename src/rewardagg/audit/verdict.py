"""The audit's one-line verdict: how many failing rows each method still rewards.

A row *fails* a reward when its group z-score on it is ``<= z_level`` (default -1) or,
when thresholds are given, when its raw value is on the wrong side of the reward's
threshold (the thresholds then define failure: they are what the user said). A method
*rewards* a row when it gives it a positive advantage.

The verdict names one reward, the one whose failing rows the reference method (``gdpo``
when it was audited, else the first method) rewards most often (ties: the reward with more
failing rows, then the first), and gives, for every method, the number of that reward's
failing rows it rewards::

    verdict: gdpo rewards 3 of the 5 rows that fail format (Z<=-1); softmin k=1 1; min 0

When no row fails any reward, it says so. :func:`audit_verdict` computes it and
:func:`format_verdict` writes the line; ``rewardagg audit`` prints the line last (and puts
the record in its ``--json`` output).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rewardagg.audit.compute import AuditReport

__all__ = ["REFERENCE_METHOD", "Verdict", "audit_verdict", "format_verdict"]

REFERENCE_METHOD = "gdpo"
"""The method the verdict starts from when it was audited (GDPO, TRL's
``normalize_then_sum``: the usual multi-reward default)."""


@dataclass(frozen=True)
class Verdict:
    """What the verdict line says.

    Attributes:
        criterion: ``"z"`` (group z-score ``<= z_level``) or ``"threshold"``.
        condition: the failing condition in words, e.g. ``"Z<=-1"`` or ``"<1"``.
        reference: label of the method the line starts with (``""``: no method ran).
        reward: the reward the line is about (``""``: no row fails any reward).
        failing: rows that fail ``reward``.
        rewarded: method label -> rows failing ``reward`` that get a positive advantage,
            in the report's method order.
    """

    criterion: str
    condition: str
    reference: str
    reward: str
    failing: int
    rewarded: dict[str, int] = field(default_factory=dict)


def _failure_counts(rep: AuditReport) -> tuple[str, np.ndarray, list[np.ndarray]]:
    """``(criterion, failing rows per reward, rewarded failing rows per reward per method)``."""
    if rep.thresholds and rep.threshold_failures_per_reward is not None:
        per_method = [
            np.zeros(len(rep.reward_names), dtype=np.int64)
            if m.threshold_masked_per_reward is None
            else np.asarray(m.threshold_masked_per_reward)
            for m in rep.methods
        ]
        return "threshold", np.asarray(rep.threshold_failures_per_reward), per_method
    per_method = [np.asarray(m.masked_failures_per_reward) for m in rep.methods]
    return "z", np.asarray(rep.z_failures_per_reward), per_method


def _reference_index(rep: AuditReport) -> int:
    """Index of the reference method among the audited ones (``gdpo``, else the first)."""
    for i, m in enumerate(rep.methods):
        if m.method == REFERENCE_METHOD or m.label == REFERENCE_METHOD:
            return i
    return 0


def _condition(rep: AuditReport, criterion: str, reward: str) -> str:
    if criterion == "z":
        return f"Z<={rep.z_level:g}"
    if reward not in rep.thresholds:
        return "below its threshold"
    op = ">" if reward in rep.costs else "<"
    return f"{op}{rep.thresholds[reward]:g}"


def audit_verdict(rep: AuditReport) -> Verdict:
    """The verdict of an audit (see the module docstring)."""
    criterion, failing, per_method = _failure_counts(rep)
    if not rep.methods:
        return Verdict(criterion, _condition(rep, criterion, ""), "", "", 0)
    ref = _reference_index(rep)
    if not np.any(failing > 0):
        return Verdict(criterion, _condition(rep, criterion, ""), rep.methods[ref].label, "", 0)
    # Most rewarded failures under the reference, then most failing rows, then first.
    k = len(rep.reward_names)
    j = max(range(k), key=lambda i: (int(per_method[ref][i]), int(failing[i]), -i))
    rewarded = {m.label: int(per_method[i][j]) for i, m in enumerate(rep.methods)}
    name = rep.reward_names[j]
    return Verdict(
        criterion,
        _condition(rep, criterion, name),
        rep.methods[ref].label,
        name,
        int(failing[j]),
        rewarded,
    )


def format_verdict(v: Verdict) -> str:
    """The verdict line: ``verdict: gdpo rewards 3 of the 5 rows that fail format (Z<=-1);
    softmin k=1 1; ...`` (the reference first, then the others in report order)."""
    if not v.reference:
        return "verdict: no method could run on these rewards"
    if not v.reward:
        return f"verdict: no row fails a reward ({v.condition}), so no method rewards a failure"
    rows = "row that fails" if v.failing == 1 else "rows that fail"
    head = (
        f"verdict: {v.reference} rewards {v.rewarded[v.reference]} of the {v.failing} "
        f"{rows} {v.reward} ({v.condition})"
    )
    others = [f"{label} {n}" for label, n in v.rewarded.items() if label != v.reference]
    return "; ".join([head, *others])
