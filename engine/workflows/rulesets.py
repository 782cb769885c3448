"""Rule set versions: store a rule file as a version, activate or shadow it, and find the versions that judge
entries (backtests of a version are in ``engine.workflows.backtest``).

A version's text is stored verbatim; its revision is the content hash the loader computes, so the same rules
are stored once however they are laid out.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import NotFound
from engine.rules.loader import load_text
from engine.rules.ruleset import RuleSet
from engine.store.models import RuleSetStatus, RuleSetVersion

_RULESETS: dict[str, RuleSet] = {}


def load_version(version: RuleSetVersion) -> RuleSet:
    """The parsed rule set of a stored version (cached by content hash)."""
    cached = _RULESETS.get(version.revision)
    if cached is None:
        cached = _RULESETS[version.revision] = load_text(version.yaml_text, f"{version.ruleset_id}@{version.revision}")
    return cached


def active_versions(session: Session) -> list[RuleSetVersion]:
    statuses = (RuleSetStatus.ACTIVE, RuleSetStatus.SHADOW)
    return list(session.scalars(select(RuleSetVersion).where(RuleSetVersion.status.in_(statuses))
                                .order_by(RuleSetVersion.ruleset_id, RuleSetVersion.id)))


def client_rulesets(session: Session, client_id: str) -> list[tuple[RuleSet, str]]:
    """The stored rule sets (active and shadow) naming the client, with each version's status."""
    found = []
    for version in active_versions(session):
        ruleset = load_version(version)
        if client_id in ruleset.clients:
            found.append((ruleset, str(version.status)))
    return found


def add_ruleset_version(session: Session, yaml_text: str, *, source: str = "<upload>", created_by: str | None = None,
                        status: RuleSetStatus | None = None) -> RuleSetVersion:
    """Store a rule file (validated first; a bad one raises RuleSetError). The same content is stored once;
    a new version starts as a draft unless ``status`` says otherwise, a known one keeps its status."""
    ruleset = load_text(yaml_text, source)
    found = session.scalar(select(RuleSetVersion).where(RuleSetVersion.ruleset_id == ruleset.id,
                                                        RuleSetVersion.revision == ruleset.revision))
    if found is None:
        found = RuleSetVersion(ruleset_id=ruleset.id, revision=ruleset.revision, version_label=ruleset.version,
                               yaml_text=yaml_text, status=RuleSetStatus.DRAFT, created_by=created_by)
        session.add(found)
        session.flush()
    if status is not None and status != found.status:
        set_status(session, found, status)
    return found


def set_status(session: Session, version: RuleSetVersion, status: RuleSetStatus) -> None:
    """Activating (or shadowing) a version retires the rule set's other version in that role."""
    if status in (RuleSetStatus.ACTIVE, RuleSetStatus.SHADOW):
        for other in session.scalars(select(RuleSetVersion).where(
                RuleSetVersion.ruleset_id == version.ruleset_id, RuleSetVersion.status == status,
                RuleSetVersion.id != version.id)):
            other.status = RuleSetStatus.RETIRED
            other.status_changed_at = dt.datetime.now(dt.UTC)
    version.status = status
    version.status_changed_at = dt.datetime.now(dt.UTC)
    session.flush()


def get(session: Session, version_id: int) -> RuleSetVersion:
    version = session.get(RuleSetVersion, version_id) if 0 < version_id < 2**63 else None
    if version is None:
        raise NotFound(f"rule set version {version_id} does not exist")
    return version


def versions(session: Session, ruleset_id: str | None = None) -> list[RuleSetVersion]:
    query = select(RuleSetVersion).order_by(RuleSetVersion.ruleset_id, RuleSetVersion.id)
    if ruleset_id:
        query = query.where(RuleSetVersion.ruleset_id == ruleset_id)
    return list(session.scalars(query))


def activate(session: Session, version_id: int) -> RuleSetVersion:
    version = get(session, version_id)
    set_status(session, version, RuleSetStatus.ACTIVE)
    return version


def shadow(session: Session, version_id: int) -> RuleSetVersion:
    version = get(session, version_id)
    set_status(session, version, RuleSetStatus.SHADOW)
    return version
