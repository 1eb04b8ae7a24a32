"""Memory tricks, each behind one function, so that the code that needs them reads plainly.

- :func:`tune_cpu_allocator`: glibc keeps freed tensor memory for reuse (faster CPU training steps);
- :func:`convert_dropping_file_pages`: convert memory-mapped checkpoint tensors to other dtypes and give back the
  file pages each one was read from (Linux ``madvise``), so a model rebuilt from an fp16-stored checkpoint does not
  keep both copies resident.

Off Linux (or off glibc) both leave memory as it is and say so in their return value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import os
import sys
import zipfile
from typing import Dict, List, Mapping, Tuple

import torch

logger = logging.getLogger(__name__)


_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def tune_cpu_allocator() -> bool:
    """Keep freed tensor memory in the process (glibc ``mallopt``) instead of returning it to the system.

    glibc serves every block over 32 MB with a fresh ``mmap`` and unmaps it when freed, so each large activation
    (a ``[4, 64, 224, 224]`` fp32 tensor is 51 MB) costs thousands of page faults on first touch. Turning off
    ``mmap`` for allocations and never trimming the heap removes that cost (the training step it saves, from
    ``python -m tools.benchmark`` with and without ``--no_allocator_tuning``, is in docs/PERFORMANCE.md). Peak
    memory stays the same; memory freed after the peak is kept for reuse rather than given back. Call it once,
    early, in an entry point.

    Returns:
        True when the setting was applied; False where the C library is not glibc (macOS, musl, Windows), where
        allocation works as before.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.debug("no glibc mallopt here: the CPU allocator is left as it is")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def _unwritten_file_mappings(path: str) -> List[Tuple[int, int]]:
    """The address ranges where this process maps the file ``path`` (``/proc/self/maps``), if torch wrote none of
    its pages: it writes into a memory-mapped checkpoint only to swap the byte order of a file from a machine of
    the other endianness, and then this returns nothing."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        with zipfile.ZipFile(path) as archive:
            orders = [archive.read(name).decode().strip() for name in archive.namelist()
                      if name.endswith("/byteorder")]
        real = os.path.realpath(path)
        ranges = []
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.rstrip("\n").split(maxsplit=5)
                if len(fields) == 6 and fields[5] == real:
                    low, high = (int(value, 16) for value in fields[0].split("-"))
                    ranges.append((low, high))
    except (OSError, ValueError, UnicodeDecodeError, zipfile.BadZipFile):
        return []
    return ranges if all(order == sys.byteorder for order in orders) else []


def _release_file_pages(tensor: torch.Tensor, file_pages: List[Tuple[int, int]]) -> bool:
    """Give back the resident pages of ``tensor``'s storage (``madvise(MADV_DONTNEED)``), if they lie inside
    ``file_pages``, the unwritten mappings of a file (:func:`_unwritten_file_mappings`).

    Such pages are clean copies of the file: they are read again from it if the tensor is used later, so nothing
    is lost. Only pages wholly inside the storage are dropped; any other memory is left alone. Returns whether
    pages were dropped (False off Linux, or when the call fails).
    """
    if not file_pages or tensor.device.type != "cpu" or tensor.layout != torch.strided:
        return False
    storage = tensor.untyped_storage()
    first = -(-storage.data_ptr() // mmap.PAGESIZE) * mmap.PAGESIZE
    last = (storage.data_ptr() + storage.nbytes()) // mmap.PAGESIZE * mmap.PAGESIZE
    if last <= first or not any(low <= first and last <= high for low, high in file_pages):
        return False
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return False
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if madvise(first, last - first, mmap.MADV_DONTNEED) != 0:
        logger.debug("madvise(MADV_DONTNEED) failed with errno %d: the pages stay resident", ctypes.get_errno())
        return False
    return True


def convert_dropping_file_pages(state: Mapping[str, torch.Tensor], dtypes: Mapping[str, torch.dtype],
                                path: str) -> Dict[str, torch.Tensor]:
    """``state`` with each tensor converted to ``dtypes[name]`` (those already of that dtype kept as they are).

    ``state`` is memory-mapped from the checkpoint file ``path``: once a tensor has been copied into its new dtype,
    the resident pages it was read from are given back (they are clean copies of the file, read again if the
    tensor is ever used), about 120 MB for CLIP's fp16-stored tower. Where that is not possible (not Linux, torch
    wrote into the mapping to swap byte order, the file is not mapped) the tensors are converted all the same.
    """
    file_pages = _unwritten_file_mappings(path)
    converted = {}
    for name, tensor in state.items():
        if tensor.dtype == dtypes[name]:
            converted[name] = tensor
            continue
        converted[name] = tensor.to(dtypes[name])
        _release_file_pages(tensor, file_pages)
    return converted
