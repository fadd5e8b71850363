"""``rewardagg audit --from verl`` on dumps written by verl's own code (issue 16).

The fixture is written by verl 0.9.1's ``RayPPOTrainer._log_rollout_data`` ->
``_dump_generations`` -> ``_write_generations`` (the code behind
``trainer.rollout_data_dir``), called on a trainer object with only what that path reads:
a tokenizer, the global step and verl's dump executor. The batch is a real ``DataProto``
with uneven, shuffled groups, the same prompts at both steps, a missing reward component
(``None``) and a text key whose values look like numbers (``pred``).

The audit of the dump must be the audit of a CSV of the same numbers. Skipped when verl is
not installed. Runtime: about 10 s, most of it verl's import.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

pytest.importorskip("verl")
torch = pytest.importorskip("torch")
ray_trainer = pytest.importorskip("verl.trainer.ppo.ray_trainer")

from verl import DataProto  # noqa: E402

from rewardagg.cli import main  # noqa: E402

SIZES = (4, 3, 5, 1, 4)  # uneven groups, one singleton
STEPS = (1, 2)
KEYS = ["format", "correct", "concise"]
METHODS = ["--methods", "gdpo,softmin,min"]


class Tokenizer:
    """``batch_decode`` as verl calls it: token ids -> text (one word per id)."""

    def batch_decode(self, ids, skip_special_tokens=True):
        return [" ".join(f"w{int(t)}" for t in row if int(t) != 0) for row in ids]


def _batch(step: int) -> tuple[DataProto, dict, list[list]]:
    """A shuffled batch of ``SIZES`` groups, its reward extra info as verl's legacy
    trainer hands it to ``_log_rollout_data`` (lists, one value per row), and the rows
    as ``[group, format, correct, concise]`` for the CSV."""
    rng = np.random.default_rng(step)
    prompt_of = np.repeat(np.arange(len(SIZES)), SIZES)
    order = rng.permutation(prompt_of.size)
    prompt_of = prompt_of[order]
    n = prompt_of.size
    prompts = torch.tensor([[0, 10 + p, 20 + p, 30] for p in prompt_of])  # left padding
    responses = torch.tensor(rng.integers(1, 50, size=(n, 5)))
    fmt = [float(v) for v in rng.integers(0, 2, n)]
    fmt[3] = None  # the judge failed: a missing reward
    correct = [float(v) / 2 for v in rng.integers(0, 3, n)]
    concise = [round(float(v), 3) for v in rng.uniform(0, 1, n)]
    scores = torch.zeros(n, 5)
    scores[:, -1] = torch.tensor(
        [(f or 0.0) + c + k for f, c, k in zip(fmt, correct, concise, strict=True)]
    )
    batch = DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "token_level_scores": scores},
        non_tensors={
            "uid": np.array([f"uid-{step}-{p}" for p in prompt_of], dtype=object),
            "reward_model": np.array([{"ground_truth": "42"}] * n, dtype=object),
        },
    )
    extra = {
        "format": fmt,
        "correct": np.array(correct),  # verl converts arrays with .tolist()
        "concise": concise,
        "pred": [str(int(v)) for v in rng.integers(0, 100, n)],  # text that looks numeric
    }
    rows = [[f"{step}/{p}", fmt[i], correct[i], concise[i]] for i, p in enumerate(prompt_of)]
    return batch, extra, rows


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """verl's dump folder for two steps, and a CSV of the same numbers per step."""
    root = tmp_path_factory.mktemp("verl")
    folder = root / "rollouts"
    trainer = object.__new__(ray_trainer.RayPPOTrainer)  # only what the dump path reads
    trainer.tokenizer = Tokenizer()
    trainer._init_dump_executor()
    all_rows = {}
    for step in STEPS:
        batch, extra, rows = _batch(step)
        trainer.global_steps = step
        trainer._log_rollout_data(batch, extra, {}, str(folder))
        all_rows[step] = rows
    trainer._shutdown_dump_executor()
    csvs = {}
    for name, steps in (("all", STEPS), *((str(s), (s,)) for s in STEPS)):
        path = root / f"rollouts_{name}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["group", *KEYS])
            for s in steps:
                w.writerows([["" if v is None else v for v in r] for r in all_rows[s]])
        csvs[name] = path
    return folder, csvs


def _audit(capsys, *args) -> list[str]:
    assert main(["audit", *map(str, args), *METHODS]) == 0
    return capsys.readouterr().out.splitlines()


def _report_body(lines: list[str]) -> list[str]:
    """The report after its header line (which names the file read)."""
    i = next(i for i, line in enumerate(lines) if line.startswith("rewardagg audit: "))
    return lines[i + 1 :]


def test_verl_wrote_what_the_reader_expects(dumps):
    folder, _ = dumps
    assert sorted(p.name for p in folder.iterdir()) == ["1.jsonl", "2.jsonl"]
    first = json.loads((folder / "1.jsonl").read_text().splitlines()[0])
    assert {"input", "output", "gts", "score", "step", *KEYS, "pred"} <= set(first)
    assert first["step"] == 1 and isinstance(first["pred"], str)


def test_dump_audit_equals_the_csv_audit(dumps, capsys):
    folder, csvs = dumps
    dump = _audit(capsys, "--from", "verl", folder)
    table = _audit(capsys, csvs["all"], "--group", "group")
    assert dump[0] == "reward columns (inferred): format, correct, concise; group column: input"
    assert dump[1] == f"rewardagg audit: {folder} (steps 1..2)"
    assert _report_body(dump) == _report_body(table)
    n = sum(SIZES)
    assert f"  {2 * n} completions in {2 * len(SIZES)} groups (size 1..5), 3 rewards" in dump
    # the verdict, folded after "; " to fit 100 columns (issue 26), starts its last lines
    assert any(line.startswith("verdict: gdpo rewards ") for line in dump[-3:])


@pytest.mark.parametrize("step", STEPS)
def test_one_step_by_number_or_by_file(dumps, capsys, step):
    folder, csvs = dumps
    by_step = _audit(capsys, "--from", "verl", folder, "--step", step)
    by_file = _audit(capsys, "--from", "verl", folder / f"{step}.jsonl")
    table = _audit(capsys, csvs[str(step)], "--group", "group")
    assert by_step == by_file
    assert by_step[1] == f"rewardagg audit: {folder / f'{step}.jsonl'}"
    assert _report_body(by_step) == _report_body(table)


def test_json_of_the_dump_equals_the_json_of_the_csv(dumps, capsys):
    folder, csvs = dumps
    assert main(["audit", "--from", "verl", str(folder), "--json", *METHODS]) == 0
    dump = json.loads(capsys.readouterr().out)
    assert main(["audit", str(csvs["all"]), "--group", "group", "--json", *METHODS]) == 0
    table = json.loads(capsys.readouterr().out)
    assert dump["input"] == {
        "group_column": "input",
        "reward_columns": KEYS,
        "inferred": True,
    }
    for key in ("source", "input"):
        dump.pop(key), table.pop(key)
    assert dump == table
    assert dump["rewards"][0]["missing"] == len(STEPS)  # one None per step
    assert not math.isnan(dump["methods"][0]["positive_share"])


def test_named_rewards_and_a_numeric_looking_text_key(dumps, capsys):
    folder, _ = dumps
    out = _audit(capsys, "--from", "verl", folder, "--rewards", "format,correct")
    assert out[0].startswith("rewardagg audit: ")  # no "(inferred)" line
    assert out[1].endswith(", 2 rewards")
    # "pred" holds text that parses as numbers: it is a reward only when named.
    assert main(["audit", "--from", "verl", str(folder), "--rewards", "pred", *METHODS]) == 0
    capsys.readouterr()


def test_missing_step_names_the_steps_there_are(dumps, capsys):
    folder, _ = dumps
    assert main(["audit", "--from", "verl", str(folder), "--step", "7", *METHODS]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"rewardagg audit: error: {folder}: no file for step 7 (steps found: 1..2)"
    )


def test_reader_matches_verl_writer_names():
    """The reader's fixed keys are the writer's (a verl upgrade that renames them fails here)."""
    import inspect

    from rewardagg.trainer_logs.verl import VERL_COLUMNS

    source = inspect.getsource(ray_trainer.RayPPOTrainer._write_generations)
    for key in ("input", "output", "gts", "score", "step"):
        assert f'"{key}"' in source, key
    assert set(VERL_COLUMNS) >= {"input", "output", "gts", "score", "step", "request_id"}
    assert 'f"{global_steps}.jsonl"' in source  # the step file name: <step>.jsonl
