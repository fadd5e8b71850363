"""The demo (rewardagg.demo): the rubric testbed, the neglect toy, the methods compared,
the seed-stacked advantages, the runner and the report.

Runtime: about 3 s (every training run is a few updates on a few prompts). The method
settings (rewardagg.method_settings, shared with the audit) are tested here too.

Provenance of the expected values: the HealthBench fixture and the window layouts are
worked out by hand in the comments; ``tests/fixtures/demo_small.json`` is the output of
``_small_run()`` below when it was committed (regenerate with
``REWARDAGG_REGENERATE=1 python -m pytest tests/test_demo_env.py -k small_run``), and
``rewardagg/demo/data/default_run.csv`` is ``demo.csv`` of ``rewardagg demo`` with its
defaults (``REWARDAGG_FULL_DEMO=1`` reruns it, about a minute).
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import re

import numpy as np
import pytest

import rewardagg
from rewardagg.demo import (
    ConstraintEnv,
    DemoConfig,
    MethodSpec,
    RubricScenario,
    default_methods,
    format_legend,
    format_summary,
    format_table,
    format_verdicts,
    healthbench_score,
    probe_advantages,
    reference_rows,
    reference_seed_rows,
    response_scores,
    run_demo,
    select_scenarios,
    tidy_rows,
    write_outputs,
)
from rewardagg.demo.engine import per_seed_advantages, stackable
from rewardagg.demo.environment import END, WORD, end_probability
from rewardagg.demo.judge import judge_verdicts, reward_columns
from rewardagg.demo.neglect_train import train_neglect
from rewardagg.demo.report import check_output_dir
from rewardagg.demo.rubric import (
    CRITICAL,
    make_criteria,
    make_prompts,
    met_logits,
    met_probability,
    normal_cdf,
    role_counts,
)
from rewardagg.demo.rubric_train import draw_world, evaluate, neglect_counts, train_rubric
from rewardagg.demo.scenarios import neglect_scenarios
from rewardagg.demo.settings import (
    VARIANTS,
    ControllerContext,
    advantage_options,
    judged_target,
    make_controller,
    make_tracker,
    register_controller,
)
from rewardagg.demo.stats import mean_ci, paired_ci, regularized_beta, t_quantile, t_quantile_975
from rewardagg.demo.takeaway import TAKEAWAY, TAKEAWAY_HEADER, takeaway_text
from rewardagg.demo.tidy import (
    VERDICT_FIELDS,
    paired_verdicts,
    read_rows,
    read_seed_rows,
    seed_rows,
    verdict,
    verdict_lines,
    write_rows,
    write_seed_rows,
)
from rewardagg.method_settings import expand_sweep, method_settings

E, W = END, WORD
ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL_FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "demo_small.json"

#: A rubric scenario small enough to train in a blink.
TINY = RubricScenario(
    "tiny", n_criteria=7, n_train=6, n_heldout=5, prompts_per_step=2, group_size=4,
    steps=6, eval_every=2,
)  # fmt: skip


# ----------------------------------------------------------------------------- HealthBench
def test_healthbench_score_on_a_hand_made_fixture():
    points = np.array([10.0, 5.0, 3.0, -5.0])
    present = np.array(
        [[True, True, True, True], [True, True, True, True], [True, True, False, True]]
    )
    met = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 1]])
    # 15/18; (3 - 5)/18; the third prompt lacks criterion 2 (its "met" is ignored):
    # (10 - 5)/15.
    expected = [15 / 18, -2 / 18, 5 / 15]
    np.testing.assert_allclose(response_scores(met, points, present), expected)
    assert healthbench_score(met, points, present, axis=0) == pytest.approx(np.mean(expected))
    # The clip applies to the mean (simple-evals), not to each response: -1/9 counts.
    two = healthbench_score(met[:2], points, present[:2], axis=0)
    assert two == pytest.approx((15 / 18 - 2 / 18) / 2)
    assert healthbench_score(met[1:2], points, present[1:2], axis=0) == 0.0  # clipped
    # Probabilities give the expected score (the score is linear in the verdicts).
    p = np.array([[0.5, 0.2, 1.0, 0.4]])
    assert response_scores(p, points, present[:1])[0] == pytest.approx((5 + 1 + 3 - 2) / 18)
    # No positive criterion: no score.
    assert np.isnan(response_scores(np.ones((1, 1)), np.array([-3.0]), np.ones((1, 1), bool)))[0]


# ----------------------------------------------------------------------------- judge
def test_judge_flips_each_verdict_with_probability_eps():
    rng = np.random.default_rng(0)
    met = rng.random(200_000) < 0.3
    u = rng.random(met.shape)
    judged = judge_verdicts(met, 0.1, u)
    np.testing.assert_array_equal(judged != met, u < 0.1)  # exactly the draws below eps
    rate = (judged != met).mean()
    assert abs(rate - 0.1) < 4 * np.sqrt(0.1 * 0.9 / met.size)
    np.testing.assert_array_equal(judge_verdicts(met, 0.0, u), met)
    with pytest.raises(ValueError, match="eps"):
        judge_verdicts(met, 1.5, u)


def test_reward_columns_are_good_outcomes_and_nan_when_absent():
    verdicts = np.array([[True, True, False, False]])
    points = np.array([10.0, -5.0, 3.0, -2.0])
    present = np.array([[True, True, True, False]])
    # met +10 -> 1; met -5 (bad behaviour shown) -> 0; not met +3 -> 0; absent -> NaN
    np.testing.assert_array_equal(
        reward_columns(verdicts, points, present), [[1.0, 0.0, 0.0, np.nan]]
    )


# ----------------------------------------------------------------------------- rubric
def test_roles_points_and_start_rates():
    assert role_counts(5) == (1, 3, 1) and role_counts(17) == (1, 13, 3)
    rng = np.random.default_rng(1)
    c = make_criteria(rng, 17, 0.1)
    assert c.roles[CRITICAL] == "critical" and c.points[CRITICAL] == 10
    assert (c.points[c.mask("easy")] >= 1).all() and (c.points[c.mask("easy")] <= 5).all()
    assert (c.points[c.mask("negative")] <= -2).all()
    assert c.loadings[CRITICAL].tolist() == [-1.0, 1.0, 0.0]  # verbosity against, care for
    # Start rate of the critical criterion, averaged over prompts: exactly 0.1 in
    # expectation (the centre folds the prompt spread in); 4000 prompts pin it to 0.01.
    prompts = make_prompts(rng, c, 4000)
    p0 = met_probability(prompts.offsets, c.loadings, np.zeros(3), 1.0)
    assert p0[:, CRITICAL].mean() == pytest.approx(0.1, abs=0.01)
    assert prompts.present[:, CRITICAL].all()
    assert 0.7 < prompts.present[:, 1:].mean() < 0.8  # presence 0.75


def test_met_probability_is_exact_under_the_policy():
    rng = np.random.default_rng(2)
    c = make_criteria(rng, 5, 0.5)
    prompts = make_prompts(rng, c, 3)
    mu = np.array([0.5, -0.3, 0.2])
    exact = met_probability(prompts.offsets, c.loadings, mu[None], 1.0)  # (P, K)
    n = 100_000
    x = mu + rng.standard_normal((n, 1, 3))
    met = met_logits(prompts.offsets, c.loadings, x) + rng.standard_normal((n, 3, 5)) > 0
    np.testing.assert_allclose(met.mean(axis=0), exact, atol=0.006)
    assert normal_cdf(np.array([0.0]))[0] == 0.5


def test_evaluation_uses_true_verdicts_on_heldout_prompts():
    world = draw_world(TINY, seed=3)
    mu = np.array([0.8, 0.4, 0.3])
    ev = evaluate(world, mu, 1.0)
    # Monte Carlo with the true verdicts agrees; the judge's verdicts would not.
    rng = np.random.default_rng(4)
    n = 40_000
    h, c = world.heldout, world.criteria
    x = mu + rng.standard_normal((n, 1, 3))
    met = met_logits(h.offsets, c.loadings, x) + rng.standard_normal((n, *h.offsets.shape)) > 0
    truth = healthbench_score(met, c.points, h.present, axis=(0, 1))
    assert ev["rubric_score"] == pytest.approx(truth, abs=0.01)
    assert ev["critical_met"] == pytest.approx(met[..., CRITICAL].mean(), abs=0.01)
    judged = judge_verdicts(met, 0.3, rng.random(met.shape))
    assert abs(healthbench_score(judged, c.points, h.present, axis=(0, 1)) - truth) > 0.05
    # The final metrics of training are this evaluation of the final policy, whatever the
    # judge's noise.
    noisy = RubricScenario(**{**_fields(TINY), "name": "noisy", "judge_noise": 0.2})
    res = train_rubric(noisy, [MethodSpec("gdpo", "gdpo")], [3])
    final = evaluate(world, res.final["mu"][0, 0], 1.0)
    for name, value in final.items():
        assert res.metrics[name][0, 0] == value


def _fields(sc: RubricScenario) -> dict:
    return {f: getattr(sc, f) for f in sc.__dataclass_fields__ if f != "family"}


def test_heldout_prompts_are_disjoint_from_training_prompts():
    world = draw_world(TINY, seed=5)
    assert world.train.n_prompts == TINY.n_train and world.heldout.n_prompts == TINY.n_heldout
    train = {tuple(r) for r in world.train.offsets}
    assert not train & {tuple(r) for r in world.heldout.offsets}
    # Training samples training prompts only: a training batch's offsets are rows of the
    # training set (the training stream draws indices into it).
    rng = np.random.default_rng(np.random.SeedSequence([5, 1, *TINY.seed_key]))
    idx = rng.choice(TINY.n_train, TINY.prompts_per_step, replace=False)
    assert all(tuple(r) in train for r in world.train.offsets[idx])


# ----------------------------------------------------------------------------- stuck, trap
def _captured_rewards(monkeypatch, scenario, steps=4):
    """The reward batches of a short gdpo run on ``scenario`` (``(S, N, K)`` per update)."""
    import rewardagg.demo.rubric_train as rt

    seen = []

    def spy(rewards, spec, **kw):
        seen.append(rewards.copy())
        return per_seed_advantages(rewards, spec, **kw)

    monkeypatch.setattr(rt, "per_seed_advantages", spy)
    res = train_rubric(scenario, default_methods(["gdpo"]), [0, 1], steps=steps)
    return res, np.stack(seen)


def test_issue25_the_trap_is_met_only_when_the_critical_criterion_fails(monkeypatch):
    sc = select_scenarios(["trap-k5-clean"])[0]
    world = draw_world(sc, 0)
    c, k = world.criteria, world.criteria.extra
    assert c.roles[k] == "trap" and c.points[k] > 0 and world.train.present[:, k].all()
    np.testing.assert_array_equal(c.loadings[k], -c.loadings[CRITICAL])
    res, R = _captured_rewards(monkeypatch, sc)
    trap, crit = R[..., k], R[..., CRITICAL]
    assert trap.sum() > 0 and not np.any((trap == 1) & (crit == 1))  # exact judge
    assert "extra_met" in res.metrics and "extra_met" in res.curves
    # Exact evaluation: P(trap) = P(critical fails by the margin) <= 1 - P(critical met),
    # and it matches the frequency of a plain simulation of the same probit model.
    mu = np.array([0.4, -0.2, 0.1])
    p = met_probability(world.heldout.offsets, c.loadings, mu, sc.policy_std)
    assert np.all(p[:, k] + p[:, CRITICAL] < 1.0)
    rng = np.random.default_rng(1)
    x = mu + sc.policy_std * rng.standard_normal((200_000, 3))
    xi0 = rng.standard_normal(200_000)
    crit_logit = world.heldout.offsets[0, CRITICAL] + x @ c.loadings[CRITICAL] + xi0
    trap_met = world.heldout.offsets[0, k] + x @ c.loadings[k] - xi0 > 0
    assert not np.any(trap_met & (crit_logit > 0))
    assert trap_met.mean() == pytest.approx(p[0, k], abs=4e-3)


def test_issue25_the_stuck_criterion_does_not_move_whatever_the_policy(monkeypatch):
    sc = select_scenarios(["stuck-k17-noisy"])[0]
    world = draw_world(sc, 3)
    k = world.criteria.extra
    assert world.criteria.roles[k] == "stuck" and not world.criteria.loadings[k].any()
    a, b = (evaluate(world, np.array(mu), 1.0)["extra_met"] for mu in ([0, 0, 0], [3, -2, 1]))
    assert a == b and 0.02 < a < 0.09  # about 5%
    res, R = _captured_rewards(monkeypatch, select_scenarios(["stuck-k17-clean"])[0])
    curve = res.curves["extra_met"]
    np.testing.assert_array_equal(curve, np.broadcast_to(curve[:1], curve.shape))
    assert 0 < np.nanmean(R[..., k]) < 0.1


def test_issue25_families_are_selected_and_seeded_like_the_grid():
    names = [s.name for s in select_scenarios(["stuck", "trap"])]
    assert names == [
        f"{f}-k{k}-{n}" for f in ("stuck", "trap") for k in (17, 5) for n in ("clean", "noisy")
    ]
    clean, noisy = select_scenarios(["trap-k17-clean", "trap-k17-noisy"])
    assert clean.seed_key == noisy.seed_key  # clean and noisy share their draws
    keys = {s.seed_key for s in select_scenarios(["all"]) if s.family == "rubric"}
    assert len(keys) == 4 + 4  # the grid's 4 factor pairs, 2 per family
    np.testing.assert_array_equal(
        draw_world(clean, 2).train.offsets, draw_world(noisy, 2).train.offsets
    )
    assert len(select_scenarios(["all"])) == 8 + 8 + 4


# ----------------------------------------------------------------------------- training
def test_seeds_reproduce_bit_for_bit_whatever_else_runs():
    methods = default_methods(["gdpo", "softmin", "gd2po", "gdpo_lagrange"], params={"kappa": [1]})
    a = train_rubric(TINY, methods, [0, 1])
    b = train_rubric(TINY, methods, [0, 1])
    c = train_rubric(TINY, methods[1:], [1])
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name])
        np.testing.assert_array_equal(a.metrics[name][1:, 1], c.metrics[name][:, 0])
    np.testing.assert_array_equal(a.final["mu"][1:, 1], c.final["mu"][:, 0])
    # Processes: the same numbers, merged in seed order.
    config = DemoConfig(seeds=3, steps=4, methods=tuple(methods[:2]))
    one = run_demo([TINY], DemoConfig(**{**config.__dict__, "workers": 1}))[0]
    two = run_demo([TINY], DemoConfig(**{**config.__dict__, "workers": 2}))[0]
    assert one.seeds == two.seeds == [0, 1, 2]
    for name in one.metrics:
        np.testing.assert_array_equal(one.metrics[name], two.metrics[name])


def test_issue25_progress_is_counted_per_update_in_the_workers():
    import multiprocessing

    import rewardagg.demo.runner as runner

    counter = multiprocessing.Value("q", 0)
    runner._init_worker(counter)
    try:
        runner._train_unit(TINY, default_methods(["gdpo"]), [0, 1, 2], 5)
    finally:
        runner._init_worker(None)
    assert counter.value == 3 * 5  # seeds x updates, counted as they ran
    calls = []
    config = DemoConfig(seeds=3, steps=4, methods=tuple(default_methods(["gdpo"])), workers=2)
    run_demo([TINY, TINY], config, progress=calls.append)
    assert sum(calls) == runner.total_work([TINY, TINY], config) == 2 * 3 * 4


def test_every_method_sees_the_same_draws():
    res = train_rubric(TINY, default_methods(["gdpo", "min"]), [0], steps=3)
    # Before any update every method has the same policy, hence the same evaluation.
    for curve in res.curves.values():
        assert np.ptp(curve[0]) == 0
    assert res.checkpoints.tolist() == [0, 2, 3]


def test_neglect_counts_rewarded_failures_in_informative_groups():
    # (M=1, S=1, B=3, G=4)
    crit = np.array([[[[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1]]]], dtype=float)
    adv = np.array([[[[1.0, 0.5, -1.0, -0.2], [3.0, 3.0, 3.0, 3.0], [0.1, 0.1, 0.2, 0.1]]]])
    # group 0: failures 0.5, -1.0, -0.2 -> 1 positive; group 1: no signal, ignored;
    # group 2: failure 0.2 -> positive. 2 of 4.
    failed, rewarded = neglect_counts(crit, adv)
    assert failed.tolist() == [[4]] and rewarded.tolist() == [[2]]


# ----------------------------------------------------------------------------- methods
def test_default_methods_are_every_table_setting_then_the_variants():
    labels = [m.label for m in default_methods()]
    table = [
        MethodSpec.from_table(name, s).label
        for name in rewardagg.available_methods()
        for s in rewardagg.get_aggregator(name).sweep
    ]
    assert labels == table + [v.spec.label for v in VARIANTS]
    assert labels[:14] == [
        "grpo", "gdpo", "mean", "softmin k=0.1", "softmin k=0.25", "softmin k=0.5",
        "softmin k=1", "softmin k=2", "mean_var l=0.05", "mean_var l=0.125",
        "mean_var l=0.25", "mean_var l=0.5", "mean_var l=1", "min",
    ]  # fmt: skip
    # The Taylor twin: lam = kappa / 2 at every kappa of the sweep.
    kappas = [s["kappa"] for s in rewardagg.get_aggregator("softmin").sweep]
    lams = [s["lam"] for s in rewardagg.get_aggregator("mean_variance").sweep]
    assert lams == [k / 2 for k in kappas]
    assert min(kappas) <= 0.25  # inside the Taylor regime for |Z| <= 2.5
    assert [v.name for v in VARIANTS] == [
        "gdpo_point_weights", "tchebycheff", "gdpo_lagrange", "softmin_snr"
    ]  # fmt: skip


def test_default_methods_by_name_and_overrides():
    methods = default_methods(
        ["min", "softmin", "gdpo", "softmin", "tchebycheff"], params={"kappa": ["4"]}
    )
    assert [m.label for m in methods] == ["gdpo", "softmin k=4", "min", "tchebycheff k=2"]
    assert methods[1] == MethodSpec("softmin k=4", "softmin", {"kappa": 4.0})
    assert methods[3].options == {"order": "reduce_then_normalize"}  # variants keep theirs
    with pytest.raises(ValueError, match=r"unknown \['nope'\].*variants: gdpo_point_weights"):
        default_methods(["gdpo", "nope"])
    assert default_methods(variants=False)[-1].options == {}


def test_issue25_every_printed_label_selects_its_setting():
    every = default_methods()
    for spec in every:
        assert default_methods([spec.label]) == [spec], spec.label
    chosen = default_methods(["gdpo+lagrange", "softmin k=0.25", "gdpo", "mean_var  l=0.125"])
    assert [m.label for m in chosen] == [
        "gdpo", "softmin k=0.25", "mean_var l=0.125", "gdpo+lagrange"
    ]  # fmt: skip
    # a label with a value outside the sweep is a setting too; a bad one is an error
    assert default_methods(["softmin k=3"]) == [
        MethodSpec("softmin k=3", "softmin", {"kappa": 3.0})
    ]
    for bad in ("softmin q=1", "softmin k=-1", "nope k=1"):
        with pytest.raises(ValueError, match="or a label as printed"):
            default_methods([bad])


def test_variant_options_resolve_per_scenario():
    pts = np.array([10.0, -5.0, 2.0])
    spec = default_methods(["gdpo_point_weights"])[0]
    np.testing.assert_array_equal(advantage_options(spec, pts)["weights"], [10.0, 5.0, 2.0])
    lag = default_methods(["gdpo_lagrange"])[0]
    assert "constraint" not in advantage_options(lag)
    tracker = make_tracker(lag)
    assert tracker.targets == {0: 0.9} and tracker.lr == 0.1 and tracker.lambda_max == 20.0
    assert make_tracker(spec) is None
    # issue 25: under a judge flipping 10% of verdicts the tracker gets the judged rate of
    # the true target 0.9, 0.9 * 0.9 + 0.1 * 0.1 = 0.82, below the judged cap 0.9.
    noisy = make_controller(lag, ControllerContext(judge_noise=0.1))
    assert noisy.targets[0] == pytest.approx(0.82, abs=1e-15)
    assert judged_target(0.9, 0.0) == 0.9 and judged_target(0.3, 0.5) == 0.5
    # The toy has no points and signed rewards: the runner skips what cannot run there.
    toy = select_scenarios(["neglect-k4-rare"])[0]
    res = run_demo([toy], DemoConfig(seeds=1, steps=1, workers=1))[0]
    assert any(s.startswith("gdpo_point_weights") for s in res.skipped)
    assert any(s.startswith("power_mean") for s in res.skipped)


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


def test_settings_a_label_cannot_tell_apart_get_their_values():
    both = method_settings(["grpo"], {"scale": ["group", "batch"]})
    assert [m.label for m in both] == ["grpo scale=group", "grpo scale=batch"]


@pytest.fixture
def registered():
    """A method registered at run time, with a sweep of two settings; unregistered after."""
    name = "test_demo_tail"

    def tail(z, *, weights=None, tail=1.0):
        return rewardagg.softmin(z, kappa=2 * tail, weights=weights)

    rewardagg.register_aggregator(
        name, tail, params={"tail": 1.0}, sweep=({"tail": 0.5}, {"tail": 2.0})
    )
    try:
        yield name
    finally:
        rewardagg.unregister_aggregator(name)


def test_a_registered_method_is_trained_with_its_sweep(registered):
    methods = default_methods()
    mine = [m for m in methods if m.method == registered]
    assert [m.label for m in mine] == [f"{registered} tail=0.5", f"{registered} tail=2"]
    assert methods[-len(VARIANTS) - 2 : -len(VARIANTS)] == mine  # after the built-ins
    res = run_demo([TINY], DemoConfig(seeds=2, steps=2, methods=tuple(mine), workers=2))[0]
    assert res.metrics["rubric_score"].shape == (2, 2)


class _CountingController:
    """A stateful per-run controller: GDPO with weights that grow per batch."""

    def __init__(self, step):
        self.step, self.calls = step, 0

    def advantages(self, rewards, **kw):
        self.calls += 1
        w = np.ones(rewards.shape[1]) + self.step * self.calls
        w[0] = 1.0
        return rewardagg.advantages(rewards, **{**kw, "weights": w})


def test_issue25_a_registered_controller_runs_once_per_seed_and_batch():
    made = []

    def factory(option, spec, ctx):
        made.append((option, spec.label, ctx.judge_noise, ctx.n_rewards))
        return _CountingController(option["step"])

    register_controller("test_counter", factory)
    try:
        spec = MethodSpec("gdpo+count", "gdpo", {}, {"test_counter": {"step": 0.5}})
        assert not stackable(spec) and "test_counter" not in advantage_options(spec)
        sc = select_scenarios(["k5-common-noisy"])[0]
        res = train_rubric(sc, [spec, *default_methods(["gdpo"])], [0, 1], steps=3)
        assert made == [({"step": 0.5}, "gdpo+count", 0.1, 5)] * 2  # one per seed
        # growing weights on the non-critical columns change the run; seed by seed
        assert not np.array_equal(res.final["mu"][0], res.final["mu"][1])
        assert "multiplier" not in res.metrics  # no multipliers, no column
    finally:
        from rewardagg.demo.settings import CONTROLLERS

        CONTROLLERS.pop("test_counter")


# ----------------------------------------------------------------------------- engine
def test_stacked_seeds_give_each_seed_its_own_advantages_exactly():
    rng = np.random.default_rng(3)
    S, N, K, G = 3, 32, 6, 4
    R = (rng.random((S, N, K)) < 0.6).astype(float)
    R[:, :4, 3] = np.nan
    R[:, 4:8, 1:3] = np.nan
    points = np.tile([10.0, 3.0, 2.0, 1.0, -4.0, -2.0], (S, 1))
    for spec in default_methods():
        trackers = [make_tracker(spec) for _ in range(S)]
        got = per_seed_advantages(R, spec, group_size=G, points=points, trackers=trackers)
        ref_trackers = [make_tracker(spec) for _ in range(S)]
        for s in range(S):
            kw = advantage_options(spec, points[s])
            call = ref_trackers[s].advantages if ref_trackers[s] else rewardagg.advantages
            ref = call(R[s], method=spec.method, group_size=G, backend="numpy", **kw)
            np.testing.assert_array_equal(got[s], ref, err_msg=spec.label)
    assert stackable(default_methods(["softmin"])[0])
    assert not any(stackable(m) for m in default_methods(["gd2po", "gdpo_lagrange", "softmin_snr"]))


# ----------------------------------------------------------------------------- the toy
def test_toy_windows_are_distinct():
    env = ConstraintEnv(n_rewards=4, length=6, window=3)
    np.testing.assert_array_equal(
        env.windows().astype(int), [[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0]]
    )
    big = ConstraintEnv(n_rewards=17).windows()
    assert len({tuple(r) for r in big}) == 16  # all distinct (was 6 distinct before)
    np.testing.assert_array_equal(big[5].astype(int), [1, 1, 0, 0, 0, 1])  # wraps around
    assert big[:6].sum(axis=1).tolist() == [3] * 6 and big[6:12].sum(axis=1).tolist() == [2] * 6
    assert (big[:, 4] | big[:, 5]).sum() == 10  # the windows the format costs words in
    with pytest.raises(ValueError, match="distinct windows"):
        ConstraintEnv(n_rewards=17, length=4)


def test_toy_rewards_and_exact_expectations():
    env = ConstraintEnv(n_rewards=5, n_prompts=2, length=4, constraint_length=2, window=2)
    tokens = np.array([[W, W, E, E], [E, E, E, W]])
    np.testing.assert_array_equal(env.format_reward(tokens), [1.0, 0.0])
    theta = np.random.default_rng(1).normal(size=(2, 4, 2))
    p_end = end_probability(theta)
    seqs = np.array(list(itertools.product([E, W], repeat=4)))
    for p in range(2):
        prob = np.prod(np.where(seqs == E, p_end[p], 1 - p_end[p]), axis=1)
        exact = (prob[:, None] * env.rewards(seqs)).sum(axis=0)
        np.testing.assert_allclose(env.expected_rewards(theta)[p], exact, rtol=1e-12)
    r = env.normalised(env.rewards(np.array([[W] * 4])))
    np.testing.assert_array_equal(r, [[0, 1, 1, 1, 1]])  # each window divided by its width


def test_toy_training_matches_a_plain_loop():
    sc = neglect_scenarios(n_rewards=[3], difficulty=[("x", 0.2)], n_prompts=2)[0]
    spec = MethodSpec("softmin k=1", "softmin", {"kappa": 1.0})
    res = train_neglect(sc, [spec], [0], steps=5)
    env, (P, G, L, K) = sc.env, (2, sc.group_size, sc.env.length, 3)
    rng = np.random.default_rng(np.random.SeedSequence([0, *sc.seed_key]))
    theta = env.initial_logits().copy()
    for _ in range(5):
        u, z = rng.random((P, G, L)), rng.standard_normal((P, G, K - 1))
        p_end = end_probability(theta)
        tokens = np.where(u < p_end[:, None, :], E, W)
        rewards = env.rewards(tokens, z).reshape(P * G, K)
        a = rewardagg.advantages(rewards, method="softmin", group_size=G, kappa=1.0)
        a = np.asarray(a).reshape(P, G)
        for p in range(P):
            pi = np.stack([p_end[p], 1 - p_end[p]], axis=-1)
            grad = sum(a[p, g] * (np.eye(2)[tokens[p, g]] - pi) for g in range(G))
            theta[p] += sc.lr * grad / G
    np.testing.assert_allclose(res.final["theta"][0, 0], theta, rtol=1e-10)
    per_prompt = [res.metrics[f"format_p{p + 1}"][0, 0] for p in range(P)]
    assert res.metrics["format"][0, 0] == pytest.approx(np.mean(per_prompt))


def test_probe_noise_free_lone_success():
    # One response of 8 meets the format and loses one word in verbose_3. Noise-free,
    # Z = [+2.47, 0, 0, -2.47] for it and [-0.35, 0, 0, +0.35] for the others: gdpo's
    # sum is 0 for every row; softmin, mean_variance and min score the success below.
    res = probe_advantages(ConstraintEnv(n_rewards=4, noise=0.0), n_meeting=1, draws=1)
    assert res.meeting["gdpo"] == 0.0 and res.failing["gdpo"] == 0.0
    for label in ("softmin k=1", "mean_var l=0.5", "min"):
        assert res.meeting[label] < 0 < res.failing[label]
    with pytest.raises(ValueError, match="n_meeting"):
        probe_advantages(ConstraintEnv(n_rewards=3), n_meeting=8)


# ----------------------------------------------------------------------------- statistics
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


def test_issue25_t_quantiles_are_exact_for_every_df():
    scipy_stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    for df in [*range(1, 121), 150, 500, 1000, 0.5, 2.5]:
        for p in (0.6, 0.9, 0.975, 0.995, 0.9999, 0.025):
            want = scipy_stats.t.ppf(p, df)
            assert t_quantile(p, df) == pytest.approx(want, rel=1e-12, abs=1e-14), (df, p)
    assert t_quantile(0.975, 1e6) == pytest.approx(scipy_stats.t.ppf(0.975, 1e6), rel=1e-8)
    # above 30 degrees of freedom it is no longer the normal 1.96
    assert t_quantile_975(40) == pytest.approx(2.021075390306273, rel=1e-12)
    for a, b in itertools.product((0.5, 1.0, 3.5, 40.0), (0.5, 2.0, 7.0)):
        for x in np.linspace(0.0, 1.0, 23):
            assert regularized_beta(a, b, x) == pytest.approx(special.betainc(a, b, x), abs=1e-14)
    with pytest.raises(ValueError, match="p must be"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="df must be"):
        t_quantile(0.9, 0)


def test_issue25_paired_ci_is_the_paired_t_interval():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=9), rng.normal(size=9)
    x[3] = np.nan  # seeds where one is missing are left out
    d = (x - y)[np.isfinite(x)]
    lo, hi = scipy_stats.t.interval(0.95, d.size - 1, loc=d.mean(), scale=scipy_stats.sem(d))
    mean, got_lo, got_hi = paired_ci(x, y)
    assert (mean, got_lo, got_hi) == pytest.approx((d.mean(), lo, hi), rel=1e-12)


def _rows(*specs):
    keys = ("scenario", "method", "metric", "mean", "ci_low", "ci_high", "n_seeds")
    return [dict(zip(keys, s, strict=True)) for s in specs]


def test_unpaired_verdicts_name_the_best_or_say_no_clear_difference():
    """The earlier overlap rule, kept for comparison with the paired one."""
    rows = _rows(
        ("s", "a", "rubric_score", 0.8, 0.75, 0.85, 4),
        ("s", "b", "rubric_score", 0.6, 0.55, 0.65, 4),
        ("s", "a", "critical_met", 0.5, 0.3, 0.7, 4),
        ("s", "b", "critical_met", 0.45, 0.4, 0.5, 4),
    )
    assert verdict(rows, "s", "rubric_score") == ("rubric_score: a best, 0.80 vs 0.60 (b), +0.20")
    assert verdict(rows, "s", "critical_met") == (
        "critical_met: no clear difference between a 0.50 and b 0.45"
    )
    three = [*rows, *_rows(("s", "c", "critical_met", 0.44, 0.35, 0.55, 4))]
    assert verdict(three, "s", "critical_met") == (
        "critical_met: no clear difference among the top 3 (a 0.50, b 0.45, ...)"
    )


def _seeds(metric, values, starts=None):
    """Per-seed rows of scenario "s": ``values`` maps method -> per-seed values."""
    rows = []
    for method, vals in values.items():
        for seed, v in enumerate(vals):
            start = np.nan if starts is None else starts[seed]
            rows.append(
                {"scenario": "s", "method": method, "metric": metric, "seed": seed,
                 "value": float(v), "start": float(start)}
            )  # fmt: skip
    return rows


def test_issue25_paired_verdict_where_overlapping_intervals_say_no_clear_difference():
    # Seeds vary a lot (shared by both settings: the same random numbers), a beats b on
    # every seed by 0.009 +- 0.002: the intervals of the means overlap, the paired one
    # of the difference is far from 0.
    base = np.array([0.80, 0.92, 0.85, 0.97, 0.88, 0.83, 0.95, 0.90])
    gap = np.array([0.009, 0.011, 0.007, 0.010, 0.008, 0.012, 0.009, 0.006])
    seeds = _seeds("rubric_score", {"b": base, "a": base + gap})
    rows = tidy_rows_of(seeds)
    assert verdict(rows, "s", "rubric_score").startswith(
        "rubric_score: no clear difference between a 0.90 and b 0.89"
    )
    (v,) = paired_verdicts(seeds)
    assert set(VERDICT_FIELDS) <= set(v)
    assert (v["kind"], v["best"], v["runner_up"]) == ("best", "a", "b")
    assert v["diff"] == pytest.approx(gap.mean(), abs=1e-6)
    h = t_quantile(0.975, 7) * gap.std(ddof=1) / np.sqrt(8)  # by hand
    assert (v["ci_low"], v["ci_high"]) == pytest.approx((gap.mean() - h, gap.mean() + h), abs=2e-6)
    assert verdict_lines([v]) == [
        f"s: rubric_score: a best, 0.90 vs 0.89 (b), paired diff +0.009 "
        f"[{gap.mean() - h:+.3f}, {gap.mean() + h:+.3f}]"
    ]
    # a difference whose sign changes from seed to seed: the interval covers 0
    flip = _seeds("rubric_score", {"b": base, "a": base + gap * np.tile([1, -1], 4) + 0.001})
    (v,) = paired_verdicts(flip)
    assert v["kind"] == "no clear difference" and v["ci_low"] < 0 < v["ci_high"]


def test_issue25_not_learned_when_no_setting_leaves_its_start_rate():
    start = np.array([0.10, 0.11, 0.09, 0.10, 0.12, 0.08])
    still = _seeds(
        "critical_met",
        {"a": start + np.array([0.01, -0.01, 0.0, 0.01, -0.005, 0.004]), "b": start - 0.001},
        start,
    )
    (v,) = paired_verdicts(still)
    assert v["kind"] == "not learned" and v["start"] == pytest.approx(0.1)
    assert verdict_lines([v]) == ["s: critical_met: no method learned it (start 0.10; top a 0.10)"]
    # a tiny but consistent gain (paired interval above 0) inside the final value's own
    # CI is not learning (power_mean at k17-rare-clean: 0.101 -> 0.103 +- 0.004)
    tiny = start + np.array([0.001, 0.003, 0.002, 0.002, 0.001, 0.003])
    assert paired_ci(tiny, start)[1] > 0
    (v,) = paired_verdicts(_seeds("critical_met", {"a": tiny, "b": start - 0.01}, start))
    assert v["kind"] == "not learned"
    moved = _seeds("critical_met", {"a": start + 0.3, "b": start - 0.001}, start)
    (v,) = paired_verdicts(moved)
    assert (v["kind"], v["best"]) == ("best", "a")
    # lower is better (critical_drop): the best has the lowest mean, diff < 0
    (v,) = paired_verdicts(_seeds("critical_drop", {"a": start, "b": start + 0.2}))
    assert (v["kind"], v["best"], v["diff"]) == ("best", "a", pytest.approx(-0.2))


def test_issue25_settings_identical_per_seed_are_named_together():
    vals = np.array([0.5, 0.6, 0.7])
    (v,) = paired_verdicts(
        _seeds("rubric_score", {"p=-1": vals + 0.1, "p=0": vals + 0.1, "gdpo": vals})
    )
    assert (v["best"], v["same_as"], v["runner_up"]) == ("p=-1", ["p=0"], "gdpo")
    assert verdict_lines([v])[0].startswith("s: rubric_score: p=-1 (= p=0) best, 0.70 vs 0.60")
    legend = format_legend(default_methods(["power_mean", "gdpo"]), ["rubric_score"])
    assert "note: power_mean p=-1 and power_mean p=0 are the same rule on 0/1 rewards" in legend
    assert "note:" not in format_legend(default_methods(["gdpo", "softmin"]), ["rubric_score"])
    # one seed: a difference without an interval, never "best"
    (v,) = paired_verdicts(_seeds("rubric_score", {"a": [0.9], "b": [0.1]}))
    assert v["kind"] == "no clear difference" and v["ci_low"] is None
    assert verdict_lines([v]) == [
        "s: rubric_score: no clear difference between a 0.90 and b 0.10 "
        "(paired diff +0.800, one seed: no interval)"
    ]


def tidy_rows_of(seeds):
    """The tidy rows (mean and t-interval per setting) of per-seed rows."""
    out = []
    for method in dict.fromkeys(r["method"] for r in seeds):
        v = np.array([r["value"] for r in seeds if r["method"] == method])
        m, h = (float(a) for a in mean_ci(v))
        metric = seeds[0]["metric"]
        out.append(
            {"scenario": "s", "method": method, "metric": metric, "mean": m,
             "ci_low": m - h, "ci_high": m + h, "n_seeds": v.size}
        )  # fmt: skip
    return out


# ----------------------------------------------------------------------------- report
def test_tables_files_and_output_folder(tmp_path):
    toy = neglect_scenarios(n_rewards=[3], difficulty=[("x", 0.3)], n_prompts=2)[0]
    methods = tuple(default_methods(["gdpo", "softmin", "gdpo_lagrange"], params={"kappa": [1]}))
    results = run_demo([TINY, toy], DemoConfig(seeds=2, steps=3, methods=methods, workers=1))
    rows = tidy_rows(results)
    assert set(rows[0]) == {"scenario", "method", "metric", "mean", "ci_low", "ci_high", "n_seeds"}
    assert {r["metric"] for r in rows if r["method"] == "gdpo+lagrange"} >= {"multiplier"}
    assert not any(r["metric"] == "multiplier" and r["method"] == "gdpo" for r in rows)
    table = format_table(rows, descriptions={"tiny": "a tiny rubric"})
    assert "== tiny: a tiny rubric (mean ± 95% CI, 2 seeds)" in table
    assert "per prompt" in table
    verdicts = format_verdicts(paired_verdicts(seed_rows(results))).splitlines()
    assert len(verdicts) == 3 and verdicts[1].startswith("tiny: rubric_score: ")
    assert verdicts[2].startswith(f"{toy.name}: format: ")
    assert "rubric_score" in format_summary(rows, "rubric_score")
    legend = format_legend(list(methods), [r["metric"] for r in rows])
    assert "gdpo+lagrange" in legend and "neglect:" in legend
    pytest.importorskip("matplotlib")
    out = check_output_dir(tmp_path / "out")
    paths = write_outputs(results, DemoConfig(seeds=2, steps=3, methods=methods), out)
    assert {p.name for p in paths.values()} == {
        "demo.csv", "demo_seeds.csv", "demo.json", "demo.png"
    }  # fmt: skip
    assert read_rows(paths["csv"]) == rows
    seeds = read_seed_rows(paths["seeds"])
    assert len(seeds) == 2 * len(methods) * 2 * 2  # scenarios x settings x metrics x seeds
    data = json.loads(paths["json"].read_text())
    assert [list(v)[:8] for v in data["verdicts"]] == [list(VERDICT_FIELDS)] * 4
    assert data["verdicts"] == json.loads(json.dumps(paired_verdicts(seeds)))
    assert [s["name"] for s in data["scenarios"]] == ["tiny", toy.name]
    assert len(data["scenarios"][0]["curves"]["gdpo"]["critical_met"]["mean"]) == 3
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError, match=r"demo\.csv"):
        check_output_dir(out)
    check_output_dir(out, overwrite=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        check_output_dir(tmp_path / "file")


# ----------------------------------------------------------------------------- regression
def _small_run() -> list[dict]:
    """The small configuration whose rows are committed in tests/fixtures/demo_small.json."""
    methods = default_methods(["gdpo", "softmin", "gdpo_point_weights", "gdpo_lagrange"])
    scenarios = select_scenarios(["k17-common-noisy", "k5-rare-clean"])
    config = DemoConfig(seeds=2, steps=15, methods=tuple(methods), workers=1)
    return tidy_rows(run_demo(scenarios, config))


def test_small_run_matches_the_committed_rows():
    rows = _small_run()
    if os.environ.get("REWARDAGG_REGENERATE") == "1":
        SMALL_FIXTURE.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    committed = json.loads(SMALL_FIXTURE.read_text())["rows"]
    assert [(r["scenario"], r["method"], r["metric"]) for r in rows] == [
        (r["scenario"], r["method"], r["metric"]) for r in committed
    ]
    for got, want in zip(rows, committed, strict=True):
        for key in ("mean", "ci_low", "ci_high"):
            assert got[key] == pytest.approx(want[key], abs=2e-6), (got, want)
        assert got["n_seeds"] == want["n_seeds"]


def _text_blocks(path: pathlib.Path) -> list[str]:
    text = path.read_text()
    return [b.strip("\n") for b in re.findall(r"```text\n(.*?)```", text, flags=re.S)]


def _printed_reference_blocks() -> list[str]:
    """Every block ``rewardagg demo`` prints for the shipped reference runs."""
    printed = []
    for family in ("rubric", "extras", "long", "neglect"):
        rows = reference_rows(family)
        metrics = dict.fromkeys(r["metric"] for r in rows)
        printed += [
            format_summary(rows, m) for m in ("rubric_score", "critical_met") if m in metrics
        ]
        printed += format_table(rows).split("\n\n")
        printed.append(format_verdicts(paired_verdicts(reference_seed_rows(family))))
    return printed


@pytest.mark.parametrize("doc", ["README.md", "docs/choosing.md", "docs/why.md"])
def test_the_numbers_in_the_docs_are_the_reference_run(doc):
    """Every text block that shows demo output is exactly what the reference rows print."""
    printed = _printed_reference_blocks()
    shown = 0
    for block in _text_blocks(ROOT / doc):
        if block.startswith(("rubric_score ", "critical_met ", "== ", "verdicts ")):
            assert block in printed, block[:300]
            shown += 1
    assert shown, f"{doc} shows no demo output"


def test_issue25_one_take_away_in_the_readme_the_docs_and_the_cli():
    block = TAKEAWAY_HEADER + "\n" + TAKEAWAY
    for doc in ("README.md", "docs/choosing.md"):
        assert block in _text_blocks(ROOT / doc), doc
    # its numbers are the reference runs' (it is filled in from them)
    assert TAKEAWAY == takeaway_text()
    assert "SoftMin of group z-scores" in TAKEAWAY and "600 updates" in TAKEAWAY


def test_issue25_reference_seed_rows_reproduce_the_tidy_rows():
    for family in ("rubric", "extras", "long", "neglect"):
        rows = {(r["scenario"], r["method"], r["metric"]): r for r in reference_rows(family)}
        seeds = reference_seed_rows(family)
        assert seeds and {r["seed"] for r in seeds} == set(range(12))
        for key in dict.fromkeys((r["scenario"], r["method"], r["metric"]) for r in seeds):
            v = np.array(
                [r["value"] for r in seeds if (r["scenario"], r["method"], r["metric"]) == key]
            )
            m, _ = mean_ci(v)
            assert float(m) == pytest.approx(rows[key]["mean"], abs=2e-6), key


@pytest.mark.skipif(
    os.environ.get("REWARDAGG_FULL_DEMO") != "1", reason="a full default run (~1 min)"
)
def test_reference_run_is_the_default_demo(tmp_path):
    results = run_demo(select_scenarios(["rubric"]), DemoConfig())
    write_rows(tidy_rows(results), tmp_path / "demo.csv")
    assert read_rows(tmp_path / "demo.csv") == reference_rows()
    write_seed_rows(seed_rows(results), tmp_path / "demo_seeds.csv")
    assert read_seed_rows(tmp_path / "demo_seeds.csv") == reference_seed_rows()
