"""The tool-call task: a small seeded grammar of requests and the one call that answers each.

Four tools with two to four arguments each; every request is one line of lower-case words
(``"weather in paris tomorrow in celsius"``) and its target is one call in a fixed syntax,

.. code-block:: text

    <tool_call> {"name": "get_weather", "arguments": {"city": "paris", "day": "tomorrow", "unit": "celsius"}} </tool_call>

valid JSON between the tags. The text is written so that splitting it on whitespace gives
the words of the task's word-level vocabulary (:mod:`rewardagg.toolcall.tokenizer`): a
value token carries its JSON punctuation (``"paris",`` inside, ``"celsius"}}`` last), so the
call is 5 + 2 n words for n arguments and a mistake in one word can break the JSON.

Training and held-out prompts are drawn from disjoint value combinations: a request is
held out when a fixed hash of its gold call falls in the held-out fifth, so no held-out
call is ever seen in training, whatever the seeds.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TOOLS",
    "Example",
    "Tool",
    "call_text",
    "is_held_out",
    "make_examples",
    "sample_example",
    "vocabulary",
]

OPEN, CLOSE = "<tool_call>", "</tool_call>"


@dataclass(frozen=True)
class Tool:
    """A tool: its name, its argument slots (name -> allowed values) and request templates
    (``str.format`` with the slot names)."""

    name: str
    slots: tuple[tuple[str, tuple[str, ...]], ...]
    templates: tuple[str, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.slots)


CITIES = ("paris", "lima", "osaka", "nairobi", "oslo", "denver", "hanoi", "quito")
DAYS = ("today", "tomorrow", "monday", "friday", "sunday")
CURRENCIES = ("usd", "eur", "jpy", "gbp", "kes", "nok")

TOOLS: tuple[Tool, ...] = (
    Tool(
        "get_weather",
        (("city", CITIES), ("day", DAYS), ("unit", ("celsius", "fahrenheit"))),
        (
            "weather in {city} {day} in {unit}",
            "what is the weather in {city} {day} in {unit}",
            "{day} forecast for {city} in {unit} please",
        ),
    ),
    Tool(
        "convert_currency",
        (
            ("amount", ("5", "20", "75", "120", "300", "900")),
            ("source", CURRENCIES),
            ("target", CURRENCIES),
        ),
        (
            "convert {amount} {source} to {target}",
            "how much is {amount} {source} in {target}",
            "change {amount} {source} into {target}",
        ),
    ),
    Tool(
        "set_alarm",
        (
            ("time", ("6am", "7am", "8am", "noon", "9pm")),
            ("label", ("gym", "work", "meds", "call")),
        ),
        (
            "set an alarm at {time} for {label}",
            "wake me at {time} for {label}",
            "alarm {time} label {label}",
        ),
    ),
    Tool(
        "search_flights",
        (
            ("origin", CITIES),
            ("destination", CITIES),
            ("day", DAYS),
            ("cabin", ("economy", "business")),
        ),
        (
            "find a flight from {origin} to {destination} {day} in {cabin}",
            "fly {origin} to {destination} on {day} {cabin} class",
            "book {cabin} from {origin} to {destination} for {day}",
        ),
    ),
)
TOOL_BY_NAME = {t.name: t for t in TOOLS}


@dataclass(frozen=True)
class Example:
    """One request and its gold call (``name``, ``arguments``: key -> string value)."""

    prompt: str
    name: str
    arguments: tuple[tuple[str, str], ...]

    @property
    def call(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": dict(self.arguments)}

    def gold_json(self) -> str:
        return json.dumps(self.call, sort_keys=False)

    def target(self) -> str:
        """The gold completion: the call and nothing else."""
        return call_text(self.name, self.arguments)


def call_text(name: str, arguments: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    """The call in the task's syntax (module docstring): valid JSON between the tags.

    >>> call_text("set_alarm", [("time", "7am"), ("label", "gym")])
    '<tool_call> {"name": "set_alarm", "arguments": {"time": "7am", "label": "gym"}} </tool_call>'
    """
    return f"{OPEN} {json.dumps({'name': name, 'arguments': dict(arguments)})} {CLOSE}"


def is_held_out(name: str, arguments: tuple[tuple[str, str], ...]) -> bool:
    """True for the fifth of the calls kept for evaluation (a fixed hash of the call)."""
    digest = hashlib.sha256(json.dumps([name, list(arguments)]).encode()).digest()
    return digest[0] % 5 == 0


def sample_example(rng: random.Random, *, held_out: bool) -> Example:
    """One example from the training (``held_out=False``) or the held-out calls."""
    while True:
        tool = rng.choice(TOOLS)
        values: dict[str, str] = {}
        for key, choices in tool.slots:
            used = set(values.values())
            values[key] = rng.choice([c for c in choices if c not in used] or list(choices))
        arguments = tuple(values.items())
        if is_held_out(tool.name, arguments) == held_out:
            prompt = rng.choice(tool.templates).format(**values)
            return Example(prompt, tool.name, arguments)


def make_examples(n: int, seed: int, *, held_out: bool = False) -> list[Example]:
    """``n`` examples drawn with ``random.Random(seed)`` (repeats possible)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    return [sample_example(rng, held_out=held_out) for _ in range(n)]


def vocabulary(extra_texts: tuple[str, ...] = ()) -> list[str]:
    """Every whitespace-separated word a request, a call (right or wrong) or ``extra_texts``
    can contain, sorted: the tokenizer's word list."""
    words: set[str] = set()
    for tool in TOOLS:
        for template in tool.templates:
            words.update(w for w in template.split() if "{" not in w)
    all_values = sorted({v for t in TOOLS for _, vals in t.slots for v in vals})
    all_keys = sorted({k for t in TOOLS for k in t.keys})
    words.update(all_values)
    # every word a call can contain, whatever tool, key and value sit where
    words.update({OPEN, CLOSE, '{"name":', '"arguments":'})
    words.update(f'"{t.name}",' for t in TOOLS)
    for key in all_keys:
        words.update({f'{{"{key}":', f'"{key}":'})
    for value in all_values:
        words.update({f'"{value}",', f'"{value}"}}}}', f'"{value}"}}', f'"{value}"'})
    for text in extra_texts:
        words.update(text.split())
    return sorted(words)
