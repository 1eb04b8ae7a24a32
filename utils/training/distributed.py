"""Distributed training with ``torchrun``: one process per GPU (NCCL) or per CPU worker (gloo).

    torchrun --nproc_per_node 4 train_model.py -c Config_QaTa
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_endpoint host:29500 train_model.py -c Config_QaTa

:func:`init_distributed` reads torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``). Without it, the
returned :class:`Distributed` is the plain single process (``enabled`` False) and every helper here is a no-op, so
the training code has one path. Under torchrun even one process joins a process group and trains with DDP.

What makes a run on N processes equal a single-process run with the same global batch:

- ``batch_size`` is the global batch; each rank takes ``batch_size / N`` samples of the same global batches
  (``utils.data.sampling.EpochSampler`` shards the epoch's order by rank);
- DDP averages the gradients, which equals the gradient of the global mean loss when the ranks' batches are equal;
- the conditioned contrastive loss uses in-batch negatives: with ``ccl_gather`` (default on) the features of all
  ranks are gathered, with gradients (:func:`gather_with_grad`), so each rank sees the global batch's negatives;
- BatchNorm normalises each rank's batch unless ``sync_bn`` is on (:func:`convert_sync_batchnorm`: torch's
  ``SyncBatchNorm`` on CUDA, :class:`DistributedBatchNorm2d` and ``1d`` on the CPU, where torch's does not run);
- validation is sharded without padding and the metric sums are added over ranks (:meth:`Distributed.all_reduce_sums`),
  so every image counts once;
- randomness inside the model (dropout, the Gumbel draws of the conditioned masking) comes from each rank's own
  generator (``seed + rank``; rank 0 continues the single-process stream), so it differs from a single process;
  switch it off (``interact_dropout=0``, ``rec_dropout=0``, ``mask_mode="topk"``) to compare.
"""

from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str = ""

    @property
    def enabled(self) -> bool:
        """Launched by torchrun (a process group exists), even with a single process."""
        return bool(self.backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, value):
        """``value`` from rank 0 on every rank (any picklable object)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any rank."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self._device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item() > 0)

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank, so that all evaluate one model."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    def all_reduce_sums(self, values: Dict[str, float]) -> Dict[str, float]:
        """Each value summed over the ranks (plain numbers in, plain numbers out, in float64)."""
        if not self.enabled:
            return dict(values)
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._device())
        dist.all_reduce(tensor)
        return dict(zip(keys, tensor.tolist()))

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def cleanup(self) -> None:
        """Destroy the process group, after collecting garbage: an object in a reference cycle that reaches the
        DDP model keeps the model, and so the group, alive past ``destroy_process_group`` until interpreter exit,
        on one rank and not the others. Drawing the training curves on rank 0 made such a cycle (mathtext tick
        labels; fixed in :func:`utils.curves.curves_figure`); the collection guards against the next."""
        if self.enabled and dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()


def init_distributed(device_type: str) -> Distributed:
    """Join the process group that ``torchrun`` set up, if any.

    Args:
        device_type: "cuda" (NCCL, one GPU per process: ``cuda:LOCAL_RANK``) or "cpu" (gloo).

    Raises:
        ValueError: a CUDA run with fewer visible GPUs than processes on this node.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:  # not started by torchrun
        return Distributed()
    world_size = int(os.environ["WORLD_SIZE"])
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {local_rank} on this node needs GPU {local_rank}, but only "
                             f"{torch.cuda.device_count()} are visible: start as many processes per node as GPUs")
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return Distributed(rank=rank, local_rank=local_rank, world_size=world_size, backend=backend)


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' tensors concatenated along dim 0; the gradient of each rank's slice is summed over the ranks."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.contiguous()
        parts: List[torch.Tensor] = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        ctx.rows, ctx.rank = tensor.shape[0], dist.get_rank()
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """``[world_size * B, ...]``: every rank's ``[B, ...]`` in rank order, differentiable (equal ``B`` on all ranks).

    Every rank then computes the same loss over the gathered batch; the backward sums each rank's share, and DDP's
    averaging of the gradients divides by the number of ranks again, so the gradient is that of the single loss.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


class _GlobalBatchStatistics:
    """BatchNorm whose training statistics are those of the global batch over all ranks (any device, gloo
    included). Parameters, buffers and eval mode are BatchNorm's, so state dicts are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]  # every axis but the channels
        channels = x.shape[1]
        shape = (1, channels) + (1,) * (x.dim() - 2)
        data = x.float()  # statistics in fp32 also under bf16/fp16 autocast
        count = torch.tensor([x.numel() // channels], dtype=torch.float32, device=x.device)
        totals = _AllReduceSum.apply(torch.cat([data.sum(dim=dims), count]))
        n = totals[-1]
        mean = totals[:channels] / n
        # Two passes (sum, then squared deviations) rather than E[x^2] - E[x]^2, which cancels when |mean| >> std.
        var = _AllReduceSum.apply(((data - mean.view(shape)) ** 2).sum(dim=dims)) / n
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
            self.running_var.mul_(1 - momentum).add_(momentum * var.detach() * n / (n - 1).clamp_min(1))
        out = (data - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return (out * self.weight.view(shape) + self.bias.view(shape)).to(x.dtype)


class DistributedBatchNorm1d(_GlobalBatchStatistics, nn.BatchNorm1d):
    """:class:`nn.BatchNorm1d` with global-batch statistics in training (see :class:`_GlobalBatchStatistics`)."""


class DistributedBatchNorm2d(_GlobalBatchStatistics, nn.BatchNorm2d):
    """:class:`nn.BatchNorm2d` with global-batch statistics in training (see :class:`_GlobalBatchStatistics`)."""


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm use global-batch statistics: torch's ``SyncBatchNorm`` on CUDA,
    :class:`DistributedBatchNorm1d` / :class:`DistributedBatchNorm2d` elsewhere. State-dict names and shapes stay
    the same."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    replacements = {nn.BatchNorm1d: DistributedBatchNorm1d, nn.BatchNorm2d: DistributedBatchNorm2d}
    for module in model.modules():
        if type(module) in replacements:
            module.__class__ = replacements[type(module)]
    return model
