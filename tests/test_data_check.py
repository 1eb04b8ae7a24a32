"""The data checks: a clean folder passes, and each problem fires, naming its file or row, on a folder broken on
purpose."""

import shutil

import pytest
from conftest import read_rows, write_dataset, write_table

import Load_Dataset
from utils.data.check import check_dataset


def codes(report, severity=None):
    return {p.code for p in report.problems if severity is None or p.severity == severity}


def test_clean_sets_pass_with_counts(tmp_path):
    qata = write_dataset(tmp_path / "Covid19", "qata")
    report = check_dataset(qata)
    assert report.ok and report.problems == []
    assert {s: (v.images, v.masks, v.reports, v.pairs) for s, v in report.splits.items()} == {
        "train": (4, 4, 4, 4), "val": (2, 2, 2, 2), "test": (2, 2, 2, 2)}
    # One table serves train and val: it is read once and listed with both users.
    assert sorted(report.tables.values()) == [["test"], ["train", "val"]]

    monuseg = write_dataset(tmp_path / "MoNuSeg", "monuseg", table_ext=".csv")
    report = check_dataset(monuseg)
    assert report.ok and report.problems == []
    assert [s.name for s in report.indexes["test"].samples] == ["test_0.tif", "test_1.tif"]


# The problems beyond the bad-input contract (tests/test_bad_input.py). Each case breaks a clean QaTa-layout set
# in one way: (break(root), severity, code, text the message must hold).
def _drop(path):
    path.unlink()


def _rewrite_rows(root, edit):
    table = root / "Train_Folder" / "Train_Val_text.xlsx"
    write_table(table, edit(read_rows(table)))


def _set_report(rows, name, report):
    return [(n, report if n == name else r) for n, r in rows]


BREAKERS = {
    "missing table": (lambda r: _drop(r / "Test_Folder" / "Test_text.xlsx"), "error", "missing_table",
                      "Test_text.xlsx"),
    "missing columns": (lambda r: write_table(r / "Test_Folder" / "Test_text.xlsx", [("a.png", "x")],
                                              columns=("Name", "Text")), "error", "missing_columns", "Description"),
    "unreadable table": (lambda r: (r / "Test_Folder" / "Test_text.xlsx").write_bytes(b"not a zip"), "error",
                         "unreadable_table", "Test_text.xlsx"),
    "mask without image": (lambda r: _drop(r / "Train_Folder" / "img" / "train_3.png"), "error",
                           "mask_without_image", "mask_train_3.png"),
    "conflicting rows": (lambda r: _rewrite_rows(r, lambda rows: rows + [("mask_train_0.png", "Another report.")]),
                         "error", "conflicting_rows", "mask_train_0.png"),
    "duplicate row": (lambda r: _rewrite_rows(r, lambda rows: rows + [rows[0]]), "warning", "duplicate_row",
                      "mask_train_0.png"),
    "empty name": (lambda r: _rewrite_rows(r, lambda rows: rows + [("", "a report without a name")]), "warning",
                   "empty_name", "row 8"),
    "zero-byte mask": (lambda r: (r / "Val_Folder" / "labelcol" / "mask_val_1.png").write_bytes(b""), "error",
                       "unreadable_file", "mask_val_1.png"),
    "QaTa mask naming": (lambda r: (r / "Train_Folder" / "labelcol" / "mask_train_0.png").rename(
        r / "Train_Folder" / "labelcol" / "train_0.png"), "error", "bad_mask_name", "train_0.png"),
    "two images with one stem": (lambda r: shutil.copy(r / "Train_Folder" / "img" / "train_0.png",
                                                       r / "Train_Folder" / "img" / "train_0.jpg"), "error",
                                 "ambiguous_pair", "train_0.jpg"),
    "stray file": (lambda r: (r / "Val_Folder" / "img" / "notes.txt").write_text("x"), "warning", "ignored_file",
                   "notes.txt"),
}


@pytest.mark.parametrize("case", list(BREAKERS))
def test_each_problem_fires_and_names_its_file(tmp_path, case):
    breaker, severity, code, needle = BREAKERS[case]
    cfg = write_dataset(tmp_path / "Covid19", "qata")
    breaker(tmp_path / "Covid19")
    report = check_dataset(cfg)
    found = [p for p in report.problems if p.code == code]
    assert found, f"{case}: no {code} in {report.problems}"
    assert all(p.severity == severity for p in found)
    assert any(needle in p.message for p in found), [p.message for p in found]
    # Errors make the set untrainable; warnings are reported but allow training.
    assert report.ok == (severity == "warning")
    assert (code in report.format()) and (needle in report.format())


def test_shared_table_rows_count_for_every_split_that_uses_it(tmp_path):
    cfg = write_dataset(tmp_path / "Covid19", "qata")
    # Checking train alone: the val rows of Train_Val_text.xlsx belong to Val_Folder, not "unused".
    assert check_dataset(cfg, ["train"]).problems == []
    # With Val_Folder gone, the val rows name no file anywhere.
    shutil.rmtree(tmp_path / "Covid19" / "Val_Folder")
    unused = [p for p in check_dataset(cfg, ["train"]).problems if p.code == "row_without_file"]
    assert sorted(p.message.split("'")[1] for p in unused) == ["mask_val_0.png", "mask_val_1.png"]
    assert {p.split for p in unused} == {"train+val"}


def test_hints_for_common_mistakes(tmp_path):
    # LViT's folder name instead of the authors' task name.
    write_dataset(tmp_path / "QaTa-Covid19", "qata")
    cfg = write_dataset(tmp_path / "elsewhere", "qata").replace(
        train_dataset=str(tmp_path / "Covid19" / "Train_Folder"), val_dataset=str(tmp_path / "Covid19" / "Val_Folder"),
        test_dataset=str(tmp_path / "Covid19" / "Test_Folder"))
    message = next(p.message for p in check_dataset(cfg).problems if p.code == "missing_folder")
    assert "ln -s QaTa-Covid19" in message

    # A stem-paired set (MosMedData+/MoNuSeg) checked with QaTa pairing.
    mon = write_dataset(tmp_path / "MoNuSeg", "monuseg")
    report = check_dataset(mon.replace(pairing="qata"))
    assert "pairing='stem'" in next(p.message for p in report.problems if p.code == "bad_mask_name")

    # Per-split tables where the config expects QaTa's shared one.
    report = check_dataset(mon.replace(train_text="Train_Val_text.xlsx"), ["train"])
    assert "Train_text.xlsx" in next(p.message for p in report.problems if p.code == "missing_table")

    # A table that names the image instead of the mask.
    qata = write_dataset(tmp_path / "q2", "qata")
    _rewrite_rows(tmp_path / "q2", lambda rows: [("train_0.png" if n == "mask_train_0.png" else n, r)
                                                 for n, r in rows])
    message = next(p.message for p in check_dataset(qata).problems if p.code == "missing_row")
    assert "mask_train_0.png" in message and "'train_0.png'" in message


def test_csv_tables_must_be_utf8(tmp_path):
    cfg = write_dataset(tmp_path / "MoNuSeg", "monuseg", table_ext=".csv")
    (tmp_path / "MoNuSeg" / "Val_Folder" / "Val_text.csv").write_bytes(
        "Image,Description\nval_0.png,Opacité\n".encode("latin-1"))
    problem = next(p for p in check_dataset(cfg).problems if p.code == "unreadable_table")
    assert "Val_text.csv" in problem.message and "UTF-8" in problem.message


def test_decode_false_skips_file_checks(tmp_path):
    cfg = write_dataset(tmp_path / "Covid19", "qata")
    (tmp_path / "Covid19" / "Train_Folder" / "img" / "train_0.png").write_bytes(b"")
    report = check_dataset(cfg, decode=False)
    assert report.ok and "not decoded" in report.format()
    assert "unreadable_file" in codes(check_dataset(cfg, decode=True))


def test_many_problems_of_one_kind_are_summarised(tmp_path):
    cfg = write_dataset(tmp_path / "Covid19", "qata", counts={"train": 14, "val": 1, "test": 1})
    for mask in (tmp_path / "Covid19" / "Train_Folder" / "labelcol").iterdir():
        mask.unlink()
    text = check_dataset(cfg).format(max_per_kind=10)
    assert text.count("image_without_mask: ") == 11 and "... and 4 more like this" in text


def test_cli_prints_counts_and_exits_by_verdict(tmp_path, capsys):
    write_dataset(tmp_path / "Covid19", "qata")
    assert Load_Dataset.main(["--check", str(tmp_path / "Covid19"), "-c", "Config_QaTa"]) == 0
    out = capsys.readouterr().out
    assert "split  images  masks  reports  pairs" in out and "OK:" in out
    assert out.splitlines()[2].split()[:5] == ["train", "4", "4", "4", "4"]

    write_dataset(tmp_path / "MoNuSeg", "monuseg")
    assert Load_Dataset.main(["--check", str(tmp_path / "MoNuSeg"), "-c", "Config_MoNuSeg"]) == 0
    capsys.readouterr()

    (tmp_path / "Covid19" / "Val_Folder" / "img" / "val_0.png").unlink()
    assert Load_Dataset.main(["--check", str(tmp_path / "Covid19")]) == 1
    out = capsys.readouterr().out
    assert "mask_without_image" in out and "mask_val_0.png" in out and "FAILED" in out

    assert Load_Dataset.main(["--check", str(tmp_path / "Covid19"), "-c", "Config_Nope"]) == 2
    assert "unknown config" in capsys.readouterr().err
