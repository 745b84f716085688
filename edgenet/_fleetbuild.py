"""Build step of ``make pyz-fleet``: keep only the S3 part of botocore's data.

botocore ships the API models of every AWS service (~20 MB, 400+ services);
the fleet speaks S3 alone. This removes every other service's model from an
installed site-packages folder before shiv packs it, and the S3 examples, which
botocore never loads at run time. The endpoint and partition tables, the retry
and default configurations stay (botocore loads them for any client).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

KEEP_SERVICES = frozenset({"s3"})


def prune(site: Path) -> int:
    """Remove the unused models under ``site/botocore/data``; returns bytes removed."""
    data = site / "botocore" / "data"
    if not data.is_dir():
        raise SystemExit(f"{data} is missing: is botocore installed there?")
    removed = 0
    for entry in data.iterdir():
        if entry.is_dir() and entry.name not in KEEP_SERVICES:
            removed += sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
            shutil.rmtree(entry)
    for example in data.glob("*/*/examples-*.json"):
        removed += example.stat().st_size
        example.unlink()
    return removed


if __name__ == "__main__":
    gone = prune(Path(sys.argv[1]))
    print(f"pyz-fleet: removed {gone / 2**20:.1f} MiB of botocore models other than S3")
