"""Using a trained model: predict (command and Python API), words and patches of interest, the text-reliance test
and the training curves, on a tiny model trained on a generated set (CPU)."""

import csv
import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import test as test_cli
import train_model
from tools import curves
from utils.checkpoints import BEST_NAME
from utils.curves import CURVES_NAME
from utils.data.demo import make_demo_dataset
from utils.data.tokenizer import ReportTokenizer
from utils.inference import commands
from utils.inference.evaluate import demo_cases_of, text_ablation
from utils.inference.predictor import Predictor
from utils.sessions import EPOCHS_NAME, read_epochs, session_log

TINY = ["img_size=32", "base_channel=4", "clip_width=32", "clip_layers=1", "clip_heads=1", "text_embed_dim=32",
        "rec_trans_num_layers1=1", "batch_size=4", "num_workers=0", "tensorboard_images=1", "demo_data=False",
        "epochs=3", "learning_rate=3e-3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = make_demo_dataset(tmp_path_factory.mktemp("data") / "Demo", n_train=12, n_val=4, n_test=5, img_size=64,
                             seed=5)
    output = tmp_path_factory.mktemp("runs")
    settings = TINY + [f"train_dataset={root}/Train_Folder", f"val_dataset={root}/Val_Folder",
                       f"test_dataset={root}/Test_Folder", f"output_root={output}"]
    assert train_model.main(["-c", "Config_Demo", "--set", *settings, "--no_progress"]) == 0
    session = next((output / "Demo" / "RecLMIS").iterdir())
    return {"root": root, "settings": settings, "session": session,
            "checkpoint": str(session / "models" / BEST_NAME)}


def test_training_ends_with_its_curves(trained):
    path = trained["session"] / CURVES_NAME
    picture = cv2.imread(str(path))
    assert picture is not None and picture.shape[1] > picture.shape[0] > 200
    epochs = read_epochs(str(trained["session"]))
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert {"total", "seg", "ccl", "text_rec", "img_rec", "dice", "iou"} <= set(epochs[0]["train"])
    assert {"loss", "dice", "iou"} <= set(epochs[0]["val"]) and epochs[0]["lr"] > 0


def test_curves_on_demand_for_any_session(trained, capsys):
    path = trained["session"] / CURVES_NAME
    path.unlink()
    assert curves.main([str(trained["session"])]) == 0
    assert capsys.readouterr().out.strip() == str(path) and path.exists()
    assert curves.main(["session_nope", "-c", "Config_Demo"]) == 2
    assert "no session 'session_nope'" in capsys.readouterr().err


def test_curves_of_a_session_without_epochs_is_a_clear_error(tmp_path):
    session = tmp_path / "session_01.01_00h00"
    session.mkdir()
    (session / "session_01.01_00h00.log").write_text("session started\n")
    with pytest.raises(ValueError, match="no finished epoch"):
        read_epochs(str(session))
    with pytest.raises(FileNotFoundError, match="no epochs.jsonl and no session log"):
        read_epochs(str(tmp_path))


def test_epochs_are_records_and_a_session_written_before_them_still_reads_from_its_log(trained, tmp_path):
    records = read_epochs(str(trained["session"]))
    assert (trained["session"] / EPOCHS_NAME).is_file() and records[0]["seconds"] > 0
    old = tmp_path / trained["session"].name  # a session of an earlier version: a log, no epochs.jsonl
    old.mkdir()
    (old / Path(session_log(str(old))).name).write_text(Path(session_log(str(trained["session"]))).read_text())
    from_log = read_epochs(str(old))
    assert [e["epoch"] for e in from_log] == [e["epoch"] for e in records] == [1, 2, 3]
    assert from_log[-1]["val"]["dice"] == pytest.approx(records[-1]["val"]["dice"], abs=1e-4)
    assert from_log[-1]["train"]["total"] == pytest.approx(records[-1]["train"]["total"], abs=1e-4)
    assert set(from_log[-1]["val"]) <= set(records[-1]["val"])  # the same keys: a drawing reads either


def test_python_api_predicts_at_the_image_size(trained, tmp_path):
    predictor = Predictor.from_checkpoint(trained["checkpoint"], device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8)  # grey, not square
    report = "Unilateral pulmonary infection, one infected area, middle left lung."
    result = predictor.predict(image, report)
    assert result.image.shape == (50, 70, 3) and result.probability.shape == result.mask.shape == (50, 70)
    assert set(np.unique(result.mask)) <= {0, 1}
    assert np.array_equal(result.mask, (result.probability > 0.5).astype(np.uint8))
    tokenizer = ReportTokenizer(predictor.config.token_len, predictor.config.pad_short_reports)
    assert result.words == tokenizer.token_strings(tokenizer([report]).tokens[0])
    assert "pulmonary" in result.words and "infection" in result.words
    assert len(result.word_weights) == len(result.words) and 0 < result.word_weights.sum() <= 1 + 1e-6
    short = predictor.predict(image, "No infection.")  # under 9 words: the model reads it with " EOF XXX" after it
    padded = tokenizer.token_strings(tokenizer(["No infection."]).tokens[0])
    assert predictor.config.pad_short_reports and "xxx" in padded
    assert short.words == ["no", "infection", "."] and len(short.word_weights) == 3  # the padding is no word
    assert result.patch_weights.shape == (2, 2) and result.patch_weights.sum() == pytest.approx(1, abs=1e-5)
    written = result.save(str(tmp_path / "out" / "case"))
    mask = cv2.imread(written[0], cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (50, 70) and set(np.unique(mask)) <= {0, 255}
    assert cv2.imread(written[1], cv2.IMREAD_GRAYSCALE).shape == (50, 70)
    assert cv2.imread(written[2]) is not None  # the figure with the words and patches of interest


def test_predict_equals_the_test_path_on_a_test_image(trained):
    """predict() prepares the image as the data loader does: at the model's size it gives test.py's mask."""
    from Load_Dataset import ImageToImage2D
    from utils.config import load_config

    dataset = ImageToImage2D(load_config("Config_Demo", trained["settings"]), "test")
    sample = dataset.samples[0]
    predictor = Predictor.from_checkpoint(trained["checkpoint"], device="cpu")
    image = cv2.resize(cv2.imread(str(sample.image_path)), (32, 32), interpolation=cv2.INTER_LINEAR)
    result = predictor.predict(image, sample.report)
    tokens = predictor.tokenizer([sample.report])
    assert torch.equal(tokens.tokens[0], dataset[0]["text_token"])
    assert torch.allclose(torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255, dataset[0]["image"])
    tensor = torch.from_numpy(image.transpose(2, 0, 1).copy()).float()[None] / 255
    logits = predictor(tensor, tokens.tokens, tokens.text_mask)
    assert np.array_equal(result.mask, (logits[0, 0] > 0).numpy().astype(np.uint8))


def test_predict_command_one_image(trained, tmp_path, capsys):
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), np.full((40, 60, 3), 90, np.uint8))
    out = tmp_path / "pred" / "scan"
    assert test_cli.main(["predict", "--checkpoint", trained["checkpoint"], "--image", str(image), "--text",
                          "No infection.", "--out", str(out), "--device", "cpu"]) == 0
    written = capsys.readouterr().out.split()
    assert written == [f"{out}_mask.png", f"{out}_prob.png", f"{out}_overlay.png"]
    assert cv2.imread(written[0], cv2.IMREAD_GRAYSCALE).shape == (40, 60)


def _predict_folder(trained, tmp_path, reports, out):
    """``test.py predict --images`` on plain images named as ``reports``' keys, with a CSV of their reports."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in reports:
        cv2.imwrite(str(folder / name), np.full((32, 32, 3), 120, np.uint8))
    table = tmp_path / "reports.csv"
    table.write_text("Image,Description\n" + "".join(f"{name},{text}\n" for name, text in reports.items()))
    return test_cli.main(["predict", "--checkpoint", trained["checkpoint"], "--images", str(folder), "--table",
                          str(table), "--out", str(out), "--no_progress"])


def test_predict_command_folder_with_a_table(trained, tmp_path, capsys):
    out = tmp_path / "pred"
    assert _predict_folder(trained, tmp_path, {"a.png": "Bilateral pulmonary infection.", "b.png": "No infection."},
                           out) == 0
    assert "2 image(s) predicted" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted(f"{s}_{k}.png" for s in "ab" for k in ("mask", "prob", "overlay"))


def test_predict_errors_name_the_file(trained, tmp_path, capsys):
    assert test_cli.main(["predict", "--checkpoint", trained["checkpoint"], "--image", str(tmp_path / "nope.png"),
                          "--text", "x", "--out", str(tmp_path / "o")]) == 2
    assert "nope.png" in capsys.readouterr().err
    folder = tmp_path / "images"
    folder.mkdir()
    table = tmp_path / "reports.csv"
    table.write_text("Image,Description\nmissing.png,a report\n")
    assert test_cli.main(["predict", "--checkpoint", trained["checkpoint"], "--images", str(folder), "--table",
                          str(table), "--out", str(tmp_path / "o")]) == 2
    assert "missing.png" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        test_cli.main(["predict", "--checkpoint", trained["checkpoint"], "--image", "x.png", "--out", "o"])


def test_test_vis_draws_words_and_patches_of_interest(trained, tmp_path):
    out = tmp_path / "vis"
    assert test_cli.main(["-c", "Config_Demo", "--set", *trained["settings"], "--checkpoint", trained["checkpoint"],
                          "--test_vis", "True", "--save_pred", str(out), "--no_progress"]) == 0
    figures = sorted((trained["session"] / "Demo_visualize_test").iterdir())
    assert len(figures) == 5 and all("_dice" in f.name for f in figures)
    picture = cv2.imread(str(figures[0]))
    assert picture.shape[1] >= 1100  # five panels: input, truth, prediction, probability, patches


def test_text_ablation_scores_true_shuffled_and_empty_reports(trained, capsys):
    assert test_cli.main(["-c", "Config_Demo", "--set", *trained["settings"], "--checkpoint", trained["checkpoint"],
                          "--text_ablation", "--no_progress"]) == 0
    printed = capsys.readouterr().out
    assert "text ablation, Dice per image (pooled):  true " in printed and " shuffled " in printed
    summary = json.loads((trained["session"] / "test_summary.json").read_text())
    ablation = summary["text_ablation"]
    assert set(ablation) == {"true", "shuffled", "empty", "demo"}  # a demo set: the oracle and interest shares too
    assert ablation["shuffled"]["unchanged"] == 0  # the demo's reports allow another text for every image
    assert "shuffled: reports deranged over different texts; 0 of 5 images kept their own text" in printed
    assert ablation["true"]["dice"] == pytest.approx(summary["dice"], abs=1e-6)  # the same model, the same reports
    assert all(ablation[k]["images"] == 5 for k in ("true", "shuffled", "empty"))
    demo = ablation["demo"]
    assert "every-blob oracle" in printed and "position words" in printed
    # The oracle's Dice, recomputed from the generator's blobs at the model's size (64 px set, 32 px model).
    from utils.data.demo import demo_cases

    expected = []
    for case in demo_cases(trained["root"], "test").values():
        truth = cv2.resize(case.mask, (32, 32), interpolation=cv2.INTER_LINEAR) > 0
        blobs = cv2.resize(case.blobs.astype(np.uint8) * 255, (32, 32), interpolation=cv2.INTER_LINEAR) > 0
        expected.append(2 * (truth & blobs).sum() / (truth.sum() + blobs.sum() + 1e-5))
    assert demo["oracle_every_blob"]["dice"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert 0 <= demo["woi_position"] <= 1 and 0 <= demo["poi_in_zones"] <= 1 and 0 < demo["poi_chance"] < 1


def test_a_plain_run_after_the_ablation_keeps_its_numbers_aside(trained, capsys):
    args = ["-c", "Config_Demo", "--set", *trained["settings"], "--checkpoint", trained["checkpoint"], "--no_progress"]
    assert test_cli.main(args + ["--text_ablation"]) == 0
    kept = json.loads((trained["session"] / commands.ABLATION_NAME).read_text())
    assert test_cli.main(args) == 0
    assert "text_ablation" not in json.loads((trained["session"] / commands.SUMMARY_NAME).read_text())
    # Not left beside the new summary, whose run did not make it: moved aside with the summary it belongs to.
    assert not (trained["session"] / commands.ABLATION_NAME).exists()
    latest = sorted((trained["session"] / "previous_tests").iterdir())[-1]
    again = json.loads((latest / commands.ABLATION_NAME).read_text())
    assert again == kept and set(kept) >= {"true", "shuffled", "empty", "checkpoint"}


def test_no_cuda_warning_unless_a_gpu_was_asked_for(trained, caplog, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level("WARNING"):
        assert commands.test_device(None, None).type == "cpu"
    assert "no CUDA" not in caplog.text
    with caplog.at_level("WARNING"):
        assert commands.test_device(None, "1").type == "cpu"
    assert "no CUDA device on this machine: --gpu 1 is ignored" in caplog.text


def test_help_names_predict(capsys):
    with pytest.raises(SystemExit):
        test_cli.main(["--help"])
    assert "python test.py predict" in capsys.readouterr().out


def test_predict_table_without_its_columns_says_what_image_means(trained, tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    table = tmp_path / "t.csv"
    table.write_text("name,report\na.png,x\n")
    assert test_cli.main(["predict", "--checkpoint", trained["checkpoint"], "--images", str(images), "--table",
                          str(table), "--out", str(tmp_path / "o"), "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert "'Image' (the image's file name)" in err and "mask" not in err


def test_demo_measures_only_on_a_demo_set(qata_set, trained):
    assert demo_cases_of(qata_set.test_dataset) is None
    assert demo_cases_of(f"{trained['root']}/Test_Folder") is not None


def test_figure_of_an_empty_report(tmp_path):
    from utils.inference.figures import draw_case

    image = np.zeros((32, 32, 3), np.uint8)
    draw_case(str(tmp_path / "f.png"), image, np.zeros((32, 32), np.float32), "", [], np.zeros(0),
              np.ones((2, 2)) / 4)
    assert cv2.imread(str(tmp_path / "f.png")) is not None


def test_predict_folder_refuses_outputs_that_would_collide(trained, tmp_path, capsys):
    assert _predict_folder(trained, tmp_path, {"a.png": "x", "a.jpg": "y"}, tmp_path / "o") == 2
    assert "overwrite each other" in capsys.readouterr().err


def test_empty_reports_of_the_ablation_hold_no_padding(trained, monkeypatch):
    from Load_Dataset import ImageToImage2D
    from utils.config import load_config

    config = load_config("Config_Demo", trained["settings"])
    predictor = Predictor.from_checkpoint(trained["checkpoint"], device="cpu")
    seen = []
    outputs = predictor.outputs
    monkeypatch.setattr(predictor, "outputs", lambda images, tokens, *rest, **kw: seen.append(tokens.clone())
                        or outputs(images, tokens, *rest, **kw))
    dataset = ImageToImage2D(config, "test")
    results = text_ablation(predictor, dataset, seed=0, progress=False)
    tokenizer = predictor.tokenizer
    assert len(seen) == 3 * len(dataset) and results["true"]["images"] == len(dataset)
    assert seen[-1][0, :3].tolist() == [tokenizer.sot_token_id, tokenizer.eot_token_id, 0]
    assert torch.equal(seen[0], dataset.text_tokens[:1])  # the true pass reads the stored tokens


# Writing results: never into the inputs, never over a file without --overwrite, earlier results kept -------------

def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_save_pred_never_writes_into_the_test_masks_and_never_overwrites(trained, tmp_path, capsys):
    labels = trained["root"] / "Test_Folder" / "labelcol"
    before = _digests(labels)
    args = ["-c", "Config_Demo", "--set", *trained["settings"], "--checkpoint", trained["checkpoint"], "--no_progress"]
    assert test_cli.main(args + ["--save_pred", str(labels)]) == 2
    assert "is inside the test split's masks" in capsys.readouterr().err
    assert _digests(labels) == before  # the ground truth is untouched
    out = tmp_path / "preds"
    assert test_cli.main(args + ["--save_pred", str(out)]) == 0
    assert test_cli.main(args + ["--save_pred", str(out)]) == 2
    assert "5 file(s) would be overwritten" in capsys.readouterr().err
    assert test_cli.main(args + ["--save_pred", str(out), "--overwrite"]) == 0


def test_a_second_test_keeps_the_first_ones_results_and_says_which_data_it_scored(trained, tmp_path, capsys):
    out = tmp_path / "results"
    args = ["-c", "Config_Demo", "--set", *trained["settings"], "--checkpoint", trained["checkpoint"], "--no_progress",
            "--out", str(out)]
    assert test_cli.main(args + ["--text_ablation"]) == 0
    first = json.loads((out / commands.SUMMARY_NAME).read_text())
    assert first["data"] == {"test_dataset": str(trained["root"] / "Test_Folder"), "images": 5, "data_sha256": None}
    assert test_cli.main(args) == 0  # a plain run: the ablation file of the first must not be left beside it
    archived = list((out / "previous_tests").iterdir())
    assert len(archived) == 1 and sorted(p.name for p in archived[0].iterdir()) == sorted(
        [commands.SUMMARY_NAME, commands.ABLATION_NAME, commands.PER_IMAGE_NAME])
    assert json.loads((archived[0] / commands.SUMMARY_NAME).read_text()) == first
    assert sorted(p.name for p in out.iterdir()) == sorted(["previous_tests", commands.SUMMARY_NAME,
                                                             commands.PER_IMAGE_NAME])


def test_predict_never_writes_into_its_images_folder_or_over_a_file(trained, tmp_path, capsys):
    reports = {"case1.png": "x", "a.png": "y", "a_mask.png": "z"}
    images = tmp_path / "images"
    assert _predict_folder(trained, tmp_path, reports, images) == 2  # --out is the --images folder
    assert "is inside the --images folder" in capsys.readouterr().err
    assert sorted(os.listdir(images)) == sorted(reports)  # nothing written there
    out = tmp_path / "out"
    out.mkdir()
    (out / "case1_mask.png").write_bytes(b"a mask of mine")
    table = tmp_path / "reports.csv"
    assert test_cli.main(["predict", "--checkpoint", trained["checkpoint"], "--images", str(images), "--table",
                          str(table), "--out", str(out), "--no_progress"]) == 2
    assert "1 file(s) would be overwritten" in capsys.readouterr().err
    assert os.listdir(out) == ["case1_mask.png"]  # refused before any prediction
    image = images / "a_mask.png"
    single = ["predict", "--checkpoint", trained["checkpoint"], "--image", str(image), "--text", "x"]
    assert test_cli.main(single + ["--out", str(images / "a"), "--overwrite"]) == 2  # a_mask.png is the input
    assert "would write over the input image" in capsys.readouterr().err
    assert test_cli.main(single + ["--out", str(out / "case1")]) == 2
    assert test_cli.main(single + ["--out", str(out / "case1"), "--overwrite"]) == 0


def test_reports_that_a_spreadsheet_would_run_are_written_as_text(trained, tmp_path):
    from conftest import read_rows, write_dataset, write_table

    write_dataset(tmp_path / "Covid19", "qata")
    table = tmp_path / "Covid19" / "Test_Folder" / "Test_text.xlsx"
    write_table(table, [(name, "@SUM(1+1)*cmd" if i == 0 else report)
                        for i, (name, report) in enumerate(read_rows(table))])
    out = tmp_path / "results"
    assert test_cli.main(["-c", "Config_Demo", "--set", *trained["settings"],
                          f"test_dataset={tmp_path / 'Covid19' / 'Test_Folder'}", "--checkpoint",
                          trained["checkpoint"], "--out", str(out), "--no_progress"]) == 0
    with open(out / commands.PER_IMAGE_NAME) as handle:
        reports = [row["report"] for row in csv.DictReader(handle)]
    assert reports[0] == "'@SUM(1+1)*cmd" and not reports[1].startswith("'")


def test_the_test_command_shows_the_data_checks_warnings(trained, tmp_path, capsys):
    from conftest import read_rows, write_dataset, write_table

    write_dataset(tmp_path / "Covid19", "qata")
    test_folder = tmp_path / "Covid19" / "Test_Folder"
    mask = next((test_folder / "labelcol").iterdir())
    truth = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 0
    cv2.imwrite(str(mask), np.where(truth, 255, 3).astype(np.uint8))  # a background of 3: all of it foreground
    table = test_folder / "Test_text.xlsx"
    write_table(table, [(name, "" if i == 1 else report) for i, (name, report) in enumerate(read_rows(table))])
    assert test_cli.main(["-c", "Config_Demo", "--set", *trained["settings"], f"test_dataset={test_folder}",
                          "--checkpoint", trained["checkpoint"], "--out", str(tmp_path / "results"),
                          "--no_progress"]) == 0
    err = capsys.readouterr().err
    assert "data [test] non_binary_mask" in err and "data [test] empty_report" in err


def test_save_pred_masks_have_the_size_of_the_mask_files(trained, tmp_path):
    out = tmp_path / "preds"
    assert test_cli.main(["-c", "Config_Demo", "--set", *trained["settings"], "--checkpoint", trained["checkpoint"],
                          "--save_pred", str(out), "--no_progress"]) == 0
    for mask in (trained["root"] / "Test_Folder" / "labelcol").iterdir():
        saved = cv2.imread(str(out / (mask.stem + ".png")), cv2.IMREAD_UNCHANGED)
        assert saved.shape == cv2.imread(str(mask), 0).shape == (64, 64)  # the model works at 32 px
        assert set(np.unique(saved)) <= {0, 255}


def test_predict_one_image_into_an_existing_folder_and_an_empty_out(trained, tmp_path, capsys):
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), np.full((40, 40, 3), 100, np.uint8))
    folder = tmp_path / "results"
    folder.mkdir()
    single = ["predict", "--checkpoint", trained["checkpoint"], "--image", str(image), "--text", "No infection."]
    assert test_cli.main(single + ["--out", str(folder)]) == 0
    assert sorted(os.listdir(folder)) == ["scan_mask.png", "scan_overlay.png", "scan_prob.png"]
    assert not (tmp_path / "results_mask.png").exists()
    assert test_cli.main(single + ["--out", str(tmp_path / "new") + os.sep]) == 0  # a trailing separator: a folder
    assert (tmp_path / "new" / "scan_mask.png").exists()
    with pytest.raises(SystemExit) as stopped:
        test_cli.main(single + ["--out", ""])
    assert stopped.value.code == 2 and "--out is empty" in capsys.readouterr().err


def test_predict_refuses_an_image_over_the_pixel_limit_given_by_set(trained, tmp_path, capsys):
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), np.full((40, 50, 3), 100, np.uint8))
    single = ["predict", "--checkpoint", trained["checkpoint"], "--image", str(image), "--text", "No infection.",
              "--out", str(tmp_path / "out")]
    assert test_cli.main(single + ["--set", "max_image_pixels=1000"]) == 2
    err = capsys.readouterr().err
    assert "scan.png is 50x40 (WxH), 2,000 pixels, over the limit of 1,000" in err and "Traceback" not in err
    assert not list(tmp_path.glob("out*"))
    assert test_cli.main(single + ["--set", "max_image_pixels=2000"]) == 0


def test_ctrl_c_during_predict_says_what_was_written_and_leaves_no_half_written_image(trained, tmp_path, capsys,
                                                                                       monkeypatch):
    from utils.inference import predictor as predictor_module

    calls = []
    predict = predictor_module.Predictor.predict

    def interrupted_on_the_third(self, *args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return predict(self, *args)

    monkeypatch.setattr(predictor_module.Predictor, "predict", interrupted_on_the_third)
    out = tmp_path / "out"
    reports = {f"{c}.png": "No infection." for c in "abcd"}
    assert _predict_folder(trained, tmp_path, reports, out) == 130
    err = capsys.readouterr().err
    assert "interrupted: 2 of 4 image(s) predicted, their files are in" in err and "Traceback" not in err
    assert sorted(os.listdir(out)) == sorted(f"{c}_{kind}.png" for c in "ab" for kind in ("mask", "prob", "overlay"))
    monkeypatch.setattr(predictor_module.Predictor, "predict", predict)

    def interrupted_drawing(*args, **kwargs):  # Ctrl-C while the third file of an image is written
        raise KeyboardInterrupt

    monkeypatch.setattr(predictor_module, "draw_case", interrupted_drawing)
    image = tmp_path / "images" / "a.png"
    assert test_cli.main(["predict", "--checkpoint", trained["checkpoint"], "--image", str(image), "--text", "x",
                          "--out", str(tmp_path / "single" / "a")]) == 130
    assert "interrupted: no prediction was written" in capsys.readouterr().err
    assert os.listdir(tmp_path / "single") == []  # the mask and probability written before it are removed


def test_ctrl_c_during_test_writes_nothing_and_keeps_the_earlier_results(trained, tmp_path, capsys, monkeypatch):
    out = tmp_path / "results"
    args = ["-c", "Config_Demo", "--set", *trained["settings"], "--checkpoint", trained["checkpoint"], "--no_progress",
            "--out", str(out), "--test_vis"]
    assert test_cli.main(args) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    score_split = commands.score_split

    def interrupted(predictor, dataset, loader, **kwargs):
        score_split(predictor, dataset, loader, **kwargs)  # every figure drawn, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "score_split", interrupted)
    assert test_cli.main(args + ["--save_pred", str(tmp_path / "preds")]) == 130
    err = capsys.readouterr().err
    assert f"interrupted: no result was written to {out} and its earlier results are as they were" in err
    assert "the masks written so far stay in" in err and "Traceback" not in err
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and sorted(os.listdir(out)) == sorted(
        [commands.SUMMARY_NAME, commands.PER_IMAGE_NAME, "Demo_visualize_test"])
