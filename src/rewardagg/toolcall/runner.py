"""The whole experiment: for every seed, a warm start, then every setting trained from it
and evaluated on held-out prompts; seeds run in parallel processes.

One seed (:func:`run_seed`) is one process's work: build the tokenizer and the model,
warm-start them (or read the cached warm start, :mod:`rewardagg.toolcall.warmstart`),
measure the warm start's rates, then for each setting train with
:func:`rewardagg.toolcall.training.train_setting` and measure the trained model's rates on
the same held-out prompts. The training prompts of seed ``s`` are drawn with seed ``s``
(the same for every setting), the held-out prompts with a fixed seed (the same for every
seed and setting). :func:`run` runs the seeds in ``workers`` processes (``spawn``, one
torch thread each) and returns one :class:`SeedResult` per seed. Each seed's result is
saved under ``<out>/seeds/`` as it ends and reused by a later run into the same folder with
the same settings and sizes (so a run cut short keeps its finished seeds).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rewardagg.toolcall.settings import RunSizes, Setting

__all__ = ["EVAL_SEED", "SeedResult", "load_seed", "run", "run_seed", "save_seed"]

EVAL_SEED = 10_007
"""Seed of the held-out prompts (shared by every seed and setting)."""


@dataclass
class SeedResult:
    """What one seed produced: the warm start's rates (``start``), each setting's rates
    (``rates[label]``: metric -> rate), learning curves (``curves[label]``: name -> per-step
    values), and wall and CPU seconds per phase."""

    seed: int
    start: dict[str, float]
    rates: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    warm_start: dict[str, Any] = field(default_factory=dict)


def _timer() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t: tuple[float, float]) -> dict[str, float]:
    return {"wall": time.perf_counter() - t[0], "cpu": time.process_time() - t[1]}


def run_seed(
    seed: int,
    settings: Sequence[Setting],
    sizes: RunSizes,
    out: str | Path,
    device: str = "cpu",
    threads: int = 1,
) -> SeedResult:
    """Warm start, then train and evaluate every setting, for one seed (module docstring)."""
    import torch
    import transformers

    from rewardagg.toolcall.evaluation import PROMPT_END, evaluate
    from rewardagg.toolcall.model import build_model
    from rewardagg.toolcall.rewards import POLITE_PHRASE
    from rewardagg.toolcall.task import make_examples, vocabulary
    from rewardagg.toolcall.tokenizer import build_tokenizer
    from rewardagg.toolcall.training import train_setting
    from rewardagg.toolcall.warmstart import CHATTER, WarmStartConfig, load_or_train

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if device == "cpu":
        torch.set_num_threads(threads)
    out = Path(out)
    train = make_examples(sizes.train_prompts, seed)
    held = make_examples(sizes.eval_prompts, EVAL_SEED, held_out=True)

    def build() -> tuple[Any, Any]:
        tokenizer = build_tokenizer(vocabulary((*CHATTER, POLITE_PHRASE, PROMPT_END)))
        return build_model(tokenizer, sizes.model_size, seed=seed).to(device), tokenizer

    t = _timer()
    config = WarmStartConfig(steps=sizes.sft_steps)
    folder = out / "warm_start" / f"{sizes.model_size}-seed{seed}"
    model, tokenizer, info = load_or_train(folder, build, train, config, seed=seed)
    model.to(device)

    def measure(m: Any) -> dict[str, float]:
        return evaluate(
            m,
            tokenizer,
            held,
            max_new_tokens=sizes.max_new_tokens,
            samples=sizes.eval_samples,
            seed=EVAL_SEED + seed,
        )

    result = SeedResult(seed=seed, start=measure(model), warm_start=info)
    result.seconds["warm_start"] = _since(t)
    for setting in settings:
        t = _timer()
        trained, curves = train_setting(
            model,
            tokenizer,
            setting,
            train,
            sizes,
            seed=seed,
            out=out / "trainer" / f"{setting.label}-seed{seed}",
            device=device,
        )
        result.rates[setting.label] = measure(trained)
        result.curves[setting.label] = curves
        result.seconds[setting.label] = _since(t)
        del trained
    return result


def run(
    seeds: Sequence[int],
    settings: Sequence[Setting],
    sizes: RunSizes,
    out: str | Path,
    *,
    device: str = "cpu",
    workers: int = 1,
    on_done: Callable[[SeedResult], None] | None = None,
) -> list[SeedResult]:
    """:func:`run_seed` for every seed, in ``workers`` processes (in this process when
    ``workers == 1``); results in seed order. ``on_done`` is called as each seed ends."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    done: dict[int, SeedResult] = {}
    todo = []
    for s in dict.fromkeys(seeds):
        cached = load_seed(out, s, settings, sizes, device)
        if cached is None:
            todo.append(s)
        else:
            done[s] = cached

    def finish(res: SeedResult) -> None:
        done[res.seed] = res
        save_seed(out, res, settings, sizes, device)
        if on_done is not None:
            on_done(res)

    if workers <= 1 or len(todo) <= 1:
        for s in todo:
            finish(run_seed(s, settings, sizes, out, device))
    else:
        context = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(run_seed, s, settings, sizes, out, device) for s in todo]
            for future in cf.as_completed(futures):
                finish(future.result())
    return [done[s] for s in dict.fromkeys(seeds)]


def _seed_path(out: str | Path, seed: int, sizes: RunSizes) -> Path:
    return Path(out) / "seeds" / f"{sizes.model_size}-seed{seed}.json"


def _key(settings: Sequence[Setting], sizes: RunSizes, device: str) -> dict[str, Any]:
    return json.loads(
        json.dumps(
            {
                "settings": [[s.label, dict(s.config)] for s in settings],
                "sizes": asdict(sizes),
                "device": device.split(":")[0],
            }
        )
    )


def save_seed(
    out: str | Path, result: SeedResult, settings: Sequence[Setting], sizes: RunSizes, device: str
) -> Path:
    """Write one seed's result to ``<out>/seeds/`` with the settings and sizes it ran with,
    so a later run with the same ones (say with fewer or more seeds) reuses it."""
    path = _seed_path(out, result.seed, sizes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": _key(settings, sizes, device), "result": asdict(result)}))
    return path


def load_seed(
    out: str | Path, seed: int, settings: Sequence[Setting], sizes: RunSizes, device: str
) -> SeedResult | None:
    """The result :func:`save_seed` wrote for exactly these settings and sizes, else None."""
    path = _seed_path(out, seed, sizes)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("key") != _key(settings, sizes, device):
        return None
    return SeedResult(**data["result"])
