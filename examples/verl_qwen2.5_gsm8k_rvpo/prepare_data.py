"""Write GSM8K as verl parquet files (``data.train_files`` / ``data.val_files``).

Needs ``datasets`` and access to the Hugging Face Hub (or a local copy of ``openai/gsm8k``
given with ``--source``)::

    python examples/verl_qwen2.5_gsm8k_rvpo/prepare_data.py --out data/gsm8k

Each row has the columns verl's RL dataset reads: ``data_source``, ``prompt`` (chat
messages), ``ability``, ``reward_model`` (``style``, ``ground_truth``) and ``extra_info``.
"""

from __future__ import annotations

import argparse
import os

INSTRUCTION = (
    "Solve the problem step by step, in at most 200 words, and give the final answer "
    'on the last line as "#### <number>".'
)


def to_row(example: dict, split: str, index: int) -> dict:
    return {
        "data_source": "openai/gsm8k",
        "prompt": [{"role": "user", "content": f"{example['question']}\n\n{INSTRUCTION}"}],
        "ability": "math",
        "reward_model": {
            "style": "rule",
            "ground_truth": example["answer"].split("####")[-1].strip(),
        },
        "extra_info": {"split": split, "index": index},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="openai/gsm8k", help="hub id or local path")
    parser.add_argument("--out", default="data/gsm8k", help="output folder")
    args = parser.parse_args()

    import datasets

    data = datasets.load_dataset(args.source, "main")
    os.makedirs(args.out, exist_ok=True)
    for split in ("train", "test"):
        rows = data[split].map(
            lambda ex, i, s=split: to_row(ex, s, i),
            with_indices=True,
            remove_columns=data[split].column_names,
        )
        rows.to_parquet(os.path.join(args.out, f"{split}.parquet"))
    print(f"wrote {args.out}/train.parquet and test.parquet")


if __name__ == "__main__":
    main()
