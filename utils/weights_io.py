"""Read the tensors of a TorchScript archive (OpenAI's ``ViT-B-32.pt``) from its zip, without the JIT.

TorchScript is deprecated in torch 2.14, and ``torch.jit.load`` may go. The archive is a zip: ``<name>/data.pkl``
pickles the module tree, each module an object of a ``__torch__.*`` class whose attributes are its parameters,
buffers and submodules; each tensor's bytes are in ``<name>/data/<key>``. This reader unpickles ``data.pkl`` with
an unpickler that knows only what that needs: the ``__torch__`` classes become plain attribute holders, tensors are
rebuilt from the zip's bytes, and any other global is refused. No code from the file is ever run.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from typing import Dict

import torch

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
