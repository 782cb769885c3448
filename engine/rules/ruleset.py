"""A rule set as data: one client's Outside Counsel Guidelines, parsed and validated by
:mod:`engine.rules.loader`. A rule names its type; :func:`engine.rules.types.type_of` gives the type that
compiles, checks and explains it (the types import this module, never the other way round)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from engine.codes import LEGACY_CLASSIFICATIONS, closest, is_known_classification, timekeeper_classifications
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
    # The client's own names for timekeeper classes: alias as written -> LEDES code (``classifications:``).
    classifications: dict[str, str] = field(default_factory=dict)

    def canonical_classification(self, name: str) -> str | None:
        """The LEDES code that ``name`` stands for: a LEDES code itself, or an alias the rule set declares
        under ``classifications:``; None if it is neither. Matching ignores case and runs of spaces (``partnr``
        is PARTNR, ``senior  associate`` is the alias ``Senior Associate``): entries store classifications
        in capitals, so a firm title reaches the rules as ``SENIOR ASSOCIATE``."""
        key = classification_key(name)
        if not key:
            return None
        code = key.upper()
        if is_known_classification(code):
            return code
        return self._aliases.get(key)

    def classification_suggestion(self, name: str) -> str | None:
        """The known code or declared alias nearest to ``name`` (for "did you mean ..."), or None."""
        names = {classification_key(alias): alias for alias in self.classifications}
        for code in (*sorted(timekeeper_classifications()), *sorted(LEGACY_CLASSIFICATIONS)):
            names.setdefault(code.casefold(), code)
        found = closest(classification_key(name), names)
        return names[found] if found is not None else None

    @property
    def _aliases(self) -> dict[str, str]:
        """Declared aliases by their matching key (built once, and again if ``classifications`` is replaced)."""
        cached = self.__dict__.get("_alias_keys")
        if cached is None or cached[0] is not self.classifications:
            cached = (self.classifications,
                      {classification_key(alias): code for alias, code in self.classifications.items()})
            self.__dict__["_alias_keys"] = cached
        return cached[1]

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


def classification_key(name: str) -> str:
    """How classification names are matched: case and runs of whitespace do not matter."""
    return " ".join(name.split()).casefold()
