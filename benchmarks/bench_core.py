"""The default call and the numpy path against a copy, the naive implementation and verl.

    python benchmarks/bench_core.py [--sizes 14 16 18 20 22] [--ks 2 4 8 17] [--memory]
                                    [--plot docs/_static/perf_cpu.png] [--json FILE]
    python benchmarks/bench_core.py --replot FILE.json --plot docs/_static/perf_cpu.png

RVPO advantages (softmin, kappa 1, stages 1-3) of float32 numpy rewards in groups of 16,
no missing values (the naive implementation has no notion of them), all timed in one run,
round-robin, best time per call:

- ``copy``: ``np.copyto`` of the rewards into a preallocated array (the memory roofline);
- ``default``: ``rewardagg.softmin_advantages(R, group_size=16)``: the fused numba pass when
  numba is installed (``pip install "rewardagg[fast]"``), else the numpy path;
- ``numpy``: the same call with ``backend="numpy"``: exactly what the default call runs
  when numba is absent (``pip install rewardagg``);
- ``naive``: reshape-and-reduce in float32 numpy (:func:`peers.naive_numpy`);
- ``verl int`` / ``verl uid``: verl's ``compute_grpo_vectorized_outcome_advantage`` once
  per reward (stage 1 only) with integer group ids (its fast path) / with ``uid`` strings as
  verl's trainer passes them (timed once from 2^18 rows, and only up to ``--uid-max``).

Prints the absolute times (ms per call), the ratios (each path to the copy and to the
naive implementation; verl's time to each path's), the load average before and after, and
with ``--memory`` the peak extra memory of each at N = 2^22, K = 17 (fresh process each;
the numpy path with numba blocked). ``--plot`` draws time against N per path and peer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers

import rewardagg as ra

G = 16
PATHS = ("copy", "default", "numpy", "naive", "verl int", "verl uid")
LABELS = {
    "copy": "copy (roofline)",
    "default": "default call (numba)",
    "numpy": "numpy path (no numba)",
    "naive": "naive numpy",
    "verl int": "verl GRPO x K, int ids",
    "verl uid": "verl GRPO x K, uid strings",
}

MEMORY_SETUP = {
    "copy": """
import numpy as np
def make(n):
    r = np.random.default_rng(0).normal(size=(n, 17)).astype(np.float32)
    out = np.empty_like(r)
    return lambda: np.copyto(out, r)
""",
    "default": """
import numpy as np, rewardagg as ra
def make(n):
    r = np.random.default_rng(0).normal(size=(n, 17)).astype(np.float32)
    return lambda: ra.softmin_advantages(r, group_size=16)
""",
    "naive": """
import numpy as np, peers
def make(n):
    r = np.random.default_rng(0).normal(size=(n, 17)).astype(np.float32)
    return lambda: peers.naive_numpy(r, 16)
""",
    "verl int": """
import numpy as np, torch, peers
def make(n):
    r = torch.from_numpy(np.random.default_rng(0).normal(size=(n, 17)).astype(np.float32))
    return peers.verl_grpo_xk(peers.verl_core(), r, 16, "int")
""",
}
MEMORY_SETUP["numpy"] = MEMORY_SETUP["default"]  # run with numba blocked


def implementations(n, k, verl, uid_max):
    """name -> zero-argument call, for one input."""
    r = np.random.default_rng(0).normal(size=(n, k)).astype(np.float32)
    out = np.empty_like(r)
    fns = {
        "copy": lambda: np.copyto(out, r),
        "default": lambda: ra.softmin_advantages(r, group_size=G),
        "numpy": lambda: ra.softmin_advantages(r, group_size=G, backend="numpy"),
        "naive": lambda: peers.naive_numpy(r, G),
    }
    if verl is not None:
        import torch

        t = torch.from_numpy(r)
        fns["verl int"] = peers.verl_grpo_xk(verl, t, G, "int")
        if n <= uid_max:
            fns["verl uid"] = peers.verl_grpo_xk(verl, t, G, "uid")
    return fns


def ratio(t, a, b):
    x, y = t.get(a), t.get(b)
    return "–" if x is None or y is None else f"{x / y:.2f}x"


def ms(t, name):
    return "–" if name not in t else f"{t[name] * 1e3:.3g}"


def render(rows, meta, memory):
    lines = [
        f"CPU: {meta['cpu']}, {meta['cores']} cores; numba {meta['numba']} "
        f"({meta['threads']} threads); verl {meta['verl']}; load average {meta['load_before']:.2f} "
        f"before, {meta['load_after']:.2f} after. RVPO (softmin, kappa 1), float32, groups of "
        f"{G}, best time per call, round-robin.",
        "",
        "**Milliseconds per call**",
        "",
        "| N | K | " + " | ".join(PATHS) + " |",
        "|---|---|" + "---|" * len(PATHS),
    ]
    for row in rows:
        t = row["seconds"]
        cells = " | ".join(ms(t, p) for p in PATHS)
        lines.append(f"| 2^{row['log2n']} | {row['K']} | {cells} |")
    lines += [
        "",
        "**Ratios** (time / copy; time / naive; verl's time / ours: above 1 = we are faster)",
        "",
        "| N | K | default / copy | numpy / copy | naive / copy | default / naive "
        "| numpy / naive | verl int / default | verl uid / default | verl int / numpy "
        "| verl uid / numpy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        t = row["seconds"]
        cells = [
            ratio(t, "default", "copy"),
            ratio(t, "numpy", "copy"),
            ratio(t, "naive", "copy"),
            ratio(t, "default", "naive"),
            ratio(t, "numpy", "naive"),
            ratio(t, "verl int", "default"),
            ratio(t, "verl uid", "default"),
            ratio(t, "verl int", "numpy"),
            ratio(t, "verl uid", "numpy"),
        ]
        lines.append(f"| 2^{row['log2n']} | {row['K']} | " + " | ".join(cells) + " |")
    slower = [
        f"2^{r['log2n']}/K={r['K']}" for r in rows if r["seconds"]["numpy"] > r["seconds"]["naive"]
    ]
    lines += [
        "",
        "numpy path at least as fast as naive everywhere: "
        + ("yes" if not slower else f"NO (slower at {', '.join(slower)})"),
    ]
    if memory:
        lines += [
            "",
            "**Peak extra memory of one call, N = 2^22, K = 17** (input 272 MiB; fresh process "
            "each; `numpy` with numba blocked)",
            "",
            "| path | tracemalloc MiB | resident high-water MiB |",
            "|---|---|---|",
        ]
        for name, m in memory.items():
            lines.append(f"| {name} | {m['tracemalloc_mib']:.0f} | {m['hwm_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({r["K"] for r in rows})
    fig, axes = plt.subplots(1, len(ks), figsize=(3.2 * len(ks), 3.2), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, k in zip(axes, ks, strict=True):
        sub = [r for r in rows if r["K"] == k]
        for name in PATHS:
            pts = [(2 ** r["log2n"], r["seconds"][name] * 1e3) for r in sub if name in r["seconds"]]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.loglog(x, y, marker="o", ms=3, label=LABELS[name])
        ax.set_title(f"K = {k}")
        ax.set_xlabel("N (rows)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("ms per call")
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    fig.suptitle("RVPO advantages, float32, groups of 16 (benchmarks/bench_core.py)", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=90)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[14, 16, 18, 20, 22], help="log2 N")
    p.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8, 17])
    p.add_argument("--budget", type=float, default=0.3, help="seconds of repeats per call")
    p.add_argument("--uid-max", type=int, default=20, help="log2 N up to which verl uid runs")
    p.add_argument("--memory", action="store_true", help="peak memory at N=2^22, K=17")
    p.add_argument("--no-verl", action="store_true")
    p.add_argument("--plot", default=None, help="write the time-vs-N plot (PNG) here")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--replot", default=None, help="only draw --plot from this JSON output")
    a = p.parse_args(argv)
    if a.replot:
        with open(a.replot) as f:
            plot(json.load(f)["rows"], a.plot or "perf_cpu.png")
        return
    verl = None if a.no_verl else peers.verl_core()
    try:
        import numba

        numba_info = (numba.__version__, numba.get_num_threads())
        ra.kernels.warmup()
    except ImportError:
        numba_info = (None, None)
    meta = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "numba": numba_info[0],
        "threads": numba_info[1],
        "verl": getattr(sys.modules.get("verl"), "__version__", None),
        "load_before": peers.load_average(),
    }
    rows = []
    for k in a.ks:
        for e in a.sizes:
            n = 2**e
            fns = implementations(n, k, verl, 2**a.uid_max)
            slow = {"verl uid"} if e >= 18 else set()
            t = peers.round_robin(fns, budget=a.budget, slow=slow)
            rows.append({"log2n": e, "N": n, "K": k, "seconds": t})
            print(
                f"N=2^{e} K={k}: " + ", ".join(f"{q} {t[q] * 1e3:.3g} ms" for q in t),
                file=sys.stderr,
                flush=True,
            )
            del fns
    meta["load_after"] = peers.load_average()
    memory = {}
    if a.memory:
        for name, setup in MEMORY_SETUP.items():
            if name.startswith("verl") and verl is None:
                continue
            memory[name] = peers.peak_memory(setup, 2**22, block_numba=name == "numpy")
            print(f"memory {name}: {memory[name]}", file=sys.stderr, flush=True)
    print(render(rows, meta, memory))
    if a.plot:
        plot(rows, a.plot)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "rows": rows, "peak_memory": memory}, f, indent=1)


if __name__ == "__main__":
    main()
