"""Structured JSON logs, one object per line on stdout, for the cluster's log pipeline.

Standard-library loggers (uvicorn, SQLAlchemy, alembic) are routed through the same
renderer so every line of a container's output is parseable.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

_service: str | None = None
"""The process's service name; one process serves one service (DESIGN §5)."""


def _add_service(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Stamp every line with the service. A process-wide value rather than a context
    variable: threads (a library's callbacks, thread pools) start with an empty context
    and their lines would otherwise carry no `service`."""
    if _service is not None:
        event_dict.setdefault("service", _service)
    return event_dict


_shared_processors: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    _add_service,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.format_exc_info,
]


def configure_logging(
    level: str = "INFO", *, service: str | None = None, json: bool = True
) -> None:
    """Configure structlog and the standard library once per process."""
    global _service
    _service = service
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*_shared_processors, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn installs its own handlers; make it use ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def get_logger(name: str, **initial: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial)
    return logger
