"""Trainer logs written one file per training step: finding the files, picking one step,
and joining the steps into one :class:`~rewardagg.rollouts_io.Rollouts`.

A prompt answered at two steps was answered by two different policies, so the groups of
different steps are kept apart: a group is a (step, prompt) pair.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rewardagg.rollouts_io import RolloutFileError, Rollouts

__all__ = [
    "StepFile",
    "concat_steps",
    "describe_source",
    "describe_steps",
    "select_step",
    "step_files",
]

StepFile = tuple[int | None, Path]
"""A log file and the training step its name gives (``None``: the name gives none)."""


def _step_of(path: Path, pattern: re.Pattern[str]) -> int | None:
    """The step in ``path``'s name, or ``None`` when the name does not match ``pattern``."""
    m = pattern.fullmatch(path.name)
    return int(m.group(1)) if m else None


def step_files(path: str | Path, pattern: re.Pattern[str], what: str) -> list[StepFile]:
    """The step files of ``path``: a folder's files whose name matches ``pattern`` (group 1
    is the step), by step; or ``path`` itself when it is not a folder (it is then opened,
    and checked, by the reader). ``what`` names the files for the error of a folder
    without any, e.g. ``"verl generation dumps (<step>.jsonl)"``."""
    p = Path(path)
    if not p.is_dir():
        return [(_step_of(p, pattern), p)]
    try:
        found = [(_step_of(c, pattern), c) for c in p.iterdir()]
    except OSError as e:
        raise RolloutFileError(f"{p}: cannot list the folder ({e.strerror or e})") from None
    numbered = sorted(((s, c) for s, c in found if s is not None), key=lambda sc: sc[0])
    files: list[StepFile] = list(numbered)
    if not files:
        raise RolloutFileError(f"{p}: no {what} in this folder")
    return files


def select_step(files: Sequence[StepFile], step: int | None, path: str | Path) -> list[StepFile]:
    """``files`` when ``step`` is ``None``, else the one file of that step (an error naming
    the steps there are when it is missing)."""
    if step is None:
        return list(files)
    chosen: list[StepFile] = [(s, f) for s, f in files if s == step]
    if not chosen:
        steps = [s for s, _ in files if s is not None]
        have = f"steps found: {describe_steps(steps)}" if steps else "its name gives no step"
        raise RolloutFileError(f"{path}: no file for step {step} ({have})")
    return chosen


def describe_steps(steps: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1..3, 7"`` (runs of consecutive steps shortened)."""
    runs: list[list[int]] = []
    for s in sorted(steps):
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)


def _step_labels(step: int | None, labels: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Each row's label as ``(step, label)``: one tuple per group, shared by its rows."""
    if codes.size == 0:
        return np.empty(0, dtype=object)
    _, first = np.unique(codes, return_index=True)
    table = np.empty(first.size, dtype=object)
    for i, row in enumerate(first.tolist()):
        table[i] = (step, labels[row])
    return table[codes]


def describe_source(path: str | Path, files: Sequence[StepFile]) -> str:
    """How the report names what it read: the file of a single step, else the folder and
    its steps (``"run/dumps (steps 1..3)"``)."""
    if len(files) == 1:
        return str(files[0][1])
    return f"{path} (steps {describe_steps([s for s, _ in files if s is not None])})"


def concat_steps(parts: Sequence[tuple[int | None, Rollouts]], source: str) -> Rollouts:
    """The rows of every step, in order, with each step's groups kept apart (a group
    label becomes ``(step, label)``). Every part must have the same reward columns."""
    if len(parts) == 1:
        only = parts[0][1]
        only.source = source
        return only
    names = parts[0][1].reward_names
    for _, part in parts:
        if part.reward_names != names:
            raise RolloutFileError(
                f"{part.source}: reward columns {part.reward_names} differ from those of "
                f"{parts[0][1].source} ({names})"
            )
    codes, labels, offset = [], [], 0
    for step, part in parts:
        c = part.group_codes()
        codes.append(c + offset)
        labels.append(_step_labels(step, part.group_labels, c))
        offset += int(c.max()) + 1 if c.size else 0
    return Rollouts(
        rewards=np.concatenate([part.rewards for _, part in parts]),
        group_labels=np.concatenate(labels),
        reward_names=list(names),
        group_column=parts[0][1].group_column,
        inferred=parts[0][1].inferred,
        source=source,
        lines=np.concatenate([part.lines for _, part in parts]),
        group_index=np.concatenate(codes),
    )
