"""Report tables: ``.xlsx`` or ``.csv`` files of ``Image`` (the mask's file name) and ``Description`` (the report).

Which table serves which split is config (``train_text`` ...), resolved relative to the split folder unless
absolute; QaTa-COV19 keeps train and val reports in one ``Train_Val_text.xlsx``. A table's problems are reported as
:class:`utils.data.records.Problem` records, never raised, so that a check can list them all at once.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional
from xml.etree.ElementTree import ParseError

import pandas as pd

from utils.config import Config
from utils.data.records import ERROR, IMAGE_COLUMN, REPORT_COLUMN, TABLE_EXTENSIONS, WARNING, Problem, ReportTable


def unsafe_name_reason(name: str) -> Optional[str]:
    """Why ``name`` is not a plain file name inside a folder, or None when it is.

    A table row may only name a file in the split's ``labelcol/``: separators, ``..``, absolute paths and drive
    letters would let a row point outside the data folder.
    """
    if "\x00" in name:
        return "it contains a NUL character"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if name in (".", ".."):
        return "it is a relative path"
    if len(name) >= 2 and name[1] == ":":
        return "it starts with a drive letter"
    return None


def _quote(text: str, limit: int = 60) -> str:
    """``text`` shortened for a message."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _first_cause(error: BaseException) -> str:
    """``Type: message`` of the innermost exception behind ``error`` on one line: openpyxl wraps the XML parser's
    error (a ParseError, or defusedxml's EntitiesForbidden) in a generic ValueError."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return f"{type(error).__name__}: " + " ".join(str(error).split())


def _table_size_problem(path: Path, suffix: str, max_mib: int) -> Optional[str]:
    """Why ``path`` is too large to read (its bytes, an .xlsx's uncompressed members summed), or None."""
    limit = max_mib * 2**20
    if suffix == ".csv":
        size = path.stat().st_size
    else:
        with zipfile.ZipFile(path) as archive:
            size = sum(member.file_size for member in archive.infolist())
    if size <= limit:
        return None
    what = "" if suffix == ".csv" else " uncompressed"
    return (f"{path} is {size / 2**20:,.0f} MiB{what}, over the limit of {max_mib:,} MiB for a report table; "
            "remove what is not a report from it, or raise the limit with --set max_table_mib=N")


def read_report_table(path: Path, split_label: str, names: str = "the mask's file name",
                      max_rows: int = Config.max_table_rows, max_mib: int = Config.max_table_mib) -> ReportTable:
    """Read a report table (``.xlsx``, first sheet, or ``.csv`` in UTF-8) into ``{mask name: report}``.

    Every cell is read as text, so a number or a formula cannot break it (a formula reads as the value the
    spreadsheet program saved with it, or as empty when none was saved). Rows that are blank in both columns are
    skipped. Rows with a problem are left out of ``reports`` and reported: a name that is not a plain file name
    (error, refused), an empty name (warning), the same name twice with different reports (error) or with the
    same report (warning), an empty report (warning; the sample is trained with an empty report).

    Args:
        path: the table file.
        split_label: the split(s) using the table, for the problems (``"train+val"``).
        names: what the ``Image`` column holds, for the messages: the mask's file name in a data set's tables,
            the image's in a table for ``test.py predict``.
        max_rows, max_mib: limits (``Config.max_table_rows`` and ``max_table_mib``): a table over either is
            refused before it is read whole, so a small file cannot exhaust the memory or the time. XML inside an
            .xlsx is parsed through defusedxml (openpyxl uses it when installed), which refuses entity expansion.

    Returns:
        The table; ``readable`` is False, with one error in ``problems``, when the file is missing, is not
        ``.xlsx``/``.csv``, cannot be parsed or lacks a column.
    """
    table = ReportTable(path=path)

    def problem(severity: str, code: str, message: str) -> None:
        table.problems.append(Problem(severity, code, split_label, message))

    if not path.is_file():
        problem(ERROR, "missing_table", _missing_table_message(path))
        return table
    suffix = path.suffix.lower()
    if suffix not in TABLE_EXTENSIONS:
        problem(ERROR, "unreadable_table",
                f"{path}: report tables must be .xlsx or .csv, not {path.suffix!r}; save it as one of those")
        return table
    try:
        too_large = _table_size_problem(path, suffix, max_mib)
        if too_large:
            problem(ERROR, "table_too_large", too_large)
            return table
        # One row past the limit is read, to tell a table at the limit from one over it; no more.
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", nrows=max_rows + 1)
        else:
            frame = pd.read_excel(path, sheet_name=0, dtype=str, keep_default_na=False, engine="openpyxl",
                                  nrows=max_rows + 1)
    except UnicodeDecodeError as error:
        problem(ERROR, "unreadable_table", f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                                           "save the table as UTF-8 CSV or as .xlsx")
        return table
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, ParseError) as error:
        # pandas and openpyxl raise these for a corrupt, empty or mislabelled file; ParseError for broken XML
        # inside an .xlsx, defusedxml's errors (ValueErrors) for entity tricks.
        problem(ERROR, "unreadable_table", f"{path} cannot be read as a {suffix} table ({_first_cause(error)}); "
                                           "open it in a spreadsheet program and save it again as .xlsx or UTF-8 "
                                           ".csv")
        return table
    if len(frame) > max_rows:
        problem(ERROR, "table_too_large", f"{path} has more than {max_rows:,} rows, the limit for a report table; "
                                          "split it, or raise the limit with --set max_table_rows=N")
        return table
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in (IMAGE_COLUMN, REPORT_COLUMN) if c not in frame.columns]
    if missing:
        problem(ERROR, "missing_columns",
                f"{path} lacks the column(s) {missing} (it has {list(frame.columns)}); the header row must name "
                f"'{IMAGE_COLUMN}' ({names}) and '{REPORT_COLUMN}' (the report)")
        return table
    table.readable = True
    names = frame[IMAGE_COLUMN].fillna("").astype(str).tolist()
    reports = frame[REPORT_COLUMN].fillna("").astype(str).tolist()
    table.n_rows = len(names)
    for i, (raw_name, raw_report) in enumerate(zip(names, reports)):
        row = i + 2  # the spreadsheet row: 1 is the header
        name, report = raw_name.strip(), raw_report.strip()
        if not name and not report:
            continue
        where = f"{path.name} row {row}"
        if not name:
            problem(WARNING, "empty_name", f"{where} has a report but an empty {IMAGE_COLUMN} cell; the row is "
                                           "ignored")
            continue
        reason = unsafe_name_reason(name)
        if reason is not None:
            problem(ERROR, "unsafe_name",
                    f"{where}: {IMAGE_COLUMN} {_quote(name)} is refused because {reason}; it must be the bare file "
                    "name of a mask in labelcol/")
            continue
        if name in table.reports:
            first = table.rows[name]
            if table.reports[name] == report:
                problem(WARNING, "duplicate_row", f"{where} repeats row {first} ({_quote(name)}, same report); "
                                                  "one is used")
            else:
                problem(ERROR, "conflicting_rows",
                        f"{path.name} rows {first} and {row} give {_quote(name)} different reports "
                        f"({_quote(table.reports[name], 40)} vs {_quote(report, 40)}); keep one row")
            continue
        if not report:
            problem(WARNING, "empty_report",
                    f"{where} ({_quote(name)}) has an empty {REPORT_COLUMN}; the sample is trained with an empty "
                    "report. (A formula whose value was never saved reads as empty: open and save the table in a "
                    "spreadsheet program.)")
        table.reports[name] = report
        table.rows[name] = row
    return table


def _missing_table_message(path: Path) -> str:
    message = f"report table {path} does not exist"
    folder = path.parent
    if folder.is_dir():
        found = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in TABLE_EXTENSIONS)
        if found:
            message += (f"; {folder} holds {found}: set the config's <split>_text to the right one (QaTa keeps train "
                        "and val reports in Train_Folder/Train_Val_text.xlsx; MosMedData+ and MoNuSeg have "
                        "Train_text.xlsx, Val_text.xlsx and Test_text.xlsx)")
            return message
    return message + "; download the reports (datasets/README.md) and put the table there, or fix <split>_text"
