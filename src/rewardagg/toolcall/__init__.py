"""A tiny language model learning tool calls under rule-based rewards, on the real TRL
trainer: RVPO's second setting in miniature, on CPU and offline (``rewardagg toolcall``).

One concept per module:

- :mod:`~rewardagg.toolcall.task`: the request grammar, the call syntax, held-out calls;
- :mod:`~rewardagg.toolcall.tokenizer`: the word-level tokenizer built locally;
- :mod:`~rewardagg.toolcall.model`: the Qwen2-architecture model made from a config;
- :mod:`~rewardagg.toolcall.warmstart`: fine-tuning on imperfect demonstrations, cached;
- :mod:`~rewardagg.toolcall.rewards`: the six rule-based reward columns and ``exact_call``;
- :mod:`~rewardagg.toolcall.settings`: the compared settings and the run sizes;
- :mod:`~rewardagg.toolcall.training`: one GRPO run through ``RewardAggGRPOTrainer``;
- :mod:`~rewardagg.toolcall.evaluation`: held-out rates, greedy and sampled;
- :mod:`~rewardagg.toolcall.runner`: seeds in parallel processes;
- :mod:`~rewardagg.toolcall.report`: tidy rows, paired verdicts, CSV/JSON, tables, figure;
- :mod:`~rewardagg.toolcall.reference`: the committed reference run;
- :mod:`~rewardagg.toolcall.cli`: the ``rewardagg toolcall`` command.

Importing this package imports no torch, transformers or TRL; the modules that need them
import them inside their functions.
"""

__all__: list[str] = []
