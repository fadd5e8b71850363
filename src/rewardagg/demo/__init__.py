"""``rewardagg demo``: every method of the library, measured on a rubric testbed.

The default scenarios are a HealthBench-style rubric testbed (numpy only): binary
criteria with points, one critical, judged by a noisy LLM-judge model, a shared Gaussian
policy over response features, evaluation on held-out prompts with the true verdicts.
The earlier constraint-neglect toy is the ``neglect`` family (``--scenario neglect``).

- :mod:`~rewardagg.demo.rubric`, :mod:`~rewardagg.demo.judge`,
  :mod:`~rewardagg.demo.healthbench`, :mod:`~rewardagg.demo.policy`: the testbed's pieces;
  :mod:`~rewardagg.demo.rubric_train`: its training loop and evaluation.
- :mod:`~rewardagg.demo.environment`, :mod:`~rewardagg.demo.neglect_train`: the toy.
- :mod:`~rewardagg.demo.scenarios`: the scenario grids; :mod:`~rewardagg.demo.settings`:
  the methods compared (the method table's sweeps plus option variants).
- :mod:`~rewardagg.demo.engine`: the advantages of many seeds at once, exactly.
- :mod:`~rewardagg.demo.runner`: all of it on all cores.
- :mod:`~rewardagg.demo.tidy`, :mod:`~rewardagg.demo.report`: tidy rows, per-seed rows,
  paired verdicts, table, ``demo.csv``/``demo_seeds.csv``/``demo.json``/``demo.png``;
  :mod:`~rewardagg.demo.takeaway`: the reference runs' take-away.
- :mod:`~rewardagg.demo.probe`: the advantage one response of the toy gets.

Needs only numpy to train; the figure and progress bar need the ``plot`` extra
(``pip install "rewardagg[plot]"``).
"""

from rewardagg.demo.environment import ConstraintEnv
from rewardagg.demo.healthbench import healthbench_score, response_scores
from rewardagg.demo.probe import ProbeResult, probe_advantages
from rewardagg.demo.reference import (
    REFERENCE_CSV,
    REFERENCE_NEGLECT_CSV,
    reference_rows,
    reference_seed_rows,
)
from rewardagg.demo.report import (
    check_output_dir,
    format_legend,
    format_summary,
    format_table,
    format_verdicts,
    plot_rows,
    write_outputs,
)
from rewardagg.demo.results import METRICS, RunResult
from rewardagg.demo.runner import DemoConfig, run_demo, run_scenario
from rewardagg.demo.scenarios import (
    NeglectScenario,
    RubricScenario,
    extra_scenarios,
    neglect_scenarios,
    rubric_scenarios,
    select_scenarios,
)
from rewardagg.demo.settings import (
    VARIANTS,
    ControllerContext,
    default_methods,
    make_controller,
    register_controller,
)
from rewardagg.demo.takeaway import TAKEAWAY_HEADER, takeaway_text
from rewardagg.demo.tidy import (
    paired_verdicts,
    read_rows,
    read_seed_rows,
    seed_rows,
    tidy_rows,
    verdict_lines,
)
from rewardagg.method_settings import MethodSpec

__all__ = [
    "METRICS",
    "REFERENCE_CSV",
    "REFERENCE_NEGLECT_CSV",
    "TAKEAWAY_HEADER",
    "VARIANTS",
    "ConstraintEnv",
    "ControllerContext",
    "DemoConfig",
    "MethodSpec",
    "NeglectScenario",
    "ProbeResult",
    "RubricScenario",
    "RunResult",
    "check_output_dir",
    "default_methods",
    "extra_scenarios",
    "format_legend",
    "format_summary",
    "format_table",
    "format_verdicts",
    "healthbench_score",
    "make_controller",
    "neglect_scenarios",
    "paired_verdicts",
    "plot_rows",
    "probe_advantages",
    "read_rows",
    "read_seed_rows",
    "reference_rows",
    "reference_seed_rows",
    "register_controller",
    "response_scores",
    "rubric_scenarios",
    "run_demo",
    "run_scenario",
    "seed_rows",
    "select_scenarios",
    "takeaway_text",
    "tidy_rows",
    "verdict_lines",
    "write_outputs",
]
