"""structlog set-up: console rendering on a terminal, JSON lines otherwise.

Extra processors (for example the admin API's ring buffer of recent events) can
be added with ``extra_processors``; they run after the shared ones and before
rendering.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable, Iterable, TextIO

import structlog

Processor = Callable[[Any, str, Any], Any]


def configure_logging(fmt: str = "auto", level: int = logging.INFO, stream: TextIO | None = None,
                      extra_processors: Iterable[Processor] = ()) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *extra_processors,
            structlog.processors.format_exc_info if fmt == "json" else _noop,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def _noop(logger: Any, name: str, event: Any) -> Any:
    return event
