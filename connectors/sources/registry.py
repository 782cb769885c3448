"""Configured sources (the ``connections`` table) turned into :class:`~connectors.sources.base.Source` objects,
and connecting them.

Each kind of source is one module under ``connectors/sources`` that provides:

* ``KIND``, ``SETTINGS`` (each setting and what it means) and ``check_settings(settings) -> list[str]``;
* ``open_source(name, settings, store, *, tenant, environ, transport, sleep) -> Source``;
* ``connect(settings, store, *, environ, transport, code=None, refresh_token=None) -> None``: obtain and keep
  whatever credentials the source issues (an OAuth token) or check the ones configured (an API key);
* optionally ``authorize_url(settings, state) -> str``, for sources whose administrators approve ocgate in a
  browser (Clio's authorization-code flow).

Settings are plain JSON and never hold a secret: they name the environment variables that hold them; tokens a
source issues are kept encrypted by the workflow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from types import ModuleType
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from connectors.sources import clio
from connectors.sources.base import Source
from engine.errors import Invalid
from engine.store.db import transaction
from engine.store.models import Connection
from engine.workflows import sources

KINDS: dict[str, str] = {  # kind -> its module, imported when first used
    "clio": "connectors.sources.clio",
    "efimis": "connectors.sources.efimis",
    "trackops": "connectors.sources.trackops",
    "mattero": "connectors.sources.mattero",
}


class InvalidSourceSettings(Invalid):
    code = "invalid_source_settings"


def module(kind: str) -> ModuleType:
    if kind not in KINDS:
        raise InvalidSourceSettings(f"unknown source kind {kind!r} (one of: {', '.join(KINDS)})")
    return import_module(KINDS[kind])


def check_settings(kind: str, settings: Mapping[str, Any]) -> list[str]:
    if kind not in KINDS:
        return [f"unknown source kind {kind!r} (one of: {', '.join(KINDS)})"]
    return module(kind).check_settings(settings)


def configure(session: Session, name: str, *, kind: str, settings: dict[str, Any]) -> Connection:
    """Check a source's settings and store it (replacing the settings of one of the same name)."""
    problems = check_settings(kind, settings)
    if problems:
        raise InvalidSourceSettings(f"source {name}: " + "; ".join(problems))
    return sources.add(session, name=name, kind=kind, settings=settings)


@dataclass(frozen=True)
class Options:
    """How sources reach the outside world: the environment (secrets) and, for tests, an HTTP transport."""

    environ: Mapping[str, str] | None = None
    transport: httpx.BaseTransport | None = None
    sleep: Any = None
    fetcher: bool = True  # a sync reads the source in a second process (tests that watch it in this one: False)

    def kwargs(self) -> dict[str, Any]:
        found: dict[str, Any] = {"environ": os.environ if self.environ is None else self.environ,
                                 "transport": self.transport}
        if self.sleep is not None:
            found["sleep"] = self.sleep
        return found


def open_source(sessions: sessionmaker[Session], connection: Connection, options: Options = Options()) -> Source:
    """A ready source for a configured connection; its credentials are read and written through the store."""
    store = sources.CredentialStore(sessions, connection.id)
    return module(connection.source_system).open_source(connection.name, connection.settings, store,
                                                        tenant=connection.source_tenant, **options.kwargs())


def open_named(sessions: sessionmaker[Session], name: str, options: Options = Options()) -> tuple[Connection, Source]:
    with sessions() as session:
        connection = sources.get(session, name)
    return connection, open_source(sessions, connection, options)


def approved_in_browser(sessions: sessionmaker[Session], name: str) -> bool:
    """Whether the source's administrator approves ocgate in a browser (Clio), rather than ocgate connecting with
    the client credentials or the key its settings name (Efimis, Trackops, mattero)."""
    with sessions() as session:
        connection = sources.get(session, name)
    return hasattr(module(connection.source_system), "authorize_url")


def authorize_url(sessions: sessionmaker[Session], name: str) -> tuple[str, str]:
    """The URL where the source's administrator approves ocgate, and the ``state`` the redirect must carry."""
    with sessions() as session:
        connection = sources.get(session, name)
    kind = module(connection.source_system)
    if not hasattr(kind, "authorize_url"):
        raise InvalidSourceSettings(f"source {name} ({connection.source_system}) is not approved in a browser: "
                                    f"run `ocgate sources connect {name}` without a code")
    state = clio.new_state()
    return kind.authorize_url(connection.settings, state), state


def connect(sessions: sessionmaker[Session], name: str, *, code: str | None = None, refresh_token: str | None = None,
            options: Options = Options()) -> str:
    """Obtain and keep the source's credentials (from an authorization code or an existing refresh token, or
    the client credentials and keys its settings name), then learn which tenant they belong to. Returns the
    tenant (Clio: ``region/account id``)."""
    with sessions() as session:
        connection = sources.get(session, name)
    store = sources.CredentialStore(sessions, connection.id)
    sources.secret_box()  # fail before talking to the source if the key to keep credentials is missing
    kwargs = options.kwargs()
    kind = module(connection.source_system)
    kind.connect(connection.settings, store, environ=kwargs["environ"], transport=kwargs["transport"], code=code,
                 refresh_token=refresh_token)
    source = kind.open_source(connection.name, connection.settings, store, tenant="", **kwargs)
    try:
        tenant = source.tenant
    finally:
        source.close()
    with transaction(sessions) as session:
        sources.set_tenant(session, connection.id, tenant)
    return tenant
