"""The store: SQLAlchemy 2.x tables for entries, evaluations, violations, review actions, rule set
versions, connections, sync cursors and API keys. Migrations live in ``engine/store/migrations``.

Money and hours are exact: ``NUMERIC`` on PostgreSQL, decimal text on SQLite (whose NUMERIC is a float).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC where the database has exact decimals; text elsewhere (SQLite). Unconstrained NUMERIC keeps
    the scale a value was written with, so ``0.1`` reads back as ``0.1`` (not ``0.100000``) everywhere."""

    impl = Numeric()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"expected Decimal, got {type(value).__name__}")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(value)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class EntryState(StrEnum):
    """Where an entry is on its way to an invoice."""

    READY = "ready"  # clean, or cleared by a reviewer: may be billed
    IN_REVIEW = "in_review"  # flagged: waits for a reviewer
    HELD = "held"  # flagged by a rule set version the circuit breaker held back: waits for a rule author
    REJECTED = "rejected"  # excluded from billing by a reviewer
    WITHDRAWN = "withdrawn"  # deleted or voided at the source
    CONFLICT = "conflict"  # changed at the source after it was invoiced: a reviewer decides
    INVOICED = "invoiced"  # on a submitted invoice (locked)


REVIEW_STATES = (EntryState.IN_REVIEW, EntryState.HELD, EntryState.CONFLICT)
WAITING_SQL = "state IN ('in_review', 'held', 'conflict')"


class RuleSetStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    SHADOW = "shadow"
    RETIRED = "retired"


class Base(DeclarativeBase):
    pass


class Connection(Base):
    """A configured source (a Clio account, a mattero organisation, a file drop, ...)."""

    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    source_system: Mapped[str] = mapped_column(String(40))
    source_tenant: Mapped[str] = mapped_column(String(120))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class SyncCursor(Base):
    """Where the last successful pull of a connection stopped, per stream (time entries, expenses, ...)."""

    __tablename__ = "sync_cursors"
    __table_args__ = (UniqueConstraint("connection_id", "stream"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    stream: Mapped[str] = mapped_column(String(60))
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class RuleSetVersion(Base):
    """One uploaded version of a client's rule set, kept verbatim with its content hash."""

    __tablename__ = "ruleset_versions"
    __table_args__ = (UniqueConstraint("ruleset_id", "revision"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ruleset_id: Mapped[str] = mapped_column(String(80), index=True)
    revision: Mapped[str] = mapped_column(String(64))
    version_label: Mapped[str] = mapped_column(String(40))
    yaml_text: Mapped[str] = mapped_column(Text)
    status: Mapped[RuleSetStatus] = mapped_column(String(10), default=RuleSetStatus.DRAFT)
    created_by: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    status_changed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class IngestBatch(Base):
    """One call of ``ingest``: what came in, what changed, and whether a rule set version was held."""

    __tablename__ = "ingest_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    received: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    withdrawn: Mapped[int] = mapped_column(Integer, default=0)
    conflicts: Mapped[int] = mapped_column(Integer, default=0)
    held_rulesets: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class EntryRow(Base):
    """A canonical entry as stored: searchable columns, the full canonical record, and its review state."""

    __tablename__ = "entries"
    __table_args__ = (
        Index("ix_entries_state_date", "state", "work_date", "id"),
        # The review queue lists entries waiting for review in date order: a partial index keeps that an
        # index scan however many entries are ready or billed.
        Index("ix_entries_waiting_date", "work_date", "id", postgresql_where=text(WAITING_SQL),
              sqlite_where=text(WAITING_SQL)),
        Index("ix_entries_waiting_updated", "updated_at", "id", postgresql_where=text(WAITING_SQL),
              sqlite_where=text(WAITING_SQL)),
        Index("ix_entries_waiting_client", "ledes_client_id", "work_date", "id", postgresql_where=text(WAITING_SQL),
              sqlite_where=text(WAITING_SQL)),
        Index("ix_entries_waiting_matter", "law_firm_matter_id", "work_date", "id",
              postgresql_where=text(WAITING_SQL), sqlite_where=text(WAITING_SQL)),
        Index("ix_entries_client_matter", "ledes_client_id", "law_firm_matter_id"),
        Index("ix_entries_timekeeper_date", "timekeeper_key", "work_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_uid: Mapped[str] = mapped_column(String(400), unique=True)
    source_system: Mapped[str] = mapped_column(String(40))
    source_tenant: Mapped[str] = mapped_column(String(120))
    source_id: Mapped[str] = mapped_column(String(120))
    source_line_id: Mapped[str | None] = mapped_column(String(120))
    source_version: Mapped[str] = mapped_column(String(200))  # the source's etag, else a hash of the record
    entry_kind: Mapped[str] = mapped_column(String(10))
    ledes_client_id: Mapped[str | None] = mapped_column(String(60))
    client_source_id: Mapped[str | None] = mapped_column(String(120))
    law_firm_matter_id: Mapped[str | None] = mapped_column(String(60))
    client_matter_id: Mapped[str | None] = mapped_column(String(60))
    timekeeper_key: Mapped[str | None] = mapped_column(String(120))  # source id, else LEDES id, else name
    timekeeper_name: Mapped[str | None] = mapped_column(String(200))
    work_date: Mapped[dt.date] = mapped_column(Date)
    hours_billed: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    rate: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    amount: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)  # the canonical entry (decimals as text)
    state: Mapped[EntryState] = mapped_column(String(12), default=EntryState.READY)
    worst_severity: Mapped[str | None] = mapped_column(String(10))
    # Bumped once per change a user can see (a new source version, a review action): the API's ETag.
    version: Mapped[int] = mapped_column(Integer, default=1)
    pending_record: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a source change held as a conflict
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)

    evaluations: Mapped[list[Evaluation]] = relationship(back_populates="entry", lazy="raise")


class Evaluation(Base):
    """The decision log: which rule set revision judged which version of an entry, when, and the result."""

    __tablename__ = "evaluations"
    __table_args__ = (Index("ix_evaluations_entry", "entry_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"))
    entry_version: Mapped[int] = mapped_column(Integer)
    source_version: Mapped[str] = mapped_column(String(200))
    ruleset_version_id: Mapped[int] = mapped_column(ForeignKey("ruleset_versions.id"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_batches.id"))
    evaluated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    flagged: Mapped[bool] = mapped_column(Boolean)  # any active (non-shadow) violation
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    current: Mapped[bool] = mapped_column(Boolean, default=True)  # the latest evaluation by this rule set

    entry: Mapped[EntryRow] = relationship(back_populates="evaluations", lazy="raise")
    violations: Mapped[list[ViolationRow]] = relationship(back_populates="evaluation", lazy="raise")


class ViolationRow(Base):
    __tablename__ = "violations"
    __table_args__ = (
        Index("ix_violations_entry_current", "entry_id", "current"),
        Index("ix_violations_rule", "rule_id", "current"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"))
    ruleset_id: Mapped[str] = mapped_column(String(80))
    ruleset_revision: Mapped[str] = mapped_column(String(64))
    rule_id: Mapped[str] = mapped_column(String(80))
    rule_type: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(10))
    rule_status: Mapped[str] = mapped_column(String(10))
    title: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    adjustment: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    contributing: Mapped[list[str]] = mapped_column(JSON, default=list)
    references: Mapped[list[str]] = mapped_column(JSON, default=list)
    current: Mapped[bool] = mapped_column(Boolean, default=True)

    evaluation: Mapped[Evaluation] = relationship(back_populates="violations", lazy="raise")


class ReviewAction(Base):
    """Append-only audit trail: who did what to an entry, when, why, and the entry before and after."""

    __tablename__ = "review_actions"
    __table_args__ = (Index("ix_review_actions_entry", "entry_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(20))  # ingested, updated, withdrawn, conflict, approve, ...
    actor: Mapped[str] = mapped_column(String(120))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ApiKey(Base):
    """An API key: only a hash of the secret is kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(20))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)  # shown in lists; identifies the key
    secret_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
