"""The training and validation loops: steps that learn in every precision."""

import torch

from nets import build_model
from tests.tiny import batch, tiny_config
from utils.training.engine import train_step
from utils.training.losses import RecLMISCriterion
from utils.training.schedulers import build_optimizer


def test_mixed_precision_training_still_learns():
    """bf16 autocast on the CPU (fp16 + GradScaler on CUDA): a short run on one batch lowers the segmentation loss
    about as far as the same run in fp32."""
    config = tiny_config(learning_rate=3e-3)
    images, tokens, mask, labels = batch(config)
    data = {"image": images, "label": labels.float(), "text_token": tokens, "text_mask": mask,
            "name": ["a", "b", "c"]}
    curves = {}
    for amp in (False, True):
        torch.manual_seed(0)
        model = build_model(config).train()
        criterion = RecLMISCriterion(config)
        optimizer = build_optimizer(config, model)
        curves[amp] = [float(train_step(model, criterion, data, optimizer, torch.device("cpu"), amp=amp,
                                        index=step)[1]["seg"].detach()) for step in range(40)]
    fp32, mixed = curves[False], curves[True]
    assert mixed[-1] < 0.8 * mixed[0], mixed
    assert abs(mixed[-1] - fp32[-1]) < 0.1 * fp32[0], (fp32[-1], mixed[-1])
