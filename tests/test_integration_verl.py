"""verl adapter against the real verl 0.9.1 code paths (``DataProto``, ``compute_advantage``,
``compute_gdpo_outcome_advantage``, ``masked_whiten``, Hydra ``main_ppo``, the separation
recipe's advantage step, the v1 trainer's ``PPOTrainer._compute_advantage`` on a real
TransferQueue, a Ray worker set up by the hook).

Skips when verl is not installed; the v1 tests skip without ``transfer_queue`` (CI installs
``transferqueue``). verl's trainer modules import cleanly on a CPU machine (no stubs are
needed). Runtime: about 30 s on 2 CPU cores, most of it verl's import (~5 s), Hydra
compositions, and one local Ray with a TransferQueue (~10 s to start) and one worker that
imports verl's v1 trainer (~5 s).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

verl = pytest.importorskip("verl")
torch = pytest.importorskip("torch")
pytest.importorskip("verl.trainer.ppo.ray_trainer")

from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import core_algos, ray_trainer  # noqa: E402
from verl.utils.torch_functional import masked_whiten  # noqa: E402

import rewardagg  # noqa: E402
import rewardagg.integrations.verl as rv  # noqa: E402
from registry_cases import tempered_method  # noqa: E402

KEYS = ["fmt", "acc", "safe"]

# verl's own functions, captured before any install() in this module.
VERL_COMPUTE_ADVANTAGE = ray_trainer.compute_advantage
VERL_DATA_METRICS = ray_trainer.compute_data_metrics
VERL_CHECKPOINTS = {
    name: ray_trainer.RayPPOTrainer.__dict__[name]
    for name in ("_save_checkpoint", "_load_checkpoint")
}


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """verl's Hydra entry point writes ``outputs/<date>/`` into the working directory."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _installed():
    rv.install()
    yield
    rv.install()  # tests that uninstall leave it installed for the next one


def make_batch(seed: int, sizes=(4, 3, 1, 5, 2, 6), T: int = 7, P: int = 3, missing=False):
    """A verl-shaped DataProto: shuffled ``uid`` with uneven groups (one singleton),
    ragged response lengths, three reward components in ``non_tensor_batch`` as the GDPO
    reward manager leaves them (values exactly representable in binary)."""
    rng = np.random.default_rng(seed)
    uid = np.array([f"prompt-{g}" for g, s in enumerate(sizes) for _ in range(s)], dtype=object)
    uid = uid[rng.permutation(uid.size)]
    n = uid.size
    resp_len = rng.integers(1, T + 1, n)
    response_mask = (np.arange(T)[None, :] < resp_len[:, None]).astype(np.int64)
    attention_mask = np.concatenate([np.ones((n, P), np.int64), response_mask], axis=1)
    comps = {
        "fmt": rng.choice([0.0, 0.5, 1.0], n),
        "acc": rng.choice([0.0, 1.0], n),
        "safe": rng.choice([0.0, 0.25, 0.75, 1.0], n),
    }
    non_tensors = {"uid": uid}
    for k, v in comps.items():
        col = np.array(list(v), dtype=object)  # reward_extra_info arrives as object arrays
        if missing:
            col[rng.random(n) < 0.2] = None
        non_tensors[k] = col
    tensors = {
        "prompts": torch.zeros(n, P, dtype=torch.long),
        "responses": torch.zeros(n, T, dtype=torch.long),
        "attention_mask": torch.tensor(attention_mask),
        "response_mask": torch.tensor(response_mask),
        "token_level_rewards": torch.tensor(rng.normal(size=(n, T)), dtype=torch.float32)
        * torch.tensor(response_mask),
    }
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)


def algo(**extra):
    cfg = {
        "adv_estimator": "gdpo",
        "gdpo_reward_keys": KEYS,
        "gdpo_reward_weights": [1.0, 2.0, 0.5],
        "norm_adv_by_std_in_grpo": True,
    }
    cfg.update(extra)
    return OmegaConf.create(cfg)


# --------------------------------------------------------------------------------------
# parity with verl's GDPO
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_gdpo_parity_with_verl_compute_gdpo_outcome_advantage(seed):
    data = make_batch(seed)
    cfg = algo(rewardagg={"method": "gdpo"})
    kwargs = dict(
        token_level_rewards=data.batch["token_level_rewards"],
        response_mask=data.batch["response_mask"],
        index=data.non_tensor_batch["uid"],
        config=cfg,
        non_tensor_batch=data.non_tensor_batch,
        batch=data.batch,
    )
    ref, ref_ret = core_algos.compute_gdpo_outcome_advantage(**kwargs)
    ours, ours_ret = rv.compute_rewardagg_advantage(**kwargs)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours_ret, ref_ret, atol=1e-5, rtol=0)
    assert (ours[data.batch["response_mask"] == 0] == 0).all()


@pytest.mark.parametrize("seed", range(3))
def test_gdpo_parity_through_real_compute_advantage(seed):
    cfg = algo(rewardagg={"method": "gdpo"})
    ref = VERL_COMPUTE_ADVANTAGE(make_batch(seed), adv_estimator="gdpo", config=cfg)
    ours = ray_trainer.compute_advantage(make_batch(seed), adv_estimator="rewardagg", config=cfg)
    diff = (ours.batch["advantages"] - ref.batch["advantages"]).abs().max().item()
    assert diff < 1e-5, diff
    torch.testing.assert_close(ours.batch["returns"], ours.batch["advantages"])


def test_gdpo_parity_without_std_scaling():
    data = make_batch(11)
    cfg = algo(rewardagg={"method": "gdpo"}, norm_adv_by_std_in_grpo=False)
    kwargs = dict(
        token_level_rewards=data.batch["token_level_rewards"],
        response_mask=data.batch["response_mask"],
        index=data.non_tensor_batch["uid"],
        config=cfg,
        non_tensor_batch=data.non_tensor_batch,
        batch=data.batch,
        norm_adv_by_std_in_grpo=False,
    )
    ref, _ = core_algos.compute_gdpo_outcome_advantage(**kwargs)
    ours, _ = rv.compute_rewardagg_advantage(**kwargs)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_single_reward_fallback_matches_verl_gdpo():
    """No gdpo_reward_keys: K = 1 from token_level_rewards, as verl's gdpo without keys."""
    data = make_batch(3)
    common = dict(
        token_level_rewards=data.batch["token_level_rewards"],
        response_mask=data.batch["response_mask"],
        index=data.non_tensor_batch["uid"],
    )
    ref, _ = core_algos.compute_gdpo_outcome_advantage(**common)
    cfg = OmegaConf.create({"rewardagg": {"method": "gdpo"}})
    ours, _ = rv.compute_rewardagg_advantage(**common, config=cfg)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------
# rvpo through verl's compute_advantage
# --------------------------------------------------------------------------------------


def test_rvpo_through_real_compute_advantage_is_softmin_then_masked_whiten():
    data = make_batch(5)
    uid = data.non_tensor_batch["uid"]
    rewards = np.stack([data.non_tensor_batch[k].astype(np.float64) for k in KEYS], axis=1)
    out = ray_trainer.compute_advantage(
        data, adv_estimator="rvpo", config=algo(adv_estimator="rvpo", rewardagg={"kappa": 3.0})
    )
    adv = out.batch["advantages"]
    mask = data.batch["response_mask"].float()
    s = rewardagg.advantages(
        rewards,
        method="softmin",
        kappa=3.0,
        group_ids=uid,
        weights=[1.0, 2.0, 0.5],
        eps=1e-6,
        singleton="identity",
        batch_norm=False,
    )
    expected = masked_whiten(torch.tensor(s, dtype=torch.float32)[:, None] * mask, mask) * mask
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    info = rv.last_info()
    assert info is not None and info.method == "softmin" and info.params["kappa"] == 3.0
    metrics = info.to_metrics(KEYS)
    assert set(f"bottleneck_share/{k}" for k in KEYS) <= set(metrics)


def test_rvpo_penalises_a_failed_constraint_more_than_gdpo():
    """One prompt, four completions: row 0 is best on two rewards but fails safety."""
    rewards = {
        "fmt": [1.0, 0.0, 0.0, 0.0],
        "acc": [1.0, 0.0, 0.0, 0.0],
        "safe": [0.0, 1.0, 1.0, 1.0],
    }
    n, T = 4, 3
    data = DataProto.from_dict(
        tensors={
            "token_level_rewards": torch.zeros(n, T),
            "response_mask": torch.ones(n, T, dtype=torch.long),
        },
        non_tensors={
            "uid": np.array(["p"] * n, dtype=object),
            **{k: np.array(v) for k, v in rewards.items()},
        },
    )
    cfg = dict(gdpo_reward_keys=KEYS, gdpo_reward_weights=None)
    gdpo = ray_trainer.compute_advantage(
        data, adv_estimator="rewardagg", config=algo(**cfg, rewardagg={"method": "gdpo"})
    ).batch["advantages"][:, 0]
    rvpo = ray_trainer.compute_advantage(
        data, adv_estimator="rvpo", config=algo(**cfg, rewardagg={"kappa": 4.0})
    ).batch["advantages"][:, 0]
    assert gdpo[0] > 0  # constraint neglect: the arithmetic mean rewards the unsafe row
    assert rvpo[0] < 0  # the SoftMin does not


def test_missing_rewards_and_rows_without_reward():
    data = make_batch(8, missing=True)
    n = len(data)
    for k in KEYS:  # row 0 has no reward at all
        data.non_tensor_batch[k][0] = None
    out = ray_trainer.compute_advantage(
        data, adv_estimator="rvpo", config=algo(adv_estimator="rvpo")
    )
    adv = out.batch["advantages"]
    assert torch.isfinite(adv).all() and adv.shape == (n, 7)
    assert (adv[0] == 0).all()
    assert rv.last_info().rows_without_reward >= 1


# --------------------------------------------------------------------------------------
# install / uninstall / errors
# --------------------------------------------------------------------------------------


def test_install_is_idempotent_and_reversible():
    rv.install()
    rv.install()
    assert rv.is_installed()
    assert core_algos.get_adv_estimator_fn("rvpo") is rv.compute_rvpo_advantage
    assert core_algos.get_adv_estimator_fn("rewardagg") is rv.compute_rewardagg_advantage
    assert ray_trainer.compute_advantage.__wrapped__ is VERL_COMPUTE_ADVANTAGE
    assert ray_trainer.compute_data_metrics.__wrapped__ is VERL_DATA_METRICS
    for name, original in VERL_CHECKPOINTS.items():
        assert ray_trainer.RayPPOTrainer.__dict__[name].__wrapped__ is original
    rv.uninstall()
    assert not rv.is_installed()
    assert ray_trainer.compute_advantage is VERL_COMPUTE_ADVANTAGE
    assert ray_trainer.compute_data_metrics is VERL_DATA_METRICS
    for name, original in VERL_CHECKPOINTS.items():
        assert ray_trainer.RayPPOTrainer.__dict__[name] is original
    assert "rvpo" not in core_algos.ADV_ESTIMATOR_REGISTRY
    rv.uninstall()  # twice is fine
    rv.install()
    assert rv.is_installed()


def test_other_estimators_go_to_verl_unchanged():
    cfg = algo(adv_estimator="grpo_vectorized")
    for name in ("grpo", "grpo_vectorized", "gdpo"):
        ref = VERL_COMPUTE_ADVANTAGE(make_batch(2), adv_estimator=name, config=cfg)
        ours = ray_trainer.compute_advantage(make_batch(2), adv_estimator=name, config=cfg)
        assert torch.equal(ours.batch["advantages"], ref.batch["advantages"]), name


def test_fails_fast_without_non_tensor_batch():
    data = make_batch(1)
    rv.uninstall()
    core_algos.register_adv_est("rvpo")(rv.compute_rvpo_advantage)
    try:
        with pytest.raises(RuntimeError, match="install"):
            VERL_COMPUTE_ADVANTAGE(data, adv_estimator="rvpo", config=algo(adv_estimator="rvpo"))
    finally:
        del core_algos.ADV_ESTIMATOR_REGISTRY["rvpo"]
    rv.install()
    # installed, but reached by a caller that does not pass the components
    with pytest.raises(RuntimeError, match="did not come through rewardagg's wrapper"):
        rv.compute_rvpo_advantage(
            token_level_rewards=data.batch["token_level_rewards"],
            response_mask=data.batch["response_mask"],
            index=data.non_tensor_batch["uid"],
            config=algo(adv_estimator="rvpo"),
        )
    # what the v1 trainer's DataProto holds without our wrappers: only uid
    with pytest.raises(KeyError, match="use_v1"):
        rv.compute_rvpo_advantage(
            token_level_rewards=data.batch["token_level_rewards"],
            response_mask=data.batch["response_mask"],
            index=data.non_tensor_batch["uid"],
            config=algo(adv_estimator="rvpo"),
            non_tensor_batch={"uid": data.non_tensor_batch["uid"]},
        )


@pytest.mark.parametrize(
    ("estimator", "extra", "match"),
    [
        ("rvpo", {"rewardagg": {"method": "gdpo"}}, "rvpo"),
        ("rewardagg", {"rewardagg": {"method": "nope"}}, "available"),
        ("rvpo", {"rewardagg": {"kapa": 1.0}}, "unknown"),
        ("rvpo", {"rewardagg": {"lam": 1.0}}, "does not apply"),
        ("rewardagg", {"rewardagg": {"batch_norm": "tokens"}}, "batch_norm"),
        ("rvpo", {"gdpo_reward_weights": [1.0, 2.0]}, "gdpo_reward_weights"),
    ],
)
def test_bad_settings_raise(estimator, extra, match):
    data = make_batch(0)
    with pytest.raises(ValueError, match=match):
        ray_trainer.compute_advantage(
            data, adv_estimator=estimator, config=algo(adv_estimator=estimator, **extra)
        )


def test_foreign_estimator_with_our_name_is_not_clobbered():
    rv.uninstall()

    def other(**kwargs):
        raise AssertionError

    core_algos.register_adv_est("rvpo")(other)
    try:
        with pytest.raises(ValueError, match="already has an advantage estimator"):
            rv.install()
    finally:
        del core_algos.ADV_ESTIMATOR_REGISTRY["rvpo"]


# --------------------------------------------------------------------------------------
# launcher and Ray hook
# --------------------------------------------------------------------------------------

_VALID = [
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1",
    "trainer.n_gpus_per_node=1",
]


@pytest.mark.parametrize("estimator", ["rvpo", "gdpo"])
def test_launcher_runs_the_v1_trainer_with_the_setup_hook(monkeypatch, estimator):
    """verl's default trainer (v1): our estimators, and verl's gdpo, get the hook that
    brings the reward components from TransferQueue (no refusal any more)."""
    from verl.trainer import main_ppo

    from rewardagg.integrations.verl.__main__ import main

    seen = {}
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, **kw: seen.update(config=config, **kw))
    keys = "+algorithm.gdpo_reward_keys=[fmt,acc,safe]"
    main([f"algorithm.adv_estimator={estimator}", "trainer.use_v1=True", keys, *_VALID])
    config = seen["config"]
    assert config.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook == rv.SETUP_HOOK
    assert "TaskRunnerV1" in repr(seen["task_runner_class"])


def test_launcher_injects_setup_hook_and_calls_verl_run_ppo(monkeypatch):
    from verl.trainer import main_ppo

    from rewardagg.integrations.verl.__main__ import main

    seen = {}

    def fake_run_ppo(config, task_runner_class=None):
        seen["config"], seen["runner"] = config, task_runner_class

    monkeypatch.setattr(main_ppo, "run_ppo", fake_run_ppo)
    main(
        [
            "algorithm.adv_estimator=rvpo",
            "trainer.use_v1=False",
            "+algorithm.gdpo_reward_keys=[fmt,acc,safe]",
            "+algorithm.rewardagg.kappa=2.0",
            *_VALID,
        ]
    )
    config = seen["config"]
    assert config.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook == rv.SETUP_HOOK
    assert "TaskRunner" in repr(seen["runner"])  # the legacy trainer's runner
    assert main_ppo.run_ppo is fake_run_ppo  # the launcher restored what it wrapped
    settings = rv.RewardAggVerlSettings(config.algorithm, estimator="rvpo")
    assert settings.reward_keys == KEYS and settings.method_params == {"kappa": 2.0}


# --------------------------------------------------------------------------------------
# the example (examples/verl_qwen2.5_gsm8k_rvpo)
# --------------------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "verl_qwen2.5_gsm8k_rvpo"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem + "_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_overrides_pass_verl_validation(monkeypatch):
    """The example's Hydra overrides compose with verl 0.9.1's config and pass its
    validate_config and ours (everything up to starting Ray)."""
    from verl.trainer import main_ppo

    from rewardagg.integrations.verl.__main__ import main

    seen = {}
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, **kw: seen.update(config=config))
    lines = (EXAMPLE / "overrides.txt").read_text().splitlines()
    main([s.strip() for s in lines if s.strip() and not s.strip().startswith("#")])
    algo_cfg = seen["config"].algorithm
    assert algo_cfg.adv_estimator == "rvpo"
    assert list(algo_cfg.gdpo_reward_keys) == ["format", "correct", "concise"]
    assert seen["config"].reward.reward_manager.name == "gdpo"


def test_example_reward_fn_feeds_the_estimator():
    """compute_score dicts -> reward_extra_info arrays (as verl stores them) -> rvpo."""
    reward_fn = _load(EXAMPLE / "reward_fn.py")
    completions = [
        ("2 + 3 = 5\n#### 5", "5"),
        ("It is 5.", "5"),
        ("word " * 250 + "\n#### 5", "5"),  # right, formatted, too long
        ("2 + 3 = 6\n#### 6", "5"),
    ] * 2
    results = [reward_fn.compute_score("openai/gsm8k", s, gt) for s, gt in completions]
    assert results[0] == {"score": 3.0, "format": 1.0, "correct": 1.0, "concise": 1.0}
    n, T = len(results), 4
    keys = ["format", "correct", "concise"]
    data = DataProto.from_dict(
        tensors={
            "token_level_rewards": torch.zeros(n, T),
            "response_mask": torch.ones(n, T, dtype=torch.long),
        },
        non_tensors={
            "uid": np.array(["q0"] * 4 + ["q1"] * 4, dtype=object),
            **{k: np.array([r[k] for r in results]) for k in [*keys, "score"]},
        },
    )
    cfg = OmegaConf.create({"adv_estimator": "rvpo", "gdpo_reward_keys": keys})
    adv = ray_trainer.compute_advantage(data, adv_estimator="rvpo", config=cfg).batch["advantages"]
    assert adv.shape == (n, T) and torch.isfinite(adv).all()
    assert adv[0, 0] == adv[:, 0].max()  # the completion meeting all three rewards


@pytest.mark.parametrize("method", rewardagg.available_methods())
@pytest.mark.parametrize("batch_norm", ["verl", "rows", "none"])
@pytest.mark.parametrize("std", [True, False])
def test_every_method_runs_through_compute_advantage(method, batch_norm, std):
    data = make_batch(4, missing=True)
    cfg = algo(
        adv_estimator="rewardagg",
        norm_adv_by_std_in_grpo=std,
        rewardagg={"method": method, "batch_norm": batch_norm},
    )
    out = ray_trainer.compute_advantage(
        data, adv_estimator="rewardagg", config=cfg, norm_adv_by_std_in_grpo=std
    )
    adv = out.batch["advantages"]
    mask = data.batch["response_mask"].bool()
    assert adv.dtype == torch.float32 and torch.isfinite(adv).all()
    assert (adv[~mask] == 0).all()
    per_row = adv.sum(-1) / mask.sum(-1)
    torch.testing.assert_close(adv, per_row[:, None] * mask, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------
# a method registered at run time, with its own parameter (issue 11)
# --------------------------------------------------------------------------------------

CUSTOM = "test_verl_tempered"


@pytest.fixture
def tempered():
    """A method registered for one test (tests/registry_cases.py)."""
    with tempered_method(CUSTOM) as name:
        yield name


def _expected_verl(data, **core):
    """rewardagg's core on the batch's components, then verl's own masked_whiten."""
    rewards = np.stack([data.non_tensor_batch[k].astype(np.float64) for k in KEYS], axis=1)
    s = rewardagg.advantages(
        rewards,
        group_ids=data.non_tensor_batch["uid"],
        weights=[1.0, 2.0, 0.5],
        eps=1e-6,
        singleton="identity",
        batch_norm=False,
        **core,
    )
    mask = data.batch["response_mask"].float()
    return masked_whiten(torch.tensor(s, dtype=torch.float32)[:, None] * mask, mask) * mask


@pytest.mark.parametrize("tau", [0.5, "0.5", 2.0])  # a YAML string converts
def test_registered_method_parameter_through_algorithm_rewardagg(tempered, tau):
    cfg = algo(adv_estimator="rewardagg", rewardagg={"method": tempered, "tau": tau})
    out = ray_trainer.compute_advantage(make_batch(6), adv_estimator="rewardagg", config=cfg)
    expected = _expected_verl(make_batch(6), method=tempered, tau=float(tau))
    torch.testing.assert_close(out.batch["advantages"], expected, atol=1e-5, rtol=0)
    assert rv.last_info().params["tau"] == float(tau)
    # the parameter reached the reducer: the method's default gives other advantages
    default = _expected_verl(make_batch(6), method=tempered)
    assert (out.batch["advantages"] - default).abs().max() > 1e-3


def test_registered_method_through_the_launcher(tempered, monkeypatch):
    from verl.trainer import main_ppo

    from rewardagg.integrations.verl.__main__ import main

    seen = {}
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, **kw: seen.update(config=config))
    main(
        [
            "algorithm.adv_estimator=rewardagg",
            "trainer.use_v1=False",
            "+algorithm.gdpo_reward_keys=[fmt,acc,safe]",
            f"+algorithm.rewardagg.method={tempered}",
            "+algorithm.rewardagg.tau=0.5",
            *_VALID,
        ]
    )
    settings = rv.RewardAggVerlSettings(seen["config"].algorithm, estimator="rewardagg")
    assert settings.method == tempered and settings.method_params == {"tau": 0.5}


def _launcher_config(**rewardagg_settings):
    """What Hydra composes, reduced to what the launcher's check reads."""
    return OmegaConf.create(
        {
            "trainer": {"use_v1": False},
            "algorithm": {
                "adv_estimator": "rewardagg",
                "gdpo_reward_keys": KEYS,
                "rewardagg": rewardagg_settings,
            },
        }
    )


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"tau": 0.0}, r"algorithm\.rewardagg\.tau=0\.0: tau must be > 0"),
        ({"tau": "nan"}, r"algorithm\.rewardagg\.tau='nan': tau must be > 0"),
        ({"tau": "warm"}, r"algorithm\.rewardagg\.tau='warm'.*must be a number"),
    ],
)
def test_bad_value_of_a_registered_parameter_fails_at_config_time(tempered, settings, match):
    from rewardagg.integrations.verl.__main__ import check_config

    with pytest.raises(SystemExit, match=match):
        check_config(_launcher_config(method=tempered, **settings))


def test_parameter_of_another_method_does_not_apply(tempered):
    with pytest.raises(ValueError, match=r"algorithm\.rewardagg\.tau does not apply to method"):
        rv.RewardAggVerlSettings(algo(rewardagg={"method": "softmin", "tau": 0.5}), estimator="x")
    with pytest.raises(ValueError, match=rf"kappa does not apply to method '{tempered}'"):
        rv.RewardAggVerlSettings(algo(rewardagg={"method": tempered, "kappa": 1.0}), estimator="x")


def test_unregistered_method_and_its_parameter_are_rejected(tempered):
    from rewardagg.integrations.verl.__main__ import check_config

    check_config(_launcher_config(method=tempered, tau=0.5))  # accepted while registered
    rewardagg.unregister_aggregator(tempered)
    with pytest.raises(SystemExit, match=rf"method='{tempered}' is not a registered rewardagg"):
        check_config(_launcher_config(method=tempered, tau=0.5))
    with pytest.raises(SystemExit, match=r"unknown algorithm\.rewardagg setting\(s\) \['tau'\]"):
        check_config(_launcher_config(tau=0.5))
    with pytest.raises(ValueError, match="not a registered rewardagg method"):
        ray_trainer.compute_advantage(
            make_batch(0),
            adv_estimator="rewardagg",
            config=algo(adv_estimator="rewardagg", rewardagg={"method": tempered}),
        )


def test_known_settings_come_from_the_method_table(tempered):
    """The unknown-setting message lists the registered methods' parameters."""
    with pytest.raises(ValueError, match="unknown") as err:
        rv.RewardAggVerlSettings(algo(rewardagg={"kapa": 1.0}), estimator="rewardagg")
    for method in rewardagg.available_methods():
        for name in rewardagg.get_aggregator(method).params:
            assert repr(name) in str(err.value)


# --------------------------------------------------------------------------------------
# GD2PO's conflict filter and constraints (issues 12 and 19)
# --------------------------------------------------------------------------------------

WEIGHTS = [1.0, 2.0, 0.5]


def verl_per_reward_advantages(data, norm_adv_by_std_in_grpo=True):
    """(B, K) per-reward advantages from verl's own GRPO estimator, one reward at a time
    (as GD2PO's ray_trainer does): the reward on the last response token, verl's group
    statistics (eps 1e-6, Bessel, a singleton has mean 0 and std 1), read back per row."""
    mask = data.batch["response_mask"].float()
    last = mask.sum(-1).long() - 1
    cols = []
    for key in KEYS:
        r = torch.tensor(data.non_tensor_batch[key].astype(np.float64), dtype=torch.float32)
        tlr = torch.zeros_like(mask)
        tlr[torch.arange(len(r)), last] = r
        adv, _ = core_algos.compute_grpo_outcome_advantage(
            token_level_rewards=tlr,
            response_mask=mask,
            index=data.non_tensor_batch["uid"],
            norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
        )
        cols.append(adv.sum(-1) / mask.sum(-1))
    return torch.stack(cols, dim=1)


def gd2po_expected(data, mode, tau, reweight=True, norm_adv_by_std_in_grpo=True, lam=0.0):
    """DESIGN.md 2c, written out on verl's per-reward advantages (plus lam times the safe
    reward's, DESIGN.md 2b), then verl's own masked_whiten over the kept rows' tokens
    (dropped rows: exactly 0)."""
    z = verl_per_reward_advantages(data, norm_adv_by_std_in_grpo)
    w = torch.tensor(WEIGHTS)
    t = z * w
    drop = (t > 1e-8).any(1) & (t < -1e-8).any(1)
    if mode == "snr":
        drop &= t.sum(1).abs() / (t.abs().sum(1) + 1e-8) < tau
    uid = data.non_tensor_batch["uid"]
    rho = torch.ones(len(uid))
    if reweight:
        for g in np.unique(uid):
            rows = torch.as_tensor(uid == g)
            rho[rows] = (~drop[rows]).float().mean()
    score = rho * (t.sum(1) + lam * z[:, KEYS.index("safe")])
    keep = data.batch["response_mask"].float() * (~drop).float()[:, None]
    return masked_whiten(score[:, None] * keep, keep) * keep, drop


# a constraint whose multiplier starts at 0.7: the first call applies 0.7
CONSTRAINED = {"constraints": {"safe": 0.9}, "constraint_init": 0.7}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("settings", "mode", "tau", "reweight", "lam"),
    [
        ({"method": "gd2po"}, "hard", None, True, 0.0),
        ({"method": "gd2po_snr"}, "snr", 0.8, True, 0.0),
        ({"method": "gdpo", "conflict": "snr", "conflict_threshold": 0.3}, "snr", 0.3, True, 0.0),
        ({"method": "gd2po", "reweight_groups": False}, "hard", None, False, 0.0),
        ({"method": "gd2po", **CONSTRAINED}, "hard", None, True, 0.7),
    ],
)
def test_gd2po_equals_the_formula_on_verls_own_advantages_and_masked_whiten(
    seed, settings, mode, tau, reweight, lam
):
    rv.reset_constraint_trackers()
    data = make_batch(seed)  # uneven shuffled groups, a singleton, ragged responses
    cfg = algo(adv_estimator="rewardagg", rewardagg=settings)
    expected, drop = gd2po_expected(data, mode, tau, reweight, lam=lam)
    out = ray_trainer.compute_advantage(data, adv_estimator="rewardagg", config=cfg)
    adv = out.batch["advantages"]
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    assert drop.any() and (~drop).any(), "the batch must exercise the filter"
    assert (adv[drop] == 0).all()
    assert rv.last_info().conflict_dropped == int(drop.sum())


@pytest.mark.parametrize(
    ("settings", "lam"),
    [({"method": "gd2po"}, 0.0), ({"method": "gd2po_snr"}, 0.0), (CONSTRAINED, 0.7)],
)
def test_gd2po_without_std_scaling_equals_the_formula_on_centred_advantages(settings, lam):
    """norm_adv_by_std_in_grpo=False (GD2PO's own flag): the filter runs on the centred
    per-reward advantages, as GD2PO does with it; a multiplier weights the centred reward."""
    rv.reset_constraint_trackers()
    data = make_batch(6)
    settings = {"method": "gd2po", **settings}
    cfg = algo(adv_estimator="rewardagg", rewardagg=settings)
    mode = "snr" if settings["method"] == "gd2po_snr" else "hard"
    expected, drop = gd2po_expected(data, mode, 0.8, norm_adv_by_std_in_grpo=False, lam=lam)
    out = ray_trainer.compute_advantage(
        data, adv_estimator="rewardagg", config=cfg, norm_adv_by_std_in_grpo=False
    )
    torch.testing.assert_close(out.batch["advantages"], expected, atol=1e-5, rtol=0)
    assert drop.any()


def _rewards(data):
    return np.stack([data.non_tensor_batch[k].astype(np.float64) for k in KEYS], axis=1)


def _expected_with_multiplier(data, lam, **options):
    """The core call with the multiplier, then verl's own masked_whiten."""
    mask = data.batch["response_mask"].float()
    s = rewardagg.advantages(
        _rewards(data),
        method="softmin",
        group_ids=data.non_tensor_batch["uid"],
        weights=WEIGHTS,
        eps=1e-6,
        singleton="identity",
        batch_norm=False,
        multipliers={"safe": lam},
        reward_names=KEYS,
        **options,
    )
    return masked_whiten(torch.tensor(s, dtype=torch.float32)[:, None] * mask, mask) * mask


def test_constraint_multiplier_over_two_calls_follows_the_update_rule():
    rv.reset_constraint_trackers()
    target, lr = 0.9, 0.5
    cfg = algo(
        adv_estimator="rewardagg",
        rewardagg={
            "method": "softmin",
            "order": "reduce_then_normalize",
            "center": "group",
            "constraints": {"safe": target},
            "constraint_lr": lr,
        },
    )
    options = dict(order="reduce_then_normalize", center="group")
    lam = 0.0
    for step, seed in enumerate([21, 22], start=1):
        data = make_batch(seed, missing=True)
        data.batch["token_level_scores"] = data.batch["token_level_rewards"].clone()
        expected = _expected_with_multiplier(data, lam, **options)
        out = ray_trainer.compute_advantage(data, adv_estimator="rewardagg", config=cfg)
        torch.testing.assert_close(out.batch["advantages"], expected, atol=1e-5, rtol=0)
        safe = _rewards(data)[:, KEYS.index("safe")]
        mean = float(np.nanmean(safe))
        assert mean < target
        lam = max(0.0, lam + lr * (target - mean))  # the rule, written out
        tracker = rv.constraint_tracker(cfg)
        assert tracker is rv.constraint_tracker()  # one tracker for the run
        assert tracker.multipliers == {"safe": pytest.approx(lam, abs=1e-12)}
        assert tracker.step == step
        # verl's step metrics get the multiplier and the batch mean (once)
        metrics = ray_trainer.compute_data_metrics(batch=out, use_critic=False)
        assert metrics["rewardagg/lambda/safe"] == pytest.approx(lam, abs=1e-12)
        assert metrics["rewardagg/constraint_mean/safe"] == pytest.approx(mean, abs=1e-12)
        assert metrics["rewardagg/bottleneck_share/safe"] >= 0
        again = ray_trainer.compute_data_metrics(batch=out, use_critic=False)
        assert not any(k.startswith("rewardagg/") for k in again)
    rv.reset_constraint_trackers()
    assert rv.constraint_tracker(cfg).multipliers == {"safe": 0.0}  # a new run


class _Loader(SimpleNamespace):
    def __len__(self):
        return 10


def _stub_trainer(tmp_path, cfg, global_steps, resume_mode="auto"):
    """verl's own RayPPOTrainer with its worker groups and dataloader stubbed."""
    trainer = ray_trainer.RayPPOTrainer.__new__(ray_trainer.RayPPOTrainer)
    trainer.config = OmegaConf.create(
        {
            "algorithm": OmegaConf.to_container(cfg),
            "trainer": {
                "default_local_dir": str(tmp_path / "ckpt"),
                "default_hdfs_dir": None,
                "resume_mode": resume_mode,
                "resume_from_path": str(tmp_path / "ckpt" / "global_step_1"),
                "del_local_ckpt_after_load": False,
            },
            "actor_rollout_ref": {"actor": {"checkpoint": {"async_save": False}}},
        }
    )
    trainer.global_steps = global_steps
    trainer.use_critic = False
    noop = lambda *args, **kwargs: None  # noqa: E731
    trainer.actor_rollout_wg = SimpleNamespace(save_checkpoint=noop, load_checkpoint=noop)
    trainer.train_dataloader = _Loader(state_dict=dict, load_state_dict=noop)
    return trainer


def test_constraint_tracker_goes_with_verls_checkpoints(tmp_path):
    rv.reset_constraint_trackers()
    cfg = algo(
        adv_estimator="rewardagg",
        rewardagg={"method": "gdpo", "constraints": {"fmt": 0.95}, "constraint_lr": 0.25},
    )
    ray_trainer.compute_advantage(make_batch(1), adv_estimator="rewardagg", config=cfg)
    saved = rv.constraint_tracker(cfg).state_dict()
    assert saved["multipliers"][0] > 0
    trainer = _stub_trainer(tmp_path, cfg, global_steps=1)
    trainer._save_checkpoint()  # verl's own save, wrapped
    folder = tmp_path / "ckpt" / "global_step_1"
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text() == "1"
    assert json.loads((folder / rv.CONSTRAINTS_FILE).read_text()) == saved

    for mode in ("auto", "resume_path"):
        rv.reset_constraint_trackers()  # a new driver process
        resumed = _stub_trainer(tmp_path, cfg, global_steps=0, resume_mode=mode)
        resumed._load_checkpoint()  # verl's own load, wrapped
        assert resumed.global_steps == 1
        assert rv.constraint_tracker(cfg).state_dict() == saved

    rv.reset_constraint_trackers()
    fresh = _stub_trainer(tmp_path, cfg, global_steps=0, resume_mode="disable")
    fresh._load_checkpoint()
    assert rv.constraint_tracker(cfg).multipliers == {"fmt": 0.0}
    rv.reset_constraint_trackers()


def test_shared_settings_through_hydra_and_their_errors(monkeypatch):
    from verl.trainer import main_ppo

    from rewardagg.integrations.verl.__main__ import check_config, main

    seen = {}
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, **kw: seen.update(config=config))
    main(
        [
            "algorithm.adv_estimator=rewardagg",
            "trainer.use_v1=False",
            "+algorithm.gdpo_reward_keys=[fmt,acc,safe]",
            "+algorithm.rewardagg.method=softmin",
            "+algorithm.rewardagg.conflict=snr",
            "+algorithm.rewardagg.conflict_threshold=0.5",
            "+algorithm.rewardagg.reweight_groups=false",
            "+algorithm.rewardagg.center=group",
            "+algorithm.rewardagg.constraints.safe=0.9",
            "+algorithm.rewardagg.constraints.0=0.5",
            "+algorithm.rewardagg.constraint_lr=0.2",
            "+algorithm.rewardagg.constraint_lambda_max=5",
            *_VALID,
        ]
    )
    settings = rv.RewardAggVerlSettings(seen["config"].algorithm, estimator="rewardagg")
    p, c = settings.pipeline, settings.constraints
    assert (p.conflict, p.conflict_threshold, p.reweight_groups, p.center) == (
        "snr",
        0.5,
        False,
        "group",
    )
    assert c.resolve(KEYS) == {"safe": 0.9, "fmt": 0.5}
    assert (c.lr, c.lambda_max) == (0.2, 5.0)
    bad = [
        ({"order": "sideways"}, r"algorithm\.rewardagg\.order must be one of"),
        ({"center": "prompt"}, r"algorithm\.rewardagg\.center must be one of"),
        ({"conflict": "soft"}, r"algorithm\.rewardagg\.conflict must be one of"),
        ({"conflict": "snr", "conflict_threshold": 2}, r"conflict_threshold must be in \[0, 1\]"),
        ({"method": "grpo", "conflict": "hard"}, r"algorithm\.rewardagg\.conflict: .*per-reward"),
        ({"method": "gd2po", "order": "reduce_then_normalize"}, r"algorithm\.rewardagg\.order="),
        ({"reweight_groups": "maybe"}, r"algorithm\.rewardagg\.reweight_groups must be true"),
        ({"constraints": {"format": 0.9}}, r"constraints: unknown reward 'format'"),
        ({"constraints": {"7": 0.9}}, "out of range"),
        ({"constraints": {"safe": 0.9}, "constraint_lr": -1}, "constraint_lr must be >= 0"),
        ({"constraint_kp": 1.0}, "constraint_kp set without"),
        ({"method": "grpo", "constraints": {"safe": 0.9}}, "sums the rewards first"),
    ]
    for settings_, match in bad:
        with pytest.raises(SystemExit, match=match):
            check_config(_launcher_config(**settings_))


@pytest.mark.parametrize("std", [True, False])
@pytest.mark.parametrize("batch_norm", ["verl", "rows", "none"])
@pytest.mark.parametrize("center", ["batch", "group"])
def test_shared_options_run_on_every_path(std, batch_norm, center):
    rv.reset_constraint_trackers()
    data = make_batch(9, missing=True)
    cfg = algo(
        adv_estimator="rewardagg",
        norm_adv_by_std_in_grpo=std,
        rewardagg={
            "method": "softmin",
            "batch_norm": batch_norm,
            "center": center,
            "conflict": "snr",
            "conflict_threshold": 0.5,
            **CONSTRAINED,
        },
    )
    out = ray_trainer.compute_advantage(
        data, adv_estimator="rewardagg", config=cfg, norm_adv_by_std_in_grpo=std
    )
    adv = out.batch["advantages"]
    mask = data.batch["response_mask"].bool()
    assert torch.isfinite(adv).all() and (adv[~mask] == 0).all()
    per_row = (adv.sum(-1) / mask.sum(-1)).double().numpy()
    if center == "group" and batch_norm != "verl":  # every group's advantages sum to zero
        uid = data.non_tensor_batch["uid"]
        for g in np.unique(uid):
            assert abs(per_row[uid == g].sum()) < 1e-5, g
    assert rv.constraint_tracker(cfg).step == 1


# --------------------------------------------------------------------------------------
# issue 15: every copy of compute_advantage, early value checks, metrics, --help, YAML
# --------------------------------------------------------------------------------------


def _separation_module():
    """verl's separation recipe (one-step-off-policy and fully-async training build on it);
    it imports compute_advantage by name."""
    return pytest.importorskip("verl.experimental.separation.ray_trainer")


def test_install_wraps_every_copy_of_compute_advantage(monkeypatch):
    """A copy imported by name before install() (the separation recipe, v1's utils, user
    code) is wrapped by install(); is_installed() is False while one is not."""
    import types

    separation = _separation_module()
    v1_utils = pytest.importorskip("verl.trainer.ppo.v1.utils")
    user = types.ModuleType("user_recipe_copy")
    monkeypatch.setitem(sys.modules, user.__name__, user)
    rv.uninstall()  # every copy holds verl's own function, as if imported before install()
    user.compute_advantage = ray_trainer.compute_advantage
    for module in (separation, v1_utils, user):
        assert module.compute_advantage is VERL_COMPUTE_ADVANTAGE
    assert not rv.is_installed()
    rv.install()
    assert rv.is_installed() and rv.unpatched() == []
    wrapper = ray_trainer.compute_advantage
    for module in (separation, v1_utils, user):
        assert module.compute_advantage is wrapper and wrapper.__wrapped__ is VERL_COMPUTE_ADVANTAGE
    assert separation.compute_data_metrics.__wrapped__ is VERL_DATA_METRICS
    # a copy that escaped (made from verl's own function after install) is reported
    user.compute_advantage = VERL_COMPUTE_ADVANTAGE
    assert not rv.is_installed()
    assert rv.unpatched() == ["user_recipe_copy.compute_advantage"]
    data = make_batch(0)
    with pytest.raises(RuntimeError, match=r"not wrapped: \['user_recipe_copy\.compute_advantage"):
        rv.compute_rvpo_advantage(
            token_level_rewards=data.batch["token_level_rewards"],
            response_mask=data.batch["response_mask"],
            index=data.non_tensor_batch["uid"],
            config=algo(adv_estimator="rvpo"),
        )
    rv.install()
    assert rv.is_installed() and user.compute_advantage is wrapper
    rv.uninstall()
    for module in (ray_trainer, separation, v1_utils, user):
        assert module.compute_advantage is VERL_COMPUTE_ADVANTAGE


def test_separation_recipes_own_advantage_step_gets_the_components():
    """verl's SeparateRayPPOTrainer._fit_compute_advantage (one-step-off-policy, fully
    async) on a batch as its fit loop leaves it: rvpo equals the legacy trainer's, and our
    metrics reach its compute_data_metrics."""
    separation = _separation_module()
    data = make_batch(5, missing=True)
    extra = {k: list(data.non_tensor_batch[k]) for k in KEYS}
    legacy = ray_trainer.compute_advantage(
        make_batch(5, missing=True), adv_estimator="rvpo", config=algo(adv_estimator="rvpo")
    )
    for k in KEYS:  # the recipe puts reward_extra_infos_dict into the batch itself
        del data.non_tensor_batch[k]
    trainer = SimpleNamespace(
        metrics={},
        timing_raw={},
        reward_tensor=data.batch["token_level_rewards"],
        reward_extra_infos_dict=extra,
        config=OmegaConf.create(
            {
                "algorithm": {
                    **OmegaConf.to_container(algo(adv_estimator="rvpo")),
                    "use_kl_in_reward": False,
                    "gamma": 1.0,
                    "lam": 1.0,
                },
                "actor_rollout_ref": {"rollout": {"n": 4}},
            }
        ),
    )
    out = separation.SeparateRayPPOTrainer._fit_compute_advantage(trainer, data)
    torch.testing.assert_close(out.batch["advantages"], legacy.batch["advantages"])
    metrics = separation.compute_data_metrics(batch=out, use_critic=False)
    assert metrics["rewardagg/bottleneck_share/safe"] >= 0


def _check(**overrides):
    from rewardagg.integrations.verl.__main__ import check_config

    config = _launcher_config()
    config.algorithm.update(overrides.pop("algorithm", {}))
    config.algorithm.rewardagg.update(overrides)
    check_config(config)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"kappa": -1}, r"algorithm\.rewardagg\.kappa=-1: kappa must be a non-negative"),
        ({"eps": -1e-6}, r"algorithm\.rewardagg\.eps must be >= 0"),
        ({"eps": "nan"}, r"algorithm\.rewardagg\.eps must be a finite number"),
        ({"eps": "inf"}, r"algorithm\.rewardagg\.eps must be a finite number"),
        ({"eps": "tiny"}, r"algorithm\.rewardagg\.eps must be a number"),
        ({"singleton": "drop"}, r"algorithm\.rewardagg\.singleton must be one of 'zero'"),
        ({"baseline": "loo"}, r"algorithm\.rewardagg\.baseline must be one of 'mean'"),
        ({"batch_norm": "tokens"}, r"algorithm\.rewardagg\.batch_norm must be one of"),
        ({"algorithm": {"gdpo_reward_weights": [1, -1, 1]}}, r"gdpo_reward_weights: .*non-neg"),
        ({"algorithm": {"gdpo_reward_weights": [0, 0, 0]}}, r"gdpo_reward_weights: .*all zero"),
        ({"algorithm": {"gdpo_reward_weights": [1, "x", 1]}}, r"gdpo_reward_weights\[1\]"),
        ({"algorithm": {"gdpo_reward_weights": [1, "nan", 1]}}, r"gdpo_reward_weights\[1\]"),
        ({"algorithm": {"gdpo_reward_weights": [1, 1]}}, r"has 2 entries but"),
    ],
)
def test_bad_values_fail_before_ray(overrides, match):
    with pytest.raises(SystemExit, match=match):
        _check(**overrides)


def test_good_values_pass_and_are_converted():
    _check(eps="1e-4", singleton="zero", baseline="leave_one_out", kappa="inf")
    settings = rv.RewardAggVerlSettings(
        algo(gdpo_reward_weights=["1", 0, "2.5"], rewardagg={"eps": "0"}), estimator="rvpo"
    )
    assert settings.weights == [1.0, 0.0, 2.5] and settings.eps == 0.0


def test_step_metrics_have_the_diagnostics_and_per_reward_curves():
    """rewardagg/<metric>/<reward>: the core's diagnostics of the batch and each reward's
    mean / std / min / max over its present values, as verl logs gdpo/<key>/* for gdpo."""
    data = make_batch(8, missing=True)
    data.batch["token_level_scores"] = data.batch["token_level_rewards"].clone()
    cfg = algo(adv_estimator="rvpo")
    out = ray_trainer.compute_advantage(data, adv_estimator="rvpo", config=cfg)
    metrics = ray_trainer.compute_data_metrics(batch=out, use_critic=False)
    rewards = _rewards(data)
    _, info = rewardagg.advantages(
        rewards,
        method="softmin",
        group_ids=data.non_tensor_batch["uid"],
        weights=WEIGHTS,
        eps=1e-6,
        singleton="identity",
        batch_norm=False,
        return_info=True,
    )
    expected = info.to_metrics(KEYS, prefix="rewardagg/")
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    for j, key in enumerate(KEYS):
        col = rewards[:, j]
        assert metrics[f"rewardagg/reward_mean/{key}"] == pytest.approx(np.nanmean(col))
        assert metrics[f"rewardagg/reward_std/{key}"] == pytest.approx(np.nanstd(col))
        assert metrics[f"rewardagg/reward_min/{key}"] == np.nanmin(col)
        assert metrics[f"rewardagg/reward_max/{key}"] == np.nanmax(col)
        assert metrics[f"rewardagg/reward_missing/{key}"] == pytest.approx(np.isnan(col).mean())
    assert "rewardagg/bottleneck_share/safe" in expected


def test_launcher_help_lists_rewardagg_settings(capsys, tempered):
    from rewardagg.integrations.verl.__main__ import main

    with pytest.raises(SystemExit):  # Hydra's --help exits after printing verl's part
        main(["--help"])
    out = capsys.readouterr().out
    for setting in (
        "+algorithm.gdpo_reward_keys=",
        "+algorithm.rewardagg.method=NAME",
        "+algorithm.rewardagg.kappa=VALUE",
        "+algorithm.rewardagg.singleton=VALUE",
        "+algorithm.rewardagg.constraints.KEY=TARGET",
        "+algorithm.rewardagg.tau=VALUE",  # a method registered now
    ):
        assert setting in out, setting
    assert "powered by Hydra" in out  # then verl's own help


def _usage_overrides(doc: str) -> list[str]:
    """The Hydra overrides of the ``python -m rewardagg.integrations.verl`` block of a
    docstring (up to its ``...`` line)."""
    import shlex

    lines = doc.split("python -m rewardagg.integrations.verl \\", 1)[1].splitlines()[1:]
    words: list[str] = []
    for line in lines:
        line = line.strip().rstrip("\\").strip()
        if not line or line.startswith("..."):
            break
        words += shlex.split(line)
    return words


def test_module_docstring_usage_composes_with_verls_config(monkeypatch):
    from verl.trainer import main_ppo

    from rewardagg.integrations.verl.__main__ import main

    seen = {}
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, **kw: seen.update(config=config))
    words = _usage_overrides(rv.__doc__)
    assert "+algorithm.gdpo_reward_keys=[format,correct,safe]" in words
    main([*words, *_VALID])
    settings = rv.RewardAggVerlSettings(seen["config"].algorithm, estimator="rvpo")
    assert settings.reward_keys == ["format", "correct", "safe"]
    assert settings.method_params == {"kappa": 1.0}


def test_example_yaml_extends_verls_ppo_trainer(monkeypatch):
    """examples/verl_qwen2.5_gsm8k_rvpo/rvpo_trainer.yaml: verl's ppo_trainer plus the
    rewardagg settings, composed by Hydra through the launcher and checked by it."""
    from verl.trainer import main_ppo

    from rewardagg.integrations.verl.__main__ import main

    seen = {}
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, **kw: seen.update(config=config))
    main([f"--config-path={EXAMPLE}", "--config-name=rvpo_trainer", *_VALID])
    config = seen["config"]
    assert config.algorithm.adv_estimator == "rvpo" and config.trainer.use_v1
    assert config.reward.reward_manager.name == "gdpo"
    settings = rv.RewardAggVerlSettings(config.algorithm, estimator="rvpo")
    assert settings.reward_keys == ["format", "correct", "concise"]
    assert settings.method_params == {}  # issue 26: the method's parameters come with it
    assert config.actor_rollout_ref.rollout.n == 8  # verl's own settings are kept


# --------------------------------------------------------------------------------------
# verl's v1 trainer on a real TransferQueue (Ray, CPU)
# --------------------------------------------------------------------------------------


def put_v1_trajectories(tq, data, prefix: str, *, as_fields: bool = False) -> list[str]:
    """``data`` (a make_batch DataProto) as verl's v1 agent loop stores it: one trajectory
    per row under key ``{uid}_{session}_0``, ragged tensors (verl's own
    ``list_of_dict_to_tensordict``), the compute_score dict in
    ``extra_fields['reward_extra_info']``; ``as_fields``: each component a field of its
    own instead, as a colocated reward model writes them."""
    from collections import Counter

    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    mask = data.batch["response_mask"]
    sessions: Counter = Counter()
    keys, rows = [], []
    for i, uid in enumerate(data.non_tensor_batch["uid"]):
        length, uid = int(mask[i].sum()), f"{prefix}{uid}"
        keys.append(f"{uid}_{sessions[uid]}_0")
        sessions[uid] += 1
        components = {k: data.non_tensor_batch[k][i] for k in KEYS}
        row = {
            "prompts": torch.ones(3, dtype=torch.long),
            "responses": torch.ones(length, dtype=torch.long),
            "response_mask": mask[i, :length].clone(),
            "rm_scores": data.batch["token_level_rewards"][i, :length].clone(),
            "uid": uid,
        }
        if as_fields:
            row.update(components)
        else:
            row["extra_fields"] = {"reward_extra_info": {"score": 1.0, **components}}
        rows.append(row)
    tq.kv_batch_put(keys=keys, partition_id="train", fields=list_of_dict_to_tensordict(rows))
    return keys


def v1_trainer(**algorithm):
    """What verl's v1 PPOTrainer._compute_advantage reads of its trainer: the config."""
    cfg = {**OmegaConf.to_container(algo(**algorithm)), "use_kl_in_reward": False}
    cfg.update(gamma=1.0, lam=1.0)
    return SimpleNamespace(
        config=OmegaConf.create({"algorithm": cfg, "actor_rollout_ref": {"rollout": {"n": 4}}})
    )


def run_v1(tq, keys, batch=None, **algorithm):
    """verl's own v1 advantage step on the batch ``keys`` (or the ``KVBatchMeta``
    ``batch``); the advantages it wrote back to TransferQueue (one tensor per row, response
    tokens only) and its metrics."""
    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo.v1 import trainer_base

    metrics: dict = {}
    if batch is None:
        batch = KVBatchMeta(partition_id="train", keys=keys, tags=[{} for _ in keys])
    trainer_base.PPOTrainer._compute_advantage(v1_trainer(**algorithm), batch, metrics)
    adv = tq.kv_batch_get(keys=batch.keys, partition_id="train", select_fields=["advantages"])
    return list(adv["advantages"].unbind()), metrics


def _with_scores(data):
    data.batch["token_level_scores"] = data.batch["token_level_rewards"]
    return data


def assert_rows_equal(v1_rows, legacy: torch.Tensor, data, atol=1e-6):
    lengths = data.batch["response_mask"].sum(-1)
    for i, row in enumerate(v1_rows):
        torch.testing.assert_close(row, legacy[i, : int(lengths[i])], atol=atol, rtol=0)


@pytest.fixture(scope="class")
def transfer_queue():
    """A local Ray (with our setup hook in its runtime env) and a TransferQueue."""
    ray = pytest.importorskip("ray")
    tq = pytest.importorskip("transfer_queue")
    if ray.is_initialized():
        pytest.skip("Ray already initialised in this process")
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"worker_process_setup_hook": rv.SETUP_HOOK},
        )
    except Exception as err:  # pragma: no cover - environment without a usable Ray
        pytest.skip(f"cannot start a local Ray instance: {err}")
    try:
        tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
        yield tq
    finally:
        try:
            tq.close()
        finally:
            ray.shutdown()


@pytest.mark.slow
@pytest.mark.usefixtures("transfer_queue")
class TestV1Trainer:
    """verl's v1 ``PPOTrainer._compute_advantage`` (unchanged verl code) reading a real
    TransferQueue, here and in a Ray worker set up by the hook as verl's TaskRunnerV1."""

    def test_rvpo_and_gdpo_get_the_components(self, transfer_queue):
        rv.reset_constraint_trackers()
        tq = transfer_queue
        data = make_batch(3, missing=True)  # None components: missing rewards
        keys = put_v1_trajectories(tq, data, "a.")
        rows, metrics = run_v1(tq, keys, adv_estimator="rvpo")
        legacy = ray_trainer.compute_advantage(
            make_batch(3, missing=True), adv_estimator="rvpo", config=algo(adv_estimator="rvpo")
        )
        assert_rows_equal(rows, legacy.batch["advantages"], data)
        assert metrics["rewardagg/bottleneck_share/safe"] >= 0  # v1's step metrics
        assert metrics["rewardagg/reward_missing/safe"] > 0
        # verl's own gdpo on v1 equals verl's gdpo on the legacy trainer, and ours
        data = make_batch(4)
        keys = put_v1_trajectories(tq, data, "b.")
        gdpo_v1, gdpo_metrics = run_v1(tq, keys, adv_estimator="gdpo")
        gdpo = VERL_COMPUTE_ADVANTAGE(make_batch(4), adv_estimator="gdpo", config=algo())
        assert_rows_equal(gdpo_v1, gdpo.batch["advantages"], data)
        ours, _ = run_v1(tq, keys, adv_estimator="rewardagg", rewardagg={"method": "gdpo"})
        assert_rows_equal(ours, gdpo.batch["advantages"], data, atol=1e-5)
        assert not any(k.startswith("rewardagg/") for k in gdpo_metrics)

    def test_components_as_fields_of_their_own(self, transfer_queue):
        """A colocated reward model writes each reward_extra_info key as a field."""
        data = make_batch(6)
        keys = put_v1_trajectories(transfer_queue, data, "c.", as_fields=True)
        rows, _ = run_v1(transfer_queue, keys, adv_estimator="rvpo")
        legacy = ray_trainer.compute_advantage(
            make_batch(6), adv_estimator="rvpo", config=algo(adv_estimator="rvpo")
        )
        assert_rows_equal(rows, legacy.batch["advantages"], data)

    def test_verls_padding_rows_carry_no_reward(self, transfer_queue):
        """verl pads a v1 batch with copies of its first trajectory (is_padding): they are
        missing in every reward, so statistics, curves and advantages are the real rows'."""
        from transfer_queue import KVBatchMeta
        from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size

        rv.reset_constraint_trackers()
        data = make_batch(11)
        keys = put_v1_trajectories(transfer_queue, data, "p.")
        tags = [{"seq_len": 10} for _ in keys]
        batch = upsample_batch_to_divisible_size(
            KVBatchMeta(partition_id="train", keys=keys, tags=tags), 8, eos_token_id=0
        )
        n_pad = len(batch.keys) - len(keys)
        assert n_pad > 0 and all(tag.get("is_padding") for tag in batch.tags[len(keys) :])
        rows, metrics = run_v1(transfer_queue, None, batch=batch, adv_estimator="rvpo")
        legacy = ray_trainer.compute_advantage(
            make_batch(11), adv_estimator="rvpo", config=algo(adv_estimator="rvpo")
        )
        assert_rows_equal(rows[: len(keys)], legacy.batch["advantages"], data)
        assert all(float(row.abs().sum()) == 0 for row in rows[len(keys) :])
        real = ray_trainer.compute_data_metrics(batch=_with_scores(legacy), use_critic=False)
        for key in KEYS:
            name = f"rewardagg/reward_mean/{key}"
            assert metrics[name] == pytest.approx(real[name])
        assert metrics["rewardagg/rows_without_reward"] == n_pad

    def test_a_key_nowhere_is_a_clear_error(self, transfer_queue):
        keys = put_v1_trajectories(transfer_queue, make_batch(7), "d.")
        with pytest.raises(KeyError, match=r"\['helpful'\].*keys there: \['acc', 'fmt'"):
            run_v1(transfer_queue, keys, adv_estimator="rvpo", gdpo_reward_keys=["fmt", "helpful"])

    def test_the_setup_hook_installs_in_a_worker_that_imports_v1(self, transfer_queue):
        """In a Ray worker, as in verl's TaskRunnerV1: the hook imports nothing itself,
        installs while verl's v1 trainer imports, and the v1 step then aggregates the
        components it reads from this process's TransferQueue."""
        import ray

        data = make_batch(2, missing=True)
        keys = put_v1_trajectories(transfer_queue, data, "w.")
        trainer = v1_trainer(adv_estimator="rvpo")

        @ray.remote(num_cpus=0)  # TransferQueue's actors hold the CPUs Ray was given
        def probe(keys, trainer):
            import sys

            before = "verl.trainer.ppo.ray_trainer" in sys.modules
            import transfer_queue as tq
            from transfer_queue import KVBatchMeta
            from verl.trainer.ppo.v1 import get_trainer_cls  # what TaskRunnerV1 imports

            import rewardagg.integrations.verl as mod

            tq.init()  # the driver's TransferQueue
            metrics: dict = {}
            batch = KVBatchMeta(partition_id="train", keys=keys, tags=[{} for _ in keys])
            get_trainer_cls("sync")._compute_advantage(trainer, batch, metrics)
            return before, mod.is_installed(), mod.unpatched(), sorted(metrics)

        before, installed, unpatched, metrics = ray.get(probe.remote(keys, trainer), timeout=180)
        assert not before  # the hook itself did not import verl's trainer ...
        assert installed and unpatched == []  # ... but installed as soon as it was imported
        assert "rewardagg/bottleneck_share/fmt" in metrics
        adv = transfer_queue.kv_batch_get(
            keys=keys, partition_id="train", select_fields=["advantages"]
        )
        legacy = ray_trainer.compute_advantage(
            make_batch(2, missing=True), adv_estimator="rvpo", config=algo(adv_estimator="rvpo")
        )
        assert_rows_equal(list(adv["advantages"].unbind()), legacy.batch["advantages"], data)


# --------------------------------------------------------------------------------------
# issue 26: every documented command of the example, as the shell runs it
# --------------------------------------------------------------------------------------

from example_commands import documented_commands, shell_argv  # noqa: E402

_EXAMPLE_COMMANDS = documented_commands(EXAMPLE / "README.md")
# what each documented command must configure: (estimator, method, method parameters)
_EXPECTED = {
    "": ("rvpo", "softmin", {}),
    "+algorithm.rewardagg.kappa=2.0": ("rvpo", "softmin", {"kappa": 2.0}),
    "algorithm.adv_estimator=rewardagg +algorithm.rewardagg.method=gdpo": (
        "rewardagg",
        "gdpo",
        {},
    ),
    "algorithm.adv_estimator=rewardagg +algorithm.rewardagg.method=mean_variance "
    "+algorithm.rewardagg.lam=0.5": ("rewardagg", "mean_variance", {"lam": 0.5}),
}


def _variant(command: str) -> str:
    words = command.split()
    return " ".join(w for w in words if "=" in w and not w.startswith("--config"))


def test_issue26_every_documented_example_command_composes(monkeypatch):
    """Each command of the example's README (run.sh with its variants, the YAML file with
    and without a variant), run by bash with a stub python, composes with verl's Hydra
    config, passes verl's checks and ours, and configures the method it names."""
    from verl.trainer import main_ppo

    from rewardagg.integrations.verl.__main__ import main

    assert len(_EXAMPLE_COMMANDS) >= 6, _EXAMPLE_COMMANDS
    covered = set()
    for command in _EXAMPLE_COMMANDS:
        argv = shell_argv(command)
        assert argv[:2] == ["-m", "rewardagg.integrations.verl"], argv
        seen: dict = {}
        monkeypatch.setattr(main_ppo, "run_ppo", lambda config, _s=seen, **kw: _s.update(c=config))
        main(argv[2:])
        algorithm = seen["c"].algorithm
        settings = rv.RewardAggVerlSettings(algorithm, estimator=algorithm.adv_estimator)
        variant = _variant(command)
        estimator, method, params = _EXPECTED[variant]
        assert (algorithm.adv_estimator, settings.method) == (estimator, method), command
        assert settings.method_params == params, command
        assert settings.reward_keys == ["format", "correct", "concise"]
        covered.add(variant)
    assert covered == set(_EXPECTED)


def test_issue26_gdpo_without_std_scaling_through_verls_compute_advantage():
    """verl 0.9.1's compute_advantage does not pass norm_adv_by_std_in_grpo to its gdpo
    (it divides by the group std either way); rewardagg's estimator gets the flag and only
    centres, as verl's gdpo function does when it is given the flag. The docs state this
    with the figure of scripts/verl_gdpo_parity.py (1.9 over 50 batches)."""
    seed = 4
    cfg = algo(rewardagg={"method": "gdpo"}, norm_adv_by_std_in_grpo=False)
    kw = dict(norm_adv_by_std_in_grpo=False, config=cfg)
    verl_off = VERL_COMPUTE_ADVANTAGE(make_batch(seed), adv_estimator="gdpo", **kw)
    verl_on = VERL_COMPUTE_ADVANTAGE(
        make_batch(seed), adv_estimator="gdpo", config=algo(rewardagg={"method": "gdpo"})
    )
    # verl's own behaviour: the flag does not reach its gdpo
    torch.testing.assert_close(verl_off.batch["advantages"], verl_on.batch["advantages"])
    ours = ray_trainer.compute_advantage(make_batch(seed), adv_estimator="rewardagg", **kw)
    data = make_batch(seed)
    centred, _ = core_algos.compute_gdpo_outcome_advantage(
        token_level_rewards=data.batch["token_level_rewards"],
        response_mask=data.batch["response_mask"],
        index=data.non_tensor_batch["uid"],
        non_tensor_batch=data.non_tensor_batch,
        batch=data.batch,
        **kw,
    )
    torch.testing.assert_close(ours.batch["advantages"], centred, atol=1e-5, rtol=0)
    gap = (ours.batch["advantages"] - verl_off.batch["advantages"]).abs().max().item()
    assert gap > 0.1, gap  # the documented difference; if verl starts passing the flag, fix docs


# adaptive weights (issue 27): one controller in the driver, logged and checkpointed
# --------------------------------------------------------------------------------------

ADAPTIVE_CFG = {"method": "gdpo", "adaptive": {"patience": 1, "tau": 5.0}}


def test_issue27_adaptive_weights_over_calls_follow_the_rule_and_reach_the_advantages():
    from test_adaptive import LoopRule, as_rows

    rv.reset_constraint_trackers()
    cfg = algo(
        adv_estimator="rewardagg",
        rewardagg={**ADAPTIVE_CFG, "constraints": {"safe": 0.9}, "constraint_lr": 0.5},
    )
    loop, lam, moved = LoopRule(len(KEYS), tau=5.0, horizon=1), 0.0, 0.0
    for seed in (31, 32, 33):
        data = make_batch(seed, missing=True)
        data.batch["token_level_scores"] = data.batch["token_level_rewards"].clone()
        r = _rewards(data)
        w = loop.weights()
        moved = max(moved, *(abs(x - 1) for x in w))
        has_reward = torch.tensor(~np.isnan(r).all(1), dtype=torch.float32)  # others: 0
        mask = data.batch["response_mask"].float() * has_reward[:, None]
        s = rewardagg.advantages(
            r,
            method="gdpo",
            group_ids=data.non_tensor_batch["uid"],
            weights=np.array(WEIGHTS) * w,
            eps=1e-6,
            singleton="identity",
            batch_norm=False,
            multipliers={"safe": lam},
            reward_names=KEYS,
        )
        expected = masked_whiten(torch.tensor(s, dtype=torch.float32)[:, None] * mask, mask) * mask
        out = ray_trainer.compute_advantage(data, adv_estimator="rewardagg", config=cfg)
        torch.testing.assert_close(out.batch["advantages"], expected, atol=1e-5, rtol=0)
        loop.step(as_rows(r))
        lam = max(0.0, lam + 0.5 * (0.9 - float(np.nanmean(r[:, KEYS.index("safe")]))))
        controller = rv.run_controller(cfg)
        assert controller is rv.run_controller()  # one controller for the run
        assert rv.constraint_tracker(cfg) is controller.controllers[1]
        metrics = ray_trainer.compute_data_metrics(batch=out, use_critic=False)
        for key, weight, trusted in zip(KEYS, loop.weights(), loop.trusted(), strict=True):
            assert metrics[f"rewardagg/weight/{key}"] == pytest.approx(weight, rel=1e-12)
            assert metrics[f"rewardagg/trusted/{key}"] == float(trusted)
        assert metrics["rewardagg/lambda/safe"] == pytest.approx(lam, abs=1e-12)
    assert moved > 0.05  # the weights applied to a batch moved
    rv.reset_constraint_trackers()


def test_issue27_controller_goes_with_verls_checkpoints(tmp_path):
    rv.reset_constraint_trackers()
    cfg = algo(adv_estimator="rewardagg", rewardagg={**ADAPTIVE_CFG, "constraints": {"fmt": 0.95}})
    for seed in (1, 2):
        ray_trainer.compute_advantage(make_batch(seed), adv_estimator="rewardagg", config=cfg)
    saved = rv.run_controller(cfg).state_dict()
    assert saved["controllers"][0]["step"] == 2
    trainer = _stub_trainer(tmp_path, cfg, global_steps=1)
    trainer._save_checkpoint()  # verl's own save, wrapped
    folder = tmp_path / "ckpt" / "global_step_1"
    assert json.loads((folder / "rewardagg_controller.json").read_text()) == saved
    for mode in ("auto", "resume_path"):
        rv.reset_constraint_trackers()  # a new driver process
        resumed = _stub_trainer(tmp_path, cfg, global_steps=0, resume_mode=mode)
        resumed._load_checkpoint()  # verl's own load, wrapped
        assert rv.run_controller(cfg).state_dict() == saved
    rv.reset_constraint_trackers()
    fresh = _stub_trainer(tmp_path, cfg, global_steps=0, resume_mode="disable")
    fresh._load_checkpoint()
    assert rv.run_controller(cfg).controllers[0].step == 0
    rv.reset_constraint_trackers()


@pytest.mark.parametrize(
    ("adaptive", "match"),
    [
        ({"patience": -1}, r"algorithm.rewardagg.adaptive.patience must be an integer"),
        ({"beta": "2"}, r"algorithm.rewardagg.adaptive.beta must be in \[0, 1\]"),
        ({"tua": 1.0}, r"unknown algorithm.rewardagg.adaptive setting\(s\) \['tua'\]"),
        ({"enabled": False, "z": 2.0}, "set without algorithm.rewardagg.adaptive=true"),
        ("maybe", "algorithm.rewardagg.adaptive must be true or false"),
    ],
)
def test_issue27_adaptive_settings_fail_at_config_time(adaptive, match):
    with pytest.raises((TypeError, ValueError), match=match):
        rv.RewardAggVerlSettings(algo(rewardagg={"adaptive": adaptive}), estimator="rewardagg")


def test_issue27_adaptive_true_takes_the_defaults():
    settings = rv.RewardAggVerlSettings(algo(rewardagg={"adaptive": "true"}), estimator="rewardagg")
    default = rewardagg.AdaptiveWeights()  # the library's defaults, whatever they are
    assert (settings.adaptive.tau, settings.adaptive.patience) == (default.tau, default.patience)
    controller = settings.adaptive.controller(["a", "b"])
    assert controller.plateau_margin == default.plateau_margin


@pytest.mark.parametrize("off", [None, "none"])
def test_issue27_adaptive_plateau_margin_off_is_design_2d_exactly(off):
    adaptive = {"tau": 10, "plateau_margin": off}
    settings = rv.RewardAggVerlSettings(
        algo(rewardagg={"adaptive": adaptive}), estimator="rewardagg"
    )
    expected = rewardagg.AdaptiveWeights(reward_names=["a", "b"], tau=10.0, plateau_margin=None)
    assert settings.adaptive.controller(["a", "b"]).state_dict() == expected.state_dict()
    adaptive = {"plateau_margin": 0.3}
    settings = rv.RewardAggVerlSettings(
        algo(rewardagg={"adaptive": adaptive}), estimator="rewardagg"
    )
    assert settings.adaptive.controller(["a", "b"]).plateau_margin == 0.3


def test_issue27_adaptive_plateau_margin_checked_with_its_key():
    with pytest.raises(ValueError, match=r"algorithm.rewardagg.adaptive.plateau_margin must be a"):
        rv.RewardAggVerlSettings(
            algo(rewardagg={"adaptive": {"plateau_margin": -1}}), estimator="rewardagg"
        )


def test_rvpo_alias_as_the_method_through_the_launcher(monkeypatch):
    """``+algorithm.rewardagg.method=rvpo`` is RVPO's SoftMin, as in ``ra.advantages``."""
    from verl.trainer import main_ppo

    from rewardagg.integrations.verl.__main__ import main

    seen = {}
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, **kw: seen.update(config=config))
    main(
        [
            "algorithm.adv_estimator=rewardagg",
            "trainer.use_v1=False",
            "+algorithm.gdpo_reward_keys=[fmt,acc,safe]",
            "+algorithm.rewardagg.method=rvpo",
            "+algorithm.rewardagg.kappa=2.0",
            *_VALID,
        ]
    )
    settings = rv.RewardAggVerlSettings(seen["config"].algorithm, estimator="rewardagg")
    assert settings.method == "softmin" and settings.method_params == {"kappa": 2.0}
    assert rewardagg.get_aggregator("rvpo") is rewardagg.get_aggregator(settings.method)
