"""Stage 1-2 kernels and full advantage calls against the peers and the memory roofline.

Writes a markdown table and a JSON file (``--out``, default ``$OUT`` or ``bench-results/``):
seconds per call (best of repeats within a time budget) for

- ``copy``: the roofline, ``out.copy_(R)`` into a preallocated tensor of the same shape;
- ``stage12[<backend>]``: :func:`rewardagg.kernels.stage12` (softmin, validation on) for
  every backend that runs on the device;
- ``advantages(auto)``: the default call ``rewardagg.advantages(R, group_size=16)``
  (softmin, validation, stage 3), and ``advantages(numpy)``/``(torch)``, the core's own
  array path;
- ``torch_plain``: a plain torch implementation in the inline style of TRL's trainer;
- ``naive_numpy``: the reshape-and-reduce float32 numpy implementation of
  ``benchmarks/peers.py`` on the same shape (missing values zeroed: it has no notion of them);
- verl 0.9.1's own ``compute_grpo_vectorized_outcome_advantage`` called once per reward
  (stage 1 only, response length 1) with integer group ids (``[int]``, its fast path) and
  with ``uid`` strings as verl's trainer passes them (``[uid]``);
  ``compute_grpo_outcome_advantage`` the same way (uid) and ``compute_gdpo_outcome_advantage``
  (all rewards, stage 3 included, uid), when ``verl`` is importable.

Rewards are float32 torch tensors, K in {2, 4, 8, 17}, group size 16, 10% missing values.
The output has the times (ms per call), then for each K at N = 2^20 every implementation's
ratio to the copy, to ``naive_numpy`` and verl's (both id types) to it, and the targets.
``--memory`` adds peak extra memory at N=2^22, K=17 (fresh subprocess per implementation,
``tracemalloc`` and the resident high-water mark; ``advantages(auto)`` also with numba
blocked, i.e. the numpy path that ``pip install rewardagg`` runs).
``--reducers`` times every method with a fused kernel (read from the method table) on the
fused backend of the device at N=2^20, K in {4, 17}, and softmin with the raw-reward order
(``softmin[raw order]``) and with one constrained column (``softmin[multipliers]``), as a
ratio to softmin in the same run (round-robin), against the goal of 1.5x.

    PYTHONPATH=src python benchmarks/bench_kernels.py            # CPU, N = 2^12..2^22
    PYTHONPATH=src python benchmarks/bench_kernels.py --device cuda --memory
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers

import rewardagg
import rewardagg.kernels as K

G = 16
# largest N at which each slow implementation is timed (one call, no warm-up, from 2^14);
# the numpy/torch references are the spec, not a fast path: on CPU they stop at 2^18
SLOW = {
    "verl_grpo_loop": 2**14,
    "verl_gdpo": 2**16,
    "stage12[numpy]": 2**18,
    "stage12[torch]": 2**18,
    "verl_grpo_vectorized_xK[uid]": 2**20,
}
VERL_INT = "verl_grpo_vectorized_xK[int]"
VERL_UID = "verl_grpo_vectorized_xK[uid]"


def make_inputs(n, k, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, k, generator=g) * 2 + 1
    r[:, 0] = (r[:, 0] > 1).float()  # a pass/fail reward
    r[torch.rand(n, k, generator=g) < 0.1] = float("nan")
    return r.to(device)


def _verl():
    return peers.verl_core()


def implementations(device, n, k, r, verl):
    """name -> zero-argument callable, for this input."""
    off = np.arange(0, n + 1, G, dtype=np.int64)
    w = np.ones(k)
    out = torch.empty_like(r)
    impl = {"copy": lambda: out.copy_(r)}
    for b in K.available_backends(r):
        if b == "numpy":
            continue
        impl[f"stage12[{b}]"] = lambda b=b: K.stage12(
            r, off, weights=w, method="softmin", backend=b
        )
    if device == "cpu":
        rn = r.numpy()
        impl["stage12[numpy]"] = lambda: K.stage12(
            rn, off, weights=w, method="softmin", backend="numpy"
        )
    impl["advantages(auto)"] = lambda: rewardagg.advantages(r, group_size=G)
    core_lib = "numpy" if device == "cpu" else "torch"
    impl[f"advantages({core_lib})"] = lambda: rewardagg.advantages(
        r, group_size=G, backend=core_lib
    )
    impl["torch_plain"] = lambda: torch_plain_softmin(r, G)
    if device == "cpu":
        zeroed = r.nan_to_num(0.0).numpy()
        impl["naive_numpy"] = lambda: peers.naive_numpy(zeroed, G)
    if verl is not None:
        uid = peers.group_ids(n, G, "uid")
        mask = torch.ones(n, 1, device=device)
        cols = [r[:, j : j + 1].nan_to_num(0.0).contiguous() for j in range(k)]

        def grpo_loop():
            return [verl.compute_grpo_outcome_advantage(c, mask, uid)[0] for c in cols]

        keys = [f"r{j}" for j in range(k)]
        ntb = {key: r[:, j].nan_to_num(0.0).cpu().numpy() for j, key in enumerate(keys)}
        batch = {
            "prompts": torch.zeros(n, 1, device=device),
            "attention_mask": torch.ones(n, 2, dtype=torch.long, device=device),
        }

        def gdpo():
            return verl.compute_gdpo_outcome_advantage(
                cols[0],
                mask,
                uid,
                config={"gdpo_reward_keys": keys},
                non_tensor_batch=ntb,
                batch=batch,
            )[0]

        impl[VERL_INT] = peers.verl_grpo_xk(verl, r, G, "int")
        impl[VERL_UID] = peers.verl_grpo_xk(verl, r, G, "uid")
        impl["verl_grpo_loop"] = grpo_loop
        impl["verl_gdpo"] = gdpo
    return impl


def torch_plain_softmin(r, group_size, kappa=1.0, eps=1e-6):
    """RVPO in plain torch, written the way TRL writes its advantage code inline."""
    n, k = r.shape
    grouped = r.view(-1, group_size, k)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    present = ~torch.isnan(grouped)
    cnt = present.sum(1, keepdim=True)
    var = torch.nansum((grouped - mean) ** 2, dim=1, keepdim=True) / (cnt - 1).clamp(min=1)
    z = (grouped - mean) / (var.sqrt() + eps)
    z = torch.where(cnt >= 2, z, 0.0).view(n, k)
    v = (~torch.isnan(z)).float()
    v = v / v.sum(1, keepdim=True)
    s = -torch.logsumexp(torch.where(v > 0, -kappa * z, -torch.inf) + torch.log(v), 1) / kappa
    has = ~torch.isnan(s)
    a = (s - s[has].mean()) / (s[has].std() + eps)
    return torch.where(has, a, 0.0)


def time_calls(fns, device, budget, slow):
    """Best seconds per call: :func:`peers.round_robin` (round-robin, a short pause before
    each call; the ``slow`` ones once each)."""
    sync = torch.cuda.synchronize if device == "cuda" else None
    return peers.round_robin(fns, budget=budget, slow=slow, sync=sync)


def peak_memory(device, name, n, k, block_numba=False):
    """Extra peak memory of one call in a fresh process: ``{"tracemalloc_mib", "hwm_mib"}``
    on CPU (numpy's allocations; the resident high-water mark), ``{"cuda_mib"}`` on CUDA."""
    if device == "cpu":
        setup = f"""
import bench_kernels as b
def make(n):
    r = b.make_inputs(n, {k}, "cpu")
    return b.implementations("cpu", n, {k}, r, b._verl())[{name!r}]
"""
        return peers.peak_memory(setup, n, block_numba=block_numba)
    code = f"""
import sys, torch
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
import bench_kernels as b
verl = b._verl()
small = b.make_inputs(1024, {k}, "cuda")
b.implementations("cuda", 1024, {k}, small, verl)[{name!r}]()
r = b.make_inputs({n}, {k}, "cuda")
fn = b.implementations("cuda", {n}, {k}, r, verl)[{name!r}]
torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
before = torch.cuda.memory_allocated()
fn(); torch.cuda.synchronize(); print((torch.cuda.max_memory_allocated() - before) / 2**20)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    try:
        return {"cuda_mib": float(res.stdout.strip().splitlines()[-1])}
    except (ValueError, IndexError):
        print(res.stderr[-2000:], file=sys.stderr)
        return {"cuda_mib": float("nan")}


def reducer_ratios(device, n=2**20, ks=(4, 17), budget=0.5):
    """``{K: {method: seconds / softmin's seconds}}`` for every method the device's fused
    backend runs (methods and their default parameters come from the method table)."""
    backend = "triton" if device == "cuda" else "numba"
    if backend not in K.available_backends():
        return {}
    out = {}
    for k in ks:
        r = make_inputs(n, k, device)
        off = np.arange(0, n + 1, G, dtype=np.int64)
        w = np.ones(k)
        fns = {
            m: (lambda m=m: K.stage12(r, off, weights=w, method=m, backend=backend))
            for m in K.fused_methods()
            if backend in rewardagg.get_aggregator(m).fused_backends
        }
        fns.update(issue23_rows(r, off, w, backend))
        best = time_calls(fns, device, budget, slow=set())
        out[k] = {m: t / best["softmin"] for m, t in best.items()}
    return out


def issue23_rows(r, off, w, backend):
    """Softmin (kappa 1) with the raw-reward order and with one constrained column
    (multiplier 0.5 on reward 1), through :func:`rewardagg.kernels.fused_scores`."""
    stage1 = dict(eps=1e-6, correction=1.0, singleton="zero", baseline="mean")
    kw = dict(code=K.FusedCode.SOFTMIN, p0=1.0, weights=w, backend=backend, **stage1)
    return {
        "softmin[raw order]": lambda: K.fused_scores(r, off, order="reduce_then_normalize", **kw),
        "softmin[multipliers]": lambda: K.fused_scores(
            r, off, mult_cols=(1,), mult_lams=(0.5,), **kw
        ),
    }


def render_reducers(ratios, backend):
    lines = [f"**Fused reducers on `{backend}`, N = 2^20: time / softmin's (goal <= 1.5x)**", ""]
    for k, row in ratios.items():
        cells = ", ".join(f"{m} {v:.2f}x{'' if v <= 1.5 else ' (missed)'}" for m, v in row.items())
        lines.append(f"- K = {k}: {cells}")
    return lines


def fmt(t):
    if t != t:
        return "–"
    return f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--log2n", type=int, nargs="+", default=list(range(12, 23)))
    p.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8, 17])
    p.add_argument("--budget", type=float, default=0.5, help="seconds of repeats per cell")
    p.add_argument("--memory", action="store_true", help="peak memory at N=2^22, K=17")
    p.add_argument("--reducers", action="store_true", help="every fused reducer vs softmin")
    p.add_argument("--no-verl", action="store_true")
    p.add_argument("--out", default=os.environ.get("OUT") or "bench-results")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    verl = None if a.no_verl else _verl()
    if a.device == "cpu":
        K.warmup()
    load_before = peers.load_average()
    results = []
    for k in a.ks:
        for e in a.log2n:
            n = 2**e
            r = make_inputs(n, k, a.device)
            fns = {
                name: fn
                for name, fn in implementations(a.device, n, k, r, verl).items()
                if name not in SLOW
                or n <= SLOW[name]
                or (a.device == "cuda" and name == "stage12[torch]")
            }
            slow = {name for name in fns if name in SLOW and n >= 2**14 and a.device == "cpu"}
            for name, t in time_calls(fns, a.device, a.budget, slow).items():
                results.append({"N": n, "K": k, "impl": name, "seconds": t})
                print(f"N=2^{e} K={k} {name}: {fmt(t)}", file=sys.stderr, flush=True)
            del r, fns
    load_after = peers.load_average()
    mem = {}
    if a.memory:
        n, k = 2**22, 17
        names = implementations(a.device, 1024, k, make_inputs(1024, k, a.device), verl)
        for name in names:
            if name in SLOW and n > SLOW[name]:
                continue
            mem[name] = peak_memory(a.device, name, n, k)
            print(f"memory {name}: {mem[name]}", file=sys.stderr, flush=True)
        if a.device == "cpu":  # what `pip install rewardagg` (no numba) runs
            mem["advantages(auto), numba absent"] = peak_memory(
                a.device, "advantages(auto)", n, k, block_numba=True
            )
    meta = {
        "device": a.device,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if a.device == "cuda" else None,
        "torch": torch.__version__,
        "numba_threads": _numba_threads(),
        "verl": getattr(sys.modules.get("verl"), "__version__", None),
        "group_size": G,
        "method": "softmin (kappa=1)",
        "dtype": "float32",
        "load_before": load_before,
        "load_after": load_after,
    }
    md = render(results, mem, meta)
    ratios = reducer_ratios(a.device, budget=a.budget) if a.reducers else {}
    if ratios:
        backend = "triton" if a.device == "cuda" else "numba"
        md += "\n" + "\n".join(render_reducers(ratios, backend)) + "\n"
    with open(os.path.join(a.out, f"bench_kernels_{a.device}.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.out, f"bench_kernels_{a.device}.json"), "w") as f:
        json.dump(
            {"meta": meta, "results": results, "peak_memory_mib": mem, "reducers": ratios},
            f,
            indent=1,
        )
    print(md)


def _numba_threads():
    try:
        import numba

        return numba.get_num_threads()
    except ImportError:
        return None


def render(results, mem, meta):
    t = {(x["N"], x["K"], x["impl"]): x["seconds"] for x in results}
    impls = list(dict.fromkeys(x["impl"] for x in results))
    lines = [
        f"Device: {meta['device']} ({meta['gpu'] or meta['cpu']}, {meta['cores']} cores); "
        f"torch {meta['torch']}; verl {meta['verl']}; {meta['method']}, {meta['dtype']}, "
        f"group size {meta['group_size']}, 10% missing. Best time per call, round-robin; "
        f"load average {meta['load_before']:.2f} before, {meta['load_after']:.2f} after.",
        "",
    ]
    for k in sorted({x["K"] for x in results}):
        ns = sorted({x["N"] for x in results if x["K"] == k})
        cols = [i for i in impls if any((n, k, i) in t for n in ns)]
        lines += [
            f"**K = {k}**",
            "",
            "| N | " + " | ".join(f"`{c}`" for c in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for n in ns:
            cells = [fmt(t.get((n, k, c), float("nan"))) for c in cols]
            lines.append(f"| 2^{n.bit_length() - 1} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ratio_tables(t, impls)
    lines += ["**Targets (ratios from this run)**", ""]
    lines += targets(t, meta["device"])
    if mem:
        lines += [
            "",
            "**Peak extra memory of one call at N = 2^22, K = 17** (input 272 MiB; fresh "
            "process each)",
            "",
            "| implementation | " + " | ".join(next(iter(mem.values()))) + " |",
            "|---|" + "---|" * len(next(iter(mem.values()))),
        ]
        lines += [
            f"| `{k}` | " + " | ".join(f"{x:.0f}" for x in v.values()) + " |"
            for k, v in mem.items()
        ]
    return "\n".join(lines) + "\n"


def ratio_tables(t, impls, n=2**20):
    """Per K at ``n``: each implementation's time as a ratio to the copy and to
    ``naive_numpy``, and verl's time (both id types) as a ratio to it (above 1: faster)."""
    lines = []
    for k in sorted({kk for (nn, kk, _) in t if nn == n}):
        have = [i for i in impls if (n, k, i) in t and i != "copy"]
        if not have:
            continue

        def r(a, b, k=k):
            x, y = t.get((n, k, a)), t.get((n, k, b))
            return "–" if x is None or y is None else f"{x / y:.2f}x"

        lines += [
            f"**Ratios at N = 2^{n.bit_length() - 1}, K = {k}** (copy {fmt(t[(n, k, 'copy')])})",
            "",
            "| implementation | ms | / copy | / naive_numpy | verl[int] / it | verl[uid] / it |",
            "|---|---|---|---|---|---|",
        ]
        for i in have:
            lines.append(
                f"| `{i}` | {t[(n, k, i)] * 1e3:.3g} | {r(i, 'copy')} | {r(i, 'naive_numpy')} "
                f"| {r(VERL_INT, i)} | {r(VERL_UID, i)} |"
            )
        lines.append("")
    return lines


def targets(t, device):
    out = []
    kernels = [i for i in ("stage12[numba]", "stage12[triton]", "stage12[torch]")]

    def best(n, k):
        c = [(t[(n, k, i)], i) for i in kernels if (n, k, i) in t]
        return min(c) if c else (float("nan"), "–")

    def line(text, ratio, goal, higher):
        ok = ratio >= goal if higher else ratio <= goal
        verdict = (
            "met"
            if ok
            else (
                f"missed by {ratio / goal:.2f}x" if not higher else f"missed by {goal / ratio:.2f}x"
            )
        )
        out.append(
            f"- {text}: **{ratio:.2f}x** (goal {'>=' if higher else '<='} {goal}x) "
            f"— {verdict if ratio == ratio else 'not measured'}"
        )

    n = 2**20
    for k, goal in ((17, 4), (4, 2), (2, 2)):
        if (n, k, "copy") in t:
            b, name = best(n, k)
            line(f"N=2^20, K={k}: `{name}` / copy", b / t[(n, k, "copy")], goal, False)
            if (n, k, "advantages(auto)") in t:
                out.append(
                    f"  - default call `advantages(auto)` / copy: "
                    f"{t[(n, k, 'advantages(auto)')] / t[(n, k, 'copy')]:.2f}x"
                )
    for ids, name_v, goal in (("integer ids", VERL_INT, 5), ("uid strings", VERL_UID, None)):
        if (n, 8, name_v) not in t:
            continue
        b, name = best(n, 8)
        v = t[(n, 8, name_v)]
        text = f"N=2^20, K=8: verl vectorized GRPO x8 ({ids}) / `{name}`"
        if goal is None:
            out.append(f"- {text}: {v / b:.2f}x (no goal)")
        else:
            line(text, v / b, goal, True)
        if (n, 8, "advantages(auto)") in t:
            out.append(
                f"  - verl ({ids}) / default call `advantages(auto)`: "
                f"{v / t[(n, 8, 'advantages(auto)')]:.2f}x"
            )
    n = 2**16
    if (n, 8, "verl_gdpo") in t:
        b, name = best(n, 8)
        v = t[(n, 8, "verl_gdpo")]
        line(f"N=2^16, K=8: verl GDPO / `{name}`", v / b, 100, True)
        if (n, 8, "advantages(auto)") in t:
            out.append(
                f"  - verl GDPO / default call `advantages(auto)`: "
                f"{v / t[(n, 8, 'advantages(auto)')]:.0f}x"
            )
    if device == "cuda":
        for e in (22,):
            if (2**e, 17, "stage12[triton]") in t:
                line(
                    f"N=2^{e}, K=17: triton / device copy",
                    t[(2**e, 17, "stage12[triton]")] / t[(2**e, 17, "copy")],
                    1.5,
                    False,
                )
        if (2**16, 17, "torch_plain") in t and (2**16, 17, "stage12[triton]") in t:
            line(
                "N=2^16, K=17: torch eager (torch_plain) / triton",
                t[(2**16, 17, "torch_plain")] / t[(2**16, 17, "stage12[triton]")],
                5,
                True,
            )
    return out


if __name__ == "__main__":
    main()
