"""DataLoader construction with reproducible order and augmentation, whatever the worker count.

The sampler is wrapped in an :class:`EpochSampler` that hands the data set ``(index, epoch, mosaic_on)``
keys instead of bare indices. Each sample's random stream is seeded from ``(seed, epoch, index)``, so:

* the same seed gives the same batches with 0, 1 or N workers;
* ``set_epoch`` and ``close_mosaic`` reach persistent worker processes (they travel with the keys);
* a resumed run at epoch k sees exactly the batches of an uninterrupted run.

Any index sampler can be passed (e.g. ``torch.utils.data.distributed.DistributedSampler``); its
``set_epoch`` is called when it has one.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from yoloseg.data.dataset import collate_fn

__all__ = ["EpochSampler", "SeededRandomSampler", "SegmentDataLoader", "build_dataloader", "seed_worker"]


class SeededRandomSampler(Sampler):
    """A random permutation per epoch, drawn from ``seed + epoch`` (so it is reproducible on resume)."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class EpochSampler(Sampler):
    """Wraps an index sampler; yields ``(index, epoch, mosaic_on)`` keys for :class:`SegmentDataset`."""

    def __init__(self, base, epoch: int = 0, mosaic: bool = True):
        self.base, self.epoch, self.mosaic = base, int(epoch), bool(mosaic)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __iter__(self):
        epoch, mosaic = self.epoch, self.mosaic
        return ((int(i), epoch, mosaic) for i in self.base)

    def __len__(self) -> int:
        return len(self.base)


class SegmentDataLoader(DataLoader):
    """A DataLoader with ``set_epoch(epoch)`` and ``close_mosaic()`` that also reach persistent workers."""

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def close_mosaic(self) -> None:
        self.sampler.mosaic = False
        if hasattr(self.dataset, "close_mosaic"):
            self.dataset.close_mosaic()


def seed_worker(worker_id: int) -> None:
    """Seed numpy/random in a worker from torch's per-worker seed; keep OpenCV single-threaded there."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    try:
        import cv2

        cv2.setNumThreads(0)
    except Exception:  # noqa: BLE001 - OpenCV thread settings are an optimisation only
        pass


def build_dataloader(
    dataset,
    batch: int,
    workers: int = 0,
    shuffle: bool = True,
    seed: int = 0,
    rank: int = -1,
    sampler=None,
    drop_last: bool = False,
    pin_memory: bool | None = None,
) -> SegmentDataLoader:
    """A :class:`SegmentDataLoader` over ``dataset`` with :func:`collate_fn`.

    ``workers`` is capped by the CPU count and the batch size; workers persist across epochs.
    ``sampler`` replaces the default one (a seeded shuffle, or sequential order); with ``rank >= 0`` and
    no sampler given, a ``DistributedSampler`` is used. Call ``loader.set_epoch(epoch)`` at the start of
    each epoch and ``loader.close_mosaic()`` to switch mosaic off.
    """
    batch = int(batch)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if getattr(dataset, "rect", False) and shuffle:
        raise ValueError("a data set with rect batches must be loaded with shuffle=False")
    if sampler is None:
        if rank >= 0:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
        elif shuffle:
            sampler = SeededRandomSampler(len(dataset), seed)
        else:
            sampler = range(len(dataset))
    mosaic = bool(getattr(dataset, "mosaic_enabled", True))
    workers = max(0, min(int(workers), os.cpu_count() or 1, batch if batch > 1 else 1))
    g = torch.Generator()
    g.manual_seed(int(seed) + max(rank, 0))
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return SegmentDataLoader(
        dataset,
        batch_size=batch,
        sampler=EpochSampler(sampler, mosaic=mosaic),
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        drop_last=drop_last,
        worker_init_fn=seed_worker,
        generator=g,
        persistent_workers=workers > 0,
    )
