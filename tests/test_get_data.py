"""``python -m tools.get_data``: every source layout gives the same LViT layout, nothing is ever half-written or
overwritten, and a download address fails at once without a network, saying where to get the copies."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from test_data_sources import BUILDERS, COUNTS

from tools import get_data
from utils.data.records import Problem
from utils.data.sources import SOURCE_HINTS


def run(capsys, *args):
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    code = get_data.main(["qata", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(folder: Path):
    """Hidden entries (a .partial or download folder) in ``folder`` (none when it was never made)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


def written(target: Path):
    """What a written set holds: its files and the rows of its tables."""
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    tables = {name: sorted(pd.read_excel(target / name, dtype=str).itertuples(index=False, name=None))
              for name in ("Train_Folder/Train_Val_text.xlsx", "Test_Folder/Test_text.xlsx")}
    return files, tables


def clean_env(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def test_every_source_layout_gives_the_same_lvit_layout(tmp_path, capsys):
    results = {}
    for name, build in BUILDERS.items():
        source = build(tmp_path / "src" / name)
        target = tmp_path / "out" / name
        code, out, err = run(capsys, "--from", source, "--to", target, "--any-counts")
        assert code == 0, f"{name}: {err}"
        manifest = json.loads((target / "manifest.json").read_text())
        assert manifest["source_kind"] == name.replace("_layout", "")  # detected, no --layout given
        assert manifest["counts"] == COUNTS and manifest["source"] == str(source)
        assert manifest["data_sha256"] in out
        results[name] = (manifest["data_sha256"], written(target))
    assert leftovers(tmp_path / "out") == []
    hashes = {sha for sha, _ in results.values()}
    assert len(hashes) == 1, results
    files, tables = results["sgseg"][1]
    assert "Val_Folder/img/covid_7.png" in files and "Test_Folder/labelcol/mask_covid_10.png" in files
    assert len(tables["Train_Folder/Train_Val_text.xlsx"]) == COUNTS["train"] + COUNTS["val"]
    assert all(found == results["sgseg"][1] for _, found in results.values())


def test_lvit_counts_are_enforced_without_any_counts(tmp_path, capsys):
    source = BUILDERS["prolearn"](tmp_path / "src")
    code, _, err = run(capsys, "--from", source, "--to", tmp_path / "out" / "Covid19", "--layout", "prolearn")
    assert code == 2
    assert "8 pairs in train, expected 5716" in err and "expected 1429" in err and "expected 2113" in err
    assert not (tmp_path / "out" / "Covid19").exists() and leftovers(tmp_path / "out") == []


def test_the_target_is_never_overwritten(tmp_path, capsys):
    source = BUILDERS["lvit"](tmp_path / "src")
    target = tmp_path / "Covid19"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    code, _, err = run(capsys, "--from", source, "--to", target, "--any-counts")
    assert code == 2 and "already exists" in err
    assert [p.name for p in target.iterdir()] == ["mine.txt"] and (target / "mine.txt").read_text() == "keep me"


def test_a_failing_import_leaves_no_target_and_no_partial_folder(tmp_path, capsys, monkeypatch):
    # A source error: nothing is staged.
    source = BUILDERS["guidedecoder"](tmp_path / "src")
    mask = source / "QaTa-COV19-v2" / "Train" / "GTs" / "mask_covid_3.png"
    mask.rename(mask.with_name("moved.png"))
    code, _, err = run(capsys, "--from", source, "--to", tmp_path / "out" / "Covid19", "--any-counts")
    assert code == 2 and "mask_covid_3.png" in err and "missing_file" in err
    assert not (tmp_path / "out" / "Covid19").exists() and leftovers(tmp_path / "out") == []
    mask.with_name("moved.png").rename(mask)

    # The written set fails the data check inside the staging folder: the staging folder goes too.
    def failing_check(cfg, decode=None):
        staged = Path(cfg.train_dataset).parent
        assert staged.name == ".Covid19.partial" and (staged / "Train_Folder" / "img" / "covid_1.png").is_file()
        return SimpleNamespace(problems=[Problem("error", "broken", "train", "a check that fails on purpose")])

    monkeypatch.setattr("utils.data.importer.check_dataset", failing_check)
    code, _, err = run(capsys, "--from", source, "--to", tmp_path / "out" / "Covid19", "--any-counts")
    assert code == 2 and "a check that fails on purpose" in err
    assert not (tmp_path / "out" / "Covid19").exists() and leftovers(tmp_path / "out") == []


def test_an_unreachable_address_fails_at_once_with_the_hints(tmp_path, capsys, monkeypatch):
    clean_env(monkeypatch)
    start = time.monotonic()
    code, _, err = run(capsys, "--from", "http://127.0.0.1:9/x.zip", "--to", tmp_path / "Covid19")
    assert code == 2 and time.monotonic() - start < 5
    assert "127.0.0.1:9 cannot be reached" in err
    assert all(hint in err for hint in SOURCE_HINTS.values())
    assert list(tmp_path.iterdir()) == []  # the download folder is gone too

    code, _, err = run(capsys, "--from", "git@127.0.0.1:owner/repo.git", "--to", tmp_path / "Covid19")
    assert code == 2 and "127.0.0.1:22" in err


def test_offline_refuses_an_address_without_touching_the_network(tmp_path, capsys, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    for name in ("check_reachable", "urlopen", "clone_git"):
        monkeypatch.setattr(get_data, name, no_network)
    code, _, err = run(capsys, "--from", "https://github.com/ShuchangYe-bib/ProLearn", "--to",
                       tmp_path / "Covid19", "--offline")
    assert code == 2 and "--offline" in err and SOURCE_HINTS["prolearn"] in err
    assert not (tmp_path / "Covid19").exists() and leftovers(tmp_path) == []


def zip_bytes(folder: Path, top: str) -> bytes:
    """A zip of ``folder``'s files under the top folder ``top`` (as GitHub's archives are)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, f"{top}/{path.relative_to(folder)}")
    return buffer.getvalue()


def test_an_archive_address_is_downloaded_unpacked_and_imported(tmp_path, capsys, monkeypatch):
    payload = zip_bytes(BUILDERS["prolearn"](tmp_path / "src"), "ProLearn-main")
    asked = []
    monkeypatch.setattr(get_data, "check_reachable", lambda address, timeout=10: asked.append(address))
    monkeypatch.setattr(get_data, "urlopen", lambda address, timeout: io.BytesIO(payload))
    address = "https://example.org/ProLearn-main.zip"
    code, out, err = run(capsys, "--from", address, "--to", tmp_path / "out" / "Covid19", "--any-counts")
    assert code == 0, err
    assert asked == [address]
    manifest = json.loads((tmp_path / "out" / "Covid19" / "manifest.json").read_text())
    assert manifest["source"] == address and manifest["source_kind"] == "prolearn"
    assert manifest["counts"] == COUNTS
    assert leftovers(tmp_path / "out") == []


def test_file_addresses_local_archives_and_git_repositories(tmp_path, capsys):
    source = BUILDERS["sgseg"](tmp_path / "src")
    archive = tmp_path / "SGSeg-main.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.add(source, arcname="SGSeg-main")
    for i, address in enumerate((archive.as_uri(), str(archive))):
        code, _, err = run(capsys, "--from", address, "--to", tmp_path / f"out{i}" / "Covid19", "--any-counts")
        assert code == 0, err
        assert json.loads((tmp_path / f"out{i}" / "Covid19" / "manifest.json").read_text())["counts"] == COUNTS
        assert leftovers(tmp_path / f"out{i}") == []

    repo = BUILDERS["guidedecoder"](tmp_path / "repo")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "fake copy"], check=True)
    code, _, err = run(capsys, "--from", repo.as_uri(), "--to", tmp_path / "out_git" / "Covid19", "--any-counts")
    assert code == 0, err
    manifest = json.loads((tmp_path / "out_git" / "Covid19" / "manifest.json").read_text())
    assert manifest["source_kind"] == "guidedecoder" and manifest["counts"] == COUNTS
    assert leftovers(tmp_path / "out_git") == []

    code, _, err = run(capsys, "--from", (tmp_path / "no_repo").as_uri(), "--to", tmp_path / "out_bad" / "Covid19")
    assert code == 2 and "git clone" in err and leftovers(tmp_path / "out_bad") == []


@pytest.mark.parametrize("kind", ["zip_traversal", "zip_absolute", "tar_symlink", "tar_traversal"])
def test_an_archive_that_would_write_outside_its_folder_is_refused(tmp_path, capsys, kind):
    archive = tmp_path / ("bad.zip" if kind.startswith("zip") else "bad.tar")
    if kind.startswith("zip"):
        with zipfile.ZipFile(archive, "w") as bundle:
            bundle.writestr("top/ok.txt", "fine")
            bundle.writestr("top/../../evil.txt" if kind == "zip_traversal" else "/tmp/evil.txt", "evil")
    else:
        with tarfile.open(archive, "w") as bundle:
            info = tarfile.TarInfo("top/link" if kind == "tar_symlink" else "../evil.txt")
            if kind == "tar_symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc"
                bundle.addfile(info)
            else:
                info.size = 4
                bundle.addfile(info, io.BytesIO(b"evil"))
    out = tmp_path / "deep" / "out"
    code, _, err = run(capsys, "--from", archive, "--to", out / "Covid19")
    assert code == 2 and "is refused" in err
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()
    assert list(out.iterdir()) == []


def test_a_folder_of_no_known_layout_says_so(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "--from", tmp_path / "empty", "--to", tmp_path / "Covid19")
    assert code == 2 and "none of the known layouts" in err
    code, _, err = run(capsys, "--from", tmp_path / "missing", "--to", tmp_path / "Covid19")
    assert code == 2 and "is not a folder" in err and all(hint in err for hint in SOURCE_HINTS.values())
    assert not (tmp_path / "Covid19").exists()
