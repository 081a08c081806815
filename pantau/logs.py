"""Structured logging for every Pantau process (structlog over the standard library)."""

from __future__ import annotations

import logging
import sys

import structlog

# Frames shown of a traceback on a terminal at most (the innermost and outermost kept).
_MAX_FRAMES = 8


def configure(level: str = "INFO", *, json: bool = False) -> None:
    """Route standard-library and structlog records through one renderer on stderr.

    Text by default, one JSON object per line with ``json`` (``PANTAU_LOG_JSON``). Tracebacks
    are short either way: Python's own format in log files and JSON (``exception``), a compact
    rich one on a terminal, and never the local variables of every frame.
    """
    renderer: structlog.typing.Processor
    final: list[structlog.typing.Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta
    ]
    if json:
        final.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        tty = sys.stderr.isatty()
        renderer = structlog.dev.ConsoleRenderer(
            colors=tty,
            exception_formatter=(
                structlog.dev.RichTracebackFormatter(
                    show_locals=False, max_frames=_MAX_FRAMES, extra_lines=1, width=100
                )
                if tty
                else structlog.dev.plain_traceback
            ),
        )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[*final, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # paho and psycopg are chatty at DEBUG; keep them at WARNING unless asked. The API's access
    # log (uvicorn.access, one line per request) follows the root level.
    for noisy in ("paho", "psycopg"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
