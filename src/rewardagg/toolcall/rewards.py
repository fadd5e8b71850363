r"""The task's rule-based rewards: one column per rule, each in [0, 1].

For a completion :math:`y` with gold call :math:`(n^*, a^*)` (tool name, arguments):

``format`` (the critical constraint)
    1 when :math:`y` holds exactly one ``<tool_call> ... </tool_call>`` span whose inside
    parses as a JSON object with a string ``"name"`` and an object ``"arguments"``; else 0.
``tool``
    1 when the call parses and its name is :math:`n^*`.
``keys``
    :math:`|K \cap K^*| / |K^* \cup K|`, the Jaccard overlap of the call's argument names
    :math:`K` with the required ones :math:`K^*` (0 when the call does not parse).
``values``
    the share of required arguments whose value is right,
    :math:`\frac{1}{|K^*|}\sum_{k \in K^*} [a_k = a^*_k]`.
``budget`` (no text outside the call)
    :math:`\max(0, 1 - w / B)` with :math:`w` the number of words outside the call span (the
    whole completion when there is no span) and :math:`B` = :data:`CHATTER_BUDGET` words.
``polite`` (easy, and in conflict with ``budget``)
    1 when the completion contains :data:`POLITE_PHRASE`. The phrase can only sit outside
    the call, so it costs ``budget`` :math:`3/B`: a policy can buy this easy reward with the
    budget constraint.

``exact_call`` (a metric, not a reward) is 1 when the parsed call equals the gold call:
same name, same argument names and values, nothing else. The reward functions take TRL's
calling convention (``completions`` and the dataset's ``gold`` column as keyword
arguments) and are named after their column, since TRL names a reward function's column
by ``__name__``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "CHATTER_BUDGET",
    "POLITE_PHRASE",
    "REWARD_NAMES",
    "exact_call",
    "parse_call",
    "reward_functions",
    "score",
]

CHATTER_BUDGET = 4
POLITE_PHRASE = "happy to help"
#: The reward columns, in the order the trainer sees them.
REWARD_NAMES = ("format", "tool", "keys", "values", "budget", "polite")
_SPAN = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def parse_call(text: str) -> tuple[dict[str, Any] | None, str]:
    """The parsed call (``None`` when the format rule fails) and the text outside it."""
    spans = list(_SPAN.finditer(text))
    if len(spans) != 1 or text.count("<tool_call>") != 1 or text.count("</tool_call>") != 1:
        outside = text if not spans else _SPAN.sub(" ", text)
        return None, outside
    outside = text[: spans[0].start()] + " " + text[spans[0].end() :]
    try:
        call = json.loads(spans[0].group(1))
    except json.JSONDecodeError:
        return None, outside
    if (
        not isinstance(call, dict)
        or set(call) != {"name", "arguments"}
        or not isinstance(call["name"], str)
        or not isinstance(call["arguments"], dict)
    ):
        return None, outside
    return call, outside


def score(text: str, gold: dict[str, Any]) -> dict[str, float]:
    """Every reward (and ``exact_call``) of one completion against its gold call."""
    call, outside = parse_call(text)
    words = len(outside.split())
    out = {
        "budget": max(0.0, 1.0 - words / CHATTER_BUDGET),
        "polite": float(POLITE_PHRASE in " ".join(text.split())),
    }
    if call is None:
        out.update(format=0.0, tool=0.0, keys=0.0, values=0.0, exact_call=0.0)
        return out
    want, got = gold["arguments"], call["arguments"]
    union = set(want) | set(got)
    out.update(
        format=1.0,
        tool=float(call["name"] == gold["name"]),
        keys=len(set(want) & set(got)) / len(union) if union else 1.0,
        values=sum(got.get(k) == v for k, v in want.items()) / len(want) if want else 1.0,
        exact_call=float(call["name"] == gold["name"] and got == want),
    )
    return out


def exact_call(text: str, gold: dict[str, Any]) -> float:
    """1.0 when the completion's call is exactly the gold call (module docstring)."""
    return score(text, gold)["exact_call"]


def _text(completion: Any) -> str:
    if isinstance(completion, list):  # conversational: the assistant message
        return str(completion[-1]["content"]) if completion else ""
    return str(completion)


def _reward(name: str) -> Callable[..., list[float]]:
    def reward(completions: Sequence[Any], gold: Sequence[str], **kwargs: Any) -> list[float]:
        return [
            score(_text(c), json.loads(g))[name] for c, g in zip(completions, gold, strict=True)
        ]

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = f"The {name!r} reward of each completion (rewardagg.toolcall.rewards)."
    return reward


def reward_functions() -> list[Callable[..., list[float]]]:
    """One TRL reward function per column of :data:`REWARD_NAMES`, in that order."""
    return [_reward(name) for name in REWARD_NAMES]
