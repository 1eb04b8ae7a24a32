"""The data sets of RecLMIS and LViT (QaTa-COV19, MosMedData+, MoNuSeg), loaded as the authors load them.

``ImageToImage2D(cfg, split)`` is one dataset class for all three sets; the differences are config: the split
folders and report tables (``train_dataset``, ``train_text``, ...), the pairing of images and masks
(``pairing``: "qata" or "stem"), ``token_len``. Per sample (docs/QUIRKS.md, A3-A5):

- the image is read as 3-channel BGR uint8, resized bilinearly to ``img_size`` and scaled to [0, 1], with no
  mean/std normalisation: ``image`` float32 ``[3, S, S]``;
- the mask is read as grey, resized bilinearly, and ``> 0`` becomes 1: ``label`` int64 ``[S, S]``;
- the mask's report is tokenised by the network's tokenizer (``utils.data.tokenizer.ReportTokenizer``):
  ``text_token`` and ``text_mask`` int64 ``[L]``; ``text`` is the report as written (before the " EOF XXX"
  padding) and ``name`` the image's file name, for logs and pictures;
- training samples are augmented (``utils/data/transforms.py``): blur (the authors' row-wise quirk, or a 2-D blur,
  ``blur_mode``), photometric distortion, then rot90+flip or a small rotation of image and mask together
  (``geometry="authors"``), or only the mirrors the report can follow, its position words mirrored too and the
  report tokenised again (``geometry="report"``; ``text`` is then the mirrored report). Validation and test
  samples are not.

Before training, :func:`build_dataloaders` runs the data checks (``utils/data/check.py``) and stops with a
:class:`DatasetError` that names every file or row at fault. ``python Load_Dataset.py --check <folder>`` prints
the same checks.

Determinism: the augmentation of sample ``i`` in an epoch draws from its own generator,
``numpy.random.default_rng([epoch_seed, i])``, where ``epoch_seed`` is ``cfg.seed + epoch`` (set by the trainer
through :meth:`ImageToImage2D.set_epoch_seed`). The shuffling order comes from :class:`EpochSampler`, a function of
``(cfg.seed, epoch)`` alone. So a sample's augmentation does not depend on the worker that loads it or on what was
loaded before: a run repeats exactly for any ``num_workers``, and an epoch can restart at any batch (resuming
after an interruption) and see the same batches it would have seen. The authors seeded only Python's ``random``,
identically every epoch, and left numpy unseeded in the workers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from utils.cli import add_config_flags
from utils.config import load_config
from utils.data.check import CheckResult, check_dataset
from utils.data.decoded import DecodedCache
from utils.data.demo import ensure_demo_dataset, make_demo_dataset
from utils.data.demo_layout import LAYOUTS
from utils.data.files import load_split_index
from utils.data.images import read_image, read_mask
from utils.data.records import ERROR, PAIRINGS, SPLITS, DatasetError, Sample, SplitIndex
from utils.data.sampling import EpochSampler, seed_worker
from utils.data.tokenizer import build_tokenizer, tokenize_reports, tokenizer_fields, tokenizer_kind
from utils.data.transforms import BLUR_MODES, image_to_tensor, mask_to_model_size, to_model_size, train_augment
from utils.logger import setup_logging

__all__ = ["DatasetError", "ImageToImage2D", "build_dataloader", "build_dataloaders", "seed_worker", "main"]

logger = logging.getLogger(__name__)


SUBSET_SEED = 20240402  # fixed, not cfg.seed: every run of a recipe trains on the same images


def fixed_subset(samples: List[Sample], size: int) -> List[Sample]:
    """``size`` of ``samples`` (all of them when ``size`` is 0 or not smaller), drawn with :data:`SUBSET_SEED`
    and kept in their sorted order; the same list gives the same subset on every machine and for every ``seed``."""
    if size <= 0 or size >= len(samples):
        return samples
    keep = np.sort(np.random.default_rng(SUBSET_SEED).choice(len(samples), size, replace=False))
    return [samples[i] for i in keep]


class ImageToImage2D(Dataset):
    """Images, binary masks and tokenised reports of one split.

    Args:
        cfg: a :class:`utils.config.Config`.
        split: "train", "val" or "test".
        augment: apply the training augmentation; None = ``cfg.augment and split == "train"``.
        index: the split's sample index from a data check (:class:`utils.data.check.CheckResult`), to avoid
            listing the folders again; None = index the split now.

    Raises:
        DatasetError: the split cannot be loaded (missing folder or table, unpaired files, rows missing ...);
            the message lists the errors, each naming its file or row.

    Attributes:
        samples: the split's image/mask/report triples, in sorted order.
        text_tokens, text_masks: ``[N, L]`` int64, the tokenised reports.
        words_cut: ``[N]`` bool, reports whose words did not fit ``token_len`` and were cut.
        n_truncated: ``int(words_cut.sum())``.

    Each item is a dict: ``image`` float32 ``[3, S, S]`` in [0, 1] (BGR), ``label`` int64 ``[S, S]`` in {0, 1},
    ``text_token`` int64 ``[L]``, ``text_mask`` int64 ``[L]``, ``text`` str, ``name`` str. PyTorch's default
    collate stacks the tensors and turns the strings into lists.
    """

    def __init__(self, cfg, split: str, augment: Optional[bool] = None, index: Optional[SplitIndex] = None,
                 keep_decoded: bool = False):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.img_size = cfg.img_size
        self.blur_mode = cfg.blur_mode
        self.geometry = cfg.geometry
        self.max_pixels = cfg.max_image_pixels
        self.tokenizer = build_tokenizer(cfg)  # for reports mirrored in training
        self.augment = (cfg.augment and split == "train") if augment is None else augment
        if index is None:
            index, table = load_split_index(cfg, split)
            errors = [p for p in table.problems + index.problems if p.severity == ERROR]
            if errors:
                lines = "\n".join(f"  [{p.split}] {p.code}: {p.message}" for p in errors[:20])
                more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
                raise DatasetError(f"cannot load the {split} split ({index.paths.folder}): {len(errors)} error(s)\n"
                                   f"{lines}{more}\nRun `python Load_Dataset.py --check <data set folder> -c <config>`"
                                   " for the full report.")
        subset = {"train": cfg.train_subset, "val": cfg.val_subset}.get(split, 0)  # the test split is scored whole
        self.samples = fixed_subset(list(index.samples), subset)
        # The no-language control (use_report=False) reads one constant, empty report for every image.
        self.reports = [s.report if cfg.use_report else "" for s in self.samples]
        tokenized = tokenize_reports(self.reports, cfg)
        self.text_tokens = tokenized.tokens
        self.text_masks = tokenized.text_mask
        self.words_cut = tokenized.words_cut
        self.n_truncated = int(self.words_cut.sum())
        self.epoch_seed = cfg.seed
        # Kept decoded for every epoch (training's splits), within decode_cache_mib; filled by fill_decoded().
        self.decoded = DecodedCache([(s.image_path, s.mask_path) for s in self.samples], self.read_arrays,
                                    self.img_size, cfg.decode_cache_mib if keep_decoded else 0)
        logger.info("%s: %d samples from %s; %d report(s) longer than token_len=%d are cut%s", split,
                    len(self.samples), index.paths.folder, self.n_truncated, cfg.token_len,
                    f"; augmentation on (blur_mode={self.blur_mode!r})" if self.augment else "")

    def set_epoch_seed(self, seed: int) -> None:
        """The seed of this epoch's augmentations (sample ``i`` draws from ``default_rng([seed, i])``)."""
        self.epoch_seed = int(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def load_arrays(self, i: int):
        """Sample ``i`` at the model's size, before augmentation: kept from an earlier epoch when the split is
        kept decoded (read-only arrays), else :meth:`read_arrays`."""
        return self.decoded.get(i)

    def fill_decoded(self) -> None:
        """Decode the whole split now when it is kept decoded (before loader workers fork, so they share it)."""
        if self.decoded.enabled:
            self.decoded.fill()
        elif self.decoded.budget_mib > 0 and self.decoded.pairs:
            logger.info("%s: its decoded images would take %.0f MiB, over decode_cache_mib=%d: read from disk every "
                        "epoch", self.split, self.decoded.needed_mib, self.decoded.budget_mib)

    def read_arrays(self, i: int):
        """Sample ``i`` read from its files, resized and binarised, before augmentation.

        Returns:
            The image ``[S, S, 3]`` uint8 (BGR) and the mask ``[S, S]`` uint8 in {0, 1}.
        """
        sample = self.samples[i]
        image = to_model_size(read_image(sample.image_path, self.max_pixels), self.img_size)
        return image, mask_to_model_size(read_mask(sample.mask_path, self.max_pixels), self.img_size)

    def __getitem__(self, i: int) -> Dict[str, object]:
        image, mask = self.load_arrays(i)
        sample = self.samples[i]
        report, tokens, text_mask = self.reports[i], self.text_tokens[i], self.text_masks[i]
        if self.augment:
            image, mask, report = train_augment(image, mask, np.random.default_rng([self.epoch_seed, i]),
                                                self.blur_mode, self.geometry, report)
            if report != self.reports[i]:  # mirrored with the image (geometry="report"): tokenise after the swap
                tokenized = self.tokenizer([report])
                tokens, text_mask = tokenized.tokens[0], tokenized.text_mask[0]
        return {
            "image": image_to_tensor(image),
            "label": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64)),
            "text_token": tokens,
            "text_mask": text_mask,
            "text": report,
            "name": sample.name,
        }


class ReportsSwapped(Dataset):
    """A split whose item ``i`` is item ``i`` of ``dataset`` with the report of item ``donor[i]``: image, mask and
    name stay; ``text``, ``text_token`` and ``text_mask`` are the donor's. With a derangement
    (:func:`utils.data.reports.report_cycle`) no image keeps its own report. For unaugmented splits (the donor's
    tokens are the stored ones)."""

    def __init__(self, dataset: ImageToImage2D, donor: torch.Tensor):
        if dataset.augment:
            raise ValueError("ReportsSwapped takes an unaugmented split (validation or test)")
        if len(donor) != len(dataset):
            raise ValueError(f"donor has {len(donor)} entries for {len(dataset)} samples")
        self.dataset = dataset
        self.donor = donor

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Dict[str, object]:
        item = self.dataset[i]
        j = int(self.donor[i])
        item.update(text_token=self.dataset.text_tokens[j], text_mask=self.dataset.text_masks[j],
                    text=self.dataset.reports[j])
        return item


def build_dataloader(cfg, split: str, device=None, dataset: Optional[ImageToImage2D] = None, num_replicas: int = 1,
                     rank: int = 0) -> DataLoader:
    """A DataLoader for one split, without the full data check (:func:`build_dataloaders` runs it).

    Training batches are shuffled; validation and test batches are not (the authors shuffled validation too,
    which changes no per-image metric). Test batches hold ``cfg.test_batch_size`` images (the authors: 1).

    Args:
        cfg: a :class:`utils.config.Config`.
        split: "train", "val" or "test".
        device: the device the batches go to; pinned memory is used only for CUDA.
        dataset: the split's dataset if already built; None = ``ImageToImage2D(cfg, split)``.
        num_replicas, rank: shard the split over this many processes (distributed training); see
            :class:`EpochSampler`.

    Returns:
        The DataLoader (``num_workers = cfg.num_workers``, workers seeded by :func:`seed_worker`).
    """
    dataset = ImageToImage2D(cfg, split) if dataset is None else dataset
    pin = device is not None and torch.device(device).type == "cuda"
    train = split == "train"
    return DataLoader(
        dataset,
        batch_size=cfg.test_batch_size if split == "test" else cfg.batch_size,
        sampler=EpochSampler(len(dataset), shuffle=train, seed=cfg.seed, num_replicas=num_replicas, rank=rank,
                             pad=train),
        num_workers=cfg.num_workers,
        pin_memory=pin,
        drop_last=False,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def check_data_choices(cfg) -> None:
    """Raise ``ValueError`` naming the field when ``cfg`` picks a pairing, blur, demo layout or text tower (whose
    tokenizer reads the reports) that the data layer does not have. Each list lives with the code it selects."""
    for name, choices in (("pairing", PAIRINGS), ("blur_mode", BLUR_MODES), ("demo_layout", LAYOUTS)):
        if getattr(cfg, name) not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {getattr(cfg, name)!r}")
    tokenizer_kind(cfg.text_encoder)


def build_dataloaders(cfg, splits: Sequence[str] = ("train", "val"), device=None, num_replicas: int = 1,
                      rank: int = 0, check: bool = True) -> Dict[str, DataLoader]:
    """Check the data set, then build one DataLoader per split. This is what training calls.

    With ``cfg.demo_data`` the synthetic demo set is written first when it is missing. The check covers the
    given splits (decoding every image when ``cfg.check_images``); its warnings are logged.

    Args:
        cfg: a :class:`utils.config.Config`.
        splits: the splits to load.
        device: passed to :func:`build_dataloader`.
        num_replicas, rank: shard each split over the processes of a distributed run (:class:`EpochSampler`).
        check: write the demo set if needed and run the data check (one process of a distributed run does).

    Returns:
        split name -> DataLoader.

    Raises:
        DatasetError: the data set has errors; the message lists them.
        ValueError: a choice the data layer does not have (:func:`check_data_choices`).
    """
    check_data_choices(cfg)
    if not check:
        return {split: build_dataloader(cfg, split, device, _kept_decoded(cfg, split), num_replicas, rank)
                for split in splits}
    if cfg.demo_data:
        ensure_demo_dataset(cfg)
    result = check_dataset(cfg, splits)
    log_check(result)
    result.raise_if_errors()
    return {split: build_dataloader(cfg, split, device, _kept_decoded(cfg, split, result.indexes[split]),
                                    num_replicas, rank)
            for split in splits}


def _kept_decoded(cfg, split: str, index: Optional[SplitIndex] = None) -> ImageToImage2D:
    """A training run's split, decoded once for every epoch (within ``decode_cache_mib``)."""
    dataset = ImageToImage2D(cfg, split, index=index, keep_decoded=True)
    dataset.fill_decoded()
    return dataset


def fit_token_len(cfg):
    """``cfg`` with ``token_len`` raised to the longest report of its training split (the ``train_subset`` it
    trains on), counted in tokens with the start and end tokens and without the authors' padding, so that no
    training report is cut; never lowered, and at most ``clip_context_length``."""
    index, _ = load_split_index(cfg, "train")
    reports = [s.report for s in fixed_subset(list(index.samples), cfg.train_subset)]
    if not reports:
        return cfg
    wide = cfg.replace(token_len=cfg.clip_context_length)
    longest = int(tokenize_reports(reports, wide, pad_short_reports=False).text_mask.sum(1).max())
    if longest > cfg.token_len:
        logger.info("fit_token_len: token_len %d -> %d, the longest of %d training reports", cfg.token_len, longest,
                    len(reports))
        return cfg.replace(token_len=longest)
    return cfg


def build_test_split(data_cfg, model_cfg, device=None):
    """The test split of ``data_cfg``'s data set, prepared for a model built with ``model_cfg``: checked, then
    loaded one image at a time. The data (folders, tables, pairing) come from ``data_cfg``; the sizes that shape
    the inputs (``img_size``, ``use_report`` and the tokenizer's fields,
    :func:`utils.data.tokenizer.tokenizer_fields`) from the model.

    Returns:
        ``(cfg, dataset, loader)``: the merged config, the split's :class:`ImageToImage2D` and its DataLoader.

    Raises:
        DatasetError: the split has errors; the message lists them.
    """
    cfg = data_cfg.replace(img_size=model_cfg.img_size, use_report=model_cfg.use_report, test_batch_size=1,
                           **tokenizer_fields(model_cfg))
    check_data_choices(cfg)
    result = check_dataset(cfg, ["test"])
    log_check(result)  # the warnings too: a mask of values 0/3, an empty report, a row naming no file
    result.raise_if_errors()
    dataset = ImageToImage2D(cfg, "test", index=result.indexes["test"])
    return cfg, dataset, build_dataloader(cfg, "test", device, dataset)


def log_check(result: CheckResult) -> None:
    """Log a check's counts and warnings (errors are raised by :meth:`CheckResult.raise_if_errors`)."""
    for summary in result.splits.values():
        logger.info("data %s: %d images, %d masks, %d reports, %d pairs, %d report(s) cut to token_len",
                    summary.split, summary.images, summary.masks, summary.reports, summary.pairs,
                    summary.cut_reports)
    warnings = result.warnings
    for problem in warnings[:20]:
        logger.warning("data [%s] %s: %s", problem.split, problem.code, problem.message)
    if len(warnings) > 20:
        logger.warning("data: %d more warnings; run `python Load_Dataset.py --check` to see them all",
                       len(warnings) - 20)


# ---- command line -----------------------------------------------------------------------------------------------


def _config_for_folder(cfg, folder: Path):
    """``cfg`` with its three split folders moved under ``folder`` (their names, e.g. Train_Folder, kept)."""
    return cfg.replace(**{f"{split}_dataset": str(folder / Path(getattr(cfg, f"{split}_dataset")).name)
                          for split in SPLITS})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python Load_Dataset.py --check <data set folder> [-c <config>]`` or ``--make-demo <folder>``.

    Returns:
        0 when the set can be trained on, 1 when it has errors, 2 for a bad command line or config.
    """
    parser = argparse.ArgumentParser(
        prog="Load_Dataset.py",
        description="Check a data set folder (counts and problems per split), or write the synthetic demo set.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", metavar="FOLDER", help="data set folder holding Train_Folder, Val_Folder and "
                                                          "Test_Folder (e.g. datasets/Covid19)")
    action.add_argument("--make-demo", metavar="FOLDER", help="write the synthetic demo set to FOLDER")
    add_config_flags(parser, "config module or file deciding tables, pairing and token_len", device=False)
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="splits to check")
    parser.add_argument("--no-decode", action="store_true", help="do not decode images (faster; sizes, binary "
                                                                 "masks and unreadable files go unchecked)")
    parser.add_argument("--all", action="store_true", help="list every problem (default: 10 of each kind)")
    parser.add_argument("--seed", type=int, default=0, help="--make-demo: the set's seed")
    args = parser.parse_args(argv)
    setup_logging(level=logging.WARNING)

    if args.make_demo:
        try:
            root = make_demo_dataset(args.make_demo, seed=args.seed)
        except (FileExistsError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"wrote the demo data set to {root}")
        return 0

    try:
        cfg = load_config(args.config, args.set)
        check_data_choices(cfg)
    except (FileNotFoundError, ImportError, KeyError, TypeError, ValueError) as error:
        print(f"error: cannot load config {args.config!r}: {error}", file=sys.stderr)
        return 2
    folder = Path(args.check)
    cfg = _config_for_folder(cfg, folder)
    print(f"checking {folder} with {args.config} (pairing {cfg.pairing!r}, token_len {cfg.token_len}, "
          f"tables {cfg.train_text!r}, {cfg.val_text!r}, {cfg.test_text!r})")
    result = check_dataset(cfg, args.splits, decode=not args.no_decode)
    print(result.format(max_per_kind=None if args.all else 10))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
