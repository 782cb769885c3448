"""Logging for the command line and the server: plain lines on a terminal, or one JSON object per line for a log
collector, each carrying the id of the API request it was written under.

The format is chosen by ``ocgate --log-format json|text`` or, failing that, ``OCGATE_LOG_FORMAT``; plain text is the
default. ``ocgate serve`` passes both on to its API processes through the environment (``OCGATE_LOG_FORMAT`` and
``OCGATE_LOG_LEVEL``), since each is a fresh interpreter.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
import uuid
from contextvars import ContextVar
from typing import Any

from api import redact

FORMAT_ENV, LEVEL_ENV = "OCGATE_LOG_FORMAT", "OCGATE_LOG_LEVEL"
FORMATS = ("text", "json")
ACCESS_LOGGER = "ocgate.access"

# The request being answered, if any: set by the API's middleware, read by every log record written meanwhile.
request_id: ContextVar[str | None] = ContextVar("ocgate_request_id", default=None)

# A request id a client or proxy may choose: short, and only characters that are safe in a log line and a header.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# What a LogRecord carries on every record; anything else was passed as ``extra=`` and belongs in the JSON object.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def new_request_id(offered: str | None = None) -> str:
    """The client's ``X-Request-ID`` if it is a sensible one (so a proxy's id follows the request), else a new one."""
    if offered is not None and _CLIENT_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (``None`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, pid, the request id, anything
    passed as ``extra=``, and the traceback of an exception as text."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            document["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "request_id" and key not in document:
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``ocgate: message``, with the request id in brackets when there is one (as the command line always had)."""

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        prefix = f"ocgate: [{rid}] " if rid else "ocgate: "
        text = prefix + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def chosen_format(given: str | None = None) -> str:
    """The format asked for (an option), else ``OCGATE_LOG_FORMAT``, else text. An unknown value is refused."""
    value = (given or os.environ.get(FORMAT_ENV) or "text").strip().lower()
    if value not in FORMATS:
        raise ValueError(f"log format {value!r}: use one of {', '.join(FORMATS)} ({FORMAT_ENV})")
    return value


def configure(log_format: str | None = None, level: int | str | None = None) -> str:
    """Send the root logger's records to standard error in the chosen format; returns the format used.
    ``level`` defaults to ``OCGATE_LOG_LEVEL``, else WARNING. Calling it again replaces the handler it installed."""
    fmt = chosen_format(log_format)
    if level is None:
        level = os.environ.get(LEVEL_ENV, "WARNING").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    handler.set_name("ocgate")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "ocgate"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    redact.install()  # the HTTP libraries' lines lose their secrets (signed URLs, OAuth codes, hook secrets)
    return fmt
