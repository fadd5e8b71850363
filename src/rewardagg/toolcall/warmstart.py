"""The warm start: supervised fine-tuning on imperfect demonstrations, cached per seed.

Each demonstration is the gold call of a training request, spoilt independently with the
probabilities of :data:`FLAWS` (seeded): chatter before the call, the politeness phrase
after it, a broken format (a tag or a closing brace dropped, a key word lost), the wrong
tool, a wrong value. The model imitates this mixture (cross-entropy on the completion
tokens only, AdamW), so the warm-started policy breaks the format, picks wrong tools and
values, and chats, in roughly those shares when sampled; the rates actually measured on
held-out prompts are the run's ``start`` rates.

The fine-tuned model and tokenizer are saved under ``<out>/warm_start/seed<seed>/`` and
read back from there by every setting of that seed (and by a rerun into the same folder).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rewardagg.toolcall.evaluation import prompt_text
from rewardagg.toolcall.rewards import POLITE_PHRASE
from rewardagg.toolcall.task import CLOSE, OPEN, TOOL_BY_NAME, TOOLS, Example, call_text

__all__ = [
    "CHATTER",
    "FLAWS",
    "WarmStartConfig",
    "demonstration",
    "load_or_train",
    "sft",
]

CHATTER = ("sure", "ok here it is", "let me check", "one moment")
#: flaw -> probability that a demonstration has it (independently of the others)
FLAWS = {"chatter": 0.55, "polite": 0.55, "format": 0.3, "tool": 0.12, "value": 0.2}


@dataclass(frozen=True)
class WarmStartConfig:
    """The supervised fine-tuning: demonstrations, steps, batch size, learning rate."""

    demonstrations: int = 2000
    steps: int = 250
    batch_size: int = 32
    lr: float = 3e-3


def _break_format(text: str, rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return text.replace(f" {CLOSE}", "")
    if kind == 1:
        return text.replace("}} ", "} ")
    if kind == 2:
        return text.replace('"arguments": ', "")
    return f"{OPEN} {text}"


def demonstration(example: Example, rng: random.Random) -> str:
    """One imperfect demonstration of ``example`` (module docstring)."""
    name, arguments = example.name, list(example.arguments)
    if rng.random() < FLAWS["tool"]:
        name = rng.choice([t.name for t in TOOLS if t.name != name])
    if rng.random() < FLAWS["value"]:
        i = rng.randrange(len(arguments))
        key, value = arguments[i]
        choices = dict(TOOL_BY_NAME[example.name].slots)[key]
        arguments[i] = (key, rng.choice([c for c in choices if c != value]))
    text = call_text(name, arguments)
    if rng.random() < FLAWS["format"]:
        text = _break_format(text, rng)
    if rng.random() < FLAWS["chatter"]:
        text = f"{rng.choice(CHATTER)} {text}"
    if rng.random() < FLAWS["polite"]:
        text = f"{text} {POLITE_PHRASE}"
    return text


def sft(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    config: WarmStartConfig,
    *,
    seed: int,
) -> list[float]:
    """Fine-tune ``model`` in place on one demonstration per example; returns the loss of
    every step (cross-entropy of the completion tokens and the end token)."""
    import torch

    rng = random.Random(seed)
    rows = []
    for ex in examples:
        prompt = tokenizer(prompt_text(ex))["input_ids"]
        completion = tokenizer(demonstration(ex, rng))["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt + completion, [-100] * len(prompt) + completion))
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(config.steps):
        batch = [rows[rng.randrange(len(rows))] for _ in range(config.batch_size)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (seq, lab) in enumerate(batch):
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, : len(lab)] = torch.tensor(lab)
            mask[i, : len(seq)] = 1
        lr = config.lr * min(1.0, 2.0 * (config.steps - step) / config.steps)  # linear decay
        for group in optimiser.param_groups:
            group["lr"] = lr
        out = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
        )
        optimiser.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        losses.append(float(out.loss.detach()))
    model.eval()
    return losses


def load_or_train(
    folder: Path,
    build: Any,
    examples: Sequence[Example],
    config: WarmStartConfig,
    *,
    seed: int,
) -> tuple[Any, Any, dict[str, Any]]:
    """The warm-started ``(model, tokenizer, info)`` of ``seed``: read from ``folder`` when
    a previous call saved it there with the same config, else ``build()`` -> (model,
    tokenizer), fine-tuned with :func:`sft` and saved. ``info`` has the config, the final
    loss and whether it came from the cache."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    meta_path = folder / "warm_start.json"
    wanted = {"seed": seed, "config": asdict(config)}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in wanted} == wanted:
            model = AutoModelForCausalLM.from_pretrained(folder)
            tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
            tokenizer.padding_side = "left"
            return model, tokenizer, {**meta, "cached": True}
    model, tokenizer = build()
    losses = sft(model, tokenizer, examples, config, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    tail = losses[-20:]
    meta = {**wanted, "final_loss": sum(tail) / max(1, len(tail))}
    meta_path.write_text(json.dumps(meta, indent=1))
    return model, tokenizer, {**meta, "cached": False}
