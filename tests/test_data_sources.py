"""The source readers of ``utils.data.sources`` on tiny fake copies of each layout, and their error paths.

The ``build_*`` functions write one fake data set (:data:`TRUTH`) in each source's layout; ``tests/test_get_data.py``
imports them to run the CLI end to end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pandas as pd
import pytest

from utils.data.importer import plan_problems
from utils.data.sources import SOURCE_HINTS, SOURCES, read_guidedecoder, read_lvit, read_prolearn, read_source

# The fake set: split -> [(stem, report)]. 8 train and 2 val rows, so that GuideDecoder's rule (val = the last 20%
# of train.csv's rows, int(0.8 * 10) = 8) gives the same split as LViT's tables.
TRUTH: Dict[str, List[Tuple[str, str]]] = {
    "train": [(f"covid_{i}", f"Report train {i}: one infected area, lower left lung.") for i in range(1, 7)]
    + [(f"sub-S0{i}_ses-E1_run-1_bp-chest_cr", f"Report train S{i}: bilateral pulmonary infection.")
       for i in (1, 2)],
    "val": [("covid_7", "Report val 7: two infected areas."), ("covid_8", "Report val 8: upper right lung.")],
    "test": [("covid_9", "Report test 9: lower right lung."), ("covid_10", "Report test 10: all left lung.")],
}
COUNTS = {split: len(rows) for split, rows in TRUTH.items()}


def arrays(stem: str) -> Tuple[np.ndarray, np.ndarray]:
    """A 16x16 grey image and a 0/255 mask, the same for a stem in every layout."""
    rng = np.random.default_rng(sum(map(ord, stem)))
    image = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    y, x = rng.integers(0, 8, 2)
    mask[y:y + 6, x:x + 6] = 255
    return image, mask


def write_pair(stem: str, image_path: Path, mask_path: Path) -> None:
    image, mask = arrays(stem)
    for path, array in ((image_path, image), (mask_path, mask)):
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), array)


def write_table(path: Path, rows: List[Tuple[str, str]]) -> None:
    """A report table (``Image`` = the mask's file name, ``Description``), .xlsx or .csv by the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([(f"mask_{stem}.png", report) for stem, report in rows], columns=["Image", "Description"])
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_excel(path, index=False, engine="openpyxl")


def build_lvit(root: Path, train_val_table: bool = False) -> Path:
    """Kaggle's ``QaTa-COV19-v2`` with LViT's tables beside it (Train_text + Val_text, or Train_Val_text +
    Val_text)."""
    kaggle = root / "QaTa-COV19-v2"
    for split, rows in TRUTH.items():
        part = kaggle / ("Test Set" if split == "test" else "Train Set")
        for stem, _ in rows:
            write_pair(stem, part / "Images" / f"{stem}.png", part / "Ground-truths" / f"mask_{stem}.png")
    if train_val_table:
        write_table(root / "Train_Val_text.xlsx", TRUTH["train"] + TRUTH["val"])
    else:
        write_table(root / "Train_text.xlsx", TRUTH["train"])
    write_table(root / "Val_text.xlsx", TRUTH["val"])
    write_table(root / "Test_text.xlsx", TRUTH["test"])
    return root


def build_lvit_layout(root: Path) -> Path:
    """A folder already in the LViT layout (as ``tools.get_data`` writes it)."""
    folders = {"train": "Train_Folder", "val": "Val_Folder", "test": "Test_Folder"}
    for split, rows in TRUTH.items():
        for stem, _ in rows:
            write_pair(stem, root / folders[split] / "img" / f"{stem}.png",
                       root / folders[split] / "labelcol" / f"mask_{stem}.png")
    write_table(root / "Train_Folder" / "Train_Val_text.xlsx", TRUTH["train"] + TRUTH["val"])
    write_table(root / "Test_Folder" / "Test_text.xlsx", TRUTH["test"])
    return root


def build_prolearn(root: Path, extra: Dict[str, List[str]] = None) -> Path:
    """ProLearn's ``data/QaTa``: images/, masks/, reports/<id>.txt and split.json (``extra`` ids appended)."""
    qata = root / "data" / "QaTa"
    split = {}
    for name, rows in TRUTH.items():
        split[name] = [stem for stem, _ in rows] + (extra or {}).get(name, [])
        for stem, report in rows:
            write_pair(stem, qata / "images" / f"{stem}.png", qata / "masks" / f"{stem}.png")
            (qata / "reports").mkdir(parents=True, exist_ok=True)
            (qata / "reports" / f"{stem}.txt").write_text(report + "\n", encoding="utf-8")
    (qata / "split.json").write_text(json.dumps(split, indent=2), encoding="utf-8")
    return root


def build_guidedecoder(root: Path, kaggle_folders: bool = False) -> Path:
    """GuideDecoder's ``QaTa-COV19-v2``: prompt/{train,test}.csv (train rows, then val rows) and Train/, Test/
    with Images/ and GTs/ (or Kaggle's folder names)."""
    qata = root / "QaTa-COV19-v2"
    for split, rows in TRUTH.items():
        if kaggle_folders:
            part = qata / ("Test Set" if split == "test" else "Train Set")
            images, masks = part / "Images", part / "Ground-truths"
        else:
            part = qata / ("Test" if split == "test" else "Train")
            images, masks = part / "Images", part / "GTs"
        for stem, _ in rows:
            write_pair(stem, images / f"{stem}.png", masks / f"mask_{stem}.png")
    write_table(qata / "prompt" / "train.csv", TRUTH["train"] + TRUTH["val"])
    write_table(qata / "prompt" / "test.csv", TRUTH["test"])
    return root


def build_sgseg(root: Path) -> Path:
    """SGSeg's ``data/QaTa``: images/{train,valid,test}/{images,masks} and prompts/annotation.json."""
    qata = root / "data" / "QaTa"
    annotation = {}
    for split, source_split in (("train", "train"), ("val", "valid"), ("test", "test")):
        annotation[source_split] = []
        for stem, report in TRUTH[split]:
            write_pair(stem, qata / "images" / source_split / "images" / f"{stem}.png",
                       qata / "images" / source_split / "masks" / f"mask_{stem}.png")
            annotation[source_split].append({"image_path": f"mask_{stem}.png", "caption": report})
    (qata / "prompts").mkdir(parents=True)
    (qata / "prompts" / "annotation.json").write_text(json.dumps(annotation), encoding="utf-8")
    return root


BUILDERS = {"sgseg": build_sgseg, "lvit": build_lvit, "lvit_layout": build_lvit_layout,
            "prolearn": build_prolearn, "guidedecoder": build_guidedecoder}


def by_split(read) -> Dict[str, List[Tuple[str, str]]]:
    """split -> sorted [(stem, report)] of a reader's pairs."""
    found: Dict[str, List[Tuple[str, str]]] = {split: [] for split in TRUTH}
    for pair in read.pairs:
        found[pair.split].append((pair.stem, pair.report))
    return {split: sorted(rows) for split, rows in found.items()}


def errors(read) -> Dict[str, List[str]]:
    """code -> messages of a reader's errors."""
    found: Dict[str, List[str]] = {}
    for p in read.problems:
        if p.severity == "error":
            found.setdefault(p.code, []).append(p.message)
    return found


def warnings(read) -> Dict[str, List[str]]:
    found: Dict[str, List[str]] = {}
    for p in read.problems:
        if p.severity == "warning":
            found.setdefault(p.code, []).append(p.message)
    return found


EXPECTED = {split: sorted(rows) for split, rows in TRUTH.items()}


def test_registry_names_every_reader_and_where_to_get_it():
    assert set(SOURCES) == {"sgseg", "lvit", "prolearn", "guidedecoder"}
    assert set(SOURCE_HINTS) == set(SOURCES)
    assert "ShuchangYe-bib/ProLearn" in SOURCE_HINTS["prolearn"] and "--any-counts" in SOURCE_HINTS["prolearn"]
    assert "kaggle.com" in SOURCE_HINTS["lvit"] and "HUANGLIZI/LViT" in SOURCE_HINTS["lvit"]
    assert "LanGuideMedSeg" in SOURCE_HINTS["guidedecoder"] and "20%" in SOURCE_HINTS["guidedecoder"]


@pytest.mark.parametrize("builder", ["lvit", "lvit_layout", "prolearn", "guidedecoder"])
def test_each_reader_finds_every_pair_in_its_split(tmp_path, builder):
    folder = BUILDERS[builder](tmp_path / "copy")
    read = read_source(builder.replace("_layout", ""), folder)
    assert errors(read) == {}
    assert by_split(read) == EXPECTED
    for pair in read.pairs:
        assert pair.image.is_file() and pair.mask.is_file() and pair.mask.name.endswith(f"{pair.stem}.png")


@pytest.mark.parametrize("kind", ["lvit", "prolearn", "guidedecoder"])
def test_each_reader_says_when_a_folder_is_not_its_layout(tmp_path, kind):
    (tmp_path / "empty").mkdir()
    read = read_source(kind, tmp_path / "empty")
    assert read.pairs == [] and list(errors(read)) == ["not_this_source"]


def test_lvit_takes_the_split_from_the_tables(tmp_path):
    """With Train_Val_text, the rows that Val_text names are val; train and val images share Kaggle's Train Set."""
    read = read_lvit(build_lvit(tmp_path, train_val_table=True))
    assert errors(read) == {} and by_split(read) == EXPECTED
    assert read.notes["form"] == "kaggle" and read.notes["train_table"] == "Train_Val_text"
    assert all("Train Set" in str(p.image) for p in read.pairs if p.split == "val")


def test_lvit_refuses_a_train_val_table_without_val_table(tmp_path):
    build_lvit(tmp_path, train_val_table=True)
    (tmp_path / "Val_text.xlsx").unlink()
    read = read_lvit(tmp_path)
    assert "missing_table" in errors(read) and "Val_text.xlsx" in errors(read)["missing_table"][0]
    assert read.pairs == []


def test_lvit_names_a_missing_mask_and_a_row_without_file(tmp_path):
    build_lvit(tmp_path)
    (tmp_path / "QaTa-COV19-v2" / "Train Set" / "Ground-truths" / "mask_covid_2.png").unlink()
    write_table(tmp_path / "Test_text.xlsx", TRUTH["test"] + [("ghost", "Report of nothing.")])
    read = read_lvit(tmp_path)
    messages = errors(read)["missing_file"]
    assert len(messages) == 2
    assert any("Train_text.xlsx row 3" in m and "mask_covid_2.png" in m for m in messages)
    assert any("Test_text.xlsx row 4" in m and "ghost.png" in m for m in messages)
    assert "covid_2" not in {p.stem for p in read.pairs}


def test_lvit_refuses_unsafe_names_and_counts_unlisted_images(tmp_path):
    build_lvit(tmp_path)
    write_table(tmp_path / "Val_text.xlsx", TRUTH["val"] + [("../../etc/passwd", "x")])
    write_pair("stray", tmp_path / "QaTa-COV19-v2" / "Test Set" / "Images" / "stray.png",
               tmp_path / "QaTa-COV19-v2" / "Test Set" / "Ground-truths" / "mask_stray.png")
    read = read_lvit(tmp_path)
    assert "unsafe_name" in errors(read)
    assert read.notes["unlisted_images"] == {"train": 0, "test": 1} and "unlisted" in warnings(read)


def test_lvit_needs_its_tables_to_claim_kaggle_images(tmp_path):
    """Kaggle's folders without LViT's tables are not the lvit layout (GuideDecoder's copy may have them)."""
    build_guidedecoder(tmp_path, kaggle_folders=True)
    assert list(errors(read_lvit(tmp_path))) == ["not_this_source"]
    read = read_guidedecoder(tmp_path)
    assert errors(read) == {} and by_split(read) == EXPECTED


def test_case_collisions_are_counted_and_refused_where_they_would_merge(tmp_path):
    """A copy whose name differs only in case and whose bytes differ is a warning (the table's spelling is used);
    two pairs whose names differ only in case are refused by the importer's plan."""
    build_lvit(tmp_path)
    images = tmp_path / "QaTa-COV19-v2" / "Train Set" / "Images"
    cv2.imwrite(str(images / "COVID_1.png"), np.zeros((16, 16), np.uint8))
    read = read_lvit(tmp_path)
    assert errors(read) == {} and "case_collision" in warnings(read)
    assert read.notes["case_collisions"] == 1 and read.notes["case_collisions_differing"] == 1

    write_pair("COVID_1", images / "COVID_1.png", images.parent / "Ground-truths" / "mask_COVID_1.png")
    write_table(tmp_path / "Train_text.xlsx", TRUTH["train"] + [("COVID_1", "Report upper case.")])
    read = read_lvit(tmp_path)
    assert errors(read) == {}
    plan = plan_problems(read.pairs, None)
    assert [p.code for p in plan if p.severity == "error"] == ["case_collision"]
    assert "'covid_1' and 'COVID_1'" in plan[0].message


def test_prolearn_collapses_duplicate_ids_and_refuses_an_id_in_two_splits(tmp_path):
    build_prolearn(tmp_path, extra={"train": ["covid_1", "covid_2"], "test": ["covid_9"]})
    read = read_prolearn(tmp_path)
    assert errors(read) == {} and by_split(read) == EXPECTED
    assert read.notes["duplicates_collapsed"] == {"train": 2, "test": 1}
    assert read.notes["split_json_entries"] == {"train": 10, "val": 2, "test": 3}
    duplicate = warnings(read)["duplicate_entry"]
    assert any("2 id(s) of train twice" in m and "--any-counts" in m for m in duplicate)

    build_prolearn(tmp_path / "overlap", extra={"test": ["covid_7"]})
    read = read_prolearn(tmp_path / "overlap")
    assert errors(read).keys() == {"split_overlap"}
    assert "'covid_7' in val and in test" in errors(read)["split_overlap"][0]


def test_prolearn_names_missing_files_and_a_missing_val_list(tmp_path):
    build_prolearn(tmp_path)
    qata = tmp_path / "data" / "QaTa"
    (qata / "masks" / "covid_3.png").unlink()
    split = json.loads((qata / "split.json").read_text())
    split["test"].append("ghost")
    (qata / "split.json").write_text(json.dumps(split))
    messages = errors(read_prolearn(tmp_path))["missing_file"]
    assert len(messages) == 2 and any("masks/covid_3.png" in m for m in messages)
    assert any("'ghost'" in m and "reports/ghost.txt" in m for m in messages)

    del split["val"]
    (qata / "split.json").write_text(json.dumps(split))
    message = errors(read_prolearn(tmp_path))["missing_split"][0]
    assert "no list 'val'" in message and "none is invented" in message


def test_guidedecoder_carves_val_from_the_last_fifth_of_train_csv(tmp_path):
    build_guidedecoder(tmp_path)
    read = read_guidedecoder(tmp_path)
    assert by_split(read) == EXPECTED
    assert "carved_val" in warnings(read) and "last 20%" in warnings(read)["carved_val"][0]
    assert read.notes["train_rows"] == 10

    # Rows in another order give another split: val is whatever the last rows are.
    qata = tmp_path / "QaTa-COV19-v2"
    write_table(qata / "prompt" / "train.csv", TRUTH["val"] + TRUTH["train"])
    val = {p.stem for p in read_guidedecoder(tmp_path).pairs if p.split == "val"}
    assert val == {stem for stem, _ in TRUTH["train"][-2:]}


def test_guidedecoder_names_a_row_without_file(tmp_path):
    build_guidedecoder(tmp_path)
    write_table(tmp_path / "QaTa-COV19-v2" / "prompt" / "test.csv", TRUTH["test"] + [("ghost", "x")])
    messages = errors(read_guidedecoder(tmp_path))["missing_file"]
    assert len(messages) == 1 and "test.csv row 4" in messages[0] and "Test/GTs/mask_ghost.png" in messages[0]
