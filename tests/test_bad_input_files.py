"""Bad input files that cost too much, or that were accepted without a word (the bad-input family;
docs/RELIABILITY.md, "Resource limits" and "Silent traps closed"): images over the pixel limit, tables over the size
and row limits, broken or hostile XML, float masks, odd image shapes, empty masks, odd reports."""

import logging
import struct
import time
import tracemalloc
import zipfile
import zlib

import cv2
import numpy as np
import openpyxl.xml
import pytest
import torch
from conftest import write_dataset, write_table

import train_model
from nets import build_model
from tests.tiny import tiny_config
from utils.data import images as images_module
from utils.data.check import check_dataset
from utils.data.images import header_size, image_size, read_image, read_mask
from utils.data.records import DatasetError
from utils.data.tables import read_report_table
from utils.inference.predictor import Predictor


def _png_claiming(path, width, height):
    """A small PNG whose header claims ``width`` x ``height``: the header is all a size check may read."""
    data = bytearray(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    ihdr = data[12:29]  # type + 13 bytes of IHDR data
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


# Images ---------------------------------------------------------------------------------------------------------

def test_an_image_over_the_pixel_limit_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    large = _png_claiming(tmp_path / "large.png", 10000, 6000)
    bomb = _png_claiming(tmp_path / "bomb.png", 20000, 20000)
    assert header_size(large) == (10000, 6000)

    def no_decoding(*args):
        raise AssertionError("decoded a file that its header already refuses")

    monkeypatch.setattr(images_module.cv2, "imdecode", no_decoding)
    for read in (read_image, read_mask):
        with pytest.raises(DatasetError, match=r"large.png is 10000x6000 \(WxH\), 60,000,000 pixels, over the limit "
                                               r"of 50,000,000 .*--set max_image_pixels=N"):
            read(large)
        # Over Pillow's own limit: refused whatever the config says.
        with pytest.raises(DatasetError, match=r"bomb.png is refused before decoding: .*400000000 pixels.* Shrink or "
                                               "tile the image"):
            read(bomb, max_pixels=10**9)


def test_the_pixel_limit_is_raised_by_the_config_and_checked_after_decoding_where_no_header_is_read(tmp_path):
    path = tmp_path / "scan.png"
    cv2.imwrite(str(path), np.full((300, 200), 90, np.uint8))
    with pytest.raises(DatasetError, match="300 \\(WxH\\)|200x300"):
        read_image(path, max_pixels=50_000)
    assert read_image(path, max_pixels=60_000).shape == (300, 200, 3)
    hdr = tmp_path / "scan.hdr"  # Radiance HDR: OpenCV decodes it, Pillow does not; the limit holds after decoding
    cv2.imwrite(str(hdr), np.full((30, 20, 3), 0.5, np.float32))
    assert header_size(hdr) is None and image_size(hdr) == (20, 30)
    with pytest.raises(DatasetError, match="20x30 \\(WxH\\), 600 pixels, over the limit of 500"):
        read_image(hdr, max_pixels=500)


def test_the_data_check_and_training_refuse_an_image_over_the_limit(tmp_path, capsys):
    cfg = write_dataset(tmp_path / "Covid19")
    limited = cfg.replace(max_image_pixels=100)  # the test images are larger
    problems = [p for p in check_dataset(limited, ["train"]).problems if p.code == "unreadable_file"]
    assert problems and "over the limit of 100" in problems[0].message
    assert not [p for p in check_dataset(cfg, ["train"]).problems if p.code == "unreadable_file"]


def test_predicting_a_large_image_keeps_no_full_size_float_copies(tmp_path):
    """What predict + save costs per extra pixel of the image: a few bytes (the image, one float map, the mask),
    not the dozens that float64 rounding and full-size figure copies took."""
    torch.manual_seed(0)
    predictor = Predictor(build_model(tiny_config()), torch.device("cpu"))
    peaks = {}
    for side in (1000, 2400):
        path = tmp_path / f"scan{side}.png"
        picture = np.zeros((side, side), np.uint8)
        cv2.circle(picture, (side // 2, side // 2), side // 3, 200, -1)
        cv2.imwrite(str(path), picture)
        predictor.predict(path, "warm up").save(str(tmp_path / "warm"))
        tracemalloc.start()
        try:
            predictor.predict(path, "Bilateral pulmonary infection.").save(str(tmp_path / f"out{side}"))
            peaks[side] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert cv2.imread(str(tmp_path / f"out{side}_mask.png"), 0).shape == (side, side)
    per_pixel = (peaks[2400] - peaks[1000]) / (2400 ** 2 - 1000 ** 2)
    assert per_pixel < 12, per_pixel


def test_a_float_mask_above_255_is_scaled_with_a_warning_and_keeps_every_pixel(tmp_path, caplog):
    mask = np.zeros((100, 100), np.float32)
    mask[20:40, 20:49] = 255000.0
    mask[60, 60] = 3.0  # a faint pixel stays foreground
    path = tmp_path / "mask.tiff"
    assert cv2.imwrite(str(path), mask)
    with caplog.at_level(logging.WARNING):
        read = read_mask(path)
    assert (read > 0).sum() == (mask > 0).sum() == 581
    assert "mask.tiff holds floating-point values up to 255000: scaled by 255/255000" in caplog.text
    image = read_image(path)
    assert image.max() == 255 and image[30, 30, 0] == 255 and image[5, 5, 0] == 0


def test_odd_image_shapes_and_all_empty_masks_are_warned_about(tmp_path):
    cfg = write_dataset(tmp_path / "Covid19")
    train = tmp_path / "Covid19" / "Train_Folder"
    cv2.imwrite(str(train / "img" / "train_0.png"), np.zeros((1, 1, 3), np.uint8))
    cv2.imwrite(str(train / "labelcol" / "mask_train_0.png"), np.zeros((1, 1), np.uint8))
    cv2.imwrite(str(train / "img" / "train_1.png"), np.zeros((5000, 1, 3), np.uint8))
    cv2.imwrite(str(train / "labelcol" / "mask_train_1.png"), np.zeros((5000, 1), np.uint8))
    for mask in sorted((train / "labelcol").glob("*.png"))[2:]:
        cv2.imwrite(str(mask), np.zeros(cv2.imread(str(mask), 0).shape, np.uint8))
    report = check_dataset(cfg, ["train"])
    odd = sorted(p.message for p in report.problems if p.code == "odd_shape")
    assert len(odd) == 2 and "is 1x1 (WxH), under 16 pixels on a side" in odd[0]
    assert "is 1x5000 (WxH), under 16 pixels" in odd[1]
    empty = [p.message for p in report.problems if p.code == "all_masks_empty"]
    assert empty == ["all 4 masks of train are empty (no pixel above 0): there is nothing to segment; check that "
                     "labelcol/ holds the masks and not blank files"]
    assert not report.errors  # warnings: such data can be meant


# Tables ---------------------------------------------------------------------------------------------------------

def _xlsx(path, rows, extra_member=None, sheet_xml=None):
    """An .xlsx of ``rows``; optionally with one more zip member ``(name, bytes)`` or its sheet's XML replaced."""
    write_table(path, rows)
    if extra_member is None and sheet_xml is None:
        return path
    with zipfile.ZipFile(path) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    if sheet_xml is not None:
        members["xl/worksheets/sheet1.xml"] = sheet_xml
    if extra_member is not None:
        members[extra_member[0]] = extra_member[1]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in members.items():
            target.writestr(name, data)
    return path


ROWS = [("a.png", "Bilateral pulmonary infection."), ("b.png", "No infection.")]


def _only_error(table):
    assert not table.readable and len(table.problems) == 1
    return table.problems[0]


def test_a_table_that_unpacks_beyond_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = _xlsx(tmp_path / "t.xlsx", ROWS, extra_member=("xl/padding.xml", b" " * (3 * 2**20)))
    assert path.stat().st_size < 100_000
    problem = _only_error(read_report_table(path, "train", max_mib=2))
    assert problem.code == "table_too_large"
    assert "t.xlsx is 3 MiB uncompressed, over the limit of 2 MiB" in problem.message
    assert "--set max_table_mib=N" in problem.message
    assert read_report_table(path, "train", max_mib=4).readable
    big_csv = tmp_path / "t.csv"
    big_csv.write_text("Image,Description\n" + "a.png," + "x" * (2 * 2**20) + "\n")
    assert "over the limit of 1 MiB" in _only_error(read_report_table(big_csv, "train", max_mib=1)).message


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_a_table_over_the_row_limit_is_refused_without_reading_it_whole(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    write_table(path, [(f"{i}.png", "No infection.") for i in range(300)])
    assert read_report_table(path, "train", max_rows=300).readable
    problem = _only_error(read_report_table(path, "train", max_rows=299))
    assert problem.code == "table_too_large"
    assert "has more than 299 rows, the limit for a report table" in problem.message
    assert "--set max_table_rows=N" in problem.message


def test_the_default_row_limit_stops_a_huge_csv_early(tmp_path):
    path = tmp_path / "t.csv"
    with open(path, "w") as handle:
        handle.write("Image,Description\n")
        handle.write("a.png,x\n" * 3_000_000)
    start = time.perf_counter()
    problem = _only_error(read_report_table(path, "train"))
    assert "more than 200,000 rows" in problem.message
    assert time.perf_counter() - start < 10


def test_xlsx_xml_is_parsed_through_defusedxml():
    assert openpyxl.xml.DEFUSEDXML


def test_a_malformed_or_hostile_xlsx_is_one_line_in_training_and_leaves_no_session(tmp_path, capsys):
    cfg = write_dataset(tmp_path / "Covid19")
    table = tmp_path / "Covid19" / "Train_Folder" / "Train_Val_text.xlsx"
    broken = b'<?xml version="1.0"?><worksheet xmlns="x"><sheetData><row r="1"><c r="A1"'
    _xlsx(table, ROWS, sheet_xml=broken)
    problem = _only_error(read_report_table(table, "train+val"))
    assert problem.code == "unreadable_table" and "unclosed token: line 1, column 64" in problem.message
    laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
              b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1">'
              b'<c r="A1" t="inlineStr"><is><t>&lol2;</t></is></c></row></sheetData></worksheet>')
    _xlsx(table, ROWS, sheet_xml=laughs)
    problem = _only_error(read_report_table(table, "train+val"))
    assert problem.code == "unreadable_table" and "EntitiesForbidden" in problem.message
    output = tmp_path / "runs"
    settings = [f"train_dataset={cfg.train_dataset}", f"val_dataset={cfg.val_dataset}",
                f"test_dataset={cfg.test_dataset}", f"output_root={output}", "demo_data=False"]
    _xlsx(table, ROWS, sheet_xml=broken)
    assert train_model.main(["-c", "Config_Demo", "--set", *settings, "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Train_Val_text.xlsx cannot be read as a .xlsx table (" in err
    assert "unclosed token" in err
    assert list((output / "Demo" / "RecLMIS").iterdir()) == []


# Reports given to predict ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("report, fragment", [
    ("", "it is empty"),
    ("   ", "it is empty"),
    ("reports/case1.txt", "looks like a file path or name"),
    ("双肺感染，两处感染区域，左上肺和右下肺。", "most of its letters are not Latin"),
    ("Bilateral pulmonary infection. " * 400, "longer than token_len=18 tokens"),
])
def test_predict_warns_once_about_a_report_that_looks_wrong(report, fragment, caplog):
    torch.manual_seed(0)
    predictor = Predictor(build_model(tiny_config()), torch.device("cpu"))
    image = np.zeros((40, 40), np.uint8)
    with caplog.at_level(logging.WARNING):
        predictor.predict(image, report)
        predictor.predict(image, report)
    assert caplog.text.count(fragment) == 1, caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        predictor.predict(image, "Unilateral pulmonary infection, one infected area, middle left lung.")
    assert "report" not in caplog.text


def test_predict_warns_about_a_tiny_or_strip_image(caplog):
    torch.manual_seed(0)
    predictor = Predictor(build_model(tiny_config()), torch.device("cpu"))
    with caplog.at_level(logging.WARNING):
        result = predictor.predict(np.zeros((1, 5000), np.uint8), "No infection at all here.")
    assert result.mask.shape == (1, 5000)
    assert "the image is 5000x1 (WxH), under 16 pixels on a side; it is stretched to 32 x 32" in caplog.text
