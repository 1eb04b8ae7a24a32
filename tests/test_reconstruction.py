"""Conditioned masking: the authors' counts (docs/QUIRKS.md, A6), never a padded token, the sampling law, the modes."""

import pytest
import torch

from nets.reconstruction import conditioned_mask, mask_counts


def _weights(valid: torch.Tensor, seed: int = 0) -> torch.Tensor:
    logits = torch.randn(valid.shape, generator=torch.Generator().manual_seed(seed))
    return torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)


def test_counts_follow_the_authors_rule():
    assert mask_counts(torch.tensor([18, 10, 6, 2, 0]), 0.3).tolist() == [5, 3, 1, 1, 0]
    assert mask_counts(torch.tensor([196]), 0.5).tolist() == [98]
    assert mask_counts(torch.tensor([196]), 0.3).tolist() == [58]


@pytest.mark.parametrize("mode", ["dist", "topk"])
def test_text_masking_counts_and_never_padding(mode):
    lengths = torch.tensor([18, 10, 6])
    valid = torch.arange(18)[None, :] < lengths[:, None]
    weights = _weights(valid)
    for seed in range(20):
        masked = conditioned_mask(weights, valid, 0.3, mode, generator=torch.Generator().manual_seed(seed))
        assert masked.sum(1).tolist() == [5, 3, 1]
        assert not torch.any(masked & ~valid)


@pytest.mark.parametrize("rate,count", [(0.5, 98), (0.3, 58)])
def test_image_masking_counts(rate, count):
    valid = torch.ones(4, 196, dtype=torch.bool)
    masked = conditioned_mask(_weights(valid), valid, rate, "dist")
    assert masked.sum(1).tolist() == [count] * 4


def test_topk_takes_the_heaviest_tokens():
    weights = torch.tensor([[0.1, 0.4, 0.05, 0.3, 0.15, 0.0]])
    valid = torch.tensor([[True] * 5 + [False]])
    masked = conditioned_mask(weights, valid, 0.4, "topk")  # int(5 * 0.4) = 2
    assert masked[0].nonzero().flatten().tolist() == [1, 3]


def test_dist_draws_one_token_with_probability_equal_to_its_weight():
    weights = torch.tensor([0.6, 0.25, 0.1, 0.05, 0.0, 0.0])
    valid = torch.tensor([True] * 5 + [False])
    draws = 4000
    masked = conditioned_mask(weights.expand(draws, -1), valid.expand(draws, -1), 0.2, "dist",
                              generator=torch.Generator().manual_seed(0))  # int(5 * 0.2) = 1 token each
    assert masked.sum(1).eq(1).all()
    frequency = masked.float().mean(0)
    torch.testing.assert_close(frequency[:4], weights[:4], atol=0.03, rtol=0)
    assert frequency[4:].sum() == 0  # a zero weight is never drawn while positive ones remain; padding never


def test_dist_tops_up_with_zero_weight_tokens_only_when_asked():
    weights = torch.tensor([[0.7, 0.3] + [0.0] * 8 + [0.0] * 4])
    valid = torch.tensor([[True] * 10 + [False] * 4])  # 10 valid tokens, rate 0.5: 5 to mask, 2 positive
    for seed in range(10):
        generator = torch.Generator().manual_seed(seed)
        topped_up = conditioned_mask(weights, valid, 0.5, "dist", dist_random=True, generator=generator)
        assert topped_up.sum() == 5 and topped_up[0, :2].all() and not topped_up[0, 10:].any()
    only_positive = conditioned_mask(weights, valid, 0.5, "dist", dist_random=False)
    assert only_positive[0].nonzero().flatten().tolist() == [0, 1]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="one shape"):
        conditioned_mask(torch.rand(2, 5), torch.ones(2, 4, dtype=torch.bool), 0.3)
    with pytest.raises(ValueError, match="'dist' or 'topk'"):
        conditioned_mask(torch.rand(2, 5), torch.ones(2, 5, dtype=torch.bool), 0.3, mode="random")
