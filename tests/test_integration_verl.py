"""verl adapter against the real verl 0.9.1 code paths (``DataProto``, ``compute_advantage``,
``compute_gdpo_outcome_advantage``, ``masked_whiten``, Hydra ``main_ppo``, a Ray worker).

Skips when verl is not installed. verl's trainer modules import cleanly on a CPU machine
(no stubs are needed); only the v1 / TransferQueue trainer needs ``transfer_queue``, which
these tests do not import. Runtime: about 40 s on 2 CPU cores, most of it verl's import
(~5 s), two Hydra compositions and one local Ray worker (~20 s).
"""

from __future__ import annotations

import importlib.util
import json
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
    # installed, but reached by a caller that does not pass the components (the v1 path)
    with pytest.raises(RuntimeError, match="use_v1"):
        rv.compute_rvpo_advantage(
            token_level_rewards=data.batch["token_level_rewards"],
            response_mask=data.batch["response_mask"],
            index=data.non_tensor_batch["uid"],
            config=algo(adv_estimator="rvpo"),
        )
    # what the v1 trainer's DataProto holds: only uid
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


def test_launcher_refuses_the_v1_trainer_before_ray_starts():
    from rewardagg.integrations.verl.__main__ import main

    with pytest.raises(SystemExit, match="use_v1=False"):
        main(["algorithm.adv_estimator=rvpo", "trainer.use_v1=True", *_VALID])


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


@pytest.mark.slow
def test_ray_worker_process_setup_hook_installs_in_the_worker():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("Ray already initialised in this process")
    try:
        ray.init(
            num_cpus=1,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"worker_process_setup_hook": rv.SETUP_HOOK},
        )
    except Exception as err:  # pragma: no cover - environment without a usable Ray
        pytest.skip(f"cannot start a local Ray instance: {err}")
    try:

        @ray.remote
        def probe():
            import sys

            before = "verl.trainer.ppo.ray_trainer" in sys.modules
            import verl.trainer.ppo.ray_trainer  # noqa: F401

            import rewardagg.integrations.verl as mod

            return before, mod.is_installed()

        before, installed = ray.get(probe.remote(), timeout=120)
    finally:
        ray.shutdown()
    assert not before  # the hook itself did not import verl's trainer ...
    assert installed  # ... but installed as soon as the trainer was imported


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


def _positive(value, name):
    if not value > 0:  # also NaN
        raise ValueError(f"{name} must be > 0; got {value!r}")
    return float(value)


@pytest.fixture
def tempered():
    """A method registered for one test (SoftMin at temperature tau, kappa = 1 / tau),
    unregistered again so that registry-wide tests never see it."""

    def tempered_softmin(z, *, weights=None, tau=0.3):
        return rewardagg.softmin(z, kappa=1.0 / tau, weights=weights)

    rewardagg.register_aggregator(
        CUSTOM, tempered_softmin, params={"tau": 0.3}, checks={"tau": _positive}
    )
    try:
        yield CUSTOM
    finally:
        if CUSTOM in rewardagg.available_methods():
            rewardagg.unregister_aggregator(CUSTOM)


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
