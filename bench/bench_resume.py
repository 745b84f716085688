"""Resumable UED: the time to finish a 100 MB upload cut at 50 %, resumed (the server
kept the first half) against restarted (a server that keeps no partials,
``--resume-hours 0``: the same file sent whole again), medians of N runs, same run,
same machine, real zipapp processes over loopback.

The cut: a TCP relay in front of the server closes the device's first connection after
half the file's bytes (the client runs with ``--upload-retries 0`` and exits). Then a
fresh client process uploads the same file again, straight to the server (no relay in
the way); the time is that second process's, from its start to its exit (the file
acknowledged), start-up included for both; the bytes it sent are the file less the
offset the server's reply says it resumed from.

    python bench/bench_resume.py [--size-mb 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import PYZ, ROOT, Server, median, save

sys.path.insert(0, str(ROOT))
from tests.tcprelay import TcpRelay, sample_file  # noqa: E402


async def client(port: int, data: Path, *opts: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGENET_")}
    env["EDGENET_PASSWORD"] = "pw0"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PYZ), "client", "127.0.0.1", str(port), "0", "--data-dir",
        str(data), "--name", "dev0", "--run", "UED 1", *opts,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 600)
    return proc.returncode or 0, out.decode() + err.decode()


async def one(tmp: Path, data: Path, size: int, keep: bool) -> dict[str, Any]:
    server = Server(tmp / ("kept" if keep else "none"), 1,
                    [] if keep else ["--resume-hours", "0"])
    try:
        relay = await TcpRelay(server.port, cut_after=size // 2).start()
        code, text = await client(relay.port, data, "--upload-retries", "0")
        await relay.close()
        if code == 0:
            raise RuntimeError(f"the cut did not cut: {text[-500:]}")
        started = time.perf_counter()
        code, text = await client(server.port, data, "--json")
        seconds = time.perf_counter() - started
        if code != 0 or "has been uploaded" not in text:
            raise RuntimeError(text[-2000:])
        results = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        ued = next(r for r in results if r.get("command") == "UED 1")
        resumed_from = int(ued["result"].get("resumed_from", 0))
        if keep != (resumed_from > 0):
            raise RuntimeError(f"expected {'a' if keep else 'no'} resume: {text[-500:]}")
        return {"seconds": seconds, "bytes_sent": size - resumed_from,
                "resumed_from": resumed_from}
    finally:
        server.stop()


async def run(size_mb: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgenet-bench-resume-") as t:
        tmp = Path(t)
        data = tmp / "dev"
        src = sample_file(data / "dev0-1.txt", size_mb * 1_000_000)
        size = src.stat().st_size
        resumed, restarted = [], []
        for i in range(runs):
            for keep, into in ((True, resumed), (False, restarted)):
                into.append(await one(tmp / f"run{i}", data, size, keep))
    med_r = median([r["seconds"] for r in resumed])
    med_s = median([r["seconds"] for r in restarted])
    return {"size_bytes": size, "runs": runs, "resumed_seconds": med_r,
            "restarted_seconds": med_s, "ratio": med_r / med_s,
            "resumed_bytes_sent": median([r["bytes_sent"] for r in resumed]),
            "restarted_bytes_sent": median([r["bytes_sent"] for r in restarted]),
            "raw": {"resumed": resumed, "restarted": restarted}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    result = asyncio.run(run(args.size_mb, args.runs))
    print(f"{args.size_mb} MB UED cut at 50 %: resumed {result['resumed_seconds']:.2f} s "
          f"({result['resumed_bytes_sent'] / 1e6:.1f} MB sent), restarted "
          f"{result['restarted_seconds']:.2f} s ({result['restarted_bytes_sent'] / 1e6:.1f} MB "
          f"sent); ratio {result['ratio']:.2f} (median of {args.runs})", flush=True)
    save("resume", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
