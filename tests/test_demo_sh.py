"""demo.sh, the README's first command: a training that fails stops the demo with that one error."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_failed_training_stops_the_demo_before_testing(tmp_path):
    done = subprocess.run(["sh", os.path.join(ROOT, "demo.sh"), "--set", "nokey=1"], cwd=tmp_path,
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "unknown config key 'nokey'" in done.stderr
    assert done.stderr.count("error") == 1, done.stderr  # train_model.py's alone: test.py never ran
    assert not list(tmp_path.iterdir())  # run from another folder, it wrote nothing there
