"""Shared fixtures: tiny data sets written to ``tmp_path`` in each of the authors' layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import pandas as pd
import pytest

from utils.config import Config

SPLIT_FOLDERS = {"train": "Train_Folder", "val": "Val_Folder", "test": "Test_Folder"}
IMAGE_HW = (40, 48)  # not square and not img_size, so that the resize is exercised


def write_table(path: Path, rows: Sequence[Tuple[str, str]], columns=("Image", "Description")) -> None:
    """Write a report table as .xlsx or .csv, by the file's extension."""
    frame = pd.DataFrame(list(rows), columns=list(columns))
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_excel(path, index=False, engine="openpyxl")


def read_rows(path: Path) -> List[Tuple[str, str]]:
    frame = pd.read_csv(path, dtype=str) if path.suffix == ".csv" else pd.read_excel(path, dtype=str)
    return list(frame.itertuples(index=False, name=None))


def sample_arrays(seed: int, hw=IMAGE_HW) -> Tuple[np.ndarray, np.ndarray]:
    """A colour image (blue, green and red planes differ) and a 0/255 mask holding one rectangle."""
    rng = np.random.default_rng(seed)
    h, w = hw
    image = np.empty((h, w, 3), np.uint8)
    image[..., 0] = 200  # blue
    image[..., 1] = rng.integers(0, 100, (h, w))  # green
    image[..., 2] = 30  # red
    mask = np.zeros((h, w), np.uint8)
    y, x = rng.integers(2, h // 2), rng.integers(2, w // 2)
    mask[y:y + h // 3, x:x + w // 3] = 255
    return image, mask


def write_dataset(root: Path, layout: str = "qata", counts: Dict[str, int] = None, table_ext: str = ".xlsx",
                  **config_changes) -> Config:
    """Write a tiny data set and return a config that reads it.

    Layouts:
        "qata": masks ``mask_<X>.png`` beside images ``<X>.png``; train and val reports in
            ``Train_Folder/Train_Val_text<ext>``, test reports in ``Test_Folder/Test_text<ext>``.
        "monuseg": pairing by stem, one table per split; test images are ``.tif`` while masks and rows are
            ``.png`` (as in LViT's MoNuSeg).

    Reports are ``"Report <split> <i>: opacity in the upper left lung."`` (9 words: no " EOF XXX" padding).
    """
    counts = counts or {"train": 4, "val": 2, "test": 2}
    rows: Dict[str, List[Tuple[str, str]]] = {}
    seed = 0
    for split, folder_name in SPLIT_FOLDERS.items():
        folder = root / folder_name
        (folder / "img").mkdir(parents=True)
        (folder / "labelcol").mkdir()
        rows[split] = []
        for i in range(counts[split]):
            image, mask = sample_arrays(seed)
            seed += 1
            stem = f"{split}_{i}"
            if layout == "qata":
                image_name, mask_name = f"{stem}.png", f"mask_{stem}.png"
            else:
                image_name = f"{stem}.tif" if split == "test" else f"{stem}.png"
                mask_name = f"{stem}.png"
            assert cv2.imwrite(str(folder / "img" / image_name), image)
            assert cv2.imwrite(str(folder / "labelcol" / mask_name), mask)
            rows[split].append((mask_name, f"Report {split} {i}: opacity in the upper left lung."))
    if layout == "qata":
        write_table(root / "Train_Folder" / f"Train_Val_text{table_ext}", rows["train"] + rows["val"])
        write_table(root / "Test_Folder" / f"Test_text{table_ext}", rows["test"])
        tables = dict(train_text=f"Train_Val_text{table_ext}", val_text=f"../Train_Folder/Train_Val_text{table_ext}",
                      test_text=f"Test_text{table_ext}", pairing="qata")
    else:
        for split, name in (("train", "Train"), ("val", "Val"), ("test", "Test")):
            write_table(root / SPLIT_FOLDERS[split] / f"{name}_text{table_ext}", rows[split])
        tables = dict(train_text=f"Train_text{table_ext}", val_text=f"Val_text{table_ext}",
                      test_text=f"Test_text{table_ext}", pairing="stem")
    values = dict(train_dataset=str(root / "Train_Folder"), val_dataset=str(root / "Val_Folder"),
                  test_dataset=str(root / "Test_Folder"), img_size=32, batch_size=2, num_workers=0, seed=7)
    values.update(tables)
    values.update(config_changes)
    return Config().replace(**values)


@pytest.fixture
def qata_set(tmp_path) -> Config:
    """A QaTa-layout set (xlsx tables, shared train/val table) under ``tmp_path/Covid19``."""
    return write_dataset(tmp_path / "Covid19", "qata")


@pytest.fixture
def monuseg_set(tmp_path) -> Config:
    """A MoNuSeg-layout set (stem pairing, .tif test images, .csv tables) under ``tmp_path/MoNuSeg``."""
    return write_dataset(tmp_path / "MoNuSeg", "monuseg", table_ext=".csv")
