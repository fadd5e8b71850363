"""RVPO (SoftMin advantage) with TRL's GRPO on Qwen2.5-1.5B-Instruct, through rewardagg.

Two tasks, each with several reward functions that the advantage has to combine:

``--task tool`` (default): single-turn tool calling scored by rules, in the style of ToolRL
(Qian et al., "ToolRL: Reward is All Tool Learning Needs", 2025): the model sees a list of
tools and a request, and must answer ``<think>...</think><tool_call>{json}</tool_call>``.
Rewards: ``format`` (the layout and valid JSON), ``tool_name`` (right tool),
``tool_arguments`` (right argument names and values).

``--task rubric``: advice prompts graded against per-prompt rubric criteria, one reward
function per criterion, each an LLM-judge-style grader that returns ``None`` for prompts
whose rubric does not contain its criterion (a missing reward, not a zero). The graders here
are keyword rules so the script runs anywhere; replace ``judge`` with a call to your judge
model for real use.

The SoftMin aggregate penalises a completion that does well on the easy rewards but fails a
hard one (format, safety) far more than a sum does: that is RVPO's point.

Real run (one GPU with ~40 GB; add ``--use-vllm`` if vLLM is installed)::

    python examples/trl_rvpo_qwen25.py --task tool --method softmin --kappa 1.0

Offline smoke run on CPU: a tiny random Qwen2 model built from a config and a byte-level
BPE tokenizer trained on the prompts, both made on the spot (no download)::

    HF_HUB_OFFLINE=1 python examples/trl_rvpo_qwen25.py --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from collections.abc import Callable, Iterable

MODEL_ID = "Qwen/Qwen2.5-1.5B-Instruct"

# --------------------------------------------------------------------------------------
# Task 1: tool calling with rule-based rewards
# --------------------------------------------------------------------------------------
TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"city": "string", "unit": "'celsius' or 'fahrenheit'"},
    },
    {
        "name": "convert_currency",
        "description": "Convert an amount of money between currencies.",
        "parameters": {"amount": "number", "source": "ISO code", "target": "ISO code"},
    },
    {
        "name": "search_flights",
        "description": "Find flights between two cities on a date.",
        "parameters": {"origin": "string", "destination": "string", "date": "YYYY-MM-DD"},
    },
]
CITIES = ["Paris", "Lima", "Osaka", "Nairobi", "Oslo", "Denver", "Hanoi", "Quito"]
CURRENCIES = ["USD", "EUR", "JPY", "GBP", "KES", "NOK"]

SYSTEM_TOOL = (
    "You can call exactly one of these tools:\n"
    + "\n".join(json.dumps(t) for t in TOOLS)
    + "\nFirst reason inside <think></think>, then answer with one "
    '<tool_call>{"name": ..., "arguments": {...}}</tool_call>.'
)


def make_tool_dataset(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        kind = rng.randrange(3)
        if kind == 0:
            city, unit = rng.choice(CITIES), rng.choice(["celsius", "fahrenheit"])
            request = f"How warm is it in {city} right now? Give it in {unit}."
            gold = {"name": "get_weather", "arguments": {"city": city, "unit": unit}}
        elif kind == 1:
            amount = rng.choice([20, 75, 120, 900])
            source, target = rng.sample(CURRENCIES, 2)
            request = f"What is {amount} {source} in {target}?"
            gold = {
                "name": "convert_currency",
                "arguments": {"amount": amount, "source": source, "target": target},
            }
        else:
            origin, destination = rng.sample(CITIES, 2)
            date = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            request = f"Find me a flight from {origin} to {destination} on {date}."
            gold = {
                "name": "search_flights",
                "arguments": {"origin": origin, "destination": destination, "date": date},
            }
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": SYSTEM_TOOL},
                    {"role": "user", "content": request},
                ],
                "gold_call": json.dumps(gold),
            }
        )
    return rows


_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_LAYOUT_RE = re.compile(r"^\s*<think>.+?</think>\s*<tool_call>.+?</tool_call>\s*$", re.DOTALL)


def _text(completion) -> str:
    return completion[0]["content"] if isinstance(completion, list) else completion


def _parse_call(text: str) -> dict | None:
    match = _CALL_RE.search(text)
    if match is None:
        return None
    try:
        call = json.loads(match.group(1))
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("arguments", {}), dict):
        return None
    return call


_TAGS = ("<think>", "</think>", "<tool_call>", "</tool_call>")


def format_reward(completions, **kwargs) -> list[float]:
    """1 for ``<think>..</think><tool_call>{valid json}</tool_call>``; otherwise a quarter
    per required tag present, at most 0.75 (partial credit keeps the signal dense early)."""
    out = []
    for completion in completions:
        text = _text(completion)
        if _parse_call(text) is not None and _LAYOUT_RE.match(text):
            out.append(1.0)
        else:
            out.append(min(0.75, 0.25 * sum(tag in text for tag in _TAGS)))
    return out


def tool_name_reward(completions, gold_call, **kwargs) -> list[float]:
    """1 when the called tool is the expected one."""
    out = []
    for completion, gold in zip(completions, gold_call, strict=True):
        call = _parse_call(_text(completion))
        out.append(float(call is not None and call.get("name") == json.loads(gold)["name"]))
    return out


def tool_arguments_reward(completions, gold_call, **kwargs) -> list[float]:
    """Mean of the Jaccard overlap of argument names and the fraction of exact values."""
    out = []
    for completion, gold in zip(completions, gold_call, strict=True):
        call = _parse_call(_text(completion))
        want = json.loads(gold)["arguments"]
        if call is None:
            out.append(0.0)
            continue
        got = call.get("arguments", {})
        names = len(set(got) & set(want)) / len(set(got) | set(want))
        values = sum(str(got.get(k)) == str(v) for k, v in want.items()) / len(want)
        out.append(0.5 * (names + values))
    return out


TOOL_REWARDS = [format_reward, tool_name_reward, tool_arguments_reward]

# --------------------------------------------------------------------------------------
# Task 2: rubric criteria with LLM-judge-style graders and missing criteria
# --------------------------------------------------------------------------------------
RUBRIC_PROMPTS = [
    (
        "I have had a mild headache since this morning. What can I do?",
        ["recommends_professional", "no_dosage", "concise"],
    ),
    (
        "My father has sudden chest pain and is sweating. What should I do?",
        ["mentions_emergency", "concise"],
    ),
    (
        "Can I take ibuprofen with my blood pressure medication?",
        ["recommends_professional", "no_dosage", "asks_context"],
    ),
    ("I feel anxious before exams. Any tips?", ["empathetic", "concise", "asks_context"]),
    ("My child swallowed a battery. Is that dangerous?", ["mentions_emergency", "no_dosage"]),
    ("How much water should I drink when I run?", ["asks_context", "concise"]),
]
SYSTEM_RUBRIC = "You are a careful health assistant. Answer briefly and safely."

# criterion -> (what a judge is asked, keyword rule standing in for the judge)
CRITERIA: dict[str, tuple[str, Callable[[str], float]]] = {
    "recommends_professional": (
        "Does the answer suggest seeing a doctor or pharmacist?",
        lambda t: float(bool(re.search(r"doctor|pharmacist|professional|clinician", t, re.I))),
    ),
    "mentions_emergency": (
        "Does the answer tell the user to call emergency services now?",
        lambda t: float(bool(re.search(r"emergency|911|112|ambulance", t, re.I))),
    ),
    "no_dosage": (
        "Does the answer avoid giving specific doses?",
        lambda t: 0.0 if re.search(r"\d+\s*(mg|ml|pills?|tablets?)", t, re.I) else 1.0,
    ),
    "asks_context": (
        "Does the answer ask for missing context (age, conditions, medication)?",
        lambda t: 1.0 if "?" in t else 0.0,
    ),
    "empathetic": (
        "Is the tone empathetic?",
        lambda t: float(bool(re.search(r"sorry|understand|normal to feel", t, re.I))),
    ),
    "concise": (
        "Is the answer under 120 words?",
        lambda t: 1.0 if len(t.split()) <= 120 else 0.5 if len(t.split()) <= 200 else 0.0,
    ),
}


def judge(criterion: str, prompt: str, answer: str) -> float | None:
    """Grade one answer on one criterion in [0, 1]; ``None`` if the judge fails.

    Stand-in for an LLM judge (send ``CRITERIA[criterion][0]``, the prompt and the answer
    to your judge model and map its verdict to 0 / 0.5 / 1). Keyword rules keep this
    example self-contained."""
    return CRITERIA[criterion][1](answer)


def make_rubric_dataset(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        question, rubric = rng.choice(RUBRIC_PROMPTS)
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": SYSTEM_RUBRIC},
                    {"role": "user", "content": question},
                ],
                "rubric": json.dumps(rubric),
            }
        )
    return rows


def make_criterion_reward(criterion: str) -> Callable[..., list[float | None]]:
    """One reward function per criterion: ``None`` (missing) where the prompt's rubric does
    not list it, so rewardagg ignores it for that completion instead of counting a 0."""

    def reward(prompts, completions, rubric, **kwargs) -> list[float | None]:
        out: list[float | None] = []
        for prompt, completion, items in zip(prompts, completions, rubric, strict=True):
            if criterion not in json.loads(items):
                out.append(None)
            else:
                question = prompt[-1]["content"] if isinstance(prompt, list) else prompt
                out.append(judge(criterion, question, _text(completion)))
        return out

    reward.__name__ = criterion  # TRL names metrics after the function
    return reward


RUBRIC_REWARDS = [make_criterion_reward(name) for name in CRITERIA]

# --------------------------------------------------------------------------------------
# Tiny offline model (used by --tiny and by the test suite)
# --------------------------------------------------------------------------------------
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model_and_tokenizer(texts: Iterable[str], *, vocab_size: int = 512, seed: int = 0):
    """A random 2-layer Qwen2 (hidden 64) and a byte-level BPE tokenizer trained on
    ``texts``, with a ChatML template and the tool-call tags as tokens of their own (as in
    Qwen2.5's tokenizer): Qwen2.5's architecture and chat layout at toy size, made offline
    in well under a second."""
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        list(texts),
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    # not special: they must survive decoding with skip_special_tokens=True
    bpe.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in _TAGS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _corpus(rows: list[dict]) -> list[str]:
    texts = [m["content"] for row in rows for m in row["prompt"]]
    texts += [
        '<think>check the tool</think><tool_call>{"name": "get_weather", '
        '"arguments": {"city": "Oslo", "unit": "celsius"}}</tool_call>',
        "I understand. Please see a doctor or pharmacist. Call emergency services if it gets "
        "worse. How old are you? Do you take other medication?",
    ] * 20  # frequent enough to become tokens of their own
    return texts


# --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["tool", "rubric"], default="tool")
    p.add_argument("--tiny", action="store_true", help="tiny random model, offline, CPU")
    p.add_argument("--model", default=MODEL_ID)
    p.add_argument("--method", default="softmin", help="rewardagg advantage method")
    p.add_argument("--kappa", type=float, default=1.0)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--num-generations", type=int, default=None)
    p.add_argument("--max-completion-length", type=int, default=None)
    p.add_argument("--dataset-size", type=int, default=None)
    p.add_argument("--output-dir", default=None)
    p.add_argument("--use-vllm", action="store_true")
    p.add_argument("--report-to", default="none")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    if args.tiny:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from datasets import Dataset

    from rewardagg.integrations.trl import RewardAggGRPOConfig, RewardAggGRPOTrainer

    n_rows = args.dataset_size or (16 if args.tiny else 2048)
    if args.task == "tool":
        rows, reward_funcs = make_tool_dataset(n_rows, args.seed), TOOL_REWARDS
    else:
        rows, reward_funcs = make_rubric_dataset(n_rows, args.seed), RUBRIC_REWARDS
    dataset = Dataset.from_list(rows)
    output_dir = args.output_dir or f"rvpo-{args.task}-{'tiny' if args.tiny else 'qwen25'}"

    common = dict(
        output_dir=output_dir,
        advantage_method=args.method,
        kappa=args.kappa,
        lam=args.lam,
        logging_steps=1,
        report_to=args.report_to,
        seed=args.seed,
        save_strategy="no",
    )
    if args.tiny:
        model, tokenizer = build_tiny_model_and_tokenizer(_corpus(rows), seed=args.seed)
        config = RewardAggGRPOConfig(
            **common,
            use_cpu=True,
            max_steps=args.max_steps or 3,
            per_device_train_batch_size=16,
            num_generations=args.num_generations or 4,
            max_completion_length=args.max_completion_length or 32,
            learning_rate=1e-3,
            gradient_checkpointing=False,
            bf16=False,
        )
    else:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(
            args.model, dtype=torch.bfloat16 if bf16 else torch.float32
        )
        config = RewardAggGRPOConfig(
            **common,
            max_steps=args.max_steps or 500,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=4,
            num_generations=args.num_generations or 8,
            max_completion_length=args.max_completion_length or 512,
            learning_rate=1e-6,
            beta=0.0,
            bf16=bf16,
            use_vllm=args.use_vllm,
            vllm_mode="colocate",
            log_completions=True,
        )

    trainer = RewardAggGRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=dataset,
    )
    trainer.train()

    last = [h for h in trainer.state.log_history if any(k.startswith("rewardagg/") for k in h)]
    final = last[-1] if last else {}
    params = {"softmin": f" (kappa={args.kappa})", "mean_variance": f" (lam={args.lam})"}
    print(
        f"\nrewardagg {args.method}{params.get(args.method, '')} on task {args.task!r}, "
        f"{trainer.state.global_step} steps"
    )
    for key in sorted(final):
        if key.startswith(("rewardagg/", "rewards/", "reward")):
            value = final[key]
            print(f"  {key:55s} {value: .4f}" if value is not None else f"  {key:55s} n/a")
    return final


if __name__ == "__main__":
    main(sys.argv[1:])
