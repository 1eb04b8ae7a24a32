"""Small model configs and inputs shared by the network tests (CPU, random weights, no downloads)."""

import shutil

import pytest
import torch

from nets import build_model
from utils.config import Config
from utils.data.tokenizer import ReportTokenizer


def _has_inductor_compiler() -> bool:
    """torch.compile on the CPU (Inductor) writes and compiles C++ with the compiler it finds ($CXX, else g++)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # another torch layout: look for the usual names
        return any(shutil.which(name) for name in ("g++", "c++", "clang++"))
    try:
        return shutil.which(get_cpp_compiler()) is not None
    except (RuntimeError, OSError):
        return False


NEEDS_CXX = pytest.mark.skipif(not _has_inductor_compiler(), reason="torch.compile needs a C++ compiler")

# Seconds a test may wait for a training process or a worker: enough for a 2-core machine under heavy load (a first
# epoch of the crash tests can take over 120 s there); a hung process still fails, later.
PATIENCE = 600

REPORTS = [
    "Bilateral pulmonary infection, two infected areas, upper left lung and upper right lung.",
    "Unilateral pulmonary infection, one infected area, middle left lung.",
    "No infection.",
]


def tiny_config(**changes) -> Config:
    """A RecLMIS small enough to run in milliseconds: 2-layer text tower of width 32, base_channel 4, 32 px."""
    values = dict(clip_weights=None, img_size=32, base_channel=4, clip_width=32, clip_layers=2, clip_heads=2,
                  text_embed_dim=32, rec_trans_num_layers1=1, token_len=18)
    values.update(changes)
    return Config().replace(**values)


def batch(config: Config, reports=REPORTS, seed: int = 0):
    """Images ``[B, 3, S, S]``, tokens and mask for ``reports``, and binary masks ``[B, S, S]``."""
    generator = torch.Generator().manual_seed(seed)
    tok = ReportTokenizer(config.token_len, config.pad_short_reports)(list(reports))
    size = config.img_size
    images = torch.rand(len(reports), config.n_channels, size, size, generator=generator)
    masks = (torch.rand(len(reports), size, size, generator=generator) > 0.7).long()
    return images, tok.tokens, tok.text_mask, masks


def write_clip_file(path, seed: int = 0, width: int = 32, layers: int = 1, heads: int = 1) -> str:
    """A small CLIP text tower saved as a state dict with OpenAI's names, its values rounded to fp16 as in
    OpenAI's release; ``seed`` picks the values. Returns the path as a string."""
    from nets.text_encoder import CLIPTextEncoder, TextTowerShape

    torch.manual_seed(seed)
    tower = CLIPTextEncoder(TextTowerShape(width=width, layers=layers, heads=heads, embed_dim=width))
    torch.save({name: tensor.half() for name, tensor in tower.state_dict().items()}, path)
    return str(path)


class Payload:
    """Unpickling this runs ``open(marker, 'w')``: a stand-in for malicious code in a weights file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def model_with_batchnorm_statistics(config, seed=0):
    """A tiny model whose BatchNorms hold non-trivial running statistics and affine (as after training)."""
    torch.manual_seed(seed)
    model = build_model(config)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()
