"""The order in which a loader draws samples, and how its worker processes start.

:class:`EpochSampler` makes each epoch's order a function of ``(seed, epoch)`` alone, optionally sharded over
distributed ranks, and can start an epoch part-way (resuming); :func:`seed_worker` seeds a DataLoader worker.
"""

from __future__ import annotations

import random
import signal

import numpy as np
import torch
from torch.utils.data import Sampler


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoaders: seed ``random`` and ``numpy`` from the torch seed PyTorch gave the worker,
    and leave Ctrl-C and SIGTERM to the main process (which saves a checkpoint first).

    It does not call ``cv2.setNumThreads``: in a worker forked from a process whose OpenCV thread pool had started
    (a parallel resize of a large image, say), that call waits forever for pool threads that the fork did not copy
    (OpenCV 5.1; ``tests/test_data_sampling.py``). OpenCV's own parallel calls in the worker are fork-safe.
    """
    seed = torch.initial_seed()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    # Ctrl-C and SIGTERM reach the whole process group (a terminal, torchrun, a scheduler): the main process
    # handles them and saves a checkpoint; the workers end with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class EpochSampler(Sampler):
    """The order of one epoch's samples, a function of ``(seed, epoch)`` alone, optionally sharded over ranks.

    Like torch's ``DistributedSampler``: with ``shuffle`` the epoch's order is ``randperm(n)`` from a generator
    seeded with ``seed + epoch``; with ``num_replicas > 1`` the order is padded by repeating its start to a multiple
    of ``num_replicas`` and rank ``r`` takes every ``num_replicas``-th index from ``r``. :meth:`skip` starts the
    epoch further on (resuming an interrupted epoch).

    Args:
        length: the number of samples.
        shuffle: shuffle each epoch (training), or keep the data set's order.
        seed: the run's seed.
        num_replicas, rank: the number of processes and this one's rank (1 and 0 without distribution).
        pad: pad to a multiple of ``num_replicas`` (training, so every rank takes the same number of steps);
            without it, the last ranks get one sample fewer (evaluation: no image counted twice).
    """

    def __init__(self, length: int, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0,
                 pad: bool = True):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.pad = pad
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (its order) and start from its first sample."""
        self.epoch = int(epoch)
        self.start = 0

    def skip(self, samples: int) -> None:
        """Start the current epoch after this rank's first ``samples`` samples."""
        self.start = int(samples)

    def _indices(self):
        if self.shuffle:
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + self.epoch))
            order = order.tolist()
        else:
            order = list(range(self.length))
        if self.pad and self.num_replicas > 1 and self.length % self.num_replicas:
            extra = self.num_replicas - self.length % self.num_replicas
            order += (order * (extra // max(len(order), 1) + 1))[:extra]
        return order[self.rank::self.num_replicas]

    def __iter__(self):
        return iter(self._indices()[self.start:])

    def __len__(self) -> int:
        if self.pad:
            per_rank = -(-self.length // self.num_replicas)
        else:
            per_rank = len(range(self.rank, self.length, self.num_replicas))
        return max(per_rank - self.start, 0)
