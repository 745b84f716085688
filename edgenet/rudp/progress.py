"""A one-line terminal progress bar with rate and ETA for a UVF transfer.

It draws only when the stream is a TTY and only once the transfer has lasted ``min_duration``
(1 s), so short transfers and logs/pipes stay clean; it redraws at most every ``interval``.
The rate is measured over the last ``RATE_WINDOW`` seconds (at most ``MAX_SAMPLES`` samples).
"""

from __future__ import annotations

from collections import deque
from typing import TextIO

RATE_WINDOW = 3.0
MAX_SAMPLES = 64


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # unreachable; keeps type checkers content


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or seconds > 99 * 3600:
        return "--:--"
    s = int(seconds + 0.5)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def render(label: str, done: int, total: int, rate: float, width: int = 24) -> str:
    """E.g. ``video.mp4 [##########..............]  42%  35.1 MB/s  ETA 0:07``."""
    fraction = 1.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
    filled = int(fraction * width)
    bar = "#" * filled + "." * (width - filled)
    eta = (total - done) / rate if rate > 0 else None
    name = label if len(label) <= 24 else label[:21] + "..."
    return f"{name} [{bar}] {fraction * 100:3.0f}%  {format_bytes(rate)}/s  ETA {format_eta(eta)}"


class ProgressBar:
    def __init__(
        self,
        stream: TextIO | None,
        label: str,
        total: int,
        start: float,
        *,
        min_duration: float = 1.0,
        interval: float = 0.1,
    ) -> None:
        try:
            tty = stream is not None and stream.isatty()
        except (AttributeError, ValueError, OSError):
            tty = False
        self._stream = stream if tty else None
        self._label = label
        self._total = total
        self._start = start
        self._min_duration = min_duration
        self._interval = interval
        self._last_draw = float("-inf")
        self._samples: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)
        self._width = 0
        self.shown = False

    @property
    def enabled(self) -> bool:
        return self._stream is not None

    def rate(self, now: float, done: int) -> float:
        samples = self._samples
        while len(samples) > 1 and now - samples[0][0] > RATE_WINDOW:
            samples.popleft()
        if not samples or now <= samples[0][0]:
            elapsed = now - self._start
            return done / elapsed if elapsed > 0 else 0.0
        return (done - samples[0][1]) / (now - samples[0][0])

    def update(self, done: int, now: float) -> None:
        if self._stream is None:
            return
        if not self._samples or now - self._samples[-1][0] >= 0.05:
            self._samples.append((now, done))
        if now - self._start < self._min_duration or now - self._last_draw < self._interval:
            return
        self._draw(render(self._label, done, self._total, self.rate(now, done)), now)

    def finish(self, done: int, now: float, ok: bool = True) -> None:
        """End the line if anything was drawn (a short transfer leaves the stream untouched)."""
        if self._stream is None or not self.shown:
            return
        elapsed = max(now - self._start, 1e-9)
        line = render(self._label, done, self._total, 0.0)
        line = line.split("  ETA")[0].rsplit("  ", 1)[0]
        tail = f"  {format_bytes(done / elapsed)}/s average" if ok else "  failed"
        self._draw(line + tail, now)
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self, line: str, now: float) -> None:
        assert self._stream is not None
        pad = " " * max(0, self._width - len(line))
        self._stream.write("\r" + line + pad)
        self._stream.flush()
        self._width = len(line)
        self._last_draw = now
        self.shown = True
