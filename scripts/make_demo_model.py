#!/usr/bin/env python3
"""Write the demo model (real f5-tts classes, seeded random weights) into a directory.

.venv/bin/python scripts/make_demo_model.py /tmp/models/demo [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from f5worker.models.demo import build_demo_model
from f5worker.models.manifest import read_manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = build_demo_model(args.out_dir, seed=args.seed)
    manifest = read_manifest(out)
    assert manifest is not None
    for entry in manifest.files:
        logging.info("%-28s %9d  %s", entry.path, entry.size, entry.sha256[:16])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
