"""Checkpoints: what they hold, written so that a crash never leaves a broken file, and the model rebuilt from one.

- :func:`checkpoint_payload` and :func:`save_checkpoint` (atomic) write them; :func:`compact_state_dict` stores the
  frozen CLIP tower in fp16 (losslessly), and a latest checkpoint may leave the tower out altogether
  (``frozen_omitted``: :func:`omitted_frozen_record`, checked by :func:`check_frozen`);
- :func:`build_model_from_checkpoint` is the factory that rebuilds a model from a file alone (ours or the
  authors'); it sits above the model (``nets``) and reads files through :mod:`utils.weights_io`.

Where sessions live: :mod:`utils.training.sessions`.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from typing import Dict, List, Mapping, Optional

import torch
from torch import nn

from nets.hf_encoder import build_hf_text_encoder
from nets.reclmis import RecLMIS
from nets.text_encoder import load_clip_text_state
from nets.weights import check_state_dict, extract_state_dict, text_tower_shape
from utils.config import Config
from utils.memory import convert_dropping_file_pages
from utils.training.sessions import MODEL_NAME
from utils.weights_io import first_line, is_mappable, read_checkpoint

logger = logging.getLogger(__name__)
BEST_NAME = "best_model-RecLMIS.pth.tar"
LATEST_NAME = "latest_model.pth.tar"
TMP_PREFIX = ".tmp_"


def checkpoint_payload(model, config, epoch: int, best: bool, val: dict, training_state: dict = None,
                       frozen_sha256: str = None) -> dict:
    """What a checkpoint file holds.

    Every file: ``epoch`` (0-based), ``best_model``, ``model``, ``state_dict`` (:func:`compact_state_dict`),
    ``val_loss``, ``val_dice`` and the resolved ``config``. The latest checkpoint adds ``training_state``'s entries
    (optimizer, scheduler, grad scaler, best score, RNG states), which only resuming needs; the best checkpoint
    leaves them out, which keeps it under a third of the size.

    Args:
        frozen_sha256: given (:func:`frozen_sha256`), the frozen CLIP text tower is left out of
            ``state_dict``: it is rebuilt from ``config.clip_weights``, which must then be a file. The payload
            records the file, the digest and the names under ``frozen_omitted``; resuming and
            :func:`build_model_from_checkpoint` check the rebuilt tower against the digest.
    """
    omitted = frozen_names(model) if frozen_sha256 is not None else []
    if omitted and config.clip_weights is None:
        raise ValueError("a random text tower (clip_weights=None) cannot be rebuilt: keep it in the checkpoint")
    payload = {"epoch": epoch, "best_model": best, "model": MODEL_NAME,
               "state_dict": compact_state_dict(model, leave_out=omitted), "val_loss": float(val["total"]),
               "val_dice": float(val["dice"]), "config": config.to_dict()}
    if omitted:
        payload["frozen_omitted"] = omitted_frozen_record(model, config.clip_weights, frozen_sha256)
    payload.update(training_state or {})
    return payload


def compact_optimizer_state(state: dict) -> dict:
    """An optimizer ``state_dict`` with its fp32 per-parameter tensors (Adam's moments) stored as bf16.

    Half the size; ``Optimizer.load_state_dict`` casts them back to the parameters' dtype, so a resumed run
    continues from moments rounded to bf16 (8 significant bits): close to the interrupted run, not bit-exact.
    """
    compact = {}
    for index, entries in state["state"].items():
        compact[index] = {key: value.to(torch.bfloat16) if isinstance(value, torch.Tensor) and key != "step"
                          and value.dtype == torch.float32 else value for key, value in entries.items()}
    return {**state, "state": compact}


def save_checkpoint(state: dict, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over it atomically.

    A kill or a full disk at any moment leaves the previous file at ``path`` intact.

    Raises:
        OSError: the file could not be written (full disk, no permission); the message names ``path`` and says
            that the previous file is intact.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        handle, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".pt", dir=folder)
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes the file owner-only; a checkpoint is shared as usual
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except OSError as error:
        reason = error.strerror or str(error)
        raise OSError(error.errno, f"could not write the checkpoint {path}: {reason}. The previous file there (if "
                                   "any) is intact.") from error
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete the temporary files that a save killed outright (SIGKILL, power loss) left in ``folder``; returns
    their names. Only one training process writes a session's checkpoints, so at its start none is in use."""
    removed = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.startswith(TMP_PREFIX) and name.endswith(".pt"):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed


def ensure_writable(folder: str) -> None:
    """Raise ``OSError`` naming ``folder`` unless a file can be created in it."""
    try:
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write_test_", dir=folder)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise OSError(error.errno, f"cannot write to {folder}: {error.strerror or error}. Choose a writable "
                                   "output_root (--set output_root=...).") from error


def estimated_checkpoint_bytes(model, omit_frozen: bool = False, compact_resume: bool = False) -> int:
    """About the disk that ``model``'s checkpoints need: the best one, the latest one (the compact state dict,
    without the frozen tower when ``omit_frozen``, plus Adam's two moments per trainable parameter, fp32 or with
    ``compact_resume`` bf16), and a second latest while a save replaces it."""
    compact = compact_state_dict(model)
    state = sum(t.numel() * t.element_size() for t in compact.values())
    frozen = sum(compact[name].numel() * compact[name].element_size() for name in frozen_names(model))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    latest = state - (frozen if omit_frozen else 0) + (4 if compact_resume else 8) * trainable
    return state + 2 * latest  # best, latest, and a new latest beside the old one until the rename


def check_free_space(folder: str, needed: int) -> None:
    """Raise ``OSError`` before training when ``folder``'s disk has less than ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"only {free / 2**20:.0f} MiB free on the disk of {folder}; this model's "
                                    f"checkpoints need about {needed / 2**20:.0f} MiB. Free some space or choose "
                                    "another output_root.")


def best_checkpoint_note(session_dir: str, config_name: str) -> str:
    """What a refused resume (its latest checkpoint unreadable or missing) says of the session's best checkpoint:
    intact, with its epoch and validation Dice and how to test it; unreadable too, and why; or absent.

    Cheap: the file is memory-mapped, so no tensor is read into memory, and the CRC of each of its zip records is
    checked, so "intact" means every byte torch wrote is there as written.
    """
    path = os.path.join(session_dir, "models", BEST_NAME)
    if not os.path.exists(path):
        return f"the session has no best checkpoint either ({path}): start a new run"
    try:
        mapped = is_mappable(path)
        saved = read_checkpoint(path, mmap=mapped)
        if not (isinstance(saved, Mapping) and isinstance(saved.get("state_dict"), Mapping)
                and isinstance(saved.get("epoch"), int) and isinstance(saved.get("val_dice"), (int, float))):
            raise ValueError(f"{path!r} holds no state_dict, epoch and val_dice")
        if mapped:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
            if damaged is not None:
                raise ValueError(f"{path!r} is damaged: its record {damaged} fails its CRC check")
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        return f"the best checkpoint is unreadable too: {first_line(error)}; start a new run"
    return (f"the best checkpoint {path} (epoch {saved['epoch'] + 1}, val Dice {saved['val_dice']:.4f}) is intact: "
            f"test it with python test.py -c {config_name} -t {session_dir}, or start a new run")


def _read_as_reclmis(path: str, read, content):
    """``read(content)``; its ``ValueError`` (torch read the file, but it holds a tensor, a list, a dict of numbers,
    another model's weights) becomes one naming ``path``."""
    try:
        return read(content)
    except ValueError as error:
        raise ValueError(f"{path!r} is not a RecLMIS checkpoint: {error}") from None


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
            left the frozen tower out (:func:`checkpoint_payload`): the tower comes from the
            CLIP file it recorded (as given, then as an absolute path), else from ``config.clip_weights``, and
            must match the recorded SHA-256. An hf text tower (``text_encoder="hf"``) is built from the
            ``config.json`` of the saved ``hf_text_model`` on the CPU, its weights from the checkpoint.

    Returns:
        ``(model, checkpoint)``: the model in eval mode, and the checkpoint dict. The model's tensors stay mapped
        from the file until they are moved or changed, so do not overwrite the file while the model is in use.
    """
    mapped = is_mappable(path)
    checkpoint = read_checkpoint(path, mmap=mapped)
    state = _read_as_reclmis(path, extract_state_dict, checkpoint)
    omitted = checkpoint.get("frozen_omitted") if isinstance(checkpoint, Mapping) else None
    if omitted:
        state.update(_rebuilt_frozen(path, omitted, getattr(config, "clip_weights", None)))
    saved = checkpoint.get("config") if isinstance(checkpoint, Mapping) else None
    if isinstance(saved, Mapping):
        config = Config.from_dict(saved)
    elif config is None:
        config = Config()
    if config.text_encoder == "hf":
        # The encoder is built from its own config (hf_text_model's config.json) on the CPU, the meta device
        # being no use for it: transformers keeps some buffers out of the state dict, so the file cannot fill them.
        tower = build_hf_text_encoder(config.hf_text_model, config.clip_embed_dim, pretrained=False)
        model = RecLMIS(config, text_encoder=tower)
    else:
        shape = _read_as_reclmis(path, text_tower_shape, state)
        # Heads leave no trace in the tensors: a saved config knows them; else CLIP's rule (width / 64) holds.
        heads = config.clip_heads if isinstance(saved, Mapping) else shape.heads
        config = config.replace(clip_weights=None, clip_width=shape.width, clip_layers=shape.layers,
                                clip_heads=heads, clip_embed_dim=shape.embed_dim,
                                clip_context_length=shape.context_length, clip_vocab_size=shape.vocab_size)
        with torch.device("meta"):
            model = RecLMIS(config)
    check_state_dict(model, state, source=path)
    dtypes = {name: tensor.dtype for name, tensor in model.state_dict().items()}
    if mapped:  # fp16-stored tensors become fp32; the file pages read for the copy are given back
        state = convert_dropping_file_pages(state, dtypes, path)
    else:
        state = {name: tensor.to(dtypes[name]) for name, tensor in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    logger.info("loaded %d tensors from %s", len(state), path)
    return model.eval(), checkpoint


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
            reasons.append(f"{candidate}: unreadable ({first_line(error)})")
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
