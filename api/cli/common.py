"""What every command group shares: exit codes, the usage error, option parsers, the database."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from engine.errors import OcgateError

# Exit codes mean one thing each (sysexits' EX_TEMPFAIL for a remote system that could not be reached).
EXIT_OK, EXIT_FOUND, EXIT_BAD_INPUT, EXIT_TEMPFAIL = 0, 1, 2, 75


class CliError(OcgateError):
    """A usage or state problem: printed as ``ocgate: ...``, exit 2."""

    code = "usage"


def date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def setting(text: str) -> tuple[str, Any]:
    """``key=value``; the value read as JSON where it is JSON (numbers, objects), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: write key=value")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def sessions() -> sessionmaker[Session]:
    """Sessions on the configured database (``OCGATE_DATABASE_URL``)."""
    from engine.store.db import make_engine, session_factory

    return session_factory(make_engine())


def shown_url(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
