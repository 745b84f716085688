"""The terminal while the user types: lines that arrive by themselves, and progress bars.

UVF transfers end (and files arrive) while the user may be half-way through typing a command.
On a terminal read with ``input()``, ``PromptConsole`` clears the input line, prints the
message, then redraws the prompt and what the user had typed so far (``readline``'s line
buffer). Progress bars of running transfers are one status line kept just above the prompt,
redrawn the same way. Without ``input()`` (a terminal on other streams) a message goes on a
fresh line and the prompt is printed again; scripted sessions never come here (the shell just
prints the line) and never get progress bars.

Known limits, kept on purpose: the redraw assumes the typed text fits on one terminal line and
that the cursor is at its end; a line that arrives in the instant between the prompt being
asked for and ``input()`` printing it may show the prompt twice.
"""

from __future__ import annotations

import shutil
from collections import deque
from types import ModuleType
from typing import TextIO

from edgenet.rudp.progress import render

CLEAR_LINE = "\r\x1b[K"
UP = "\x1b[A"
#: A bar appears once its transfer has lasted this long (short transfers stay quiet).
MIN_BAR_SECONDS = 1.0
#: Bars shown at once in the status line; the rest are counted.
MAX_BARS = 2
#: The rate is measured over this many seconds (at most MAX_SAMPLES samples).
RATE_WINDOW = 3.0
MAX_SAMPLES = 32


class TransferMeter:
    """Bytes done over time for one transfer: rate over the last few seconds, and its bar."""

    def __init__(self, label: str, total: int, start: float) -> None:
        self.label = label
        self.total = total
        self.start = start
        self.done = 0
        self._samples: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)

    def update(self, done: int, now: float) -> None:
        self.done = done
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW:
            samples.popleft()

    def rate(self) -> float:
        if len(self._samples) < 2:
            first: tuple[float, int] = (self.start, 0)
        else:
            first = self._samples[0]
        last = self._samples[-1] if self._samples else (self.start, 0)
        elapsed = last[0] - first[0]
        return (last[1] - first[1]) / elapsed if elapsed > 0 else 0.0

    def bar(self) -> str:
        """E.g. ``video.mp4 to beta [#####...]  42%  35.1 MB/s  ETA 0:07``."""
        return render(self.label, self.done, self.total, self.rate(), width=16)


def status_text(meters: list[TransferMeter], now: float, width: int) -> str:
    """The status line for the transfers that have lasted a second; "" if none has."""
    shown = [m for m in meters if now - m.start >= MIN_BAR_SECONDS]
    if not shown:
        return ""
    text = " | ".join(m.bar() for m in shown[:MAX_BARS])
    if len(shown) > MAX_BARS:
        text += f" (+{len(shown) - MAX_BARS} more)"
    return text[: max(width - 1, 10)]


def _readline() -> ModuleType | None:
    try:
        import readline
    except ImportError:  # Windows, or a Python built without it
        return None
    return readline


class PromptConsole:
    """Writes asynchronous lines and the status line without garbling the typed command.

    ``redraw``: the terminal is read with ``input()`` (readline's buffer can be redrawn).
    ``at_prompt`` tells whether the prompt is on screen, waiting for the user."""

    def __init__(self, out: TextIO, redraw: bool) -> None:
        self.out = out
        self.redraw = redraw
        self._readline = _readline() if redraw else None
        self._status = ""
        self._status_drawn = False  # the status line sits just above the prompt line

    def typed(self) -> str:
        if self._readline is None:
            return ""
        try:
            return str(self._readline.get_line_buffer())
        except Exception:  # noqa: BLE001 (a redraw is cosmetic; never fail a transfer for it)
            return ""

    def input_done(self) -> None:
        """The user pressed Enter: whatever was drawn above the prompt is history now."""
        self._status_drawn = False

    def notify(self, line: str, at_prompt: bool, prompt: str) -> None:
        self._paint([line], at_prompt, prompt)

    def set_status(self, text: str, at_prompt: bool, prompt: str) -> None:
        if text == self._status and (self._status_drawn or not text):
            return
        self._status = text
        if at_prompt and self.redraw:
            self._paint([], at_prompt, prompt)

    def _paint(self, lines: list[str], at_prompt: bool, prompt: str) -> None:
        if not at_prompt:
            self.out.write("".join(f"{line}\n" for line in lines))
            self.out.flush()
            return
        if not self.redraw:
            self.out.write("\n" + "".join(f"{line}\n" for line in lines) + prompt)
            self.out.flush()
            return
        parts = [CLEAR_LINE]
        if self._status_drawn:
            parts.append(UP + CLEAR_LINE)
        parts.extend(f"{line}\n" for line in lines)
        self._status_drawn = bool(self._status)
        if self._status:
            parts.append(self._status + "\n")
        parts.append(prompt + self.typed())
        self.out.write("".join(parts))
        self.out.flush()


def terminal_width() -> int:
    return shutil.get_terminal_size((80, 24)).columns
