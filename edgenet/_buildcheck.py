"""Build check for ``make pyz``: the zipapp must hold no compiled extension.

A compiled module would tie the file to one CPU and one CPython; edgenet ships
one file for x86-64 and ARM edge boxes alike.
"""

from __future__ import annotations

import sys
import zipfile

COMPILED = (".so", ".pyd", ".dylib", ".dll")


def main(path: str) -> int:
    with zipfile.ZipFile(path) as zf:
        bad = [n for n in zf.namelist() if n.lower().endswith(COMPILED) or ".so." in n]
    if bad:
        print(f"{path}: compiled extensions slipped in: {', '.join(bad[:10])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
