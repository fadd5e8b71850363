"""rewardagg.toolcall (issue 28): the tool-call task, its rewards, the report's statistics,
the committed reference run and the docs tables, and ``rewardagg toolcall --quick`` end to
end on TRL's real GRPOTrainer (skipped without trl).

Runtime: the pure tests take about a second; the quick run about 60 s of CPU time on one
core (3-4 minutes of wall time on the shared 2-core machine with a load near 6).
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from rewardagg.cli import main
from rewardagg.toolcall import cli as tc_cli
from rewardagg.toolcall.evaluation import METRICS
from rewardagg.toolcall.reference import REFERENCE_CSV, reference_report
from rewardagg.toolcall.report import (
    ALL_METRICS,
    markdown_tables,
    paired_verdicts,
    read_rows,
    tidy_rows,
)
from rewardagg.toolcall.rewards import CHATTER_BUDGET, POLITE_PHRASE, REWARD_NAMES, score
from rewardagg.toolcall.runner import SeedResult
from rewardagg.toolcall.settings import ADAPTIVE_RUN, QUICK, RUN, SETTINGS, select_settings
from rewardagg.toolcall.task import TOOLS, call_text, is_held_out, make_examples, vocabulary
from rewardagg.toolcall.warmstart import CHATTER, FLAWS, demonstration

ROOT = Path(__file__).resolve().parents[1]
GOLD = {"name": "set_alarm", "arguments": {"time": "7am", "label": "gym"}}
CALL = call_text("set_alarm", [("time", "7am"), ("label", "gym")])


# -- the task -----------------------------------------------------------------------------
def test_calls_are_json_and_words_are_in_the_vocabulary():
    words = set(vocabulary((*CHATTER, POLITE_PHRASE, "=>")))
    for ex in make_examples(300, 1):
        text = ex.target()
        inner = text.removeprefix("<tool_call> ").removesuffix(" </tool_call>")
        assert json.loads(inner) == ex.call
        assert set(ex.prompt.split()) <= words and set(text.split()) <= words
        assert len(text.split()) == 5 + 2 * len(ex.arguments)
    rng = random.Random(0)
    for ex in make_examples(300, 2):
        assert set(demonstration(ex, rng).split()) <= words


def test_held_out_calls_never_appear_in_training():
    train = {(e.name, e.arguments) for s in range(3) for e in make_examples(2000, s)}
    held = {(e.name, e.arguments) for e in make_examples(500, 7, held_out=True)}
    assert train and held and not train & held
    assert all(is_held_out(*c) for c in held)
    assert {e.name for e in make_examples(200, 3, held_out=True)} == {t.name for t in TOOLS}


def test_demonstration_flaw_rates_match_the_stated_probabilities():
    """Each flaw is drawn independently: its share over 4000 demonstrations is within 4
    binomial standard errors of its probability."""
    rng = random.Random(5)
    examples = make_examples(4000, 5)
    demos = [demonstration(e, rng) for e in examples]
    n = len(demos)
    shares = {
        "chatter": sum(d.split()[0] in {c.split()[0] for c in CHATTER} for d in demos) / n,
        "polite": sum(d.endswith(POLITE_PHRASE) for d in demos) / n,
        "format": sum(score(d, e.call)["format"] == 0 for d, e in zip(demos, examples, strict=True))
        / n,
    }
    for flaw, share in shares.items():
        p = FLAWS[flaw]
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n), (flaw, share, p)
    parsed = [
        (d, e) for d, e in zip(demos, examples, strict=True) if score(d, e.call)["format"] == 1
    ]
    wrong_tool = sum(score(d, e.call)["tool"] == 0 for d, e in parsed) / len(parsed)
    p = FLAWS["tool"]
    assert abs(wrong_tool - p) < 4 * math.sqrt(p * (1 - p) / len(parsed))


# -- the rewards, against hand-derived values --------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CALL, dict(format=1, tool=1, keys=1, values=1, budget=1, polite=0, exact_call=1)),
        # chatter (1 word) and the phrase (3 words): 4 words outside, budget 1 - 4/4
        (
            f"sure {CALL} {POLITE_PHRASE}",
            dict(format=1, tool=1, keys=1, values=1, budget=0, polite=1, exact_call=1),
        ),
        (
            f"{CALL} {POLITE_PHRASE}",
            dict(format=1, tool=1, keys=1, values=1, budget=0.25, polite=1, exact_call=1),
        ),
        # one wrong value of two; a missing closing brace breaks the JSON
        (
            CALL.replace("gym", "work"),
            dict(format=1, tool=1, keys=1, values=0.5, budget=1, polite=0, exact_call=0),
        ),
        (CALL.replace("}}", "}"), dict(format=0, tool=0, keys=0, values=0, budget=1, polite=0)),
        # a missing closing tag: no call span, all 11 words count as outside
        (CALL.replace(" </tool_call>", ""), dict(format=0, budget=0)),
        # two calls are not one call
        (f"{CALL} {CALL}", dict(format=0, exact_call=0)),
        # wrong tool, and keys {time, label} vs {time, day}: Jaccard 1/3
        (
            call_text("get_weather", [("time", "7am"), ("day", "monday")]),
            dict(format=1, tool=0, keys=1 / 3, values=0.5, exact_call=0),
        ),
    ],
)
def test_rewards_by_hand(text, expected):
    got = score(text, GOLD)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name
    assert set(got) == {*REWARD_NAMES, "exact_call"}
    assert CHATTER_BUDGET == 4  # the budget values above assume it


def test_reward_functions_follow_trls_convention():
    from rewardagg.toolcall.rewards import reward_functions

    funcs = reward_functions()
    assert [f.__name__ for f in funcs] == list(REWARD_NAMES)
    gold = [json.dumps(GOLD)] * 2
    conversational = [[{"role": "assistant", "content": CALL}]]
    assert funcs[0](completions=[CALL, "hello"], gold=gold, prompts=["a", "b"]) == [1.0, 0.0]
    assert funcs[3](completions=conversational, gold=gold[:1]) == [1.0]


# -- settings and report statistics --------------------------------------------------------
def test_settings_selection():
    assert [s.label for s in select_settings(None)] == [s.label for s in SETTINGS]
    assert [s.label for s in select_settings(["gdpo", "grpo", "gdpo"])] == ["gdpo", "grpo"]
    with pytest.raises(ValueError, match="unknown setting"):
        select_settings(["nope"])


def test_issue28_adaptive_settings_fit_the_run_length():
    """The adaptive settings use gdpo with ADAPTIVE_RUN, whose guard can act within a run."""
    by = {s.label: dict(s.config) for s in SETTINGS}
    for label in ("gdpo_adaptive", "gdpo_adaptive_constrained"):
        assert by[label]["advantage_method"] == "gdpo"
        assert {k: by[label][k] for k in ADAPTIVE_RUN} == dict(ADAPTIVE_RUN)
    constrained = {
        k: v for k, v in by["gdpo_adaptive_constrained"].items() if k not in ADAPTIVE_RUN
    }
    assert constrained == by["gdpo_constrained"]
    # a reward stalled from the first batch loses its weight after `patience` batches: this
    # must happen several times over within the reference run (the default, 40, would not)
    assert 3 * ADAPTIVE_RUN["adaptive_patience"] <= RUN.steps
    assert ADAPTIVE_RUN["adaptive_patience"] < QUICK.steps


@pytest.mark.slow
@pytest.mark.parametrize("label", ["gdpo_adaptive", "gdpo_adaptive_constrained"])
def test_issue28_adaptive_settings_train_on_trls_trainer(label, tmp_path):
    """Three GRPO steps of each adaptive setting: the trainer runs the settings' controller
    and the curves record its weights, which sum to K every step (trusted rewards share
    |T|, the others weigh 1: DESIGN.md 2d), and the constrained one its multiplier."""
    pytest.importorskip("trl")
    pytest.importorskip("torch")
    from dataclasses import replace

    from rewardagg.toolcall.evaluation import PROMPT_END
    from rewardagg.toolcall.model import build_model
    from rewardagg.toolcall.tokenizer import build_tokenizer
    from rewardagg.toolcall.training import train_setting

    tokenizer = build_tokenizer(vocabulary((*CHATTER, POLITE_PHRASE, PROMPT_END)))
    model = build_model(tokenizer, "tiny", seed=0)
    sizes = replace(QUICK, steps=3, prompts_per_step=2, num_generations=4, max_new_tokens=8)
    (setting,) = select_settings([label])
    _, curves = train_setting(
        model, tokenizer, setting, make_examples(16, 0), sizes, seed=0, out=tmp_path
    )
    for name in REWARD_NAMES:
        assert len(curves[f"weight_{name}"]) == len(curves[f"trusted_{name}"]) == 3
        assert all(t == 1.0 for t in curves[f"trusted_{name}"])  # patience 10 > 3 steps
    for step in range(3):
        assert sum(curves[f"weight_{n}"][step] for n in REWARD_NAMES) == pytest.approx(6.0)
    assert ("lambda_format" in curves) == label.endswith("constrained")


def _fake_results(n_seeds=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_seeds):
        start = {m: float(rng.uniform()) for m in ALL_METRICS}
        rates = {lab: {m: float(rng.uniform()) for m in ALL_METRICS} for lab in ("gdpo", "grpo")}
        out.append(SeedResult(seed=s, start=start, rates=rates))
    return out


def test_paired_verdicts_equal_scipys_paired_t_interval():
    results = _fake_results()
    verdicts = paired_verdicts(results, ["gdpo", "grpo"])
    for v in verdicts:
        a = np.array([r.rates[v["method"]][v["metric"]] for r in results])
        base = v["baseline"]
        b = np.array(
            [
                r.start[v["metric"]] if base == "start" else r.rates[base][v["metric"]]
                for r in results
            ]
        )
        d = a - b
        lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
        assert v["mean_diff"] == pytest.approx(d.mean(), abs=1e-6)
        assert v["ci_low"] == pytest.approx(lo, abs=2e-3) and v["ci_high"] == pytest.approx(
            hi, abs=2e-3
        )
        assert v["verdict"] == (
            "higher" if lo > 0 else "lower" if hi < 0 else "no clear difference"
        )
    assert {v["baseline"] for v in verdicts} == {"start", "gdpo"}
    rows = tidy_rows(results, ["gdpo", "grpo"])
    assert len(rows) == 2 * len(ALL_METRICS) and all(r["n_seeds"] == 4 for r in rows)


# -- the reference run and the docs ---------------------------------------------------------
def test_reference_rows_are_the_reference_json():
    report = reference_report()
    assert read_rows(REFERENCE_CSV) == report["rows"]
    labels = list(report["settings"])
    assert {(r["method"], r["metric"]) for r in report["rows"]} == {
        (lab, m) for lab in labels for m in ALL_METRICS
    }
    assert set(report["start"]) == set(ALL_METRICS)
    assert all(r["n_seeds"] == len(report["run"]["seeds"]) for r in report["rows"])


def test_issue28_reference_adaptive_weights_sum_to_k():
    """The reference's adaptive weights (means over seeds) sum to K at every step, and the
    untrusted rewards sit at weight 1 (DESIGN.md 2d), within the file's 6 decimals."""
    curves = reference_report()["curves"]
    for lab in ("gdpo_adaptive", "gdpo_adaptive_constrained"):
        w = np.array([curves[lab][f"weight_{n}"] for n in REWARD_NAMES])
        t = np.array([curves[lab][f"trusted_{n}"] for n in REWARD_NAMES])
        np.testing.assert_allclose(w.sum(0), len(REWARD_NAMES), atol=1e-5)
        np.testing.assert_allclose(w[t == 0.0], 1.0, atol=1e-5)  # untrusted in every seed


def test_issue28_docs_tables_equal_the_reference_run():
    """docs/toolcall.md shows exactly markdown_tables(reference) and the run's numbers."""
    report = reference_report()
    page = (ROOT / "docs" / "toolcall.md").read_text()
    assert markdown_tables(report).strip() in page
    run = report["run"]
    for fact in (f"{len(run['seeds'])} seeds", f"{run['steps']} steps", run["machine"]):
        assert str(fact) in page, fact
    assert f"{run['wall_seconds'] / 60:.0f} min" in page
    for m in ("format", "exact_call"):
        assert f"{report['start'][m + '_sampled']:.2f}" in page
    assert "toolcall.md" in (ROOT / "docs" / "choosing.md").read_text()


# -- the command line -------------------------------------------------------------------------
def test_without_the_trl_extra_the_command_says_so_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(tc_cli, "_missing", lambda: ["trl"])
    assert main(["toolcall", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rewardagg[trl]" in err and "trl" in err
    assert not list(tmp_path.iterdir())


def test_bad_options_are_usage_errors(capsys, tmp_path):
    assert main(["toolcall", "--methods", "nope", "--out", str(tmp_path)]) == 2
    assert "--methods" in capsys.readouterr().err
    assert main(["toolcall", "--seeds", "-1"]) == 2
    assert main(["toolcall", "--steps", "0"]) == 2


@pytest.mark.slow
def test_issue28_quick_run_learns_the_format_and_writes_every_setting(tmp_path, capsys):
    pytest.importorskip("trl")
    pytest.importorskip("torch")
    out = tmp_path / "quick"
    assert main(["toolcall", "--quick", "--out", str(out), "--no-plot"]) == 0
    report = json.loads((out / "toolcall.json").read_text())
    rows = read_rows(out / "toolcall.csv")
    assert rows == report["rows"]
    labels = [s.label for s in SETTINGS]
    assert {(r["method"], r["metric"]) for r in rows} == {
        (lab, m) for lab in labels for m in ALL_METRICS
    }
    by = {(r["method"], r["metric"]): r["mean"] for r in rows}
    # the warm start breaks the format in a sizeable share of samples; gdpo repairs some
    assert report["start"]["format_sampled"] < 0.85
    assert by[("gdpo", "format_sampled")] > report["start"]["format_sampled"]
    for lab in labels:
        assert len(report["curves"][lab]["format"]) == report["run"]["steps"]
    assert len(report["curves"]["gdpo_constrained"]["lambda_format"]) == report["run"]["steps"]
    for lab in ("gdpo_adaptive", "gdpo_adaptive_constrained"):
        weights = np.array([report["curves"][lab][f"weight_{n}"] for n in REWARD_NAMES])
        assert weights.shape == (len(REWARD_NAMES), report["run"]["steps"])
        np.testing.assert_allclose(weights.sum(0), len(REWARD_NAMES), atol=1e-5)  # 6 decimals
    assert (out / "warm_start").is_dir()
    printed = capsys.readouterr().out
    assert markdown_tables(report).strip() in printed
    assert all(0 <= r["mean"] <= 1 for r in rows)
    assert not re.search(r"nan", (out / "toolcall.csv").read_text())
    assert METRICS[-1] == "exact_call"


def test_adaptive_run_pins_the_rule_the_reference_ran():
    """ADAPTIVE_RUN's controller is DESIGN.md 2d with the reference's parameters and no
    plateau hold, whatever the library's default rule is now."""
    import rewardagg
    from rewardagg.integrations._controllers import parse_adaptive

    given = {"adaptive" if k == "advantage_adaptive" else k: v for k, v in ADAPTIVE_RUN.items()}
    controller = parse_adaptive(given).controller(["a", "b"])
    reference = rewardagg.AdaptiveWeights(
        reward_names=["a", "b"], tau=10.0, beta=0.9, patience=10, z=3.0, plateau_margin=None
    )
    assert controller.state_dict() == reference.state_dict()
