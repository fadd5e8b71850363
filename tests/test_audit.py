"""rewardagg audit: reading rollouts, the diagnostics, and the errors for bad files.

Runtime: under 1 s.

The fixture ``fixtures/audit_rollouts.csv`` (3 prompts x 4 completions; ``length`` is a
cost) was worked out by hand; group z-scores use Bessel's std (eps 1e-6 ignored):

    p1  format 1 1 1 0     Z  .5  .5  .5 -1.5
        help   2 4 6 8     Z -1.16 -.39 .39 1.16
        length all 100     zero spread -> Z 0
    p2  format all 0       zero spread -> Z 0
        help   all 5       zero spread -> Z 0
        length 50 150 120 80  (negated) Z 1.14 -1.14 -.45 .45
    p3  format 1 0 1 0     Z  .87 -.87  .87 -.87
        help   8 9 1 2     Z  .73  .98 -.98 -.73
        length 300 100 100 100 (negated) Z -1.5 .5 .5 .5

Rows with some Z <= -1: p1r4 (format), p1r1 (help), p2r2 and p3r1 (length): 4 rows.

gdpo S = sum of Z: p1 -.66 .11 .89 -.34 | p2 1.14 -1.14 -.45 .45 | p3 .10 .61 .39 -1.10;
mean(S) = 0, so A > 0 exactly where S > 0. Masked (Z <= -1, A > 0): p3r1 only -> 1,
per reward (0, 0, 1). Thresholds format < 1 (7 rows: p1r4, p2 all, p3r2, p3r4) and
length > 200 (p3r1): 8 failing rows; masked: p2r1, p2r4, p3r2 (format), p3r1 (length)
-> 4, per reward (3, 0, 1).

min S: p1 -1.16 -.39 0 -1.5 | p2 0 -1.14 -.45 0 | p3 -1.5 -.87 -.98 -.87; mean -.74,
positives p1r2, p1r3, p2r1, p2r3, p2r4. Masked (Z): 0. Masked (threshold): p2r1, p2r3,
p2r4 -> 3, per reward (3, 0, 0).

Bottleneck (lowest Z, ties split): format 1+.5+.5+1+1 = 4, help 1+1+.5+.5+1 = 4,
length 4, so 1/3 each. Zero-spread groups: one per reward, 1/3 each; no group without
any signal.
"""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest

import rewardagg
from rewardagg.audit import default_audit_methods, format_report, rankdata, run_audit, spearman
from rewardagg.rollouts_io import RolloutFileError, load_rollouts, parse_number

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "audit_rollouts.csv"
THRESHOLDS = {"format": 1.0, "length": 200.0}


def _audit(data, **kw):
    kw.setdefault("methods", default_audit_methods(["gdpo", "min", "softmin", "grpo"]))
    return run_audit(
        data.rewards, data.group_codes(), reward_names=data.reward_names, costs=["length"],
        thresholds=THRESHOLDS, **kw,
    )  # fmt: skip


def _by_label(rep):
    return {m.label: m for m in rep.methods}


def test_fixture_is_read_and_columns_inferred():
    data = load_rollouts(FIXTURE)
    assert data.group_column == "prompt_id"
    assert data.reward_names == ["format", "helpfulness", "length"]  # text columns skipped
    assert data.inferred and data.n_rows == 12
    assert data.rewards[3].tolist() == [0.0, 8.0, 100.0]
    assert data.lines[0] == 2  # the header is line 1


def test_fixture_hand_computed_counts():
    rep = _audit(load_rollouts(FIXTURE))
    assert rep.n_groups == 3 and rep.group_sizes == (4, 4)
    assert rep.z_failures == 4
    assert rep.z_failures_per_reward.tolist() == [1, 1, 2]
    assert rep.threshold_failures == 8
    assert rep.threshold_failures_per_reward.tolist() == [7, 0, 1]
    np.testing.assert_allclose(rep.bottleneck_share, [1 / 3] * 3)
    np.testing.assert_allclose(rep.zero_spread_fraction, [1 / 3] * 3)
    assert rep.groups_without_signal == 0
    m = _by_label(rep)
    assert m["gdpo"].masked_failures == 1
    assert m["gdpo"].masked_failures_per_reward.tolist() == [0, 0, 1]
    assert m["gdpo"].threshold_masked == 4
    assert m["gdpo"].threshold_masked_per_reward.tolist() == [3, 0, 1]
    assert m["gdpo"].positive == 7
    assert m["min"].masked_failures == 0
    assert m["min"].threshold_masked == 3
    assert m["min"].threshold_masked_per_reward.tolist() == [3, 0, 0]
    assert m["min"].positive == 5
    # min: p1 has 4 distinct scores, p2 and p3 three each (two rows tie on the same cell).
    assert m["min"].distinct_per_group_mean == pytest.approx(10 / 3)


def test_report_text_mentions_every_method_and_reward():
    text = format_report(_audit(load_rollouts(FIXTURE)))
    for word in ("gdpo", "min", "softmin k=1", "grpo", "format", "helpfulness", "length (cost)"):
        assert word in text
    assert "Spearman" in text and "groups with no signal on any reward: 0 of 3" in text


def test_masked_failures_match_the_library_info_at_level_minus_one():
    data = load_rollouts(FIXTURE)
    r = data.rewards * np.array([1, 1, -1])
    codes = data.group_codes()
    specs = default_audit_methods(["gdpo", "softmin", "min"])
    for level in (-1.0, -0.999999):  # the second takes the audit's own code path
        rep = _audit(data, z_level=level, methods=specs)
        for m, spec in zip(rep.methods, specs, strict=True):
            _, info = rewardagg.advantages(
                r, method=spec.method, group_ids=codes, return_info=True, **spec.params
            )
            assert m.masked_failures == info.masked_failures
            assert m.masked_failures_per_reward.tolist() == info.masked_failures_per_reward.tolist()


def test_default_methods_are_every_table_method_at_each_sweep_setting():
    specs = default_audit_methods()
    assert [s.method for s in specs] == [
        name for name in rewardagg.available_methods() for _ in rewardagg.get_aggregator(name).sweep
    ]
    labels = [s.label for s in specs]
    for label in ("grpo", "gdpo", "mean", "softmin k=0.5", "softmin k=1", "softmin k=2"):
        assert label in labels
    assert [s.label for s in default_audit_methods(["min", "softmin"], params={"kappa": [4]})] == [
        "min",
        "softmin k=4",
    ]


NONNEGATIVE = [n for n in rewardagg.available_methods() if rewardagg.get_aggregator(n).nonnegative]


@pytest.mark.skipif(not NONNEGATIVE, reason="no method of the table needs non-negative rewards")
def test_a_method_for_nonnegative_rewards_is_skipped_on_negative_ones():
    name = NONNEGATIVE[0]
    data = load_rollouts(FIXTURE)  # length is a cost: negated, so negative
    rep = _audit(data, methods=default_audit_methods(["gdpo", name], params={}))
    labels = [s.label for s in default_audit_methods([name])]
    assert [m.label for m in rep.methods] == ["gdpo"]
    why = "is defined for non-negative rewards only, and these have negative values"
    assert rep.skipped == [(label, why) for label in labels]
    assert rep.spearman.shape == (1, 1)
    assert f"not run on these rewards:\n    {labels[0]} {why}" in format_report(rep)
    with pytest.raises(ValueError, match="no method can run on these rewards"):
        _audit(data, methods=default_audit_methods([name]))
    # Without the cost every reward is >= 0: it runs.
    plain = run_audit(data.rewards, data.group_codes(), methods=default_audit_methods([name]))
    assert [m.label for m in plain.methods] == labels and not plain.skipped


def test_row_order_does_not_matter():
    data = load_rollouts(FIXTURE)
    perm = np.random.default_rng(3).permutation(data.n_rows)
    a = _audit(data)
    b = run_audit(
        data.rewards[perm], data.group_labels[perm], reward_names=data.reward_names,
        costs=["length"], thresholds=THRESHOLDS,
        methods=default_audit_methods(["gdpo", "min", "softmin", "grpo"]),
    )  # fmt: skip
    for ma, mb in zip(a.methods, b.methods, strict=True):
        assert ma.masked_failures == mb.masked_failures
        assert ma.threshold_masked == mb.threshold_masked
        np.testing.assert_allclose(ma.advantages[perm], mb.advantages, atol=1e-12)
    np.testing.assert_allclose(a.spearman, b.spearman, atol=1e-12)


def test_cost_flag_equals_negating_the_column():
    data = load_rollouts(FIXTURE)
    negated = data.rewards * np.array([1, 1, -1])
    a = run_audit(data.rewards, data.group_codes(), reward_names=data.reward_names,
                  costs=["length"])  # fmt: skip
    b = run_audit(negated, data.group_codes(), reward_names=data.reward_names)
    for ma, mb in zip(a.methods, b.methods, strict=True):
        np.testing.assert_array_equal(ma.advantages, mb.advantages)


def test_jsonl_gives_the_same_audit(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    with open(FIXTURE, newline="") as f, open(path, "w") as out:
        for row in csv.DictReader(f):
            for k in ("format", "helpfulness", "length"):
                row[k] = float(row[k])
            row["format"] = bool(row["format"])  # JSON booleans read as 1/0
            out.write(json.dumps(row) + "\n\n")  # blank lines are skipped
    a, b = _audit(load_rollouts(FIXTURE)), _audit(load_rollouts(path))
    for ma, mb in zip(a.methods, b.methods, strict=True):
        np.testing.assert_array_equal(ma.advantages, mb.advantages)


def test_missing_values_are_nan_and_skipped(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("group,a,b\n0,1,\n0,2,NaN\n0,3,1\n1,1,null\n1,5,2\n1,,3\n")
    data = load_rollouts(path)
    assert np.isnan(data.rewards).sum() == 4
    rep = run_audit(data.rewards, data.group_codes(), reward_names=data.reward_names)
    assert rep.missing_per_reward.tolist() == [1, 3]
    assert rep.rows_without_reward == 0
    for m in rep.methods:
        assert np.all(np.isfinite(m.advantages))


def test_pairs_get_a_note_about_z_scores(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("group,a\n0,1\n0,2\n1,3\n1,0\n")
    data = load_rollouts(path)
    text = format_report(run_audit(data.rewards, data.group_codes()))
    assert "groups of at most 2" in text


def test_rankdata_and_spearman_match_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=40).astype(float)  # many ties
    np.testing.assert_allclose(rankdata(x), scipy_stats.rankdata(x))
    cols = np.column_stack([x, rng.normal(size=40), x**2 + rng.normal(size=40) * 0.1])
    rho = spearman(cols)
    ref = scipy_stats.spearmanr(cols).statistic
    np.testing.assert_allclose(rho, ref, atol=1e-12)
    const = spearman(np.column_stack([x, np.ones(40)]))
    assert np.isnan(const[0, 1]) and np.isnan(const[1, 1])


def test_weights_zero_drop_a_reward_from_the_failures():
    data = load_rollouts(FIXTURE)
    rep = run_audit(data.rewards, data.group_codes(), reward_names=data.reward_names,
                    costs=["length"], weights=[1, 1, 0])  # fmt: skip
    assert rep.z_failures_per_reward.tolist() == [1, 1, 0]


def test_parse_number():
    assert parse_number(" 2.5 ") == 2.5
    assert parse_number("true") == 1.0 and parse_number(False) == 0.0
    for missing in ("", "nan", "NaN", "null", "None", "NA", None):
        assert np.isnan(parse_number(missing))
    assert parse_number("abc") is None and parse_number([1]) is None


# ----------------------------------------------------------------------------- bad files
@pytest.mark.parametrize(
    ("name", "content", "kwargs", "message"),
    [
        ("empty.csv", "", {}, "empty file"),
        ("header.csv", "group,a,b\n", {}, "no data rows"),
        ("empty.jsonl", "\n\n", {}, "empty file"),
        ("text.csv", "group,a\n0,1\n0,2\n1,abc\n1,4\n", {}, r"row 3 \(line 4\).*'a'.*'abc'"),
        ("text.jsonl", '{"group": 0, "a": 1}\n\n{"group": 0, "a": "x"}\n', {},
         r"row 2 \(line 3\).*'a'.*'x'"),
        ("bad.jsonl", '{"group": 0, "a": 1}\n{"group": 0, "a": \n', {}, r"line 2: not valid JSON"),
        ("list.jsonl", "[1, 2]\n", {}, "JSON object"),
        ("ragged.csv", "group,a\n0,1\n0,2,3\n", {}, r"line 3: 3 fields"),
        ("nogroup.csv", "x,a\n0,1\n", {}, "no group column found"),
        ("missing.csv", "group,a\n0,1\n", {"rewards": ["a", "b"]}, r"reward column 'b' not found"),
        ("badgroup.csv", "group,a\n0,1\n", {"group": "uid"}, r"group column 'uid' not found"),
        ("emptygroup.csv", "group,a\n0,1\n,2\n", {}, r"row 2 \(line 3\): empty group value"),
        ("inf.csv", "group,a\n0,1\n0,inf\n", {}, "infinite"),
        ("norewards.csv", "group,text\n0,hi\n", {}, "no numeric reward columns"),
        ("rollouts.txt", "group,a\n0,1\n", {}, "cannot tell the format"),
        ("dupe.csv", "group,a,a\n0,1,2\n", {}, "duplicate column"),
    ],
)  # fmt: skip
def test_bad_files_raise_clear_errors(tmp_path, name, content, kwargs, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(RolloutFileError, match=message):
        load_rollouts(path, **kwargs)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(RolloutFileError, match="no such file"):
        load_rollouts(tmp_path / "nope.csv")
    with pytest.raises(RolloutFileError, match="directory"):
        load_rollouts(tmp_path)


def test_parquet_round_trip_or_clear_error(tmp_path):
    path = tmp_path / "r.parquet"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path.write_bytes(b"PAR1")
        with pytest.raises(RolloutFileError, match="pip install pyarrow"):
            load_rollouts(path)
        return
    with open(FIXTURE, newline="") as f:
        rows = list(csv.DictReader(f))
    table = pa.table(
        {"prompt_id": [r["prompt_id"] for r in rows]}
        | {k: [float(r[k]) for r in rows] for k in ("format", "helpfulness", "length")}
    )
    pq.write_table(table, path)
    a, b = _audit(load_rollouts(FIXTURE)), _audit(load_rollouts(path))
    for ma, mb in zip(a.methods, b.methods, strict=True):
        np.testing.assert_array_equal(ma.advantages, mb.advantages)


# ----------------------------------------------------------------------------- memory-lean
def _random_rollouts(n=300, k=3, seed=5):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(n, k)).round(1)
    r[rng.random((n, k)) < 0.1] = np.nan
    r[:, 0] = np.where(np.isnan(r[:, 0]), np.nan, rng.integers(0, 2, n))
    labels = rng.integers(0, n // 6, n)
    return r, labels


@pytest.mark.parametrize("weights", [None, [1.0, 0.0, 2.0]])
def test_every_method_counts_masked_failures_as_the_library_does(weights):
    r, labels = _random_rollouts()
    specs = [
        s for s in default_audit_methods() if not rewardagg.get_aggregator(s.method).nonnegative
    ]
    rep = run_audit(r, labels, weights=weights, methods=specs)
    for m, spec in zip(rep.methods, specs, strict=True):
        _, info = rewardagg.advantages(
            r, method=spec.method, group_ids=labels, weights=weights, return_info=True,
            **spec.params,
        )  # fmt: skip
        assert m.masked_failures == info.masked_failures, spec.label
        assert m.masked_failures_per_reward.tolist() == info.masked_failures_per_reward.tolist()
        assert m.distinct_per_group_mean == pytest.approx(
            np.mean(info.distinct_advantages_per_group)
        )
    np.testing.assert_allclose(rep.bottleneck_share, info.bottleneck_share, atol=1e-12)
    np.testing.assert_allclose(rep.zero_spread_fraction, info.zero_spread_fraction, atol=1e-12)


def test_method_independent_diagnostics_in_chunks_of_groups(monkeypatch):
    import rewardagg.audit.compute as compute

    r, labels = _random_rollouts(n=500)
    methods = default_audit_methods(["gdpo", "gd2po"])
    whole = run_audit(r, labels, methods=methods)
    monkeypatch.setattr(compute, "DIAGNOSTIC_CHUNK_ROWS", 7)  # many chunks of whole groups
    chunked = run_audit(r, labels, methods=methods)
    np.testing.assert_allclose(chunked.bottleneck_share, whole.bottleneck_share, atol=1e-12)
    np.testing.assert_allclose(chunked.zero_spread_fraction, whole.zero_spread_fraction, atol=1e-12)


def test_keep_advantages_false_gives_the_same_report():
    r, labels = _random_rollouts()
    methods = default_audit_methods(["gdpo", "softmin", "min"])
    kept = run_audit(r, labels, methods=methods)
    lean = run_audit(r, labels, methods=methods, keep_advantages=False)
    assert all(m.advantages is None for m in lean.methods)
    assert format_report(kept) == format_report(lean)
    np.testing.assert_array_equal(kept.spearman, lean.spearman)


def test_spearman_takes_columns_or_a_list_of_arrays():
    rng = np.random.default_rng(2)
    cols = rng.integers(0, 4, size=(50, 3)).astype(float)
    np.testing.assert_array_equal(spearman(cols), spearman([cols[:, j] for j in range(3)]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"z_level": float("nan")}, "z_level must be a finite number"),
        ({"thresholds": {"r0": float("nan")}}, "thresholds must be finite numbers"),
    ],
)
def test_run_audit_refuses_non_finite_levels(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_audit(np.ones((4, 1)), [0, 0, 1, 1], methods=[], **kwargs)
