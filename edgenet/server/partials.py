"""Partial uploads kept for a resume: what each one records, and the budget and expiry
rules, as plain data (no disk, no clock: ``now`` comes in).

A cut upload of protocol version 3 leaves its received part in the data dir's partial
area (``partialdir``), with a *checkpoint*: the bytes durably held (``offset``), their
SHA-256, and the validation state at that point (samples, line number, the partial last
line), so that the upload carries on as if it had never stopped. A checkpoint is kept
for ``ResumeLimits.hours`` after it was last written, and the sizes of the files being
kept (the whole file's size, reserved when the upload starts) stay within a budget per
device and one in all. The ``PartialLedger`` holds the checkpoints and reservations of
one store and judges both rules; one file of one device has at most one partial.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from edgenet.server.recovery import Key

#: A partial's name in the partial area: 16 hex digits, fresh for every upload from 0.
TOKEN = re.compile(r"[0-9a-f]{16}")
_SHA = re.compile(r"[0-9a-f]{64}")
_FORMAT = 1
#: Longest sidecar accepted (a checkpoint is a few hundred bytes; the tail at most 4 KiB).
MAX_SIDECAR = 64 * 1024


@dataclass(frozen=True)
class ResumeLimits:
    """``hours``: how long a partial is kept after its last checkpoint; the budgets, in
    bytes, bound the sizes of the files whose partials are kept, per device and in all."""

    hours: float = 24.0
    device_budget: int = 4 * 2**30
    total_budget: int = 32 * 2**30

    @property
    def seconds(self) -> float:
        return self.hours * 3600.0


@dataclass(frozen=True)
class Checkpoint:
    """One partial upload's durable state (its sidecar)."""

    device: str
    file_id: int
    token: str
    #: The whole file's size, as the device announced it.
    size: int
    #: Bytes of the file held and fsynced (the part).
    offset: int
    #: SHA-256 of those bytes.
    sha256: str
    samples: int
    line: int
    #: The partial last line of the part (no newline; at most MAX_LINE bytes).
    tail: bytes
    #: When the checkpoint was written (seconds since the epoch).
    updated: float

    @property
    def key(self) -> Key:
        return (self.device, self.file_id)

    def to_json(self) -> bytes:
        return json.dumps({
            "format": _FORMAT, "device": self.device, "file_id": self.file_id,
            "token": self.token, "size": self.size, "offset": self.offset,
            "sha256": self.sha256, "samples": self.samples, "line": self.line,
            "tail": self.tail.hex(), "updated": self.updated}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Checkpoint:
        """Parse a sidecar; ValueError for anything that is not a valid checkpoint."""
        if len(data) > MAX_SIDECAR:
            raise ValueError("sidecar too large")
        v: Any = json.loads(data.decode("utf-8"))
        if not isinstance(v, dict) or v.get("format") != _FORMAT:
            raise ValueError("not a checkpoint of this format")
        ints = {k: v.get(k) for k in ("file_id", "size", "offset", "samples", "line")}
        if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in ints.values()):
            raise ValueError("a count is not a non-negative integer")
        device, token, sha, tail, updated = (v.get(k) for k in
                                             ("device", "token", "sha256", "tail", "updated"))
        if not isinstance(device, str) or not device or not isinstance(token, str) \
                or not TOKEN.fullmatch(token) or not isinstance(sha, str) \
                or not _SHA.fullmatch(sha) or not isinstance(tail, str) \
                or isinstance(updated, bool) or not isinstance(updated, (int, float)):
            raise ValueError("a field is malformed")
        cp = cls(device, ints["file_id"], token, ints["size"], ints["offset"], sha,
                 ints["samples"], max(1, ints["line"]), bytes.fromhex(tail), float(updated))
        if cp.offset > cp.size or b"\n" in cp.tail or len(cp.tail) > 4096:
            raise ValueError("inconsistent checkpoint")
        return cp


def budget_text(size: int) -> str:
    """A byte count in binary units, for messages."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover


class PartialLedger:
    """The partials of one store: their checkpoints, and the bytes reserved for each
    upload that may leave one (its whole file's size), judged against the budgets."""

    def __init__(self, limits: ResumeLimits) -> None:
        self.limits = limits
        #: The checkpoint of each partial on disk.
        self._checkpoints: dict[Key, Checkpoint] = {}
        #: Per key: (token, bytes reserved). The key's partial is the token's.
        self._reserved: dict[Key, tuple[str, int]] = {}
        self._device_total: dict[str, int] = {}
        self._total = 0

    def load(self, checkpoints: list[Checkpoint]) -> None:
        """The checkpoints found at start-up (already valid and unexpired): kept even if
        they exceed budgets lowered since (new partials wait until there is room)."""
        for cp in checkpoints:
            self._reserve(cp.key, cp.token, cp.size)
            self._checkpoints[cp.key] = cp

    def get(self, key: Key) -> Checkpoint | None:
        return self._checkpoints.get(key)

    def owner(self, key: Key) -> str | None:
        """The token whose partial the key holds (or is reserved for)."""
        held = self._reserved.get(key)
        return held[0] if held is not None else None

    def refusal(self, key: Key, size: int) -> str | None:
        """Why a partial of ``size`` bytes for ``key`` would not be kept, or None."""
        if self.limits.hours <= 0:
            return "the server keeps no partial uploads (--resume-hours 0); this upload " \
                   "cannot be resumed if it is cut"
        device = key[0]
        _, mine = self._reserved.get(key, ("", 0))
        device_after = self._device_total.get(device, 0) - mine + size
        total_after = self._total - mine + size
        if device_after > self.limits.device_budget:
            return (f"the server keeps partial uploads of at most "
                    f"{budget_text(self.limits.device_budget)} per device (--resume-budget) "
                    f"and {device} would need {budget_text(device_after)}; this upload "
                    "cannot be resumed if it is cut")
        if total_after > self.limits.total_budget:
            return (f"the server keeps partial uploads of at most "
                    f"{budget_text(self.limits.total_budget)} in all "
                    "(--resume-total-budget), which are in use; this upload cannot be "
                    "resumed if it is cut")
        return None

    def reserve(self, key: Key, token: str, size: int) -> str | None:
        """Reserve room for ``token``'s partial of ``key``: a new token replaces the key's
        previous partial (its checkpoint is forgotten); the same token resizes it. Returns why not (nothing changed), or None."""
        why = self.refusal(key, size)
        if why is not None:
            return why
        if self.owner(key) != token:  # a new upload from 0: the old partial goes
            self._checkpoints.pop(key, None)
        self._reserve(key, token, size)
        return None

    def record(self, cp: Checkpoint) -> bool:
        """A checkpoint made durable; False (ignored) when the key's partial is no longer
        ``cp.token``'s (a newer upload of the file took it)."""
        if self.owner(cp.key) != cp.token:
            return False
        self._checkpoints[cp.key] = cp
        return True

    def release(self, key: Key, token: str) -> bool:
        """The partial of ``token`` is gone (stored, dropped, expired). False when the key
        belongs to another token (nothing changed)."""
        if self.owner(key) != token:
            return False
        self._release(key)
        self._checkpoints.pop(key, None)
        return True

    def expired(self, now: float) -> list[Checkpoint]:
        """Checkpoints last written more than ``limits.hours`` before ``now``."""
        cutoff = now - self.limits.seconds
        return [cp for cp in self._checkpoints.values() if cp.updated < cutoff]

    def held(self, device: str | None = None) -> int:
        """Bytes reserved for ``device``'s partials (None: everyone's)."""
        return self._total if device is None else self._device_total.get(device, 0)

    def __len__(self) -> int:
        return len(self._checkpoints)

    def _reserve(self, key: Key, token: str, size: int) -> None:
        self._release(key)
        self._reserved[key] = (token, size)
        self._device_total[key[0]] = self._device_total.get(key[0], 0) + size
        self._total += size

    def _release(self, key: Key) -> None:
        held = self._reserved.pop(key, None)
        if held is None:
            return
        left = self._device_total[key[0]] - held[1]
        if left:
            self._device_total[key[0]] = left
        else:
            del self._device_total[key[0]]
        self._total -= held[1]
