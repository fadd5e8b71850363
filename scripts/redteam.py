"""Red-team fuzz of rewardagg's public API: random hostile inputs and options, each case
classified against an independent reference written here.

    python scripts/redteam.py --cases 3000 --seed 0 [--verbose]

Buckets:
  correct       matches the reference below (60-digit mpmath, written from DESIGN.md 2-2b,
                not from the library's code), or a documented refusal (a ValueError for a
                score that overflows the dtype, for instance)
  clear_error   a ValueError/TypeError for an invalid input whose message names the
                argument that was made invalid
  opaque        any other exception, or an error whose message does not name the argument
  silent_wrong  a result that differs from the reference, an invalid input accepted, or a
                tracker that holds a non-finite value
  hang          the case ran past --timeout seconds
  crash         the interpreter died (seen as the run ending early; run it in a shell)

Cases: advantages with every method, order, centring, singleton, baseline, weights,
multipliers, backend (numpy, torch, numba), dtypes (float64, float32), NaN holes, huge
offsets, subnormal values, eps = 0, tiny/huge kappa; corrupted arguments (bad types,
shapes, inf, NaN, negative weights, unknown options); and ConstraintTracker update /
state_dict / load_state_dict sequences. Each case prints a one-line reproducer with
--verbose (or for the non-correct buckets always).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mpmath as mp
import numpy as np

import rewardagg as ra

mp.mp.dps = 60
METHODS = ("grpo", "gdpo", "mean", "softmin", "mean_variance", "min", "cvar", "power_mean")
FUSED = ("gdpo", "mean", "softmin", "mean_variance", "min", "cvar")
DOCUMENTED = ("overflow", "span more than", "non-negative", "has no kernel", "fuses stages")
KNOWN_FUSED = "[known, core/kernels (issue 23): multipliers on the fused numba path] "
KNOWN_NOISE = (
    "[known, core: stage 3 standardises rounding noise when the exact scores are all equal] "
)
KNOWN_GRPO = "[known, core: grpo row whose present rewards all have weight 0] "
BUCKETS = ("correct", "clear_error", "opaque", "silent_wrong", "hang", "crash")

# ------------------------------------------------------------------ the reference (DESIGN)


def _mpf(x: float) -> Any:
    return mp.mpf(float(x))


def ref_stage1(col, groups, eps, corr, singleton, baseline, scale=True):
    """Z of one column (list of floats, NaN = missing), per DESIGN 2 stage 1
    (``scale=False``: only centred)."""
    out: list[Any] = [None] * len(col)
    for rows in groups:
        present = [i for i in rows if not math.isnan(col[i])]
        xs = [_mpf(col[i]) for i in present]
        n = len(xs)
        if n == 1 and singleton == "identity":
            out[present[0]] = xs[0] / (1 + _mpf(eps)) if scale else xs[0]
            continue
        if n < 2 or max(xs) == min(xs) or n - corr <= 0:
            for i in present:
                out[i] = mp.mpf(0)
            continue
        mu = mp.fsum(xs) / n
        sd = mp.sqrt(mp.fsum((x - mu) ** 2 for x in xs) / (n - corr))
        for i, x in zip(present, xs, strict=True):
            base = (mp.fsum(xs) - x) / (n - 1) if baseline == "leave_one_out" else mu
            out[i] = (x - base) / (sd + _mpf(eps)) if scale else x - base
    return out


def ref_reduce(vals, w, method, prm):
    """Stage-2 score of one row (vals: mp numbers or None)."""
    pairs = [(x, _mpf(wk)) for x, wk in zip(vals, w, strict=True) if x is not None and wk > 0]
    if not pairs:
        return None
    tot = mp.fsum(b for _, b in pairs)
    v = [(x, b / tot) for x, b in pairs]
    if method == "gdpo":
        return mp.fsum(x * b for x, b in pairs)
    mean = mp.fsum(x * b for x, b in v)
    if method == "mean":
        return mean
    if method == "min":
        return min(x for x, _ in v)
    if method == "mean_variance":
        return mean - _mpf(prm["lam"]) * mp.fsum(b * (x - mean) ** 2 for x, b in v)
    if method == "softmin":
        k = _mpf(prm["kappa"])
        if k == 0:
            return mean
        if mp.isinf(k):
            return min(x for x, _ in v)
        m = min(x for x, _ in v)  # expm1/log1p: kappa (x - m) can be 1e-300
        return m - mp.log1p(mp.fsum(b * mp.expm1(-k * (x - m)) for x, b in v)) / k
    if method == "cvar":
        a, c, acc = _mpf(prm["alpha"]), mp.mpf(0), mp.mpf(0)
        for x, b in sorted(v, key=lambda t: t[0]):
            acc += x * max(mp.mpf(0), min(b, a - c))
            c += b
        return acc / a
    if method == "power_mean":
        p = prm["p"]
        if any(x == 0 for x, _ in v) and p <= 0:
            return mp.mpf(0)
        if p == 0:
            return mp.exp(mp.fsum(b * mp.log(x) for x, b in v))
        if math.isinf(p):
            return min(x for x, _ in v) if p < 0 else max(x for x, _ in v)
        return mp.fsum(b * x ** _mpf(p) for x, b in v) ** (1 / _mpf(p))
    raise AssertionError(method)


def ref_advantages(R, groups, c):
    """float64 advantages of the case ``c`` (a dict of options)."""
    n, k = R.shape
    eps, corr = c["eps"], c["correction"]
    s1 = (eps, corr, c["singleton"], c["baseline"])
    method, w = c["method"], c["w"]
    if method == "grpo":
        s = [
            mp.fsum(_mpf(R[i, j]) * _mpf(w[j]) for j in range(k) if not math.isnan(R[i, j]))
            if any(not math.isnan(R[i, j]) for j in range(k))
            else None
            for i in range(n)
        ]
        col = [math.nan if x is None else float(x) for x in s]
        z = ref_stage1(col, groups, *s1, scale=c["scale"] == "group")
        return np.array([0.0 if x is None else float(x) for x in z])
    Z = [ref_stage1(list(R[:, j]), groups, *s1) for j in range(k)]
    Z = [[Z[j][i] for j in range(k)] for i in range(n)]
    if c["order"] == "normalize_then_reduce":
        S = [ref_reduce(Z[i], w, method, c["prm"]) for i in range(n)]
    else:
        raw = [[None if math.isnan(x) else _mpf(x) for x in row] for row in R]
        s = [ref_reduce(raw[i], w, method, c["prm"]) for i in range(n)]
        S = ref_stage1([math.nan if x is None else float(x) for x in s], groups, *s1)
    for col, lam in c["mult"].items():
        S = [None if S[i] is None else S[i] + _mpf(lam) * (Z[i][col] or 0) for i in range(n)]
    if c["center"] == "group":
        for rows in groups:
            have = [i for i in rows if S[i] is not None]
            if have:
                mu = mp.fsum(S[i] for i in have) / len(have)
                for i in have:
                    S[i] = S[i] - mu
    if not c["batch_norm"]:
        return np.array([0.0 if x is None else float(x) for x in S])
    idx = [i for i in range(n) if S[i] is not None]
    vals = [S[i] for i in idx]
    out = np.zeros(n)
    if len(vals) < 2 or max(vals) == min(vals) or len(vals) - corr <= 0:
        return out
    mu = mp.fsum(vals) / len(vals) if c["center"] == "batch" else mp.mpf(0)
    mu_all = mp.fsum(vals) / len(vals)
    sd = mp.sqrt(mp.fsum((x - mu_all) ** 2 for x in vals) / (len(vals) - corr))
    for i in idx:
        out[i] = float((S[i] - mu) / (sd + _mpf(eps)))
    return out


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    kind: str
    repro: str
    run: Callable[[], Any]
    check: Callable[[Any], str]  # result -> bucket (or a string starting "silent")
    bad_arg: str | None = None  # the argument made invalid (an error must name it)
    known: str = ""  # a defect another helper owns: tagged in the detail
    notes: list[str] = field(default_factory=list)


def _groups(n, g):
    return [list(range(s, s + g)) for s in range(0, n, g)]


def _values(rng, n, k, method, order):
    style = rng.choice(["normal", "binary", "offset", "tiny", "huge", "ties"])
    R = rng.normal(size=(n, k))
    if style == "binary":
        R = (rng.random((n, k)) < 0.5).astype(float)
    elif style == "offset":
        R = R + float(rng.choice([1e6, 1e9, 1e12]))
    elif style == "tiny":
        R = R * float(rng.choice([1e-160, 1e-300, 1e-310]))
    elif style == "huge":
        R = R * float(rng.choice([1e100, 1e150]))
    elif style == "ties":
        R = np.round(R)
    if method == "power_mean":
        R = np.abs(R)
    R[rng.random((n, k)) < float(rng.choice([0.0, 0.1, 0.4]))] = np.nan
    return R, str(style)


def _options(rng, k):
    method = str(rng.choice(METHODS))
    order = "normalize_then_reduce"
    if method == "power_mean" or (method not in ("grpo", "gdpo") and rng.random() < 0.25):
        order = "reduce_then_normalize"
    prm: dict[str, Any] = {}
    if method == "softmin":
        prm["kappa"] = float(rng.choice([0.0, 5e-324, 1e-300, 1e-8, 0.5, 1.0, 8.0, 1e6, math.inf]))
    elif method == "mean_variance":
        prm["lam"] = float(rng.choice([0.0, 0.5, 3.0]))
    elif method == "cvar":
        prm["alpha"] = float(rng.choice([1e-6, 0.25, 0.5, 1.0]))
    elif method == "power_mean":
        prm["p"] = float(rng.choice([-math.inf, -50.0, -1.0, -1e-12, 0.0, 1e-12, 0.5, 1.0, 50.0]))
    w = [1.0] * k
    if rng.random() < 0.4:
        w = [float(x) for x in rng.choice([0.0, 0.5, 1.0, 2.0], size=k)]
        if not any(x > 0 for x in w):
            w[0] = 1.0
    c = dict(
        method=method,
        order=order,
        prm=prm,
        w=w,
        eps=float(rng.choice([1e-6, 0.0, 1e-4])),
        correction=float(rng.choice([1.0, 0.0])),
        singleton=str(rng.choice(["zero", "identity"])),
        baseline=str(rng.choice(["mean", "leave_one_out"])),
        center="batch",
        batch_norm=True,
        mult={},
        scale="group",
    )
    if method == "grpo":
        c["scale"] = str(rng.choice(["group", "none"]))
        c["eps"] = c["eps"] or 1e-6
    else:
        c["batch_norm"] = bool(rng.random() < 0.8)
        c["center"] = "group" if c["batch_norm"] and rng.random() < 0.3 else "batch"
        if rng.random() < 0.3:
            c["mult"] = {int(rng.integers(k)): float(rng.choice([0.0, 0.5, 2.0]))}
    return c


def _call_kwargs(c, g):
    kw: dict[str, Any] = dict(method=c["method"], group_size=g, eps=c["eps"])
    kw.update(correction=c["correction"], singleton=c["singleton"], baseline=c["baseline"])
    kw.update(c["prm"])
    if c["w"] != [1.0] * len(c["w"]):
        kw["weights"] = c["w"]
    if c["method"] == "grpo":
        kw["scale"] = c["scale"]
    else:
        kw.update(order=c["order"], batch_norm=c["batch_norm"], center=c["center"])
        if c["mult"]:
            kw["multipliers"] = c["mult"]
    return kw


def _backend_for(rng, c):
    options = ["numpy", "torch", "auto"]
    if c["method"] in FUSED and c["order"] == "normalize_then_reduce":
        options.append("numba")
    return str(rng.choice(options))


def _ill_conditioned(R, ref):
    """The reference itself is fragile where the inputs lose float64 digits (huge or
    subnormal magnitudes); tolerances widen there."""
    finite = R[~np.isnan(R)]
    if finite.size and (np.abs(finite).max() > 1e100 or np.abs(finite).max() < 1e-150):
        return True
    return False


def _degenerate(R, n, g, c):
    """The exact scores before stage 3 are all equal (the answer is then 0)."""
    if c["method"] == "grpo" or not c["batch_norm"]:
        return False
    groups, r64 = _groups(n, g), R.astype(np.float64)
    s_raw = ref_advantages(r64, groups, dict(c, batch_norm=False, center="batch"))
    s_c = ref_advantages(r64, groups, dict(c, batch_norm=False))  # centred per group
    return float(np.ptp(s_c)) <= 1e-30 * max(float(np.max(np.abs(s_raw))), 1.0)


def valid_case(rng) -> Case:
    n_groups, g = int(rng.integers(1, 5)), int(rng.choice([1, 2, 4, 6]))
    n, k = n_groups * g, int(rng.integers(1, 5))
    c = _options(rng, k)
    R, style = _values(rng, n, k, c["method"], c["order"])
    dtype = str(rng.choice(["float64", "float32"])) if style in ("normal", "binary") else "float64"
    R = R.astype(dtype)
    backend = _backend_for(rng, c)
    kw = _call_kwargs(c, g)
    kw["backend"] = backend
    repro = (
        f"ra.advantages(np.array({R.tolist()!r}, dtype='{dtype}'){', torch' if backend == 'torch' else ''}, "
        f"**{kw!r})"
    ).replace("nan", "float('nan')")

    def run():
        x = R
        if backend == "torch":
            import torch

            x = torch.from_numpy(R)
        return np.asarray(ra.advantages(x, **kw), dtype=np.float64)

    def check(got):
        want = ref_advantages(R.astype(np.float64), _groups(n, g), c)
        if got.shape != want.shape or not np.all(np.isfinite(got)):
            return "silent_wrong"
        tol = 2e-3 if dtype == "float32" else 1e-7
        if _ill_conditioned(R, want):
            tol = max(tol, 1e-4)
        exact_z = c["order"] == "normalize_then_reduce" and c["method"] != "grpo"
        if style == "offset" and (not exact_z or c["singleton"] == "identity"):
            tol = max(tol, 1e-3)  # the score itself is a float64 at 1e12 (raw order, grpo's
            # sum, or verl's identity singleton): its ulp is 1.2e-4
        if dtype == "float32" and c["method"] != "grpo" and c["batch_norm"]:
            # float32 scores resolve 6e-8 of their size: stage 3 magnifies that by
            # max|S| / spread(S) (scores that differ by 1e-6 relative are noise there)
            s_c = ref_advantages(R.astype(np.float64), _groups(n, g), dict(c, batch_norm=False))
            spread = float(np.ptp(s_c))
            if spread > 0:
                tol = max(tol, 3e-7 * float(np.max(np.abs(s_c))) / spread)
        err = np.abs(got - want) / (1.0 + np.abs(want))
        if err.max() <= tol or (not np.any(got) and _degenerate(R, n, g, c)):
            return "correct"
        zero_w = [j for j in range(k) if c["w"][j] == 0]
        rows = ~np.isnan(R).all(1) & np.isnan(np.delete(R, zero_w, axis=1)).all(1)
        known = KNOWN_GRPO if c["method"] == "grpo" and zero_w and rows.any() else ""
        if not known and _degenerate(R, n, g, c):  # exact scores all equal: the answer
            known = KNOWN_NOISE  # is 0, the computed ones differ by float64 rounding
        return f"silent_wrong {known}(max err {err.max():.3g})"

    fused = backend == "numba" or (backend == "auto" and n * k >= (1 << 30))
    known = KNOWN_FUSED if fused and c["mult"] else ""
    return Case("advantages", repro, run, check, known=known)


def _corrupt(rng):
    """(call kwargs change, the argument named, a description)."""
    R = rng.normal(size=(8, 3))
    choices = [
        ("rewards", lambda: np.where(np.eye(8, 3, dtype=bool), np.inf, R), {}),
        ("rewards", lambda: R[:, :, None], {}),
        ("rewards", lambda: np.array([["a"] * 3] * 8), {}),
        ("rewards", lambda: np.zeros((8, 0)), {}),
        ("weights", lambda: R, {"weights": [1.0, -1.0, 1.0]}),
        ("weights", lambda: R, {"weights": [1.0, 1.0]}),
        ("weights", lambda: R, {"weights": [np.nan, 1.0, 1.0]}),
        ("eps", lambda: R, {"eps": -1.0}),
        ("eps", lambda: R, {"eps": "1e-6"}),
        ("kappa", lambda: R, {"kappa": np.nan}),
        ("kappa", lambda: R, {"kappa": -1.0}),
        ("alpha", lambda: R, {"method": "cvar", "alpha": 0.0}),
        ("p", lambda: R, {"method": "power_mean", "p": np.nan}),
        ("group_size", lambda: R, {"group_size": 3}),
        ("group_size", lambda: R, {"group_size": 0}),
        ("group_ids", lambda: R, {"group_size": None, "group_ids": [0, 1]}),
        ("mask", lambda: R, {"mask": np.ones((8, 2), bool)}),
        ("method", lambda: R, {"method": "softmax"}),
        ("singleton", lambda: R, {"singleton": "one"}),
        ("baseline", lambda: R, {"baseline": "loo"}),
        ("order", lambda: R, {"order": "reduce"}),
        ("center", lambda: R, {"center": "row"}),
        ("backend", lambda: R, {"backend": "cuda"}),
        ("batch_norm", lambda: R, {"batch_norm": "False"}),
        ("process_group", lambda: R, {"process_group": "x"}),
        ("multipliers", lambda: R, {"multipliers": {7: 1.0}}),
        ("multipliers", lambda: R, {"multipliers": {0: -1.0}}),
        ("correction", lambda: R, {"correction": -1}),
        ("reward_names", lambda: R, {"reward_names": "abc"}),
    ]
    arg, make, change = choices[int(rng.integers(len(choices)))]
    return arg, make, change


def invalid_case(rng) -> Case:
    arg, make, change = _corrupt(rng)
    kw = {"group_size": 4, "method": "softmin", **change}
    kw = {a: b for a, b in kw.items() if b is not None or a != "group_size"}
    if "group_ids" in kw:
        kw.pop("group_size", None)
    backend = str(rng.choice(["numpy", "torch", "numba", "auto"]))
    kw.setdefault("backend", backend)

    def run():
        x = make()
        if backend == "torch" and x.dtype.kind == "f":
            import torch

            x = torch.from_numpy(np.ascontiguousarray(x))
        return ra.advantages(x, **kw)

    def check(got):
        return "silent_wrong (accepted)"

    return Case("invalid", f"ra.advantages(<{arg} corrupted>, **{kw!r})", run, check, bad_arg=arg)


# ---- the constraint tracker


def tracker_case(rng) -> Case:
    k = int(rng.integers(1, 4))
    targets = {
        int(j): float(rng.normal())
        for j in rng.choice(k, int(rng.integers(1, k + 1)), replace=False)
    }
    lr = float(rng.choice([0.0, 0.1, 1.0, 1e308]))
    lmax = float(rng.choice([1.0, 5.0, math.inf]))
    kp, kd = (0.0, 0.0) if rng.random() < 0.5 else (float(rng.random()), float(rng.random()))
    steps = []
    for _ in range(int(rng.integers(1, 8))):
        roll = rng.random()
        n = int(rng.choice([0, 1, 4]))
        B = rng.normal(size=(n, k)) * float(rng.choice([1.0, 1e300]))
        B[rng.random(B.shape) < 0.3] = np.nan
        if roll < 0.1:
            B = np.vstack([B, np.full((1, k), float(rng.choice([np.inf, -np.inf])))])
            steps.append(("update_bad", B))
        elif roll < 0.15:
            steps.append(("update_shape", np.zeros(k + 1)))
        elif roll < 0.3:
            steps.append(("roundtrip", None))
        elif roll < 0.4:
            key = str(rng.choice(["multipliers", "integral", "prev_error", "step", "keys"]))
            bad = rng.choice(["neg", "nan", "inf", "short", "none", "huge"])
            steps.append(("load_bad", (key, str(bad))))
        else:
            steps.append(("update", B))
    repro = (
        f"ConstraintTracker({targets}, lr={lr}, lambda_max={lmax}, kp={kp}, kd={kd}); "
        f"steps={[s for s, _ in steps]}"
    )

    def run():
        t = ra.ConstraintTracker(targets, lr=lr, lambda_max=lmax, kp=kp, kd=kd)
        outcome = []
        for kind, arg in steps:
            before = t.state_dict()
            try:
                if kind == "update":
                    t.update(arg)
                elif kind == "update_bad":
                    t.update(arg)
                    outcome.append("accepted inf batch")
                elif kind == "update_shape":
                    t.update(arg)
                    outcome.append("accepted 1-D batch")
                elif kind == "roundtrip":
                    state = json.loads(json.dumps(t.state_dict(), allow_nan=False))
                    t2 = ra.ConstraintTracker(targets, lr=lr, lambda_max=lmax, kp=kp, kd=kd)
                    t2.load_state_dict(state)
                    if t2.state_dict() != t.state_dict():
                        outcome.append("round trip changed the state")
                    t = t2
                else:
                    key, bad = arg
                    state = json.loads(json.dumps(before))
                    val = {"neg": -1.0, "nan": math.nan, "inf": math.inf, "huge": 1e309}.get(bad)
                    if bad == "none":
                        state[key] = None
                    elif bad == "short":
                        state[key] = [] if isinstance(state[key], list) else -1
                    elif isinstance(state[key], list):
                        state[key] = [val] * len(state[key])
                    else:
                        state[key] = val
                    t.load_state_dict(state)
                    if key != "prev_error" or bad in ("nan", "inf", "none", "short"):
                        outcome.append(f"loaded a bad {key} ({bad})")
            except (ValueError, TypeError) as e:
                if kind in ("update", "roundtrip") and "overflows float64" not in str(e):
                    raise
                if t.state_dict() != before:
                    outcome.append(f"{kind}: the state changed on an error")
            state = t.state_dict()
            nums = state["multipliers"] + state["integral"]
            nums += [e for e in state["prev_error"] if e is not None]
            if not all(math.isfinite(x) for x in nums) or state["step"] < 0:
                outcome.append(f"non-finite state after {kind}")
            if any(not 0 <= x <= lmax for x in state["multipliers"]):
                outcome.append(f"multiplier out of [0, lambda_max] after {kind}")
        return outcome

    def check(outcome):
        return "correct" if not outcome else f"silent_wrong ({'; '.join(outcome)})"

    return Case("tracker", repro, run, check)


# ------------------------------------------------------------------------------ running


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def classify(case: Case, timeout: float) -> tuple[str, str]:
    """(bucket, detail)."""
    use_alarm = hasattr(signal, "SIGALRM")
    if use_alarm:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        got = case.run()
    except _Timeout:
        return "hang", ""
    except (ValueError, TypeError) as e:
        msg = str(e)
        if case.bad_arg is not None:
            named = case.bad_arg in msg or (case.bad_arg == "rewards" and "reward" in msg)
            return ("clear_error", msg) if named else ("opaque", f"{type(e).__name__}: {msg}")
        if any(d in msg for d in DOCUMENTED):
            return "correct", f"documented refusal: {msg}"
        return "opaque", f"{type(e).__name__}: {msg}"
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return "opaque", f"{type(e).__name__}: {e} ({tb.filename}:{tb.lineno})"
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        verdict = case.check(got)
    except Exception as e:
        return "opaque", f"reference failed: {type(e).__name__}: {e}"
    return ("correct", "") if verdict == "correct" else ("silent_wrong", verdict)


def make_case(rng) -> Case:
    roll = rng.random()
    if roll < 0.7:
        return valid_case(rng)
    if roll < 0.85:
        return invalid_case(rng)
    return tracker_case(rng)


def run(cases: int, seed: int, timeout: float = 30.0, verbose: bool = False, out=sys.stdout):
    """Run ``cases`` cases; returns (tally, list of (bucket, kind, repro, detail))."""
    import warnings

    warnings.simplefilter("ignore")
    from rewardagg import kernels

    if "numba" in kernels.available_backends():
        kernels.warmup()  # compile before the clock: a compile is not a hang
    rng = np.random.default_rng(seed)
    tally: collections.Counter = collections.Counter({b: 0 for b in BUCKETS})
    bad = []
    for i in range(cases):
        case = make_case(rng)
        bucket, detail = classify(case, timeout)
        if bucket not in ("correct", "clear_error") and case.known:
            detail = case.known + detail
        tally[bucket] += 1
        if bucket not in ("correct", "clear_error"):
            bad.append((bucket, case.kind, case.repro, detail))
        if verbose or bucket not in ("correct", "clear_error"):
            print(f"[{i}] {bucket:12s} {case.kind}: {case.repro}  -> {detail[:300]}", file=out)
    return tally, bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case (hang)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    tally, bad = run(args.cases, args.seed, args.timeout, args.verbose)
    print("tally:", ", ".join(f"{b} {tally[b]}" for b in BUCKETS))
    known = collections.Counter(
        d[d.index("[known") : d.index("]", d.index("[known")) + 1]
        for _, _, _, d in bad
        if "[known" in d
    )
    for tag, count in known.items():
        print(f"  of which {count} {tag}")
    return 1 if len(bad) > sum(known.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
