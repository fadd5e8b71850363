"""Held-out evaluation: every reward's rate and exact-call accuracy, greedy and sampled.

For held-out prompts :math:`x_1..x_n` (calls never seen in training,
:func:`rewardagg.toolcall.task.is_held_out`) the rate of a reward :math:`r` under a decoding
rule is :math:`\\frac{1}{n m}\\sum_{i,j} r(y_{ij}, x_i)` over :math:`m` completions per
prompt: :math:`m = 1` greedy, :math:`m` = ``samples`` at temperature 1 for sampling. The
metric names are the reward names and ``exact_call`` for greedy decoding, with the suffix
``_sampled`` for sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewardagg.toolcall.rewards import REWARD_NAMES, score
from rewardagg.toolcall.task import Example

__all__ = ["METRICS", "PROMPT_END", "evaluate", "generate", "prompt_text"]

PROMPT_END = "=>"
#: The evaluation's metrics for one decoding rule: each reward, then exact-call accuracy.
METRICS = (*REWARD_NAMES, "exact_call")


def prompt_text(example: Example) -> str:
    """What the model sees: the request, then :data:`PROMPT_END`."""
    return f"{example.prompt} {PROMPT_END}"


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    sample: bool,
    num_return_sequences: int = 1,
    batch_size: int = 128,
    seed: int = 0,
) -> list[str]:
    """Completions of ``prompts`` (``num_return_sequences`` each, prompt-major), decoded
    without special tokens."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[str] = []
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for lo in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[lo : lo + batch_size]), return_tensors="pt", padding=True)
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.no_grad():
                ids = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=sample,
                    temperature=1.0 if sample else None,
                    top_p=1.0 if sample else None,
                    top_k=0 if sample else None,
                    num_return_sequences=num_return_sequences,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new = ids[:, enc["input_ids"].shape[1] :]
            out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    return out


def _rates(texts: Sequence[str], golds: Sequence[dict[str, Any]]) -> dict[str, float]:
    sums = dict.fromkeys(METRICS, 0.0)
    for text, gold in zip(texts, golds, strict=True):
        for name, value in score(text, gold).items():
            sums[name] += value
    return {name: total / max(1, len(texts)) for name, total in sums.items()}


def evaluate(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    max_new_tokens: int,
    samples: int = 4,
    seed: int = 0,
) -> dict[str, float]:
    """Greedy and sampled rates of every metric on ``examples`` (module docstring)."""
    prompts = [prompt_text(e) for e in examples]
    golds = [e.call for e in examples]
    greedy = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, sample=False)
    rates = _rates(greedy, golds)
    if samples > 0:
        sampled = generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            sample=True,
            num_return_sequences=samples,
            seed=seed,
        )
        rates.update(
            {
                f"{k}_sampled": v
                for k, v in _rates(sampled, [g for g in golds for _ in range(samples)]).items()
            }
        )
    return rates
