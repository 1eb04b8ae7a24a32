"""The documented Python snippets run as written from another folder, with the repository put on the path as
docs/USAGE.md says (sys.path.insert or PYTHONPATH); the layer diagram of docs/ARCHITECTURE.md names every module;
the README stays a front door."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name: str) -> str:
    return open(os.path.join(ROOT, name), encoding="utf-8").read()


def _snippet(title: str, page: str = "docs/USAGE.md") -> str:
    """The first ```python block after the heading ``title`` of ``page``."""
    text = _read(page)
    section = text[text.index(title):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_model_snippet_runs_from_another_folder(tmp_path):
    code = f"import sys\nsys.path.insert(0, {ROOT!r})\n" + _snippet("## The model")
    code += "\nassert probs.shape == (1, 1, cfg.img_size, cfg.img_size)\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # Without the repository on the path it fails as the page warns.
    done = subprocess.run([sys.executable, "-c", _snippet("## The model")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "No module named 'nets'" in done.stderr


def test_the_layer_diagram_names_every_module():
    """docs/ARCHITECTURE.md: each module of nets/, utils/ and tools/ appears in the diagram, in the line of its
    folder (its layer)."""
    section = _read("docs/ARCHITECTURE.md")
    diagram = re.search(r"```\n(.*?)```", section, re.S).group(1)
    entries = {}  # folder -> the diagram text from its name to the next layer number
    for match in re.finditer(r"((?:nets|utils/\w+|tools)/) \(([^)]*)\)", diagram):
        entries[match.group(1)] = {name.strip() for name in match.group(2).replace("\n", " ").split(",")}
    missing = []
    for folder in ("nets/", "utils/data/", "utils/training/", "utils/inference/", "tools/"):
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith(".py") and name != "__init__.py" and name[:-3] not in entries.get(folder, set()):
                missing.append(folder + name)
    for name in sorted(os.listdir(os.path.join(ROOT, "utils"))):
        if name.endswith(".py") and name != "__init__.py" and f"utils/{name}" not in diagram:
            missing.append(f"utils/{name}")
    assert missing == []


def test_the_readme_is_a_front_door_whose_links_resolve():
    """Under 200 lines of at most 120 characters (a picture's line aside), and every relative link and picture it
    shows exists."""
    readme = _read("README.md")
    lines = readme.splitlines()
    assert len(lines) < 200
    assert [line for line in lines if len(line) > 120 and not line.startswith("![")] == []
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith(("http://", "https://")):
            assert os.path.exists(os.path.join(ROOT, target)), target
    assert "## Two commands" in readme and readme.count("```bash\npip install") == 2
