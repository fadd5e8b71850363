"""``rewardagg toolcall``: its options (:func:`configure`) and what it does (:func:`run_command`).

Building the parser imports nothing beyond the standard library and this package's light
modules; torch, transformers and TRL are imported only when the command runs, and their
absence is one line on stderr (exit code 2), naming the ``trl`` extra.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

from rewardagg.toolcall.model import SIZES
from rewardagg.toolcall.settings import QUICK, RUN, SETTINGS

__all__ = ["DESCRIPTION", "NEEDS", "configure", "run_command"]

NEEDS = ("torch", "transformers", "trl", "datasets", "tokenizers")
DESCRIPTION = """\
A tiny Qwen2-architecture language model learns tool calls under six rule-based rewards
(format, tool, keys, values, budget, polite) through rewardagg's TRL trainer, on CPU and
offline: warm start by fine-tuning on imperfect demonstrations, then GRPO with each
setting (grpo, gdpo, softmin at two kappas, softmin of raw rewards, gdpo with a format
constraint, gdpo with adaptive reward weights without and with that constraint) from the
same warm start and seeds, evaluated on held-out requests greedy and sampled. Writes
toolcall.csv (tidy rows), toolcall.json and toolcall.png into --out and prints the
tables. Needs the trl extra: pip install 'rewardagg[trl]'.
"""


def _seeds(text: str) -> list[int]:
    """``"4"`` -> seeds 0..3; ``"0,3,7"`` -> those seeds."""
    try:
        parts = [int(t) for t in text.replace(" ", ",").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count or seeds like 0,3,7, got {text!r}"
        ) from None
    if not parts or any(p < 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    if len(parts) == 1 and "," not in text:
        if parts[0] < 1:
            raise argparse.ArgumentTypeError("the number of seeds must be >= 1")
        return list(range(parts[0]))
    return list(dict.fromkeys(parts))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def configure(p: argparse.ArgumentParser) -> None:
    """The options of ``rewardagg toolcall``."""
    p.description = DESCRIPTION
    labels = [s.label for s in SETTINGS]
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke-sized run: 1 seed, {QUICK.steps} steps, {QUICK.eval_prompts} held-out "
        "prompts (under 3 minutes of CPU time)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: toolcall-results, --quick: toolcall-results-quick); "
        "the warm starts are cached there per seed and reused by a later run",
    )
    p.add_argument("--overwrite", action="store_true", help="replace toolcall.* already in --out")
    p.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        help="a count N (seeds 0..N-1) or a comma list (default: 6; --quick: 1)",
    )
    p.add_argument(
        "--steps",
        type=_positive,
        default=None,
        help=f"GRPO steps per setting (default {RUN.steps})",
    )
    p.add_argument(
        "--methods",
        type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
        default=None,
        help=f"settings to run, comma-separated (default: all): {', '.join(labels)}",
    )
    p.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help=f"GRPO learning rate (default {RUN.learning_rate:g})",
    )
    p.add_argument(
        "--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)"
    )
    p.add_argument(
        "--model-size",
        choices=list(SIZES),
        default="tiny",
        help="Qwen2 size: "
        + "; ".join(f"{k}: hidden {v[0]}, {v[1]} layers" for k, v in SIZES.items())
        + " (default tiny)",
    )
    p.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="seeds run in this many processes (default: min(seeds, CPU cores) on CPU, 1 on a GPU)",
    )
    p.add_argument("--no-plot", action="store_true", help="no toolcall.png")


def _missing() -> list[str]:
    missing = []
    for mod in NEEDS:
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod)
    return missing


def _machine(device: str) -> str:
    text = f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores"
    if device.startswith("cuda"):
        import torch

        text += f", {torch.cuda.get_device_name(torch.device(device))}"
    return text


def run_command(args: argparse.Namespace) -> int:
    """Run the experiment and write its outputs (module docstring of
    :mod:`rewardagg.toolcall`)."""
    from rewardagg.cli.parser import UsageError

    missing = _missing()
    if missing:
        raise UsageError(
            f"needs the trl extra (missing {', '.join(missing)}): pip install 'rewardagg[trl]'"
        )
    from rewardagg.toolcall.report import build_report, plot, text_report, write_outputs
    from rewardagg.toolcall.runner import run
    from rewardagg.toolcall.settings import select_settings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        settings = select_settings(args.methods)
    except ValueError as e:
        raise UsageError(f"--methods: {e}") from None
    base = QUICK if args.quick else RUN
    sizes = replace(
        base,
        model_size=args.model_size,
        steps=args.steps or base.steps,
        learning_rate=args.learning_rate or base.learning_rate,
    )
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else list(range(6)))
    out = args.out or Path("toolcall-results-quick" if args.quick else "toolcall-results")
    if not args.overwrite and any((out / f"toolcall.{x}").exists() for x in ("csv", "json")):
        raise UsageError(f"--out: {out} already has toolcall.csv/json (use --overwrite)")
    cpu = args.device == "cpu"
    workers = args.workers or (min(len(seeds), os.cpu_count() or 1) if cpu else 1)
    t0 = time.perf_counter()
    results = run(
        seeds,
        settings,
        sizes,
        out,
        device=args.device,
        workers=workers,
        on_done=lambda r: print(f"seed {r.seed} done", flush=True),
    )
    wall = time.perf_counter() - t0
    report = build_report(
        results,
        [s.label for s in settings],
        settings={s.label: {"config": dict(s.config), "note": s.note} for s in settings},
        run={
            **asdict(sizes),
            "seeds": seeds,
            "device": args.device,
            "workers": workers,
            "wall_seconds": round(wall, 1),
            "cpu_seconds": round(sum(v["cpu"] for r in results for v in r.seconds.values()), 1),
            "machine": _machine(args.device),
            "quick": bool(args.quick),
        },
    )
    paths = write_outputs(report, out)
    if not args.no_plot:
        png = plot(report, out / "toolcall.png")
        if png is not None:
            paths.append(png)
    print(text_report(report))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
