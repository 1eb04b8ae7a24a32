"""Bad input, one case per test: the contract of what a user sees. docs/RELIABILITY.md lists the same cases in the
same order. Each test breaks one thing and checks the message names the file, row or key and how to fix it.

One file across modules, and over 400 lines, on purpose: it is the executable form of that document's table.
"""

import hashlib
import logging
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest
import torch
from conftest import read_rows, write_dataset, write_table

import test as test_cli
import train_model
from Load_Dataset import ImageToImage2D
from nets import build_model
from nets.text_encoder import VIT_B32_SHA256, CLIPTextEncoder, TextTowerShape, build_text_encoder
from nets.weights import save_authors_format
from tests.tiny import Payload, tiny_config, write_clip_file
from utils.checkpoints import BEST_NAME, LATEST_NAME, build_model_from_checkpoint
from utils.config import load_config
from utils.data.check import check_dataset
from utils.data.demo import make_demo_dataset
from utils.data.images import read_image, read_mask
from utils.data.records import DatasetError
from utils.data.tables import unsafe_name_reason
from utils.data.tokenizer import ReportTokenizer
from utils.sessions import create_session_dir
from utils.weights_io import read_checkpoint


def _qata(tmp_path):
    return write_dataset(tmp_path / "Covid19", "qata"), tmp_path / "Covid19"


def _problems(cfg, code):
    report = check_dataset(cfg)
    return report, [p for p in report.problems if p.code == code]


def _set_train_rows(root, edit):
    table = root / "Train_Folder" / "Train_Val_text.xlsx"
    write_table(table, edit(read_rows(table)))


def _set_report(root, mask_name, report):
    _set_train_rows(root, lambda rows: [(n, report if n == mask_name else r) for n, r in rows])


# Data folders ---------------------------------------------------------------------------------------------------

def test_missing_data_folder(tmp_path):
    cfg, root = _qata(tmp_path)
    shutil.rmtree(root / "Test_Folder")
    report, found = _problems(cfg, "missing_folder")
    assert not report.ok and "Test_Folder" in found[0].message
    with pytest.raises(DatasetError, match="Test_Folder"):
        report.raise_if_errors()


def test_partial_data_folder(tmp_path):
    cfg, root = _qata(tmp_path)
    shutil.rmtree(root / "Val_Folder" / "labelcol")
    report, found = _problems(cfg, "missing_folder")
    assert not report.ok and "labelcol" in found[0].message


def test_row_without_file(tmp_path):
    cfg, root = _qata(tmp_path)
    _set_train_rows(root, lambda rows: rows + [("mask_ghost.png", "a report")])
    report, found = _problems(cfg, "row_without_file")
    assert report.ok and found[0].severity == "warning" and "mask_ghost.png" in found[0].message


def test_file_without_row(tmp_path):
    cfg, root = _qata(tmp_path)
    _set_train_rows(root, lambda rows: [r for r in rows if r[0] != "mask_train_1.png"])
    report, found = _problems(cfg, "missing_row")
    assert not report.ok and "mask_train_1.png" in found[0].message


def test_image_without_mask(tmp_path):
    cfg, root = _qata(tmp_path)
    (root / "Train_Folder" / "labelcol" / "mask_train_2.png").unlink()
    report, found = _problems(cfg, "image_without_mask")
    assert not report.ok and "train_2.png" in found[0].message


def test_corrupt_image(tmp_path):
    cfg, root = _qata(tmp_path)
    (root / "Train_Folder" / "img" / "train_1.png").write_bytes(b"garbage" * 10)
    report, found = _problems(cfg, "unreadable_file")
    assert not report.ok and "train_1.png" in found[0].message


def test_zero_byte_image(tmp_path):
    cfg, root = _qata(tmp_path)
    (root / "Train_Folder" / "img" / "train_0.png").write_bytes(b"")
    report, _ = _problems(cfg, "unreadable_file")
    with pytest.raises(DatasetError, match=r"img/train_0\.png is empty \(0 bytes\)"):
        report.raise_if_errors()


def test_non_binary_mask_is_binarised_with_a_warning(tmp_path):
    cfg, root = _qata(tmp_path)
    grey = np.tile(np.arange(0, 240, 5, dtype=np.uint8), (40, 1))
    cv2.imwrite(str(root / "Test_Folder" / "labelcol" / "mask_test_0.png"), grey)
    report, found = _problems(cfg, "non_binary_mask")
    assert report.ok and found[0].severity == "warning" and "value > 0" in found[0].message
    label = ImageToImage2D(cfg, "test")[0]["label"]
    assert set(label.unique().tolist()) <= {0, 1}


def test_mask_of_another_size(tmp_path):
    cfg, root = _qata(tmp_path)
    cv2.imwrite(str(root / "Train_Folder" / "labelcol" / "mask_train_0.png"), np.zeros((20, 20), np.uint8))
    report, found = _problems(cfg, "size_mismatch")
    assert not report.ok and "mask_train_0.png" in found[0].message


# Reports --------------------------------------------------------------------------------------------------------

def test_empty_report_loads_with_a_warning(tmp_path):
    cfg, root = _qata(tmp_path)
    _set_report(root, "mask_train_0.png", "")
    report, found = _problems(cfg, "empty_report")
    assert report.ok and "mask_train_0.png" in found[0].message
    sample = ImageToImage2D(cfg, "train", augment=False)[0]
    assert sample["text"] == "" and int(sample["text_mask"].sum()) >= 2  # start and end tokens at least


def test_non_ascii_report_is_ftfy_normalised_emoji_included(tmp_path):
    tokenizer = ReportTokenizer(18, pad_short_reports=False)
    garbled = tokenizer(["Opacity in the lungâ€™s base 😀"]).tokens  # UTF-8 read as cp1252, as in many tables
    clean = tokenizer(["Opacity in the lung's base 😀"]).tokens
    assert torch.equal(garbled, clean)
    cfg, root = _qata(tmp_path)
    _set_report(root, "mask_train_1.png", "Opacité 😀 肺\nsecond line")
    assert check_dataset(cfg).ok
    assert ImageToImage2D(cfg, "train", augment=False)[1]["text"] == "Opacité 😀 肺\nsecond line"


def test_report_longer_than_token_len_is_cut_and_counted(tmp_path, caplog):
    cfg, root = _qata(tmp_path)
    _set_report(root, "mask_train_0.png", "Patchy ground glass opacity " * 20)
    with caplog.at_level(logging.INFO):
        dataset = ImageToImage2D(cfg, "train")
    assert dataset.n_truncated == 1 and "1 report(s) longer than token_len=18 are cut" in caplog.text
    tokens = dataset[0]["text_token"]
    assert tokens[-1] == ReportTokenizer(18).eot_token_id and (tokens != 0).all()


def test_huge_report_does_not_break_loading(tmp_path):
    cfg = write_dataset(tmp_path / "MoNuSeg", "monuseg", table_ext=".csv")
    table = tmp_path / "MoNuSeg" / "Train_Folder" / "Train_text.csv"
    rows = read_rows(table)
    huge = "Dense nuclei cluster. " * 50_000  # 1.1 MB in one cell
    write_table(table, [(rows[0][0], huge)] + rows[1:])
    report = check_dataset(cfg)
    assert report.ok and report.splits["train"].cut_reports == 1
    assert ImageToImage2D(cfg, "train", augment=False)[0]["text_token"].shape == (cfg.token_len,)


def test_formula_cell_reads_as_empty_and_does_not_break_the_table(tmp_path):
    cfg, root = _qata(tmp_path)
    table = root / "Train_Folder" / "Train_Val_text.xlsx"
    book = openpyxl.load_workbook(table)
    book.active["B2"] = '=CONCATENATE("a", "b")'  # a formula with no saved value
    book.active["B3"] = 12345
    book.save(table)
    report = check_dataset(cfg)
    assert report.ok
    reports = {s.mask_path.name: s.report for s in report.indexes["train"].samples}
    assert reports["mask_train_0.png"] == "" and reports["mask_train_1.png"] == "12345"


def test_file_names_that_leave_the_data_folder_are_refused(tmp_path):
    for name in ("../x.png", "..", "/etc/passwd", "sub/x.png", "..\\x.png", "C:x.png", "a\x00.png"):
        assert unsafe_name_reason(name) is not None, name
    for name in ("x.png", "a..b.png", "émoji 😀.png"):
        assert unsafe_name_reason(name) is None, name
    cfg, root = _qata(tmp_path)
    _set_train_rows(root, lambda rows: rows + [("../../etc/passwd", "x"), ("/etc/shadow", "y")])
    report, found = _problems(cfg, "unsafe_name")
    assert not report.ok and {"../../etc/passwd", "/etc/shadow"} <= {p.message.split("'")[1] for p in found}


# Configs --------------------------------------------------------------------------------------------------------

def test_config_with_an_unknown_key(capsys):
    with pytest.raises(KeyError, match="known key") as caught:
        load_config("Config_QaTa", ["epochz=3"])
    assert str(caught.value).startswith("unknown config key 'epochz' (did you mean 'epochs'?)")
    assert "seed" not in str(caught.value)  # the closest names, not all of them
    assert train_model.main(["-c", "Config_QaTa", "--set", "lerning_rate=1e-3", "zzz=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'lerning_rate' (did you mean 'learning_rate'?), 'zzz';"), err


def test_config_with_a_wrong_type():
    with pytest.raises(TypeError, match="expects int"):
        load_config("Config_QaTa", ["epochs=3.5"])


def test_img_size_not_a_multiple_of_16():
    with pytest.raises(ValueError, match="multiple of 16"):
        load_config("Config_QaTa", ["img_size=100"])


def test_unknown_config_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="Config_MosMed"):
        load_config("Config_Nope")


# Weights and checkpoints ----------------------------------------------------------------------------------------

def test_missing_clip_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        build_text_encoder(str(tmp_path / "ViT-B-32.pt"), TextTowerShape())
    message = str(error.value)
    assert "nets/ViT-B-32.pt" in message and VIT_B32_SHA256 in message and "clip_weights=None" in message
    assert "openai/clip-vit-base-patch32" in message and "open_clip" in message  # the sources that work today


def test_wrong_hash_clip_file_warns_with_both_hashes(tmp_path, caplog):
    shape = TextTowerShape(width=32, layers=1, heads=1, embed_dim=32)
    path = tmp_path / "ViT-B-32.pt"
    torch.save(CLIPTextEncoder(shape).state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="nets.text_encoder"):
        build_text_encoder(str(path), shape)
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"has sha256 {actual}, not the published {VIT_B32_SHA256}" in caplog.text


def test_checkpoint_from_another_config_lists_the_mismatched_tensors(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_authors_format(build_model(tiny_config(base_channel=6)), str(path))
    with pytest.raises(ValueError) as error:
        build_model_from_checkpoint(str(path), tiny_config(base_channel=4, rec_trans_num_layers1=2))
    message = str(error.value)
    assert f"inc.conv.weight: {path} [6, 3, 3, 3] vs model [4, 3, 3, 3]" in message
    assert "rec_img_trans1.decoder1.decoder_layers.1.fc1.weight" in message  # missing from the file


def test_resume_after_the_clip_file_changed(tmp_path, capsys):
    """The latest checkpoint leaves out the frozen text tower (rebuilt from clip_weights): resuming with another
    CLIP file than the run started with is refused, and the checkpoint stays as it was."""
    root = make_demo_dataset(tmp_path / "Demo", n_train=4, n_val=2, n_test=2, img_size=64, seed=1)
    clip = write_clip_file(tmp_path / "clip.pt")
    output = tmp_path / "runs"
    settings = ["img_size=32", "base_channel=4", "rec_trans_num_layers1=1", "batch_size=2", "num_workers=0",
                "demo_data=False", f"train_dataset={root}/Train_Folder", f"val_dataset={root}/Val_Folder",
                f"test_dataset={root}/Test_Folder", f"output_root={output}", f"clip_weights={clip}", "epochs=1"]
    assert train_model.main(["-c", "Config_Demo", "--set", *settings, "--no_progress"]) == 0
    (session,) = list((output / "Demo" / "RecLMIS").iterdir())
    latest = session / "models" / LATEST_NAME
    before = latest.read_bytes()
    write_clip_file(clip, seed=1)
    capsys.readouterr()
    assert train_model.main(["-c", "Config_Demo", "--resume", session.name, "--set", f"output_root={output}",
                             "epochs=2", "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert f"{latest} leaves out the frozen CLIP text tower, to be rebuilt from '{clip}'" in err
    assert "Put back the CLIP file the run started with" in err
    assert latest.read_bytes() == before


@pytest.fixture(scope="module")
def one_epoch_session(tmp_path_factory):
    """A tiny demo session trained one epoch (a best and a latest checkpoint); tests copy it before breaking it."""
    tmp = tmp_path_factory.mktemp("one_epoch")
    root = make_demo_dataset(tmp / "Demo", n_train=4, n_val=2, n_test=2, img_size=64, seed=1)
    settings = ["img_size=32", "base_channel=4", "clip_width=32", "clip_layers=1", "clip_heads=1",
                "text_embed_dim=32", "rec_trans_num_layers1=1", "batch_size=2", "num_workers=0", "demo_data=False",
                "tensorboard_images=0", f"train_dataset={root}/Train_Folder", f"val_dataset={root}/Val_Folder",
                f"test_dataset={root}/Test_Folder", f"output_root={tmp / 'runs'}", "epochs=1"]
    assert train_model.main(["-c", "Config_Demo", "--set", *settings, "--no_progress"]) == 0
    (session,) = list((tmp / "runs" / "Demo" / "RecLMIS").iterdir())
    assert (session / "models" / BEST_NAME).exists(), "epoch 1 scored val Dice 0: no best checkpoint to test with"
    return session, settings[:-2]


def _cut_short(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("break_best", [None, "cut short", "one byte changed"])
def test_resume_from_a_truncated_latest_checkpoint_says_whether_the_best_is_intact(one_epoch_session, tmp_path,
                                                                                   capsys, break_best):
    """The latest checkpoint cut short (a copy torn in transfer, a disk error): resuming is refused, and the
    message says whether the best checkpoint still serves (it is checked byte for byte against its zip CRCs)."""
    pristine, settings = one_epoch_session
    output = tmp_path / "runs"
    session = output / "Demo" / "RecLMIS" / pristine.name
    shutil.copytree(pristine, session)
    latest, best = session / "models" / LATEST_NAME, session / "models" / BEST_NAME
    _cut_short(latest)
    if break_best == "cut short":
        _cut_short(best)
    elif break_best == "one byte changed":
        data = bytearray(best.read_bytes())
        data[len(data) // 2] ^= 0xFF  # inside the tensors' bytes: torch would read the file without a word
        best.write_bytes(bytes(data))
    epoch = read_checkpoint(str(pristine / "models" / BEST_NAME))["epoch"] + 1
    capsys.readouterr()
    assert train_model.main(["-c", "Config_Demo", "--resume", session.name, "--set", f"output_root={output}",
                             "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot resume: '{latest}' is not a readable torch checkpoint")
    if break_best is None:
        assert (f"; the best checkpoint {best} (epoch {epoch}, val Dice 0." in err and ") is intact: test it with "
                f"python test.py -c Config_Demo -t {session}, or start a new run" in err)
        # What the message advises works: the best checkpoint is tested.
        assert test_cli.main(["-c", "Config_Demo", "--set", *settings, f"output_root={output}", "-t", str(session),
                              "--no_progress"]) == 0
    else:
        assert f"; the best checkpoint is unreadable too: '{best}' " in err and err.endswith("; start a new run\n")
        assert "is intact" not in err


def test_checkpoint_carrying_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "payload": Payload(str(marker))}, path)
    with pytest.raises(ValueError, match="refusing to load"):
        read_checkpoint(str(path))
    assert not marker.exists()


def test_clip_file_carrying_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "clip.pt"
    torch.save({"ln_final.weight": torch.zeros(2), "payload": Payload(str(marker))}, path)
    with pytest.raises(ValueError, match="refusing to load"):
        build_text_encoder(str(path), TextTowerShape())
    assert not marker.exists()


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        read_checkpoint(str(junk))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt' is not a readable torch checkpoint"):
        read_checkpoint(str(empty))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(str(tmp_path / "nope.pt"))


def _broken_files(folder):
    """Files that are not checkpoints, each a way a user gets one: name -> path."""
    rng = np.random.default_rng(0)
    good = folder / "good.pth.tar"
    torch.save({"state_dict": {"w": torch.arange(4096.0)}, "epoch": 3}, good)
    legacy = folder / "legacy.pth.tar"
    torch.save({"state_dict": {"w": torch.arange(4096.0)}}, legacy, _use_new_zipfile_serialization=False)
    files = {
        "empty": b"",
        "three bytes": rng.bytes(3),
        "random 100 bytes": rng.bytes(100),
        "random 10 kB": rng.bytes(10_000),
        "text": b"epoch,dice\n1,0.5\n" * 50,
        "json": b'{"state_dict": {"w": [1, 2, 3]}}',
        "html error page": b"<html><body>404 Not Found</body></html>",
        "png": cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes(),
        "legacy magic then junk": pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + rng.bytes(64),
    }
    for share in (0.1, 0.5, 0.99):
        files[f"zip cut at {share:.0%}"] = good.read_bytes()[:int(good.stat().st_size * share)]
        files[f"legacy cut at {share:.0%}"] = legacy.read_bytes()[:int(legacy.stat().st_size * share)]
    archive = folder / "notes.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("notes.txt", "not a model")
    files["zip of a text file"] = archive.read_bytes()
    paths = {}
    for name, content in files.items():
        path = folder / (name.replace(" ", "_").replace("%", "pc") + ".pth.tar")
        path.write_bytes(content)
        paths[name] = path
    paths["folder"] = folder / "a_folder.pth.tar"
    paths["folder"].mkdir()
    return paths


BROKEN = ["empty", "three bytes", "random 100 bytes", "random 10 kB", "text", "json", "html error page", "png",
          "legacy magic then junk", "zip cut at 10%", "zip cut at 50%", "zip cut at 99%", "legacy cut at 10%",
          "legacy cut at 50%", "legacy cut at 99%", "zip of a text file", "folder"]


@pytest.mark.parametrize("kind", BROKEN)
def test_every_file_that_is_not_a_checkpoint_gets_one_clear_message(tmp_path, capsys, kind):
    path = _broken_files(tmp_path)[kind]
    with pytest.raises(ValueError, match=re.escape(f"{str(path)!r} is not a readable torch checkpoint")):
        read_checkpoint(str(path))
    for main, args in ((test_cli.main, ["-c", "Config_Demo", "--checkpoint", str(path)]),
                       (test_cli.main, ["predict", "--checkpoint", str(path), "--image", str(path), "--text", "x",
                                        "--out", str(tmp_path / "o")])):
        assert main(args) == 2, kind
        err = capsys.readouterr().err
        assert f"{str(path)!r} is not a readable torch checkpoint" in err and "Traceback" not in err, err


# Files torch reads that hold something else than a RecLMIS checkpoint: name -> what torch.save wrote.
NOT_RECLMIS = {
    "a tensor": lambda: torch.zeros(3),
    "a list": lambda: [1, 2, 3],
    "a dict of numbers": lambda: {"epoch": 3},
    "state_dict of a number": lambda: {"state_dict": 5},
    "state_dict with a string": lambda: {"state_dict": {"w": "x"}},
    "another model's state dict": lambda: {"conv.weight": torch.zeros(2, 2)},
}


@pytest.mark.parametrize("kind", list(NOT_RECLMIS))
def test_every_torch_file_that_is_not_a_reclmis_checkpoint_gets_one_clear_message(tmp_path, capsys, kind):
    path = tmp_path / "model.pth.tar"
    torch.save(NOT_RECLMIS[kind](), path)
    for args in (["-c", "Config_Demo", "--checkpoint", str(path)],
                 ["predict", "--checkpoint", str(path), "--image", str(path), "--text", "x", "--out",
                  str(tmp_path / "o")]):
        assert test_cli.main(args) == 2, kind
        err = capsys.readouterr().err
        assert f"{str(path)!r} is not a checkpoint of this project's networks: " in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_old_format_checkpoints_still_load(tmp_path):
    paths = _broken_files(tmp_path)
    assert read_checkpoint(str(tmp_path / "legacy.pth.tar"))["state_dict"]["w"].shape == (4096,)
    assert read_checkpoint(str(tmp_path / "good.pth.tar"))["epoch"] == 3
    assert len(paths) == len(BROKEN)


# Command line ---------------------------------------------------------------------------------------------------

def test_a_run_whose_data_check_fails_leaves_no_session_behind(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run from another folder than the repository: relative paths land here, and say so
    output = tmp_path / "runs"
    settings = ["train_dataset=nowhere/Train_Folder", "val_dataset=nowhere/Val_Folder",
                "test_dataset=nowhere/Test_Folder", "output_root=runs", "demo_data=False"]
    for _ in range(2):
        assert train_model.main(["-c", "Config_Demo", "--set", *settings, "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "nothing was trained: the new session folder" in err
    assert f"working directory {tmp_path}; data {tmp_path}/nowhere/Train_Folder" in err
    assert f"session {output}/Demo/RecLMIS/session_" in err
    assert list((output / "Demo" / "RecLMIS").iterdir()) == []  # no empty session, not even its log


def test_session_that_does_not_exist_lists_the_sessions(tmp_path, capsys):
    output = tmp_path / "runs"
    create_session_dir(str(output), "Demo")
    assert test_cli.main(["-c", "Config_Demo", "--set", f"output_root={output}", "-t", "session_nope"]) == 2
    message = capsys.readouterr().err
    assert "session_nope" in message and "session_" in message.split("sessions there:")[1]
    assert train_model.main(["-c", "Config_Demo", "--set", f"output_root={output}", "--resume", "session_nope"]) == 2
    assert "sessions there:" in capsys.readouterr().err


def test_a_session_of_another_task_says_which_config_to_add(tmp_path, capsys):
    output = tmp_path / "runs"
    session = Path(create_session_dir(str(output), "Demo")).name
    assert test_cli.main(["--set", f"output_root={output}", "-t", session]) == 2  # the default config: QaTa
    err = capsys.readouterr().err
    assert f"no session {session!r} under" in err
    assert "It is a session of task 'Demo', not 'Covid19': add -c Config_Demo" in err


def test_gpu_index_the_machine_does_not_have(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    path = tmp_path / "model.pth.tar"
    save_authors_format(build_model(tiny_config()), str(path))
    assert test_cli.main(["-c", "Config_Demo", "--checkpoint", str(path), "--gpu", "3"]) == 2
    assert "device 'cuda:3' does not exist: this machine has 1 CUDA device(s)" in capsys.readouterr().err
    assert train_model.main(["-c", "Config_Demo", "--device", "cuda:3"]) == 2
    assert "device 'cuda:3' does not exist" in capsys.readouterr().err


def test_a_12_bit_image_in_a_16_bit_png_is_scaled_with_a_warning(tmp_path, caplog):
    ramp = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (8, 1))  # a 12-bit radiograph as 16-bit PNG
    path = tmp_path / "xray12.png"
    assert cv2.imwrite(str(path), ramp)
    with caplog.at_level(logging.WARNING):
        image = read_image(path)
    assert image.shape == (8, 64, 3) and image.max() == 255 and image[0, 32, 0] == ramp[0, 32] >> 4
    assert "xray12.png is a 16-bit image whose values use 12 bits" in caplog.text
    full = tmp_path / "xray16.png"
    assert cv2.imwrite(str(full), (ramp.astype(np.uint32) * 16).astype(np.uint16))  # all 16 bits in use
    caplog.clear()
    assert read_image(full)[0, 32, 0] == (int(ramp[0, 32]) * 16) >> 8 and "16-bit" not in caplog.text
    mask = tmp_path / "mask12.png"
    assert cv2.imwrite(str(mask), (ramp > 2000).astype(np.uint16) * 4095)
    assert (read_mask(mask) > 0).sum() == (ramp > 2000).sum()  # never emptied
