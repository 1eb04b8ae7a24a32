"""End to end on a tiny fake of SGSeg's QaTa-COV19 copy: import it, then train and test the QaTa rows of
docs/QATA.md through ``tools.qata_table`` (train_model.py and test.py --text_ablation in subprocesses).

About a minute on 2 cores: marked slow.
"""

import csv
import json
import os

import cv2
import numpy as np
import pytest

from tools import get_data, qata_table
from utils.data.audit import report_zones

REPORTS = [
    "bilateral pulmonary infection, six infected areas, upper middle lower left lung and upper middle lower right "
    "lung.",
    "unilateral pulmonary infection, one infected area, lower left lung.",
    "unilateral pulmonary infection, one infected area, lower right lung.",
]
TINY = ["img_size=32", "base_channel=4", "clip_width=32", "clip_layers=1", "clip_heads=1", "text_embed_dim=32",
        "batch_size=4", "epochs=2", "tensorboard_images=0"]


def write_sgseg_copy(root, counts=None, size=40):
    """A fake of SGSeg's data/QaTa: images/{train,valid,test}/{images,masks} and prompts/annotation.json, with
    masks that lie where their report says (the image's left for "left"), and an upper-case twin of one image."""
    counts = counts or {"train": 8, "valid": 4, "test": 4}
    annotation = {}
    for split, n in counts.items():
        (root / "images" / split / "images").mkdir(parents=True)
        (root / "images" / split / "masks").mkdir(parents=True)
        annotation[split] = []
        for i in range(n):
            report = REPORTS[i % len(REPORTS)]
            name = f"sub-s{split}{i}_ses-e{i}.png"
            rng = np.random.default_rng(i)
            image = rng.integers(0, 255, (size, size), dtype=np.uint8)
            mask = np.zeros((size, size), np.uint8)
            for row, side in report_zones(report):
                y = {"upper": 0, "middle": 1, "lower": 2}[row] * size // 3
                x = 0 if side == "left" else size // 2
                mask[y + 2:y + size // 3 - 2, x + 3:x + size // 2 - 3] = 255
            cv2.imwrite(str(root / "images" / split / "images" / name), image)
            cv2.imwrite(str(root / "images" / split / "masks" / f"mask_{name}"), mask)
            annotation[split].append({"image_path": f"mask_{name}", "caption": report})
        first = annotation[split][0]["image_path"][len("mask_"):]
        twin = root / "images" / split / "images" / first.replace("sub-s", "sub-S")
        twin.write_bytes((root / "images" / split / "images" / first).read_bytes())
    (root / "prompts").mkdir()
    (root / "prompts" / "annotation.json").write_text(json.dumps(annotation))
    return root


@pytest.mark.slow
def test_import_then_train_and_test_faithful_improved_and_the_control(tmp_path, capsys):
    source = write_sgseg_copy(tmp_path / "SGSeg" / "data" / "QaTa")
    data = tmp_path / "datasets" / "Covid19"
    assert get_data.main(["qata", "--from", str(tmp_path / "SGSeg"), "--to", str(data), "--any-counts"]) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 8, "val": 4, "test": 4} and manifest["source_notes"]["case_collisions"] == 3
    assert source.exists()

    out = tmp_path / "runs"
    paths = [f"train_dataset={data}/Train_Folder", f"val_dataset={data}/Val_Folder",
             f"test_dataset={data}/Test_Folder"]
    assert qata_table.main(["--out", str(out), "--rows", "faithful", "improved", "faithful, no report", "--seeds",
                            "1", "--set", *TINY, *paths]) == 0
    records = {r["row"]: r for r in map(json.loads, (out / "runs.jsonl").read_text().splitlines())}
    assert set(records) == {"faithful", "improved", "faithful, no report"}
    assert records["faithful"]["token_len"] == 18 and records["improved"]["token_len"] == 22  # fitted: no cut
    for record in records.values():
        assert record["images"] == 4 and record["epochs"] == 2
        assert 0 <= record["dice"] <= 1 and record["val_text_gain_best"] is not None
    assert records["faithful"]["shuffled_unchanged"] == records["improved"]["shuffled_unchanged"] == 0
    control = records["faithful, no report"]
    assert control["shuffled_unchanged"] == 4  # one empty report for every image: no other text to give
    assert control["dice_true"] == control["dice_shuffled"] and control["val_text_gain_best"] == 0

    def reports_read(record):
        with open(os.path.join(qata_table.ROOT, record["session"], "test_per_image.csv")) as handle:
            return {row["report"] for row in csv.DictReader(handle)}

    assert reports_read(control) == {""} and reports_read(records["faithful"]) == set(REPORTS)
    table = (out / "table.md").read_text()
    assert "| faithful, no report | 1 |" in table and "| improved | 1 |" in table

    # Run again: every (row, seed) is already in runs.jsonl, nothing is trained or tested.
    assert qata_table.main(["--out", str(out), "--rows", "faithful", "--seeds", "1", "--set", *TINY, *paths]) == 0
    assert "0 run(s) to do" in capsys.readouterr().out
