"""The inference speed-ups one by one: folded BatchNorm, autocast choices, the text-feature cache."""

import pytest
import torch

from nets import build_model
from nets.unet import ConvBatchNorm
from tests.tiny import batch, tiny_config
from utils.autocast import amp_precision, autocast_for
from utils.inference import speed
from utils.inference.speed import fold_batchnorm


def test_fold_batchnorm_known_answer():
    block = ConvBatchNorm(1, 1).eval()
    with torch.no_grad():
        block.conv.weight.zero_()
        block.conv.weight[0, 0, 1, 1] = 2.0  # the conv doubles each pixel
        block.conv.bias.fill_(1.0)
        block.norm.running_mean.fill_(3.0)
        block.norm.running_var.fill_(4.0 - block.norm.eps)  # sqrt(var + eps) = 2
        block.norm.weight.fill_(0.5)
        block.norm.bias.fill_(0.25)
    x = torch.tensor([[[[0.0, 1.0], [2.0, 5.0]]]])
    # relu(((2x + 1) - 3) / 2 * 0.5 + 0.25) = relu(0.5 x - 0.25)
    expected = torch.relu(0.5 * x - 0.25)
    assert fold_batchnorm(block) == 1
    assert isinstance(block.norm, torch.nn.Identity)
    assert torch.allclose(block(x), expected)
    assert torch.allclose(block.conv.weight[0, 0, 1, 1], torch.tensor(0.5))


def test_fold_batchnorm_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(ConvBatchNorm(1, 1).train())


def test_text_cache_drops_the_least_recently_used_report():
    config = tiny_config()
    model = build_model(config).eval()
    _, tokens, mask, _ = batch(config)
    cache = speed.TextFeatureCache(capacity=2)
    with torch.inference_mode():
        for i in (0, 1, 0, 2, 1):  # 2 evicts 1 (0 was used more recently), so 1 is computed again
            features = cache(model, tokens[i:i + 1], mask[i:i + 1])
            assert torch.equal(features, model.encode_text(tokens[i:i + 1], mask[i:i + 1]))
    assert (cache.misses, cache.hits, len(cache.entries)) == (4, 1, 2)
    with torch.inference_mode():  # the same ids as int32 are another key
        cache(model, tokens[1:2].int(), mask[1:2])
    assert cache.misses == 5
    with pytest.raises(ValueError, match="at least 1 report"):
        speed.TextFeatureCache(0)
    images = torch.rand(1, 3, config.img_size, config.img_size)
    with pytest.raises(ValueError, match="text_clip .* must be"):
        model(images, tokens[:1], mask[:1], text_clip=torch.zeros(1, 3, 32))


def test_reduced_precision_choices_are_checked():
    with pytest.raises(ValueError, match="fp16 runs on CUDA only"):
        autocast_for(torch.device("cpu"), "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_for(torch.device("cpu"), "int8")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [amp_precision(cpu), amp_precision(cuda), amp_precision(cpu, amp=False)] == ["bf16", "fp16", "fp32"]
    with autocast_for(cpu, "bf16"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast_for(cpu, "fp32"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
