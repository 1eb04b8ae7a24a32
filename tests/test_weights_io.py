"""Reading a TorchScript archive's tensors from its zip, without the JIT: the same tensors as torch.jit.load, in
fp32 and fp16 (OpenAI ships ViT-B-32.pt in fp16), and nothing else from the file is ever run."""

import pickle
import warnings
import zipfile

import pytest
import torch

from nets.text_encoder import CLIPTextEncoder, TextTowerShape, load_clip_text_state
from tests.tiny import Payload
from utils.data.tokenizer import ReportTokenizer
from utils.weights_io import read_torchscript_tensors

SHAPE = TextTowerShape(width=64, layers=2, heads=1, embed_dim=48)


def _archive(path, half=False):
    torch.manual_seed(3)
    tok = ReportTokenizer(18)(["Bilateral pulmonary infection."])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated: only the test makes one
        traced = torch.jit.trace(CLIPTextEncoder(SHAPE).eval(), (tok.tokens, tok.text_mask), check_trace=False)
        if half:
            traced = traced.half()
        traced.save(str(path))
        return torch.jit.load(str(path)).state_dict()


@pytest.mark.parametrize("half", [False, True])
def test_same_tensors_as_the_jit(tmp_path, half):
    expected = _archive(tmp_path / "a.pt", half)
    ours = read_torchscript_tensors(str(tmp_path / "a.pt"))
    assert sorted(ours) == sorted(expected)
    for name, tensor in expected.items():
        assert ours[name].dtype == tensor.dtype and torch.equal(ours[name], tensor), name
    state = load_clip_text_state(str(tmp_path / "a.pt"))
    assert all(v.dtype == torch.float32 for v in state.values()) and "ln_final.weight" in state


def test_an_archive_carrying_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"weight": Payload(str(marker))}, protocol=2))
        archive.writestr("evil/constants.pkl", pickle.dumps(()))
    with pytest.raises(ValueError, match="could not be read without the JIT.*unexpected global (io|builtins).open"):
        read_torchscript_tensors(str(path))
    assert not marker.exists()
