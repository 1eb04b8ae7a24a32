"""One training epoch and one evaluation pass. The model, criterion and loaders are parameters.

Batches are the data loader's dicts: ``image`` ``[B, 3, H, W]``, ``label`` ``[B, H, W]``, ``text_token`` and
``text_mask`` ``[B, L]``, ``text`` and ``name`` (lists of B strings).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, Optional

import torch
from tqdm import tqdm

from utils.autocast import amp_precision, autocast_for
from utils.metrics import SegmentationMeter
from utils.misc import to_device
from utils.training.losses import TERMS, logged_name


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the message names the epoch, the batch, its images and every term."""


class TrainingInterrupted(Exception):
    """Training stopped between two steps because a stop was requested (Ctrl-C).

    Attributes:
        batches_done: the steps of the epoch completed (this rank's batches).
        meters: the epoch's running loss and metric sums, for :func:`train_one_epoch`'s ``meters``.
    """

    def __init__(self, batches_done: int, meters: dict):
        super().__init__(f"stopped after {batches_done} batches")
        self.batches_done = batches_done
        self.meters = meters


class _TermMeter:
    def __init__(self):
        self.sums: Dict[str, float] = {}
        self.count = 0

    def update(self, terms: Dict[str, torch.Tensor], n: int) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value.detach()) * n
        self.count += n

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.sums = {key: float(value) for key, value in state["sums"].items()}
        self.count = int(state["count"])

    def compute(self) -> Dict[str, float]:
        """Mean of each term over images; the Dice loss term is named ``dice_loss`` (``dice`` is the metric)."""
        return {logged_name(key): value / max(self.count, 1) for key, value in self.sums.items()}


def _check_finite(terms: Dict[str, torch.Tensor], epoch: int, index: int, batch: dict,
                  any_rank: Optional[Callable[[bool], bool]] = None) -> None:
    bad = not math.isfinite(float(terms["total"].detach()))
    if any_rank is not None and any_rank(bad) and not bad:  # another process of a distributed run
        raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, batch {index} in another process (see its "
                                 "log). Training stopped; the last saved checkpoints are untouched.")
    if not bad:
        return
    values = ", ".join(f"{k}={float(v.detach()):.6g}" for k, v in terms.items())
    raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, batch {index} (images {list(batch['name'])}): "
                             f"{values}. Training stopped; the last saved checkpoints are untouched.")


def _forward(model, criterion, batch: dict, device: torch.device, amp: bool, epoch: int, index: int,
             any_rank: Optional[Callable[[bool], bool]] = None, **kwargs):
    """Model and criterion on one batch; raises :class:`NonFiniteLossError` on a NaN or infinite total (in any
    process, with ``any_rank``)."""
    images, labels, tokens, mask = to_device(batch, device)
    with autocast_for(device, amp_precision(device, amp)):
        outputs = model(images, tokens, mask, **kwargs)
        terms = criterion(outputs, labels)
    _check_finite(terms, epoch, index, batch, any_rank)
    return outputs, terms, labels


def train_step(model, criterion, batch: dict, optimizer, device: torch.device, *, amp: bool = False,
               scaler: Optional[torch.amp.GradScaler] = None, epoch: int = 0, index: int = 0,
               any_rank: Optional[Callable[[bool], bool]] = None, return_aux: Optional[bool] = None):
    """One optimisation step on one batch: forward, every loss, backward, optimizer step.

    Args:
        any_rank: in a distributed run, ``Distributed.any``: a NaN loss in any process stops every process.
        return_aux: passed to the model when given; None leaves the model's default (the branch runs in train
            mode).

    Returns:
        ``(outputs, terms, labels)`` of the batch.
    """
    given = {} if return_aux is None else {"return_aux": return_aux}  # None: the model's own default
    outputs, terms, labels = _forward(model, criterion, batch, device, amp, epoch, index, any_rank, **given)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(terms["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        terms["total"].backward()
        optimizer.step()
    return outputs, terms, labels


Reduce = Callable[[Dict[str, float]], Dict[str, float]]


def _meter_state(terms_meter: _TermMeter, seg_meter: SegmentationMeter, reduce: Optional[Reduce]) -> dict:
    """Both meters' sums, added over the processes of a distributed run by ``reduce``."""
    terms, seg = terms_meter.state_dict(), seg_meter.state_dict()
    # Every process sends the same keys, in the same order, whatever it saw (a shard can be empty).
    names = sorted(set(TERMS) | set(terms["sums"]))
    flat = {**{f"terms.{k}": terms["sums"].get(k, 0.0) for k in names}, "terms.#count": terms["count"],
            "seg.dice_sum": seg["dice_sum"], "seg.iou_sum": seg["iou_sum"], "seg.images": seg["images"],
            **{f"seg.pooled.{k}": v for k, v in seg["pooled"].items()}}
    if reduce is not None:
        flat = reduce(flat)
    return {"terms": {"sums": {k[6:]: v for k, v in flat.items() if k.startswith("terms.") and k != "terms.#count"},
                      "count": int(round(flat["terms.#count"]))},
            "seg": {"dice_sum": flat["seg.dice_sum"], "iou_sum": flat["seg.iou_sum"],
                    "images": int(round(flat["seg.images"])),
                    "pooled": {k[11:]: int(round(v)) for k, v in flat.items() if k.startswith("seg.pooled.")}}}


def _results(terms_meter: _TermMeter, seg_meter: SegmentationMeter, reduce: Optional[Reduce]) -> Dict[str, float]:
    if reduce is not None:
        state = _meter_state(terms_meter, seg_meter, reduce)
        terms_meter, seg_meter = _TermMeter(), SegmentationMeter(strict=seg_meter.strict, dice="validation")
        terms_meter.load_state_dict(state["terms"])
        seg_meter.load_state_dict(state["seg"])
    return {**terms_meter.compute(), **seg_meter.compute()}


def train_one_epoch(model, criterion, loader: Iterable, optimizer, device: torch.device, epoch: int, *,
                    amp: bool = False, scaler: Optional[torch.amp.GradScaler] = None, progress: bool = True,
                    start_batch: int = 0, meters: Optional[dict] = None,
                    stop_requested: Optional[Callable[[], bool]] = None,
                    reduce: Optional[Reduce] = None,
                    any_rank: Optional[Callable[[bool], bool]] = None) -> Dict[str, float]:
    """Train for one pass over ``loader``.

    Args:
        start_batch, meters: continue an interrupted epoch: ``loader`` already starts after its first
            ``start_batch`` batches, and ``meters`` holds the sums of those batches (from
            :class:`TrainingInterrupted`).
        stop_requested: checked after every step; when it returns True, :class:`TrainingInterrupted` is raised
            with the steps done and the sums so far. A step is never cut in half.
        reduce: adds the meters' sums over the processes of a distributed run (``Distributed.all_reduce_sums``),
            so the results (and an interruption's sums) are those of the whole global batch.

    Returns:
        mean of every loss term over images (the Dice loss as ``dice_loss``), and the validation-protocol
        ``dice``/``iou`` of the training batches.
    """
    model.train()
    terms_meter, seg_meter = _TermMeter(), SegmentationMeter(strict=False, dice="validation")
    if meters is not None:
        terms_meter.load_state_dict(meters["terms"])
        seg_meter.load_state_dict(meters["seg"])
    bar = tqdm(loader, desc=f"train {epoch}", leave=False, disable=not progress, dynamic_ncols=True)
    for index, batch in enumerate(bar, start=start_batch):
        outputs, terms, labels = train_step(model, criterion, batch, optimizer, device, amp=amp, scaler=scaler,
                                            epoch=epoch, index=index, any_rank=any_rank)
        terms_meter.update(terms, labels.shape[0])
        seg_meter.update(outputs["logits"], labels)
        bar.set_postfix(loss=f"{float(terms['total'].detach()):.4f}", dice=f"{seg_meter.compute()['dice']:.4f}")
        if stop_requested is not None and stop_requested():
            bar.close()
            raise TrainingInterrupted(index + 1, _meter_state(terms_meter, seg_meter, reduce))
    return _results(terms_meter, seg_meter, reduce)


@torch.no_grad()
def evaluate_dice(model, loader: Iterable, device: torch.device, *, epoch: int = 0, amp: bool = False,
                  progress: bool = True, desc: str = "val", reduce: Optional[Reduce] = None) -> Dict[str, float]:
    """Validation-protocol ``dice``/``iou`` (and pooled scores) of the logits alone: no loss, no auxiliary branch,
    so no random draw (the training run's random streams are untouched). Sharded and reduced as :func:`evaluate`.
    """
    model.eval()
    seg_meter = SegmentationMeter(strict=False, dice="validation")
    bar = tqdm(loader, desc=f"{desc} {epoch}", leave=False, disable=not progress, dynamic_ncols=True)
    for batch in bar:
        images, labels, tokens, mask = to_device(batch, device)
        with autocast_for(device, amp_precision(device, amp)):
            logits = model(images, tokens, mask, return_aux=False)["logits"]
        seg_meter.update(logits, labels)
    return _results(_TermMeter(), seg_meter, reduce)


@torch.no_grad()
def evaluate(model, criterion, loader: Iterable, device: torch.device, *, epoch: int = 0, amp: bool = False,
             progress: bool = True, desc: str = "val", reduce: Optional[Reduce] = None,
             any_rank: Optional[Callable[[bool], bool]] = None) -> Dict[str, float]:
    """Validation pass: every loss term (the auxiliary branch runs, as in the authors' validation) and the
    validation-protocol ``dice``/``iou`` (threshold >= 0.5, empty/empty Dice = 1), plus pooled scores.

    In a distributed run each process evaluates its shard (no image twice; shards may differ in length, so no
    collective runs per batch) and ``reduce`` adds the sums, so Dice and IoU equal a single-process evaluation; the
    contrastive term is computed per process's batches. A non-finite loss stops the pass; with ``any_rank`` every
    process learns of it before the sums are reduced, so none waits for another."""
    model.eval()
    terms_meter, seg_meter = _TermMeter(), SegmentationMeter(strict=False, dice="validation")
    failure = None
    bar = tqdm(loader, desc=f"{desc} {epoch}", leave=False, disable=not progress, dynamic_ncols=True)
    for index, batch in enumerate(bar):
        try:
            outputs, terms, labels = _forward(model, criterion, batch, device, amp, epoch, index, None,
                                              return_aux=True)
        except NonFiniteLossError as error:
            failure = error
            bar.close()
            break
        terms_meter.update(terms, labels.shape[0])
        seg_meter.update(outputs["logits"], labels)
        bar.set_postfix(dice=f"{seg_meter.compute()['dice']:.4f}")
    if any_rank is not None and any_rank(failure is not None) and failure is None:
        failure = NonFiniteLossError(f"non-finite validation loss at epoch {epoch} in another process (see its log)")
    if failure is not None:
        raise failure
    return _results(terms_meter, seg_meter, reduce)
