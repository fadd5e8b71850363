"""Rollouts from the logs trainers write, for ``rewardagg audit --from TRAINER PATH``.

- ``verl``: the generation dumps of ``trainer.rollout_data_dir`` (one ``<step>.jsonl``
  per step; :mod:`~rewardagg.trainer_logs.verl`);
- ``trl``: the completion tables of ``log_completions=True``
  (``<output_dir>/completions/completions_<step>.parquet``;
  :mod:`~rewardagg.trainer_logs.trl`).

Each reader returns a :class:`~rewardagg.rollouts_io.Rollouts`, as
:func:`~rewardagg.rollouts_io.load_rollouts` does for a plain rollout file, with the
trainer's group and reward columns picked, and the groups of different steps kept apart
(:mod:`~rewardagg.trainer_logs.steps`). numpy only (pyarrow for Parquet), imported only
by the command that reads a log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from rewardagg.rollouts_io import Rollouts
from rewardagg.trainer_logs.trl import load_trl_completions
from rewardagg.trainer_logs.verl import load_verl_dump

__all__ = ["TRAINERS", "load_trainer_log", "load_trl_completions", "load_verl_dump"]

TRAINERS: dict[str, Callable[..., Rollouts]] = {
    "verl": load_verl_dump,
    "trl": load_trl_completions,
}
"""The trainers whose logs are read, and their readers."""


def load_trainer_log(
    trainer: str,
    path: str | Path,
    *,
    group: str | None = None,
    rewards: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    step: int | None = None,
) -> Rollouts:
    """The rollouts of ``trainer``'s log at ``path`` (a folder of step files, or one file);
    ``step`` picks one step of a folder. Raises ``KeyError`` for an unknown trainer and
    :class:`~rewardagg.rollouts_io.RolloutFileError` for a log that cannot be read."""
    return TRAINERS[trainer](path, group=group, rewards=rewards, exclude=exclude, step=step)
