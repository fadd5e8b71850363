"""Stage 3 across 2 gloo processes on CPU equals the single-process result, through
rewardagg._src.stage3 (stage 3 across ranks) and the core's ``process_group=`` arguments.

Runtime: about 10 s (two spawned processes import torch).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from rewardagg._src.stage3 import combine_moments, local_moments  # noqa: E402

G, K, N = 8, 3, 96


def _batch():
    rng = np.random.default_rng(0)
    r = rng.standard_normal((N, K)) * [1.0, 3.0, 0.5] + [0.0, 10.0, -2.0]
    r[rng.random((N, K)) < 0.1] = np.nan
    r[5] = np.nan  # a row without any reward
    return r


def _worker(rank, world, init_file, out_dir):
    import rewardagg
    from rewardagg._src.stage3 import batch_standardize_distributed

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        r = _batch()
        # rank 0 holds 4 groups, rank 1 the other 8: groups stay on one rank, sizes differ
        rows = slice(0, 4 * G) if rank == 0 else slice(4 * G, N)
        s = rewardagg.advantages(r[rows], group_size=G, method="softmin", batch_norm=False)
        s[np.isnan(r[rows]).all(1)] = np.nan
        np.save(
            os.path.join(out_dir, f"kernel{rank}.npy"),
            batch_standardize_distributed(
                s, eps=1e-6, correction=1, process_group=dist.group.WORLD
            ),
        )
        t = batch_standardize_distributed(
            torch.from_numpy(s).float(), process_group=dist.group.WORLD
        )
        np.save(os.path.join(out_dir, f"torch{rank}.npy"), t.numpy())
        try:
            a = rewardagg.advantages(
                r[rows], group_size=G, method="softmin", process_group=dist.group.WORLD
            )
            np.save(os.path.join(out_dir, f"core{rank}.npy"), a)
        except NotImplementedError:
            pass
    finally:
        dist.destroy_process_group()


def test_chan_combination_equals_one_pass():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(1000) * 5 + 3
    parts = [local_moments(p) for p in np.split(x, [10, 11, 500, 999])]
    n, mean, m2, lo, hi = combine_moments([*parts, local_moments(np.array([np.nan]))])
    assert n == 1000 and lo == x.min() and hi == x.max()
    np.testing.assert_allclose([mean, m2], [x.mean(), ((x - x.mean()) ** 2).sum()], rtol=1e-12)


def test_two_gloo_ranks_match_single_process():
    import torch.multiprocessing as mp

    import rewardagg

    r = _batch()
    want = rewardagg.advantages(r, group_size=G, method="softmin")
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        got = np.concatenate([np.load(os.path.join(tmp, f"kernel{i}.npy")) for i in (0, 1)])
        got32 = np.concatenate([np.load(os.path.join(tmp, f"torch{i}.npy")) for i in (0, 1)])
        core = [os.path.join(tmp, f"core{i}.npy") for i in (0, 1)]
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got32, want, rtol=1e-5, atol=1e-5)
        assert got[5] == 0.0
        if all(os.path.exists(p) for p in core):
            np.testing.assert_allclose(
                np.concatenate([np.load(p) for p in core]), want, rtol=1e-10, atol=1e-12
            )
