"""The public surface: every registered method through the same dtype / shape /
no-writeback / bad-input checks, the registry, diagnostics and import hygiene."""

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

import rewardagg as ra
from registry_cases import domain, methods

PUBLIC = [
    "AdaptiveWeights",
    "CombinedController",
    "Controller",
    "combine",
    "AggregationInfo",
    "Aggregator",
    "__version__",
    "advantages",
    "available_methods",
    "ConstraintTracker",
    "batch_standardize",
    "cvar",
    "cvar_advantages",
    "expand_to_tokens",
    "gdpo_advantages",
    "get_aggregator",
    "group_standardize",
    "grpo_advantages",
    "mean_advantages",
    "mean_variance",
    "mean_variance_advantages",
    "min_advantages",
    "power_mean",
    "power_mean_advantages",
    "register_aggregator",
    "softmin",
    "softmin_advantages",
    "unregister_aggregator",
    "weighted_mean",
    "weighted_min",
    "weighted_sum",
]
BUILTIN = ("grpo", "gdpo", "mean", "softmin", "mean_variance", "min", "cvar", "power_mean")
METHODS = methods()  # registry-wide: every entry of the method table


def test_public_names_are_frozen():
    assert sorted(ra.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert hasattr(ra, name)


def test_import_pulls_nothing_heavy():
    code = (
        "import sys, rewardagg; "
        "print(' '.join(m for m in ('torch','scipy','matplotlib','triton','numba','trl','verl') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_builtin_methods_are_registered():
    assert set(BUILTIN) <= set(ra.available_methods())


def _rewards():
    rng = np.random.default_rng(0)
    R = rng.normal(size=(12, 3))
    R[2, 1] = np.nan
    return R


INPUTS = {
    "numpy-f64": lambda R: R.copy(),
    "numpy-f32": lambda R: R.astype(np.float32),
    "numpy-f16": lambda R: R.astype(np.float16),
    "numpy-int": lambda R: np.nan_to_num(R * 3).astype(np.int64),
    "list": lambda R: [[None if np.isnan(x) else float(x) for x in row] for row in R],
    "torch-f32": lambda R: torch.tensor(R, dtype=torch.float32),
    "torch-f64": lambda R: torch.tensor(R, dtype=torch.float64),
    "torch-bf16": lambda R: torch.tensor(R, dtype=torch.bfloat16),
    "torch-f16": lambda R: torch.tensor(R, dtype=torch.float16),
    "torch-int": lambda R: torch.tensor(np.nan_to_num(R * 3).astype(np.int64)),
}
EXPECTED_DTYPE = {
    "numpy-f64": np.float64,
    "numpy-f32": np.float32,
    "numpy-f16": np.float16,
    "numpy-int": np.float64,
    "list": np.float64,
    "torch-f32": torch.float32,
    "torch-f64": torch.float64,
    "torch-bf16": torch.bfloat16,
    "torch-f16": torch.float16,
    "torch-int": torch.float64,  # issue 14 (4): integers are exact in float64
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", list(INPUTS))
def test_every_method_preserves_library_dtype_shape_and_never_writes(method, kind):
    R = domain(method, _rewards())
    x = INPUTS[kind](R)
    before = x.clone() if isinstance(x, torch.Tensor) else copy.deepcopy(x)
    requires_grad = isinstance(x, torch.Tensor) and x.is_floating_point()
    if requires_grad:
        x.requires_grad_(True)
    out, info = ra.advantages(x, method=method, group_size=4, return_info=True)
    assert isinstance(info, ra.AggregationInfo) and info.n_rows == 12
    assert all(isinstance(v, float) for v in info.to_metrics().values())
    assert out.shape == (12,)
    assert out.dtype == EXPECTED_DTYPE[kind]
    if isinstance(x, torch.Tensor):
        assert isinstance(out, torch.Tensor) and out.device == x.device
        assert not out.requires_grad and out.grad_fn is None
        assert torch.equal(x.detach().isnan(), before.isnan())
        assert torch.equal(torch.nan_to_num(x.detach()), torch.nan_to_num(before))
    else:
        assert isinstance(out, np.ndarray)
        if isinstance(x, list):
            assert x == before
        else:
            assert x.dtype == before.dtype
            np.testing.assert_array_equal(x, before)
    assert np.all(
        np.isfinite(
            np.asarray(out.float() if isinstance(out, torch.Tensor) else out, dtype=np.float64)
        )
    )


def test_one_dimensional_rewards_mean_one_reward():
    r = np.arange(8.0)
    np.testing.assert_allclose(
        ra.advantages(r, method="gdpo", group_size=4),
        ra.advantages(r[:, None], method="gdpo", group_size=4),
    )


BAD = [
    (dict(rewards=np.zeros((2, 2, 2)), group_size=1), ValueError, "shape"),
    (dict(rewards=np.zeros((6, 2)), group_size=4), ValueError, "divisible"),
    (dict(rewards=np.zeros((6, 2)), group_size=3, group_ids=[0] * 6), ValueError, "exactly one"),
    (dict(rewards=np.zeros((6, 2))), ValueError, "exactly one"),
    (dict(rewards=np.zeros((6, 2)), group_ids=[0] * 5), ValueError, "length N=6"),
    (dict(rewards=np.zeros((6, 2)), group_size=3, weights=[1.0]), ValueError, "shape (2,)"),
    (dict(rewards=np.zeros((6, 2)), group_size=3, weights=[1.0, -1.0]), ValueError, "non-negative"),
    (dict(rewards=np.zeros((6, 2)), group_size=3, weights=[np.nan, 1.0]), ValueError, "finite"),
    (dict(rewards=np.zeros((6, 2)), group_size=3, weights=[0.0, 0.0]), ValueError, "all zero"),
    (dict(rewards=np.zeros((6, 2)), group_size=0), ValueError, "positive"),
    (dict(rewards=np.zeros((6, 2)), group_size=-3), ValueError, "positive"),
    (dict(rewards=np.zeros((6, 2)), group_size=2.5), TypeError, "integer"),
    (dict(rewards=np.zeros((6, 2)), group_size=3, mask=np.ones((6, 3), bool)), ValueError, "mask"),
    (dict(rewards=np.array([[1.0, np.inf]] * 2), group_size=2), ValueError, "inf"),
    (dict(rewards=np.array([["a", "b"]] * 2), group_size=2), TypeError, "numeric"),
    (dict(rewards=np.zeros((0, 2)), group_size=1), ValueError, "empty"),
    (dict(rewards=np.zeros((4, 2)), group_size=2, method="nope"), ValueError, "available"),
    (dict(rewards=np.zeros((4, 2)), group_size=2, eps=-1.0), ValueError, "eps"),
    (dict(rewards=np.zeros((4, 2)), group_size=2, singleton="x"), ValueError, "singleton"),
    (dict(rewards=np.zeros((4, 2)), group_size=2, baseline="x"), ValueError, "baseline"),
    (dict(rewards=np.zeros((4, 2)), group_size=2, backend="cuda-magic"), ValueError, "backend"),
    (dict(rewards=np.zeros((4, 2), complex), group_size=2), TypeError, "real"),
    (dict(rewards=torch.zeros(4, 2, dtype=torch.complex64), group_size=2), TypeError, "real"),
    (dict(rewards=torch.tensor([[1.0, float("-inf")]] * 2), group_size=2), ValueError, "inf"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input_is_named(method, case):
    kwargs, err, needle = BAD[case]
    kwargs = dict(kwargs)
    rewards = kwargs.pop("rewards")
    kwargs.setdefault("method", method)
    with pytest.raises(err, match=None) as info:
        ra.advantages(rewards, **kwargs)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "method,param,value",
    [
        ("softmin", "kappa", -1.0),
        ("softmin", "kappa", float("nan")),
        ("mean_variance", "lam", -0.5),
        ("mean_variance", "lam", float("nan")),
        ("grpo", "scale", "batchy"),
        ("cvar", "alpha", 0.0),
        ("cvar", "alpha", 1.01),
        ("power_mean", "p", float("nan")),
    ],
)
def test_bad_method_parameters(method, param, value):
    with pytest.raises(ValueError, match=param):
        ra.advantages(np.zeros((4, 2)), method=method, group_size=2, **{param: value})


def test_parameter_of_another_method_is_a_type_error():
    with pytest.raises(TypeError, match="takes: kappa"):
        ra.advantages(np.zeros((4, 2)), method="softmin", group_size=2, lam=0.1)


def test_reducers_validate_their_arguments():
    with pytest.raises(ValueError, match="kappa"):
        ra.softmin(np.zeros((2, 2)), kappa=-1)
    with pytest.raises(ValueError, match="inf"):
        ra.weighted_mean(np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match="shape"):
        ra.weighted_sum(np.zeros((2, 3)), weights=[1, 2])


def test_register_custom_aggregator_runs_through_the_pipeline():
    def harmonic_like(z, *, weights=None, tau=1.0):
        return ra.softmin(z, kappa=tau, weights=weights)

    ra.register_aggregator("test_custom", harmonic_like, params={"tau": 2.0})
    try:
        R = _rewards()
        np.testing.assert_allclose(
            ra.advantages(R, method="test_custom", group_size=4),
            ra.softmin_advantages(R, kappa=2.0, group_size=4),
        )
        _, info = ra.advantages(R, method="test_custom", group_size=4, return_info=True)
        assert np.all(np.isnan(info.attention))
        with pytest.raises(ValueError, match="already registered"):
            ra.register_aggregator("test_custom", harmonic_like)
        assert "test_custom" in ra.available_methods()
        with pytest.raises(ValueError, match="tau must be a number"):
            ra.advantages(R, method="test_custom", group_size=4, tau=float("nan"))
    finally:
        ra.unregister_aggregator("test_custom")
    assert "test_custom" not in ra.available_methods()
    with pytest.raises(ValueError, match="unknown method 'test_custom'"):
        ra.advantages(_rewards(), method="test_custom", group_size=4)


def test_unregister_refuses_builtins_and_unknown_names():
    with pytest.raises(ValueError, match="built in"):
        ra.unregister_aggregator("softmin")
    with pytest.raises(ValueError, match="not registered"):
        ra.unregister_aggregator("no_such_method")
    with pytest.raises(ValueError, match="built in"):
        ra.register_aggregator("gdpo", ra.weighted_sum, overwrite=True)


def test_registered_method_with_checks_and_sweep():
    def tempered(z, *, weights=None, tau=0.5):
        return ra.softmin(z, kappa=1.0 / tau, weights=weights)

    def positive(value, name):
        if not value > 0:
            raise ValueError(f"{name} must be > 0; got {value}")
        return float(value)

    with pytest.raises(ValueError, match="tau must be > 0"):  # a bad sweep fails at once
        ra.register_aggregator(
            "t_tempered",
            tempered,
            params={"tau": 0.5},
            checks={"tau": positive},
            sweep=({"tau": -1.0},),
        )
    assert "t_tempered" not in ra.available_methods()
    a = ra.register_aggregator(
        "t_tempered",
        tempered,
        params={"tau": 0.5},
        checks={"tau": positive},
        sweep=({"tau": 0.25}, {"tau": 1.0}),
    )
    try:
        assert a.label({"tau": 0.25}) == "t_tempered tau=0.25" and a.sweep[1] == {"tau": 1.0}
        assert a.parse({"tau": "0.25"}) == {"tau": 0.25}  # from a command line
        with pytest.raises(ValueError, match="tau must be > 0"):
            ra.advantages(_rewards(), method="t_tempered", group_size=4, tau=0.0)
        np.testing.assert_allclose(
            ra.advantages(_rewards(), method="t_tempered", group_size=4, tau=0.25),
            ra.softmin_advantages(_rewards(), kappa=4.0, group_size=4),
        )
    finally:
        ra.unregister_aggregator("t_tempered")


def test_diagnostics_hand_computed():
    # one group of 4 rows, two rewards; reward 0 is a pass/fail constraint
    R = np.array([[0.0, 10.0], [0.0, 9.0], [1.0, 1.0], [1.0, 0.0]])
    adv, info = ra.advantages(R, method="gdpo", group_size=4, eps=0.0, return_info=True)
    # Z0 = [-1,-1,1,1]*sqrt(3)/2 ; Z1 = (R1-5)/std, std = sqrt(82/3)
    z1 = (R[:, 1] - 5.0) / np.sqrt(82.0 / 3.0)
    z0 = np.array([-1, -1, 1, 1]) * np.sqrt(3.0) / 2.0
    s = z0 + z1
    np.testing.assert_allclose(adv, (s - s.mean()) / s.std(ddof=1))
    # the lowest Z of each row: rows 0,1 -> reward 0 ; rows 2,3 -> reward 1
    np.testing.assert_allclose(info.bottleneck_share, [0.5, 0.5])
    # rows 0 and 1 fail the constraint (Z0 = -0.866 > -1 though): no Z <= -1 there;
    # reward 1: rows 2,3 have Z1 = -0.765, -0.956 -> none <= -1
    assert info.masked_failures == 0
    np.testing.assert_allclose(info.attention, [1.0, 1.0])
    np.testing.assert_allclose(info.zero_spread_fraction, [0.0, 0.0])
    assert info.distinct_advantages_per_group.tolist() == [4]
    # a constraint failure hidden by the sum: Z0 = [-1.5, .5, .5, .5] (mean .75, std .5),
    # Z1 = Z2 = [1.5, -.5, -.5, -.5]: row 0 scores 1.5 and gets a positive advantage
    R = np.array([[0.0, 10.0, 10.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    adv, info = ra.advantages(R, method="gdpo", group_size=4, eps=0.0, return_info=True)
    assert adv[0] > 0 and info.masked_failures == 1
    assert info.masked_failures_per_reward.tolist() == [1, 0, 0]
    np.testing.assert_allclose(info.bottleneck_share, [0.25, 0.375, 0.375])
    adv, info = ra.advantages(R, method="min", group_size=4, eps=0.0, return_info=True)
    assert adv[0] < 0 and info.masked_failures == 0


def test_zero_spread_and_collapse_are_counted():
    R = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 5.0], [2.0, 5.0]])
    _, info = ra.advantages(R, method="mean", group_size=2, return_info=True)
    np.testing.assert_allclose(info.zero_spread_fraction, [1.0, 0.5])
    assert info.distinct_advantages_per_group.tolist() == [2, 1]
    m = info.to_metrics(reward_names=["fmt", "len"], prefix="rewardagg/")
    assert m["rewardagg/zero_spread_fraction/fmt"] == 1.0
    assert all(isinstance(v, float) for v in m.values())


def test_expand_to_tokens():
    adv = np.array([1.0, -2.0])
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(ra.expand_to_tokens(adv, mask), [[1, 1, 0], [-2, 0, 0]])
    t = ra.expand_to_tokens(torch.tensor(adv), torch.tensor(mask, dtype=torch.bool))
    assert t.dtype == torch.float64 and t.tolist() == [[1, 1, 0], [-2, 0, 0]]
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        ra.expand_to_tokens(adv, mask[:1])
    with pytest.raises(TypeError, match="numeric adv"):
        ra.expand_to_tokens(np.array(["a", "b"]), mask)


def test_batch_standardize_degenerate_cases():
    assert ra.batch_standardize([3.0]).tolist() == [0.0]
    assert ra.batch_standardize([2.0, 2.0, np.nan]).tolist() == [0.0, 0.0, 0.0]
    out = ra.batch_standardize([1.0, 3.0, np.nan])
    np.testing.assert_allclose(out, [-1 / (np.sqrt(2) + 1e-6), 1 / (np.sqrt(2) + 1e-6), 0.0])


# Regressions from the review of the core against DESIGN.md (each failed before its fix).


def test_mixed_type_labels_are_distinct_groups():
    """[1, '1'] were coerced to strings and merged into one group."""
    R = np.array([[0.0, 1.0], [1.0, 0.5], [1.0, 0.0], [1.0, 1.0], [0.0, 0.2], [1.0, 0.6]])
    two = ra.advantages(R, group_ids=[0, 1, 0, 1, 0, 1])
    np.testing.assert_allclose(ra.advantages(R, group_ids=[1, "1", 1, "1", 1, "1"]), two)
    np.testing.assert_allclose(ra.advantages(R, group_ids=[(0,), (1,)] * 3), two)  # tuples


@pytest.mark.parametrize(
    "fn",
    [
        lambda z, *, weights=None: z[:2, 0],  # wrong length
        lambda z, *, weights=None: z,  # wrong rank
        lambda z, *, weights=None: np.where(np.arange(len(z)) == 0, np.inf, z[:, 0]),
    ],
)
def test_registered_function_output_is_checked(fn):
    ra.register_aggregator("test_bad_output", fn)
    try:
        with pytest.raises(ValueError, match="test_bad_output"):
            ra.advantages(_rewards(), method="test_bad_output", group_size=4)
    finally:
        ra.unregister_aggregator("test_bad_output")


@pytest.mark.parametrize(
    "call",
    [
        lambda: ra.group_standardize(np.array([1e308, -1e308, 0.0]), group_size=3),
        lambda: ra.batch_standardize(np.array([1e308, -1e308, 0.0])),
        lambda: ra.gdpo_advantages(
            np.array([[1e308, 0.0], [-1e308, 1.0], [0.0, 2.0]]), group_size=3
        ),
        lambda: ra.grpo_advantages(np.array([[1e308, 1e308], [0.0, 0.0]]), group_size=2),
        lambda: ra.mean_variance_advantages(
            np.array([[1e20, -1e20], [0.0, 0.0], [1.0, 0.0]], np.float32),
            group_ids=[0, 1, 1],
            singleton="identity",
        ),
    ],
)
def test_overflow_is_an_error_not_a_silent_nan(call):
    with pytest.raises(ValueError, match=r"overflow|largest"):
        call()
