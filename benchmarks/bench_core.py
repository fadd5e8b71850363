"""Core numpy/torch paths against a plain copy of the same bytes (the memory roofline).

    python benchmarks/bench_core.py [--sizes 14 18 20] [--ks 2 4 17] [--repeat 5] [--json FILE]

Prints a markdown table of the copy time and of each path's median time as a ratio to the
copy of the same bytes in the same library, all measured in one run (timings on a shared
2-core machine are noisy: read the ratios, not the absolute times). "auto" is the default
call (validation on; it takes the fused numba kernel for large inputs when numba is
installed); "array path" forces the numpy implementation; "torch ops" forces torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import rewardagg as ra


def median_time(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def naive_numpy(R, g, kappa=1.0, eps=1e-6):
    """Reshape-and-reduce in the obvious way (what the issue calls naive)."""
    n, k = R.shape
    x = R.reshape(n // g, g, k)
    z = (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, ddof=1, keepdims=True) + eps)
    z = z.reshape(n, k)
    m = z.min(axis=1, keepdims=True)
    s = m[:, 0] - np.log(np.mean(np.exp(-kappa * (z - m)), axis=1)) / kappa
    return (s - s.mean()) / (s.std(ddof=1) + eps)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[14, 18, 20], help="log2 of N")
    p.add_argument("--ks", type=int, nargs="+", default=[2, 4, 17])
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    import torch

    rows = []
    print(
        "| N | K | copy ms | auto (numpy in) | array path numpy | naive numpy "
        "| torch copy ms | auto (torch in) | torch ops |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for e in args.sizes:
        for k in args.ks:
            n = 2**e
            R = np.random.default_rng(0).normal(size=(n, k)).astype(np.float32)
            out = np.empty_like(R)
            T = torch.from_numpy(R.copy())
            tout = torch.empty_like(T)
            g = args.group_size
            row = {
                "N": n,
                "K": k,
                "copy_numpy": median_time(lambda: np.copyto(out, R), args.repeat),
                "auto_numpy": median_time(
                    lambda: ra.softmin_advantages(R, group_size=g), args.repeat
                ),
                "array_numpy": median_time(
                    lambda: ra.softmin_advantages(R, group_size=g, backend="numpy"), args.repeat
                ),
                "naive_numpy": median_time(lambda: naive_numpy(R, g), args.repeat),
                "copy_torch": median_time(lambda: tout.copy_(T), args.repeat),
                "auto_torch": median_time(
                    lambda: ra.softmin_advantages(T, group_size=g), args.repeat
                ),
                "torch_ops": median_time(
                    lambda: ra.softmin_advantages(T, group_size=g, backend="torch"), args.repeat
                ),
            }
            rows.append(row)
            c, ct = row["copy_numpy"], row["copy_torch"]
            print(
                f"| 2^{e} | {k} | {c * 1e3:.2f} | {row['auto_numpy'] / c:.1f}x "
                f"| {row['array_numpy'] / c:.1f}x | {row['naive_numpy'] / c:.1f}x "
                f"| {ct * 1e3:.2f} | {row['auto_torch'] / ct:.1f}x | {row['torch_ops'] / ct:.1f}x |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
