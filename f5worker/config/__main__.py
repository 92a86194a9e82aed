"""`python -m f5worker.config --markdown`: print docs/configuration.md's generated tables (paste
them between its markers; tests/unit/test_readme.py says when they drifted)."""

from __future__ import annotations

import sys

from f5worker.config.table import settings_markdown

if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m f5worker.config --markdown")
    print(settings_markdown())
