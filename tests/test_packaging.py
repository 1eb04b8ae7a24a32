"""pyproject.toml's metadata: `pip install .` takes requirements.txt, `.[hf]` requirements-hf.txt, and the Python
version is checked (docs/INSTALL.md, "Dependencies"). Read back from pip's own metadata build, not from the file."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _requirements(name):
    lines = open(os.path.join(ROOT, name), encoding="utf-8").read().splitlines()
    return [re.sub(r"\s+", "", line.split("#")[0]) for line in lines if line.split("#")[0].strip()]


def test_pip_reads_the_requirements_files_and_the_python_bound(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation",
                           "--ignore-installed", "--quiet", "--report", str(report), ROOT],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metadata = json.loads(report.read_text())["install"][0]["metadata"]
    assert metadata["requires_python"] == ">=3.11"
    assert metadata["provides_extra"] == ["hf"]
    required = [re.sub(r"\s+", "", r) for r in metadata["requires_dist"]]
    assert [r for r in required if "extra" not in r] == _requirements("requirements.txt")
    assert [r.split(";")[0] for r in required if "extra" in r] == _requirements("requirements-hf.txt")


def test_no_training_output_is_tracked():
    """Sessions belong to the user's output folders: no checkpoint, model folder or TensorBoard event file is in
    the repository (one session's checkpoints weigh tens of MB)."""
    if not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout: nothing is tracked")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True,
                           timeout=60).stdout.splitlines()
    outputs = [name for name in files if name.endswith((".pt", ".pth", ".pth.tar")) or "tfevents" in name
               or "/models/" in name]
    assert outputs == []
