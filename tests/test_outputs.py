"""Where a run may write (utils/outputs.py): never into its inputs, never over a file without --overwrite, earlier
results kept."""

import datetime
import os

import pytest

from utils.outputs import (
    PREVIOUS,
    OutputRefused,
    check_writable,
    csv_cell,
    keep_previous,
    refuse_inside,
    refuse_overwrite,
)


def test_an_output_in_or_under_an_input_folder_is_refused(tmp_path):
    labels = tmp_path / "Test_Folder" / "labelcol"
    labels.mkdir(parents=True)
    inputs = {"the test split's masks": labels}
    for output in (labels, labels / "preds", tmp_path / "Test_Folder" / "labelcol" / ".." / "labelcol"):
        with pytest.raises(OutputRefused, match="--save_pred .* is inside the test split's masks .*choose another"):
            refuse_inside(output, inputs, "--save_pred")
    link = tmp_path / "link"
    link.symlink_to(labels)
    with pytest.raises(OutputRefused):
        refuse_inside(link, inputs, "--save_pred")  # a link into the folder is the folder
    refuse_inside(tmp_path / "Test_Folder" / "labelcol2", inputs, "--save_pred")  # a sibling sharing a prefix is fine
    refuse_inside(tmp_path / "Test_Folder", inputs, "--out")  # the folder above holds the inputs, is not one


def test_existing_files_are_not_overwritten_without_the_flag(tmp_path):
    files = [tmp_path / f"{i}.png" for i in range(5)]
    for path in files[:4]:
        path.write_bytes(b"mine")
    with pytest.raises(OutputRefused, match=r"4 file\(s\) would be overwritten: .*0.png.* and 1 more; pass "
                                            "--overwrite"):
        refuse_overwrite(files, overwrite=False)
    refuse_overwrite(files, overwrite=True)
    refuse_overwrite(files[4:], overwrite=False)


def test_earlier_results_move_aside_together(tmp_path):
    (tmp_path / "test_summary.json").write_text("old")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(b"old")
    when = datetime.datetime(2026, 12, 3, 18, 0, 0, tzinfo=datetime.timezone.utc)
    moved = keep_previous(tmp_path, ["test_summary.json", "figures", "test_per_image.csv"], now=when)
    archive = tmp_path / PREVIOUS / "2026-12-03T18-00-00Z"
    assert moved == [str(archive / "test_summary.json"), str(archive / "figures")]
    assert (archive / "test_summary.json").read_text() == "old" and (archive / "figures" / "a.png").exists()
    assert not (tmp_path / "test_summary.json").exists() and not (tmp_path / "figures").exists()
    (tmp_path / "test_summary.json").write_text("newer")
    again = keep_previous(tmp_path, ["test_summary.json"], now=when)  # the same second: a second folder
    assert again == [str(tmp_path / PREVIOUS / "2026-12-03T18-00-00Z_2" / "test_summary.json")]
    assert keep_previous(tmp_path, ["test_summary.json"]) == []  # nothing there: nothing moved


def test_an_unwritable_results_folder_is_refused_before_the_work(tmp_path):
    check_writable(tmp_path / "new" / "results")
    assert os.listdir(tmp_path / "new" / "results") == []  # the probe leaves nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputRefused, match="cannot write results to .*file.*--out"):
        check_writable(tmp_path / "file" / "results")  # a folder under a file cannot be made


@pytest.mark.parametrize("text, expected", [
    ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"), ("+1", "'+1"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("Bilateral pulmonary infection.", "Bilateral pulmonary infection."), ("", ""),
])
def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(text, expected):
    assert csv_cell(text) == expected
