"""tools.qata_table without training: a session's epoch scores (here from the log lines train_model wrote before
epochs.jsonl existed), and the table."""

from tools import qata_table

TRAIN = "train: total=4.1 seg=0.5 dice=0.42 iou=0.30"


def _epoch(epoch: int, val: str, seconds: str) -> str:
    """An epoch line as utils.training.trainer.Trainer logs it."""
    return f"Epoch {epoch}/3  {TRAIN} | val: {val} | lr=0.001 | {seconds}s"


LOG = "\n".join([
    "session /x, config Config_QaTa_CPU, device cpu",
    "token_len 22 (fitted to the training reports)",
    _epoch(1, "loss=3.47 dice=0.2516 iou=0.1610 dice_shuffled=0.2395 text_gain=0.0122", "48.4"),
    "\tbest val Dice so far (0.2516): saved best_model-RecLMIS.pth.tar",
    _epoch(2, "loss=2.47 dice=0.5343 iou=0.4 dice_shuffled=0.5500 text_gain=-0.0157", "56.7"),
    _epoch(3, "loss=2.40 dice=0.5100 iou=0.39", "50.0"),
    _epoch(2, "loss=2.47 dice=0.6000 iou=0.4 dice_shuffled=0.5 text_gain=0.1", "60.0"),
]) + "\n"


def test_epoch_lines_are_read_with_the_validation_dice_and_text_gain(tmp_path):
    session = tmp_path / "session_12.01_10h00"  # a session whose epochs are in its log only
    session.mkdir()
    (session / "session_12.01_10h00.log").write_text(LOG)
    epochs = qata_table.epoch_scores(str(session))
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[0] == {"epoch": 1, "dice": 0.2516, "text_gain": 0.0122, "seconds": 48.4}
    assert epochs[1]["dice"] == 0.6 and epochs[1]["text_gain"] == 0.1  # a resumed epoch: its last line wins
    assert epochs[2]["text_gain"] is None  # an epoch without the shuffled check


def test_table_gives_mean_and_spread_per_row():
    base = {"iou": 0.5, "dice_pooled": 0.8, "iou_pooled": 0.7, "dice_empty": 0.6, "val_text_gain_best": 0.1,
            "best_epoch": 9, "epoch_seconds": 50.0, "train_minutes": 8.0}
    records = [{**base, "row": "faithful", "seed": 1, "dice": 0.70, "dice_true": 0.70, "dice_shuffled": 0.50},
               {**base, "row": "faithful", "seed": 2, "dice": 0.74, "dice_true": 0.74, "dice_shuffled": 0.54},
               {**base, "row": "improved", "seed": 1, "dice": 0.8, "dice_true": 0.8, "dice_shuffled": 0.4,
                "val_text_gain_best": None}]
    text = qata_table.table(records, ["faithful", "improved", "faithful, no report"])
    lines = text.splitlines()
    assert len(lines) == 4  # header, rule, two rows: a row without runs is left out
    assert lines[2].startswith("| faithful | 1,2 | 0.720 ± 0.028 |") and lines[2].endswith("| 0.200 |")
    assert "| improved | 1 | 0.800 |" in lines[3] and "| - |" in lines[3] and lines[3].endswith("| 0.400 |")
