"""GSM8K scored by three rewards, for verl's GDPO reward manager.

verl calls ``compute_score(data_source, solution_str, ground_truth, extra_info)`` once per
completion. Returning a dict makes the GDPO reward manager (``reward.reward_manager.name=gdpo``)
store every key as ``reward_extra_info``; the legacy trainer copies those into
``batch.non_tensor_batch``, where ``algorithm.gdpo_reward_keys`` picks the components:

* ``format``  - the answer is given on a final ``#### <number>`` line (1 or 0);
* ``correct`` - that number equals the reference answer (1 or 0);
* ``concise`` - the hard constraint: at most ``MAX_WORDS`` words (1 or 0).

``score`` (their sum) is what verl logs as the sequence reward. A completion that is right
but rambles past the limit scores 2/3 under a sum, so GRPO/GDPO still push it up; RVPO's
SoftMin does not let the two easy rewards pay for the failed constraint.

Pure Python, no dependencies: ``python reward_fn.py`` runs a self-check.
"""

from __future__ import annotations

import re

MAX_WORDS = 200
_FINAL = re.compile(r"####\s*(-?[\d,]*\.?\d+)\s*$")


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def final_answer(solution_str: str) -> float | None:
    """The number on the final ``#### <number>`` line, or ``None``."""
    match = _FINAL.search(solution_str.strip())
    return None if match is None else _number(match.group(1))


def reference_answer(ground_truth: str) -> float | None:
    """GSM8K's reference: the text after ``####`` (or the whole string)."""
    return _number(ground_truth.split("####")[-1].strip())


def components(solution_str: str, ground_truth: str) -> dict[str, float]:
    answer = final_answer(solution_str)
    reference = reference_answer(str(ground_truth))
    return {
        "format": float(answer is not None),
        "correct": float(answer is not None and reference is not None and answer == reference),
        "concise": float(len(solution_str.split()) <= MAX_WORDS),
    }


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """verl's custom reward function: a dict with ``score`` and the three components."""
    parts = components(solution_str, ground_truth)
    return {"score": sum(parts.values()), **parts}


if __name__ == "__main__":
    assert compute_score("gsm8k", "2 + 3 = 5\n#### 5", "#### 5") == {
        "score": 3.0,
        "format": 1.0,
        "correct": 1.0,
        "concise": 1.0,
    }
    assert compute_score("gsm8k", "word " * 300 + "\n#### 5", "5")["concise"] == 0.0
    assert compute_score("gsm8k", "the answer is 5", "5")["format"] == 0.0
    print("ok")
