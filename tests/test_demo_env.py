"""The demo's environment, training loop and report (rewardagg.demo).

Runtime: about 2 s (the training tests run a few steps with 2-3 seeds). The method
settings (rewardagg.method_settings, shared with the audit) are tested here too.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import rewardagg
from rewardagg.demo import (
    ConstraintEnv,
    DemoConfig,
    MethodSpec,
    Scenario,
    default_methods,
    default_scenarios,
    format_table,
    probe_advantages,
    run_scenario,
    summary_rows,
    write_outputs,
)
from rewardagg.demo.environment import END, WORD, end_probability
from rewardagg.demo.experiment import (
    DEFAULT_EXCLUDED,
    _neglect_rate,
    mean_ci,
    t_quantile_975,
)
from rewardagg.method_settings import expand_sweep, method_settings

E, W = END, WORD

#: The methods of README's demo tables (the built-ins but mean), in table order.
README_METHODS = ["grpo", "gdpo", "softmin", "mean_variance", "min"]


# ----------------------------------------------------------------------------- rewards
def test_format_reward_needs_the_last_c_tokens_to_be_end():
    env = ConstraintEnv(length=6, constraint_length=2)
    tokens = np.array(
        [
            [W, W, W, W, E, E],  # met
            [E, E, E, E, E, E],  # met (ends are allowed anywhere)
            [W, W, W, W, W, E],  # only the last one
            [W, W, W, W, E, W],  # wrong order
            [E, E, E, E, W, W],
        ]
    )
    np.testing.assert_array_equal(env.format_reward(tokens), [1.0, 1.0, 0.0, 0.0, 0.0])
    env3 = ConstraintEnv(length=6, constraint_length=3)
    np.testing.assert_array_equal(env3.format_reward(tokens), [0.0, 1.0, 0.0, 0.0, 0.0])


def test_windows_default_and_wrap_around():
    env = ConstraintEnv(n_rewards=4, length=6, window=3)
    expected = np.array(
        [
            [1, 1, 1, 0, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(env.windows(), expected)
    big = ConstraintEnv(n_rewards=17, length=6, window=3).windows()
    assert big.shape == (16, 6)
    np.testing.assert_array_equal(big[5], [1, 1, 0, 0, 0, 1])  # verbose_6 starts at 5, wraps
    np.testing.assert_array_equal(big[6], big[0])  # period L
    assert (big.sum(axis=1) == 3).all()


def test_verbosity_counts_words_in_each_window():
    env = ConstraintEnv(n_rewards=4)
    tokens = np.array([[W, E, W, W, E, E], [W] * 6, [E] * 6])
    # windows {0,1,2}, {1,2,3}, {2,3,4}
    np.testing.assert_array_equal(env.verbosity_counts(tokens), [[2, 2, 2], [3, 3, 3], [0, 0, 0]])


def test_rewards_stack_format_and_scaled_noise():
    env = ConstraintEnv(n_rewards=3, noise=0.5)
    tokens = np.array([[W, W, W, W, E, E]])
    clean = env.rewards(tokens)
    np.testing.assert_array_equal(clean, [[1.0, 3.0, 3.0]])
    noisy = env.rewards(tokens, np.array([[2.0, -4.0]]))
    np.testing.assert_array_equal(noisy, [[1.0, 4.0, 1.0]])  # format is never noisy
    assert env.reward_names == ("format", "verbose_1", "verbose_2")


def test_expected_rewards_match_exact_enumeration():
    env = ConstraintEnv(n_rewards=5, n_prompts=2, length=4, constraint_length=2, window=2)
    theta = np.random.default_rng(1).normal(size=(2, 4, 2))
    p_end = end_probability(theta)
    seqs = np.array(list(itertools.product([E, W], repeat=4)))  # (16, 4)
    for p in range(2):
        prob = np.prod(np.where(seqs == E, p_end[p], 1 - p_end[p]), axis=1)
        exact = (prob[:, None] * env.rewards(seqs)).sum(axis=0)
        np.testing.assert_allclose(env.expected_rewards(theta)[p], exact, rtol=1e-12)


def test_initial_logits_give_the_requested_start_satisfaction():
    env = ConstraintEnv(n_prompts=4, initial_satisfaction=0.05, constraint_length=2)
    s = env.initial_satisfaction_per_prompt()
    np.testing.assert_allclose(s, 0.05 * 2.0 ** np.linspace(-1, 1, 4))
    assert np.exp(np.mean(np.log(s))) == pytest.approx(0.05)  # geometric mean
    np.testing.assert_allclose(env.expected_rewards(env.initial_logits())[:, 0], s, rtol=1e-12)
    capped = ConstraintEnv(n_prompts=3, initial_satisfaction=0.6).initial_satisfaction_per_prompt()
    assert capped.max() == 0.95


def test_normalised_rewards_lie_in_unit_interval():
    env = ConstraintEnv(n_rewards=6)
    r = env.normalised(env.rewards(np.array([[W] * 6, [E] * 6])))
    assert r.min() >= 0 and r.max() <= 1
    np.testing.assert_array_equal(r[0], [0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(r[1], [1, 0, 0, 0, 0, 0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_rewards": 1},
        {"n_rewards": 18},
        {"constraint_length": 0},
        {"constraint_length": 7},
        {"initial_satisfaction": 0.0},
        {"initial_satisfaction": 1.0},
        {"window": 7},
        {"noise": -1.0},
        {"n_prompts": 0},
    ],
)
def test_environment_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ConstraintEnv(**kwargs)


# ----------------------------------------------------------------------------- methods
def _signed_only(z, *, weights=None, tail=1.0):
    """A registered reducer (a SoftMin at 2 x tail) for the tests below."""
    return rewardagg.softmin(z, kappa=2 * tail, weights=weights)


def _nonnegative(name):
    return rewardagg.get_aggregator(name).nonnegative


@pytest.fixture
def registered():
    """A method registered at run time, with a sweep of two settings; unregistered after."""
    name = "test_demo_tail"
    rewardagg.register_aggregator(
        name, _signed_only, params={"tail": 1.0}, sweep=({"tail": 0.5}, {"tail": 2.0})
    )
    try:
        yield name
    finally:
        rewardagg.unregister_aggregator(name)


def test_default_methods_are_the_table_sweeps_but_mean():
    # README's demo tables: the built-ins but mean, each at the settings its entry sweeps.
    labels = [m.label for m in default_methods() if m.method in README_METHODS]
    assert labels == [
        "grpo", "gdpo", "softmin k=0.5", "softmin k=1", "softmin k=2", "mean_var l=0.5", "min"
    ]  # fmt: skip
    # Every other method of the table is there too, unless it needs non-negative rewards.
    expected = [
        s.label
        for name in rewardagg.available_methods()
        if name not in DEFAULT_EXCLUDED and not _nonnegative(name)
        for s in method_settings([name])
    ]
    assert [m.label for m in default_methods()] == expected
    assert all(m.method != "mean" for m in default_methods())


def test_default_methods_follow_the_table_order_and_overrides():
    methods = default_methods(["min", "softmin", "gdpo", "softmin"], params={"kappa": ["4"]})
    assert methods == [
        MethodSpec("gdpo", "gdpo"),
        MethodSpec("softmin k=4", "softmin", {"kappa": 4.0}),
        MethodSpec("min", "min"),
    ]
    with pytest.raises(ValueError, match=r"unknown \['nope'\]"):
        default_methods(["gdpo", "nope"])


def test_overrides_must_be_taken_by_a_selected_method():
    with pytest.raises(ValueError, match="no selected method takes 'kappa'; they take no"):
        method_settings(["gdpo"], {"kappa": [1.0]})
    with pytest.raises(ValueError, match=r"'nope'; they take: .*kappa \(softmin\)"):
        method_settings(["gdpo", "softmin"], {"nope": [1]})
    with pytest.raises(ValueError, match="kappa must be"):
        method_settings(["softmin"], {"kappa": ["-1"]})


def test_expand_sweep_replaces_and_combines():
    assert expand_sweep([{"a": 1}, {"a": 2}], {"a": [3, 3]}) == [{"a": 3}]
    assert expand_sweep([{"a": 1, "b": 0}], {"b": [1, 2]}) == [
        {"a": 1, "b": 1}, {"a": 1, "b": 2}
    ]  # fmt: skip
    assert expand_sweep([{"a": 1}], {}) == [{"a": 1}]


def test_settings_a_label_cannot_tell_apart_get_their_values():
    # grpo's scale has no display symbol: the label alone would repeat.
    both = method_settings(["grpo"], {"scale": ["group", "batch"]})
    assert [m.label for m in both] == ["grpo scale=group", "grpo scale=batch"]
    assert [m.label for m in method_settings(["grpo"], {"scale": ["batch"]})] == ["grpo"]


def test_a_registered_method_joins_the_default_list_with_its_sweep(registered):
    methods = default_methods()
    mine = [m for m in methods if m.method == registered]
    assert [m.label for m in mine] == [f"{registered} tail=0.5", f"{registered} tail=2"]
    assert [m.params for m in mine] == [{"tail": 0.5}, {"tail": 2.0}]
    assert methods[-2:] == mine  # registered methods come after the built-ins
    one = default_methods([registered], params={"tail": ["3"]})
    assert one == [MethodSpec(f"{registered} tail=3", registered, {"tail": 3.0})]


def test_methods_for_nonnegative_rewards_only_are_left_out_by_default():
    # The demo's rewards carry Gaussian noise; named, such a method runs (e.g. noise=0).
    nonnegative = [n for n in rewardagg.available_methods() if _nonnegative(n)]
    assert not any(_nonnegative(m.method) for m in default_methods())
    for name in nonnegative:
        assert {m.method for m in default_methods([name])} == {name}


# ----------------------------------------------------------------------------- training
def _loop_reference(scenario, config, adv_fn):
    """One method, one seed, plain loops: the vectorised run must agree with this."""
    env = scenario.env
    (spec,) = config.method_list()
    rng = np.random.default_rng(
        np.random.SeedSequence([config.base_seed, env.n_rewards, env.length])
    )
    theta = env.initial_logits().copy()
    P, G, L, K = env.n_prompts, config.group_size, env.length, env.n_rewards
    for _ in range(config.steps):
        u = rng.random((P, G, L))
        z = rng.standard_normal((P, G, K - 1))
        p_end = end_probability(theta)
        tokens = np.where(u < p_end[:, None, :], E, W)
        rewards = env.rewards(tokens, z).reshape(P * G, K)
        a = np.asarray(adv_fn(rewards, method=spec.method, group_size=G, **spec.params))
        a = a.reshape(P, G)
        for p in range(P):
            grad = np.zeros((L, 2))
            for g in range(G):
                onehot = np.eye(2)[tokens[p, g]]  # (L, 2)
                pi = np.stack([p_end[p], 1 - p_end[p]], axis=-1)
                grad += a[p, g] * (onehot - pi)
            theta[p] += config.lr * grad / G
    return env.expected_rewards(theta)


@pytest.mark.parametrize("method", ["gdpo", "softmin"])
def test_vectorised_training_matches_a_plain_loop(method):
    scenario = default_scenarios(n_rewards=[3], difficulty=[0.2], n_prompts=2)[0]
    spec = MethodSpec(method, method, {"kappa": 1.0} if method == "softmin" else {})
    config = DemoConfig(seeds=1, steps=5, group_size=4, methods=(spec,))
    res = run_scenario(scenario, config)
    ref = _loop_reference(scenario, config, rewardagg.advantages)
    np.testing.assert_allclose(res.expected[-1, 0, 0], ref.mean(axis=0), rtol=1e-10)


def test_seeds_are_common_and_independent_of_the_number_of_seeds():
    scenario = default_scenarios(n_rewards=[4], difficulty=[0.3])[0]
    methods = tuple(default_methods(params={"kappa": [1.0]}))
    r2 = run_scenario(scenario, DemoConfig(seeds=2, steps=6, methods=methods))
    r3 = run_scenario(scenario, DemoConfig(seeds=3, steps=6, methods=methods))
    np.testing.assert_array_equal(r2.expected, r3.expected[:, :, :2])
    # Before any update every method has the same policy.
    assert np.ptp(r3.expected[0], axis=0).max() == 0


def test_progress_callback_and_shapes():
    calls = []
    scenario = default_scenarios(n_rewards=[4], difficulty=[0.5])[0]
    methods = default_methods(README_METHODS, params={"kappa": [0.5, 2.0]})
    res = run_scenario(
        scenario, DemoConfig(seeds=2, steps=4, methods=tuple(methods)), progress=calls.append
    )
    assert calls == [1, 1, 1, 1]
    M = len(methods)
    assert res.expected.shape == (5, M, 2, 4)
    assert res.worst.shape == (5, M, 2) and res.neglect.shape == (4, M, 2)
    assert res.steps_to_threshold().shape == (M, 2)
    assert [m.label for m in methods] == [
        "grpo", "gdpo", "softmin k=0.5", "softmin k=2", "mean_var l=0.5", "min"
    ]  # fmt: skip


def test_steps_to_threshold_first_crossing_or_nan():
    scenario = Scenario("s", ConstraintEnv())
    sat = np.array([[0.1, 0.1], [0.95, 0.2], [0.5, 0.3]])  # (steps+1, S) for one method
    expected = np.zeros((3, 1, 2, 4))
    expected[:, 0, :, 0] = sat
    from rewardagg.demo import ScenarioResult

    res = ScenarioResult(scenario, [MethodSpec("m", "gdpo")], expected,
                         np.zeros((3, 1, 2)), np.zeros((2, 1, 2)), [0, 1], 0.9)  # fmt: skip
    st = res.steps_to_threshold()
    assert st[0, 0] == 1 and np.isnan(st[0, 1])


def test_neglect_rate_counts_rewarded_failures_in_informative_groups():
    # (M=1, S=1, P=3, G=4)
    fmt = np.array([[[[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1]]]], dtype=float)
    adv = np.array([[[[1.0, 0.5, -1.0, -0.2], [3.0, 3.0, 3.0, 3.0], [0.1, 0.1, 0.2, 0.1]]]])
    # group 0: failures 0.5, -1.0, -0.2 -> 1 positive; group 1: no signal, ignored;
    # group 2: failure 0.2 -> positive. 2 of 4.
    np.testing.assert_allclose(_neglect_rate(fmt, adv), [[0.5]])
    assert np.isnan(_neglect_rate(np.zeros((1, 1, 1, 4)), np.ones((1, 1, 1, 4)))[0, 0])


def test_mean_ci_matches_student_t():
    scipy_stats = pytest.importorskip("scipy.stats")
    x = np.array([[1.0, 2.0, 4.0, 7.0], [3.0, np.nan, 3.5, 2.0]])
    mu, half = mean_ci(x)
    for row, m, h in zip(x, mu, half, strict=True):
        v = row[np.isfinite(row)]
        t = scipy_stats.t.ppf(0.975, v.size - 1)
        assert m == pytest.approx(v.mean())
        assert h == pytest.approx(t * v.std(ddof=1) / np.sqrt(v.size), rel=1e-3)
    for df in (1, 5, 30):
        assert t_quantile_975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=1e-3)
    m1, h1 = mean_ci(np.array([2.0]))
    assert m1 == 2.0 and np.isnan(h1)


# ----------------------------------------------------------------------------- probe
def test_probe_noise_free_lone_success():
    # One response of 8 meets the format and loses one word in verbose_3. Noise-free,
    # Z = [+2.47, 0, 0, -2.47] for it and [-0.35, 0, 0, +0.35] for the others: gdpo's
    # sum is 0 for every row (advantage exactly 0); softmin, mean_variance and min score
    # the success below the others.
    env = ConstraintEnv(n_rewards=4, noise=0.0)
    res = probe_advantages(env, n_meeting=1, draws=1)
    assert res.meeting["gdpo"] == 0.0 and res.failing["gdpo"] == 0.0
    for label in ("softmin k=1", "mean_var l=0.5", "min"):
        assert res.meeting[label] < 0 < res.failing[label]


def test_probe_validates_and_is_deterministic():
    env = ConstraintEnv(n_rewards=3)
    with pytest.raises(ValueError, match="n_meeting"):
        probe_advantages(env, n_meeting=8)
    a = probe_advantages(env, n_meeting=7, draws=5, seed=1)
    b = probe_advantages(env, n_meeting=7, draws=5, seed=1)
    assert a == b


# ----------------------------------------------------------------------------- report
def test_table_and_files(tmp_path):
    scenarios = default_scenarios(n_rewards=[3, 7], difficulty=[0.4])
    methods = tuple(default_methods(params={"kappa": [1.0]}))
    config = DemoConfig(seeds=2, steps=3, methods=methods)
    results = [run_scenario(sc, config) for sc in scenarios]
    table = format_table(results)
    for label in ("grpo", "gdpo", "softmin k=1", "mean_var l=0.5", "min"):
        assert label in table
    assert "verbose_2" in table  # K=3: every reward has a column
    assert "verbose_avg" in table  # K=7: the verbosity average
    rows = summary_rows(results)
    assert len(rows) == 2 * len(methods)
    assert all(0.0 <= r["format"] <= 1.0 for r in rows)
    pytest.importorskip("matplotlib")
    paths = write_outputs(results, config, tmp_path / "out")
    assert {p.name for p in paths.values()} == {"demo.json", "demo.csv", "demo.png"}
    data = json.loads(paths["json"].read_text())
    assert [s["name"] for s in data["scenarios"]] == [sc.name for sc in scenarios]
    curve = data["scenarios"][0]["curves"]["gdpo"]["format"]["mean"]
    assert len(curve) == 4
    assert paths["csv"].read_text().count("\n") == 1 + len(rows)
    assert paths["png"].stat().st_size > 10_000
