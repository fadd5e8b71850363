"""``rewardagg audit``: does a batch of logged rewards suffer from constraint neglect?

Given the rewards of logged completions (``(N, K)``, grouped by prompt), the audit runs
every method through :func:`rewardagg.advantages` (``return_info=True``) and reports:

- **masked failures**: completions that are clearly below their
  group on some reward, ``Z[i, k] <= z_level`` (stage-1 group z-score, default level -1),
  yet receive a positive advantage; in total and per reward. For ``z_level == -1`` the
  counts equal the library's own ``AggregationInfo.masked_failures`` (tested).
- **threshold variant**: completions whose raw reward ``k`` is below a threshold you
  give (for a cost column, above it) that still receive a positive advantage.
- **bottleneck share** of each reward: the fraction of rows whose lowest ``Z`` is that
  reward (ties split), method-independent.
- **zero-spread groups**: per reward, the fraction of groups where the reward carries no
  signal (fewer than two present values, or all equal); and the groups with no signal on
  any reward.
- **distinct advantages per group** (mean): 1 means the group's completions all get the
  same advantage (GDPO's "advantage collapse").
- **rank agreement**: the Spearman rank correlation of the advantages of every pair of
  methods (ties get average ranks).
- **verdict**: one line, how many rows failing one reward each method still rewards
  (:mod:`~rewardagg.audit.verdict`).

Costs (lower is better) are negated before aggregation, so every column is "higher is
better" for the methods. Group labels are grouped by value as ``group_ids`` are in
:func:`rewardagg.advantages` (``1`` and ``1.0`` one group, ``1`` and ``"1"`` two).

Memory: each method runs without ``return_info`` (the array path, as before); the
method-independent diagnostics (bottleneck share, zero-spread groups) come from the
library's ``AggregationInfo`` computed on chunks of whole groups, and the rank correlation
keeps float32 ranks, so a 1e6 x 4 audit of every method stays near 200 MB
(``run_audit(..., keep_advantages=False)``, as the command line runs it).

A method the table marks as defined for non-negative values only (a power mean) is not
run on rewards with a negative value (costs count negated): the report lists it as
skipped, with the reason.

The package: :mod:`~rewardagg.audit.compute` (:func:`run_audit` and its records),
:mod:`~rewardagg.audit.report` (:func:`format_report`), :mod:`~rewardagg.audit.verdict`
(:func:`audit_verdict`, :func:`format_verdict`), :mod:`~rewardagg.audit.json_report`
(:func:`report_to_dict`, the ``--json`` output) and :mod:`~rewardagg.audit.plots`
(:func:`plot_report`, matplotlib imported inside it).
"""

from rewardagg.audit.compute import (
    AuditMethod,
    AuditReport,
    MethodAudit,
    default_audit_methods,
    rankdata,
    run_audit,
    spearman,
)
from rewardagg.audit.json_report import report_to_dict
from rewardagg.audit.plots import plot_report
from rewardagg.audit.report import format_report
from rewardagg.audit.verdict import Verdict, audit_verdict, format_verdict

__all__ = [
    "AuditMethod",
    "AuditReport",
    "MethodAudit",
    "Verdict",
    "audit_verdict",
    "default_audit_methods",
    "format_report",
    "format_verdict",
    "plot_report",
    "rankdata",
    "report_to_dict",
    "run_audit",
    "spearman",
]
