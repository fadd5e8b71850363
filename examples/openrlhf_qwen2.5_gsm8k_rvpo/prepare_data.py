"""Write GSM8K as JSON lines for OpenRLHF (``--data.prompt_dataset``).

Needs ``datasets`` and access to the Hugging Face Hub (or a local copy of ``openai/gsm8k``
given with ``--source``)::

    python examples/openrlhf_qwen2.5_gsm8k_rvpo/prepare_data.py --out data/gsm8k_openrlhf

Each line has ``input`` (the question and the answer-format instruction; OpenRLHF applies
the chat template with ``--data.apply_chat_template``) and ``label`` (the reference number),
read with ``--data.input_key input --data.label_key label``.
"""

from __future__ import annotations

import argparse
import json
import os

INSTRUCTION = (
    "Solve the problem step by step, in at most 200 words, and give the final answer "
    'on the last line as "#### <number>".'
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="openai/gsm8k", help="hub id or local path")
    parser.add_argument("--out", default="data/gsm8k_openrlhf", help="output folder")
    args = parser.parse_args()

    import datasets

    data = datasets.load_dataset(args.source, "main")
    os.makedirs(args.out, exist_ok=True)
    for split in ("train", "test"):
        path = os.path.join(args.out, f"{split}.jsonl")
        with open(path, "w") as f:
            for ex in data[split]:
                label = ex["answer"].split("####")[-1].strip()
                f.write(json.dumps({"input": f"{ex['question']}\n\n{INSTRUCTION}", "label": label}))
                f.write("\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
