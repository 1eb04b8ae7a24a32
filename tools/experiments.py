"""What the experiment commands (``tools.language_table``, ``tools.qata_table``) share: running a step with its log,
the record file of finished runs, and mean ± spread."""

from __future__ import annotations

import json
import os
import subprocess
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_logged(command: List[str], env: dict, log_path: str) -> str:
    """Run ``command`` in the repository with stderr to ``log_path``; its stdout, or RuntimeError on failure."""
    with open(log_path, "w") as log:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with status {done.returncode}; see {log_path}")
    return done.stdout


def read_records(path: str) -> List[dict]:
    """The records of the runs that finished, one JSON object per line of ``path`` (none when it is missing)."""
    if not os.path.isfile(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def mean_spread(values: List[float], digits: int = 3) -> str:
    """``mean ± sample standard deviation``; the mean alone for one value or values that are all the same."""
    mean = sum(values) / len(values)
    if len(values) == 1 or max(values) == min(values):
        return f"{mean:.{digits}f}"
    spread = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"
