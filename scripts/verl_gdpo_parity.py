"""Measure rewardagg's gdpo against verl's own, through verl's real ``compute_advantage``.

    PYTHONPATH=src python scripts/verl_gdpo_parity.py     # needs verl 0.9.1 (and torch)

Batches: ``tests/test_integration_verl.py``'s ``make_batch(seed)`` for seeds 0-49 (6 prompts
with shuffled uids and uneven groups of 4, 3, 1, 5, 2 and 6 completions, a singleton
included; responses of 1 to 7 tokens; rewards fmt in {0, 0.5, 1}, acc in {0, 1}, safe in
{0, 0.25, 0.75, 1} weighted 1, 2, 0.5). For each ``norm_adv_by_std_in_grpo`` it prints the
max |difference| of the advantages (1) between verl's ``compute_advantage`` with
``adv_estimator="gdpo"`` and with ``"rewardagg"`` + ``method=gdpo``, both given the flag, and
(2) between the latter and verl's ``compute_gdpo_outcome_advantage`` called with the flag.
verl 0.9.1's ``compute_advantage`` does not pass the flag to its gdpo, so with ``False``
(1) is large: verl still divides by the group std, rewardagg only centres.
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

from test_integration_verl import (
    VERL_COMPUTE_ADVANTAGE,
    algo,
    core_algos,
    make_batch,
    ray_trainer,
    rv,
)


def main(seeds: range = range(50)) -> None:
    rv.install()
    for norm in (True, False):
        via, direct = 0.0, 0.0
        for seed in seeds:
            cfg = algo(rewardagg={"method": "gdpo"}, norm_adv_by_std_in_grpo=norm)
            kw = dict(norm_adv_by_std_in_grpo=norm, config=cfg)
            ref = VERL_COMPUTE_ADVANTAGE(make_batch(seed), adv_estimator="gdpo", **kw)
            ours = ray_trainer.compute_advantage(make_batch(seed), adv_estimator="rewardagg", **kw)
            data = make_batch(seed)
            fn, _ = core_algos.compute_gdpo_outcome_advantage(
                token_level_rewards=data.batch["token_level_rewards"],
                response_mask=data.batch["response_mask"],
                index=data.non_tensor_batch["uid"],
                non_tensor_batch=data.non_tensor_batch,
                batch=data.batch,
                **kw,
            )
            adv = ours.batch["advantages"]
            via = max(via, (adv - ref.batch["advantages"]).abs().max().item())
            direct = max(direct, (adv - fn).abs().max().item())
        print(
            f"norm_adv_by_std_in_grpo={norm}: max |rewardagg - verl gdpo| through "
            f"compute_advantage {via:.2g}; against compute_gdpo_outcome_advantage called "
            f"with the flag {direct:.2g} ({len(seeds)} batches)"
        )


if __name__ == "__main__":
    main()
