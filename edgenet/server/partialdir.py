"""The partial area of a data dir (``partial-uploads/``): the received part of each cut
upload (``<token>.part``) and its checkpoint (``<token>.json``, written to
``<token>.json.tmp``, fsynced and renamed). Blocking: run it in a worker thread.

A part may be longer than its checkpoint says (bytes received after the last
checkpoint, perhaps not durable): a resume cuts it back to the checkpoint's offset.
The sweep at start-up keeps every partial whose checkpoint parses, is unexpired and
whose part holds at least its offset; everything else in the area (a part without a
checkpoint, a checkpoint without its part, a half-written ``.tmp``, a file of no known
form) is removed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgenet.server.durable import fsync_dir, remove_quietly
from edgenet.server.partials import MAX_SIDECAR, TOKEN, Checkpoint

PARTIAL_DIR = "partial-uploads"
READ_BLOCK = 1 << 20


@dataclass
class Sweep:
    """What a sweep of the partial area found."""

    kept: list[Checkpoint] = field(default_factory=list)
    #: Partials removed because they expired.
    expired: int = 0
    #: Files removed because they were no valid partial (with why, for the log).
    removed: list[dict[str, Any]] = field(default_factory=list)


class PartialArea:
    def __init__(self, data_dir: Path) -> None:
        self.folder = data_dir / PARTIAL_DIR

    def part(self, token: str) -> Path:
        return self.folder / f"{token}.part"

    def sidecar(self, token: str) -> Path:
        return self.folder / f"{token}.json"

    def create_part(self, token: str) -> Any:
        """A new, empty part open for writing (the folder made on first use)."""
        self.folder.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.part(token), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return os.fdopen(fd, "wb")

    def reopen_part(self, cp: Checkpoint, digest: Any = None) -> tuple[Any, Any]:
        """The part of ``cp`` cut back to its offset, open for appending, with the
        running SHA-256 of what it holds (``digest``: that SHA-256 as this process left it
        at the checkpoint, which spares reading the part again; else the part is read and
        checked against the checkpoint's hash). ValueError when it does not hold what the
        checkpoint says (shorter, or other bytes): the partial cannot be used."""
        path = self.part(cp.token)
        fh = open(path, "r+b")  # noqa: SIM115 (handed to the upload, which closes it)
        try:
            if os.fstat(fh.fileno()).st_size < cp.offset:
                raise ValueError("the part is shorter than its checkpoint")
            if digest is not None:
                fh.truncate(cp.offset)
                fh.seek(cp.offset)
                return fh, digest
            digest = hashlib.sha256()
            left = cp.offset
            while left:
                block = fh.read(min(READ_BLOCK, left))
                if not block:
                    raise ValueError("the part is shorter than its checkpoint")
                digest.update(block)
                left -= len(block)
            if digest.hexdigest() != cp.sha256:
                raise ValueError("the part does not match its checkpoint's SHA-256")
            fh.truncate(cp.offset)
            fh.seek(cp.offset)
        except BaseException:
            fh.close()
            raise
        return fh, digest

    def checkpoint(self, fd: int, cp: Checkpoint) -> None:
        """Make the part durable up to ``cp.offset`` (fsync ``fd``), then its checkpoint."""
        os.fsync(fd)
        tmp = self.folder / f"{cp.token}.json.tmp"
        with open(tmp, "wb") as out:
            out.write(cp.to_json())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.sidecar(cp.token))
        fsync_dir(self.folder)

    def remove(self, token: str) -> None:
        """Remove a partial (its checkpoint first: a part without one is swept)."""
        remove_quietly(self.sidecar(token))
        remove_quietly(self.folder / f"{token}.json.tmp")
        remove_quietly(self.part(token))

    def sweep(self, now: float, keep_seconds: float, live: frozenset[str] = frozenset()
              ) -> Sweep:
        """Read the area: keep valid, unexpired partials (and those of ``live`` tokens:
        uploads running now), remove the rest. Nothing to do without the folder."""
        found = Sweep()
        try:
            names = sorted(p.name for p in self.folder.iterdir())
        except FileNotFoundError:
            return found
        parts = {n[:-5] for n in names if n.endswith(".part") and TOKEN.fullmatch(n[:-5])}
        best: dict[tuple[str, int], Checkpoint] = {}
        for name in names:
            token = name.split(".", 1)[0]
            if token in live:
                continue
            path = self.folder / name
            if not name.endswith(".json") or not TOKEN.fullmatch(name[:-5]):
                if not (name.endswith(".part") and token in parts):
                    found.removed.append({"file": name, "reason": "not a partial upload"})
                    remove_quietly(path)
                continue
            why = None
            try:
                with open(path, "rb") as fh:
                    cp = Checkpoint.from_json(fh.read(MAX_SIDECAR + 1))
                if cp.token != token:
                    raise ValueError("checkpoint names another partial")
                if token not in parts or self.part(token).stat().st_size < cp.offset:
                    why = "its part is missing or short"
            except (OSError, ValueError) as exc:
                why = f"unreadable checkpoint ({exc})"
            if why is not None:
                found.removed.append({"file": name, "reason": why})
                self.remove(token)
                continue
            if cp.updated < now - keep_seconds:
                found.expired += 1
                self.remove(token)
                continue
            older = best.get(cp.key)
            if older is not None:  # two partials of one file: the newer wins
                loser = older if older.updated <= cp.updated else cp
                found.removed.append({"file": f"{loser.token}.json", "reason": "superseded"})
                self.remove(loser.token)
                if loser is older:
                    best[cp.key] = cp
                continue
            best[cp.key] = cp
        kept_tokens = {cp.token for cp in best.values()} | live
        for token in parts - kept_tokens:
            if self.part(token).exists():
                found.removed.append({"file": f"{token}.part", "reason": "no checkpoint"})
                remove_quietly(self.part(token))
        found.kept = sorted(best.values(), key=lambda cp: cp.updated)
        return found
