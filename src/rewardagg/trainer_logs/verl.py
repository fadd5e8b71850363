"""verl's generation dumps as rollouts: ``rewardagg audit --from verl DIR|FILE``.

With ``trainer.rollout_data_dir=DIR`` (and ``trainer.validation_data_dir`` for validation),
verl's trainer writes one JSONL file per training step, ``DIR/<step>.jsonl``
(``RayPPOTrainer._dump_generations``, verl 0.9). Each line is one completion::

    {"input": <prompt text>, "output": <completion text>, "gts": <ground truth>,
     "score": <the sequence reward>, "step": <step>, <reward-extra-info key>: <value>, ...}

The extra keys are what the reward function returned besides ``score`` (with verl's GDPO
reward manager, one key per reward component), and ``request_id`` when the rollout had one.

Read as rollouts:

- **groups**: the prompt text ``input`` (verl's ``uid`` is not dumped), or ``uid`` when
  the extra keys have one, or the column given; the groups of different steps are kept
  apart (see :mod:`~rewardagg.trainer_logs.steps`). Two identical prompts in one batch
  are one group.
- **rewards**: the extra keys whose values are JSON numbers or booleans (``null``: a
  missing reward), or the columns given; ``score`` only when there is no such key (it is
  the combined reward verl trains on). Text values that look like numbers (a ``pred`` of
  ``"42"``) are not inferred as rewards.
- **steps**: every ``<step>.jsonl`` file of ``DIR``, or the one of ``step``, or ``FILE``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from rewardagg.rollouts_io import RolloutFileError, Rollouts, load_rollouts, read_records
from rewardagg.trainer_logs.steps import concat_steps, describe_source, select_step, step_files

__all__ = ["VERL_COLUMNS", "VERL_STEP_FILE", "load_verl_dump", "verl_reward_keys"]

VERL_COLUMNS = ("input", "output", "gts", "score", "step", "request_id")
"""The keys verl writes for every completion (``request_id`` when the rollout has one)."""
VERL_STEP_FILE = re.compile(r"([0-9]+)\.jsonl")
"""The name of a step's dump: ``<global step>.jsonl``."""
_SNIFF_RECORDS = 256


def _is_number(value: object) -> bool:
    """A JSON number or boolean (not text, not a list)."""
    return isinstance(value, (int, float, bool))


def verl_reward_keys(columns: Sequence[str], records: Sequence[dict], skip: set[str]) -> list[str]:
    """The reward-extra-info keys among ``columns`` whose first non-null value in
    ``records`` is a JSON number or boolean (``skip`` and :data:`VERL_COLUMNS` left out);
    ``["score"]`` when there is none."""
    keys = []
    for key in columns:
        if key in VERL_COLUMNS or key in skip:
            continue
        first = next((r[key] for r in records if r.get(key) is not None), None)
        if _is_number(first):
            keys.append(key)
    return keys or (["score"] if "score" in columns else [])


def _group_column(columns: Sequence[str], group: str | None) -> str:
    if group is not None:
        return group
    return "uid" if "uid" in columns else "input"


def load_verl_dump(
    path: str | Path,
    *,
    group: str | None = None,
    rewards: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    step: int | None = None,
) -> Rollouts:
    """The rollouts of a verl dump folder (every step, or ``step``) or of one step's file.

    Raises :class:`~rewardagg.rollouts_io.RolloutFileError` for a missing folder or file,
    a folder without ``<step>.jsonl`` files, a missing step, or anything
    :func:`~rewardagg.rollouts_io.load_rollouts` refuses.
    """
    files = select_step(
        step_files(path, VERL_STEP_FILE, "verl generation dumps (<step>.jsonl)"), step, path
    )
    first = files[0][1]
    columns, records, _ = read_records(first, fmt="jsonl", limit=_SNIFF_RECORDS)
    group = _group_column(columns, group)
    absent = [c for c in exclude if c not in columns]
    if absent:
        raise RolloutFileError(
            f"{first}: excluded column {absent[0]!r} not found; columns are: {', '.join(columns)}"
        )
    names = list(rewards) if rewards is not None else None
    if names is None:
        names = verl_reward_keys(columns, records, {group, *exclude})
        if not names:
            raise RolloutFileError(
                f"{first}: no numeric reward key found; name them with --rewards"
            )
    parts = []
    for s, f in files:
        part = load_rollouts(f, group=group, rewards=names, fmt="jsonl")
        part.inferred = rewards is None
        parts.append((s, part))
    return concat_steps(parts, describe_source(path, files))
