"""Issue 24: fuzz of the ConstraintTracker against an independent loop implementation of
the DESIGN.md 2b update rule, with NaN and empty batches, non-finite batches (refused, no
state change), PID on and off, and state round trips through JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import rewardagg as ra


class LoopTracker:
    """The update rule written out one constraint and one row at a time (plain floats):
    e = t - mean over present rows; I = clip(I + lr e, 0, lmax);
    lambda = clip(I + kp e + kd (e - e_prev), 0, lmax); no present row: no change."""

    def __init__(self, targets, lr, lmax, kp, kd):
        self.targets, self.lr, self.lmax, self.kp, self.kd = targets, lr, lmax, kp, kd
        self.lam = {c: 0.0 for c in targets}
        self.integral = {c: 0.0 for c in targets}
        self.prev = {c: None for c in targets}
        self.step = 0

    def update(self, rows, mask):
        for c, t in self.targets.items():
            vals = [r[c] for r, m in zip(rows, mask, strict=True) if m[c] and r[c] == r[c]]
            if not vals:
                continue
            total = 0.0
            for v in vals:
                total += v
            e = t - total / len(vals)
            i = min(max(self.integral[c] + self.lr * e, 0.0), self.lmax)
            d = 0.0 if self.prev[c] is None else e - self.prev[c]
            self.lam[c] = min(max(i + self.kp * e + self.kd * d, 0.0), self.lmax)
            self.integral[c], self.prev[c] = i, e
        self.step += 1


def _batch(rng, k):
    n = int(rng.choice([0, 1, 3, 8]))
    rows = rng.normal(size=(n, k)) * 2
    kind = rng.random()
    if kind < 0.3:
        rows[rng.random(rows.shape) < 0.4] = np.nan
    elif kind < 0.4:
        rows[:, int(rng.integers(k))] = np.nan  # a constraint missing from the whole batch
    mask = rng.random(rows.shape) > 0.2 if rng.random() < 0.3 else np.ones(rows.shape, bool)
    return rows, mask


@pytest.mark.parametrize("seed", range(40))
def test_issue24_tracker_fuzz_against_loop_rule(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 4))
    cols = sorted(rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False).tolist())
    targets = {c: float(rng.normal()) for c in cols}
    lr = float(rng.choice([0.0, 0.1, 1.0, 7.0]))
    lmax = float(rng.choice([0.5, 3.0, math.inf]))
    kp, kd = (0.0, 0.0) if rng.random() < 0.5 else (float(rng.random()), float(rng.random()))
    ref = LoopTracker(targets, lr, lmax, kp, kd)
    t = ra.ConstraintTracker(targets, lr=lr, lambda_max=lmax, kp=kp, kd=kd)
    for _ in range(12):
        roll = rng.random()
        if roll < 0.1:  # a hostile batch: refused, nothing changes
            rows, _ = _batch(rng, k)
            rows = np.vstack([rows, np.full((1, k), rng.choice([np.inf, -np.inf]))])
            before = t.state_dict()
            with pytest.raises(ValueError, match="column"):
                t.update(rows)
            assert t.state_dict() == before
            continue
        if roll < 0.25:  # checkpoint: JSON round trip into a fresh tracker
            state = json.loads(json.dumps(t.state_dict(), allow_nan=False))
            t = ra.ConstraintTracker(targets, lr=lr, lambda_max=lmax, kp=kp, kd=kd)
            t.load_state_dict(state)
        rows, mask = _batch(rng, k)
        t.update(rows, mask=mask)
        ref.update(rows.tolist(), mask.tolist())
        assert t.step == ref.step
        for c in cols:
            assert t.multipliers[c] == pytest.approx(ref.lam[c], rel=1e-12, abs=1e-12)
            assert math.isfinite(t.multipliers[c]) and 0 <= t.multipliers[c] <= lmax
