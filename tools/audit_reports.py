"""Know a data set's reports before trusting them: distinct reports, where each position word's masks lie, zones.

    python -m tools.audit_reports -c Config_QaTa [--split test] [--set KEY=VALUE ...] [--top 15] [--json FILE]

Reads the split's reports and masks through the config (every mask decoded once) and prints
:func:`utils.data.audit.format_audit`; ``--json`` also writes the numbers. docs/QATA.md has QaTa-COV19's findings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import List, Optional

from utils.cli import add_config_flags
from utils.config import load_config
from utils.data.audit import audit_split, format_audit
from utils.data.files import load_split_index
from utils.data.records import ERROR, SPLITS
from utils.outputs import refuse_overwrite


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.audit_reports", description=__doc__.split("\n\n")[0])
    add_config_flags(parser, device=False)
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--top", type=int, default=15, help="most frequent reports to list (default 15)")
    parser.add_argument("--json", help="also write the numbers to this JSON file (a new file, unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="let --json replace a file already there")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        if args.json:
            refuse_overwrite([args.json], args.overwrite)
    except (FileNotFoundError, KeyError, TypeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    index, table = load_split_index(cfg, args.split)
    errors = [p for p in table.problems + index.problems if p.severity == ERROR]
    if errors or not index.samples:
        first = errors[0].message if errors else f"no complete sample in {index.paths.folder}"
        print(f"error: the {args.split} split cannot be read: {first}\nRun `python Load_Dataset.py --check <data set "
              "folder> -c <config>` for the full report.", file=sys.stderr)
        return 2
    audit = audit_split(index.samples, seed=cfg.seed)
    print(f"{args.split} split of {index.paths.folder}")
    print(format_audit(audit, args.top))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"split": args.split, "folder": str(index.paths.folder), **dataclasses.asdict(audit)}, handle,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
