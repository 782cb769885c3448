"""Configured sources (the ``connections`` table) turned into :class:`~connectors.sources.base.Source` objects,
and connecting them (OAuth).

Settings are plain JSON and never hold a secret: a Clio source names the environment variable that holds its
client secret (``client_secret_env``); the tokens Clio issues are kept encrypted by the workflow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
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

KINDS: dict[str, ModuleType] = {clio.KIND: clio}


class InvalidSourceSettings(Invalid):
    code = "invalid_source_settings"


def check_settings(kind: str, settings: Mapping[str, Any]) -> list[str]:
    module = KINDS.get(kind)
    if module is None:
        return [f"unknown source kind {kind!r} (one of: {', '.join(KINDS)})"]
    return module.check_settings(settings)


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
    if connection.source_system != clio.KIND:
        raise InvalidSourceSettings(f"source {connection.name}: unknown kind {connection.source_system!r}")
    store = sources.CredentialStore(sessions, connection.id)
    return clio.ClioSource(connection.name, connection.settings, store, tenant=connection.source_tenant,
                           **options.kwargs())


def open_named(sessions: sessionmaker[Session], name: str, options: Options = Options()) -> tuple[Connection, Source]:
    with sessions() as session:
        connection = sources.get(session, name)
    return connection, open_source(sessions, connection, options)


def authorize_url(sessions: sessionmaker[Session], name: str) -> tuple[str, str]:
    """The URL where the firm's administrator approves ocgate, and the ``state`` the redirect must carry."""
    with sessions() as session:
        connection = sources.get(session, name)
    state = clio.new_state()
    return clio.authorize_url(connection.settings, state), state


def connect(sessions: sessionmaker[Session], name: str, *, code: str | None = None, refresh_token: str | None = None,
            options: Options = Options()) -> str:
    """Obtain and keep the source's tokens (from an authorization code or an existing refresh token), then
    learn which account they belong to. Returns the tenant (Clio: ``region/account id``)."""
    with sessions() as session:
        connection = sources.get(session, name)
    store = sources.CredentialStore(sessions, connection.id)
    sources.secret_box()  # fail before talking to Clio if the key to keep tokens is missing
    kwargs = options.kwargs()
    if code is not None:
        clio.connect_with_code(connection.settings, code, store, environ=kwargs["environ"],
                               transport=kwargs["transport"])
    elif refresh_token is not None:
        clio.connect_with_refresh_token(connection.settings, refresh_token, store, environ=kwargs["environ"],
                                        transport=kwargs["transport"])
    else:
        raise InvalidSourceSettings("give an authorization code or a refresh token")
    source = clio.ClioSource(connection.name, connection.settings, store, **kwargs)
    try:
        tenant = source.identify()
    finally:
        source.close()
    with transaction(sessions) as session:
        sources.set_tenant(session, connection.id, tenant)
    return tenant
