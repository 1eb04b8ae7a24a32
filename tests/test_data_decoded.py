"""The decoded-image cache of training's splits: used, invalidated by a changed file, bounded by its budget, and the
same bits as reading from disk."""

import os

import cv2
import numpy as np
import pytest
import torch
from conftest import write_dataset

import Load_Dataset
from Load_Dataset import ImageToImage2D, build_dataloaders


@pytest.fixture
def counted_reads(monkeypatch):
    """How many images were decoded from disk."""
    calls = []
    real = Load_Dataset.read_image

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(Load_Dataset, "read_image", counting)
    return calls


def _items(dataset, seed):
    dataset.set_epoch_seed(seed)
    return [dataset[i] for i in range(len(dataset))]


def _same(a, b):
    return all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in ("image", "label", "text_token", "text_mask"))


def test_training_splits_are_decoded_once_and_give_the_same_bits(tmp_path, counted_reads):
    cfg = write_dataset(tmp_path / "Covid19", "qata", counts={"train": 4, "val": 2, "test": 2})
    loaders = build_dataloaders(cfg)
    train = loaders["train"].dataset
    assert train.decoded.enabled and len(train.decoded.entries) == 4 and len(counted_reads) == 4 + 2
    counted_reads.clear()
    cached = [_items(train, seed) for seed in (1, 2)]  # two epochs, augmented
    assert counted_reads == []  # nothing read from disk again
    uncached = ImageToImage2D(cfg, "train")  # keep_decoded off: read every time
    assert not uncached.decoded.enabled
    assert all(_same(c, _items(uncached, seed)) for c, seed in zip(cached, (1, 2)))
    assert len(counted_reads) == 2 * 4
    image, mask = train.load_arrays(0)
    with pytest.raises(ValueError, match="read-only"):
        image[0, 0, 0] = 1  # the kept arrays are shared by every epoch: no change in place


def test_a_file_changed_on_disk_is_read_again(tmp_path, counted_reads):
    cfg = write_dataset(tmp_path / "Covid19", "qata", counts={"train": 2, "val": 1, "test": 1})
    train = build_dataloaders(cfg)["train"].dataset
    before = train.load_arrays(0)[0].copy()
    path = train.samples[0].image_path
    stat = os.stat(path)
    assert cv2.imwrite(str(path), np.full(cv2.imread(str(path)).shape, 255, np.uint8))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later modification time, whatever the clock
    counted_reads.clear()
    after = train.load_arrays(0)[0]
    assert len(counted_reads) == 1 and (after == 255).all() and not np.array_equal(before, after)
    train.load_arrays(0)
    assert len(counted_reads) == 1  # kept again


def test_a_split_over_the_budget_is_read_from_disk_and_says_so(tmp_path, counted_reads, caplog):
    cfg = write_dataset(tmp_path / "Covid19", "qata", counts={"train": 2, "val": 1, "test": 1}, img_size=512,
                        decode_cache_mib=1)  # 2 x 512 x 512 x 4 bytes = 2 MiB
    with caplog.at_level("INFO"):
        train = build_dataloaders(cfg)["train"].dataset
    assert not train.decoded.enabled and train.decoded.entries == {}
    assert "its decoded images would take 2 MiB, over decode_cache_mib=1" in caplog.text
    counted_reads.clear()
    _items(train, 1)
    assert len(counted_reads) == 2
    caplog.clear()
    with caplog.at_level("INFO"):
        off = build_dataloaders(cfg.replace(img_size=32, decode_cache_mib=0))["train"].dataset
    assert not off.decoded.enabled and "decode_cache_mib" not in caplog.text  # off, not over
