"""Reading checkpoints: the file names of a session's checkpoints, the model rebuilt from a file alone (ours or the
authors'), the frozen text tower's digest, and what a damaged session still holds.

Both training (resume) and inference (``Predictor.from_checkpoint``, ``test.py``) read checkpoints through this
module; writing them is training's (:mod:`utils.training.checkpoint`). It sits above the model (``nets``) and
reads files through :mod:`utils.weights_io`, so that predicting imports no optimizer, scheduler or DDP code.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import zipfile
from typing import Dict, List, Mapping, Optional

import torch
from torch import nn

from nets import build_model
from nets.models import model_kind
from nets.text_encoder import load_clip_text_state
from nets.text_towers import text_tower_kind
from nets.weights import check_state_dict, extract_state_dict
from utils.config import Config
from utils.memory import convert_dropping_file_pages
from utils.weights_io import first_line, is_mappable, read_checkpoint

logger = logging.getLogger(__name__)
LATEST_NAME = "latest_model.pth.tar"


def best_name(config) -> str:
    """The best checkpoint's file name for the network ``config.model`` names: ``best_model-<its folder>.pth.tar``
    (``best_model-RecLMIS.pth.tar``, the authors' name, for RecLMIS)."""
    return f"best_model-{model_kind(config.model).folder}.pth.tar"


BEST_NAME = best_name(Config())


def session_best(session_dir: str) -> str:
    """The path of a session's best checkpoint, whichever network it trained (``models/best_model-*.pth.tar``);
    RecLMIS's name when there is none yet, so that a message names the file that is missing."""
    found = sorted(glob.glob(os.path.join(glob.escape(session_dir), "models", "best_model-*.pth.tar")))
    if len(found) > 1:
        raise ValueError(f"{session_dir} holds several best checkpoints ({', '.join(found)}): pass the one you mean "
                         "with --checkpoint")
    return found[0] if found else os.path.join(session_dir, "models", BEST_NAME)


def best_checkpoint_note(session_dir: str, config_name: str) -> str:
    """What a refused resume (its latest checkpoint unreadable or missing) says of the session's best checkpoint:
    intact, with its epoch and validation Dice and how to test it; unreadable too, and why; or absent.

    Cheap: the file is memory-mapped, so no tensor is read into memory, and the CRC of each of its zip records is
    checked, so "intact" means every byte torch wrote is there as written.
    """
    path = session_best(session_dir)
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


def _read_as_checkpoint(path: str, read, content):
    """``read(content)``; its ``ValueError`` (torch read the file, but it holds a tensor, a list, a dict of numbers,
    another model's weights) becomes one naming ``path``."""
    try:
        return read(content)
    except ValueError as error:
        raise ValueError(f"{path!r} is not a checkpoint of this project's networks: {error}") from None


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
            must match the recorded SHA-256. Other towers are rebuilt as their kind says
            (:class:`nets.text_towers.TextTowerKind`): an hf tower from the ``config.json`` of the saved
            ``hf_text_model`` on the CPU, its weights from the checkpoint. A checkpoint written by a peer's own
            code (LViT's, GuideDecoder's: ``config.model`` names the network) gets its text tower from the
            config's weights (:attr:`nets.models.ModelKind.authors_state`).

    Returns:
        ``(model, checkpoint)``: the model in eval mode, and the checkpoint dict. The model's tensors stay mapped
        from the file until they are moved or changed, so do not overwrite the file while the model is in use.
    """
    mapped = is_mappable(path)
    checkpoint = read_checkpoint(path, mmap=mapped)
    state = _read_as_checkpoint(path, extract_state_dict, checkpoint)
    omitted = checkpoint.get("frozen_omitted") if isinstance(checkpoint, Mapping) else None
    if omitted:
        state.update(_rebuilt_frozen(path, omitted, getattr(config, "clip_weights", None)))
    saved = checkpoint.get("config") if isinstance(checkpoint, Mapping) else None
    if isinstance(saved, Mapping):
        config = Config.from_dict(saved)
    elif config is None:
        config = Config()
    kind = model_kind(config.model)
    if not isinstance(saved, Mapping) and kind.authors_state is not None:
        # A checkpoint of the peer's own code: the network built with its tower's weights, the file's names made ours.
        model = build_model(config)
        state = _read_as_checkpoint(path, lambda tensors: kind.authors_state(tensors, model), state)
        check_state_dict(model, state, source=path)
        model.load_state_dict(state, strict=True)
        logger.info("loaded %d tensors from %s (%s's own format)", len(state), path, kind.folder)
        return model.eval(), checkpoint
    tower = None
    if kind.has_text_tower:
        # The tower's kind fits the config to the saved tensors and says whether it must be built on the CPU.
        kind = text_tower_kind(config.text_encoder)
        config, tower = _read_as_checkpoint(
            path, lambda tensors: kind.rebuild(config, tensors, isinstance(saved, Mapping)), state)
    if tower is None:
        with torch.device("meta"):
            model = build_model(config)
    else:
        model = build_model(config, tower)
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
