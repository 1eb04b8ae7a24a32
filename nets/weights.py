"""RecLMIS state dicts: ours and the authors', checked against a model and loaded strictly.

The authors' checkpoint (``best_model-RecLMIS.pth.tar``) is a dict whose ``state_dict`` holds the whole model,
CLIP's unused vision tower included, with a ``module.`` prefix when it was trained under DataParallel.
:func:`extract_state_dict` drops the vision tower and the prefix; :func:`text_tower_shape` reads the text tower's
shape off its tensors, so the file needs no separate ``ViT-B-32.pt``. Reading files is
:mod:`utils.weights_io`'s job; rebuilding a model from a file is
:func:`utils.checkpoints.build_model_from_checkpoint`'s.
"""

from __future__ import annotations

import zlib
from typing import Dict, Mapping, Optional

import torch
from torch import nn

from nets.text_encoder import TextTowerShape

_DROPPED_PREFIXES = ("clip.visual.",)
_DROPPED_KEYS = ("clip.input_resolution", "clip.context_length", "clip.vocab_size")


def extract_state_dict(checkpoint: Mapping) -> Dict[str, torch.Tensor]:
    """The model tensors of a checkpoint dict (ours or the authors'), cleaned for our model.

    Takes ``checkpoint["state_dict"]`` if present (else the dict itself), strips a ``module.`` prefix and drops
    CLIP's vision tower.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"a checkpoint is a dict, this is of type {type(checkpoint).__name__}")
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint['state_dict'] must be a dict of tensors, it is of type {type(state).__name__}")
    cleaned = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            where = "checkpoint['state_dict']" if "state_dict" in checkpoint else (
                "it has no 'state_dict' entry, and as a state dict itself it")
            raise ValueError(f"{where} holds {name!r} of type {type(tensor).__name__}, not a tensor")
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


def state_dict_rows(model: nn.Module) -> Dict[str, tuple]:
    """``{name: (shape, kind)}`` of every tensor of ``model``'s state dict, as the reference tsv files hold them:
    the shape a tuple (``()`` for a scalar), the kind ``"True"``/``"False"`` (a parameter, trainable or not) or
    ``"buffer"``."""
    params = dict(model.named_parameters())
    return {name: (tuple(tensor.shape), str(params[name].requires_grad) if name in params else "buffer")
            for name, tensor in model.state_dict().items()}


def write_state_dict_tsv(model: nn.Module, path: str, source: str) -> None:
    """Write :func:`state_dict_rows` of ``model`` to ``path``: a comment naming ``source``, a header, a row each."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"# {source}\n# name\tshape\ttrainable\n")
        for name, (shape, kind) in state_dict_rows(model).items():
            handle.write(f"{name}\t{'x'.join(map(str, shape)) if shape else 'scalar'}\t{kind}\n")


def read_state_dict_tsv(path: str) -> Dict[str, tuple]:
    """The rows of a reference tsv (:func:`write_state_dict_tsv`'s format), as :func:`state_dict_rows` gives them."""
    rows = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#"):
                continue
            name, shape, kind = line.rstrip("\n").split("\t")
            rows[name] = (() if shape == "scalar" else tuple(int(s) for s in shape.split("x")), kind)
    return rows


def fill_for_parity(model: nn.Module, seed: int, skip_prefixes: tuple = ()) -> None:
    """Give every floating tensor of ``model``'s state dict a value that depends only on ``seed``, its name and its
    shape, so that two implementations with the same names get the same weights without sharing a file.

    Matrices and kernels: normal / sqrt(fan-in); 1-D weights (norm scales): 1 + 0.1 normal; other vectors: 0.1
    normal; BatchNorm running variances: uniform in [0.5, 1.5]. Integer buffers are left. Names under
    ``skip_prefixes`` are left too.
    """
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if not tensor.is_floating_point() or name.startswith(skip_prefixes):
                continue
            generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            if name.endswith("running_var"):
                value = torch.rand(tensor.shape, generator=generator) + 0.5
            elif tensor.dim() >= 2:
                value = torch.randn(tensor.shape, generator=generator) / (tensor[0].numel() ** 0.5)
            elif tensor.dim() == 1 and name.endswith("weight"):
                value = 1 + 0.1 * torch.randn(tensor.shape, generator=generator)
            else:
                value = 0.1 * torch.randn(tensor.shape, generator=generator)
            tensor.copy_(value.to(tensor.dtype))


def nudge_weights(model: nn.Module, steps: int) -> None:
    """Move every trainable floating weight of ``model`` by ``steps`` representable values (``nextafter``; upwards
    for positive ``steps``): a change of the size of one float rounding, for probing a run's sensitivity to it."""
    with torch.no_grad():
        for param in model.parameters():
            if not (param.requires_grad and param.is_floating_point()):
                continue
            towards = torch.full_like(param, float("inf") if steps > 0 else float("-inf"))
            for _ in range(abs(steps)):
                param.copy_(torch.nextafter(param, towards))
