"""``rewardagg demo``: constraint neglect, reproduced on a toy policy-gradient problem.

- :mod:`~rewardagg.demo.environment`: the toy environment and its rule-based rewards.
- :mod:`~rewardagg.demo.experiment`: the GRPO-style training loop, one run per method/seed.
- :mod:`~rewardagg.demo.probe`: the advantage one response gets, in a constructed group.
- :mod:`~rewardagg.demo.report`: the printed table, ``demo.json``/``demo.csv`` and ``demo.png``.

Needs only numpy to train; the figure and progress bar need the ``plot`` extra
(``pip install "rewardagg[plot]"``).
"""

from rewardagg.demo.environment import ConstraintEnv
from rewardagg.demo.experiment import (
    DemoConfig,
    MethodSpec,
    Scenario,
    ScenarioResult,
    default_methods,
    default_scenarios,
    run_demo,
    run_scenario,
)
from rewardagg.demo.probe import ProbeResult, probe_advantages
from rewardagg.demo.report import format_table, plot_results, summary_rows, write_outputs

__all__ = [
    "ConstraintEnv",
    "DemoConfig",
    "MethodSpec",
    "ProbeResult",
    "Scenario",
    "ScenarioResult",
    "default_methods",
    "default_scenarios",
    "format_table",
    "plot_results",
    "probe_advantages",
    "run_demo",
    "run_scenario",
    "summary_rows",
    "write_outputs",
]
