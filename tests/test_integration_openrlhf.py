"""OpenRLHF adapter against the real OpenRLHF 0.11.2 code paths: per-sample ``Experience``
objects as the rollout makes them (reward_func ``extra_logs`` in ``experience.info``), merged
into micro-batches by the real ``RemoteExperienceMaker.split_rollout_samples`` (seq-length
balanced, so ``experience.index`` is shuffled), then the real
``compute_advantages_and_returns`` (``group_norm``) against ours.

Skips when openrlhf is not installed. OpenRLHF cannot be fully installed on a CPU machine
(it pins flash-attn, vllm and deepspeed): CI installs it with ``--no-deps`` plus what its
experience maker imports (deepspeed installs and imports on CPU). The GPU-only packages
``flash_attn`` and ``vllm`` are STUBBED here: a ``sys.meta_path`` finder serves empty
placeholder modules for them (and their submodules) only while OpenRLHF is imported and
while its launcher runs, then they are dropped from ``sys.modules`` again; any use of a
stubbed object raises. No OpenRLHF code is mocked.

Runtime: about 15 s on 2 CPU cores, most of it importing OpenRLHF (~6 s) and one
subprocess that checks the Ray setup hook.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("openrlhf")
from registry_cases import tempered_method  # noqa: E402

# --------------------------------------------------------------------------------------
# stubs for the GPU-only packages (flash_attn, vllm)
# --------------------------------------------------------------------------------------

STUBBED = ("flash_attn", "vllm")

STUB_SOURCE = '''
import importlib.abc, importlib.machinery, sys, types

class _StubModule(types.ModuleType):
    """Placeholder for a GPU-only package: attributes are classes that raise when used."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def _unavailable(self_, *args, **kwargs):
            raise RuntimeError(f"{self.__name__}.{name} is a CPU test stub")

        obj = type(name, (), {"__init__": _unavailable, "__module__": self.__name__})
        setattr(self, name, obj)
        return obj


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = frozenset(roots)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass
'''


def _present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


_namespace: dict = {}
exec(STUB_SOURCE, _namespace)  # the same source runs in the subprocess test below
_FINDER = _namespace["_StubFinder"]([n for n in STUBBED if not _present(n)])


@contextlib.contextmanager
def gpu_stubs():
    """Serve the stubs only inside this block, then drop them from ``sys.meta_path`` and
    ``sys.modules``, so that other test modules (TRL's vllm check, ...) never see them.
    OpenRLHF's modules keep the references they imported."""
    sys.meta_path.insert(0, _FINDER)
    try:
        yield
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path if f is not _FINDER]
        for name in list(sys.modules):
            if name.split(".")[0] in _FINDER.roots:
                del sys.modules[name]


with gpu_stubs():
    from openrlhf.trainer import ppo_trainer
    from openrlhf.trainer.ppo_utils.experience import Experience
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
    from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController

    import rewardagg
    import rewardagg.integrations.openrlhf as ro
    import rewardagg.integrations.openrlhf._adapter

OPENRLHF_METHOD = RemoteExperienceMaker.__dict__["compute_advantages_and_returns"]
SAMPLES_GENERATOR = sys.modules["openrlhf.trainer.ppo_utils.samples_generator"].SamplesGenerator
KEYS = ["format", "correct", "safe"]


def teardown_module(module):
    ro.uninstall()


@pytest.fixture(autouse=True)
def _installed():
    ro.install()
    yield
    ro.install()


# --------------------------------------------------------------------------------------
# fixtures: OpenRLHF args, per-sample experiences, the real experience maker
# --------------------------------------------------------------------------------------


def make_args(estimator: str, n: int, **rewardagg_settings):
    ns = SimpleNamespace
    args = ns(
        algo=ns(advantage=ns(estimator=estimator, gamma=1.0, lambd=1.0, no_std_norm=False)),
        rollout=ns(n_samples_per_prompt=n, micro_batch_size=3, max_tokens_per_gpu=64),
        reward=ns(clip_range=(-10.0, 10.0), overlong_buffer_len=None),
        train=ns(dynamic_batch_enable=True),
        actor=ns(num_nodes=1, num_gpus_per_node=2),
        ds=ns(ring_attn_size=1, tensor_parallel_size=1),
        data=ns(max_len=64),
    )
    if rewardagg_settings:
        args.rewardagg = ns(**{**ro.DEFAULTS, **rewardagg_settings})
    return args


def make_maker(args, kl_coef=0.05):
    return RemoteExperienceMaker(
        None,
        None,
        None,
        None,
        FixedKLController(kl_coef),
        SimpleNamespace(args=args),
        SimpleNamespace(pad_token_id=0),
    )


def make_samples(seed: int, prompts: int, n: int, missing: bool = False):
    """One Experience per completion, shaped as OpenRLHF's rollout builds them, rewards
    exactly representable in binary; ``reward`` = sum of the components."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(prompts * n):
        prompt_len, resp_len = int(rng.integers(2, 5)), int(rng.integers(1, 9))
        total = prompt_len + resp_len
        action_mask = torch.zeros(total - 1, dtype=torch.long)
        action_mask[prompt_len - 1 :] = 1
        comps = {
            "format": float(rng.choice([0.0, 0.5, 1.0])),
            "correct": float(rng.choice([0.0, 1.0])),
            "safe": float(rng.choice([0.0, 0.25, 1.0])),
        }
        if missing and rng.random() < 0.2:
            comps["safe"] = float("nan")  # the criterion does not apply
        reward = float(np.nansum(list(comps.values())))
        info = {"response_clip_ratio": torch.tensor([False]), "reward": torch.tensor([reward])}
        info.update({k: torch.tensor([v]) for k, v in comps.items()})
        samples.append(
            Experience(
                sequences=torch.randint(1, 100, (1, total)),
                attention_mask=torch.ones(1, total, dtype=torch.long),
                action_mask=action_mask.unsqueeze(0),
                prompts=["p"],
                labels=["l"],
                rewards=torch.tensor([reward]),
                scores=torch.tensor([reward]),
                response_length=torch.tensor([resp_len]),
                truncated=torch.tensor([False]),
                total_length=torch.tensor([total]),
                info=info,
            )
        )
    return samples


def make_experiences(maker, seed=0, prompts=4, n=4, missing=False):
    """Real micro-batching, then a KL tensor as make_experience would attach."""
    experiences = maker.split_rollout_samples(make_samples(seed, prompts, n, missing))
    rng = torch.Generator().manual_seed(seed)
    for exp in experiences:
        exp.kl = torch.rand(exp.action_mask.shape, generator=rng) * 0.1 * exp.action_mask
    return experiences


def prompt_order(experiences, key):
    idx = [i for e in experiences for i in e.index]
    vals = torch.cat([e.info[key].double() for e in experiences])
    out = torch.empty_like(vals)
    out[torch.tensor(idx)] = vals
    return out


# --------------------------------------------------------------------------------------
# parity: K = 1, method "grpo" == OpenRLHF's group_norm
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("reward_keys", [None, ["reward"]])
def test_grpo_k1_is_openrlhf_group_norm(seed, reward_keys):
    n = 4
    ref_maker = make_maker(make_args("group_norm", n))
    experiences = make_experiences(ref_maker, seed=seed, n=n)
    assert sorted(i for e in experiences for i in e.index) == list(range(16))
    assert [i for e in experiences for i in e.index] != list(range(16))  # shuffled
    ours_exps = copy.deepcopy(experiences)
    ref = OPENRLHF_METHOD(ref_maker, experiences)
    args = make_args("rewardagg", n, method="grpo", reward_keys=reward_keys)
    ours = make_maker(args).compute_advantages_and_returns(ours_exps)
    for r, o in zip(ref, ours, strict=True):
        torch.testing.assert_close(o.advantages, r.advantages, atol=1e-6, rtol=0)
        torch.testing.assert_close(o.returns, r.returns, atol=1e-6, rtol=0)
        torch.testing.assert_close(o.info["return"], r.info["return"], atol=1e-6, rtol=0)
        torch.testing.assert_close(o.info["group_reward_std"], r.info["group_reward_std"])
        assert o.kl is None and r.kl is None


def test_grpo_k1_parity_through_the_installed_method():
    """The wrapped method dispatches: group_norm unchanged, rewardagg ours."""
    n = 4
    experiences = make_experiences(make_maker(make_args("group_norm", n)), seed=7)
    ours_exps = copy.deepcopy(experiences)
    ref = make_maker(make_args("group_norm", n)).compute_advantages_and_returns(experiences)
    ours = make_maker(make_args("rvpo", n, method="softmin")).compute_advantages_and_returns(
        copy.deepcopy(ours_exps)
    )
    grpo = make_maker(make_args("rewardagg", n, method="grpo")).compute_advantages_and_returns(
        ours_exps
    )
    for r, g in zip(ref, grpo, strict=True):
        torch.testing.assert_close(g.advantages, r.advantages, atol=1e-6, rtol=0)
    assert any(
        not torch.allclose(o.advantages, r.advantages) for o, r in zip(ours, ref, strict=True)
    )


# --------------------------------------------------------------------------------------
# multi-reward estimators
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [False, True])
def test_rvpo_from_extra_logs_matches_rewardagg_on_prompt_ordered_tensor(missing):
    n, kappa = 4, 2.0
    args = make_args("rvpo", n, reward_keys=KEYS, kappa=kappa, weights=[1.0, 2.0, 1.0])
    maker = make_maker(args, kl_coef=0.0)
    experiences = make_experiences(maker, seed=3, n=n, missing=missing)
    # the (prompts, n_samples, K) tensor the estimator must build
    rewards = torch.stack([prompt_order(experiences, k) for k in KEYS], dim=1)
    expected = rewardagg.advantages(
        rewards.reshape(-1, n, 3).reshape(-1, 3),
        method="softmin",
        kappa=kappa,
        group_size=n,
        weights=[1.0, 2.0, 1.0],
        eps=1e-9,
    )
    out = maker.compute_advantages_and_returns(experiences)
    for exp in out:
        mask = exp.action_mask.bool()
        for j, i in enumerate(exp.index):
            want = float(expected[i].clamp(-10, 10))
            # kl_coef = 0: every action token's return is the final reward (gamma 1)
            torch.testing.assert_close(
                exp.advantages[j][mask[j]],
                torch.full((int(mask[j].sum()),), want),
                atol=1e-6,
                rtol=0,
            )
            last = int(mask[j].nonzero().max())
            assert (exp.advantages[j][last + 1 :] == 0).all()  # nothing after the response
        assert "rewardagg/bottleneck_share/safe" in exp.info
        assert exp.info["rewardagg/n_rows"].shape == (len(exp.index),)


def test_rvpo_penalises_a_failed_constraint_more_than_gdpo():
    n = 4
    samples = make_samples(0, 1, n)
    table = {"format": [1, 0, 0, 0], "correct": [1, 0, 0, 0], "safe": [0, 1, 1, 1]}
    for i, s in enumerate(samples):
        for k, v in table.items():
            s.info[k] = torch.tensor([float(v[i])])

    def first_token_adv(estimator, **settings):
        args = make_args(estimator, n, reward_keys=KEYS, no_batch_norm=True, **settings)
        maker = make_maker(args, kl_coef=0.0)
        exps = maker.split_rollout_samples(copy.deepcopy(samples))
        for e in exps:
            e.kl = torch.zeros(e.action_mask.shape)
        out = maker.compute_advantages_and_returns(exps)
        adv = {}
        for e in out:
            for j, i in enumerate(e.index):
                adv[i] = float(e.advantages[j][e.action_mask[j].bool()][0])
        return adv

    assert first_token_adv("rewardagg", method="gdpo")[0] > 0
    assert first_token_adv("rvpo", kappa=4.0)[0] < 0


def test_missing_info_key_raises_a_clear_error():
    args = make_args("rvpo", 4, reward_keys=["format", "helpfulness"])
    maker = make_maker(args)
    with pytest.raises(KeyError, match="extra_logs"):
        maker.compute_advantages_and_returns(make_experiences(maker))


@pytest.mark.parametrize(
    ("estimator", "settings", "match"),
    [
        ("rvpo", {"method": "gdpo"}, "rvpo"),
        ("rewardagg", {"method": "nope"}, "available"),
        ("rvpo", {"lam": 1.0}, "does not apply"),
        ("rvpo", {"reward_keys": KEYS, "weights": [1.0]}, "weights"),
    ],
)
def test_bad_settings(estimator, settings, match):
    with pytest.raises(ValueError, match=match):
        ro.settings_from_args(make_args(estimator, 4, **settings))


def test_install_is_idempotent_and_reversible():
    ro.install()
    ro.install()
    assert ro.is_installed()
    wrapped = RemoteExperienceMaker.__dict__["compute_advantages_and_returns"]
    assert wrapped.__wrapped__ is OPENRLHF_METHOD
    hooks = ("save_logs_and_checkpoints", "init_checkpoint_states")
    wrapped_hooks = [ppo_trainer.BasePPOTrainer.__dict__[h] for h in hooks]
    assert all(w.__rewardagg_wrapper__ for w in wrapped_hooks)
    process = SAMPLES_GENERATOR.__dict__["_process_response_into_experience"]
    assert process.__rewardagg_wrapper__
    ro.uninstall()
    assert RemoteExperienceMaker.__dict__["compute_advantages_and_returns"] is OPENRLHF_METHOD
    assert SAMPLES_GENERATOR.__dict__["_process_response_into_experience"] is process.__wrapped__
    assert not ro.is_installed()
    for hook, wrapped in zip(hooks, wrapped_hooks, strict=True):
        assert ppo_trainer.BasePPOTrainer.__dict__[hook] is wrapped.__wrapped__
    ro.install()
    assert ro.is_installed()


# --------------------------------------------------------------------------------------
# launcher and Ray hook
# --------------------------------------------------------------------------------------


class _StopAtRayInit(Exception):
    pass


def test_launcher_adds_flags_and_the_ray_setup_hook(monkeypatch):
    ray = pytest.importorskip("ray")
    import rewardagg.integrations.openrlhf.__main__ as launcher

    seen = {}

    def fake_init(*args, **kwargs):
        seen.update(kwargs)
        raise _StopAtRayInit

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    argv = [
        "--algo.advantage.estimator",
        "rvpo",
        "--rollout.n_samples_per_prompt",
        "4",
        "--rewardagg.reward_keys",
        *KEYS,
        "--rewardagg.kappa",
        "2.0",
        "--actor.model_name_or_path",
        "Qwen/Qwen2.5-0.5B-Instruct",
    ]
    with gpu_stubs(), pytest.raises(_StopAtRayInit):
        launcher.main(argv)
    assert seen["runtime_env"]["worker_process_setup_hook"] == ro.SETUP_HOOK
    assert "env_vars" in seen["runtime_env"]  # OpenRLHF's own runtime env is kept
    flat = vars(launcher.last_args)
    assert flat["algo.advantage.estimator"] == "rvpo"
    assert flat["rewardagg.reward_keys"] == KEYS and flat["rewardagg.kappa"] == 2.0
    assert ray.init is fake_init  # the launcher restored what it wrapped


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--rollout.n_samples_per_prompt", "1"], "n_samples_per_prompt"),
        (["--rollout.n_samples_per_prompt", "4", "--rewardagg.method", "gdpo"], "rvpo"),
    ],
)
def test_launcher_refuses_bad_settings_before_ray(extra, match):
    import rewardagg.integrations.openrlhf.__main__ as launcher

    with gpu_stubs(), pytest.raises(SystemExit, match=match):
        launcher.main(["--algo.advantage.estimator", "rvpo", *extra])


def test_setup_hook_installs_after_the_trainer_imports_the_experience_maker():
    code = STUB_SOURCE + textwrap.dedent(
        """
        sys.meta_path.insert(0, _StubFinder(["flash_attn", "vllm"]))
        import rewardagg.integrations.openrlhf as ro
        ro.setup_hook()
        assert "openrlhf.trainer.ppo_utils.experience_maker" not in sys.modules
        assert "torch" not in sys.modules
        # as in the PPOTrainer actor: the trainer module imports the experience maker
        from openrlhf.trainer.ppo_trainer import BasePPOTrainer
        assert ro.is_installed()
        for name in ("save_logs_and_checkpoints", "init_checkpoint_states"):
            assert BasePPOTrainer.__dict__[name].__rewardagg_wrapper__, name
        from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
        assert SamplesGenerator._process_response_into_experience.__rewardagg_wrapper__
        print("OK")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-2000:]


# --------------------------------------------------------------------------------------
# the example (examples/openrlhf_qwen2.5_gsm8k_rvpo)
# --------------------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "openrlhf_qwen2.5_gsm8k_rvpo"


def _example_args() -> list[str]:
    words: list[str] = []
    for line in (EXAMPLE / "args.txt").read_text().splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            words += parts
    return words


def test_example_args_pass_openrlhf_validation(monkeypatch):
    """The example's flags parse with OpenRLHF 0.11.2's own parser (plus ours) and pass its
    checks, up to ray.init."""
    ray = pytest.importorskip("ray")
    import rewardagg.integrations.openrlhf.__main__ as launcher

    seen = {}

    def fake_init(*args, **kwargs):
        seen.update(kwargs)
        raise _StopAtRayInit

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with gpu_stubs(), pytest.raises(_StopAtRayInit):
        launcher.main(_example_args())
    flat = vars(launcher.last_args)
    assert flat["algo.advantage.estimator"] == "rvpo"
    assert flat["rewardagg.reward_keys"] == ["format", "correct", "concise"]
    assert seen["runtime_env"]["worker_process_setup_hook"] == ro.SETUP_HOOK


def test_example_reward_func_extra_logs_feed_the_estimator():
    """reward_func output -> Experience.info as OpenRLHF's rollout stores extra_logs -> rvpo."""
    spec = importlib.util.spec_from_file_location("reward_func_example", EXAMPLE / "reward_func.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    prompt = "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    responses = ["2 + 3 = 5\n#### 5", "It is 5.", "word " * 250 + "\n#### 5", "#### 6"] * 2
    samples = make_samples(0, 2, 4)
    for sample, response in zip(samples, responses, strict=True):
        out = module.reward_func([prompt + response + "<|im_end|>"], [prompt], ["5"])
        sample.rewards = out["rewards"]
        sample.info["reward"] = out["rewards"]
        for key, value in out["extra_logs"].items():  # as _process_response_into_experience
            sample.info[key] = torch.tensor([value.flatten()[0].item()])
    args = make_args("rvpo", 4, reward_keys=list(module.KEYS))
    maker = make_maker(args, kl_coef=0.0)
    experiences = maker.split_rollout_samples(samples)
    for e in experiences:
        e.kl = torch.zeros(e.action_mask.shape)
    first = {}
    for e in maker.compute_advantages_and_returns(experiences):
        for j, i in enumerate(e.index):
            first[i] = float(e.advantages[j][e.action_mask[j].bool()][0])
    assert max(first, key=first.get) in (0, 4)  # a completion meeting all three rewards


@pytest.mark.parametrize("method", rewardagg.available_methods())
@pytest.mark.parametrize("no_batch_norm", [False, True])
def test_every_method_runs(method, no_batch_norm):
    args = make_args("rewardagg", 4, method=method, reward_keys=KEYS, no_batch_norm=no_batch_norm)
    maker = make_maker(args)
    out = maker.compute_advantages_and_returns(make_experiences(maker, seed=2, missing=True))
    for exp in out:
        assert torch.isfinite(exp.advantages).all()
        assert exp.advantages.shape == exp.action_mask.shape


# --------------------------------------------------------------------------------------
# a method registered at run time, with its own parameter (issue 11)
# --------------------------------------------------------------------------------------

CUSTOM = "test_openrlhf_tempered"


@pytest.fixture
def tempered():
    """A method registered for one test (tests/registry_cases.py)."""
    with tempered_method(CUSTOM) as name:
        yield name


def _first_token_advantages(out):
    adv = {}
    for e in out:
        for j, i in enumerate(e.index):
            adv[i] = float(e.advantages[j][e.action_mask[j].bool()][0])
    return torch.tensor([adv[i] for i in range(len(adv))], dtype=torch.float64)


@pytest.mark.parametrize("tau", [0.5, "0.5"])  # a string, as an unknown flag arrives
def test_registered_method_parameter_through_args_rewardagg(tempered, tau):
    n = 4
    args = make_args("rewardagg", n, method=tempered, tau=tau, reward_keys=KEYS)
    maker = make_maker(args, kl_coef=0.0)
    experiences = make_experiences(maker, seed=5, n=n, missing=True)
    rewards = torch.stack([prompt_order(experiences, k) for k in KEYS], dim=1)
    core = dict(method=tempered, group_size=n, eps=1e-9)
    expected = rewardagg.advantages(rewards, tau=0.5, **core).clamp(-10, 10)
    got = _first_token_advantages(maker.compute_advantages_and_returns(experiences))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    default = rewardagg.advantages(rewards, **core).clamp(-10, 10)
    assert (got - default).abs().max() > 1e-3  # the parameter reached the reducer


def test_launcher_has_a_flag_per_table_parameter(tempered):
    import argparse

    import rewardagg.integrations.openrlhf.__main__ as launcher

    parser = argparse.ArgumentParser()
    parser.add_argument("--algo.advantage.estimator", choices=["group_norm"])
    launcher.add_arguments(parser)
    launcher.add_arguments(parser)  # idempotent
    flags = {a.dest: a for a in parser._actions if a.dest.startswith("rewardagg.")}
    for method in rewardagg.available_methods():
        for spec in rewardagg.get_aggregator(method).specs:
            action = flags[f"rewardagg.{spec.name}"]
            assert method in action.help and (spec.help or spec.name) in action.help
            assert action.default is None  # the method's default applies
    assert parser._actions[1].choices == ["group_norm", *ro.ESTIMATORS]
    flat = parser.parse_args(["--rewardagg.method", tempered, "--rewardagg.tau", "0.5"])
    assert vars(flat)["rewardagg.tau"] == 0.5


def _launch_until_ray(monkeypatch, extra):
    ray = pytest.importorskip("ray")
    import rewardagg.integrations.openrlhf.__main__ as launcher

    def fake_init(*args, **kwargs):
        raise _StopAtRayInit

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    argv = [
        "--algo.advantage.estimator",
        "rewardagg",
        "--rollout.n_samples_per_prompt",
        "4",
        "--actor.model_name_or_path",
        "Qwen/Qwen2.5-0.5B-Instruct",
        *extra,
    ]
    with gpu_stubs():
        launcher.main(argv)
    return vars(launcher.last_args)


def test_launcher_takes_a_registered_methods_flag(tempered, monkeypatch):
    with pytest.raises(_StopAtRayInit):
        _launch_until_ray(monkeypatch, ["--rewardagg.method", tempered, "--rewardagg.tau", "0.5"])
    import rewardagg.integrations.openrlhf.__main__ as launcher

    flat = vars(launcher.last_args)
    assert flat["rewardagg.method"] == tempered and flat["rewardagg.tau"] == 0.5


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--rewardagg.tau", "0"], r"--rewardagg\.tau=0\.0: tau must be > 0"),
        (["--rewardagg.tau=nan"], r"--rewardagg\.tau=nan: tau must be > 0"),
        (["--rewardagg.kappa", "1"], rf"--rewardagg\.kappa does not apply to method '{CUSTOM}'"),
        (["--rewardagg.tua", "1"], r"unknown --rewardagg setting\(s\) \['tua'\]; known: .*'tau'"),
    ],
)
def test_launcher_refuses_bad_registered_settings_before_ray(tempered, monkeypatch, extra, match):
    with pytest.raises(SystemExit, match=match):
        _launch_until_ray(monkeypatch, ["--rewardagg.method", tempered, *extra])


def test_launcher_refuses_other_unknown_arguments(monkeypatch):
    with pytest.raises(SystemExit) as err:
        _launch_until_ray(monkeypatch, ["--no.such.flag", "1"])
    assert err.value.code == 2  # argparse's own "unrecognized arguments" exit


def test_take_prefixed_splits_rewardagg_leftovers():
    import rewardagg.integrations.openrlhf.__main__ as launcher

    pairs, rest = launcher.take_prefixed(
        ["--rewardagg.tau", "-0.5", "--x", "1", "--rewardagg.mode=hard"]
    )
    assert pairs == {"tau": "-0.5", "mode": "hard"} and rest == ["--x", "1"]
    with pytest.raises(ValueError, match="expects a value"):
        launcher.take_prefixed(["--rewardagg.tau"])


def test_unregistered_method_and_its_parameter_are_rejected(tempered):
    settings = {"method": tempered, "tau": 0.5, "reward_keys": KEYS}
    ro.settings_from_args(make_args("rewardagg", 4, **settings))  # accepted while registered
    rewardagg.unregister_aggregator(tempered)
    with pytest.raises(ValueError, match=rf"method='{tempered}' is not a registered rewardagg"):
        ro.settings_from_args(make_args("rewardagg", 4, **settings))
    with pytest.raises(ValueError, match=r"unknown --rewardagg setting\(s\) \['tau'\]"):
        ro.settings_from_args(make_args("rewardagg", 4, tau=0.5))


def test_defaults_list_only_the_adapters_own_options():
    params = {n for m in rewardagg.available_methods() for n in rewardagg.get_aggregator(m).params}
    assert not params & set(ro.DEFAULTS)


# --------------------------------------------------------------------------------------
# order, centring, GD2PO's conflict filter, constraints (issues 12 and 19)
# --------------------------------------------------------------------------------------

TARGET, LR = 0.9, 0.5  # safe is met by about a third of the samples


def _token_advantages(exp, j):
    return exp.advantages[j][exp.action_mask[j].bool()]


def test_gd2po_and_a_constraint_on_real_experiences_equal_the_core_call():
    n = 4
    args = make_args(
        "rewardagg",
        n,
        reward_keys=KEYS,
        method="gd2po_snr",
        conflict_threshold="0.5",  # strings, as --rewardagg.* flags may arrive
        reweight_groups="true",
        center="group",
        constraints=["safe=0.9"],
        constraint_lr=LR,
    )
    maker = make_maker(args, kl_coef=0.0)
    lam, dropped = 0.0, 0
    for step, seed in enumerate([11, 12], start=1):
        experiences = make_experiences(maker, seed=seed, n=n, missing=True)
        rewards = torch.stack([prompt_order(experiences, k) for k in KEYS], dim=1)
        expected, info = rewardagg.advantages(
            rewards,
            method="gd2po_snr",
            conflict_threshold=0.5,
            center="group",
            multipliers={"safe": lam},
            reward_names=KEYS,
            group_size=n,
            eps=1e-9,
            return_info=True,
        )
        out = maker.compute_advantages_and_returns(experiences)
        safe = rewards[:, KEYS.index("safe")]
        mean = float(safe[~safe.isnan()].mean())
        assert mean < TARGET
        lam = max(0.0, lam + LR * (TARGET - mean))  # the update rule, written out
        for exp in out:
            for j, i in enumerate(exp.index):
                want = float(expected[i].clamp(-10, 10))
                got = _token_advantages(exp, j)  # kl 0, gamma 1: the reward on every token
                torch.testing.assert_close(got, torch.full_like(got, want), atol=1e-6, rtol=0)
            assert exp.info["rewardagg/lambda/safe"][0] == pytest.approx(lam, abs=1e-6)
            assert exp.info["rewardagg/constraint_mean/safe"][0] == pytest.approx(mean, abs=1e-6)
            assert exp.info["rewardagg/conflict_dropped"][0] == info.conflict_dropped
        assert ro.constraint_tracker(maker).multipliers == {"safe": pytest.approx(lam)}
        assert ro.constraint_tracker(maker).step == step
        dropped += info.conflict_dropped
    assert dropped > 0, "the batches must exercise the filter"


def test_shared_flags_are_parsed_and_passed(monkeypatch):
    ray = pytest.importorskip("ray")
    from openrlhf.utils.config import hierarchize

    import rewardagg.integrations.openrlhf.__main__ as launcher

    monkeypatch.setattr(ray, "init", lambda *a, **k: (_ for _ in ()).throw(_StopAtRayInit()))
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    argv = [
        "--algo.advantage.estimator",
        "rewardagg",
        "--rollout.n_samples_per_prompt",
        "4",
        "--rewardagg.reward_keys",
        *KEYS,
        "--rewardagg.method",
        "softmin",
        "--rewardagg.center",
        "group",
        "--rewardagg.conflict",
        "snr",
        "--rewardagg.conflict_threshold",
        "0.3",
        "--rewardagg.reweight_groups",
        "false",
        "--rewardagg.constraints",
        "safe=0.9,format=0.5",
        "--rewardagg.constraints",
        "1=0.25",
        "--rewardagg.constraint_lr",
        "0.2",
        "--rewardagg.constraint_kp",
        "0.1",
        "--actor.model_name_or_path",
        "Qwen/Qwen2.5-0.5B-Instruct",
    ]
    with gpu_stubs(), pytest.raises(_StopAtRayInit):
        launcher.main(argv)
    flat = vars(launcher.last_args)
    assert flat["rewardagg.constraints"] == ["safe=0.9,format=0.5", "1=0.25"]
    s = ro.settings_from_args(hierarchize(copy.copy(launcher.last_args)))
    assert s.pipeline.kwargs() == dict(
        order=None, center="group", conflict="snr", conflict_threshold=0.3, reweight_groups=False
    )
    assert s.constraints.resolve(s.reward_names) == {"safe": 0.9, "format": 0.5, "correct": 0.25}
    assert (s.constraints.lr, s.constraints.kp) == (0.2, 0.1)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--rewardagg.conflict_threshold", "0.5"], "applies to a conflict filter"),
        (["--rewardagg.constraints", "helpful=0.9"], "unknown reward 'helpful'"),
        (["--rewardagg.constraints", "safe=high"], r"--rewardagg\.constraints\['safe'\]"),
        (["--rewardagg.constraints", "safe"], "KEY=TARGET"),
        (["--rewardagg.constraint_lr", "0.1"], "constraint_lr set without"),
        (["--rewardagg.reweight_groups", "maybe"], "reweight_groups must be true or false"),
        (
            ["--rewardagg.method", "gd2po", "--rewardagg.order", "reduce_then_normalize"],
            r"--rewardagg\.order='reduce_then_normalize'",
        ),
        (
            ["--rewardagg.method", "grpo", "--rewardagg.conflict", "hard"],
            r"--rewardagg\.conflict: .*per-reward",
        ),
    ],
)
def test_launcher_refuses_bad_shared_flags_before_ray(extra, match):
    import rewardagg.integrations.openrlhf.__main__ as launcher

    base = ["--algo.advantage.estimator", "rewardagg", "--rollout.n_samples_per_prompt", "4"]
    base += ["--rewardagg.reward_keys", *KEYS]
    with gpu_stubs(), pytest.raises(SystemExit, match=match):
        launcher.main([*base, *extra])


def test_constraint_tracker_goes_with_openrlhfs_checkpoint_states(monkeypatch, tmp_path):
    """OpenRLHF's own BasePPOTrainer.save_logs_and_checkpoints / init_checkpoint_states,
    wrapped, on a trainer whose Ray actor groups are stubbed."""
    monkeypatch.setattr(ppo_trainer.ray, "get", lambda refs: refs)
    n = 4
    args = make_args("rewardagg", n, reward_keys=KEYS, method="gdpo", constraints={"safe": TARGET})
    args.rewardagg.constraint_lr = LR
    args.logger = SimpleNamespace(logging_steps=1)
    args.ckpt = SimpleNamespace(save_steps=1, load_enable=True, path=str(tmp_path))
    saved = {}

    def save(method_name, **kwargs):
        saved.update(kwargs["client_states"])
        return []

    def trainer(maker, run):
        return SimpleNamespace(
            args=args,
            experience_maker=maker,
            wandb_logger=None,
            tensorboard_logger=None,
            best_eval_metric_key="",
            best_eval_metric_value=float("-inf"),
            _latest_eval_metric_value=None,
            critic_model_group=None,
            actor_model_group=SimpleNamespace(async_run_method=run),
        )

    maker = make_maker(args, kl_coef=0.0)
    maker.compute_advantages_and_returns(make_experiences(maker, seed=1, n=n))
    state = ro.constraint_tracker(maker).state_dict()
    assert state["multipliers"][0] > 0
    ppo_trainer.BasePPOTrainer.save_logs_and_checkpoints(
        trainer(maker, save), 1, {}, {"global_step": 1}
    )
    assert saved["global_step"] == 1 and saved[ro.CHECKPOINT_KEY] == state

    (tmp_path / "_actor").mkdir()
    fresh = make_maker(args, kl_coef=0.0)  # a new run, resumed
    resumed = trainer(fresh, lambda method_name, **kwargs: [dict(saved)])
    assert ppo_trainer.BasePPOTrainer.init_checkpoint_states(resumed)["global_step"] == 1
    experiences = make_experiences(fresh, seed=2, n=n)
    safe = prompt_order(experiences, "safe")
    fresh.compute_advantages_and_returns(experiences)
    lam = max(0.0, state["multipliers"][0] + LR * (TARGET - float(safe.mean())))
    assert ro.constraint_tracker(fresh).multipliers == {"safe": pytest.approx(lam, abs=1e-12)}
    assert ro.constraint_tracker(fresh).step == 2


# --------------------------------------------------------------------------------------
# issue 15: None components, NaN in logged metrics, OpenRLHF's own post-processing,
# value checks before Ray, --help, the version check
# --------------------------------------------------------------------------------------


def rollout_responses(seed: int, prompts: int, n: int):
    """What OpenRLHF's SingleTurnAgentExecutor returns per completion, a reward_func's
    extra_logs included: ``safe`` is ``None`` (does not apply) for some completions."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(prompts * n):
        prompt_len, resp_len = int(rng.integers(2, 5)), int(rng.integers(1, 9))
        comps = {
            "format": float(rng.choice([0.0, 0.5, 1.0])),
            "correct": float(rng.choice([0.0, 1.0])),
            "safe": None if rng.random() < 0.3 else float(rng.choice([0.0, 0.25, 1.0])),
        }
        reward = sum(v for v in comps.values() if v is not None)
        out.append(
            {
                "prompt": "p",
                "label": "l",
                "images": None,
                "mm_train_inputs": None,
                "observation_tokens": rng.integers(1, 100, prompt_len + resp_len).tolist(),
                "action_ranges": [(prompt_len, prompt_len + resp_len)],
                "rollout_log_probs": None,
                "truncated": False,
                "reward": reward,
                "scores": reward,
                "extra_logs": comps,
            }
        )
    return out


def test_a_none_component_is_a_missing_reward_not_a_crash():
    """OpenRLHF's own SamplesGenerator turns extra_logs into tensors and fails on None; for
    our estimators' reward keys a None becomes NaN (missing), aggregated as the core does."""
    n = 4
    args = make_args("rvpo", n, reward_keys=KEYS, kappa=2.0)
    generator = SimpleNamespace(args=args)
    responses = rollout_responses(5, 4, n)
    assert any(r["extra_logs"]["safe"] is None for r in responses)
    host = SAMPLES_GENERATOR.__dict__["_process_response_into_experience"].__wrapped__
    with pytest.raises(RuntimeError, match="Could not infer dtype of NoneType"):  # OpenRLHF alone
        host(generator, responses[[r["extra_logs"]["safe"] for r in responses].index(None)])
    process = SAMPLES_GENERATOR._process_response_into_experience
    samples = [process(generator, r, max_len=64) for r in responses]
    safe = torch.cat([s.info["safe"] for s in samples])
    assert safe.isnan().sum() == sum(r["extra_logs"]["safe"] is None for r in responses)

    maker = make_maker(args, kl_coef=0.0)
    experiences = maker.split_rollout_samples(samples)
    for exp in experiences:
        exp.kl = torch.zeros(exp.action_mask.shape)
    rewards = torch.stack([prompt_order(experiences, k) for k in KEYS], dim=1)
    expected = rewardagg.advantages(rewards, method="softmin", kappa=2.0, group_size=n, eps=1e-9)
    out = maker.compute_advantages_and_returns(experiences)
    for exp in out:
        for j, i in enumerate(exp.index):
            first = exp.advantages[j][exp.action_mask[j].bool()][0]
            assert float(first) == pytest.approx(float(expected[i]), abs=1e-6)
    # another estimator keeps OpenRLHF's behaviour
    other = SimpleNamespace(args=make_args("group_norm", n))
    with pytest.raises(RuntimeError, match="Could not infer dtype of NoneType"):
        process(other, responses[[r["extra_logs"]["safe"] for r in responses].index(None)])


def test_a_nan_component_does_not_make_the_logged_metric_nan():
    """OpenRLHF logs each info entry as its sample-weighted mean over the step: after our
    estimator that mean is the mean over the present values, not NaN."""
    n = 4
    maker = make_maker(make_args("rvpo", n, reward_keys=KEYS), kl_coef=0.0)
    experiences = make_experiences(maker, seed=3, n=n, missing=True)
    safe = prompt_order(experiences, "safe")
    assert safe.isnan().any()
    out = maker.compute_advantages_and_returns(experiences)
    logged = torch.cat([exp.info["safe"].double() for exp in out])
    assert not logged.isnan().any()
    assert float(logged.mean()) == pytest.approx(float(safe[~safe.isnan()].mean()), abs=1e-6)
    for exp in out:  # nor does any rewardagg/ metric
        for key, value in exp.info.items():
            assert not torch.as_tensor(value).double().isnan().any(), key


def test_length_penalties_apply_once_as_in_openrlhfs_group_norm():
    """K = 1, method grpo, with OpenRLHF's overlong penalty: our path (penalties, then the
    core, then OpenRLHF's own method on the advantages) equals its group_norm."""
    n = 4

    def args_for(estimator, **settings):
        args = make_args(estimator, n, **settings)
        args.reward.overlong_buffer_len, args.reward.overlong_penalty_factor = 4, 1.0
        args.rollout.max_new_tokens = 8
        return args

    ref_maker = make_maker(args_for("group_norm"))
    experiences = make_experiences(ref_maker, seed=9, n=n)
    ours_exps = copy.deepcopy(experiences)
    before = [e.rewards.clone() for e in experiences]
    ref = OPENRLHF_METHOD(ref_maker, experiences)
    ours_maker = make_maker(args_for("rewardagg", method="grpo"))
    ours = ours_maker.compute_advantages_and_returns(ours_exps)
    for r, o in zip(ref, ours, strict=True):
        torch.testing.assert_close(o.advantages, r.advantages, atol=1e-6, rtol=0)
        torch.testing.assert_close(o.rewards, r.rewards)  # penalised once
        torch.testing.assert_close(o.info["reward"], r.info["reward"])
        torch.testing.assert_close(o.info["group_reward_std"], r.info["group_reward_std"])
        torch.testing.assert_close(o.info["return"], r.info["return"], atol=1e-6, rtol=0)
    assert any(not torch.equal(b, r.rewards) for b, r in zip(before, ref, strict=True))


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"eps": -1e-9}, r"--rewardagg\.eps must be >= 0"),
        ({"eps": float("nan")}, r"--rewardagg\.eps must be a finite number"),
        ({"weights": [1.0, -1.0, 1.0]}, r"--rewardagg\.weights: .*non-negative"),
        ({"weights": [0.0, 0.0, 0.0]}, r"--rewardagg\.weights: .*all zero"),
        ({"weights": [1.0, float("inf"), 1.0]}, r"--rewardagg\.weights\[1\]"),
        ({"kappa": -1.0}, r"--rewardagg\.kappa=-1\.0: kappa must be a non-negative"),
    ],
)
def test_bad_values_are_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        ro.settings_from_args(make_args("rvpo", 4, reward_keys=KEYS, **settings))


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--rewardagg.eps", "-1"], r"--rewardagg\.eps must be >= 0"),
        (["--rewardagg.weights", "1", "-1", "1"], r"--rewardagg\.weights: .*non-negative"),
        (["--rewardagg.weights", "0", "0", "0"], r"--rewardagg\.weights: .*all zero"),
        (["--rewardagg.kappa", "-2"], r"--rewardagg\.kappa=-2\.0"),
    ],
)
def test_launcher_refuses_bad_values_before_ray(extra, match):
    import rewardagg.integrations.openrlhf.__main__ as launcher

    base = ["--algo.advantage.estimator", "rvpo", "--rollout.n_samples_per_prompt", "4"]
    base += ["--rewardagg.reward_keys", *KEYS]
    with gpu_stubs(), pytest.raises(SystemExit, match=match):
        launcher.main([*base, *extra])


def test_launcher_help_lists_rewardagg_settings(capsys, tempered):
    import rewardagg.integrations.openrlhf.__main__ as launcher

    with gpu_stubs(), pytest.raises(SystemExit):
        launcher.main(["--help"])
    out = capsys.readouterr().out
    assert "rewardagg (estimators rvpo / rewardagg)" in out
    for flag in ("--rewardagg.reward_keys", "--rewardagg.kappa", "--rewardagg.constraints"):
        assert flag in out, flag
    assert "--rewardagg.tau" in out  # a method registered now
    assert "rvpo (RVPO SoftMin)" in out


@pytest.mark.parametrize(
    ("found", "ok"),
    [("0.11.2", True), ("0.11.9", True), ("0.12.0", False), ("0.10.5", False), ("garbage", False)],
)
def test_untested_openrlhf_versions_warn(found, ok):
    from rewardagg.integrations.openrlhf._adapter import check_openrlhf_version

    if ok:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert check_openrlhf_version(found)
    else:
        with pytest.warns(UserWarning, match=r"tested on openrlhf>=0\.11,<0\.12"):
            assert not check_openrlhf_version(found)


# --------------------------------------------------------------------------------------
# issue 26: every documented command of the example, as the shell runs it
# --------------------------------------------------------------------------------------

from example_commands import documented_commands, shell_argv  # noqa: E402
from rewardagg.integrations.openrlhf._argv import drop_flags  # noqa: E402

# each documented command: (estimator, method, method parameters, colocated)
_EXPECTED_COMMANDS = {
    "": ("rvpo", "softmin", {}, True),
    "--rewardagg.kappa 2.0": ("rvpo", "softmin", {"kappa": 2.0}, True),
    "--algo.advantage.estimator rewardagg --rewardagg.method mean_variance --rewardagg.lam 0.5": (
        "rewardagg",
        "mean_variance",
        {"lam": 0.5},
        True,
    ),
    "--rewardagg.drop --train.colocate_all": ("rvpo", "softmin", {}, False),
}


def test_issue26_every_documented_example_command_parses(monkeypatch):
    """Each command of the example's README, run by bash with a stub python, parses with
    OpenRLHF's own parser plus ours and passes the checks up to ray.init, configuring the
    method it names (kappa is not in args.txt, so another method's parameters apply)."""
    ray = pytest.importorskip("ray")
    from openrlhf.utils.config import hierarchize

    import rewardagg.integrations.openrlhf.__main__ as launcher
    from rewardagg.integrations.openrlhf._adapter import settings_from_args

    def fake_init(*args, **kwargs):
        raise _StopAtRayInit

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    commands = documented_commands(EXAMPLE / "README.md")
    covered = set()
    for command in commands:
        argv = shell_argv(command)
        assert argv[:2] == ["-m", "rewardagg.integrations.openrlhf"], argv
        variant = " ".join(command.split("run.sh", 1)[1].split())
        estimator, method, params, colocated = _EXPECTED_COMMANDS[variant]
        with gpu_stubs(), pytest.raises(_StopAtRayInit):
            launcher.main(argv[2:])
        flat = vars(launcher.last_args)
        settings = settings_from_args(hierarchize(SimpleNamespace(**flat)))
        assert flat["algo.advantage.estimator"] == estimator, command
        assert (settings.method, settings.method_params) == (method, params), command
        assert flat["train.colocate_all"] is colocated, command
        covered.add(variant)
    assert covered == set(_EXPECTED_COMMANDS)


def test_issue26_drop_flags():
    argv = ["--a", "1", "--b", "--c", "x", "y", "--a=3", "--rewardagg.drop", "--a", "--d"]
    assert drop_flags(argv) == ["--b", "--c", "x", "y", "--d"]
    # a flag given again after the drop is kept; = spelling of the drop itself
    assert drop_flags(["--b", "--rewardagg.drop=--b", "--b"]) == ["--b"]
    assert drop_flags(["--x", "-1", "--rewardagg.drop", "--x"]) == []
    with pytest.raises(ValueError, match="expects a flag"):
        drop_flags(["--rewardagg.drop"])
    with pytest.raises(ValueError, match="starting with '--'"):
        drop_flags(["--rewardagg.drop=kappa"])


def test_issue26_launcher_refuses_a_drop_without_flag():
    import rewardagg.integrations.openrlhf.__main__ as launcher

    with pytest.raises(SystemExit, match=r"rewardagg: --rewardagg\.drop expects a flag"):
        launcher.main(["--rewardagg.drop"])


# adaptive weights (issue 27): one controller on the experience maker, checkpointed
# --------------------------------------------------------------------------------------

ADAPTIVE_FLAGS = dict(adaptive="true", adaptive_patience="1", adaptive_tau="5")


def test_issue27_adaptive_weights_and_a_constraint_follow_their_rules():
    from test_adaptive import LoopRule, as_rows

    n = 4
    args = make_args(
        "rewardagg",
        n,
        reward_keys=KEYS,
        method="gdpo",
        weights=[1.0, 2.0, 0.5],
        constraints=["safe=0.9"],
        constraint_lr=LR,
        **ADAPTIVE_FLAGS,  # strings, as --rewardagg.* flags arrive
    )
    maker = make_maker(args, kl_coef=0.0)
    loop, lam, moved = LoopRule(len(KEYS), tau=5.0, horizon=1), 0.0, 0.0
    for step, seed in enumerate([11, 12, 13], start=1):
        experiences = make_experiences(maker, seed=seed, n=n, missing=True)
        rewards = torch.stack([prompt_order(experiences, k) for k in KEYS], dim=1)
        w = loop.weights()
        moved = max(moved, *(abs(x - 1) for x in w))
        expected = rewardagg.advantages(
            rewards,
            method="gdpo",
            weights=np.array([1.0, 2.0, 0.5]) * w,
            multipliers={"safe": lam},
            reward_names=KEYS,
            group_size=n,
            eps=1e-9,
        )
        out = maker.compute_advantages_and_returns(experiences)
        loop.step(as_rows(rewards.numpy()))
        safe = rewards[:, KEYS.index("safe")]
        lam = max(0.0, lam + LR * (TARGET - float(safe[~safe.isnan()].mean())))
        for exp in out:
            for j, i in enumerate(exp.index):
                want = float(expected[i].clamp(-10, 10))
                got = _token_advantages(exp, j)
                torch.testing.assert_close(got, torch.full_like(got, want), atol=1e-6, rtol=0)
            for key, weight, trusted in zip(KEYS, loop.weights(), loop.trusted(), strict=True):
                assert exp.info[f"rewardagg/weight/{key}"][0] == pytest.approx(weight, rel=1e-6)
                assert exp.info[f"rewardagg/trusted/{key}"][0] == float(trusted)
            assert exp.info["rewardagg/lambda/safe"][0] == pytest.approx(lam, abs=1e-6)
        controller = ro.run_controller(maker)
        np.testing.assert_allclose(controller.controllers[0].weights, loop.weights(), rtol=1e-12)
        assert ro.constraint_tracker(maker).multipliers == {"safe": pytest.approx(lam)}
        assert controller.controllers[0].step == step
    assert moved > 0.05


def test_issue27_controller_goes_with_openrlhfs_checkpoint_states(monkeypatch, tmp_path):
    monkeypatch.setattr(ppo_trainer.ray, "get", lambda refs: refs)
    n = 4
    args = make_args("rewardagg", n, reward_keys=KEYS, method="gdpo", **ADAPTIVE_FLAGS)
    args.logger = SimpleNamespace(logging_steps=1)
    args.ckpt = SimpleNamespace(save_steps=1, load_enable=True, path=str(tmp_path))
    saved = {}

    def save(method_name, **kwargs):
        saved.update(kwargs["client_states"])
        return []

    def trainer(maker, run):
        return SimpleNamespace(
            args=args,
            experience_maker=maker,
            wandb_logger=None,
            tensorboard_logger=None,
            best_eval_metric_key="",
            best_eval_metric_value=float("-inf"),
            _latest_eval_metric_value=None,
            critic_model_group=None,
            actor_model_group=SimpleNamespace(async_run_method=run),
        )

    maker = make_maker(args, kl_coef=0.0)
    for seed in (1, 2):
        maker.compute_advantages_and_returns(make_experiences(maker, seed=seed, n=n))
    state = ro.run_controller(maker).state_dict()
    assert isinstance(ro.run_controller(maker), rewardagg.AdaptiveWeights)
    assert state["step"] == 2
    ppo_trainer.BasePPOTrainer.save_logs_and_checkpoints(
        trainer(maker, save), 1, {}, {"global_step": 1}
    )
    assert saved[ro.CONTROLLER_KEY] == state and ro.CHECKPOINT_KEY not in saved

    (tmp_path / "_actor").mkdir()
    fresh = make_maker(args, kl_coef=0.0)  # a new run, resumed
    resumed = trainer(fresh, lambda method_name, **kwargs: [dict(saved)])
    assert ppo_trainer.BasePPOTrainer.init_checkpoint_states(resumed)["global_step"] == 1
    experiences = make_experiences(fresh, seed=3, n=n)
    fresh.compute_advantages_and_returns(experiences)
    maker.compute_advantages_and_returns(make_experiences(maker, seed=3, n=n))
    assert ro.run_controller(fresh).state_dict() == ro.run_controller(maker).state_dict()
    assert ro.run_controller(fresh).step == 3


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (dict(adaptive_tau="5"), "--rewardagg.adaptive_tau set without --rewardagg.adaptive"),
        (dict(adaptive="true", adaptive_beta="1.5"), "--rewardagg.adaptive_beta must be in"),
        (dict(adaptive="maybe"), "--rewardagg.adaptive must be true or false"),
    ],
)
def test_issue27_adaptive_flags_are_checked(flags, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ro.settings_from_args(make_args("rewardagg", 4, reward_keys=KEYS, **flags))


def test_issue27_rewards_outside_unit_interval_fail_clearly():
    args = make_args("rewardagg", 4, method="gdpo", adaptive="true")  # K = 1: the summed reward
    maker = make_maker(args, kl_coef=0.0)
    with pytest.raises(ValueError, match=r"rewards must lie in \[0, 1\]"):
        maker.compute_advantages_and_returns(make_experiences(maker, seed=1, n=4))


def test_issue27_adaptive_plateau_margin_flag_reaches_the_controller():
    flags = dict(adaptive="true", adaptive_tau="10", adaptive_plateau_margin="none")
    settings = ro.settings_from_args(make_args("rewardagg", 4, reward_keys=KEYS, **flags))
    expected = rewardagg.AdaptiveWeights(reward_names=KEYS, tau=10.0, plateau_margin=None)
    assert settings.adaptive.controller(KEYS).state_dict() == expected.state_dict()
    flags = dict(adaptive="true", adaptive_plateau_margin="0.2")
    settings = ro.settings_from_args(make_args("rewardagg", 4, reward_keys=KEYS, **flags))
    assert settings.adaptive.controller(KEYS).plateau_margin == 0.2


def test_issue27_adaptive_plateau_margin_flag_is_checked():
    flags = dict(adaptive="true", adaptive_plateau_margin="-0.5")
    with pytest.raises(ValueError, match=r"--rewardagg\.adaptive_plateau_margin must be a"):
        ro.settings_from_args(make_args("rewardagg", 4, reward_keys=KEYS, **flags))


def test_rvpo_alias_as_the_method_flag():
    """``--rewardagg.method rvpo`` is RVPO's SoftMin, as in ``ra.advantages``."""
    args = make_args("rewardagg", 4, reward_keys=KEYS, method="rvpo", kappa="2")
    settings = ro.settings_from_args(args)
    assert settings.method == "softmin" and settings.method_params == {"kappa": 2.0}
    with pytest.raises(ValueError, match=r"--rewardagg\.method='rvp' is not a registered"):
        ro.settings_from_args(make_args("rewardagg", 4, reward_keys=KEYS, method="rvp"))
