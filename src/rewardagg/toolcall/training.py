"""One GRPO training run of one setting from a warm-started model, through
:class:`rewardagg.integrations.trl.RewardAggGRPOTrainer` (TRL's real ``GRPOTrainer``).

Each step draws ``prompts_per_step`` training requests and ``num_generations`` completions
per request at temperature 1, scores them with the six reward functions
(:mod:`rewardagg.toolcall.rewards`), turns the (N, 6) rewards into advantages with the
setting's method and takes one optimiser step on TRL's loss (``loss_type="dapo"``,
``beta=0``: no reference model). The learning curve is TRL's own log of each step's
reward means (``rewards/<name>/mean``): sampled completions on training prompts.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewardagg.toolcall.evaluation import prompt_text
from rewardagg.toolcall.rewards import REWARD_NAMES, reward_functions
from rewardagg.toolcall.settings import RunSizes, Setting
from rewardagg.toolcall.task import Example

__all__ = ["train_setting"]


def _dataset(examples: Sequence[Example]) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": prompt_text(e), "gold": e.gold_json()} for e in examples])


def train_setting(
    model: Any,
    tokenizer: Any,
    setting: Setting,
    examples: Sequence[Example],
    sizes: RunSizes,
    *,
    seed: int,
    out: Path,
    device: str = "cpu",
) -> tuple[Any, dict[str, list[float]]]:
    """Train a copy of ``model`` with ``setting``; returns the trained model and the
    learning curves (reward name -> per-step training mean, plus ``"lambda_format"`` for a
    constrained setting and ``"weight_<reward>"``, ``"trusted_<reward>"`` for an adaptive one:
    the weights after each step's update, which the next batch gets)."""
    from rewardagg.integrations.trl import RewardAggGRPOConfig, RewardAggGRPOTrainer

    config = RewardAggGRPOConfig(
        output_dir=str(out),
        use_cpu=device == "cpu",
        per_device_train_batch_size=sizes.prompts_per_step * sizes.num_generations,
        num_generations=sizes.num_generations,
        max_completion_length=sizes.max_new_tokens,
        max_steps=sizes.steps,
        learning_rate=sizes.learning_rate,
        lr_scheduler_type="constant",
        logging_steps=sizes.log_every,
        report_to=[],
        save_strategy="no",
        gradient_checkpointing=False,
        bf16=False,
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        **dict(setting.config),
    )
    trainer = RewardAggGRPOTrainer(
        model=copy.deepcopy(model),
        processing_class=tokenizer,
        reward_funcs=reward_functions(),
        args=config,
        train_dataset=_dataset(examples),
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the run reports its own summary
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        trainer.train()
    curves: dict[str, list[float]] = {name: [] for name in REWARD_NAMES}
    for entry in trainer.state.log_history:
        if f"rewards/{REWARD_NAMES[0]}/mean" not in entry:
            continue
        for name in REWARD_NAMES:
            curves[name].append(float(entry[f"rewards/{name}/mean"]))
        if "rewardagg/lambda/format" in entry:
            curves.setdefault("lambda_format", []).append(float(entry["rewardagg/lambda/format"]))
        for name in REWARD_NAMES:  # the adaptive weights the next batch gets, and trust
            for kind in ("weight", "trusted"):
                if f"rewardagg/{kind}/{name}" in entry:
                    value = float(entry[f"rewardagg/{kind}/{name}"])
                    curves.setdefault(f"{kind}_{name}", []).append(value)
    trained: Any = trainer.model
    trained.eval()
    return trained, curves
