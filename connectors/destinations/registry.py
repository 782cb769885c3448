"""Configured destinations (the ``destinations`` table) turned into ``Destination`` objects.

Settings are plain JSON; secrets never are: a Legal Tracker destination names the environment variable that
holds its client secret (``client_secret_env``, default ``OCGATE_LEGALTRACKER_SECRET``).
"""

from __future__ import annotations

import os
from typing import Any

from connectors.destinations.base import Destination, DestinationError
from engine.ledes import FORMATS

KINDS = ("directory", "legaltracker")
LEGALTRACKER_REQUIRED = ("base_url", "client_id", "firm_id", "firm_office_id", "company_id")
LEGALTRACKER_OPTIONAL = ("client_secret_env", "matter_ids", "format", "currency", "type_id", "token_url",
                         "audience", "efiles_url", "timeout", "max_attempts")


def check_settings(kind: str, settings: dict[str, Any]) -> list[str]:
    """What is missing or unknown in a destination's settings (empty when they are usable)."""
    if kind not in KINDS:
        return [f"unknown destination kind {kind!r} (one of: {', '.join(KINDS)})"]
    problems = []
    fmt = settings.get("format", "1998b")
    if fmt not in FORMATS:
        problems.append(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if kind == "directory":
        if not settings.get("path"):
            problems.append("a directory drop needs path")
        unknown = set(settings) - {"path", "format"}
    else:
        problems += [f"Legal Tracker needs {key}" for key in LEGALTRACKER_REQUIRED if not settings.get(key)]
        if "client_secret" in settings:
            problems.append("never store the client secret: put it in an environment variable and name it in "
                            "client_secret_env")
        matter_ids = settings.get("matter_ids", {})
        if not isinstance(matter_ids, dict):
            problems.append("matter_ids maps our matter ids to the portal's: an object")
        unknown = set(settings) - set(LEGALTRACKER_REQUIRED) - set(LEGALTRACKER_OPTIONAL) - {"client_secret"}
    problems += [f"unknown setting {key!r}" for key in sorted(unknown)]
    return problems


def open_destination(kind: str, settings: dict[str, Any], *, name: str | None = None,
                     environ: dict[str, str] | None = None, **overrides: Any) -> Destination:
    """A ready destination for a stored configuration, called ``name`` (the configured destination's name);
    ``overrides`` reach the constructor (tests, transports)."""
    destination = _open(kind, settings, environ, overrides)
    if name:
        destination.name = name
    return destination


def _open(kind: str, settings: dict[str, Any], environ: dict[str, str] | None, overrides: dict[str, Any]) -> Any:
    problems = check_settings(kind, settings)
    if problems:
        raise DestinationError("; ".join(problems), retryable=False)
    if kind == "directory":
        from connectors.destinations.directory import DirectoryDrop

        return DirectoryDrop(settings["path"], fmt=settings.get("format", "1998b"))
    from connectors.destinations.legaltracker import LegalTrackerClient

    env = os.environ if environ is None else environ
    secret_env = settings.get("client_secret_env", "OCGATE_LEGALTRACKER_SECRET")
    secret = env.get(secret_env)
    if not secret:
        raise DestinationError(f"Legal Tracker: the client secret is not set: export {secret_env}", retryable=False)
    options = {key: settings[key] for key in ("currency", "type_id", "token_url", "audience", "efiles_url",
                                              "timeout", "max_attempts") if key in settings}
    return LegalTrackerClient(
        settings["base_url"], settings["client_id"], secret, settings["firm_id"], settings["firm_office_id"],
        settings["company_id"], matter_ids=settings.get("matter_ids") or {}, fmt=settings.get("format", "1998b"),
        **{**options, **overrides})
