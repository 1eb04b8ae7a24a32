"""Reading weight files safely: the one leaf that every loader of weights uses; it imports nothing of ours.

- :func:`read_checkpoint`: ``torch.load(weights_only=True)``, optionally memory-mapped, with one error message per
  kind of unreadable file (it names the file);
- :func:`read_safetensors`: ``.safetensors`` files (the format runs no code; ``safetensors`` is optional);
- :func:`read_torchscript_tensors`: the tensors of a TorchScript archive (OpenAI's ``ViT-B-32.pt``) read from its
  zip without the JIT (deprecated in torch 2.14, and ``torch.jit.load`` may go). The archive's ``<name>/data.pkl``
  pickles the module tree, each module an object of a ``__torch__.*`` class whose attributes are its parameters,
  buffers and submodules; each tensor's bytes are in ``<name>/data/<key>``. The unpickler here knows only what that
  needs: the ``__torch__`` classes become plain attribute holders, tensors are rebuilt from the zip's bytes, and any
  other global is refused. No code from the file is ever run;
- :func:`read_tensors`: any of the three, the format detected from the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import zipfile
from typing import Dict

import torch

# torch.save's legacy (pre-1.6) format starts with this number pickled (protocol 2); the current format is a zip.
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
# What torch.load raises, depending on where a damaged or foreign file breaks it.
_UNREADABLE = (RuntimeError, EOFError, zipfile.BadZipFile, KeyError, IndexError, ValueError, TypeError,
               AttributeError, OverflowError, UnicodeDecodeError, struct.error, pickle.UnpicklingError, OSError)


def read_checkpoint(path: str, map_location="cpu", mmap: bool = False) -> dict:
    """``torch.load(path, weights_only=True)``, with errors that name the file.

    With ``mmap`` the tensors stay in the file's pages, read only when used: tensors never touched (the authors'
    vision tower and optimizer state, say) cost no memory. It needs the zip format of ``torch.save`` since
    torch 1.6; :func:`is_mappable` tells.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file needs more than tensors and plain containers to load (a pickled object, possibly
            code), or is not a torch file at all (any content, empty or truncated files included): one message,
            "'<file>' is not a readable torch checkpoint: <why>".
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is not a readable torch checkpoint: it is a folder (give the .pth.tar file in it)")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_LEGACY_MAGIC))
    except OSError as error:
        raise ValueError(f"{path!r} is not a readable torch checkpoint: {error.strerror or error}") from None
    if not zipfile.is_zipfile(path) and head != _LEGACY_MAGIC:
        what = "the file is empty" if not head else "it is neither torch's zip format nor its legacy format"
        raise ValueError(f"{path!r} is not a readable torch checkpoint: {what}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if not any(word in str(error).lower() for word in ("global", "reduce", "class")):  # a broken pickle
            raise ValueError(f"{path!r} is not a readable torch checkpoint: {first_line(error)}") from None
        lines = str(error).splitlines()
        reason = next((line.strip() for line in lines if "Unsupported" in line), lines[0] if lines else "")
        raise ValueError(
            f"refusing to load {path!r}: it holds Python objects beyond tensors and plain containers, and loading "
            f"it would run code from the file (weights_only=True refused it: {reason}). "
            "Re-save only its state_dict from a trusted environment."
        ) from None
    except _UNREADABLE as error:
        raise ValueError(f"{path!r} is not a readable torch checkpoint (damaged or cut short?): "
                         f"{first_line(error)}") from None


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def is_mappable(path: str) -> bool:
    """Whether ``path`` is a torch zip checkpoint, which :func:`read_checkpoint` can memory-map."""
    return os.path.isfile(path) and zipfile.is_zipfile(path)


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file (the format runs no code)."""
    try:  # an optional dependency: only these files need it
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise ImportError(f"{path} is a .safetensors file: pip install safetensors to read it") from None
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path!r} is not a readable .safetensors file: {error}") from None


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Stands for a ``__torch__`` module: unpickling fills its ``__dict__`` with the module's attributes."""


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *unused) -> torch.Tensor:
    return storage.as_strided(tuple(size), tuple(stride), offset)


class _ArchiveUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return _ScriptObject
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a TorchScript archive's data.pkl")

    def persistent_load(self, pid):
        kind, dtype, key, _location, _numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        raw = bytearray(self.archive.read(f"{self.prefix}/data/{key}"))
        return torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)


def _named_tensors(obj, prefix: str, out: Dict[str, torch.Tensor]) -> None:
    for name, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _named_tensors(value, f"{prefix}{name}.", out)


def read_torchscript_tensors(path: str) -> Dict[str, torch.Tensor]:
    """Every parameter and buffer of the archive's module tree, by dotted name (as ``state_dict()`` names them).

    Raises:
        ValueError: the archive has no ``data.pkl`` or holds something this reader does not know (the message says
            so; ``torch.jit.load(path).state_dict()`` saved with ``torch.save`` converts it once).
    """
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not names:
            raise ValueError(f"{path} is a zip without a TorchScript data.pkl")
        prefix = names[0].split("/")[0]
        try:
            root = _ArchiveUnpickler(archive.read(names[0]), archive, prefix).load()
        except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as error:
            raise ValueError(f"{path}: its TorchScript data could not be read without the JIT ({error}); convert it "
                             "once where torch.jit.load still works: torch.save(torch.jit.load(path).state_dict(), "
                             "'clip_state.pt'), then use that file") from None
    if not isinstance(root, _ScriptObject):
        raise ValueError(f"{path}: its TorchScript data.pkl holds a {type(root).__name__}, not a module")
    tensors: Dict[str, torch.Tensor] = {}
    _named_tensors(root, "", tensors)
    return tensors


def is_torchscript_archive(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``constants.pkl`` or ``code/``), not a plain
    ``torch.save`` zip."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def read_tensors(path: str):
    """What ``path`` holds, read by the reader its format needs: a ``.safetensors`` file, a TorchScript archive
    or a ``torch.save`` file (pickles with ``weights_only=True``). Raises as those readers do."""
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if is_torchscript_archive(path):
        return read_torchscript_tensors(path)
    return read_checkpoint(path)
