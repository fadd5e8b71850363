"""AdaptiveWeights (DESIGN.md section 2d) against an independent loop implementation written
from the design text, hand-derived trajectories, the controller protocol and combine()."""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rewardagg as ra

# --------------------------------------------------------------------------------------
# the reference: DESIGN.md 2d as plain loops over rows and columns (no numpy, no class code)
# --------------------------------------------------------------------------------------


class LoopRule:
    """Section 2d, one column at a time. A batch is a list of rows, each a list of K floats
    (NaN = missing)."""

    def __init__(
        self,
        k,
        tau=7.0,
        beta=0.9,
        horizon=40,
        z=3.0,
        trial_cap=None,
        patience_growth=1.0,
        burn_in=None,
        burn_in_z=1.0,
        plateau_margin=0.1,
    ):
        self.k, self.tau, self.beta, self.horizon, self.z = k, tau, beta, horizon, z
        self.cap = trial_cap
        # the options after section 2d (issue 27): patience growth g, burn-in (B, z_B),
        # plateau margin delta
        self.g, self.burn, self.zb, self.delta = patience_growth, burn_in, burn_in_z, plateau_margin
        self.col = [
            {
                "S1": 0.0,
                "S2": 0.0,
                "p": 0.0,
                "nbar": 0.0,
                "c": 0,
                "seen": False,
                "window": [],
                "proven": False,
                "retrusts": 0,  # m: times the reward regained trust
                "plateau": None,  # p*: its pass rate when it last lost trust
            }
            for _ in range(k)
        ]
        self.events = []  # ("reset" | "stall" | "progress", column): what happened, for coverage

    def patience(self, st_):
        return self.horizon * self.g ** st_["retrusts"]

    def trusted(self):
        out = []
        for st_ in self.col:
            if self.horizon == 0:
                out.append(st_["seen"])
            else:
                out.append(st_["seen"] and st_["c"] < self.patience(st_))
        return out

    def held(self):
        out = []
        for st_, t in zip(self.col, self.trusted(), strict=True):
            q = st_["plateau"]
            out.append(
                self.delta is not None and not t and q is not None and st_["p"] < q - self.delta
            )
        return out

    def _weights_and_above_one(self):
        if self.k == 1:
            return [1.0], [False]
        trusted, held = self.trusted(), self.held()
        members = [j for j in range(self.k) if trusted[j] or held[j]]
        w = [1.0] * self.k
        above = [False] * self.k
        if not members:
            return w, above
        e = [math.exp(-self.tau * self.col[j]["p"]) for j in members]
        total = math.fsum(e)
        soft = [x / total for x in e]
        biggest = max(soft)
        floored = [x if x >= 1e-3 * biggest else 1e-3 * biggest for x in soft]
        total2 = math.fsum(floored)
        exact_total = sum(Fraction(x) for x in floored)
        for j, x in zip(members, floored, strict=True):
            w[j] = len(members) * x / total2
            # w_j > 1  <=>  |T| x_j > sum(x): decided exactly on the floats x
            above[j] = len(members) * Fraction(x) > exact_total
        if self.cap is None or self.horizon == 0:
            return w, above
        on_trial = [j for j in members if not self.col[j]["proven"]]
        if not any(w[j] > self.cap for j in on_trial):
            return w, above
        # water-filling: rewards on trial above the cap are held at it, the rest of the
        # |T| budget is shared by the others in proportion to their uncapped weights
        held = []
        while True:
            rest = [j for j in members if j not in held]
            budget = len(members) - self.cap * len(held)
            mass = math.fsum(w[j] for j in rest)
            trial = [j for j in rest if j in on_trial and w[j] * (budget / mass) > self.cap]
            if not trial:
                break
            held += trial
        for j in rest:
            w[j] = w[j] * (budget / mass)
        for j in held:
            w[j] = self.cap
        return w, [x > 1.0 for x in w]

    def weights(self):
        return self._weights_and_above_one()[0]

    def step(self, batch):
        _, above = self._weights_and_above_one()
        for j in range(self.k):
            present = [row[j] for row in batch if not math.isnan(row[j])]
            if not present:
                continue
            n = len(present)
            r = math.fsum(present) / n
            st_ = self.col[j]
            b = self.beta
            old = st_["S1"]
            st_["S1"] = b * old + 1
            st_["S2"] = b * b * st_["S2"] + 1
            st_["p"] = (b * old * st_["p"] + r) / st_["S1"]
            st_["nbar"] = (b * old * st_["nbar"] + n) / st_["S1"]
            p, nbar = st_["p"], st_["nbar"]
            var = max(p * (1 - p), 1 / nbar) / nbar * st_["S2"] / st_["S1"] ** 2
            st_["seen"] = True
            if self.horizon > 0:
                if st_["window"]:
                    p0, v0 = st_["window"][0]
                    prog = p - p0 > self.z * math.sqrt(var + v0)
                    signal = p - p0 >= self.zb * math.sqrt(var + v0)
                else:
                    prog = signal = False
                patience = self.patience(st_)
                distrusted = st_["c"] >= patience
                if prog:
                    if st_["c"] > 0:
                        self.events.append(("reset", j))
                    if distrusted:
                        self.events.append(("retrust", j))
                        st_["retrusts"] += 1
                        st_["plateau"] = None
                    self.events.append(("progress", j))
                    st_["c"] = 0
                    st_["proven"] = True
                elif above[j] and not distrusted:
                    st_["c"] += 1
                    self.events.append(("stall", j))
                    if self.burn is not None and st_["c"] == self.burn < patience and not signal:
                        self.events.append(("burn_in", j))
                        while st_["c"] < patience:
                            st_["c"] += 1
                    if st_["c"] >= patience:
                        self.events.append(("distrust", j))
                        st_["plateau"] = p
                elif above[j]:
                    self.events.append(("held", j))
                st_["window"].append((p, var))
                if len(st_["window"]) > self.horizon:
                    st_["window"].pop(0)


def as_rows(batch):
    return [[float(x) for x in row] for row in np.asarray(batch, dtype=np.float64)]


def run_both(batches, k, **params):
    """Both implementations over ``batches``; the weights used for each batch (class, loop)."""
    horizon = params.pop("patience", 40)
    aw = ra.AdaptiveWeights(k, patience=horizon, **params)
    loop = LoopRule(k, horizon=horizon, **params)
    used = []
    for batch in batches:
        used.append((list(aw.weights), loop.weights(), list(aw.trusted), loop.trusted()))
        aw.update(np.asarray(batch, dtype=np.float64))
        loop.step(as_rows(batch))
    used.append((list(aw.weights), loop.weights(), list(aw.trusted), loop.trusted()))
    return aw, loop, used


def assert_same(used):
    for t, (mine, ref, trusted_mine, trusted_ref) in enumerate(used):
        assert trusted_mine == trusted_ref, f"batch {t}"
        np.testing.assert_allclose(mine, ref, rtol=1e-12, atol=1e-12, err_msg=f"batch {t}")


# --------------------------------------------------------------------------------------
# trajectories
# --------------------------------------------------------------------------------------

VALUES = st.sampled_from([math.nan, 0.0, 0.25, 0.5, 1.0])


@st.composite
def sequences(draw):
    k = draw(st.integers(1, 4))
    n_batches = draw(st.integers(1, 30))
    batches = []
    for _ in range(n_batches):
        n = draw(st.integers(1, 5))
        batch = [[draw(VALUES) for _ in range(k)] for _ in range(n)]
        absent = draw(st.lists(st.booleans(), min_size=k, max_size=k))
        batch = [[math.nan if absent[j] else x for j, x in enumerate(row)] for row in batch]
        batches.append(batch)
    params = {
        "tau": draw(st.sampled_from([0.0, 1.0, 10.0, 30.0])),
        "beta": draw(st.sampled_from([0.0, 0.5, 0.9, 1.0])),
        "patience": draw(st.integers(0, 4)),
        "z": draw(st.sampled_from([0.0, 0.5, 3.0])),
        "trial_cap": draw(st.sampled_from([None, None, 1.0, 1.5, 3.0])),
        "patience_growth": draw(st.sampled_from([1.0, 1.0, 1.5, 2.0])),
        "burn_in": draw(st.sampled_from([None, None, 1, 2, 3])),
        "burn_in_z": draw(st.sampled_from([0.0, 1.0, 2.0])),
        "plateau_margin": draw(st.sampled_from([None, None, 0.0, 0.05, 0.2])),
    }
    return k, batches, params


@settings(max_examples=150, deadline=None)
@given(sequences())
def test_weights_follow_the_loop_rule_exactly(case):
    k, batches, params = case
    _, _, used = run_both(batches, k, **params)
    assert used[0][0] == [1.0] * k  # the first batch gets w = 1
    assert_same(used)


@pytest.mark.parametrize("seed", range(4))
def test_long_sequences_with_rising_and_stuck_rewards(seed):
    """Hundreds of batches, H = 40: a rising reward, a stuck one, an easy one, a rare one
    absent from most batches, judge noise as NaN. Same trajectory as the loop, and the run
    exercises every branch of the guard (stalls, losing trust, progress, re-trust)."""
    rng = np.random.default_rng(seed)
    k, steps, n = 5, 300, 16
    batches = []
    for t in range(steps):
        rise = min(1.0, t / 150)
        probs = [0.05 + 0.9 * rise, 0.0, 0.9, 0.3, 0.1 + 0.8 * (t > 200)]
        batch = (rng.random((n, k)) < probs).astype(np.float64)
        batch[rng.random((n, k)) < 0.1] = np.nan
        if t % 3:
            batch[:, 3] = np.nan  # the rare criterion applies to one batch in three
        if t % 17 == 5:
            batch[:] = np.nan  # an all-NaN batch changes nothing
        batches.append(batch)
    aw, loop, used = run_both(batches, k)
    assert_same(used)
    kinds = {e for e, _ in loop.events}
    assert {"stall", "progress", "reset"} <= kinds
    assert not aw.trusted[1]  # never moves: distrusted
    assert aw.trusted[0]


def test_k1_weight_is_one_and_never_stalls():
    aw, _loop, used = run_both([[[0.0]], [[0.0], [1.0]], [[math.nan]], [[0.0]]] * 20, 1, patience=2)
    assert all(u[0] == [1.0] for u in used)
    assert aw.trusted == [True]
    assert_same(used)


def test_all_nan_and_absent_columns_change_nothing():
    aw = ra.AdaptiveWeights(3, patience=3)
    aw.update(np.array([[1.0, 0.0, np.nan], [0.0, 0.0, np.nan]]))
    before = json.dumps(aw.state_dict())
    aw.update(np.full((4, 3), np.nan))
    after = aw.state_dict()
    assert after["step"] == 2
    after["step"] = 1
    assert json.dumps(after) == before
    # column 2 never seen: outside T, weight 1; the other two share |T| = 2
    assert aw.trusted == [True, True, False]
    assert aw.weights[2] == 1.0
    assert math.isclose(aw.weights[0] + aw.weights[1], 2.0, rel_tol=1e-15)


def test_hand_derived_stuck_reward_loses_trust_after_patience():
    """Reward 0 always met, reward 1 never: reward 1 has weight > 1 from batch 2 on and its
    pass rate stays 0, so its stall counter reaches H after batch H + 1; it then falls back to
    weight 1 (and reward 0, alone in T, has weight 1)."""
    horizon = 5
    aw = ra.AdaptiveWeights(2, patience=horizon)
    batch = np.array([[1.0, 0.0], [1.0, 0.0]])
    # 2 softmax(-7 [1, 0]) = 2 [e^-7, 1] / (1 + e^-7); e^-7 < 1e-3 is floored to 1e-3
    expected_w1 = 2 / (1 + 1e-3)
    for t in range(1, horizon + 2):
        aw.update(batch)
        if t <= horizon:
            assert aw.trusted == [True, True]
            assert math.isclose(aw.weights[1], expected_w1, rel_tol=1e-14)
    assert aw.trusted == [True, False]
    assert aw.weights == [1.0, 1.0]
    for _ in range(10):  # still stuck: stays out (weight 1 is not > 1: no more stalls)
        aw.update(batch)
    assert aw.state_dict()["stall"] == [0, horizon]
    for _ in range(10):  # the pass rate jumps to 1: a rise beyond 3 sigma re-trusts it
        aw.update(np.array([[1.0, 1.0]] * 50))
        if aw.trusted[1]:
            break
    assert aw.trusted == [True, True]
    assert aw.state_dict()["stall"] == [0, 0]


def test_hand_derived_first_two_batches():
    """EMA and variance by hand: beta = 0.9, two batches of the single column pair."""
    aw = ra.AdaptiveWeights(2, patience=3)
    aw.update(np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, np.nan]]))
    aw.update(np.array([[0.0, 1.0], [0.0, 0.0]]))
    # column 0: r = 3/4 (n 4), then 0 (n 2); S1 = 1.9, S2 = 1.81
    p0 = (0.9 * 0.75 + 0.0) / 1.9
    n0 = (0.9 * 4 + 2) / 1.9
    v0 = max(p0 * (1 - p0), 1 / n0) / n0 * 1.81 / 1.9**2
    state = aw.state_dict()
    assert math.isclose(state["pass_rate"][0], p0, rel_tol=1e-15)
    assert math.isclose(state["count"][0], n0, rel_tol=1e-15)
    assert math.isclose(state["history"][0][-1][1], v0, rel_tol=1e-15)
    p1 = (0.9 * 0.0 + 0.5) / 1.9
    e = [math.exp(-7 * p0), math.exp(-7 * p1)]  # the default tau = 7
    np.testing.assert_allclose(aw.weights, [2 * x / sum(e) for x in e], rtol=1e-14)


def test_patience_zero_is_k_softmax():
    rng = np.random.default_rng(3)
    aw = ra.AdaptiveWeights(4, patience=0, tau=7.0)
    for _ in range(30):
        aw.update((rng.random((8, 4)) < [0.1, 0.0, 0.5, 0.99]).astype(float))
    p = np.array(aw.pass_rates)
    s = np.exp(-7.0 * p) / np.exp(-7.0 * p).sum()
    s = np.maximum(s, 1e-3 * s.max())
    np.testing.assert_allclose(aw.weights, 4 * s / s.sum(), rtol=1e-13)
    assert aw.trusted == [True] * 4


def test_floor_at_one_thousandth_of_the_max():
    aw = ra.AdaptiveWeights(2, patience=0, tau=100.0)
    aw.update(np.array([[1.0, 0.0]]))  # softmax(-100 [1, 0]) = [e^-100 ~ 0, 1] -> floored
    np.testing.assert_allclose(aw.weights, [2e-3 / 1.001, 2 / 1.001], rtol=1e-14)


# --------------------------------------------------------------------------------------
# advantages, mask, torch, process_group-free paths
# --------------------------------------------------------------------------------------


def test_advantages_use_the_weights_before_the_update_times_the_callers():
    rng = np.random.default_rng(0)
    aw = ra.AdaptiveWeights(reward_names=["a", "b", "c"], patience=4)
    shadow = ra.AdaptiveWeights(3, patience=4)
    given_w = np.array([2.0, 1.0, 0.5])
    for _ in range(6):
        R = (rng.random((12, 3)) < [0.8, 0.2, 0.5]).astype(float)
        expected = ra.advantages(
            R, method="softmin", group_size=4, weights=given_w * np.array(shadow.weights)
        )
        got = aw.advantages(R, method="softmin", group_size=4, weights=given_w)
        np.testing.assert_array_equal(got, expected)
        shadow.update(R)
        assert aw.weights == shadow.weights
    default = ra.AdaptiveWeights(3)
    R = (rng.random((8, 3)) < 0.5).astype(float)
    np.testing.assert_array_equal(
        default.advantages(R, group_size=4), ra.advantages(R, method="gdpo", group_size=4)
    )


def test_mask_is_missing_and_torch_matches_numpy():
    rng = np.random.default_rng(1)
    a, b, c = (ra.AdaptiveWeights(3, patience=2) for _ in range(3))
    for _ in range(10):
        R = (rng.random((8, 3)) < [0.9, 0.1, 0.5]).astype(float)
        mask = rng.random((8, 3)) < 0.8
        a.advantages(R, group_size=4, mask=mask)
        b.advantages(np.where(mask, R, np.nan), group_size=4)
        out = c.advantages(torch.tensor(R), group_size=4, mask=torch.tensor(mask))
        assert isinstance(out, torch.Tensor)
    assert a.state_dict() == b.state_dict() == c.state_dict()


def test_issue27_rewards_outside_unit_interval_are_rejected_before_any_change():
    aw = ra.AdaptiveWeights(2)
    aw.update(np.array([[1.0, 0.0]]))
    before = aw.state_dict()
    for bad in (1.5, -0.1, math.inf):
        with pytest.raises(ValueError, match=r"rewards must lie in \[0, 1\]"):
            aw.advantages(np.array([[bad, 0.0], [1.0, 0.0]]), group_size=2)
        with pytest.raises(ValueError, match="rewards"):
            aw.update(np.array([[0.5, bad]]))
    with pytest.raises(ValueError, match="n_rewards=2"):
        aw.update(np.zeros((2, 3)))
    assert aw.state_dict() == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau": -1.0}, "tau"),
        ({"tau": math.nan}, "tau"),
        ({"beta": 1.5}, "beta"),
        ({"patience": -1}, "patience"),
        ({"patience": 2.5}, "patience"),
        ({"z": math.inf}, "z"),
        ({"n_rewards": 0}, "n_rewards"),
        ({"trial_cap": 0.5}, "trial_cap"),
        ({"patience_growth": 0.5}, "patience_growth"),
        ({"burn_in": 0}, "burn_in"),
        ({"burn_in": 1.5}, "burn_in"),
        ({"burn_in_z": -1.0}, "burn_in_z"),
        ({"plateau_margin": -0.1}, "plateau_margin"),
        ({"n_rewards": 2, "reward_names": ["a"]}, "reward_names"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ra.AdaptiveWeights(**kwargs)


# --------------------------------------------------------------------------------------
# state_dict
# --------------------------------------------------------------------------------------


def _random_batches(seed, steps, k=3):
    rng = np.random.default_rng(seed)
    out = []
    for t in range(steps):
        R = (rng.random((6, k)) < np.linspace(0.1, 0.9, k) * min(1, 0.3 + t / 20)).astype(float)
        R[rng.random((6, k)) < 0.2] = np.nan
        out.append(R)
    return out


@pytest.mark.parametrize("cut", [0, 1, 7, 19])
def test_json_round_trip_mid_sequence_continues_identically(cut):
    batches = _random_batches(0, 40)
    a = ra.AdaptiveWeights(reward_names=["x", "y", "z"], patience=5)
    for R in batches[:cut]:
        a.update(R)
    b = ra.AdaptiveWeights(reward_names=["x", "y", "z"], patience=5)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for R in batches[cut:]:
        assert a.weights == b.weights
        np.testing.assert_array_equal(a.advantages(R, group_size=3), b.advantages(R, group_size=3))
    assert a.state_dict() == b.state_dict()


def test_state_before_k_is_known_round_trips():
    a = ra.AdaptiveWeights()
    b = ra.AdaptiveWeights()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.n_rewards is None and b.weights == []
    a.update(np.array([[1.0, 0.0]]))
    b.load_state_dict(a.state_dict())
    assert b.n_rewards == 2 and b.weights == a.weights


def _corrupt(state, key, value):
    bad = json.loads(json.dumps(state))
    if "[" in key:
        name, index = key.rstrip("]").split("[")
        bad[name][int(index)] = value
    else:
        bad[key] = value
    return bad


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("s1", [1.0, 1.0]),  # length
        ("s1[0]", -1.0),  # range
        ("s1[1]", math.nan),  # finiteness
        ("s2[0]", "1"),  # type
        ("pass_rate[0]", 1.5),
        ("pass_rate[1]", math.inf),
        ("count[0]", -2.0),
        ("stall[0]", -1),
        ("stall[1]", 1.5),
        ("stall[2]", True),
        ("history", [[], []]),
        ("history[0]", [[0.5, 0.1]] * 4),  # longer than patience
        ("history[1]", [[0.5, -0.1]]),
        ("history[2]", [[0.5]]),
        ("step", -1),
        ("n_rewards", 4),
        ("tau", 9.0),
        ("beta", 0.5),
        ("patience", 4),
        ("z", 2.0),
        ("trial_cap", 2.0),
        ("patience_growth", 2.0),
        ("burn_in", 2),
        ("burn_in_z", 2.0),
        ("plateau_margin", 0.2),
        ("retrust", [0, 0]),
        ("retrust[0]", -1),
        ("retrust[1]", 0.5),
        ("plateau", [None]),
        ("plateau[0]", 1.5),
        ("plateau[1]", "0.5"),
        ("proven", [True, False]),
        ("proven[0]", 1),
        ("version", 1),
        ("reward_names", ["x", "y", "w"]),
    ],
)
def test_bad_state_is_rejected_by_key_and_changes_nothing(key, value):
    a = ra.AdaptiveWeights(reward_names=["x", "y", "z"], patience=3)
    for R in _random_batches(1, 6):
        a.update(R)
    good = a.state_dict()
    b = ra.AdaptiveWeights(reward_names=["x", "y", "z"], patience=3)
    b.update(_random_batches(2, 1)[0])
    before = b.state_dict()
    name = key.split("[")[0]
    with pytest.raises(ValueError, match=name):
        b.load_state_dict(_corrupt(good, key, value))
    assert b.state_dict() == before


def test_state_missing_or_extra_keys_and_inconsistent_columns():
    a = ra.AdaptiveWeights(2, patience=3)
    a.update(np.array([[1.0, np.nan]]))
    state = a.state_dict()
    with pytest.raises(ValueError, match="missing"):
        a.load_state_dict({k: v for k, v in state.items() if k != "s2"})
    with pytest.raises(ValueError, match="unexpected"):
        a.load_state_dict({**state, "extra": 1})
    with pytest.raises(ValueError, match="never seen"):  # column 1 unseen but with a pass rate
        a.load_state_dict(_corrupt(state, "pass_rate[1]", 0.5))
    with pytest.raises(ValueError, match="mapping"):
        a.load_state_dict([1, 2])


# --------------------------------------------------------------------------------------
# the controller protocol and combine
# --------------------------------------------------------------------------------------


def test_both_controllers_conform_to_the_protocol():
    assert isinstance(ra.AdaptiveWeights(), ra.Controller)
    assert isinstance(ra.ConstraintTracker({0: 0.5}), ra.Controller)
    assert isinstance(ra.combine(ra.AdaptiveWeights()), ra.Controller)
    with pytest.raises(TypeError, match="controllers"):
        ra.combine(object())
    with pytest.raises(ValueError, match="at least one"):
        ra.combine()


def test_combine_adaptive_and_constraint_in_one_call():
    names = ["safe", "helpful", "concise"]
    rng = np.random.default_rng(5)
    ctl = ra.combine(
        ra.AdaptiveWeights(reward_names=names, patience=3),
        ra.ConstraintTracker({"safe": 0.9}, lr=0.5, reward_names=names),
    )
    aw = ra.AdaptiveWeights(reward_names=names, patience=3)
    tr = ra.ConstraintTracker({"safe": 0.9}, lr=0.5, reward_names=names)
    for _ in range(8):
        R = (rng.random((12, 3)) < [0.6, 0.3, 0.8]).astype(float)
        expected = ra.advantages(
            R,
            method="gdpo",
            group_size=4,
            weights=np.array(aw.weights) * [1.0, 2.0, 1.0],
            multipliers=tr.multipliers,
            reward_names=names,
        )
        got = ctl.advantages(R, group_size=4, weights=[1.0, 2.0, 1.0])
        np.testing.assert_array_equal(got, expected)
        aw.update(R)
        tr.update(R)
        assert ctl.controllers[0].weights == aw.weights
        assert ctl.controllers[1].multipliers == tr.multipliers
    metrics = ctl.metrics()
    assert metrics["rewardagg/lambda/safe"] == tr.multipliers["safe"]
    assert metrics["rewardagg/weight/helpful"] == aw.weights[1]
    assert metrics["rewardagg/trusted/concise"] in (0.0, 1.0)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    # round trip of the combined state, and atomic loading
    other = ra.combine(
        ra.AdaptiveWeights(reward_names=names, patience=3),
        ra.ConstraintTracker({"safe": 0.9}, lr=0.5, reward_names=names),
    )
    state = json.loads(json.dumps(ctl.state_dict()))
    other.load_state_dict(state)
    assert other.state_dict() == ctl.state_dict()
    fresh = ra.combine(
        ra.AdaptiveWeights(reward_names=names, patience=3),
        ra.ConstraintTracker({"safe": 0.9}, lr=0.5, reward_names=names),
    )
    before = fresh.state_dict()
    state["controllers"][0]["pass_rate"][0] = 2.0  # the second part is fine, the first not
    with pytest.raises(ValueError, match="pass_rate"):
        fresh.load_state_dict(state)
    assert fresh.state_dict() == before
    # a batch the adaptive part rejects changes neither
    with pytest.raises(ValueError, match="rewards"):
        ctl.advantages(np.full((4, 3), 2.0), group_size=4)
    assert ctl.state_dict() == other.state_dict()


def test_combine_rejects_a_multiplier_set_twice():
    ctl = ra.combine(ra.ConstraintTracker({0: 0.5}, init=1.0))
    with pytest.raises(ValueError, match="set twice"):
        ctl.advantages(np.ones((4, 2)) * 0.5, group_size=2, multipliers={0: 1.0})


def test_issue27_demo_settings_are_opt_in_controllers():
    from rewardagg.demo.settings import (
        VARIANTS,
        ControllerContext,
        default_methods,
        judged_target,
        make_controller,
    )

    assert "adaptive" not in [v.name for v in VARIANTS]  # not in the default comparison
    plain, both = default_methods(["adaptive", "adaptive+lagrange"])
    assert (plain.label, both.label) == ("adaptive", "adaptive+lagrange")
    ctx = ControllerContext(judge_noise=0.1, n_rewards=5)
    aw = make_controller(plain, ctx)
    assert isinstance(aw, ra.AdaptiveWeights) and aw.n_rewards == 5 and aw.patience == 40
    combined = make_controller(both, ctx)
    assert isinstance(combined, ra.CombinedController)
    tracker = combined.controllers[1]
    assert tracker.targets == {0: pytest.approx(judged_target(0.9, 0.1))}
    R = (np.random.default_rng(0).random((8, 5)) < 0.5).astype(float)
    expected = ra.advantages(R, method="gdpo", group_size=4, multipliers={0: 0.0})
    np.testing.assert_array_equal(combined.advantages(R, method="gdpo", group_size=4), expected)


@pytest.mark.parametrize("seed", range(3))
def test_issue27_trial_cap_follows_the_loop_rule(seed):
    """The trial cap (an experiment on the gap DESIGN.md 2d names) on long sequences with a
    stuck reward: same weights as the loop, the stuck reward never above the cap before it
    shows progress, and the weights on T still sum to |T|."""
    rng = np.random.default_rng(10 + seed)
    batches = []
    for t in range(150):
        probs = [0.05 + 0.9 * min(1.0, t / 100), 0.02, 0.9, 0.5]
        batches.append((rng.random((16, 4)) < probs).astype(np.float64))
    aw, _, used = run_both(batches, 4, patience=20, trial_cap=2.0)
    assert_same(used)
    for mine, _, trusted, _ in used:
        total = sum(w for w, t in zip(mine, trusted, strict=True) if t)
        assert math.isclose(total, sum(trusted), rel_tol=1e-12)
    assert max(u[0][1] for u in used) <= 2.0 + 1e-12
    assert any(u[0][1] == 2.0 for u in used)  # the cap did bind
    assert aw.state_dict()["proven"][0]  # the rising reward proved itself


@pytest.mark.parametrize("seed", range(3))
def test_issue27_growth_burn_in_and_plateau_follow_the_loop_rule(seed):
    """The options after section 2d on long sequences: a stuck reward, one that rises late,
    one held back (its rate falls after it lost trust), an easy one. Same weights and trust
    as the loop, and the run goes through every new branch (burn-in distrust, re-trust with
    a longer patience, a distrusted reward held at its plateau)."""
    rng = np.random.default_rng(20 + seed)
    batches = []
    for t in range(400):
        late = 0.1 + 0.8 * min(1.0, max(0.0, t - 150) / 100)
        held_back = 0.3 if t < 120 else 0.1
        probs = [0.03, late, held_back, 0.9]
        batches.append((rng.random((16, 4)) < probs).astype(np.float64))
    params = dict(patience=15, patience_growth=2.0, burn_in=5, burn_in_z=1.0, plateau_margin=0.05)
    aw, loop, used = run_both(batches, 4, **params)
    assert_same(used)
    kinds = {e for e, _ in loop.events}
    assert {"burn_in", "distrust", "retrust", "held"} <= kinds
    state = aw.state_dict()
    assert max(state["retrust"]) >= 1
    b = ra.AdaptiveWeights(4, **params)
    b.load_state_dict(json.loads(json.dumps(state)))
    assert b.weights == aw.weights and b.held == aw.held


SECTION_2D = dict(tau=10.0, plateau_margin=None)


@pytest.mark.parametrize("seed", range(3))
def test_issue27_section_2d_is_reachable_and_differs_from_the_default(seed):
    """``AdaptiveWeights(tau=10, plateau_margin=None)`` is DESIGN.md 2d exactly (the loop
    with the new options off); the default rule (tau 7, plateau margin 0.1) follows the loop
    with those values, and the two trajectories differ on a sequence where a reward loses
    trust and then falls below its plateau."""
    rng = np.random.default_rng(30 + seed)
    batches = []
    for t in range(200):
        probs = [0.3 if t < 60 else 0.1, 0.04, 0.8, 0.6]
        batches.append((rng.random((16, 4)) < probs).astype(np.float64))
    _, loop_2d, used_2d = run_both(batches, 4, patience=10, **SECTION_2D)
    assert_same(used_2d)
    assert loop_2d.delta is None and loop_2d.g == 1.0 and loop_2d.burn is None
    aw, loop, used = run_both(batches, 4, patience=10)
    assert_same(used)
    assert (aw.tau, aw.plateau_margin) == (7.0, 0.1) == (loop.tau, loop.delta)
    assert ("held", 0) in loop.events
    assert [u[0] for u in used] != [u[0] for u in used_2d]
