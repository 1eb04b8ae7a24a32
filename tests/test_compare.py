"""python -m tools.compare: several sessions scored on one test split by one evaluator, one table; sessions trained
on other data refused."""

import csv

import pytest

import train_model
from tools import compare
from utils.data.demo import make_demo_dataset

TINY = ["img_size=32", "base_channel=4", "clip_width=32", "clip_layers=1", "clip_heads=1", "text_embed_dim=32",
        "rec_trans_num_layers1=1", "batch_size=2", "num_workers=0", "tensorboard_images=0", "demo_data=False",
        "epochs=1"]


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    data = make_demo_dataset(root / "Demo", n_train=4, n_val=2, n_test=3, img_size=64, seed=5)
    settings = [*TINY, f"train_dataset={data}/Train_Folder", f"val_dataset={data}/Val_Folder",
                f"test_dataset={data}/Test_Folder", f"output_root={root / 'runs'}"]
    names = {}
    for name, more in (("a", ["seed=1"]), ("b", ["seed=2", "use_report=False"]), ("other size", ["img_size=48"])):
        assert train_model.main(["-c", "Config_Demo", "--no_progress", "--set", *settings, *more]) == 0
        names[name] = str(sorted((root / "runs" / "Demo" / "RecLMIS").iterdir())[-1])
    return {"root": root, "settings": settings, "names": names}


def test_two_sessions_on_one_split_give_one_table_and_its_files(sessions, tmp_path, capsys):
    a, b = sessions["names"]["a"], sessions["names"]["b"]
    out = tmp_path / "cmp"
    assert compare.main([a, b, "-c", "Config_Demo", "--set", *sessions["settings"], "--device", "cpu",
                         "--text_ablation", "--out", str(out), "--no_progress"]) == 0
    printed = capsys.readouterr().out
    assert "3 test images of" in printed and printed.count("| session_") == 2
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert [row["session"] for row in rows] == [a.rsplit("/", 1)[-1], b.rsplit("/", 1)[-1]]
    for row in rows:
        assert 0 <= float(row["dice"]) <= 1 and float(row["gflops"]) > 0 and int(row["params"]) > int(
            row["trainable"]) > 0 and float(row["s_per_image"]) > 0
    no_report = rows[1]  # use_report=False reads one empty report for every image: shuffling changes no input
    assert float(no_report["dice_shuffled"]) == float(no_report["dice"])
    assert (out / "compare.md").read_text().count("| session_") == 2
    assert compare.main([a, b, "-c", "Config_Demo", "--set", *sessions["settings"], "--device", "cpu", "--out",
                         str(out), "--no_progress"]) == 2  # no overwrite without --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_sessions_trained_at_another_size_are_refused_with_the_difference(sessions, capsys):
    a, other = sessions["names"]["a"], sessions["names"]["other size"]
    assert compare.main([a, other, "-c", "Config_Demo", "--set", *sessions["settings"], "--device", "cpu",
                         "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert "sessions trained on other data or sizes are not compared" in err and "img_size 48 vs 32" in err
