"""The one inference path: the Predictor keeps the masks of the eval forward in every mode it offers."""

import copy

import pytest
import torch

from nets import build_model
from tests.tiny import NEEDS_CXX, REPORTS, batch, model_with_batchnorm_statistics, tiny_config
from utils.inference import predictor as inference
from utils.inference import speed
from utils.inference.predictor import Predictor


def test_predictor_fp32_gives_the_masks_of_the_eval_forward():
    config = tiny_config()
    model = model_with_batchnorm_statistics(config)
    images, tokens, mask, _ = batch(config)
    with torch.no_grad():
        reference = model(images, tokens, mask, return_weights=True)
    for channels_last in (True, False):
        predictor = Predictor(copy.deepcopy(model), torch.device("cpu"), channels_last=channels_last)
        out = predictor.outputs(images, tokens, mask, return_weights=True)
        assert torch.allclose(out["logits"], reference["logits"], atol=1e-5, rtol=1e-5)
        assert torch.equal(out["logits"] > 0, reference["logits"] > 0)
        assert torch.allclose(out["word_weights"], reference["word_weights"], atol=1e-6)
        assert "text_rec" not in out  # the auxiliary branch does not run
        assert torch.equal(predictor(images, tokens, mask), out["logits"])


def test_predictor_bf16_runs_on_cpu_and_returns_fp32():
    config = tiny_config()
    model = model_with_batchnorm_statistics(config)
    images, tokens, mask, _ = batch(config)
    with torch.no_grad():
        reference = model(images, tokens, mask)["logits"]
    logits = Predictor(copy.deepcopy(model), torch.device("cpu"), "bf16")(images, tokens, mask)
    assert logits.dtype == torch.float32 and logits.shape == reference.shape
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max() + 1e-3


@pytest.mark.parametrize("timings, chosen", [({"fp32": 0.2, "bf16": 0.1}, "bf16"),
                                             ({"fp32": 0.1, "bf16": 0.3}, "fp32")])
def test_auto_precision_keeps_the_faster_one_on_this_machine(timings, chosen, monkeypatch, caplog):
    config = tiny_config()
    model = model_with_batchnorm_statistics(config)
    images, tokens, mask, _ = batch(config)
    predictor = Predictor(copy.deepcopy(model), torch.device("cpu"), "auto")
    monkeypatch.setattr(predictor, "time_precision", lambda precision, *args: timings[precision])
    with caplog.at_level("INFO"):
        logits = predictor(images, tokens, mask)
    assert predictor.precision == chosen and f"using {chosen}" in caplog.text
    assert "fp32 " in caplog.text and "bf16 " in caplog.text
    expected = Predictor(copy.deepcopy(model), torch.device("cpu"), chosen)(images, tokens, mask)
    assert torch.equal(logits, expected)


def test_auto_precision_times_for_real_and_refuses_compile():
    config = tiny_config()
    model = model_with_batchnorm_statistics(config)
    images, tokens, mask, _ = batch(config)
    predictor = Predictor(copy.deepcopy(model), torch.device("cpu"), "auto")
    assert predictor.candidate_precisions() == ["fp32", "bf16"]
    predictor(images, tokens, mask)
    assert predictor.precision in ("fp32", "bf16")
    with pytest.raises(ValueError, match="auto"):
        Predictor(copy.deepcopy(model), torch.device("cpu"), "auto", compile=True)


@NEEDS_CXX
def test_compiled_predictor_gives_the_eager_masks_and_pads_a_short_batch(monkeypatch):
    config = tiny_config()
    model = model_with_batchnorm_statistics(config)
    images, tokens, mask, _ = batch(config, reports=[REPORTS[0], REPORTS[1], REPORTS[0]])
    eager = Predictor(copy.deepcopy(model), torch.device("cpu"))(images, tokens, mask)
    compiled = Predictor(copy.deepcopy(model), torch.device("cpu"), compile=True, cache_text=8)
    logits = compiled(images, tokens, mask)
    assert torch.allclose(logits, eager, atol=1e-5, rtol=1e-5) and torch.equal(logits > 0, eager > 0)
    padded = []
    monkeypatch.setattr(inference, "pad_batch", lambda t, size: padded.append(size) or speed.pad_batch(t, size))
    short = compiled(images[1:], tokens[1:], mask[1:])  # the last, smaller batch of a data set
    assert padded == [3, 3, 3, 3] and short.shape[0] == 2  # images, tokens, mask and the cached text features
    assert torch.allclose(short, eager[1:], atol=1e-5, rtol=1e-5)
    # The cache saw the 2 real rows only (both known), not the padding.
    assert (compiled.text_cache.misses, compiled.text_cache.hits) == (2, 3)
    single = compiled(images[:1], tokens[:1], mask[:1])  # 3 is more than twice 1: compiled anew, not padded
    assert len(padded) == 4 and compiled._compiled_sizes == [3, 1]
    assert torch.allclose(single, eager[:1], atol=1e-5, rtol=1e-5)


def test_compiled_predictor_pads_only_up_to_twice_the_batch():
    predictor = Predictor(build_model(tiny_config()), torch.device("cpu"), compile=True)
    assert [predictor._compiled_size(b) for b in (3, 2, 1, 2, 7, 4)] == [3, 3, 1, 3, 7, 7]
    assert predictor._compiled_sizes == [3, 1, 7]


@pytest.mark.parametrize("options", [{"cache_text": 8}, pytest.param({"compile": True}, marks=NEEDS_CXX)],
                         ids=["text_cache", "compile"])
def test_fast_paths_check_their_inputs_first(options):
    config = tiny_config()
    predictor = Predictor(build_model(config), torch.device("cpu"), **options)
    images, tokens, mask, _ = batch(config)
    predictor(images, tokens, mask)  # compiled for 3: a short batch would be padded, hiding a mismatch
    with pytest.raises(ValueError, match="text_tokens must be"):
        predictor(images[:2], tokens[:1], mask[:1])
    with pytest.raises(ValueError, match="text_tokens must be"):
        predictor(images[:2], tokens, mask)
    with pytest.raises(ValueError, match="integer token ids"):
        predictor(images, tokens.float(), mask)
    with pytest.raises(ValueError, match="text_mask .* must have the shape"):
        predictor(images, tokens, mask[:, :5])


def test_a_failed_compilation_says_to_run_without_compile():
    config = tiny_config()
    predictor = Predictor(build_model(config), torch.device("cpu"), compile=True)

    def broken_backend(graph, inputs):
        raise OSError("no C++ compiler")

    predictor.compiled = torch.compile(predictor.model, backend=broken_backend)
    images, tokens, mask, _ = batch(config)
    with pytest.raises(RuntimeError, match=r"torch.compile failed on cpu .*run without --compile"):
        predictor(images, tokens, mask)


def test_text_cache_at_batch_1_gives_the_same_bits_and_counts_reports():
    config = tiny_config()
    model = model_with_batchnorm_statistics(config)
    images, tokens, mask, _ = batch(config, reports=[REPORTS[0], REPORTS[1], REPORTS[0], REPORTS[0]])
    plain = Predictor(copy.deepcopy(model), torch.device("cpu"))
    cached = Predictor(copy.deepcopy(model), torch.device("cpu"), cache_text=8)
    for i in range(4):
        one = (images[i:i + 1], tokens[i:i + 1], mask[i:i + 1])
        assert torch.equal(cached(*one), plain(*one)), i
    assert (cached.text_cache.misses, cached.text_cache.hits) == (2, 2)
    # A batch: new reports are computed together (once each), so only float rounding may differ.
    fresh = Predictor(copy.deepcopy(model), torch.device("cpu"), cache_text=8)
    logits = fresh(images, tokens, mask)
    reference = plain(images, tokens, mask)
    assert torch.allclose(logits, reference, atol=1e-5) and torch.equal(logits > 0, reference > 0)
    assert (fresh.text_cache.misses, fresh.text_cache.hits) == (2, 2)
