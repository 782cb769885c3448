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
# Data-quality flags: none is SQL NULL, JSON null or an empty list. The stored text is compared (PostgreSQL's JSON
# functions refuse JSON null, and both databases keep a json value's text as written). Written out literally, so
# that the planner can prove a query's predicate implies a partial index's.
FLAGGED_SQL = "(data_quality_flags IS NOT NULL AND CAST(data_quality_flags AS TEXT) NOT IN ('null', '[]'))"
UNFLAGGED_SQL = "(data_quality_flags IS NULL OR CAST(data_quality_flags AS TEXT) IN ('null', '[]'))"
WAITING_FLAGGED_SQL = f"{WAITING_SQL} AND {FLAGGED_SQL}"
WAITING_UNFLAGGED_SQL = f"{WAITING_SQL} AND {UNFLAGGED_SQL}"


class RuleSetStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    SHADOW = "shadow"
    RETIRED = "retired"


class Base(DeclarativeBase):
    pass


class Connection(Base):
    """A configured source (a Clio account, a mattero organisation, a file drop, ...). ``settings`` never
    hold secrets: they name environment variables. Tokens the source issues (OAuth) are kept encrypted in
    ``credentials``; the key comes from ``OCGATE_SECRET_KEY`` and never from the database."""

    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    source_system: Mapped[str] = mapped_column(String(40))  # the kind: clio, efimis, trackops, ...
    source_tenant: Mapped[str] = mapped_column(String(120))  # filled in when connected (Clio: region/account)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    credentials: Mapped[str | None] = mapped_column(Text)  # Fernet token of the JSON credentials
    credentials_expire_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # While a sync runs no other may start: a lease, so that one left by a killed worker expires.
    sync_lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    sync_lease_owner: Mapped[str | None] = mapped_column(String(120))
    last_sync_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)  # when the last sync finished well


class SyncCursor(Base):
    """Where the last pull of a connection stopped, per stream (time entries, expenses, ...): saved with
    each committed batch, so a sync killed at any point resumes there."""

    __tablename__ = "sync_cursors"
    __table_args__ = (UniqueConstraint("connection_id", "stream"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    stream: Mapped[str] = mapped_column(String(60))
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class SyncRun(Base):
    """One sync of a connection: when, how it ended and what it counted."""

    __tablename__ = "sync_runs"
    __table_args__ = (Index("ix_sync_runs_connection", "connection_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    full: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(12), default="running")  # running, finished, failed
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class WebhookEvent(Base):
    """A verified webhook delivery, stored before it is acknowledged; a job processes it, and a periodic
    sweep re-runs those no job finished. ``delivery_key`` (a hash of the signature or the source's request
    id) is unique: a replayed delivery is refused."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("connection_id", "delivery_key"),
                      Index("ix_webhook_events_pending", "processed_at", "id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    delivery_key: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(40))  # created, updated, deleted, ...
    model: Mapped[str | None] = mapped_column(String(40))
    record_id: Mapped[str | None] = mapped_column(String(120))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    outcome: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)


class WebhookSubscription(Base):
    """A subscription registered at a source (Clio: one per model), renewed before it expires."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (UniqueConstraint("connection_id", "remote_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    remote_id: Mapped[str] = mapped_column(String(120))
    model: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret: Mapped[str | None] = mapped_column(Text)  # Fernet token of the shared secret
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending, enabled, suspended
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    renewed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class Timekeeper(Base):
    """The firm's timekeeper table: what no source knows (the LEDES id and classification e-billing portals
    match exactly), shared by every source."""

    __tablename__ = "timekeepers"

    id: Mapped[int] = mapped_column(primary_key=True)
    ledes_id: Mapped[str] = mapped_column(String(60), unique=True)  # LEDES TIMEKEEPER_ID
    name: Mapped[str] = mapped_column(String(200))  # "Last, First" as LEDES writes it
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    classification: Mapped[str | None] = mapped_column(String(10))  # LEDES classification code
    title: Mapped[str | None] = mapped_column(String(100))  # the firm's own title, as imported
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class TimekeeperSourceId(Base):
    """A timekeeper's user id in a source system (a timekeeper may have one in each)."""

    __tablename__ = "timekeeper_source_ids"
    __table_args__ = (UniqueConstraint("source_system", "source_user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    timekeeper_id: Mapped[int] = mapped_column(ForeignKey("timekeepers.id", ondelete="CASCADE"), index=True)
    source_system: Mapped[str] = mapped_column(String(40))
    source_user_id: Mapped[str] = mapped_column(String(120))


class TimekeeperRate(Base):
    """A timekeeper's standard hourly rate, in force from a date (and optionally to one)."""

    __tablename__ = "timekeeper_rates"
    __table_args__ = (UniqueConstraint("timekeeper_id", "currency", "effective_from"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    timekeeper_id: Mapped[int] = mapped_column(ForeignKey("timekeepers.id", ondelete="CASCADE"), index=True)
    rate: Mapped[Decimal] = mapped_column(ExactDecimal)
    currency: Mapped[str] = mapped_column(String(3))
    effective_from: Mapped[dt.date] = mapped_column(Date)
    effective_to: Mapped[dt.date | None] = mapped_column(Date)


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
        # Every filter of the queue has its own walk in date order (the source's client and matter ids too: the
        # queue matches either id, and reads the two as two ordered walks merged).
        Index("ix_entries_waiting_client_source", "client_source_id", "work_date", "id",
              postgresql_where=text(WAITING_SQL), sqlite_where=text(WAITING_SQL)),
        Index("ix_entries_waiting_client_matter", "client_matter_id", "work_date", "id",
              postgresql_where=text(WAITING_SQL), sqlite_where=text(WAITING_SQL)),
        Index("ix_entries_waiting_timekeeper", "timekeeper_key", "work_date", "id",
              postgresql_where=text(WAITING_SQL), sqlite_where=text(WAITING_SQL)),
        Index("ix_entries_waiting_source", "source_system", "work_date", "id",
              postgresql_where=text(WAITING_SQL), sqlite_where=text(WAITING_SQL)),
        Index("ix_entries_waiting_flagged", "work_date", "id", postgresql_where=text(WAITING_FLAGGED_SQL),
              sqlite_where=text(WAITING_FLAGGED_SQL)),
        Index("ix_entries_waiting_unflagged", "work_date", "id", postgresql_where=text(WAITING_UNFLAGGED_SQL),
              sqlite_where=text(WAITING_UNFLAGGED_SQL)),
        Index("ix_entries_client_matter", "ledes_client_id", "law_firm_matter_id"),
        Index("ix_entries_timekeeper_date", "timekeeper_key", "work_date"),
        Index("ix_entries_matter_date", "law_firm_matter_id", "work_date"),  # matter-days and budgets (intake)
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
    # What budgets read without the record: the source's matter id, the task code, and what the client is charged
    # (net of adjustments; NULL for an entry no budget counts: see engine.rules.types.staffing.charged).
    matter_source_id: Mapped[str | None] = mapped_column(String(120))
    utbms_task_code: Mapped[str | None] = mapped_column(String(10))
    charged_amount: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    # The evaluation context the entry is judged with (as of, billing period): kept, so that a review action or
    # a neighbour's arrival judges it again as it was judged, not as of the day of the action.
    as_of: Mapped[dt.date | None] = mapped_column(Date)
    period_start: Mapped[dt.date | None] = mapped_column(Date)
    period_end: Mapped[dt.date | None] = mapped_column(Date)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)  # the canonical entry (decimals as text)
    state: Mapped[EntryState] = mapped_column(String(12), default=EntryState.READY)
    worst_severity: Mapped[str | None] = mapped_column(String(10))
    # Bumped once per change a user can see (a new source version, a review action): the API's ETag.
    version: Mapped[int] = mapped_column(Integer, default=1)
    pending_record: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a source change held as a conflict
    # The record as the source sent it, kept when a reviewer first adjusts the entry: invoices show the
    # difference as a line adjustment. Cleared when the source sends a new version.
    source_record: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # What could not be mapped from the source (REDACTED_SOURCE, UNKNOWN_TIMEKEEPER, MISSING_UTBMS, ...):
    # shown in the queue; an entry with any is reviewed, never billed on a silent default.
    data_quality_flags: Mapped[list[str] | None] = mapped_column(JSON)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id", name="fk_entries_invoice_id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)

    evaluations: Mapped[list[Evaluation]] = relationship(back_populates="entry", lazy="raise")


class EntryFacts(Base):
    """A narrow copy of each stored entry's fields that rules compare most, one row per entry, written with the
    entry's record (intake, review adjustments): a backtest's database scans this instead of the wide entries
    table, and compares rules' conditions with its columns (engine.workflows.pushdown). ``withdrawn`` mirrors the
    entry's state. An entry without a row here (written by something that does not know the table) makes a
    backtest read the entries themselves."""

    __tablename__ = "entry_facts"
    # A timekeeper's days in order (the daily aggregates read them so).
    __table_args__ = (Index("ix_entry_facts_timekeeper_day", "timekeeper_key", "work_date", "entry_id"),)

    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True)
    entry_uid: Mapped[str] = mapped_column(String(400))
    withdrawn: Mapped[bool] = mapped_column(Boolean, default=False)
    timekeeper_key: Mapped[str | None] = mapped_column(Text)  # as entries.timekeeper_key
    work_date: Mapped[dt.date] = mapped_column(Date)
    entry_kind: Mapped[str] = mapped_column(String(10))
    source_system: Mapped[str | None] = mapped_column(Text)
    ledes_client_id: Mapped[str | None] = mapped_column(Text)
    client_source_id: Mapped[str | None] = mapped_column(Text)
    law_firm_matter_id: Mapped[str | None] = mapped_column(Text)
    client_matter_id: Mapped[str | None] = mapped_column(Text)
    matter_source_id: Mapped[str | None] = mapped_column(Text)
    timekeeper_name: Mapped[str | None] = mapped_column(Text)
    timekeeper_classification: Mapped[str | None] = mapped_column(Text)
    timekeeper_ledes_id: Mapped[str | None] = mapped_column(Text)
    timekeeper_source_id: Mapped[str | None] = mapped_column(Text)
    fee_basis: Mapped[str | None] = mapped_column(Text)
    currency: Mapped[str | None] = mapped_column(Text)
    unit_of_measure: Mapped[str | None] = mapped_column(Text)
    utbms_task_code: Mapped[str | None] = mapped_column(Text)
    utbms_activity_code: Mapped[str | None] = mapped_column(Text)
    utbms_expense_code: Mapped[str | None] = mapped_column(Text)
    narrative: Mapped[str | None] = mapped_column(Text)
    rate: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    standard_rate: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    hours_billed: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    hours_worked: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    quantity: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    amount: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    adjustment_amount: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    billable: Mapped[bool | None] = mapped_column(Boolean)
    no_charge: Mapped[bool | None] = mapped_column(Boolean)


# The entry fields ``entry_facts`` keeps (every column but the entry's id, uid, withdrawn flag and timekeeper key).
FACT_FIELDS = ("work_date", "entry_kind", "source_system", "ledes_client_id", "client_source_id",
               "law_firm_matter_id", "client_matter_id", "matter_source_id", "timekeeper_name",
               "timekeeper_classification", "timekeeper_ledes_id", "timekeeper_source_id", "fee_basis", "currency",
               "unit_of_measure", "utbms_task_code", "utbms_activity_code", "utbms_expense_code", "narrative", "rate",
               "standard_rate", "hours_billed", "hours_worked", "quantity", "amount", "adjustment_amount", "billable",
               "no_charge")


class Evaluation(Base):
    """The decision log: which rule set revision judged which version of an entry, when, and the result."""

    __tablename__ = "evaluations"
    __table_args__ = (
        Index("ix_evaluations_entry", "entry_id", "id"),
        # The entries a version judged (backtests read its decision log by it).
        Index("ix_evaluations_version", "ruleset_version_id", "current", "entry_id"),
        # At most one current evaluation of an entry by a version (intake supersedes the entry's evaluations
        # before it records new ones): a backtest joins a version's judged entries without making them distinct.
        Index("ux_evaluations_current", "entry_id", "ruleset_version_id", unique=True,
              postgresql_where=text("current"), sqlite_where=text("current = 1")),
    )

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


REPORT_POSTGRESQL_WHERE = "current AND rule_status = 'active'"
REPORT_SQLITE_WHERE = "current = 1 AND rule_status = 'active'"
# The findings report's index leads with what the report groups entries by (the month, the entry's client,
# matter and timekeeper), then the rule and the entry, so that the groups stream out of it in order and count
# their distinct entries as they go (SQLite has no hash aggregate; PostgreSQL's per-entry rows hashed into the
# groups took twice as long). The month is an expression, written for each database (PostgreSQL indexes only
# immutable ones, which to_char is not); the report writes these expressions exactly so, to match the index's.
REPORT_MONTH = {"sqlite": "substr(entry_work_date, 1, 7)",
                "postgresql": "date_trunc('month', CAST(entry_work_date AS timestamp))"}
REPORT_CLIENT = "COALESCE(entry_ledes_client_id, entry_client_source_id)"
REPORT_INDEX_TAIL = ("entry_matter_id", "entry_timekeeper", "rule_id", "entry_id", "severity", "entry_work_date",
                     "entry_currency", "adjustment_amount", "entry_ledes_client_id", "entry_client_source_id")


def for_dialect(item: Any, dialect: str) -> bool:
    """Whether ``item`` (an index, or anything else in the metadata) is built on ``dialect``: an index made for
    one database only (``Index.ddl_if(dialect=...)``) is not built on the other."""
    condition = getattr(item, "_ddl_if", None)
    wanted = getattr(condition, "dialect", None)
    if wanted is None:
        return True
    return dialect in ((wanted,) if isinstance(wanted, str) else tuple(wanted))


class ViolationRow(Base):
    __tablename__ = "violations"
    __table_args__ = (
        Index("ix_violations_entry_current", "entry_id", "current"),
        Index("ix_violations_rule", "rule_id", "current"),
        # The findings report: current findings of active-status rules by month, client, matter and timekeeper,
        # with all it reads (one index per database: the month's expression differs).
        *(Index(f"ix_violations_report_{dialect}", text(month), text(REPORT_CLIENT), *REPORT_INDEX_TAIL,
                postgresql_where=text(REPORT_POSTGRESQL_WHERE), sqlite_where=text(REPORT_SQLITE_WHERE))
          .ddl_if(dialect=dialect) for dialect, month in REPORT_MONTH.items()),
        # Whether an entry ever had a finding of an active-status rule (the report's clean entries), from the index.
        Index("ix_violations_entry_active", "entry_id", postgresql_where=text("rule_status = 'active'"),
              sqlite_where=text("rule_status = 'active'")),
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
    # The entry's columns the findings report groups and filters by, copied when the finding is recorded (an
    # entry whose columns change is judged again, and its findings written again): the report reads no entry.
    entry_work_date: Mapped[dt.date | None] = mapped_column(Date)
    entry_ledes_client_id: Mapped[str | None] = mapped_column(String(60))
    entry_client_source_id: Mapped[str | None] = mapped_column(String(120))
    entry_matter_id: Mapped[str | None] = mapped_column(String(60))  # law_firm_matter_id
    entry_timekeeper: Mapped[str | None] = mapped_column(String(200))  # timekeeper_name, else timekeeper_key
    entry_currency: Mapped[str | None] = mapped_column(String(16))  # the record's currency
    adjustment_amount: Mapped[Decimal | None] = mapped_column(ExactDecimal)  # the adjustment's ``amount``

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


class Setting(Base):
    """Firm-wide settings (the firm's LEDES identity, the invoice number prefix), one JSON value per key."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class DestinationRow(Base):
    """Where a client's invoices go: a directory drop or an e-billing portal (secrets stay in the
    environment; ``settings`` names the variables)."""

    __tablename__ = "destinations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    clients: Mapped[list[str]] = mapped_column(JSON, default=list)  # LEDES client ids it serves; empty: any
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class InvoiceStatus(StrEnum):
    DRAFT = "draft"  # built; its entries are locked; may be previewed, submitted or voided
    SUBMITTING = "submitting"  # a submission started and its outcome is not known yet: submit again to resume
    SUBMITTED = "submitted"  # the destination has it; ``portal_state`` follows what the portal says
    VOID = "void"  # withdrawn; its entries were released


class InvoiceRow(Base):
    """An invoice as built: the LEDES file kept verbatim with its hash, and where it went."""

    __tablename__ = "invoices"
    __table_args__ = (Index("ix_invoices_client", "client_id", "period_end"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)  # letters and digits; never reused
    client_id: Mapped[str] = mapped_column(String(60))
    matters: Mapped[list[str]] = mapped_column(JSON)
    format: Mapped[str] = mapped_column(String(8))
    currency: Mapped[str | None] = mapped_column(String(3))
    invoice_date: Mapped[dt.date] = mapped_column(Date)
    period_start: Mapped[dt.date] = mapped_column(Date)
    period_end: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[InvoiceStatus] = mapped_column(String(12), default=InvoiceStatus.DRAFT)
    total: Mapped[Decimal] = mapped_column(ExactDecimal)
    fees_total: Mapped[Decimal] = mapped_column(ExactDecimal)
    expenses_total: Mapped[Decimal] = mapped_column(ExactDecimal)
    adjustments_total: Mapped[Decimal] = mapped_column(ExactDecimal)  # line and invoice-level, signed
    tax_total: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    line_count: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)  # the LEDES file
    sha256: Mapped[str] = mapped_column(String(64))
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)  # the invoicing settings it was built with
    notes: Mapped[list[str]] = mapped_column(JSON, default=list)  # what was changed to fit LEDES, warnings
    destination: Mapped[str | None] = mapped_column(String(120))
    destination_ref: Mapped[str | None] = mapped_column(String(200))
    portal_state: Mapped[str | None] = mapped_column(String(20))
    submitted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # While a submission runs, no other may start: a lease, so that one left by a crash expires.
    submit_lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    polled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    voided_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    void_reason: Mapped[str | None] = mapped_column(Text)


class InvoiceLine(Base):
    """One LEDES record of an invoice: an entry's line, or an invoice-level adjustment (IF/IE)."""

    __tablename__ = "invoice_lines"
    __table_args__ = (UniqueConstraint("invoice_id", "line_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"))
    line_number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(2))  # F, E, IF, IE
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("entries.id"), index=True)
    entry_version: Mapped[int | None] = mapped_column(Integer)
    law_firm_matter_id: Mapped[str] = mapped_column(String(60))
    units: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    unit_cost: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    adjustment: Mapped[Decimal] = mapped_column(ExactDecimal)
    review_adjustment: Mapped[Decimal | None] = mapped_column(ExactDecimal)  # the reviewer's part of it
    tax_total: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    total: Mapped[Decimal] = mapped_column(ExactDecimal)
    state: Mapped[str] = mapped_column(String(10), default="billed")  # billed, rejected, cut
    notes: Mapped[list[str]] = mapped_column(JSON, default=list)


class InvoiceEvent(Base):
    """Append-only audit of an invoice: built, submitted, status seen, rejection applied, voided."""

    __tablename__ = "invoice_events"
    __table_args__ = (Index("ix_invoice_events_invoice", "invoice_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(30))
    actor: Mapped[str] = mapped_column(String(120))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class PortalRejection(Base):
    """Something the client's portal refused or cut, kept with the portal's words and our proposal of the
    rule that would have caught it. Applied once per portal id however often the invoice is polled."""

    __tablename__ = "portal_rejections"
    __table_args__ = (Index("ix_portal_rejections_invoice", "invoice_id", "rejection_id"),
                      Index("ix_portal_rejections_entry", "entry_id", "resolved_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"))
    rejection_id: Mapped[str] = mapped_column(String(120))
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("entries.id"))
    line_number: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))  # rejected (the line or invoice refused) or cut (reduced)
    reason: Mapped[str] = mapped_column(Text)
    reason_code: Mapped[str | None] = mapped_column(String(80))
    comment: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    proposal: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
