"""Write QaTa-COV19 with LViT's reports and split in the layout ``Config_QaTa`` reads, from a copy that exists today.

    python -m tools.get_data qata --from PATH [--layout sgseg] [--to datasets/Covid19] [--any-counts]

``--from`` is a local folder holding one of the source layouts of :mod:`utils.data.sources` (``--layout`` names
it; by default the folder's contents decide). The set is written, checked (LViT's 5716 / 1429 / 2113 pairs, every
image with a mask and a report, masks, sizes, duplicates, case collisions) and renamed into place only when it
passes, with ``manifest.json``. The source folder is only read. Exit 0: written; 2: nothing written, with the reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from utils.data.importer import write_layout
from utils.data.records import DatasetError
from utils.data.sources import LVIT_QATA_COUNTS, SOURCE_HINTS, SOURCES, read_source
from utils.logger import setup_logging


def detect_layout(folder: Path) -> Optional[str]:
    """The first registered layout whose reader finds its files in ``folder`` without an error of its kind."""
    for kind in SOURCES:
        read = read_source(kind, folder)
        if not any(p.code == "not_this_source" for p in read.problems):
            return kind
    return None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.get_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["qata"], help="the data set to write")
    parser.add_argument("--from", dest="source", required=True, help="a local folder holding a source copy")
    parser.add_argument("--layout", choices=sorted(SOURCES), help="the source's layout (default: detected)")
    parser.add_argument("--to", default="datasets/Covid19", help="the data set folder to create (must not exist)")
    parser.add_argument("--any-counts", action="store_true",
                        help="accept split sizes other than LViT's 5716 / 1429 / 2113 (a partial or custom copy)")
    args = parser.parse_args(argv)
    setup_logging()
    source = Path(args.source)
    if not source.is_dir():
        hints = "\n".join(f"  {kind}: {hint}" for kind, hint in SOURCE_HINTS.items())
        print(f"error: {source} is not a folder. Get one of these copies by hand, then pass its folder:\n{hints}",
              file=sys.stderr)
        return 2
    kind = args.layout or detect_layout(source)
    if kind is None:
        print(f"error: {source} holds none of the known layouts ({', '.join(sorted(SOURCES))}); pass --layout to "
              "see what is missing", file=sys.stderr)
        return 2
    try:
        manifest = write_layout(read_source(kind, source), Path(args.to), str(source), kind,
                                None if args.any_counts else LVIT_QATA_COUNTS)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = manifest["counts"]
    print(f"wrote {args.to} from the {kind} copy at {source}: train {counts['train']}, val {counts['val']}, "
          f"test {counts['test']} pairs; data_sha256 {manifest['data_sha256']} (manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
