"""End to end on CPU: `variant="improved"` learns to read its report on a task that cannot be solved without it.

Each image holds two equal discs, one in each half; the report names one side ("One lesion in the left lung, none
elsewhere.") and the mask holds that disc alone. Without reading, the best a model can do is to mark both discs
(Dice about 2/3) or guess. About 40 s on 2 cores: marked slow.
"""

import json

import cv2
import numpy as np
import pytest

import test as test_cli
import train_model
from tests.conftest import write_table

SIZE = 48
SETTINGS = ["img_size=48", "base_channel=8", "clip_width=32", "clip_layers=1", "clip_heads=1", "text_embed_dim=32",
            "rec_trans_num_layers1=1", "batch_size=8", "num_workers=0", "demo_data=False", "tensorboard_images=0",
            "learning_rate=3e-3", "epochs=16", "variant=improved"]


def write_left_right_set(root, counts=(("Train_Folder", 128), ("Val_Folder", 24), ("Test_Folder", 24)), seed=0):
    """Two bright discs per image, one per half; the report names the patient's side of one (the patient's left
    is the image's right), and the mask is that disc."""
    rng = np.random.default_rng(seed)
    rows = {}
    for split, count in counts:
        folder = root / split
        (folder / "img").mkdir(parents=True)
        (folder / "labelcol").mkdir()
        rows[split] = []
        for i in range(count):
            image = rng.normal(60, 10, (SIZE, SIZE))
            mask = np.zeros((SIZE, SIZE), np.uint8)
            named = int(rng.integers(2))  # 0: the image's left half, 1: its right half
            for half in (0, 1):
                centre = (int(rng.integers(SIZE // 8, SIZE // 2 - SIZE // 8)) + half * SIZE // 2,
                          int(rng.integers(SIZE // 6, SIZE - SIZE // 6)))
                disc = np.zeros_like(mask)
                cv2.circle(disc, centre, int(rng.integers(SIZE // 12, SIZE // 7)), 1, -1)
                image[disc > 0] += 90
                if half == named:
                    mask |= disc
            name = f"{split[:2].lower()}_{i}.png"
            cv2.imwrite(str(folder / "img" / name), np.clip(image, 0, 255).astype(np.uint8))
            cv2.imwrite(str(folder / "labelcol" / f"mask_{name}"), mask * 255)
            side = "left" if named == 1 else "right"
            rows[split].append((f"mask_{name}", f"One lesion in the {side} lung, none elsewhere."))
    write_table(root / "Train_Folder" / "Train_Val_text.xlsx", rows["Train_Folder"] + rows["Val_Folder"])
    write_table(root / "Test_Folder" / "Test_text.xlsx", rows["Test_Folder"])


@pytest.mark.slow
def test_improved_variant_reads_which_side_the_report_names(tmp_path, capsys):
    root = tmp_path / "LeftRight"
    write_left_right_set(root)
    settings = SETTINGS + [f"train_dataset={root}/Train_Folder", f"val_dataset={root}/Val_Folder",
                           f"test_dataset={root}/Test_Folder", f"output_root={tmp_path / 'runs'}"]
    assert train_model.main(["-c", "Config_Demo", "--set", *settings, "--no_progress"]) == 0
    session = capsys.readouterr().out.strip().splitlines()[-1]
    session_dir = tmp_path / "runs" / "Demo" / "RecLMIS" / session
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(session_dir / "tensorboard_logs"))
    events.Reload()
    gains = [e.value for e in events.Scalars("val/text_gain")]
    assert len(gains) == 16 and max(gains[:3]) < 0.1  # it does not read at first ...
    assert gains[-1] > 0.2  # ... and reads by the end: wrong reports cost it Dice

    assert test_cli.main(["-c", "Config_Demo", "--set", *settings, "-t", session, "--text_ablation",
                          "--no_progress"]) == 0
    ablation = json.loads((session_dir / "test_summary.json").read_text())["text_ablation"]
    assert ablation["true"]["dice"] > 0.8
    assert ablation["true"]["dice"] - ablation["shuffled"]["dice"] > 0.2
    assert "demo" not in ablation  # not the demo set: no oracle
