"""What an upload slot costs an upload: taking a slot, the wrapper around the pending
upload, and giving the slot back (``edgenet/server/uploadslots.py``), against the
same upload of nothing without them; microseconds an upload, median of ``--runs``
rounds of 100,000 in one process. JSON in ``build/bench/slot_cost.json``.

    .venv/bin/python bench/slot_cost.py [--runs 5]

(It imports the project's package from the checkout: run it with the project's venv.)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from common import ROOT, save

sys.path.insert(0, str(ROOT))

from edgenet.server.uploadslots import UploadSlots  # noqa: E402

ROUND = 100_000


class Nothing:
    """A pending upload that does nothing."""

    def write(self, chunk: bytes) -> None:
        return None

    async def commit(self, now: float) -> None:
        return None

    def abort(self) -> None:
        return None


async def with_slot(slots: UploadSlots) -> float:
    started = time.perf_counter()
    for _ in range(ROUND):
        await slots.acquire()
        up = slots.hold(Nothing())  # type: ignore[arg-type]
        up.write(b"1\n")
        await up.commit(0.0)
    return (time.perf_counter() - started) / ROUND * 1e6


async def without() -> float:
    started = time.perf_counter()
    for _ in range(ROUND):
        up = Nothing()
        up.write(b"1\n")
        await up.commit(0.0)
    return (time.perf_counter() - started) / ROUND * 1e6


async def measure(runs: int) -> dict[str, float]:
    slots = UploadSlots(256)
    slotted = [await with_slot(slots) for _ in range(runs)]
    bare = [await without() for _ in range(runs)]
    return {"with_slot_us": statistics.median(slotted), "without_us": statistics.median(bare)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    result = asyncio.run(measure(max(1, args.runs)))
    print(f"an upload of nothing: {result['with_slot_us']:.2f} us with its slot, "
          f"{result['without_us']:.2f} us without (median of {args.runs} x {ROUND:,})")
    save("slot_cost", {"runs": args.runs, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
