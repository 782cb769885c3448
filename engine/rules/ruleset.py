"""A rule set as data: one client's Outside Counsel Guidelines, parsed and validated by
:mod:`engine.rules.loader`. A rule names its type; :func:`engine.rules.types.type_of` gives the type that
compiles, checks and explains it (the types import this module, never the other way round)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from engine.model import Entry
from engine.rules.conditions import Node


@dataclass
class Rule:
    id: str
    title: str
    type: str
    severity: str
    status: str
    references: list[str]
    message: str | None
    params: dict[str, Any]
    description: str | None = None
    condition: Node | None = None  # for type "condition"
    when: Node | None = None  # optional scope, ANDed into the rule
    effective_from: dt.date | None = None
    effective_to: dt.date | None = None
    index: int = 0

    @property
    def action(self) -> str:
        return self.params.get("action", "flag")


@dataclass
class RuleSet:
    id: str
    version: str
    title: str
    description: str | None
    currency: str | None
    clients: list[str]
    matters: list[str]
    effective_from: dt.date | None
    effective_to: dt.date | None
    lists: dict[str, list[Any]]
    rules: list[Rule]
    revision: str
    source: str = "<memory>"
    text: str = ""
    guideline: dict[str, Any] = field(default_factory=dict)
    invoicing: dict[str, Any] = field(default_factory=dict)  # see engine.ledes.profile.parse_profile

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def applies_to(self, entry: Entry) -> bool:
        """Whether this rule set governs the entry: its client, matter and work date."""
        if self.clients and not (
            entry.ledes_client_id in self.clients or entry.client_source_id in self.clients
        ):
            return False
        if self.matters and not (
            entry.law_firm_matter_id in self.matters
            or entry.client_matter_id in self.matters
            or entry.matter_source_id in self.matters
        ):
            return False
        if self.effective_from is not None and entry.work_date < self.effective_from:
            return False
        return not (self.effective_to is not None and entry.work_date > self.effective_to)


