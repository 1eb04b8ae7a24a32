"""Fetch pretrained weights the model can use, check them, and print the setting that uses them.

    python -m tools.get_weights clip-vit-b32 [--to nets/clip-vit-base-patch32] [--cache_dir DIR] [--offline]

Downloads from the Hugging Face hub with ``huggingface_hub`` (an optional dependency: ``pip install
huggingface_hub``), copies the files to ``--to``, loads them as our CLIP text tower to check them, and prints
``--set clip_weights=...``. Without a network (or with ``--offline`` / ``HF_HUB_OFFLINE=1``) it uses the hub's
local cache, and when the files are not there it fails at once with the places to get them by hand.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import List, Optional

from nets.text_encoder import TextTowerShape, load_clip_text_state

# name -> (hub repository, files to fetch, the tower shape the files must give)
WEIGHTS = {
    "clip-vit-b32": ("openai/clip-vit-base-patch32", ["config.json", "model.safetensors"], TextTowerShape()),
}
BY_HAND = ("Get CLIP ViT-B/32 by hand from any of: the Hugging Face hub's openai/clip-vit-base-patch32 (the folder "
           "with config.json and model.safetensors); open_clip's ViT-B-32 'openai' weights; OpenAI's ViT-B-32.pt "
           "(docs/USAGE.md, 'CLIP weights'). Then --set clip_weights=<that file or folder>.")


class WeightsError(RuntimeError):
    """The weights could not be fetched or are not what was asked for; the message says what to do."""


def fetch(name: str, to: str, cache_dir: Optional[str] = None, offline: bool = False) -> str:
    """Fetch ``name``'s files into the folder ``to`` (from the hub, or its local cache when offline); returns
    ``to``. Raises :class:`WeightsError`."""
    repo, files, _ = WEIGHTS[name]
    try:  # optional: only this command needs it
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise WeightsError(f"this command needs huggingface_hub: pip install huggingface_hub. {BY_HAND}") from None
    offline = offline or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        snapshot = snapshot_download(repo, allow_patterns=files, cache_dir=cache_dir, local_files_only=offline)
    except LocalEntryNotFoundError:
        raise WeightsError(f"{repo} is not in the hub's local cache{f' ({cache_dir})' if cache_dir else ''} and "
                           f"this run is offline. {BY_HAND}") from None
    except (HfHubHTTPError, OSError) as error:  # no network, a proxy, a hub error
        raise WeightsError(f"could not download {repo} ({type(error).__name__}: {error}). {BY_HAND}") from None
    missing = [f for f in files if not os.path.isfile(os.path.join(snapshot, f))]
    if missing:
        raise WeightsError(f"{repo} came without {missing}. {BY_HAND}")
    os.makedirs(to, exist_ok=True)
    for file in files:
        shutil.copyfile(os.path.join(snapshot, file), os.path.join(to, file))
    return to


def check(name: str, path: str) -> TextTowerShape:
    """Load ``path`` as our text tower; returns its shape. Raises :class:`WeightsError` if it is not ``name``'s."""
    state = load_clip_text_state(path)
    shape = TextTowerShape.from_state_dict(state)
    expected = WEIGHTS[name][2]
    if shape != expected:
        raise WeightsError(f"{path} loads as a CLIP text tower of {shape}, not {name}'s {expected}")
    return shape


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch and check pretrained weights.")
    parser.add_argument("name", choices=sorted(WEIGHTS), help="what to fetch")
    parser.add_argument("--to", help="folder to put the files in (default nets/<repository name>)")
    parser.add_argument("--cache_dir", help="the hub's cache folder (default: huggingface_hub's)")
    parser.add_argument("--offline", action="store_true", help="use the local cache only (as HF_HUB_OFFLINE=1)")
    args = parser.parse_args(argv)
    to = args.to or os.path.join("nets", WEIGHTS[args.name][0].split("/")[-1])
    try:
        fetch(args.name, to, args.cache_dir, args.offline)
        shape = check(args.name, to)
    except (WeightsError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{to}: CLIP text tower, width {shape.width}, {shape.layers} layers, output {shape.embed_dim}")
    print(f"use it with: --set clip_weights={to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
