"""Test files and the benchmark's loss relay, shared by the UVF tests."""

from __future__ import annotations

import hashlib
import importlib.util
import random
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def make_file(path: Path, size: int, seed: int = 1) -> Path:
    """``size`` random bytes (seeded) written to ``path``, 1 MiB at a time."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return path


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def bench_uvf() -> ModuleType:
    """bench/bench_uvf.py (its loss-injecting relay), loaded by path: bench/ is no package."""
    spec = importlib.util.spec_from_file_location("bench_uvf", ROOT / "bench" / "bench_uvf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
