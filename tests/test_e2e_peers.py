"""End to end, for each peer of the model registry (U-Net, LViT, GuideDecoder): train, resume, test (both protocols,
the text ablation, figures), predict and compare, on the demo set and on a QaTa-COV19-layout copy imported by
``tools.get_data``, at tiny sizes on the CPU. About two minutes on 2 cores: marked slow.
"""

import csv
import json
import os
from pathlib import Path

import pytest

import test as test_cli
import train_model
from nets.models import model_kind
from tests.test_e2e_qata import write_sgseg_copy
from tools import compare, get_data
from utils.data.demo import make_demo_dataset
from utils.weights_io import read_checkpoint

TINY = ["img_size=32", "base_channel=8", "clip_width=32", "clip_layers=1", "clip_heads=1", "text_embed_dim=32",
        "batch_size=4", "num_workers=0", "tensorboard_images=0", "demo_data=False", "variant=faithful"]
FOLDERS = {"unet": "UNet", "lvit": "LViT", "guidedecoder": "GuideDecoder"}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("data") / "Demo", n_train=8, n_val=4, n_test=4, img_size=48,
                             seed=2)


def _paths(root):
    return [f"train_dataset={root}/Train_Folder", f"val_dataset={root}/Val_Folder", f"test_dataset={root}/Test_Folder"]


def _train_resume_test(config, settings, output, task, model, capsys):
    """Train 2 epochs, resume to 3, test with the ablation and figures, predict one image; returns the session."""
    assert train_model.main(["-c", config, "--set", f"model={model}", "epochs=2", *settings, "--no_progress"]) == 0
    session = capsys.readouterr().out.strip().splitlines()[-1]
    session_dir = output / task / FOLDERS[model] / session
    best = session_dir / "models" / f"best_model-{FOLDERS[model]}.pth.tar"
    assert best.exists() and read_checkpoint(str(best))["model"] == FOLDERS[model]
    # By path: sessions of several networks started in the same minute share their id (a bare id is refused then).
    assert train_model.main(["-c", config, "--resume", str(session_dir), "--set", f"output_root={output}", "epochs=3",
                             "--no_progress"]) == 0
    log = (session_dir / f"{session}.log").read_text()
    assert "Epoch 3/3" in log and "resumed from" in log and f"network {FOLDERS[model]}" in log
    epochs = [json.loads(line) for line in (session_dir / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    terms = {"dice_loss" if term == "dice" else term for term in model_kind(model).losses}
    assert terms <= set(epochs[0]["train"]) and "ccl" not in epochs[0]["train"]  # its own losses, not RecLMIS's

    assert test_cli.main(["-c", config, "--set", *settings, "-t", str(session_dir), "--text_ablation", "--test_vis",
                          "True",
                          "--no_progress"]) == 0
    summary = json.loads((session_dir / "test_summary.json").read_text())
    assert summary["images"] == 4 and 0 <= summary["dice"] <= 1 and 0 <= summary["dice_pooled"] <= 1
    ablation = json.loads((session_dir / "test_text_ablation.json").read_text())
    if model == "unet":  # reads no report: every ablation gives the same scores
        assert ablation["true"]["dice"] == ablation["shuffled"]["dice"] == ablation["empty"]["dice"]
    figures = [name for name in os.listdir(session_dir) if name.endswith("_visualize_test")]
    assert len(figures) == 1 and len(os.listdir(session_dir / figures[0])) == 4
    with open(session_dir / "test_per_image.csv") as handle:
        image = next(csv.DictReader(handle))["name"]
    prefix = output / "predicted" / model
    assert test_cli.main(["predict", "--checkpoint", str(best), "--image",
                          str(settings_root(settings) / "Test_Folder" / "img" / image), "--text",
                          "Unilateral pulmonary infection, one infected area, lower left lung.", "--out",
                          str(prefix), "--no_progress"]) == 0
    assert all(os.path.exists(f"{prefix}_{part}.png") for part in ("mask", "prob", "overlay"))
    return session_dir


def settings_root(settings) -> Path:
    """The data root of ``settings`` (the parent of its test split)."""
    return Path(next(item for item in settings if item.startswith("test_dataset=")).split("=", 1)[1]).parent


@pytest.mark.slow
@pytest.mark.parametrize("model", ["unet", "lvit", "guidedecoder"])
def test_each_peer_trains_resumes_tests_and_predicts_on_the_demo(demo_root, tmp_path, capsys, model):
    output = tmp_path / "runs"
    _train_resume_test("Config_Demo", TINY + _paths(demo_root) + [f"output_root={output}"], output, "Demo", model,
                       capsys)


@pytest.mark.slow
def test_peers_and_reclmis_on_a_qata_copy_through_one_evaluator(tmp_path, capsys):
    write_sgseg_copy(tmp_path / "SGSeg" / "data" / "QaTa")
    data = tmp_path / "datasets" / "Covid19"
    assert get_data.main(["qata", "--from", str(tmp_path / "SGSeg"), "--to", str(data), "--any-counts"]) == 0
    output = tmp_path / "runs"
    settings = TINY + _paths(data) + [f"output_root={output}"]
    sessions = [_train_resume_test("Config_QaTa_CPU", settings, output, "Covid19", model, capsys)
                for model in ("unet", "lvit", "guidedecoder")]
    assert train_model.main(["-c", "Config_QaTa_CPU", "--set", "epochs=1", "rec_trans_num_layers1=1", *settings,
                             "--no_progress"]) == 0
    sessions.append(output / "Covid19" / "RecLMIS" / capsys.readouterr().out.strip().splitlines()[-1])
    table = tmp_path / "table"
    assert compare.main([*map(str, sessions), "-c", "Config_QaTa_CPU", "--set", *settings, "--text_ablation",
                         "--out", str(table), "--no_progress"]) == 0
    with open(table / "compare.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["model"] for row in rows] == ["unet", "lvit", "guidedecoder", "reclmis"]
    assert rows[0]["dice"] == rows[0]["dice_shuffled"] == rows[0]["dice_empty"]  # the U-Net reads no report
    assert float(rows[1]["params"]) > float(rows[0]["params"])
