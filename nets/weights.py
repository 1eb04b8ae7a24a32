"""Loading RecLMIS weights: our checkpoints and the authors' released ones.

The authors' checkpoint (``best_model-RecLMIS.pth.tar``) is a dict whose ``state_dict`` holds the whole model,
CLIP's unused vision tower included, with a ``module.`` prefix when it was trained under DataParallel. Loading
drops the vision tower and the prefix, reads the text tower's shape off its tensors and needs no separate
``ViT-B-32.pt``. Files are read with ``torch.load(weights_only=True)``: no Python object is ever unpickled.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import pickle
import struct
import sys
import zipfile
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from nets.text_encoder import TextTowerShape, load_clip_text_state

logger = logging.getLogger(__name__)

_DROPPED_PREFIXES = ("clip.visual.",)
_DROPPED_KEYS = ("clip.input_resolution", "clip.context_length", "clip.vocab_size")


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
            raise ValueError(f"{path!r} is not a readable torch checkpoint: {_first_line(error)}") from None
        lines = str(error).splitlines()
        reason = next((line.strip() for line in lines if "Unsupported" in line), lines[0] if lines else "")
        raise ValueError(
            f"refusing to load {path!r}: it holds Python objects beyond tensors and plain containers, and loading "
            f"it would run code from the file (weights_only=True refused it: {reason}). "
            "Re-save only its state_dict from a trusted environment."
        ) from None
    except _UNREADABLE as error:
        raise ValueError(f"{path!r} is not a readable torch checkpoint (damaged or cut short?): "
                         f"{_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def is_mappable(path: str) -> bool:
    """Whether ``path`` is a torch zip checkpoint, which :func:`read_checkpoint` can memory-map."""
    return os.path.isfile(path) and zipfile.is_zipfile(path)


def extract_state_dict(checkpoint: Mapping) -> Dict[str, torch.Tensor]:
    """The model tensors of a checkpoint dict (ours or the authors'), cleaned for our model.

    Takes ``checkpoint["state_dict"]`` if present (else the dict itself), strips a ``module.`` prefix and drops
    CLIP's vision tower.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"a checkpoint must be a dict, got {type(checkpoint).__name__}")
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint['state_dict'] must be a dict of tensors, got {type(state).__name__}")
    cleaned = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"checkpoint entry {name!r} is a {type(tensor).__name__}, not a tensor")
        if name.startswith("module."):
            name = name[len("module."):]
        if name.startswith(_DROPPED_PREFIXES) or name in _DROPPED_KEYS:
            continue
        cleaned[name] = tensor
    return cleaned


def text_tower_shape(state: Mapping[str, torch.Tensor]) -> TextTowerShape:
    """The text tower's shape as stored in a RecLMIS state dict (``clip.*`` tensors)."""
    if "clip.ln_final.weight" not in state:
        raise ValueError("the state dict holds no CLIP text tower (no 'clip.ln_final.weight')")
    return TextTowerShape.from_state_dict(state, prefix="clip.")


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise ``ValueError`` listing every missing, unexpected and mis-shaped tensor of ``state`` for ``model``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k}: {source} {list(state[k].shape)} vs model {list(expected[k].shape)}"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"the tensors of {source} do not fit this model (is it from another config? compare img_size, "
             "base_channel, rec_trans_num_layers1 and the text tower):"]
    for title, items in (("shape mismatch", mismatched), ("missing from the file", missing),
                         ("not in the model", unexpected)):
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {item}" for item in items[:40])
            if len(items) > 40:
                lines.append(f"    ... and {len(items) - 40} more")
    raise ValueError("\n".join(lines))


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` strictly, after :func:`check_state_dict`."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)


def build_model_from_checkpoint(path: str, config=None):
    """Rebuild a RecLMIS model from a checkpoint file alone (ours or the authors'), on the CPU.

    The file is memory-mapped (when it is in torch's zip format) and the model is built on the ``meta`` device
    and then takes the file's tensors as its own: no random initialisation, no second copy, and the tensors that
    inference never reads (the reconstruction heads, the authors' vision tower and optimizer state) are never
    read from disk. fp16-stored frozen tensors (:func:`compact_state_dict`) come back as fp32.

    Args:
        path: the checkpoint file.
        config: the :class:`utils.config.Config` for a checkpoint that saved none (the authors'); None = the
            default config (their QaTa sizes). A checkpoint of ours is always rebuilt with the config it saved.
            The text tower's sizes come from the checkpoint's tensors (its heads from the saved config, or for
            the authors' files CLIP's ``width / 64``). ``clip_weights`` is read only for a latest checkpoint that
            left the frozen tower out (:func:`utils.training.checkpoint.checkpoint_payload`): the tower comes from the
            CLIP file it recorded (as given, then as an absolute path), else from ``config.clip_weights``, and
            must match the recorded SHA-256.

    Returns:
        ``(model, checkpoint)``: the model in eval mode, and the checkpoint dict. The model's tensors stay mapped
        from the file until they are moved or changed, so do not overwrite the file while the model is in use.
    """
    from nets.reclmis import RecLMIS
    from utils.config import Config

    mapped = is_mappable(path)
    checkpoint = read_checkpoint(path, mmap=mapped)
    state = extract_state_dict(checkpoint)
    omitted = checkpoint.get("frozen_omitted") if isinstance(checkpoint, Mapping) else None
    if omitted:
        state.update(_rebuilt_frozen(path, omitted, getattr(config, "clip_weights", None)))
    saved = checkpoint.get("config") if isinstance(checkpoint, Mapping) else None
    if isinstance(saved, Mapping):
        config = Config.from_dict(saved)
    elif config is None:
        config = Config()
    shape = text_tower_shape(state)
    # Heads leave no trace in the tensors: a saved config knows them; else CLIP's rule (width / 64) holds.
    heads = config.clip_heads if isinstance(saved, Mapping) else shape.heads
    config = config.replace(clip_weights=None, clip_width=shape.width, clip_layers=shape.layers,
                            clip_heads=heads, clip_embed_dim=shape.embed_dim,
                            clip_context_length=shape.context_length, clip_vocab_size=shape.vocab_size)
    with torch.device("meta"):
        model = RecLMIS(config)
    check_state_dict(model, state, source=path)
    expected = model.state_dict()
    file_pages = _unwritten_file_mappings(path) if mapped else []
    converted = {}
    for name, tensor in state.items():
        if tensor.dtype == expected[name].dtype:
            converted[name] = tensor
            continue
        converted[name] = tensor.to(expected[name].dtype)
        release_file_pages(tensor, file_pages)  # the fp16 pages, read once for the copy (about 120 MB for CLIP)
    model.load_state_dict(converted, strict=True, assign=True)
    logger.info("loaded %d tensors from %s", len(state), path)
    return model.eval(), checkpoint


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


def release_file_pages(tensor: torch.Tensor, file_pages: List[Tuple[int, int]]) -> bool:
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
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (ImportError, OSError, AttributeError):
        return False
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if madvise(first, last - first, mmap.MADV_DONTNEED) != 0:
        logger.debug("madvise(MADV_DONTNEED) failed with errno %d: the pages stay resident", ctypes.get_errno())
        return False
    return True


def frozen_names(model: nn.Module) -> List[str]:
    """The names of ``model``'s frozen parameters (the CLIP text tower), sorted."""
    return sorted(name for name, param in model.named_parameters() if not param.requires_grad)


def frozen_sha256(model: nn.Module) -> str:
    """A SHA-256 over the names, dtypes, shapes and bytes of ``model``'s frozen parameters.

    A latest checkpoint that leaves the frozen tower out records it; resuming checks that the tower rebuilt from
    ``clip_weights`` is the one the run trained with.
    """
    params = dict(model.named_parameters())
    return _tensors_sha256({name: params[name] for name in frozen_names(model)})


def _tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def omitted_frozen_record(model: nn.Module, clip_weights: str, sha256: str) -> dict:
    """What a checkpoint that leaves out the frozen tensors records of them (``frozen_omitted``): the CLIP file
    as configured and as an absolute path, the digest (:func:`frozen_sha256`) and the tensor names."""
    return {"clip_weights": clip_weights, "clip_weights_abs": os.path.abspath(clip_weights), "sha256": sha256,
            "names": frozen_names(model)}


def check_frozen(model: nn.Module, omitted: Mapping, source: str, actual: Optional[str] = None) -> None:
    """Raise ``ValueError`` unless ``model``'s frozen tensors are those ``source`` was saved with (resuming: the
    model was built from the config's ``clip_weights``). ``actual``: :func:`frozen_sha256` of ``model`` if known."""
    _check_record(omitted, source)
    actual = actual or frozen_sha256(model)
    if actual != omitted["sha256"]:
        raise ValueError(
            f"{source} leaves out the frozen CLIP text tower, to be rebuilt from {omitted['clip_weights']!r}, but "
            f"the tower built from clip_weights={model.config.clip_weights!r} is not the one the run trained with "
            f"(sha256 {actual[:12]}... instead of {omitted['sha256'][:12]}...). Put back the CLIP file the run "
            "started with, or point to it with --set clip_weights=PATH.")


def _check_record(omitted, source: str) -> None:
    if not (isinstance(omitted, Mapping) and isinstance(omitted.get("sha256"), str)
            and isinstance(omitted.get("names"), list) and isinstance(omitted.get("clip_weights"), str)):
        raise ValueError(f"{source} has a malformed 'frozen_omitted' entry (expected clip_weights, sha256 and "
                         "names); load the session's best checkpoint instead")


def _rebuilt_frozen(path: str, omitted: Mapping, fallback: Optional[str]) -> Dict[str, torch.Tensor]:
    """The frozen tensors that the checkpoint ``path`` left out, read from the first CLIP file whose tower has
    the recorded digest: the one recorded (as given, then absolute), then ``fallback``."""
    _check_record(omitted, path)
    candidates = {}
    for candidate in filter(None, [omitted["clip_weights"], omitted.get("clip_weights_abs"), fallback]):
        candidates.setdefault(os.path.realpath(candidate), candidate)
    names = omitted["names"]
    reasons = []
    for candidate in candidates.values():
        if not os.path.isfile(candidate):
            reasons.append(f"{candidate}: missing")
            continue
        try:
            tower = load_clip_text_state(candidate)
        except (ValueError, RuntimeError, OSError, EOFError) as error:
            reasons.append(f"{candidate}: unreadable ({_first_line(error)})")
            continue
        if not all(name.startswith("clip.") and name[len("clip."):] in tower for name in names):
            reasons.append(f"{candidate}: another tower (tensors missing)")
            continue
        rebuilt = {name: tower[name[len("clip."):]] for name in names}
        if _tensors_sha256(rebuilt) == omitted["sha256"]:
            return rebuilt
        reasons.append(f"{candidate}: another tower (sha256 differs)")
    reasons = reasons or ["no CLIP file is recorded"]
    error = FileNotFoundError if all(reason.endswith(": missing") for reason in reasons) else ValueError
    raise error(
        f"{path} is a latest (resume) checkpoint: it leaves out the frozen CLIP text tower, which is rebuilt from "
        f"the CLIP file the run trained with (sha256 of its tower {omitted['sha256'][:12]}...), and none was found: "
        f"{'; '.join(reasons)}. Put back that file, pass a config whose clip_weights names it (test.py: --set "
        "clip_weights=PATH), or load the session's best checkpoint, which holds the whole model.")


def compact_state_dict(model: nn.Module, leave_out=()) -> Dict[str, torch.Tensor]:
    """``model.state_dict()`` for our checkpoints, with each frozen fp32 parameter whose values are all exactly
    representable in fp16 stored as fp16.

    This is lossless: OpenAI released CLIP in fp16, so the frozen text tower (63 M parameters) takes half the
    space and loads back bit for bit (``load_state_dict`` copies it into the fp32 parameters). Trained
    parameters, buffers and a random text tower stay fp32. The names in ``leave_out`` are dropped.
    """
    state = model.state_dict()
    for name in leave_out:
        del state[name]
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    for name in frozen & set(state):
        tensor = state[name]
        if tensor.dtype == torch.float32:
            half = tensor.half()
            if torch.equal(half.float(), tensor):
                state[name] = half
    return state


def save_authors_format(model: nn.Module, path: str, epoch: int = 0, data_parallel: bool = False,
                        extra: Optional[Dict[str, torch.Tensor]] = None) -> None:
    """Write ``model`` as the authors' code writes a checkpoint (for compatibility tests and exports).

    Args:
        data_parallel: prefix every name with ``module.`` as DataParallel does.
        extra: more tensors to put in the state dict (e.g. a stand-in for ``clip.visual.*``).
    """
    prefix = "module." if data_parallel else ""
    state = {prefix + k: v for k, v in model.state_dict().items()}
    state.update({prefix + k: v for k, v in (extra or {}).items()})
    torch.save({"epoch": epoch, "best_model": True, "model": "RecLMIS", "state_dict": state,
                "val_loss": torch.tensor(0.0)}, path)
