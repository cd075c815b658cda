"""Structured logs: every line on stdout is one JSON object with service, level and event,
whether it comes from our structlog loggers, a library's standard-library logger, or a
worker thread."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from adplatform.core.logging import configure_logging, get_logger

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back for the other tests."""
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved_uvicorn = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in UVICORN_LOGGERS
    }
    saved_levels = {name: logging.getLogger(name).level for name in UVICORN_LOGGERS}
    saved_structlog = structlog.get_config()
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.configure(**saved_structlog)
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        for name, (handlers, propagate) in saved_uvicorn.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.setLevel(saved_levels[name])


def _lines(out: str) -> list[dict[str, Any]]:
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    parsed = []
    for line in lines:
        record = json.loads(line)  # every line is JSON, nothing else on stdout
        assert isinstance(record, dict), line
        parsed.append(record)
    return parsed


def test_every_line_is_json_with_service_level_and_event(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", service="campaigns")
    log = get_logger("adplatform.campaigns.test")

    log.info("campaign_created", campaign_id=7)
    log.debug("too_detailed")  # below LOG_LEVEL: not written
    logging.getLogger("uvicorn.error").warning("Started server process [%d]", 42)
    logging.getLogger("sqlalchemy.engine").error("connection lost")
    worker = threading.Thread(target=lambda: log.warning("relay_retrying", attempt=3))
    worker.start()
    worker.join()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("relay_failed")

    records = _lines(capsys.readouterr().out)
    by_event = {record["event"]: record for record in records}
    assert set(by_event) == {
        "campaign_created",
        "Started server process [42]",
        "connection lost",
        "relay_retrying",
        "relay_failed",
    }
    for record in records:
        assert record["service"] == "campaigns", record
        assert record["level"] in {"debug", "info", "warning", "error", "critical"}, record
        assert record["timestamp"].endswith("Z"), record  # ISO 8601, UTC
        assert record["logger"], record

    assert by_event["campaign_created"]["level"] == "info"
    assert by_event["campaign_created"]["campaign_id"] == 7
    assert by_event["campaign_created"]["logger"] == "adplatform.campaigns.test"
    assert by_event["Started server process [42]"]["level"] == "warning"
    assert by_event["Started server process [42]"]["logger"] == "uvicorn.error"
    assert by_event["connection lost"]["level"] == "error"
    assert by_event["relay_retrying"]["attempt"] == 3
    assert by_event["relay_failed"]["level"] == "error"
    assert "RuntimeError: boom" in by_event["relay_failed"]["exception"]


def test_log_level_filters_and_uvicorn_access_lines_are_quiet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("warning", service="bidding")
    log = get_logger("adplatform.bidding.test")
    log.info("not_written")
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /health/live" 200')
    log.warning("written")

    records = _lines(capsys.readouterr().out)
    assert [(r["event"], r["level"], r["service"]) for r in records] == [
        ("written", "warning", "bidding")
    ]
