"""What both benchmark scripts time rewardagg against, and how they time and weigh it.

- :func:`naive_numpy`: RVPO written the obvious way, reshape and reduce in float32 (the
  bar the numpy path must clear, issue 20);
- :func:`verl_grpo_xk`: verl's own vectorised GRPO advantage called once per reward, with
  the group ids either as integers (its fast path) or as ``uid`` strings, as verl's trainer
  passes them (``np.array`` of ``str(uuid4())`` per prompt);
- :func:`round_robin`: best time per call, every implementation called once per round so
  that load from other processes hits them alike;
- :func:`peak_memory`: extra memory of one call in a fresh process, by ``tracemalloc``
  (numpy's allocations) and by the resident high-water mark (everything).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import numpy as np


def naive_numpy(R, g, kappa=1.0, eps=1e-6):
    """Reshape-and-reduce in the obvious way (what the issue calls naive)."""
    n, k = R.shape
    x = R.reshape(n // g, g, k)
    z = (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, ddof=1, keepdims=True) + eps)
    z = z.reshape(n, k)
    m = z.min(axis=1, keepdims=True)
    s = m[:, 0] - np.log(np.mean(np.exp(-kappa * (z - m)), axis=1)) / kappa
    return (s - s.mean()) / (s.std(ddof=1) + eps)


def verl_core():
    """verl's ``core_algos`` module, or ``None`` when verl is not importable."""
    try:
        from verl.trainer.ppo import core_algos
    except Exception:  # any import problem: the peers are optional
        return None
    return core_algos


def group_ids(n, g, kind):
    """One group label per row: ``"int"`` (int64 array) or ``"uid"`` (uuid strings, one per
    prompt, as verl's trainer builds ``non_tensor_batch["uid"]``)."""
    if kind == "int":
        return np.arange(n, dtype=np.int64) // g
    labels = np.array([str(uuid.UUID(int=i)) for i in range(n // g)], dtype=object)
    return np.repeat(labels, g)


def verl_grpo_xk(core, r, g, kind):
    """verl's ``compute_grpo_vectorized_outcome_advantage`` once per reward column of the
    torch tensor ``r`` (stage 1 only; response length 1; NaN read as 0)."""
    import torch

    n, k = r.shape
    ids = group_ids(n, g, kind)
    mask = torch.ones(n, 1, device=r.device)
    cols = [r[:, j : j + 1].nan_to_num(0.0).contiguous() for j in range(k)]

    def run():
        return [core.compute_grpo_vectorized_outcome_advantage(c, mask, ids)[0] for c in cols]

    return run


PAUSE = 0.005
"""Seconds of sleep before each timed call: torch's OpenMP threads keep spinning for a
while after an operation, and on a 2-core machine they would slow whichever call comes
next (ours or verl's) by several times; the pause lets them go idle."""


def _timed(fn, sync=None):
    time.sleep(PAUSE)
    t = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - t


def round_robin(fns, *, budget=0.5, min_rounds=3, max_rounds=20, slow=(), sync=None):
    """Best seconds per call of each zero-argument function. The fast ones run round-robin
    after a warm-up call, until each has had about ``budget`` seconds; the ``slow`` ones
    run once each. ``sync`` (e.g. ``torch.cuda.synchronize``) runs inside the timing."""
    best = {}
    fast = {k: f for k, f in fns.items() if k not in slow}
    for fn in fast.values():
        fn()
    spent, rounds = 0.0, 0
    while fast and (rounds < min_rounds or (spent < budget * len(fast) and rounds < max_rounds)):
        for name, fn in fast.items():
            dt = _timed(fn, sync)
            best[name] = min(best.get(name, float("inf")), dt)
            spent += dt
        rounds += 1
    for name in fns:
        if name in slow:
            best[name] = _timed(fns[name], sync)
    return best


_MEMORY_PROBE = """
import ctypes, gc, json, sys, tracemalloc
if {block_numba}:
    sys.modules["numba"] = None  # what `pip install rewardagg` gives
sys.path[:0] = {paths!r}
import numpy as np
setup = {{}}
exec({setup!r}, setup)
fn, small = setup["make"]({n}), setup["make"](4096)
small()  # imports, compiled code, thread pools: start-up costs, not per call
def kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark (Linux)
before = kib("VmRSS:")
tracemalloc.start()
fn()
_, peak = tracemalloc.get_traced_memory()
print(json.dumps({{"tracemalloc_mib": peak / 2**20, "hwm_mib": (kib("VmHWM:") - before) / 1024}}))
"""


def peak_memory(setup, n, *, block_numba=False, timeout=900):
    """``{"tracemalloc_mib", "hwm_mib"}`` of one call in a fresh process. ``setup`` is Python
    source defining ``make(n)``, which builds the input (before the measurement) and returns
    the call to measure. ``block_numba`` runs as if numba were not installed."""
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.join(os.path.dirname(here), "src")
    code = _MEMORY_PROBE.format(block_numba=block_numba, paths=[here, src], setup=setup, n=n)
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(res.stderr[-2000:], file=sys.stderr)
        return {"tracemalloc_mib": float("nan"), "hwm_mib": float("nan")}


def load_average():
    """The 1-minute load average (``nan`` where unknown): timings on a shared machine are
    only comparable within one run."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")
