"""The epoch order: a function of seed and epoch, resumable part-way, sharded over ranks."""

import os
import subprocess
import sys

import pytest

from utils.data.sampling import EpochSampler


def test_epoch_sampler_order_depends_on_seed_and_epoch_only():
    a, b = EpochSampler(10, True, seed=3), EpochSampler(10, True, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(10))
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(EpochSampler(5, False, seed=3)) == [0, 1, 2, 3, 4]


def test_epoch_sampler_skip_resumes_the_same_order():
    sampler = EpochSampler(10, True, seed=1)
    sampler.set_epoch(4)
    full = list(sampler)
    sampler.skip(6)
    assert list(sampler) == full[6:] and len(sampler) == 4
    sampler.set_epoch(4)
    assert list(sampler) == full  # a new epoch starts from its first sample


def test_epoch_sampler_shards_over_ranks():
    ranks = [EpochSampler(10, True, seed=0, num_replicas=3, rank=r) for r in range(3)]
    padded = [list(r) for r in ranks]
    assert [len(p) for p in padded] == [4, 4, 4] and set(sum(padded, [])) == set(range(10))
    exact = [list(EpochSampler(10, False, seed=0, num_replicas=3, rank=r, pad=False)) for r in range(3)]
    assert sorted(sum(exact, [])) == list(range(10)) and [len(e) for e in exact] == [4, 3, 3]
    with pytest.raises(ValueError, match="rank 3"):
        EpochSampler(10, True, seed=0, num_replicas=3, rank=3)


WORKERS_AFTER_A_PARALLEL_RESIZE = """
import numpy as np, cv2, torch
from torch.utils.data import DataLoader
from utils.data.sampling import seed_worker
cv2.resize(np.random.rand(32, 32).astype(np.float32), (2400, 2400))  # starts OpenCV's thread pool in this process
class Resized(torch.utils.data.Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        return torch.from_numpy(cv2.resize(np.full((300, 300), i, np.float32), (64, 64)))
batches = list(DataLoader(Resized(), batch_size=2, num_workers=2, worker_init_fn=seed_worker,
                          multiprocessing_context="fork"))
print(len(batches))
"""


def test_loader_workers_start_after_the_parent_ran_opencv_in_parallel():
    """seed_worker once called cv2.setNumThreads(1), which hangs in a worker forked after the parent's OpenCV pool
    had started (a large resize in predict, say): the loader must still deliver its batches."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", WORKERS_AFTER_A_PARALLEL_RESIZE], cwd=root, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=root))
    assert done.returncode == 0 and done.stdout.strip() == "2", done.stderr[-2000:]
