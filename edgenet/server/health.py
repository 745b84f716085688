"""What is wrong with this server now: the problems ``/healthz`` reports.

A problem is reported by the part that sees it (the storage watch, the device-log
writer) under a stable code, which is also the name of the event logged when it
starts, and cleared when it is over. A problem that stops the server from doing
its main work (a missing data dir) makes it *not ready*; the others make it
*degraded*. Sans-I/O: times are passed in.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "degraded", "not_ready"]


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    since: float
    #: False: the server cannot do its main work (``/healthz`` answers 503).
    ready: bool = True


class Health:
    """The problems of one server, by code."""

    def __init__(self) -> None:
        self._problems: dict[str, Problem] = {}
        self._storage_suspect: asyncio.Event | None = None

    def report(self, code: str, message: str, now: float, *, ready: bool = True) -> bool:
        """Record a problem; True when it is new (the caller logs its event then)."""
        old = self._problems.get(code)
        self._problems[code] = Problem(code, message, old.since if old else now, ready)
        return old is None

    def clear(self, code: str) -> Problem | None:
        """The problem is over; returns it (None: there was none)."""
        return self._problems.pop(code, None)

    def problems(self) -> list[Problem]:
        return sorted(self._problems.values(), key=lambda p: (p.since, p.code))

    def has(self, code: str) -> bool:
        return code in self._problems

    @property
    def status(self) -> Status:
        if any(not p.ready for p in self._problems.values()):
            return "not_ready"
        return "degraded" if self._problems else "ok"

    # -- asking the storage watch to look now -------------------------------------

    def storage_suspect(self) -> None:
        """A storage call just failed: have the storage checked now, not in a second."""
        self.storage_event().set()

    def storage_event(self) -> asyncio.Event:
        if self._storage_suspect is None:
            self._storage_suspect = asyncio.Event()
        return self._storage_suspect
