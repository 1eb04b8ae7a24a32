"""Memory tricks: file pages given back after a dtype conversion, and the glibc allocator setting."""

import sys

import pytest
import torch

from tests.tiny import model_with_batchnorm_statistics, tiny_config
from utils import memory
from utils.checkpoints import build_model_from_checkpoint
from utils.memory import tune_cpu_allocator
from utils.training.checkpoint import checkpoint_payload, compact_state_dict, save_checkpoint


def _resident_file_kib() -> int:
    with open("/proc/self/status") as handle:
        return sum(int(line.split()[1]) for line in handle if line.startswith(("RssFile:", "RssShmem:")))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")
def test_released_file_pages_leave_memory_and_read_back_the_same(tmp_path):
    path = tmp_path / "big.pt"
    values = torch.arange(16 * 2**20, dtype=torch.float16)  # 32 MiB
    torch.save({"small": values[:8].clone(), "t": values}, path)
    loaded = torch.load(path, mmap=True, weights_only=True)
    assert torch.equal(loaded["t"], values)  # every page read
    pages = memory._unwritten_file_mappings(str(path))
    assert pages
    before = _resident_file_kib()
    assert memory._release_file_pages(loaded["t"], pages)
    assert before - _resident_file_kib() > 24 * 1024
    assert torch.equal(loaded["t"], values)  # read again from the file
    # A view spanning far more than its small storage: only the storage counts, and it fills no whole page.
    before = _resident_file_kib()
    assert not memory._release_file_pages(loaded["small"][:1].expand(2**22), pages)
    assert abs(_resident_file_kib() - before) < 1024
    assert torch.equal(loaded["small"], values[:8])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")
def test_memory_outside_the_file_is_never_released(tmp_path):
    path = tmp_path / "small.pt"
    torch.save({"t": torch.zeros(4)}, path)
    loaded = torch.load(path, mmap=True, weights_only=True)
    heap = torch.full((2**22,), 3.0)  # 16 MiB of ordinary memory
    assert not memory._release_file_pages(heap, memory._unwritten_file_mappings(str(path)))
    assert bool((heap == 3.0).all()) and torch.equal(loaded["t"], torch.zeros(4))
    assert not memory._release_file_pages(heap, [])


def test_a_file_from_a_machine_of_the_other_byte_order_is_not_released(tmp_path, monkeypatch):
    """torch swaps such a file's bytes in its mapped pages: dropping them would bring the unswapped bytes back."""
    path = tmp_path / "ckpt.pt"
    torch.save({"t": torch.zeros(4)}, path)
    torch.load(path, mmap=True, weights_only=True)
    other = "big" if sys.byteorder == "little" else "little"
    monkeypatch.setattr(memory.sys, "byteorder", other)
    assert memory._unwritten_file_mappings(str(path)) == []


def test_loading_hands_back_only_the_converted_pages_of_the_file(tmp_path, monkeypatch):
    config = tiny_config()
    model = model_with_batchnorm_statistics(config)
    path = str(tmp_path / "best.pth.tar")
    save_checkpoint(checkpoint_payload(model, config, 0, True, {"total": 0.0, "dice": 0.0}), path)
    released = []
    monkeypatch.setattr(memory, "_release_file_pages", lambda tensor, pages: released.append(tensor.dtype) or True)
    build_model_from_checkpoint(path)
    halves = [t for t in compact_state_dict(model).values() if t.dtype == torch.float16]
    assert released == [torch.float16] * len(halves) and halves


def test_cpu_allocator_tuning_applies_on_glibc():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    assert tune_cpu_allocator() is True
