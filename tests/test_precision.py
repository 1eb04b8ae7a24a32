"""The bf16-or-fp32 step timing of CPU training leaves the model it times untouched."""

import pytest
import torch

from nets import build_model
from tests.tiny import batch, tiny_config
from utils.training import precision
from utils.training.losses import RecLMISCriterion
from utils.training.precision import SLOWER, check_cpu_amp, time_amp_step


def _setup(mask_mode="dist"):
    config = tiny_config(mask_mode=mask_mode, text_mask_rate=0.3, img_mask_rate=0.5, rec_dropout=0.1)
    torch.manual_seed(0)
    model, criterion = build_model(config).train(), RecLMISCriterion(config)
    images, tokens, mask, labels = batch(config)
    data = {"image": images, "label": labels, "text_token": tokens, "text_mask": mask}
    return model, criterion, data


def test_timing_both_precisions_changes_no_weight_statistic_gradient_or_random_draw():
    model, criterion, data = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()} | {
        f"criterion.{k}": v.clone() for k, v in criterion.state_dict().items()}
    rng = torch.get_rng_state()
    fp32, bf16 = time_amp_step(model, criterion, data, torch.device("cpu"), repeats=1)
    assert fp32 > 0 and bf16 > 0
    after = model.state_dict() | {f"criterion.{k}": v for k, v in criterion.state_dict().items()}
    assert any("running_mean" in k for k in before)  # BatchNorm statistics are among what is compared
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert all(p.grad is None for p in list(model.parameters()) + list(criterion.parameters()))
    assert torch.equal(torch.get_rng_state(), rng)


def test_each_precision_runs_once_untimed_then_alternates(monkeypatch):
    model, criterion, data = _setup()
    calls = []

    def fake_step(model, criterion, inputs, device, amp):
        calls.append(amp)
        return {False: 2.0, True: 1.0}[amp] + len(calls)  # later calls are slower: the median must pair them up

    monkeypatch.setattr(precision, "_step_seconds", fake_step)
    fp32, bf16 = time_amp_step(model, criterion, data, torch.device("cpu"), repeats=3)
    assert calls == [False, True] * 4
    assert (fp32, bf16) == (2.0 + 5, 1.0 + 6)  # medians of calls 3, 5, 7 and 4, 6, 8
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        time_amp_step(model, criterion, data, torch.device("cpu"), repeats=0)
    with pytest.raises(ValueError, match="on the CPU, not on cuda"):
        time_amp_step(model, criterion, data, torch.device("cuda"))


@pytest.mark.parametrize("bf16, warned", [(2.0 * SLOWER * 0.99, False), (2.0 * SLOWER * 1.01, True), (1.0, False)])
def test_bf16_is_called_slower_only_beyond_the_noise_margin(monkeypatch, caplog, bf16, warned):
    monkeypatch.setattr(precision, "time_amp_step", lambda *args: (2.0, bf16))
    caplog.set_level("INFO")
    ratio = check_cpu_amp(None, None, {"name": ["a.png", "b.png"]}, torch.device("cpu"))
    assert ratio == pytest.approx(bf16 / 2.0)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "validation batch of 2" in messages[0] and f"({bf16 / 2.0:.2f}x;" in messages[0]
    assert ("amp=True is slower on this CPU" in messages[0]) == warned
