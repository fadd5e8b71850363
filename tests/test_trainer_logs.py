"""The trainer-log readers without their hosts (issue 16): what is picked and what is refused.

The files here are small and written by the test in the layout the host writes (the
fidelity to the hosts' own writers is tested in ``test_trainer_logs_verl.py`` and
``test_trainer_logs_trl.py``, which run verl's and TRL's code). Runtime: about 1 s.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rewardagg.cli import main
from rewardagg.rollouts_io import RolloutFileError, Rollouts
from rewardagg.trainer_logs import TRAINERS, load_trainer_log
from rewardagg.trainer_logs.steps import concat_steps, describe_steps
from rewardagg.trainer_logs.verl import verl_reward_keys

FAST = ["--methods", "gdpo"]


def _verl_line(prompt: str, step: int, **extra) -> str:
    base = {"input": prompt, "output": "...", "gts": "7", "score": 1.0, "step": step}
    return json.dumps({**base, **extra})


def _write_verl(folder, steps=(1, 2), **columns):
    folder.mkdir(parents=True, exist_ok=True)
    for step in steps:
        lines = [
            _verl_line(f"prompt {i // 3}", step, **{k: v[i] for k, v in columns.items()})
            for i in range(6)
        ]
        (folder / f"{step}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_trainers_listed():
    assert set(TRAINERS) == {"verl", "trl"}


def test_verl_reward_keys_are_json_numbers_only():
    records = [
        {"input": "p", "score": 1, "step": 1, "a": None, "b": "3", "c": True, "d": [1]},
        {"input": "p", "score": 1, "step": 1, "a": 0.5, "b": "4", "c": False, "d": [2]},
    ]
    cols = list(records[0])
    assert verl_reward_keys(cols, records, {"input"}) == ["a", "c"]
    assert verl_reward_keys(cols, records, {"input", "a", "c"}) == ["score"]


def test_verl_groups_by_prompt_per_step(tmp_path):
    fmt = [1, 0, 1, 1, 1, None]
    folder = _write_verl(tmp_path / "d", format=fmt, pred=["1"] * 6)
    data = load_trainer_log("verl", folder)
    assert data.reward_names == ["format"] and data.group_column == "input" and data.inferred
    assert data.group_codes().tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert data.group_labels[0] == (1, "prompt 0") and data.group_labels[-1] == (2, "prompt 1")
    assert np.isnan(data.rewards[5, 0]) and data.rewards[0, 0] == 1.0
    assert data.source == f"{folder} (steps 1..2)"


def test_verl_prefers_a_logged_uid(tmp_path):
    uid = ["a", "a", "b", "b", "c", "c"]
    folder = _write_verl(tmp_path / "d", steps=(5,), uid=uid, ok=[1, 0, 1, 0, 1, 1])
    data = load_trainer_log("verl", folder)
    assert data.group_column == "uid" and data.group_codes().tolist() == [0, 0, 1, 1, 2, 2]
    assert data.reward_names == ["ok"]
    assert data.source == str(folder / "5.jsonl")


def test_verl_falls_back_to_the_score(tmp_path):
    folder = _write_verl(tmp_path / "d", steps=(3,))
    assert load_trainer_log("verl", folder).reward_names == ["score"]


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("empty", [], "no verl generation dumps (<step>.jsonl) in this folder"),
        ("dumps", ["--step", "9"], "no file for step 9 (steps found: 1..2)"),
        ("dumps", ["--exclude", "nope"], "excluded column 'nope' not found"),
        ("dumps", ["--rewards", "nope"], "reward column 'nope' not found"),
        ("dumps", ["--group", "nope"], "group column 'nope' not found"),
        ("steps_differ", [], "reward column 'ok' not found"),
    ],
)
def test_verl_errors_exit_two(tmp_path, capsys, setup, args, message):
    folder = tmp_path / "d"
    folder.mkdir()
    if setup == "dumps":
        _write_verl(folder, ok=[1, 0, 1, 0, 1, 1])
    elif setup == "steps_differ":
        _write_verl(folder, steps=(1,), ok=[1, 0, 1, 0, 1, 1])
        _write_verl(folder, steps=(2,), other=[1, 0, 1, 0, 1, 1])
    assert main(["audit", "--from", "verl", str(folder), *args, *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rewardagg audit: error: ") and message in err, err


def test_trl_csv_export_is_read_like_its_table(tmp_path):
    # A table exported from W&B as CSV: TRL's columns; a completion that looks numeric.
    path = tmp_path / "completions.csv"
    rows = ["step,prompt,completion,fmt,quality,advantage"]
    rows += [f"4,q{i // 2},{i},{i % 2},{(i * 3) % 4},0.1" for i in range(6)]
    path.write_text("\n".join(rows) + "\n")
    data = load_trainer_log("trl", path)
    assert data.reward_names == ["fmt", "quality"] and data.group_column == "prompt"
    assert data.group_codes().tolist() == [0, 0, 1, 1, 2, 2]


def test_trl_folder_without_tables(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["audit", "--from", "trl", str(tmp_path), *FAST]) == 2
    assert "no TRL completion tables (completions_<step>.parquet)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "verl", "--format", "csv"], "--format does not apply with --from verl"),
        (["--step", "3"], "--step needs --from verl or --from trl"),
    ],
)
def test_source_options_that_do_not_go_together(tmp_path, capsys, args, message):
    path = tmp_path / "r.csv"
    path.write_text("group,a\n0,1\n0,2\n")
    assert main(["audit", str(path), *args, *FAST]) == 2
    assert message in capsys.readouterr().err


def test_describe_steps():
    assert describe_steps([3, 1, 2, 7, 9, 10]) == "1..3, 7, 9..10"
    assert describe_steps([5]) == "5"


def test_concat_steps_keeps_steps_apart():
    def part(labels, values, source):
        return Rollouts(
            rewards=np.array(values, dtype=float)[:, None],
            group_labels=np.array(labels, dtype=object),
            reward_names=["r"],
            group_column="g",
            source=source,
            lines=np.arange(len(labels)) + 1,
        )

    joined = concat_steps(
        [(1, part(["a", "b", "a"], [1, 2, 3], "1")), (2, part(["a"], [4], "2"))], "all"
    )
    assert joined.group_codes().tolist() == [0, 1, 0, 2]
    assert list(joined.group_labels) == [(1, "a"), (1, "b"), (1, "a"), (2, "a")]
    assert joined.rewards[:, 0].tolist() == [1, 2, 3, 4] and joined.source == "all"
    with pytest.raises(RolloutFileError, match="reward columns"):
        other = part(["a"], [1], "3")
        other.reward_names = ["s"]
        concat_steps([(1, part(["a"], [1], "1")), (3, other)], "all")
