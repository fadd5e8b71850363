"""GSM8K scored by three rewards, as an OpenRLHF ``reward_func`` file.

OpenRLHF loads this file when ``--reward.remote_url`` points to it and calls
``reward_func(queries, prompts, labels)`` (one completion per call in 0.11). Whatever it returns
under ``extra_logs`` becomes per-sample ``experience.info[key]``; the rewardagg estimators
read the keys named by ``--rewardagg.reward_keys``:

* ``format``  - the answer is given on a final ``#### <number>`` line (1 or 0);
* ``correct`` - that number equals the label (1 or 0);
* ``concise`` - the hard constraint: at most ``MAX_WORDS`` words (1 or 0).

``rewards`` / ``scores`` (their sum) stay what OpenRLHF logs as ``reward`` and what dynamic
filtering reads. Needs torch (as OpenRLHF does); ``python reward_func.py`` runs a self-check.
"""

from __future__ import annotations

import re

import torch

MAX_WORDS = 200
KEYS = ("format", "correct", "concise")
_FINAL = re.compile(r"####\s*(-?[\d,]*\.?\d+)\s*$")
_ASSISTANT = "<|im_start|>assistant"  # Qwen2.5 chat template
_END = ("<|im_end|>", "<|endoftext|>")


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def response_text(query: str, prompt: str) -> str:
    """The completion: ``query`` is prompt + response decoded with special tokens."""
    text = query[len(prompt) :] if prompt and query.startswith(prompt) else query
    if _ASSISTANT in text:
        text = text.rsplit(_ASSISTANT, 1)[-1]
    for end in _END:
        text = text.split(end, 1)[0]
    return text.strip()


def components(response: str, label: str) -> dict[str, float]:
    match = _FINAL.search(response)
    answer = None if match is None else _number(match.group(1))
    reference = _number(str(label).split("####")[-1].strip())
    return {
        "format": float(answer is not None),
        "correct": float(answer is not None and reference is not None and answer == reference),
        "concise": float(len(response.split()) <= MAX_WORDS),
    }


def reward_func(queries, prompts, labels):
    rows = zip(queries, prompts, labels, strict=True)
    parts = [components(response_text(q, p), lab) for q, p, lab in rows]
    total = torch.tensor([sum(c.values()) for c in parts], dtype=torch.float32)
    return {
        "rewards": total,
        "scores": total,
        "extra_logs": {k: torch.tensor([c[k] for c in parts], dtype=torch.float32) for k in KEYS},
    }


if __name__ == "__main__":
    prompt = "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    out = reward_func([prompt + "2 + 3 = 5\n#### 5<|im_end|>"], [prompt], ["5"])
    assert out["rewards"].tolist() == [3.0], out
    assert {k: v.tolist() for k, v in out["extra_logs"].items()} == {
        "format": [1.0],
        "correct": [1.0],
        "concise": [1.0],
    }
    print("ok")
