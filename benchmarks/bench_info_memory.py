"""Peak extra memory of ``advantages(..., return_info=True)`` (issue 23).

Run: ``PYTHONPATH=src python benchmarks/bench_info_memory.py [--n 4194304] [--k 17]``

Each case runs in a fresh process (:func:`peers.peak_memory`): the input is built first,
then one call is measured with ``tracemalloc`` (numpy's allocations) and the resident
high-water mark (everything, numba's included). The target: at most 2x the input at
N = 2^22, K = 17 float32 on the numpy and the numba paths.
"""

from __future__ import annotations

import argparse
import json

import peers

SETUP = """
import numpy as np
import rewardagg as ra

def make(n):
    r = np.random.default_rng(0).random((n, {k})).astype(np.{dtype})
    return lambda: ra.advantages(r, group_size=16, method="{method}", return_info=True,
                                 backend="{backend}")
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1 << 22)
    p.add_argument("--k", type=int, default=17)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--method", default="softmin")
    p.add_argument("--backends", default="numpy,numba")
    args = p.parse_args()
    input_mib = args.n * args.k * (4 if args.dtype == "float32" else 8) / 2**20
    rows = []
    for backend in args.backends.split(","):
        setup = SETUP.format(k=args.k, dtype=args.dtype, method=args.method, backend=backend)
        m = peers.peak_memory(setup, args.n, block_numba=backend == "numpy")
        rows.append({"backend": backend, "input_mib": input_mib, **m})
        print(
            f"{backend:6s} input {input_mib:6.0f} MiB  tracemalloc {m['tracemalloc_mib']:7.0f} MiB "
            f"({m['tracemalloc_mib'] / input_mib:.2f}x)  high-water {m['hwm_mib']:7.0f} MiB "
            f"({m['hwm_mib'] / input_mib:.2f}x)",
            flush=True,
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
