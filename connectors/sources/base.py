"""The source interface: what every practice-management connector implements, beside the destination one.

A source is opened from its stored settings (and, where it has them, credentials). It then

* **pulls** what changed since a cursor, as pages: canonical entries, the ids of records withdrawn at the
  source, and the cursor to resume from once the page is committed;
* **fetches** one record by id (a webhook's body is only a hint: the record is re-fetched before anything
  is trusted);
* **verifies** a webhook delivery and says what it is about;
* **registers** and **renews** its webhook subscriptions.

The sync loop (``connectors/sources/sync.py``) and the webhook handling (``connectors/sources/webhooks.py``)
are written once against this interface; the intake workflow knows nothing source-specific.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from engine.errors import OcgateError
from engine.model import Entry


class SourceError(OcgateError):
    """A source that failed. ``retryable``: it could not be reached (a timeout, a 5xx, the rate limit), so the
    same sync started again later resumes; otherwise it refused (bad settings, revoked access)."""

    code, status = "source_failed", 502

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class SourceUnavailable(SourceError):
    code, status = "source_unavailable", 503

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


class NotConnected(SourceError):
    """The source needs credentials it does not have yet (``ocgate sources connect``)."""

    code, status = "not_connected", 409

    def __init__(self, message: str):
        super().__init__(message, retryable=False)


class WebhookRejected(OcgateError):
    """A delivery that is not from the source: a bad or missing signature, a stale timestamp. 401."""

    code, status = "webhook_rejected", 401


@dataclass(frozen=True)
class Page:
    """One committed step of a pull."""

    entries: list[Entry]  # new and changed records, mapped to the canonical model
    withdrawn: list[str] = field(default_factory=list)  # source ids deleted or voided at the source
    cursor: str | None = None  # where to resume once this page is committed
    pulled: int = 0  # source records read (some may map to several entries, or to none)
    # For a full pull in id order: every record with an id in (after, upto] is on this page (None: unbounded),
    # so stored entries with ids in that range that are not on it were deleted at the source.
    covers: tuple[int | None, int | None] | None = None
    total: int | None = None  # how many records the whole pull holds, when the source says


@dataclass(frozen=True)
class Delivery:
    """What a verified webhook delivery is about. ``answer_headers`` are sent back (a handshake echo)."""

    key: str  # unique per delivery: a replay has the same key
    event: str | None = None  # created, updated, deleted; None for a handshake
    model: str | None = None
    record_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    answer_headers: dict[str, str] = field(default_factory=dict)

    @property
    def handshake(self) -> bool:
        return self.event is None


@dataclass(frozen=True)
class Subscription:
    remote_id: str
    model: str
    url: str
    events: list[str]
    secret: str | None
    status: str
    expires_at: dt.datetime | None


class Unchanged:
    """What ``fetch`` returns when the record is still at the version asked about."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = Unchanged()


class TokenStore(Protocol):
    """Where a source keeps the credentials it is issued (encrypted in the database by the workflow)."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, credentials: dict[str, Any], expires_at: dt.datetime | None = None) -> None: ...


class Source(Protocol):
    """Implemented by every source in ``connectors/sources``."""

    kind: ClassVar[str]
    name: str

    @property
    def tenant(self) -> str:
        """The tenant key of this source's entries (``Entry.source_tenant``)."""
        ...

    def pull(self, cursor: str | None, *, full: bool = False) -> Iterator[Page]:
        """Pages of what changed since ``cursor`` (everything when ``full``). The last page's cursor is where
        the next incremental pull starts."""
        ...

    def fetch(self, record_id: str, known_version: str | None = None) -> list[Entry] | Unchanged | None:
        """The record's entries as the source has them now; None when it no longer exists there; ``UNCHANGED``
        when its version is still ``known_version`` (a conditional request)."""
        ...

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secrets: Mapping[str, str],
                       query: Mapping[str, str]) -> Delivery:
        """Check a delivery (``secrets``: remote subscription id -> shared secret; ``query``: the callback URL's
        query, for sources that sign nothing and are given an unguessable URL) or raise WebhookRejected."""
        ...

    def register_webhooks(self, public_url: str) -> list[Subscription]:
        """Create the subscriptions that send this source's changes to ``public_url``."""
        ...

    def webhook_state(self, subscription: Subscription) -> Subscription:
        """The subscription as the source has it now (enabled once its handshake reached ocgate)."""
        ...

    def renew_webhook(self, subscription: Subscription) -> Subscription:
        """Extend a subscription before it expires."""
        ...

    def close(self) -> None: ...
