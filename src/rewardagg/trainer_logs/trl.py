"""TRL's completion logs as rollouts: ``rewardagg audit --from trl DIR|FILE``.

With ``log_completions=True``, TRL's ``GRPOTrainer`` (1.16) writes the completions of the
last generation batch at every logging step to
``<output_dir>/completions/completions_<step, 5 digits>.parquet`` (pandas' ``to_parquet``,
so pyarrow is installed with TRL's stack), one row per completion::

    step | prompt | completion | <one column per reward function> | <log_extra columns> | advantage

The same table goes to Weights & Biases or Trackio when ``report_to`` names them; those
keep it in their own stores, and a table exported from them as CSV or JSONL with the same
columns is read too (format from the extension). Nothing else is written to disk: the
``rich`` table is printed only.

Read as rollouts:

- **groups**: the ``prompt`` column (text, or a conversation: a list of messages), or the
  column given; the groups of different steps are kept apart (see
  :mod:`~rewardagg.trainer_logs.steps`). Two identical prompts in one batch are one group.
- **rewards**: every numeric column but ``step`` and ``advantage`` (the reward functions,
  named as TRL names them; NaN where a function returned ``None``), or the columns given.
  A numeric column logged with ``log_extra`` counts too: leave it out with ``--exclude`` or
  name the rewards.
- **steps**: every ``completions_<step>.parquet`` file of ``DIR``, or the one of ``step``,
  or ``FILE``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from rewardagg.rollouts_io import Rollouts, load_rollouts, read_records
from rewardagg.trainer_logs.steps import concat_steps, describe_source, select_step, step_files

__all__ = ["TRL_STEP_FILE", "TRL_TEXT_COLUMNS", "load_trl_completions"]

TRL_STEP_FILE = re.compile(r"completions_([0-9]+)\.parquet")
"""The name of a logging step's table in ``<output_dir>/completions/``."""
TRL_TEXT_COLUMNS = ("completion", "image")
"""Columns that are never rewards (a completion ``"42"`` is text, not a score)."""


def load_trl_completions(
    path: str | Path,
    *,
    group: str | None = None,
    rewards: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    step: int | None = None,
) -> Rollouts:
    """The rollouts of TRL's completions folder (every step, or ``step``) or of one table.

    Raises :class:`~rewardagg.rollouts_io.RolloutFileError` for a missing folder or file,
    a folder without ``completions_<step>.parquet`` files, a missing step, or anything
    :func:`~rewardagg.rollouts_io.load_rollouts` refuses (a Parquet file needs pyarrow).
    """
    files = select_step(
        step_files(path, TRL_STEP_FILE, "TRL completion tables (completions_<step>.parquet)"),
        step,
        path,
    )
    first = files[0][1]
    columns, _, _ = read_records(first, limit=1)
    group = group if group is not None else "prompt"
    skip = [*exclude, *(c for c in TRL_TEXT_COLUMNS if c in columns and c not in exclude)]
    if rewards is not None:
        skip = list(exclude)
    parts = []
    names = rewards
    for s, f in files:
        part = load_rollouts(f, group=group, rewards=names, exclude=skip)
        names = part.reward_names if names is None else names  # later steps: the same columns
        part.inferred = rewards is None
        parts.append((s, part))
    return concat_steps(parts, describe_source(path, files))
