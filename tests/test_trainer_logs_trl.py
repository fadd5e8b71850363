"""``rewardagg audit --from trl`` on the completion tables TRL's own trainer writes (issue 16).

The fixture comes from a real ``trl.GRPOTrainer`` run (TRL's trainer, not rewardagg's) with
``log_completions=True``: offline on CPU, a tiny random Qwen2 and a BPE tokenizer trained on
the spot (``examples/trl_rvpo_qwen25.py::build_tiny_model_and_tokenizer``), 2 steps of 3
conversational prompts x 4 completions, two reward functions, one of which returns ``None``
for one prompt. TRL writes ``<output_dir>/completions/completions_0000{1,2}.parquet``.

The audit of that folder must be the audit of a CSV of the same numbers, and the reward
columns the reward functions. Skipped when trl, torch, datasets or pyarrow is missing.
Runtime: about 10 s.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

trl = pytest.importorskip("trl")
torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")
pq = pytest.importorskip("pyarrow.parquet")

from rewardagg.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
G, N_PROMPTS, STEPS = 4, 3, 2
METHODS = ["--methods", "gdpo,softmin"]


def fmt(completion_ids, **kwargs):
    """Binary, from the first token."""
    return [float(ids[0] % 2) for ids in completion_ids]


def quality(completion_ids, applies, **kwargs):
    """Multiples of 1/4; ``None`` (missing) for the prompt it does not apply to."""
    return [
        (sum(ids) % 5) * 0.25 if ok else None
        for ids, ok in zip(completion_ids, applies, strict=True)
    ]


def _tiny():
    spec = importlib.util.spec_from_file_location(
        "trl_example", ROOT / "examples" / "trl_rvpo_qwen25.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"}],
            "applies": i != 1,
        }
        for i in range(N_PROMPTS)
    ]
    texts = [r["prompt"][0]["content"] for r in rows] * 4
    model, tokenizer = example.build_tiny_model_and_tokenizer(texts, vocab_size=384, seed=0)
    return datasets.Dataset.from_list(rows), model, tokenizer


@pytest.fixture(scope="module")
def completions(tmp_path_factory):
    """TRL's completions folder after a 2-step run with ``log_completions=True``."""
    out = tmp_path_factory.mktemp("trl")
    dataset, model, tokenizer = _tiny()
    args = trl.GRPOConfig(
        output_dir=str(out),
        use_cpu=True,
        per_device_train_batch_size=N_PROMPTS * G,
        num_generations=G,
        max_completion_length=6,
        max_steps=STEPS,
        logging_steps=1,
        log_completions=True,
        report_to=[],
        save_strategy="no",
        bf16=False,
        seed=0,
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = trl.GRPOTrainer(
            model=copy.deepcopy(model),
            processing_class=tokenizer,
            reward_funcs=[fmt, quality],
            args=args,
            train_dataset=dataset,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train()
    finally:
        torch.set_num_threads(before)
    return out / "completions"


def _csv_of(tables: list[Path], path: Path) -> Path:
    """The reward numbers of TRL's tables as a CSV, one group per (step, prompt)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["group", "fmt", "quality"])
        for table in tables:
            for r in pq.read_table(table).to_pylist():
                group = f"{r['step']}/{json.dumps(r['prompt'], sort_keys=True)}"
                values = (r[k] for k in ("fmt", "quality"))  # a None: null in Parquet
                w.writerow([group, *("" if v is None or np.isnan(v) else v for v in values)])
    return path


def _audit(capsys, *args) -> list[str]:
    assert main(["audit", *map(str, args), *METHODS]) == 0
    return capsys.readouterr().out.splitlines()


def _report_body(lines: list[str]) -> list[str]:
    i = next(i for i, line in enumerate(lines) if line.startswith("rewardagg audit: "))
    return lines[i + 1 :]


def test_trl_wrote_one_table_per_logging_step(completions):
    names = sorted(p.name for p in completions.iterdir())
    assert names == ["completions_00001.parquet", "completions_00002.parquet"]
    table = pq.read_table(completions / names[0])
    assert table.column_names == ["step", "prompt", "completion", "fmt", "quality", "advantage"]
    assert table.num_rows == N_PROMPTS * G
    assert np.isnan(np.array(table.column("quality").to_pylist(), dtype=float)).sum() == G


def test_folder_audit_equals_the_csv_audit(completions, tmp_path, capsys):
    tables = sorted(completions.iterdir())
    got = _audit(capsys, "--from", "trl", completions)
    want = _audit(capsys, _csv_of(tables, tmp_path / "all.csv"), "--group", "group")
    assert got[0] == "reward columns (inferred): fmt, quality; group column: prompt"
    assert got[1] == f"rewardagg audit: {completions} (steps 1..2)"
    assert (
        f"  {STEPS * N_PROMPTS * G} completions in {STEPS * N_PROMPTS} groups (size {G})"
        in (got[2].split(",")[0])
    )
    assert _report_body(got) == _report_body(want)


def test_one_step_by_number_or_by_file(completions, tmp_path, capsys):
    table = completions / "completions_00002.parquet"
    by_step = _audit(capsys, "--from", "trl", completions, "--step", 2)
    by_file = _audit(capsys, "--from", "trl", table)
    want = _audit(capsys, _csv_of([table], tmp_path / "two.csv"), "--group", "group")
    assert by_step == by_file
    assert _report_body(by_step) == _report_body(want)


def test_json_output_names_the_reward_functions(completions, capsys):
    assert main(["audit", "--from", "trl", str(completions), "--json", *METHODS]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input"] == {
        "group_column": "prompt",
        "reward_columns": ["fmt", "quality"],
        "inferred": True,
    }
    assert [r["missing"] for r in out["rewards"]] == [0, STEPS * G]
    assert out["verdict"]["reference"] == "gdpo"
