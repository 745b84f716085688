"""Run every benchmark (or a quick version of each), print a summary table, write
JSON under build/bench/.

    python bench/run.py           # the full set (about 15 minutes on 2 cores)
    python bench/run.py --quick   # a small version of each, under a minute
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import OUT_DIR, PYZ, machine, save

HERE = Path(__file__).resolve().parent

FULL = [
    ("startup", ["bench_startup.py", "--runs", "5"]),
    ("upload", ["bench_upload.py", "--sizes", "1,100", "--runs", "5"]),
    ("uvf", ["bench_uvf.py", "--size-mb", "200", "--runs", "3"]),
    ("p2p", ["bench_p2p.py", "--size-mb", "100", "--runs", "3"]),
    ("nat", ["bench_nat.py", "--size-mb", "100", "--runs", "3"]),
    ("recv", ["recv_cost.py", "--runs", "5"]),
    ("slots", ["slot_cost.py", "--runs", "5"]),
    ("scale", ["bench_scale.py", "--idle", "1000,5000,10000,19500", "--slow", "19500",
               "--devices", "1000", "--seconds", "5", "--runs", "3"]),
    ("fleet", ["bench_fleet.py", "--devices", "100", "--seconds", "5", "--runs", "3"]),
    ("resume", ["bench_resume.py", "--size-mb", "100", "--runs", "3"]),
]
QUICK = [
    ("startup", ["bench_startup.py", "--runs", "2"]),
    ("upload", ["bench_upload.py", "--sizes", "1,20", "--runs", "1"]),
    ("uvf", ["bench_uvf.py", "--size-mb", "20", "--runs", "1", "--loss", "0,0.05"]),
    ("p2p", ["bench_p2p.py", "--size-mb", "20", "--runs", "1", "--loss", "0,0.05",
             "--tftp-mb", "2", "--no-lossy-tftp"]),
    ("nat", ["bench_nat.py", "--size-mb", "10", "--runs", "1"]),
    ("recv", ["recv_cost.py", "--runs", "1"]),
    ("slots", ["slot_cost.py", "--runs", "1"]),
    ("scale", ["bench_scale.py", "--idle", "500", "--slow", "500", "--devices", "100",
               "--seconds", "2", "--runs", "1", "--hold", "1"]),
    ("fleet", ["bench_fleet.py", "--devices", "30", "--seconds", "2", "--runs", "1",
               "--takeovers", "10"]),
    ("resume", ["bench_resume.py", "--size-mb", "10", "--runs", "1"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="",
                    help="comma-separated subset: startup,upload,uvf,p2p,nat,recv,slots,scale,fleet,resume")
    args = ap.parse_args()
    if not PYZ.exists():
        print("build/edgenet.pyz is missing: run `make pyz` first", file=sys.stderr)
        return 2
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    only = set(filter(None, args.only.split(",")))
    failed = []
    started = time.time()
    for name, cmd in QUICK if args.quick else FULL:
        if only and name not in only:
            continue
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        p = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]], cwd=HERE.parent,
                           timeout=3600, check=False)
        if p.returncode != 0:
            failed.append(name)
    summary = {"machine": machine(), "quick": args.quick, "started": started,
               "seconds": time.time() - started, "failed": failed,
               "results": {p.stem: json.loads(p.read_text()) for p in sorted(OUT_DIR.glob("*.json"))
                           if p.stem != "summary"}}
    save("summary", summary)
    print(f"== done in {summary['seconds']:.0f} s; JSON in {OUT_DIR}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
