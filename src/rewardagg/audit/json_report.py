"""The audit as plain JSON data, for scripts: :func:`report_to_dict` (``rewardagg audit
--json`` prints it).

Every number of the text report is there, under the names the docs page on the audit
defines (``docs/audit.md``); counts are integers, shares are fractions in [0, 1], and a
value that is not a number (a Spearman correlation with a constant column, a share of
zero rows) is ``null``. Infinite method parameters are the strings ``"inf"`` and
``"-inf"``, so that the output is strict JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from rewardagg.audit.compute import AuditReport, MethodAudit
from rewardagg.audit.verdict import audit_verdict, format_verdict

__all__ = ["JSON_SCHEMA_VERSION", "report_to_dict"]

JSON_SCHEMA_VERSION = 1
"""Bumped when a key of :func:`report_to_dict` changes meaning or goes away."""


def _number(x: Any) -> Any:
    """A JSON-safe scalar: numpy scalars as Python ones, NaN as ``None``, +-inf as text."""
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
    return x


def _share(a: int, b: int) -> float | None:
    return None if b == 0 else a / b


def _per_reward(rep: AuditReport) -> list[dict[str, Any]]:
    """One record per reward column: the report's "Per reward" table."""
    out = []
    for j, name in enumerate(rep.reward_names):
        per_thr = rep.threshold_failures_per_reward
        out.append(
            {
                "name": name,
                "cost": name in rep.costs,
                "weight": _number(float(rep.weights[j])),
                "missing": int(rep.missing_per_reward[j]),
                "bottleneck_share": _number(float(rep.bottleneck_share[j])),
                "zero_spread_groups": _number(float(rep.zero_spread_fraction[j])),
                "z_failures": int(rep.z_failures_per_reward[j]),
                "threshold": _number(rep.thresholds.get(name)),
                "threshold_failures": None
                if per_thr is None or name not in rep.thresholds
                else int(per_thr[j]),
            }
        )
    return out


def _method(rep: AuditReport, m: MethodAudit) -> dict[str, Any]:
    """One record per audited method setting: the report's "Masked failures" table."""
    names = rep.reward_names
    thr = m.threshold_masked_per_reward
    return {
        "label": m.label,
        "method": m.method,
        "params": {k: _number(v) for k, v in m.params.items()},
        "masked_failures": m.masked_failures,
        "masked_share": _share(m.masked_failures, rep.z_failures),
        "masked_failures_per_reward": {
            n: int(v) for n, v in zip(names, m.masked_failures_per_reward, strict=True)
        },
        "threshold_masked": m.threshold_masked,
        "threshold_masked_share": None
        if m.threshold_masked is None
        else _share(m.threshold_masked, rep.threshold_failures or 0),
        "threshold_masked_per_reward": None
        if thr is None
        else {n: int(v) for n, v in zip(names, thr, strict=True)},
        "positive": m.positive,
        "positive_share": _share(m.positive, rep.n_rows),
        "distinct_per_group_mean": _number(m.distinct_per_group_mean),
    }


def report_to_dict(rep: AuditReport) -> dict[str, Any]:
    """Everything :func:`~rewardagg.audit.format_report` prints, as JSON-ready data.

    Keys: ``schema`` (:data:`JSON_SCHEMA_VERSION`), ``source``, ``rows``, ``groups``,
    ``group_size`` (``{"min", "max"}``), ``rewards`` (one record per reward),
    ``rows_without_reward``, ``groups_without_signal``, ``z_level``, ``z_failures``,
    ``threshold_failures``, ``methods`` (one record per method setting), ``skipped``
    (``{"label", "reason"}`` records), ``spearman`` (``{"labels", "matrix"}``) and
    ``verdict`` (the :class:`~rewardagg.audit.verdict.Verdict` fields plus its ``text``).

    >>> import numpy as np
    >>> from rewardagg.audit import default_audit_methods, run_audit
    >>> r = np.array([[0, 9, 9], [1, 1, 1], [1, 2, 2], [1, 3, 3.0]])
    >>> rep = run_audit(r, [0, 0, 0, 0], reward_names=["format", "quality", "style"],
    ...                 methods=default_audit_methods(["gdpo"]))
    >>> d = report_to_dict(rep)
    >>> d["rows"], d["methods"][0]["masked_failures"], d["verdict"]["reward"]
    (4, 1, 'format')
    """
    verdict = audit_verdict(rep)
    labels = [m.label for m in rep.methods]
    return {
        "schema": JSON_SCHEMA_VERSION,
        "source": rep.source,
        "rows": rep.n_rows,
        "groups": rep.n_groups,
        "group_size": {"min": rep.group_sizes[0], "max": rep.group_sizes[1]},
        "rewards": _per_reward(rep),
        "rows_without_reward": rep.rows_without_reward,
        "groups_without_signal": rep.groups_without_signal,
        "z_level": rep.z_level,
        "z_failures": rep.z_failures,
        "threshold_failures": rep.threshold_failures,
        "methods": [_method(rep, m) for m in rep.methods],
        "skipped": [{"label": label, "reason": why} for label, why in rep.skipped],
        "spearman": {
            "labels": labels,
            "matrix": [[_number(float(v)) for v in row] for row in np.asarray(rep.spearman)],
        },
        "verdict": {**asdict(verdict), "text": format_verdict(verdict)},
    }
