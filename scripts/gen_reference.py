"""Regenerate the docs' settings, extra_params and CLI references from the code (one declaration each).

    python scripts/gen_reference.py          # rewrite docs/configuration.md's tables and docs/cli-reference.md
    python scripts/gen_reference.py --check  # exit 1 if they differ from the code (tests/test_docs.py does this)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.cli.reference import generated_docs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check; exit 1 when a file is stale")
    args = ap.parse_args()
    stale = []
    for path, text in generated_docs(ROOT / "docs").items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.write_text(text)
    verb = "stale" if args.check else "rewrote"
    print(f"{verb}: {', '.join(map(str, stale))}" if stale else "the references match the code")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
