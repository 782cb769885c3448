"""Shared builders: entries, inline rule sets, evaluation on either backend, and positions in text."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from engine.model import Entry
from engine.rules.backends import DURABLE_AVAILABLE
from engine.rules.evaluate import Violation, evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import load_text
from engine.rules.ruleset import RuleSet

REPO = Path(__file__).resolve().parent.parent
BUNDLED_RULES = REPO / "rules" / "acme-corp.yaml"
AS_OF = dt.date(2026, 4, 6)
CONTEXT = EvaluationContext(as_of=AS_OF)
BACKENDS = ("python", "durable")


def make_entry(**fields: Any) -> Entry:
    """A valid hourly time entry; any field can be overridden (``source_id`` makes the uid unique)."""
    record: dict[str, Any] = {
        "source_system": "test",
        "source_id": "1",
        "entry_kind": "time",
        "work_date": "2026-03-10",
    }
    record.update(fields)
    return Entry(**record)


def make_expense(**fields: Any) -> Entry:
    return make_entry(**{"entry_kind": "expense", "fee_basis": "unit", **fields})


def rules_yaml(rules: str, header: str = "") -> str:
    """A complete rule file around an indented ``rules:`` block (both given without leading indentation)."""
    head = "id: test-rules\nversion: 1\n" + textwrap.dedent(header)
    body = textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ")
    return f"{head}rules:\n{body}\n"


def load_rules(rules: str, header: str = "", file: str = "rules.yaml") -> RuleSet:
    return load_text(rules_yaml(rules, header), file)


def run(
    entries: Sequence[Entry],
    ruleset: RuleSet,
    backend: str,
    context: EvaluationContext = CONTEXT,
    statuses: tuple[str, ...] = ("active", "shadow"),
) -> list[Violation]:
    return evaluate(list(entries), ruleset, context=context, backend=backend, statuses=statuses)


def flagged(violations: Sequence[Violation], rule_id: str | None = None) -> set[str]:
    """The source ids of the entries flagged (by one rule, if given)."""
    return {v.entry_uid.split(":")[2] for v in violations if rule_id is None or v.rule_id == rule_id}


def only(violations: Sequence[Violation], source_id: str, rule_id: str | None = None) -> Violation:
    found = [v for v in violations
             if v.entry_uid.split(":")[2] == source_id and (rule_id is None or v.rule_id == rule_id)]
    assert len(found) == 1, f"expected one violation for {source_id}, got {found}"
    return found[0]


def decisive(violation: Violation) -> dict[str, Any]:
    """The comparison that made the rule fire (named types put it last), as rendered for output."""
    assert violation.evidence, violation
    return violation.evidence[-1].as_dict()


def locate(text: str, token: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based line and column of the ``occurrence``-th ``token`` in ``text``."""
    start = -1
    for _ in range(occurrence):
        start = text.index(token, start + 1)
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    return line, column


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "durable" and not DURABLE_AVAILABLE:
        pytest.skip("durable-rules is not importable on this interpreter")
    return request.param
