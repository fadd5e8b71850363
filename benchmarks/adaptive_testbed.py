"""Adaptive weights on the rubric testbed (issue 27): paired comparison per scenario.

Runs the demo's engine (``rewardagg.demo``) on the rubric, stuck and trap families with
``gdpo``, ``gdpo_point_weights``, ``gdpo+lagrange``, ``adaptive`` and ``adaptive+lagrange``
(plus any ``--rule NAME=JSON`` variant of the adaptive parameters) and prints, per setting,
the mean ``rubric_score`` over every scenario and the paired per-seed difference against
GDPO (and against the reference setting) in each scenario, with its 95% t-interval.

    python benchmarks/adaptive_testbed.py --seed 1000 --seeds 8 --out /tmp/adaptive.json

``adaptive`` is ``AdaptiveWeights()`` (the default rule); DESIGN.md 2d's rule is
``--rule 'sec2d={"tau":10,"plateau_margin":null}'``. Results on seeds 1000-1007:
``adaptive_testbed_seeds1000-1007.json`` (``adaptive`` was the 2d rule then) and
``adaptive_testbed_v2_seeds1000-1007.json`` (default rule and ``sec2d``, same command plus
``--workers 2`` and that ``--rule``). Seeds 0-3 were used for tuning.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from rewardagg.demo import default_methods
from rewardagg.demo.runner import DemoConfig, run_demo
from rewardagg.demo.scenarios import select_scenarios
from rewardagg.demo.settings import CONSTRAINT
from rewardagg.demo.stats import paired_ci
from rewardagg.method_settings import MethodSpec

BASE = ["gdpo", "gdpo_point_weights", "gdpo+lagrange", "adaptive", "adaptive+lagrange"]
PAIRS = [("adaptive", "gdpo_point_weights"), ("adaptive+lagrange", "gdpo+lagrange")]


def settings(rules: dict[str, dict]) -> list[MethodSpec]:
    out = default_methods(BASE)
    for name, params in rules.items():
        out.append(MethodSpec(name, "gdpo", {}, {"adaptive": {"params": params}}))
        out.append(
            MethodSpec(
                f"{name}+lagrange",
                "gdpo",
                {},
                {"adaptive": {"params": params, "constraint": dict(CONSTRAINT)}},
            )
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--scenario", default="rubric,stuck,trap")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--rule", action="append", default=[], metavar="NAME=JSON")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    rules = {}
    for item in a.rule:
        name, _, text = item.partition("=")
        rules[name] = json.loads(text)
    methods = tuple(settings(rules))
    scenarios = select_scenarios(a.scenario.split(","))
    cfg = DemoConfig(
        seeds=a.seeds, steps=a.steps, methods=methods, base_seed=a.seed, workers=a.workers
    )
    t0 = time.time()
    results = run_demo(scenarios, cfg)
    labels = [m.label for m in methods]
    table: dict[str, dict[str, list[float]]] = {}
    for res in results:
        score = res.metrics["rubric_score"]  # (M, S)
        crit = res.metrics["critical_met"]
        row = table.setdefault(res.scenario.name, {})
        for m, label in enumerate(labels):
            row[label] = [float(np.mean(score[m])), float(np.mean(crit[m]))]
        gdpo = labels.index("gdpo")
        for m, label in enumerate(labels):
            if label == "gdpo":
                continue
            row[f"{label} - gdpo"] = list(paired_ci(score[m], score[gdpo]))
        for mine, ref in PAIRS + [(r, "gdpo_point_weights") for r in rules]:
            if mine in labels:
                row[f"{mine} - {ref}"] = list(
                    paired_ci(score[labels.index(mine)], score[labels.index(ref)])
                )
    print(f"seeds {a.seed}..{a.seed + a.seeds - 1}, {time.time() - t0:.0f} s")
    print(f"{'scenario':22s}" + "".join(f"{lab[:18]:>19s}" for lab in labels))
    for name, row in table.items():
        print(
            f"{name:22s}" + "".join(f"{row[lab][0]:>12.3f} ({row[lab][1]:.2f})" for lab in labels)
        )
    means = {lab: float(np.mean([row[lab][0] for row in table.values()])) for lab in labels}
    print("mean rubric_score: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    for label in labels:
        if label == "gdpo":
            continue
        worst = min(table.items(), key=lambda kv: kv[1][f"{label} - gdpo"][0])
        print(
            f"{label}: worst paired diff vs gdpo {worst[1][f'{label} - gdpo'][0]:+.3f} "
            f"[{worst[1][f'{label} - gdpo'][1]:+.3f}, {worst[1][f'{label} - gdpo'][2]:+.3f}] "
            f"in {worst[0]}"
        )
    for mine, ref in PAIRS:
        diffs = [row[f"{mine} - {ref}"][0] for row in table.values()]
        print(f"{mine} - {ref}: mean of per-scenario paired diffs {np.mean(diffs):+.3f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"seeds": [a.seed, a.seeds], "means": means, "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
